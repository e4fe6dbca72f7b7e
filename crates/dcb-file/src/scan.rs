//! Walking the log batch by batch: recovery on open and the verify tool share this.
//!
//! A batch is a run of event and tracking records ended by a commit record. Only whole batches
//! count. What follows the last whole batch is either a torn tail (the batch a crash interrupted,
//! never acknowledged: discarded) or damage (reported, never skipped). The two are told apart by
//! what comes after the first bad record: the writer starts a batch only once the previous one is
//! synced, so a valid commit record of a *later* batch beyond the bad spot proves that the bad
//! bytes had been synced, and are therefore damage. Zeros from the end of the last whole batch to
//! the end of the file are neither: the writer writes them ahead of the log (see `writer`).

use std::io;
use std::path::Path;

use dcb::{Bytes, Error, Result};

use crate::format::{
    self, COMMIT_RECORD_LEN, Commit, Invalid, MAX_RECORD_BODY, RECORD_HEADER_LEN, Record, Seal,
};
use crate::io::StorageFile;

/// One record of a whole batch, as the index needs it.
#[derive(Debug)]
pub(crate) enum Item {
    Event { offset: u64, len: u32, event_type: String, tags: Vec<String> },
    Tracking { source: String, position: u64 },
}

/// Bytes after the last whole batch that recovery discards.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Torn {
    /// Where the last whole batch ends (the length the log is cut to).
    pub(crate) offset: u64,
    /// How many bytes follow it.
    pub(crate) bytes: u64,
    pub(crate) reason: String,
}

/// Where the scan stopped.
#[derive(Debug)]
pub(crate) struct ScanEnd {
    /// The end of the last whole batch.
    pub(crate) end: u64,
    /// Highest position in a whole batch (the first position minus one when there is none).
    pub(crate) head: u64,
    pub(crate) torn: Option<Torn>,
    /// Zeros after `end`, to the end of the file: space written ahead, kept for the next batches.
    pub(crate) zeroed: u64,
}

pub(crate) fn io_error(path: &Path, what: &str, error: io::Error) -> Error {
    Error::io(format!("{what} {}: {error}", path.display()), error)
}

pub(crate) fn corruption(path: &Path, offset: u64, what: &str) -> Error {
    Error::Corruption(format!("{} at offset {offset}: {what}", path.display()))
}

/// Reads a file forward in large chunks, refilling when a record straddles the chunk's end.
struct Reader<'a> {
    file: &'a dyn StorageFile,
    file_len: u64,
    buf: Vec<u8>,
    buf_start: u64,
}

const CHUNK: usize = 4 << 20;

impl<'a> Reader<'a> {
    fn new(file: &'a dyn StorageFile, file_len: u64) -> Self {
        Reader { file, file_len, buf: Vec::new(), buf_start: 0 }
    }

    /// The bytes from `offset` on: at least `want` of them unless the file ends first.
    fn bytes(&mut self, offset: u64, want: usize) -> io::Result<&[u8]> {
        debug_assert!(offset <= self.file_len);
        let buf_end = self.buf_start + self.buf.len() as u64;
        let want_end = (offset + want as u64).min(self.file_len);
        if offset < self.buf_start || want_end > buf_end {
            let len = (want.max(CHUNK) as u64).min(self.file_len - offset) as usize;
            self.buf.resize(len, 0);
            self.file.read_exact_at(&mut self.buf, offset)?;
            self.buf_start = offset;
        }
        Ok(&self.buf[(offset - self.buf_start) as usize..])
    }
}

/// Replays the whole batches of the log from `start` (a batch boundary, where position
/// `first_position` is expected next), handing each batch's items and end offset to `on_batch`.
///
/// With `decode_all`, every event is decoded in full (the verify tool), not only its type and
/// tags. A torn tail is reported in the result, never truncated here; damage is an
/// [`Error::Corruption`] naming the file and offset.
pub(crate) fn scan(
    file: &dyn StorageFile,
    path: &Path,
    seal: Seal,
    start: u64,
    first_position: u64,
    decode_all: bool,
    mut on_batch: impl FnMut(u64, Vec<Item>) -> Result<()>,
) -> Result<ScanEnd> {
    let file_len = file.len().map_err(|e| io_error(path, "cannot read the length of", e))?;
    if start > file_len {
        return Err(corruption(
            path,
            file_len,
            &format!("the log ends before offset {start}, where its index checkpoint says it goes on"),
        ));
    }
    let mut reader = Reader::new(file, file_len);
    let mut batch_start = start;
    let mut next_position = first_position;
    loop {
        if batch_start == file_len {
            return Ok(ScanEnd { end: batch_start, head: next_position - 1, torn: None, zeroed: 0 });
        }
        let (bad_offset, invalid) =
            match read_batch(&mut reader, path, seal, batch_start, next_position, decode_all)? {
                Batch::Whole { end, items, next } => {
                    on_batch(end, items)?;
                    batch_start = end;
                    next_position = next;
                    continue;
                }
                Batch::Bad { offset, invalid } => (offset, invalid),
            };
        // A batch none of whose bytes reached the file looks the same as space written ahead:
        // neither holds anything to keep or to cut off.
        if zeros_to_end(file, batch_start, file_len).map_err(|e| io_error(path, "cannot read", e))? {
            let zeroed = file_len - batch_start;
            return Ok(ScanEnd { end: batch_start, head: next_position - 1, torn: None, zeroed });
        }
        let why = match invalid {
            // A damaged length field can also make a record reach past the end of the file.
            Invalid::Truncated => "a record reaches past the end of the file".to_string(),
            Invalid::Damaged(why) | Invalid::Malformed(why) => why,
        };
        if let Some(later) = later_commit(file, seal, file_len, bad_offset, batch_start)
            .map_err(|e| io_error(path, "cannot read", e))?
        {
            return Err(corruption(
                path,
                bad_offset,
                &format!(
                    "{why}, and a later batch (committed at offset {later}) follows, so this is \
                     damage to synced data, not a torn write"
                ),
            ));
        }
        let reason = format!("{why} at offset {bad_offset}");
        return Ok(ScanEnd {
            end: batch_start,
            head: next_position - 1,
            torn: Some(Torn { offset: batch_start, bytes: file_len - batch_start, reason }),
            zeroed: 0,
        });
    }
}

