//! The whole conformance kit, the race test with separately connected handles, and the recorder
//! kit, against a real PostgreSQL (`DCB_TEST_POSTGRES_URL`, default: the local `dcb_test`).

use dcb_postgres::testkit as common;

mod store {
    dcb::conformance_tests!(dcb_postgres::testkit::fresh_store);
}

mod recorder {
    dcb::recorder_conformance_tests!(dcb_postgres::testkit::fresh_recorder);
}

/// The race with sixteen stores each on its own connections, so that the appends meet only in
/// the database (the macro's race shares one store, so its appends meet in the group commit).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn race_between_separately_connected_stores() {
    race_between_sixteen_stores(common::fresh_options().await).await;
}

/// The same race where the sessions' default isolation is SERIALIZABLE (set in the URL, as a
/// database or role setting would): the stores still append in READ COMMITTED, which their
/// lock-then-check batches need.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn race_whatever_the_default_isolation() {
    let url = common::url();
    let separator = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{separator}options=-c%20default_transaction_isolation%3Dserializable");
    let schema = common::fresh_schema().await;
    race_between_sixteen_stores(dcb_postgres::Options::new(url, schema).read_connections(1)).await;
}

async fn race_between_sixteen_stores(options: dcb_postgres::Options) {
    let mut handles = Vec::new();
    for _ in 0..16 {
        handles.push(dcb_postgres::PostgresStore::open(options.clone()).await.expect("open"));
    }
    let summary = dcb::testkit::race::run(handles, dcb::testkit::race::RaceConfig::default()).await;
    assert_eq!(summary.unknown_recorded + summary.unknown_absent, 0);
    common::drop_schema(options.schema()).await;
}

