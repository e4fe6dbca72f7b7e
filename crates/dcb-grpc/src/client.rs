//! [`GrpcStore`]: a [`dcb::EventStore`] on the other side of a umadb.v1 connection.

use std::collections::VecDeque;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use dcb::{AppendRequest, EventStore, EventStream, Query, ReadOptions, ReadResponse};
use tonic::Request;
use tonic::metadata::{Ascii, MetadataValue};
use tonic::transport::{Channel, Endpoint};

use crate::convert::{
    append_status_to_error, append_to_wire, query_to_wire, sequenced_from_wire, status_to_error,
};
use crate::limits::{DEFAULT_MAX_REQUEST_BYTES, MAX_CLIENT_RESPONSE_BYTES};
use crate::proto;
use crate::proto::dcb_client::DcbClient;

/// How a [`GrpcStore`] connects and retries.
///
/// ```
/// use std::time::Duration;
///
/// let options = dcb_grpc::ClientOptions::new().api_key("s3cret").request_timeout(Duration::from_secs(5));
/// # let _ = options;
/// ```
#[derive(Clone)]
pub struct ClientOptions {
    api_key: Option<String>,
    connect_timeout: Duration,
    request_timeout: Duration,
    retries: u32,
    batch_size: Option<u32>,
    #[cfg(feature = "tls")]
    ca_certificate: Option<Vec<u8>>,
}

impl Default for ClientOptions {
    fn default() -> Self {
        ClientOptions {
            api_key: None,
            connect_timeout: Duration::from_secs(5),
            request_timeout: Duration::from_secs(30),
            retries: 3,
            batch_size: None,
            #[cfg(feature = "tls")]
            ca_certificate: None,
        }
    }
}

impl fmt::Debug for ClientOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientOptions")
            .field("api_key", &self.api_key.as_ref().map(|_| "<set>"))
            .field("connect_timeout", &self.connect_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("retries", &self.retries)
            .field("batch_size", &self.batch_size)
            .finish_non_exhaustive()
    }
}

impl ClientOptions {
    /// No API key, 5 s to connect, 30 s per request, 3 retries of idempotent calls.
    pub fn new() -> Self {
        Self::default()
    }

    /// Sends `authorization: Bearer <key>` with every call.
    pub fn api_key(mut self, key: impl Into<String>) -> Self {
        self.api_key = Some(key.into());
        self
    }

    /// How long establishing the connection may take.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.connect_timeout = timeout;
        self
    }

    /// How long one wait for the server may take: an append, a head, the start of a read and
    /// then each of its batches (a long read is not cut off while the server keeps sending, but
    /// one whose server scans longer than this before its next batch is: UmaDB, which has no type
    /// index, may for a types-only query over a large store), the start of a subscription (which
    /// then has none). Default 30 s.
    pub fn request_timeout(mut self, timeout: Duration) -> Self {
        self.request_timeout = timeout;
        self
    }

    /// How many times a read, head or tracking call that failed as unavailable is tried again.
    /// Appends are never retried here: give events uuids and retry them under a condition.
    pub fn retries(mut self, retries: u32) -> Self {
        self.retries = retries;
        self
    }

    /// Events per message the server is asked for (it caps the value; unset means its default).
    pub fn batch_size(mut self, batch_size: u32) -> Self {
        self.batch_size = Some(batch_size);
        self
    }

    /// Trusts this PEM certificate (a CA, or a self-signed server) for `https://` URLs.
    #[cfg(feature = "tls")]
    pub fn ca_certificate(mut self, pem: impl Into<Vec<u8>>) -> Self {
        self.ca_certificate = Some(pem.into());
        self
    }
}

