//! The two listings, as reads of the store: who joined (in order, minus who left), then the
//! names of those, with one read for all of them.

use std::collections::HashMap;

use dcb::limits::MAX_QUERY_ITEMS;
use dcb::{EventStore, Query, QueryItem};
use eventsourcing::Dcb;

use crate::events::{Event, types};
use crate::{CourseId, EnrolmentError, StudentId};

/// The ids joined to `tag` (a course or a student), in join order, and whether `tag` exists.
async fn joined<S: EventStore>(
    dcb: &Dcb<S>,
    tag: &str,
    registered: &str,
) -> Result<Option<Vec<String>>, EnrolmentError> {
    let query = QueryItem::types([registered, types::JOINED, types::LEFT]).and_tags([tag]).into();
    let read = dcb
        .read(query, |(exists, ids): &mut (bool, Vec<String>), event: &Event| match event {
            Event::StudentRegistered { .. } | Event::CourseRegistered { .. } => *exists = true,
            Event::StudentJoinedCourse { student_id, course_id } => {
                ids.push(if student_id == tag { course_id.clone() } else { student_id.clone() })
            }
            Event::StudentLeftCourse { student_id, course_id } => {
                let other = if student_id == tag { course_id } else { student_id };
                ids.retain(|id| id != other);
            }
            Event::CourseRenamed { .. } => {}
        })
        .await?;
    let (exists, ids) = read.state;
    Ok(exists.then_some(ids))
}

/// The current names of `ids`, in the same order, from one read of their naming events per
/// [`MAX_QUERY_ITEMS`] ids (the largest query a store takes).
async fn names<S: EventStore>(
    dcb: &Dcb<S>,
    ids: Vec<String>,
    naming: &[&str],
) -> Result<Vec<String>, EnrolmentError> {
    let mut names = HashMap::new();
    // Never an empty query, which would read the whole store.
    for chunk in ids.chunks(MAX_QUERY_ITEMS) {
        let query = Query::new(
            chunk.iter().map(|id| QueryItem::types(naming.iter().copied()).and_tags([id.as_str()])),
        );
        let read = dcb
            .read(query, |names: &mut HashMap<String, String>, event: &Event| match event {
                Event::StudentRegistered { student_id: id, name, .. }
                | Event::CourseRegistered { course_id: id, name, .. }
                | Event::CourseRenamed { course_id: id, name } => {
                    names.insert(id.clone(), name.clone());
                }
                _ => {}
            })
            .await?;
        names.extend(read.state);
    }
    Ok(ids.into_iter().map(|id| names.get(&id).cloned().unwrap_or_default()).collect())
}

/// Names of the course's students, in join order.
pub(crate) async fn students_for_course<S: EventStore>(
    dcb: &Dcb<S>,
    course: &CourseId,
) -> Result<Vec<String>, EnrolmentError> {
    let Some(ids) = joined(dcb, course.as_str(), types::COURSE_REGISTERED).await? else {
        return Err(EnrolmentError::CourseNotFound(course.clone()));
    };
    names(dcb, ids, &[types::STUDENT_REGISTERED]).await
}

/// Names of the student's courses, in join order, as the courses are named now.
pub(crate) async fn courses_for_student<S: EventStore>(
    dcb: &Dcb<S>,
    student: &StudentId,
) -> Result<Vec<String>, EnrolmentError> {
    let Some(ids) = joined(dcb, student.as_str(), types::STUDENT_REGISTERED).await? else {
        return Err(EnrolmentError::StudentNotFound(student.clone()));
    };
    names(dcb, ids, &[types::COURSE_REGISTERED, types::RENAMED]).await
}
