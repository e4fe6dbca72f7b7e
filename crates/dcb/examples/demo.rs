//! A first look at the store: record a few facts, read them by query, and watch an append
//! condition refuse a decision taken on stale information.

use dcb::{AppendCondition, Event, EventStore, MemoryStore, Query, QueryItem, ReadOptions};

#[tokio::main]
async fn main() -> Result<(), dcb::Error> {
    let store = MemoryStore::new();
    store
        .append(
            vec![
                Event::new("CourseRegistered", r#"{"name":"Maths","places":2}"#).tagged("course-maths"),
                Event::new("StudentRegistered", r#"{"name":"Sara","max_courses":3}"#).tagged("student-sara"),
            ],
            None,
        )
        .await?;

    // The decision "Sara joins Maths" depends on both the course and the student.
    let boundary = Query::new([QueryItem::tags(["course-maths"]), QueryItem::tags(["student-sara"])]);
    let seen = store.read(&boundary, ReadOptions::default()).await?;
    println!("read {} events, head {:?}", seen.events.len(), seen.head);
    for e in &seen.events {
        println!("  {:>3}  {:<20} {:?}", e.position, e.event.event_type, e.event.tags);
    }

    let joined = Event::new("StudentJoinedCourse", "{}").with_tags(["course-maths", "student-sara"]);
    let condition = AppendCondition::new(boundary.clone(), seen.head);
    let position = store.append(vec![joined.clone()], Some(condition.clone())).await?;
    println!("Sara joined Maths at position {position}");

    // Deciding again on the same, now stale, read must fail: the boundary changed.
    match store.append(vec![joined], Some(condition)).await {
        Err(error) if error.is_integrity() => println!("the stale decision was refused: {error}"),
        other => panic!("expected an integrity error, got {other:?}"),
    }
    println!("head is now {:?}", store.head().await?);
    Ok(())
}