/// Whether every byte from `from` to `file_len`, the end of the file, is zero. Read through a
/// mapping: a few MiB of zeros are checked on every open, and copying them first would take
/// longer than the check.
fn zeros_to_end(file: &dyn StorageFile, from: u64, file_len: u64) -> io::Result<bool> {
    let too_large = || io::Error::other("the log is too large to map");
    let len = usize::try_from(file_len).map_err(|_| too_large())?;
    let from = usize::try_from(from).map_err(|_| too_large())?;
    let mapping = file.map(len)?;
    Ok(mapping.bytes(from, len - from).chunks(4096).all(|page| page.iter().fold(0, |any, &b| any | b) == 0))
}

enum Batch {
    Whole { end: u64, items: Vec<Item>, next: u64 },
    Bad { offset: u64, invalid: Invalid },
}

/// Reads the batch at `batch_start`: its items when it is whole, else where it goes bad.
/// Records that are valid yet inconsistent with their batch are damage whatever follows them.
fn read_batch(
    reader: &mut Reader<'_>,
    path: &Path,
    seal: Seal,
    batch_start: u64,
    first: u64,
    decode_all: bool,
) -> Result<Batch> {
    let mut offset = batch_start;
    let mut items = Vec::new();
    let mut records = 0u32;
    let mut position = first;
    loop {
        let bytes = reader.bytes(offset, RECORD_HEADER_LEN).map_err(|e| io_error(path, "cannot read", e))?;
        let want = match bytes.get(..4) {
            Some(len) => {
                let body = u32::from_le_bytes(len.try_into().unwrap()) as usize;
                RECORD_HEADER_LEN + body.min(MAX_RECORD_BODY)
            }
            None => RECORD_HEADER_LEN,
        };
        let bytes = reader.bytes(offset, want).map_err(|e| io_error(path, "cannot read", e))?;
        let (record, len) = match format::parse_record(bytes, seal) {
            Ok(parsed) => parsed,
            Err(Invalid::Malformed(why)) => return Err(corruption(path, offset, &why)),
            Err(invalid) => return Ok(Batch::Bad { offset, invalid }),
        };
        match record {
            Record::Event { position: recorded, body } => {
                if recorded != position {
                    return Err(corruption(
                        path,
                        offset,
                        &format!("event record of position {recorded} where {position} was expected"),
                    ));
                }
                let (event_type, tags) = if decode_all {
                    // Every field is decoded and checked; the data, opaque bytes, need no copy.
                    let (_, event) = format::decode_event(body, |_| Bytes::new())
                        .map_err(|e| corruption(path, offset, &e))?;
                    (event.event_type, event.tags)
                } else {
                    format::event_keys(body).map_err(|e| corruption(path, offset, &e))?
                };
                items.push(Item::Event { offset, len: len as u32, event_type, tags });
                position += 1;
            }
            Record::Tracking { source, position } => items.push(Item::Tracking { source, position }),
            Record::Commit(commit) => {
                let expected = Commit { batch_start, first, last: position - 1, records };
                if commit != expected || position == first {
                    return Err(corruption(
                        path,
                        offset,
                        &format!("commit record {commit:?} does not match its batch {expected:?}"),
                    ));
                }
                return Ok(Batch::Whole { end: offset + len as u64, items, next: position });
            }
        }
        records += 1;
        offset += len as u64;
    }
}

/// The offset of a valid commit record of a batch other than the one at `batch_start`, after
/// `from`. A torn batch can hold valid records of its own beyond a hole (pages reach the disk in
/// any order before a sync), but never a later batch's commit.
fn later_commit(
    file: &dyn StorageFile,
    seal: Seal,
    file_len: u64,
    from: u64,
    batch_start: u64,
) -> io::Result<Option<u64>> {
    let mut chunk_start = from + 1;
    let mut buf = Vec::new();
    while chunk_start + COMMIT_RECORD_LEN as u64 <= file_len {
        let len = ((CHUNK + COMMIT_RECORD_LEN) as u64).min(file_len - chunk_start) as usize;
        buf.resize(len, 0);
        file.read_exact_at(&mut buf, chunk_start)?;
        for i in 0..=len - COMMIT_RECORD_LEN {
            if let Some(commit) = format::commit_at(&buf[i..], seal)
                && commit.batch_start != batch_start
            {
                return Ok(Some(chunk_start + i as u64));
            }
        }
        // Overlap by a record's length so that no commit straddling two chunks is missed.
        chunk_start += (len - COMMIT_RECORD_LEN + 1) as u64;
    }
    Ok(None)
}
