//! Every style on the in-memory store and recorder.

coursebooking::enrolment_tests!(
    store: || async { dcb::MemoryStore::new() },
    recorder: || async { dcb::recorder::MemoryRecorder::new() },
);
