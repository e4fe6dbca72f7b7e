//! The store-generic tests. Each takes a fresh, empty store.

use std::num::NonZeroU64;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};

use dcb::recorder::{AggregateEvent, AggregateRecorder};
use dcb::{EventStore, Query, QueryItem, ReadOptions};

use super::Interfering;
use super::domain::{
    Course, CourseEvent, CourseObject, EnrolmentError, Ev, JoinCourse, JoinState, Student, StudentEvent,
    StudentObject, join_plain, join_with_aggregates, join_with_objects,
};
use crate::{Dcb, DcbRecorder, Error, Objects, Repository, Root, Slice, Tagged, codec};

fn expect_refusal(result: Result<(), EnrolmentError>, expected: &str) {
    match result {
        Err(e) if format!("{e:?}") == expected => {}
        other => panic!("expected {expected}, got {other:?}"),
    }
}

fn expect_conflict<T: std::fmt::Debug>(result: Result<T, Error>) {
    match result {
        Err(e) if e.is_integrity() => {}
        other => panic!("expected an integrity error, got {other:?}"),
    }
}

async fn register_aggregates<R: AggregateRecorder>(
    repository: &Repository<R>,
    students: &[&str],
    courses: &[(&str, usize)],
) {
    for student in students {
        let mut root = Root::<Student>::new(*student);
        root.record(StudentEvent::Registered { name: student.to_uppercase(), max_courses: 3 });
        repository.save(&mut root).await.unwrap();
    }
    for (course, places) in courses {
        let mut root = Root::<Course>::new(*course);
        root.record(CourseEvent::Registered { name: course.to_uppercase(), places: *places });
        repository.save(&mut root).await.unwrap();
    }
}

/// Aggregates are saved, loaded with their versions, and missing ones are not found; joining a
/// course again is refused as already joined even when the course is full, as in the DCB styles.
pub async fn aggregates_save_and_load<S: EventStore>(store: S) {
    let repository = Repository::new(DcbRecorder::new(store));
    register_aggregates(&repository, &["sara"], &[("french", 1)]).await;
    join_with_aggregates(&repository, "sara", "french").await.unwrap();
    expect_refusal(join_with_aggregates(&repository, "sara", "french").await, "AlreadyJoined");
    let sara = repository.get::<Student>("sara").await.unwrap();
    assert_eq!((sara.version(), sara.courses.as_slice()), (2, &["french".to_owned()][..]));
    let french = repository.get::<Course>("french").await.unwrap();
    assert_eq!(french.version(), 2);
    assert_eq!(french.students, ["sara"]);
    assert!(french.pending().is_empty());
    match repository.get::<Student>("nobody").await {
        Err(Error::NotFound { id }) => assert_eq!(id, "nobody"),
        other => panic!("expected not found, got {other:?}"),
    }
    expect_refusal(join_with_aggregates(&repository, "nobody", "french").await, "StudentNotFound");
    expect_refusal(join_with_aggregates(&repository, "sara", "nothing").await, "CourseNotFound");
    assert_eq!(repository.recorder().count().await.unwrap(), 4);
}

/// The seed's consistency test: a concurrent join to the course fails the save of both the
/// student's and the course's events, and writes neither.
pub async fn aggregates_concurrent_change_fails_the_whole_save<S: EventStore>(store: S) {
    let repository = Repository::new(DcbRecorder::new(store));
    register_aggregates(&repository, &["sara", "bastian"], &[("french", 5)]).await;
    let mut sara = repository.get::<Student>("sara").await.unwrap();
    let mut french = repository.get::<Course>("french").await.unwrap();
    sara.execute(|s| s.join("french")).unwrap();
    french.execute(|c| c.join("sara")).unwrap();

    join_with_aggregates(&repository, "bastian", "french").await.unwrap();
    let count = repository.recorder().count().await.unwrap();
    expect_conflict(repository.save_all(&mut [&mut sara, &mut french]).await);

    assert_eq!(repository.recorder().count().await.unwrap(), count);
    assert!(repository.get::<Student>("sara").await.unwrap().courses.is_empty());
    assert_eq!(repository.get::<Course>("french").await.unwrap().students, ["bastian"]);
}

/// A recorder that counts the events it hands out, to tell a load from a snapshot (which reads
/// only the events after it) from a replay (which ends in the same state).
#[derive(Clone)]
struct Counting<R> {
    inner: R,
    read: Arc<AtomicUsize>,
}

impl<R> Counting<R> {
    fn new(inner: R) -> Self {
        Counting { inner, read: Arc::default() }
    }

