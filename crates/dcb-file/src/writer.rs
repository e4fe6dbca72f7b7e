//! The single writer: group commit of queued appends.
//!
//! Appends queue on a channel to one thread. It takes everything queued, checks each append's
//! tracking and condition against the index (which already holds the earlier appends of the same
//! batch), encodes the accepted ones into one buffer ended by a commit record, writes it, syncs
//! once, and only then publishes the new durable head and acknowledges. Readers clamp every
//! query to the durable head, so they never see an unsynced event, and never wait for a sync.
//!
//! The writer also keeps zeros written ahead of the log's end. A synced write that extends a file
//! must sync its new size and blocks too, while one that overwrites blocks already written syncs
//! the data alone: on the machines measured, a quarter less time per durable append.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, Mutex, PoisonError, RwLock};

use dcb::{
    AppendRequest, Error, Event, ReadOptions, Result, SequencedEvent, Uuid, already_appended, retry_span,
};
use tokio::sync::{oneshot, watch};

use crate::format::{self, CHECKPOINT_FILE, CHECKPOINT_TMP, Commit, Seal};
use crate::index::Index;
use crate::io::{GrowingMap, Storage, StorageFile};
use crate::scan::{corruption, io_error};
use crate::{SyncMode, read_events};

/// Most appends taken into one batch: bounds the time readers and new appends wait for a batch.
pub(crate) const MAX_BATCH_APPENDS: usize = 4096;
/// A batch stops taking appends once its buffer is this large (one append may exceed it alone).
pub(crate) const MAX_BATCH_BYTES: usize = 16 << 20;
/// The zeros written ahead of the log's end are renewed in steps of an eighth of the log, from
/// `MIN_ZERO_AHEAD` to this size: large enough to be renewed seldom, small enough that a small
/// store neither carries megabytes of zeros nor checks them on every open. (Small in unit tests,
/// so that they are renewed often.)
pub(crate) const ZERO_AHEAD: u64 = if cfg!(test) { 4 << 10 } else { 4 << 20 };
const MIN_ZERO_AHEAD: u64 = if cfg!(test) { 4 << 10 } else { 64 << 10 };

/// What the writer thread is asked to do.
pub(crate) enum Request {
    Append { request: AppendRequest, reply: oneshot::Sender<Result<u64>> },
    Checkpoint { reply: oneshot::Sender<Result<()>> },
}

/// State shared by the store handles (readers) and the writer thread.
pub(crate) struct Shared {
    pub(crate) dir: PathBuf,
    pub(crate) log_path: PathBuf,
    pub(crate) log: Arc<dyn StorageFile>,
    pub(crate) store_id: Uuid,
    /// What every record checksum of the log starts from.
    pub(crate) seal: Seal,
    /// Holds positions up to the writer's pending batch; readers clamp to `durable`.
    pub(crate) index: RwLock<Index>,
    /// The highest position that is synced (published after the sync, so a reader that sees it
    /// sees every position below it).
    pub(crate) durable: AtomicU64,
    /// Announces each new durable head to subscriptions.
    pub(crate) heads: watch::Sender<u64>,
    /// Why the store refuses further writes, once an I/O operation failed.
    pub(crate) poisoned: Mutex<Option<String>>,
    /// The log, mapped for reading.
    pub(crate) mapped: GrowingMap,
}

impl Shared {
    pub(crate) fn check_poisoned(&self) -> Result<()> {
        match &*self.poisoned.lock().unwrap_or_else(PoisonError::into_inner) {
            Some(why) => Err(Error::Io {
                message: format!(
                    "the store in {} refuses further writes after an earlier failure ({why}): reopen it",
                    self.dir.display()
                ),
                source: None,
            }),
            None => Ok(()),
        }
    }

    fn poison(&self, why: String) {
        self.poisoned.lock().unwrap_or_else(PoisonError::into_inner).get_or_insert(why);
    }

    pub(crate) fn durable(&self) -> u64 {
        self.durable.load(Ordering::Acquire)
    }
}

