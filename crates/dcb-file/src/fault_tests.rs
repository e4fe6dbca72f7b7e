//! The storage layer: I/O failures injected through it (a full disk, a failed sync), and the log's
//! mapping growing under readers.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use dcb::{Error, Event, EventStore, Query, ReadOptions};

use crate::io::fault::{Faults, FaultyStorage};
use crate::{FileStore, FileStoreOptions, open_on};

struct Dir(std::path::PathBuf);

impl Dir {
    fn new(name: &str) -> Dir {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos();
        Dir(std::env::temp_dir().join(format!("dcb-file-unit-{name}-{}-{nanos}", std::process::id())))
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().build().unwrap()
}

fn events(tag: &str, n: usize) -> Vec<Event> {
    (0..n).map(|i| Event::new("E", format!("{tag}-{i}")).tagged(tag)).collect()
}

fn all(store: &FileStore, rt: &tokio::runtime::Runtime) -> Vec<String> {
    rt.block_on(store.read(&Query::all(), ReadOptions::default()))
        .unwrap()
        .events
        .iter()
        .map(|e| String::from_utf8(e.event.data.to_vec()).unwrap())
        .collect()
}

fn assert_reopen_error(result: dcb::Result<u64>) {
    match result {
        Err(Error::Io { message, .. }) => assert!(message.contains("reopen"), "no reopen advice: {message}"),
        other => panic!("expected an i/o error asking to reopen, got {other:?}"),
    }
}

#[test]
fn a_full_disk_fails_the_append_and_the_store_refuses_writes_until_reopened() {
    let dir = Dir::new("full-disk");
    let rt = runtime();
    let faults = Faults::new();
    let store =
        open_on(&dir.0, FileStoreOptions::default(), Arc::new(FaultyStorage(faults.clone()))).unwrap();
    rt.block_on(store.append(events("ok", 3), None)).unwrap();
    // Room for part of the next batch only.
    faults.write_budget.store(40, Ordering::SeqCst);
    match rt.block_on(store.append(events("lost", 5), None)) {
        Err(Error::Io { message, .. }) => assert!(message.contains("events.log"), "{message}"),
        other => panic!("expected an i/o error, got {other:?}"),
    }
    faults.write_budget.store(u64::MAX, Ordering::SeqCst);
    assert_reopen_error(rt.block_on(store.append(events("after", 1), None)));
    // Reads go on, and never show the failed batch.
    assert_eq!(all(&store, &rt), ["ok-0", "ok-1", "ok-2"]);
    assert_eq!(rt.block_on(store.head()).unwrap(), Some(3));
    drop(store);

    let store = FileStore::open(&dir.0).unwrap();
    assert_eq!(all(&store, &rt), ["ok-0", "ok-1", "ok-2"]);
    assert_eq!(rt.block_on(store.append(events("again", 1), None)).unwrap(), 4);
    drop(store);
    let report = crate::verify(&dir.0).unwrap();
    assert!(report.is_ok(), "{report}");
}

#[test]
fn a_disk_too_full_for_the_zeros_written_ahead_fails_no_append() {
    let dir = Dir::new("no-room-ahead");
    let rt = runtime();
    let faults = Faults::new();
    let store =
        open_on(&dir.0, FileStoreOptions::default(), Arc::new(FaultyStorage(faults.clone()))).unwrap();
    // Room for the batch, not for the zeros the writer then writes past it.
    faults.write_budget.store(1000, Ordering::SeqCst);
    assert_eq!(rt.block_on(store.append(events("ok", 3), None)).unwrap(), 3);
    let log_len = std::fs::metadata(dir.0.join("events.log")).unwrap().len();
    assert!(log_len < crate::writer::ZERO_AHEAD, "the zeros were written after all ({log_len} bytes)");
    faults.write_budget.store(u64::MAX, Ordering::SeqCst);
    assert_eq!(rt.block_on(store.append(events("more", 2), None)).unwrap(), 5);
    drop(store);
    let store = FileStore::open(&dir.0).unwrap();
    assert_eq!(all(&store, &rt), ["ok-0", "ok-1", "ok-2", "more-0", "more-1"]);
    drop(store);
    let report = crate::verify(&dir.0).unwrap();
    assert!(report.is_ok() && report.torn_tail.is_none(), "{report}");
}

#[test]
fn a_failed_sync_is_never_retried() {
    let dir = Dir::new("failed-sync");
    let rt = runtime();
    let faults = Faults::new();
    let store =
        open_on(&dir.0, FileStoreOptions::default(), Arc::new(FaultyStorage(faults.clone()))).unwrap();
    rt.block_on(store.append(events("ok", 2), None)).unwrap();
    faults.fail_sync.store(true, Ordering::SeqCst);
    let syncs_before = faults.syncs.load(Ordering::SeqCst);
    match rt.block_on(store.append(events("unsynced", 2), None)) {
        Err(Error::Io { message, .. }) => assert!(message.contains("fdatasync"), "{message}"),
        other => panic!("expected an i/o error, got {other:?}"),
    }
    assert_eq!(faults.syncs.load(Ordering::SeqCst), syncs_before + 1);
    assert_reopen_error(rt.block_on(store.append(events("after", 1), None)));
    assert_eq!(all(&store, &rt), ["ok-0", "ok-1"]);
    let checkpoint = rt.block_on(store.checkpoint());
    assert!(checkpoint.is_err(), "a poisoned store wrote a checkpoint");
    drop(store);
    // Neither the refused append nor closing the store synced anything again.
    assert_eq!(faults.syncs.load(Ordering::SeqCst), syncs_before + 1);

    let store = FileStore::open(&dir.0).unwrap();
    assert_eq!(all(&store, &rt), ["ok-0", "ok-1"]);
    drop(store);
    assert!(crate::verify(&dir.0).unwrap().is_ok());
}

/// Without a sync per batch, the log is synced before each checkpoint; when that sync fails the
/// store is poisoned like after any failed sync, so no later checkpoint can sync again (and pass
/// over the pages the kernel failed to write) and cover them.
#[test]
fn a_failed_sync_before_a_checkpoint_poisons_the_store() {
    let dir = Dir::new("failed-checkpoint-sync");
    let rt = runtime();
    let faults = Faults::new();
    let options = FileStoreOptions::default().sync(crate::SyncMode::NotSynced);
    let store = open_on(&dir.0, options, Arc::new(FaultyStorage(faults.clone()))).unwrap();
    rt.block_on(store.append(events("unsynced", 2), None)).unwrap();
    faults.fail_sync.store(true, Ordering::SeqCst);
    assert!(rt.block_on(store.checkpoint()).is_err());
    faults.fail_sync.store(false, Ordering::SeqCst);
    let syncs = faults.syncs.load(Ordering::SeqCst);
    assert_reopen_error(rt.block_on(store.append(events("after", 1), None)));
    assert!(rt.block_on(store.checkpoint()).is_err(), "a poisoned store wrote a checkpoint");
    drop(store);
    assert_eq!(faults.syncs.load(Ordering::SeqCst), syncs, "the log was synced again");
    assert!(!dir.0.join("index.ckpt").exists());
}

/// A checkpoint the disk has no room for leaves the store as it was (appends go on, the
/// checkpoint before stays), and no part-written file that would hold on to the space.
#[test]
fn a_checkpoint_that_cannot_be_written_changes_nothing() {
    let dir = Dir::new("checkpoint-no-room");
    let rt = runtime();
    let faults = Faults::new();
    let store =
        open_on(&dir.0, FileStoreOptions::default(), Arc::new(FaultyStorage(faults.clone()))).unwrap();
    rt.block_on(store.append(events("before", 20), None)).unwrap();
    rt.block_on(store.checkpoint()).unwrap();
    let kept = std::fs::read(dir.0.join("index.ckpt")).unwrap();
    rt.block_on(store.append(events("more", 20), None)).unwrap();
    faults.write_budget.store(100, Ordering::SeqCst);
    assert!(rt.block_on(store.checkpoint()).is_err());
    assert!(!dir.0.join("index.ckpt.tmp").exists(), "the part-written checkpoint was left");
    assert_eq!(std::fs::read(dir.0.join("index.ckpt")).unwrap(), kept);
    faults.write_budget.store(u64::MAX, Ordering::SeqCst);
    assert_eq!(rt.block_on(store.append(events("after", 1), None)).unwrap(), 41);
    drop(store);
    let store = FileStore::open(&dir.0).unwrap();
    assert_eq!(all(&store, &rt).len(), 41);
}

/// The checkpoint an open writes after a long replay is only a shortcut: a disk too full for it
/// must not keep the store from opening.
#[test]
fn a_store_opens_when_its_checkpoint_cannot_be_written() {
    let dir = Dir::new("no-room-for-checkpoint");
    let rt = runtime();
    let store = FileStore::open(&dir.0).unwrap();
    rt.block_on(store.append(events("kept", 50), None)).unwrap();
    drop(store);
    std::fs::remove_file(dir.0.join("index.ckpt")).unwrap();
    let faults = Faults::new();
    faults.write_budget.store(0, Ordering::SeqCst);
    let options = FileStoreOptions::default().checkpoint_interval(1);
    let store = open_on(&dir.0, options, Arc::new(FaultyStorage(faults.clone()))).unwrap();
    assert_eq!(all(&store, &rt).len(), 50);
    assert!(!dir.0.join("index.ckpt").exists());
}

#[test]
fn readers_see_only_synced_batches_and_never_wait_for_a_sync() {
    let dir = Dir::new("held-sync");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).build().unwrap();
    let faults = Faults::new();
    let store =
        open_on(&dir.0, FileStoreOptions::default(), Arc::new(FaultyStorage(faults.clone()))).unwrap();
    rt.block_on(store.append(events("synced", 1), None)).unwrap();
    faults.hold_sync.store(true, Ordering::SeqCst);
    let appending = {
        let store = store.clone();
        rt.spawn(async move { store.append(events("pending", 3), None).await })
    };
    // The batch is written and indexed, and its sync is stuck: readers answer at once, and
    // only with what is synced.
    faults.wait_for_held_sync();
    assert_eq!(all(&store, &rt), ["synced-0"]);
    assert_eq!(rt.block_on(store.head()).unwrap(), Some(1));
    let pending = Query::from(dcb::QueryItem::tags(["pending"]));
    assert!(rt.block_on(store.read(&pending, ReadOptions::default())).unwrap().events.is_empty());
    assert!(!appending.is_finished(), "an append was acknowledged before its sync");
    faults.release_sync();
    assert_eq!(rt.block_on(appending).unwrap().unwrap(), 4);
    assert_eq!(all(&store, &rt), ["synced-0", "pending-0", "pending-1", "pending-2"]);
}

