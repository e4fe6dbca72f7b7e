//! The server as a UmaDB client sees it: raw umadb.v1 messages, authentication, bad input,
//! read mapping and batching, disconnects and shutdown.

use std::sync::Arc;

use dcb::{AppendRequest, EventStore, EventStream, MemoryStore, Query, ReadOptions, ReadResponse};
use dcb_grpc::proto::dcb_client::DcbClient;
use dcb_grpc::proto::error_response::ErrorType;
use dcb_grpc::proto::{self, ErrorResponse};
use dcb_grpc::{ClientOptions, GrpcStore, ServerOptions};
use futures_util::StreamExt;
use prost::Message;
use tokio::net::TcpListener;
use tokio::sync::{Notify, oneshot};
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::{Code, Request, Status};

struct Server {
    url: String,
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<Result<(), dcb_grpc::Error>>,
}

impl Server {
    async fn start<S: EventStore>(store: S, options: ServerOptions) -> Server {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown = async move {
            let _ = stopped.await;
        };
        let handle = tokio::spawn(dcb_grpc::serve(store, listener, options, shutdown));
        Server { url, stop: Some(stop), handle }
    }

    async fn raw(&self) -> DcbClient<Channel> {
        DcbClient::connect(self.url.clone()).await.unwrap()
    }

    async fn stop(mut self) {
        self.stop.take().unwrap().send(()).unwrap();
        self.handle.await.unwrap().unwrap();
    }
}

fn event(event_type: &str, tags: &[&str]) -> proto::Event {
    proto::Event {
        event_type: event_type.into(),
        tags: tags.iter().map(|t| t.to_string()).collect(),
        data: "{}".into(),
        ..Default::default()
    }
}

fn append(events: Vec<proto::Event>) -> proto::AppendRequest {
    proto::AppendRequest { events, condition: None, tracking_info: None }
}

fn read_request(start: Option<u64>, backwards: bool, limit: Option<u32>) -> proto::ReadRequest {
    proto::ReadRequest {
        query: None,
        start,
        backwards: Some(backwards),
        limit,
        subscribe: None,
        batch_size: None,
    }
}

/// The error type carried in a status's details, which UmaDB clients decode.
fn error_type(status: &Status) -> ErrorType {
    let details = ErrorResponse::decode(status.details()).expect("an ErrorResponse in the details");
    assert_eq!(details.message, status.message());
    ErrorType::try_from(details.error_type).unwrap()
}

fn assert_invalid(status: Status, what: &str) {
    assert_eq!(status.code(), Code::InvalidArgument, "{what}: {status:?}");
    let kind = error_type(&status);
    assert!(matches!(kind, ErrorType::InvalidArgument | ErrorType::Serialization), "{what}: {kind:?}");
}

async fn read_all(client: &mut DcbClient<Channel>, request: proto::ReadRequest) -> Vec<proto::ReadResponse> {
    let mut stream = client.read(request).await.unwrap().into_inner();
    let mut messages = Vec::new();
    while let Some(message) = stream.message().await.unwrap() {
        messages.push(message);
    }
    messages
}

fn positions(messages: &[proto::ReadResponse]) -> Vec<u64> {
    messages.iter().flat_map(|m| m.events.iter().map(|e| e.position)).collect()
}

async fn seed(client: &mut DcbClient<Channel>, count: usize) {
    let events = (0..count).map(|i| event(if i % 2 == 0 { "Even" } else { "Odd" }, &["t"])).collect();
    client.append(append(events)).await.unwrap();
}

fn with_key<T>(message: T, key: Option<&str>) -> Request<T> {
    let mut request = Request::new(message);
    if let Some(key) = key {
        request.metadata_mut().insert("authorization", format!("Bearer {key}").parse().unwrap());
    }
    request
}

/// Every method, called with `key`: the status of each that failed.
async fn call_every_method(
    client: &mut DcbClient<Channel>,
    key: Option<&str>,
) -> Vec<(&'static str, Status)> {
    let mut failures = Vec::new();
    if let Err(status) = client.append(with_key(append(vec![event("A", &["t"])]), key)).await {
        failures.push(("Append", status));
    }
    if let Err(status) = client.head(with_key(proto::HeadRequest {}, key)).await {
        failures.push(("Head", status));
    }
    let tracking = proto::TrackingRequest { source: "s".into() };
    if let Err(status) = client.get_tracking_info(with_key(tracking, key)).await {
        failures.push(("GetTrackingInfo", status));
    }
    match client.read(with_key(read_request(None, false, None), key)).await {
        Err(status) => failures.push(("Read", status)),
        Ok(response) => {
            let mut stream = response.into_inner();
            if let Err(status) = stream.message().await {
                failures.push(("Read", status));
            }
        }
    }
    let subscribe = proto::SubscribeRequest { query: None, after: None, batch_size: None };
    if let Err(status) = client.subscribe(with_key(subscribe, key)).await {
        failures.push(("Subscribe", status));
    }
    failures
}

