//! The umadb.v1 service over any [`EventStore`], and [`serve`].

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use dcb::{EventStore, Query};
use futures_core::Stream;
use futures_util::FutureExt;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tonic::codegen::http;
use tonic::transport::Server;
use tonic::transport::server::TcpConnectInfo;
use tonic::{Request, Response, Status};

use crate::batch::EncodedBatch;
use crate::codec::{DecodeFailure, WireCodec};
use crate::convert::{append_from_wire, error_to_status, query_from_wire, status};
use crate::limits::{
    DEFAULT_HANDSHAKE_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_MAX_REQUEST_BYTES, DEFAULT_SHUTDOWN_GRACE,
    HTTP2_KEEPALIVE_INTERVAL, HTTP2_KEEPALIVE_TIMEOUT, MAX_IN_FLIGHT_APPENDS, MAX_RESPONSE_BYTES,
    MAX_STREAMS_PER_CONNECTION,
};
use crate::proto;
use crate::proto::dcb_server::{Dcb, DcbServer};
use crate::proto::error_response::ErrorType;

mod connections;
mod streams;

use connections::limited;
#[cfg(feature = "tls")]
use connections::{tls_acceptor, with_tls};
use streams::{Reader, Subscriber};

/// How [`serve`] runs: API key, TLS, message size limit.
///
/// ```
/// let options = dcb_grpc::ServerOptions::new().api_key("s3cret").max_request_bytes(8 << 20);
/// # let _ = options;
/// ```
#[derive(Clone, Default)]
pub struct ServerOptions {
    api_key: Option<String>,
    max_request_bytes: Option<usize>,
    max_connections: Option<usize>,
    shutdown_grace: Option<Duration>,
    handshake_timeout: Option<Duration>,
    /// PEM certificate chain and private key.
    #[cfg(feature = "tls")]
    tls: Option<(Vec<u8>, Vec<u8>)>,
}

impl fmt::Debug for ServerOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut debug = f.debug_struct("ServerOptions");
        // Never print the key itself: options end up in logs.
        debug.field("api_key", &self.api_key.as_ref().map(|_| "<set>"));
        debug.field("max_request_bytes", &self.max_request_bytes);
        debug.field("max_connections", &self.max_connections);
        debug.field("shutdown_grace", &self.shutdown_grace);
        debug.field("handshake_timeout", &self.handshake_timeout);
        #[cfg(feature = "tls")]
        debug.field("tls", &self.tls.is_some());
        debug.finish()
    }
}

impl ServerOptions {
    /// No API key, no TLS, requests up to [`DEFAULT_MAX_REQUEST_BYTES`].
    pub fn new() -> Self {
        Self::default()
    }

    /// Requires every call (subscriptions included) to carry `authorization: Bearer <key>`,
    /// checked from the headers before the request message is read. The health service stays
    /// open, so that probes need no key.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// The largest request message accepted, encoded; larger ones are refused with
    /// `INVALID_ARGUMENT` before they are decoded.
    pub fn max_request_bytes(mut self, bytes: usize) -> Self {
        self.max_request_bytes = Some(bytes);
        self
    }

    /// The most client connections served at once (default [`DEFAULT_MAX_CONNECTIONS`]); further
    /// clients wait in the listener's backlog until one leaves.
    pub fn max_connections(mut self, connections: usize) -> Self {
        self.max_connections = Some(connections.max(1));
        self
    }

    /// How long, after the shutdown signal, calls that the server does not end itself (a health
    /// watch, a slow unary call) may keep it running (default [`DEFAULT_SHUTDOWN_GRACE`]). Their
    /// connections are then abandoned; in-flight appends are still waited for.
    pub fn shutdown_grace(mut self, grace: Duration) -> Self {
        self.shutdown_grace = Some(grace);
        self
    }

