//! # dcb-grpc: the `umadb.v1` gRPC protocol for DCB event stores
//!
//! - [`serve`] serves any [`dcb::EventStore`] over the `umadb.v1` protocol, field for field, so
//!   that existing UmaDB clients (Python, Java, .NET, …) work against it unchanged; the
//!   `dcb-server` binary runs it from the command line.
//! - [`GrpcStore`] is a store that talks to such a server: it implements [`dcb::EventStore`] and
//!   passes the same conformance kit as every other store.
//!
//! Features: `tls` (default: rustls for the server and for `https://` clients), `cli` (default: the
//! `dcb-server` binary and its dependencies), `fuzzing` (the hook of the fuzz target in `fuzz/`).
//!
//! ```no_run
//! use dcb::{Event, EventStore, Query, ReadOptions};
//! use dcb_grpc::GrpcStore;
//!
//! # async fn run() -> dcb::Result<()> {
//! let store = GrpcStore::connect("http://127.0.0.1:50051").await?;
//! store.append(vec![Event::new("CourseRegistered", "{}").tagged("course-1")], None).await?;
//! let read = store.read(&Query::all(), ReadOptions::default()).await?;
//! println!("{} events, head {:?}", read.events.len(), read.head);
//! # Ok(())
//! # }
//! ```

mod batch;
mod client;
mod codec;
mod convert;
mod fuzzing;
pub mod limits;
mod server;

pub use client::{ClientOptions, GrpcStore, ReadBatches};
pub use server::{ServerOptions, serve, serve_in_background};

/// For the fuzz target in `fuzz/`, not for applications.
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub use fuzzing::check_request;

/// The `umadb.v1` messages, server trait and client, generated from `proto/umadb.proto`.
///
/// Public so that tests and tools can speak the protocol directly, below [`GrpcStore`].
pub mod proto {
    // Generated code: its items carry the .proto comments where there are any, and cannot be
    // annotated one by one.
    #![allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
    include!("generated/umadb.v1.rs");
}

/// What can go wrong when starting or running a server (store errors are [`dcb::Error`]s and
/// travel to the client as statuses).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The listener's socket failed.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// The transport failed: the HTTP/2 server itself.
    #[error("transport error: {0}")]
    Transport(#[from] tonic::transport::Error),
    /// The TLS certificate or key cannot be used.
    #[error("TLS configuration: {0}")]
    Tls(String),
}