#[tokio::test]
async fn every_method_refuses_a_missing_or_wrong_key() {
    let store = MemoryStore::new();
    let server = Server::start(store.clone(), ServerOptions::new().api_key("right-key")).await;
    let mut client = server.raw().await;
    for key in [None, Some("wrong-key"), Some("right-key-but-longer"), Some("")] {
        let failures = call_every_method(&mut client, key).await;
        let methods: Vec<&str> = failures.iter().map(|(method, _)| *method).collect();
        assert_eq!(methods, ["Append", "Head", "GetTrackingInfo", "Read", "Subscribe"], "key {key:?}");
        for (method, status) in failures {
            assert_eq!(status.code(), Code::Unauthenticated, "{method} with key {key:?}");
            assert_eq!(error_type(&status), ErrorType::Authentication, "{method}");
        }
    }
    assert_eq!(store.head().await.unwrap(), None, "an unauthenticated append wrote something");
    assert!(call_every_method(&mut client, Some("right-key")).await.is_empty());
    assert_eq!(store.head().await.unwrap(), Some(1));
    server.stop().await;
}

/// The key is checked from the headers, before the request message is read: a client without it
/// cannot make the server receive and decode a message of up to 16 MiB (millions of empty events
/// when decoded). Here the request message never comes, so only a refusal from the headers alone
/// answers at all.
#[tokio::test]
async fn a_call_without_the_key_is_refused_before_its_message_is_read() {
    use tonic::codegen::http::uri::PathAndQuery;
    let server = Server::start(MemoryStore::new(), ServerOptions::new().api_key("k")).await;
    let channel = Channel::from_shared(server.url.clone()).unwrap().connect().await.unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    for method in ["Append", "Head", "GetTrackingInfo", "Read", "Subscribe"] {
        let path = PathAndQuery::try_from(format!("/umadb.v1.DCB/{method}")).unwrap();
        let never = futures_util::stream::pending::<proto::HeadRequest>();
        let codec = tonic_prost::ProstCodec::<proto::HeadRequest, proto::HeadResponse>::default();
        grpc.ready().await.unwrap();
        let call = grpc.streaming(with_key(never, Some("wrong")), path, codec);
        let answer = tokio::time::timeout(std::time::Duration::from_secs(5), call).await;
        let status = answer.unwrap_or_else(|_| panic!("{method}: no answer before the message"));
        let status = status.expect_err("a call with the wrong key was served");
        assert_eq!(status.code(), Code::Unauthenticated, "{method}: {status:?}");
        assert_eq!(error_type(&status), ErrorType::Authentication, "{method}");
    }
    // A message that does come, still being sent when the refusal is: the client gets the refusal.
    let mut client = server.raw().await;
    let flood = append(vec![proto::Event::default(); 1_000_000]);
    let status = client.append(with_key(flood, None)).await.unwrap_err();
    assert_eq!(status.code(), Code::Unauthenticated, "{status:?}");
    server.stop().await;
}

#[tokio::test]
async fn the_client_store_sends_its_key_and_reports_a_wrong_one() {
    let server = Server::start(MemoryStore::new(), ServerOptions::new().api_key("k")).await;
    let good = GrpcStore::connect_with(server.url.clone(), ClientOptions::new().api_key("k")).await.unwrap();
    good.append(vec![dcb::Event::new("A", "")], None).await.unwrap();
    assert_eq!(good.head().await.unwrap(), Some(1));
    let bad =
        GrpcStore::connect_with(server.url.clone(), ClientOptions::new().api_key("nope")).await.unwrap();
    assert!(matches!(bad.head().await, Err(dcb::Error::Unauthenticated(_))));
    assert!(matches!(
        bad.append(vec![dcb::Event::new("A", "")], None).await,
        Err(dcb::Error::Unauthenticated(_))
    ));
    assert!(matches!(bad.subscribe(Query::all(), None).await, Err(dcb::Error::Unauthenticated(_))));
    let none = GrpcStore::connect(server.url.clone()).await.unwrap();
    assert!(matches!(
        none.read(&Query::all(), ReadOptions::default()).await,
        Err(dcb::Error::Unauthenticated(_))
    ));
    assert_eq!(good.head().await.unwrap(), Some(1));
    server.stop().await;
}

