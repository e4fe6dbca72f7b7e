//! The protobuf codec of the generated service and client.
//!
//! It is tonic_prost's codec with one difference: a request the server cannot decode (truncated
//! bytes, a string field holding invalid UTF-8, a wrong wire type) is an `INVALID_ARGUMENT` with
//! a `SERIALIZATION` error response, because the fault is the caller's. tonic_prost reports every
//! decoding failure as `INTERNAL`, which would tell an UmaDB client that the server broke. A
//! response the client cannot decode stays `INTERNAL`: there the fault is the server's.
//!
//! Requests are decoded field by field here rather than by prost alone, for two reasons:
//!
//! - Repeated fields are counted against [`dcb::limits`] as they arrive, and a request is refused
//!   at the first element over a limit. A message of 16 MiB can otherwise hold 8 million empty
//!   events (two bytes each on the wire, some 150 in memory): gigabytes before validation runs.
//! - Event data under [`OWN_DATA_BELOW`] bytes is copied into an allocation of its own. prost takes
//!   `bytes` fields as views of the received message, and a store that keeps the data (the memory
//!   store) would keep the whole receive buffer, at least 8 KiB, alive for a few bytes of data.

use std::marker::PhantomData;

use bytes::{Buf, Bytes};
use dcb::limits::{
    MAX_EVENTS_PER_APPEND, MAX_ITEM_TERMS, MAX_METADATA_ENTRIES, MAX_QUERY_ITEMS, MAX_TAGS_PER_EVENT,
};
use prost::encoding::{DecodeContext, WireType, decode_key};
use prost::{DecodeError, Message};
use tonic::Status;
use tonic::codec::{BufferSettings, Codec, DecodeBuf, Decoder};
use tonic_prost::ProstEncoder;

use crate::convert::status;
use crate::proto;
use crate::proto::error_response::ErrorType;

/// How a message of this type is decoded, and what a failure to decode it means.
pub(crate) trait DecodeFailure: Message + Default {
    /// The status to answer with.
    fn status(error: DecodeError) -> Status;

    /// Decodes one whole message.
    fn decode_message(message: Bytes) -> Result<Self, Status> {
        Self::decode(message).map_err(Self::status)
    }
}

macro_rules! requests {
    ($($ty:ident $(by $fields:ident)?),*) => {$(
        impl DecodeFailure for proto::$ty {
            fn status(error: DecodeError) -> Status {
                status(
                    ErrorType::Serialization,
                    format!("malformed {} message: {error}", stringify!($ty)),
                )
            }

            $(
            fn decode_message(mut message: Bytes) -> Result<Self, Status> {
                let mut decoded = Self::default();
                merge(&mut decoded, &mut message, $fields).map_err(|refusal| match refusal {
                    Refusal::Malformed(error) => Self::status(error),
                    Refusal::OverLimit(message) => status(ErrorType::InvalidArgument, message),
                })?;
                Ok(decoded)
            }
            )?
        }
    )*};
}

macro_rules! responses {
    ($($ty:ident),*) => {$(
        impl DecodeFailure for proto::$ty {
            fn status(error: DecodeError) -> Status {
                Status::internal(format!("malformed {} from the server: {error}", stringify!($ty)))
            }
        }
    )*};
}

// Head and tracking requests have no repeated fields (and unknown fields are skipped, not kept).
requests!(
    ReadRequest by with_query_field,
    SubscribeRequest by with_query_field,
    AppendRequest by append_field,
    HeadRequest,
    TrackingRequest
);
responses!(ReadResponse, SubscribeResponse, AppendResponse, HeadResponse, TrackingResponse);

/// Event data shorter than this is copied out of the received message (see the module comment);
/// longer data is most of its buffer anyway, and stays a view of it.
pub(crate) const OWN_DATA_BELOW: usize = 4096;

/// Why a request was not decoded.
enum Refusal {
    /// Not a valid encoding of the message.
    Malformed(DecodeError),
    /// Valid so far, but a repeated field went over its limit: the message says which.
    OverLimit(String),
}

