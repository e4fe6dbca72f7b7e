//! Every application test through the gRPC client, against a server in this process over a
//! memory store.

async fn remote_store() -> dcb_grpc::GrpcStore {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let server = dcb_grpc::serve(
        dcb::MemoryStore::new(),
        listener,
        dcb_grpc::ServerOptions::new(),
        std::future::pending(),
    );
    tokio::spawn(server);
    dcb_grpc::GrpcStore::connect(format!("http://{address}")).await.unwrap()
}

eventsourcing::application_tests!(remote_store);
