//! Every application test on PostgreSQL (`DCB_TEST_POSTGRES_URL`, default the local `dcb_test`
//! database), each in a fresh schema.

eventsourcing::application_tests!(dcb_postgres::testkit::fresh_store);

mod native_recorder {
    //! The recorder kit on the native PostgreSQL recorder, through which aggregates save.
    dcb::recorder_conformance_tests!(dcb_postgres::testkit::fresh_recorder);
}
