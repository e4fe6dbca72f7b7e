//! Read and subscribe responses, encoded event by event as the store hands the events over.
//!
//! A streamed read moves millions of events a second, and building the generated message types
//! for each (moving every field into a `proto::SequencedEvent`, computing its encoded size three
//! times over, dropping it after) took a quarter of the server's time. Here each event is written
//! straight from the model into the bytes of one entry of the response's repeated `events` field
//! (field 1 of both `ReadResponse` and `SubscribeResponse`), byte for byte what prost would write
//! for the generated types; [`EncodedBatch`] then sends a batch of such entries as the message.

use bytes::{BufMut, Bytes, BytesMut};
use dcb::SequencedEvent;
use prost::encoding::{
    self, DecodeContext, WireType, encode_key, encode_varint, encoded_len_varint, key_len,
};
use prost::{DecodeError, Message};

/// `ReadResponse.events` and `SubscribeResponse.events`.
const EVENTS: u32 = 1;
/// `ReadResponse.head`.
const HEAD: u32 = 2;
/// `SequencedEvent` fields.
const POSITION: u32 = 1;
const EVENT: u32 = 2;
/// `Event` fields.
const TYPE: u32 = 1;
const TAGS: u32 = 2;
const DATA: u32 = 3;
const UUID: u32 = 4;
const METADATA: u32 = 5;
/// `MetadataEntry` fields.
const KEY: u32 = 1;
const VALUE: u32 = 2;
/// A uuid's hyphenated text.
const UUID_LEN: usize = 36;

/// One encoded entry of the `events` field, and the position of its event.
#[derive(Debug)]
pub(crate) struct Entry {
    pub(crate) position: u64,
    pub(crate) bytes: Bytes,
}

/// Size of a length-delimited field of `len` bytes.
fn delimited_len(tag: u32, len: usize) -> usize {
    key_len(tag) + encoded_len_varint(len as u64) + len
}

/// Size of a proto3 string or bytes field, which is left out when empty.
fn optional_len(tag: u32, bytes: &[u8]) -> usize {
    if bytes.is_empty() { 0 } else { delimited_len(tag, bytes.len()) }
}

fn metadata_entry_len(key: &str, value: &str) -> usize {
    optional_len(KEY, key.as_bytes()) + optional_len(VALUE, value.as_bytes())
}

fn event_len(event: &dcb::Event) -> usize {
    optional_len(TYPE, event.event_type.as_bytes())
        + event.tags.iter().map(|tag| delimited_len(TAGS, tag.len())).sum::<usize>()
        + optional_len(DATA, &event.data)
        + event.uuid.map_or(0, |_| delimited_len(UUID, UUID_LEN))
        + event.metadata.iter().map(|(k, v)| delimited_len(METADATA, metadata_entry_len(k, v))).sum::<usize>()
}

/// Sizes of the `SequencedEvent` message of `event` and of its `Event` message.
fn sequenced_len(event: &SequencedEvent) -> (usize, usize) {
    let position =
        if event.position == 0 { 0 } else { key_len(POSITION) + encoded_len_varint(event.position) };
    let inner = event_len(&event.event);
    (position + delimited_len(EVENT, inner), inner)
}

/// The encoded size of `event`'s entry.
#[cfg(test)]
fn entry_len(event: &SequencedEvent) -> usize {
    delimited_len(EVENTS, sequenced_len(event).0)
}

/// At least the encoded size of `event`'s entry, found without walking its fields' encodings: for
/// reserving room for many entries at once.
pub(crate) fn entry_len_bound(event: &SequencedEvent) -> usize {
    // Keys and length prefixes of the entry, the position, the event, its type and data (6, 11, 6,
    // 6 and 6 bytes at most), and a uuid field (38).
    const FIXED: usize = 80;
    let e = &event.event;
    FIXED
        + e.event_type.len()
        + e.data.len()
        + e.tags.iter().map(|tag| tag.len() + 6).sum::<usize>()
        + e.metadata.iter().map(|(k, v)| k.len() + v.len() + 18).sum::<usize>()
}

fn put_delimited(tag: u32, bytes: &[u8], buf: &mut BytesMut) {
    encode_key(tag, WireType::LengthDelimited, buf);
    encode_varint(bytes.len() as u64, buf);
    buf.put_slice(bytes);
}

fn put_optional(tag: u32, bytes: &[u8], buf: &mut BytesMut) {
    if !bytes.is_empty() {
        put_delimited(tag, bytes, buf);
    }
}

