//! The given/when/then harness on the join use case.

use eventsourcing::harness::given;
use eventsourcing::testkit::domain::{EnrolmentError, Ev, JoinCourse};

fn student(id: &str, max_courses: usize) -> Ev {
    Ev::StudentRegistered { student: id.into(), name: id.to_uppercase(), max_courses }
}

fn course(id: &str, places: usize) -> Ev {
    Ev::CourseRegistered { course: id.into(), name: id.to_uppercase(), places }
}

fn joined(student: &str, course: &str) -> Ev {
    Ev::StudentJoinedCourse { student: student.into(), course: course.into() }
}

#[test]
fn a_registered_student_joins_a_course_with_places() {
    given([student("sara", 3), course("french", 1)])
        .when(&JoinCourse { student: "sara", course: "french" })
        .then([joined("sara", "french")]);
}

#[test]
fn events_outside_the_boundary_are_not_folded() {
    // Other students and courses, their joins and renames are outside the join's query. Folded,
    // they would refuse the join: the places of maths (none yet) would be taken for French's.
    given([
        student("sara", 1),
        course("french", 1),
        student("greg", 1),
        course("spanish", 1),
        joined("greg", "spanish"),
        course("maths", 0),
        Ev::CourseRenamed { course: "french".into(), name: "Français".into() },
    ])
    .when(&JoinCourse { student: "sara", course: "french" })
    .then([joined("sara", "french")]);
}

#[test]
fn refusals_follow_the_rules_and_not_found_wins() {
    let full = [student("sara", 3), student("greg", 3), course("dcb", 1), joined("greg", "dcb")];
    let refusal = given(full.clone()).when(&JoinCourse { student: "sara", course: "dcb" }).then_refused();
    assert!(matches!(refusal, EnrolmentError::FullyBooked), "{refusal:?}");
    let refusal = given(full).when(&JoinCourse { student: "nobody", course: "dcb" }).then_refused();
    assert!(matches!(refusal, EnrolmentError::StudentNotFound), "{refusal:?}");
    let busy = [student("greg", 1), course("french", 5), course("maths", 5), joined("greg", "maths")];
    let refusal = given(busy).when(&JoinCourse { student: "greg", course: "french" }).then_refused();
    assert!(matches!(refusal, EnrolmentError::TooManyCourses), "{refusal:?}");
}
