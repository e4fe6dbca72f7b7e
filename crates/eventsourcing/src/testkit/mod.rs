//! Store-generic tests of every style, for any [`dcb::EventStore`].
//!
//! A store's test file instantiates all of them with one line, given an async factory of fresh,
//! empty stores:
//!
//! ```ignore
//! eventsourcing::application_tests!(|| async { dcb::MemoryStore::new() });
//! ```
//!
//! The generated tests use `#[tokio::test]`, so the calling crate needs `tokio` (with the
//! `macros` and `rt-multi-thread` features) among its dev-dependencies.

pub mod domain;
pub mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};

use dcb::{AppendRequest, Event, EventStore, EventStream, Query, ReadOptions, ReadResponse};

/// A store that, before each of its next `times` conditional appends, records `event`
/// unconditionally: a concurrent writer at the worst moment, to exercise conflicts and retries
/// on any store.
#[derive(Clone)]
pub struct Interfering<S> {
    inner: S,
    event: Arc<Event>,
    left: Arc<AtomicU32>,
}

impl<S: EventStore> Interfering<S> {
    /// Wraps `inner`, interfering with the next `times` conditional appends.
    pub fn new(inner: S, event: Event, times: u32) -> Self {
        Interfering { inner, event: Arc::new(event), left: Arc::new(AtomicU32::new(times)) }
    }

    /// How many interferences are left.
    pub fn left(&self) -> u32 {
        self.left.load(Ordering::SeqCst)
    }
}

impl<S: EventStore> EventStore for Interfering<S> {
    async fn read(&self, query: &Query, options: ReadOptions) -> dcb::Result<ReadResponse> {
        self.inner.read(query, options).await
    }

    async fn append_request(&self, request: AppendRequest) -> dcb::Result<u64> {
        let interfere = request.condition.is_some()
            && self.left.fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1)).is_ok();
        if interfere {
            self.inner.append(vec![Event::clone(&self.event)], None).await?;
        }
        self.inner.append_request(request).await
    }

    async fn head(&self) -> dcb::Result<Option<u64>> {
        self.inner.head().await
    }

    async fn tracking_position(&self, source: &str) -> dcb::Result<Option<u64>> {
        self.inner.tracking_position(source).await
    }

    async fn subscribe(&self, query: Query, after: Option<u64>) -> dcb::Result<EventStream> {
        self.inner.subscribe(query, after).await
    }
}

/// Instantiates every test of [`tests`], one `#[tokio::test]` each. `$make` is called with no
/// argument and returns a future of a fresh, empty store.
#[macro_export]
macro_rules! application_tests {
    ($make:expr) => {
        $crate::application_tests!(@each $make;
            aggregates_save_and_load,
            aggregates_concurrent_change_fails_the_whole_save,
            aggregates_load_from_snapshot_equals_replay,
            aggregates_share_the_store_with_dcb_queries,
            plain_decisions_enforce_the_rules,
            plain_concurrent_change_inside_the_boundary_fails,
            plain_retries_conflicts_only_and_boundedly,
            objects_get_get_many_group_and_save,
            objects_enforce_the_rules,
            objects_concurrent_change_inside_the_group_fails,
            objects_retry_conflicts_only_and_boundedly,
            slices_enforce_the_rules,
            slices_conflict_inside_the_boundary_only,
            slices_retry_conflicts_only_and_boundedly,
            concurrent_joins_never_overbook,
            upcast_old_stored_events_on_read,
        );
    };
    (@each $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let store = ($make)().await;
                $crate::testkit::tests::$name(store).await;
            }
        )*
    };
}
