//! DCB decision models, plain and sliced: read with a query, fold into a state, decide, append
//! under the condition that nothing the query selects was recorded since the read.

use dcb::{AppendCondition, EventStore, Query, QueryItem};

use crate::cache::{self, DecisionCache};

use crate::codec::{self, DomainEvent};
use crate::error::{Error, Result};

/// A state folded from the events a query selected, with the condition to append under: the
/// same query, after the head the read returned.
#[derive(Debug, Clone)]
pub struct Decision<St> {
    /// The decision model.
    pub state: St,
    /// Fails the append if anything the query selects was recorded after the read.
    pub condition: AppendCondition,
}

/// One use case's decision with its own tight query (types and tags), so that changes outside
/// its boundary do not conflict with it.
///
/// A slice is usually the command itself (it holds the ids it is about), so that the query, the
/// fold and the decision can all use them. See [`Dcb::execute`] for an example.
pub trait Slice: Send + Sync {
    /// The events the slice reads and records.
    type Event: DomainEvent;
    /// The decision model, folded from nothing (`Default`) by [`Slice::apply`].
    type State: Default + Send;
    /// The caller's error: the use case's refusals, and this crate's [`Error`] for the rest.
    type Error: From<Error>;

    /// The boundary: the events the decision depends on. Keep it tight (name the types, and the
    /// tags of the ids concerned) so that unrelated changes do not conflict.
    fn query(&self) -> Query;

    /// Folds one event the query selected into the state.
    fn apply(&self, state: &mut Self::State, event: &Self::Event);

    /// The events to record, or the reason to refuse. Recording nothing is allowed.
    fn decide(&self, state: &Self::State) -> Result<Vec<Self::Event>, Self::Error>;
}

/// Makes DCB decisions against a store: the plain style ([`Dcb::read`], [`Dcb::append`],
/// [`Dcb::decide`]) and slices ([`Dcb::execute`]).
///
/// Each decision costs one read and at most one append ([`Dcb::with_cache`] saves the read where
/// it can, and takes a decision it served wrongly again from a read). With [`Dcb::retry_on_conflict`], a decision whose append met a concurrent change
/// inside its boundary is read and decided again, a bounded number of times; other errors, the
/// caller's own included, are never retried.
#[derive(Debug, Clone)]
pub struct Dcb<S> {
    store: S,
    retries: u32,
    cache: Option<DecisionCache>,
}

/// Why an attempt stopped: the caller's refusal, or this crate's error (maybe a conflict).
pub(crate) enum Failure<E> {
    Refused(E),
    Failed(Error),
}

impl<E> From<Error> for Failure<E> {
    fn from(error: Error) -> Self {
        Failure::Failed(error)
    }
}

impl<E> From<dcb::Error> for Failure<E> {
    fn from(error: dcb::Error) -> Self {
        Failure::Failed(error.into())
    }
}

impl<E: From<Error>> Failure<E> {
    /// Whether another attempt may succeed, given `attempt` retries so far of `retries` allowed.
    pub(crate) fn retry(&self, attempt: &mut u32, retries: u32) -> bool {
        let retry = matches!(self, Failure::Failed(e) if e.is_integrity()) && *attempt < retries;
        *attempt += u32::from(retry);
        retry
    }

    pub(crate) fn into_error(self) -> E {
        match self {
            Failure::Refused(e) => e,
            Failure::Failed(e) => e.into(),
        }
    }
}

/// Reads every event `query` selects, decodes each and hands it to `each` with its stored form;
/// returns the head to condition on. A query of bare tags teaches `cache` those tags.
pub(crate) async fn read_each<S: EventStore, E: DomainEvent>(
    store: &S,
    cache: Option<&DecisionCache>,
    query: &Query,
    mut each: impl FnMut(E, &dcb::Event),
) -> Result<Option<u64>> {
    let read = cache::read(store, cache, query).await?;
    for stored in &read.events {
        each(codec::from_event(&stored.event)?, &stored.event);
    }
    Ok(read.head)
}