    /// How long a new connection may take to start (default [`DEFAULT_HANDSHAKE_TIMEOUT`]): to
    /// finish the TLS handshake, if any, and send the HTTP/2 preface's 24 bytes. A connection that
    /// does not is closed and gives its slot (see [`max_connections`](Self::max_connections))
    /// back.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = Some(timeout);
        self
    }

    /// Serves over TLS with this PEM certificate chain and PEM private key.
    #[cfg(feature = "tls")]
    pub fn tls(mut self, cert_pem: impl AsRef<[u8]>, key_pem: impl AsRef<[u8]>) -> Self {
        self.tls = Some((cert_pem.as_ref().to_vec(), key_pem.as_ref().to_vec()));
        self
    }
}

/// Serves `store` on a free port of 127.0.0.1, in a task of the current runtime, until the
/// process ends; returns the URL to connect to. For tests, benchmarks and tools that want a
/// server beside them in the same process (no shutdown: use [`serve`] for that).
///
/// ```no_run
/// # async fn run() -> dcb::Result<()> {
/// let url = dcb_grpc::serve_in_background(dcb::MemoryStore::new(), dcb_grpc::ServerOptions::new())
///     .await
///     .expect("a free local port");
/// let store = dcb_grpc::GrpcStore::connect(url).await?;
/// # Ok(())
/// # }
/// ```
pub async fn serve_in_background<S: EventStore>(store: S, options: ServerOptions) -> std::io::Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let address = listener.local_addr()?;
    tokio::spawn(serve(store, listener, options, std::future::pending()));
    Ok(format!("http://{address}"))
}

/// A future awaited in place that still runs to its end if whoever awaits it goes away: dropped
/// unfinished, it moves to a task of its own. (A task for every append from the start would cost
/// each one a wake-up of another runtime thread.)
struct RunToEnd<F: Future<Output: Send> + Send + 'static>(Option<Pin<Box<F>>>);

impl<F: Future<Output: Send> + Send + 'static> RunToEnd<F> {
    fn new(future: F) -> Self {
        RunToEnd(Some(Box::pin(future)))
    }
}

impl<F: Future<Output: Send> + Send + 'static> Future for RunToEnd<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // Taken out while polled, so that a future that panics is dropped, not spawned again.
        let mut future = self.0.take().expect("RunToEnd polled after it finished");
        let poll = future.as_mut().poll(cx);
        if poll.is_pending() {
            self.0 = Some(future);
        }
        poll
    }
}

impl<F: Future<Output: Send> + Send + 'static> Drop for RunToEnd<F> {
    fn drop(&mut self) {
        if let (Some(future), Ok(runtime)) = (self.0.take(), tokio::runtime::Handle::try_current()) {
            runtime.spawn(future);
        }
    }
}

