//! The checks every implementation passes on every store: the challenge's test case, leaving a
//! course, and a real race of concurrent clients. Each takes a fresh application.

use std::collections::{BTreeMap, BTreeSet};

use dcb::EventStore;
use dcb::recorder::AggregateRecorder;
use eventsourcing::Slice;

use crate::events::{Event, Membership};
use crate::{
    CourseId, Enrolment, EnrolmentError, EnrolmentWithAggregates, EnrolmentWithDecisions,
    EnrolmentWithObjects, EnrolmentWithSlices, StudentId, aggregates, objects, slices,
};

/// Fails with a message naming `what` unless `result` is the error `expected` describes.
fn assert_refused<T: std::fmt::Debug>(
    result: Result<T, EnrolmentError>,
    expected: fn(&EnrolmentError) -> bool,
    what: &str,
) {
    match result {
        Err(error) if expected(&error) => {}
        other => panic!("{what}: got {other:?}"),
    }
}

/// The challenge's test case, step by step.
pub async fn enrolment_test_case<E: Enrolment>(app: &E) {
    let course = |name: &'static str| async move { app.register_course(name, 5).await.unwrap() };
    let dcb = course("Dynamic Consistency Boundaries").await;
    let maths = course("Maths").await;
    let biology = course("Biology").await;
    let french = course("French").await;
    let spanish = course("Spanish").await;

    let student = |name: &'static str| async move { app.register_student(name, 3).await.unwrap() };
    let sara = student("Sara").await;
    let mollie = student("Mollie").await;
    let allard = student("Allard").await;
    let grace = student("Grace").await;
    let bastian = student("Bastian").await;
    let greg = student("Greg").await;
    let katherine = student("Katherine").await;

    for student in [&sara, &mollie, &allard, &grace, &bastian] {
        app.join_course(student, &dcb).await.unwrap();
    }
    assert_refused(
        app.join_course(&greg, &dcb).await,
        |e| matches!(e, EnrolmentError::FullyBooked),
        "a sixth student",
    );

    for course in [&french, &spanish, &maths] {
        app.join_course(&greg, course).await.unwrap();
    }
    let fourth = app.join_course(&greg, &biology).await;
    assert_refused(fourth, |e| matches!(e, EnrolmentError::TooManyCourses), "a fourth course");

    app.join_course(&katherine, &french).await.unwrap();
    let again = app.join_course(&katherine, &french).await;
    assert_refused(again, |e| matches!(e, EnrolmentError::AlreadyJoined), "joining twice");

    let unknown_course = app.join_course(&grace, &CourseId::generate()).await;
    assert_refused(unknown_course, |e| matches!(e, EnrolmentError::CourseNotFound(_)), "an unknown course");
    // The course is full too, but an unknown student is reported first.
    let unknown_student = app.join_course(&StudentId::generate(), &dcb).await;
    assert_refused(
        unknown_student,
        |e| matches!(e, EnrolmentError::StudentNotFound(_)),
        "an unknown student",
    );

    assert_eq!(
        app.list_students_for_course(&dcb).await.unwrap(),
        ["Sara", "Mollie", "Allard", "Grace", "Bastian"]
    );
    assert_eq!(app.list_students_for_course(&french).await.unwrap(), ["Greg", "Katherine"]);
    assert_eq!(app.list_courses_for_student(&sara).await.unwrap(), ["Dynamic Consistency Boundaries"]);
    assert_eq!(app.list_courses_for_student(&greg).await.unwrap(), ["French", "Spanish", "Maths"]);
    assert!(app.list_students_for_course(&biology).await.unwrap().is_empty());
    let missing = app.list_students_for_course(&CourseId::generate()).await;
    assert_refused(missing, |e| matches!(e, EnrolmentError::CourseNotFound(_)), "listing an unknown course");
    let missing = app.list_courses_for_student(&StudentId::generate()).await;
    assert_refused(
        missing,
        |e| matches!(e, EnrolmentError::StudentNotFound(_)),
        "listing an unknown student",
    );
}

