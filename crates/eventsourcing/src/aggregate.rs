//! Event-sourced aggregates: the traditional style, saved through an
//! [`AggregateRecorder`] with optimistic concurrency per aggregate.

use std::collections::HashMap;
use std::num::NonZeroU64;
use std::ops::Deref;
use std::sync::{Arc, Mutex, PoisonError};

use dcb::ReadOptions;
use dcb::recorder::{AggregateEvent, AggregateRecorder};

use crate::codec::{self, DomainEvent, IntoEvents};
use crate::error::{Error, Result};

/// The state of an aggregate, folded from its events.
///
/// The state before the first event is `Default`; commands are the aggregate's own methods that
/// check its rules and return new events, recorded with [`Root::execute`] or [`Root::record`].
///
/// ```
/// use eventsourcing::{Aggregate, DomainEvent, Root};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// enum CourseEvent {
///     #[serde(rename = "CourseRegistered")]
///     Registered { name: String, places: usize },
///     #[serde(rename = "StudentJoined")]
///     Joined { student: String },
/// }
/// impl DomainEvent for CourseEvent {}
///
/// #[derive(Default)]
/// struct Course { places: usize, students: Vec<String> }
///
/// impl Aggregate for Course {
///     type Event = CourseEvent;
///     fn apply(&mut self, event: &CourseEvent) {
///         match event {
///             CourseEvent::Registered { places, .. } => self.places = *places,
///             CourseEvent::Joined { student } => self.students.push(student.clone()),
///         }
///     }
/// }
///
/// impl Course {
///     fn join(&self, student: &str) -> Result<CourseEvent, &'static str> {
///         if self.students.len() >= self.places {
///             return Err("fully booked");
///         }
///         Ok(CourseEvent::Joined { student: student.into() })
///     }
/// }
///
/// let mut course = Root::<Course>::new("course-1");
/// course.record(CourseEvent::Registered { name: "Maths".into(), places: 1 });
/// course.execute(|c| c.join("student-1")).unwrap();
/// assert_eq!(course.execute(|c| c.join("student-2")), Err("fully booked"));
/// assert_eq!(course.version(), 2);
/// assert_eq!(course.students, ["student-1"]);
/// ```
pub trait Aggregate: Default + Send + Sync + 'static {
    /// The aggregate's events.
    type Event: DomainEvent;

    /// Folds one event into the state. Must not fail: the event is already a fact.
    fn apply(&mut self, event: &Self::Event);

    /// The state as snapshot data, for a repository configured with snapshots; `None` (the
    /// default) means this aggregate is never snapshotted. [`codec::to_json`] does the work for a
    /// serde state.
    ///
    /// Implement [`Aggregate::from_snapshot`] with it: a snapshot it cannot read is ignored, and
    /// the aggregate is then loaded by replaying all its events, every time.
    fn to_snapshot(&self) -> Option<Result<Vec<u8>>> {
        None
    }

    /// The state from data made by [`Aggregate::to_snapshot`]. An error (data of an older state
    /// shape, say) makes [`Repository::get`] replay the events from the start instead.
    fn from_snapshot(data: &[u8]) -> Result<Self> {
        let _ = data;
        Err(Error::mapping(
            SNAPSHOT_TYPE,
            "this aggregate does not read snapshots: implement Aggregate::from_snapshot",
        ))
    }
}

/// The event type under which snapshots are recorded.
const SNAPSHOT_TYPE: &str = "Snapshot";

/// An aggregate with its id, its version and the events recorded since it was loaded.
///
/// Dereferences to the aggregate's state.
#[derive(Debug, Clone)]
pub struct Root<A: Aggregate> {
    id: String,
    version: u64,
    state: A,
    pending: Vec<A::Event>,
    from_cache: bool,
}

impl<A: Aggregate> Root<A> {
    /// A new aggregate with no events, to record its first events and save.
    pub fn new(id: impl Into<String>) -> Self {
        Root { id: id.into(), version: 0, state: A::default(), pending: Vec::new(), from_cache: false }
    }

    /// Whether [`Repository::get`] folded it from the repository's cache rather than from a
    /// read (see [`Repository::with_cache`]): another process may have changed it since. A save
    /// would then fail, but a refusal would not; so a command refused on a cached aggregate
    /// should be tried again on a fresh one ([`Repository::get_fresh`]).
    pub fn is_from_cache(&self) -> bool {
        self.from_cache
    }

