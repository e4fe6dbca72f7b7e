//! An indexed in-memory store.
//!
//! Events live in a log indexed by position, stored compactly: types and tags are interned to
//! numbers, and the log grows in fixed-size chunks so that an append never copies the whole log.
//! Two posting lists map each tag and each type to the ascending positions that carry it. A query
//! item is answered from its rarest tag's list (checking the rest of the item on each candidate)
//! or from the union of its types' lists, so a read costs O(log n + candidates) and a condition
//! check stops at the first match. One read-write lock lets many readers through while one writer
//! appends; an append is visible whole or not at all, which makes every reported head safe.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, PoisonError, RwLock};

use bytes::Bytes;
use hashbrown::hash_map::EntryRef;
use tokio::sync::watch;
use uuid::Uuid;

use crate::error::{Error, Result};
use crate::huge_pages::{self, HugePages};
use crate::limits::{validate_append, validate_query, validate_source};
use crate::model::{
    AppendRequest, Event, Query, QueryItem, ReadOptions, ReadResponse, SequencedEvent, already_appended,
    retry_span,
};
use crate::postings::{self, Check, Source};
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
    /// `log.get(p - 1)` is the event at position `p`.
    log: Chunked<Stored>,
    /// The tag numbers of every event, one after another: an event's tags are the
    /// `tags_len` entries from its `tags_start`, so the tags of neighbouring events share cache lines.
    tags: Chunked<u32>,
    /// Every type and tag ever recorded, with its posting lists.
    names: Names,
    tracking: HashMap<String, u64>,
}

/// An event as kept in the log: names replaced by their numbers, tags kept apart in
/// [`State::tags`], and the rarely used metadata boxed, to keep the hot part small.
struct Stored {
    event_type: u32,
    tags_len: u32,
    tags_start: u64,
    data: Bytes,
    uuid: Option<Uuid>,
    // Boxed: 8 bytes in every stored event instead of 24, and most events carry no metadata.
    #[allow(clippy::box_collection)]
    metadata: Option<Box<BTreeMap<String, String>>>,
}

/// Every distinct type and tag, known by a number, with the positions that carry it. A lookup by
/// name finds the posting lists in the same hash table slot, and short names are stored inline
/// there: at millions of names, each pointer not followed is a cache miss saved.
#[derive(Default)]
struct Names {
    entries: hashbrown::HashMap<Name, Entry, foldhash::fast::RandomState, HugePages>,
    /// Name by number, as text ready to copy into a read's events.
    names: Vec<Box<str>>,
}

#[derive(Default)]
struct Entry {
    number: u32,
    /// Ascending positions of the events carrying this name as a tag.
    tagged: Vec<u64>,
    /// Ascending positions of the events of this type.
    typed: Vec<u64>,
    /// The last of `tagged` and of `typed` (0 when empty), kept in the hash table slot so that a
    /// condition that matches nothing new, and an insert, never load a posting list from memory.
    last_tagged: u64,
    last_typed: u64,
}

/// Names up to this many bytes are stored inline; the ids of the course-subscriptions example
/// (`student-` and a uuid, 44 bytes) fit.
const INLINE_NAME: usize = 46;

/// A name's bytes, inline when they fit in [`INLINE_NAME`] bytes. Hashed and compared as its
/// bytes, and borrowable as them, so that looking a name up needs no allocation.
enum Name {
    Inline { len: u8, bytes: [u8; INLINE_NAME] },
    Heap(Box<[u8]>),
}

impl Name {
    fn new(name: &str) -> Name {
        if name.len() <= INLINE_NAME {
            let mut bytes = [0; INLINE_NAME];
            bytes[..name.len()].copy_from_slice(name.as_bytes());
            Name::Inline { len: name.len() as u8, bytes }
        } else {
            Name::Heap(name.as_bytes().into())
        }
    }

    fn as_bytes(&self) -> &[u8] {
        match self {
            Name::Inline { len, bytes } => &bytes[..*len as usize],
            Name::Heap(bytes) => bytes,
        }
    }
}

