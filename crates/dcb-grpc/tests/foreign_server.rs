//! `GrpcStore` against servers that are not this crate's: one that answers a read with a message
//! larger than gRPC's default 4 MiB limit, as UmaDB does (its batches are bounded by count only),
//! one that reports a backward read's head as UmaDB does, and scripted ones that misbehave (events
//! out of order or outside the window, too many, repeated after a reconnect, streams that stall or
//! break), against which the client must fail loudly or recover, never pass on a wrong answer.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use dcb::{EventStore, Query, ReadOptions};
use dcb_grpc::proto::dcb_server::{Dcb, DcbServer};
use dcb_grpc::proto::{self, SequencedEvent};
use dcb_grpc::{ClientOptions, GrpcStore};
use futures_core::Stream;
use futures_util::StreamExt;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

type Messages<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

/// Starts `service` on a port of its own, in the background; returns its URL.
async fn start(service: impl Dcb) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let incoming = tonic::codegen::tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(DcbServer::new(service))
            .serve_with_incoming(incoming),
    );
    url
}

/// The messages of one call, and whether the stream then stalls (sends nothing more, and does not
/// end) rather than ending.
#[derive(Clone)]
struct Script<T> {
    messages: Vec<Result<T, Status>>,
    stall: bool,
}

impl<T: Send + 'static> Script<T> {
    fn ending(messages: Vec<Result<T, Status>>) -> Self {
        Script { messages, stall: false }
    }

    fn stalling(messages: Vec<Result<T, Status>>) -> Self {
        Script { messages, stall: true }
    }

    fn stream(self) -> Messages<T> {
        let messages = futures_util::stream::iter(self.messages);
        if self.stall {
            Box::pin(messages.chain(futures_util::stream::pending()))
        } else {
            Box::pin(messages)
        }
    }
}

/// A server that answers every read with the same script, and each subscribe call with the next
/// of its scripts (and a call beyond them never at all), whatever the request says.
#[derive(Clone)]
struct Scripted {
    read: Script<proto::ReadResponse>,
    subscribes: Arc<Mutex<VecDeque<Script<proto::SubscribeResponse>>>>,
    /// The `after` of every subscribe call received, in order.
    subscribed_after: Arc<Mutex<Vec<Option<u64>>>>,
    subscribe_calls: Arc<AtomicUsize>,
}

impl Scripted {
    fn reading(read: Script<proto::ReadResponse>) -> Self {
        Scripted {
            read,
            subscribes: Arc::default(),
            subscribed_after: Arc::default(),
            subscribe_calls: Arc::default(),
        }
    }

    fn subscribing(scripts: Vec<Script<proto::SubscribeResponse>>) -> Self {
        Scripted {
            subscribes: Arc::new(Mutex::new(scripts.into())),
            ..Scripted::reading(Script::ending(vec![]))
        }
    }
}

#[tonic::async_trait]
impl Dcb for Scripted {
    type ReadStream = Messages<proto::ReadResponse>;
    type SubscribeStream = Messages<proto::SubscribeResponse>;

    async fn read(&self, _: Request<proto::ReadRequest>) -> Result<Response<Self::ReadStream>, Status> {
        Ok(Response::new(self.read.clone().stream()))
    }

    async fn subscribe(
        &self,
        request: Request<proto::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        self.subscribe_calls.fetch_add(1, Ordering::SeqCst);
        self.subscribed_after.lock().unwrap().push(request.get_ref().after);
        let script = self.subscribes.lock().unwrap().pop_front();
        match script {
            Some(script) => Ok(Response::new(script.stream())),
            None => std::future::pending().await,
        }
    }

    async fn append(
        &self,
        _: Request<proto::AppendRequest>,
    ) -> Result<Response<proto::AppendResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn head(&self, _: Request<proto::HeadRequest>) -> Result<Response<proto::HeadResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }

    async fn get_tracking_info(
        &self,
        _: Request<proto::TrackingRequest>,
    ) -> Result<Response<proto::TrackingResponse>, Status> {
        Err(Status::unimplemented("not in this test"))
    }
}

