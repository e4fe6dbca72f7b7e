//! Concurrent clients appending one event per request through the gRPC server.
//!
//! ```sh
//! cargo bench -p dcb-grpc --bench concurrent_appends                # 1 and 256 clients, 5 s each
//! DCB_BENCH_CLIENTS=64 DCB_BENCH_SECONDS=10 cargo bench -p dcb-grpc --bench concurrent_appends
//! DCB_BENCH_URL=http://127.0.0.1:50051 cargo bench -p dcb-grpc --bench concurrent_appends
//! DCB_BENCH_SHARED=1 cargo bench -p dcb-grpc --bench concurrent_appends   # one shared connection
//! ```
//!
//! At the end, the whole store is read by one client (a streamed `Read`), and the rate printed.
//!
//! Without `DCB_BENCH_URL` the server runs in this process over a fresh `MemoryStore` (so the
//! figures measure the protocol path, not durability). Each client has its own connection and
//! appends unconditionally, one event at a time, as fast as answers come back.

use std::time::{Duration, Instant};

use dcb::{Event, EventStore, MemoryStore};
use dcb_grpc::{GrpcStore, ServerOptions};

fn env(name: &str) -> Option<u64> {
    std::env::var(name).ok().and_then(|value| value.parse().ok())
}

struct Run {
    clients: usize,
    appends: u64,
    elapsed: Duration,
    latencies: Vec<Duration>,
}

impl Run {
    fn report(mut self) {
        self.latencies.sort();
        let at = |q: f64| self.latencies[((self.latencies.len() - 1) as f64 * q) as usize];
        println!(
            "{:>4} clients: {:>8} appends in {:.1} s = {:>8.0} appends/s; latency p50 {:>7.0} µs, p99 {:>7.0} µs",
            self.clients,
            self.appends,
            self.elapsed.as_secs_f64(),
            self.appends as f64 / self.elapsed.as_secs_f64(),
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
                while Instant::now() < deadline {
                    let event = Event::new("Appended", "{}").tagged(tag.clone());
                    let sent = Instant::now();
                    store.append(vec![event], None).await.expect("append");
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
    Run { clients, appends: latencies.len() as u64, elapsed, latencies }
}

fn main() {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().expect("runtime");
    runtime.block_on(async {
        let url = match std::env::var("DCB_BENCH_URL") {
            Ok(url) => url,
            Err(_) => {
                dcb_grpc::serve_in_background(MemoryStore::new(), ServerOptions::new()).await.expect("bind")
            }
        };
        let seconds = Duration::from_secs(env("DCB_BENCH_SECONDS").unwrap_or(5));
        let counts = match env("DCB_BENCH_CLIENTS") {
            Some(clients) => vec![clients as usize],
            None => vec![1, 256],
        };
        println!("server {url}, {} s per run", seconds.as_secs());
        for clients in counts {
            run(&url, clients, seconds).await.report();
        }
        let store = GrpcStore::connect(url).await.expect("connect");
        let start = Instant::now();
        let read = store.read(&dcb::Query::all(), dcb::ReadOptions::default()).await.expect("read");
        let elapsed = start.elapsed();
        println!(
            "streamed read of the whole store: {} events in {:.2} s = {:.0} events/s",
            read.events.len(),
            elapsed.as_secs_f64(),
            read.events.len() as f64 / elapsed.as_secs_f64()
        );
    });
}