/// Serves `store` over the umadb.v1 protocol (and the standard gRPC health service) on
/// `listener` until `shutdown` completes.
///
/// On shutdown the server stops accepting connections, reports NOT_SERVING, ends reads and
/// subscriptions with `UNAVAILABLE`, refuses new appends, and returns only when every append
/// that had started has finished (an append runs to its end even when its client goes away, so a
/// store never sees one cut off halfway).
///
/// ```no_run
/// # async fn run() -> Result<(), dcb_grpc::Error> {
/// let listener = tokio::net::TcpListener::bind("127.0.0.1:50051").await?;
/// let shutdown = async { tokio::signal::ctrl_c().await.ok(); };
/// dcb_grpc::serve(dcb::MemoryStore::new(), listener, dcb_grpc::ServerOptions::new(), shutdown).await
/// # }
/// ```
pub async fn serve<S: EventStore>(
    store: S,
    listener: TcpListener,
    options: ServerOptions,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), crate::Error> {
    let address = listener.local_addr()?;
    let (stop, stopping) = watch::channel(false);
    let mut stopped = stopping.clone();
    let appends = Arc::new(Semaphore::new(MAX_IN_FLIGHT_APPENDS));
    let service = Service {
        store,
        shared: Arc::new(Shared {
            authorization: options.api_key.map(|key| format!("Bearer {key}").into_bytes()),
            stopping,
            appends: appends.clone(),
        }),
    };
    let (reporter, health) = tonic_health::server::health_reporter();
    reporter.set_serving::<DcbServer<Service<S>>>().await;
    let max_request_bytes = options.max_request_bytes.unwrap_or(DEFAULT_MAX_REQUEST_BYTES);
    let service = Arc::new(service);
    let generated = DcbServer::from_arc(service.clone())
        .max_decoding_message_size(max_request_bytes)
        .max_encoding_message_size(MAX_RESPONSE_BYTES);
    let dcb = Routes { generated, service, max_request_bytes };

    let handshake = options.handshake_timeout.unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT);
    let mut builder = Server::builder()
        .max_concurrent_streams(MAX_STREAMS_PER_CONNECTION)
        .http2_keepalive_interval(Some(HTTP2_KEEPALIVE_INTERVAL))
        .http2_keepalive_timeout(Some(HTTP2_KEEPALIVE_TIMEOUT))
        .layer(tower::util::MapResponseLayer::new(refuse_oversized));
    let max_connections = options.max_connections.unwrap_or(DEFAULT_MAX_CONNECTIONS);
    #[cfg(feature = "tls")]
    let tls = options.tls.as_ref().map(|(cert, key)| tls_acceptor(cert, key)).transpose()?;
    let signal = async move {
        shutdown.await;
        tracing::info!("shutting down: finishing in-flight appends");
        reporter.set_not_serving::<DcbServer<Service<S>>>().await;
        // The server as a whole too (the empty service name), which load balancers probe.
        reporter.set_service_status("", tonic_health::ServingStatus::NotServing).await;
        let _ = stop.send(true);
    };
    tracing::info!(%address, "serving umadb.v1");
    let grace = options.shutdown_grace.unwrap_or(DEFAULT_SHUTDOWN_GRACE);
    let router = builder.add_service(health).add_service(dcb);
    let incoming = limited(listener, max_connections, handshake);
    #[cfg(feature = "tls")]
    let server: futures_util::future::BoxFuture<'_, Result<(), tonic::transport::Error>> = match tls {
        Some(acceptor) => Box::pin(
            router.serve_with_incoming_shutdown(with_tls(incoming, acceptor, max_connections), signal),
        ),
        None => Box::pin(router.serve_with_incoming_shutdown(incoming, signal)),
    };
    #[cfg(not(feature = "tls"))]
    let server = router.serve_with_incoming_shutdown(incoming, signal);
    let served = tokio::select! {
        served = server => served,
        () = async {
            let _ = stopped.wait_for(|stopped| *stopped).await;
            tokio::time::sleep(grace).await;
        } => {
            tracing::warn!(?grace, "calls still open after the shutdown grace period: abandoning them");
            Ok(())
        }
    };
    // Appends whose clients went away are not tracked by the transport; wait for them here, even
    // when the transport failed. A store that hangs holds this up for as long as it hangs: say so,
    // so that an operator knows what a second signal to the binary would abandon.
    // Polled rather than awaited with `acquire_many`, which would take the permits as they come
    // back and leave none to count.
    let mut said = None::<tokio::time::Instant>;
    while appends.try_acquire_many(MAX_IN_FLIGHT_APPENDS as u32).is_err() {
        if said.is_none_or(|at| at.elapsed() >= Duration::from_secs(5)) {
            let in_flight = MAX_IN_FLIGHT_APPENDS - appends.available_permits();
            tracing::info!(in_flight, "waiting for in-flight appends to finish");
            said = Some(tokio::time::Instant::now());
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tracing::info!("stopped");
    Ok(served?)
}

/// tonic refuses a request over the size limit with `OUT_OF_RANGE` and no error details, before
/// any handler runs; this answers it as the protocol's `INVALID_ARGUMENT` with an error response
/// instead. No handler returns `OUT_OF_RANGE`, so nothing else is rewritten.
fn refuse_oversized(response: http::Response<tonic::body::Body>) -> http::Response<tonic::body::Body> {
    match Status::from_header_map(response.headers()) {
        Some(refused) if refused.code() == tonic::Code::OutOfRange => {
            status(ErrorType::InvalidArgument, format!("request too large: {}", refused.message()))
                .into_http()
        }
        _ => response,
    }
}

struct Service<S> {
    store: S,
    shared: Arc<Shared>,
}

struct Shared {
    /// The whole expected `authorization` value, when a key is required.
    authorization: Option<Vec<u8>>,
    stopping: watch::Receiver<bool>,
    /// One permit per append in progress; [`serve`] takes them all to wait for the last one.
    appends: Arc<Semaphore>,
}

impl<S: Clone> Clone for Service<S> {
    fn clone(&self) -> Self {
        Service { store: self.store.clone(), shared: self.shared.clone() }
    }
}

/// Compares in time that depends on the lengths only, never on where the first difference lies,
/// so that response times do not leak the key byte by byte.
fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut difference = u8::from(given.len() != expected.len());
    for (i, byte) in expected.iter().enumerate() {
        difference |= given.get(i).copied().unwrap_or(0) ^ byte;
    }
    std::hint::black_box(difference) == 0
}

