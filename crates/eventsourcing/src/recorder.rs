//! An aggregate recorder over any DCB store, so that aggregates work on every store.

use std::collections::{HashMap, HashSet};

use dcb::limits::{MAX_NAME_BYTES, MAX_QUERY_ITEMS};
use dcb::recorder::{AggregateEvent, AggregateRecorder, validate_insert};
use dcb::{AppendCondition, Event, EventStore, Query, QueryItem, ReadOptions};

/// Marks version tags; id tags may not start with it, so no id tag is ever a version tag.
const VERSION_MARK: char = '@';

/// What a version tag adds to an id tag at most: the mark, the 20 digits of `u64::MAX` and `:`.
const VERSION_TAG_EXTRA: usize = 22;

/// Stores aggregate events in a DCB store: each event is tagged with its aggregate id (so DCB
/// queries by that tag see the aggregate's history) and with a version tag `@{version}:{id}`.
///
/// The uniqueness rule on (aggregate id, version) is the append condition: an insert fails if any
/// of its version tags is already recorded. That needs no read before the append, and is one
/// indexed look-up per version in the store. (An insert of more events than a query may name,
/// [`MAX_QUERY_ITEMS`], reads its aggregates first and appends on condition that none of them
/// changed; it may span at most that many aggregates.)
///
/// The id tag (the prefix followed by the aggregate id) must not start with `@`, and may be at
/// most 22 bytes shorter than a tag may be (234 bytes), so that the version tag has room for any
/// version. With a prefix ([`DcbRecorder::with_prefix`]) several recorders share one store (the
/// events of an aggregate, its snapshots): the tags become `{prefix}{id}` and
/// `@{version}:{prefix}{id}`.
///
/// Events that other code appends with the same id tags would be read as aggregate events (and
/// refused as corrupt, having no version tag): give aggregates ids of their own, or a prefix.
/// [`AggregateRecorder::count`] is the store's head: over a store shared with other writers it
/// counts their events too.
///
/// ```
/// use dcb::MemoryStore;
/// use dcb::recorder::{AggregateEvent, AggregateRecorder};
/// use eventsourcing::DcbRecorder;
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let recorder = DcbRecorder::new(MemoryStore::new());
/// let created = AggregateEvent {
///     aggregate_id: "course-1".into(),
///     version: 1,
///     event_type: "CourseRegistered".into(),
///     data: "{}".into(),
/// };
/// recorder.insert_events(vec![created.clone()]).await?;
/// assert!(recorder.insert_events(vec![created]).await.unwrap_err().is_integrity());
/// # Ok::<(), dcb::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct DcbRecorder<S> {
    store: S,
    prefix: String,
}

impl<S: EventStore> DcbRecorder<S> {
    /// A recorder whose id tags are the aggregate ids themselves.
    pub fn new(store: S) -> Self {
        Self::with_prefix(store, "")
    }

    /// A recorder whose id tags are `{prefix}{id}`, e.g. `"snapshot:"` for a snapshot recorder
    /// sharing the store of the aggregates' events.
    pub fn with_prefix(store: S, prefix: impl Into<String>) -> Self {
        DcbRecorder { store, prefix: prefix.into() }
    }

    /// The underlying store.
    pub fn store(&self) -> &S {
        &self.store
    }

    fn id_tag(&self, id: &str) -> String {
        let mut tag = String::with_capacity(self.prefix.len() + id.len());
        tag.push_str(&self.prefix);
        tag.push_str(id);
        tag
    }

    fn version_tag(&self, id: &str, version: u64) -> String {
        format!("{VERSION_MARK}{version}:{}{id}", self.prefix)
    }

