//! File store benchmarks, each beside its yardstick measured in the same run.
//!
//! ```text
//! cargo bench -p dcb-file --bench file
//! DCB_FILE_BENCH_LARGE=1000000 cargo bench -p dcb-file --bench file   # a smaller large store
//! ```
//!
//! Stores live in the system temp directory (same disk as the yardstick) and are removed after.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dcb::{AppendCondition, Event, EventStore, QueryItem, ReadOptions};
use dcb_file::{FileStore, FileStoreOptions, SyncMode};

struct Dir(PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let dir = std::env::temp_dir().join(format!("dcb-file-bench-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Dir(dir)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn micros(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Single client: a durable conditional append of one event, and its yardstick, one small write
/// appended to a file then `fdatasync`, measured alternately (the disk is shared, so both see the
/// same conditions). Returns the medians: (fdatasync, append).
async fn single_client_conditional_append(samples: usize) -> (Duration, Duration) {
    use std::io::Write;
    let dir = Dir::new("single");
    let store = FileStore::open(&dir.0).unwrap();
    let mut yardstick = std::fs::File::create(dir.0.join("yardstick")).unwrap();
    let record = [0x5au8; 100];
    let query: dcb::Query = QueryItem::tags(["client-0"]).into();
    let mut head = None;
    let (mut syncs, mut appends) = (Vec::with_capacity(samples), Vec::with_capacity(samples));
    for i in 0..samples {
        let start = Instant::now();
        yardstick.write_all(&record).unwrap();
        yardstick.sync_data().unwrap();
        syncs.push(start.elapsed());

        let event = Event::new("Appended", format!("event {i}")).tagged("client-0");
        let condition = AppendCondition::new(query.clone(), head);
        let start = Instant::now();
        head = Some(store.append(vec![event], Some(condition)).await.unwrap());
        appends.push(start.elapsed());
    }
    (median(syncs), median(appends))
}

/// `clients` tasks, each appending one event at a time under a condition on its own tag.
async fn concurrent_appends(clients: usize, appends_per_client: usize) -> f64 {
    let dir = Dir::new("concurrent");
    let store = FileStore::open(&dir.0).unwrap();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for client in 0..clients {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            let tag = format!("client-{client}");
            let query: dcb::Query = QueryItem::tags([tag.clone()]).into();
            let mut head = None;
            for i in 0..appends_per_client {
                let event = Event::new("Appended", format!("event {i}")).tagged(tag.clone());
                let condition = AppendCondition::new(query.clone(), head);
                head = Some(store.append(vec![event], Some(condition)).await.unwrap());
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    (clients * appends_per_client) as f64 / start.elapsed().as_secs_f64()
}

/// Appends `events` events to `store`: tag `t<i mod events/10>` (so each tag has 10 events,
/// spread over the whole log) and one of 100 types.
async fn load<S: EventStore>(store: &S, events: u64) {
    let tags = events / 10;
    let mut next = 0u64;
    while next < events {
        let batch: Vec<Event> = (next..(next + 1000).min(events))
            .map(|i| {
                Event::new(format!("Type{}", i % 100), format!("payload of event {i}"))
                    .tagged(format!("t{}", i % tags))
            })
            .collect();
        next += batch.len() as u64;
        store.append(batch, None).await.unwrap();
    }
}

/// Fills a file store with the data set of [`load`] and checkpoints it.
async fn fill(dir: &Dir, events: u64) {
    let store = FileStore::open_with(&dir.0, FileStoreOptions::default().sync(SyncMode::NotSynced)).unwrap();
    load(&store, events).await;
    store.checkpoint().await.unwrap();
}

struct ReadFigures {
    open: Duration,
    /// Bytes of the store's files.
    store_bytes: u64,
    /// Tags drawn from all tags of the store.
    tag_read: Duration,
    /// Tags drawn from a fixed set of 1,000 (the same working set at every size).
    hot_tag_read: Duration,
    /// Tags of events appended since the store was opened (their pages freshly written).
    recent_tag_read: Duration,
    type_read: Duration,
    /// Events per second of a read of the whole store, in pages of [`SCAN_PAGE`].
    scan_rate: f64,
}

/// The page size of the whole-store read (the gRPC server's default batch).
const SCAN_PAGE: u32 = 1024;

/// Tags of the fixed working set: 1,000 tags spread over the whole store.
const HOT_TAGS: u64 = 1000;

async fn reads(events: u64, samples: usize) -> ReadFigures {
    let dir = Dir::new(&format!("reads-{events}"));
    fill(&dir, events).await;
    let store_bytes = std::fs::read_dir(&dir.0).unwrap().map(|f| f.unwrap().metadata().unwrap().len()).sum();
    let start = Instant::now();
    let store = FileStore::open(&dir.0).unwrap();
    let open = start.elapsed();
    let tags = events / 10;
    let mut state = 0x1234_5678_9abc_def1u64;
    let mut random = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    };
    if let Some(secs) = std::env::var("DCB_FILE_BENCH_PROFILE_READS").ok().and_then(|v| v.parse::<u64>().ok())
    {
        eprintln!("profiling reads for {secs} s");
        let until = Instant::now() + Duration::from_secs(secs);
        while Instant::now() < until {
            let query = QueryItem::tags([format!("t{}", random(HOT_TAGS) * (tags / HOT_TAGS))]).into();
            store.read(&query, ReadOptions::default()).await.unwrap();
        }
    }
    let mut tag_times = Vec::with_capacity(samples);
    let mut hot_times = Vec::with_capacity(samples);
    let mut type_times = Vec::with_capacity(samples);
    // Warm up, so that both sizes are measured from the page cache.
    for _ in 0..samples / 10 {
        let query = QueryItem::tags([format!("t{}", random(tags))]).into();
        store.read(&query, ReadOptions::default()).await.unwrap();
    }
    // Each kind of read in its own loop, so that one kind's working set does not evict another's.
    for i in 0..samples + samples / 10 {
        let query = QueryItem::tags([format!("t{}", random(tags))]).into();
        let start = Instant::now();
        let read = store.read(&query, ReadOptions::default()).await.unwrap();
        if i >= samples / 10 {
            tag_times.push(start.elapsed());
        }
        assert_eq!(read.events.len(), 10);
    }
    for i in 0..samples + samples / 10 {
        let query = QueryItem::tags([format!("t{}", random(HOT_TAGS) * (tags / HOT_TAGS))]).into();
        let start = Instant::now();
        let read = store.read(&query, ReadOptions::default()).await.unwrap();
        if i >= samples / 10 {
            hot_times.push(start.elapsed());
        }
        assert_eq!(read.events.len(), 10);
    }
    for i in 0..samples + samples / 10 {
        let query = QueryItem::types([format!("Type{}", random(100))]).into();
        let options = ReadOptions::default().after(random(events - 2000)).limit(10);
        let start = Instant::now();
        let read = store.read(&query, options).await.unwrap();
        if i >= samples / 10 {
            type_times.push(start.elapsed());
        }
        assert_eq!(read.events.len(), 10);
    }
    // 1,000 new tags of 10 events each, appended now: the recently-written working set.
    for round in 0..10u64 {
        let batch = (0..HOT_TAGS)
            .map(|k| Event::new("Recent", format!("recent {round} {k}")).tagged(format!("new{k}")));
        store.append(batch.collect(), None).await.unwrap();
    }
    let mut recent_times = Vec::with_capacity(samples);
    for i in 0..samples + samples / 10 {
        let query = QueryItem::tags([format!("new{}", random(HOT_TAGS))]).into();
        let start = Instant::now();
        let read = store.read(&query, ReadOptions::default()).await.unwrap();
        if i >= samples / 10 {
            recent_times.push(start.elapsed());
        }
        assert_eq!(read.events.len(), 10);
    }
    let start = Instant::now();
    let (mut after, mut scanned) = (0, 0);
    loop {
        let page = store.read(&dcb::Query::all(), ReadOptions::default().after(after).limit(SCAN_PAGE)).await;
        let page = page.unwrap().events;
        let Some(last) = page.last() else { break };
        after = last.position;
        scanned += page.len();
    }
    let scan_rate = scanned as f64 / start.elapsed().as_secs_f64();
    ReadFigures {
        open,
        store_bytes,
        scan_rate,
        recent_tag_read: median(recent_times),
        tag_read: median(tag_times),
        hot_tag_read: median(hot_times),
        type_read: median(type_times),
    }
}

/// The yardstick for flatness: the same reads of the same data from dcb's in-memory store, which
/// does no I/O at all, so that its growth from 10 thousand to 10 million events is the machine's
/// memory hierarchy alone.
async fn memory_store_tag_read(events: u64, samples: usize) -> Duration {
    let store = dcb::MemoryStore::new();
    load(&store, events).await;
    let tags = events / 10;
    let mut state = 0x1234_5678_9abc_def1u64;
    let mut times = Vec::with_capacity(samples);
    for i in 0..samples + samples / 10 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let query = QueryItem::tags([format!("t{}", state % tags)]).into();
        let start = Instant::now();
        let read = store.read(&query, ReadOptions::default()).await.unwrap();
        if i >= samples / 10 {
            times.push(start.elapsed());
        }
        assert_eq!(read.events.len(), 10);
    }
    median(times)
}

/// The machine's own floor for flatness: the time of one load that depends on the one before (a
/// pointer chase, as in following an index to a record) at random through `bytes` of memory in
/// 4 KiB pages, as the store's mapped files are. Any read pays at least one such load once its
/// data no longer fits the caches.
fn dependent_load(bytes: u64) -> Duration {
    let slots = (bytes / 8).max(2) as usize;
    let mut next: Vec<u64> = (0..slots as u64).collect();
    // Sattolo's shuffle: one cycle through every slot, in random order.
    let mut rng = dcb::testkit::Rng::new(0x9e37_79b9_7f4a_7c15);
    for i in (1..slots).rev() {
        next.swap(i, rng.below(i as u64) as usize);
    }
    let steps = 2_000_000u32;
    let mut at = 0usize;
    for _ in 0..steps / 10 {
        at = next[at] as usize;
    }
    let start = Instant::now();
    for _ in 0..steps {
        at = next[at] as usize;
    }
    std::hint::black_box(at);
    start.elapsed() / steps
}

fn main() {
    let large: u64 =
        std::env::var("DCB_FILE_BENCH_LARGE").ok().and_then(|v| v.parse().ok()).unwrap_or(10_000_000);
    let runtime = Arc::new(tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap());

    let (fsync, single) = runtime.block_on(single_client_conditional_append(1000));
    println!("fdatasync of a 100-byte append (yardstick), median: {:.0} µs", micros(fsync));
    println!(
        "single client, durable conditional append of 1 event, median: {:.0} µs ({:.2}x the fdatasync)",
        micros(single),
        single.as_secs_f64() / fsync.as_secs_f64()
    );

    let throughput = runtime.block_on(concurrent_appends(256, 400));
    println!("256 clients, durable conditional appends of 1 event: {throughput:.0} appends/s");

    let small = runtime.block_on(reads(10_000, 20_000));
    let big = runtime.block_on(reads(large, 20_000));
    for (events, figures) in [(10_000, &small), (large, &big)] {
        println!(
            "{events} events: read of one tag's 10 events, median {:.1} µs (any tag), {:.1} µs (1,000 hot tags), \
             {:.1} µs (1,000 tags written since open); type-only read of 10, median {:.1} µs; open {:.1} ms; \
             whole store read in pages of {SCAN_PAGE}: {:.2}M events/s",
            micros(figures.tag_read),
            micros(figures.hot_tag_read),
            micros(figures.recent_tag_read),
            micros(figures.type_read),
            figures.open.as_secs_f64() * 1e3,
            figures.scan_rate / 1e6
        );
    }
    println!(
        "tag read at {large} vs 10000 events: {:+.0}%",
        (big.tag_read.as_secs_f64() / small.tag_read.as_secs_f64() - 1.0) * 100.0
    );
    let memory_small = runtime.block_on(memory_store_tag_read(10_000, 20_000));
    let memory_big = runtime.block_on(memory_store_tag_read(large, 20_000));
    println!(
        "yardstick: MemoryStore read of one tag's 10 events (any tag), median {:.1} µs at 10000, {:.1} µs at {large}: {:+.0}%",
        micros(memory_small),
        micros(memory_big),
        (memory_big.as_secs_f64() / memory_small.as_secs_f64() - 1.0) * 100.0
    );
    let (near, far) = (dependent_load(small.store_bytes), dependent_load(big.store_bytes));
    println!(
        "yardstick: one dependent load at random through memory of the store's size, {:.0} ns in {:.1} MB \
         (10000 events), {:.0} ns in {:.0} MB ({large}): each load a read waits for adds {:+.0}% of the \
         10000-event read",
        near.as_secs_f64() * 1e9,
        small.store_bytes as f64 / 1e6,
        far.as_secs_f64() * 1e9,
        big.store_bytes as f64 / 1e6,
        (far.as_secs_f64() - near.as_secs_f64()) / small.tag_read.as_secs_f64() * 100.0
    );
    println!(
        "hot tag read at {large} vs 10000 events: {:+.0}%",
        (big.hot_tag_read.as_secs_f64() / small.hot_tag_read.as_secs_f64() - 1.0) * 100.0
    );
    println!(
        "recent tag read at {large} vs 10000 events: {:+.0}%",
        (big.recent_tag_read.as_secs_f64() / small.recent_tag_read.as_secs_f64() - 1.0) * 100.0
    );
    println!(
        "type read at {large} vs 10000 events: {:+.0}%",
        (big.type_read.as_secs_f64() / small.type_read.as_secs_f64() - 1.0) * 100.0
    );
}
