//! Faults and deployment: connections killed under load, a server that cannot be reached,
//! schemas sharing a database, processes opening one schema at once, group commit keeping
//! each append's own outcome, and single appends meeting another process's.

use dcb_postgres::testkit as common;

use std::time::Duration;

use dcb::testkit::history;
use dcb::testkit::race::{self, RaceConfig};
use dcb::{AppendCondition, Error, Event, EventStore, Query, QueryItem, ReadOptions};
use dcb_postgres::{Options, PostgresStore};
use futures_util::StreamExt;

/// Reads everything, waiting out the reconnection after a kill.
async fn read_all(store: &PostgresStore) -> Vec<dcb::SequencedEvent> {
    for _ in 0..100 {
        match store.read(&Query::all(), ReadOptions::default()).await {
            Ok(read) => return read.events,
            Err(error) if error.is_retryable() => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(error) => panic!("read failed: {error}"),
        }
    }
    panic!("the store did not reconnect");
}

/// Sixteen tasks append (mostly under conditions on a few contended tags) while another task
/// terminates the store's backends again and again. Every append must either succeed, conflict,
/// or fail as unavailable; afterwards the history must be valid (nothing partial, nothing lost,
/// no condition violated) and the store must work again without being reopened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_connections_leave_a_valid_history_and_the_store_reconnects() {
    let options = common::fresh_options().await.read_connections(2);
    let app = options.schema().to_owned();
    let store = PostgresStore::open(options.clone()).await.unwrap();
    let config = RaceConfig { appends_per_task: 120, contended_tags: 4, seed: 0xF00D };
    let tasks: Vec<_> =
        (0..16).map(|task| tokio::spawn(race::contend(store.clone(), task, config.clone()))).collect();
    let admin = common::admin().await;
    let mut kills = 0;
    while !tasks.iter().all(|task| task.is_finished()) {
        tokio::time::sleep(Duration::from_millis(40)).await;
        kills += common::kill_backends(&admin, &app).await;
    }
    let mut attempts = Vec::new();
    for task in tasks {
        attempts.extend(task.await.unwrap());
    }
    let recorded = read_all(&store).await;
    let summary = history::check(&attempts, &recorded)
        .unwrap_or_else(|problems| panic!("invalid history:\n{}", problems.join("\n")));
    eprintln!("{kills} backends terminated; {summary:?}");
    assert!(kills > 10, "only {kills} backends were terminated");
    assert!(summary.appended > 0, "{summary:?}");
    assert!(
        summary.unknown_recorded + summary.unknown_absent > 0,
        "no append was caught by a kill, so the test proved little: {summary:?}"
    );
    // The store reconnected by itself: appends and reads work on the same handle.
    let mut last = Err(Error::Internal("never tried".into()));
    for _ in 0..100 {
        last = store.append(vec![Event::new("After", "")], None).await;
        if last.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(last.unwrap(), recorded.len() as u64 + 1);
    common::drop_schema(&app).await;
}

/// Appends retried until they get a definite answer; the uuid and condition make a retry of
/// an append that did commit return its original position instead of writing it twice.
async fn append_surely(store: &PostgresStore, tag: &str, uuid: dcb::Uuid) -> u64 {
    let condition = AppendCondition::new(QueryItem::tags([tag]).into(), None);
    for _ in 0..200 {
        let event = Event::new("Sub", tag.to_owned()).tagged(tag).with_uuid(uuid);
        match store.append(vec![event], Some(condition.clone())).await {
            Ok(position) => return position,
            Err(error) if error.is_retryable() => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(error) => panic!("append failed: {error}"),
        }
    }
    panic!("the store did not reconnect");
}

/// A subscription keeps going, without skipping or repeating, when every connection of the
/// store (its LISTEN connection included) is terminated twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_survive_killed_connections() {
    let options = common::fresh_options().await;
    let app = options.schema().to_owned();
    let store = PostgresStore::open(options).await.unwrap();
    let admin = common::admin().await;
    let mut stream = store.subscribe(Query::all(), None).await.unwrap();
    let mut expected = 1;
    for round in 0..3u128 {
        for i in 0..5u128 {
            let n = round * 10 + i;
            append_surely(&store, &format!("s-{n}"), dcb::Uuid::from_u128(n + 1)).await;
        }
        for _ in 0..5 {
            let next = tokio::time::timeout(Duration::from_secs(20), stream.next())
                .await
                .expect("event delivered after the kill")
                .expect("stream still open")
                .expect("no error");
            assert_eq!(next.position, expected, "skipped or repeated");
            expected += 1;
        }
        assert!(common::kill_backends(&admin, &app).await > 0);
    }
    common::drop_schema(&app).await;
}

