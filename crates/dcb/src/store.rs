//! The store contract: what every event store in this workspace does, with the same semantics.

use std::future::Future;
use std::pin::Pin;

use futures_core::Stream;

use crate::error::Result;
use crate::model::{AppendCondition, AppendRequest, Event, Query, ReadOptions, ReadResponse};

/// The events of a subscription, in position order, without gaps or repeats. It ends only when
/// the store is closed or after yielding an error.
pub type EventStream = Pin<Box<dyn Stream<Item = Result<crate::SequencedEvent>> + Send + 'static>>;

/// A DCB event store: one sequence of events, read by query and appended under a condition.
///
/// A store value is a cheap handle: clone it to share the store between tasks.
///
/// # Semantics shared by every store
///
/// - Positions start at 1; the events of one append get consecutive positions, and appends are
///   visible in position order: a reader that sees position `p` sees every position below it
///   (the head a read reports is safe to condition on).
/// - Requests are validated before anything is written (see [`crate::limits`]); a refused
///   request is an [`Error::InvalidArgument`](crate::Error::InvalidArgument) and writes nothing.
/// - A failed condition is an [`Error::Integrity`](crate::Error::Integrity) and writes nothing.
///
/// ```
/// use dcb::{AppendCondition, Event, EventStore, MemoryStore, Query, QueryItem, ReadOptions};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store = MemoryStore::new();
/// let course = Query::from(QueryItem::tags(["course-1"]));
///
/// // Decide on what was read, then append under the condition that nothing relevant changed.
/// let seen = store.read(&course, ReadOptions::default()).await?;
/// assert!(seen.events.is_empty());
/// let event = Event::new("CourseRegistered", "{}").tagged("course-1");
/// let condition = AppendCondition::new(course.clone(), seen.head);
/// assert_eq!(store.append(vec![event.clone()], Some(condition.clone())).await?, 1);
///
/// // The same decision taken again on the stale read now conflicts.
/// let conflict = store.append(vec![event], Some(condition)).await.unwrap_err();
/// assert!(conflict.is_integrity());
/// # Ok::<(), dcb::Error>(())
/// # }).unwrap();
/// ```
pub trait EventStore: Clone + Send + Sync + 'static {
    /// The events matching `query` with the position, limit and direction of `options`, and the
    /// head to condition a later append on (see [`ReadResponse::head`]).
    fn read(&self, query: &Query, options: ReadOptions) -> impl Future<Output = Result<ReadResponse>> + Send;

    /// Records `request.events` atomically, with `request.tracking`, if `request.condition`
    /// holds; returns the position of the last recorded event.
    ///
    /// Fails with an integrity error, writing nothing, when the condition fails or the tracking
    /// position does not exceed the last one recorded for its source. A conditional append whose
    /// events all carry uuids (not the nil one), and whose condition fails only because those
    /// very events were already recorded (the first event matching the condition after its
    /// `after` is its own first matching event, with the rest of its events around it; see
    /// [`retry_span`](crate::retry_span)), is a retry of an append that succeeded: it returns the
    /// original last position, whatever its tracking (which the first attempt recorded). A retry
    /// none of whose events match its own condition cannot be recognised this way: it is refused
    /// as a conflict if something else matched since, and recorded a second time if not.
    ///
    /// If the store becomes unreachable during the call, the append may or may not have been
    /// recorded; the error is then [`Error::Unavailable`](crate::Error::Unavailable).
    fn append_request(&self, request: AppendRequest) -> impl Future<Output = Result<u64>> + Send;

    /// Records `events` atomically if `condition` holds (or unconditionally when it is `None`);
    /// returns the position of the last one. See [`EventStore::append_request`].
    fn append(
        &self,
        events: Vec<Event>,
        condition: Option<AppendCondition>,
    ) -> impl Future<Output = Result<u64>> + Send {
        self.append_request(AppendRequest { events, condition, tracking: None })
    }

    /// The position of the last event in the store, `None` when it is empty.
    fn head(&self) -> impl Future<Output = Result<Option<u64>>> + Send;

    /// The last position recorded with tracking info for `source`, `None` if none was.
    fn tracking_position(&self, source: &str) -> impl Future<Output = Result<Option<u64>>> + Send;

    /// Every event matching `query` after position `after` (exclusive): first those already
    /// recorded, then new ones as they are recorded. The stream never skips or repeats an event,
    /// so a consumer resumes by subscribing again after the last position it handled.
    fn subscribe(&self, query: Query, after: Option<u64>)
    -> impl Future<Output = Result<EventStream>> + Send;
}