pub(crate) struct Writer {
    pub(crate) shared: Arc<Shared>,
    pub(crate) storage: Arc<dyn Storage>,
    pub(crate) sync: SyncMode,
    /// Where the next batch is written: the end of the last whole batch.
    pub(crate) end: u64,
    /// The log file's length: zeros from `end` up to it, written ahead.
    pub(crate) allocated: u64,
    /// The log offset the last checkpoint covers.
    pub(crate) checkpointed: u64,
    /// The log offset of the last checkpoint tried, written or not: after a failure (a full
    /// disk) the next waits a whole gap, rather than every batch encoding the index again.
    pub(crate) tried: u64,
    pub(crate) checkpoint_interval: u64,
    pub(crate) buf: Vec<u8>,
}

/// An answer held back until its batch is synced: a position, or a refusal that rests on appends
/// of the batch (told only if they become durable: a refusal for an event that a failed sync then
/// lost would be a refusal for nothing).
type Deferred = (oneshot::Sender<Result<u64>>, Result<u64>);

/// Why [`Writer::check`] refuses an append.
struct Refusal {
    error: Error,
    /// Whether it rests on appends of the current batch, not yet synced.
    on_unsynced: bool,
}

impl From<Error> for Refusal {
    fn from(error: Error) -> Refusal {
        Refusal { error, on_unsynced: false }
    }
}