/// Connecting to a server that is not there fails as unavailable, naming the URL tried without
/// its password.
#[tokio::test]
async fn an_unreachable_server_is_reported_with_the_url_but_not_the_password() {
    let url = "postgres://someone:hunter2@127.0.0.1:1/nowhere";
    let error =
        PostgresStore::open(Options::new(url, "anything")).await.err().expect("nothing listens on port 1");
    let message = error.to_string();
    assert!(error.is_retryable(), "{message}");
    assert!(message.contains("postgres://someone@127.0.0.1:1/nowhere"), "{message}");
    assert!(!message.contains("hunter2"), "{message}");
}

/// A database that is not UTF-8 is refused on open, naming its encoding, for the store and the
/// recorder alike (in it, one event the encoding cannot hold would fail its whole batch).
#[tokio::test]
async fn a_database_that_is_not_utf8_is_refused_on_open() {
    let name = format!("dcb_latin1_{}", std::process::id());
    let admin = common::admin().await;
    let create =
        format!("CREATE DATABASE {name} ENCODING 'LATIN1' LC_COLLATE 'C' LC_CTYPE 'C' TEMPLATE template0");
    admin.batch_execute(&create).await.unwrap();
    let url = common::url();
    let url = format!("{}/{name}", &url[..url.rfind('/').unwrap()]);
    let store = PostgresStore::open(Options::new(url.clone(), "s")).await.err();
    let recorder = dcb_postgres::PostgresRecorder::open(Options::new(url, "s")).await.err();
    admin.batch_execute(&format!("DROP DATABASE {name} WITH (FORCE)")).await.unwrap();
    for error in [store.expect("the store was refused"), recorder.expect("the recorder was refused")] {
        assert!(matches!(&error, Error::InvalidArgument(m) if m.contains("LATIN1")), "{error}");
    }
}

/// A malformed schema name is refused before connecting.
#[tokio::test]
async fn bad_schema_names_are_invalid_arguments() {
    let error = PostgresStore::open(Options::new(common::url(), "no; drop")).await.err().expect("refused");
    assert!(matches!(error, Error::InvalidArgument(_)), "{error}");
}

/// Two stores in one database, each in its own schema with its own functions, do not see each
/// other's events or notifications.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stores_in_different_schemas_are_independent() {
    let a = common::fresh_store().await;
    let b_options = common::fresh_options().await;
    let b = PostgresStore::open(b_options.clone()).await.unwrap();
    let mut b_stream = b.subscribe(Query::all(), None).await.unwrap();
    a.append(vec![Event::new("A", "").tagged("t")], None).await.unwrap();
    assert_eq!(a.head().await.unwrap(), Some(1));
    assert_eq!(b.head().await.unwrap(), None);
    assert!(
        tokio::time::timeout(Duration::from_millis(300), b_stream.next()).await.is_err(),
        "b's subscription saw a's event"
    );
    b.append(vec![Event::new("B", "")], None).await.unwrap();
    let seen =
        tokio::time::timeout(Duration::from_secs(10), b_stream.next()).await.unwrap().unwrap().unwrap();
    assert_eq!((seen.position, seen.event.event_type.as_str()), (1, "B"));
    let functions: i64 = common::admin()
        .await
        .query_one(
            "SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
             WHERE n.nspname = $1",
            &[&b_options.schema()],
        )
        .await
        .unwrap()
        .get(0);
    assert_eq!(functions, 3, "the schema holds its own functions");
    common::drop_schema(b_options.schema()).await;
}

/// Reopening a schema leaves its functions in place (appends other processes are running meet no
/// dropped function); functions made by other text, as by an older or newer build, are made again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reopening_keeps_the_functions_unless_they_changed() {
    let options = common::fresh_options().await;
    let schema = options.schema().to_owned();
    let admin = common::admin().await;
    let function_ids = async || -> Vec<u32> {
        let rows = admin
            .query(
                "SELECT p.oid FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                 WHERE n.nspname = $1 ORDER BY p.proname",
                &[&schema],
            )
            .await
            .unwrap();
        rows.iter().map(|row| row.get(0)).collect()
    };
    let first = PostgresStore::open(options.clone()).await.unwrap();
    let created = function_ids().await;
    assert_eq!(created.len(), 3);
    let second = PostgresStore::open(options.clone()).await.unwrap();
    assert_eq!(function_ids().await, created, "reopening made the functions again");
    // An older build, opening the schema meanwhile, drops and creates the functions as it knows
    // them: they carry no digest of ours.
    admin.batch_execute(&format!("COMMENT ON FUNCTION \"{schema}\".append_batch IS NULL")).await.unwrap();
    let third = PostgresStore::open(options).await.unwrap();
    let remade = function_ids().await;
    assert_eq!(remade.len(), 3);
    assert!(remade.iter().all(|id| !created.contains(id)), "changed functions were kept");
    for (i, store) in [first, second, third].iter().enumerate() {
        assert_eq!(store.append(vec![Event::new("E", "")], None).await.unwrap(), i as u64 + 1);
    }
    common::drop_schema(&schema).await;
}