    /// The aggregate's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// How many events the aggregate has, saved or pending.
    pub fn version(&self) -> u64 {
        self.version
    }

    /// The state, also reached through `Deref`.
    pub fn state(&self) -> &A {
        &self.state
    }

    /// Events recorded but not saved yet, oldest first.
    pub fn pending(&self) -> &[A::Event] {
        &self.pending
    }

    /// Applies `event` and keeps it for the next save.
    pub fn record(&mut self, event: A::Event) {
        self.state.apply(&event);
        self.version += 1;
        self.pending.push(event);
    }

    /// Runs a command on the state and records the event(s) it returns (one, an `Option` or a
    /// `Vec`); records nothing when it refuses.
    pub fn execute<I, E>(&mut self, command: impl FnOnce(&A) -> Result<I, E>) -> Result<(), E>
    where
        I: IntoEvents<A::Event>,
    {
        for event in command(&self.state)?.into_events() {
            self.record(event);
        }
        Ok(())
    }

    fn saved_version(&self) -> u64 {
        self.version - self.pending.len() as u64
    }
}

impl<A: Aggregate> Deref for Root<A> {
    type Target = A;
    fn deref(&self) -> &A {
        &self.state
    }
}

mod sealed {
    pub trait Sealed {}
}

/// An aggregate whose pending events a [`Repository`] can save: every [`Root`]. Used as
/// `&mut dyn Unsaved` to save aggregates of different types together.
pub trait Unsaved: sealed::Sealed + Send {
    /// Appends the pending events, numbered after the saved version, to `out`.
    fn encode_pending(&self, out: &mut Vec<AggregateEvent>) -> Result<()>;
    /// Forgets the pending events once they are recorded.
    fn mark_saved(&mut self);
    /// A snapshot of the state with the pending events applied, if saving them crosses a
    /// multiple of `every` versions.
    fn due_snapshot(&self, every: u64) -> Option<Result<AggregateEvent>>;
}

impl<A: Aggregate> sealed::Sealed for Root<A> {}

impl<A: Aggregate> Unsaved for Root<A> {
    fn encode_pending(&self, out: &mut Vec<AggregateEvent>) -> Result<()> {
        for (version, event) in (self.saved_version() + 1..).zip(&self.pending) {
            let (event_type, data) = codec::encode(event)?;
            out.push(AggregateEvent {
                aggregate_id: self.id.clone(),
                version,
                event_type: event_type.to_owned(),
                data: data.into(),
            });
        }
        Ok(())
    }

    fn mark_saved(&mut self) {
        self.pending.clear();
    }

    fn due_snapshot(&self, every: u64) -> Option<Result<AggregateEvent>> {
        if self.saved_version() / every == self.version / every {
            return None;
        }
        let data = self.state.to_snapshot()?;
        Some(data.map(|data| AggregateEvent {
            aggregate_id: self.id.clone(),
            version: self.version,
            event_type: SNAPSHOT_TYPE.to_owned(),
            data: data.into(),
        }))
    }
}

/// Loads aggregates by id and saves their pending events, one aggregate or several atomically.
///
/// A save fails with an integrity error ([`Error::is_integrity`]) and writes nothing when any of
/// its aggregates was changed since it was loaded.
///
/// ```
/// # use eventsourcing::{Aggregate, DomainEvent};
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize)] enum Ev { #[serde(rename = "Counted")] Counted }
/// # impl DomainEvent for Ev {}
/// # #[derive(Default)] struct Counter(u32);
/// # impl Aggregate for Counter { type Event = Ev; fn apply(&mut self, _: &Ev) { self.0 += 1 } }
/// use dcb::recorder::MemoryRecorder;
/// use eventsourcing::{Repository, Root};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let repository = Repository::new(MemoryRecorder::new());
/// let mut counter = Root::<Counter>::new("counter-1");
/// counter.record(Ev::Counted);
/// repository.save(&mut counter).await?;
///
/// let mut a = repository.get::<Counter>("counter-1").await?;
/// let mut b = repository.get::<Counter>("counter-1").await?;
/// a.record(Ev::Counted);
/// b.record(Ev::Counted);
/// repository.save_all(&mut [&mut a]).await?;
/// assert!(repository.save(&mut b).await.unwrap_err().is_integrity());
/// assert_eq!(repository.get::<Counter>("counter-1").await?.0, 2);
/// # Ok::<(), eventsourcing::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct Repository<R> {
    recorder: R,
    snapshots: Option<(R, NonZeroU64)>,
    cache: Option<EventCache>,
}