impl<S: EventStore> Dcb<S> {
    /// Decisions against `store`, without retries.
    pub fn new(store: S) -> Self {
        Dcb { store, retries: 0, cache: None }
    }

    /// Takes decisions ([`Dcb::decide`], [`Dcb::execute`]) from the events this handle (and its
    /// clones) last read or recorded, without a read, when they are known to be current up to a
    /// position: then the decision costs one round trip, its append.
    ///
    /// The cache holds every event of the tags of recent decisions, each tag exact up to a
    /// position of its own. A read for a decision reads every event of one tag of each query item
    /// (types alone are never cached). An append of this handle keeps the tags of its condition
    /// that are one bare tag known (the condition proved nothing else came), and moves on the
    /// tags learnt in a run of appends and reads each landing right after the one before when it
    /// lands right after that run; a tag it carries that another writer's appends may have
    /// touched in between is forgotten. A decision served from the
    /// cache appends under one tag of each item of its query, each checked after the position it
    /// is known up to ([`AppendCondition::item_after`]): a change the cache missed fails the
    /// append, and the decision is then read and taken again (not counted as a retry). For items
    /// with types that boundary is wider than the decision's own (a change of another type on the
    /// tag fails the served append too, and the decision is taken again on its own query), which
    /// is what keeps the tags known; a decision that records nothing or refuses is always taken
    /// again from a read, so that no refusal rests on a stale cache. So the fold and the decision
    /// may run twice in one attempt. A tag with more
    /// than 4,096 events is never held (its decisions read their own query, as without the
    /// cache). It pays when one process makes most of the decisions about its tags, or takes
    /// decisions about the same tags again and again while others write elsewhere. Over a store
    /// that checks every item after the condition's one `after` (UmaDB's protocol carries no
    /// position per item), a decision whose tags were learnt at different positions, with events
    /// of the later ones in between, fails its append and is read.
    ///
    /// ```
    /// use dcb::{AppendCondition, MemoryStore, QueryItem};
    /// use eventsourcing::{Dcb, DomainEvent, Error};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// enum Ev {
    ///     #[serde(rename = "Opened")]
    ///     Opened { course: String },
    ///     #[serde(rename = "SeatBooked")]
    ///     SeatBooked { course: String },
    /// }
    /// impl DomainEvent for Ev {
    ///     fn tags(&self) -> Vec<String> {
    ///         let (Ev::Opened { course } | Ev::SeatBooked { course }) = self;
    ///         vec![course.clone()]
    ///     }
    /// }
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let dcb = Dcb::new(MemoryStore::new()).with_cache();
    /// // Nothing carried the tag before: from now on the cache knows every event carrying it.
    /// let unused = AppendCondition::new(QueryItem::tags(["c1"]).into(), None);
    /// dcb.append(&[Ev::Opened { course: "c1".into() }], unused).await?;
    /// let booked = dcb
    ///     .decide(
    ///         QueryItem::tags(["c1"]).into(),
    ///         |seats: &mut usize, e: &Ev| *seats += usize::from(matches!(e, Ev::SeatBooked { .. })),
    ///         |&seats| Ok::<_, Error>(if seats < 2 { vec![Ev::SeatBooked { course: "c1".into() }] } else { vec![] }),
    ///     )
    ///     .await?;
    /// assert_eq!(booked, Some(2));
    /// # Ok::<(), Error>(())
    /// # }).unwrap();
    /// ```
    pub fn with_cache(mut self) -> Self {
        self.cache = Some(DecisionCache::default());
        self
    }