    fn take(&self) -> usize {
        self.read.swap(0, Ordering::SeqCst)
    }
}

impl<R: AggregateRecorder> AggregateRecorder for Counting<R> {
    async fn insert_events(&self, events: Vec<AggregateEvent>) -> dcb::Result<u64> {
        self.inner.insert_events(events).await
    }

    async fn select_events(&self, id: &str, options: ReadOptions) -> dcb::Result<Vec<AggregateEvent>> {
        let events = self.inner.select_events(id, options).await?;
        self.read.fetch_add(events.len(), Ordering::SeqCst);
        Ok(events)
    }

    async fn count(&self) -> dcb::Result<u64> {
        self.inner.count().await
    }
}

/// Loading from a snapshot gives the same state and version as replaying every event, and reads
/// only the events after the snapshot.
pub async fn aggregates_load_from_snapshot_equals_replay<S: EventStore>(store: S) {
    let every = NonZeroU64::new(3).unwrap();
    let snapshots = Counting::new(DcbRecorder::with_prefix(store.clone(), "snapshot:"));
    let recorder = Counting::new(DcbRecorder::new(store.clone()));
    let with_snapshots = Repository::new(recorder.clone()).with_snapshots(snapshots.clone(), every);
    let replaying = Repository::new(DcbRecorder::new(store));

    let mut student = Root::<Student>::new("student-1");
    student.record(StudentEvent::Registered { name: "Sara".into(), max_courses: 100 });
    with_snapshots.save(&mut student).await.unwrap();
    // The events after the latest snapshot, per round: versions 3 (snapshot 3), 5 (3), 7 (7),
    // 9 (9) and 11 (9).
    let unsnapshotted = [0, 2, 0, 0, 2];
    for round in 0..5 {
        // Two events per save, so some saves cross a multiple of `every` without landing on it.
        let mut loaded = with_snapshots.get::<Student>("student-1").await.unwrap();
        for course in 0..2 {
            let id = format!("course-{round}-{course}");
            loaded.execute(|s| s.join(&id)).unwrap();
        }
        with_snapshots.save(&mut loaded).await.unwrap();

        recorder.take();
        let from_snapshot = with_snapshots.get::<Student>("student-1").await.unwrap();
        assert_eq!(recorder.take(), unsnapshotted[round as usize], "round {round}: events read");
        let replayed = replaying.get::<Student>("student-1").await.unwrap();
        assert_eq!(from_snapshot.state(), replayed.state());
        assert_eq!(from_snapshot.version(), replayed.version());
        assert_eq!(replayed.version(), 3 + 2 * round);
    }
    let latest =
        snapshots.select_events("student-1", ReadOptions::default().backwards().limit(1)).await.unwrap();
    // Saves ended at versions 1, 3, 5, 7, 9, 11: snapshots at 3, 7 (crossing 6) and 9, none at 11.
    assert_eq!(latest[0].version, 9);
    let snapshot: Student = codec::from_json("snapshot", &latest[0].data).unwrap();
    assert_eq!(snapshot.courses.len(), 8);
}

/// Aggregate events in a DCB store are tagged with the aggregate id, so DCB queries see them.
pub async fn aggregates_share_the_store_with_dcb_queries<S: EventStore>(store: S) {
    let repository = Repository::new(DcbRecorder::new(store.clone()));
    register_aggregates(&repository, &["sara"], &[("french", 5)]).await;
    join_with_aggregates(&repository, "sara", "french").await.unwrap();
    let read = store.read(&QueryItem::tags(["french"]).into(), ReadOptions::default()).await.unwrap();
    let types: Vec<_> = read.events.iter().map(|e| e.event.event_type.as_str()).collect();
    assert_eq!(types, ["Course.Registered", "Course.StudentJoined"]);
    let recorded: CourseEvent = codec::from_event(&read.events[1].event).unwrap();
    assert_eq!(recorded, CourseEvent::StudentJoined { student: "sara".into() });
}

async fn register<S: EventStore>(dcb: &Dcb<S>, students: &[&str], courses: &[(&str, usize)]) {
    let mut events = Vec::new();
    for student in students {
        events.push(Ev::StudentRegistered {
            student: (*student).into(),
            name: student.to_uppercase(),
            max_courses: 3,
        });
    }
    for (course, places) in courses {
        events.push(Ev::CourseRegistered {
            course: (*course).into(),
            name: course.to_uppercase(),
            places: *places,
        });
    }
    dcb.append(&events, None).await.unwrap();
}

