//! The whole conformance kit, the race test with separately connected handles, and the recorder
//! kit, against a real PostgreSQL (`DCB_TEST_POSTGRES_URL`, default: the local `dcb_test`).

use dcb_postgres::testkit as common;

mod store {
    dcb::conformance_tests!(dcb_postgres::testkit::fresh_store);
}

mod recorder {
    dcb::recorder_conformance_tests!(dcb_postgres::testkit::fresh_recorder);
}

/// The race with sixteen stores each on its own connections, so that the appends meet only in
/// the database (the macro's race shares one store, so its appends meet in the group commit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn race_between_separately_connected_stores() {
    let options = common::fresh_options().await;
    let mut handles = Vec::new();
    for _ in 0..16 {
        handles.push(dcb_postgres::PostgresStore::open(options.clone()).await.expect("open"));
    }
    let summary = dcb::testkit::race::run(handles, dcb::testkit::race::RaceConfig::default()).await;
    assert_eq!(summary.unknown_recorded + summary.unknown_absent, 0);
    common::drop_schema(options.schema()).await;
}
