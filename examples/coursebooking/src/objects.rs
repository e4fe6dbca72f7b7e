//! The objects-and-groups style: a student and a course are enduring objects, each folded from
//! the events tagged with its id; a join is the joint decision of the group (student, course),
//! recorded as one event tagged with both.

use dcb::EventStore;
use eventsourcing::{Object, Objects, Tagged};

use crate::events::Event;
use crate::{CourseId, Enrolment, EnrolmentError, StudentId, check_registration, not_found};

/// A student as an enduring object.
#[derive(Debug, Default)]
pub struct Student {
    name: String,
    max_courses: u32,
    courses: Vec<String>,
}

impl Object for Student {
    type Event = Event;

    fn apply(&mut self, event: &Event) {
        match event {
            Event::StudentRegistered { name, max_courses, .. } => {
                self.name.clone_from(name);
                self.max_courses = *max_courses;
            }
            Event::StudentJoinedCourse { course_id, .. } => self.courses.push(course_id.clone()),
            Event::StudentLeftCourse { course_id, .. } => self.courses.retain(|c| c != course_id),
            Event::CourseRegistered { .. } | Event::CourseRenamed { .. } => {}
        }
    }
}

/// A course as an enduring object.
#[derive(Debug, Default)]
pub struct Course {
    name: String,
    places: u32,
    students: Vec<String>,
}

impl Object for Course {
    type Event = Event;

    fn apply(&mut self, event: &Event) {
        match event {
            Event::CourseRegistered { name, places, .. } => {
                self.name.clone_from(name);
                self.places = *places;
            }
            Event::CourseRenamed { name, .. } => self.name.clone_from(name),
            Event::StudentJoinedCourse { student_id, .. } => self.students.push(student_id.clone()),
            Event::StudentLeftCourse { student_id, .. } => self.students.retain(|s| s != student_id),
            Event::StudentRegistered { .. } => {}
        }
    }
}

/// The challenge with enduring objects and groups, over any DCB store.
#[derive(Clone)]
pub struct EnrolmentWithObjects<S> {
    objects: Objects<S>,
}

impl<S: EventStore> EnrolmentWithObjects<S> {
    /// The application over `store`; a group decision that meets a concurrent change is taken
    /// again up to `retries` times.
    pub fn new(store: S, retries: u32) -> Self {
        EnrolmentWithObjects { objects: Objects::new(store).retry_on_conflict(retries) }
    }

    /// The same, with group decisions taken from the cache of [`Objects::with_cache`] where it
    /// can.
    pub fn with_cache(store: S, retries: u32) -> Self {
        EnrolmentWithObjects { objects: Objects::new(store).retry_on_conflict(retries).with_cache() }
    }

    /// The repository of objects.
    pub fn objects(&self) -> &Objects<S> {
        &self.objects
    }

    async fn student(&self, id: &StudentId) -> Result<Tagged<Student>, EnrolmentError> {
        self.objects
            .get(id.as_str())
            .await
            .map_err(|e| not_found(e, || EnrolmentError::StudentNotFound(id.clone())))
    }

    async fn course(&self, id: &CourseId) -> Result<Tagged<Course>, EnrolmentError> {
        self.objects
            .get(id.as_str())
            .await
            .map_err(|e| not_found(e, || EnrolmentError::CourseNotFound(id.clone())))
    }

    /// The student and the course decide together; `decide` sees both, known to exist.
    async fn decide(
        &self,
        student_id: &StudentId,
        course_id: &CourseId,
        decide: impl Fn(&Student, &Course) -> Result<Event, EnrolmentError>,
    ) -> Result<(), EnrolmentError> {
        let ids = [student_id.as_str(), course_id.as_str()];
        self.objects
            .update_group::<(Student, Course), _, EnrolmentError>(ids, |group| {
                let (student, course) = &group.members;
                if student.is_new() {
                    return Err(EnrolmentError::StudentNotFound(student_id.clone()));
                }
                if course.is_new() {
                    return Err(EnrolmentError::CourseNotFound(course_id.clone()));
                }
                let event = decide(student, course)?;
                group.record(event);
                Ok(())
            })
            .await
    }
}

impl<S: EventStore> Enrolment for EnrolmentWithObjects<S> {
    async fn register_student(&self, name: &str, max_courses: u32) -> Result<StudentId, EnrolmentError> {
        check_registration(name, max_courses)?;
        let id = StudentId::generate();
        let mut student = Tagged::<Student>::new(id.as_str());
        student.record(Event::StudentRegistered {
            student_id: id.to_string(),
            name: name.to_owned(),
            max_courses,
        });
        self.objects.save(&mut student).await?;
        Ok(id)
    }

    async fn register_course(&self, name: &str, places: u32) -> Result<CourseId, EnrolmentError> {
        check_registration(name, places)?;
        let id = CourseId::generate();
        let mut course = Tagged::<Course>::new(id.as_str());
        course.record(Event::CourseRegistered { course_id: id.to_string(), name: name.to_owned(), places });
        self.objects.save(&mut course).await?;
        Ok(id)
    }

    async fn join_course(&self, student_id: &StudentId, course_id: &CourseId) -> Result<(), EnrolmentError> {
        self.decide(student_id, course_id, |student, course| {
            if course.students.iter().any(|s| s == student_id.as_str()) {
                return Err(EnrolmentError::AlreadyJoined);
            }
            if course.students.len() >= course.places as usize {
                return Err(EnrolmentError::FullyBooked);
            }
            if student.courses.len() >= student.max_courses as usize {
                return Err(EnrolmentError::TooManyCourses);
            }
            Ok(Event::StudentJoinedCourse {
                student_id: student_id.to_string(),
                course_id: course_id.to_string(),
            })
        })
        .await
    }

    async fn leave_course(&self, student_id: &StudentId, course_id: &CourseId) -> Result<(), EnrolmentError> {
        self.decide(student_id, course_id, |_, course| {
            if !course.students.iter().any(|s| s == student_id.as_str()) {
                return Err(EnrolmentError::NotAlreadyJoined);
            }
            Ok(Event::StudentLeftCourse {
                student_id: student_id.to_string(),
                course_id: course_id.to_string(),
            })
        })
        .await
    }

    async fn list_students_for_course(&self, course_id: &CourseId) -> Result<Vec<String>, EnrolmentError> {
        let course = self.course(course_id).await?;
        let ids: Vec<&str> = course.students.iter().map(String::as_str).collect();
        let students = self.objects.get_many::<Student>(&ids).await?;
        Ok(students.iter().map(|s| s.name.clone()).collect())
    }

    async fn list_courses_for_student(&self, student_id: &StudentId) -> Result<Vec<String>, EnrolmentError> {
        let student = self.student(student_id).await?;
        let ids: Vec<&str> = student.courses.iter().map(String::as_str).collect();
        let courses = self.objects.get_many::<Course>(&ids).await?;
        Ok(courses.iter().map(|c| c.name.clone()).collect())
    }
}
