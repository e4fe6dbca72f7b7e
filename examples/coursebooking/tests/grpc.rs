//! Every style through the gRPC client, against a server in this process over a memory store.

async fn remote_store() -> dcb_grpc::GrpcStore {
    let url = coursebooking::serve_in_process(dcb::MemoryStore::new()).await.unwrap();
    dcb_grpc::GrpcStore::connect(url).await.unwrap()
}

coursebooking::enrolment_tests!(
    store: remote_store,
    recorder: || async { eventsourcing::DcbRecorder::new(remote_store().await) },
);
