//! Every style through the gRPC client, against a server in this process over a memory store.

async fn remote_store() -> dcb_grpc::GrpcStore {
    let url =
        dcb_grpc::serve_in_background(dcb::MemoryStore::new(), dcb_grpc::ServerOptions::new()).await.unwrap();
    dcb_grpc::GrpcStore::connect(url).await.unwrap()
}

coursebooking::enrolment_tests!(
    store: remote_store,
    recorder: || async { eventsourcing::DcbRecorder::new(remote_store().await) },
);
