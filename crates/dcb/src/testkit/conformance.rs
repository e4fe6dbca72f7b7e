//! Every rule of the store contract as a named test. Each takes a fresh, empty store.

use std::time::Duration;

use futures_util::StreamExt;

use super::{event, positions};
use crate::limits::{
    MAX_APPEND_BYTES, MAX_EVENT_DATA_BYTES, MAX_NAME_BYTES, MAX_QUERY_ITEMS, MAX_TAGS_PER_EVENT,
};
use crate::{
    AppendCondition, AppendRequest, Bytes, Error, Event, EventStore, Query, QueryItem, ReadOptions,
    TrackingInfo, Uuid,
};

/// How long a subscription may take to deliver an event that is already recorded.
const DELIVERY: Duration = Duration::from_secs(10);
/// How long a subscription is watched to show that it waits instead of inventing events.
const QUIET: Duration = Duration::from_millis(200);

async fn append<S: EventStore>(store: &S, events: Vec<Event>) -> u64 {
    store.append(events, None).await.expect("unconditional append")
}

async fn read<S: EventStore>(store: &S, query: &Query, options: ReadOptions) -> crate::ReadResponse {
    store.read(query, options).await.expect("read")
}

fn all() -> Query {
    Query::all()
}

fn tags(tags: &[&str]) -> Query {
    QueryItem::tags(tags.iter().copied()).into()
}

fn types(types: &[&str]) -> Query {
    QueryItem::types(types.iter().copied()).into()
}

/// An item of `types` and `tags`, either possibly empty.
fn item(types: &[&str], tags: &[&str]) -> QueryItem {
    QueryItem::types(types.iter().copied()).and_tags(tags.iter().copied())
}

fn assert_invalid(result: crate::Result<u64>, what: &str) {
    match result {
        Err(Error::InvalidArgument(_)) => {}
        other => panic!("{what}: expected an invalid-argument error, got {other:?}"),
    }
}

fn assert_integrity(result: crate::Result<u64>, what: &str) {
    match result {
        Err(Error::Integrity(_)) => {}
        other => panic!("{what}: expected an integrity error, got {other:?}"),
    }
}

/// The six events the read and condition matrices run against:
///
/// | position | type | tags |
/// |---|---|---|
/// | 1 | A | x |
/// | 2 | B | x, y |
/// | 3 | C | y |
/// | 4 | A | y, z |
/// | 5 | B | (none) |
/// | 6 | C | x, y, z |
pub async fn matrix_events<S: EventStore>(store: &S) {
    let events = [
        event("A", &["x"]),
        event("B", &["x", "y"]),
        event("C", &["y"]),
        event("A", &["y", "z"]),
        event("B", &[]),
        event("C", &["x", "y", "z"]),
    ];
    // Three appends, so that the matrix also spans append boundaries.
    append(store, events[..2].to_vec()).await;
    append(store, events[2..3].to_vec()).await;
    assert_eq!(append(store, events[3..].to_vec()).await, 6);
}

/// An empty store has no head, and reads of it return nothing and no head.
pub async fn empty_store_has_no_head<S: EventStore>(store: &S) {
    assert_eq!(store.head().await.unwrap(), None);
    let read = read(store, &all(), ReadOptions::default()).await;
    assert!(read.events.is_empty());
    assert_eq!(read.head, None);
    assert_eq!(store.tracking_position("anything").await.unwrap(), None);
}

/// Positions start at 1, and the events of one append get consecutive positions; an append
/// returns the position of its last event.
pub async fn positions_start_at_one_and_are_consecutive_per_append<S: EventStore>(store: &S) {
    assert_eq!(append(store, vec![event("A", &[])]).await, 1);
    assert_eq!(append(store, vec![event("B", &[]), event("C", &[]), event("D", &[])]).await, 4);
    assert_eq!(append(store, vec![event("E", &[])]).await, 5);
    let read = read(store, &all(), ReadOptions::default()).await;
    assert_eq!(positions(&read), [1, 2, 3, 4, 5]);
    let types: Vec<&str> = read.events.iter().map(|e| e.event.event_type.as_str()).collect();
    assert_eq!(types, ["A", "B", "C", "D", "E"]);
    assert_eq!(store.head().await.unwrap(), Some(5));
}

/// Type, data (any bytes), tags in their given order, uuid and metadata come back unchanged.
pub async fn events_round_trip_unchanged<S: EventStore>(store: &S) {
    let uuid = Uuid::from_u128(0x1234_5678_9abc_def0_1234_5678_9abc_def0);
    let binary: Vec<u8> = (0..=255).collect();
    let original = Event::new("Ünïcode type", binary)
        .with_tags([
            "zeta",
            "alpha",
            "mid:dle",
            "spaces and = signs",
            "NULL",
            "{a,b}",
            " \"q\" \\ ",
            "Ünï,\"x\"",
        ])
        .with_uuid(uuid)
        .with_metadata("correlation", "c-1")
        .with_metadata("empty", "")
        .with_metadata("{k,\"}", "NULL")
        .with_metadata("clé ünï", "välue, {x}");
    let plain = Event::new("Plain", "");
    append(store, vec![original.clone(), plain.clone()]).await;
    let read = read(store, &all(), ReadOptions::default()).await;
    assert_eq!(read.events[0].event, original);
    assert_eq!(read.events[1].event, plain);
}