/// Several processes (here: stores) opening the same new schema at the same moment all succeed
/// and share one sequence.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_one_schema_concurrently_is_safe() {
    let options = common::fresh_options().await;
    let opens: Vec<_> = (0..6).map(|_| tokio::spawn(PostgresStore::open(options.clone()))).collect();
    let mut stores = Vec::new();
    for open in opens {
        stores.push(open.await.unwrap().expect("concurrent open"));
    }
    for (i, store) in stores.iter().enumerate() {
        assert_eq!(store.append(vec![Event::new("E", "")], None).await.unwrap(), i as u64 + 1);
    }
    common::drop_schema(options.schema()).await;
}

/// Many appends at once from one store are batched, yet each keeps its own condition and
/// outcome: of 32 appends that each require the tag to be unused, exactly one succeeds; 32
/// appends on distinct tags all succeed, at distinct consecutive positions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn group_commit_keeps_each_append_its_own_outcome() {
    let store = common::fresh_store().await;
    let condition = AppendCondition::new(QueryItem::tags(["same"]).into(), None);
    let racers: Vec<_> = (0..32)
        .map(|i| {
            let store = store.clone();
            let condition = condition.clone();
            tokio::spawn(async move {
                let event = Event::new("Claimed", format!("{i}")).tagged("same");
                store.append(vec![event], Some(condition)).await
            })
        })
        .collect();
    let mut won = 0;
    for racer in racers {
        match racer.await.unwrap() {
            Ok(_) => won += 1,
            Err(Error::Integrity(_)) => {}
            Err(error) => panic!("unexpected: {error}"),
        }
    }
    assert_eq!(won, 1);
    let distinct: Vec<_> = (0..32)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move {
                let tag = format!("own-{i}");
                let condition = AppendCondition::new(QueryItem::tags([tag.clone()]).into(), None);
                let events = vec![Event::new("Own", ""), Event::new("Own", "")]
                    .into_iter()
                    .map(|e| e.tagged(tag.clone()))
                    .collect();
                store.append(events, Some(condition)).await.unwrap()
            })
        })
        .collect();
    let mut ends = Vec::new();
    for task in distinct {
        ends.push(task.await.unwrap());
    }
    ends.sort_unstable();
    assert_eq!(ends, (1..=32).map(|i| 1 + 2 * i).collect::<Vec<u64>>());
    let all = store.read(&Query::all(), ReadOptions::default()).await.unwrap();
    for pair in all.events[1..].chunks(2) {
        assert_eq!(pair[0].event.tags, pair[1].event.tags, "a batch's events were interleaved");
    }
}

/// The largest append the limits allow is recorded whole, each event with its own tags and
/// metadata, at consecutive positions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_maximal_append_is_recorded_whole() {
    let store = common::fresh_store().await;
    store.append(vec![Event::new("Before", "")], None).await.unwrap();
    let events: Vec<Event> = (0..dcb::limits::MAX_EVENTS_PER_APPEND)
        .map(|i| {
            Event::new(format!("T{}", i % 7), format!("{i}"))
                .with_tags((0..i % 3).map(|t| format!("tag-{i}-{t}")))
                .with_metadata("i", format!("{i}"))
        })
        .collect();
    let started = std::time::Instant::now();
    let last = store.append(events.clone(), None).await.unwrap();
    eprintln!("{} events appended in {:?}", events.len(), started.elapsed());
    assert_eq!(last, 1 + events.len() as u64);
    let read = store.read(&Query::all(), ReadOptions::default().after(1)).await.unwrap();
    let recorded: Vec<Event> = read.events.into_iter().map(|e| e.event).collect();
    assert!(recorded == events, "the events did not round-trip");
    let tagged = store.read(&QueryItem::tags(["tag-9998-1"]).into(), ReadOptions::default()).await.unwrap();
    assert_eq!(tagged.events.len(), 1);
    assert_eq!(tagged.events[0].position, 1 + 9999);
}

/// An append of a single event (which `append_batch` inserts by its shortest path) keeps
/// metadata, a repeated tag and a uuid, and is found once by that tag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_event_round_trips_with_metadata_and_a_repeated_tag() {
    let store = common::fresh_store().await;
    let event = Event::new("Lone", vec![0u8, 255])
        .with_tags(["t", "u", "t"])
        .with_uuid(dcb::Uuid::from_u128(7))
        .with_metadata("k", "v")
        .with_metadata("a", "");
    assert_eq!(store.append(vec![event.clone()], None).await.unwrap(), 1);
    let read = store.read(&QueryItem::tags(["t"]).into(), ReadOptions::default()).await.unwrap();
    assert_eq!(read.events.len(), 1);
    assert_eq!(read.events[0].event, event);
}

