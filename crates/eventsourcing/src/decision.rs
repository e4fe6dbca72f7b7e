//! DCB decision models, plain and sliced: read with a query, fold into a state, decide, append
//! under the condition that nothing the query selects was recorded since the read.

use dcb::{AppendCondition, EventStore, Query, ReadOptions};

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
/// Each decision costs one read and at most one append. With
/// [`Dcb::retry_on_conflict`], a decision whose append met a concurrent change inside its
/// boundary is read and decided again, a bounded number of times; other errors, the caller's
/// own included, are never retried.
#[derive(Debug, Clone)]
pub struct Dcb<S> {
    store: S,
    retries: u32,
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
/// returns the head to condition on.
pub(crate) async fn read_each<S: EventStore, E: DomainEvent>(
    store: &S,
    query: &Query,
    mut each: impl FnMut(E, &dcb::Event),
) -> Result<Option<u64>> {
    let read = store.read(query, ReadOptions::default()).await?;
    for stored in &read.events {
        each(codec::from_event(&stored.event)?, &stored.event);
    }
    Ok(read.head)
}

impl<S: EventStore> Dcb<S> {
    /// Decisions against `store`, without retries.
    pub fn new(store: S) -> Self {
        Dcb { store, retries: 0 }
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
        let head = read_each(&self.store, &query, |event, _| fold(&mut state, &event)).await?;
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
        Ok(Some(self.store.append(stored, condition.into()).await?))
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
        mut query: Query,
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
            // The query is needed again only if this attempt may be retried.
            let query = if attempt < self.retries { query.clone() } else { std::mem::take(&mut query) };
            match self.attempt(query, &mut fold, &mut decide).await {
                Ok(position) => return Ok(position),
                Err(failure) if failure.retry(&mut attempt, self.retries) => continue,
                Err(failure) => return Err(failure.into_error()),
            }
        }
    }

    async fn attempt<E, St, Err>(
        &self,
        query: Query,
        fold: &mut impl FnMut(&mut St, &E),
        decide: &mut impl FnMut(&St) -> Result<Vec<E>, Err>,
    ) -> Result<Option<u64>, Failure<Err>>
    where
        E: DomainEvent,
        St: Default,
    {
        let decision = self.read(query, fold).await?;
        let events = decide(&decision.state).map_err(Failure::Refused)?;
        Ok(self.append(&events, decision.condition).await?)
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
        let decision = self.load(slice).await?;
        let events = slice.decide(&decision.state).map_err(Failure::Refused)?;
        Ok(self.append(&events, decision.condition).await?)
    }
}