/// An append of no events is a programming error: refused, nothing written.
pub async fn empty_append_is_invalid_and_writes_nothing<S: EventStore>(store: &S) {
    assert_invalid(store.append(vec![], None).await, "empty append");
    let condition = AppendCondition::new(all(), None);
    assert_invalid(store.append(vec![], Some(condition)).await, "empty conditional append");
    assert_eq!(store.head().await.unwrap(), None);
}

/// Events breaking the limits are refused with an invalid-argument error, and an append holding
/// one bad event among good ones writes none of them.
pub async fn invalid_events_are_refused_and_nothing_is_written<S: EventStore>(store: &S) {
    append(store, vec![event("Before", &["t"])]).await;
    let good = event("Good", &["t"]);
    let long_name = "n".repeat(MAX_NAME_BYTES + 1);
    let too_many_tags: Vec<String> = (0..=MAX_TAGS_PER_EVENT).map(|i| format!("tag-{i}")).collect();
    let bad = [
        ("an empty type", Event::new("", "")),
        ("a type with a NUL", Event::new("A\0B", "")),
        ("a type over the length limit", Event::new(long_name.clone(), "")),
        ("an empty tag", Event::new("A", "").tagged("")),
        ("a tag over the length limit", Event::new("A", "").tagged(long_name.clone())),
        ("too many tags", Event::new("A", "").with_tags(too_many_tags)),
        ("data over the size limit", Event::new("A", vec![0u8; MAX_EVENT_DATA_BYTES + 1])),
        ("an empty metadata key", Event::new("A", "").with_metadata("", "v")),
    ];
    for (what, bad_event) in bad {
        let result = store.append(vec![good.clone(), bad_event], None).await;
        assert_invalid(result, what);
    }
    let tracked = AppendRequest::new(vec![good.clone()]).tracking(TrackingInfo::new("", 1));
    assert_invalid(store.append_request(tracked).await, "an empty tracking source");
    let bad_condition = AppendCondition::new(QueryItem::tags([""]).into(), None);
    assert_invalid(store.append(vec![good], Some(bad_condition)).await, "a condition with an empty tag");
    // Each event within the limits, all of them together over the limit of an append.
    let megabyte = Bytes::from(vec![7u8; MAX_EVENT_DATA_BYTES]);
    let events = (0..=MAX_APPEND_BYTES / MAX_EVENT_DATA_BYTES).map(|_| Event::new("Big", megabyte.clone()));
    assert_invalid(store.append(events.collect(), None).await, "an append over the byte limit");
    assert_eq!(store.head().await.unwrap(), Some(1), "a refused append wrote something");
}

/// Queries breaking the limits are refused by reads, subscriptions and conditions alike.
pub async fn oversized_queries_are_refused<S: EventStore>(store: &S) {
    let huge = Query::new((0..=MAX_QUERY_ITEMS).map(|i| QueryItem::tags([format!("t{i}")])));
    assert!(matches!(store.read(&huge, ReadOptions::default()).await, Err(Error::InvalidArgument(_))));
    assert!(matches!(store.subscribe(huge.clone(), None).await, Err(Error::InvalidArgument(_))));
    let condition = AppendCondition::new(huge, None);
    assert_invalid(store.append(vec![event("A", &[])], Some(condition)).await, "huge condition");
    let empty_type = QueryItem::types([""]).into();
    assert!(matches!(store.read(&empty_type, ReadOptions::default()).await, Err(Error::InvalidArgument(_))));
    assert_eq!(store.head().await.unwrap(), None);
}

/// `after` is exclusive: a read after position p starts at p + 1.
pub async fn read_after_is_exclusive<S: EventStore>(store: &S) {
    append(store, (0..5).map(|_| event("A", &["t"])).collect()).await;
    for after in 0..=5 {
        let read = read(store, &tags(&["t"]), ReadOptions::default().after(after)).await;
        assert_eq!(positions(&read), ((after + 1)..=5).collect::<Vec<_>>(), "after {after}");
    }
    let read = read(store, &all(), ReadOptions::default().after(99)).await;
    assert!(read.events.is_empty());
    assert_eq!(read.head, Some(5), "a read past the end still reports the store head");
}

/// Without a limit, the head is the store's last position, even when nothing matched.
pub async fn read_without_limit_reports_the_store_head<S: EventStore>(store: &S) {
    append(store, vec![event("A", &["x"]), event("B", &["y"]), event("C", &["z"])]).await;
    let read = read(store, &tags(&["x"]), ReadOptions::default()).await;
    assert_eq!(positions(&read), [1]);
    assert_eq!(read.head, Some(3));
    let nothing = read_nothing(store).await;
    assert!(nothing.events.is_empty());
    assert_eq!(nothing.head, Some(3));
}