#[tokio::test]
async fn the_health_service_answers_without_a_key() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let server = Server::start(MemoryStore::new(), ServerOptions::new().api_key("k")).await;
    let channel = Channel::from_shared(server.url.clone()).unwrap().connect().await.unwrap();
    let mut health = HealthClient::new(channel);
    for service in ["", "umadb.v1.DCB"] {
        let response = health.check(HealthCheckRequest { service: service.into() }).await.unwrap();
        assert_eq!(response.into_inner().status(), ServingStatus::Serving, "service {service:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn bad_requests_are_invalid_arguments_and_write_nothing() {
    let store = MemoryStore::new();
    let server = Server::start(store.clone(), ServerOptions::new()).await;
    let mut client = server.raw().await;
    let bad_uuid = proto::Event { uuid: "not-a-uuid".into(), ..event("A", &[]) };
    let huge_query = proto::Query {
        items: (0..5000).map(|i| proto::QueryItem { types: vec![], tags: vec![format!("t{i}")] }).collect(),
    };
    let conditioned = proto::AppendRequest {
        condition: Some(proto::AppendCondition {
            fail_if_events_match: Some(huge_query.clone()),
            after: None,
            items_after: Vec::new(),
        }),
        ..append(vec![event("A", &[])])
    };
    let tracked = proto::AppendRequest {
        tracking_info: Some(proto::TrackingInfo { source: String::new(), position: 1 }),
        ..append(vec![event("A", &[])])
    };
    let appends = [
        ("an empty event type", append(vec![event("", &[])])),
        ("an empty tag", append(vec![event("A", &[""])])),
        ("an invalid uuid", append(vec![event("Good", &[]), bad_uuid])),
        ("no events", append(vec![])),
        ("a condition of 5000 items", conditioned),
        ("an empty tracking source", tracked),
    ];
    for (what, request) in appends {
        assert_invalid(client.append(request).await.unwrap_err(), what);
    }
    let huge_read = proto::ReadRequest { query: Some(huge_query.clone()), ..read_request(None, false, None) };
    assert_invalid(client.read(huge_read).await.unwrap_err(), "a read of 5000 items");
    let huge_subscription =
        proto::SubscribeRequest { query: Some(huge_query), after: None, batch_size: None };
    assert_invalid(client.subscribe(huge_subscription).await.unwrap_err(), "a subscription of 5000 items");
    let deprecated = proto::ReadRequest { subscribe: Some(true), ..read_request(None, false, None) };
    assert_invalid(client.read(deprecated).await.unwrap_err(), "a read asking to subscribe");
    let tracking = proto::TrackingRequest { source: String::new() };
    assert_invalid(client.get_tracking_info(tracking).await.unwrap_err(), "an empty tracking source");
    assert_eq!(store.head().await.unwrap(), None);
    server.stop().await;
}

/// Messages the generated client cannot produce, sent with prost types of the wrong shape.
mod malformed {
    /// An `Event` whose `event_type` (field 1) holds arbitrary bytes.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct RawEvent {
        #[prost(bytes = "vec", tag = "1")]
        pub(crate) event_type: Vec<u8>,
    }

    /// An `AppendRequest` of [`RawEvent`]s.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct RawAppend {
        #[prost(message, repeated, tag = "1")]
        pub(crate) events: Vec<RawEvent>,
    }

    /// Field 1 of an `AppendRequest` with the wrong wire type.
    #[derive(Clone, PartialEq, prost::Message)]
    pub(crate) struct WrongWireType {
        #[prost(fixed64, tag = "1")]
        pub(crate) events: u64,
    }
}

async fn raw_append<M: prost::Message + Default + Send + Sync + 'static>(url: &str, message: M) -> Status {
    let channel = Channel::from_shared(url.to_owned()).unwrap().connect().await.unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/umadb.v1.DCB/Append");
    let codec = tonic_prost::ProstCodec::<M, proto::AppendResponse>::default();
    grpc.unary(Request::new(message), path, codec).await.expect_err("a malformed append succeeded")
}

#[tokio::test]
async fn undecodable_requests_are_invalid_arguments() {
    let store = MemoryStore::new();
    let server = Server::start(store.clone(), ServerOptions::new()).await;
    let invalid_utf8 =
        malformed::RawAppend { events: vec![malformed::RawEvent { event_type: vec![0xff, 0xfe, b'A'] }] };
    let status = raw_append(&server.url, invalid_utf8).await;
    assert_invalid(status.clone(), "invalid UTF-8 in an event type");
    assert_eq!(error_type(&status), ErrorType::Serialization);
    let status = raw_append(&server.url, malformed::WrongWireType { events: 7 }).await;
    assert_invalid(status, "a wrong wire type");
    assert_eq!(store.head().await.unwrap(), None);
    server.stop().await;
}

#[tokio::test]
async fn oversized_requests_are_refused_before_decoding() {
    let store = MemoryStore::new();
    let server = Server::start(store.clone(), ServerOptions::new().max_request_bytes(64 * 1024)).await;
    let mut client = server.raw().await;
    let big = proto::Event { data: vec![0u8; 100 * 1024].into(), ..event("Big", &[]) };
    let status = client.append(append(vec![big])).await.unwrap_err();
    assert_invalid(status, "a request over the size limit");
    let through_client = GrpcStore::connect(server.url.clone()).await.unwrap();
    let result = through_client.append(vec![dcb::Event::new("Big", vec![0u8; 100 * 1024])], None).await;
    assert!(matches!(result, Err(dcb::Error::InvalidArgument(_))), "{result:?}");
    client.append(append(vec![event("Small", &[])])).await.unwrap();
    assert_eq!(store.head().await.unwrap(), Some(1));
    server.stop().await;
}

