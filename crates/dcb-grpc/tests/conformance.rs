//! The conformance kit through [`GrpcStore`]: every test starts its own server on 127.0.0.1:0,
//! in process, over a fresh `MemoryStore`, so the whole protocol path (client, wire, server) is
//! held to the same rules as every store.

use dcb::MemoryStore;
use dcb_grpc::{GrpcStore, ServerOptions};
use tokio::net::TcpListener;

async fn fresh() -> GrpcStore {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(dcb_grpc::serve(MemoryStore::new(), listener, ServerOptions::new(), std::future::pending()));
    GrpcStore::connect(url).await.unwrap()
}

dcb::conformance_tests!(fresh);