async fn read_nothing<S: EventStore>(store: &S) -> crate::ReadResponse {
    read(store, &tags(&["never-used"]), ReadOptions::default()).await
}

/// With a limit, the head is the position of the last event returned, or none when none was
/// returned (so a limit of zero gives no head).
pub async fn read_with_limit_reports_the_last_returned_position<S: EventStore>(store: &S) {
    append(store, (1..=6).map(|i| event(if i % 2 == 0 { "Even" } else { "Odd" }, &[])).collect()).await;
    let read = read(store, &types(&["Odd"]), ReadOptions::default().limit(2)).await;
    assert_eq!(positions(&read), [1, 3]);
    assert_eq!(read.head, Some(3));
    let read = read_limited(store, 10).await;
    assert_eq!(positions(&read), [1, 3, 5]);
    assert_eq!(read.head, Some(5), "a limit larger than the matches still reports the last returned");
    let read = read_limited(store, 0).await;
    assert!(read.events.is_empty());
    assert_eq!(read.head, None);
    let read = store.read(&tags(&["never-used"]), ReadOptions::default().limit(5)).await.unwrap();
    assert_eq!(read.head, None);
}

/// A byte budget stops a read once the events returned add up to it (by `Event::byte_size`),
/// always after at least one event; forwards it reports the last returned position as the head,
/// like a limit, and backwards the store head. Both bounds together stop at whichever comes first.
pub async fn reads_stop_at_their_byte_budget<S: EventStore>(store: &S) {
    // Events of 1 + 10, 1 + 100, 1 + 10, 1 + 1000 and 1 + 10 bytes.
    let sizes = [10, 100, 10, 1000, 10];
    append(store, sizes.iter().map(|&size| Event::new("E", vec![7u8; size])).collect()).await;
    let budget = |bytes: usize| ReadOptions::default().max_bytes(bytes);
    let every = types(&["E"]);
    let read_with = |options: ReadOptions| read(store, &every, options);
    let cases: [(ReadOptions, &[u64], Option<u64>); 8] = [
        (budget(11), &[1], Some(1)),
        (budget(12), &[1, 2], Some(2)),
        (budget(112), &[1, 2], Some(2)),
        (budget(113), &[1, 2, 3], Some(3)),
        (budget(0), &[1], Some(1)),
        (budget(1 << 20), &[1, 2, 3, 4, 5], Some(5)),
        (budget(200).after(2), &[3, 4], Some(4)),
        (budget(200).limit(1), &[1], Some(1)),
    ];
    for (options, positions_read, head) in cases {
        let got = read_with(options).await;
        assert_eq!(positions(&got), positions_read, "{options:?}");
        assert_eq!(got.head, head, "{options:?}");
    }
    let back = read_with(budget(1002).backwards()).await;
    assert_eq!(positions(&back), [5, 4]);
    assert_eq!(back.head, Some(5));
    let nothing = read(store, &tags(&["never-used"]), budget(10)).await;
    assert!(nothing.events.is_empty());
    assert_eq!(nothing.head, None);
}

async fn read_limited<S: EventStore>(store: &S, limit: u32) -> crate::ReadResponse {
    read(store, &types(&["Odd"]), ReadOptions::default().limit(limit)).await
}

/// A backward read returns the newest matches first, still only after `after`, and reports the
/// store head (nothing newer than the returned events was left out).
pub async fn backward_reads_return_newest_first_and_the_store_head<S: EventStore>(store: &S) {
    matrix_events(store).await;
    let y = tags(&["y"]);
    let read = read(store, &y, ReadOptions::default().backwards()).await;
    assert_eq!(positions(&read), [6, 4, 3, 2]);
    assert_eq!(read.head, Some(6));
    let read = read_back(store, &y, ReadOptions::default().backwards().after(2).limit(2)).await;
    assert_eq!(positions(&read), [6, 4]);
    assert_eq!(read.head, Some(6));
    let read = read_back(store, &types(&["A"]), ReadOptions::default().backwards().limit(1)).await;
    assert_eq!(positions(&read), [4]);
    assert_eq!(read.head, Some(6));
    let read = read_back(store, &all(), ReadOptions::default().backwards().after(3)).await;
    assert_eq!(positions(&read), [6, 5, 4]);
}

async fn read_back<S: EventStore>(store: &S, query: &Query, options: ReadOptions) -> crate::ReadResponse {
    read(store, query, options).await
}