    /// The condition of an insert with too many versions to name in one query: read what its
    /// aggregates hold, refuse a version already there, and append on condition that none of
    /// them changed since the read. (One read more than a small insert, for a rare case.)
    async fn large_insert_condition(&self, events: &[AggregateEvent]) -> dcb::Result<AppendCondition> {
        let mut ids: Vec<&str> = events.iter().map(|e| e.aggregate_id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        if ids.len() > MAX_QUERY_ITEMS {
            return Err(dcb::Error::invalid(format!(
                "an insert of more than {MAX_QUERY_ITEMS} events may span at most {MAX_QUERY_ITEMS} \
                 aggregates on a DCB store (this one spans {}): split it",
                ids.len()
            )));
        }
        let id_tags: HashMap<String, &str> = ids.iter().map(|id| (self.id_tag(id), *id)).collect();
        let query = Query::new(id_tags.keys().map(|tag| QueryItem::tags([tag.as_str()])));
        let read = self.store.read(&query, ReadOptions::default()).await?;
        let new: HashSet<(&str, u64)> = events.iter().map(|e| (e.aggregate_id.as_str(), e.version)).collect();
        for stored in read.events {
            // Every event read carries one of the id tags: the query asked for nothing else.
            let id = stored.event.tags.iter().find_map(|tag| id_tags.get(tag)).copied().unwrap_or_default();
            let recorded = self.decode(id, stored)?;
            if new.contains(&(id, recorded.version)) {
                return Err(dcb::Error::Integrity(format!(
                    "version {} of aggregate {id:?} is already recorded",
                    recorded.version
                )));
            }
        }
        Ok(AppendCondition::new(query, read.head))
    }

    fn decode(&self, id: &str, stored: dcb::SequencedEvent) -> dcb::Result<AggregateEvent> {
        let event = stored.event;
        let version = event
            .tags
            .iter()
            .find_map(|t| t.strip_prefix(VERSION_MARK)?.split_once(':'))
            .and_then(|(v, _)| v.parse().ok())
            .ok_or_else(|| {
                dcb::Error::Corruption(format!(
                    "event at position {} of aggregate {id:?} has no version tag",
                    stored.position
                ))
            })?;
        Ok(AggregateEvent {
            aggregate_id: id.to_owned(),
            version,
            event_type: event.event_type,
            data: event.data,
        })
    }
}

impl<S: EventStore> AggregateRecorder for DcbRecorder<S> {
    async fn insert_events(&self, events: Vec<AggregateEvent>) -> dcb::Result<u64> {
        validate_insert(&events)?;
        // The store cannot see a clash inside the batch itself. Small batches (the usual one or
        // two events) are checked pairwise, to spare them a hash set.
        let mut seen = HashSet::new();
        for (index, event) in events.iter().enumerate() {
            // With an empty prefix the id, else the prefix, must not look like a version tag.
            if self.id_tag(&event.aggregate_id).starts_with(VERSION_MARK) {
                return Err(dcb::Error::invalid(format!(
                    "aggregate id tag {:?} starts with {VERSION_MARK:?}, which marks version tags",
                    self.id_tag(&event.aggregate_id)
                )));
            }
            // Checked against the longest version, not this one: an id whose version tag only
            // fits while the version is short would save until its version gained a digit, and
            // then never again.
            let id_tag_len = self.prefix.len() + event.aggregate_id.len();
            if id_tag_len + VERSION_TAG_EXTRA > MAX_NAME_BYTES {
                return Err(dcb::Error::invalid(format!(
                    "aggregate id tag {:?} is {id_tag_len} bytes long: with its version tag's \
                     {VERSION_TAG_EXTRA} bytes more, it must fit in the tag limit of {MAX_NAME_BYTES}",
                    self.id_tag(&event.aggregate_id)
                )));
            }
            let repeated = if events.len() <= 16 {
                events[..index]
                    .iter()
                    .any(|e| e.aggregate_id == event.aggregate_id && e.version == event.version)
            } else {
                !seen.insert((event.aggregate_id.as_str(), event.version))
            };
            if repeated {
                return Err(dcb::Error::Integrity(format!(
                    "version {} of aggregate {:?} appears twice in one insert",
                    event.version, event.aggregate_id
                )));
            }
        }
        let condition = if events.len() <= MAX_QUERY_ITEMS {
            let items =
                events.iter().map(|e| QueryItem::tags([self.version_tag(&e.aggregate_id, e.version)]));
            AppendCondition::new(Query::new(items), None)
        } else {
            self.large_insert_condition(&events).await?
        };
        let stored = events
            .into_iter()
            .map(|e| {
                let version_tag = self.version_tag(&e.aggregate_id, e.version);
                let mut event = Event::new(e.event_type, e.data);
                event.tags = vec![self.id_tag(&e.aggregate_id), version_tag];
                event
            })
            .collect();
        self.store.append(stored, Some(condition)).await
    }

    async fn select_events(
        &self,
        aggregate_id: &str,
        options: ReadOptions,
    ) -> dcb::Result<Vec<AggregateEvent>> {
        // `options.after` is a version; the store reads after a position, so find the position
        // of that version first (only loads that start from a snapshot pay this read).
        let after = match options.after {
            None | Some(0) => None,
            Some(version) => {
                let query = QueryItem::tags([self.version_tag(aggregate_id, version)]).into();
                let found = self.store.read(&query, ReadOptions::default().limit(1)).await?;
                match found.events.first() {
                    Some(event) => Some(event.position),
                    // Versions are contiguous: none after a version that does not exist.
                    None => return Ok(Vec::new()),
                }
            }
        };
        let query = QueryItem::tags([self.id_tag(aggregate_id)]).into();
        let read = self
            .store
            .read(
                &query,
                ReadOptions {
                    after,
                    limit: options.limit,
                    backwards: options.backwards,
                    ..ReadOptions::default()
                },
            )
            .await?;
        read.events.into_iter().map(|e| self.decode(aggregate_id, e)).collect()
    }

