//! An indexed in-memory store.
//!
//! Events live in a vector indexed by position; two posting lists map each tag and each type to
//! the ascending positions that carry it. A query item is answered from its rarest tag's list
//! (checking the rest of the item on each candidate) or from the union of its types' lists, so a
//! read costs O(log n + candidates) and a condition check stops at the first match. One
//! read-write lock lets many readers through while one writer appends; an append is visible
//! whole or not at all, which makes every reported head safe.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};

use tokio::sync::watch;

use crate::error::{Error, Result};
use crate::limits::{validate_append, validate_query, validate_source};
use crate::model::{
    AppendRequest, Query, QueryItem, ReadOptions, ReadResponse, SequencedEvent, already_appended,
};
use crate::store::{EventStore, EventStream};
use crate::subscription;

/// A store that keeps everything in memory, indexed by tag and by type.
///
/// Cloning gives another handle to the same store. Nothing survives the process.
///
/// ```
/// use dcb::{Event, EventStore, MemoryStore, Query, QueryItem, ReadOptions};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let store = MemoryStore::new();
/// store.append(vec![Event::new("A", "1"), Event::new("B", "2")], None).await?;
/// let read = store.read(&QueryItem::types(["B"]).into(), ReadOptions::default()).await?;
/// assert_eq!(read.events[0].position, 2);
/// # Ok::<(), dcb::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone)]
pub struct MemoryStore {
    shared: Arc<Shared>,
}

struct Shared {
    state: RwLock<State>,
    /// Announces each new head to subscriptions.
    heads: watch::Sender<u64>,
}

#[derive(Default)]
struct State {
    /// `events[i]` is at position `i + 1`.
    events: Vec<SequencedEvent>,
    /// Ascending positions of the events carrying each tag.
    by_tag: HashMap<String, Vec<u64>>,
    /// Ascending positions of the events of each type.
    by_type: HashMap<String, Vec<u64>>,
    tracking: HashMap<String, u64>,
}

impl Default for MemoryStore {
    fn default() -> Self {
        Self::new()
    }
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        MemoryStore {
            shared: Arc::new(Shared {
                state: RwLock::new(State::default()),
                heads: watch::Sender::new(0),
            }),
        }
    }

    /// Number of events stored.
    pub fn len(&self) -> usize {
        self.shared
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .events
            .len()
    }

    /// Whether no event is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl EventStore for MemoryStore {
    async fn read(&self, query: &Query, options: ReadOptions) -> Result<ReadResponse> {
        validate_query(query)?;
        let state = self
            .shared
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let events = state.scan(query, options);
        let head = if options.limit.is_some() && !options.backwards {
            events.last().map(|e| e.position)
        } else {
            state.head()
        };
        Ok(ReadResponse { events, head })
    }

    async fn append_request(&self, request: AppendRequest) -> Result<u64> {
        validate_append(&request)?;
        // Poisoning cannot leave a half-applied append: `State::append` checks everything before
        // its first mutation, and nothing after it can panic.
        let (last, grew) = {
            let mut state = self
                .shared
                .state
                .write()
                .unwrap_or_else(PoisonError::into_inner);
            let before = state.events.len();
            let last = state.append(request)?;
            (last, state.events.len() > before)
        };
        if grew {
            self.shared.heads.send_replace(last);
        }
        Ok(last)
    }

    async fn head(&self) -> Result<Option<u64>> {
        Ok(self
            .shared
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .head())
    }

    async fn tracking_position(&self, source: &str) -> Result<Option<u64>> {
        validate_source(source)?;
        let state = self
            .shared
            .state
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        Ok(state.tracking.get(source).copied())
    }

    async fn subscribe(&self, query: Query, after: Option<u64>) -> Result<EventStream> {
        validate_query(&query)?;
        let heads = self.shared.heads.subscribe();
        Ok(subscription::follow(self.clone(), query, after, heads))
    }
}

impl State {
    fn head(&self) -> Option<u64> {
        (!self.events.is_empty()).then_some(self.events.len() as u64)
    }

    fn event(&self, position: u64) -> &SequencedEvent {
        &self.events[(position - 1) as usize]
    }

    /// Applies a validated request: tracking and condition are checked before anything changes.
    fn append(&mut self, request: AppendRequest) -> Result<u64> {
        if let Some(tracking) = &request.tracking {
            if let Some(&recorded) = self.tracking.get(&tracking.source) {
                if tracking.position <= recorded {
                    return Err(Error::Integrity(format!(
                        "tracking position {} for source {:?} does not exceed the recorded {recorded}",
                        tracking.position, tracking.source
                    )));
                }
            }
        }
        if let Some(condition) = &request.condition {
            let query = &condition.fail_if_events_match;
            let first = ReadOptions {
                after: condition.after,
                limit: Some(1),
                backwards: false,
            };
            if let Some(conflict) = self.scan(query, first).first() {
                let submitted = ReadOptions {
                    limit: Some(request.events.len() as u32),
                    ..first
                };
                if let Some(position) =
                    already_appended(&request.events, &self.scan(query, submitted))
                {
                    return Ok(position);
                }
                return Err(Error::Integrity(format!(
                    "an event matching the append condition was recorded after position {} (at {})",
                    condition.after.unwrap_or(0),
                    conflict.position
                )));
            }
        }
        for event in request.events {
            let position = self.events.len() as u64 + 1;
            for tag in &event.tags {
                let list = self.by_tag.entry(tag.clone()).or_default();
                // An event listing a tag twice is indexed once.
                if list.last() != Some(&position) {
                    list.push(position);
                }
            }
            self.by_type
                .entry(event.event_type.clone())
                .or_default()
                .push(position);
            self.events.push(SequencedEvent { position, event });
        }
        if let Some(tracking) = request.tracking {
            self.tracking.insert(tracking.source, tracking.position);
        }
        Ok(self.events.len() as u64)
    }