fn sequenced(position: u64) -> SequencedEvent {
    SequencedEvent {
        position,
        event: Some(proto::Event { event_type: "E".to_owned(), ..proto::Event::default() }),
        tracking_info: None,
    }
}

fn read_message(positions: &[u64], head: Option<u64>) -> Result<proto::ReadResponse, Status> {
    Ok(proto::ReadResponse { events: positions.iter().copied().map(sequenced).collect(), head })
}

fn subscribe_message(positions: &[u64]) -> Result<proto::SubscribeResponse, Status> {
    Ok(proto::SubscribeResponse { events: positions.iter().copied().map(sequenced).collect() })
}

fn positions(events: &[dcb::SequencedEvent]) -> Vec<u64> {
    events.iter().map(|event| event.position).collect()
}

/// No retries, so that a test sees the first failure, and short waits.
fn impatient() -> ClientOptions {
    ClientOptions::new().retries(0).request_timeout(Duration::from_millis(300))
}

async fn store_for(server: Scripted) -> GrpcStore {
    GrpcStore::connect_with(start(server).await, impatient()).await.unwrap()
}

/// tonic's stream answers `None` after an error, as if the read had ended: a caller that tried
/// again would hold part of a read under a head claiming all of it.
#[tokio::test]
async fn a_read_cut_by_an_error_stays_failed_and_has_no_head() {
    let script =
        Script::ending(vec![read_message(&[1, 2], Some(5)), Err(Status::unavailable("connection lost"))]);
    let store = store_for(Scripted::reading(script)).await;
    let mut batches = store.read_batches(&Query::all(), ReadOptions::default()).await.unwrap();
    assert_eq!(positions(&batches.next_batch().await.unwrap().unwrap()), [1, 2]);
    let cut = batches.next_batch().await;
    assert!(matches!(cut, Err(dcb::Error::Unavailable { .. })), "{cut:?}");
    for _ in 0..2 {
        let again = batches.next_batch().await;
        assert!(matches!(again, Err(dcb::Error::Unavailable { .. })), "{again:?}");
    }
    assert_eq!(batches.head(), None);
}

/// An invalid event in the middle of a message fails the read; the rest of that message is gone,
/// so the next message must not be handed over as if it followed.
#[tokio::test]
async fn a_read_with_an_invalid_event_stays_failed() {
    let mut invalid = sequenced(2);
    invalid.event = None;
    let broken = Ok(proto::ReadResponse { events: vec![sequenced(1), invalid, sequenced(3)], head: Some(4) });
    let script = Script::ending(vec![broken, read_message(&[4], Some(4))]);
    let store = store_for(Scripted::reading(script)).await;
    let mut batches = store.read_batches(&Query::all(), ReadOptions::default()).await.unwrap();
    let first = batches.next_batch().await;
    assert!(matches!(first, Err(dcb::Error::Internal(_))), "{first:?}");
    let next = batches.next_batch().await;
    assert!(next.is_err(), "the read carried on after a gap: {next:?}");
    assert_eq!(batches.head(), None);
}

/// UmaDB reports, for a backward read with a limit, the last position of each message as its head:
/// passed on, an append conditioned on it would conflict with the very events read.
#[tokio::test]
async fn a_backward_read_with_a_limit_has_the_highest_position_read_as_head_against_umadb() {
    let store = store_for(Scripted::reading(Script::ending(vec![read_message(&[10, 8, 5], Some(5))]))).await;
    let read = store.read(&Query::all(), ReadOptions::default().backwards().limit(3)).await.unwrap();
    assert_eq!(positions(&read.events), [10, 8, 5]);
    assert_eq!(read.head, Some(10));
}

