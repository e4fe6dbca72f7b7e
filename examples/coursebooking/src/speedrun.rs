//! The speedrun: register 10 courses and 10 students, then join every student to every course,
//! over and over, and report the rate every second.
//!
//! This module holds what does not depend on the style or the store: the options, the workload,
//! the report. The `speedrun` binary picks the implementation for the mode.

use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use crate::{Enrolment, EnrolmentError};

/// Courses registered per iteration (each with this many places).
pub const COURSES: usize = 10;
/// Students registered per iteration (each may join this many courses).
pub const STUDENTS: usize = 10;
/// Operations per iteration: the registrations and every student joining every course.
pub const OPS_PER_ITERATION: u64 = (COURSES + STUDENTS + COURSES * STUDENTS) as u64;

/// The application styles.
pub const STYLES: [&str; 4] = ["agg", "dcb", "objects", "slices"];
/// The stores.
pub const STORES: [&str; 4] = ["mem", "file", "pg", "grpc"];

/// Default URL of the PostgreSQL modes, unless `DCB_POSTGRES_URL` or `--database-url` say otherwise.
pub const DEFAULT_POSTGRES_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";
/// Default PostgreSQL schema of the speedrun, unless `--schema` says otherwise.
pub const DEFAULT_SCHEMA: &str = "speedrun";
/// Default directory of the file modes, unless `--dir` says otherwise.
pub const DEFAULT_DIR: &str = "data/speedrun";

/// What the command line asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Options {
    /// One of [`STYLES`].
    pub style: String,
    /// One of [`STORES`].
    pub store: String,
    /// How long to run.
    pub duration: Duration,
    /// Concurrent clients, each running its own iterations.
    pub clients: usize,
    /// Unrelated events to load before the run, to measure at volume.
    pub prefill: u64,
    /// Print a final line holding one JSON object.
    pub json: bool,
    /// Measure the store's own floor for one durable commit first (and, on PostgreSQL, a bare
    /// round trip).
    pub floor: bool,
    /// Start from an empty store.
    pub reset: bool,
    /// Take decisions from a cache where it can: aggregates from
    /// [`eventsourcing::Repository::with_cache`], the other styles' decisions from
    /// [`eventsourcing::Dcb::with_cache`] and [`eventsourcing::Objects::with_cache`].
    pub cache: bool,
    /// The PostgreSQL URL.
    pub database_url: String,
    /// The PostgreSQL schema of the store (and of the floor's table).
    pub schema: String,
    /// The file store's directory.
    pub dir: String,
    /// The remote server of the `grpc` modes; one is started in process when absent.
    pub server: Option<String>,
}

/// The usage text.
pub const USAGE: &str = "\
usage: speedrun MODE [SECONDS] [options]

MODE is STYLE-STORE:
  STYLE  agg (event-sourced aggregates), dcb (plain decision models),
         objects (enduring objects and groups), slices (one decision per use case)
  STORE  mem (in memory), file (embedded durable files), pg (PostgreSQL),
         grpc (a gRPC server started in this process over a file store in --dir, or --server)
SECONDS defaults to 10.

