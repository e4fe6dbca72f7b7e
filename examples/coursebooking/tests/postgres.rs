//! Every style on PostgreSQL (`DCB_TEST_POSTGRES_URL`, default the local `dcb_test` database),
//! each test in a fresh schema: the DCB styles on the PostgreSQL event store, aggregates on the
//! native PostgreSQL recorder.

coursebooking::enrolment_tests!(
    store: dcb_postgres::testkit::fresh_store,
    recorder: dcb_postgres::testkit::fresh_recorder,
);
