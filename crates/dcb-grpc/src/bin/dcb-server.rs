//! `dcb-server`: serves a DCB event store over the umadb.v1 gRPC protocol.
//!
//! Every option can also be given through an environment variable (`DCB_LISTEN`, `DCB_STORE`,
//! `DCB_API_KEY`, `DCB_TLS_CERT`, `DCB_TLS_KEY`, `DCB_MAX_REQUEST_BYTES`, `DCB_MAX_CONNECTIONS`,
//! `DCB_SHUTDOWN_GRACE`); the command line wins. Logs go to stderr through `tracing`, filtered by
//! `RUST_LOG` (default `info`).
//!
//! The first SIGTERM or Ctrl-C stops the server cleanly (see [`dcb_grpc::serve`]); a second one,
//! for an operator who will not wait for a hung store, exits at once with status 1.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use dcb::EventStore;
use dcb_grpc::ServerOptions;
use tokio::net::TcpListener;

// Every request and every event read allocates and frees a few small buffers (messages, names,
// payloads); mimalloc does that markedly faster than the system allocator (malloc and free took a
// third of the server's time in a streamed read).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "dcb-server",
    version,
    about = "Serves a DCB event store over the umadb.v1 gRPC protocol",
    after_help = "The first SIGTERM or Ctrl-C stops the server cleanly: it refuses new calls, ends \
                  reads and subscriptions, and waits for in-flight appends. A second one exits at \
                  once with status 1."
)]
struct Args {
    /// Address to listen on (port 0 picks a free port; the log names the one bound).
    #[arg(long, env = "DCB_LISTEN", default_value = "127.0.0.1:50051")]
    listen: SocketAddr,

    /// `mem` (in memory, lost on exit), a `postgres://` or `postgresql://` URL, or the
    /// directory of a file store.
    #[arg(long, env = "DCB_STORE", default_value = "dcb-data")]
    store: String,

    /// Require `authorization: Bearer <KEY>` on every call.
    #[arg(long, env = "DCB_API_KEY", hide_env_values = true)]
    api_key: Option<String>,

    /// PEM certificate chain to serve TLS with (needs --tls-key).
    #[arg(long, env = "DCB_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,

    /// PEM private key of --tls-cert.
    #[arg(long, env = "DCB_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,

    /// Largest request message accepted, in bytes (encoded); larger ones are refused as invalid
    /// before they are decoded.
    #[arg(long, env = "DCB_MAX_REQUEST_BYTES", default_value_t = dcb_grpc::limits::DEFAULT_MAX_REQUEST_BYTES,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_request_bytes: usize,

    /// Most client connections served at once; further clients wait until one leaves.
    #[arg(long, env = "DCB_MAX_CONNECTIONS", default_value_t = dcb_grpc::limits::DEFAULT_MAX_CONNECTIONS,
          value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    max_connections: usize,

    /// Seconds that calls the server does not end itself (a health watch, a slow call) may keep it
    /// running after the shutdown signal; in-flight appends are waited for regardless.
    #[arg(long, env = "DCB_SHUTDOWN_GRACE", value_name = "SECONDS",
          default_value_t = dcb_grpc::limits::DEFAULT_SHUTDOWN_GRACE.as_secs_f64(),
          value_parser = seconds)]
    shutdown_grace: f64,
}

/// A number of seconds: finite, not negative.
fn seconds(text: &str) -> Result<f64, String> {
    match text.parse::<f64>() {
        Ok(seconds) if (0.0..1e9).contains(&seconds) => Ok(seconds),
        _ => Err(format!("{text:?} is not a number of seconds")),
    }
}

/// The schema a PostgreSQL store is served from.
const POSTGRES_SCHEMA: &str = "dcb";

/// Which store `--store` names.
enum StoreKind<'a> {
    Memory,
    Postgres(&'a str),
    Directory(PathBuf),
}

impl<'a> StoreKind<'a> {
    fn parse(store: &'a str) -> Self {
        if store == "mem" {
            StoreKind::Memory
        } else if store.starts_with("postgres://") || store.starts_with("postgresql://") {
            StoreKind::Postgres(store)
        } else {
            StoreKind::Directory(PathBuf::from(store))
        }
    }
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(runtime) => runtime,
        Err(error) => return fail(format!("cannot start the runtime: {error}")),
    };
    match runtime.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => fail(message),
    }
}

fn fail(message: String) -> ExitCode {
    tracing::error!("{message}");
    ExitCode::FAILURE
}

