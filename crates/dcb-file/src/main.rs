//! `dcb-file`: tools for a file store directory.
//!
//! ```text
//! dcb-file verify DIR    check every checksum and every index entry against the log
//! ```
//!
//! Exit status: 0 when the store is sound, 1 when damage was found, 2 when it could not be
//! checked (no store there, the store is open elsewhere, an I/O error).

use std::io::Write;
use std::process::ExitCode;

use dcb::{AppendCondition, Event, EventStore, QueryItem, ReadOptions, Uuid};
use dcb_file::{FileStore, FileStoreOptions};

const USAGE: &str = "usage: dcb-file verify DIR";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
        ["verify", dir] => match dcb_file::verify(dir) {
            Ok(report) => {
                println!("{dir}:\n{report}");
                if report.is_ok() { ExitCode::SUCCESS } else { ExitCode::from(1) }
            }
            Err(error) => {
                eprintln!("dcb-file verify: {error}");
                ExitCode::from(2)
            }
        },
        // Hidden: the load the crash test kills; see tests/crash.rs.
        ["crash-child", dir, seed] => {
            let Ok(seed) = seed.parse::<u64>() else {
                eprintln!("{USAGE}");
                return ExitCode::from(2);
            };
            crash_child(dir, seed)
        }
        _ => {
            eprintln!("{USAGE}");
            ExitCode::from(2)
        }
    }
}

/// Contended tags of the crash load: each holds a counter that conditional appends advance.
const COUNTERS: u64 = 8;
const TASKS: u64 = 32;

/// Runs concurrent conditional appends until killed, printing each acknowledged append as
/// `ACK <last position> <event count> <uuid>,<uuid>...` (flushed) once it is acknowledged.
///
/// Each conditional append reads the last event of a counter tag, and appends the next counter
/// value under the condition that nothing was added to that tag since: if conditions hold across
/// crashes and batches, every counter's values are exactly 1, 2, 3, ... in position order. Every
/// event's data names its append (`append=<id> i=<index> n=<count>`), so a partial append shows.
fn crash_child(dir: &str, seed: u64) -> ExitCode {
    let options = FileStoreOptions::default().checkpoint_interval(128 << 10);
    let store = match FileStore::open_with(dir, options) {
        Ok(store) => store,
        Err(error) => {
            eprintln!("crash-child: open failed: {error}");
            return ExitCode::from(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
    runtime.block_on(async move {
        let mut tasks = Vec::new();
        for task in 0..TASKS {
            let store = store.clone();
            tasks.push(tokio::spawn(async move { load(store, seed, task).await }));
        }
        for task in tasks {
            let _ = task.await;
        }
    });
    ExitCode::SUCCESS
}

async fn load(store: FileStore, seed: u64, task: u64) {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ (task + 1).wrapping_mul(0xD1B5_4A32_D192_ED03);
    let mut next = move || {
        // xorshift64*: enough randomness for a load generator.
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        state.wrapping_mul(0x2545_F491_4F6C_DD1D)
    };
    for i in 0u64.. {
        let id = format!("{seed}-{task}-{i}");
        let n = 1 + next() % 3;
        let uuids: Vec<Uuid> = (0..n).map(|_| Uuid::from_u64_pair(next(), next())).collect();
        let fill = |j: u64| {
            Event::new("Filler", format!("append={id} i={j} n={n}"))
                .tagged("filler")
                .with_uuid(uuids[j as usize])
        };
        let (events, condition) = if next() % 5 == 0 {
            ((0..n).map(fill).collect::<Vec<_>>(), None)
        } else {
            let tag = format!("counter-{}", next() % COUNTERS);
            let query = QueryItem::tags([tag.clone()]).into();
            let Ok(seen) = store.read(&query, ReadOptions::default().backwards().limit(1)).await else {
                return;
            };
            let last = seen.events.first().map_or(0, |e| counter_value(&e.event.data));
            let first = Event::new("Counted", format!("append={id} i=0 n={n} value={}", last + 1))
                .tagged(tag)
                .with_uuid(uuids[0]);
            let events = std::iter::once(first).chain((1..n).map(fill)).collect();
            (events, Some(AppendCondition::new(query, seen.head)))
        };
        match store.append(events, condition).await {
            Ok(position) => {
                let list: Vec<String> = uuids.iter().map(Uuid::to_string).collect();
                let mut out = std::io::stdout().lock();
                let _ = writeln!(out, "ACK {position} {n} {}", list.join(","));
                let _ = out.flush();
            }
            Err(error) if error.is_integrity() => {}
            Err(error) => {
                eprintln!("crash-child: append failed: {error}");
                return;
            }
        }
    }
}

fn counter_value(data: &[u8]) -> u64 {
    let text = String::from_utf8_lossy(data);
    text.split(' ').find_map(|part| part.strip_prefix("value=")).and_then(|v| v.parse().ok()).unwrap_or(0)
}
