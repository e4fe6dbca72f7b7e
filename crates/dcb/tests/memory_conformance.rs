//! The memory store runs the whole conformance kit.

dcb::conformance_tests!(|| async { dcb::MemoryStore::new() });