async fn course_students<S: EventStore>(store: &S, course: &str) -> Vec<String> {
    let objects = Objects::new(store.clone());
    objects.get::<CourseObject>(course).await.unwrap().students.clone()
}

/// The seed's test case, in one style: `join` is that style's join command.
async fn seed_case<S, F, Fut>(store: &S, join: F)
where
    S: EventStore,
    F: Fn(&'static str, &'static str) -> Fut,
    Fut: Future<Output = Result<(), EnrolmentError>>,
{
    let courses = ["dcb", "maths", "biology", "french", "spanish"];
    let students = ["sara", "mollie", "allard", "grace", "bastian", "greg", "katherine"];
    let dcb = Dcb::new(store.clone());
    register(&dcb, &students, &courses.map(|c| (c, 5))).await;
    for student in &students[..5] {
        join(student, "dcb").await.unwrap();
    }
    expect_refusal(join("greg", "dcb").await, "FullyBooked");
    // Already joined wins over fully booked, in every style.
    expect_refusal(join("sara", "dcb").await, "AlreadyJoined");
    for course in ["french", "spanish", "maths"] {
        join("greg", course).await.unwrap();
    }
    expect_refusal(join("greg", "biology").await, "TooManyCourses");
    join("katherine", "french").await.unwrap();
    expect_refusal(join("katherine", "french").await, "AlreadyJoined");
    expect_refusal(join("grace", "nothing").await, "CourseNotFound");
    expect_refusal(join("nobody", "dcb").await, "StudentNotFound");
    assert_eq!(course_students(store, "dcb").await, ["sara", "mollie", "allard", "grace", "bastian"]);
    assert_eq!(course_students(store, "french").await, ["greg", "katherine"]);
    let greg = Objects::new(store.clone()).get::<StudentObject>("greg").await.unwrap();
    assert_eq!(greg.courses, ["french", "spanish", "maths"]);
}

/// The plain style passes the seed's test case.
pub async fn plain_decisions_enforce_the_rules<S: EventStore>(store: S) {
    let dcb = Dcb::new(store.clone());
    seed_case(&store, |s, c| join_plain(&dcb, s, c)).await;
}

/// A change inside a plain decision's boundary between its read and its append fails the
/// append, writing nothing.
pub async fn plain_concurrent_change_inside_the_boundary_fails<S: EventStore>(store: S) {
    let dcb = Dcb::new(store.clone());
    register(&dcb, &["sara", "bastian"], &[("french", 5)]).await;
    let (student, course) = ("sara", "french");
    let query = JoinCourse { student, course }.query();
    let decision =
        dcb.read(query, |state: &mut JoinState, event| state.apply(student, course, event)).await.unwrap();
    let events = decision.state.decide(student, course).unwrap();

    join_plain(&dcb, "bastian", "french").await.unwrap();
    let head = store.head().await.unwrap();
    expect_conflict(dcb.append(&events, decision.condition).await);
    assert_eq!(store.head().await.unwrap(), head);
    assert_eq!(course_students(&store, "french").await, ["bastian"]);
}

fn interloper(n: u32) -> dcb::Event {
    codec::to_event(&Ev::StudentJoinedCourse { student: format!("interloper-{n}"), course: "french".into() })
        .unwrap()
}

/// Retries: a conflict is retried up to the bound, then surfaced; refusals are never retried.
pub async fn plain_retries_conflicts_only_and_boundedly<S: EventStore>(store: S) {
    let base = Dcb::new(store.clone());
    register(&base, &["sara", "mollie", "greg"], &[("french", 10)]).await;

    let calls = AtomicU32::new(0);
    let join = |dcb: &Dcb<Interfering<S>>, student: &'static str| {
        let query = JoinCourse { student, course: "french" }.query();
        let calls = &calls;
        let dcb = dcb.clone();
        async move {
            dcb.decide(
                query,
                |state: &mut JoinState, event| state.apply(student, "french", event),
                |state| {
                    calls.fetch_add(1, Ordering::SeqCst);
                    state.decide(student, "french")
                },
            )
            .await
        }
    };

    // One conflict, one retry allowed: decided twice, then recorded.
    let once = Dcb::new(Interfering::new(store.clone(), interloper(1), 1)).retry_on_conflict(1);
    join(&once, "sara").await.unwrap();
    assert_eq!(calls.swap(0, Ordering::SeqCst), 2);

    // Conflicts every time: three attempts, then the last conflict is the error.
    let always = Dcb::new(Interfering::new(store.clone(), interloper(2), u32::MAX)).retry_on_conflict(2);
    let error = join(&always, "mollie").await.unwrap_err();
    assert!(error.is_integrity(), "{error:?}");
    assert_eq!(calls.swap(0, Ordering::SeqCst), 3);

    // A refusal is final at once, even with retries left.
    let refusing = Dcb::new(Interfering::new(store.clone(), interloper(3), 0)).retry_on_conflict(5);
    expect_refusal(join(&refusing, "sara").await.map(|_| ()), "AlreadyJoined");
    assert_eq!(calls.swap(0, Ordering::SeqCst), 1);

    // Without retries, a conflict is surfaced at once.
    let none = Dcb::new(Interfering::new(store.clone(), interloper(4), 1));
    assert!(join(&none, "greg").await.unwrap_err().is_integrity());
    assert_eq!(calls.swap(0, Ordering::SeqCst), 1);

    let students = course_students(&store, "french").await;
    assert_eq!(
        students,
        ["interloper-1", "sara", "interloper-2", "interloper-2", "interloper-2", "interloper-4"]
    );
}

