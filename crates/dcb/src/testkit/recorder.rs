//! The conformance kit of aggregate recorders. Each test takes a fresh, empty recorder.

use crate::recorder::{AggregateEvent, AggregateRecorder};
use crate::{Error, ReadOptions};

/// Event `version` of `aggregate_id`, of type `event_type`.
pub fn aggregate_event(aggregate_id: &str, version: u64, event_type: &str) -> AggregateEvent {
    AggregateEvent {
        aggregate_id: aggregate_id.to_owned(),
        version,
        event_type: event_type.to_owned(),
        data: format!("{aggregate_id}@{version}").into(),
    }
}

fn versions(events: &[AggregateEvent]) -> Vec<u64> {
    events.iter().map(|e| e.version).collect()
}

/// Inserted events come back unchanged, per aggregate, in version order, with windows and limits.
pub async fn inserted_events_are_selected_by_aggregate<R: AggregateRecorder>(recorder: &R) {
    let a: Vec<_> = (1..=4).map(|v| aggregate_event("a", v, "Changed")).collect();
    assert_eq!(recorder.insert_events(a[..2].to_vec()).await.unwrap(), 2);
    assert_eq!(recorder.insert_events(vec![aggregate_event("b", 1, "Created")]).await.unwrap(), 3);
    assert_eq!(recorder.insert_events(a[2..].to_vec()).await.unwrap(), 5);
    assert_eq!(recorder.select_events("a", ReadOptions::default()).await.unwrap(), a);
    let window = recorder.select_events("a", ReadOptions::default().after(1).limit(2)).await.unwrap();
    assert_eq!(versions(&window), [2, 3]);
    let latest = recorder.select_events("a", ReadOptions::default().backwards().limit(1)).await.unwrap();
    assert_eq!(versions(&latest), [4]);
    assert!(recorder.select_events("unknown", ReadOptions::default()).await.unwrap().is_empty());
    assert_eq!(recorder.count().await.unwrap(), 5);
}

/// A batch holding a version that is already recorded fails whole, for every aggregate in it.
pub async fn a_recorded_version_fails_the_whole_insert<R: AggregateRecorder>(recorder: &R) {
    recorder.insert_events(vec![aggregate_event("student", 1, "Registered")]).await.unwrap();
    recorder.insert_events(vec![aggregate_event("course", 1, "Registered")]).await.unwrap();
    // A concurrent writer got version 2 of the course first.
    recorder.insert_events(vec![aggregate_event("course", 2, "Joined")]).await.unwrap();
    let stale = vec![aggregate_event("student", 2, "Joined"), aggregate_event("course", 2, "Joined")];
    match recorder.insert_events(stale).await {
        Err(Error::Integrity(_)) => {}
        other => panic!("expected an integrity error, got {other:?}"),
    }
    let student = recorder.select_events("student", ReadOptions::default()).await.unwrap();
    assert_eq!(versions(&student), [1], "the student event of a failed save was written");
    assert_eq!(recorder.count().await.unwrap(), 3);
}

/// Inserts too large to name each version in one query (more than
/// [`MAX_QUERY_ITEMS`](crate::limits::MAX_QUERY_ITEMS) events) keep the rule: one that holds a
/// recorded version fails whole, even when that version is not the aggregate's lowest new one;
/// one that holds none succeeds.
pub async fn large_inserts_keep_the_version_rule<R: AggregateRecorder>(recorder: &R) {
    let many = crate::limits::MAX_QUERY_ITEMS as u64 + 6;
    recorder.insert_events(vec![aggregate_event("a", 7, "Changed")]).await.unwrap();
    let clashing: Vec<_> = (4..4 + many).map(|v| aggregate_event("a", v, "Changed")).collect();
    match recorder.insert_events(clashing).await {
        Err(Error::Integrity(_)) => {}
        other => panic!("expected an integrity error, got {other:?}"),
    }
    assert_eq!(recorder.count().await.unwrap(), 1, "part of a failed insert was written");
    let fresh: Vec<_> = (8..8 + many)
        .map(|v| aggregate_event("a", v, "Changed"))
        .chain((1..=3).map(|v| aggregate_event("b", v, "Changed")))
        .collect();
    assert_eq!(recorder.insert_events(fresh).await.unwrap(), 1 + many + 3);
    let a = recorder.select_events("a", ReadOptions::default()).await.unwrap();
    assert_eq!(versions(&a), (7..8 + many).collect::<Vec<_>>());
}

