//! The narrow I/O layer every byte of the store goes through.
//!
//! The engine never touches `std::fs` for data directly: it asks a [`Storage`] for files and
//! does positional reads, writes and syncs on them, or maps them into memory for reading. Tests
//! swap in a storage that fails a write halfway, fails a sync, or counts what was synced, without
//! the engine knowing.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::{Arc, PoisonError, RwLock};

/// A file of the store, shared between the writer and the readers.
pub(crate) trait StorageFile: Send + Sync {
    /// Fills `buf` from `offset`; a read past the end is an `UnexpectedEof` error.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    /// Writes all of `buf` at `offset`.
    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    /// Makes the data written so far durable (`fdatasync`).
    fn sync_data(&self) -> io::Result<()>;
    /// The current length in bytes.
    fn len(&self) -> io::Result<u64>;
    /// Truncates (or extends) the file to `len` bytes.
    fn set_len(&self, len: u64) -> io::Result<()>;
    /// Maps the first `len` bytes of the file for reading (see [`Mapping`]).
    fn map(&self, len: usize) -> io::Result<Mapping>;
}

/// A read-only shared mapping of the start of a file: of the log, or of a whole index checkpoint.
///
/// It may be longer than the file: address space is reserved ahead so that a growing log is not
/// mapped again at every append. Pages past the file's end must never be touched (the kernel
/// would raise `SIGBUS`); the store reads only records it has synced, which the file always holds
/// (it is cut back only past its last synced batch). A checkpoint is mapped exactly and never
/// written again once renamed into place (a newer one replaces the file, not its bytes).
pub(crate) struct Mapping {
    ptr: *const u8,
    len: usize,
}

// SAFETY: the mapping is read-only memory owned by this value until it is dropped; sharing and
// sending a pointer to it between threads is as safe as sharing a `&[u8]`.
#[allow(unsafe_code)]
unsafe impl Send for Mapping {}
#[allow(unsafe_code)]
unsafe impl Sync for Mapping {}

impl Mapping {
    #[allow(unsafe_code)]
    fn new(file: &File, len: usize) -> io::Result<Mapping> {
        // SAFETY: a fresh mapping at an address of the kernel's choosing, aliasing nothing; the
        // bytes readers see are never written again (see the type's doc).
        let ptr = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ, libc::MAP_SHARED, file.as_raw_fd(), 0)
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping { ptr: ptr.cast(), len })
    }

    /// How many bytes of address space the mapping covers.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The bytes at `offset .. offset + len`, which the caller knows the file holds.
    #[allow(unsafe_code)]
    pub(crate) fn bytes(&self, offset: usize, len: usize) -> &[u8] {
        assert!(offset.checked_add(len).is_some_and(|end| end <= self.len), "read past the mapping");
        // SAFETY: in bounds of the mapping (checked above), which lives as long as `self`, and
        // backed by the file (the caller's guarantee); those bytes are never written again.
        unsafe { std::slice::from_raw_parts(self.ptr.add(offset), len) }
    }
}

impl Drop for Mapping {
    #[allow(unsafe_code)]
    fn drop(&mut self) {
        // SAFETY: unmaps exactly what `new` mapped; no reference into it outlives `self`.
        unsafe { libc::munmap(self.ptr.cast_mut().cast(), self.len) };
    }
}

/// 64-bit words used in place: a whole file mapped by [`Mapping`], or a vector (built in memory).
pub(crate) struct Words {
    // Where `_owner` holds the words; neither a mapping nor a vector's buffer moves with its owner.
    ptr: *const u64,
    len: usize,
    _owner: WordsOwner,
}

/// What holds the words of a [`Words`]: kept, never read.
#[allow(dead_code)]
enum WordsOwner {
    Vec(Vec<u64>),
    Mapping(Mapping),
}

// SAFETY: `Words` is a read-only view of memory it owns, like the `Vec` or `Mapping` it holds.
#[allow(unsafe_code)]
unsafe impl Send for Words {}
#[allow(unsafe_code)]
unsafe impl Sync for Words {}

impl Words {
    /// The words of a whole mapped file, whose length must be a multiple of 8 (a mapping starts
    /// on a page boundary, so they are aligned).
    pub(crate) fn mapped(mapping: Mapping) -> Words {
        let words: &[u64] = bytemuck::cast_slice(mapping.bytes(0, mapping.len()));
        Words { ptr: words.as_ptr(), len: words.len(), _owner: WordsOwner::Mapping(mapping) }
    }
}

