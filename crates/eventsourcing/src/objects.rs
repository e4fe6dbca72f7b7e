//! Enduring objects and groups: DCB decisions shaped like aggregates without their fixed
//! boundaries. An object is identified by one tag and folded from the events carrying it; a group
//! of objects decides jointly and records one event tagged with every member's id.

use std::ops::Deref;

use dcb::limits::MAX_QUERY_ITEMS;
use dcb::{AppendCondition, Event, EventStore, Query, QueryItem};

use crate::cache::{self, DecisionCache};
use crate::codec::{self, DomainEvent, IntoEvents};
use crate::decision::{Failure, read_each};
use crate::error::{Error, Result};

/// The state of an enduring object, folded from the events tagged with its id.
///
/// Objects that decide together in a [`Group`] share one event type, since one event records
/// their joint decision.
pub trait Object: Default + Send + Sync + 'static {
    /// The events the object is folded from.
    type Event: DomainEvent;

    /// Folds one event tagged with the object's id into the state.
    fn apply(&mut self, event: &Self::Event);
}

/// An object with its id (its tag), the head it was read at, and the events recorded since.
///
/// Dereferences to the object's state.
#[derive(Debug, Clone)]
pub struct Tagged<T: Object> {
    id: String,
    state: T,
    seen: Option<u64>,
    recorded: u64,
    pending: Vec<T::Event>,
}

impl<T: Object> Tagged<T> {
    /// A new object with no events, to record its first events and save. Saving it fails with an
    /// integrity error if any event already carries its id.
    pub fn new(id: impl Into<String>) -> Self {
        Tagged { id: id.into(), state: T::default(), seen: None, recorded: 0, pending: Vec::new() }
    }

    /// The object's id: the tag of its events.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The state, also reached through `Deref`.
    pub fn state(&self) -> &T {
        &self.state
    }

    /// Whether no event of the object was recorded when it was loaded (or saved since): a group
    /// member that does not exist.
    pub fn is_new(&self) -> bool {
        self.recorded == 0
    }

    /// Events recorded but not saved yet, oldest first.
    pub fn pending(&self) -> &[T::Event] {
        &self.pending
    }

    /// Applies `event` and keeps it for the next save, which tags it with the object's id.
    pub fn record(&mut self, event: T::Event) {
        self.state.apply(&event);
        self.pending.push(event);
    }

    /// Runs a command on the state and records the event(s) it returns (one, an `Option` or a
    /// `Vec`); records nothing when it refuses.
    pub fn execute<I, E>(&mut self, command: impl FnOnce(&T) -> Result<I, E>) -> Result<(), E>
    where
        I: IntoEvents<T::Event>,
    {
        for event in command(&self.state)?.into_events() {
            self.record(event);
        }
        Ok(())
    }

    fn fold_recorded(&mut self, event: &T::Event) {
        self.state.apply(event);
        self.recorded += 1;
    }
}

impl<T: Object> Deref for Tagged<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.state
    }
}

mod sealed {
    pub trait Sealed {}
}

/// The member types of a [`Group`]: tuples of two or three [`Object`]s with one event type.
/// Implemented by this crate only.
pub trait Members: sealed::Sealed + Send + Sync + 'static {
    /// The shared event type.
    type Event: DomainEvent;
    /// The members' ids, in the tuple's order.
    type Ids<'a>: Copy;
    /// The loaded members: a tuple of [`Tagged`] objects.
    type Tagged: Send + Sync;

    /// New members with these ids.
    fn create(ids: Self::Ids<'_>) -> Self::Tagged;
    /// The members' ids, in order.
    fn ids(members: &Self::Tagged) -> Vec<&str>;
    /// Folds a recorded event into each member whose id is among `tags`.
    fn fold(members: &mut Self::Tagged, event: &Self::Event, tags: &[String]);
    /// Applies a new event of the group to every member.
    fn apply_all(members: &mut Self::Tagged, event: &Self::Event);
    /// Notes that `count` events of the group were recorded, up to position `head`.
    fn saved(members: &mut Self::Tagged, count: u64, head: u64);
}