    /// The events matching `query` in the window and direction of `options`.
    fn scan(&self, query: &Query, options: ReadOptions) -> Vec<SequencedEvent> {
        let limit = options.limit.map_or(usize::MAX, |l| l as usize);
        let after = options.after.unwrap_or(0);
        let head = self.events.len() as u64;
        if limit == 0 || after >= head {
            return Vec::new();
        }
        if query.matches_all() {
            let window = &self.events[after as usize..];
            return if options.backwards {
                window.iter().rev().take(limit).cloned().collect()
            } else {
                window.iter().take(limit).cloned().collect()
            };
        }
        let mut merge = Merge::new(self.sources(query), after, options.backwards);
        let mut found = Vec::new();
        while found.len() < limit {
            let Some(candidates) = merge.next_position() else {
                break;
            };
            let event = self.event(candidates.position);
            if candidates
                .items
                .iter()
                .any(|item| item.is_none_or(|item| item.matches(&event.event)))
            {
                found.push(event.clone());
            }
        }
        found
    }

    /// Posting lists that together hold every candidate for `query`, which must not match all.
    /// A list paired with `Some(item)` holds candidates that must still be checked against it.
    fn sources<'a>(&'a self, query: &'a Query) -> Vec<Source<'a>> {
        let mut sources = Vec::new();
        for item in &query.items {
            if item.tags.is_empty() {
                // Every event of a listed type matches a types-only item.
                sources.extend(item.types.iter().filter_map(|ty| self.by_type.get(ty)).map(
                    |positions| Source {
                        positions,
                        check: None,
                    },
                ));
                continue;
            }
            // The rarest tag bounds the candidates; a tag never seen means no candidate at all.
            let lists: Option<Vec<&Vec<u64>>> =
                item.tags.iter().map(|t| self.by_tag.get(t)).collect();
            if let Some(rarest) = lists.and_then(|l| l.into_iter().min_by_key(|l| l.len())) {
                let exact = item.types.is_empty() && item.tags.len() == 1;
                sources.push(Source {
                    positions: rarest,
                    check: (!exact).then_some(item),
                });
            }
        }
        sources
    }
}

/// Candidate positions, ascending, and the item each must still be checked against (if any).
struct Source<'a> {
    positions: &'a [u64],
    check: Option<&'a QueryItem>,
}

/// The candidates at one position: the check of each source that offered it.
struct Candidates<'a> {
    position: u64,
    items: Vec<Option<&'a QueryItem>>,
}

/// A k-way merge of sources restricted to positions after a bound, in either direction, that
/// yields each position once.
struct Merge<'a> {
    sources: Vec<Source<'a>>,
    /// Per source, the next index to take (forward) or one past it (backward).
    cursors: Vec<usize>,
    /// Per source, the lowest index in the window (backward reads stop there).
    floors: Vec<usize>,
    /// Ordered so that the next position to yield is the greatest key.
    heap: BinaryHeap<(u64, Reverse<usize>)>,
    backwards: bool,
}

impl<'a> Merge<'a> {
    fn new(sources: Vec<Source<'a>>, after: u64, backwards: bool) -> Self {
        let floors: Vec<usize> = sources
            .iter()
            .map(|s| s.positions.partition_point(|&p| p <= after))
            .collect();
        let cursors = if backwards {
            sources.iter().map(|s| s.positions.len()).collect()
        } else {
            floors.clone()
        };
        let mut merge = Merge {
            sources,
            cursors,
            floors,
            heap: BinaryHeap::new(),
            backwards,
        };
        for source in 0..merge.sources.len() {
            merge.push_next(source);
        }
        merge
    }

    fn key(&self, position: u64) -> u64 {
        if self.backwards { position } else { !position }
    }

    /// Puts the source's next position on the heap, if it has one left in the window.
    fn push_next(&mut self, source: usize) {
        let positions = self.sources[source].positions;
        let cursor = self.cursors[source];
        let next = if self.backwards {
            (cursor > self.floors[source]).then(|| positions[cursor - 1])
        } else {
            positions.get(cursor).copied()
        };
        if let Some(position) = next {
            self.heap.push((self.key(position), Reverse(source)));
        }
    }

    fn next_position(&mut self) -> Option<Candidates<'a>> {
        let (key, _) = *self.heap.peek()?;
        let position = if self.backwards { key } else { !key };
        let mut items = Vec::new();
        while let Some(&(k, Reverse(source))) = self.heap.peek() {
            if k != key {
                break;
            }
            self.heap.pop();
            items.push(self.sources[source].check);
            if self.backwards {
                self.cursors[source] -= 1;
            } else {
                self.cursors[source] += 1;
            }
            self.push_next(source);
        }
        Some(Candidates { position, items })
    }
}
