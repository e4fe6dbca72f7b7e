//! A small course-subscriptions domain written in each style, used by the tests and showing what
//! application code looks like.

use dcb::recorder::AggregateRecorder;
use dcb::{EventStore, Query, QueryItem};
use serde::{Deserialize, Serialize};

use crate::codec;
use crate::{Aggregate, Dcb, DomainEvent, Error, Object, Objects, Repository, Slice};

/// Why a command was refused, or the layer below failed.
#[derive(Debug, thiserror::Error)]
pub enum EnrolmentError {
    /// The student has joined as many courses as allowed.
    #[error("too many courses")]
    TooManyCourses,
    /// The course has no place left.
    #[error("fully booked")]
    FullyBooked,
    /// The student is already on the course.
    #[error("already joined")]
    AlreadyJoined,
    /// No such student.
    #[error("student not found")]
    StudentNotFound,
    /// No such course.
    #[error("course not found")]
    CourseNotFound,
    /// The store or the mapping failed.
    #[error(transparent)]
    Application(#[from] Error),
}

impl EnrolmentError {
    /// Whether this is a conflict with a concurrent change.
    pub fn is_integrity(&self) -> bool {
        matches!(self, EnrolmentError::Application(e) if e.is_integrity())
    }
}

/// Maps a not-found error to `missing`, leaving other errors as they are.
fn or_missing(missing: EnrolmentError) -> impl FnOnce(Error) -> EnrolmentError {
    move |e| if e.is_not_found() { missing } else { e.into() }
}

// ---------------------------------------------------------------------------------------------
// Aggregates: a student and a course, each with its own events.

/// The events of a [`Student`] aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum StudentEvent {
    /// The student was registered.
    #[serde(rename = "Student.Registered")]
    Registered {
        /// The student's name.
        name: String,
        /// How many courses the student may join.
        max_courses: usize,
    },
    /// The student joined a course.
    #[serde(rename = "Student.JoinedCourse")]
    JoinedCourse {
        /// The course's id.
        course: String,
    },
}

impl DomainEvent for StudentEvent {}

/// A student, as an aggregate.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Student {
    /// The student's name.
    pub name: String,
    /// How many courses the student may join.
    pub max_courses: usize,
    /// The ids of the courses joined, in join order.
    pub courses: Vec<String>,
}

impl Aggregate for Student {
    type Event = StudentEvent;

    fn apply(&mut self, event: &StudentEvent) {
        match event {
            StudentEvent::Registered { name, max_courses } => {
                self.name.clone_from(name);
                self.max_courses = *max_courses;
            }
            StudentEvent::JoinedCourse { course } => self.courses.push(course.clone()),
        }
    }

    fn to_snapshot(&self) -> Option<crate::Result<Vec<u8>>> {
        Some(codec::to_json(self))
    }

    fn from_snapshot(data: &[u8]) -> crate::Result<Self> {
        codec::from_json("Student snapshot", data)
    }
}

impl Student {
    /// The command that joins `course`.
    pub fn join(&self, course: &str) -> Result<StudentEvent, EnrolmentError> {
        if self.courses.iter().any(|c| c == course) {
            return Err(EnrolmentError::AlreadyJoined);
        }
        if self.courses.len() >= self.max_courses {
            return Err(EnrolmentError::TooManyCourses);
        }
        Ok(StudentEvent::JoinedCourse { course: course.to_owned() })
    }
}

/// The events of a [`Course`] aggregate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CourseEvent {
    /// The course was registered.
    #[serde(rename = "Course.Registered")]
    Registered {
        /// The course's name.
        name: String,
        /// How many students may join.
        places: usize,
    },
    /// A student joined the course.
    #[serde(rename = "Course.StudentJoined")]
    StudentJoined {
        /// The student's id.
        student: String,
    },
}

impl DomainEvent for CourseEvent {}

/// A course, as an aggregate.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Course {
    /// The course's name.
    pub name: String,
    /// How many students may join.
    pub places: usize,
    /// The ids of the students who joined, in join order.
    pub students: Vec<String>,
}

impl Aggregate for Course {
    type Event = CourseEvent;

    fn apply(&mut self, event: &CourseEvent) {
        match event {
            CourseEvent::Registered { name, places } => {
                self.name.clone_from(name);
                self.places = *places;
            }
            CourseEvent::StudentJoined { student } => self.students.push(student.clone()),
        }
    }
}