options:
  --clients K          K concurrent clients, each with its own iterations (default 1)
  --prefill N          load N unrelated events first, to measure at volume
  --floor              measure the store's own floor for one durable commit first (and, on
                       PostgreSQL, one bare round trip)
  --json               end with one line holding a JSON object of the results
  --reset              start from an empty store (events otherwise accumulate across runs): deletes
                       the file store in --dir, or drops the PostgreSQL schema
  --cache              take decisions from a cache of what this process read and recorded where it
                       can (one round trip instead of two)
  --database-url URL   PostgreSQL URL (default $DCB_POSTGRES_URL, else postgres://postgres@127.0.0.1:5432/postgres)
  --schema NAME        PostgreSQL schema of the store (default speedrun)
  --dir PATH           file store directory, of the file and grpc modes (default data/speedrun)
  --server URL         gRPC server to use instead of one started in process";

impl Options {
    /// Parses the arguments after the program name.
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Options, String> {
        let mut args = args.into_iter();
        let mut positional = Vec::new();
        let mut options = Options {
            style: String::new(),
            store: String::new(),
            duration: Duration::from_secs(10),
            clients: 1,
            prefill: 0,
            json: false,
            floor: false,
            reset: false,
            cache: false,
            database_url: std::env::var("DCB_POSTGRES_URL")
                .unwrap_or_else(|_| DEFAULT_POSTGRES_URL.to_owned()),
            schema: DEFAULT_SCHEMA.to_owned(),
            dir: DEFAULT_DIR.to_owned(),
            server: None,
        };
        while let Some(arg) = args.next() {
            let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
            match arg.as_str() {
                "--clients" => options.clients = number(&value("--clients")?, "--clients")?,
                "--prefill" => options.prefill = number(&value("--prefill")?, "--prefill")?,
                "--json" => options.json = true,
                "--floor" => options.floor = true,
                "--reset" => options.reset = true,
                "--cache" => options.cache = true,
                "--database-url" => options.database_url = value("--database-url")?,
                "--schema" => options.schema = value("--schema")?,
                "--dir" => options.dir = value("--dir")?,
                "--server" => options.server = Some(value("--server")?),
                "-h" | "--help" => return Err(String::new()),
                flag if flag.starts_with('-') => return Err(format!("unknown option {flag}")),
                _ => positional.push(arg),
            }
        }
        let Some(mode) = positional.first() else { return Err("no MODE given".into()) };
        let (style, store) =
            mode.split_once('-').ok_or_else(|| format!("MODE {mode:?} is not STYLE-STORE"))?;
        if !STYLES.contains(&style) {
            return Err(format!(
                "unknown style {style:?} in MODE {mode:?}: use one of {}",
                STYLES.join(", ")
            ));
        }
        if !STORES.contains(&store) {
            return Err(format!(
                "unknown store {store:?} in MODE {mode:?}: use one of {}",
                STORES.join(", ")
            ));
        }
        (options.style, options.store) = (style.to_owned(), store.to_owned());
        if let Some(seconds) = positional.get(1) {
            let seconds: f64 = seconds.parse().map_err(|_| format!("SECONDS {seconds:?} is not a number"))?;
            if !(seconds > 0.0 && seconds.is_finite()) {
                return Err(format!("SECONDS must be positive, not {seconds}"));
            }
            options.duration = Duration::try_from_secs_f64(seconds)
                .map_err(|_| format!("SECONDS {seconds} is too large"))?;
        }
        // Checked here, not only by the store: `--reset` and the floor name it in SQL first.
        let schema = &options.schema;
        let valid = schema.len() <= 48
            && schema.starts_with(|c: char| c.is_ascii_lowercase() || c == '_')
            && schema.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !valid {
            return Err(format!(
                "--schema {schema:?} must be 1 to 48 lowercase ASCII letters, digits or underscores, \
                 not starting with a digit"
            ));
        }
        if positional.len() > 2 {
            return Err(format!("unexpected argument {:?}", positional[2]));
        }
        if options.clients == 0 {
            return Err("--clients must be at least 1".into());
        }
        Ok(options)
    }

    /// The mode as given, `STYLE-STORE`.
    pub fn mode(&self) -> String {
        format!("{}-{}", self.style, self.store)
    }
}

fn number<T: std::str::FromStr>(text: &str, name: &str) -> Result<T, String> {
    text.replace('_', "").parse().map_err(|_| format!("{name} needs a whole number, not {text:?}"))
}

/// The store's own costs, measured in the same run before the workload, to read its result
/// against.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Floor {
    /// One durable commit: PostgreSQL's one-row `INSERT` committed on its own, the file store's
    /// small write and `fdatasync`.
    pub commit: Duration,
    /// One bare round trip to the server on the same connection (`SELECT 1`), for a store behind
    /// one. A decision that reads before it appends pays at least this on top of its commit.
    pub round_trip: Option<Duration>,
}

/// The whole machine's CPU over a run: every process's on this machine, the database server's
/// when it runs here.
///
/// On a machine of few cores it tells whether more clients could go faster at all: the time
/// per operation cannot fall below the CPU time an operation takes divided by the cores.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MachineCpu {
    /// Cores of the machine.
    pub cores: usize,
    /// The share of all cores' time spent busy (user, system and interrupts), from 0 to 1.
    pub busy: f64,
}

