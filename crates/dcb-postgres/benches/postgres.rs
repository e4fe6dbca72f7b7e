//! Benchmark of the PostgreSQL store against the database's own floor, measured in the same run
//! from the same client: a plain one-row `INSERT` committed on its own.
//!
//! ```sh
//! scripts/ensure-postgres
//! DCB_BENCH_EVENTS=10000 cargo bench -p dcb-postgres --bench postgres
//! DCB_BENCH_EVENTS=10000000 cargo bench -p dcb-postgres --bench postgres   # pre-fills 10M events
//! ```
//!
//! Settings (environment): `DCB_BENCH_URL` (default: `DCB_TEST_POSTGRES_URL`, else the local
//! `dcb_test` database), `DCB_BENCH_EVENTS` (events pre-filled before measuring, default 10,000),
//! `DCB_BENCH_SECONDS` (length of each measured window, default 2), `DCB_BENCH_ROUNDS` (windows
//! per figure, alternating with the floor, default 3). The pre-filled schema `dcbbench2_<events>`
//! is loaded afresh for up to a million events, and above that kept and reused by later runs
//! with the same volume (which then measure a store grown by the earlier runs' appends).
//!
//! The pre-fill is a bulk loader that writes the store's tables with `COPY`. Events come in
//! blocks of 1,000 positions holding 100 tags (`pre-<n>`) of ten events each, 100 positions
//! apart, as the events of one entity are spread over a stretch of time in a real store; within
//! a tag the ten events have the ten types `Type0`..`Type9`, so a type+tag item matches one.
//!
//! Reads are measured twice: on tags of the latest 10,000 events (the recently active entities:
//! the same number of distinct tags at every volume, a working set that stays in PostgreSQL's
//! buffers, so the comparison across volumes shows whether the indexes stay flat) and on tags
//! drawn from the whole store (at ten million events this also measures the memory tier:
//! PostgreSQL's default 128 MB of buffers against about 2.5 GB of tables).
//! Before measuring, every table and index is read once (see `warm`): the figures are those of a
//! store whose files are in the operating system's page cache, PostgreSQL's own buffers being
//! left at the server's setting.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use dcb::testkit::Rng;
use dcb::{AppendCondition, Bytes, Event, EventStore, Query, QueryItem, ReadOptions};
use dcb_postgres::{Options, PostgresStore};
use futures_util::SinkExt;
use tokio_postgres::{Client, NoTls};

const SYNC_OFF: &str = "options=-c%20synchronous_commit%3Doff";
const CLIENTS: usize = 32;
/// Positions per block of the pre-fill; each holds `BLOCK / 10` tags.
const BLOCK: u64 = 1000;
/// Pre-filled volumes up to this are loaded afresh on every run; larger ones are kept.
const FRESH_UP_TO: u64 = 1_000_000;
/// Events whose tags make up the hot set of the reads.
const HOT_EVENTS: u64 = 10_000;

/// The tag of event `i` (from 1) in the pre-fill.
fn tag_of(i: u64) -> u64 {
    (i - 1) / BLOCK * (BLOCK / 10) + (i - 1) % BLOCK % (BLOCK / 10)
}

/// The position of event `k` (0..10) of tag `tag` in the pre-fill; its type is `Type<k>`.
fn position_of(tag: u64, k: u64) -> u64 {
    tag / (BLOCK / 10) * BLOCK + tag % (BLOCK / 10) + 1 + k * (BLOCK / 10)
}

struct Settings {
    url: String,
    events: u64,
    window: Duration,
    rounds: usize,
}

fn settings() -> Settings {
    let var = |name: &str| std::env::var(name).ok();
    let number = |name: &str, default: u64| var(name).and_then(|v| v.parse().ok()).unwrap_or(default);
    Settings {
        url: var("DCB_BENCH_URL")
            .or_else(|| var("DCB_TEST_POSTGRES_URL"))
            .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/dcb_test".to_owned()),
        events: (number("DCB_BENCH_EVENTS", 10_000) / BLOCK).max(1) * BLOCK,
        window: Duration::from_secs(number("DCB_BENCH_SECONDS", 2)),
        rounds: number("DCB_BENCH_ROUNDS", 3) as usize,
    }
}

