//! Compiles proto/umadb.proto into the message types, the server trait and the client.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    tonic_prost_build::configure()
        // Event data is handed to and from stores as `Bytes`, without a copy.
        .bytes(".umadb.v1.Event.data")
        // Request decoding failures must be INVALID_ARGUMENT, not the INTERNAL that
        // tonic_prost's codec reports (see src/codec.rs).
        .codec_path("crate::codec::WireCodec")
        .compile_protos(&["proto/umadb.proto"], &["proto"])?;
    Ok(())
}