/// Empty inserts, empty ids or types and version 0 are refused, writing nothing.
pub async fn invalid_inserts_are_refused<R: AggregateRecorder>(recorder: &R) {
    let bad = [
        vec![],
        vec![aggregate_event("", 1, "T")],
        vec![aggregate_event("a", 1, "")],
        vec![aggregate_event("a", 0, "T")],
    ];
    for events in bad {
        let what = format!("{events:?}");
        match recorder.insert_events(events).await {
            Err(Error::InvalidArgument(_)) => {}
            other => panic!("{what}: expected an invalid-argument error, got {other:?}"),
        }
    }
    assert_eq!(recorder.count().await.unwrap(), 0);
}

/// Many tasks racing to write the next version of one aggregate: exactly one wins each version.
pub async fn racing_writers_each_version_once<R: AggregateRecorder>(recorder: &R) {
    const TASKS: usize = 16;
    const ROUNDS: u64 = 10;
    let mut tasks = Vec::new();
    for task in 0..TASKS {
        let recorder = recorder.clone();
        tasks.push(tokio::spawn(async move {
            let mut won = Vec::new();
            for _ in 0..ROUNDS {
                let current =
                    recorder.select_events("hot", ReadOptions::default().backwards().limit(1)).await.unwrap();
                let next = current.first().map_or(1, |e| e.version + 1);
                tokio::task::yield_now().await;
                let mut event = aggregate_event("hot", next, "Bumped");
                event.data = format!("task {task}").into();
                match recorder.insert_events(vec![event.clone()]).await {
                    Ok(_) => won.push(event),
                    Err(Error::Integrity(_)) => {}
                    Err(other) => panic!("unexpected error: {other}"),
                }
            }
            won
        }));
    }
    let mut won = Vec::new();
    for task in tasks {
        won.extend(task.await.unwrap());
    }
    won.sort_by_key(|e| e.version);
    let recorded = recorder.select_events("hot", ReadOptions::default()).await.unwrap();
    assert_eq!(recorded, won, "recorded versions differ from the acknowledged ones");
    assert_eq!(versions(&recorded), (1..=recorded.len() as u64).collect::<Vec<_>>());
}

/// Inserts made at the same moment (which a recorder may commit together) keep their own
/// outcomes: one that repeats a recorded version fails alone, and the others are all recorded.
pub async fn a_conflicting_insert_fails_alone<R: AggregateRecorder>(recorder: &R) {
    recorder.insert_events(vec![aggregate_event("taken", 1, "Created")]).await.unwrap();
    let mut tasks = Vec::new();
    for task in 0..16 {
        let recorder = recorder.clone();
        let id = if task == 7 { "taken".to_owned() } else { format!("fresh-{task}") };
        tasks.push(tokio::spawn(async move {
            recorder
                .insert_events(vec![aggregate_event(&id, 1, "Created"), aggregate_event(&id, 2, "Changed")])
                .await
        }));
    }
    let mut conflicts = 0;
    for task in tasks {
        match task.await.unwrap() {
            Ok(_) => {}
            Err(Error::Integrity(_)) => conflicts += 1,
            Err(other) => panic!("unexpected error: {other}"),
        }
    }
    assert_eq!(conflicts, 1, "exactly the insert repeating a version must fail");
    assert_eq!(recorder.count().await.unwrap(), 1 + 15 * 2);
    let taken = recorder.select_events("taken", ReadOptions::default()).await.unwrap();
    assert_eq!(versions(&taken), [1], "the failed insert wrote part of itself");
}

/// Instantiates the aggregate recorder kit, one `#[tokio::test]` per rule. `$make` is called with
/// no argument and returns a future of a fresh, empty recorder.
#[macro_export]
macro_rules! recorder_conformance_tests {
    ($make:expr) => {
        $crate::recorder_conformance_tests!(@each $make;
            inserted_events_are_selected_by_aggregate,
            a_recorded_version_fails_the_whole_insert,
            large_inserts_keep_the_version_rule,
            invalid_inserts_are_refused,
            racing_writers_each_version_once,
            a_conflicting_insert_fails_alone,
        );
    };
    (@each $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let recorder = ($make)().await;
                $crate::testkit::recorder::$name(&recorder).await;
            }
        )*
    };
}