/// An event store reached over gRPC: any server speaking `umadb.v1` (this crate's [`serve`], or
/// UmaDB itself).
///
/// One HTTP/2 connection is shared by every clone and every call, and re-established when it
/// drops. Reads, heads and tracking lookups are retried when the server is unavailable; appends
/// are not, because a failed append may have been recorded (see
/// [`dcb::EventStore::append_request`]). A subscription cut by a lost connection subscribes again
/// after the last event it received, for up to a minute, so its consumer sees neither a gap nor a
/// repeat. Requests are checked against [`dcb::limits`] before they are sent, with the same
/// messages a store gives.
///
/// [`serve`]: crate::serve
#[derive(Clone)]
pub struct GrpcStore {
    client: DcbClient<Channel>,
    shared: Arc<Shared>,
}

struct Shared {
    options: ClientOptions,
    authorization: Option<MetadataValue<Ascii>>,
    url: String,
}

impl fmt::Debug for GrpcStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GrpcStore")
            .field("url", &self.shared.url)
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}

impl GrpcStore {
    /// Connects to the server at `url` (`http://host:port`, or `https://` with TLS).
    pub async fn connect(url: impl Into<String>) -> dcb::Result<Self> {
        Self::connect_with(url, ClientOptions::default()).await
    }

    /// Connects to the server at `url` with `options`.
    pub async fn connect_with(url: impl Into<String>, options: ClientOptions) -> dcb::Result<Self> {
        let url = url.into();
        let authorization = match &options.api_key {
            None => None,
            Some(key) => Some(
                MetadataValue::try_from(format!("Bearer {key}"))
                    .map_err(|_| dcb::Error::invalid("the API key holds characters a header cannot carry"))?,
            ),
        };
        #[allow(unused_mut)]
        let mut endpoint = Endpoint::from_shared(url.clone())
            .map_err(|error| dcb::Error::invalid(format!("invalid server URL {url:?}: {error}")))?
            .connect_timeout(options.connect_timeout)
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(30))
            .keep_alive_while_idle(true);
        #[cfg(feature = "tls")]
        if let Some(pem) = &options.ca_certificate {
            let tls = tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(pem));
            endpoint = endpoint
                .tls_config(tls)
                .map_err(|error| dcb::Error::invalid(format!("TLS configuration refused: {error}")))?;
        }
        let channel = endpoint
            .connect()
            .await
            .map_err(|error| dcb::Error::unavailable(format!("cannot connect to {url}"), error))?;
        let client = DcbClient::new(channel)
            .max_decoding_message_size(MAX_CLIENT_RESPONSE_BYTES)
            .max_encoding_message_size(DEFAULT_MAX_REQUEST_BYTES);
        Ok(GrpcStore { client, shared: Arc::new(Shared { options, authorization, url }) })
    }

    fn request<T>(&self, message: T, timeout: bool) -> Request<T> {
        let mut request = Request::new(message);
        if timeout {
            request.set_timeout(self.shared.options.request_timeout);
        }
        if let Some(authorization) = &self.shared.authorization {
            request.metadata_mut().insert("authorization", authorization.clone());
        }
        request
    }

    /// Runs an idempotent call, again after a short pause while it fails as unavailable. The
    /// call bounds its own waits (see [`GrpcStore::waiting`]).
    async fn retrying<T, F, Fut>(&self, what: &str, mut call: F) -> dcb::Result<T>
    where
        F: FnMut() -> Fut,
        Fut: Future<Output = dcb::Result<T>>,
    {
        let options = &self.shared.options;
        let mut attempt = 0;
        loop {
            let error = match call().await {
                Ok(value) => return Ok(value),
                Err(error) if error.is_retryable() => error,
                Err(error) => return Err(error),
            };
            if attempt >= options.retries {
                return Err(error);
            }
            attempt += 1;
            tracing::debug!(%error, attempt, "{what} failed, retrying");
            tokio::time::sleep(Duration::from_millis(50 << attempt.min(4))).await;
        }
    }

    /// Reads like [`EventStore::read`], but hands the events over in the batches the server
    /// sends, as they arrive, instead of collecting them all first: a reader of a large store
    /// holds one batch in memory at a time, and processes the first events while the server
    /// sends the next. The batch size is [`ClientOptions::batch_size`].
    ///
    /// Only the call that starts the read is retried; a stream cut later, a batch that takes longer
    /// than [`ClientOptions::request_timeout`], or a server that breaks the read's order, window
    /// or limit ends it with an error, and every later call returns an error too: start it again.
    ///
    /// ```no_run
    /// # async fn run(store: dcb_grpc::GrpcStore) -> dcb::Result<()> {
    /// let mut batches = store.read_batches(&dcb::Query::all(), dcb::ReadOptions::default()).await?;
    /// let mut count = 0;
    /// while let Some(batch) = batches.next_batch().await? {
    ///     count += batch.len();
    /// }
    /// println!("{count} events up to head {:?}", batches.head());
    /// # Ok(())
    /// # }
    /// ```
    pub async fn read_batches(&self, query: &Query, options: ReadOptions) -> dcb::Result<ReadBatches> {
        dcb::limits::validate_query(query)?;
        let query = query_to_wire(query);
        self.retrying("read", || self.waiting("read", self.start_read(query.clone(), options))).await
    }

    async fn start_read(&self, query: proto::Query, options: ReadOptions) -> dcb::Result<ReadBatches> {
        // The protocol's `start` is inclusive: a lower bound forwards, an upper bound backwards.
        // The other bound has no field, so the stream is cut where it passes it: a backward read
        // at its first event at or below `after`, a forward one at its first at or above `before`.
        let start = if options.backwards {
            options.before.map(|before| before.saturating_sub(1))
        } else {
            options.after.map(|after| after.saturating_add(1))
        };
        let request = proto::ReadRequest {
            query: Some(query),
            start,
            backwards: Some(options.backwards),
            limit: options.limit,
            subscribe: None,
            batch_size: self.shared.options.batch_size,
        };
        let mut client = self.client.clone();
        // No deadline for the whole call: the caller bounds each wait instead (a long read keeps going).
        let stream = client.read(self.request(request, false)).await.map_err(status_to_error)?.into_inner();
        Ok(ReadBatches {
            stream,
            options,
            url: self.shared.url.clone(),
            timeout: self.shared.options.request_timeout,
            server_head: None,
            first: None,
            last: None,
            delivered: 0,
            delivered_bytes: 0,
            state: State::Reading,
        })
    }

    /// One wait for the server, at most [`ClientOptions::request_timeout`].
    async fn waiting<T>(&self, what: &str, call: impl Future<Output = dcb::Result<T>>) -> dcb::Result<T> {
        let timeout = self.shared.options.request_timeout;
        tokio::time::timeout(timeout, call).await.unwrap_or_else(|_| {
            Err(dcb::Error::Unavailable {
                message: format!("{what} on {} took longer than {timeout:?}", self.shared.url),
                source: None,
            })
        })
    }

    /// A whole read. The timeout bounds each wait for the server (the start, then each batch, in
    /// `next_batch`), not the whole read, which may stream for long from a large store.
    async fn read_once(&self, query: proto::Query, options: ReadOptions) -> dcb::Result<ReadResponse> {
        let mut batches = self.waiting("read", self.start_read(query, options)).await?;
        let mut events = Vec::new();
        while let Some(batch) = batches.next_batch().await? {
            events.extend(batch);
        }
        Ok(ReadResponse { events, head: batches.head() })
    }
}

