//! The traditional style: a `Student` and a `Course` aggregate, and a join that saves the new
//! events of both atomically, so that the boundary of that one decision spans two aggregates.

use dcb::recorder::AggregateRecorder;
use eventsourcing::{Aggregate, DomainEvent, Repository, Root};
use serde::{Deserialize, Serialize};

use crate::{CourseId, Enrolment, EnrolmentError, StudentId, check_registration, not_found};

/// The events of a student.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum StudentEvent {
    /// The student was registered.
    #[serde(rename = "Student.Registered")]
    Registered {
        /// The student's name.
        name: String,
        /// How many courses they may join.
        max_courses: u32,
    },
    /// The student joined a course.
    #[serde(rename = "Student.JoinedCourse")]
    JoinedCourse {
        /// The course.
        course_id: String,
    },
    /// The student left a course.
    #[serde(rename = "Student.LeftCourse")]
    LeftCourse {
        /// The course.
        course_id: String,
    },
}

impl DomainEvent for StudentEvent {}

/// The events of a course.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum CourseEvent {
    /// The course was registered.
    #[serde(rename = "Course.Registered")]
    Registered {
        /// The course's name.
        name: String,
        /// How many students it takes.
        places: u32,
    },
    /// A student joined the course.
    #[serde(rename = "Course.StudentJoined")]
    StudentJoined {
        /// The student.
        student_id: String,
    },
    /// A student left the course.
    #[serde(rename = "Course.StudentLeft")]
    StudentLeft {
        /// The student.
        student_id: String,
    },
}

impl DomainEvent for CourseEvent {}

/// A student: their name, their limit and the courses they joined, in order.
#[derive(Debug, Default)]
pub struct Student {
    name: String,
    max_courses: u32,
    courses: Vec<String>,
}

impl Aggregate for Student {
    type Event = StudentEvent;

    fn apply(&mut self, event: &StudentEvent) {
        match event {
            StudentEvent::Registered { name, max_courses } => {
                self.name.clone_from(name);
                self.max_courses = *max_courses;
            }
            StudentEvent::JoinedCourse { course_id } => self.courses.push(course_id.clone()),
            StudentEvent::LeftCourse { course_id } => self.courses.retain(|c| c != course_id),
        }
    }
}

impl Student {
    pub(crate) fn join(&self, course: &CourseId) -> Result<StudentEvent, EnrolmentError> {
        if self.courses.len() >= self.max_courses as usize {
            return Err(EnrolmentError::TooManyCourses);
        }
        Ok(StudentEvent::JoinedCourse { course_id: course.to_string() })
    }
}

/// A course: its name, its places and its students, in the order they joined.
#[derive(Debug, Default)]
pub struct Course {
    name: String,
    places: u32,
    students: Vec<String>,
}

impl Aggregate for Course {
    type Event = CourseEvent;

    fn apply(&mut self, event: &CourseEvent) {
        match event {
            CourseEvent::Registered { name, places } => {
                self.name.clone_from(name);
                self.places = *places;
            }
            CourseEvent::StudentJoined { student_id } => self.students.push(student_id.clone()),
            CourseEvent::StudentLeft { student_id } => self.students.retain(|s| s != student_id),
        }
    }
}

impl Course {
    pub(crate) fn accept(&self, student: &StudentId) -> Result<CourseEvent, EnrolmentError> {
        if self.students.iter().any(|s| s == student.as_str()) {
            return Err(EnrolmentError::AlreadyJoined);
        }
        if self.students.len() >= self.places as usize {
            return Err(EnrolmentError::FullyBooked);
        }
        Ok(CourseEvent::StudentJoined { student_id: student.to_string() })
    }
}

/// Whether `outcome` may be owed to aggregates behind the recorder: a refusal, or a save that met
/// a newer version.
fn may_rest_on_stale_state(outcome: &Result<(), EnrolmentError>) -> bool {
    match outcome {
        Ok(()) => false,
        Err(EnrolmentError::Store(error)) => error.is_integrity(),
        Err(EnrolmentError::Application(_)) => false,
        Err(_) => true,
    }
}

/// The challenge with aggregates, over any aggregate recorder.
#[derive(Clone)]
pub struct EnrolmentWithAggregates<R> {
    repository: Repository<R>,
    retries: u32,
}

impl<R: AggregateRecorder> EnrolmentWithAggregates<R> {
    /// The application over `recorder`; a join that meets a concurrent change is tried again up
    /// to `retries` times.
    pub fn new(recorder: R, retries: u32) -> Self {
        EnrolmentWithAggregates { repository: Repository::new(recorder), retries }
    }

    /// The same, with aggregates loaded from the cache of [`Repository::with_cache`] where it
    /// can: a join then costs one round trip (its save) instead of two. A refusal, or a save
    /// that met a newer version, is decided again on aggregates read afresh, and listings always
    /// read.
    pub fn with_cache(recorder: R, retries: u32) -> Self {
        EnrolmentWithAggregates { repository: Repository::new(recorder).with_cache(), retries }
    }

    /// The repository, to load and save the aggregates directly.
    pub fn repository(&self) -> &Repository<R> {
        &self.repository
    }

    /// Aggregate `id`, from the cache if it holds it, unless `fresh`.
    async fn load<A: Aggregate>(
        &self,
        id: &str,
        fresh: bool,
        missing: impl FnOnce() -> EnrolmentError,
    ) -> Result<Root<A>, EnrolmentError> {
        let loaded = if fresh { self.repository.get_fresh(id).await } else { self.repository.get(id).await };
        loaded.map_err(|e| not_found(e, missing))
    }

