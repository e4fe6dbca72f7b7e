//! The DCB event model: events, queries, append conditions and read options.
//!
//! These are plain values. Matching rules live here ([`Query::matches`]) so that every store, and
//! the naive model the conformance kit compares stores against, agree on one definition.

use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use bytes::Bytes;
use uuid::Uuid;

/// A fact to record: a type, opaque data, and tags that say what the fact is about.
///
/// Tags keep the order they were given in. The optional `uuid` makes a conditional append safely
/// retryable (see [`EventStore::append`](crate::EventStore::append)); `metadata` is carried
/// unchanged for wire compatibility with UmaDB clients.
///
/// ```
/// use dcb::Event;
///
/// let event = Event::new("StudentJoinedCourse", r#"{"student":"s1"}"#)
///     .tagged("student-s1")
///     .tagged("course-c1");
/// assert_eq!(event.tags, ["student-s1", "course-c1"]);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// What kind of fact this is, e.g. `"CourseRegistered"`. Must not be empty.
    pub event_type: String,
    /// The payload, opaque to the store.
    pub data: Bytes,
    /// What the fact is about, e.g. `"course-42"`, in the order given.
    pub tags: Vec<String>,
    /// A client-chosen identity, used to recognise a retried append.
    pub uuid: Option<Uuid>,
    /// Free-form string pairs, stored and returned unchanged.
    pub metadata: BTreeMap<String, String>,
}

impl Event {
    /// An event of `event_type` with `data`, no tags, no uuid and no metadata.
    pub fn new(event_type: impl Into<String>, data: impl Into<Bytes>) -> Self {
        Event {
            event_type: event_type.into(),
            data: data.into(),
            tags: Vec::new(),
            uuid: None,
            metadata: BTreeMap::new(),
        }
    }

    /// Adds one tag after the existing ones.
    pub fn tagged(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Adds several tags after the existing ones, in order.
    pub fn with_tags<I, T>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.tags.extend(tags.into_iter().map(Into::into));
        self
    }

    /// Sets the event's uuid.
    pub fn with_uuid(mut self, uuid: Uuid) -> Self {
        self.uuid = Some(uuid);
        self
    }

    /// Adds one metadata entry (replacing an earlier value for the same key).
    pub fn with_metadata(mut self, key: impl Into<String>, value: impl Into<String>) -> Self {
        self.metadata.insert(key.into(), value.into());
        self
    }

    /// The bytes of its type, data, tags and metadata: about what it takes in memory or in a
    /// message, for sizing batches.
    ///
    /// ```
    /// let event = dcb::Event::new("Joined", "{}").tagged("course-1");
    /// assert_eq!(event.byte_size(), 6 + 2 + 8);
    /// ```
    pub fn byte_size(&self) -> usize {
        self.event_type.len()
            + self.data.len()
            + self.tags.iter().map(String::len).sum::<usize>()
            + self.metadata.iter().map(|(key, value)| key.len() + value.len()).sum::<usize>()
    }

    /// Whether the event carries `tag`.
    pub fn has_tag(&self, tag: &str) -> bool {
        self.tags.iter().any(|t| t == tag)
    }
}

/// An event as recorded, with its position in the store's single sequence.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SequencedEvent {
    /// Position in the sequence: the first event is at 1, and positions strictly increase.
    pub position: u64,
    /// The recorded event.
    pub event: Event,
}

/// One alternative of a [`Query`]: events of any of `types` (or of any type when empty) that
/// carry every one of `tags`.
///
/// More types widen an item; more tags narrow it. An item with neither matches every event.
///
/// ```
/// use dcb::{Event, QueryItem};
///
/// let item = QueryItem::types(["CourseRegistered", "CourseRenamed"]).and_tags(["course-1"]);
/// assert!(item.matches(&Event::new("CourseRenamed", "").tagged("course-1")));
/// assert!(!item.matches(&Event::new("CourseRenamed", "").tagged("course-2")));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QueryItem {
    /// Event types, any of which matches; empty means any type.
    pub types: Vec<String>,
    /// Tags that a matching event must all carry.
    pub tags: Vec<String>,
}

impl QueryItem {
    /// An item matching events of any of `types`, whatever their tags.
    pub fn types<I, T>(types: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        QueryItem { types: types.into_iter().map(Into::into).collect(), tags: Vec::new() }
    }