#[tokio::test]
async fn start_is_inclusive_forwards_and_an_upper_bound_backwards() {
    let server = Server::start(MemoryStore::new(), ServerOptions::new()).await;
    let mut client = server.raw().await;
    seed(&mut client, 6).await;
    let cases = [
        ("forward from 3", read_request(Some(3), false, None), vec![3, 4, 5, 6], Some(6)),
        ("forward from 0", read_request(Some(0), false, None), vec![1, 2, 3, 4, 5, 6], Some(6)),
        ("forward from 3, limit 2", read_request(Some(3), false, Some(2)), vec![3, 4], Some(4)),
        ("forward past the end", read_request(Some(9), false, None), vec![], Some(6)),
        ("backward", read_request(None, true, None), vec![6, 5, 4, 3, 2, 1], Some(6)),
        ("backward from 4", read_request(Some(4), true, None), vec![4, 3, 2, 1], Some(6)),
        ("backward from 4, limit 2", read_request(Some(4), true, Some(2)), vec![4, 3], Some(6)),
        ("backward from 99, limit 2", read_request(Some(99), true, Some(2)), vec![6, 5], Some(6)),
        ("limit 0", read_request(None, false, Some(0)), vec![], None),
    ];
    for (what, request, expected, head) in cases {
        let messages = read_all(&mut client, request).await;
        assert_eq!(positions(&messages), expected, "{what}");
        assert_eq!(messages.last().and_then(|m| m.head), head, "{what}");
    }
    let odd = proto::Query { items: vec![proto::QueryItem { types: vec!["Odd".into()], tags: vec![] }] };
    let request = proto::ReadRequest { query: Some(odd), ..read_request(Some(5), true, Some(2)) };
    assert_eq!(positions(&read_all(&mut client, request).await), [4, 2], "backward from 5 over a query");
    for limit in [None, Some(3)] {
        let request = proto::ReadRequest { batch_size: Some(2), ..read_request(Some(5), true, limit) };
        let messages = read_all(&mut client, request).await;
        let sizes: Vec<usize> = messages.iter().map(|m| m.events.len()).collect();
        let expected: &[u64] = if limit.is_some() { &[5, 4, 3] } else { &[5, 4, 3, 2, 1] };
        assert_eq!(positions(&messages), expected, "backward from 5 in batches of 2, limit {limit:?}");
        assert_eq!(sizes, expected.chunks(2).map(<[u64]>::len).collect::<Vec<_>>(), "limit {limit:?}");
        assert!(messages.iter().all(|m| m.head == Some(6)), "every message reports the captured head");
    }
    server.stop().await;
}

#[tokio::test]
async fn reads_come_in_batches_up_to_the_head_captured_at_the_start() {
    let server = Server::start(MemoryStore::new(), ServerOptions::new()).await;
    let mut client = server.raw().await;
    seed(&mut client, 5).await;
    let request = proto::ReadRequest { batch_size: Some(2), ..read_request(None, false, None) };
    let mut stream = client.read(request).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().unwrap();
    assert_eq!(first.events.len(), 2);
    assert_eq!(first.head, Some(5));
    seed(&mut client, 3).await;
    let mut sizes = vec![2];
    let mut seen: Vec<u64> = first.events.iter().map(|e| e.position).collect();
    while let Some(message) = stream.message().await.unwrap() {
        assert_eq!(message.head, Some(5));
        sizes.push(message.events.len());
        seen.extend(message.events.iter().map(|e| e.position));
    }
    assert_eq!(sizes, [2, 2, 1]);
    assert_eq!(seen, [1, 2, 3, 4, 5], "a read went past the head captured at its start");
    server.stop().await;
}

#[tokio::test]
async fn the_client_hands_over_a_read_in_the_servers_batches() {
    let server = Server::start(MemoryStore::new(), ServerOptions::new()).await;
    let store =
        GrpcStore::connect_with(server.url.clone(), ClientOptions::new().batch_size(2)).await.unwrap();
    let events = (0..5).map(|i| dcb::Event::new("Seeded", "{}").tagged(format!("t{}", i % 2))).collect();
    store.append(events, None).await.unwrap();
    let batches_of = async |query: Query, options: ReadOptions| {
        let mut batches = store.read_batches(&query, options).await.unwrap();
        let mut positions = Vec::new();
        while let Some(batch) = batches.next_batch().await.unwrap() {
            positions.push(batch.iter().map(|e| e.position).collect::<Vec<_>>());
        }
        let collected = store.read(&query, options).await.unwrap();
        assert_eq!(positions.concat(), collected.events.iter().map(|e| e.position).collect::<Vec<_>>());
        assert_eq!(batches.head(), collected.head, "batched and collected heads differ");
        (positions, batches.head())
    };
    let t0 = Query::from(dcb::QueryItem::tags(["t0"]));
    assert_eq!(
        batches_of(Query::all(), ReadOptions::default()).await,
        (vec![vec![1, 2], vec![3, 4], vec![5]], Some(5))
    );
    assert_eq!(batches_of(t0.clone(), ReadOptions::default().limit(2)).await, (vec![vec![1, 3]], Some(3)));
    let backwards_after_1 = ReadOptions::default().after(1).backwards();
    assert_eq!(batches_of(t0.clone(), backwards_after_1).await, (vec![vec![5, 3]], Some(5)));
    let nothing = Query::from(dcb::QueryItem::tags(["none"]));
    assert_eq!(batches_of(nothing, ReadOptions::default()).await, (vec![vec![]], Some(5)));
    server.stop().await;
}

