//! The plain DCB style: each command reads every event about the student and the course, folds
//! them into a decision model, and appends under the condition that none of them changed.

use dcb::{EventStore, Query, QueryItem};
use eventsourcing::Dcb;

use crate::events::{Event, Membership as Model};
use crate::{CourseId, Enrolment, EnrolmentError, StudentId, check_registration, listing, register};

/// The challenge with plain decision models, over any DCB store.
#[derive(Clone)]
pub struct EnrolmentWithDecisions<S> {
    dcb: Dcb<S>,
}

impl<S: EventStore> EnrolmentWithDecisions<S> {
    /// The application over `store`; a decision that meets a concurrent change is taken again
    /// up to `retries` times.
    pub fn new(store: S, retries: u32) -> Self {
        EnrolmentWithDecisions { dcb: Dcb::new(store).retry_on_conflict(retries) }
    }

    /// The same, with decisions taken from the cache of [`Dcb::with_cache`] where it can: a
    /// join then costs one round trip instead of two.
    pub fn with_cache(store: S, retries: u32) -> Self {
        EnrolmentWithDecisions { dcb: Dcb::new(store).retry_on_conflict(retries).with_cache() }
    }

    /// The decision runner, to read and decide step by step.
    pub fn dcb(&self) -> &Dcb<S> {
        &self.dcb
    }

    /// The boundary of a decision about a student and a course: everything about either.
    pub fn boundary(student: &StudentId, course: &CourseId) -> Query {
        Query::new([QueryItem::tags([student.as_str()]), QueryItem::tags([course.as_str()])])
    }

    async fn decide(
        &self,
        student: &StudentId,
        course: &CourseId,
        decide: impl Fn(&Model) -> Result<Event, EnrolmentError>,
    ) -> Result<(), EnrolmentError> {
        let fold = |model: &mut Model, event: &Event| model.apply(student.as_str(), course.as_str(), event);
        self.dcb
            .decide(Self::boundary(student, course), fold, |model| decide(model).map(|e| vec![e]))
            .await?;
        Ok(())
    }
}

impl<S: EventStore> Enrolment for EnrolmentWithDecisions<S> {
    async fn register_student(&self, name: &str, max_courses: u32) -> Result<StudentId, EnrolmentError> {
        check_registration(name, max_courses)?;
        let id = StudentId::generate();
        let event =
            Event::StudentRegistered { student_id: id.to_string(), name: name.to_owned(), max_courses };
        register(&self.dcb, id.as_str(), event).await?;
        Ok(id)
    }

    async fn register_course(&self, name: &str, places: u32) -> Result<CourseId, EnrolmentError> {
        check_registration(name, places)?;
        let id = CourseId::generate();
        let event = Event::CourseRegistered { course_id: id.to_string(), name: name.to_owned(), places };
        register(&self.dcb, id.as_str(), event).await?;
        Ok(id)
    }

    async fn join_course(&self, student: &StudentId, course: &CourseId) -> Result<(), EnrolmentError> {
        self.decide(student, course, |model| model.join(student, course)).await
    }

    async fn leave_course(&self, student: &StudentId, course: &CourseId) -> Result<(), EnrolmentError> {
        self.decide(student, course, |model| model.leave(student, course)).await
    }

    async fn list_students_for_course(&self, course: &CourseId) -> Result<Vec<String>, EnrolmentError> {
        listing::students_for_course(&self.dcb, course).await
    }

    async fn list_courses_for_student(&self, student: &StudentId) -> Result<Vec<String>, EnrolmentError> {
        listing::courses_for_student(&self.dcb, student).await
    }
}