impl From<DecodeError> for Refusal {
    fn from(error: DecodeError) -> Self {
        Refusal::Malformed(error)
    }
}

/// Decodes one field of `M` (its key already read) from `buf`.
type Field<M> = fn(&mut M, u32, WireType, &mut Bytes) -> Result<(), Refusal>;

/// Merges every field in `buf` into `message` through `field`, as prost's `merge` does.
fn merge<M>(message: &mut M, buf: &mut Bytes, field: Field<M>) -> Result<(), Refusal> {
    while buf.has_remaining() {
        let (tag, wire_type) = decode_key(buf)?;
        field(message, tag, wire_type, buf)?;
    }
    Ok(())
}

/// Merges a field that is not counted here, with prost's generated code.
fn merge_plain<M: Message>(
    message: &mut M,
    tag: u32,
    wire_type: WireType,
    buf: &mut Bytes,
) -> Result<(), Refusal> {
    Ok(message.merge_field(tag, wire_type, buf, DecodeContext::default())?)
}

/// The body of a length-delimited field, taken off `buf` as a view.
fn delimited(wire_type: WireType, buf: &mut Bytes) -> Result<Bytes, DecodeError> {
    let mut body = Bytes::new();
    prost::encoding::bytes::merge(wire_type, &mut body, buf, DecodeContext::default())?;
    Ok(body)
}

/// Merges a nested message field of `M` into `nested` through `field`.
fn merge_nested<M>(
    nested: &mut M,
    wire_type: WireType,
    buf: &mut Bytes,
    field: Field<M>,
) -> Result<(), Refusal> {
    merge(nested, &mut delimited(wire_type, buf)?, field)
}

/// Refuses one more element of a repeated field that holds `len` already.
fn count(len: usize, limit: usize, what: &str) -> Result<(), Refusal> {
    if len >= limit {
        return Err(Refusal::OverLimit(format!("{what}: more than the limit of {limit}")));
    }
    Ok(())
}

fn append_field(
    append: &mut proto::AppendRequest,
    tag: u32,
    wire_type: WireType,
    buf: &mut Bytes,
) -> Result<(), Refusal> {
    match tag {
        1 => {
            count(append.events.len(), MAX_EVENTS_PER_APPEND, "append of too many events")?;
            let mut event = proto::Event::default();
            merge_nested(&mut event, wire_type, buf, event_field)?;
            append.events.push(event);
            Ok(())
        }
        2 => merge_nested(append.condition.get_or_insert_default(), wire_type, buf, condition_field),
        _ => merge_plain(append, tag, wire_type, buf),
    }
}

/// The field of [`proto::AppendCondition`] that holds its positions per item.
const ITEMS_AFTER: u32 = 1000;

/// A field of an append's condition: its query as [`with_query_field`] takes it, and its
/// positions per item counted against the most items a query may have (packed, a field of 16
/// MiB would otherwise unpack into millions of them before validation).
fn condition_field(
    condition: &mut proto::AppendCondition,
    tag: u32,
    wire_type: WireType,
    buf: &mut Bytes,
) -> Result<(), Refusal> {
    const TOO_MANY: &str = "an append condition has too many item positions";
    if tag != ITEMS_AFTER {
        return with_query_field(condition, tag, wire_type, buf);
    }
    if wire_type != WireType::LengthDelimited {
        count(condition.items_after.len(), MAX_QUERY_ITEMS, TOO_MANY)?;
        return merge_plain(condition, tag, wire_type, buf);
    }
    let mut packed = delimited(wire_type, buf)?;
    while packed.has_remaining() {
        count(condition.items_after.len(), MAX_QUERY_ITEMS, TOO_MANY)?;
        condition.items_after.push(prost::encoding::decode_varint(&mut packed)?);
    }
    Ok(())
}