/// `before` is exclusive in both directions and combines with `after` and `limit`. It caps the
/// head: a read that stops below the store's end has considered the store only up to
/// `before - 1`. Backward reads page through a store by passing the last position seen.
pub async fn read_before_is_exclusive_and_caps_the_head<S: EventStore>(store: &S) {
    matrix_events(store).await;
    let y = tags(&["y"]);
    let cases = [
        ("forwards", ReadOptions::default().before(4), vec![2, 3], Some(3)),
        ("forwards, after and before", ReadOptions::default().after(2).before(6), vec![3, 4], Some(5)),
        ("forwards, limited", ReadOptions::default().after(2).before(6).limit(1), vec![3], Some(3)),
        ("backwards", ReadOptions::default().before(6).backwards(), vec![4, 3, 2], Some(5)),
        ("backwards, limited", ReadOptions::default().before(6).backwards().limit(1), vec![4], Some(5)),
        ("backwards, after", ReadOptions::default().after(2).before(6).backwards(), vec![4, 3], Some(5)),
        ("past the end", ReadOptions::default().before(99), vec![2, 3, 4, 6], Some(6)),
        ("below the first", ReadOptions::default().before(1), vec![], None),
        ("an empty window", ReadOptions::default().after(3).before(4), vec![], Some(3)),
    ];
    for (name, options, expected, head) in cases {
        let read = read(store, &y, options).await;
        assert_eq!(positions(&read), expected, "{name}: {options:?}");
        assert_eq!(read.head, head, "{name}: head of {options:?}");
    }
    let mut before = None;
    let mut seen = Vec::new();
    loop {
        let page = ReadOptions { before, limit: Some(2), backwards: true, ..ReadOptions::default() };
        let page = read(store, &all(), page).await;
        let Some(last) = page.events.last() else { break };
        before = Some(last.position);
        seen.extend(positions(&page));
    }
    assert_eq!(seen, [6, 5, 4, 3, 2, 1], "paging backwards two at a time");
}

/// Reads of every query shape return exactly the matching events (see [`matrix_events`]).
pub async fn read_matrix<S: EventStore>(store: &S) {
    matrix_events(store).await;
    let cases: Vec<(&str, Query, Vec<u64>)> = vec![
        ("no items matches all", Query::all(), vec![1, 2, 3, 4, 5, 6]),
        ("an empty item matches all", Query::from(item(&[], &[])), vec![1, 2, 3, 4, 5, 6]),
        (
            "an empty item among others",
            Query::new([item(&["A"], &[]), item(&[], &[])]),
            vec![1, 2, 3, 4, 5, 6],
        ),
        ("one type", types(&["A"]), vec![1, 4]),
        ("more types widen", types(&["A", "B"]), vec![1, 2, 4, 5]),
        ("unknown type", types(&["Nope"]), vec![]),
        ("one tag", tags(&["x"]), vec![1, 2, 6]),
        ("more tags narrow", tags(&["x", "y"]), vec![2, 6]),
        ("three tags", tags(&["x", "y", "z"]), vec![6]),
        ("unknown tag", tags(&["nope"]), vec![]),
        ("known and unknown tag", tags(&["x", "nope"]), vec![]),
        ("a repeated tag", tags(&["y", "y"]), vec![2, 3, 4, 6]),
        ("type and tag", Query::from(item(&["A"], &["y"])), vec![4]),
        ("types and tag", Query::from(item(&["B", "C"], &["y"])), vec![2, 3, 6]),
        ("types and tags", Query::from(item(&["A", "C"], &["y", "z"])), vec![4, 6]),
        ("items are alternatives", Query::new([item(&["A"], &[]), item(&[], &["z"])]), vec![1, 4, 6]),
        (
            "overlapping items yield once",
            Query::new([item(&[], &["x"]), item(&[], &["y"])]),
            vec![1, 2, 3, 4, 6],
        ),
        ("two typed items", Query::new([item(&["A"], &["x"]), item(&["C"], &["z"])]), vec![1, 6]),
        ("a type no item tag holds", Query::from(item(&["B"], &["z"])), vec![]),
    ];
    for (name, query, expected) in cases {
        let read = read(store, &query, ReadOptions::default()).await;
        assert_eq!(positions(&read), expected, "read matrix case: {name}");
        assert_eq!(read.head, Some(6), "read matrix case: {name}");
        let backwards = store.read(&query, ReadOptions::default().backwards()).await.unwrap();
        let mut reversed = expected.clone();
        reversed.reverse();
        assert_eq!(positions(&backwards), reversed, "read matrix case, backwards: {name}");
        for after in [1, 3, 5] {
            let read = store.read(&query, ReadOptions::default().after(after).limit(2)).await.unwrap();
            let expected_window: Vec<u64> = expected.iter().copied().filter(|&p| p > after).take(2).collect();
            assert_eq!(positions(&read), expected_window, "read matrix case {name}, after {after}, limit 2");
        }
        let mut window: Vec<u64> = expected.iter().copied().filter(|&p| p > 1 && p < 6).collect();
        let read = store.read(&query, ReadOptions::default().after(1).before(6)).await.unwrap();
        assert_eq!(positions(&read), window, "read matrix case {name}, after 1, before 6");
        window.reverse();
        let read = store.read(&query, ReadOptions::default().after(1).before(6).backwards()).await.unwrap();
        assert_eq!(positions(&read), window, "read matrix case {name}, after 1, before 6, backwards");
    }
}