    /// Retries a decision up to `retries` more times when its append conflicts; the last
    /// conflict is returned if every attempt conflicts.
    pub fn retry_on_conflict(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// Reads the events `query` selects and folds them, oldest first, into a default state;
    /// returns the state and the matching append condition.
    pub async fn read<E, St>(&self, query: Query, mut fold: impl FnMut(&mut St, &E)) -> Result<Decision<St>>
    where
        E: DomainEvent,
        St: Default,
    {
        let mut state = St::default();
        let head = read_each(&self.store, None, &query, |event, _| fold(&mut state, &event)).await?;
        Ok(Decision { state, condition: AppendCondition::new(query, head) })
    }

    /// Records `events` (tagged with [`DomainEvent::tags`]) if `condition` holds (always, given
    /// `None`); returns the position of the last one, or `None` without touching the store when
    /// there are none.
    ///
    /// A concurrent change inside the condition's boundary fails it with an integrity error
    /// ([`Error::is_integrity`]), writing nothing.
    pub async fn append<E: DomainEvent>(
        &self,
        events: &[E],
        condition: impl Into<Option<AppendCondition>>,
    ) -> Result<Option<u64>> {
        if events.is_empty() {
            return Ok(None);
        }
        let stored = events.iter().map(codec::to_event).collect::<Result<_>>()?;
        Ok(Some(cache::append(&self.store, self.cache.as_ref(), stored, condition.into()).await?))
    }

    /// Reads with `query`, folds into a default state, lets `decide` choose the events and
    /// appends them under the matching condition, all in one call (retried on conflicts when
    /// configured). Returns the position of the last recorded event, `None` if none was.
    ///
    /// ```
    /// use dcb::{MemoryStore, QueryItem};
    /// use eventsourcing::{Dcb, DomainEvent, Error};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// enum Ev {
    ///     #[serde(rename = "SeatBooked")]
    ///     SeatBooked { course: String },
    /// }
    /// impl DomainEvent for Ev {
    ///     fn tags(&self) -> Vec<String> {
    ///         let Ev::SeatBooked { course } = self;
    ///         vec![course.clone()]
    ///     }
    /// }
    ///
    /// #[derive(Debug)]
    /// enum BookingError { FullyBooked, Other(Error) }
    /// impl From<Error> for BookingError {
    ///     fn from(e: Error) -> Self { BookingError::Other(e) }
    /// }
    ///
    /// async fn book(dcb: &Dcb<MemoryStore>, course: &str) -> Result<(), BookingError> {
    ///     dcb.decide(
    ///         QueryItem::types(["SeatBooked"]).and_tags([course]).into(),
    ///         |booked: &mut usize, _: &Ev| *booked += 1,
    ///         |booked| {
    ///             if *booked >= 2 {
    ///                 return Err(BookingError::FullyBooked);
    ///             }
    ///             Ok(vec![Ev::SeatBooked { course: course.into() }])
    ///         },
    ///     )
    ///     .await?;
    ///     Ok(())
    /// }
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let dcb = Dcb::new(MemoryStore::new()).retry_on_conflict(3);
    /// book(&dcb, "course-1").await.unwrap();
    /// book(&dcb, "course-1").await.unwrap();
    /// assert!(matches!(book(&dcb, "course-1").await, Err(BookingError::FullyBooked)));
    /// # });
    /// ```
    pub async fn decide<E, St, Err>(
        &self,
        query: Query,
        mut fold: impl FnMut(&mut St, &E),
        mut decide: impl FnMut(&St) -> Result<Vec<E>, Err>,
    ) -> Result<Option<u64>, Err>
    where
        E: DomainEvent,
        St: Default,
        Err: From<Error>,
    {
        let mut attempt = 0;
        loop {
            match self.attempt(&query, &mut fold, &mut decide).await {
                Ok(position) => return Ok(position),
                Err(failure) if failure.retry(&mut attempt, self.retries) => continue,
                Err(failure) => return Err(failure.into_error()),
            }
        }
    }

    /// One decision: from the cache if it covers `query` and the decision records something,
    /// else (and after a conflict with what the cache missed) from a read.
    async fn attempt<E, St, Err>(
        &self,
        query: &Query,
        fold: &mut impl FnMut(&mut St, &E),
        decide: &mut impl FnMut(&St) -> Result<Vec<E>, Err>,
    ) -> Result<Option<u64>, Failure<Err>>
    where
        E: DomainEvent,
        St: Default,
    {
        if let Some(cache) = &self.cache
            && let Some(served) = cache.serve(query)
        {
            let mut state = St::default();
            for stored in &served.events {
                fold(&mut state, &codec::from_event(&stored.event)?);
            }
            // A refusal, or nothing to record, is confirmed from a read below.
            if let Ok(chosen) = decide(&state)
                && !chosen.is_empty()
            {
                match self.append(&chosen, served.condition()).await {
                    Ok(position) => return Ok(position),
                    Err(error) => cache::after_served_failure(error)?,
                }
            }
        }
        let decision = self.read_for_decision(query.clone(), fold).await?;
        let events = decide(&decision.state).map_err(Failure::Refused)?;
        Ok(self.append(&events, decision.condition).await?)
    }

    /// [`Dcb::read`], or with a cache, a read of every event of one tag of each item of `query`
    /// (which the cache keeps), folding those that `query` selects.
    async fn read_for_decision<E, St>(
        &self,
        query: Query,
        fold: &mut impl FnMut(&mut St, &E),
    ) -> Result<Decision<St>>
    where
        E: DomainEvent,
        St: Default,
    {
        let Some((cache, tags)) = self.cache.as_ref().and_then(|c| Some((c, c.tags_to_read(&query)?))) else {
            return self.read(query, fold).await;
        };
        let wide = Query::new(tags.iter().map(|tag| QueryItem::tags([tag.as_str()])));
        let read = cache::read(&self.store, Some(cache), &wide).await?;
        let mut state = St::default();
        for stored in read.events.iter().filter(|e| query.matches(&e.event)) {
            fold(&mut state, &codec::from_event(&stored.event)?);
        }
        Ok(Decision { state, condition: AppendCondition::new(query, read.head) })
    }

    /// Reads the slice's boundary and folds it into the slice's state, with the matching
    /// condition; the first half of [`Dcb::execute`], for callers that decide themselves.
    pub async fn load<Sl: Slice>(&self, slice: &Sl) -> Result<Decision<Sl::State>> {
        self.read(slice.query(), |state, event| slice.apply(state, event)).await
    }

    /// Runs one use case: reads its boundary, folds, decides and appends under the matching
    /// condition (retried on conflicts when configured). Returns the position of the last
    /// recorded event, `None` if the decision recorded none.
    ///
    /// ```
    /// use dcb::{MemoryStore, Query, QueryItem};
    /// use eventsourcing::{Dcb, DomainEvent, Error, Slice};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Serialize, Deserialize)]
    /// enum Ev {
    ///     #[serde(rename = "CourseRegistered")]
    ///     Registered { course: String, places: usize },
    ///     #[serde(rename = "CourseRenamed")]
    ///     Renamed { course: String, name: String },
    ///     #[serde(rename = "StudentJoined")]
    ///     Joined { course: String, student: String },
    /// }
    /// impl DomainEvent for Ev {
    ///     fn tags(&self) -> Vec<String> {
    ///         match self {
    ///             Ev::Registered { course, .. } | Ev::Renamed { course, .. } => vec![course.clone()],
    ///             Ev::Joined { course, student } => vec![course.clone(), student.clone()],
    ///         }
    ///     }
    /// }
    ///
    /// /// Joining needs the course's places and joins, not its name: renames stay outside.
    /// struct Join<'a> { course: &'a str, student: &'a str }
    ///
    /// impl Slice for Join<'_> {
    ///     type Event = Ev;
    ///     type State = (usize, usize);
    ///     type Error = Error;
    ///     fn query(&self) -> Query {
    ///         QueryItem::types(["CourseRegistered", "StudentJoined"]).and_tags([self.course]).into()
    ///     }
    ///     fn apply(&self, (places, joined): &mut (usize, usize), event: &Ev) {
    ///         match event {
    ///             Ev::Registered { places: p, .. } => *places = *p,
    ///             Ev::Joined { .. } => *joined += 1,
    ///             Ev::Renamed { .. } => {}
    ///         }
    ///     }
    ///     fn decide(&self, &(places, joined): &(usize, usize)) -> Result<Vec<Ev>, Error> {
    ///         Ok(if joined < places {
    ///             vec![Ev::Joined { course: self.course.into(), student: self.student.into() }]
    ///         } else {
    ///             vec![]
    ///         })
    ///     }
    /// }
    ///
    /// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
    /// let dcb = Dcb::new(MemoryStore::new());
    /// dcb.append(&[Ev::Registered { course: "c1".into(), places: 1 }], None).await?;
    /// let join = Join { course: "c1", student: "s1" };
    /// let seen = dcb.load(&join).await?;
    /// // A rename lands meanwhile: outside the boundary, so no conflict.
    /// dcb.append(&[Ev::Renamed { course: "c1".into(), name: "Maths".into() }], None).await?;
    /// let events = join.decide(&seen.state)?;
    /// assert_eq!(dcb.append(&events, seen.condition).await?, Some(3));
    /// // Full now: the decision records nothing.
    /// assert_eq!(dcb.execute(&Join { course: "c1", student: "s2" }).await?, None);
    /// # Ok::<(), Error>(())
    /// # }).unwrap();
    /// ```
    pub async fn execute<Sl: Slice>(&self, slice: &Sl) -> Result<Option<u64>, Sl::Error> {
        let mut attempt = 0;
        loop {
            match self.execute_once(slice).await {
                Ok(position) => return Ok(position),
                Err(failure) if failure.retry(&mut attempt, self.retries) => continue,
                Err(failure) => return Err(failure.into_error()),
            }
        }
    }

    async fn execute_once<Sl: Slice>(&self, slice: &Sl) -> Result<Option<u64>, Failure<Sl::Error>> {
        let query = slice.query();
        self.attempt(&query, &mut |state, event| slice.apply(state, event), &mut |state| slice.decide(state))
            .await
    }
}

#[cfg(test)]
mod tests {
    use dcb::MemoryStore;
    use serde::{Deserialize, Serialize};

