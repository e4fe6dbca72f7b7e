//! Reopening, torn tails, corruption, limits: what survives, what is cut off, what is refused.

mod common;

use std::path::Path;

use common::TempDir;
use dcb::limits::MAX_EVENT_DATA_BYTES;
use dcb::{
    AppendCondition, AppendRequest, Bytes, Error, Event, EventStore, Query, QueryItem, ReadOptions,
    TrackingInfo,
};
use dcb_file::{FileStore, FileStoreOptions, SyncMode};

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// Ten appends of three events, each event's data a findable marker.
fn fill(store: &FileStore, rt: &tokio::runtime::Runtime) {
    for batch in 0..10 {
        let events = (0..3)
            .map(|i| {
                Event::new(format!("T{i}"), format!("MARKER-{batch:02}-{i}")).tagged(format!("b{batch}"))
            })
            .collect();
        rt.block_on(store.append(events, None)).unwrap();
    }
}

fn datas(store: &FileStore, rt: &tokio::runtime::Runtime, query: &Query) -> dcb::Result<Vec<String>> {
    let read = rt.block_on(store.read(query, ReadOptions::default()))?;
    Ok(read.events.iter().map(|e| String::from_utf8(e.event.data.to_vec()).unwrap()).collect())
}

fn log(dir: &Path) -> std::path::PathBuf {
    dir.join("events.log")
}

fn find(bytes: &[u8], needle: &[u8]) -> usize {
    bytes.windows(needle.len()).position(|w| w == needle).expect("marker in the log")
}

fn flip_byte(path: &Path, offset: usize) {
    let mut bytes = std::fs::read(path).unwrap();
    bytes[offset] ^= 0x20;
    std::fs::write(path, bytes).unwrap();
}

fn expect_corruption(result: dcb::Result<impl std::fmt::Debug>, names: &str) -> String {
    match result {
        Err(Error::Corruption(message)) => {
            assert!(message.contains(names), "corruption error does not name {names}: {message}");
            assert!(message.contains("offset"), "corruption error names no offset: {message}");
            message
        }
        other => panic!("expected a corruption error, got {other:?}"),
    }
}

#[test]
fn everything_survives_reopening_and_positions_continue() {
    let dir = TempDir::new("reopen");
    let rt = rt();
    let store = FileStore::open(dir.path()).unwrap();
    fill(&store, &rt);
    let request = AppendRequest::new(vec![Event::new("Tracked", "t")]).tracking(TrackingInfo::new("src", 7));
    assert_eq!(rt.block_on(store.append_request(request)).unwrap(), 31);
    drop(store);
    for round in 0..2 {
        let store = FileStore::open(dir.path()).unwrap();
        assert_eq!(rt.block_on(store.head()).unwrap(), Some(31 + round));
        assert_eq!(rt.block_on(store.tracking_position("src")).unwrap(), Some(7));
        assert_eq!(
            datas(&store, &rt, &QueryItem::tags(["b4"]).into()).unwrap(),
            ["MARKER-04-0", "MARKER-04-1", "MARKER-04-2"]
        );
        assert_eq!(datas(&store, &rt, &QueryItem::types(["T2"]).into()).unwrap().len(), 10);
        // Conditions see what was recorded before the reopen.
        let stale = AppendCondition::new(QueryItem::tags(["b9"]).into(), Some(20));
        assert!(
            rt.block_on(store.append(vec![Event::new("X", "")], Some(stale))).unwrap_err().is_integrity()
        );
        assert_eq!(rt.block_on(store.append(vec![Event::new("X", "")], None)).unwrap(), 32 + round);
        drop(store);
        // Without a checkpoint, the same comes back from the log alone.
        std::fs::remove_file(dir.path().join("index.ckpt")).unwrap();
    }
    assert!(dcb_file::verify(dir.path()).unwrap().is_ok());
}