/// Opening a schema that has all its tables and indexes takes no lock on them: it completes
/// while another process's append is in flight (here: an insert left uncommitted, which holds
/// the same lock on `events` an append does), instead of waiting for it and holding up new ones.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_does_not_wait_for_appends_in_flight() {
    let options = common::fresh_options().await;
    let schema = options.schema().to_owned();
    let first = PostgresStore::open(options.clone()).await.unwrap();
    let admin = common::admin().await;
    admin
        .batch_execute(&format!(
            "BEGIN; INSERT INTO \"{schema}\".events (position, type, data, tags) VALUES (1, 'E', '', '{{}}')"
        ))
        .await
        .unwrap();
    let second = tokio::time::timeout(Duration::from_secs(5), PostgresStore::open(options)).await;
    admin.batch_execute("ROLLBACK").await.unwrap();
    let second = second.expect("the open waited for the transaction on events").unwrap();
    assert_eq!(second.append(vec![Event::new("E", "")], None).await.unwrap(), 1);
    assert_eq!(first.append(vec![Event::new("E", "")], None).await.unwrap(), 2);
    common::drop_schema(&schema).await;
}

/// The store's functions in `schema`: their oids, names and comments.
async fn function_comments(admin: &tokio_postgres::Client, schema: &str) -> Vec<(u32, String, String)> {
    let rows = admin
        .query(
            "SELECT p.oid, p.proname::text, obj_description(p.oid, 'pg_proc') FROM pg_proc p \
             JOIN pg_namespace n ON n.oid = p.pronamespace WHERE n.nspname = $1 ORDER BY p.proname",
            &[&schema],
        )
        .await
        .unwrap();
    rows.iter().map(|row| (row.get(0), row.get(1), row.get(2))).collect()
}

/// A build refuses to open a schema whose functions a newer build made (a higher schema version
/// in their comments), naming both versions, and leaves those functions alone: reinstalling its
/// own would break the newer build's running appends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schema_of_a_newer_build_is_not_downgraded() {
    let options = common::fresh_options().await;
    let schema = options.schema().to_owned();
    let admin = common::admin().await;
    let store = PostgresStore::open(options.clone()).await.unwrap();
    let ours = function_comments(&admin, &schema).await;
    let version: u32 =
        ours[0].2.strip_prefix("dcb store v").unwrap().split(' ').next().unwrap().parse().unwrap();
    let newer = format!("dcb store v{} 0123456789abcdef", version + 1);
    for (_, function, _) in &ours {
        admin
            .batch_execute(&format!("COMMENT ON FUNCTION \"{schema}\".{function} IS '{newer}'"))
            .await
            .unwrap();
    }
    let error = PostgresStore::open(options).await.err().expect("a newer schema was opened");
    let message = error.to_string();
    assert!(matches!(error, Error::Internal(_)), "{message}");
    assert!(message.contains(&format!("version {}", version + 1)), "{message}");
    assert!(message.contains(&format!("version {version}")), "{message}");
    let kept = function_comments(&admin, &schema).await;
    assert_eq!(kept.iter().map(|f| f.0).collect::<Vec<_>>(), ours.iter().map(|f| f.0).collect::<Vec<_>>());
    assert!(kept.iter().all(|f| f.2 == newer), "{kept:?}");
    assert_eq!(store.append(vec![Event::new("E", "")], None).await.unwrap(), 1);
    common::drop_schema(&schema).await;
}

/// When another build replaces the functions under a running store (as a build from before
/// schema versions would, downgrading them), its appends fail saying so, not with a bare
/// "function does not exist"; once this build's functions are back, they work again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn functions_changed_by_another_build_are_reported_as_such() {
    let options = common::fresh_options().await;
    let schema = options.schema().to_owned();
    let store = PostgresStore::open(options.clone()).await.unwrap();
    assert_eq!(store.append(vec![Event::new("E", "")], None).await.unwrap(), 1);
    common::admin()
        .await
        .batch_execute(&format!(
            "DROP FUNCTION \"{schema}\".append_batch; \
             CREATE FUNCTION \"{schema}\".append_batch(a_events int[]) RETURNS bigint[] \
             LANGUAGE sql AS 'SELECT NULL::bigint[]'"
        ))
        .await
        .unwrap();
    // Two events, which take `append_batch` (a lone event's statement calls only the version
    // guard, below).
    let two = || vec![Event::new("E", ""), Event::new("E", "")];
    let error = store.append(two(), None).await.unwrap_err();
    let message = error.to_string();
    assert!(matches!(error, Error::Internal(_)), "{message}");
    assert!(message.contains("another (older or newer) build"), "{message}");
    drop(PostgresStore::open(options.clone()).await.unwrap());
    assert_eq!(store.append(two(), None).await.unwrap(), 3);

    // A build of another version drops this version's functions, the one that the lone
    // append's statement calls among them: that statement fails the same way.
    drop_functions_like(&schema, "store\\_protocol\\_v%").await;
    let error = store.append(vec![Event::new("E", "")], None).await.unwrap_err();
    assert!(error.to_string().contains("another (older or newer) build"), "{error}");
    drop(PostgresStore::open(options).await.unwrap());
    assert_eq!(store.append(vec![Event::new("E", "")], None).await.unwrap(), 4);
    common::drop_schema(&schema).await;
}