/// Leaving frees a place and a course slot, and joining again puts the student at the end of the
/// course's list; leaving a course not joined is refused; invalid registrations are refused.
pub async fn leaving_a_course_frees_a_place<E: Enrolment>(app: &E) {
    let course = app.register_course("Chess", 1).await.unwrap();
    let ada = app.register_student("Ada", 1).await.unwrap();
    let bob = app.register_student("Bob", 1).await.unwrap();
    app.join_course(&ada, &course).await.unwrap();
    assert_refused(
        app.join_course(&bob, &course).await,
        |e| matches!(e, EnrolmentError::FullyBooked),
        "full",
    );
    let not_joined = app.leave_course(&bob, &course).await;
    assert_refused(
        not_joined,
        |e| matches!(e, EnrolmentError::NotAlreadyJoined),
        "leaving a course not joined",
    );
    app.leave_course(&ada, &course).await.unwrap();
    assert!(app.list_students_for_course(&course).await.unwrap().is_empty());
    assert!(app.list_courses_for_student(&ada).await.unwrap().is_empty());
    app.join_course(&bob, &course).await.unwrap();
    // Ada's one course slot is free again too.
    let other = app.register_course("Go", 2).await.unwrap();
    app.join_course(&ada, &other).await.unwrap();
    assert_eq!(app.list_students_for_course(&course).await.unwrap(), ["Bob"]);
    assert_eq!(app.list_courses_for_student(&ada).await.unwrap(), ["Go"]);
    // Leaving and joining the same course again puts her after those who joined meanwhile.
    let dee = app.register_student("Dee", 1).await.unwrap();
    app.join_course(&dee, &other).await.unwrap();
    app.leave_course(&ada, &other).await.unwrap();
    app.join_course(&ada, &other).await.unwrap();
    assert_eq!(app.list_students_for_course(&other).await.unwrap(), ["Dee", "Ada"]);
    assert_eq!(app.list_courses_for_student(&ada).await.unwrap(), ["Go"]);

    let invalid = app.register_course("", 3).await;
    assert_refused(invalid, |e| matches!(e, EnrolmentError::Invalid(_)), "a course without a name");
    let invalid = app.register_student("Cy", 0).await;
    assert_refused(invalid, |e| matches!(e, EnrolmentError::Invalid(_)), "a student who may join no course");
}

/// More ids than one query may name, for [`listings_longer_than_one_query`].
pub const CROWD: usize = dcb::limits::MAX_QUERY_ITEMS + 76;

/// A course with [`CROWD`] students and a student in [`CROWD`] courses are listed whole, in join
/// order (the listings read names in several queries when one cannot hold them all).
pub async fn listings_longer_than_one_query<E: Enrolment>(app: &E) {
    let course = app.register_course("Lecture", CROWD as u32).await.unwrap();
    let keen = app.register_student("Keen", CROWD as u32).await.unwrap();
    let (mut students, mut courses) = (Vec::new(), Vec::new());
    for i in 0..CROWD {
        let name = format!("Student {i}");
        let student = app.register_student(&name, 1).await.unwrap();
        app.join_course(&student, &course).await.unwrap();
        students.push(name);
        let name = format!("Course {i}");
        let other = app.register_course(&name, 1).await.unwrap();
        app.join_course(&keen, &other).await.unwrap();
        courses.push(name);
    }
    assert_eq!(app.list_students_for_course(&course).await.unwrap(), students);
    assert_eq!(app.list_courses_for_student(&keen).await.unwrap(), courses);
}

/// Courses and places, students and limits, for the race.
const RACE_COURSES: usize = 3;
const RACE_PLACES: u32 = 4;
const RACE_STUDENTS: usize = 12;
const RACE_MAX_COURSES: u32 = 2;
/// How often a client tries a join again after its implementation gave up on conflicts.
const RACE_RETRIES: usize = 50;