/// Busy and other ticks of all cores, and the number of cores, from `/proc/stat` (Linux); `None`
/// where that file is missing or does not parse.
fn cpu_ticks() -> Option<(u64, u64, usize)> {
    parse_cpu_ticks(&std::fs::read_to_string("/proc/stat").ok()?)
}

/// [`cpu_ticks`] of the text of `/proc/stat`: its first line sums all cores (`cpu  user nice
/// system idle iowait irq softirq steal ...`), one `cpuN` line follows per core.
fn parse_cpu_ticks(stat: &str) -> Option<(u64, u64, usize)> {
    let mut lines = stat.lines();
    let fields: Vec<u64> =
        lines.next()?.strip_prefix("cpu ")?.split_whitespace().map_while(|f| f.parse().ok()).collect();
    let [user, nice, system, idle, iowait, irq, softirq, ..] = fields[..] else { return None };
    // Time a hypervisor gave to other machines is part of the cores' time, but not busy here.
    let steal = fields.get(7).copied().unwrap_or(0);
    let cores = lines
        .filter(|line| line.starts_with("cpu") && line.as_bytes().get(3).is_some_and(u8::is_ascii_digit))
        .count();
    Some((user + nice + system + irq + softirq, idle + iowait + steal, cores))
}

impl MachineCpu {
    /// The machine's CPU between two readings of [`cpu_ticks`]. Counters that went backwards
    /// (the kernel does not promise that `iowait` never does) count as not moving.
    fn between(start: (u64, u64, usize), end: (u64, u64, usize)) -> Option<Self> {
        let busy = end.0.saturating_sub(start.0);
        let total = busy + end.1.saturating_sub(start.1);
        (total > 0).then(|| MachineCpu { cores: end.2.max(1), busy: busy as f64 / total as f64 })
    }
}

/// What a run measured.
#[derive(Debug, Clone, PartialEq)]
pub struct Outcome {
    /// Wall time of the run.
    pub elapsed: Duration,
    /// Whole iterations completed by all clients.
    pub iterations: u64,
    /// Operations completed by all clients.
    pub ops: u64,
    /// The machine's CPU over the run, where it can be read.
    pub cpu: Option<MachineCpu>,
}

impl Outcome {
    /// CPU time of the whole machine per operation, in microseconds.
    pub fn cpu_us_per_op(&self) -> Option<f64> {
        let cpu = self.cpu?;
        (self.ops > 0)
            .then(|| cpu.busy * cpu.cores as f64 * self.elapsed.as_secs_f64() * 1e6 / self.ops as f64)
    }

    /// Operations per second over the whole run.
    pub fn ops_per_sec(&self) -> f64 {
        self.ops as f64 / self.elapsed.as_secs_f64()
    }

    /// Wall time per operation, in microseconds (the inverse of the rate, so with several clients
    /// it is not the latency of one operation); none when no operation completed.
    pub fn us_per_op(&self) -> Option<f64> {
        (self.ops > 0).then(|| 1e6 / self.ops_per_sec())
    }
}