impl<R: AggregateRecorder> Repository<R> {
    /// A repository over `recorder`, without snapshots or cache.
    pub fn new(recorder: R) -> Self {
        Repository { recorder, snapshots: None, cache: None }
    }

    /// Keeps the recorded events of the aggregates this repository (and its clones) loads and
    /// saves, so that loading one it holds needs no read: its events are folded from memory.
    /// Saves go to the recorder as always, and the version rule keeps them safe: an aggregate
    /// another process changed since makes the save fail with an integrity error, and the
    /// repository then forgets it, so the next `get` reads it afresh. A refusal, which writes
    /// nothing, is not checked that way: see [`Root::is_from_cache`]. At most 65,536 aggregates,
    /// 1,048,576 events and 64 MiB of their types and data are held (past any, the cache starts
    /// over), and no aggregate of more than 16,384 events.
    ///
    /// ```
    /// # use eventsourcing::{Aggregate, DomainEvent};
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Serialize, Deserialize)] enum Ev { #[serde(rename = "Counted")] Counted }
    /// # impl DomainEvent for Ev {}
    /// # #[derive(Default)] struct Counter(u32);
    /// # impl Aggregate for Counter { type Event = Ev; fn apply(&mut self, _: &Ev) { self.0 += 1 } }
    /// use dcb::recorder::MemoryRecorder;
    /// use eventsourcing::{Repository, Root};
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let repository = Repository::new(MemoryRecorder::new()).with_cache();
    /// let mut counter = Root::<Counter>::new("counter-1");
    /// counter.record(Ev::Counted);
    /// repository.save(&mut counter).await?;
    /// // Held since its first event was saved: loaded without a read.
    /// let loaded = repository.get::<Counter>("counter-1").await?;
    /// assert!(loaded.is_from_cache());
    /// assert_eq!(loaded.0, 1);
    /// # Ok::<(), eventsourcing::Error>(())
    /// # }).unwrap();
    /// ```
    pub fn with_cache(mut self) -> Self {
        self.cache = Some(EventCache::default());
        self
    }

    /// Keeps a snapshot in `snapshots` each time a save takes an aggregate's version across a
    /// multiple of `every` (from 5 to 7 with `every` 3, say), of the state at the save's last
    /// version (7), for aggregates that implement [`Aggregate::to_snapshot`]. Loading then starts
    /// from the latest snapshot and reads only the events after it.
    ///
    /// Snapshots are a cache: recording one is not part of the save's atomicity, and a failure to
    /// record one (another writer took the same version first, the store was briefly away) does
    /// not fail the save. A snapshot that [`Aggregate::from_snapshot`] cannot read is ignored: the
    /// aggregate is loaded by replaying all its events.
    pub fn with_snapshots(mut self, snapshots: R, every: NonZeroU64) -> Self {
        self.snapshots = Some((snapshots, every));
        self
    }

    /// The recorder of the aggregates' events.
    pub fn recorder(&self) -> &R {
        &self.recorder
    }

    /// The aggregate `id` with every recorded event applied; [`Error::NotFound`] if it has none.
    /// With [`Repository::with_cache`], folded from the cache when it holds the aggregate.
    pub async fn get<A: Aggregate>(&self, id: &str) -> Result<Root<A>> {
        if let Some(events) = self.cache.as_ref().and_then(|cache| cache.events(id)) {
            let mut root = Root::<A>::new(id);
            fold(&mut root, &events)?;
            root.from_cache = true;
            return Ok(root);
        }
        self.get_fresh(id).await
    }

    /// The aggregate `id` as [`Repository::get`] gives it, but read from the recorder whatever
    /// the cache holds (which then holds what was read, unless it holds more already).
    pub async fn get_fresh<A: Aggregate>(&self, id: &str) -> Result<Root<A>> {
        let mut root = Root::<A>::new(id);
        if let Some((snapshots, _)) = &self.snapshots {
            let latest = snapshots.select_events(id, ReadOptions::default().backwards().limit(1)).await?;
            // A snapshot that does not decode (written by an older state shape, or by an
            // aggregate that never implemented `from_snapshot`) is only a missed shortcut: the
            // events are the truth, so replay them all rather than make the aggregate unloadable.
            if let Some((snapshot, Ok(state))) = latest.first().map(|s| (s, A::from_snapshot(&s.data))) {
                root.state = state;
                root.version = snapshot.version;
            }
        }
        let after =
            ReadOptions { after: (root.version > 0).then_some(root.version), ..ReadOptions::default() };
        let events = self.recorder.select_events(id, after).await?;
        if events.is_empty() && root.version == 0 {
            return Err(Error::not_found(id));
        }
        let whole = root.version == 0;
        fold(&mut root, &events)?;
        // Only a whole history is held: one loaded from a snapshot lacks its first events.
        if let (Some(cache), true) = (&self.cache, whole) {
            cache.learn(id, events);
        }
        Ok(root)
    }

    /// Saves the pending events of one aggregate; see [`Repository::save_all`].
    pub async fn save<A: Aggregate>(&self, root: &mut Root<A>) -> Result<u64> {
        self.save_all(&mut [root]).await
    }

    /// Saves the pending events of several aggregates atomically: all are recorded, or, when any
    /// of the aggregates changed since it was loaded, none is and the error is an integrity
    /// error. Returns the recorder's count after the save (unchanged when nothing was pending).
    pub async fn save_all(&self, roots: &mut [&mut dyn Unsaved]) -> Result<u64> {
        let mut events = Vec::new();
        let mut due = Vec::new();
        for root in roots.iter() {
            root.encode_pending(&mut events)?;
            // Encoded before the insert, so that a state that cannot be snapshotted fails the
            // save before anything is written rather than after.
            if let Some((_, every)) = &self.snapshots
                && let Some(snapshot) = root.due_snapshot(every.get())
            {
                due.push(snapshot?);
            }
        }
        if events.is_empty() {
            return Ok(self.recorder.count().await?);
        }
        // The recorder takes the events; the cache keeps a copy (the data shared, not copied).
        let saved = self.cache.as_ref().map(|_| events.clone());
        let inserted = self.recorder.insert_events(events).await;
        if let (Some(cache), Some(saved)) = (&self.cache, saved) {
            match &inserted {
                Ok(_) => cache.extend(saved),
                // Refused (another writer's version came first) or of unknown outcome (the
                // store went away): either way the held events may be behind.
                Err(_) => cache.forget(saved.iter().map(|e| e.aggregate_id.as_str())),
            }
        }
        let count = inserted?;
        for root in roots.iter_mut() {
            root.mark_saved();
        }
        if let (Some((snapshots, _)), false) = (&self.snapshots, due.is_empty()) {
            // The events are saved, which is what the caller asked for; a snapshot is only a
            // cache, so failing to record one (or losing the race to record it) is not reported
            // as a failed save that the caller might then retry.
            let _ = snapshots.insert_events(due).await;
        }
        Ok(count)
    }
}

