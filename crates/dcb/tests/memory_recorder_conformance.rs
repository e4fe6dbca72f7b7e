//! The in-memory aggregate recorder runs the whole recorder kit.

dcb::recorder_conformance_tests!(|| async { dcb::recorder::MemoryRecorder::new() });