/// Unit tests map the log in steps of 64 KiB: a store of a few hundred KiB outgrows its mapping
/// several times, while events read through the earlier mappings are still held.
#[test]
fn reads_stay_valid_while_the_log_outgrows_its_mapping() {
    let dir = Dir::new("remap");
    let rt = runtime();
    let store = FileStore::open(&dir.0).unwrap();
    let mut held = Vec::new();
    for batch in 0..40 {
        let events =
            (0..10).map(|i| Event::new("E", vec![batch as u8; 1000 + i]).tagged(format!("b{batch}")));
        rt.block_on(store.append(events.collect(), None)).unwrap();
        let read = rt.block_on(store.read(&Query::all(), ReadOptions::default())).unwrap();
        assert_eq!(read.events.len(), 10 * (batch + 1));
        held.push(read.events);
    }
    // Every event read through any mapping, old or current, still holds what was written.
    for (reads, events) in held.iter().enumerate() {
        for (k, event) in events.iter().enumerate() {
            let (batch, i) = (k / 10, k % 10);
            assert_eq!(event.event.data.len(), 1000 + i, "read {reads}, event {k}");
            assert!(event.event.data.iter().all(|&b| b == batch as u8), "read {reads}, event {k}");
        }
    }
    assert!(std::fs::metadata(dir.0.join("events.log")).unwrap().len() > 4 * (64 << 10));
}

/// Opening syncs the store directory (the log's name) and the entry of every directory it
/// created in its parent; reopening, the store directory and its parent again (a crash may have
/// come before the first open synced them).
#[test]
fn opening_syncs_the_names_of_the_log_and_of_the_directories_it_created() {
    let root = Dir::new("dir-syncs");
    std::fs::create_dir_all(&root.0).unwrap();
    let dir = root.0.join("a").join("b").join("store");
    let faults = Faults::new();
    let synced = || std::mem::take(&mut *faults.synced_dirs.lock().unwrap());
    let store = open_on(&dir, FileStoreOptions::default(), Arc::new(FaultyStorage(faults.clone()))).unwrap();
    let first = synced();
    for level in [dir.as_path(), &root.0.join("a").join("b"), &root.0.join("a"), &root.0] {
        assert!(first.iter().any(|d| d == level), "{} not synced: {first:?}", level.display());
    }
    drop(store);
    synced();
    let store = open_on(&dir, FileStoreOptions::default(), Arc::new(FaultyStorage(faults.clone()))).unwrap();
    assert_eq!(synced(), [dir.clone(), root.0.join("a").join("b")]);
    drop(store);
}
