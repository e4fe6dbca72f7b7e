//! `speedrun MODE [SECONDS]`: the course-subscriptions workload in one style on one store, with a
//! report every second. See `speedrun --help`.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use coursebooking::speedrun::{self, Floor, Options, Outcome, USAGE, thousands};
use coursebooking::{
    Enrolment, EnrolmentWithAggregates, EnrolmentWithDecisions, EnrolmentWithObjects, EnrolmentWithSlices,
};
use dcb::recorder::{AggregateEvent, AggregateRecorder};
use dcb::{Event, EventStore};

// Every operation allocates and frees dozens of small strings (ids, names, event payloads);
// mimalloc does that markedly faster than the system allocator, as it would in a real service.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Conflicts are not expected in a single-client run; with several clients each works on its own
/// students and courses, so a few retries are plenty.
const RETRIES: u32 = 10;

#[tokio::main]
async fn main() -> ExitCode {
    let options = match Options::parse(std::env::args().skip(1)) {
        Ok(options) => options,
        Err(message) if message.is_empty() => {
            println!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Err(message) => {
            eprintln!("speedrun: {message}\n\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match run(&options).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("speedrun: {message}");
            ExitCode::FAILURE
        }
    }
}

async fn run(options: &Options) -> Result<(), String> {
    println!("Dynamic Consistency Boundaries Speed Run: Course Subscriptions");
    println!("==============================================================");
    println!();
    println!(
        "Per iteration: {} courses, {} students ({} ops)",
        speedrun::COURSES,
        speedrun::STUDENTS,
        speedrun::OPS_PER_ITERATION
    );
    println!();
    match options.store.as_str() {
        "mem" => {
            if options.floor {
                eprintln!("--floor: an in-memory store makes nothing durable, so it has no floor to measure");
            }
            let description = "in memory".to_owned();
            let store = dcb::MemoryStore::new();
            let recorder = dcb::recorder::MemoryRecorder::new();
            run_style(options, &description, vec![store], vec![recorder], None).await
        }
        "pg" => {
            let url = options.database_url.as_str();
            let schema = options.schema.as_str();
            let redacted = dcb_postgres::Options::new(url, schema).redacted_url();
            if options.reset {
                pg_execute(url, &format!("DROP SCHEMA IF EXISTS {schema} CASCADE")).await?;
            }
            let floor = if options.floor { Some(pg_floor(url, schema).await?) } else { None };
            let pg_options = dcb_postgres::Options::new(url, schema).application_name("speedrun");
            let open_error = |e: dcb::Error| format!("cannot open the PostgreSQL store: {}", with_causes(&e));
            // Only what the style uses is opened; the clients share it, so that concurrent appends
            // are committed in groups.
            let (stores, recorders) = if options.style == "agg" {
                (vec![], vec![dcb_postgres::PostgresRecorder::open(pg_options).await.map_err(open_error)?])
            } else {
                (vec![dcb_postgres::PostgresStore::open(pg_options).await.map_err(open_error)?], vec![])
            };
            let description = format!("PostgreSQL at {redacted}, schema {schema}");
            run_style(options, &description, stores, recorders, floor).await
        }
        "file" => {
            let dir = std::path::Path::new(&options.dir);
            let floor = measure_file_floor(options, dir)?;
            let store = open_file_store(options, dir)?;
            let recorder = eventsourcing::DcbRecorder::new(store.clone());
            let description = format!("file store in {}", dir.display());
            run_style(options, &description, vec![store], vec![recorder], floor).await
        }
        "grpc" => {
            let mut floor = None;
            let url = match &options.server {
                Some(url) => {
                    if options.floor {
                        eprintln!(
                            "--floor: the server's store is out of reach here, so no floor is measured"
                        );
                    }
                    if options.reset {
                        eprintln!("--reset: the server's store is out of reach here, so it is not emptied");
                    }
                    url.clone()
                }
                None => {
                    // The server in this process serves a file store: the floor is that store's.
                    let dir = std::path::Path::new(&options.dir);
                    floor = measure_file_floor(options, dir)?;
                    let store = open_file_store(options, dir)?;
                    dcb_grpc::serve_in_background(store, dcb_grpc::ServerOptions::new())
                        .await
                        .map_err(|e| format!("cannot start a gRPC server: {e}"))?
                }
            };
            let mut stores = Vec::with_capacity(options.clients);
            for _ in 0..options.clients {
                let store = dcb_grpc::GrpcStore::connect(url.clone())
                    .await
                    .map_err(|e| format!("cannot reach the gRPC server: {}", with_causes(&e)))?;
                stores.push(store);
            }
            let recorders = stores.iter().map(|s| eventsourcing::DcbRecorder::new(s.clone())).collect();
            let description = match &options.server {
                Some(_) => format!("gRPC server at {url}, one connection per client"),
                None => {
                    format!("gRPC server in this process at {url}, over the file store in {}", options.dir)
                }
            };
            run_style(options, &description, stores, recorders, floor).await
        }
        other => Err(format!("the {other:?} store is not available in this build yet")),
    }
}

/// `error` and the errors it rests on, each once: `connection refused` is in the last of them.
fn with_causes(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut cause = error.source();
    while let Some(next) = cause {
        let said = next.to_string();
        if !text.contains(&said) {
            text = format!("{text}: {said}");
        }
        cause = next.source();
    }
    text
}

/// Connects to PostgreSQL at `url` for the speedrun's own statements.
async fn pg_connect(url: &str) -> Result<tokio_postgres::Client, String> {
    let redacted = dcb_postgres::Options::new(url, speedrun::DEFAULT_SCHEMA).redacted_url();
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .map_err(|e| format!("cannot connect to PostgreSQL at {redacted}: {}", with_causes(&e)))?;
    tokio::spawn(connection);
    Ok(client)
}

async fn pg_execute(url: &str, sql: &str) -> Result<(), String> {
    pg_connect(url).await?.batch_execute(sql).await.map_err(|e| format!("{sql}: {e}"))
}

/// The PostgreSQL floor: the median time of a one-row INSERT, committed on its own, and of a bare
/// `SELECT 1`, on one connection to the same database, each over 500 samples after 50 of warm-up.
async fn pg_floor(url: &str, schema: &str) -> Result<Floor, String> {
    let client = pg_connect(url).await?;
    let error = |e: tokio_postgres::Error| format!("cannot measure the PostgreSQL floor: {e}");
    // In the speedrun's schema, so that `--reset` drops it too.
    let table = format!("{schema}.speedrun_floor");
    client
        .batch_execute(&format!(
            "CREATE SCHEMA IF NOT EXISTS {schema}; \
             CREATE TABLE IF NOT EXISTS {table} (id bigserial PRIMARY KEY, n integer NOT NULL)"
        ))
        .await
        .map_err(error)?;
    let insert = client.prepare(&format!("INSERT INTO {table} (n) VALUES ($1)")).await.map_err(error)?;
    let select = client.prepare("SELECT 1").await.map_err(error)?;
    let mut n = 0;
    let commit = median_time(async || {
        n += 1;
        client.execute(&insert, &[&n]).await.map(drop)
    })
    .await
    .map_err(error)?;
    let round_trip =
        median_time(async || client.query_one(&select, &[]).await.map(drop)).await.map_err(error)?;
    client.batch_execute(&format!("TRUNCATE {table}")).await.map_err(error)?;
    Ok(Floor { commit, round_trip: Some(round_trip) })
}

/// The median time of `op` over 500 samples after 50 of warm-up.
async fn median_time<E>(mut op: impl AsyncFnMut() -> Result<(), E>) -> Result<Duration, E> {
    let mut times = Vec::with_capacity(500);
    for i in 0..550 {
        let start = Instant::now();
        op().await?;
        if i >= 50 {
            times.push(start.elapsed());
        }
    }
    Ok(speedrun::median(times))
}

/// Opens the file store in `dir`, emptied first with `--reset`.
fn open_file_store(options: &Options, dir: &std::path::Path) -> Result<dcb_file::FileStore, String> {
    if options.reset {
        speedrun::reset_file_store(dir)?;
    }
    dcb_file::FileStore::open(dir)
        .map_err(|e| format!("cannot open the file store in {}: {e}", dir.display()))
}

/// With `--floor`, the median of one small append and `fdatasync` in `dir`.
fn measure_file_floor(options: &Options, dir: &std::path::Path) -> Result<Option<Floor>, String> {
    if !options.floor {
        return Ok(None);
    }
    let floor = speedrun::file_floor(dir, 500)
        .map_err(|e| format!("cannot measure the floor in {}: {e}", dir.display()))?;
    Ok(Some(Floor { commit: floor, round_trip: None }))
}

/// Runs the mode's style over one store handle (and one recorder handle) per client.
async fn run_style<S: EventStore, R: AggregateRecorder>(
    options: &Options,
    store_description: &str,
    stores: Vec<S>,
    recorders: Vec<R>,
    floor: Option<Floor>,
) -> Result<(), String> {
    let stores = per_client(stores, options.clients);
    let recorders = per_client(recorders, options.clients);
    match options.style.as_str() {
        "agg" => {
            let new = if options.cache {
                EnrolmentWithAggregates::with_cache
            } else {
                EnrolmentWithAggregates::new
            };
            let apps = recorders.iter().map(|r| new(r.clone(), RETRIES)).collect();
            let recorder = recorders[0].clone();
            prefill_recorder(&recorder, options.prefill).await?;
            let count = move || {
                let recorder = recorder.clone();
                async move { recorder.count().await }
            };
            report(options, "EnrolmentWithAggregates", store_description, apps, count, floor).await
        }
        style => {
            let store = stores[0].clone();
            prefill_store(&store, options.prefill).await?;
            let count = move || {
                let store = store.clone();
                async move { store.head().await.map(|h| h.unwrap_or(0)) }
            };
            match style {
                "dcb" => {
                    let new = if options.cache {
                        EnrolmentWithDecisions::with_cache
                    } else {
                        EnrolmentWithDecisions::new
                    };
                    let apps = stores.iter().map(|s| new(s.clone(), RETRIES)).collect();
                    report(options, "EnrolmentWithDecisions", store_description, apps, count, floor).await
                }
                "objects" => {
                    let new = if options.cache {
                        EnrolmentWithObjects::with_cache
                    } else {
                        EnrolmentWithObjects::new
                    };
                    let apps = stores.iter().map(|s| new(s.clone(), RETRIES)).collect();
                    report(options, "EnrolmentWithObjects", store_description, apps, count, floor).await
                }
                _ => {
                    let new = if options.cache {
                        EnrolmentWithSlices::with_cache
                    } else {
                        EnrolmentWithSlices::new
                    };
                    let apps = stores.iter().map(|s| new(s.clone(), RETRIES)).collect();
                    report(options, "EnrolmentWithSlices", store_description, apps, count, floor).await
                }
            }
        }
    }
}

/// One handle per client: the handles given, then clones of the first (none if none is given:
/// the style does not use that kind of store).
fn per_client<T: Clone>(mut handles: Vec<T>, clients: usize) -> Vec<T> {
    while !handles.is_empty() && handles.len() < clients {
        handles.push(handles[0].clone());
    }
    handles.truncate(clients);
    handles
}

async fn report<E, C, F>(
    options: &Options,
    implementation: &str,
    store_description: &str,
    apps: Vec<E>,
    count: C,
    floor: Option<Floor>,
) -> Result<(), String>
where
    E: Enrolment,
    C: Fn() -> F,
    F: Future<Output = dcb::Result<u64>>,
{
    println!("Running '{}' mode: {implementation}", options.mode());
    println!("    store: {store_description}");
    if options.clients > 1 {
        println!("    clients: {}", options.clients);
    }
    if let Some(floor) = floor {
        println!("    floor: {:.0} μs per durable commit, measured now", floor.commit.as_secs_f64() * 1e6);
        if let Some(round_trip) = floor.round_trip {
            println!(
                "    round trip: {:.0} μs (a bare SELECT 1), measured now",
                round_trip.as_secs_f64() * 1e6
            );
        }
    }
    println!();
    let start_count = count().await.map_err(|e| format!("cannot count the events: {e}"))?;
    println!("Events in store at start:  {} events", thousands(start_count));
    println!();
    println!("Stopping after: {}s", options.duration.as_secs_f64());
    println!();
    let outcome: Outcome = speedrun::run(apps, options.duration)
        .await
        .map_err(|e| format!("the run stopped on an error: {e}"))?;
    let end_count = count().await.map_err(|e| format!("cannot count the events: {e}"))?;
    println!();
    println!(
        "Events in store at end:  {} events  ({} new)",
        thousands(end_count),
        thousands(end_count.saturating_sub(start_count))
    );
    print!(
        "Result: {} ops in {:.1}s, {:.0} ops/s",
        thousands(outcome.ops),
        outcome.elapsed.as_secs_f64(),
        outcome.ops_per_sec()
    );
    match (outcome.us_per_op(), floor) {
        (Some(per_op), Some(floor)) => {
            println!(", {per_op:.1} μs/op, {:.2}x the floor", per_op / (floor.commit.as_secs_f64() * 1e6))
        }
        (Some(per_op), None) => println!(", {per_op:.1} μs/op"),
        (None, _) => println!(" (no operation completed: run longer)"),
    }
    if let (Some(cpu), Some(per_op)) = (outcome.cpu, outcome.cpu_us_per_op()) {
        println!(
            "Machine CPU: {:.0}% of {} cores busy, {per_op:.0} μs of CPU per op (every process on this machine)",
            cpu.busy * 100.0,
            cpu.cores
        );
    }
    if options.json {
        println!("{}", speedrun::json_line(options, &outcome, (start_count, end_count), floor.as_ref()));
    }
    Ok(())
}

/// Events per prefill append.
const PREFILL_BATCH: u64 = 1000;

/// Appends `count` events unrelated to the workload, printing progress about every second.
async fn prefill_store<S: EventStore>(store: &S, count: u64) -> Result<(), String> {
    let mut progress = Progress::new(count);
    let mut done = 0;
    while done < count {
        let batch: Vec<Event> = (done..(done + PREFILL_BATCH).min(count))
            .map(|i| {
                Event::new("PrefillRecorded", format!("{{\"n\":{i}}}")).tagged(format!("prefill-{}", i / 10))
            })
            .collect();
        done += batch.len() as u64;
        store.append(batch, None).await.map_err(|e| format!("prefill failed: {e}"))?;
        progress.update(done);
    }
    Ok(())
}

/// Inserts `count` aggregate events of unrelated aggregates (ten events each).
async fn prefill_recorder<R: AggregateRecorder>(recorder: &R, count: u64) -> Result<(), String> {
    let mut progress = Progress::new(count);
    let mut done = 0;
    let run = uuid::Uuid::new_v4();
    while done < count {
        let batch: Vec<AggregateEvent> = (done..(done + PREFILL_BATCH).min(count))
            .map(|i| AggregateEvent {
                aggregate_id: format!("prefill-{run}-{}", i / 10),
                version: i % 10 + 1,
                event_type: "PrefillRecorded".into(),
                data: format!("{{\"n\":{i}}}").into(),
            })
            .collect();
        done += batch.len() as u64;
        recorder.insert_events(batch).await.map_err(|e| format!("prefill failed: {e}"))?;
        progress.update(done);
    }
    Ok(())
}

/// Prints how far a long task has come, about once a second.
struct Progress {
    total: u64,
    started: Instant,
    printed: Instant,
}

impl Progress {
    fn new(total: u64) -> Self {
        if total > 0 {
            println!("Prefilling {} events", thousands(total));
        }
        Progress { total, started: Instant::now(), printed: Instant::now() }
    }

    fn update(&mut self, done: u64) {
        if self.printed.elapsed() >= Duration::from_secs(1) || done == self.total {
            self.printed = Instant::now();
            let rate = done as f64 / self.started.elapsed().as_secs_f64().max(1e-9);
            println!("    {} of {} events ({rate:.0} events/s)", thousands(done), thousands(self.total));
        }
    }
}