    /// An item matching events of any type that carry every one of `tags`.
    pub fn tags<I, T>(tags: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        QueryItem { types: Vec::new(), tags: tags.into_iter().map(Into::into).collect() }
    }

    /// Narrows the item further to events that also carry every one of `tags`.
    pub fn and_tags<I, T>(mut self, tags: I) -> Self
    where
        I: IntoIterator<Item = T>,
        T: Into<String>,
    {
        self.tags.extend(tags.into_iter().map(Into::into));
        self
    }

    /// Whether `event` matches this item.
    pub fn matches(&self, event: &Event) -> bool {
        (self.types.is_empty() || self.types.contains(&event.event_type))
            && self.tags.iter().all(|tag| event.has_tag(tag))
    }

    /// Whether the item has neither types nor tags, and so matches every event.
    pub fn matches_all(&self) -> bool {
        self.types.is_empty() && self.tags.is_empty()
    }
}

/// A selection of events: those matching any of its items. A query with no items matches every
/// event.
///
/// An accidentally empty query reads the whole store, so code that builds items from a list
/// (say, of ids) should refuse an empty list before building the query.
///
/// ```
/// use dcb::{Event, Query, QueryItem};
///
/// let query = Query::from(QueryItem::tags(["course-1"])).or(QueryItem::types(["Reset"]));
/// assert!(query.matches(&Event::new("Reset", "")));
/// assert!(Query::all().matches(&Event::new("Anything", "")));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Query {
    /// The alternatives; an event matches when it matches any of them.
    pub items: Vec<QueryItem>,
}

impl Query {
    /// The query that matches every event.
    pub fn all() -> Self {
        Query::default()
    }

    /// A query made of `items`. With no items it matches every event.
    pub fn new(items: impl IntoIterator<Item = QueryItem>) -> Self {
        Query { items: items.into_iter().collect() }
    }

    /// Adds an alternative.
    pub fn or(mut self, item: QueryItem) -> Self {
        self.items.push(item);
        self
    }

    /// Whether `event` matches the query.
    pub fn matches(&self, event: &Event) -> bool {
        self.items.is_empty() || self.items.iter().any(|item| item.matches(event))
    }

    /// Whether the query selects every event (no items, or an item with neither types nor tags).
    pub fn matches_all(&self) -> bool {
        self.items.is_empty() || self.items.iter().any(QueryItem::matches_all)
    }
}

impl From<QueryItem> for Query {
    fn from(item: QueryItem) -> Self {
        Query { items: vec![item] }
    }
}

/// The condition under which an append may happen: it fails if any event after `after` (or any
/// event at all, when `after` is `None`) matches `fail_if_events_match`.
///
/// A decision model reads with a query, decides, then appends with the same query and the head
/// its read returned, so that the append fails if anything relevant changed meanwhile.
///
/// An item may be checked from a later position of its own ([`AppendCondition::item_after`]):
/// a process that knows some tags up to different positions (a cache of their events) can
/// append under one condition without meeting its own later events of one tag in the check of
/// another. Stores that do not know item positions (UmaDB's protocol carries one `after`) check
/// every item after `after`, which fails more often but never wrongly succeeds.
///
/// ```
/// use dcb::{AppendCondition, Event, Query, QueryItem, SequencedEvent};
///
/// let query = Query::from(QueryItem::tags(["course-1"])).or(QueryItem::tags(["student-1"]));
/// let condition = AppendCondition::new(query, Some(10)).with_item_after(1, 20);
/// assert_eq!(condition.item_after(0), Some(10));
/// assert_eq!(condition.item_after(1), Some(20));
///
/// let at = |position| SequencedEvent { position, event: Event::new("Joined", "").with_tags(["student-1"]) };
/// assert!(!condition.is_failed_by(&at(15)));
/// assert!(condition.is_failed_by(&at(21)));
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendCondition {
    /// Events that must not have been recorded after `after` (each item after
    /// [`AppendCondition::item_after`]).
    pub fail_if_events_match: Query,
    /// The position up to which the appender has seen the store; `None` means "nothing seen".
    pub after: Option<u64>,
    /// Later positions for single items: item `i` is checked after `items_after[i]` where that is
    /// given and later than `after`. Empty (the default), or one entry per item.
    pub items_after: Vec<Option<u64>>,
}

