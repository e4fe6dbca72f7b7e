//! The conformance kit through [`GrpcStore`]: every test starts its own server on 127.0.0.1:0,
//! in process, over a fresh `MemoryStore`, so the whole protocol path (client, wire, server) is
//! held to the same rules as every store.

use dcb::MemoryStore;
use dcb_grpc::{GrpcStore, ServerOptions};

async fn fresh() -> GrpcStore {
    let url = dcb_grpc::serve_in_background(MemoryStore::new(), ServerOptions::new()).await.unwrap();
    GrpcStore::connect(url).await.unwrap()
}

dcb::conformance_tests!(fresh);
