//! Regenerates `src/generated/umadb.v1.rs` from `proto/umadb.proto` when asked to
//! (`DCB_REGENERATE_PROTO=1 cargo build -p dcb-grpc`, which needs `protoc`). The generated code is
//! checked in, so that building the workspace needs no protobuf compiler; `.ci/run` regenerates
//! it and fails if the checked-in copy differs.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-env-changed=DCB_REGENERATE_PROTO");
    println!("cargo:rerun-if-changed=proto/umadb.proto");
    if std::env::var_os("DCB_REGENERATE_PROTO").is_none() {
        return Ok(());
    }
    tonic_prost_build::configure()
        .out_dir("src/generated")
        // Event data is handed to and from stores as `Bytes`, without a copy.
        .bytes(".umadb.v1.Event.data")
        // Request decoding failures must be INVALID_ARGUMENT, not the INTERNAL that
        // tonic_prost's codec reports (see src/codec.rs).
        .codec_path("crate::codec::WireCodec")
        .compile_protos(&["proto/umadb.proto"], &["proto"])?;
    Ok(())
}