/// Objects are loaded alone, several at once, or as a group; saved alone or as a group.
pub async fn objects_get_get_many_group_and_save<S: EventStore>(store: S) {
    let objects = Objects::new(store.clone());
    let mut sara = Tagged::<StudentObject>::new("sara");
    sara.record(Ev::StudentRegistered { student: "sara".into(), name: "Sara".into(), max_courses: 2 });
    assert_eq!(objects.save(&mut sara).await.unwrap(), Some(1));
    assert!(!sara.is_new() && sara.pending().is_empty());
    for (course, name) in [("maths", "Maths"), ("french", "French")] {
        let mut object = Tagged::<CourseObject>::new(course);
        object
            .execute(|_| {
                Ok::<_, Error>(Ev::CourseRegistered { course: course.into(), name: name.into(), places: 1 })
            })
            .unwrap();
        objects.save(&mut object).await.unwrap();
    }
    // Registering an id again conflicts with the first registration.
    let mut again = Tagged::<CourseObject>::new("maths");
    again.record(Ev::CourseRenamed { course: "maths".into(), name: "again".into() });
    expect_conflict(objects.save(&mut again).await);

    let mut group = objects.get_group::<(StudentObject, CourseObject)>(["sara", "french"]).await.unwrap();
    assert_eq!(group.members.0.name, "Sara");
    assert_eq!(group.members.1.places, 1);
    group.record(Ev::StudentJoinedCourse { student: "sara".into(), course: "french".into() });
    assert_eq!(group.members.1.students, ["sara"]);
    // The save reports where its event landed: the store's last position.
    let saved = objects.save(&mut group).await.unwrap();
    assert_eq!(saved, store.head().await.unwrap());
    assert_eq!(objects.save(&mut group).await.unwrap(), None);

    let courses = objects.get_many::<CourseObject>(&["french", "maths"]).await.unwrap();
    let names: Vec<_> = courses.iter().map(|c| c.name.as_str()).collect();
    assert_eq!(names, ["French", "Maths"]);
    assert_eq!(courses[0].students, ["sara"]);
    assert!(courses[1].students.is_empty());
    assert!(objects.get_many::<CourseObject>(&[]).await.unwrap().is_empty());
    match objects.get_many::<CourseObject>(&["maths", "nothing"]).await {
        Err(Error::NotFound { id }) => assert_eq!(id, "nothing"),
        other => panic!("expected not found, got {other:?}"),
    }
    assert!(objects.get::<CourseObject>("nothing").await.unwrap_err().is_not_found());

    // An object loaded with others can be saved alone: each keeps the head of the shared read.
    let mut maths = courses.into_iter().nth(1).unwrap();
    maths.record(Ev::CourseRenamed { course: "maths".into(), name: "Algebra".into() });
    objects.save(&mut maths).await.unwrap();
    assert_eq!(objects.get::<CourseObject>("maths").await.unwrap().name, "Algebra");

    let group = objects
        .get_group::<(StudentObject, CourseObject, CourseObject)>(["sara", "maths", "nothing"])
        .await
        .unwrap();
    let (student, maths, nothing) = &group.members;
    assert_eq!(student.courses, ["french"]);
    assert!(!maths.is_new() && nothing.is_new());
}