#[tokio::test]
async fn large_events_are_split_across_messages_below_four_mebibytes() {
    let store = MemoryStore::new();
    let server = Server::start(store.clone(), ServerOptions::new()).await;
    let big = |i: u8| dcb::Event::new("Big", vec![i; dcb::limits::MAX_EVENT_DATA_BYTES]);
    store.append((0..6).map(big).collect(), None).await.unwrap();
    // The generated client keeps gRPC's default limit of 4 MiB per received message.
    let mut client = server.raw().await;
    let messages = read_all(&mut client, read_request(None, false, None)).await;
    assert_eq!(positions(&messages), [1, 2, 3, 4, 5, 6]);
    assert!(messages.len() >= 3, "six 1 MiB events fit in no fewer than three 2 MiB messages");
    for message in &messages {
        assert!(message.encoded_len() <= 4 << 20);
    }
    let subscription = proto::SubscribeRequest { query: None, after: None, batch_size: None };
    let mut stream = client.subscribe(subscription).await.unwrap().into_inner();
    let mut seen = Vec::new();
    while seen.len() < 6 {
        let message = stream.message().await.unwrap().unwrap();
        assert!(message.encoded_len() <= 4 << 20);
        seen.extend(message.events.iter().map(|e| e.position));
    }
    assert_eq!(seen, [1, 2, 3, 4, 5, 6]);
    server.stop().await;
}

#[tokio::test]
async fn a_client_that_goes_away_mid_stream_leaves_the_server_working() {
    let store = MemoryStore::new();
    let server = Server::start(store.clone(), ServerOptions::new()).await;
    let mut client = server.raw().await;
    seed(&mut client, 50).await;
    for _ in 0..10 {
        let mut other = server.raw().await;
        let request = proto::ReadRequest { batch_size: Some(1), ..read_request(None, false, None) };
        let mut reading = other.read(request).await.unwrap().into_inner();
        reading.message().await.unwrap().unwrap();
        let subscription = proto::SubscribeRequest { query: None, after: None, batch_size: Some(1) };
        let mut subscribed = other.subscribe(subscription).await.unwrap().into_inner();
        subscribed.message().await.unwrap().unwrap();
        drop((reading, subscribed, other));
    }
    seed(&mut client, 1).await;
    assert_eq!(positions(&read_all(&mut client, read_request(Some(51), false, None)).await), [51]);
    server.stop().await;
}

#[tokio::test]
async fn a_subscriber_that_does_not_read_never_holds_up_appends() {
    let store = MemoryStore::new();
    let server = Server::start(store.clone(), ServerOptions::new()).await;
    let subscriber = GrpcStore::connect(server.url.clone()).await.unwrap();
    let mut events = subscriber.subscribe(Query::all(), None).await.unwrap();
    let writer = GrpcStore::connect(server.url.clone()).await.unwrap();
    for _ in 0..200 {
        let batch = (0..50).map(|_| dcb::Event::new("Filler", vec![7u8; 1000])).collect();
        writer.append(batch, None).await.unwrap();
    }
    for expected in 1..=10_000 {
        assert_eq!(events.next().await.unwrap().unwrap().position, expected);
    }
    server.stop().await;
}

/// A store whose appends wait at a gate, to hold an append in flight.
#[derive(Clone)]
struct GatedStore {
    inner: MemoryStore,
    entered: Arc<Notify>,
    gate: Arc<Notify>,
}

impl EventStore for GatedStore {
    async fn read(&self, query: &Query, options: ReadOptions) -> dcb::Result<ReadResponse> {
        self.inner.read(query, options).await
    }
    async fn append_request(&self, request: AppendRequest) -> dcb::Result<u64> {
        self.entered.notify_one();
        self.gate.notified().await;
        self.inner.append_request(request).await
    }
    async fn head(&self) -> dcb::Result<Option<u64>> {
        self.inner.head().await
    }
    async fn tracking_position(&self, source: &str) -> dcb::Result<Option<u64>> {
        self.inner.tracking_position(source).await
    }
    async fn subscribe(&self, query: Query, after: Option<u64>) -> dcb::Result<EventStream> {
        self.inner.subscribe(query, after).await
    }
}