/// Many clients (one handle each, e.g. each on its own connection) try to join every student to
/// every course at once. Afterwards no course has more students than places, no student more
/// courses than allowed, and every acknowledged join is recorded exactly once, in both listings.
pub async fn concurrent_joins_respect_every_limit<E: Enrolment>(clients: Vec<E>) {
    let setup = &clients[0].clone();
    let mut courses = Vec::new();
    for c in 0..RACE_COURSES {
        courses.push(setup.register_course(&format!("course {c}"), RACE_PLACES).await.unwrap());
    }
    let mut students = Vec::new();
    for s in 0..RACE_STUDENTS {
        students.push(setup.register_student(&format!("student {s}"), RACE_MAX_COURSES).await.unwrap());
    }
    let pairs: Vec<(usize, usize)> =
        (0..RACE_STUDENTS).flat_map(|s| (0..RACE_COURSES).map(move |c| (s, c))).collect();
    let mut tasks = Vec::new();
    for (index, client) in clients.into_iter().enumerate() {
        let (students, courses) = (students.clone(), courses.clone());
        // Each client walks the pairs from its own offset, so that clients collide often.
        let order: Vec<(usize, usize)> =
            (0..pairs.len()).map(|i| pairs[(i * 7 + index * 5) % pairs.len()]).collect();
        tasks.push(tokio::spawn(async move {
            let mut joined = Vec::new();
            for (s, c) in order {
                for attempt in 0.. {
                    match client.join_course(&students[s], &courses[c]).await {
                        Ok(()) => joined.push((s, c)),
                        Err(EnrolmentError::Store(error))
                            if error.is_integrity() && attempt < RACE_RETRIES =>
                        {
                            continue;
                        }
                        Err(
                            EnrolmentError::FullyBooked
                            | EnrolmentError::TooManyCourses
                            | EnrolmentError::AlreadyJoined,
                        ) => {}
                        Err(other) => panic!("join failed unexpectedly: {other}"),
                    }
                    break;
                }
            }
            joined
        }));
    }
    let mut acknowledged: BTreeSet<(usize, usize)> = BTreeSet::new();
    for task in tasks {
        for join in task.await.expect("client panicked") {
            assert!(acknowledged.insert(join), "join {join:?} acknowledged twice");
        }
    }
    let mut per_course: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    let mut per_student: BTreeMap<usize, BTreeSet<String>> = BTreeMap::new();
    for &(s, c) in &acknowledged {
        per_course.entry(c).or_default().insert(format!("student {s}"));
        per_student.entry(s).or_default().insert(format!("course {c}"));
    }
    for (c, course) in courses.iter().enumerate() {
        let listed = setup.list_students_for_course(course).await.unwrap();
        assert!(listed.len() <= RACE_PLACES as usize, "course {c} overbooked: {listed:?}");
        let unique: BTreeSet<String> = listed.iter().cloned().collect();
        assert_eq!(unique.len(), listed.len(), "course {c} lists a student twice: {listed:?}");
        assert_eq!(
            unique,
            per_course.remove(&c).unwrap_or_default(),
            "course {c} differs from the acknowledged joins"
        );
    }
    for (s, student) in students.iter().enumerate() {
        let listed = setup.list_courses_for_student(student).await.unwrap();
        assert!(listed.len() <= RACE_MAX_COURSES as usize, "student {s} over their limit: {listed:?}");
        let unique: BTreeSet<String> = listed.iter().cloned().collect();
        assert_eq!(unique.len(), listed.len(), "student {s} lists a course twice: {listed:?}");
        assert_eq!(
            unique,
            per_student.remove(&s).unwrap_or_default(),
            "student {s} differs from the acknowledged joins"
        );
    }
    // With 12 places for 12 students allowed 2 each, the race must have filled every course.
    assert_eq!(acknowledged.len(), RACE_COURSES * RACE_PLACES as usize, "some places were never taken");
}

/// Registers French (5 places) and the students Sara and Bastian.
async fn french_sara_bastian<E: Enrolment>(app: &E) -> (CourseId, StudentId, StudentId) {
    let french = app.register_course("French", 5).await.unwrap();
    let sara = app.register_student("Sara", 3).await.unwrap();
    let bastian = app.register_student("Bastian", 3).await.unwrap();
    (french, sara, bastian)
}

fn assert_conflict<T: std::fmt::Debug>(result: Result<T, impl Into<EnrolmentError>>, what: &str) {
    match result.map_err(Into::into) {
        Err(EnrolmentError::Store(error)) if error.is_integrity() => {}
        other => panic!("{what}: expected an integrity error, got {other:?}"),
    }
}

/// The challenge's consistency test: Sara's join of French is decided on a student and a course
/// loaded before Bastian joined French; saving both aggregates then fails whole, writing neither.
pub async fn aggregates_stale_save_fails_whole<R: AggregateRecorder>(app: &EnrolmentWithAggregates<R>) {
    let (french, sara, bastian) = french_sara_bastian(app).await;
    let repository = app.repository();
    let mut student = repository.get::<aggregates::Student>(sara.as_str()).await.unwrap();
    let mut course = repository.get::<aggregates::Course>(french.as_str()).await.unwrap();
    course.execute(|c| c.accept(&sara)).unwrap();
    student.execute(|s| s.join(&french)).unwrap();

    app.join_course(&bastian, &french).await.unwrap();

    assert_conflict(repository.save_all(&mut [&mut student, &mut course]).await, "stale save");
    assert_eq!(app.list_students_for_course(&french).await.unwrap(), ["Bastian"]);
    assert!(app.list_courses_for_student(&sara).await.unwrap().is_empty(), "the student's event was written");
}

/// A plain decision read before a concurrent join inside its boundary fails to append.
pub async fn decisions_stale_join_conflicts<S: EventStore>(app: &EnrolmentWithDecisions<S>) {
    let (french, sara, bastian) = french_sara_bastian(app).await;
    let boundary = EnrolmentWithDecisions::<S>::boundary(&sara, &french);
    let fold = |m: &mut Membership, e: &Event| m.apply(sara.as_str(), french.as_str(), e);
    let decision = app.dcb().read(boundary, fold).await.unwrap();
    let join = decision.state.join(&sara, &french).unwrap();

    app.join_course(&bastian, &french).await.unwrap();

    assert_conflict(app.dcb().append(&[join], decision.condition).await, "stale decision");
    assert_eq!(app.list_students_for_course(&french).await.unwrap(), ["Bastian"]);
}