    use super::*;

    /// A memory store whose reads are counted.
    type Counting = dcb::testkit::RecordedReads<MemoryStore>;

    fn reads(store: &Counting) -> usize {
        store.read_bytes().len()
    }

    #[derive(Serialize, Deserialize)]
    enum Ev {
        #[serde(rename = "Opened")]
        Opened { course: String, places: usize },
        #[serde(rename = "SeatBooked")]
        SeatBooked { course: String },
        #[serde(rename = "Noted")]
        Noted { course: String },
    }

    impl DomainEvent for Ev {
        fn tags(&self) -> Vec<String> {
            let (Ev::Opened { course, .. } | Ev::SeatBooked { course } | Ev::Noted { course }) = self;
            vec![course.clone()]
        }
    }

    #[derive(Debug, PartialEq)]
    enum Refusal {
        NotOpen,
        FullyBooked,
    }

    impl From<Error> for Refusal {
        fn from(error: Error) -> Self {
            panic!("unexpected error: {error}")
        }
    }

    /// Opens `course` with `places`, on condition that nothing carries its tag yet.
    async fn open<S: EventStore>(dcb: &Dcb<S>, course: &str, places: usize) -> Option<u64> {
        let unused = AppendCondition::new(QueryItem::tags([course]).into(), None);
        dcb.append(&[Ev::Opened { course: course.into(), places }], unused).await.unwrap()
    }

