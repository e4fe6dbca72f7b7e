//! # dcb-file: the embedded durable event store
//!
//! [`FileStore`] keeps a DCB event store in a directory on local disk: no server to install.
//! It implements the whole [`dcb::EventStore`] contract.
//!
//! - **Durable**: an append is acknowledged only once its batch is written and `fdatasync`ed.
//! - **Group commit**: concurrent appends queue to one writer thread, which checks each one's
//!   condition against everything before it (earlier appends of the same batch included),
//!   writes the batch and syncs once for all of them.
//! - **Readers never wait for the writer**: they answer from an in-memory index of tags and
//!   types, clamped to the last synced batch, and read event bodies through a read-only
//!   memory mapping of the log (event data are views of it, not copies).
//! - **Crash-safe**: every record carries a CRC-32C; opening a store cuts a torn tail back to
//!   the last whole batch, and reports any other damage as [`dcb::Error::Corruption`] with the
//!   file and offset. An index checkpoint spares replaying the whole log on open.
//! - **One process at a time**: a lock file refuses a second opener.
//!
//! The on-disk format and the commit protocol are described in `docs/FILE_FORMAT.md`; the
//! `dcb-file verify DIR` command checks a store directory end to end.
//!
//! ```
//! use dcb::{AppendCondition, Event, EventStore, QueryItem, ReadOptions};
//! use dcb_file::FileStore;
//!
//! # let dir = std::env::temp_dir().join(format!("dcb-file-doc-{}", std::process::id()));
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let store = FileStore::open(&dir)?;
//! let course = QueryItem::tags(["course-1"]).into();
//! let seen = store.read(&course, ReadOptions::default()).await?;
//! let event = Event::new("CourseRegistered", "{}").tagged("course-1");
//! let condition = AppendCondition::new(course, seen.head);
//! assert_eq!(store.append(vec![event], Some(condition)).await?, 1);
//! drop(store);
//!
//! // The event survives closing and reopening.
//! let store = FileStore::open(&dir)?;
//! assert_eq!(store.head().await?, Some(1));
//! # drop(store);
//! # std::fs::remove_dir_all(&dir).unwrap();
//! # Ok::<(), dcb::Error>(())
//! # }).unwrap();
//! ```

mod format;
mod index;
mod io;
mod scan;
mod verify;
mod writer;

use std::fs::{File, OpenOptions, TryLockError};
use std::path::Path;
use std::sync::atomic::AtomicU64;
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;

use dcb::limits::{validate_append, validate_query, validate_source};
use dcb::{
    AppendRequest, Bytes, Error, EventStore, EventStream, Query, ReadOptions, ReadResponse, Result,
    SequencedEvent, Uuid,
};
use tokio::sync::{oneshot, watch};

pub use verify::{VerifyReport, verify};

use format::{CHECKPOINT_FILE, CHECKPOINT_TMP, LOCK_FILE, LOG_FILE, LOG_HEADER_LEN, LOG_TMP, Seal};
use index::{Entry, Index};
use io::{GrowingMap, Mapping, StdStorage, Storage, StorageFile, Words};
use scan::{Item, corruption, io_error};
use writer::{Request, Shared, Writer, checkpoint_corruption};

/// When an acknowledged append is safe.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub enum SyncMode {
    /// Every batch is `fdatasync`ed before its appends are acknowledged: an acknowledged append
    /// survives a crash of the process, of the operating system, or a power loss.
    #[default]
    Durable,
    /// Batches are written to the operating system but not synced: an acknowledged append
    /// survives a crash of the process, but not necessarily one of the operating system or a
    /// power loss. After such a crash the last batches may be missing (never partially), or, if
    /// the disk received the unsynced pages out of order, the store may refuse to open with a
    /// corruption error: use it for data that can be rebuilt.
    NotSynced,
}

/// How to open a [`FileStore`].
#[derive(Debug, Clone)]
pub struct FileStoreOptions {
    sync: SyncMode,
    checkpoint_interval: u64,
}