impl AppendCondition {
    /// Fail if an event matching `query` was recorded after position `after`.
    pub fn new(query: Query, after: Option<u64>) -> Self {
        AppendCondition { fail_if_events_match: query, after, items_after: Vec::new() }
    }

    /// Checks item `index` of the query only after `position` (if that is later than `after`).
    ///
    /// # Panics
    ///
    /// If the query has no item `index`.
    pub fn with_item_after(mut self, index: usize, position: u64) -> Self {
        let items = self.fail_if_events_match.items.len();
        assert!(index < items, "item {index} of a query of {items} items");
        self.items_after.resize(items, None);
        self.items_after[index] = Some(position);
        self
    }

    /// The position after which item `index` is checked: the later of `after` and the item's own.
    pub fn item_after(&self, index: usize) -> Option<u64> {
        // `None` orders before every position.
        self.after.max(self.items_after.get(index).copied().flatten())
    }

    /// Whether items are checked from positions of their own, not all after `after`.
    pub fn has_item_positions(&self) -> bool {
        self.items_after.iter().any(Option::is_some)
    }

    /// The latest position after which any part of the condition is checked.
    pub fn latest_after(&self) -> Option<u64> {
        (0..self.fail_if_events_match.items.len()).map(|i| self.item_after(i)).max().unwrap_or(self.after)
    }

    /// Whether `event`, recorded at its position, makes the condition fail.
    pub fn is_failed_by(&self, event: &SequencedEvent) -> bool {
        let items = &self.fail_if_events_match.items;
        if items.is_empty() {
            return event.position > self.after.unwrap_or(0);
        }
        items
            .iter()
            .enumerate()
            .any(|(i, item)| event.position > self.item_after(i).unwrap_or(0) && item.matches(&event.event))
    }

    /// The first position that makes the condition fail, given `first_match(query, after)`, the
    /// first position after `after` matching `query` (within whatever bounds the caller keeps):
    /// asked once for the whole query, or once per item when items have positions of their own.
    pub fn first_failure(&self, mut first_match: impl FnMut(&Query, u64) -> Option<u64>) -> Option<u64> {
        let query = &self.fail_if_events_match;
        if !self.has_item_positions() {
            return first_match(query, self.after.unwrap_or(0));
        }
        let item_first = |(i, item): (usize, &QueryItem)| {
            first_match(&Query::from(item.clone()), self.item_after(i).unwrap_or(0))
        };
        query.items.iter().enumerate().filter_map(item_first).min()
    }
}

/// How to read: between which positions, how many events, in which direction.
///
/// `after` and `before` are exclusive bounds in both directions: only events with a position
/// greater than `after` and less than `before` are considered. A forward read returns the oldest
/// matches first; a backward read returns the newest matches first, so
/// `ReadOptions::default().backwards().limit(1)` reads the latest matching event, and adding
/// `.before(p)` the latest one before `p` (paging backwards through a store).
///
/// The head reported with the events follows the rules in [`ReadResponse::head`].
///
/// ```
/// use dcb::ReadOptions;
///
/// let page = ReadOptions::default().backwards().before(1_000).limit(100);
/// assert_eq!(page.last_considered(5_000), 999);
/// assert_eq!(ReadOptions::default().last_considered(5_000), 5_000);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReadOptions {
    /// Only events with a position greater than this are returned.
    pub after: Option<u64>,
    /// Only events with a position less than this are returned.
    pub before: Option<u64>,
    /// At most this many events are returned.
    pub limit: Option<u32>,
    /// No more events are returned once those returned add up to this many bytes
    /// ([`Event::byte_size`]); the first always is, however large. See [`ReadOptions::max_bytes`].
    pub max_bytes: Option<usize>,
    /// Newest first instead of oldest first.
    pub backwards: bool,
}

impl ReadOptions {
    /// Reads only events after `position` (exclusive).
    pub fn after(mut self, position: u64) -> Self {
        self.after = Some(position);
        self
    }

    /// Reads only events before `position` (exclusive).
    pub fn before(mut self, position: u64) -> Self {
        self.before = Some(position);
        self
    }

    /// Returns at most `limit` events.
    pub fn limit(mut self, limit: u32) -> Self {
        self.limit = Some(limit);
        self
    }

