//! Benchmarks of the in-memory store (written next).
fn main() {}