/// Applies recorded events to `root`, in order.
fn fold<A: Aggregate>(root: &mut Root<A>, events: &[AggregateEvent]) -> Result<()> {
    for recorded in events {
        let event: A::Event = codec::decode(&recorded.event_type, &recorded.data)?;
        root.state.apply(&event);
        root.version = recorded.version;
    }
    Ok(())
}

/// Aggregates held at most by a [`Repository::with_cache`].
const MAX_CACHED_AGGREGATES: usize = 1 << 16;
/// Events held at most, over all those aggregates.
const MAX_CACHED_EVENTS: usize = 1 << 20;
/// Bytes of events held at most (their types and data), over all those aggregates.
const MAX_CACHED_BYTES: usize = 64 << 20;
/// An aggregate with more events is not held: alone it would fill much of the bound above, and
/// start the cache over at every load.
const MAX_CACHED_HISTORY: usize = 1 << 14;

/// The whole recorded history of recently used aggregates, shared by a repository's clones.
/// What it holds for an aggregate is every event of it up to some version: learnt from a read
/// of all its events, or from a save of its first events, and extended by saves that follow on
/// from what is held.
#[derive(Debug, Clone, Default)]
struct EventCache {
    held: Arc<Mutex<Held>>,
}

#[derive(Debug, Default)]
struct Held {
    /// Shared with the loads folding them, so that a load copies no event; each with its bytes.
    aggregates: HashMap<String, (Arc<Vec<AggregateEvent>>, usize)>,
    events: usize,
    bytes: usize,
}