#[tokio::test]
async fn shutdown_ends_subscriptions_and_finishes_in_flight_appends() {
    let store = GatedStore { inner: MemoryStore::new(), entered: Arc::default(), gate: Arc::default() };
    let mut server = Server::start(store.clone(), ServerOptions::new()).await;
    let mut subscriber = server.raw().await;
    let subscription = proto::SubscribeRequest { query: None, after: None, batch_size: None };
    let mut subscribed = subscriber.subscribe(subscription).await.unwrap().into_inner();
    let mut appender = server.raw().await;
    let pending_append = tokio::spawn(async move { appender.append(append(vec![event("Late", &[])])).await });
    store.entered.notified().await;
    server.stop.take().unwrap().send(()).unwrap();
    let ended = subscribed.message().await.expect_err("a subscription outlived the shutdown");
    assert_eq!(ended.code(), Code::Unavailable);
    // With the protocol's details, as UmaDB clients expect of every refusal.
    assert_eq!(error_type(&ended), ErrorType::Io);
    // The client gives up on its append; the server must still finish it, whole.
    pending_append.abort();
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!server.handle.is_finished(), "the server stopped while an append was in flight");
    store.gate.notify_one();
    server.handle.await.unwrap().unwrap();
    assert_eq!(store.inner.head().await.unwrap(), Some(1));
}

/// The server's store reads are bounded by bytes as well as by count: large events met after
/// thousands of small ones (when pages have grown to thousands of events) come in pages of
/// about one message, and the read goes on after each page its byte budget cut.
#[tokio::test]
async fn read_pages_are_bounded_by_bytes_and_go_on_after_a_cut() {
    let store = MemoryStore::new();
    let small = |i: usize| dcb::Event::new("Small", format!("{i}"));
    let big = |i: u8| dcb::Event::new("Big", vec![i; dcb::limits::MAX_EVENT_DATA_BYTES]);
    store.append((0..3000).map(small).collect(), None).await.unwrap();
    store.append((0..12).map(big).collect(), None).await.unwrap();
    store.append((0..300).map(small).collect(), None).await.unwrap();
    let recording = dcb::testkit::RecordedReads::new(store);
    let server = Server::start(recording.clone(), ServerOptions::new()).await;
    let mut client = server.raw().await;
    let messages = read_all(&mut client, read_request(None, false, None)).await;
    let read = positions(&messages);
    assert_eq!(read.len(), 3312, "the read ended after position {:?}", read.last());
    assert!(read.iter().copied().eq(1..=3312), "positions out of order");
    let largest = recording.read_bytes().into_iter().max().unwrap();
    assert!(largest <= (4 << 20) + dcb::limits::MAX_EVENT_DATA_BYTES + 64, "a page of {largest} bytes");
    server.stop().await;
}

/// A memory store with one flaw.
#[derive(Clone)]
struct Flawed(MemoryStore, Flaw);

#[derive(Clone, Copy, PartialEq)]
enum Flaw {
    /// Appends of events of type `Boom` panic.
    PanicsOnBoom,
    /// Every read takes 10 ms.
    SlowReads,
}

