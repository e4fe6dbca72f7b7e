//! The verify tool: every checksum of the log, every batch's structure, every event decoded, and
//! the index checkpoint compared entry by entry with an index rebuilt from the log.

use std::fmt;
use std::path::Path;

use dcb::{Error, Result};

use crate::format::{CHECKPOINT_FILE, LOG_FILE, LOG_HEADER_LEN};
use crate::index::Index;
use crate::io::{StdStorage, Storage};
use crate::scan::{self, io_error};

/// What [`verify`] found in a store directory.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct VerifyReport {
    /// Events in whole batches, all checksums verified and all decoded.
    pub events: u64,
    /// Whole batches (each ended by a valid commit record).
    pub batches: u64,
    /// Length of the log file.
    pub log_bytes: u64,
    /// Zeros after the last whole batch, to the end of the log file: space the writer wrote
    /// ahead for the next batches (not data, not damage).
    pub zeroed_bytes: u64,
    /// Distinct tags among the events.
    pub tags: usize,
    /// Distinct event types.
    pub types: usize,
    /// Whether an index checkpoint file is present.
    pub checkpoint_found: bool,
    /// Positions covered by the index checkpoint, when it was compared entry by entry with the
    /// index rebuilt from the log (any disagreement is listed in `problems`).
    pub checkpoint_positions: Option<u64>,
    /// A torn tail after the last whole batch (a crash interrupted a batch that was never
    /// acknowledged): not damage, and the next open cuts it off.
    pub torn_tail: Option<String>,
    /// Damage found: a failed checksum, a malformed record, a checkpoint that disagrees with the
    /// log. Empty when the store is sound.
    pub problems: Vec<String>,
}

impl VerifyReport {
    /// Whether no damage was found (a torn tail is not damage).
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }
}

impl fmt::Display for VerifyReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "log: {} bytes ({} of them zeros written ahead), {} batches, {} events",
            self.log_bytes, self.zeroed_bytes, self.batches, self.events
        )?;
        writeln!(f, "index: {} tags, {} types", self.tags, self.types)?;
        match (self.checkpoint_positions, self.checkpoint_found) {
            (Some(positions), _) => {
                writeln!(f, "checkpoint: covers {positions} positions, compared entry by entry with the log")?
            }
            (None, true) => {
                writeln!(f, "checkpoint: present, not compared with the log (see the damage below)")?
            }
            (None, false) => writeln!(f, "checkpoint: none (the next open replays the whole log)")?,
        }
        if let Some(torn) = &self.torn_tail {
            writeln!(f, "torn tail (not damage; cut off by the next open): {torn}")?;
        }
        if self.problems.is_empty() {
            write!(f, "OK: no damage found")
        } else {
            for problem in &self.problems {
                writeln!(f, "DAMAGE: {problem}")?;
            }
            write!(f, "{} problem(s) found", self.problems.len())
        }
    }
}

/// Checks the store in `dir` end to end without changing it: the log header, every record's
/// checksum, every batch's commit, every event's encoding and position, and the index
/// checkpoint against an index rebuilt from the log.
///
/// Damage is listed in the report's `problems`; the error cases are a directory that cannot be
/// read, or a store that is open (verify takes the same lock as [`FileStore::open`](crate::FileStore::open)).
pub fn verify(dir: impl AsRef<Path>) -> Result<VerifyReport> {
    let dir = dir.as_ref();
    let log_path = dir.join(LOG_FILE);
    if !log_path.exists() {
        return Err(Error::invalid(format!("{} holds no dcb-file store (no {LOG_FILE})", dir.display())));
    }
    let _lock = crate::lock_dir(dir)?;
    let storage = StdStorage;
    let log = storage.open(&log_path, false).map_err(|e| io_error(&log_path, "cannot open", e))?;
    let mut report = VerifyReport {
        log_bytes: log.len().map_err(|e| io_error(&log_path, "cannot read the length of", e))?,
        ..VerifyReport::default()
    };
    let (store_id, seal) = match crate::read_log_header(&*log, &log_path) {
        Ok(header) => header,
        Err(error) => {
            report.problems.push(error.to_string());
            return Ok(report);
        }
    };
    let checkpoint = match crate::load_checkpoint(&storage, &*log, dir, store_id, seal) {
        Ok((index, end)) if dir.join(CHECKPOINT_FILE).exists() => Some((index, end)),
        Ok(_) => None,
        Err(error) => {
            report.problems.push(error.to_string());
            None
        }
    };
    report.checkpoint_found = dir.join(CHECKPOINT_FILE).exists();
    let mut index = Index::default();
    let mut compared = checkpoint.as_ref().is_some_and(|(_, end)| *end == LOG_HEADER_LEN);
    let result = scan::scan(&*log, &log_path, seal, LOG_HEADER_LEN, 1, true, |end, items| {
        crate::apply(&mut index, items);
        report.batches += 1;
        if let Some((checkpointed, checkpoint_end)) = &checkpoint
            && end == *checkpoint_end
        {
            compared = true;
            if let Some(difference) = index.first_difference(checkpointed) {
                report.problems.push(format!(
                    "{}: disagrees with the log: {difference}",
                    dir.join(CHECKPOINT_FILE).display()
                ));
            }
        }
        Ok(())
    });
    match result {
        Ok(end) => {
            report.zeroed_bytes = end.zeroed;
            if let Some(torn) = end.torn {
                report.torn_tail =
                    Some(format!("{} bytes at offset {}: {}", torn.bytes, torn.offset, torn.reason));
            }
        }
        Err(error) => report.problems.push(error.to_string()),
    }
    if let Some((checkpointed, _)) = &checkpoint {
        if compared {
            report.checkpoint_positions = Some(checkpointed.len());
        } else if report.problems.is_empty() {
            report.problems.push(format!(
                "{}: ends at an offset that is no batch boundary of the log",
                dir.join(CHECKPOINT_FILE).display()
            ));
        }
    }
    report.events = index.len();
    report.tags = index.tag_count();
    report.types = index.type_count();
    Ok(report)
}