/// The bytes of `events` that count against [`MAX_CACHED_BYTES`].
fn weight(events: &[AggregateEvent]) -> usize {
    events.iter().map(|e| e.event_type.len() + e.data.len()).sum()
}

impl EventCache {
    fn held(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn events(&self, id: &str) -> Option<Arc<Vec<AggregateEvent>>> {
        self.held().aggregates.get(id).map(|(events, _)| events.clone())
    }

    /// Holds `events`, every event of aggregate `id`, unless what is held is newer.
    fn learn(&self, id: &str, events: Vec<AggregateEvent>) {
        let mut held = self.held();
        let newer = held.aggregates.get(id).is_some_and(|(h, _)| h.len() >= events.len());
        if !newer && !events.is_empty() {
            let bytes = weight(&events);
            held.put(id.to_owned(), Arc::new(events), bytes);
        }
    }

    /// Adds saved events (of one or more aggregates, each in version order) to what is held of
    /// their aggregates. An aggregate held up to a version other than the one before its first
    /// saved event is forgotten; one not held is learnt when the save starts it.
    fn extend(&self, saved: Vec<AggregateEvent>) {
        let mut held = self.held();
        let mut by_aggregate: Vec<(String, Vec<AggregateEvent>)> = Vec::new();
        for event in saved {
            match by_aggregate.iter_mut().find(|(id, _)| *id == event.aggregate_id) {
                Some((_, events)) => events.push(event),
                None => by_aggregate.push((event.aggregate_id.clone(), vec![event])),
            }
        }
        for (id, events) in by_aggregate {
            let first = events[0].version;
            let next_held = held.aggregates.get(&id).map(|(h, _)| h.len() as u64 + 1);
            if next_held == Some(first) {
                if let Some((mut history, bytes)) = held.take(&id) {
                    let bytes = bytes + weight(&events);
                    // Copied only if a load is folding it at this moment.
                    Arc::make_mut(&mut history).extend(events);
                    held.put(id, history, bytes);
                }
            } else if first == 1 {
                let bytes = weight(&events);
                held.put(id, Arc::new(events), bytes);
            } else {
                held.take(&id);
            }
        }
    }

    fn forget<'a>(&self, ids: impl IntoIterator<Item = &'a str>) {
        let mut held = self.held();
        for id in ids {
            held.take(id);
        }
    }
}

impl Held {
    /// Holds `events`, of `bytes` ([`weight`]), as aggregate `id`'s history.
    fn put(&mut self, id: String, events: Arc<Vec<AggregateEvent>>, bytes: usize) {
        self.take(&id);
        if events.len() > MAX_CACHED_HISTORY {
            return;
        }
        self.events += events.len();
        self.bytes += bytes;
        self.aggregates.insert(id, (events, bytes));
        self.bound();
    }

    fn take(&mut self, id: &str) -> Option<(Arc<Vec<AggregateEvent>>, usize)> {
        let (events, bytes) = self.aggregates.remove(id)?;
        self.events -= events.len();
        self.bytes -= bytes;
        Some((events, bytes))
    }

    /// Starts over past the bounds: simpler than an eviction order, and a workload that
    /// overflows them finds its working set again within a few reads.
    fn bound(&mut self) {
        if self.aggregates.len() > MAX_CACHED_AGGREGATES
            || self.events > MAX_CACHED_EVENTS
            || self.bytes > MAX_CACHED_BYTES
        {
            *self = Held::default();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::num::NonZeroU64;

    use dcb::recorder::MemoryRecorder;
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, Serialize, Deserialize)]
    enum Ev {
        #[serde(rename = "Counted")]
        Counted,
    }