impl Course {
    /// The command that lets `student` join.
    pub fn join(&self, student: &str) -> Result<CourseEvent, EnrolmentError> {
        // Checked here, before the places, although the student checks it too: every style
        // refuses a student already on a full course as already joined, not as fully booked.
        if self.students.iter().any(|s| s == student) {
            return Err(EnrolmentError::AlreadyJoined);
        }
        if self.students.len() >= self.places {
            return Err(EnrolmentError::FullyBooked);
        }
        Ok(CourseEvent::StudentJoined { student: student.to_owned() })
    }
}

/// Joins a course in the aggregate style: both aggregates record an event, saved atomically.
pub async fn join_with_aggregates<R: AggregateRecorder>(
    repository: &Repository<R>,
    student_id: &str,
    course_id: &str,
) -> Result<(), EnrolmentError> {
    let mut student =
        (repository.get::<Student>(student_id).await).map_err(or_missing(EnrolmentError::StudentNotFound))?;
    let mut course =
        (repository.get::<Course>(course_id).await).map_err(or_missing(EnrolmentError::CourseNotFound))?;
    course.execute(|c| c.join(student_id))?;
    student.execute(|s| s.join(course_id))?;
    repository.save_all(&mut [&mut student, &mut course]).await?;
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// DCB: one event type for the whole application, tagged with the ids each fact is about.

/// The application's events in the DCB styles.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Ev {
    /// A student was registered.
    #[serde(rename = "StudentRegistered")]
    StudentRegistered {
        /// The student's id.
        student: String,
        /// The student's name.
        name: String,
        /// How many courses the student may join.
        max_courses: usize,
    },
    /// A course was registered.
    #[serde(rename = "CourseRegistered")]
    CourseRegistered {
        /// The course's id.
        course: String,
        /// The course's name.
        name: String,
        /// How many students may join.
        places: usize,
    },
    /// A course was renamed.
    #[serde(rename = "CourseRenamed")]
    CourseRenamed {
        /// The course's id.
        course: String,
        /// The new name.
        name: String,
    },
    /// A student joined a course: one fact about both.
    #[serde(rename = "StudentJoinedCourse")]
    StudentJoinedCourse {
        /// The student's id.
        student: String,
        /// The course's id.
        course: String,
    },
}

impl Ev {
    /// The stored type names, pinned: changing one would orphan stored history.
    pub const TYPES: [&'static str; 4] =
        ["StudentRegistered", "CourseRegistered", "CourseRenamed", "StudentJoinedCourse"];
}

impl DomainEvent for Ev {
    fn tags(&self) -> Vec<String> {
        match self {
            Ev::StudentRegistered { student, .. } => vec![student.clone()],
            Ev::CourseRegistered { course, .. } | Ev::CourseRenamed { course, .. } => {
                vec![course.clone()]
            }
            Ev::StudentJoinedCourse { student, course } => vec![student.clone(), course.clone()],
        }
    }
}

/// What a join decision needs to know, in the plain and slice styles.
#[derive(Debug, Default)]
pub struct JoinState {
    /// Whether the student is registered.
    pub student_exists: bool,
    /// How many courses the student may join.
    pub max_courses: usize,
    /// How many courses the student has joined.
    pub student_courses: usize,
    /// Whether the course is registered.
    pub course_exists: bool,
    /// How many students may join the course.
    pub places: usize,
    /// How many students joined the course.
    pub course_students: usize,
    /// Whether this student already joined this course.
    pub already_joined: bool,
}

impl JoinState {
    /// Folds one event selected by [`JoinCourse::query`].
    pub fn apply(&mut self, student: &str, course: &str, event: &Ev) {
        match event {
            Ev::StudentRegistered { max_courses, .. } => {
                self.student_exists = true;
                self.max_courses = *max_courses;
            }
            Ev::CourseRegistered { places, .. } => {
                self.course_exists = true;
                self.places = *places;
            }
            Ev::StudentJoinedCourse { student: s, course: c } => {
                self.student_courses += usize::from(s == student);
                self.course_students += usize::from(c == course);
                self.already_joined |= s == student && c == course;
            }
            Ev::CourseRenamed { .. } => {}
        }
    }