/// The refusal of calls during shutdown: `UNAVAILABLE` (retryable, at another server or this one
/// once it is back) with the protocol's error details, as for a store that is unavailable.
fn shutting_down() -> Status {
    error_to_status(&dcb::Error::Unavailable { message: "the server is shutting down".into(), source: None })
}

impl Shared {
    /// Checks the call's `authorization` header. `Routes` does it from the headers alone, before
    /// the request body is read: an unauthenticated client must not get the server to receive and
    /// decode a message of up to the request limit.
    fn authorize<B>(&self, request: &http::Request<B>) -> Result<(), Status> {
        let Some(expected) = &self.authorization else { return Ok(()) };
        let given = request.headers().get("authorization").map_or(&b""[..], |value| value.as_bytes());
        if constant_time_eq(given, expected) {
            Ok(())
        } else {
            tracing::debug!(remote = ?remote_address(request), "refused a call without the right API key");
            Err(status(ErrorType::Authentication, "missing or wrong API key (authorization: Bearer <key>)"))
        }
    }
}

/// The client's address, as tonic records it for the connection.
fn remote_address<B>(request: &http::Request<B>) -> Option<std::net::SocketAddr> {
    let extensions = request.extensions();
    #[cfg(feature = "tls")]
    if let Some(info) = extensions.get::<tonic::transport::server::TlsConnectInfo<TcpConnectInfo>>() {
        return info.get_ref().remote_addr();
    }
    extensions.get::<TcpConnectInfo>().and_then(TcpConnectInfo::remote_addr)
}

fn to_status(error: dcb::Error) -> Status {
    match &error {
        dcb::Error::Internal(_)
        | dcb::Error::Io { .. }
        | dcb::Error::Corruption(_)
        | dcb::Error::Unavailable { .. } => {
            tracing::warn!(error = %error, "store error");
        }
        _ => tracing::debug!(error = %error, "request refused"),
    }
    error_to_status(&error)
}

// The checks a request passes before the store sees it: the store checks again, but refusing here
// keeps bad input away from stores entirely. Shared with the fuzzing hook.

pub(crate) fn checked_query(query: Option<proto::Query>) -> Result<Query, Status> {
    let query = query_from_wire(query);
    dcb::limits::validate_query(&query).map_err(to_status)?;
    Ok(query)
}

pub(crate) fn checked_append(request: proto::AppendRequest) -> Result<dcb::AppendRequest, Status> {
    let append = append_from_wire(request).map_err(to_status)?;
    dcb::limits::validate_append(&append).map_err(to_status)?;
    Ok(append)
}