/// A single event's append, and a group commit of aggregate inserts, go as plain statements: with
/// the PL/pgSQL functions dropped they still work, while an append of two events, which calls
/// `append_batch`, fails.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn single_appends_and_aggregate_inserts_call_no_plpgsql_function() {
    use dcb::recorder::AggregateRecorder;

    let options = common::fresh_options().await;
    let schema = options.schema().to_owned();
    let store = PostgresStore::open(options.clone()).await.unwrap();
    let recorder = dcb_postgres::PostgresRecorder::open(options).await.unwrap();
    drop_functions_like(&schema, "append\\_batch").await;
    drop_functions_like(&schema, "insert\\_aggregate\\_batch").await;
    let on_x = || Some(AppendCondition::new(QueryItem::tags(["x"]).into(), None));
    assert_eq!(store.append(vec![Event::new("E", "").tagged("x")], on_x()).await.unwrap(), 1);
    assert!(store.append(vec![Event::new("E", "").tagged("x")], on_x()).await.unwrap_err().is_integrity());
    let two = vec![Event::new("E", ""), Event::new("E", "")];
    assert!(store.append(two, None).await.is_err(), "two events went without append_batch");
    assert_eq!(recorder.insert_events(vec![happened("a", 1), happened("b", 1)]).await.unwrap(), 2);
    common::drop_schema(&schema).await;
}

/// Drops the functions of `schema` whose names are `LIKE` `pattern`, as a build of another
/// version does with the functions it does not make.
async fn drop_functions_like(schema: &str, pattern: &str) {
    let admin = common::admin().await;
    let rows = admin
        .query(
            "SELECT p.oid::regprocedure::text FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
             WHERE n.nspname = $1 AND p.proname LIKE $2",
            &[&schema, &pattern],
        )
        .await
        .unwrap();
    assert!(!rows.is_empty(), "no function of {schema} is like {pattern}");
    for row in rows {
        let function: String = row.get(0);
        admin.batch_execute(&format!("DROP FUNCTION {function}")).await.unwrap();
    }
}

/// The recorder's plain insert likewise, once another build has dropped this version's
/// functions.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_recorder_reports_functions_changed_by_another_build() {
    use dcb::recorder::AggregateRecorder;

    let options = common::fresh_options().await;
    let schema = options.schema().to_owned();
    let recorder = dcb_postgres::PostgresRecorder::open(options.clone()).await.unwrap();
    assert_eq!(recorder.insert_events(vec![happened("a", 1)]).await.unwrap(), 1);
    drop_functions_like(&schema, "recorder\\_protocol\\_v%").await;
    let error = recorder.insert_events(vec![happened("a", 2)]).await.unwrap_err();
    assert!(error.to_string().contains("another (older or newer) build"), "{error}");
    drop(dcb_postgres::PostgresRecorder::open(options).await.unwrap());
    assert_eq!(recorder.insert_events(vec![happened("a", 2)]).await.unwrap(), 2);
    common::drop_schema(&schema).await;
}

/// Begins a transaction on `admin` that holds the append lock of `schema`, as another process's
/// append does while it runs: a call of `append_batch` with an empty batch.
async fn hold_append_lock(admin: &tokio_postgres::Client, schema: &str) {
    let arguments = "SELECT pronargs::int FROM pg_proc \
                     WHERE proname = 'append_batch' AND pronamespace = quote_ident($1)::regnamespace";
    let count: i32 = admin.query_one(arguments, &[&schema]).await.unwrap().get(0);
    let empty = vec!["'{}'"; count as usize].join(", ");
    admin.batch_execute(&format!("BEGIN; SELECT \"{schema}\".append_batch({empty})")).await.unwrap();
}

