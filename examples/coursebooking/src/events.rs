//! The events of the three DCB styles: one sequence of facts, each tagged with the ids it is
//! about, so that a join is one event about both a student and a course.

use eventsourcing::DomainEvent;
use serde::{Deserialize, Serialize};

/// What happens in the course-subscriptions domain.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Event {
    /// A student was registered.
    #[serde(rename = "StudentRegistered")]
    StudentRegistered {
        /// The student.
        student_id: String,
        /// Their name.
        name: String,
        /// How many courses they may join.
        max_courses: u32,
    },
    /// A course was registered.
    #[serde(rename = "CourseRegistered")]
    CourseRegistered {
        /// The course.
        course_id: String,
        /// Its name.
        name: String,
        /// How many students it takes.
        places: u32,
    },
    /// A student joined a course.
    #[serde(rename = "StudentJoinedCourse")]
    StudentJoinedCourse {
        /// The student.
        student_id: String,
        /// The course.
        course_id: String,
    },
    /// A student left a course.
    #[serde(rename = "StudentLeftCourse")]
    StudentLeftCourse {
        /// The student.
        student_id: String,
        /// The course.
        course_id: String,
    },
    /// A course got a new name.
    #[serde(rename = "CourseRenamed")]
    CourseRenamed {
        /// The course.
        course_id: String,
        /// Its new name.
        name: String,
    },
}

impl DomainEvent for Event {
    fn tags(&self) -> Vec<String> {
        match self {
            Event::StudentRegistered { student_id, .. } => vec![student_id.clone()],
            Event::CourseRegistered { course_id, .. } | Event::CourseRenamed { course_id, .. } => {
                vec![course_id.clone()]
            }
            Event::StudentJoinedCourse { student_id, course_id }
            | Event::StudentLeftCourse { student_id, course_id } => {
                vec![student_id.clone(), course_id.clone()]
            }
        }
    }
}

/// Stored type names, for queries.
pub(crate) mod types {
    pub(crate) const STUDENT_REGISTERED: &str = "StudentRegistered";
    pub(crate) const COURSE_REGISTERED: &str = "CourseRegistered";
    pub(crate) const JOINED: &str = "StudentJoinedCourse";
    pub(crate) const LEFT: &str = "StudentLeftCourse";
    pub(crate) const RENAMED: &str = "CourseRenamed";
}

/// What a join or a leave decides on: the student and the course, if they exist, and whether
/// the one has joined the other.
#[derive(Debug, Default)]
pub struct Membership {
    /// The student's limit and how many courses they take.
    pub(crate) student: Option<(u32, u32)>,
    /// The course's places and how many are taken.
    pub(crate) course: Option<(u32, u32)>,
    pub(crate) joined: bool,
}

impl Membership {
    /// Folds `event`, read from a boundary around `student` and `course`.
    pub(crate) fn apply(&mut self, student: &str, course: &str, event: &Event) {
        match event {
            Event::StudentRegistered { student_id, max_courses, .. } if student_id == student => {
                self.student = Some((*max_courses, 0));
            }
            Event::CourseRegistered { course_id, places, .. } if course_id == course => {
                self.course = Some((*places, 0));
            }
            Event::StudentJoinedCourse { student_id, course_id } => {
                self.count(student_id == student, course_id == course, 1);
            }
            Event::StudentLeftCourse { student_id, course_id } => {
                self.count(student_id == student, course_id == course, -1);
            }
            _ => {}
        }
    }

    fn count(&mut self, student: bool, course: bool, change: i32) {
        if let (true, Some((_, taken))) = (student, &mut self.student) {
            *taken = taken.saturating_add_signed(change);
        }
        if let (true, Some((_, taken))) = (course, &mut self.course) {
            *taken = taken.saturating_add_signed(change);
        }
        if student && course {
            self.joined = change > 0;
        }
    }

    /// The join, or why not. Not-found comes first, the student before the course.
    pub(crate) fn join(
        &self,
        student: &crate::StudentId,
        course: &crate::CourseId,
    ) -> Result<Event, crate::EnrolmentError> {
        use crate::EnrolmentError::*;
        let Some((max_courses, courses)) = self.student else { return Err(StudentNotFound(student.clone())) };
        let Some((places, taken)) = self.course else { return Err(CourseNotFound(course.clone())) };
        if self.joined {
            return Err(AlreadyJoined);
        }
        if taken >= places {
            return Err(FullyBooked);
        }
        if courses >= max_courses {
            return Err(TooManyCourses);
        }
        Ok(Event::StudentJoinedCourse { student_id: student.to_string(), course_id: course.to_string() })
    }

    /// The leave, or why not.
    pub(crate) fn leave(
        &self,
        student: &crate::StudentId,
        course: &crate::CourseId,
    ) -> Result<Event, crate::EnrolmentError> {
        use crate::EnrolmentError::*;
        if self.student.is_none() {
            return Err(StudentNotFound(student.clone()));
        }
        if self.course.is_none() {
            return Err(CourseNotFound(course.clone()));
        }
        if !self.joined {
            return Err(NotAlreadyJoined);
        }
        Ok(Event::StudentLeftCourse { student_id: student.to_string(), course_id: course.to_string() })
    }
}