macro_rules! members {
    ($n:literal; $($T:ident $i:tt),+) => {
        impl<E: DomainEvent, $($T: Object<Event = E>),+> sealed::Sealed for ($($T,)+) {}

        impl<E: DomainEvent, $($T: Object<Event = E>),+> Members for ($($T,)+) {
            type Event = E;
            type Ids<'a> = [&'a str; $n];
            type Tagged = ($(Tagged<$T>,)+);

            fn create(ids: Self::Ids<'_>) -> Self::Tagged {
                ($(Tagged::new(ids[$i]),)+)
            }

            fn ids(members: &Self::Tagged) -> Vec<&str> {
                vec![$(members.$i.id()),+]
            }

            fn fold(members: &mut Self::Tagged, event: &E, tags: &[String]) {
                $(if tags.iter().any(|t| *t == members.$i.id) {
                    members.$i.fold_recorded(event);
                })+
            }

            fn apply_all(members: &mut Self::Tagged, event: &E) {
                $(members.$i.state.apply(event);)+
            }

            fn saved(members: &mut Self::Tagged, count: u64, head: u64) {
                $(
                    members.$i.recorded += count;
                    members.$i.seen = Some(head);
                )+
            }
        }
    };
}

members!(2; A 0, B 1);
members!(3; A 0, B 1, C 2);

/// Objects loaded together to make one decision: the event it records is tagged with every
/// member's id, and saving fails if any member changed since the group was read.
///
/// Members that have no events are loaded as new ([`Tagged::is_new`]) rather than failing the
/// load, so that the decision says which missing member matters most.
pub struct Group<G: Members> {
    /// The members, in the order of the ids given to [`Objects::get_group`].
    pub members: G::Tagged,
    seen: Option<u64>,
    /// Per member, the position it is known up to, when the group was served from the cache
    /// (whose members may be known up to different positions); empty otherwise.
    members_seen: Vec<u64>,
    pending: Vec<G::Event>,
}

impl<G: Members> Group<G> {
    /// Applies `event` to every member and keeps it for the next save, which tags it with every
    /// member's id.
    pub fn record(&mut self, event: G::Event) {
        G::apply_all(&mut self.members, &event);
        self.pending.push(event);
    }

    /// Events recorded but not saved yet, oldest first.
    pub fn pending(&self) -> &[G::Event] {
        &self.pending
    }
}

/// What [`Objects::save`] saves: a [`Tagged`] object or a [`Group`].
pub trait Save: sealed::Sealed + Send {
    /// The events to append and the condition to append them under; `None` if nothing is
    /// pending.
    fn prepare(&self) -> Result<Option<(Vec<Event>, AppendCondition)>>;
    /// Forgets the pending events once recorded, the last at `position`.
    fn saved(&mut self, position: u64);
}

impl<T: Object> sealed::Sealed for Tagged<T> {}

impl<T: Object> Save for Tagged<T> {
    fn prepare(&self) -> Result<Option<(Vec<Event>, AppendCondition)>> {
        if self.pending.is_empty() {
            return Ok(None);
        }
        let events = self
            .pending
            .iter()
            .map(|e| codec::to_event_with(e, [self.id.as_str()]))
            .collect::<Result<_>>()?;
        let query = QueryItem::tags([self.id.as_str()]).into();
        Ok(Some((events, AppendCondition::new(query, self.seen))))
    }

    fn saved(&mut self, position: u64) {
        self.recorded += self.pending.len() as u64;
        self.pending.clear();
        // The condition held, so nothing else carrying the id landed before our events.
        self.seen = Some(position);
    }
}

impl<G: Members> sealed::Sealed for Group<G> {}