/// One iteration of the workload by one client.
async fn iteration<E: Enrolment>(app: &E, ops: &AtomicU64) -> Result<(), EnrolmentError> {
    let mut courses = Vec::with_capacity(COURSES);
    for i in 0..COURSES {
        courses.push(app.register_course(&format!("Course {i}"), STUDENTS as u32).await?);
        ops.fetch_add(1, Ordering::Relaxed);
    }
    let mut students = Vec::with_capacity(STUDENTS);
    for i in 0..STUDENTS {
        students.push(app.register_student(&format!("Student {i}"), COURSES as u32).await?);
        ops.fetch_add(1, Ordering::Relaxed);
    }
    for student in &students {
        for course in &courses {
            app.join_course(student, course).await?;
            ops.fetch_add(1, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// Runs the workload on one handle per client for `duration`, printing a line about every
/// second; the run stops at the first error.
pub async fn run<E: Enrolment>(clients: Vec<E>, duration: Duration) -> Result<Outcome, EnrolmentError> {
    let ops = Arc::new(AtomicU64::new(0));
    let iterations = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    let ticks_at_start = cpu_ticks();
    let mut tasks = Vec::new();
    for app in clients {
        let (ops, iterations, stop) = (ops.clone(), iterations.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                iteration(&app, &ops).await?;
                iterations.fetch_add(1, Ordering::Relaxed);
                // An in-memory store never makes a client wait: without this, as many clients as
                // runtime threads would keep the ticker (and the stop) from ever running.
                tokio::task::yield_now().await;
            }
            Ok::<(), EnrolmentError>(())
        }));
    }
    let mut ticker = tokio::time::interval_at(
        tokio::time::Instant::now() + Duration::from_secs(1),
        Duration::from_secs(1),
    );
    // A late tick is not made up for by a burst of lines over windows of no length.
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let (mut last_ops, mut last_at) = (0, start);
    while start.elapsed() < duration && !tasks.iter().any(|t| t.is_finished()) {
        let remaining = duration.saturating_sub(start.elapsed());
        if tokio::time::timeout(remaining, ticker.tick()).await.is_err() {
            break;
        }
        let (now_ops, now) = (ops.load(Ordering::Relaxed), Instant::now());
        let window = Outcome { elapsed: now - last_at, iterations: 0, ops: now_ops - last_ops, cpu: None };
        println!("{}", progress_line(start.elapsed(), iterations.load(Ordering::Relaxed), now_ops, &window));
        (last_ops, last_at) = (now_ops, now);
    }
    stop.store(true, Ordering::Relaxed);
    // Counted at the deadline: iterations still running finish, but are not part of the figure.
    let outcome = Outcome {
        elapsed: start.elapsed(),
        iterations: iterations.load(Ordering::Relaxed),
        ops: ops.load(Ordering::Relaxed),
        cpu: ticks_at_start.zip(cpu_ticks()).and_then(|(start, end)| MachineCpu::between(start, end)),
    };
    for task in tasks {
        task.await.expect("a speedrun client panicked")?;
    }
    Ok(outcome)
}

/// `[H:MM:SSs]  iterations  ops  μs/op  ops/s`, the rate being that of `window`.
pub fn progress_line(elapsed: Duration, iterations: u64, ops: u64, window: &Outcome) -> String {
    let secs = elapsed.as_secs();
    let (rate, per_op) = (window.ops_per_sec(), window.us_per_op().unwrap_or(0.0));
    format!(
        "[{}:{:02}:{:02}s] {iterations:>9} iterations {ops:>9} ops {per_op:>8.0} μs/op {rate:>8.0} ops/s",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Groups digits by thousands: 5568325 → "5,568,325".
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Deletes the file store in `dir` for `--reset`: only a store's directory (or an empty one), so
/// that `--dir ~ --reset` cannot wipe a home directory.
pub fn reset_file_store(dir: &std::path::Path) -> Result<(), String> {
    if !dir.exists() {
        return Ok(());
    }
    let is_store = dir.join("events.log").exists();
    let is_empty = std::fs::read_dir(dir).is_ok_and(|mut entries| entries.next().is_none());
    if !is_store && !is_empty {
        return Err(format!(
            "--reset: {} holds no file store (no events.log); not deleting it",
            dir.display()
        ));
    }
    std::fs::remove_dir_all(dir).map_err(|e| format!("cannot reset {}: {e}", dir.display()))
}

/// `value` with `decimals` decimals, or `null` when there is none.
fn json_number(value: Option<f64>, decimals: usize) -> String {
    value.filter(|v| v.is_finite()).map_or_else(|| "null".to_owned(), |v| format!("{v:.decimals$}"))
}

/// The final JSON line (`us_per_op`, `floor_ratio` and `cpu_us_per_op` are `null` when no
/// operation completed).
pub fn json_line(options: &Options, outcome: &Outcome, events: (u64, u64), floor: Option<&Floor>) -> String {
    let mut json = format!(
        "{{\"mode\":\"{}\",\"seconds\":{:.3},\"clients\":{},\"iterations\":{},\"ops\":{},\"ops_per_sec\":{:.1},\"us_per_op\":{},\"events_start\":{},\"events_end\":{}",
        options.mode(),
        outcome.elapsed.as_secs_f64(),
        options.clients,
        outcome.iterations,
        outcome.ops,
        outcome.ops_per_sec(),
        json_number(outcome.us_per_op(), 2),
        events.0,
        events.1,
    );
    if options.cache {
        json.push_str(",\"cache\":true");
    }
    if let Some(floor) = floor {
        let commit = floor.commit.as_secs_f64() * 1e6;
        let ratio = json_number(outcome.us_per_op().map(|us| us / commit), 3);
        let _ = write!(json, ",\"floor_us\":{commit:.2},\"floor_ratio\":{ratio}");
        if let Some(round_trip) = floor.round_trip {
            let _ = write!(json, ",\"round_trip_us\":{:.2}", round_trip.as_secs_f64() * 1e6);
        }
    }
    if let Some(cpu) = outcome.cpu {
        let per_op = json_number(outcome.cpu_us_per_op(), 2);
        let _ = write!(
            json,
            ",\"cores\":{},\"machine_busy\":{:.3},\"cpu_us_per_op\":{per_op}",
            cpu.cores, cpu.busy
        );
    }
    json.push('}');
    json
}

/// The file store's floor: the median time of one small append to a file in `dir` followed by
/// `fdatasync`, over `samples` samples. The file is removed afterwards.
pub fn file_floor(dir: &std::path::Path, samples: usize) -> std::io::Result<Duration> {
    use std::io::Write;
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("floor-{}.tmp", std::process::id()));
    let mut file = std::fs::OpenOptions::new().create(true).append(true).open(&path)?;
    let record = [0x5a_u8; 128];
    let mut times = Vec::with_capacity(samples);
    for _ in 0..samples.max(1) {
        let start = Instant::now();
        file.write_all(&record)?;
        file.sync_data()?;
        times.push(start.elapsed());
    }
    drop(file);
    std::fs::remove_file(&path)?;
    Ok(median(times))
}

/// The median of `times` (the upper one of an even count); `times` must not be empty.
pub fn median(mut times: Vec<Duration>) -> Duration {
    times.sort();
    times[times.len() / 2]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, String> {
        Options::parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn modes_and_options_parse() {
        let options =
            parse(&["dcb-pg", "30", "--clients", "16", "--prefill", "10_000_000", "--json", "--floor"])
                .unwrap();
        assert_eq!((options.style.as_str(), options.store.as_str()), ("dcb", "pg"));
        assert_eq!(options.duration, Duration::from_secs(30));
        assert_eq!((options.clients, options.prefill), (16, 10_000_000));
        assert!(options.json && options.floor && !options.reset);
    }

    #[test]
    fn bad_modes_say_what_is_wrong() {
        assert!(parse(&["dcb"]).unwrap_err().contains("STYLE-STORE"));
        assert!(parse(&["fast-pg"]).unwrap_err().contains("unknown style \"fast\""));
        assert!(parse(&["dcb-oracle"]).unwrap_err().contains("unknown store \"oracle\""));
        assert!(parse(&["dcb-mem", "-3"]).unwrap_err().contains("unknown option -3"));
        assert!(parse(&["dcb-mem", "0"]).unwrap_err().contains("positive"));
        assert!(parse(&["dcb-mem", "--clients", "0"]).unwrap_err().contains("at least 1"));
        assert!(parse(&["agg-mem", "--cache"]).unwrap().cache);
        assert!(parse(&["dcb-mem", "1e20"]).unwrap_err().contains("too large"));
        assert_eq!(parse(&["dcb-pg"]).unwrap().schema, "speedrun");
        assert_eq!(parse(&["dcb-pg", "--schema", "run_2"]).unwrap().schema, "run_2");
        for bad in ["", "2run", "Run", "a-b", "a;drop", &"x".repeat(49)] {
            assert!(parse(&["dcb-pg", "--schema", bad]).unwrap_err().contains("--schema"), "{bad:?}");
        }
        assert!(parse(&["slices-pg", "--cache"]).unwrap().cache);
        assert!(parse(&[]).unwrap_err().contains("no MODE"));
    }

    #[test]
    fn report_lines_have_the_original_shape() {
        let window = Outcome { elapsed: Duration::from_secs(1), iterations: 0, ops: 3000, cpu: None };
        let line = progress_line(Duration::from_millis(61_500), 25, 3000, &window);
        assert_eq!(line, "[0:01:01s]        25 iterations      3000 ops      333 μs/op     3000 ops/s");
        assert_eq!(thousands(5_568_325), "5,568,325");
        assert_eq!(thousands(999), "999");
    }

    #[test]
    fn the_json_line_holds_every_key_and_only_numbers_or_null() {
        let options = parse(&["dcb-file", "5", "--json", "--floor"]).unwrap();
        let cpu = Some(MachineCpu { cores: 2, busy: 0.75 });
        let done = Outcome { elapsed: Duration::from_secs(2), iterations: 1, ops: 400, cpu };
        let floor =
            Floor { commit: Duration::from_micros(2500), round_trip: Some(Duration::from_micros(80)) };
        let line = json_line(&options, &done, (10, 130), Some(&floor));
        assert_eq!(
            line,
            "{\"mode\":\"dcb-file\",\"seconds\":2.000,\"clients\":1,\"iterations\":1,\"ops\":400,\
             \"ops_per_sec\":200.0,\"us_per_op\":5000.00,\"events_start\":10,\"events_end\":130,\
             \"floor_us\":2500.00,\"floor_ratio\":2.000,\"round_trip_us\":80.00,\
             \"cores\":2,\"machine_busy\":0.750,\"cpu_us_per_op\":7500.00}"
        );
        // A run too short for one operation has no time per operation (not "inf", which is not JSON).
        let nothing = Outcome { elapsed: Duration::from_millis(10), iterations: 0, ops: 0, cpu };
        let line = json_line(&options, &nothing, (10, 10), Some(&floor));
        for key in ["us_per_op", "floor_ratio", "cpu_us_per_op"] {
            assert!(line.contains(&format!("\"{key}\":null")), "{key}: {line}");
        }
        assert!(!line.contains("inf") && !line.contains("NaN"), "{line}");
    }

    /// The machine's CPU is read from the first line of `/proc/stat`, stolen time counted as
    /// not busy, with one core per `cpuN` line.
    #[test]
    fn the_machine_cpu_is_read_from_proc_stat() {
        let stat = "cpu  60 10 30 80 10 5 5 20 0 0\ncpu0 30 5 15 40 5 3 2 10 0 0\ncpu1 30 5 15 40 5 2 3 10 0 0\nintr 1";
        assert_eq!(parse_cpu_ticks(stat), Some((110, 110, 2)));
        assert_eq!(parse_cpu_ticks("cpu  1 2 3 4 5 6 7\ncpu0 1 2 3 4 5 6 7"), Some((19, 9, 1)));
        for bad in ["", "cpu0 1 2 3 4 5 6 7", "cpu  1 2 3", "intr 1\ncpu  1 2 3 4 5 6 7"] {
            assert_eq!(parse_cpu_ticks(bad), None, "{bad:?}");
        }
        let cpu = MachineCpu::between((100, 300, 2), (175, 325, 2)).unwrap();
        assert_eq!((cpu.cores, cpu.busy), (2, 0.75));
        // A counter that went backwards does not make the share exceed the whole.
        assert_eq!(MachineCpu::between((100, 300, 2), (150, 290, 2)).unwrap().busy, 1.0);
        assert_eq!(MachineCpu::between((100, 300, 2), (100, 300, 2)), None);
        let outcome = Outcome { elapsed: Duration::from_secs(2), iterations: 1, ops: 400, cpu: Some(cpu) };
        assert_eq!(outcome.cpu_us_per_op(), Some(7500.0));
    }

    /// `--reset` deletes a file store's directory, or an empty one, and refuses any other.
    #[test]
    fn reset_deletes_only_a_file_store() {
        let dir = std::env::temp_dir().join(format!("speedrun-reset-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("notes.txt"), "mine").unwrap();
        assert!(reset_file_store(&dir).unwrap_err().contains("no file store"));
        assert!(dir.join("notes.txt").exists());
        std::fs::remove_file(dir.join("notes.txt")).unwrap();
        std::fs::write(dir.join("events.log"), "").unwrap();
        reset_file_store(&dir).unwrap();
        assert!(!dir.exists());
        reset_file_store(&dir).unwrap();
    }
}