    async fn student(&self, id: &StudentId, fresh: bool) -> Result<Root<Student>, EnrolmentError> {
        self.load(id.as_str(), fresh, || EnrolmentError::StudentNotFound(id.clone())).await
    }

    async fn course(&self, id: &CourseId, fresh: bool) -> Result<Root<Course>, EnrolmentError> {
        self.load(id.as_str(), fresh, || EnrolmentError::CourseNotFound(id.clone())).await
    }

    /// The student and the course, loaded at once (their reads in flight together); a missing
    /// student is reported before a missing course, as when they are loaded in turn.
    async fn student_and_course(
        &self,
        student: &StudentId,
        course: &CourseId,
        fresh: bool,
    ) -> Result<(Root<Student>, Root<Course>), EnrolmentError> {
        let (student, course) = tokio::join!(self.student(student, fresh), self.course(course, fresh));
        Ok((student?, course?))
    }

    /// Loads the student and the course, decides on them with `decide` and saves them. What
    /// came from the cache may be behind another process: a refusal resting on it, or a save
    /// that met a newer version, is decided again on aggregates read afresh, once, without
    /// counting as a retry.
    async fn decide_and_save(
        &self,
        student_id: &StudentId,
        course_id: &CourseId,
        decide: impl Fn(&mut Root<Student>, &mut Root<Course>) -> Result<(), EnrolmentError>,
    ) -> Result<(), EnrolmentError> {
        let mut fresh = false;
        loop {
            let (mut student, mut course) = self.student_and_course(student_id, course_id, fresh).await?;
            let cached = student.is_from_cache() || course.is_from_cache();
            let mut outcome = decide(&mut student, &mut course);
            if outcome.is_ok() {
                outcome = self
                    .repository
                    .save_all(&mut [&mut student, &mut course])
                    .await
                    .map(drop)
                    .map_err(Into::into);
            }
            // A fresh load is never from the cache, so this happens once at most.
            if cached && may_rest_on_stale_state(&outcome) {
                fresh = true;
                continue;
            }
            return outcome;
        }
    }

    /// Whether a failed attempt (the `tries`-th retry so far) should be made again: only after
    /// a concurrent change, and only up to the retry limit.
    fn retry(&self, outcome: &Result<(), EnrolmentError>, tries: &mut u32) -> bool {
        let conflict = matches!(outcome, Err(EnrolmentError::Store(e)) if e.is_integrity());
        let retry = conflict && *tries < self.retries;
        *tries += u32::from(retry);
        retry
    }

    async fn join_once(&self, student_id: &StudentId, course_id: &CourseId) -> Result<(), EnrolmentError> {
        self.decide_and_save(student_id, course_id, |student, course| {
            course.execute(|c| c.accept(student_id))?;
            student.execute(|s| s.join(course_id))
        })
        .await
    }

    async fn leave_once(&self, student_id: &StudentId, course_id: &CourseId) -> Result<(), EnrolmentError> {
        self.decide_and_save(student_id, course_id, |student, course| {
            if !course.students.iter().any(|s| s == student_id.as_str()) {
                return Err(EnrolmentError::NotAlreadyJoined);
            }
            course.record(CourseEvent::StudentLeft { student_id: student_id.to_string() });
            student.record(StudentEvent::LeftCourse { course_id: course_id.to_string() });
            Ok(())
        })
        .await
    }
}

impl<R: AggregateRecorder> Enrolment for EnrolmentWithAggregates<R> {
    async fn register_student(&self, name: &str, max_courses: u32) -> Result<StudentId, EnrolmentError> {
        check_registration(name, max_courses)?;
        let id = StudentId::generate();
        let mut student = Root::<Student>::new(id.as_str());
        student.record(StudentEvent::Registered { name: name.to_owned(), max_courses });
        self.repository.save(&mut student).await?;
        Ok(id)
    }

    async fn register_course(&self, name: &str, places: u32) -> Result<CourseId, EnrolmentError> {
        check_registration(name, places)?;
        let id = CourseId::generate();
        let mut course = Root::<Course>::new(id.as_str());
        course.record(CourseEvent::Registered { name: name.to_owned(), places });
        self.repository.save(&mut course).await?;
        Ok(id)
    }

    async fn join_course(&self, student_id: &StudentId, course_id: &CourseId) -> Result<(), EnrolmentError> {
        let mut tries = 0;
        loop {
            let outcome = self.join_once(student_id, course_id).await;
            if !self.retry(&outcome, &mut tries) {
                return outcome;
            }
        }
    }

    async fn leave_course(&self, student_id: &StudentId, course_id: &CourseId) -> Result<(), EnrolmentError> {
        let mut tries = 0;
        loop {
            let outcome = self.leave_once(student_id, course_id).await;
            if !self.retry(&outcome, &mut tries) {
                return outcome;
            }
        }
    }

    async fn list_students_for_course(&self, course_id: &CourseId) -> Result<Vec<String>, EnrolmentError> {
        let course = self.course(course_id, true).await?;
        let mut names = Vec::with_capacity(course.students.len());
        for id in &course.students {
            names.push(self.student(&StudentId::from_stored(id.as_str()), true).await?.name.clone());
        }
        Ok(names)
    }

    async fn list_courses_for_student(&self, student_id: &StudentId) -> Result<Vec<String>, EnrolmentError> {
        let student = self.student(student_id, true).await?;
        let mut names = Vec::with_capacity(student.courses.len());
        for id in &student.courses {
            names.push(self.course(&CourseId::from_stored(id.as_str()), true).await?.name.clone());
        }
        Ok(names)
    }
}