#[test]
fn reads_of_a_mapped_checkpoint_survive_its_replacement() {
    let dir = TempDir::new("checkpoint-replaced");
    let rt = rt();
    let store = FileStore::open(dir.path()).unwrap();
    fill(&store, &rt);
    drop(store);
    // This store's frozen index is the mapped checkpoint written when the last one closed.
    let store = FileStore::open(dir.path()).unwrap();
    let all = datas(&store, &rt, &Query::all()).unwrap();
    for round in 0..3 {
        rt.block_on(store.append(vec![Event::new("Later", format!("later {round}")).tagged("b4")], None))
            .unwrap();
        // Each checkpoint is a new file renamed over the mapped one.
        rt.block_on(store.checkpoint()).unwrap();
        assert_eq!(datas(&store, &rt, &Query::all()).unwrap()[..30], all[..]);
        let b4 = datas(&store, &rt, &QueryItem::tags(["b4"]).into()).unwrap();
        assert_eq!(b4.len(), 4 + round);
        assert_eq!(b4[..3], ["MARKER-04-0", "MARKER-04-1", "MARKER-04-2"]);
    }
    drop(store);
    let store = FileStore::open(dir.path()).unwrap();
    assert_eq!(datas(&store, &rt, &QueryItem::tags(["b4"]).into()).unwrap().len(), 6);
    drop(store);
    assert!(dcb_file::verify(dir.path()).unwrap().is_ok());
}

#[test]
fn a_torn_tail_is_cut_back_to_the_last_whole_batch() {
    let rt = rt();
    // Each way a crash can leave the end of the log: cut short, a hole in the middle of the last
    // batch (its pages reached the disk out of order), either followed by zeros written ahead;
    // and what is no torn tail at all: zeros after the last batch, or in place of all of it.
    type Tear = fn(&mut Vec<u8>, usize);
    let tears: [(&str, Tear, u64, bool); 6] = [
        ("cut in the last batch", |log, last| log.truncate(last + 20), 27, true),
        ("cut in the last commit", |log, _| log.truncate(log.len() - 5), 27, true),
        ("a hole in the last batch", |log, last| log[last + 8..last + 40].fill(0), 27, true),
        (
            "cut in the last batch, zeros after it",
            |log, last| {
                log.truncate(last + 20);
                log.resize(last + 8192, 0);
            },
            27,
            true,
        ),
        ("zeros after the end", |log, _| log.extend_from_slice(&[0; 4096]), 30, false),
        ("the last batch all zeros", |log, last| log[last..].fill(0), 27, false),
    ];
    for (what, tear, head, torn) in tears {
        let dir = TempDir::new("torn");
        let store = FileStore::open(dir.path()).unwrap();
        fill(&store, &rt);
        drop(store);
        std::fs::remove_file(dir.path().join("index.ckpt")).unwrap();
        // The log as the writer left it, without the zeros it wrote ahead.
        let written = dcb_file::verify(dir.path()).unwrap();
        assert!(written.zeroed_bytes > 0 && written.torn_tail.is_none(), "{written}");
        let mut bytes = std::fs::read(log(dir.path())).unwrap();
        bytes.truncate((written.log_bytes - written.zeroed_bytes) as usize);
        // The last batch starts right after the commit record (length 29, kind 3) before it.
        let marker = find(&bytes, b"MARKER-09-0");
        let commit =
            (0..marker).rev().find(|&o| bytes[o..o + 4] == [29, 0, 0, 0] && bytes[o + 8] == 3).unwrap();
        let last_batch = commit + 37;
        tear(&mut bytes, last_batch);
        std::fs::write(log(dir.path()), &bytes).unwrap();

        let report = dcb_file::verify(dir.path()).unwrap();
        assert!(report.is_ok() && report.torn_tail.is_some() == torn, "{what}: {report}");
        let store = FileStore::open(dir.path()).unwrap();
        assert_eq!(rt.block_on(store.head()).unwrap(), Some(head), "{what}");
        assert_eq!(rt.block_on(store.append(vec![Event::new("After", "")], None)).unwrap(), head + 1);
        drop(store);
        let report = dcb_file::verify(dir.path()).unwrap();
        assert!(report.is_ok() && report.torn_tail.is_none(), "{what}: {report}");
        assert_eq!(report.events, head + 1, "{what}: {report}");
    }
}