impl<G: Members> Save for Group<G> {
    fn prepare(&self) -> Result<Option<(Vec<Event>, AppendCondition)>> {
        if self.pending.is_empty() {
            return Ok(None);
        }
        let ids = G::ids(&self.members);
        let events = self
            .pending
            .iter()
            .map(|e| codec::to_event_with(e, ids.iter().copied()))
            .collect::<Result<_>>()?;
        let query = Query::new(ids.iter().map(|id| QueryItem::tags([*id])));
        let condition = match self.members_seen.as_slice() {
            [] => AppendCondition::new(query, self.seen),
            members_seen => cache::condition_at(query, members_seen),
        };
        Ok(Some((events, condition)))
    }

    fn saved(&mut self, position: u64) {
        G::saved(&mut self.members, self.pending.len() as u64, position);
        self.pending.clear();
        self.seen = Some(position);
        self.members_seen.clear();
    }
}

/// The repository of enduring objects and groups over a DCB store.
///
/// Every load is one read and every save one conditional append. [`Objects::update`] and
/// [`Objects::update_group`] wrap load, decide and save in one call that is retried on conflicts
/// when [`Objects::retry_on_conflict`] allows.
///
/// ```
/// use dcb::MemoryStore;
/// use eventsourcing::{DomainEvent, Object, Objects, Tagged};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// enum Ev {
///     #[serde(rename = "StudentRegistered")]
///     StudentRegistered { max_courses: usize },
///     #[serde(rename = "CourseRegistered")]
///     CourseRegistered { places: usize },
///     #[serde(rename = "StudentJoinedCourse")]
///     Joined,
/// }
/// impl DomainEvent for Ev {}
///
/// #[derive(Default)]
/// struct Student { max_courses: usize, courses: usize }
/// impl Object for Student {
///     type Event = Ev;
///     fn apply(&mut self, event: &Ev) {
///         match event {
///             Ev::StudentRegistered { max_courses } => self.max_courses = *max_courses,
///             Ev::Joined => self.courses += 1,
///             Ev::CourseRegistered { .. } => {}
///         }
///     }
/// }
///
/// #[derive(Default)]
/// struct Course { places: usize, students: usize }
/// impl Object for Course {
///     type Event = Ev;
///     fn apply(&mut self, event: &Ev) {
///         match event {
///             Ev::CourseRegistered { places } => self.places = *places,
///             Ev::Joined => self.students += 1,
///             Ev::StudentRegistered { .. } => {}
///         }
///     }
/// }
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let objects = Objects::new(MemoryStore::new());
/// let mut student = Tagged::<Student>::new("student-1");
/// student.record(Ev::StudentRegistered { max_courses: 3 });
/// objects.save(&mut student).await?;
/// let mut course = Tagged::<Course>::new("course-1");
/// course.record(Ev::CourseRegistered { places: 10 });
/// objects.save(&mut course).await?;
///
/// let mut group = objects.get_group::<(Student, Course)>(["student-1", "course-1"]).await?;
/// let (student, course) = &group.members;
/// assert!(!student.is_new() && course.students < course.places);
/// group.record(Ev::Joined);
/// objects.save(&mut group).await?;
///
/// assert_eq!(objects.get::<Course>("course-1").await?.students, 1);
/// assert_eq!(objects.get::<Student>("student-1").await?.courses, 1);
/// # Ok::<(), eventsourcing::Error>(())
/// # }).unwrap();
/// ```
#[derive(Debug, Clone)]
pub struct Objects<S> {
    store: S,
    retries: u32,
    cache: Option<DecisionCache>,
}

impl<S: EventStore> Objects<S> {
    /// A repository over `store`, without retries.
    pub fn new(store: S) -> Self {
        Objects { store, retries: 0, cache: None }
    }

    /// Takes [`Objects::update`] and [`Objects::update_group`] from the events this handle (and
    /// its clones) last read or recorded, without a read, where they are known to be current, as
    /// [`Dcb::with_cache`](crate::Dcb::with_cache) does for decisions (which says how it stays
    /// correct). An update it serves is taken again from a read when its save conflicts, when the
    /// command refuses or records nothing, or when the object is not found: the command may run
    /// twice in one attempt.
    pub fn with_cache(mut self) -> Self {
        self.cache = Some(DecisionCache::default());
        self
    }