impl EventStore for Flawed {
    async fn read(&self, query: &Query, options: ReadOptions) -> dcb::Result<ReadResponse> {
        if self.1 == Flaw::SlowReads {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        self.0.read(query, options).await
    }
    async fn append_request(&self, request: AppendRequest) -> dcb::Result<u64> {
        let boom = request.events.iter().any(|e| e.event_type == "Boom");
        assert!(!(boom && self.1 == Flaw::PanicsOnBoom), "the store fell over");
        self.0.append_request(request).await
    }
    async fn head(&self) -> dcb::Result<Option<u64>> {
        self.0.head().await
    }
    async fn tracking_position(&self, source: &str) -> dcb::Result<Option<u64>> {
        self.0.tracking_position(source).await
    }
    async fn subscribe(&self, query: Query, after: Option<u64>) -> dcb::Result<EventStream> {
        self.0.subscribe(query, after).await
    }
}

/// The client's request timeout bounds each wait for the server, not a whole read: a read that
/// streams for longer than the timeout, its batches coming steadily, completes.
#[tokio::test]
async fn a_read_streaming_longer_than_the_request_timeout_completes() {
    let store = MemoryStore::new();
    store.append((0..40).map(|i| dcb::Event::new("Seeded", format!("{i}"))).collect(), None).await.unwrap();
    let server = Server::start(Flawed(store, Flaw::SlowReads), ServerOptions::new()).await;
    // Pages of 2 events: 20 store reads of 10 ms each, against a timeout of 100 ms.
    let timeout = std::time::Duration::from_millis(100);
    let options = ClientOptions::new().batch_size(2).request_timeout(timeout);
    let client = GrpcStore::connect_with(server.url.clone(), options).await.unwrap();
    let started = std::time::Instant::now();
    let read = client.read(&Query::all(), ReadOptions::default()).await.unwrap();
    assert_eq!(read.events.len(), 40);
    assert!(started.elapsed() > timeout, "the read took {:?}, proving nothing", started.elapsed());
    server.stop().await;
}

#[tokio::test]
async fn an_append_that_panics_in_the_store_is_an_internal_error_and_the_server_goes_on() {
    let server = Server::start(Flawed(MemoryStore::new(), Flaw::PanicsOnBoom), ServerOptions::new()).await;
    let mut client = server.raw().await;
    let failed = client.append(append(vec![event("Boom", &[])])).await.unwrap_err();
    assert_eq!(failed.code(), Code::Internal, "{failed:?}");
    let fine = client.append(append(vec![event("Fine", &[])])).await.unwrap().into_inner();
    assert_eq!(fine.position, 1);
    // The panicked append gave its slot back: shutdown does not wait for it.
    server.stop().await;
}

#[cfg(feature = "tls")]
#[tokio::test]
async fn the_client_store_talks_tls_with_a_key() {
    let certs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/certs");
    let read = |name: &str| std::fs::read(certs.join(name)).unwrap();
    let options = ServerOptions::new().api_key("k").tls(read("server.pem"), read("server.key"));
    let server = Server::start(MemoryStore::new(), options).await;
    let url = server.url.replace("http://127.0.0.1", "https://localhost");
    let store = GrpcStore::connect_with(
        url.clone(),
        ClientOptions::new().api_key("k").ca_certificate(read("ca.pem")),
    )
    .await
    .unwrap();
    assert_eq!(store.append(vec![dcb::Event::new("Secure", "")], None).await.unwrap(), 1);
    let read_back = store.read(&Query::all(), ReadOptions::default()).await.unwrap();
    assert_eq!(read_back.events[0].event.event_type, "Secure");
    // Plain HTTP to a TLS server never gets an answer it could mistake for one.
    let plain =
        GrpcStore::connect_with(server.url.clone(), ClientOptions::new().api_key("k").retries(0)).await;
    let head = match plain {
        Ok(store) => store.head().await,
        Err(error) => Err(error),
    };
    assert!(matches!(head, Err(dcb::Error::Unavailable { .. })), "{head:?}");
    server.stop().await;
}

#[tokio::test]
async fn clients_beyond_the_connection_limit_wait_for_a_free_slot() {
    let server = Server::start(MemoryStore::new(), ServerOptions::new().max_connections(1)).await;
    let first = GrpcStore::connect(server.url.clone()).await.unwrap();
    first.append(vec![dcb::Event::new("First", "")], None).await.unwrap();
    let url = server.url.clone();
    let second = tokio::spawn(async move {
        let store = GrpcStore::connect(url).await?;
        store.head().await
    });
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
    assert!(!second.is_finished(), "a second connection was served while the only slot was taken");
    drop(first);
    assert_eq!(second.await.unwrap().unwrap(), Some(1));
    server.stop().await;
}

/// One connection serves at most `MAX_STREAMS_PER_CONNECTION` calls at once; its client's next
/// call waits for one of them to end.
#[tokio::test]
async fn one_connection_has_a_bounded_number_of_calls_at_once() {
    let server = Server::start(MemoryStore::new(), ServerOptions::new()).await;
    let mut client = server.raw().await;
    let subscribe = proto::SubscribeRequest { query: None, after: None, batch_size: None };
    let max = dcb_grpc::limits::MAX_STREAMS_PER_CONNECTION as usize;
    let subscriptions = (0..max).map(|_| {
        let mut client = client.clone();
        let subscribe = subscribe.clone();
        async move { client.subscribe(subscribe).await.unwrap().into_inner() }
    });
    let mut subscriptions = futures_util::future::join_all(subscriptions).await;
    let wait = std::time::Duration::from_millis(300);
    let head = tokio::time::timeout(wait, client.head(proto::HeadRequest {})).await;
    assert!(head.is_err(), "a call beyond the limit was served on the same connection");
    subscriptions.pop();
    let head = tokio::time::timeout(std::time::Duration::from_secs(5), client.head(proto::HeadRequest {}));
    head.await.expect("served once a call ended").unwrap();
    drop(subscriptions);
    server.stop().await;
}

/// A client that connects and sends nothing is disconnected at the handshake timeout, and its
/// connection slot goes to the next client.
#[tokio::test]
async fn a_connection_that_sends_nothing_is_closed_and_frees_its_slot() {
    let options =
        ServerOptions::new().max_connections(1).handshake_timeout(std::time::Duration::from_millis(200));
    let server = Server::start(MemoryStore::new(), options).await;
    let silent = tokio::net::TcpStream::connect(server.url.trim_start_matches("http://")).await.unwrap();
    closed_by_the_server(silent).await;
    served_in_the_freed_slot(GrpcStore::connect(server.url.clone()).await.unwrap()).await;
    server.stop().await;
}

/// Waits (at most 5 s) until the server closes `silent`, reading and dropping what it sends.
async fn closed_by_the_server(mut silent: impl tokio::io::AsyncRead + Unpin) {
    use tokio::io::AsyncReadExt;
    let closed = async {
        let mut buf = [0; 256];
        while let Ok(read) = silent.read(&mut buf).await {
            if read == 0 {
                break;
            }
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), closed).await.expect("closed by the server");
}

async fn served_in_the_freed_slot(client: GrpcStore) {
    let head = tokio::time::timeout(std::time::Duration::from_secs(5), client.head()).await;
    assert_eq!(head.expect("served in the freed slot").unwrap(), None);
}

/// The same with TLS: a client that finishes the TLS handshake and then sends nothing (no
/// HTTP/2 preface) is disconnected at the handshake timeout, and its slot goes to the next client.
#[cfg(feature = "tls")]
#[tokio::test]
async fn a_tls_connection_that_sends_nothing_after_its_handshake_is_closed_and_frees_its_slot() {
    use tokio_rustls::rustls::pki_types::pem::PemObject;
    use tokio_rustls::rustls::pki_types::{CertificateDer, ServerName};

    let certs = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/interop/certs");
    let read = |name: &str| std::fs::read(certs.join(name)).unwrap();
    let options = ServerOptions::new()
        .max_connections(1)
        .handshake_timeout(std::time::Duration::from_millis(300))
        .tls(read("server.pem"), read("server.key"));
    let server = Server::start(MemoryStore::new(), options).await;
    let mut roots = tokio_rustls::rustls::RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(&read("ca.pem")) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut config =
        tokio_rustls::rustls::ClientConfig::builder().with_root_certificates(roots).with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    let tcp = tokio::net::TcpStream::connect(server.url.trim_start_matches("http://")).await.unwrap();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let domain = ServerName::try_from("localhost").unwrap();
    closed_by_the_server(connector.connect(domain, tcp).await.expect("the TLS handshake")).await;
    let url = server.url.replace("http://127.0.0.1", "https://localhost");
    let options = ClientOptions::new().ca_certificate(read("ca.pem"));
    served_in_the_freed_slot(GrpcStore::connect_with(url, options).await.unwrap()).await;
    server.stop().await;
}

/// On shutdown the health service reports NOT_SERVING for the server as a whole and for
/// `umadb.v1.DCB`, so that load balancers stop sending calls before the server goes.
#[tokio::test]
async fn shutdown_is_reported_by_the_health_service() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_check_response::ServingStatus;
    use tonic_health::pb::health_client::HealthClient;
    let options = ServerOptions::new().shutdown_grace(std::time::Duration::from_millis(500));
    let mut server = Server::start(MemoryStore::new(), options).await;
    let channel = Channel::from_shared(server.url.clone()).unwrap().connect().await.unwrap();
    let mut health = HealthClient::new(channel);
    let mut watches = Vec::new();
    for service in ["", "umadb.v1.DCB"] {
        let request = HealthCheckRequest { service: service.into() };
        let mut watch = health.watch(request).await.unwrap().into_inner();
        assert_eq!(watch.message().await.unwrap().unwrap().status(), ServingStatus::Serving);
        watches.push((service, watch));
    }
    server.stop.take().unwrap().send(()).unwrap();
    for (service, mut watch) in watches {
        let next = tokio::time::timeout(std::time::Duration::from_secs(5), watch.message()).await;
        let status = next.expect("a status within 5 s").unwrap().unwrap().status();
        assert_eq!(status, ServingStatus::NotServing, "service {service:?}");
    }
    server.handle.await.unwrap().unwrap();
}