/// Encodes `event`'s entry at the end of `buf`, then splits it off as an [`Entry`]. Entries split
/// off one buffer share its allocation.
pub(crate) fn encode_entry(event: &SequencedEvent, buf: &mut BytesMut) -> Entry {
    let SequencedEvent { position, event: e } = event;
    let (outer, inner) = sequenced_len(event);
    buf.reserve(delimited_len(EVENTS, outer));
    encode_key(EVENTS, WireType::LengthDelimited, buf);
    encode_varint(outer as u64, buf);
    if *position != 0 {
        encode_key(POSITION, WireType::Varint, buf);
        encode_varint(*position, buf);
    }
    encode_key(EVENT, WireType::LengthDelimited, buf);
    encode_varint(inner as u64, buf);
    put_optional(TYPE, e.event_type.as_bytes(), buf);
    for tag in &e.tags {
        put_delimited(TAGS, tag.as_bytes(), buf);
    }
    put_optional(DATA, &e.data, buf);
    if let Some(uuid) = e.uuid {
        put_delimited(UUID, uuid.hyphenated().encode_lower(&mut [0; UUID_LEN]).as_bytes(), buf);
    }
    for (key, value) in &e.metadata {
        encode_key(METADATA, WireType::LengthDelimited, buf);
        encode_varint(metadata_entry_len(key, value) as u64, buf);
        put_optional(KEY, key.as_bytes(), buf);
        put_optional(VALUE, value.as_bytes(), buf);
    }
    Entry { position: *position, bytes: buf.split().freeze() }
}

/// A `ReadResponse` (with a head) or a `SubscribeResponse` (without) made of encoded entries.
///
/// Encode-only: the server never decodes one, and decoding skips every field.
#[derive(Debug)]
pub(crate) struct EncodedBatch {
    pub(crate) entries: Vec<Entry>,
    pub(crate) head: Option<u64>,
}

impl Message for EncodedBatch {
    fn encode_raw(&self, buf: &mut impl BufMut) {
        for entry in &self.entries {
            buf.put_slice(&entry.bytes);
        }
        if let Some(head) = &self.head {
            encoding::uint64::encode(HEAD, head, buf);
        }
    }

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: WireType,
        buf: &mut impl bytes::Buf,
        ctx: DecodeContext,
    ) -> Result<(), DecodeError> {
        encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        self.entries.iter().map(|entry| entry.bytes.len()).sum::<usize>()
            + self.head.as_ref().map_or(0, |head| encoding::uint64::encoded_len(HEAD, head))
    }

    fn clear(&mut self) {
        self.entries.clear();
        self.head = None;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::convert::sequenced_to_wire;
    use crate::proto;

    /// Events with every field empty or not: no tags, empty tags, metadata with empty keys or
    /// values, a uuid or none, position 0 or large.
    fn events() -> Vec<SequencedEvent> {
        let mut events = Vec::new();
        for i in 0..64u64 {
            let mut event = dcb::Event::new(
                if i % 7 == 0 { String::new() } else { format!("Type{i}") },
                vec![i as u8; (i as usize * 37) % 300],
            );
            for t in 0..i % 4 {
                event = event.tagged(if t == 2 { String::new() } else { format!("tag-{i}-{t}") });
            }
            if i % 2 == 0 {
                event = event.with_uuid(dcb::Uuid::from_u128(u128::from(i) << 64 | 0xabc));
            }
            for k in 0..i % 3 {
                let value = if k == 1 { String::new() } else { format!("v{i}") };
                event = event.with_metadata(if i % 5 == 0 { String::new() } else { format!("k{k}") }, value);
            }
            let position = if i == 0 { 0 } else { i * 0x0123_4567_89ab };
            events.push(SequencedEvent { position, event });
        }
        events
    }

    #[test]
    fn entries_are_what_prost_writes_for_the_generated_types() {
        let mut buf = BytesMut::new();
        let events = events();
        for head in [None, Some(0), Some(12_345_678_901)] {
            let entries: Vec<Entry> = events.iter().map(|e| encode_entry(e, &mut buf)).collect();
            for (event, entry) in events.iter().zip(&entries) {
                assert_eq!(entry.bytes.len(), entry_len(event));
                assert!(entry_len_bound(event) >= entry_len(event));
                assert_eq!(entry.position, event.position);
            }
            let batch = EncodedBatch { entries, head };
            let generated =
                proto::ReadResponse { events: events.iter().cloned().map(sequenced_to_wire).collect(), head };
            assert_eq!(batch.encode_to_vec(), generated.encode_to_vec(), "head {head:?}");
            assert_eq!(batch.encoded_len(), generated.encoded_len());
            if head.is_none() {
                let subscribed = proto::SubscribeResponse { events: generated.events };
                assert_eq!(batch.encode_to_vec(), subscribed.encode_to_vec());
            }
        }
    }
}