    /// The join decision; not-found wins over every other rule.
    pub fn decide(&self, student: &str, course: &str) -> Result<Vec<Ev>, EnrolmentError> {
        if !self.student_exists {
            return Err(EnrolmentError::StudentNotFound);
        }
        if !self.course_exists {
            return Err(EnrolmentError::CourseNotFound);
        }
        if self.already_joined {
            return Err(EnrolmentError::AlreadyJoined);
        }
        if self.course_students >= self.places {
            return Err(EnrolmentError::FullyBooked);
        }
        if self.student_courses >= self.max_courses {
            return Err(EnrolmentError::TooManyCourses);
        }
        Ok(vec![Ev::StudentJoinedCourse { student: student.to_owned(), course: course.to_owned() }])
    }
}

/// The join use case as a slice: registrations and joins of this student and this course, and
/// nothing else (renames are outside its boundary).
#[derive(Debug)]
pub struct JoinCourse<'a> {
    /// The student's id.
    pub student: &'a str,
    /// The course's id.
    pub course: &'a str,
}

impl Slice for JoinCourse<'_> {
    type Event = Ev;
    type State = JoinState;
    type Error = EnrolmentError;

    fn query(&self) -> Query {
        Query::new([
            QueryItem::types(["StudentRegistered", "StudentJoinedCourse"]).and_tags([self.student]),
            QueryItem::types(["CourseRegistered", "StudentJoinedCourse"]).and_tags([self.course]),
        ])
    }

    fn apply(&self, state: &mut JoinState, event: &Ev) {
        state.apply(self.student, self.course, event);
    }

    fn decide(&self, state: &JoinState) -> Result<Vec<Ev>, EnrolmentError> {
        state.decide(self.student, self.course)
    }
}

/// Joins a course in the plain style: one query, one fold, one decision, one append.
pub async fn join_plain<S: EventStore>(
    dcb: &Dcb<S>,
    student: &str,
    course: &str,
) -> Result<(), EnrolmentError> {
    let query = JoinCourse { student, course }.query();
    dcb.decide(
        query,
        |state: &mut JoinState, event| state.apply(student, course, event),
        |state| state.decide(student, course),
    )
    .await?;
    Ok(())
}

/// A student as an enduring object, folded from every event tagged with its id.
#[derive(Debug, Default)]
pub struct StudentObject {
    /// The student's name.
    pub name: String,
    /// How many courses the student may join.
    pub max_courses: usize,
    /// The ids of the courses joined, in join order.
    pub courses: Vec<String>,
}

impl Object for StudentObject {
    type Event = Ev;

    fn apply(&mut self, event: &Ev) {
        match event {
            Ev::StudentRegistered { name, max_courses, .. } => {
                self.name.clone_from(name);
                self.max_courses = *max_courses;
            }
            Ev::StudentJoinedCourse { course, .. } => self.courses.push(course.clone()),
            Ev::CourseRegistered { .. } | Ev::CourseRenamed { .. } => {}
        }
    }
}

/// A course as an enduring object.
#[derive(Debug, Default)]
pub struct CourseObject {
    /// The course's name.
    pub name: String,
    /// How many students may join.
    pub places: usize,
    /// The ids of the students who joined, in join order.
    pub students: Vec<String>,
}

impl Object for CourseObject {
    type Event = Ev;

    fn apply(&mut self, event: &Ev) {
        match event {
            Ev::CourseRegistered { name, places, .. } => {
                self.name.clone_from(name);
                self.places = *places;
            }
            Ev::CourseRenamed { name, .. } => self.name.clone_from(name),
            Ev::StudentJoinedCourse { student, .. } => self.students.push(student.clone()),
            Ev::StudentRegistered { .. } => {}
        }
    }
}

/// Joins a course with objects: the student and the course decide together, as a group.
pub async fn join_with_objects<S: EventStore>(
    objects: &Objects<S>,
    student_id: &str,
    course_id: &str,
) -> Result<(), EnrolmentError> {
    objects
        .update_group::<(StudentObject, CourseObject), _, _>([student_id, course_id], |group| {
            let (student, course) = &group.members;
            if student.is_new() {
                return Err(EnrolmentError::StudentNotFound);
            }
            if course.is_new() {
                return Err(EnrolmentError::CourseNotFound);
            }
            if student.courses.iter().any(|c| c == course_id) {
                return Err(EnrolmentError::AlreadyJoined);
            }
            if course.students.len() >= course.places {
                return Err(EnrolmentError::FullyBooked);
            }
            if student.courses.len() >= student.max_courses {
                return Err(EnrolmentError::TooManyCourses);
            }
            group.record(Ev::StudentJoinedCourse {
                student: student_id.to_owned(),
                course: course_id.to_owned(),
            });
            Ok(())
        })
        .await
}
