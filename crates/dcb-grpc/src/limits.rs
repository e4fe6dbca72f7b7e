//! The server's named limits, beside the store limits of [`dcb::limits`].

use std::time::Duration;

/// Events per read or subscription message when the request names no batch size.
pub const DEFAULT_BATCH_SIZE: u32 = 1024;
/// The largest batch size a request may ask for; larger requests get this.
pub const MAX_BATCH_SIZE: u32 = 4096;
/// Encoded bytes of events per message, below the 4 MiB that gRPC clients accept by default.
/// A message holds at least one event, and one event within [`dcb::limits`] is far smaller.
pub const MAX_BATCH_BYTES: usize = 2 << 20;
/// The largest response message the server will encode.
pub const MAX_RESPONSE_BYTES: usize = 4 << 20;
/// The largest response message [`GrpcStore`](crate::GrpcStore) accepts: more than this server
/// sends, because UmaDB bounds its read batches by count only, so that a batch of larger events
/// from it exceeds 4 MiB.
pub const MAX_CLIENT_RESPONSE_BYTES: usize = 64 << 20;
/// The largest request message accepted by default (see
/// [`ServerOptions::max_request_bytes`](crate::ServerOptions::max_request_bytes)).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 16 << 20;
/// Appends running at once; further appends wait for a slot.
pub const MAX_IN_FLIGHT_APPENDS: usize = 1024;
/// Client connections served at once by default (see
/// [`ServerOptions::max_connections`](crate::ServerOptions::max_connections)).
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;
/// HTTP/2 streams (calls) one connection may have open at once; further calls of its client wait
/// until one ends. Without it one connection could open any number of calls. A client that
/// multiplexes everything on one connection (`GrpcStore` does) and keeps more subscriptions open
/// than this would have its other calls wait: it needs more connections.
pub const MAX_STREAMS_PER_CONNECTION: u32 = 4096;
/// How long a new connection may take to start by default (see
/// [`ServerOptions::handshake_timeout`](crate::ServerOptions::handshake_timeout)).
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Idle time before the first TCP keepalive probe on a client connection; with
/// [`TCP_KEEPALIVE_INTERVAL`] and [`TCP_KEEPALIVE_RETRIES`], the kernel gives up on a vanished
/// peer after about two minutes and the connection's slot is freed.
pub const TCP_KEEPALIVE_IDLE: Duration = Duration::from_secs(60);
/// Time between unanswered TCP keepalive probes.
pub const TCP_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
/// Unanswered TCP keepalive probes before the connection is dropped.
pub const TCP_KEEPALIVE_RETRIES: u32 = 6;
/// Time between the server's HTTP/2 pings on a connection; a client that answers none within
/// [`HTTP2_KEEPALIVE_TIMEOUT`] (a peer gone without a TCP reset, a stuck proxy) is disconnected.
pub const HTTP2_KEEPALIVE_INTERVAL: Duration = Duration::from_secs(60);
/// How long the server waits for the answer to an HTTP/2 ping.
pub const HTTP2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);
/// How long calls may keep a stopping server running by default (see
/// [`ServerOptions::shutdown_grace`](crate::ServerOptions::shutdown_grace)).
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(10);
