//! The conformance kit: one set of tests that every store in the workspace runs unchanged.
//!
//! - [`conformance`]: every rule of the store contract as a named test, the read matrix, the
//!   condition matrix, tracking, subscriptions and visibility of whole appends;
//! - [`race`]: many tasks making conflicting conditional appends, then [`history::check`] on what
//!   was recorded;
//! - [`model`]: seeded random operation sequences compared with a naive model of the semantics.
//!
//! A store's test file instantiates all of it with one macro, given an async factory that makes a
//! fresh, empty store for each test:
//!
//! ```ignore
//! mod conformance {
//!     dcb::conformance_tests!(|| async { dcb::MemoryStore::new() });
//! }
//! ```
//!
//! The generated tests use `#[tokio::test]`, so the calling crate needs `tokio` (with the
//! `macros` and `rt-multi-thread` features) among its dev-dependencies.

pub mod conformance;
pub mod history;
pub mod model;
pub mod race;
pub mod recorder;
mod rng;

pub use rng::Rng;

use std::sync::{Arc, Mutex, PoisonError};

use crate::{AppendRequest, Event, EventStore, EventStream, Query, ReadOptions, ReadResponse, Result};

/// An event of type `event_type` with `tags` and a small payload naming them.
pub fn event(event_type: &str, tags: &[&str]) -> Event {
    Event::new(event_type.to_owned(), format!("{event_type}:{}", tags.join(",")))
        .with_tags(tags.iter().copied())
}

/// The positions of the events a read returned, in order.
pub fn positions(read: &ReadResponse) -> Vec<u64> {
    read.events.iter().map(|e| e.position).collect()
}

/// A store that passes every call to `S` and notes, for each read, the bytes of the events it
/// returned ([`Event::byte_size`]): for tests of how many reads a layer makes and how large
/// their pages are. Clones share the notes.
#[derive(Debug, Clone, Default)]
pub struct RecordedReads<S> {
    inner: S,
    reads: Arc<Mutex<Vec<usize>>>,
}

impl<S> RecordedReads<S> {
    /// Records the reads of `inner`.
    pub fn new(inner: S) -> Self {
        RecordedReads { inner, reads: Arc::default() }
    }

    /// The store underneath, whose reads are not recorded.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The bytes of the events of each read so far, in order.
    pub fn read_bytes(&self) -> Vec<usize> {
        self.reads.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }
}

impl<S: EventStore> EventStore for RecordedReads<S> {
    async fn read(&self, query: &Query, options: ReadOptions) -> Result<ReadResponse> {
        let read = self.inner.read(query, options).await?;
        let bytes = read.events.iter().map(|e| e.event.byte_size()).sum();
        self.reads.lock().unwrap_or_else(PoisonError::into_inner).push(bytes);
        Ok(read)
    }
    async fn append_request(&self, request: AppendRequest) -> Result<u64> {
        self.inner.append_request(request).await
    }
    async fn head(&self) -> Result<Option<u64>> {
        self.inner.head().await
    }
    async fn tracking_position(&self, source: &str) -> Result<Option<u64>> {
        self.inner.tracking_position(source).await
    }
    async fn subscribe(&self, query: Query, after: Option<u64>) -> Result<EventStream> {
        self.inner.subscribe(query, after).await
    }
}

/// Instantiates the whole conformance kit for a store, one `#[tokio::test]` per rule.
///
/// `$make` is an expression callable with no argument that returns a future of a fresh, empty
/// store; it is called once per test. See the [module documentation](crate::testkit).
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@each $make;
            empty_store_has_no_head,
            positions_start_at_one_and_are_consecutive_per_append,
            events_round_trip_unchanged,
            empty_append_is_invalid_and_writes_nothing,
            invalid_events_are_refused_and_nothing_is_written,
            oversized_queries_are_refused,
            read_after_is_exclusive,
            read_without_limit_reports_the_store_head,
            read_with_limit_reports_the_last_returned_position,
            reads_stop_at_their_byte_budget,
            backward_reads_return_newest_first_and_the_store_head,
            read_before_is_exclusive_and_caps_the_head,
            read_matrix,
            condition_matrix,
            item_positions_matrix,
            retried_append_with_item_positions_returns_the_original_position,
            failed_condition_writes_nothing,
            retried_append_with_uuids_returns_the_original_position,
            retried_append_partly_outside_its_condition_returns_the_original_position,
            conflict_with_other_uuids_is_an_integrity_error,
            retried_append_with_tracking_returns_the_original_position,
            tracking_is_recorded_with_the_events,
            tracking_must_increase_per_source,
            subscription_delivers_backlog_then_waits_then_goes_live,
            subscription_resumes_after_a_position_and_filters,
            subscription_never_skips_under_concurrent_appends,
            reads_see_whole_appends_only,
        );

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn concurrent_conditional_appends_keep_a_valid_history() {
            let store = ($make)().await;
            let handles = (0..16).map(|_| store.clone()).collect();
            $crate::testkit::race::run(handles, $crate::testkit::race::RaceConfig::default()).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn random_operations_match_the_model() {
            let store = ($make)().await;
            $crate::testkit::model::run(&store, $crate::testkit::model::ModelConfig::from_env()).await;
        }
    };
    (@each $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let store = ($make)().await;
                $crate::testkit::conformance::$name(&store).await;
            }
        )*
    };
}
