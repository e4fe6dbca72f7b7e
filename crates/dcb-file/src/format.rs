//! Byte layouts of the log: the file header, record framing, and the three record kinds.
//!
//! docs/FILE_FORMAT.md is the prose version of this module; change both together.

use std::collections::BTreeMap;

use dcb::{Bytes, Event, Uuid};

/// The log of events, in the store directory.
pub(crate) const LOG_FILE: &str = "events.log";
/// The index checkpoint, in the store directory.
pub(crate) const CHECKPOINT_FILE: &str = "index.ckpt";
/// Where a checkpoint is written before it is renamed over [`CHECKPOINT_FILE`].
pub(crate) const CHECKPOINT_TMP: &str = "index.ckpt.tmp";
/// Where a new log is written before it is renamed to [`LOG_FILE`].
pub(crate) const LOG_TMP: &str = "events.log.tmp";
/// The file whose lock keeps a second process out.
pub(crate) const LOCK_FILE: &str = "LOCK";

pub(crate) const LOG_MAGIC: &[u8; 8] = b"DCBFLOG1";
/// The version new logs are written in; version 1 logs are still read and appended to.
pub(crate) const FORMAT_VERSION: u32 = 2;
/// The first version whose record checksums are sealed with the store id (see [`Seal`]).
const SEALED_SINCE: u32 = 2;
/// Magic, version, store id, crc.
pub(crate) const LOG_HEADER_LEN: u64 = 8 + 4 + 16 + 4;

/// Length and crc of every record.
pub(crate) const RECORD_HEADER_LEN: usize = 8;
pub(crate) const KIND_EVENT: u8 = 1;
pub(crate) const KIND_TRACKING: u8 = 2;
pub(crate) const KIND_COMMIT: u8 = 3;
/// Kind, batch start offset, first and last position, record count.
pub(crate) const COMMIT_BODY_LEN: usize = 1 + 8 + 8 + 8 + 4;
pub(crate) const COMMIT_RECORD_LEN: usize = RECORD_HEADER_LEN + COMMIT_BODY_LEN;
/// No valid record body is longer: the largest event the limits allow takes about 1.3 MiB. A
/// longer length field is damage, and refusing it keeps a corrupted length from making a reader
/// allocate gigabytes.
pub(crate) const MAX_RECORD_BODY: usize = 2 << 20;

/// What every record checksum of a log starts from: the checksum of the store id (version 2), or
/// nothing (version 1). The store id is in no event and in no answer to a client, so the bytes a
/// client puts in its events can never pass for a record of this log: a commit record inside an
/// event's data would otherwise make a torn batch look like damage followed by a later batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Seal(u32);

impl Seal {
    /// The seal of records written in `version` for the store `store_id`.
    pub(crate) fn of(version: u32, store_id: Uuid) -> Seal {
        Seal(if version >= SEALED_SINCE { crc32c::crc32c(store_id.as_bytes()) } else { 0 })
    }
}

/// The log header: which store the log belongs to, so a checkpoint from another store is refused.
pub(crate) fn encode_log_header(store_id: Uuid) -> Vec<u8> {
    let mut header = Vec::with_capacity(LOG_HEADER_LEN as usize);
    header.extend_from_slice(LOG_MAGIC);
    header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    header.extend_from_slice(store_id.as_bytes());
    let crc = crc32c::crc32c(&header);
    header.extend_from_slice(&crc.to_le_bytes());
    debug_assert_eq!(header.len() as u64, LOG_HEADER_LEN);
    header
}