impl Default for FileStoreOptions {
    fn default() -> Self {
        FileStoreOptions { sync: SyncMode::Durable, checkpoint_interval: 64 << 20 }
    }
}

impl FileStoreOptions {
    /// Sets when appends are acknowledged (default: [`SyncMode::Durable`]).
    pub fn sync(mut self, mode: SyncMode) -> Self {
        self.sync = mode;
        self
    }

    /// Writes an index checkpoint whenever the log has grown by this many bytes since the last
    /// one (default 64 MiB), or by a quarter of the log if that is more. Smaller intervals make
    /// opening after a crash faster and cost more writing.
    pub fn checkpoint_interval(mut self, bytes: u64) -> Self {
        self.checkpoint_interval = bytes.max(1);
        self
    }
}

/// A durable DCB event store in a directory. Cloning gives another handle to the same store;
/// the store closes when the last handle (subscriptions hold one) is dropped: that drop waits for
/// the queued appends and writes an index checkpoint, then releases the directory's lock.
///
/// Reads and subscriptions read the (page-cache-backed) log mapping on the calling task;
/// appends wait for their batch's sync without blocking a runtime thread.
///
/// An append that fails with [`Error::Io`] was not acknowledged, and the store then refuses
/// further appends until it is reopened; like any unacknowledged append, it may or may not be
/// found after reopening (give events uuids to retry it safely).
#[derive(Clone)]
pub struct FileStore {
    inner: Arc<Inner>,
}

struct Inner {
    shared: Arc<Shared>,
    requests: Option<Sender<Request>>,
    writer: Option<JoinHandle<()>>,
    /// Held (locked) for as long as the store is open.
    _lock: File,
}

impl Drop for Inner {
    fn drop(&mut self) {
        // Closing the channel lets the writer finish the queue and write its last checkpoint;
        // joining it means the lock is released only once the files are quiet.
        drop(self.requests.take());
        if let Some(writer) = self.writer.take() {
            let _ = writer.join();
        }
    }
}

impl FileStore {
    /// Opens the store in `dir`, creating the directory and an empty store if needed, with the
    /// default options (durable).
    ///
    /// Fails with [`Error::Io`] if another process (or another open handle in this one) has the
    /// store open, and with [`Error::Corruption`] if the files are damaged.
    pub fn open(dir: impl AsRef<Path>) -> Result<FileStore> {
        Self::open_with(dir, FileStoreOptions::default())
    }

    /// Opens the store in `dir` with `options`; see [`FileStore::open`].
    pub fn open_with(dir: impl AsRef<Path>, options: FileStoreOptions) -> Result<FileStore> {
        open(dir.as_ref(), options, Arc::new(StdStorage))
    }

    /// Writes an index checkpoint now, so that the next open replays nothing. The store also
    /// does this on its own as the log grows, and when it closes.
    pub async fn checkpoint(&self) -> Result<()> {
        let (reply, receive) = oneshot::channel();
        self.send(Request::Checkpoint { reply })?;
        receive.await.map_err(|_| writer_gone())?
    }

    fn send(&self, request: Request) -> Result<()> {
        let requests = self.inner.requests.as_ref().ok_or_else(writer_gone)?;
        requests.send(request).map_err(|_| writer_gone())
    }

    fn shared(&self) -> &Shared {
        &self.inner.shared
    }
}

fn writer_gone() -> Error {
    Error::Internal("the file store's writer thread has stopped".into())
}