fn with_sync_off(url: &str) -> String {
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}{SYNC_OFF}")
}

async fn connect(url: &str) -> Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.expect("connect");
    tokio::spawn(connection);
    client
}

/// Latencies of one kind of operation, gathered over several windows.
#[derive(Default)]
struct Samples(Vec<Duration>);

impl Samples {
    fn median_us(&mut self) -> f64 {
        self.0.sort_unstable();
        self.0[self.0.len() / 2].as_secs_f64() * 1e6
    }
    fn per_second(&self) -> f64 {
        self.0.len() as f64 / self.0.iter().sum::<Duration>().as_secs_f64()
    }
}

/// Runs `op` back to back for `window`, adding each latency to `samples`.
async fn measure<F, Fut>(samples: &mut Samples, window: Duration, mut op: F)
where
    F: FnMut(u64) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let start = Instant::now();
    let mut i = 0;
    while start.elapsed() < window {
        let t = Instant::now();
        op(i).await;
        samples.0.push(t.elapsed());
        i += 1;
    }
}

/// Pre-fills the store's tables with `events` events by `COPY`, unless an earlier run did.
async fn prefill(url: &str, schema: &str, events: u64) {
    let client = connect(url).await;
    let head: Option<i64> = client
        .query_one(&format!("SELECT max(position) FROM \"{schema}\".events"), &[])
        .await
        .expect("head")
        .get(0);
    if head.unwrap_or(0) >= events as i64 {
        println!("reusing the {events} events already in schema {schema}");
        return;
    }
    assert!(head.is_none(), "schema {schema} is partly filled: drop it and run again");
    let started = Instant::now();
    let tags = events / 10;
    let sink = client
        .copy_in(&format!("COPY \"{schema}\".events (position, type, data, tags) FROM STDIN"))
        .await
        .expect("copy events");
    let mut sink = Box::pin(sink);
    let mut chunk = String::with_capacity(1 << 20);
    for i in 1..=events {
        let data: String = format!("{{\"n\":{i}}}").bytes().map(|b| format!("{b:02x}")).collect();
        let ty = (i - 1) / (BLOCK / 10) % 10;
        chunk.push_str(&format!("{i}\tType{ty}\t\\\\x{data}\t{{pre-{:09}}}\n", tag_of(i)));
        if chunk.len() > (1 << 20) - 200 {
            sink.send(Bytes::from(std::mem::take(&mut chunk))).await.expect("copy");
        }
    }
    sink.send(Bytes::from(chunk)).await.expect("copy");
    sink.as_mut().finish().await.expect("finish copy");
    // The tag index is loaded in key order, so the B-tree is built by appending.
    let sink = client
        .copy_in(&format!("COPY \"{schema}\".event_tags (tag, position) FROM STDIN"))
        .await
        .expect("copy tags");
    let mut sink = Box::pin(sink);
    let mut chunk = String::with_capacity(1 << 20);
    for tag in 0..tags {
        for k in 0..10 {
            let position = position_of(tag, k);
            chunk.push_str(&format!("pre-{tag:09}\t{position}\n"));
        }
        if chunk.len() > (1 << 20) - 400 {
            sink.send(Bytes::from(std::mem::take(&mut chunk))).await.expect("copy");
        }
    }
    sink.send(Bytes::from(chunk)).await.expect("copy");
    sink.as_mut().finish().await.expect("finish copy");
    client
        .batch_execute(&format!("ANALYZE \"{schema}\".events; ANALYZE \"{schema}\".event_tags; CHECKPOINT"))
        .await
        .expect("analyze");
    println!("pre-filled {events} events in {:.1} s", started.elapsed().as_secs_f64());
}