    /// Returns no more events once those returned add up to `bytes` bytes or more (by
    /// [`Event::byte_size`]), so that what a read holds in memory is bounded whatever its events
    /// weigh; the first matching event is always returned, however large, so that a reader paging
    /// on from the last event it got always moves on. Like a limit, a forward read with a byte
    /// budget reports the last event returned as its head ([`ReadResponse::head`]).
    ///
    /// ```
    /// use dcb::ReadOptions;
    ///
    /// let page = ReadOptions::default().limit(1_000).max_bytes(4 << 20);
    /// assert!(page.takes_more(0) && page.takes_more((4 << 20) - 1));
    /// assert!(!page.takes_more(4 << 20));
    /// ```
    pub fn max_bytes(mut self, bytes: usize) -> Self {
        self.max_bytes = Some(bytes);
        self
    }

    /// Whether a read that has so far taken events of `bytes_taken` bytes in all takes the next
    /// matching one, as far as [`ReadOptions::max_bytes`] goes (the limit is counted apart).
    pub fn takes_more(&self, bytes_taken: usize) -> bool {
        self.max_bytes.is_none_or(|max| bytes_taken == 0 || bytes_taken < max)
    }

    /// Whether a read with these options reports the last event it returned as its head: a
    /// forward read with a limit or a byte budget, which does not consider every later match
    /// (see [`ReadResponse::head`]).
    pub fn reports_last_returned(&self) -> bool {
        (self.limit.is_some() || self.max_bytes.is_some()) && !self.backwards
    }

    /// Returns the newest matches first.
    pub fn backwards(mut self) -> Self {
        self.backwards = true;
        self
    }

    /// The last position of a store with head `head` (0 when empty) that a read with these
    /// options considers: `head`, or the position just below `before` if that is lower.
    pub fn last_considered(&self, head: u64) -> u64 {
        match self.before {
            Some(before) => head.min(before.saturating_sub(1)),
            None => head,
        }
    }
}

/// What a read returns: the matching events and the head the reader may condition on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadResponse {
    /// Matching events, ascending by position (descending for a backward read).
    pub events: Vec<SequencedEvent>,
    /// The position up to which the read has considered the store, to use as an append
    /// condition's `after`:
    ///
    /// - a read without a limit, or a backward read: the position of the last event in the
    ///   whole store (matching or not), or the position just below `before` if that is lower;
    ///   `None` when that is 0. A backward read returns the newest matches, so nothing after
    ///   them (below `before`) was left out;
    /// - a forward read with a limit or a byte budget: the position of the last event returned,
    ///   `None` when none was returned (the events after it were not all considered).
    pub head: Option<u64>,
}

impl ReadResponse {
    /// The response to a read with `options` that found `events` in a store whose head (the
    /// position of its last event, 0 when empty) was `store_head`: works out [`ReadResponse::head`].
    ///
    /// ```
    /// use dcb::{ReadOptions, ReadResponse};
    ///
    /// let read = ReadResponse::new(Vec::new(), 7, ReadOptions::default().before(5));
    /// assert_eq!(read.head, Some(4));
    /// ```
    pub fn new(events: Vec<SequencedEvent>, store_head: u64, options: ReadOptions) -> Self {
        let head = if options.reports_last_returned() {
            events.last().map(|event| event.position)
        } else {
            Some(options.last_considered(store_head)).filter(|&head| head > 0)
        };
        ReadResponse { events, head }
    }
}

/// A consumer's progress through some upstream sequence, recorded atomically with the events the
/// consumer appends, so that exactly-once processing survives crashes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackingInfo {
    /// Names the upstream sequence, e.g. a projection or another store.
    pub source: String,
    /// Position in the upstream sequence; must be greater than the last one recorded for `source`.
    pub position: u64,
}

impl TrackingInfo {
    /// Progress `position` through `source`.
    pub fn new(source: impl Into<String>, position: u64) -> Self {
        TrackingInfo { source: source.into(), position }
    }
}

/// What [`EventStore::append_request`](crate::EventStore::append_request) takes: events, an
/// optional condition and optional tracking info, all applied atomically.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AppendRequest {
    /// The events to record, in order; must not be empty.
    pub events: Vec<Event>,
    /// The condition that must hold, or none for an unconditional append.
    pub condition: Option<AppendCondition>,
    /// Progress to record with the events.
    pub tracking: Option<TrackingInfo>,
}