/// The store id of a valid header and the seal of its records, or what is wrong with it.
pub(crate) fn decode_log_header(header: &[u8]) -> Result<(Uuid, Seal), String> {
    if header.len() != LOG_HEADER_LEN as usize || &header[..8] != LOG_MAGIC {
        return Err("not a dcb-file log (bad magic)".into());
    }
    let crc = u32::from_le_bytes(header[28..32].try_into().unwrap());
    if crc32c::crc32c(&header[..28]) != crc {
        return Err("log header checksum mismatch".into());
    }
    let version = u32::from_le_bytes(header[8..12].try_into().unwrap());
    if !(1..=FORMAT_VERSION).contains(&version) {
        return Err(format!("log format version {version}, this build reads 1 to {FORMAT_VERSION}"));
    }
    let store_id = Uuid::from_bytes(header[12..28].try_into().unwrap());
    Ok((store_id, Seal::of(version, store_id)))
}

/// The checksum of a record: over its length field and its body, so that a damaged length is
/// caught as surely as damaged contents, starting from the log's seal.
pub(crate) fn record_crc(seal: Seal, len: u32, body: &[u8]) -> u32 {
    crc32c::crc32c_append(crc32c::crc32c_append(seal.0, &len.to_le_bytes()), body)
}

/// Starts a record in `buf`; returns where it starts, for [`finish_record`].
fn begin_record(buf: &mut Vec<u8>, kind: u8) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&[0; RECORD_HEADER_LEN]);
    buf.push(kind);
    start
}

/// Fills in the length and crc of the record started at `start`.
fn finish_record(buf: &mut [u8], start: usize, seal: Seal) {
    let body_len = buf.len() - start - RECORD_HEADER_LEN;
    assert!(body_len <= MAX_RECORD_BODY, "record of {body_len} bytes exceeds the format's limit");
    let len = body_len as u32;
    let crc = record_crc(seal, len, &buf[start + RECORD_HEADER_LEN..]);
    buf[start..start + 4].copy_from_slice(&len.to_le_bytes());
    buf[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
}

fn put_str16(buf: &mut Vec<u8>, s: &str) {
    // Names are validated to at most MAX_NAME_BYTES (256) bytes before they get here.
    debug_assert!(s.len() <= u16::MAX as usize);
    buf.extend_from_slice(&(s.len() as u16).to_le_bytes());
    buf.extend_from_slice(s.as_bytes());
}

/// Appends an event record for `event` at `position`; returns the record's total length.
pub(crate) fn encode_event(buf: &mut Vec<u8>, seal: Seal, position: u64, event: &Event) -> usize {
    let start = begin_record(buf, KIND_EVENT);
    buf.extend_from_slice(&position.to_le_bytes());
    put_str16(buf, &event.event_type);
    buf.extend_from_slice(&(event.tags.len() as u16).to_le_bytes());
    for tag in &event.tags {
        put_str16(buf, tag);
    }
    match event.uuid {
        Some(uuid) => {
            buf.push(1);
            buf.extend_from_slice(uuid.as_bytes());
        }
        None => buf.push(0),
    }
    buf.extend_from_slice(&(event.metadata.len() as u16).to_le_bytes());
    for (key, value) in &event.metadata {
        put_str16(buf, key);
        buf.extend_from_slice(&(value.len() as u32).to_le_bytes());
        buf.extend_from_slice(value.as_bytes());
    }
    buf.extend_from_slice(&(event.data.len() as u32).to_le_bytes());
    buf.extend_from_slice(&event.data);
    finish_record(buf, start, seal);
    buf.len() - start
}

/// Appends a tracking record: `source` has advanced to `position`.
pub(crate) fn encode_tracking(buf: &mut Vec<u8>, seal: Seal, source: &str, position: u64) {
    let start = begin_record(buf, KIND_TRACKING);
    buf.extend_from_slice(&position.to_le_bytes());
    put_str16(buf, source);
    finish_record(buf, start, seal);
}

/// The commit record that ends a batch: the batch is whole when this record is valid and the
/// records before it since `batch_start` are exactly `records` valid records holding the events
/// `first..=last`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Commit {
    pub(crate) batch_start: u64,
    pub(crate) first: u64,
    pub(crate) last: u64,
    /// Event and tracking records of the batch, the commit record excluded.
    pub(crate) records: u32,
}