fn open(dir: &Path, options: FileStoreOptions, storage: Arc<dyn Storage>) -> Result<FileStore> {
    // The directories this open creates (the store's, and any missing above it), deepest first.
    let created: Vec<&Path> = dir.ancestors().take_while(|level| !level.exists()).collect();
    if !created.is_empty() {
        std::fs::create_dir_all(dir).map_err(|e| io_error(dir, "cannot create the store directory", e))?;
    }
    let lock = lock_dir(dir)?;
    let log_path = dir.join(LOG_FILE);
    let checkpoint_path = dir.join(CHECKPOINT_FILE);
    // `try_exists`: an error (EIO, say) must not pass for "no log", which a new one would replace.
    let exists = |path: &Path| path.try_exists().map_err(|e| io_error(path, "cannot look up", e));
    if !exists(&log_path)? {
        if exists(&checkpoint_path)? {
            return Err(corruption(&log_path, 0, "the log is missing but an index checkpoint exists"));
        }
        // It syncs the directory itself.
        create_log(&*storage, dir)?;
    } else {
        // A crash (of this process or an earlier one) right after the log was created, or a
        // checkpoint renamed, may have left that name not yet durable: a power failure could
        // still unlink the log with every append synced into it.
        storage.sync_dir(dir).map_err(|e| io_error(dir, "cannot sync the directory", e))?;
    }
    // The store directory's own name likewise.
    sync_names_of(&*storage, dir, &created)?;
    let log = storage.open(&log_path, false).map_err(|e| io_error(&log_path, "cannot open", e))?;
    let (store_id, seal) = read_log_header(&*log, &log_path)?;
    let (mut index, start) = load_checkpoint(&*storage, &*log, dir, store_id, seal)?;
    let end = scan::scan(&*log, &log_path, seal, start, index.len() + 1, false, |_, items| {
        apply(&mut index, items);
        Ok(())
    })?;
    if let Some(torn) = &end.torn {
        // The batch a crash interrupted was never acknowledged: cut it off before anything new is
        // written after it (made durable by the sync below).
        log.set_len(torn.offset).map_err(|e| io_error(&log_path, "cannot truncate the torn tail of", e))?;
    }
    // What the scan found may be in the page cache only: a killed process leaves its last batch
    // written but not synced. Sync it before serving it, answering a retry of it, or checkpointing
    // it, so that nothing read from this log can still be lost to a power failure.
    log.sync_data().map_err(|e| io_error(&log_path, "fdatasync failed on", e))?;
    let allocated = end.end + end.zeroed;
    debug_assert_eq!(index.len(), end.head);
    let mut checkpointed = start;
    // Only a shortcut for the next open: a checkpoint that cannot be written (a full disk, say)
    // must not keep the store from opening.
    if end.end - start >= options.checkpoint_interval
        && writer::write_checkpoint(&*storage, dir, &index, store_id, end.end).is_ok()
    {
        checkpointed = end.end;
    }
    // Best effort: a leftover that cannot be removed only makes later checkpoints fail, which
    // changes nothing, and must not keep the store from opening.
    let _ = storage.remove(&dir.join(CHECKPOINT_TMP));
    let head = index.len();
    let mapped = GrowingMap::new(log.clone(), end.end).map_err(|e| io_error(&log_path, "cannot map", e))?;
    let shared = Arc::new(Shared {
        dir: dir.to_owned(),
        log_path,
        log,
        store_id,
        seal,
        index: RwLock::new(index),
        durable: AtomicU64::new(head),
        heads: watch::Sender::new(head),
        poisoned: Mutex::new(None),
        mapped,
    });
    let writer = Writer {
        shared: shared.clone(),
        storage,
        sync: options.sync,
        end: end.end,
        allocated,
        checkpointed,
        tried: checkpointed,
        checkpoint_interval: options.checkpoint_interval,
        buf: Vec::new(),
    };
    let (requests, receive) = mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("dcb-file-writer".into())
        .spawn(move || writer.run(receive))
        .map_err(|e| Error::io("cannot start the writer thread", e))?;
    Ok(FileStore {
        inner: Arc::new(Inner { shared, requests: Some(requests), writer: Some(thread), _lock: lock }),
    })
}

