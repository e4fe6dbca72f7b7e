//! The file store runs the whole conformance kit: every rule, the race test and the model test.

mod common;

dcb::conformance_tests!(|| async { common::TempStore::new() });