/// Conditions fail exactly when an event after `after` matches their query (see
/// [`matrix_events`]); successful ones append, failed ones write nothing.
pub async fn condition_matrix<S: EventStore>(store: &S) {
    matrix_events(store).await;
    let item = |types: &[&str], tags: &[&str]| -> Query { item(types, tags).into() };
    let failing: Vec<(&str, Query, Option<u64>)> = vec![
        ("a tag seen after `after`", tags(&["x"]), Some(5)),
        ("a tag, after none", tags(&["x"]), None),
        ("a type seen after `after`", types(&["A"]), Some(3)),
        ("the empty query on a non-empty store", all(), None),
        ("the empty query when head exceeds after", all(), Some(5)),
        ("type and tag", item(&["C"], &["x"]), Some(5)),
        ("one of two items", Query::new([QueryItem::tags(["nope"]), QueryItem::types(["B"])]), Some(4)),
        ("two tags", tags(&["y", "z"]), Some(5)),
    ];
    for (name, query, after) in failing {
        let result =
            store.append(vec![event("Probe", &["probe"])], Some(AppendCondition::new(query, after))).await;
        assert_integrity(result, name);
        assert_eq!(store.head().await.unwrap(), Some(6), "failed condition wrote something: {name}");
    }
    // Successful appends add `Probe` events tagged `probe`, which none of the later queries match.
    let mut head = 6;
    let passing: Vec<(&str, Query, Option<u64>)> = vec![
        ("the empty query at the head", all(), Some(6)),
        ("a tag only seen before `after`", tags(&["x"]), Some(6)),
        ("a type only seen at `after`", types(&["A"]), Some(4)),
        ("a tag never seen, after none", tags(&["nope"]), None),
        ("a type never seen", types(&["Nope"]), Some(0)),
        ("type and tag never together", item(&["B"], &["z"]), None),
        ("tags never together", tags(&["x", "nope"]), None),
        ("after beyond the head", tags(&["y"]), Some(100)),
    ];
    for (name, query, after) in passing {
        let result =
            store.append(vec![event("Probe", &["probe"])], Some(AppendCondition::new(query, after))).await;
        head += 1;
        assert_eq!(result.unwrap_or_else(|e| panic!("condition {name}: {e}")), head, "condition {name}");
    }
}

/// Items checked from positions of their own ([`AppendCondition::item_after`]) fail exactly when
/// an event after the item's position (or after `after`, if later) matches it (see
/// [`matrix_events`]), for appends of one event and of several; positions given for some items
/// but not all are refused, with nothing written.
pub async fn item_positions_matrix<S: EventStore>(store: &S) {
    matrix_events(store).await;
    let items = |items: &[(&[&str], &[&str], Option<u64>)], after: Option<u64>| {
        let query = Query::new(items.iter().map(|(types, tags, _)| item(types, tags)));
        let own = items.iter().enumerate().filter_map(|(i, (_, _, own))| own.map(|own| (i, own)));
        own.fold(AppendCondition::new(query, after), |condition, (i, own)| condition.with_item_after(i, own))
    };
    let failing = vec![
        (
            "the second item's tag after its own position",
            items(&[(&[], &["x"], Some(6)), (&[], &["y"], Some(5))], None),
        ),
        (
            "the first item's tag after its own position",
            items(&[(&[], &["x"], Some(2)), (&[], &["z"], Some(6))], Some(0)),
        ),
        (
            "an item without a position of its own",
            items(&[(&[], &["x"], Some(6)), (&[], &["z"], None)], Some(3)),
        ),
        ("a type after its item's position", items(&[(&["A"], &[], Some(3))], None)),
        (
            "a type and a tag after their item's position",
            items(&[(&["C"], &["y"], Some(5)), (&[], &["nope"], None)], None),
        ),
        ("two tags after their item's position", items(&[(&[], &["y", "z"], Some(4))], Some(1))),
        ("one of two types after their item's position", items(&[(&["A", "C"], &[], Some(5))], None)),
        (
            "an item matching every event after its position",
            items(&[(&[], &[], Some(5)), (&[], &["nope"], None)], None),
        ),
    ];
    for (name, condition) in failing {
        for events in
            [vec![event("Probe", &["probe"])], vec![event("Probe", &["probe"]), event("Probe", &[])]]
        {
            assert_integrity(store.append(events, Some(condition.clone())).await, name);
            assert_eq!(store.head().await.unwrap(), Some(6), "failed condition wrote something: {name}");
        }
    }
    let mut head = 6;
    let passing = vec![
        (
            "each tag after its own position",
            items(&[(&[], &["x"], Some(6)), (&[], &["y"], Some(6))], Some(1)),
        ),
        (
            "each tag after its own position, no `after`",
            items(&[(&[], &["x"], Some(6)), (&[], &["z"], Some(6))], None),
        ),
        ("a type after its item's position", items(&[(&["A"], &[], Some(4))], None)),
        ("a type and a tag after their item's position", items(&[(&["C"], &["y"], Some(6))], Some(2))),
        ("two tags after their item's position", items(&[(&[], &["y", "z"], Some(6))], Some(3))),
        ("`after` later than an item's position", items(&[(&[], &["x"], Some(1))], Some(6))),
        ("two types after their item's position", items(&[(&["A", "C"], &[], Some(6))], Some(1))),
        ("an item matching every event after the head", items(&[(&[], &[], Some(100))], None)),
    ];
    for (i, (name, condition)) in passing.into_iter().enumerate() {
        let events = vec![event("Probe", &["probe"]); 1 + i % 2];
        head += events.len() as u64;
        let result = store.append(events, Some(condition)).await;
        assert_eq!(result.unwrap_or_else(|e| panic!("condition {name}: {e}")), head, "condition {name}");
    }
    let mut uneven = AppendCondition::new(tags(&["x"]).or(QueryItem::tags(["y"])), Some(6));
    uneven.items_after = vec![Some(6)];
    assert_invalid(
        store.append(vec![event("Probe", &["probe"])], Some(uneven)).await,
        "one position for two items",
    );
    assert_eq!(store.head().await.unwrap(), Some(head), "an invalid condition wrote something");
}