/// An append that waits for the schema's append lock while another transaction holds it, and
/// its outcome once that transaction commits 300 ms later.
async fn append_behind_a_held_lock(store: &PostgresStore, schema: &str) -> dcb::Result<u64> {
    let admin = common::admin().await;
    hold_append_lock(&admin, schema).await;
    let append = tokio::spawn({
        let store = store.clone();
        async move { store.append(vec![Event::new("E", "")], None).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    admin.batch_execute("COMMIT").await.unwrap();
    append.await.unwrap()
}

/// Begins a transaction on `admin` that appends one event of type `Held` tagged `tag` through
/// `append_batch`, as another process's append does, and holds the append lock until it ends.
async fn begin_append_of_another_process(admin: &tokio_postgres::Client, schema: &str, tag: &str) {
    let one_event = format!(
        "BEGIN; SELECT \"{schema}\".append_batch('{{1}}', '{{f}}', '{{0}}', '{{0}}', '{{0}}', '{{f}}', \
         '{{-1}}', '{{NULL}}', '{{NULL}}', '{{}}', '{{}}', '{{}}', '{{}}', '{{}}', '{{}}', '{{}}', '{{1}}', '{{1}}', \
         '{{Held}}', '{{\"\"}}', '{{NULL}}', ARRAY['{{\"{tag}\"}}'], '{{\"{{}}\"}}', '{{\"{{}}\"}}')"
    );
    admin.batch_execute(&one_event).await.unwrap();
}

/// A single append whose statement starts while another process's append holds the lock (so its
/// snapshot misses that append) still sees that append once it commits: a condition the other
/// event matches is refused, and accepted appends land after it, every position taken once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_append_sees_the_append_it_waited_for() {
    let options = common::fresh_options().await;
    let schema = options.schema().to_owned();
    let store = PostgresStore::open(options).await.unwrap();
    let head = store.append(vec![Event::new("E", "")], None).await.unwrap();
    let on = |tag: &str| Some(AppendCondition::new(QueryItem::tags([tag]).into(), Some(head)));
    let admin = common::admin().await;
    let mut outcomes = Vec::new();
    for condition in [on("x"), None, on("z")] {
        begin_append_of_another_process(&admin, &schema, "x").await;
        let append = tokio::spawn({
            let store = store.clone();
            async move { store.append(vec![Event::new("Mine", "").tagged("y")], condition).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        admin.batch_execute("COMMIT").await.unwrap();
        outcomes.push(append.await.unwrap());
    }
    assert!(outcomes[0].as_ref().is_err_and(Error::is_integrity), "{:?}", outcomes[0]);
    assert_eq!(outcomes[1].as_ref().ok(), Some(&(head + 3)));
    assert_eq!(outcomes[2].as_ref().ok(), Some(&(head + 5)));
    let stored: Vec<(u64, String)> =
        read_all(&store).await.into_iter().map(|e| (e.position, e.event.event_type)).collect();
    let types = ["E", "Held", "Held", "Mine", "Held", "Mine"];
    assert_eq!(stored, (1..).zip(types.map(String::from)).collect::<Vec<_>>());
    common::drop_schema(&schema).await;
}

/// Two appends queued at once form one batch: on a runtime of one thread the writer runs only
/// once both are queued.
async fn appended_together(
    store: &PostgresStore,
    first: (Vec<Event>, Option<AppendCondition>),
    second: (Vec<Event>, Option<AppendCondition>),
    meanwhile: impl Future<Output = ()>,
) -> (dcb::Result<u64>, dcb::Result<u64>) {
    let (first, second, ()) =
        tokio::join!(store.append(first.0, first.1), store.append(second.0, second.1), meanwhile);
    (first, second)
}

/// A batch of single-event appends goes as one plain statement: with `append_batch` dropped it
/// still works, refusing the append whose condition meets an event and accepting the other, while
/// a batch of another shape (one append's condition on the other's tag) fails.
#[tokio::test]
async fn batches_of_single_events_call_no_plpgsql_function() {
    let options = common::fresh_options().await;
    let schema = options.schema().to_owned();
    let store = PostgresStore::open(options).await.unwrap();
    assert_eq!(store.append(vec![Event::new("E", "").tagged("x")], None).await.unwrap(), 1);
    drop_functions_like(&schema, "append\\_batch").await;
    let tagged = |tag: &str| vec![Event::new("E", "").tagged(tag).with_metadata("k", "{\"v\"}")];
    // The second condition checks `x` only after its event at 1, from a position of its own.
    let from_one = on("x").map(|c| c.with_item_after(0, 1));
    let (meets, misses) =
        appended_together(&store, (tagged("y"), on("x")), (tagged("z"), from_one), async {}).await;
    assert!(meets.as_ref().is_err_and(Error::is_integrity), "{meets:?}");
    assert_eq!(misses.unwrap(), 2);
    let stored = read_all(&store).await;
    assert_eq!(stored[1].event, tagged("z")[0]);
    let (first, second) =
        appended_together(&store, (tagged("w"), None), (tagged("v"), on("w")), async {}).await;
    assert!(first.is_err() && second.is_err(), "a batch that needs append_batch went without it");
    common::drop_schema(&schema).await;
}

/// A condition on one tag alone after no position.
fn on(tag: &str) -> Option<AppendCondition> {
    Some(AppendCondition::new(QueryItem::tags([tag]).into(), None))
}

/// A batch of single-event appends with a refused append that is a retry of one recorded goes
/// through `append_batch`, which recognises the retry: it answers the original position, and the
/// other append of the batch lands once.
#[tokio::test]
async fn a_retry_in_a_batch_of_single_events_answers_its_original_position() {
    let options = common::fresh_options().await;
    let store = PostgresStore::open(options.clone()).await.unwrap();
    let sent = vec![Event::new("Joined", "").tagged("r").with_uuid(dcb::Uuid::from_u128(0x5EED))];
    assert_eq!(store.append(sent.clone(), on("r")).await.unwrap(), 1);
    let other = vec![Event::new("Other", "").tagged("s")];
    let (retried, accepted) = appended_together(&store, (sent, on("r")), (other, on("s")), async {}).await;
    assert_eq!((retried.unwrap(), accepted.unwrap()), (1, 2));
    assert_eq!(read_all(&store).await.len(), 2);
    common::drop_schema(options.schema()).await;
}

/// Such a batch, its statement started while another process's append holds the lock (so its
/// snapshot misses that append), still sees that append once it commits: the condition the other
/// event matches is refused, and the other append lands after it.
#[tokio::test]
async fn a_batch_of_single_events_sees_the_append_it_waited_for() {
    let options = common::fresh_options().await;
    let schema = options.schema().to_owned();
    let store = PostgresStore::open(options).await.unwrap();
    let admin = common::admin().await;
    begin_append_of_another_process(&admin, &schema, "x").await;
    let mine = |tag: &str| vec![Event::new("Mine", "").tagged(tag)];
    let commit = async {
        tokio::time::sleep(Duration::from_millis(300)).await;
        admin.batch_execute("COMMIT").await.unwrap();
    };
    let (meets, misses) = appended_together(&store, (mine("x"), on("x")), (mine("y"), on("y")), commit).await;
    assert!(meets.as_ref().is_err_and(Error::is_integrity), "{meets:?}");
    assert_eq!(misses.unwrap(), 2);
    let stored: Vec<(u64, String)> =
        read_all(&store).await.into_iter().map(|e| (e.position, e.event.event_type)).collect();
    assert_eq!(stored, [(1, "Held".to_owned()), (2, "Mine".to_owned())]);
    common::drop_schema(&schema).await;
}

/// Begins a transaction on `admin` that calls `insert_aggregate_batch`, as another process's
/// group commit does, inserting version 1 of aggregate `id` (or nothing), and holds the
/// recorder's lock until it ends.
async fn begin_insert_of_another_process(admin: &tokio_postgres::Client, schema: &str, id: Option<&str>) {
    let inserts = match id {
        Some(id) => format!("'{{1}}', '{{{id}}}', '{{1}}', '{{Held}}', '{{\"\"}}'"),
        None => "'{}', '{}', '{}', '{}', '{}'".to_owned(),
    };
    admin
        .batch_execute(&format!("BEGIN; SELECT \"{schema}\".insert_aggregate_batch({inserts})"))
        .await
        .unwrap();
}

/// A group commit of several inserts goes as the plain statement: with
/// `insert_aggregate_batch` dropped, two inserts queued at once (on a runtime of one thread the
/// group commit runs only once both are queued) each answer the notification id of their own
/// last event.
#[tokio::test]
async fn aggregate_inserts_committed_together_call_no_plpgsql_function() {
    use dcb::recorder::AggregateRecorder;

    let options = common::fresh_options().await;
    let schema = options.schema().to_owned();
    let recorder = dcb_postgres::PostgresRecorder::open(options).await.unwrap();
    drop_functions_like(&schema, "insert\\_aggregate\\_batch").await;
    let (two, one) = tokio::join!(
        recorder.insert_events(vec![happened("a", 1), happened("a", 2)]),
        recorder.insert_events(vec![happened("b", 1)]),
    );
    assert_eq!((two.unwrap(), one.unwrap()), (2, 3));
    // One transaction wrote all three rows: the two inserts went as one batch.
    let transactions = format!("SELECT count(DISTINCT xmin::text) FROM \"{schema}\".aggregate_events");
    let count: i64 = common::admin().await.query_one(&transactions, &[]).await.unwrap().get(0);
    assert_eq!(count, 1);
    common::drop_schema(&schema).await;
}

/// An aggregate event of type `Happened`.
fn happened(id: &str, version: u64) -> dcb::recorder::AggregateEvent {
    dcb::recorder::AggregateEvent {
        aggregate_id: id.into(),
        version,
        event_type: "Happened".into(),
        data: "{}".into(),
    }
}

/// The recorder's single inserts likewise: one that waited for another process's insert takes
/// the notification id after it, and one of a version the other inserted is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_aggregate_insert_sees_the_insert_it_waited_for() {
    use dcb::recorder::AggregateRecorder;

    let options = common::fresh_options().await;
    let schema = options.schema().to_owned();
    let recorder = dcb_postgres::PostgresRecorder::open(options).await.unwrap();
    let admin = common::admin().await;
    let mut outcomes = Vec::new();
    for (theirs, mine) in [("a", "b"), ("c", "c")] {
        begin_insert_of_another_process(&admin, &schema, Some(theirs)).await;
        let insert = tokio::spawn({
            let recorder = recorder.clone();
            let mine = happened(mine, 1);
            async move { recorder.insert_events(vec![mine]).await }
        });
        tokio::time::sleep(Duration::from_millis(300)).await;
        admin.batch_execute("COMMIT").await.unwrap();
        outcomes.push(insert.await.unwrap());
    }
    assert_eq!(outcomes[0].as_ref().ok(), Some(&2));
    assert!(outcomes[1].as_ref().is_err_and(Error::is_integrity), "{:?}", outcomes[1]);
    assert_eq!(recorder.count().await.unwrap(), 3);
    common::drop_schema(&schema).await;
}

/// Several inserts queued together are one group commit, through the plain statement: each
/// answers the notification id of its own last event.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn aggregate_inserts_committed_together_each_answer_their_last_notification_id() {
    use dcb::recorder::AggregateRecorder;

    let options = common::fresh_options().await;
    let schema = options.schema().to_owned();
    let recorder = dcb_postgres::PostgresRecorder::open(options).await.unwrap();
    let admin = common::admin().await;
    let insert = |id: &'static str, count: u64| {
        let recorder = recorder.clone();
        let events = (1..=count).map(|version| happened(id, version)).collect();
        tokio::spawn(async move { recorder.insert_events(events).await })
    };
    begin_insert_of_another_process(&admin, &schema, None).await;
    // The first waits for the lock, holding the group commit; the others queue behind it, in
    // turn.
    let first = insert("a", 1);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut together = Vec::new();
    for (id, count) in [("b", 2), ("c", 3), ("d", 1)] {
        together.push(insert(id, count));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    admin.batch_execute("COMMIT").await.unwrap();
    assert_eq!(first.await.unwrap().unwrap(), 1);
    let mut answered = Vec::new();
    for insert in together {
        answered.push(insert.await.unwrap().unwrap() as i64);
    }
    let rows = admin
        .query(
            &format!(
                "SELECT max(notification_id) FROM \"{schema}\".aggregate_events \
                 WHERE aggregate_id IN ('b', 'c', 'd') GROUP BY aggregate_id ORDER BY aggregate_id"
            ),
            &[],
        )
        .await
        .unwrap();
    let recorded: Vec<i64> = rows.iter().map(|row| row.get(0)).collect();
    assert_eq!(answered, recorded);
    assert_eq!(answered, [3, 6, 7]);
    common::drop_schema(&schema).await;
}

/// A `lock_timeout` set for the role (or the database) does not make contended appends fail:
/// the store's sessions turn it off, so an append waits for the lock as long as it is held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_timeout_of_the_role_does_not_fail_appends() {
    let role = format!("dcb_lock_timeout_{}", std::process::id());
    let admin = common::admin().await;
    admin
        .batch_execute(&format!(
            "DROP ROLE IF EXISTS {role}; CREATE ROLE {role} LOGIN SUPERUSER; \
             ALTER ROLE {role} SET lock_timeout = '20ms'"
        ))
        .await
        .unwrap();
    let url = common::url();
    let (scheme, rest) = url.split_once("://").expect("a postgres:// test URL");
    let host = rest.split_once('@').map_or(rest, |(_, host)| host);
    let schema = common::fresh_schema().await;
    let store =
        PostgresStore::open(Options::new(format!("{scheme}://{role}@{host}"), schema.clone())).await.unwrap();
    let outcome = append_behind_a_held_lock(&store, &schema).await;
    drop(store);
    common::drop_schema(&schema).await;
    admin.batch_execute(&format!("DROP ROLE {role}")).await.unwrap();
    assert_eq!(outcome.unwrap(), 1);
}

/// A `lock_timeout` the URL sets is kept, and an append it cuts short (nothing written) is
/// retryable, not an internal error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_timeout_of_the_url_makes_appends_unavailable() {
    let url = common::url();
    let separator = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{separator}options=-c%20lock_timeout%3D20ms");
    let schema = common::fresh_schema().await;
    let store = PostgresStore::open(Options::new(url, schema.clone())).await.unwrap();
    let error = append_behind_a_held_lock(&store, &schema).await.unwrap_err();
    assert!(error.is_retryable(), "{error}");
    assert_eq!(store.append(vec![Event::new("E", "")], None).await.unwrap(), 1);
    common::drop_schema(&schema).await;
}