fn event_field(
    event: &mut proto::Event,
    tag: u32,
    wire_type: WireType,
    buf: &mut Bytes,
) -> Result<(), Refusal> {
    match tag {
        2 => {
            count(event.tags.len(), MAX_TAGS_PER_EVENT, "an event has too many tags")?;
            merge_plain(event, tag, wire_type, buf)
        }
        3 => {
            let data = delimited(wire_type, buf)?;
            event.data = if data.len() < OWN_DATA_BELOW { Bytes::copy_from_slice(&data) } else { data };
            Ok(())
        }
        5 => {
            count(event.metadata.len(), MAX_METADATA_ENTRIES, "an event has too many metadata entries")?;
            merge_plain(event, tag, wire_type, buf)
        }
        _ => merge_plain(event, tag, wire_type, buf),
    }
}

/// A message whose field 1 is a query: read and subscribe requests, and an append's condition;
/// `query_or_default` gives that field, set to an empty query first if it is unset.
trait WithQuery: Message {
    fn query_or_default(&mut self) -> &mut proto::Query;
}

impl WithQuery for proto::ReadRequest {
    fn query_or_default(&mut self) -> &mut proto::Query {
        self.query.get_or_insert_default()
    }
}

impl WithQuery for proto::SubscribeRequest {
    fn query_or_default(&mut self) -> &mut proto::Query {
        self.query.get_or_insert_default()
    }
}

impl WithQuery for proto::AppendCondition {
    fn query_or_default(&mut self) -> &mut proto::Query {
        self.fail_if_events_match.get_or_insert_default()
    }
}

/// A field of a [`WithQuery`] message: its query counted item by item, the rest as prost does.
fn with_query_field<M: WithQuery>(
    message: &mut M,
    tag: u32,
    wire_type: WireType,
    buf: &mut Bytes,
) -> Result<(), Refusal> {
    match tag {
        1 => merge_nested(message.query_or_default(), wire_type, buf, query_field),
        _ => merge_plain(message, tag, wire_type, buf),
    }
}

fn query_field(
    query: &mut proto::Query,
    tag: u32,
    wire_type: WireType,
    buf: &mut Bytes,
) -> Result<(), Refusal> {
    match tag {
        1 => {
            count(query.items.len(), MAX_QUERY_ITEMS, "query has too many items")?;
            let mut item = proto::QueryItem::default();
            merge_nested(&mut item, wire_type, buf, item_field)?;
            query.items.push(item);
            Ok(())
        }
        _ => merge_plain(query, tag, wire_type, buf),
    }
}

fn item_field(
    item: &mut proto::QueryItem,
    tag: u32,
    wire_type: WireType,
    buf: &mut Bytes,
) -> Result<(), Refusal> {
    if tag == 1 || tag == 2 {
        count(
            item.types.len() + item.tags.len(),
            MAX_ITEM_TERMS,
            "a query item has too many types and tags",
        )?;
    }
    merge_plain(item, tag, wire_type, buf)
}

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
    U: DecodeFailure + Send + 'static,
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

impl<U: DecodeFailure> Decoder for WireDecoder<U> {
    type Item = U;
    type Error = Status;

    fn decode(&mut self, buf: &mut DecodeBuf<'_>) -> Result<Option<U>, Status> {
        // The message as one `Bytes` (no copy): prost then reads fields from a plain slice and
        // takes `bytes` fields as views of it, both markedly cheaper than through `DecodeBuf`.
        let message = buf.copy_to_bytes(buf.remaining());
        U::decode_message(message).map(Some)
    }