#[test]
fn the_log_keeps_zeros_written_ahead_of_its_end() {
    let dir = TempDir::new("zeros-ahead");
    let rt = rt();
    let mut appended = 0;
    for round in 0..3 {
        let store = FileStore::open(dir.path()).unwrap();
        // Enough data to renew the zeros written ahead (in steps of up to 4 MiB) at least once a round.
        for _ in 0..5 {
            let events = (0..100).map(|i| Event::new("Big", vec![b'x'; 10_000 + i]).tagged("big")).collect();
            appended += 100;
            assert_eq!(rt.block_on(store.append(events, None)).unwrap(), appended);
        }
        drop(store);
        let report = dcb_file::verify(dir.path()).unwrap();
        assert!(report.is_ok() && report.torn_tail.is_none(), "round {round}: {report}");
        assert_eq!(report.events, appended, "round {round}: {report}");
        assert!(report.zeroed_bytes > 0, "round {round}: no zeros ahead: {report}");
        let data_end = report.log_bytes - report.zeroed_bytes;
        assert!(data_end > 5_000_000 * (round + 1), "round {round}: {report}");
    }
    // Without the checkpoint, the log alone gives the same store back.
    std::fs::remove_file(dir.path().join("index.ckpt")).unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    let read = rt.block_on(store.read(&QueryItem::tags(["big"]).into(), ReadOptions::default())).unwrap();
    assert_eq!(read.events.len() as u64, appended);
    assert!(read.events.iter().enumerate().all(|(k, e)| e.event.data.len() == 10_000 + k % 100));
}

#[test]
fn a_corrupted_byte_in_the_middle_of_the_log_is_reported_at_open_without_a_checkpoint() {
    let dir = TempDir::new("corrupt-open");
    let rt = rt();
    let store = FileStore::open(dir.path()).unwrap();
    fill(&store, &rt);
    drop(store);
    std::fs::remove_file(dir.path().join("index.ckpt")).unwrap();
    let bytes = std::fs::read(log(dir.path())).unwrap();
    flip_byte(&log(dir.path()), find(&bytes, b"MARKER-04-1") + 3);
    let message = expect_corruption(FileStore::open(dir.path()).map(|_| ()), "events.log");
    assert!(message.contains("checksum"), "{message}");
    let report = dcb_file::verify(dir.path()).unwrap();
    assert!(!report.is_ok(), "verify missed the damage: {report}");
}