/// Reads every table and index once, so that the measured reads meet the operating system's
/// page cache as on a server that has been serving the store, not a disk fresh from the load.
async fn warm(url: &str, schema: &str) {
    let started = Instant::now();
    let client = connect(url).await;
    client
        .batch_execute(&format!(
            "SET enable_seqscan = off; \
             SELECT count(*) FROM \"{schema}\".event_tags WHERE tag > ''; \
             SELECT count(*) FROM \"{schema}\".events WHERE position > 0; \
             SELECT count(*) FROM \"{schema}\".events WHERE type > ''; \
             SET enable_seqscan = on; SET enable_indexscan = off; SET enable_bitmapscan = off; \
             SELECT sum(length(data)) FROM \"{schema}\".events"
        ))
        .await
        .expect("warm up");
    println!("read every table and index once in {:.1} s", started.elapsed().as_secs_f64());
}

/// One conditional append of one event on a tag no one used: the decision-model write path.
async fn conditional_append(store: &PostgresStore, tag: String) {
    let condition = AppendCondition::new(QueryItem::tags([tag.clone()]).into(), None);
    store.append(vec![Event::new("Benched", "{}").tagged(tag)], Some(condition)).await.expect("append");
}

struct Row {
    what: String,
    value: String,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let settings = settings();
    let schema = format!("dcbbench2_{}", settings.events);
    if settings.events <= FRESH_UP_TO {
        // Small volumes load in moments: start afresh, so that the appends of earlier runs do
        // not grow a small store into a large one.
        connect(&settings.url)
            .await
            .batch_execute(&format!("DROP SCHEMA IF EXISTS \"{schema}\" CASCADE"))
            .await
            .expect("drop the previous run's schema");
    }
    let store = PostgresStore::open(Options::new(settings.url.clone(), schema.clone()))
        .await
        .expect("open the store (is PostgreSQL running? see scripts/ensure-postgres)");
    prefill(&settings.url, &schema, settings.events).await;
    warm(&settings.url, &schema).await;
    let off_url = with_sync_off(&settings.url);
    let store_off = PostgresStore::open(Options::new(off_url.clone(), schema.clone())).await.expect("open");
    let floor_on = connect(&settings.url).await;
    let floor_off = connect(&off_url).await;
    let setting: String = floor_off.query_one("SHOW synchronous_commit", &[]).await.unwrap().get(0);
    assert_eq!(setting, "off", "the session option did not apply");
    floor_on
        .batch_execute(&format!(
            "CREATE TABLE IF NOT EXISTS \"{schema}\".floor (id bigserial PRIMARY KEY, payload text NOT NULL)"
        ))
        .await
        .unwrap();
    let insert = format!("INSERT INTO \"{schema}\".floor (payload) VALUES ($1)");
    let insert_on = floor_on.prepare(&insert).await.unwrap();
    let insert_off = floor_off.prepare(&insert).await.unwrap();
    let run = Instant::now().elapsed().as_nanos() ^ u128::from(std::process::id());
    let tag_count = settings.events / 10;
    let mut rng = Rng::new(run as u64);
    let window = settings.window;