async fn run(args: Args) -> Result<(), String> {
    let server = server_options(&args)?;
    let shutdown = shutdown_signal()?;
    // One arm per store type: each instantiates the generic server for its store.
    match StoreKind::parse(&args.store) {
        StoreKind::Memory => {
            tracing::warn!("serving an in-memory store: everything is lost when the server stops");
            serve(dcb::MemoryStore::new(), args.listen, server, shutdown).await
        }
        StoreKind::Postgres(url) => {
            let options = dcb_postgres::Options::new(url, POSTGRES_SCHEMA).application_name("dcb-server");
            let redacted = options.redacted_url();
            let store = dcb_postgres::PostgresStore::open(options)
                .await
                .map_err(|e| format!("cannot open the PostgreSQL store at {redacted}: {e}"))?;
            tracing::info!(url = %redacted, schema = POSTGRES_SCHEMA, "serving a PostgreSQL store");
            serve(store, args.listen, server, shutdown).await
        }
        StoreKind::Directory(path) => {
            let store = dcb_file::FileStore::open(&path)
                .map_err(|e| format!("cannot open the file store in {}: {e}", path.display()))?;
            tracing::info!(directory = %path.display(), "serving a file store");
            serve(store, args.listen, server, shutdown).await
        }
    }
}

fn server_options(args: &Args) -> Result<ServerOptions, String> {
    let mut options = ServerOptions::new()
        .max_request_bytes(args.max_request_bytes)
        .max_connections(args.max_connections)
        .shutdown_grace(Duration::from_secs_f64(args.shutdown_grace));
    if let Some(key) = &args.api_key {
        if key.is_empty() {
            return Err("--api-key is empty".into());
        }
        options = options.api_key(key.clone());
    }
    if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
        let read =
            |path: &PathBuf| std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()));
        #[cfg(feature = "tls")]
        {
            options = options.tls(read(cert)?, read(key)?);
        }
        #[cfg(not(feature = "tls"))]
        {
            let _ = (read, cert, key);
            return Err("this dcb-server was built without the `tls` feature".into());
        }
    }
    Ok(options)
}

async fn serve<S: EventStore>(
    store: S,
    listen: SocketAddr,
    options: ServerOptions,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), String> {
    let listener = TcpListener::bind(listen).await.map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    dcb_grpc::serve(store, listener, options, shutdown).await.map_err(|e| e.to_string())
}

/// Completes on Ctrl-C or SIGTERM. The signals are caught from the moment this is called, not
/// from when the future is first polled: one that arrives while the store opens, or just after
/// the server said it listens, still stops the server cleanly instead of killing the process.
///
/// After the first signal, a second one ends the process at once: a clean stop waits for every
/// in-flight append, which a hung store can hold up for ever. Exiting mid-append is no worse than
/// a crash, which every store survives.
fn shutdown_signal() -> Result<impl Future<Output = ()> + Send + 'static, String> {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let listen = |kind: SignalKind| signal(kind).map_err(|e| format!("cannot listen for signals: {e}"));
        let (mut interrupt, mut terminate) =
            (listen(SignalKind::interrupt())?, listen(SignalKind::terminate())?);
        Ok(async move {
            tokio::select! {
                _ = interrupt.recv() => tracing::info!("Ctrl-C received: stopping (again to exit at once)"),
                _ = terminate.recv() => tracing::info!("SIGTERM received: stopping (again to exit at once)"),
            }
            tokio::spawn(async move {
                let signal = tokio::select! {
                    _ = interrupt.recv() => "Ctrl-C",
                    _ = terminate.recv() => "SIGTERM",
                };
                exit_at_once(signal);
            });
        })
    }
    #[cfg(not(unix))]
    {
        Ok(async {
            match tokio::signal::ctrl_c().await {
                Ok(()) => tracing::info!("Ctrl-C received: stopping (again to exit at once)"),
                Err(error) => {
                    tracing::error!(%error, "cannot listen for Ctrl-C");
                    std::future::pending::<()>().await;
                }
            }
            tokio::spawn(async {
                if tokio::signal::ctrl_c().await.is_ok() {
                    exit_at_once("Ctrl-C");
                }
            });
        })
    }
}

/// Ends the process without waiting for anything.
fn exit_at_once(signal: &str) -> ! {
    tracing::error!("second {signal} received: exiting at once, without waiting for in-flight appends");
    std::process::exit(1)
}
