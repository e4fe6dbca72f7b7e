//! The slices style: one decision per use case, each with its own tight boundary. Joining reads
//! only what the join rules depend on (registrations, joins and leaves of the student and the
//! course), so renaming a course meanwhile does not conflict with it. A registration decides
//! nothing from the past: it is an append on condition that its new id is unused.

use dcb::{EventStore, Query, QueryItem};
use eventsourcing::{Dcb, Slice};

use crate::events::{Event, Membership as Model, types};
use crate::{CourseId, Enrolment, EnrolmentError, StudentId, check_registration, listing, register};

/// A student joins (or, with `leave`, leaves) a course.
pub struct JoinCourse<'a> {
    /// The student.
    pub student: &'a StudentId,
    /// The course.
    pub course: &'a CourseId,
    /// Leave instead of join.
    pub leave: bool,
}

impl Slice for JoinCourse<'_> {
    type Event = Event;
    type State = Model;
    type Error = EnrolmentError;

    /// The registrations, joins and leaves of the student and of the course; not the course's
    /// name.
    fn query(&self) -> Query {
        let enrolments = [types::JOINED, types::LEFT];
        let student = QueryItem::types([types::STUDENT_REGISTERED].into_iter().chain(enrolments));
        let course = QueryItem::types([types::COURSE_REGISTERED].into_iter().chain(enrolments));
        Query::new([student.and_tags([self.student.as_str()]), course.and_tags([self.course.as_str()])])
    }

    fn apply(&self, model: &mut Model, event: &Event) {
        model.apply(self.student.as_str(), self.course.as_str(), event);
    }

    fn decide(&self, model: &Model) -> Result<Vec<Event>, EnrolmentError> {
        let event = if self.leave {
            model.leave(self.student, self.course)?
        } else {
            model.join(self.student, self.course)?
        };
        Ok(vec![event])
    }
}

/// A course gets a new name: the boundary is the course's registration and names.
pub struct RenameCourse<'a> {
    /// The course.
    pub course: &'a CourseId,
    /// Its new name.
    pub name: &'a str,
}

impl Slice for RenameCourse<'_> {
    type Event = Event;
    type State = bool;
    type Error = EnrolmentError;

    fn query(&self) -> Query {
        QueryItem::types([types::COURSE_REGISTERED, types::RENAMED]).and_tags([self.course.as_str()]).into()
    }

    fn apply(&self, exists: &mut bool, event: &Event) {
        *exists |= matches!(event, Event::CourseRegistered { .. });
    }

    fn decide(&self, exists: &bool) -> Result<Vec<Event>, EnrolmentError> {
        if !exists {
            return Err(EnrolmentError::CourseNotFound(self.course.clone()));
        }
        check_registration(self.name, 1)?;
        Ok(vec![Event::CourseRenamed { course_id: self.course.to_string(), name: self.name.to_owned() }])
    }
}

/// The challenge with one slice per use case, over any DCB store.
#[derive(Clone)]
pub struct EnrolmentWithSlices<S> {
    dcb: Dcb<S>,
}

impl<S: EventStore> EnrolmentWithSlices<S> {
    /// The application over `store`; a slice that meets a concurrent change inside its boundary
    /// is decided again up to `retries` times.
    pub fn new(store: S, retries: u32) -> Self {
        EnrolmentWithSlices { dcb: Dcb::new(store).retry_on_conflict(retries) }
    }

    /// The same, with decisions taken from the cache of [`Dcb::with_cache`] where it can.
    pub fn with_cache(store: S, retries: u32) -> Self {
        EnrolmentWithSlices { dcb: Dcb::new(store).retry_on_conflict(retries).with_cache() }
    }

    /// The decision runner, to load and decide slices step by step.
    pub fn dcb(&self) -> &Dcb<S> {
        &self.dcb
    }

    /// Renames a course. Joins decided meanwhile do not conflict with it.
    pub async fn rename_course(&self, course: &CourseId, name: &str) -> Result<(), EnrolmentError> {
        self.dcb.execute(&RenameCourse { course, name }).await?;
        Ok(())
    }
}

impl<S: EventStore> Enrolment for EnrolmentWithSlices<S> {
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
        self.dcb.execute(&JoinCourse { student, course, leave: false }).await?;
        Ok(())
    }

    async fn leave_course(&self, student: &StudentId, course: &CourseId) -> Result<(), EnrolmentError> {
        self.dcb.execute(&JoinCourse { student, course, leave: true }).await?;
        Ok(())
    }

    async fn list_students_for_course(&self, course: &CourseId) -> Result<Vec<String>, EnrolmentError> {
        listing::students_for_course(&self.dcb, course).await
    }

    async fn list_courses_for_student(&self, student: &StudentId) -> Result<Vec<String>, EnrolmentError> {
        listing::courses_for_student(&self.dcb, student).await
    }
}