    impl DomainEvent for Ev {}

    /// A counter whose snapshots are of a shape it no longer reads.
    #[derive(Debug, Default)]
    struct Counter(u32);

    impl Aggregate for Counter {
        type Event = Ev;

        fn apply(&mut self, _: &Ev) {
            self.0 += 1;
        }

        fn to_snapshot(&self) -> Option<Result<Vec<u8>>> {
            Some(Ok(b"{\"old\":\"shape\"}".to_vec()))
        }

        fn from_snapshot(data: &[u8]) -> Result<Self> {
            codec::from_json::<u32>(SNAPSHOT_TYPE, data).map(Counter)
        }
    }

    /// A counter whose snapshots it reads back.
    #[derive(Debug, Default)]
    struct Snapshotted(u32);

    impl Aggregate for Snapshotted {
        type Event = Ev;

        fn apply(&mut self, _: &Ev) {
            self.0 += 1;
        }

        fn to_snapshot(&self) -> Option<Result<Vec<u8>>> {
            Some(codec::to_json(&self.0))
        }

        fn from_snapshot(data: &[u8]) -> Result<Self> {
            codec::from_json::<u32>(SNAPSHOT_TYPE, data).map(Snapshotted)
        }
    }

    /// A recorder that counts its reads.
    #[derive(Clone, Default)]
    struct Counting {
        inner: MemoryRecorder,
        selects: Arc<std::sync::atomic::AtomicUsize>,
    }

    impl Counting {
        fn selects(&self) -> usize {
            self.selects.load(std::sync::atomic::Ordering::SeqCst)
        }
    }

    impl AggregateRecorder for Counting {
        async fn insert_events(&self, events: Vec<AggregateEvent>) -> dcb::Result<u64> {
            self.inner.insert_events(events).await
        }

        async fn select_events(&self, id: &str, options: ReadOptions) -> dcb::Result<Vec<AggregateEvent>> {
            self.selects.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            self.inner.select_events(id, options).await
        }

        async fn count(&self) -> dcb::Result<u64> {
            self.inner.count().await
        }
    }

    /// A plain counter, without snapshots.
    #[derive(Debug, Default)]
    struct Tally(u32);

    impl Aggregate for Tally {
        type Event = Ev;

        fn apply(&mut self, _: &Ev) {
            self.0 += 1;
        }
    }

    /// With the cache, an aggregate this repository saved from its first event, or read once,
    /// loads without a read, whole, and saves from there; one whose save failed is read again,
    /// and `get_fresh` always reads.
    #[tokio::test]
    async fn cached_aggregates_load_without_a_read_until_a_save_fails() {
        let recorder = Counting::default();
        let repository = Repository::new(recorder.clone()).with_cache();
        let mut tally = Root::<Tally>::new("tally-1");
        tally.record(Ev::Counted);
        repository.save(&mut tally).await.unwrap();
        for expected in 1..=3 {
            let mut loaded = repository.get::<Tally>("tally-1").await.unwrap();
            assert!(loaded.is_from_cache());
            assert_eq!((loaded.version(), loaded.0), (expected, expected as u32));
            loaded.record(Ev::Counted);
            repository.save(&mut loaded).await.unwrap();
        }
        assert_eq!(recorder.selects(), 0);

        // Written elsewhere: the cache is behind, the save fails, and the next load reads.
        let elsewhere = Repository::new(recorder.clone());
        let mut other = elsewhere.get::<Tally>("tally-1").await.unwrap();
        other.record(Ev::Counted);
        elsewhere.save(&mut other).await.unwrap();
        let mut stale = repository.get::<Tally>("tally-1").await.unwrap();
        assert_eq!(stale.version(), 4);
        stale.record(Ev::Counted);
        assert!(repository.save(&mut stale).await.unwrap_err().is_integrity());
        let selects = recorder.selects();
        let fresh = repository.get::<Tally>("tally-1").await.unwrap();
        assert!(!fresh.is_from_cache());
        assert_eq!((fresh.version(), recorder.selects()), (5, selects + 1));
        assert!(repository.get::<Tally>("tally-1").await.unwrap().is_from_cache(), "read once, held");

        assert!(!repository.get_fresh::<Tally>("tally-1").await.unwrap().is_from_cache());
        assert!(repository.get::<Tally>("tally-2").await.unwrap_err().is_not_found());
    }