impl std::borrow::Borrow<[u8]> for Name {
    fn borrow(&self) -> &[u8] {
        self.as_bytes()
    }
}

impl std::hash::Hash for Name {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.as_bytes().hash(state);
    }
}

impl PartialEq for Name {
    fn eq(&self, other: &Self) -> bool {
        self.as_bytes() == other.as_bytes()
    }
}

impl Eq for Name {}

impl Names {
    fn get(&self, name: &str) -> Option<&Entry> {
        self.entries.get(name.as_bytes())
    }

    /// The entry of `name`, created if it is new.
    fn entry(&mut self, name: &str) -> &mut Entry {
        match self.entries.entry_ref(name.as_bytes()) {
            EntryRef::Occupied(entry) => entry.into_mut(),
            EntryRef::Vacant(entry) => {
                let number = self.names.len() as u32;
                self.names.push(name.into());
                entry.insert_with_key(Name::new(name), Entry { number, ..Entry::default() })
            }
        }
    }

    fn name(&self, number: u32) -> &str {
        &self.names[number as usize]
    }
}

/// Hints the CPU to fetch the cache line at `address` for writing. A hint only: it never faults,
/// whatever the address, and does nothing on other architectures.
#[inline]
fn prefetch_for_write<T>(address: *const T) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: `prefetchw`/`prefetcht0` read nothing and cannot fault on any address; SSE, which
    // the intrinsic is marked with, is part of the x86_64 baseline.
    #[allow(unsafe_code)]
    unsafe {
        core::arch::x86_64::_mm_prefetch::<{ core::arch::x86_64::_MM_HINT_ET0 }>(address.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

/// Elements of a [`Chunked`]'s first chunk.
const FIRST_CHUNK: usize = 4096;

/// A vector that grows by whole chunks, so pushing never moves what is already there (a plain
/// vector would copy the entire log on growth, stalling the writer for milliseconds at millions
/// of events). Each chunk is twice the size of the one before, up to the first size of at least a
/// huge page, which the rest keep: a small store stays small, and a large one lies in memory the
/// kernel can map with few TLB entries (see [`HugePages`]).
struct Chunked<T> {
    chunks: Vec<allocator_api2::vec::Vec<T, HugePages>>,
    len: usize,
}

impl<T> Default for Chunked<T> {
    fn default() -> Self {
        Chunked { chunks: Vec::new(), len: 0 }
    }
}

impl<T> Chunked<T> {
    /// How many times chunks double before reaching their final size.
    const DOUBLINGS: u32 = {
        let mut doublings = 0;
        while (FIRST_CHUNK << doublings) * size_of::<T>() < huge_pages::HUGE_PAGE {
            doublings += 1;
        }
        doublings
    };
    /// Elements in the chunks that grow.
    const GROWING: usize = FIRST_CHUNK * ((1 << Self::DOUBLINGS) - 1);
    /// Elements of every later chunk.
    const LARGEST: usize = FIRST_CHUNK << Self::DOUBLINGS;

    /// The chunk and the offset in it of element `index`.
    fn locate(index: usize) -> (usize, usize) {
        if index < Self::GROWING {
            // Chunk `c` starts at FIRST_CHUNK * (2^c - 1).
            let chunk = (index / FIRST_CHUNK + 1).ilog2() as usize;
            (chunk, index - FIRST_CHUNK * ((1 << chunk) - 1))
        } else {
            let rest = index - Self::GROWING;
            (Self::DOUBLINGS as usize + rest / Self::LARGEST, rest % Self::LARGEST)
        }
    }

    fn push(&mut self, value: T) {
        let (chunk, offset) = Self::locate(self.len);
        if offset == 0 {
            let capacity = FIRST_CHUNK << chunk.min(Self::DOUBLINGS as usize);
            self.chunks.push(allocator_api2::vec::Vec::with_capacity_in(capacity, HugePages));
        }
        self.chunks[chunk].push(value);
        self.len += 1;
    }

    fn get(&self, index: usize) -> &T {
        let (chunk, offset) = Self::locate(index);
        &self.chunks[chunk][offset]
    }
}

/// A query item with its names resolved to numbers and posting lists; names never recorded are
/// left out, so an item that needs one can match nothing and is dropped altogether.
struct Compiled<'a> {
    types: Vec<(u32, &'a [u64])>,
    tags: Vec<(u32, &'a [u64])>,
}

impl<'a> Compiled<'a> {
    fn new(item: &QueryItem, names: &'a Names) -> Option<Compiled<'a>> {
        let tags = item
            .tags
            .iter()
            .map(|t| names.get(t).map(|e| (e.number, e.tagged.as_slice())))
            .collect::<Option<Vec<_>>>()?;
        let types: Vec<_> =
            item.types.iter().filter_map(|t| names.get(t)).map(|e| (e.number, e.typed.as_slice())).collect();
        if types.is_empty() && !item.types.is_empty() {
            return None;
        }
        Some(Compiled { types, tags })
    }

    fn matches(&self, event: &Stored, state: &State) -> bool {
        (self.types.is_empty() || self.types.iter().any(|&(ty, _)| ty == event.event_type))
            && self.tags.iter().all(|&(tag, _)| state.tags_of(event).any(|own| own == tag))
    }
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
            shared: Arc::new(Shared { state: RwLock::new(State::default()), heads: watch::Sender::new(0) }),
        }
    }

    /// Number of events stored.
    pub fn len(&self) -> usize {
        self.shared.state.read().unwrap_or_else(PoisonError::into_inner).log.len
    }

    /// Whether no event is stored.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl EventStore for MemoryStore {
    async fn read(&self, query: &Query, options: ReadOptions) -> Result<ReadResponse> {
        validate_query(query)?;
        let state = self.shared.state.read().unwrap_or_else(PoisonError::into_inner);
        let events = state.read(query, options);
        Ok(ReadResponse::new(events, state.log.len as u64, options))
    }

    async fn append_request(&self, request: AppendRequest) -> Result<u64> {
        validate_append(&request)?;
        // Poisoning cannot leave a half-applied append: `State::append` checks everything before
        // its first mutation, and nothing after it can panic.
        let (last, grew) = {
            let mut state = self.shared.state.write().unwrap_or_else(PoisonError::into_inner);
            let before = state.log.len;
            let last = state.append(request)?;
            (last, state.log.len > before)
        };
        if grew {
            // Only a subscription waits for heads (and none reads the value): without one, every
            // append is spared the wake-up machinery. A subscription made meanwhile reads the
            // store after subscribing, so it sees this append, which is already applied.
            if self.shared.heads.receiver_count() > 0 {
                self.shared.heads.send_replace(last);
            }
        }
        Ok(last)
    }

    async fn head(&self) -> Result<Option<u64>> {
        Ok(self.shared.state.read().unwrap_or_else(PoisonError::into_inner).head())
    }

    async fn tracking_position(&self, source: &str) -> Result<Option<u64>> {
        validate_source(source)?;
        let state = self.shared.state.read().unwrap_or_else(PoisonError::into_inner);
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
        (self.log.len > 0).then_some(self.log.len as u64)
    }

    fn stored(&self, position: u64) -> &Stored {
        self.log.get((position - 1) as usize)
    }

    fn tags_of(&self, stored: &Stored) -> impl Iterator<Item = u32> + '_ {
        let start = stored.tags_start as usize;
        (start..start + stored.tags_len as usize).map(|i| *self.tags.get(i))
    }

    fn materialise(&self, position: u64) -> SequencedEvent {
        let stored = self.stored(position);
        let event = Event {
            event_type: self.names.name(stored.event_type).to_owned(),
            data: stored.data.clone(),
            tags: self.tags_of(stored).map(|t| self.names.name(t).to_owned()).collect(),
            uuid: stored.uuid,
            metadata: stored.metadata.as_deref().cloned().unwrap_or_default(),
        };
        SequencedEvent { position, event }
    }

    /// Applies a validated request: condition and tracking are checked before anything changes
    /// (the condition first: a recognised retry answers with its position, although its tracking
    /// position is recorded by then).
    fn append(&mut self, request: AppendRequest) -> Result<u64> {
        // Inserting into a tag's posting list is a store to memory that is likely cold at millions
        // of tags; asking for it now overlaps that miss with the condition's check.
        for tag in request.events.iter().flat_map(|event| &event.tags).take(16) {
            if let Some(entry) = self.names.get(tag) {
                prefetch_for_write(entry.tagged.as_ptr_range().end);
            }
        }
        if let Some(condition) = &request.condition {
            let first_match = |query: &Query, after: u64| {
                let first = ReadOptions { after: Some(after), limit: Some(1), ..ReadOptions::default() };
                self.may_match_after(query, after).then(|| self.scan(query, first).first().copied()).flatten()
            };
            if let Some(conflict) = condition.first_failure(first_match) {
                if let Some(span) = retry_span(condition, &request.events, conflict, self.head().unwrap_or(0))
                {
                    let recorded: Vec<SequencedEvent> = span.map(|p| self.materialise(p)).collect();
                    if let Some(position) = already_appended(&request.events, &recorded) {
                        return Ok(position);
                    }
                }
                return Err(Error::Integrity(format!(
                    "an event matching the append condition was recorded after position {} (at {conflict})",
                    condition.after.unwrap_or(0),
                )));
            }
        }
        if let Some(tracking) = &request.tracking
            && let Some(&recorded) = self.tracking.get(&tracking.source)
            && tracking.position <= recorded
        {
            return Err(Error::Integrity(format!(
                "tracking position {} for source {:?} does not exceed the recorded {recorded}",
                tracking.position, tracking.source
            )));
        }
        for event in request.events {
            let position = self.log.len as u64 + 1;
            let entry = self.names.entry(&event.event_type);
            entry.typed.push(position);
            entry.last_typed = position;
            let event_type = entry.number;
            let tags_start = self.tags.len as u64;
            for tag in &event.tags {
                let entry = self.names.entry(tag);
                // An event listing a tag twice is indexed once.
                if entry.last_tagged != position {
                    entry.tagged.push(position);
                    entry.last_tagged = position;
                }
                self.tags.push(entry.number);
            }
            let metadata = (!event.metadata.is_empty()).then(|| Box::new(event.metadata));
            let tags_len = event.tags.len() as u32;
            let stored =
                Stored { event_type, tags_len, tags_start, data: event.data, uuid: event.uuid, metadata };
            self.log.push(stored);
        }
        if let Some(tracking) = request.tracking {
            self.tracking.insert(tracking.source, tracking.position);
        }
        Ok(self.log.len as u64)
    }

    /// Whether an event matching `query` may lie after `after`, judged from the last position of
    /// each name alone: `false` is certain, `true` needs a scan. For the usual condition, on names
    /// unchanged since the read, this spares the scan and the cache misses of its posting lists.
    fn may_match_after(&self, query: &Query, after: u64) -> bool {
        let head = self.log.len as u64;
        if after >= head {
            return false;
        }
        query.items.is_empty()
            || query.items.iter().any(|item| {
                let last = |name: &String, last: fn(&Entry) -> u64| self.names.get(name).map_or(0, last);
                // Every tag must be on the event, and one of the types: the newest candidate is
                // no later than the oldest of the tags' last positions, and the newest type's.
                let tagged = item.tags.iter().map(|tag| last(tag, |e| e.last_tagged)).min();
                let typed = item.types.iter().map(|ty| last(ty, |e| e.last_typed)).max();
                let newest = match (tagged, typed) {
                    (Some(tagged), Some(typed)) => tagged.min(typed),
                    (Some(newest), None) | (None, Some(newest)) => newest,
                    (None, None) => head,
                };
                newest > after
            })
    }

    /// Reads: the matching events in the window and direction of `options`.
    fn read(&self, query: &Query, options: ReadOptions) -> Vec<SequencedEvent> {
        let positions = self.scan(query, options);
        let mut events = Vec::with_capacity(positions.len());
        let mut bytes = 0;
        for window in positions.chunks(16) {
            self.touch(window);
            for &position in window {
                if !options.takes_more(bytes) {
                    return events;
                }
                let event = self.materialise(position);
                bytes += event.event.byte_size();
                events.push(event);
            }
        }
        events
    }

    /// Loads the log entries and tag lists of a few events before they are copied out. The loads
    /// of each pass are independent of one another, so the CPU overlaps their cache misses; when
    /// copying, each event's would come one after another, behind the allocations of the copy.
    fn touch(&self, positions: &[u64]) {
        let starts = positions.iter().fold(0, |acc, &p| acc ^ self.stored(p).tags_start);
        let tags = positions.iter().fold(0, |acc, &p| {
            let stored = self.stored(p);
            if stored.tags_len > 0 { acc ^ *self.tags.get(stored.tags_start as usize) } else { acc }
        });
        std::hint::black_box((starts, tags));
    }

    /// The positions of the events matching `query` in the window and direction of `options`.
    fn scan(&self, query: &Query, options: ReadOptions) -> Vec<u64> {
        let limit = options.limit.map_or(usize::MAX, |l| l as usize);
        let after = options.after.unwrap_or(0);
        let last = options.last_considered(self.log.len as u64);
        if limit == 0 || after >= last {
            return Vec::new();
        }
        let window = after + 1..=last;
        if query.matches_all() {
            return if options.backwards {
                window.rev().take(limit).collect()
            } else {
                window.take(limit).collect()
            };
        }
        let items: Vec<Compiled> =
            query.items.iter().filter_map(|item| Compiled::new(item, &self.names)).collect();
        postings::merge(self.sources(&items), after, last, limit, options.backwards)
    }

    /// Posting lists that together hold every candidate for `items`, each with the item its
    /// candidates must still be checked against, if any.
    fn sources<'a>(&'a self, items: &'a [Compiled<'a>]) -> Vec<Source<&'a [u64], ItemCheck<'a>>> {
        let mut sources = Vec::new();
        for item in items {
            if item.tags.is_empty() {
                // Every event of a listed type matches a types-only item.
                sources.extend(item.types.iter().map(|&(_, positions)| Source { positions, check: None }));
                continue;
            }
            // The rarest tag bounds the candidates.
            let rarest = item.tags.iter().map(|&(_, positions)| positions).min_by_key(|l| l.len());
            if let Some(rarest) = rarest {
                let exact = item.types.is_empty() && item.tags.len() == 1;
                let check = (!exact).then_some(ItemCheck { item, state: self });
                sources.push(Source { positions: rarest, check });
            }
        }
        sources
    }
}

/// A candidate from the rarest tag of an item, to check against the item's other tags and types.
struct ItemCheck<'a> {
    item: &'a Compiled<'a>,
    state: &'a State,
}

impl Check for ItemCheck<'_> {
    fn passes(&self, position: u64) -> bool {
        self.item.matches(self.state.stored(position), self.state)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_double_up_to_a_huge_page_and_every_element_is_found_again() {
        type Wide = [u64; 10];
        assert_eq!(Chunked::<Wide>::DOUBLINGS, 3, "4096 x 80 bytes doubles three times to reach 2 MiB");
        assert_eq!(Chunked::<u32>::LARGEST * size_of::<u32>(), huge_pages::HUGE_PAGE);
        let mut wide = Chunked::<Wide>::default();
        let count = Chunked::<Wide>::GROWING + 2 * Chunked::<Wide>::LARGEST + 5;
        for i in 0..count {
            wide.push([i as u64; 10]);
        }
        assert!((0..count).all(|i| wide.get(i)[0] == i as u64), "an element was not where it was pushed");
        let capacities: Vec<usize> = wide.chunks.iter().map(|chunk| chunk.capacity()).collect();
        assert_eq!(capacities, [4096, 8192, 16384, 32768, 32768, 32768]);
    }
}