/// The events of one read, in the batches the server sends them: see [`GrpcStore::read_batches`].
///
/// What the server sends is checked, not trusted: events must come in the read's order and inside
/// its window, and the read is cut at its limit and byte budget (which the protocol cannot carry:
/// the rest of the stream is dropped), so that a faulty or foreign server cannot make a
/// read return what the contract says it cannot.
#[derive(Debug)]
pub struct ReadBatches {
    stream: tonic::Streaming<proto::ReadResponse>,
    options: ReadOptions,
    /// The server's, to name it in errors.
    url: String,
    /// The longest wait for a batch.
    timeout: Duration,
    /// The head in the first message that carried one: later ones add nothing (a server reports
    /// the head captured at the start in every message), and UmaDB's lower ones for a backward
    /// read with a limit would be wrong.
    server_head: Option<u64>,
    /// The first and the last position handed over.
    first: Option<u64>,
    last: Option<u64>,
    delivered: u64,
    /// The bytes of the events handed over ([`dcb::Event::byte_size`]), for the byte budget.
    delivered_bytes: usize,
    state: State,
}

#[derive(Debug)]
enum State {
    Reading,
    /// Every event of the read has been handed over.
    Done,
    /// The read failed for the reason held (and whether that failure was worth retrying): it
    /// can be neither continued (tonic's stream answers `None` after an error, as if complete)
    /// nor trusted for a head.
    Failed {
        cause: String,
        retryable: bool,
    },
}