/// Syncs the entry of `dir` in its parent, and of every directory in `created` (made by this
/// open) in theirs. For a directory that existed before, a failure is ignored: its name was
/// synced by the open that created it, unless that one crashed first, and a parent this process
/// may not read should not keep a store from opening.
fn sync_names_of(storage: &dyn Storage, dir: &Path, created: &[&Path]) -> Result<()> {
    fn parent_of(level: &Path) -> Option<&Path> {
        level.parent().map(|parent| if parent.as_os_str().is_empty() { Path::new(".") } else { parent })
    }
    for &level in created {
        if let Some(parent) = parent_of(level) {
            storage.sync_dir(parent).map_err(|e| io_error(parent, "cannot sync the directory", e))?;
        }
    }
    if created.is_empty()
        && let Some(parent) = parent_of(dir)
    {
        let _ = storage.sync_dir(parent);
    }
    Ok(())
}

/// Takes the directory's lock file, or says who has it.
pub(crate) fn lock_dir(dir: &Path) -> Result<File> {
    let path = dir.join(LOCK_FILE);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .open(&path)
        .map_err(|e| io_error(&path, "cannot open the lock file", e))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(TryLockError::WouldBlock) => Err(Error::Io {
            message: format!(
                "the store in {} is already open (its lock file {} is held by another process or handle)",
                dir.display(),
                path.display()
            ),
            source: None,
        }),
        Err(TryLockError::Error(e)) => Err(io_error(&path, "cannot lock", e)),
    }
}

/// Creates an empty log with a fresh store id: written aside, synced, then renamed into place,
/// so that a log file, once there, always has a whole header.
fn create_log(storage: &dyn Storage, dir: &Path) -> Result<()> {
    let tmp = dir.join(LOG_TMP);
    let header = format::encode_log_header(Uuid::new_v4());
    storage.remove(&tmp).map_err(|e| io_error(&tmp, "cannot remove", e))?;
    let file = storage.open(&tmp, true).map_err(|e| io_error(&tmp, "cannot create", e))?;
    file.write_all_at(&header, 0).map_err(|e| io_error(&tmp, "cannot write", e))?;
    file.sync_data().map_err(|e| io_error(&tmp, "fdatasync failed on", e))?;
    drop(file);
    let log_path = dir.join(LOG_FILE);
    storage.rename(&tmp, &log_path).map_err(|e| io_error(&log_path, "cannot create", e))?;
    storage.sync_dir(dir).map_err(|e| io_error(dir, "cannot sync the directory", e))
}

/// The store id and the seal of the log's records.
pub(crate) fn read_log_header(log: &dyn StorageFile, path: &Path) -> Result<(Uuid, Seal)> {
    let mut header = [0u8; LOG_HEADER_LEN as usize];
    log.read_exact_at(&mut header, 0).map_err(|e| match e.kind() {
        std::io::ErrorKind::UnexpectedEof => corruption(path, 0, "the log is shorter than its header"),
        _ => io_error(path, "cannot read", e),
    })?;
    format::decode_log_header(&header).map_err(|why| corruption(path, 0, &why))
}

