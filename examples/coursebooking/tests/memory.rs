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

/// The aggregate style's cache beside another process writing to the same recorder, which the
/// cache does not see.
mod aggregate_cache_beside_another_writer {
    use coursebooking::aggregates::Course;
    use coursebooking::testcase::RETRIES;
    use coursebooking::{CourseId, Enrolment, EnrolmentError, EnrolmentWithAggregates};
    use dcb::recorder::MemoryRecorder;

    /// An application with the cache, and no retries of its own (what it decides again after
    /// meeting the other writer is not a retry), and one without the cache standing for the
    /// other writer.
    fn cached_and_other() -> (EnrolmentWithAggregates<MemoryRecorder>, EnrolmentWithAggregates<MemoryRecorder>)
    {
        let recorder = MemoryRecorder::new();
        (
            EnrolmentWithAggregates::with_cache(recorder.clone(), 0),
            EnrolmentWithAggregates::new(recorder, RETRIES),
        )
    }

    /// The course as the cached application loads it: its version, and whether it came from
    /// the cache.
    async fn held(app: &EnrolmentWithAggregates<MemoryRecorder>, course: &CourseId) -> (u64, bool) {
        let course = app.repository().get::<Course>(course.as_str()).await.unwrap();
        (course.version(), course.is_from_cache())
    }

    /// The cache still holds a full course after the other writer freed its place: the refusal
    /// it would give is decided again on fresh aggregates, and the join lands.
    #[tokio::test]
    async fn a_refusal_resting_on_the_cache_is_decided_again() {
        let (cached, other) = cached_and_other();
        let course = cached.register_course("Français", 1).await.unwrap();
        let sara = cached.register_student("Sara", 1).await.unwrap();
        let bastian = cached.register_student("Bastian", 1).await.unwrap();
        cached.join_course(&sara, &course).await.unwrap();
        other.leave_course(&sara, &course).await.unwrap();
        assert_eq!(held(&cached, &course).await, (2, true), "the cache is one version behind");
        cached.join_course(&bastian, &course).await.unwrap();
        assert_eq!(other.list_students_for_course(&course).await.unwrap(), ["Bastian"]);
    }

    /// The cache holds a course with a free place that the other writer has taken since: the
    /// save fails on the recorded version, and the join decided again on fresh aggregates (with
    /// no retries configured) is refused as the course now is.
    #[tokio::test]
    async fn a_save_over_a_stale_cache_is_decided_again_on_fresh_aggregates() {
        let (cached, other) = cached_and_other();
        let course = cached.register_course("Français", 2).await.unwrap();
        let [sara, bastian, lina] = ["Sara", "Bastian", "Lina"].map(|name| {
            let cached = cached.clone();
            async move { cached.register_student(name, 1).await.unwrap() }
        });
        let (sara, bastian, lina) = (sara.await, bastian.await, lina.await);
        cached.join_course(&sara, &course).await.unwrap();
        other.join_course(&bastian, &course).await.unwrap();
        assert_eq!(held(&cached, &course).await, (2, true), "the cache is one version behind");
        let refused = cached.join_course(&lina, &course).await;
        assert!(matches!(refused, Err(EnrolmentError::FullyBooked)), "{refused:?}");
        assert_eq!(cached.list_students_for_course(&course).await.unwrap(), ["Sara", "Bastian"]);
    }
}

/// The decision cache of each DCB style beside another writer of the same store: a join whose
/// student and course the cache knows up to different positions (the student's earlier join
/// between them) is taken without a read, each checked from its own position.
mod decision_cache_beside_another_writer {
    use coursebooking::testcase::RETRIES;
    use coursebooking::{Enrolment, EnrolmentWithDecisions, EnrolmentWithObjects, EnrolmentWithSlices};
    use dcb::MemoryStore;
    use dcb::testkit::RecordedReads;

    type Store = RecordedReads<MemoryStore>;

    /// Registers two courses and a student through a handle made by `cached`, then, after one
    /// made by `uncached` registered a course of its own, joins the student to both: every step
    /// from the cache.
    async fn joins_from_the_cache<E: Enrolment>(cached: fn(Store, u32) -> E, uncached: fn(Store, u32) -> E) {
        let store = RecordedReads::new(MemoryStore::new());
        let (cached, other) = (cached(store.clone(), RETRIES), uncached(store.clone(), RETRIES));
        let first = cached.register_course("Français", 5).await.unwrap();
        let second = cached.register_course("Deutsch", 5).await.unwrap();
        let student = cached.register_student("Sara", 5).await.unwrap();
        other.register_course("Español", 5).await.unwrap();
        cached.join_course(&student, &first).await.unwrap();
        cached.join_course(&student, &second).await.unwrap();
        assert_eq!(store.read_bytes().len(), 0, "a join was read");
        assert_eq!(cached.list_students_for_course(&second).await.unwrap(), ["Sara"]);
    }

    #[tokio::test]
    async fn decisions() {
        joins_from_the_cache(EnrolmentWithDecisions::with_cache, EnrolmentWithDecisions::new).await;
    }

    #[tokio::test]
    async fn objects() {
        joins_from_the_cache(EnrolmentWithObjects::with_cache, EnrolmentWithObjects::new).await;
    }

    #[tokio::test]
    async fn slices() {
        joins_from_the_cache(EnrolmentWithSlices::with_cache, EnrolmentWithSlices::new).await;
    }
}