    async fn book<S: EventStore>(dcb: &Dcb<S>, course: &str) -> Result<Option<u64>, Refusal> {
        book_within(dcb, course, QueryItem::tags([course])).await
    }

    /// Books a seat on `course`, deciding on the events `boundary` selects.
    async fn book_within<S: EventStore>(
        dcb: &Dcb<S>,
        course: &str,
        boundary: QueryItem,
    ) -> Result<Option<u64>, Refusal> {
        dcb.decide(
            boundary.into(),
            |(places, booked): &mut (Option<usize>, usize), event: &Ev| match event {
                Ev::Opened { places: p, .. } => *places = Some(*p),
                Ev::SeatBooked { .. } => *booked += 1,
                Ev::Noted { .. } => {}
            },
            |&(places, booked)| match places {
                None => Err(Refusal::NotOpen),
                Some(places) if booked >= places => Err(Refusal::FullyBooked),
                Some(_) => Ok(vec![Ev::SeatBooked { course: course.into() }]),
            },
        )
        .await
    }

    /// A store whose reads are counted, a handle on it with the cache and one without.
    fn cached_and_other() -> (Counting, Dcb<Counting>, Dcb<Counting>) {
        let store = Counting::default();
        (store.clone(), Dcb::new(store.clone()).with_cache(), Dcb::new(store))
    }

