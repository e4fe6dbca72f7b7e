//! `GrpcStore` against a server that is not this crate's: one that answers a read with a message
//! larger than gRPC's default 4 MiB limit, as UmaDB does (its batches are bounded by count only).

use std::pin::Pin;

use dcb::{EventStore, Query, ReadOptions};
use dcb_grpc::GrpcStore;
use dcb_grpc::proto::dcb_server::{Dcb, DcbServer};
use dcb_grpc::proto::{self, SequencedEvent};
use futures_core::Stream;
use tokio::net::TcpListener;
use tonic::{Request, Response, Status};

/// Events of 1 MiB of data, all in one read message.
const EVENTS: u64 = 6;

/// Answers every read with one message of [`EVENTS`] large events, and nothing else.
struct CountBoundedServer;

type Messages<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send>>;

#[tonic::async_trait]
impl Dcb for CountBoundedServer {
    type ReadStream = Messages<proto::ReadResponse>;
    type SubscribeStream = Messages<proto::SubscribeResponse>;

    async fn read(&self, _: Request<proto::ReadRequest>) -> Result<Response<Self::ReadStream>, Status> {
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
        let message = proto::ReadResponse { events, head: Some(EVENTS) };
        Ok(Response::new(Box::pin(futures_util::stream::iter([Ok(message)]))))
    }

    async fn subscribe(
        &self,
        _: Request<proto::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        Err(Status::unimplemented("not in this test"))
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

#[tokio::test]
async fn reads_messages_over_4_mib_from_a_server_that_sends_them() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let incoming = tonic::codegen::tokio_stream::wrappers::TcpListenerStream::new(listener);
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(DcbServer::new(CountBoundedServer))
            .serve_with_incoming(incoming),
    );
    let store = GrpcStore::connect(url).await.unwrap();
    let read = store.read(&Query::all(), ReadOptions::default()).await.expect("a 6 MiB message is read");
    assert_eq!(read.head, Some(EVENTS));
    let positions: Vec<u64> = read.events.iter().map(|e| e.position).collect();
    assert_eq!(positions, (1..=EVENTS).collect::<Vec<_>>());
    assert!(read.events.iter().all(|e| e.event.data.len() == 1 << 20 && e.event.data[0] == e.position as u8));
}