pub(crate) fn encode_commit(buf: &mut Vec<u8>, seal: Seal, commit: Commit) {
    debug_assert!(commit.first >= 1 && commit.first <= commit.last);
    let start = begin_record(buf, KIND_COMMIT);
    buf.extend_from_slice(&commit.batch_start.to_le_bytes());
    buf.extend_from_slice(&commit.first.to_le_bytes());
    buf.extend_from_slice(&commit.last.to_le_bytes());
    buf.extend_from_slice(&commit.records.to_le_bytes());
    finish_record(buf, start, seal);
    debug_assert_eq!(buf.len() - start, COMMIT_RECORD_LEN);
}

/// A record whose framing and checksum are valid.
#[derive(Debug)]
pub(crate) enum Record<'a> {
    Event { position: u64, body: &'a [u8] },
    Tracking { source: String, position: u64 },
    Commit(Commit),
}

/// Why the bytes at some offset are not a valid record.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Invalid {
    /// The record runs past the end of the bytes available (a torn tail, or a short read).
    Truncated,
    /// The bytes are there but wrong.
    Damaged(String),
    /// The checksum holds but the contents make no sense: never a torn write (whose checksum
    /// would fail), but a writer's bug or a newer format, so damage wherever it lies.
    Malformed(String),
}

/// Parses the record at the start of `bytes`; returns it and its total length.
pub(crate) fn parse_record(bytes: &[u8], seal: Seal) -> Result<(Record<'_>, usize), Invalid> {
    if bytes.len() < RECORD_HEADER_LEN {
        return Err(Invalid::Truncated);
    }
    let len = u32::from_le_bytes(bytes[..4].try_into().unwrap());
    let crc = u32::from_le_bytes(bytes[4..8].try_into().unwrap());
    if len == 0 || len as usize > MAX_RECORD_BODY {
        return Err(Invalid::Damaged(format!("record length {len} out of range")));
    }
    let total = RECORD_HEADER_LEN + len as usize;
    if bytes.len() < total {
        return Err(Invalid::Truncated);
    }
    let body = &bytes[RECORD_HEADER_LEN..total];
    if record_crc(seal, len, body) != crc {
        return Err(Invalid::Damaged("record checksum mismatch".into()));
    }
    let mut cursor = Cursor { bytes: &body[1..] };
    let damaged = |what: &str| Invalid::Malformed(format!("{what} (checksum valid: written wrong?)"));
    let record = match body[0] {
        KIND_EVENT => {
            let position = cursor.u64().ok_or_else(|| damaged("event record too short"))?;
            Record::Event { position, body }
        }
        KIND_TRACKING => {
            let position = cursor.u64().ok_or_else(|| damaged("tracking record too short"))?;
            let source = cursor.str16().ok_or_else(|| damaged("tracking record malformed"))?;
            Record::Tracking { source, position }
        }
        KIND_COMMIT => {
            if body.len() != COMMIT_BODY_LEN {
                return Err(damaged("commit record of the wrong length"));
            }
            let commit = Commit {
                batch_start: cursor.u64().unwrap(),
                first: cursor.u64().unwrap(),
                last: cursor.u64().unwrap(),
                records: cursor.u32().unwrap(),
            };
            Record::Commit(commit)
        }
        kind => return Err(damaged(&format!("unknown record kind {kind}"))),
    };
    Ok((record, total))
}

/// Whether a valid commit record starts at `bytes`, and which: a cheap test first (length and
/// kind), so that a scan for commits over a long stretch of bytes rarely computes a checksum.
pub(crate) fn commit_at(bytes: &[u8], seal: Seal) -> Option<Commit> {
    if bytes.len() < COMMIT_RECORD_LEN
        || u32::from_le_bytes(bytes[..4].try_into().unwrap()) != COMMIT_BODY_LEN as u32
        || bytes[RECORD_HEADER_LEN] != KIND_COMMIT
    {
        return None;
    }
    match parse_record(&bytes[..COMMIT_RECORD_LEN], seal) {
        Ok((Record::Commit(commit), _)) => Some(commit),
        _ => None,
    }
}

