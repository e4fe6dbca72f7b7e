//! The protobuf codec of the generated service and client.
//!
//! It is tonic_prost's codec with one difference: a request the server cannot decode (truncated
//! bytes, a string field holding invalid UTF-8, a wrong wire type) is an `INVALID_ARGUMENT` with
//! a `SERIALIZATION` error response, because the fault is the caller's. tonic_prost reports every
//! decoding failure as `INTERNAL`, which would tell an UmaDB client that the server broke. A
//! response the client cannot decode stays `INTERNAL`: there the fault is the server's.

use std::marker::PhantomData;

use bytes::Buf;
use prost::Message;
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

use crate::convert::status;
use crate::proto;
use crate::proto::error_response::ErrorType;

/// What a failure to decode a message of this type means.
pub(crate) trait DecodeFailure {
    /// The status to answer with.
    fn status(error: prost::DecodeError) -> Status;
}

macro_rules! requests {
    ($($ty:ident),*) => {$(
        impl DecodeFailure for proto::$ty {
            fn status(error: prost::DecodeError) -> Status {
                status(
                    ErrorType::Serialization,
                    format!("malformed {} message: {error}", stringify!($ty)),
                )
            }
        }
    )*};
}

macro_rules! responses {
    ($($ty:ident),*) => {$(
        impl DecodeFailure for proto::$ty {
            fn status(error: prost::DecodeError) -> Status {
                Status::internal(format!("malformed {} from the server: {error}", stringify!($ty)))
            }
        }
    )*};
}

requests!(ReadRequest, SubscribeRequest, AppendRequest, HeadRequest, TrackingRequest);
responses!(ReadResponse, SubscribeResponse, AppendResponse, HeadResponse, TrackingResponse);

/// The codec named in build.rs.
#[derive(Debug, Clone)]
pub(crate) struct WireCodec<T, U>(PhantomData<(T, U)>);

impl<T, U> Default for WireCodec<T, U> {
    fn default() -> Self {
        WireCodec(PhantomData)
    }
}

impl<T, U> Codec for WireCodec<T, U>
where
    T: Message + Send + 'static,
    U: Message + Default + DecodeFailure + Send + 'static,
{
    type Encode = T;
    type Decode = U;
    type Encoder = ProstEncoder<T>;
    type Decoder = WireDecoder<U>;

    fn encoder(&mut self) -> Self::Encoder {
        ProstEncoder::new(BufferSettings::default())
    }

    fn decoder(&mut self) -> Self::Decoder {
        WireDecoder(PhantomData)
    }
}

/// Decodes `U`, reporting failures as [`DecodeFailure`] says.
#[derive(Debug)]
pub(crate) struct WireDecoder<U>(PhantomData<U>);

impl<U: Message + Default + DecodeFailure> Decoder for WireDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        // The message as one `Bytes` (no copy): prost then reads fields from a plain slice and
        // takes `bytes` fields as views of it, both markedly cheaper than through `DecodeBuf`.
        let message = buf.copy_to_bytes(buf.remaining());
        U::decode(message).map(Some).map_err(U::status)
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}
