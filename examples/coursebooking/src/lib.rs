//! The course-subscriptions challenge: students join courses, no student joins more courses than
//! their limit, and no course takes more students than its places.
//!
//! [`Enrolment`] is the interface every implementation offers; [`testcase`] holds the checks every
//! implementation passes on every store.

use std::fmt;
use std::future::Future;

pub mod aggregates;
pub mod events;
mod listing;
pub mod objects;
pub mod plain;
pub mod slices;
pub mod speedrun;
pub mod testcase;

/// The README's Rust examples, compiled and run as doctests.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
struct ReadmeExamples;

pub use aggregates::EnrolmentWithAggregates;
pub use objects::EnrolmentWithObjects;
pub use plain::EnrolmentWithDecisions;
pub use slices::EnrolmentWithSlices;

/// Identifies a student: `student-<uuid>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct StudentId(String);

/// Identifies a course: `course-<uuid>`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct CourseId(String);

macro_rules! id_type {
    ($name:ident, $prefix:literal) => {
        impl $name {
            /// A new, random id.
            pub fn generate() -> Self {
                $name(format!(concat!($prefix, "-{}"), uuid::Uuid::new_v4()))
            }

            /// The id as text, which is also the tag of the events about it.
            pub fn as_str(&self) -> &str {
                &self.0
            }

            /// Takes an id from text, as stored in an event.
            pub fn from_stored(text: impl Into<String>) -> Self {
                $name(text.into())
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }
    };
}

id_type!(StudentId, "student");
id_type!(CourseId, "course");

/// Why an enrolment operation was refused, or failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnrolmentError {
    /// The student already takes as many courses as they may.
    #[error("the student has joined too many courses")]
    TooManyCourses,
    /// The course has no place left.
    #[error("the course is fully booked")]
    FullyBooked,
    /// The student had already joined the course.
    #[error("the student has already joined the course")]
    AlreadyJoined,
    /// The student has not joined the course they try to leave.
    #[error("the student has not joined the course")]
    NotAlreadyJoined,
    /// No student has this id.
    #[error("student not found: {0}")]
    StudentNotFound(StudentId),
    /// No course has this id.
    #[error("course not found: {0}")]
    CourseNotFound(CourseId),
    /// A name or number given was not acceptable (an empty name, a zero limit).
    #[error("invalid request: {0}")]
    Invalid(String),
    /// The store failed, or the decision kept conflicting with concurrent ones
    /// ([`dcb::Error::is_integrity`]).
    #[error(transparent)]
    Store(#[from] dcb::Error),
    /// The application layer failed otherwise (an event that could not be decoded).
    #[error(transparent)]
    Application(eventsourcing::Error),
}

impl From<eventsourcing::Error> for EnrolmentError {
    fn from(error: eventsourcing::Error) -> Self {
        match error {
            eventsourcing::Error::Store(error) => EnrolmentError::Store(error),
            other => EnrolmentError::Application(other),
        }
    }
}

/// `missing` when `error` says the aggregate or object was not found, the error itself otherwise.
fn not_found(error: eventsourcing::Error, missing: impl FnOnce() -> EnrolmentError) -> EnrolmentError {
    if error.is_not_found() { missing() } else { error.into() }
}

/// Records the first event of a new id, on condition that nothing carries that id yet: nothing
/// in the past decides a registration but that, so it needs no read. A used id (ids are
/// generated, so only in theory) fails with the store's integrity error.
async fn register<S: dcb::EventStore>(
    dcb: &eventsourcing::Dcb<S>,
    id: &str,
    event: events::Event,
) -> Result<(), EnrolmentError> {
    let unused = dcb::AppendCondition::new(dcb::QueryItem::tags([id]).into(), None);
    dcb.append(&[event], unused).await?;
    Ok(())
}

/// Refuses an empty name or a zero limit before anything is recorded.
fn check_registration(name: &str, limit: u32) -> Result<(), EnrolmentError> {
    if name.trim().is_empty() {
        return Err(EnrolmentError::Invalid("a name must not be empty".into()));
    }
    if limit == 0 {
        return Err(EnrolmentError::Invalid(format!("{name:?} needs a limit of at least 1")));
    }
    Ok(())
}

/// The operations of the challenge. Every implementation (aggregates, plain DCB, objects and
/// groups, slices) offers exactly these, with the same errors.
pub trait Enrolment: Clone + Send + Sync + 'static {
    /// Registers a student who may join at most `max_courses` courses.
    fn register_student(
        &self,
        name: &str,
        max_courses: u32,
    ) -> impl Future<Output = Result<StudentId, EnrolmentError>> + Send;

    /// Registers a course with `places` places.
    fn register_course(
        &self,
        name: &str,
        places: u32,
    ) -> impl Future<Output = Result<CourseId, EnrolmentError>> + Send;

    /// The student joins the course. Not-found errors win over the others: an unknown student
    /// joining a full course is [`EnrolmentError::StudentNotFound`].
    fn join_course(
        &self,
        student: &StudentId,
        course: &CourseId,
    ) -> impl Future<Output = Result<(), EnrolmentError>> + Send;

    /// The student leaves a course they joined, freeing a place.
    fn leave_course(
        &self,
        student: &StudentId,
        course: &CourseId,
    ) -> impl Future<Output = Result<(), EnrolmentError>> + Send;

    /// Names of the course's students, in the order they joined.
    fn list_students_for_course(
        &self,
        course: &CourseId,
    ) -> impl Future<Output = Result<Vec<String>, EnrolmentError>> + Send;

    /// Names of the student's courses, in the order they were joined.
    fn list_courses_for_student(
        &self,
        student: &StudentId,
    ) -> impl Future<Output = Result<Vec<String>, EnrolmentError>> + Send;
}
