//! Concurrent clients appending one event per request through the gRPC server.
//!
//! ```sh
//! cargo bench -p dcb-grpc --bench concurrent_appends                # 1 and 256 clients, 5 s each
//! DCB_BENCH_CLIENTS=64 DCB_BENCH_SECONDS=10 cargo bench -p dcb-grpc --bench concurrent_appends
//! DCB_BENCH_URL=http://127.0.0.1:50051 cargo bench -p dcb-grpc --bench concurrent_appends
//! DCB_BENCH_SHARED=1 cargo bench -p dcb-grpc --bench concurrent_appends   # one shared connection
//! ```
//!
//! At the end, the whole store is read by one client, `DCB_BENCH_READS` times, and the rates
//! printed: streamed (`GrpcStore::read_batches`, each batch processed as it arrives) and collected
//! (`EventStore::read`, every event gathered into one vector first). `DCB_BENCH_CLIENTS=0` only
//! reads. `DCB_BENCH_OP=head` or `read` (a tag's 10 events) times those requests instead of
//! appends; `DCB_BENCH_CURRENT_THREAD=1` runs the clients (and the in-process server) on one thread.
//!
//! Without `DCB_BENCH_URL` the server runs in this process over a fresh `MemoryStore` (so the
//! figures measure the protocol path, not durability). Each client has its own connection and
//! appends unconditionally, one event at a time, as fast as answers come back.

use std::time::{Duration, Instant};

use dcb::{Event, EventStore, MemoryStore, Query, ReadOptions};
use dcb_grpc::{GrpcStore, ServerOptions};

// As in `dcb-server` and the speedrun: the clients' decoding allocates per event.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|value| value.parse().ok())
}

struct Run {
    clients: usize,
    requests: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Run {
    fn report(mut self) {
        self.latencies.sort();
        let at = |q: f64| self.latencies[((self.latencies.len() - 1) as f64 * q) as usize];
        println!(
            "{:>4} clients: {:>8} requests in {:.1} s = {:>8.0}/s; latency p50 {:>7.0} µs, p99 {:>7.0} µs",
            self.clients,
            self.requests,
            self.elapsed.as_secs_f64(),
            self.requests as f64 / self.elapsed.as_secs_f64(),
            at(0.5).as_secs_f64() * 1e6,
            at(0.99).as_secs_f64() * 1e6,
        );
    }
}

async fn run(url: &str, clients: usize, duration: Duration) -> Run {
    let shared = std::env::var_os("DCB_BENCH_SHARED").is_some();
    let mut stores = Vec::with_capacity(clients);
    for _ in 0..clients {
        let store = match stores.first() {
            Some(first) if shared => GrpcStore::clone(first),
            _ => GrpcStore::connect(url.to_owned()).await.expect("connect"),
        };
        stores.push(store);
    }
    let start = Instant::now();
    let deadline = start + duration;
    let tasks: Vec<_> = stores
        .into_iter()
        .enumerate()
        .map(|(client, store)| {
            tokio::spawn(async move {
                let mut latencies = Vec::new();
                let tag = format!("client-{client}");
                let query = Query::from(dcb::QueryItem::tags([tag.clone()]));
                let op = std::env::var("DCB_BENCH_OP").unwrap_or_default();
                if op == "read" {
                    let events = (0..10).map(|_| Event::new("Appended", "{}").tagged(tag.clone())).collect();
                    store.append(events, None).await.expect("append");
                }
                while Instant::now() < deadline {
                    let sent = Instant::now();
                    match op.as_str() {
                        "head" => drop(store.head().await.expect("head")),
                        "read" => {
                            drop(store.read(&query, ReadOptions::default().limit(10)).await.expect("read"))
                        }
                        _ => {
                            let event = Event::new("Appended", "{}").tagged(tag.clone());
                            store.append(vec![event], None).await.expect("append");
                        }
                    }
                    latencies.push(sent.elapsed());
                }
                latencies
            })
        })
        .collect();
    let mut latencies = Vec::new();
    for task in tasks {
        latencies.extend(task.await.expect("client task"));
    }
    let elapsed = start.elapsed();
    Run { clients, requests: latencies.len() as u64, elapsed, latencies }
}

fn main() {
    let runtime = if std::env::var_os("DCB_BENCH_CURRENT_THREAD").is_some() {
        tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime")
    } else {
        tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime")
    };
    runtime.block_on(async {
        let url = match std::env::var("DCB_BENCH_URL") {
            Ok(url) => url,
            Err(_) => {
                dcb_grpc::serve_in_background(MemoryStore::new(), ServerOptions::new()).await.expect("bind")
            }
        };
        let seconds = Duration::from_secs(env("DCB_BENCH_SECONDS").unwrap_or(5));
        let counts = match env("DCB_BENCH_CLIENTS") {
            Some(0) => vec![],
            Some(clients) => vec![clients as usize],
            None => vec![1, 256],
        };
        println!("server {url}, {} s per run", seconds.as_secs());
        for clients in counts {
            run(&url, clients, seconds).await.report();
        }
        let store = GrpcStore::connect(url).await.expect("connect");
        for _ in 0..env("DCB_BENCH_READS").unwrap_or(1) {
            let start = Instant::now();
            let mut batches = store.read_batches(&Query::all(), ReadOptions::default()).await.expect("read");
            let mut streamed = 0;
            while let Some(batch) = batches.next_batch().await.expect("batch") {
                streamed += batch.len();
            }
            let streaming = start.elapsed();
            let start = Instant::now();
            let collected = store.read(&Query::all(), ReadOptions::default()).await.expect("read").events.len();
            let collecting = start.elapsed();
            println!(
                "read of the whole store ({streamed} events): streamed {:.0} events/s, collected into one Vec {:.0} events/s",
                streamed as f64 / streaming.as_secs_f64(),
                collected as f64 / collecting.as_secs_f64(),
            );
        }
    });
}