impl ReadBatches {
    /// Whether `position` lies past the bound the wire could not carry (see `start_read`).
    fn past_the_window(&self, position: u64) -> bool {
        if self.options.backwards {
            self.options.after.is_some_and(|after| position <= after)
        } else {
            self.options.before.is_some_and(|before| position >= before)
        }
    }

    /// Whether `position` can follow the events handed over so far: beyond the last in the read's
    /// direction, and inside the bound sent to the server. (Position 0 is never an event's.)
    fn in_order(&self, position: u64) -> bool {
        position > 0
            && match (self.options.backwards, self.last) {
                (false, last) => position > last.or(self.options.after).unwrap_or(0),
                (true, Some(last)) => position < last,
                (true, None) => self.options.before.is_none_or(|before| position < before),
            }
    }

    /// Whether the read has handed over as many events, or as many bytes, as it may return.
    fn at_the_limit(&self) -> bool {
        self.options.limit.is_some_and(|limit| self.delivered >= u64::from(limit))
            || !self.options.takes_more(self.delivered_bytes)
    }

    /// The next batch, in the read's order; `None` once the read is complete. A batch may be
    /// empty (a read that matches nothing still receives one message, with the head).
    ///
    /// After an error, every later call returns an error, and [`ReadBatches::head`] is `None`.
    pub async fn next_batch(&mut self) -> dcb::Result<Option<Vec<dcb::SequencedEvent>>> {
        match &self.state {
            State::Reading => {}
            State::Done => return Ok(None),
            // Of the kind the failure was: a server's fault is not worth a retry.
            State::Failed { cause, retryable: true } => {
                return Err(dcb::Error::Unavailable {
                    message: format!("the read from {} was cut ({cause}); start it again", self.url),
                    source: None,
                });
            }
            State::Failed { cause, retryable: false } => {
                return Err(dcb::Error::Internal(format!("the read from {} failed ({cause})", self.url)));
            }
        }
        let batch = self.receive().await;
        if let Err(error) = &batch {
            self.state = State::Failed { cause: error.to_string(), retryable: error.is_retryable() };
        }
        batch
    }

    async fn receive(&mut self) -> dcb::Result<Option<Vec<dcb::SequencedEvent>>> {
        let message = match tokio::time::timeout(self.timeout, self.stream.message()).await {
            Ok(message) => message.map_err(status_to_error)?,
            Err(_) => {
                return Err(dcb::Error::Unavailable {
                    message: format!("a read batch from {} took longer than {:?}", self.url, self.timeout),
                    source: None,
                });
            }
        };
        let Some(message) = message else {
            self.state = State::Done;
            return Ok(None);
        };
        self.server_head = self.server_head.or(message.head);
        let mut events = Vec::with_capacity(message.events.len());
        for event in message.events {
            if self.at_the_limit() {
                // Anything more the server sent would be beyond the limit.
                self.state = State::Done;
                break;
            }
            let event = sequenced_from_wire(event)?;
            if !self.in_order(event.position) {
                return Err(dcb::Error::Internal(format!(
                    "the server at {} sent position {} after {:?} in a read with {:?}: out of order or \
                     outside the window",
                    self.url, event.position, self.last, self.options
                )));
            }
            if self.past_the_window(event.position) {
                self.state = State::Done;
                break;
            }
            self.first = self.first.or(Some(event.position));
            self.last = Some(event.position);
            self.delivered += 1;
            self.delivered_bytes += event.event.byte_size();
            events.push(event);
        }
        if self.at_the_limit() {
            // Every event the read may return has arrived: no need to wait for the stream's end.
            self.state = State::Done;
        }
        if events.is_empty() && matches!(self.state, State::Done) {
            // The rest of the read lay beyond its `after`, `before` or limit.
            return Ok(None);
        }
        Ok(Some(events))
    }