/// Reads `options` from a server answering with `messages`, expecting the server to be blamed.
async fn assert_refused(messages: Vec<Result<proto::ReadResponse, Status>>, options: ReadOptions) {
    let server = Scripted::reading(Script::ending(messages));
    let url = start(server).await;
    let store = GrpcStore::connect_with(url.clone(), impatient()).await.unwrap();
    match store.read(&Query::all(), options).await {
        Err(dcb::Error::Internal(message)) => assert!(message.contains(&url), "{message}"),
        other => panic!("{options:?}: expected an internal error naming the server, got {other:?}"),
    }
}

#[tokio::test]
async fn events_out_of_order_or_outside_the_window_are_the_servers_fault() {
    let forward = ReadOptions::default();
    assert_refused(vec![read_message(&[1, 3, 2], Some(3))], forward).await;
    assert_refused(vec![read_message(&[1, 2], Some(3)), read_message(&[2, 3], Some(3))], forward).await;
    assert_refused(vec![read_message(&[0, 1], Some(3))], forward).await;
    assert_refused(vec![read_message(&[3, 6], Some(6))], forward.after(5)).await;
    let backward = ReadOptions::default().backwards();
    assert_refused(vec![read_message(&[5, 7], Some(7))], backward).await;
    assert_refused(vec![read_message(&[3], Some(7)), read_message(&[3], Some(7))], backward).await;
    assert_refused(vec![read_message(&[6, 4], Some(7))], backward.before(5)).await;
}

#[tokio::test]
async fn a_read_is_cut_at_its_limit() {
    let messages = vec![read_message(&[1, 2], Some(4)), read_message(&[3, 4], Some(4))];
    let store = store_for(Scripted::reading(Script::ending(messages))).await;
    let read = store.read(&Query::all(), ReadOptions::default().limit(3)).await.unwrap();
    assert_eq!(positions(&read.events), [1, 2, 3]);
    assert_eq!(read.head, Some(3));
    let messages = vec![read_message(&[4, 3], Some(4)), read_message(&[2, 1], Some(4))];
    let store = store_for(Scripted::reading(Script::ending(messages))).await;
    let read = store.read(&Query::all(), ReadOptions::default().backwards().limit(3)).await.unwrap();
    assert_eq!(positions(&read.events), [4, 3, 2]);
    assert_eq!(read.head, Some(4));
}

/// The head comes with the first message that carries one; a later message without one does not
/// make a complete read look like one with no head.
#[tokio::test]
async fn a_message_without_a_head_does_not_erase_it() {
    let messages = vec![read_message(&[1], Some(9)), read_message(&[2], None)];
    let store = store_for(Scripted::reading(Script::ending(messages))).await;
    let read = store.read(&Query::all(), ReadOptions::default()).await.unwrap();
    assert_eq!(positions(&read.events), [1, 2]);
    assert_eq!(read.head, Some(9));
}

/// A server that resends events at or before the cursor (out of order, or all over again after a
/// reconnect): the consumer sees each position once, in order, and the cursor never moves back.
#[tokio::test]
async fn a_subscription_skips_what_it_has_delivered_already() {
    let first = Script::ending(vec![
        subscribe_message(&[1, 2]),
        subscribe_message(&[2, 1]),
        Err(Status::unavailable("restarting")),
    ]);
    let second = Script::ending(vec![subscribe_message(&[1, 2, 3])]);
    let server = Scripted::subscribing(vec![first, second]);
    let afters = server.subscribed_after.clone();
    let store = store_for(server).await;
    let stream = store.subscribe(Query::all(), None).await.unwrap();
    let events: Vec<_> = stream.map(Result::unwrap).collect().await;
    assert_eq!(positions(&events), [1, 2, 3]);
    assert_eq!(*afters.lock().unwrap(), [None, Some(2)]);
}