/// The outcomes of `appends`, made so that they form one group commit together: they are queued,
/// in order, while the append before them waits behind a lock on the events table (and lands at
/// the position after the store's head).
async fn appended_in_one_batch(
    store: &dcb_postgres::PostgresStore,
    schema: &str,
    appends: Vec<(Vec<dcb::Event>, Option<dcb::AppendCondition>)>,
) -> Vec<dcb::Result<u64>> {
    use dcb::{Event, EventStore};
    use std::time::Duration;

    let admin = common::admin().await;
    admin.batch_execute("BEGIN").await.unwrap();
    admin.batch_execute(&format!("LOCK TABLE \"{schema}\".events IN EXCLUSIVE MODE")).await.unwrap();
    // Blocked at its insert, holding the writer until the lock goes.
    let blocked = tokio::spawn({
        let store = store.clone();
        async move { store.append(vec![Event::new("Opened", "")], None).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut queued = Vec::new();
    for (events, condition) in appends {
        let store = store.clone();
        queued.push(tokio::spawn(async move { store.append(events, condition).await }));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    admin.batch_execute("COMMIT").await.unwrap();
    blocked.await.unwrap().expect("the blocked append");
    futures_util::future::join_all(queued).await.into_iter().map(|joined| joined.unwrap()).collect()
}

/// One group commit whose later conditions meet its earlier appends: the first append is
/// accepted, the second's condition matches it (refused once the first is in the table), and so
/// does the third's, though nothing is left to insert before checking it. The three are queued
/// while a batch before them waits for a table lock, so that they form the next batch together.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditions_later_in_a_batch_see_every_append_accepted_before_them() {
    use dcb::{AppendCondition, Event, EventStore, Query, QueryItem};

    let options = common::fresh_options().await;
    let store = dcb_postgres::PostgresStore::open(options.clone()).await.expect("open");
    let head = store.append(vec![Event::new("Opened", "")], None).await.expect("append");
    let on_x = || Some(AppendCondition::new(Query::from(QueryItem::tags(["x"])), Some(head)));
    let noted = || vec![Event::new("Noted", "").tagged("x")];
    let appends = vec![(noted(), None), (noted(), on_x()), (noted(), on_x())];
    let outcomes = appended_in_one_batch(&store, options.schema(), appends).await;
    assert!(outcomes[0].is_ok(), "{:?}", outcomes[0]);
    for refused in &outcomes[1..] {
        assert!(refused.as_ref().is_err_and(|e| e.is_integrity()), "{refused:?}");
    }
    let x = store.read(&QueryItem::tags(["x"]).into(), dcb::ReadOptions::default()).await.unwrap();
    assert_eq!(x.events.len(), 1);
    common::drop_schema(options.schema()).await;
}

/// One group commit of several multi-event appends, the middle one refused: the others' events are
/// stored whole (type, data, tags in their order, metadata, uuid) at consecutive positions, in
/// queue order, and the refused one leaves nothing. The events carry tags and metadata that
/// need quoting, through the batch insert rather than the lone append's shorter path.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_stores_every_accepted_append_whole_around_a_refused_one() {
    use dcb::{AppendCondition, Event, EventStore, Query, QueryItem, Uuid};

    let options = common::fresh_options().await;
    let store = dcb_postgres::PostgresStore::open(options.clone()).await.expect("open");
    let head = store.append(vec![Event::new("Opened", "")], None).await.expect("append");
    let event = |n: u8, tags: &[&str]| {
        Event::new(format!("Type{n}"), vec![n; n as usize])
            .with_tags(tags.iter().copied())
            .with_uuid(Uuid::from_u128(u128::from(n)))
            .with_metadata("k", format!("{{v{n}, \"NULL\"}}"))
            .with_metadata("ünï", "")
    };
    let first = vec![event(1, &["x", "a,b"]), event(2, &[]), event(3, &["NULL", "x", "{}"])];
    let refused = vec![event(4, &["y"]), event(5, &["y"])];
    let last = vec![event(6, &["\\", "\""]), event(7, &["x"])];
    let on_x = Some(AppendCondition::new(Query::from(QueryItem::tags(["x"])), Some(head)));
    let appends = vec![(first.clone(), None), (refused, on_x), (last.clone(), None)];
    let outcomes = appended_in_one_batch(&store, options.schema(), appends).await;
    assert_eq!(outcomes[0].as_ref().ok(), Some(&(head + 4)));
    assert!(outcomes[1].as_ref().is_err_and(|e| e.is_integrity()), "{:?}", outcomes[1]);
    assert_eq!(outcomes[2].as_ref().ok(), Some(&(head + 6)));
    let read = store.read(&Query::all(), dcb::ReadOptions::default().after(head + 1)).await.unwrap();
    let stored: Vec<(u64, Event)> = read.events.into_iter().map(|e| (e.position, e.event)).collect();
    let expected: Vec<(u64, Event)> = (head + 2..).zip(first.into_iter().chain(last)).collect();
    assert_eq!(stored, expected);
    let tagged = |tag: &str| {
        let store = store.clone();
        let query: Query = QueryItem::tags([tag]).into();
        async move { store.read(&query, dcb::ReadOptions::default()).await.unwrap().events.len() }
    };
    assert_eq!((tagged("x").await, tagged("y").await, tagged("{}").await, tagged("\\").await), (3, 0, 1, 1));
    common::drop_schema(options.schema()).await;
}

/// Tags and metadata made of the characters that PostgreSQL's array syntax gives a meaning to
/// (quotes, backslashes, braces, commas, spaces, the word NULL), mixed with non-ASCII letters,
/// come back unchanged, through single appends and through batches of several events.
#[tokio::test]
async fn random_tags_and_metadata_round_trip() {
    use dcb::testkit::Rng;
    use dcb::{Event, EventStore, Query};

    const PIECES: [&str; 12] =
        ["\"", "\\", "{", "}", ",", " ", "NULL", "null", "a", "é", "\u{1F600}", "\\\""];
    let options = common::fresh_options().await;
    let store = dcb_postgres::PostgresStore::open(options.clone()).await.expect("open");
    let mut rng = Rng::new(7);
    let text =
        |rng: &mut Rng, min: u64| -> String { (0..min + rng.below(6)).map(|_| *rng.pick(&PIECES)).collect() };
    let mut appended = Vec::new();
    for round in 0..40 {
        let events: Vec<Event> = (0..1 + rng.below(4))
            .map(|_| {
                let mut event = Event::new("Random", vec![round as u8]);
                for _ in 0..rng.below(4) {
                    event = event.tagged(text(&mut rng, 1));
                }
                for _ in 0..rng.below(3) {
                    event = event.with_metadata(text(&mut rng, 1), text(&mut rng, 0));
                }
                event
            })
            .collect();
        store.append(events.clone(), None).await.expect("append");
        appended.extend(events);
    }
    let read = store.read(&Query::all(), dcb::ReadOptions::default()).await.unwrap();
    let stored: Vec<Event> = read.events.into_iter().map(|e| e.event).collect();
    assert_eq!(stored, appended);
    common::drop_schema(options.schema()).await;
}

/// Conditions that match any event (no items) are answered from the position index, not by
/// scanning the table: after enough calls for PostgreSQL to settle on a generic plan for the
/// statements inside `append_batch`, the events table has still not been scanned again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditions_on_every_event_do_not_scan_the_table() {
    use dcb::{AppendCondition, Event, EventStore, Query};

    let options = common::fresh_options().await;
    let store = dcb_postgres::PostgresStore::open(options.clone()).await.expect("open");
    let admin = common::admin().await;
    let many: Vec<Event> = (0..2000).map(|_| Event::new("Opened", "")).collect();
    store.append(many, None).await.expect("append");
    // Scans of the table while it was empty or tiny are the planner's right choice.
    let before = sequential_scans(&store, &admin, options.schema(), 2001).await;
    let mut head = store.head().await.unwrap().unwrap();
    for _ in 0..12 {
        let condition = AppendCondition::new(Query::all(), Some(head));
        head = store.append(vec![Event::new("Noted", "")], Some(condition)).await.expect("append");
    }
    assert_eq!(sequential_scans(&store, &admin, options.schema(), 2014).await, before);
    common::drop_schema(options.schema()).await;
}

/// The sequential scans of the store's events table so far, once `inserted` inserts have been
/// reported, counting an event this appends first: a backend reports its counts at the end of a
/// transaction, at most once a second, so that event is appended after a second's pause.
async fn sequential_scans(
    store: &dcb_postgres::PostgresStore,
    admin: &tokio_postgres::Client,
    schema: &str,
    inserted: i64,
) -> i64 {
    use dcb::{Event, EventStore};
    use std::time::Duration;

    tokio::time::sleep(Duration::from_millis(1100)).await;
    store.append(vec![Event::new("Nudged", "")], None).await.expect("append");
    let sql =
        "SELECT seq_scan, n_tup_ins FROM pg_stat_user_tables WHERE schemaname = $1 AND relname = 'events'";
    for _ in 0..100 {
        admin.batch_execute("SELECT pg_stat_clear_snapshot()").await.unwrap();
        let row = admin.query_one(sql, &[&schema]).await.unwrap();
        if row.get::<_, i64>(1) >= inserted {
            return row.get(0);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("the writer's counts were never reported");
}