/// A retried append whose condition checks items from positions of their own is recognised as
/// the append it repeats, one event or several.
pub async fn retried_append_with_item_positions_returns_the_original_position<S: EventStore>(store: &S) {
    append(store, vec![event("Seed", &["course-1"]), event("Seed", &["student-1"])]).await;
    for (count, uuid) in [(1, 0xC000), (2, 0xC100)] {
        let head = store.head().await.unwrap().unwrap_or(0);
        let events: Vec<Event> = (0..count)
            .map(|i| event("Joined", &["course-1", "student-1"]).with_uuid(Uuid::from_u128(uuid + i)))
            .collect();
        let condition = AppendCondition::new(tags(&["course-1"]).or(QueryItem::tags(["student-1"])), Some(1))
            .with_item_after(0, head)
            .with_item_after(1, head);
        let first = store.append(events.clone(), Some(condition.clone())).await.unwrap();
        assert_eq!(first, head + count as u64);
        append(store, vec![event("Later", &["student-1"])]).await;
        assert_eq!(store.append(events, Some(condition)).await.unwrap(), first, "retry of {count}");
        assert_eq!(store.head().await.unwrap(), Some(first + 1));
    }
}

/// A failed condition leaves the store exactly as it was: no event, no tracking, same head.
pub async fn failed_condition_writes_nothing<S: EventStore>(store: &S) {
    append(store, vec![event("A", &["t"])]).await;
    let request = AppendRequest::new(vec![event("B", &["t"]), event("C", &["u"])])
        .condition(AppendCondition::new(tags(&["t"]), Some(0)))
        .tracking(TrackingInfo::new("projector", 7));
    assert_integrity(store.append_request(request).await, "stale condition");
    assert_eq!(store.head().await.unwrap(), Some(1));
    assert_eq!(store.tracking_position("projector").await.unwrap(), None);
    assert!(read(store, &tags(&["u"]), ReadOptions::default()).await.events.is_empty());
}

/// A conditional append retried after it succeeded (its uuids are the first matches after its
/// `after`, though more matches followed) returns the original last position and writes nothing
/// new; so does a retried append of a single event, a shape stores may take a shorter path for.
pub async fn retried_append_with_uuids_returns_the_original_position<S: EventStore>(store: &S) {
    append(store, vec![event("Seed", &["other"])]).await;
    let events: Vec<Event> =
        (0..3u128).map(|i| event("Joined", &["course-1"]).with_uuid(Uuid::from_u128(0xA000 + i))).collect();
    let condition = AppendCondition::new(tags(&["course-1"]), Some(1));
    let first = store.append(events.clone(), Some(condition.clone())).await.unwrap();
    assert_eq!(first, 4);
    append(store, vec![event("Later", &["course-1"])]).await;
    let retried = store.append(events, Some(condition)).await.unwrap();
    assert_eq!(retried, first);
    assert_eq!(store.head().await.unwrap(), Some(5));

    let single = vec![event("Joined", &["course-2", "student-1"]).with_uuid(Uuid::from_u128(0xA100))];
    let condition = AppendCondition::new(tags(&["course-2"]).or(QueryItem::tags(["student-1"])), Some(5));
    assert_eq!(store.append(single.clone(), Some(condition.clone())).await.unwrap(), 6);
    append(store, vec![event("Later", &["student-1"])]).await;
    assert_eq!(store.append(single, Some(condition)).await.unwrap(), 6, "the single event's retry");
    assert_eq!(store.head().await.unwrap(), Some(7));
}