/// The server accepts the connection again after a cut subscription but never answers the new call:
/// each attempt must time out (and another be made), not wait forever.
#[tokio::test]
async fn subscribing_again_is_bounded_by_the_request_timeout() {
    let cut = Script::ending(vec![Err(Status::unavailable("restarting"))]);
    let server = Scripted::subscribing(vec![cut]);
    let calls = server.subscribe_calls.clone();
    let store = GrpcStore::connect_with(
        start(server).await,
        ClientOptions::new().request_timeout(Duration::from_millis(100)),
    )
    .await
    .unwrap();
    let mut stream = store.subscribe(Query::all(), None).await.unwrap();
    let consumer =
        tokio::spawn(async move { stream.next().await.map(|item| item.map(|event| event.position)) });
    let waited = tokio::time::timeout(Duration::from_secs(10), async {
        while calls.load(Ordering::SeqCst) < 4 {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    consumer.abort();
    assert!(waited.is_ok(), "stuck after {} subscribe calls", calls.load(Ordering::SeqCst));
}

/// A server that accepts every subscription and cuts it at once, before any event: the client
/// subscribes again with growing pauses, not in a tight loop.
#[tokio::test]
async fn a_subscription_cut_again_and_again_backs_off() {
    let cut = || Script::ending(vec![Err(Status::internal("reset"))]);
    let server = Scripted::subscribing((0..1_000).map(|_| cut()).collect());
    let calls = server.subscribe_calls.clone();
    let store = store_for(server).await;
    let mut stream = store.subscribe(Query::all(), None).await.unwrap();
    let consumer = tokio::spawn(async move { stream.next().await.map(|item| item.is_ok()) });
    tokio::time::sleep(Duration::from_secs(2)).await;
    consumer.abort();
    // Pauses of 20, 40, 80 ms ... 1 s: about eight calls in two seconds.
    let made = calls.load(Ordering::SeqCst);
    assert!((3..=12).contains(&made), "{made} subscribe calls in two seconds");
}

/// `request_timeout` bounds each wait for a read's next batch: a server that stalls mid-read fails
/// the read instead of holding its caller forever.
#[tokio::test]
async fn a_stalled_read_batch_times_out() {
    let store = store_for(Scripted::reading(Script::stalling(vec![read_message(&[1], Some(2))]))).await;
    let mut batches = store.read_batches(&Query::all(), ReadOptions::default()).await.unwrap();
    assert_eq!(positions(&batches.next_batch().await.unwrap().unwrap()), [1]);
    let stalled = tokio::time::timeout(Duration::from_secs(10), batches.next_batch()).await;
    let stalled = stalled.expect("the wait for a batch is bounded");
    assert!(matches!(stalled, Err(dcb::Error::Unavailable { .. })), "{stalled:?}");
    let again = batches.next_batch().await;
    assert!(matches!(again, Err(dcb::Error::Unavailable { .. })), "{again:?}");
    assert_eq!(batches.head(), None);
}

/// A server that answers a read with one message of six events of 1 MiB (UmaDB bounds its
/// batches by count only): the client takes it whole.
#[tokio::test]
async fn reads_messages_over_4_mib_from_a_server_that_sends_them() {
    const EVENTS: u64 = 6;
    let events = (1..=EVENTS)
        .map(|position| SequencedEvent {
            position,
            event: Some(proto::Event {
                event_type: "Large".to_owned(),
                data: vec![position as u8; 1 << 20].into(),
                ..proto::Event::default()
            }),
            tracking_info: None,
        })
        .collect();
    let message = Ok(proto::ReadResponse { events, head: Some(EVENTS) });
    let store = store_for(Scripted::reading(Script::ending(vec![message]))).await;
    let read = store.read(&Query::all(), ReadOptions::default()).await.expect("a 6 MiB message is read");
    assert_eq!(read.head, Some(EVENTS));
    let positions: Vec<u64> = read.events.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=EVENTS).collect::<Vec<_>>());
    assert!(read.events.iter().all(|e| e.event.data.len() == 1 << 20 && e.event.data[0] == e.position as u8));
}