    fn buffer_settings(&self) -> BufferSettings {
        BufferSettings::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(data: Vec<u8>) -> proto::Event {
        proto::Event { event_type: "E".into(), data: data.into(), ..Default::default() }
    }

    fn refusal<T: std::fmt::Debug>(decoded: Result<T, Status>) -> ErrorType {
        let status = decoded.expect_err("decoded over a limit");
        assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");
        let details = proto::ErrorResponse::decode(status.details()).unwrap();
        ErrorType::try_from(details.error_type).unwrap()
    }

    #[test]
    fn repeated_fields_over_their_limits_fail_to_decode() {
        let empty_events = |count| proto::AppendRequest {
            events: vec![proto::Event::default(); count],
            ..Default::default()
        };
        let at_limit = Bytes::from(empty_events(MAX_EVENTS_PER_APPEND).encode_to_vec());
        assert_eq!(
            proto::AppendRequest::decode_message(at_limit).unwrap().events.len(),
            MAX_EVENTS_PER_APPEND
        );
        let over = Bytes::from(empty_events(MAX_EVENTS_PER_APPEND + 1).encode_to_vec());
        assert_eq!(refusal(proto::AppendRequest::decode_message(over)), ErrorType::InvalidArgument);

        let query = |items| proto::Query { items: vec![proto::QueryItem::default(); items] };
        let read = |items| proto::ReadRequest { query: Some(query(items)), ..Default::default() };
        let at_limit = Bytes::from(read(MAX_QUERY_ITEMS).encode_to_vec());
        assert!(proto::ReadRequest::decode_message(at_limit).is_ok());
        let over = Bytes::from(read(MAX_QUERY_ITEMS + 1).encode_to_vec());
        assert_eq!(refusal(proto::ReadRequest::decode_message(over)), ErrorType::InvalidArgument);
        let subscribe =
            proto::SubscribeRequest { query: Some(query(MAX_QUERY_ITEMS + 1)), ..Default::default() };
        let over = Bytes::from(subscribe.encode_to_vec());
        assert_eq!(refusal(proto::SubscribeRequest::decode_message(over)), ErrorType::InvalidArgument);
        let condition = proto::AppendCondition {
            fail_if_events_match: Some(query(MAX_QUERY_ITEMS + 1)),
            after: None,
            items_after: Vec::new(),
        };
        let append = proto::AppendRequest { condition: Some(condition), ..empty_events(1) };
        let over = Bytes::from(append.encode_to_vec());
        assert_eq!(refusal(proto::AppendRequest::decode_message(over)), ErrorType::InvalidArgument);
        let positions = |count| proto::AppendRequest {
            condition: Some(proto::AppendCondition { items_after: vec![7; count], ..Default::default() }),
            ..empty_events(1)
        };
        let at_limit = Bytes::from(positions(MAX_QUERY_ITEMS).encode_to_vec());
        let decoded = proto::AppendRequest::decode_message(at_limit).unwrap();
        assert_eq!(decoded.condition.unwrap().items_after, vec![7; MAX_QUERY_ITEMS]);
        let over = Bytes::from(positions(MAX_QUERY_ITEMS + 1).encode_to_vec());
        assert_eq!(refusal(proto::AppendRequest::decode_message(over)), ErrorType::InvalidArgument);

        let tagged = proto::Event { tags: vec![String::new(); MAX_TAGS_PER_EVENT + 1], ..event(vec![]) };
        let over =
            Bytes::from(proto::AppendRequest { events: vec![tagged], ..Default::default() }.encode_to_vec());
        assert_eq!(refusal(proto::AppendRequest::decode_message(over)), ErrorType::InvalidArgument);
        let item = proto::QueryItem { types: vec![String::new(); 40], tags: vec![String::new(); 25] };
        let read =
            proto::ReadRequest { query: Some(proto::Query { items: vec![item] }), ..Default::default() };
        let over = Bytes::from(read.encode_to_vec());
        assert_eq!(refusal(proto::ReadRequest::decode_message(over)), ErrorType::InvalidArgument);
    }

    #[test]
    fn small_event_data_does_not_keep_the_request_buffer() {
        let append = proto::AppendRequest {
            events: vec![event(vec![1; 100]), event(vec![2; OWN_DATA_BELOW])],
            ..Default::default()
        };
        let message = Bytes::from(append.encode_to_vec());
        let range = message.as_ptr_range();
        let decoded = proto::AppendRequest::decode_message(message.clone()).unwrap();
        assert_eq!(decoded, append);
        let within = |data: &Bytes| range.contains(&data.as_ptr());
        assert!(!within(&decoded.events[0].data), "small data is a view of the request");
        assert!(within(&decoded.events[1].data), "large data was copied");
    }
}
