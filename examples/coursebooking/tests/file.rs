//! Every style on the embedded file store, each test in a fresh directory.

fn fresh_dir() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("coursebooking-test-{}", uuid::Uuid::new_v4()))
}

async fn file_store() -> dcb_file::FileStore {
    dcb_file::FileStore::open(fresh_dir()).unwrap()
}

coursebooking::enrolment_tests!(
    store: file_store,
    recorder: || async { eventsourcing::DcbRecorder::new(file_store().await) },
);