/// A change to one member of a group between its read and its save fails the save.
pub async fn objects_concurrent_change_inside_the_group_fails<S: EventStore>(store: S) {
    let objects = Objects::new(store.clone());
    register(&Dcb::new(store.clone()), &["sara", "bastian"], &[("french", 5)]).await;
    let mut group = objects.get_group::<(StudentObject, CourseObject)>(["sara", "french"]).await.unwrap();
    group.record(Ev::StudentJoinedCourse { student: "sara".into(), course: "french".into() });

    join_with_objects(&objects, "bastian", "french").await.unwrap();
    let head = store.head().await.unwrap();
    expect_conflict(objects.save(&mut group).await);
    assert_eq!(store.head().await.unwrap(), head);
    assert_eq!(course_students(&store, "french").await, ["bastian"]);
    // The single-object form conflicts the same way.
    let mut sara = objects.get::<StudentObject>("sara").await.unwrap();
    sara.record(Ev::StudentJoinedCourse { student: "sara".into(), course: "maths".into() });
    join_with_objects(&objects, "sara", "french").await.unwrap();
    expect_conflict(objects.save(&mut sara).await);
}

/// Objects and groups pass the seed's test case.
pub async fn objects_enforce_the_rules<S: EventStore>(store: S) {
    let objects = Objects::new(store.clone());
    seed_case(&store, |s, c| join_with_objects(&objects, s, c)).await;
}

/// Retries of [`Objects::update_group`]: conflicts only, bounded.
pub async fn objects_retry_conflicts_only_and_boundedly<S: EventStore>(store: S) {
    register(&Dcb::new(store.clone()), &["sara", "mollie"], &[("french", 10)]).await;
    let once = Objects::new(Interfering::new(store.clone(), interloper(1), 1)).retry_on_conflict(1);
    join_with_objects(&once, "sara", "french").await.unwrap();
    let always = Objects::new(Interfering::new(store.clone(), interloper(2), u32::MAX)).retry_on_conflict(2);
    let error = join_with_objects(&always, "mollie", "french").await.unwrap_err();
    assert!(error.is_integrity(), "{error:?}");
    let refusing = Objects::new(Interfering::new(store.clone(), interloper(3), 1)).retry_on_conflict(5);
    expect_refusal(join_with_objects(&refusing, "sara", "french").await, "AlreadyJoined");
    assert_eq!(refusing.store().left(), 1, "a refusal reached the store");
    assert_eq!(
        course_students(&store, "french").await,
        ["interloper-1", "sara", "interloper-2", "interloper-2", "interloper-2"]
    );
}

/// Slices pass the seed's test case.
pub async fn slices_enforce_the_rules<S: EventStore>(store: S) {
    let dcb = Dcb::new(store.clone());
    seed_case(&store, |student, course| {
        let dcb = dcb.clone();
        async move {
            dcb.execute(&JoinCourse { student, course }).await?;
            Ok(())
        }
    })
    .await;
}

/// A change inside a slice's boundary fails its append; one outside (a rename) does not.
pub async fn slices_conflict_inside_the_boundary_only<S: EventStore>(store: S) {
    let dcb = Dcb::new(store.clone());
    register(&dcb, &["sara", "bastian"], &[("french", 5)]).await;
    let join = JoinCourse { student: "sara", course: "french" };

    let decision = dcb.load(&join).await.unwrap();
    dcb.append(&[Ev::CourseRenamed { course: "french".into(), name: "Français".into() }], None)
        .await
        .unwrap();
    let events = join.decide(&decision.state).unwrap();
    dcb.append(&events, decision.condition).await.unwrap();
    assert_eq!(course_students(&store, "french").await, ["sara"]);

    let bastian = JoinCourse { student: "bastian", course: "french" };
    let decision = dcb.load(&bastian).await.unwrap();
    dcb.execute(&JoinCourse { student: "bastian", course: "french" }).await.unwrap();
    let events = bastian.decide(&decision.state).unwrap();
    let head = store.head().await.unwrap();
    expect_conflict(dcb.append(&events, decision.condition).await);
    assert_eq!(store.head().await.unwrap(), head);
    assert_eq!(course_students(&store, "french").await, ["sara", "bastian"]);
}