/// The checkpointed index and the log offset to replay from (the log header's end without one).
pub(crate) fn load_checkpoint(
    storage: &dyn Storage,
    log: &dyn StorageFile,
    dir: &Path,
    store_id: Uuid,
    seal: Seal,
) -> Result<(Index, u64)> {
    let path = dir.join(CHECKPOINT_FILE);
    if !path.exists() {
        return Ok((Index::default(), LOG_HEADER_LEN));
    }
    let file = storage.open(&path, false).map_err(|e| io_error(&path, "cannot open", e))?;
    let len = file.len().map_err(|e| io_error(&path, "cannot read the length of", e))?;
    if len % 8 != 0 {
        return Err(checkpoint_corruption(dir, "length is not a whole number of 8-byte words"));
    }
    // The checkpoint is used in place (see `index`), mapped rather than read: nothing is copied
    // or allocated, and its pages stay in the page cache, shared with the next open.
    let words = if len == 0 {
        Words::from(Vec::new())
    } else {
        let size = usize::try_from(len).map_err(|_| checkpoint_corruption(dir, "too large to map"))?;
        let mapping = file.map(size).map_err(|e| io_error(&path, "cannot map", e))?;
        // The frozen index is read at random: huge pages spare most of its TLB misses.
        dcb::huge_pages::advise_huge_pages(mapping.bytes(0, size));
        Words::mapped(mapping)
    };
    let (id, log_end, index) =
        Index::decode_checkpoint(words).map_err(|why| checkpoint_corruption(dir, &why))?;
    if id != store_id {
        return Err(checkpoint_corruption(dir, "the checkpoint belongs to another store's log"));
    }
    let log_path = dir.join(LOG_FILE);
    let log_len = log.len().map_err(|e| io_error(&log_path, "cannot read the length of", e))?;
    if log_end < LOG_HEADER_LEN || log_end > log_len {
        return Err(corruption(
            &log_path,
            log_len,
            &format!("the log is {log_len} bytes long but its index checkpoint covers {log_end}"),
        ));
    }
    // The checkpoint must end exactly on the commit of its last position.
    let valid_end = if index.len() == 0 {
        log_end == LOG_HEADER_LEN
    } else {
        let at = log_end.checked_sub(format::COMMIT_RECORD_LEN as u64).filter(|&at| at >= LOG_HEADER_LEN);
        match at {
            Some(at) => {
                let mut commit = [0u8; format::COMMIT_RECORD_LEN];
                log.read_exact_at(&mut commit, at).map_err(|e| io_error(&log_path, "cannot read", e))?;
                format::commit_at(&commit, seal).is_some_and(|c| c.last == index.len())
            }
            None => false,
        }
    };
    if !valid_end {
        return Err(corruption(
            &log_path,
            log_end,
            &format!("no commit of position {} ends here, where the index checkpoint says", index.len()),
        ));
    }
    Ok((index, log_end))
}

pub(crate) fn apply(index: &mut Index, items: Vec<Item>) {
    for item in items {
        match item {
            Item::Event { offset, len, event_type, tags } => {
                index.push(offset, len, &event_type, &tags);
            }
            Item::Tracking { source, position } => {
                index.tracking.insert(source, position);
            }
        }
    }
}

/// The owner of a run of records in the log mapping, so that the events' data can be views of
/// the mapping, kept mapped for as long as any of them lives.
struct MappedRun {
    mapping: Arc<Mapping>,
    offset: usize,
    len: usize,
}

impl AsRef<[u8]> for MappedRun {
    fn as_ref(&self) -> &[u8] {
        self.mapping.bytes(self.offset, self.len)
    }
}

/// Reads of at most this many events touch their records ahead (see [`read_events`]); larger
/// reads are mostly of runs of adjacent records, which the hardware prefetches by itself.
const TOUCH_AHEAD_MAX: usize = 64;

/// Reads the events at `entries` (ascending or descending) from the log's mapping, verifying
/// each record's checksum and position, while `options` takes more (its byte budget: see
/// [`ReadOptions::takes_more`]). Records that lie back to back in the log form a run, and the
/// data of a run's events are views of the mapping, without a copy.
pub(crate) fn read_events(
    shared: &Shared,
    entries: &[(u64, Entry)],
    options: ReadOptions,
) -> Result<Vec<SequencedEvent>> {
    let Some(end) = entries.iter().map(|(_, e)| e.offset + u64::from(e.len)).max() else {
        return Ok(Vec::new());
    };
    let mapping = shared.mapped.covering(end).map_err(|e| io_error(&shared.log_path, "cannot map", e))?;
    if entries.len() <= TOUCH_AHEAD_MAX {
        // In a large store each record is likely a cache (and TLB) miss. Loading the first byte of
        // every record in a tight loop lets the processor wait for those misses together rather
        // than one by one, between the decoding of one record and the next.
        for &(_, entry) in entries {
            std::hint::black_box(mapping.bytes(entry.offset as usize, 1)[0]);
        }
    }
    let mut events = Vec::with_capacity(entries.len());
    let mut bytes = 0;
    let mut i = 0;
    while i < entries.len() {
        // The longest run of records adjacent in the log, in the order asked for.
        let first = entries[i].1;
        let (mut lo, mut hi, mut j) = (first.offset, first.offset + u64::from(first.len), i + 1);
        while j < entries.len() {
            let next = entries[j].1;
            if next.offset == hi {
                hi += u64::from(next.len);
            } else if next.offset + u64::from(next.len) == lo {
                lo = next.offset;
            } else {
                break;
            }
            j += 1;
        }
        let run = MappedRun { mapping: mapping.clone(), offset: lo as usize, len: (hi - lo) as usize };
        let run = Bytes::from_owner(run);
        for &(position, entry) in &entries[i..j] {
            if !options.takes_more(bytes) {
                return Ok(events);
            }
            let start = (entry.offset - lo) as usize;
            let record = &run[start..start + entry.len as usize];
            let event = decode_at(shared, position, entry.offset, record, |data| run.slice_ref(data))?;
            bytes += event.event.byte_size();
            events.push(event);
        }
        i = j;
    }
    Ok(events)
}