    let mut rows = Vec::new();
    for (label, floor, statement, store) in
        [("on", &floor_on, &insert_on, &store), ("off", &floor_off, &insert_off, &store_off)]
    {
        let (mut floor_samples, mut append_samples) = (Samples::default(), Samples::default());
        for round in 0..settings.rounds {
            measure(&mut floor_samples, window, |_| async {
                floor.execute(statement, &[&"{}"]).await.expect("floor insert");
            })
            .await;
            measure(&mut append_samples, window, |i| {
                conditional_append(store, format!("b-{run}-{label}-{round}-{i}"))
            })
            .await;
        }
        let (floor_us, append_us) = (floor_samples.median_us(), append_samples.median_us());
        rows.push(Row {
            what: format!("floor: one-row INSERT + COMMIT, synchronous_commit={label}"),
            value: format!("{floor_us:.0} µs median ({:.0}/s)", floor_samples.per_second()),
        });
        rows.push(Row {
            what: format!("conditional append of 1 event, 1 client, synchronous_commit={label}"),
            value: format!(
                "{append_us:.0} µs median ({:.0}/s), {:.2}x the floor",
                append_samples.per_second(),
                append_us / floor_us
            ),
        });
        // Many clients on distinct tags: group commit shares each commit among them.
        let done = Arc::new(AtomicU64::new(0));
        let started = Instant::now();
        let deadline = started + window * settings.rounds as u32;
        let mut tasks = Vec::new();
        for client in 0..CLIENTS {
            let store = store.clone();
            let done = done.clone();
            let label = label.to_owned();
            tasks.push(tokio::spawn(async move {
                let mut i = 0;
                while Instant::now() < deadline {
                    conditional_append(&store, format!("c-{run}-{label}-{client}-{i}")).await;
                    done.fetch_add(1, Ordering::Relaxed);
                    i += 1;
                }
            }));
        }
        for task in tasks {
            task.await.unwrap();
        }
        let rate = done.load(Ordering::Relaxed) as f64 / started.elapsed().as_secs_f64();
        rows.push(Row {
            what: format!(
                "conditional appends, {CLIENTS} clients, distinct tags, synchronous_commit={label}"
            ),
            value: format!("{rate:.0}/s, {:.1}x one client", rate / append_samples.per_second()),
        });
    }

    let hot_from = tag_of(settings.events.saturating_sub(HOT_EVENTS) + 1);
    for (set, first_tag) in [("latest 10k events", hot_from), ("whole store", 0)] {
        let mut tag_reads = Samples::default();
        let mut typed_reads = Samples::default();
        for _ in 0..settings.rounds {
            let picks: Vec<(u64, u64)> =
                (0..100_000).map(|_| (first_tag + rng.below(tag_count - first_tag), rng.below(10))).collect();
            measure(&mut tag_reads, window, |i| {
                let (tag, _) = picks[i as usize % picks.len()];
                let store = &store;
                async move {
                    let query = Query::from(QueryItem::tags([format!("pre-{tag:09}")]));
                    let read = store.read(&query, ReadOptions::default()).await.expect("read");
                    assert_eq!(read.events.len(), 10);
                }
            })
            .await;
            measure(&mut typed_reads, window, |i| {
                let (tag, k) = picks[picks.len() - 1 - i as usize % picks.len()];
                let query =
                    Query::from(QueryItem::types([format!("Type{k}")]).and_tags([format!("pre-{tag:09}")]));
                let store = &store;
                async move {
                    let read = store.read(&query, ReadOptions::default()).await.expect("read");
                    assert_eq!(read.events.len(), 1);
                    assert_eq!(read.events[0].position, position_of(tag, k));
                }
            })
            .await;
        }
        rows.push(Row {
            what: format!("read of one tag's 10 events, tags of the {set}"),
            value: format!("{:.0} µs median ({:.0}/s)", tag_reads.median_us(), tag_reads.per_second()),
        });
        rows.push(Row {
            what: format!("read of a one-item type+tag query (1 event), tags of the {set}"),
            value: format!("{:.0} µs median ({:.0}/s)", typed_reads.median_us(), typed_reads.per_second()),
        });
    }

    let head = store.head().await.unwrap().unwrap_or(0);
    println!(
        "\nPostgreSQL store, {} events pre-filled ({head} at the end), {} x {} s windows\n",
        settings.events,
        settings.rounds,
        window.as_secs()
    );
    println!("| measurement | result |\n|---|---|");
    for row in rows {
        println!("| {} | {} |", row.what, row.value);
    }
}