/// Retries of [`Dcb::execute`]: conflicts only, bounded.
pub async fn slices_retry_conflicts_only_and_boundedly<S: EventStore>(store: S) {
    let base = Dcb::new(store.clone());
    register(&base, &["sara", "mollie"], &[("french", 10)]).await;
    let join = |student| JoinCourse { student, course: "french" };
    let once = Dcb::new(Interfering::new(store.clone(), interloper(1), 1)).retry_on_conflict(1);
    once.execute(&join("sara")).await.unwrap();
    let always = Dcb::new(Interfering::new(store.clone(), interloper(2), u32::MAX)).retry_on_conflict(2);
    let error = always.execute(&join("mollie")).await.unwrap_err();
    assert!(error.is_integrity(), "{error:?}");
    let refusing = Dcb::new(Interfering::new(store.clone(), interloper(3), 1)).retry_on_conflict(5);
    let refused = refusing.execute(&join("sara")).await.map(|_| ());
    expect_refusal(refused, "AlreadyJoined");
    assert_eq!(refusing.store().left(), 1, "a refusal reached the store");
    assert_eq!(
        course_students(&store, "french").await,
        ["interloper-1", "sara", "interloper-2", "interloper-2", "interloper-2"]
    );
}

/// Many tasks joining one course at once, in each DCB style with retries: exactly as many join as
/// there are places, the others are refused as fully booked, and the course's history agrees.
pub async fn concurrent_joins_never_overbook<S: EventStore>(store: S) {
    const STUDENTS: usize = 12;
    const PLACES: usize = 5;
    let students: Vec<String> = (0..STUDENTS).map(|i| format!("student-{i}")).collect();
    let names: Vec<&str> = students.iter().map(String::as_str).collect();
    let styles = ["plain", "slices", "objects"];
    let courses = styles.map(|style| (style, PLACES));
    register(&Dcb::new(store.clone()), &names, &courses).await;

    for style in styles {
        let mut tasks = Vec::new();
        for student in &students {
            let (store, student) = (store.clone(), student.clone());
            tasks.push(tokio::spawn(async move {
                let retries = STUDENTS as u32;
                match style {
                    "plain" => join_plain(&Dcb::new(store).retry_on_conflict(retries), &student, style).await,
                    "slices" => Dcb::new(store)
                        .retry_on_conflict(retries)
                        .execute(&JoinCourse { student: &student, course: style })
                        .await
                        .map(|_| ()),
                    _ => {
                        let objects = Objects::new(store).retry_on_conflict(retries);
                        join_with_objects(&objects, &student, style).await
                    }
                }
            }));
        }
        let mut joined = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(()) => joined += 1,
                Err(EnrolmentError::FullyBooked) => {}
                Err(other) => panic!("{style}: unexpected {other:?}"),
            }
        }
        assert_eq!(joined, PLACES, "{style}: joins acknowledged");
        assert_eq!(course_students(&store, style).await.len(), PLACES, "{style}: joins recorded");
    }
}

/// Stored type names are the pinned ones, and an event stored in an older version is read as the
/// current version.
pub async fn upcast_old_stored_events_on_read<S: EventStore>(store: S) {
    use serde::{Deserialize, Serialize};

    /// Version 2 of a course registration added `places`; version 1 events get 10.
    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    enum Registered {
        #[serde(rename = "CourseRegistered.v2")]
        V2 { course: String, places: usize },
    }

    impl crate::DomainEvent for Registered {
        fn upcast(event_type: &str, data: &[u8]) -> crate::Result<Option<Self>> {
            #[derive(Deserialize)]
            struct V1 {
                course: String,
            }
            if event_type != "CourseRegistered" {
                return Ok(None);
            }
            let V1 { course } = codec::from_json(event_type, data)?;
            Ok(Some(Registered::V2 { course, places: 10 }))
        }
    }

    assert_eq!(codec::event_types::<Ev>(), Ev::TYPES);
    assert_eq!(codec::event_types::<StudentEvent>(), ["Student.Registered", "Student.JoinedCourse"]);
    // Stored by an older version of the application, as it wrote it then.
    let old = dcb::Event::new("CourseRegistered", r#"{"course":"french"}"#).tagged("french");
    store.append(vec![old], None).await.unwrap();
    let dcb = Dcb::new(store.clone());
    dcb.append(&[Registered::V2 { course: "maths".into(), places: 3 }], None).await.unwrap();
    let all = dcb
        .read(
            Query::from(QueryItem::types(["CourseRegistered", "CourseRegistered.v2"])),
            |seen: &mut Vec<Registered>, event: &Registered| {
                seen.push(match event {
                    Registered::V2 { course, places } => {
                        Registered::V2 { course: course.clone(), places: *places }
                    }
                })
            },
        )
        .await
        .unwrap();
    assert_eq!(
        all.state,
        [
            Registered::V2 { course: "french".into(), places: 10 },
            Registered::V2 { course: "maths".into(), places: 3 },
        ]
    );
}