    /// The head of the events received so far, with the meaning of [`ReadResponse::head`]; `None`
    /// after an error.
    pub fn head(&self) -> Option<u64> {
        if matches!(self.state, State::Failed { .. }) {
            return None;
        }
        if self.options.reports_last_returned() {
            // Later matches were not considered.
            return self.last;
        }
        // A backward read returns the newest matches first, so nothing matches between the first
        // it returned and the store's head: that first position is a head at least as safe, and
        // UmaDB reports a lower one (the last position of each message) for a backward read with a
        // limit, which an append conditioned on it would always conflict with.
        let head = if self.options.backwards { self.server_head.max(self.first) } else { self.server_head };
        // A read that stops at `before` considered less than the server's head.
        head.map(|head| self.options.last_considered(head)).filter(|&head| head > 0)
    }
}

fn unavailable_after(url: &str, timeout: Duration) -> dcb::Error {
    dcb::Error::Unavailable {
        message: format!(
            "append to {url} took longer than {timeout:?}: it may or may not have been recorded"
        ),
        source: None,
    }
}

impl EventStore for GrpcStore {
    async fn read(&self, query: &Query, options: ReadOptions) -> dcb::Result<ReadResponse> {
        dcb::limits::validate_query(query)?;
        let query = query_to_wire(query);
        self.retrying("read", || self.read_once(query.clone(), options)).await
    }

    async fn append_request(&self, request: AppendRequest) -> dcb::Result<u64> {
        dcb::limits::validate_append(&request)?;
        let message = append_to_wire(request);
        let mut client = self.client.clone();
        let timeout = self.shared.options.request_timeout;
        match tokio::time::timeout(timeout, client.append(self.request(message, true))).await {
            Ok(Ok(response)) => Ok(response.into_inner().position),
            Ok(Err(status)) => Err(append_status_to_error(status)),
            Err(_) => Err(unavailable_after(&self.shared.url, timeout)),
        }
    }

    async fn head(&self) -> dcb::Result<Option<u64>> {
        self.retrying("head", || {
            let mut client = self.client.clone();
            let request = self.request(proto::HeadRequest {}, true);
            self.waiting("head", async move {
                Ok(client.head(request).await.map_err(status_to_error)?.into_inner().position)
            })
        })
        .await
    }

    async fn tracking_position(&self, source: &str) -> dcb::Result<Option<u64>> {
        dcb::limits::validate_source(source)?;
        self.retrying("tracking lookup", || {
            let mut client = self.client.clone();
            let request = self.request(proto::TrackingRequest { source: source.to_owned() }, true);
            self.waiting("tracking lookup", async move {
                Ok(client.get_tracking_info(request).await.map_err(status_to_error)?.into_inner().position)
            })
        })
        .await
    }

    async fn subscribe(&self, query: Query, after: Option<u64>) -> dcb::Result<EventStream> {
        dcb::limits::validate_query(&query)?;
        let request = proto::SubscribeRequest {
            query: Some(query_to_wire(&query)),
            after,
            batch_size: self.shared.options.batch_size,
        };
        let stream = self
            .retrying("subscribe", || self.waiting("subscribe", self.open_subscription(request.clone())))
            .await?;
        let follow = Follow {
            store: self.clone(),
            request,
            stream,
            buffer: VecDeque::new(),
            failed: false,
            quiet: None,
        };
        Ok(Box::pin(futures_util::stream::unfold(follow, Follow::next)))
    }
}

