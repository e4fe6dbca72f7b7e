//! Every application test on the embedded file store, each in a fresh directory.

eventsourcing::application_tests!(|| async {
    let dir = std::env::temp_dir().join(format!("eventsourcing-test-{}", dcb::Uuid::new_v4()));
    dcb_file::FileStore::open(dir).unwrap()
});