/// Decodes the body of an event record (kind byte included) whose checksum has been verified.
/// `hold` turns the slice of `body` holding the event's data into the event's [`Bytes`]: a copy,
/// or (when `body` lies in a buffer that is itself `Bytes`) a view of it without one.
pub(crate) fn decode_event(body: &[u8], hold: impl FnOnce(&[u8]) -> Bytes) -> Result<(u64, Event), String> {
    let malformed = || "event record malformed (checksum valid: written wrong?)".to_string();
    if body.first() != Some(&KIND_EVENT) {
        return Err("not an event record".into());
    }
    let mut c = Cursor { bytes: &body[1..] };
    let position = c.u64().ok_or_else(malformed)?;
    let event_type = c.str16().ok_or_else(malformed)?;
    let tag_count = c.u16().ok_or_else(malformed)?;
    let mut tags = Vec::with_capacity(tag_count as usize);
    for _ in 0..tag_count {
        tags.push(c.str16().ok_or_else(malformed)?);
    }
    let uuid = match c.u8().ok_or_else(malformed)? {
        0 => None,
        1 => Some(Uuid::from_bytes(c.take(16).ok_or_else(malformed)?.try_into().unwrap())),
        _ => return Err(malformed()),
    };
    let meta_count = c.u16().ok_or_else(malformed)?;
    let mut metadata = BTreeMap::new();
    for _ in 0..meta_count {
        let key = c.str16().ok_or_else(malformed)?;
        let len = c.u32().ok_or_else(malformed)?;
        let value = c.string(len as usize).ok_or_else(malformed)?;
        metadata.insert(key, value);
    }
    let data_len = c.u32().ok_or_else(malformed)?;
    let data = hold(c.take(data_len as usize).ok_or_else(malformed)?);
    if !c.bytes.is_empty() {
        return Err(malformed());
    }
    Ok((position, Event { event_type, data, tags, uuid, metadata }))
}

/// The type and tags of an event record body, without copying its data (index rebuilds).
pub(crate) fn event_keys(body: &[u8]) -> Result<(String, Vec<String>), String> {
    let malformed = || "event record malformed (checksum valid: written wrong?)".to_string();
    let mut c = Cursor { bytes: body.get(1..).ok_or_else(malformed)? };
    c.u64().ok_or_else(malformed)?;
    let event_type = c.str16().ok_or_else(malformed)?;
    let tag_count = c.u16().ok_or_else(malformed)?;
    let mut tags = Vec::with_capacity(tag_count as usize);
    for _ in 0..tag_count {
        tags.push(c.str16().ok_or_else(malformed)?);
    }
    Ok((event_type, tags))
}

/// Bounds-checked little-endian reads: damaged input gives `None`, never a panic.
pub(crate) struct Cursor<'a> {
    pub(crate) bytes: &'a [u8],
}