impl From<Vec<u64>> for Words {
    fn from(words: Vec<u64>) -> Words {
        Words { ptr: words.as_ptr(), len: words.len(), _owner: WordsOwner::Vec(words) }
    }
}

impl Default for Words {
    fn default() -> Words {
        Words::from(Vec::new())
    }
}

impl std::fmt::Debug for Words {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} words", self.len)
    }
}

impl std::ops::Deref for Words {
    type Target = [u64];

    #[allow(unsafe_code)]
    fn deref(&self) -> &[u64] {
        // SAFETY: `ptr` and `len` describe the words of `_owner`, which lives as long as `self`
        // and never writes them.
        unsafe { std::slice::from_raw_parts(self.ptr, self.len) }
    }
}

/// The least address space a log mapping reserves, and the step it grows by: large enough that
/// a store is rarely mapped again (address space is plentiful on 64-bit machines), small in unit
/// tests so that they map again often.
const MAP_STEP: u64 = if cfg!(test) { 64 << 10 } else { 1 << 30 };

/// A file mapped for reading, mapped again (twice as large) when reads outgrow the mapping.
/// Readers hold on to the mapping they read from; an outgrown one is unmapped when its last
/// reader lets go.
pub(crate) struct GrowingMap {
    file: Arc<dyn StorageFile>,
    current: RwLock<Arc<Mapping>>,
}

impl GrowingMap {
    /// Maps `file`, which holds `len` bytes.
    pub(crate) fn new(file: Arc<dyn StorageFile>, len: u64) -> io::Result<GrowingMap> {
        let mapping = file.map(Self::reserve(len)?)?;
        Ok(GrowingMap { file, current: RwLock::new(Arc::new(mapping)) })
    }

    fn reserve(len: u64) -> io::Result<usize> {
        let reserve = len.saturating_mul(2).max(MAP_STEP).next_multiple_of(MAP_STEP);
        usize::try_from(reserve).map_err(|_| io::Error::other("the log is too large to map"))
    }

    /// A mapping that covers the file's first `end` bytes.
    pub(crate) fn covering(&self, end: u64) -> io::Result<Arc<Mapping>> {
        let current = self.current.read().unwrap_or_else(PoisonError::into_inner).clone();
        if end <= current.len() as u64 {
            return Ok(current);
        }
        let mut current = self.current.write().unwrap_or_else(PoisonError::into_inner);
        if end > current.len() as u64 {
            *current = Arc::new(self.file.map(Self::reserve(end)?)?);
        }
        Ok(current.clone())
    }
}

/// Opens files and changes directory entries.
pub(crate) trait Storage: Send + Sync + 'static {
    /// Opens `path` for reading and writing, creating it (empty) when `create` is set.
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>>;
    /// Atomically replaces `to` with `from`.
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()>;
    /// Makes the directory's entries (created, renamed, removed files) durable.
    fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Removes a file; a missing file is not an error.
    fn remove(&self, path: &Path) -> io::Result<()>;
}

/// The real file system.
pub(crate) struct StdStorage;

struct StdFile(File);

impl StorageFile for StdFile {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        self.0.read_exact_at(buf, offset)
    }

    fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
        self.0.write_all_at(buf, offset)
    }

    fn sync_data(&self) -> io::Result<()> {
        self.0.sync_data()
    }

    fn len(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }

    fn set_len(&self, len: u64) -> io::Result<()> {
        self.0.set_len(len)
    }

    fn map(&self, len: usize) -> io::Result<Mapping> {
        Mapping::new(&self.0, len)
    }
}

impl Storage for StdStorage {
    fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
        let file = OpenOptions::new().read(true).write(true).create(create).open(path)?;
        Ok(Arc::new(StdFile(file)))
    }

    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        std::fs::rename(from, to)
    }

    fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        File::open(dir)?.sync_all()
    }

    fn remove(&self, path: &Path) -> io::Result<()> {
        match std::fs::remove_file(path) {
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }
}

#[cfg(test)]
pub(crate) mod fault {
    //! A storage that injects failures: a disk that fills up after some bytes, a sync that fails.

    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
    use std::sync::{Condvar, Mutex};