    /// Lets [`Objects::update`] and [`Objects::update_group`] try up to `retries` more times when
    /// their save conflicts; the last conflict is returned if every attempt conflicts.
    pub fn retry_on_conflict(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The object `id`, folded from every event tagged with it; [`Error::NotFound`] if there is
    /// none.
    pub async fn get<T: Object>(&self, id: &str) -> Result<Tagged<T>> {
        let mut object = Tagged::<T>::new(id);
        let query = QueryItem::tags([id]).into();
        object.seen =
            read_each(&self.store, self.cache.as_ref(), &query, |event, _| object.fold_recorded(&event))
                .await?;
        if object.is_new() {
            return Err(Error::not_found(id));
        }
        Ok(object)
    }

    /// The objects `ids`, in order, with one read per [`MAX_QUERY_ITEMS`] ids (the largest query
    /// a store takes); [`Error::NotFound`] for the first id that has no event. Each can then be
    /// saved on its own.
    pub async fn get_many<T: Object>(&self, ids: &[&str]) -> Result<Vec<Tagged<T>>> {
        let mut objects = Vec::with_capacity(ids.len());
        // Never an empty query, which would read the whole store.
        for chunk in ids.chunks(MAX_QUERY_ITEMS) {
            let mut part: Vec<Tagged<T>> = chunk.iter().map(|id| Tagged::new(*id)).collect();
            let query = Query::new(chunk.iter().map(|id| QueryItem::tags([*id])));
            let head = read_each(&self.store, self.cache.as_ref(), &query, |event, stored| {
                for object in part.iter_mut().filter(|o| stored.has_tag(&o.id)) {
                    object.fold_recorded(&event);
                }
            })
            .await?;
            for object in &mut part {
                if object.is_new() {
                    return Err(Error::not_found(&object.id));
                }
                object.seen = head;
            }
            objects.extend(part);
        }
        Ok(objects)
    }

    /// The group of objects `ids` (one per member type, in order), with one read. Members without
    /// events are new ([`Tagged::is_new`]); the decision checks them.
    pub async fn get_group<G: Members>(&self, ids: G::Ids<'_>) -> Result<Group<G>> {
        let mut members = G::create(ids);
        let query = Query::new(G::ids(&members).into_iter().map(|id| QueryItem::tags([id])));
        let head = read_each(&self.store, self.cache.as_ref(), &query, |event, stored| {
            G::fold(&mut members, &event, &stored.tags);
        })
        .await?;
        let mut group = Group { members, seen: head, members_seen: Vec::new(), pending: Vec::new() };
        set_seen::<G>(&mut group, head);
        Ok(group)
    }

    /// Appends the pending events of an object or a group under the condition that none of its
    /// objects changed since it was read; returns the position of the last event, `None` if
    /// nothing was pending. A concurrent change fails it with an integrity error
    /// ([`Error::is_integrity`]), writing nothing.
    pub async fn save(&self, target: &mut impl Save) -> Result<Option<u64>> {
        let Some((events, condition)) = target.prepare()? else {
            return Ok(None);
        };
        let position = cache::append(&self.store, self.cache.as_ref(), events, Some(condition)).await?;
        target.saved(position);
        Ok(Some(position))
    }

    /// Loads the object `id`, lets `command` record events on it and saves them, retrying on
    /// conflicts when configured. A missing object is [`Error::NotFound`], passed to the
    /// caller's error type.
    pub async fn update<T, R, Err>(
        &self,
        id: &str,
        mut command: impl FnMut(&mut Tagged<T>) -> Result<R, Err>,
    ) -> Result<R, Err>
    where
        T: Object,
        Err: From<Error>,
    {
        let mut attempt = 0;
        loop {
            let outcome = async {
                if let Some(result) = self.update_cached(id, &mut command).await? {
                    return Ok(result);
                }
                let mut object = self.get::<T>(id).await?;
                let result = command(&mut object).map_err(Failure::Refused)?;
                self.save(&mut object).await?;
                Ok::<_, Failure<Err>>(result)
            };
            match outcome.await {
                Ok(result) => return Ok(result),
                Err(failure) if failure.retry(&mut attempt, self.retries) => continue,
                Err(failure) => return Err(failure.into_error()),
            }
        }
    }

    /// Loads the group `ids`, lets `command` decide on it and record events, and saves them,
    /// retrying on conflicts when configured.
    pub async fn update_group<G, R, Err>(
        &self,
        ids: G::Ids<'_>,
        mut command: impl FnMut(&mut Group<G>) -> Result<R, Err>,
    ) -> Result<R, Err>
    where
        G: Members,
        Err: From<Error>,
    {
        let mut attempt = 0;
        loop {
            let outcome = async {
                if let Some(result) = self.update_group_cached(ids, &mut command).await? {
                    return Ok(result);
                }
                let mut group = self.get_group::<G>(ids).await?;
                let result = command(&mut group).map_err(Failure::Refused)?;
                self.save(&mut group).await?;
                Ok::<_, Failure<Err>>(result)
            };
            match outcome.await {
                Ok(result) => return Ok(result),
                Err(failure) if failure.retry(&mut attempt, self.retries) => continue,
                Err(failure) => return Err(failure.into_error()),
            }
        }
    }
}

impl<S: EventStore> Objects<S> {
    /// [`Objects::update`] from the cache, if it covers the object and the command records
    /// something; `None` to take it from a read.
    async fn update_cached<T, R, Err>(
        &self,
        id: &str,
        command: &mut impl FnMut(&mut Tagged<T>) -> Result<R, Err>,
    ) -> Result<Option<R>, Failure<Err>>
    where
        T: Object,
    {
        let Some(served) = self.cache.as_ref().and_then(|c| c.serve(&QueryItem::tags([id]).into())) else {
            return Ok(None);
        };
        let mut object = Tagged::<T>::new(id);
        for stored in &served.events {
            object.fold_recorded(&codec::from_event(&stored.event)?);
        }
        if object.is_new() {
            return Ok(None);
        }
        object.seen = Some(served.head());
        match command(&mut object) {
            Ok(result) if !object.pending.is_empty() => {
                Ok(self.save_cached(&mut object).await?.then_some(result))
            }
            _ => Ok(None),
        }
    }