impl<'a> Cursor<'a> {
    pub(crate) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if self.bytes.len() < n {
            return None;
        }
        let (head, rest) = self.bytes.split_at(n);
        self.bytes = rest;
        Some(head)
    }

    pub(crate) fn u8(&mut self) -> Option<u8> {
        self.take(1).map(|b| b[0])
    }

    pub(crate) fn u16(&mut self) -> Option<u16> {
        self.take(2).map(|b| u16::from_le_bytes(b.try_into().unwrap()))
    }

    pub(crate) fn u32(&mut self) -> Option<u32> {
        self.take(4).map(|b| u32::from_le_bytes(b.try_into().unwrap()))
    }

    pub(crate) fn u64(&mut self) -> Option<u64> {
        self.take(8).map(|b| u64::from_le_bytes(b.try_into().unwrap()))
    }

    pub(crate) fn string(&mut self, len: usize) -> Option<String> {
        String::from_utf8(self.take(len)?.to_vec()).ok()
    }

    pub(crate) fn str16(&mut self) -> Option<String> {
        let len = self.u16()?;
        self.string(len as usize)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_records_round_trip_and_detect_every_flipped_bit_of_a_small_record() {
        let event = Event::new("Type", vec![0u8, 1, 2, 255])
            .with_tags(["b", "a"])
            .with_uuid(Uuid::from_u128(7))
            .with_metadata("k", "v");
        let seal = Seal::of(FORMAT_VERSION, Uuid::from_u128(3));
        let mut buf = Vec::new();
        let len = encode_event(&mut buf, seal, 42, &event);
        assert_eq!(len, buf.len());
        let (record, total) = parse_record(&buf, seal).unwrap();
        assert_eq!(total, len);
        let Record::Event { position, body } = record else { panic!("not an event: {record:?}") };
        assert_eq!(position, 42);
        assert_eq!(decode_event(body, Bytes::copy_from_slice).unwrap(), (42, event.clone()));
        assert_eq!(event_keys(body).unwrap(), ("Type".to_string(), vec!["b".into(), "a".into()]));
        for bit in 0..buf.len() * 8 {
            let mut damaged = buf.clone();
            damaged[bit / 8] ^= 1 << (bit % 8);
            assert!(parse_record(&damaged, seal).is_err(), "flipped bit {bit} went unnoticed");
        }
        assert_eq!(parse_record(&buf[..len - 1], seal).unwrap_err(), Invalid::Truncated);
    }

    #[test]
    fn commit_records_are_found_by_the_cheap_test() {
        let seal = Seal::of(FORMAT_VERSION, Uuid::from_u128(3));
        let commit = Commit { batch_start: 32, first: 1, last: 3, records: 4 };
        let mut buf = Vec::new();
        encode_commit(&mut buf, seal, commit);
        assert_eq!(commit_at(&buf, seal), Some(commit));
        assert_eq!(commit_at(&[0; COMMIT_RECORD_LEN], seal), None);
        buf[12] ^= 1;
        assert_eq!(commit_at(&buf, seal), None);
    }

    /// Records are valid only in a log of their own store (since version 2): whoever does not
    /// know the store id cannot write bytes that pass for them.
    #[test]
    fn records_are_sealed_with_their_store() {
        let (ours, theirs) =
            (Seal::of(FORMAT_VERSION, Uuid::from_u128(3)), Seal::of(FORMAT_VERSION, Uuid::from_u128(4)));
        let unsealed = Seal::of(1, Uuid::from_u128(3));
        let commit = Commit { batch_start: 32, first: 1, last: 3, records: 4 };
        for (written, read, valid) in
            [(ours, theirs, false), (unsealed, ours, false), (unsealed, unsealed, true)]
        {
            let mut buf = Vec::new();
            encode_commit(&mut buf, written, commit);
            assert_eq!(commit_at(&buf, read).is_some(), valid, "{written:?} read as {read:?}");
        }
    }

    #[test]
    fn log_headers_name_their_store_and_seal() {
        let id = Uuid::from_u128(99);
        let header = encode_log_header(id);
        assert_eq!(decode_log_header(&header).unwrap(), (id, Seal::of(FORMAT_VERSION, id)));
        let mut damaged = header.clone();
        damaged[20] ^= 4;
        assert!(decode_log_header(&damaged).is_err());
        // A version 1 header (checksum fixed up) reads with the unsealed checksums of that version.
        let mut old = header.clone();
        old[8..12].copy_from_slice(&1u32.to_le_bytes());
        let crc = crc32c::crc32c(&old[..28]);
        old[28..32].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(decode_log_header(&old).unwrap(), (id, Seal::of(1, id)));
        assert_ne!(Seal::of(1, id), Seal::of(FORMAT_VERSION, id));
    }
}