pub(crate) fn checked_source(source: &str) -> Result<(), Status> {
    dcb::limits::validate_source(source).map_err(to_status)
}

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The generated service, except that `Read` and `Subscribe` are answered with encoded batches
/// (see `crate::batch`): the generated routes would need every event built as a generated message
/// first.
struct Routes<S> {
    generated: DcbServer<Service<S>>,
    service: Arc<Service<S>>,
    max_request_bytes: usize,
}

impl<S> Clone for Routes<S> {
    fn clone(&self) -> Self {
        Routes {
            generated: self.generated.clone(),
            service: self.service.clone(),
            max_request_bytes: self.max_request_bytes,
        }
    }
}

impl<S> tonic::server::NamedService for Routes<S> {
    const NAME: &'static str = crate::proto::dcb_server::SERVICE_NAME;
}

impl<S, B> tower::Service<http::Request<B>> for Routes<S>
where
    S: EventStore,
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = std::convert::Infallible;
    type Future = tonic::codegen::BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, request: http::Request<B>) -> Self::Future {
        if let Err(refusal) = self.service.shared.authorize(&request) {
            // Answered without reading the body: hyper resets the rest of the stream.
            return Box::pin(std::future::ready(Ok(refusal.into_http())));
        }
        let service = self.service.clone();
        let max_request_bytes = Some(self.max_request_bytes);
        match request.uri().path() {
            "/umadb.v1.DCB/Read" => {
                let route: BatchRoute<S, proto::ReadRequest> = BatchRoute(service, |service, request| {
                    Box::pin(async move { service.read_batches(request).await })
                });
                Box::pin(serve_batches(route, request, max_request_bytes))
            }
            "/umadb.v1.DCB/Subscribe" => {
                let route: BatchRoute<S, proto::SubscribeRequest> =
                    BatchRoute(service, |service, request| {
                        Box::pin(async move { service.subscribe_batches(request).await })
                    });
                Box::pin(serve_batches(route, request, max_request_bytes))
            }
            _ => self.generated.call(request),
        }
    }
}

/// Answers one call of `route` (whose requests are `T`s) with a stream of encoded batches.
async fn serve_batches<T, R, B>(
    route: R,
    request: http::Request<B>,
    max_request_bytes: Option<usize>,
) -> Result<http::Response<tonic::body::Body>, std::convert::Infallible>
where
    T: prost::Message + Default + DecodeFailure + Send + 'static,
    R: tonic::server::ServerStreamingService<T, Response = EncodedBatch>,
    R::ResponseStream: Send + 'static,
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<tonic::codegen::StdError> + Send + 'static,
{
    let mut grpc = tonic::server::Grpc::new(WireCodec::<EncodedBatch, T>::default())
        .apply_max_message_size_config(max_request_bytes, Some(MAX_RESPONSE_BYTES));
    Ok(grpc.server_streaming(route, request).await)
}

/// The answer of one streamed method: a request of type `T` in, encoded batches out.
type Answer<S, T> =
    fn(Arc<Service<S>>, Request<T>) -> tonic::codegen::BoxFuture<Response<BoxStream<EncodedBatch>>, Status>;

/// `Read` or `Subscribe` as a streaming service of encoded batches.
struct BatchRoute<S, T>(Arc<Service<S>>, Answer<S, T>);

impl<S: EventStore, T: Send + 'static> tonic::server::ServerStreamingService<T> for BatchRoute<S, T> {
    type Response = EncodedBatch;
    type ResponseStream = BoxStream<EncodedBatch>;
    type Future = tonic::codegen::BoxFuture<Response<Self::ResponseStream>, Status>;

    fn call(&mut self, request: Request<T>) -> Self::Future {
        (self.1)(self.0.clone(), request)
    }
}