    #[tokio::test]
    async fn decisions_the_cache_covers_read_nothing() {
        let store = Counting::default();
        let dcb = Dcb::new(store.clone()).with_cache();
        assert_eq!(open(&dcb, "c1", 2).await, Some(1));
        assert_eq!(book(&dcb, "c1").await, Ok(Some(2)));
        assert_eq!(book(&dcb, "c1").await, Ok(Some(3)));
        assert_eq!(reads(&store), 0, "every decision came from the cache");
        // Full: a refusal is confirmed from a read, never taken from the cache alone.
        assert_eq!(book(&dcb, "c1").await, Err(Refusal::FullyBooked));
        assert_eq!(reads(&store), 1);
        // Without the cache, every decision reads.
        let uncached = Dcb::new(store.clone());
        assert_eq!(open(&uncached, "c2", 1).await, Some(4));
        assert_eq!(book(&uncached, "c2").await, Ok(Some(5)));
        assert_eq!(reads(&store), 2);
    }

    /// The seats of a course, as an enduring object.
    #[derive(Default)]
    struct Seats {
        places: usize,
        booked: usize,
    }

    impl crate::Object for Seats {
        type Event = Ev;
        fn apply(&mut self, event: &Ev) {
            match event {
                Ev::Opened { places, .. } => self.places = *places,
                Ev::SeatBooked { .. } => self.booked += 1,
                Ev::Noted { .. } => {}
            }
        }
    }

    #[tokio::test]
    async fn object_updates_the_cache_covers_read_nothing() {
        let store = Counting::default();
        let objects = crate::Objects::new(store.clone()).with_cache();
        let mut course = crate::Tagged::<Seats>::new("c1");
        course.record(Ev::Opened { course: "c1".into(), places: 1 });
        assert_eq!(objects.save(&mut course).await.unwrap(), Some(1));
        let book = |seats: &mut crate::Tagged<Seats>| {
            if seats.booked >= seats.places {
                return Err(Refusal::FullyBooked);
            }
            seats.record(Ev::SeatBooked { course: "c1".into() });
            Ok(())
        };
        assert_eq!(objects.update("c1", book).await, Ok(()));
        assert_eq!(reads(&store), 0, "the update came from the cache");
        // Full: the refusal is confirmed from a read.
        assert_eq!(objects.update("c1", book).await, Err(Refusal::FullyBooked));
        assert_eq!(reads(&store), 1);
    }

