//! The file store runs the whole conformance kit: every rule, the race test and the model test.

mod common;

dcb::conformance_tests!(|| async { common::TempStore::new() });

/// The kit starts every test from an empty store, so it never reads a store whose index is partly
/// a checkpoint (frozen) and partly appended since (delta). This reads one against the memory
/// store, holding the same events, with query shapes that cross the two parts: a tag only in the
/// checkpoint with one only in the new part, a type seen first in the new part, a tag listed
/// twice, unknown types, repeated types, and windows at the edges.
#[test]
fn reads_across_a_checkpoint_and_newer_events_agree_with_the_memory_store() {
    use dcb::{Event, EventStore, MemoryStore, Query, QueryItem, ReadOptions};
    use dcb_file::{FileStore, FileStoreOptions};

    let older = vec![
        Event::new("A", "1").with_tags(["f", "x"]),
        Event::new("B", "2").with_tags(["t", "t", "y"]),
        Event::new("A", "3").with_tags(["z"]),
        Event::new("B", "4").with_tags(["f", "y", "z"]),
    ];
    let newer = vec![
        Event::new("C", "5").with_tags(["n", "x"]),
        Event::new("A", "6").with_tags(["y", "z"]),
        Event::new("C", "7").with_tags(["n", "f"]),
        Event::new("B", "8"),
    ];
    let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
    let dir = common::TempDir::new("frozen-and-delta");
    let options = FileStoreOptions::default().checkpoint_interval(1);
    let store = FileStore::open_with(dir.path(), options.clone()).unwrap();
    for event in &older {
        rt.block_on(store.append(vec![event.clone()], None)).unwrap();
    }
    drop(store);
    assert!(dir.path().join("index.ckpt").exists(), "the close wrote no checkpoint to freeze");
    let store = FileStore::open_with(dir.path(), options).unwrap();
    let memory = MemoryStore::new();
    for event in &older {
        rt.block_on(memory.append(vec![event.clone()], None)).unwrap();
    }
    for event in &newer {
        rt.block_on(store.append(vec![event.clone()], None)).unwrap();
        rt.block_on(memory.append(vec![event.clone()], None)).unwrap();
    }

    let tags = |tags: &[&str]| QueryItem::tags(tags.iter().copied());
    let queries: Vec<Query> = vec![
        Query::all(),
        tags(&["f"]).into(),
        tags(&["f", "n"]).into(),
        tags(&["f", "z"]).into(),
        tags(&["t"]).into(),
        tags(&["n"]).into(),
        tags(&["x", "y"]).into(),
        QueryItem::types(["C"]).into(),
        QueryItem::types(["A", "A"]).into(),
        QueryItem::types(["A", "Nope"]).and_tags(["y"]).into(),
        QueryItem::types(["Nope"]).into(),
        Query::new([tags(&["f"]), QueryItem::types(["C"])]),
        Query::new([tags(&["z"]), tags(&["n"]), QueryItem::types(["B"]).and_tags(["y"])]),
    ];
    let windows = [
        ReadOptions::default(),
        ReadOptions::default().limit(2),
        ReadOptions::default().backwards(),
        ReadOptions::default().backwards().limit(2),
        ReadOptions::default().after(4),
        ReadOptions::default().after(4).backwards(),
        ReadOptions::default().after(3).before(7),
        ReadOptions::default().after(u64::MAX),
        ReadOptions::default().before(0),
        ReadOptions::default().limit(u32::MAX),
        ReadOptions::default().backwards().after(99),
    ];
    for query in &queries {
        for options in windows {
            let file = rt.block_on(store.read(query, options)).unwrap();
            let expected = rt.block_on(memory.read(query, options)).unwrap();
            let positions =
                |read: &dcb::ReadResponse| read.events.iter().map(|e| e.position).collect::<Vec<_>>();
            assert_eq!(
                (positions(&file), file.head),
                (positions(&expected), expected.head),
                "{query:?} with {options:?}"
            );
        }
    }
}
