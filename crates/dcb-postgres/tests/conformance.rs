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
    race_between_sixteen_stores(common::fresh_options().await).await;
}

/// The same race where the sessions' default isolation is SERIALIZABLE (set in the URL, as a
/// database or role setting would): the stores still append in READ COMMITTED, which their
/// lock-then-check batches need.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn race_whatever_the_default_isolation() {
    let url = common::url();
    let separator = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{separator}options=-c%20default_transaction_isolation%3Dserializable");
    let schema = common::fresh_schema().await;
    race_between_sixteen_stores(dcb_postgres::Options::new(url, schema).read_connections(1)).await;
}

async fn race_between_sixteen_stores(options: dcb_postgres::Options) {
    let mut handles = Vec::new();
    for _ in 0..16 {
        handles.push(dcb_postgres::PostgresStore::open(options.clone()).await.expect("open"));
    }
    let summary = dcb::testkit::race::run(handles, dcb::testkit::race::RaceConfig::default()).await;
    assert_eq!(summary.unknown_recorded + summary.unknown_absent, 0);
    common::drop_schema(options.schema()).await;
}