/// A retried append is recognised when only some of its events match its condition: the first
/// match is its first matching event, the rest lie around it. One with no event matching its
/// condition cannot be told from a conflict, and is refused as one.
pub async fn retried_append_partly_outside_its_condition_returns_the_original_position<S: EventStore>(
    store: &S,
) {
    append(store, vec![event("Seed", &["course-2"])]).await;
    let events = vec![
        event("Left", &["course-1"]).with_uuid(Uuid::from_u128(0xB001)),
        event("Joined", &["course-2"]).with_uuid(Uuid::from_u128(0xB002)),
        event("Noted", &[]).with_uuid(Uuid::from_u128(0xB003)),
    ];
    let condition = AppendCondition::new(tags(&["course-2"]), Some(1));
    assert_eq!(store.append(events.clone(), Some(condition.clone())).await.unwrap(), 4);
    append(store, vec![event("Joined", &["course-2"])]).await;
    assert_eq!(store.append(events.clone(), Some(condition)).await.unwrap(), 4, "the retry");
    let elsewhere = AppendCondition::new(tags(&["course-2"]), Some(2));
    assert_integrity(store.append(events.clone(), Some(elsewhere)).await, "after its first match");

    let outside = AppendCondition::new(tags(&["course-9"]), Some(5));
    let unmatched = vec![event("Noted", &[]).with_uuid(Uuid::from_u128(0xB004))];
    assert_eq!(store.append(unmatched.clone(), Some(outside.clone())).await.unwrap(), 6);
    append(store, vec![event("Opened", &["course-9"])]).await;
    assert_integrity(store.append(unmatched, Some(outside)).await, "nothing of it matches");
    assert_eq!(store.head().await.unwrap(), Some(7));
}

/// A conflict is an integrity error when the matching events are not the submitted ones, or when
/// the submitted events carry no uuids, or the nil uuid (which identifies nothing: a second
/// append carrying it is another append, not a retry).
pub async fn conflict_with_other_uuids_is_an_integrity_error<S: EventStore>(store: &S) {
    let condition = AppendCondition::new(tags(&["course-1"]), None);
    let recorded = event("Joined", &["course-1"]).with_uuid(Uuid::from_u128(1));
    store.append(vec![recorded], Some(condition.clone())).await.unwrap();
    let other = event("Joined", &["course-1"]).with_uuid(Uuid::from_u128(2));
    assert_integrity(store.append(vec![other], Some(condition.clone())).await, "other uuid");
    let same_type_no_uuid = event("Joined", &["course-1"]);
    assert_integrity(store.append(vec![same_type_no_uuid], Some(condition)).await, "no uuid");

    let condition = AppendCondition::new(tags(&["course-2"]), None);
    let nil = || event("Joined", &["course-2"]).with_uuid(Uuid::nil());
    store.append(vec![nil()], Some(condition.clone())).await.unwrap();
    assert_integrity(store.append(vec![nil()], Some(condition)).await, "nil uuid");
    assert_eq!(store.head().await.unwrap(), Some(2));
}

/// A retried conditional append that also records tracking answers with its original position
/// (the condition, and the retry, are checked before the tracking position, which the first
/// attempt recorded); another append at the same tracking position is refused.
pub async fn retried_append_with_tracking_returns_the_original_position<S: EventStore>(store: &S) {
    let tracked = |uuid: u128, position: u64| {
        AppendRequest::new(vec![event("Projected", &["view-1"]).with_uuid(Uuid::from_u128(uuid))])
            .condition(AppendCondition::new(tags(&["view-1"]), None))
            .tracking(TrackingInfo::new("upstream", position))
    };
    assert_eq!(store.append_request(tracked(1, 5)).await.unwrap(), 1);
    assert_eq!(store.append_request(tracked(1, 5)).await.unwrap(), 1, "the retry");
    assert_integrity(store.append_request(tracked(2, 5)).await, "another append, same condition");
    let unconditional =
        AppendRequest::new(vec![event("Projected", &[])]).tracking(TrackingInfo::new("upstream", 5));
    assert_integrity(store.append_request(unconditional).await, "the same tracking position");
    assert_eq!(store.head().await.unwrap(), Some(1));
    assert_eq!(store.tracking_position("upstream").await.unwrap(), Some(5));
}

/// Tracking info is recorded with the events, per source, and read back as the last position.
pub async fn tracking_is_recorded_with_the_events<S: EventStore>(store: &S) {
    assert_eq!(store.tracking_position("upstream").await.unwrap(), None);
    let request = AppendRequest::new(vec![event("A", &[])]).tracking(TrackingInfo::new("upstream", 10));
    assert_eq!(store.append_request(request).await.unwrap(), 1);
    assert_eq!(store.tracking_position("upstream").await.unwrap(), Some(10));
    assert_eq!(store.tracking_position("elsewhere").await.unwrap(), None);
    let request = AppendRequest::new(vec![event("B", &[])])
        .condition(AppendCondition::new(types(&["B"]), None))
        .tracking(TrackingInfo::new("elsewhere", 3));
    store.append_request(request).await.unwrap();
    assert_eq!(store.tracking_position("elsewhere").await.unwrap(), Some(3));
    assert_eq!(store.tracking_position("upstream").await.unwrap(), Some(10));
    append(store, vec![event("C", &[])]).await;
    assert_eq!(store.tracking_position("upstream").await.unwrap(), Some(10), "an untracked append kept it");
}