    async fn count(&self) -> dcb::Result<u64> {
        Ok(self.store.head().await?.unwrap_or(0))
    }
}

#[cfg(test)]
mod tests {
    use dcb::recorder::{AggregateEvent, AggregateRecorder};
    use dcb::{MemoryStore, ReadOptions};

    use super::DcbRecorder;

    fn events(id: &str, versions: std::ops::RangeInclusive<u64>) -> Vec<AggregateEvent> {
        versions
            .map(|version| AggregateEvent {
                aggregate_id: id.to_owned(),
                version,
                event_type: "Changed".into(),
                data: "{}".into(),
            })
            .collect()
    }

    #[tokio::test]
    async fn batches_beyond_the_query_item_limit_keep_the_uniqueness_rule() {
        let recorder = DcbRecorder::new(MemoryStore::new());
        recorder.insert_events(events("a", 1..=1500)).await.unwrap();
        let stale = [events("b", 1..=600), events("a", 1500..=2100)].concat();
        assert!(recorder.insert_events(stale).await.unwrap_err().is_integrity());
        let mut repeated = events("b", 1..=1200);
        repeated.push(repeated[700].clone());
        assert!(recorder.insert_events(repeated).await.unwrap_err().is_integrity());
        assert_eq!(recorder.count().await.unwrap(), 1500);
        let tail = recorder.select_events("a", ReadOptions::default().after(1498)).await.unwrap();
        assert_eq!(tail.iter().map(|e| e.version).collect::<Vec<_>>(), [1499, 1500]);
    }

    #[tokio::test]
    async fn ids_that_look_like_version_tags_are_refused() {
        let recorder = DcbRecorder::new(MemoryStore::new());
        let error = recorder.insert_events(events("@1:a", 1..=1)).await.unwrap_err();
        assert!(matches!(error, dcb::Error::InvalidArgument(_)), "{error:?}");
        let marked_prefix = DcbRecorder::with_prefix(MemoryStore::new(), "@snapshots:");
        let error = marked_prefix.insert_events(events("a", 1..=1)).await.unwrap_err();
        assert!(matches!(error, dcb::Error::InvalidArgument(_)), "{error:?}");
    }

    #[tokio::test]
    async fn ids_without_room_for_every_version_tag_are_refused() {
        for prefix in ["", "snapshot:"] {
            let recorder = DcbRecorder::with_prefix(MemoryStore::new(), prefix);
            let longest = "a".repeat(256 - 22 - prefix.len());
            // The longest version tag of the longest id tag is exactly as long as a tag may be.
            let mut last = events(&longest, 1..=1);
            last[0].version = u64::MAX;
            recorder.insert_events(last).await.unwrap();
            let too_long = format!("{longest}a");
            let error = recorder.insert_events(events(&too_long, 1..=1)).await.unwrap_err();
            assert!(matches!(&error, dcb::Error::InvalidArgument(m) if m.contains("tag limit")), "{error:?}");
            assert_eq!(recorder.count().await.unwrap(), 1, "{prefix:?}: the refused event was written");
        }
    }

    #[tokio::test]
    async fn large_inserts_span_at_most_one_query_of_aggregates() {
        let recorder = DcbRecorder::new(MemoryStore::new());
        let ids: Vec<String> = (0..=dcb::limits::MAX_QUERY_ITEMS).map(|i| format!("agg-{i}")).collect();
        let wide: Vec<_> = ids.iter().flat_map(|id| events(id, 1..=1)).collect();
        let error = recorder.insert_events(wide).await.unwrap_err();
        assert!(matches!(&error, dcb::Error::InvalidArgument(m) if m.contains("split it")), "{error:?}");
        assert_eq!(recorder.count().await.unwrap(), 0);
    }

    #[tokio::test]
    async fn prefixed_recorders_share_a_store_without_seeing_each_other() {
        let store = MemoryStore::new();
        let events_recorder = DcbRecorder::new(store.clone());
        let snapshots = DcbRecorder::with_prefix(store, "snapshot:");
        events_recorder.insert_events(events("a", 1..=3)).await.unwrap();
        snapshots.insert_events(events("a", 3..=3)).await.unwrap();
        let all = ReadOptions::default();
        assert_eq!(events_recorder.select_events("a", all).await.unwrap().len(), 3);
        let snapshot = snapshots.select_events("a", all).await.unwrap();
        assert_eq!(snapshot.iter().map(|e| e.version).collect::<Vec<_>>(), [3]);
    }
}

#[cfg(test)]
mod conformance {
    use super::DcbRecorder;

    dcb::recorder_conformance_tests!(|| async { DcbRecorder::new(dcb::MemoryStore::new()) });

    mod prefixed {
        use super::DcbRecorder;

        dcb::recorder_conformance_tests!(|| async {
            DcbRecorder::with_prefix(dcb::MemoryStore::new(), "events:")
        });
    }
}