/// A group of objects loaded before a concurrent join of one member fails to save.
pub async fn objects_stale_group_conflicts<S: EventStore>(app: &EnrolmentWithObjects<S>) {
    let (french, sara, bastian) = french_sara_bastian(app).await;
    let ids = [sara.as_str(), french.as_str()];
    let mut group = app.objects().get_group::<(objects::Student, objects::Course)>(ids).await.unwrap();
    group.record(Event::StudentJoinedCourse { student_id: sara.to_string(), course_id: french.to_string() });

    app.join_course(&bastian, &french).await.unwrap();

    assert_conflict(app.objects().save(&mut group).await, "stale group");
    assert_eq!(app.list_students_for_course(&french).await.unwrap(), ["Bastian"]);
}

/// A join slice conflicts with a concurrent join of the same course (inside its boundary), but
/// not with a concurrent rename of the course (outside it).
pub async fn slices_conflict_inside_not_outside<S: EventStore>(app: &EnrolmentWithSlices<S>) {
    let (french, sara, bastian) = french_sara_bastian(app).await;
    let join = slices::JoinCourse { student: &sara, course: &french, leave: false };

    let decision = app.dcb().load(&join).await.unwrap();
    app.rename_course(&french, "Français").await.unwrap();
    let events = join.decide(&decision.state).unwrap();
    app.dcb().append(&events, decision.condition).await.expect("a rename is outside the join's boundary");

    let late = slices::JoinCourse { student: &bastian, course: &french, leave: false };
    let decision = app.dcb().load(&late).await.unwrap();
    app.leave_course(&sara, &french).await.unwrap();
    let events = late.decide(&decision.state).unwrap();
    assert_conflict(
        app.dcb().append(&events, decision.condition).await,
        "a leave is inside the join's boundary",
    );

    assert!(app.list_students_for_course(&french).await.unwrap().is_empty());
    assert!(app.list_courses_for_student(&sara).await.unwrap().is_empty());
    app.join_course(&sara, &french).await.unwrap();
    assert_eq!(app.list_courses_for_student(&sara).await.unwrap(), ["Français"]);
}

/// Concurrent clients of the race, per style.
pub const RACE_CLIENTS: usize = 32;
/// Retries each implementation makes on its own before the race's clients retry.
pub const RETRIES: u32 = 10;

/// Instantiates every check of this module for every style on one store, as `#[tokio::test]`s
/// grouped in a module per style. `store` makes a fresh, empty DCB store; `recorder` a fresh,
/// empty aggregate recorder. The calling crate needs `tokio` with `macros` and `rt-multi-thread`.
#[macro_export]
macro_rules! enrolment_tests {
    (store: $store:expr, recorder: $recorder:expr $(,)?) => {
        $crate::enrolment_tests!(@style aggregates, $recorder, $crate::EnrolmentWithAggregates::new,
            aggregates_stale_save_fails_whole);
        $crate::enrolment_tests!(@style decisions, $store, $crate::EnrolmentWithDecisions::new,
            decisions_stale_join_conflicts);
        $crate::enrolment_tests!(@style objects, $store, $crate::EnrolmentWithObjects::new,
            objects_stale_group_conflicts);
        $crate::enrolment_tests!(@style slices, $store, $crate::EnrolmentWithSlices::new,
            slices_conflict_inside_not_outside);
        $crate::enrolment_tests!(@style aggregates_cached, $recorder, $crate::EnrolmentWithAggregates::with_cache,
            aggregates_stale_save_fails_whole);
        $crate::enrolment_tests!(@style decisions_cached, $store, $crate::EnrolmentWithDecisions::with_cache,
            decisions_stale_join_conflicts);
        $crate::enrolment_tests!(@style objects_cached, $store, $crate::EnrolmentWithObjects::with_cache,
            objects_stale_group_conflicts);
        $crate::enrolment_tests!(@style slices_cached, $store, $crate::EnrolmentWithSlices::with_cache,
            slices_conflict_inside_not_outside);
    };
    (@style $style:ident, $make:expr, $new:path, $consistency:ident) => {
        mod $style {
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn enrolment_test_case() {
                let app = $new(($make)().await, $crate::testcase::RETRIES);
                $crate::testcase::enrolment_test_case(&app).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn leaving_a_course_frees_a_place() {
                let app = $new(($make)().await, $crate::testcase::RETRIES);
                $crate::testcase::leaving_a_course_frees_a_place(&app).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn concurrent_joins_respect_every_limit() {
                let app = $new(($make)().await, $crate::testcase::RETRIES);
                $crate::testcase::concurrent_joins_respect_every_limit(vec![app; $crate::testcase::RACE_CLIENTS]).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $consistency() {
                let app = $new(($make)().await, $crate::testcase::RETRIES);
                $crate::testcase::$consistency(&app).await;
            }
        }
    };
}