/// A tracking position equal to or below the recorded one is an integrity error, and its events
/// are not written.
pub async fn tracking_must_increase_per_source<S: EventStore>(store: &S) {
    let tracked =
        |position| AppendRequest::new(vec![event("A", &[])]).tracking(TrackingInfo::new("src", position));
    store.append_request(tracked(5)).await.unwrap();
    assert_integrity(store.append_request(tracked(5)).await, "same tracking position");
    assert_integrity(store.append_request(tracked(4)).await, "lower tracking position");
    assert_eq!(store.head().await.unwrap(), Some(1));
    assert_eq!(store.append_request(tracked(6)).await.unwrap(), 2);
    assert_eq!(store.tracking_position("src").await.unwrap(), Some(6));
}

/// A subscription yields what is recorded, then waits, then yields new events as they come.
pub async fn subscription_delivers_backlog_then_waits_then_goes_live<S: EventStore>(store: &S) {
    append(store, vec![event("A", &["t"]), event("B", &["t"])]).await;
    let mut stream = store.subscribe(all(), None).await.unwrap();
    for expected in [1, 2] {
        let next = tokio::time::timeout(DELIVERY, stream.next()).await.expect("backlog delivered");
        assert_eq!(next.unwrap().unwrap().position, expected);
    }
    assert!(tokio::time::timeout(QUIET, stream.next()).await.is_err(), "a subscription invented an event");
    append(store, vec![event("C", &["t"])]).await;
    let next = tokio::time::timeout(DELIVERY, stream.next()).await.expect("live event delivered");
    let delivered = next.unwrap().unwrap();
    assert_eq!(delivered.position, 3);
    assert_eq!(delivered.event.event_type, "C");
}

/// A subscription after a position starts just after it, and only yields matching events.
pub async fn subscription_resumes_after_a_position_and_filters<S: EventStore>(store: &S) {
    append(store, (1..=6).map(|i| event("A", if i % 2 == 0 { &["even"] } else { &["odd"] })).collect()).await;
    let mut stream = store.subscribe(tags(&["even"]), Some(2)).await.unwrap();
    for expected in [4, 6] {
        let next = tokio::time::timeout(DELIVERY, stream.next()).await.expect("backlog delivered");
        assert_eq!(next.unwrap().unwrap().position, expected);
    }
    append(store, vec![event("A", &["odd"]), event("A", &["even"])]).await;
    let next = tokio::time::timeout(DELIVERY, stream.next()).await.expect("live event delivered");
    assert_eq!(next.unwrap().unwrap().position, 8);
}

/// While writers append concurrently, a subscription yields every event exactly once, in order.
pub async fn subscription_never_skips_under_concurrent_appends<S: EventStore>(store: &S) {
    const WRITERS: usize = 4;
    const APPENDS: usize = 50;
    let mut stream = store.subscribe(all(), None).await.unwrap();
    let mut writers = Vec::new();
    for writer in 0..WRITERS {
        let store = store.clone();
        writers.push(tokio::spawn(async move {
            for i in 0..APPENDS {
                let batch = vec![event("W", &[&format!("writer-{writer}")]); 1 + i % 3];
                store.append(batch, None).await.unwrap();
            }
        }));
    }
    let total: u64 = (0..APPENDS).map(|i| 1 + (i % 3) as u64).sum::<u64>() * WRITERS as u64;
    for expected in 1..=total {
        let next = tokio::time::timeout(DELIVERY, stream.next()).await.expect("event delivered in time");
        assert_eq!(next.unwrap().unwrap().position, expected, "subscription skipped or repeated");
    }
    for writer in writers {
        writer.await.unwrap();
    }
}

/// Readers running beside concurrent writers only ever see whole appends, and every position up
/// to the head they report (the head is safe to condition on: appends that commit out of order
/// must not show a later position before an earlier one).
pub async fn reads_see_whole_appends_only<S: EventStore>(store: &S) {
    const BATCH: usize = 4;
    const WRITERS: usize = 3;
    const APPENDS: usize = 40;
    let writers: Vec<_> = (0..WRITERS)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                for i in 0..APPENDS {
                    let batch = (0..BATCH).map(|_| event("Batch", &[&format!("batch-{w}-{i}")])).collect();
                    store.append(batch, None).await.unwrap();
                }
            })
        })
        .collect();
    loop {
        let read = read(store, &all(), ReadOptions::default()).await;
        let head = read.head.unwrap_or(0);
        assert_eq!(head % BATCH as u64, 0, "a reader saw part of an append");
        assert_eq!(positions(&read), (1..=head).collect::<Vec<_>>(), "a reader saw a gap below its head");
        if writers.iter().all(|w| w.is_finished()) {
            break;
        }
        tokio::task::yield_now().await;
    }
    for writer in writers {
        writer.await.unwrap();
    }
    assert_eq!(store.head().await.unwrap(), Some((WRITERS * APPENDS * BATCH) as u64));
}