impl<S: EventStore> Service<S> {
    async fn read_batches(
        &self,
        request: Request<proto::ReadRequest>,
    ) -> Result<Response<BoxStream<EncodedBatch>>, Status> {
        let mut request = request.into_inner();
        if request.subscribe == Some(true) {
            return Err(status(
                ErrorType::InvalidArgument,
                "ReadRequest.subscribe is not supported: call Subscribe instead",
            ));
        }
        let query = checked_query(request.query.take())?;
        let reader = Reader::new(self.store.clone(), query, &request, self.shared.stopping.clone());
        Ok(Response::new(Box::pin(reader.messages())))
    }

    async fn subscribe_batches(
        &self,
        request: Request<proto::SubscribeRequest>,
    ) -> Result<Response<BoxStream<EncodedBatch>>, Status> {
        let request = request.into_inner();
        let query = checked_query(request.query)?;
        let events = self.store.subscribe(query, request.after).await.map_err(to_status)?;
        let subscriber = Subscriber::new(events, request.batch_size, self.shared.stopping.clone());
        Ok(Response::new(Box::pin(subscriber.messages())))
    }
}

#[tonic::async_trait]
impl<S: EventStore> Dcb for Service<S> {
    type ReadStream = BoxStream<proto::ReadResponse>;
    type SubscribeStream = BoxStream<proto::SubscribeResponse>;

    // `Read` and `Subscribe` never reach these two: `Routes` answers them with encoded batches
    // (see `crate::batch`), through `Service::read_batches` and `Service::subscribe_batches`.
    async fn read(&self, _: Request<proto::ReadRequest>) -> Result<Response<Self::ReadStream>, Status> {
        Err(Status::internal("Read is served by the encoded-batch route"))
    }

    async fn subscribe(
        &self,
        _: Request<proto::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        Err(Status::internal("Subscribe is served by the encoded-batch route"))
    }

    async fn append(
        &self,
        request: Request<proto::AppendRequest>,
    ) -> Result<Response<proto::AppendResponse>, Status> {
        if *self.shared.stopping.borrow() {
            return Err(shutting_down());
        }
        let append = checked_append(request.into_inner())?;
        let permit = self.shared.appends.clone().acquire_owned().await.map_err(|_| shutting_down())?;
        let store = self.store.clone();
        // An append, once started, runs to its end even if the client goes away (which drops
        // this handler's future) or the server is stopping.
        let append = RunToEnd::new(async move {
            let _permit = permit;
            store.append_request(append).await
        });
        match std::panic::AssertUnwindSafe(append).catch_unwind().await {
            Ok(Ok(position)) => Ok(Response::new(proto::AppendResponse { position })),
            Ok(Err(error)) => Err(to_status(error)),
            Err(_) => {
                tracing::error!("an append panicked");
                Err(status(ErrorType::Internal, "the append failed inside the server"))
            }
        }
    }

    async fn head(&self, _: Request<proto::HeadRequest>) -> Result<Response<proto::HeadResponse>, Status> {
        let position = self.store.head().await.map_err(to_status)?;
        Ok(Response::new(proto::HeadResponse { position }))
    }

    async fn get_tracking_info(
        &self,
        request: Request<proto::TrackingRequest>,
    ) -> Result<Response<proto::TrackingResponse>, Status> {
        let source = request.into_inner().source;
        checked_source(&source)?;
        let position = self.store.tracking_position(&source).await.map_err(to_status)?;
        Ok(Response::new(proto::TrackingResponse { position }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_compare_equal_only_when_identical() {
        assert!(constant_time_eq(b"Bearer k", b"Bearer k"));
        assert!(!constant_time_eq(b"Bearer j", b"Bearer k"));
        assert!(!constant_time_eq(b"Bearer k2", b"Bearer k"));
        assert!(!constant_time_eq(b"Bearer", b"Bearer k"));
        assert!(!constant_time_eq(b"", b"Bearer k"));
    }
}