impl AppendRequest {
    /// An unconditional append of `events`.
    pub fn new(events: Vec<Event>) -> Self {
        AppendRequest { events, condition: None, tracking: None }
    }

    /// Adds an append condition.
    pub fn condition(mut self, condition: AppendCondition) -> Self {
        self.condition = Some(condition);
        self
    }

    /// Adds tracking info.
    pub fn tracking(mut self, tracking: TrackingInfo) -> Self {
        self.tracking = Some(tracking);
        self
    }
}

/// Where the events of a conditional append lie if it is a retry of one already recorded: its
/// `condition` failed, with `first_match` the first position that fails it
/// ([`AppendCondition::first_failure`]). [`already_appended`] then tells, from the events
/// recorded there, whether it is.
///
/// Had the append been recorded, at positions `p ..= p + n - 1` with `p` after every position the
/// condition is checked from ([`AppendCondition::latest_after`]), nothing failing the condition
/// came before `p` (or it would have failed), so the first failure is its own first matching
/// event: `p` is `first_match` less that event's index in the append. The rule holds for appends
/// that hold events outside the condition's query too. None when the span would end past `head`,
/// the store's last position, when no submitted event matches the query (then the failure says
/// nothing about the append itself) or when a submitted event lacks a uuid or carries the nil
/// one: the nil uuid identifies nothing, since clients send it for "no uuid" (the Python
/// `eventsourcing` library does by default), and two different appends carrying it must not be
/// taken for one.
///
/// ```
/// use dcb::{AppendCondition, Event, Query, QueryItem, SequencedEvent, Uuid, already_appended, retry_span};
///
/// let condition = AppendCondition::new(Query::from(QueryItem::tags(["course-2"])), Some(10));
/// let sent = [
///     Event::new("Left", "{}").with_tags(["course-1"]).with_uuid(Uuid::from_u128(7)),
///     Event::new("Joined", "{}").with_tags(["course-2"]).with_uuid(Uuid::from_u128(8)),
/// ];
/// // Recorded at 11 and 12 by the first attempt; the retry's condition fails at 12.
/// assert_eq!(retry_span(&condition, &sent, 12, 12), Some(11..=12));
/// let recorded: Vec<_> =
///     sent.iter().zip(11..).map(|(e, position)| SequencedEvent { position, event: e.clone() }).collect();
/// assert_eq!(already_appended(&sent, &recorded), Some(12));
///
/// let anonymous = [Event::new("Joined", "{}").with_tags(["course-2"]).with_uuid(Uuid::nil())];
/// assert_eq!(retry_span(&condition, &anonymous, 12, 12), None);
/// ```
pub fn retry_span(
    condition: &AppendCondition,
    submitted: &[Event],
    first_match: u64,
    head: u64,
) -> Option<RangeInclusive<u64>> {
    let offset = retry_offset(&condition.fail_if_events_match, submitted)? as u64;
    let after = condition.latest_after().unwrap_or(0);
    let start = first_match.checked_sub(offset).filter(|&start| start > after)?;
    let end = start.checked_add(submitted.len() as u64 - 1).filter(|&end| end <= head)?;
    Some(start..=end)
}

/// The first part of [`retry_span`], for stores that find the span themselves: the index in
/// `submitted` of the first event matching `query`, if the append can be recognised as a retry.
pub fn retry_offset(query: &Query, submitted: &[Event]) -> Option<usize> {
    if !submitted.iter().all(|event| event.uuid.is_some_and(|uuid| !uuid.is_nil())) {
        return None;
    }
    submitted.iter().position(|event| query.matches(event))
}

/// The position a retried conditional append already got, if `recorded`, the events at its
/// [`retry_span`], are the submitted events: the same uuids (none nil), in order, at consecutive
/// positions.
pub fn already_appended(submitted: &[Event], recorded: &[SequencedEvent]) -> Option<u64> {
    if submitted.is_empty() || recorded.len() != submitted.len() {
        return None;
    }
    let first = recorded[0].position;
    let same = submitted.iter().zip(recorded).zip(first..).all(|((event, recorded), position)| {
        event.uuid.is_some_and(|uuid| !uuid.is_nil())
            && event.uuid == recorded.event.uuid
            && recorded.position == position
    });
    if same { recorded.last().map(|e| e.position) } else { None }
}
