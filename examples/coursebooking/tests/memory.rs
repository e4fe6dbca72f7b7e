//! Every style on the in-memory store and recorder.

coursebooking::enrolment_tests!(
    store: || async { dcb::MemoryStore::new() },
    recorder: || async { dcb::recorder::MemoryRecorder::new() },
);

/// Listings longer than one query, in every style (on the in-memory store: the reads are split
/// above the stores, so one store shows it, and thousands of joins stay quick there).
mod long_listings {
    use coursebooking::testcase::{RETRIES, listings_longer_than_one_query};
    use coursebooking::{
        EnrolmentWithAggregates, EnrolmentWithDecisions, EnrolmentWithObjects, EnrolmentWithSlices,
    };
    use dcb::MemoryStore;
    use dcb::recorder::MemoryRecorder;

    #[tokio::test]
    async fn aggregates() {
        listings_longer_than_one_query(&EnrolmentWithAggregates::new(MemoryRecorder::new(), RETRIES)).await;
    }

    #[tokio::test]
    async fn decisions() {
        listings_longer_than_one_query(&EnrolmentWithDecisions::new(MemoryStore::new(), RETRIES)).await;
    }

    #[tokio::test]
    async fn objects() {
        listings_longer_than_one_query(&EnrolmentWithObjects::new(MemoryStore::new(), RETRIES)).await;
    }

    #[tokio::test]
    async fn slices() {
        listings_longer_than_one_query(&EnrolmentWithSlices::new(MemoryStore::new(), RETRIES)).await;
    }
}