    use super::*;

    /// Shared switches and counters of a [`FaultyStorage`].
    #[derive(Default)]
    pub(crate) struct Faults {
        /// Bytes that may still be written before writes fail with "no space" (`u64::MAX`: no limit).
        pub(crate) write_budget: AtomicU64,
        /// When set, every sync fails.
        pub(crate) fail_sync: AtomicBool,
        /// Syncs attempted on files (successful or not).
        pub(crate) syncs: AtomicU64,
        /// When set, a file sync waits (after saying so) until it is released.
        pub(crate) hold_sync: AtomicBool,
        /// Every directory synced, in order.
        pub(crate) synced_dirs: Mutex<Vec<std::path::PathBuf>>,
        held: Mutex<SyncGate>,
        gate: Condvar,
    }

    #[derive(Default)]
    struct SyncGate {
        waiting: bool,
        released: bool,
    }

    impl Faults {
        pub(crate) fn new() -> Arc<Faults> {
            let faults = Faults::default();
            faults.write_budget.store(u64::MAX, Ordering::SeqCst);
            Arc::new(faults)
        }

        /// Blocks until a held sync is waiting.
        pub(crate) fn wait_for_held_sync(&self) {
            let mut gate = self.held.lock().unwrap();
            while !gate.waiting {
                gate = self.gate.wait(gate).unwrap();
            }
        }

        /// Lets the held sync go on.
        pub(crate) fn release_sync(&self) {
            self.hold_sync.store(false, Ordering::SeqCst);
            self.held.lock().unwrap().released = true;
            self.gate.notify_all();
        }

        fn hold(&self) {
            let mut gate = self.held.lock().unwrap();
            gate.waiting = true;
            self.gate.notify_all();
            while !gate.released {
                gate = self.gate.wait(gate).unwrap();
            }
        }
    }

    pub(crate) struct FaultyStorage(pub(crate) Arc<Faults>);

    struct FaultyFile {
        inner: Arc<dyn StorageFile>,
        faults: Arc<Faults>,
    }

    impl StorageFile for FaultyFile {
        fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            self.inner.read_exact_at(buf, offset)
        }

        fn write_all_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
            let budget = self.faults.write_budget.load(Ordering::SeqCst);
            if (buf.len() as u64) <= budget {
                if budget != u64::MAX {
                    self.faults.write_budget.store(budget - buf.len() as u64, Ordering::SeqCst);
                }
                return self.inner.write_all_at(buf, offset);
            }
            // A full disk: what fits is written, then the write fails.
            self.inner.write_all_at(&buf[..budget as usize], offset)?;
            self.faults.write_budget.store(0, Ordering::SeqCst);
            Err(io::Error::from_raw_os_error(28))
        }

        fn sync_data(&self) -> io::Result<()> {
            self.faults.syncs.fetch_add(1, Ordering::SeqCst);
            if self.faults.hold_sync.load(Ordering::SeqCst) {
                self.faults.hold();
            }
            if self.faults.fail_sync.load(Ordering::SeqCst) {
                return Err(io::Error::from_raw_os_error(5));
            }
            self.inner.sync_data()
        }

        fn len(&self) -> io::Result<u64> {
            self.inner.len()
        }

        fn set_len(&self, len: u64) -> io::Result<()> {
            self.inner.set_len(len)
        }

        fn map(&self, len: usize) -> io::Result<Mapping> {
            self.inner.map(len)
        }
    }

    impl Storage for FaultyStorage {
        fn open(&self, path: &Path, create: bool) -> io::Result<Arc<dyn StorageFile>> {
            let inner = StdStorage.open(path, create)?;
            Ok(Arc::new(FaultyFile { inner, faults: self.0.clone() }))
        }

        fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
            StdStorage.rename(from, to)
        }

        fn sync_dir(&self, dir: &Path) -> io::Result<()> {
            self.0.syncs.fetch_add(1, Ordering::SeqCst);
            self.0.synced_dirs.lock().unwrap().push(dir.to_owned());
            if self.0.fail_sync.load(Ordering::SeqCst) {
                return Err(io::Error::from_raw_os_error(5));
            }
            StdStorage.sync_dir(dir)
        }

        fn remove(&self, path: &Path) -> io::Result<()> {
            StdStorage.remove(path)
        }
    }
}