    /// An aggregate loaded from a snapshot lacks its first events, so it is not held.
    #[tokio::test]
    async fn aggregates_loaded_from_snapshots_are_not_cached() {
        loads_from_snapshots_are_not_cached(1, &[2], 2).await;
    }

    /// The same with events after the snapshot: what the load read is a tail of the history,
    /// which held alone would make the next load start from the wrong version.
    #[tokio::test]
    async fn aggregates_loaded_from_a_snapshot_and_later_events_are_not_cached() {
        loads_from_snapshots_are_not_cached(2, &[2, 1], 3).await;
    }

    /// Saves an aggregate in `saves` (events each) with a snapshot every `every` events, then
    /// loads it twice through a cache: neither load comes from it, both at `version`.
    async fn loads_from_snapshots_are_not_cached(every: u64, saves: &[u32], version: u64) {
        let every = NonZeroU64::new(every).unwrap();
        let writer = Repository::new(Counting::default()).with_snapshots(Counting::default(), every);
        let mut root = Root::<Snapshotted>::new("s-1");
        for &events in saves {
            (0..events).for_each(|_| root.record(Ev::Counted));
            writer.save(&mut root).await.unwrap();
        }
        let reader = writer.clone().with_cache();
        for _ in 0..2 {
            let loaded = reader.get::<Snapshotted>("s-1").await.unwrap();
            assert!(!loaded.is_from_cache());
            assert_eq!((loaded.version(), u64::from(loaded.0)), (version, version));
        }
    }

    /// Past its bytes the cache starts over, as past its counts: an aggregate held, then 64 of
    /// one event of 1 MiB each, weigh more than the 64 MiB it holds.
    #[tokio::test]
    async fn a_cache_past_its_bytes_starts_over() {
        let recorder = Counting::default();
        let mut small = Root::<Counter>::new("small");
        small.record(Ev::Counted);
        Repository::new(recorder.clone()).save(&mut small).await.unwrap();
        let encoded = recorder.select_events("small", ReadOptions::default()).await.unwrap().remove(0);
        let mut padded = encoded.data.to_vec();
        // Whitespace after the JSON value: the event still decodes.
        padded.resize(dcb::limits::MAX_EVENT_DATA_BYTES, b' ');
        let data = dcb::Bytes::from(padded);
        // Just enough of them to pass the bound with the last one.
        let bigs = MAX_CACHED_BYTES / dcb::limits::MAX_EVENT_DATA_BYTES;
        for i in 0..bigs {
            let event =
                AggregateEvent { aggregate_id: format!("big-{i}"), data: data.clone(), ..encoded.clone() };
            recorder.insert_events(vec![event]).await.unwrap();
        }
        let repository = Repository::new(recorder).with_cache();
        assert!(!repository.get::<Counter>("small").await.unwrap().is_from_cache());
        assert!(repository.get::<Counter>("small").await.unwrap().is_from_cache());
        for i in 0..bigs {
            assert_eq!(repository.get::<Counter>(&format!("big-{i}")).await.unwrap().0, 1);
            if i + 2 == bigs {
                assert!(
                    repository.get::<Counter>("small").await.unwrap().is_from_cache(),
                    "let go too early"
                );
            }
        }
        assert!(!repository.get::<Counter>("small").await.unwrap().is_from_cache(), "held past the bytes");
    }

    #[tokio::test]
    async fn a_snapshot_that_does_not_decode_is_replayed_around() {
        let snapshots = MemoryRecorder::new();
        let repository =
            Repository::new(MemoryRecorder::new()).with_snapshots(snapshots.clone(), NonZeroU64::MIN);
        let mut counter = Root::<Counter>::new("counter-1");
        counter.record(Ev::Counted);
        counter.record(Ev::Counted);
        repository.save(&mut counter).await.unwrap();
        assert_eq!(snapshots.count().await.unwrap(), 1, "the snapshot was not recorded");

        let loaded = repository.get::<Counter>("counter-1").await.unwrap();
        assert_eq!((loaded.version(), loaded.0), (2, 2));
    }
}