impl GrpcStore {
    async fn open_subscription(
        &self,
        message: proto::SubscribeRequest,
    ) -> dcb::Result<tonic::Streaming<proto::SubscribeResponse>> {
        let mut client = self.client.clone();
        // No deadline: a subscription lives as long as its consumer.
        let request = self.request(message, false);
        Ok(client.subscribe(request).await.map_err(status_to_error)?.into_inner())
    }
}

/// A subscription's messages, flattened into events. When the stream fails with a retryable error
/// (the connection lost, the server restarting), it subscribes again after the last event it
/// delivered, so that the consumer sees neither a gap nor a repeat.
struct Follow {
    store: GrpcStore,
    /// The request to subscribe again with; its `after` follows the events received.
    request: proto::SubscribeRequest,
    stream: tonic::Streaming<proto::SubscribeResponse>,
    buffer: VecDeque<dcb::SequencedEvent>,
    failed: bool,
    /// Since when, and with what pause next, the stream has been cut again and again without
    /// delivering an event: a server that accepts the subscription and breaks it at once must
    /// not be subscribed to again in a tight loop, nor for ever.
    quiet: Option<(tokio::time::Instant, Duration)>,
}

impl Follow {
    async fn next(mut self) -> Option<(dcb::Result<dcb::SequencedEvent>, Self)> {
        loop {
            if let Some(event) = self.buffer.pop_front() {
                return Some((Ok(event), self));
            }
            if self.failed {
                return None;
            }
            let error = match self.stream.message().await {
                Ok(None) => return None,
                Ok(Some(message)) => {
                    match message.events.into_iter().map(sequenced_from_wire).collect::<dcb::Result<Vec<_>>>()
                    {
                        Ok(events) => {
                            self.take(events);
                            continue;
                        }
                        Err(error) => error,
                    }
                }
                Err(status) => match self.resubscribe(status_to_error(status)).await {
                    Ok(()) => continue,
                    Err(error) => error,
                },
            };
            self.failed = true;
            return Some((Err(error), self));
        }
    }

    /// Buffers the events after the cursor and moves it to the last. A server may send again what
    /// it sent before a reconnect (or send events out of order): the consumer has those already,
    /// and must see neither a repeat nor its cursor move back.
    fn take(&mut self, events: Vec<dcb::SequencedEvent>) {
        for event in events {
            let cursor = self.request.after.unwrap_or(0);
            if event.position <= cursor {
                tracing::debug!(position = event.position, cursor, "subscription skipped an event it had");
                continue;
            }
            self.request.after = Some(event.position);
            self.buffer.push_back(event);
            self.quiet = None;
        }
    }

    /// Subscribes again after `error` cut the stream, if the error is retryable, as patiently as
    /// any subscription (`dcb::subscription::patiently`); else, or then, returns the last error.
    async fn resubscribe(&mut self, error: dcb::Error) -> dcb::Result<()> {
        if !error.is_retryable() {
            return Err(error);
        }
        match &mut self.quiet {
            None => self.quiet = Some((tokio::time::Instant::now(), Duration::from_millis(20))),
            Some((since, _)) if since.elapsed() >= dcb::subscription::PATIENCE => return Err(error),
            Some((_, pause)) => {
                tokio::time::sleep(*pause).await;
                *pause = (*pause * 2).min(Duration::from_secs(1));
            }
        }
        tracing::debug!(%error, after = ?self.request.after, "subscription cut, subscribing again");
        let (store, request) = (&self.store, &self.request);
        // Each attempt is bounded as the first subscribe is: a server that accepts the call and
        // never answers would otherwise hold the consumer forever.
        self.stream = dcb::subscription::patiently(|| {
            store.waiting("subscribe", store.open_subscription(request.clone()))
        })
        .await?;
        Ok(())
    }
}