impl Writer {
    pub(crate) fn run(mut self, requests: Receiver<Request>) {
        let mut batch = Vec::new();
        while let Ok(first) = requests.recv() {
            batch.push(first);
            while batch.len() < MAX_BATCH_APPENDS {
                match requests.try_recv() {
                    Ok(request) => batch.push(request),
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            self.handle(&mut batch);
            debug_assert!(batch.is_empty());
        }
        // Every handle is gone: leave a checkpoint so that the next open replays nothing.
        if self.shared.check_poisoned().is_ok() && self.end != self.checkpointed {
            let _ = self.checkpoint();
        }
    }

    fn handle(&mut self, batch: &mut Vec<Request>) {
        let mut appends = Vec::with_capacity(batch.len());
        let mut checkpoints = Vec::new();
        for request in batch.drain(..) {
            match request {
                Request::Append { request, reply } => appends.push((request, reply)),
                Request::Checkpoint { reply } => checkpoints.push(reply),
            }
        }
        let mut appends = appends.into_iter().peekable();
        while appends.peek().is_some() {
            if let Err(error) = self.shared.check_poisoned() {
                for (_, reply) in appends.by_ref() {
                    let _ = reply.send(Err(clone_error(&error)));
                }
                break;
            }
            self.commit_batch(&mut appends);
        }
        if self.shared.check_poisoned().is_ok() && self.end - self.tried >= self.next_checkpoint_gap() {
            let _ = self.checkpoint();
        }
        for reply in checkpoints {
            let result = self
                .shared
                .check_poisoned()
                .and_then(|()| if self.end == self.checkpointed { Ok(()) } else { self.checkpoint() });
            let _ = reply.send(result);
        }
    }

    /// Checkpoints grow with the store, so they are spaced out in proportion to the log: the
    /// total checkpoint work stays a constant multiple of the log size.
    fn next_checkpoint_gap(&self) -> u64 {
        self.checkpoint_interval.max(self.checkpointed / 4)
    }

    /// Checks, writes and syncs one batch taken from `appends` (up to the batch byte limit).
    fn commit_batch(
        &mut self,
        appends: &mut std::iter::Peekable<
            impl Iterator<Item = (AppendRequest, oneshot::Sender<Result<u64>>)>,
        >,
    ) {
        let durable = self.shared.durable();
        debug_assert_eq!(self.shared.index.read().unwrap_or_else(PoisonError::into_inner).len(), durable);
        let batch_start = self.end;
        self.buf.clear();
        let mut records = 0u32;
        let mut tracking: HashMap<String, u64> = HashMap::new();
        let mut pending: Vec<Event> = Vec::new();
        let mut deferred: Vec<Deferred> = Vec::new();
        while self.buf.len() < MAX_BATCH_BYTES {
            let Some((request, reply)) = appends.next() else { break };
            match self.check(&request, durable, &tracking, &pending) {
                Err(Refusal { error, on_unsynced: false }) => {
                    let _ = reply.send(Err(error));
                    continue;
                }
                Err(Refusal { error, on_unsynced: true }) => {
                    deferred.push((reply, Err(error)));
                    continue;
                }
                Ok(Some(original)) => {
                    deferred.push((reply, Ok(original)));
                    continue;
                }
                Ok(None) => {}
            }
            // Encoded before the index lock is taken (only this thread changes the index, which
            // holds the durable events and the batch's so far): readers wait for the pushes
            // alone, not for the copy of up to 64 MiB.
            let first = durable + pending.len() as u64 + 1;
            let mut entries = Vec::with_capacity(request.events.len());
            for (position, event) in (first..).zip(&request.events) {
                let offset = batch_start + self.buf.len() as u64;
                let len = format::encode_event(&mut self.buf, self.shared.seal, position, event);
                entries.push((offset, len as u32));
            }
            let last = {
                let mut index = self.shared.index.write().unwrap_or_else(PoisonError::into_inner);
                // Log positions that disagreed with the index would be damage: checked always.
                assert_eq!(index.len() + 1, first, "the batch's positions follow the index");
                for (event, (offset, len)) in request.events.iter().zip(entries) {
                    index.push(offset, len, &event.event_type, &event.tags);
                }
                index.len()
            };
            records += request.events.len() as u32;
            if let Some(t) = &request.tracking {
                format::encode_tracking(&mut self.buf, self.shared.seal, &t.source, t.position);
                records += 1;
                tracking.insert(t.source.clone(), t.position);
            }
            pending.extend(request.events);
            deferred.push((reply, Ok(last)));
        }
        if pending.is_empty() {
            // Nothing to write: the answers rest only on what is already durable.
            for (reply, answer) in deferred {
                debug_assert!(answer.as_ref().is_ok_and(|&position| position <= durable));
                let _ = reply.send(answer);
            }
            return;
        }
        let last = durable + pending.len() as u64;
        format::encode_commit(
            &mut self.buf,
            self.shared.seal,
            Commit { batch_start, first: durable + 1, last, records },
        );
        if let Err(error) = self.write_and_sync(batch_start) {
            // Positions above `durable` were never published; forget them so that nothing can
            // ever serve them, and refuse further writes (a failed sync is never retried).
            self.shared.index.write().unwrap_or_else(PoisonError::into_inner).truncate(durable);
            let _ = self.shared.log.set_len(batch_start);
            self.allocated = batch_start;
            self.shared.poison(error.to_string());
            for (reply, _) in deferred {
                let _ = reply.send(Err(clone_error(&error)));
            }
            return;
        }
        self.end = batch_start + self.buf.len() as u64;
        {
            // Under the index lock, the events first: whoever sees the new tracking positions
            // (read under that lock) also sees the events recorded with them.
            let mut index = self.shared.index.write().unwrap_or_else(PoisonError::into_inner);
            assert_eq!(index.len(), last, "the index holds exactly the batch just synced");
            self.shared.durable.store(last, Ordering::Release);
            index.tracking.extend(tracking);
        }
        self.shared.heads.send_replace(last);
        for (reply, answer) in deferred {
            debug_assert!(
                answer.as_ref().is_err_and(|e| matches!(e, Error::Integrity(_)))
                    || answer.as_ref().is_ok_and(|&p| p <= last)
            );
            let _ = reply.send(answer);
        }
    }

    fn write_and_sync(&mut self, batch_start: u64) -> Result<()> {
        let path = &self.shared.log_path;
        self.shared.log.write_all_at(&self.buf, batch_start).map_err(|e| {
            io_error(path, &format!("append of a batch at offset {batch_start} failed on"), e)
        })?;
        let batch_end = batch_start + self.buf.len() as u64;
        if batch_end > self.allocated {
            // Synced with this batch: a one-time cost per step.
            self.allocated = zero_ahead(&*self.shared.log, batch_end);
        }
        if self.sync == SyncMode::Durable {
            self.shared.log.sync_data().map_err(|e| io_error(path, "fdatasync failed on", e))?;
        }
        Ok(())
    }

    /// Checks an append against everything committed before it, including the earlier appends
    /// of this batch (already in the index, above `durable`, and their tracking in `tracking`).
    /// `Ok(Some(p))` recognises a retry of an append that got position `p`; `Ok(None)` accepts it.
    fn check(
        &self,
        request: &AppendRequest,
        durable: u64,
        tracking: &HashMap<String, u64>,
        pending: &[Event],
    ) -> Result<Option<u64>, Refusal> {
        // The condition first: a recognised retry answers with its position, although its own
        // tracking position is recorded by then.
        let Some(condition) = &request.condition else { return self.check_tracking(request, tracking) };
        let index = self.shared.index.read().unwrap_or_else(PoisonError::into_inner);
        let top = index.len();
        let first_match =
            |query: &dcb::Query, after| index.matching(query, after, top, 1, false).first().copied();
        let Some(conflict) = condition.first_failure(first_match) else {
            drop(index);
            return self.check_tracking(request, tracking);
        };
        let span = retry_span(condition, &request.events, conflict, top);
        let entries: Vec<_> = span.into_iter().flatten().map(|p| (p, index.entry(p))).collect();
        drop(index);
        if !entries.is_empty() {
            // Perhaps a retry: the events where it would have been recorded, durable or pending.
            let durable_part: Vec<_> = entries.iter().copied().filter(|&(p, _)| p <= durable).collect();
            let mut recorded = read_events(&self.shared, &durable_part, ReadOptions::default())?;
            for &(position, _) in entries.iter().filter(|&&(p, _)| p > durable) {
                let event = pending[(position - durable - 1) as usize].clone();
                recorded.push(SequencedEvent { position, event });
            }
            if let Some(original) = already_appended(&request.events, &recorded) {
                return Ok(Some(original));
            }
        }
        let error = Error::Integrity(format!(
            "an event matching the append condition was recorded after position {} (at {conflict})",
            condition.after.unwrap_or(0)
        ));
        Err(Refusal { error, on_unsynced: conflict > durable })
    }

    /// Checks an append's tracking position against the recorded one: the batch's own (in
    /// `tracking`) first, then the durable ones. Accepts it with `Ok(None)`.
    fn check_tracking(
        &self,
        request: &AppendRequest,
        tracking: &HashMap<String, u64>,
    ) -> Result<Option<u64>, Refusal> {
        let Some(t) = &request.tracking else { return Ok(None) };
        let index = self.shared.index.read().unwrap_or_else(PoisonError::into_inner);
        let durable = index.tracking.get(&t.source);
        match tracking.get(&t.source).or(durable) {
            Some(&recorded) if t.position <= recorded => {
                let on_unsynced = durable.is_none_or(|&r| t.position > r);
                // Answered at once, a refusal names the durable position it rests on.
                let recorded = if on_unsynced { recorded } else { durable.map_or(recorded, |&r| r) };
                let error = Error::Integrity(format!(
                    "tracking position {} for source {:?} does not exceed the recorded {recorded}",
                    t.position, t.source
                ));
                Err(Refusal { error, on_unsynced })
            }
            _ => Ok(None),
        }
    }

    /// Writes the index as of `end` to a new checkpoint file and renames it into place.
    ///
    /// A checkpoint that cannot be written leaves the store as it was (the one before stays
    /// valid, and the next is tried later); a failed sync of the log poisons the store, since
    /// it is never retried: the kernel reports a writeback error once, and a second sync would
    /// pass over the lost pages.
    pub(crate) fn checkpoint(&mut self) -> Result<()> {
        if self.sync == SyncMode::NotSynced {
            // A checkpoint must never cover log bytes that a power failure could take back (the
            // store would then not open); in this mode the batches were not synced yet.
            let path = &self.shared.log_path;
            if let Err(e) = self.shared.log.sync_data() {
                let error = io_error(path, "fdatasync failed on", e);
                self.shared.poison(error.to_string());
                return Err(error);
            }
        }
        self.tried = self.end;
        write_checkpoint(
            &*self.storage,
            &self.shared.dir,
            &self.shared.index.read().unwrap_or_else(PoisonError::into_inner),
            self.shared.store_id,
            self.end,
        )?;
        self.checkpointed = self.end;
        Ok(())
    }
}

/// Writes zeros from `from`, the end of the log, to the next multiple of a step past one step
/// beyond it (see [`ZERO_AHEAD`]); returns the log's length after. Failing is harmless (say, a
/// disk too full for the zeros): the next batches then extend the file themselves, and this is
/// tried again past them.
fn zero_ahead(log: &dyn StorageFile, from: u64) -> u64 {
    let step = (from / 8).next_power_of_two().clamp(MIN_ZERO_AHEAD, ZERO_AHEAD);
    let to = (from + step).next_multiple_of(step);
    match log.write_all_at(&vec![0; (to - from) as usize], from) {
        Ok(()) => to,
        Err(_) => log.len().unwrap_or(from),
    }
}

/// Writes a checkpoint of `index` (which must hold only durable positions, ending at log offset
/// `end`): to a temporary file, synced, renamed over the old one, directory synced. A crash at
/// any step leaves either the old checkpoint or the new one, both valid.
pub(crate) fn write_checkpoint(
    storage: &dyn Storage,
    dir: &std::path::Path,
    index: &Index,
    store_id: Uuid,
    end: u64,
) -> Result<()> {
    let words = index.encode_checkpoint(store_id, end);
    let bytes: &[u8] = bytemuck::cast_slice(&words);
    let tmp = dir.join(CHECKPOINT_TMP);
    let target = dir.join(CHECKPOINT_FILE);
    storage.remove(&tmp).map_err(|e| io_error(&tmp, "cannot remove", e))?;
    let written = storage.open(&tmp, true).map_err(|e| io_error(&tmp, "cannot create", e)).and_then(|file| {
        file.write_all_at(bytes, 0).map_err(|e| io_error(&tmp, "cannot write", e))?;
        file.sync_data().map_err(|e| io_error(&tmp, "fdatasync failed on", e))
    });
    if let Err(error) = written {
        // A part-written file would hold on to space a full disk needs for the log.
        let _ = storage.remove(&tmp);
        return Err(error);
    }
    storage.rename(&tmp, &target).map_err(|e| io_error(&target, "cannot rename the new checkpoint to", e))?;
    storage.sync_dir(dir).map_err(|e| io_error(dir, "cannot sync the directory", e))?;
    Ok(())
}

/// `dcb::Error` is not `Clone`; a batch's failure is reported to each of its appends.
pub(crate) fn clone_error(error: &Error) -> Error {
    match error {
        Error::Io { message, .. } => Error::Io { message: message.clone(), source: None },
        Error::Corruption(message) => Error::Corruption(message.clone()),
        Error::Integrity(message) => Error::Integrity(message.clone()),
        Error::InvalidArgument(message) => Error::InvalidArgument(message.clone()),
        other => Error::Internal(other.to_string()),
    }
}

/// Corruption in a checkpoint, named with its file.
pub(crate) fn checkpoint_corruption(dir: &std::path::Path, why: &str) -> Error {
    corruption(
        &dir.join(CHECKPOINT_FILE),
        0,
        &format!("{why} (the checkpoint can be rebuilt from the log: remove the file and reopen)"),
    )
}