    /// Books a seat on each of two courses in one decision.
    async fn book_both<S: EventStore>(dcb: &Dcb<S>, a: &str, b: &str) -> Result<Option<u64>, Refusal> {
        dcb.decide(
            Query::from(QueryItem::tags([a])).or(QueryItem::tags([b])),
            |open: &mut usize, event: &Ev| *open += usize::from(matches!(event, Ev::Opened { .. })),
            |&open| match open {
                2 => Ok(vec![Ev::SeatBooked { course: a.into() }, Ev::SeatBooked { course: b.into() }]),
                _ => Err(Refusal::NotOpen),
            },
        )
        .await
    }

    #[tokio::test]
    async fn a_decision_on_tags_known_up_to_different_positions_reads_nothing() {
        let (store, cached, other) = cached_and_other();
        open(&cached, "c1", 5).await;
        open(&cached, "c2", 5).await;
        open(&other, "c3", 5).await;
        // After the other writer's event, c1 moves on alone: known up to 4, c2 still up to 2.
        assert_eq!(book(&cached, "c1").await, Ok(Some(4)));
        // Each course checked from its own position: c1's booking at 4 is no conflict for c2.
        assert_eq!(book_both(&cached, "c1", "c2").await, Ok(Some(6)));
        assert_eq!(reads(&store), 0, "both decisions came from the cache");
        // A change to c2 that the cache missed still fails the served append.
        assert_eq!(book(&other, "c2").await, Ok(Some(7)));
        assert_eq!(book_both(&cached, "c1", "c2").await, Ok(Some(9)));
        assert_eq!(reads(&store), 2, "the other writer's decision and the cached one taken again");
    }

    /// A decision on items with types, served from the cache, appends under their bare tags, so
    /// that its success keeps them known across other writers' events; a change on the tag
    /// outside the decision's boundary then fails that append, and the decision is read and taken
    /// again on its own boundary.
    #[tokio::test]
    async fn a_decision_on_typed_items_keeps_its_tags_known() {
        let (store, cached, other) = cached_and_other();
        let boundary = || QueryItem::types(["Opened", "SeatBooked"]).and_tags(["c1"]);
        open(&cached, "c1", 5).await;
        open(&other, "c2", 5).await;
        assert_eq!(book_within(&cached, "c1", boundary()).await, Ok(Some(3)));
        open(&other, "c3", 5).await;
        assert_eq!(book_within(&cached, "c1", boundary()).await, Ok(Some(5)));
        assert_eq!(reads(&store), 0, "both decisions came from the cache");
        let noted = AppendCondition::new(QueryItem::tags(["nothing"]).into(), None);
        other.append(&[Ev::Noted { course: "c1".into() }], noted).await.unwrap();
        assert_eq!(book_within(&cached, "c1", boundary()).await, Ok(Some(7)));
        assert_eq!(reads(&store), 1, "the note failed the served append");
        assert_eq!(book_within(&cached, "c1", boundary()).await, Ok(Some(8)));
        assert_eq!(reads(&store), 1, "and the read brought the cache up to date");
    }

    #[tokio::test]
    async fn a_change_the_cache_missed_is_read_before_deciding_again() {
        let (store, cached, other) = cached_and_other();
        open(&cached, "c1", 1).await;
        // Another writer takes the only place: the cache still says it is free.
        assert_eq!(book(&other, "c1").await, Ok(Some(2)));
        // The cached decision's append conflicts, and the decision is read and taken again.
        assert_eq!(book(&cached, "c1").await, Err(Refusal::FullyBooked));
        assert_eq!(store.inner().head().await.unwrap(), Some(2), "nothing more was recorded");
    }

    #[tokio::test]
    async fn a_refusal_resting_on_a_stale_cache_is_taken_again_from_a_read() {
        let store = Counting::default();
        let cached = Dcb::new(store.clone()).with_cache();
        // Read through the cache: the course is not open, and the cache knows its tag as empty.
        assert_eq!(book(&cached, "c1").await, Err(Refusal::NotOpen));
        open(&Dcb::new(store.clone()), "c1", 1).await;
        assert_eq!(book(&cached, "c1").await, Ok(Some(2)));
    }
}