/// A damaged length field that makes a record in the middle reach past the end of the file looks
/// like a batch cut short, but synced batches follow it: damage, not a torn tail to cut off.
#[test]
fn a_damaged_length_reaching_past_the_end_is_damage_not_a_torn_tail() {
    let dir = TempDir::new("corrupt-length");
    let rt = rt();
    let store = FileStore::open(dir.path()).unwrap();
    fill(&store, &rt);
    drop(store);
    std::fs::remove_file(dir.path().join("index.ckpt")).unwrap();
    let path = log(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    // Walk to the fifth record: each is a 4-byte body length, a 4-byte checksum, then the body.
    let mut offset = 32;
    for _ in 0..4 {
        offset += 8 + u32::from_le_bytes(bytes[offset..offset + 4].try_into().unwrap()) as usize;
    }
    let past_the_end = (bytes.len() - offset) as u32;
    bytes[offset..offset + 4].copy_from_slice(&past_the_end.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();
    let message = expect_corruption(FileStore::open(dir.path()).map(|_| ()), "events.log");
    assert!(message.contains("later batch"), "{message}");
    let report = dcb_file::verify(dir.path()).unwrap();
    assert!(!report.is_ok(), "verify took the damage for a torn tail: {report}");
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "the log was changed");
}

/// A client can put in its event data the bytes of a commit record of some other batch, checksum
/// and all (the unsealed checksum of format version 1). In a batch a crash tore, those bytes must
/// not pass for a later batch's commit, which would make the torn tail look like damage and keep
/// the store from opening: record checksums are sealed with the store id, which clients never see.
#[test]
fn a_commit_record_inside_event_data_never_passes_for_a_later_batch() {
    let dir = TempDir::new("fake-commit");
    let rt = rt();
    let store = FileStore::open(dir.path()).unwrap();
    fill(&store, &rt);
    // A commit record (body: kind 3, batch start, first and last position, record count).
    let mut fake = Vec::new();
    fake.extend_from_slice(&29u32.to_le_bytes());
    fake.extend_from_slice(&[0; 4]);
    fake.push(3);
    for word in [1u64 << 40, 1_000, 1_000] {
        fake.extend_from_slice(&word.to_le_bytes());
    }
    fake.extend_from_slice(&1u32.to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&fake[..4]), &fake[8..]);
    fake[4..8].copy_from_slice(&crc.to_le_bytes());
    let crafted = Event::new("Crafted", [b"padding ".repeat(4), fake].concat()).tagged("client");
    rt.block_on(store.append(vec![crafted], None)).unwrap();
    drop(store);
    std::fs::remove_file(dir.path().join("index.ckpt")).unwrap();
    // Tear the last batch as a crash can: its first bytes never reached the disk.
    let path = log(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    let last_batch = find(&bytes, b"MARKER-09-2");
    let last_batch =
        last_batch + bytes[last_batch..].windows(4).position(|w| w == [29, 0, 0, 0]).unwrap() + 29 + 8;
    bytes[last_batch..last_batch + 8].fill(0);
    std::fs::write(&path, &bytes).unwrap();

    let store = FileStore::open(dir.path()).expect("a torn tail, not damage");
    assert_eq!(datas(&store, &rt, &Query::all()).unwrap().len(), 30);
    assert_eq!(std::fs::metadata(&path).unwrap().len(), last_batch as u64, "the torn batch was cut off");
}

/// A record whose checksum holds but whose contents make no sense (here an unknown kind) is
/// damage even in the last batch: a torn write never leaves a valid checksum, so cutting it off
/// as a torn tail would drop an acknowledged append.
#[test]
fn a_malformed_record_with_a_valid_checksum_in_the_last_batch_is_damage() {
    let dir = TempDir::new("malformed");
    let rt = rt();
    let store = FileStore::open(dir.path()).unwrap();
    fill(&store, &rt);
    drop(store);
    std::fs::remove_file(dir.path().join("index.ckpt")).unwrap();
    let path = log(dir.path());
    let mut bytes = std::fs::read(&path).unwrap();
    let store_id: [u8; 16] = bytes[12..28].try_into().unwrap();
    let seal = crc32c::crc32c(&store_id);
    let sealed_crc =
        |record: &[u8]| crc32c::crc32c_append(crc32c::crc32c_append(seal, &record[..4]), &record[8..]);
    // The length of the valid record at `at`, if one starts there.
    let record_at = |bytes: &[u8], at: usize| {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        let record = bytes.get(at..at + 8 + len)?;
        (sealed_crc(record) == u32::from_le_bytes(record[4..8].try_into().unwrap())).then_some(len)
    };
    // The last event's record, the one holding its data.
    let data = find(&bytes, b"MARKER-09-2");
    let start = (0..data).rev().find(|&at| record_at(&bytes, at).is_some_and(|len| at + 8 + len > data));
    let start = start.expect("the record of the last event");
    let end = start + 8 + record_at(&bytes, start).unwrap();
    bytes[start + 8] = 0x7F;
    let crc = sealed_crc(&bytes[start..end]);
    bytes[start + 4..start + 8].copy_from_slice(&crc.to_le_bytes());
    std::fs::write(&path, &bytes).unwrap();

    let why = expect_corruption(FileStore::open(dir.path()).map(|_| ()), "events.log");
    assert!(why.contains("unknown record kind"), "{why}");
    assert!(!dcb_file::verify(dir.path()).unwrap().is_ok());
    assert_eq!(std::fs::read(&path).unwrap(), bytes, "the log was changed");
}

/// A store written by the last build of log format 1 (`tests/data/v1-store`: four events in
/// three appends, one with a uuid and metadata, one with tracking, then the zeros that build
/// wrote ahead) opens, reads whole, takes appends (in format 1), reopens and verifies.
#[test]
fn a_store_written_in_format_1_opens_and_takes_appends() {
    let dir = TempDir::new("v1-store");
    let fixture = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/v1-store");
    std::fs::create_dir_all(dir.path()).unwrap();
    for file in ["events.log", "index.ckpt"] {
        std::fs::copy(fixture.join(file), dir.path().join(file)).unwrap();
    }
    let rt = rt();
    let store = FileStore::open(dir.path()).unwrap();
    let read = rt.block_on(store.read(&Query::all(), ReadOptions::default())).unwrap();
    let types: Vec<_> = read.events.iter().map(|e| e.event.event_type.as_str()).collect();
    assert_eq!(types, ["CourseRegistered", "StudentRegistered", "StudentJoinedCourse", "Projected"]);
    let joined = &read.events[2].event;
    assert_eq!(
        (joined.tags.as_slice(), joined.metadata.get("by").map(String::as_str)),
        (&["student-1".to_owned(), "course-1".to_owned()][..], Some("test"))
    );
    assert_eq!(read.events[1].event.uuid, Some(dcb::Uuid::from_u128(1)));
    assert_eq!(&read.events[3].event.data[..], [0, 255, 7]);
    assert_eq!(rt.block_on(store.tracking_position("upstream")).unwrap(), Some(42));
    let condition = AppendCondition::new(QueryItem::tags(["course-1"]).into(), Some(3));
    let joined = Event::new("StudentJoinedCourse", "{}").with_tags(["student-2", "course-1"]);
    assert_eq!(rt.block_on(store.append(vec![joined], Some(condition))).unwrap(), 5);
    drop(store);

    let store = FileStore::open(dir.path()).unwrap();
    assert_eq!(datas(&store, &rt, &QueryItem::tags(["course-1"]).into()).unwrap().len(), 3);
    drop(store);
    let report = dcb_file::verify(dir.path()).unwrap();
    assert!(report.is_ok() && report.events == 5, "{report}");
    let header = std::fs::read(log(dir.path())).unwrap();
    assert_eq!(header[8..12], 1u32.to_le_bytes(), "the log's format changed");
}

#[test]
fn a_corrupted_event_is_never_served() {
    let dir = TempDir::new("corrupt-read");
    let rt = rt();
    let store = FileStore::open(dir.path()).unwrap();
    fill(&store, &rt);
    drop(store);
    let bytes = std::fs::read(log(dir.path())).unwrap();
    flip_byte(&log(dir.path()), find(&bytes, b"MARKER-04-1") + 3);
    // The checkpoint spares reading the log on open; the damage shows when the event is read.
    let store = FileStore::open(dir.path()).unwrap();
    expect_corruption(datas(&store, &rt, &QueryItem::tags(["b4"]).into()), "events.log");
    expect_corruption(datas(&store, &rt, &Query::all()), "events.log");
    assert_eq!(datas(&store, &rt, &QueryItem::tags(["b5"]).into()).unwrap().len(), 3);
    drop(store);
    let report = dcb_file::verify(dir.path()).unwrap();
    assert!(!report.is_ok(), "verify missed the damage: {report}");
}

#[test]
fn a_damaged_checkpoint_is_reported_and_can_be_rebuilt() {
    let dir = TempDir::new("corrupt-checkpoint");
    let rt = rt();
    let store = FileStore::open(dir.path()).unwrap();
    fill(&store, &rt);
    drop(store);
    let checkpoint = dir.path().join("index.ckpt");
    let len = std::fs::metadata(&checkpoint).unwrap().len() as usize;
    flip_byte(&checkpoint, len / 2);
    let message = expect_corruption(FileStore::open(dir.path()).map(|_| ()), "index.ckpt");
    assert!(message.contains("remove"), "no advice on how to recover: {message}");
    std::fs::remove_file(&checkpoint).unwrap();
    let store = FileStore::open(dir.path()).unwrap();
    assert_eq!(rt.block_on(store.head()).unwrap(), Some(30));
    drop(store);
    // Closing wrote a new checkpoint, which verify compares with the log.
    let report = dcb_file::verify(dir.path()).unwrap();
    assert!(report.is_ok(), "{report}");
    assert_eq!((report.events, report.batches, report.checkpoint_positions), (30, 10, Some(30)));
    assert_eq!((report.tags, report.types), (10, 3));
}

#[test]
fn a_log_cut_below_its_checkpoint_is_corruption() {
    let dir = TempDir::new("short-log");
    let rt = rt();
    let store = FileStore::open(dir.path()).unwrap();
    fill(&store, &rt);
    drop(store);
    let written = dcb_file::verify(dir.path()).unwrap();
    let data_end = (written.log_bytes - written.zeroed_bytes) as usize;
    let bytes = std::fs::read(log(dir.path())).unwrap();
    std::fs::write(log(dir.path()), &bytes[..data_end / 2]).unwrap();
    expect_corruption(FileStore::open(dir.path()).map(|_| ()), "events.log");
}

#[test]
fn the_same_directory_cannot_be_opened_twice() {
    let dir = TempDir::new("twice");
    let store = FileStore::open(dir.path()).unwrap();
    match FileStore::open(dir.path()) {
        Err(Error::Io { message, .. }) => assert!(message.contains("already open"), "{message}"),
        other => panic!("a second open was not refused: {:?}", other.map(|_| ())),
    }
    drop(store);
    drop(FileStore::open(dir.path()).unwrap());
}

#[test]
fn an_append_too_large_for_a_batch_is_refused() {
    let dir = TempDir::new("large");
    let rt = rt();
    let store = FileStore::open(dir.path()).unwrap();
    let data = Bytes::from(vec![7u8; MAX_EVENT_DATA_BYTES]);
    let events: Vec<Event> = (0..65).map(|_| Event::new("Big", data.clone())).collect();
    match rt.block_on(store.append(events, None)) {
        Err(Error::InvalidArgument(message)) => assert!(message.contains("limit"), "{message}"),
        other => panic!("expected an invalid-argument error, got {other:?}"),
    }
    // One event at the data limit is fine, and reads back whole.
    rt.block_on(store.append(vec![Event::new("Big", data.clone())], None)).unwrap();
    let read = rt.block_on(store.read(&Query::all(), ReadOptions::default())).unwrap();
    assert_eq!(read.events[0].event.data, data);
}

#[test]
fn the_not_synced_mode_keeps_appends_across_a_clean_reopen() {
    let dir = TempDir::new("not-synced");
    let rt = rt();
    let store =
        FileStore::open_with(dir.path(), FileStoreOptions::default().sync(SyncMode::NotSynced)).unwrap();
    fill(&store, &rt);
    drop(store);
    let store = FileStore::open(dir.path()).unwrap();
    assert_eq!(rt.block_on(store.head()).unwrap(), Some(30));
}

/// Small reads may be served from the cache of recently written records, large ones read runs of
/// adjacent records from the log into shared buffers (split at a size bound): every way must give
/// the same events, in both directions, before and after a reopen empties the cache.
#[test]
fn reads_of_every_size_and_direction_agree_from_the_cache_and_from_the_log() {
    let dir = TempDir::new("read-paths");
    let rt = rt();
    // Mostly small events, every 97th one of 100 kB, so that runs of adjacent records are cut
    // by the bound on a run's bytes as well as by gaps between matches.
    let written: Vec<Event> = (0..1000u32)
        .map(|i| {
            let size = if i % 97 == 0 { 100_000 } else { (i % 50) as usize };
            let data: Vec<u8> = (0..size).map(|k| (i as usize + k) as u8).collect();
            Event::new(format!("T{}", i % 3), data).with_tags(["all".to_string(), format!("m{}", i % 7)])
        })
        .collect();
    let queries: Vec<Query> =
        vec![Query::all(), QueryItem::tags(["m3"]).into(), QueryItem::types(["T1"]).and_tags(["all"]).into()];
    let check = |store: &FileStore, when: &str| {
        for query in &queries {
            for backwards in [false, true] {
                for limit in [None, Some(1), Some(10), Some(64), Some(65), Some(400)] {
                    let mut want: Vec<(u64, Event)> =
                        (1..).zip(written.iter().cloned()).filter(|(_, e)| query.matches(e)).collect();
                    if backwards {
                        want.reverse();
                    }
                    want.truncate(limit.map_or(usize::MAX, |l| l as usize));
                    let options = ReadOptions { limit, backwards, ..ReadOptions::default() };
                    let got = rt.block_on(store.read(query, options)).unwrap().events;
                    let got: Vec<(u64, Event)> = got.into_iter().map(|e| (e.position, e.event)).collect();
                    assert!(got == want, "{when}: {query:?}, backwards {backwards}, limit {limit:?}");
                }
            }
        }
    };
    let store = FileStore::open(dir.path()).unwrap();
    for chunk in written.chunks(100) {
        rt.block_on(store.append(chunk.to_vec(), None)).unwrap();
    }
    check(&store, "as written");
    drop(store);
    check(&FileStore::open(dir.path()).unwrap(), "after reopening");
}