#[tokio::test]
async fn a_health_watch_cannot_keep_a_stopping_server_alive() {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let store = MemoryStore::new();
    let options = ServerOptions::new().shutdown_grace(std::time::Duration::from_millis(100));
    let server = Server::start(store, options).await;
    let channel = Channel::from_shared(server.url.clone()).unwrap().connect().await.unwrap();
    let mut health = HealthClient::new(channel);
    let mut watch = health.watch(HealthCheckRequest { service: String::new() }).await.unwrap().into_inner();
    watch.message().await.unwrap().unwrap();
    server.stop().await;
    drop(watch);
}

#[tokio::test]
async fn a_subscription_survives_a_server_restart_without_a_gap_or_a_repeat() {
    let store = MemoryStore::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let serve = |listener, stop: oneshot::Receiver<()>| {
        let shutdown = async move {
            let _ = stop.await;
        };
        tokio::spawn(dcb_grpc::serve(store.clone(), listener, ServerOptions::new(), shutdown))
    };
    let (stop, stopped) = oneshot::channel();
    let first = serve(listener, stopped);
    let client = GrpcStore::connect(format!("http://{address}")).await.unwrap();
    let mut events = client.subscribe(Query::all(), None).await.unwrap();
    let next = async |events: &mut EventStream| {
        let event = tokio::time::timeout(std::time::Duration::from_secs(10), events.next()).await;
        event.expect("an event within 10 s").expect("the stream goes on").expect("no error").position
    };
    client.append(vec![dcb::Event::new("Before", "{}")], None).await.unwrap();
    assert_eq!(next(&mut events).await, 1);

    stop.send(()).unwrap();
    first.await.unwrap().unwrap();
    store.append(vec![dcb::Event::new("WhileDown", "{}")], None).await.unwrap();
    let (stop, stopped) = oneshot::channel();
    let second = serve(TcpListener::bind(address).await.unwrap(), stopped);

    assert_eq!(next(&mut events).await, 2, "the event appended while the server was down");
    client.append(vec![dcb::Event::new("After", "{}")], None).await.unwrap();
    assert_eq!(next(&mut events).await, 3);
    stop.send(()).unwrap();
    second.await.unwrap().unwrap();
}
