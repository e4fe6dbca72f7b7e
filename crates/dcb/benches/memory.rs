//! Benchmarks of the in-memory store at two volumes, to show the indexes keep costs flat.
//!
//! `cargo bench -p dcb --bench memory` (or `-- 10000 1000000` to choose the volumes). Batches of
//! each operation alternate between the volumes, so that the ratio between them, taken batch by
//! batch, holds on a noisy machine; the allocator counts the bytes each stored event costs.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use dcb::testkit::Rng;
use dcb::{AppendCondition, Event, EventStore, MemoryStore, Query, QueryItem, ReadOptions};

/// The system allocator, counting the bytes currently allocated.
struct Counting;

static ALLOCATED: AtomicUsize = AtomicUsize::new(0);

#[allow(unsafe_code)] // A global allocator can only be written with `unsafe`.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        ALLOCATED.fetch_add(layout.size(), Ordering::Relaxed);
        // SAFETY: forwarded unchanged to the system allocator.
        unsafe { System.alloc(layout) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        ALLOCATED.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `alloc` above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

const BATCHES: usize = 25;
const OPS_PER_BATCH: usize = 2000;
/// Events per tag in the loaded store: a tag read returns this many.
const EVENTS_PER_TAG: u64 = 10;
const PAYLOAD: [u8; 100] = [7; 100];

fn main() {
    let volumes: Vec<u64> = std::env::args().skip(1).filter_map(|a| a.parse().ok()).collect();
    let volumes = if volumes.is_empty() { vec![10_000, 1_000_000] } else { volumes };
    let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
    runtime.block_on(async {
        let mut fixtures = Vec::new();
        for volume in volumes {
            let before = ALLOCATED.load(Ordering::Relaxed);
            let store = load(volume).await;
            let per_event = (ALLOCATED.load(Ordering::Relaxed) - before) as f64 / volume as f64;
            println!("{volume:>10} events: {per_event:.0} bytes allocated per stored event (100-byte payload, 1 tag)");
            let head = std::cell::Cell::new(store.head().await.unwrap());
            fixtures.push(Fixture { volume, store, head, rng: std::cell::RefCell::new(Rng::new(volume)) });
        }
        println!();
        println!("medians of {BATCHES} batches of {OPS_PER_BATCH} operations; batches alternate between volumes");
        print!("{:<44}", "operation");
        for f in &fixtures {
            print!(" {:>12}", format!("{} ev", f.volume));
        }
        println!(" {:>8}", "ratio");
        compare("read one tag's 10 events", &fixtures, read_tag).await;
        compare("type-only read, 10 events of a rare type", &fixtures, read_rare_type).await;
        compare("type-only read, 10 of a common type, limit", &fixtures, read_common_type).await;
        compare("conditional append of 1 event", &fixtures, conditional_append).await;
    });
}

struct Fixture {
    volume: u64,
    store: MemoryStore,
    /// The head after the last append, which the next conditional append is conditioned on.
    head: std::cell::Cell<Option<u64>>,
    rng: std::cell::RefCell<Rng>,
}

impl Fixture {
    fn random(&self, below: u64) -> u64 {
        self.rng.borrow_mut().below(below)
    }
}

async fn read_tag(f: &Fixture) {
    let query = Query::from(QueryItem::tags([format!("stream-{}", f.random(f.volume / EVENTS_PER_TAG))]));
    let read = f.store.read(&query, ReadOptions::default()).await.unwrap();
    assert_eq!(read.events.len(), EVENTS_PER_TAG as usize);
}

async fn read_rare_type(f: &Fixture) {
    let read = f.store.read(&QueryItem::types(["Rare"]).into(), ReadOptions::default()).await.unwrap();
    assert_eq!(read.events.len(), 10);
}

async fn read_common_type(f: &Fixture) {
    let options = ReadOptions::default().after(f.random(f.volume / 2)).limit(10);
    let read = f.store.read(&QueryItem::types(["Type3"]).into(), options).await.unwrap();
    assert_eq!(read.events.len(), 10);
}

/// Appends one event to an existing stream, conditioned on that stream being unchanged since the
/// head seen last.
async fn conditional_append(f: &Fixture) {
    let stream = format!("stream-{}", f.random(f.volume / EVENTS_PER_TAG));
    let condition = AppendCondition::new(Query::from(QueryItem::tags([stream.clone()])), f.head.get());
    let event = Event::new("Fresh", &PAYLOAD[..]).tagged(stream);
    f.head.set(Some(f.store.append(vec![event], Some(condition)).await.unwrap()));
}

/// Times `operation` on every fixture, alternating batches, and prints the median time per
/// operation of each and the median ratio of the largest volume to the smallest, batch by batch.
async fn compare<F>(what: &str, fixtures: &[Fixture], operation: F)
where
    F: AsyncFn(&Fixture),
{
    let mut per_op: Vec<Vec<f64>> = vec![Vec::with_capacity(BATCHES); fixtures.len()];
    for _ in 0..BATCHES {
        for (fixture, times) in fixtures.iter().zip(&mut per_op) {
            let start = Instant::now();
            for _ in 0..OPS_PER_BATCH {
                operation(fixture).await;
            }
            times.push(start.elapsed().as_nanos() as f64 / OPS_PER_BATCH as f64);
        }
    }
    let mut ratios: Vec<f64> =
        per_op[per_op.len() - 1].iter().zip(&per_op[0]).map(|(big, small)| big / small).collect();
    print!("{what:<44}");
    for times in &mut per_op {
        print!(" {:>9.2} µs", median(times) / 1000.0);
    }
    println!(" {:>7.2}x", median(&mut ratios));
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Loads `volume` events: ten common types in turn, tags `stream-<i / 10>` (ten events each), and
/// ten events of a rare type spread over the store.
async fn load(volume: u64) -> MemoryStore {
    let store = MemoryStore::new();
    let rare_every = volume / 10;
    let mut batch = Vec::with_capacity(1000);
    for i in 0..volume {
        let event_type =
            if i % rare_every == rare_every / 2 { "Rare".to_owned() } else { format!("Type{}", i % 10) };
        batch.push(Event::new(event_type, &PAYLOAD[..]).tagged(format!("stream-{}", i / EVENTS_PER_TAG)));
        if batch.len() == 1000 {
            store.append(std::mem::take(&mut batch), None).await.unwrap();
        }
    }
    if !batch.is_empty() {
        store.append(batch, None).await.unwrap();
    }
    store
}