fn decode_at(
    shared: &Shared,
    position: u64,
    offset: u64,
    record: &[u8],
    hold: impl FnOnce(&[u8]) -> Bytes,
) -> Result<SequencedEvent> {
    let path = &shared.log_path;
    let body = match format::parse_record(record, shared.seal) {
        Ok((format::Record::Event { body, .. }, len)) if len == record.len() => body,
        Ok(_) => return Err(corruption(path, offset, "the index points at a record that is not an event")),
        Err(format::Invalid::Damaged(why) | format::Invalid::Malformed(why)) => {
            return Err(corruption(path, offset, &why));
        }
        Err(format::Invalid::Truncated) => return Err(corruption(path, offset, "record length mismatch")),
    };
    let (recorded, event) = format::decode_event(body, hold).map_err(|why| corruption(path, offset, &why))?;
    if recorded != position {
        return Err(corruption(
            path,
            offset,
            &format!("record of position {recorded} where {position} was indexed"),
        ));
    }
    Ok(SequencedEvent { position, event })
}

impl EventStore for FileStore {
    async fn read(&self, query: &Query, options: ReadOptions) -> Result<ReadResponse> {
        validate_query(query)?;
        let shared = self.shared();
        let durable = shared.durable();
        let entries: Vec<(u64, Entry)> = {
            let index = shared.index.read().unwrap_or_else(PoisonError::into_inner);
            let limit = options.limit.map_or(usize::MAX, |l| l as usize);
            let after = options.after.unwrap_or(0);
            index
                .matching(query, after, options.last_considered(durable), limit, options.backwards)
                .into_iter()
                .map(|p| (p, index.entry(p)))
                .collect()
        };
        let events = read_events(shared, &entries, options)?;
        Ok(ReadResponse::new(events, durable, options))
    }

    async fn append_request(&self, request: AppendRequest) -> Result<u64> {
        // The writer holds a batch in memory before writing it: `dcb::limits::MAX_APPEND_BYTES`
        // keeps one append from being arbitrarily large.
        validate_append(&request)?;
        self.shared().check_poisoned()?;
        let (reply, receive) = oneshot::channel();
        self.send(Request::Append { request, reply })?;
        receive.await.map_err(|_| writer_gone())?
    }

    async fn head(&self) -> Result<Option<u64>> {
        let durable = self.shared().durable();
        Ok((durable > 0).then_some(durable))
    }

    async fn tracking_position(&self, source: &str) -> Result<Option<u64>> {
        validate_source(source)?;
        let index = self.shared().index.read().unwrap_or_else(PoisonError::into_inner);
        Ok(index.tracking.get(source).copied())
    }

    async fn subscribe(&self, query: Query, after: Option<u64>) -> Result<EventStream> {
        validate_query(&query)?;
        let heads = self.shared().heads.subscribe();
        Ok(dcb::subscription::follow(self.clone(), query, after, heads))
    }
}

#[cfg(test)]
pub(crate) fn open_on(dir: &Path, options: FileStoreOptions, storage: Arc<dyn Storage>) -> Result<FileStore> {
    open(dir, options, storage)
}

#[cfg(test)]
mod fault_tests;
#[cfg(test)]
mod power_loss_tests;