    /// [`Objects::update_group`] from the cache, if it covers every member and the command
    /// records something; `None` to take it from a read.
    async fn update_group_cached<G, R, Err>(
        &self,
        ids: G::Ids<'_>,
        command: &mut impl FnMut(&mut Group<G>) -> Result<R, Err>,
    ) -> Result<Option<R>, Failure<Err>>
    where
        G: Members,
    {
        let Some(cache) = &self.cache else { return Ok(None) };
        let mut members = G::create(ids);
        let query = Query::new(G::ids(&members).into_iter().map(|id| QueryItem::tags([id])));
        let Some(served) = cache.serve(&query) else { return Ok(None) };
        for stored in &served.events {
            G::fold(&mut members, &codec::from_event(&stored.event)?, &stored.event.tags);
        }
        let head = Some(served.head());
        let mut group = Group { members, seen: head, members_seen: served.items_at, pending: Vec::new() };
        set_seen::<G>(&mut group, head);
        match command(&mut group) {
            Ok(result) if !group.pending.is_empty() => {
                Ok(self.save_cached(&mut group).await?.then_some(result))
            }
            _ => Ok(None),
        }
    }

    /// Saves what an update from the cache recorded: `false` when the save met a change the
    /// cache missed (or refused what was chosen from it), to be taken again from a read.
    async fn save_cached(&self, target: &mut impl Save) -> Result<bool> {
        match self.save(target).await {
            Ok(_) => Ok(true),
            Err(error) => cache::after_served_failure(error).map(|()| false),
        }
    }
}

/// Gives every member the group's head, so that a member taken out of the group can be saved on
/// its own: the group's read covered its tag.
fn set_seen<G: Members>(group: &mut Group<G>, head: Option<u64>) {
    if let Some(head) = head {
        G::saved(&mut group.members, 0, head);
    }
}
