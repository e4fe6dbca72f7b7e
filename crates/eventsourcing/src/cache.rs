//! The decision cache: the events of recently used tags, each tag exact up to a position of its
//! own, so that a decision whose boundary it covers needs no read (see
//! [`Dcb::with_cache`](crate::Dcb::with_cache)).
//!
//! What the cache knows comes from the store's own answers:
//! - a read of every event of some tags, at head `h`, knows those tags up to `h`;
//! - a conditional append that succeeded at positions `b + 1 ..= p` proves, for each item of its
//!   query, that nothing the item selects came after the position it was checked from and up to
//!   `b`: a held tag that is an item on its own, known at least up to that position, is then
//!   known up to `p`, its own events added (checked from no position at all, such a tag is known
//!   up to `p` even if it was not held);
//! - an append right after a tag's known position (`b` is it) adds its events to the tag.
//!
//! Tags the cache learnt in one run of appends, each right after the one before, move on
//! together: the cache saw every event of that run, so a held tag that none of them carries is
//! known up to its end too. Such tags refer to their run instead of each holding a position, so
//! that a run moves on in constant time. A tag carried by an append that came after a gap (other
//! writers' events the cache has not seen) and not proven by its condition is forgotten.
//!
//! A decision is served with each item of its query known up to the position of the item's
//! furthest known tag, and only if no held event of those tags lies beyond the position of
//! another of them that it carries. Serving is safe whatever happened since: the append goes
//! under those tags, each checked from the position it was served at
//! ([`AppendCondition::item_after`]), a boundary at least as wide as the decision's own, so any
//! change the cache missed inside it fails the append, and the decision is then taken again from
//! a fresh read. Checking the whole tags, not the decision's items with their types, is what lets
//! the append's success prove the tags whole and keep them known. Positions per item let a process
//! whose writers interleave serve a decision about tags it learnt at different points (a
//! student known up to its last join, a course up to an earlier one): one `after` at the lowest
//! would meet the later tags' own events. What must hold is the cache's invariant: a held tag's
//! events are all of its events up to its position.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use dcb::{AppendCondition, Event, EventStore, Query, QueryItem, ReadResponse, SequencedEvent};

/// Events held at most; beyond it the cache starts over.
const MAX_EVENTS: usize = 1 << 16;
/// Bytes of events held at most ([`Event::byte_size`]); beyond it the cache starts over.
const MAX_BYTES: usize = 64 << 20;
/// Tags held at most; beyond it the cache starts over.
const MAX_TAGS: usize = 1 << 14;
/// A tag with more events is never held: reading all of them for each decision would cost more
/// than the narrow reads the cache saves.
const MAX_TAG_EVENTS: usize = 4096;
/// Hot tags remembered at most; beyond it they are forgotten (and found again).
const MAX_HOT_TAGS: usize = 4096;
/// Runs remembered at most. A tag of a forgotten run falls back to the position it joined the
/// run at, which it is still known up to.
const MAX_RUNS: usize = 256;

/// Shared by the clones of one [`Dcb`](crate::Dcb).
#[derive(Debug, Clone, Default)]
pub(crate) struct DecisionCache {
    known: Arc<Mutex<Known>>,
}

/// Every event of one tag up to a position.
#[derive(Debug)]
struct Held {
    /// Oldest first.
    events: Vec<Arc<SequencedEvent>>,
    /// The position the tag was known up to when it was learnt or last moved on.
    at: u64,
    /// The run it was learnt in, which may since have moved it further.
    run: Option<u64>,
}

#[derive(Debug, Default)]
struct Known {
    tags: HashMap<String, Held>,
    /// The last position of each remembered run, oldest first; the newest is the one appends
    /// can extend. Run ids count from `first_run`.
    runs: VecDeque<u64>,
    first_run: u64,
    /// Events held over all tags (an event with several held tags counts for each), and their
    /// bytes.
    held: usize,
    held_bytes: usize,
    /// Tags found with more than [`MAX_TAG_EVENTS`] events, never held; kept across starts over.
    hot: HashSet<String>,
}

impl Known {
    fn start_over(&mut self) {
        self.tags.clear();
        self.first_run += self.runs.len() as u64;
        self.runs.clear();
        self.held = 0;
        self.held_bytes = 0;
    }

    /// The position `held` is known up to.
    fn position(&self, held: &Held) -> u64 {
        held.run
            .and_then(|run| run.checked_sub(self.first_run))
            .and_then(|index| self.runs.get(index as usize))
            .copied()
            .unwrap_or(held.at)
    }

    fn tag_position(&self, tag: &str) -> Option<u64> {
        self.tags.get(tag).map(|held| self.position(held))
    }

    /// The last position of the newest run.
    fn frontier(&self) -> Option<u64> {
        self.runs.back().copied()
    }

    /// The id of the run that ends at `position` once an answer ending there is taken in: the
    /// newest run, moved on to `position`, when the answer `continues` it (an append right after
    /// its end) or ends where it ends; a new run when `position` lies beyond it otherwise; `None`
    /// for an answer older than the newest run, which has no run to join.
    fn run_ending_at(&mut self, position: u64, continues: bool) -> Option<u64> {
        let newest = self.first_run + self.runs.len() as u64;
        match self.frontier() {
            Some(end) if continues || end == position => {
                *self.runs.back_mut().expect("a run") = position;
                Some(newest - 1)
            }
            Some(end) if end > position => None,
            _ => {
                if self.runs.len() == MAX_RUNS {
                    self.runs.pop_front();
                    self.first_run += 1;
                }
                self.runs.push_back(position);
                Some(newest)
            }
        }
    }

    fn hold(&mut self, tag: &str, events: Vec<Arc<SequencedEvent>>, at: u64, run: Option<u64>) {
        self.release(tag);
        if events.len() > MAX_TAG_EVENTS {
            if self.hot.len() >= MAX_HOT_TAGS {
                self.hot.clear();
            }
            self.hot.insert(tag.to_owned());
            return;
        }
        self.held += events.len();
        self.held_bytes += events.iter().map(|e| e.event.byte_size()).sum::<usize>();
        self.tags.insert(tag.to_owned(), Held { events, at, run });
    }

    /// Adds `events` (all carrying `tag`, right after its position) to a held tag, now known up
    /// to `at`.
    fn extend(
        &mut self,
        tag: &str,
        events: impl Iterator<Item = Arc<SequencedEvent>>,
        at: u64,
        run: Option<u64>,
    ) {
        let Some(held) = self.tags.get_mut(tag) else { return };
        for event in events {
            self.held += 1;
            self.held_bytes += event.event.byte_size();
            held.events.push(event);
        }
        held.at = at;
        held.run = run;
    }

    fn release(&mut self, tag: &str) {
        if let Some(previous) = self.tags.remove(tag) {
            self.held -= previous.events.len();
            self.held_bytes -= previous.events.iter().map(|e| e.event.byte_size()).sum::<usize>();
        }
    }

    fn too_large(&self) -> bool {
        self.held > MAX_EVENTS || self.held_bytes > MAX_BYTES || self.tags.len() > MAX_TAGS
    }
}

/// The tags whose events, all read, let the cache serve `query` later: the first tag of each
/// item that is not in `hot`. `None` when an item has no tag (types alone, which the cache cannot
/// serve) or only hot ones.
fn tags_to_read(query: &Query, hot: &HashSet<String>) -> Option<Vec<String>> {
    if query.items.is_empty() {
        return None;
    }
    let mut tags: Vec<String> = Vec::with_capacity(query.items.len());
    for item in &query.items {
        let tag = item.tags.iter().find(|tag| !hot.contains(*tag))?;
        if !tags.contains(tag) {
            tags.push(tag.clone());
        }
    }
    Some(tags)
}

/// The tag of an item that is one tag alone (no types), which selects every event of the tag.
fn lone_tag(item: &QueryItem) -> Option<&String> {
    match item.tags.as_slice() {
        [tag] if item.types.is_empty() => Some(tag),
        _ => None,
    }
}

/// The tags of `query` if each of its items is one tag alone, so that a read of it returns every
/// event of those tags.
fn bare_tags(query: &Query) -> Option<Vec<String>> {
    let tags = tags_to_read(query, &HashSet::new())?;
    query.items.iter().all(|item| lone_tag(item).is_some()).then_some(tags)
}

/// What a successful append under a condition proves: no event of each of the `tags` (the items
/// that are one bare tag) came after the position given with it and before the append's own
/// events.
#[derive(Debug, Default)]
struct Proof {
    tags: Vec<(String, u64)>,
}

impl Proof {
    fn of(condition: Option<&AppendCondition>) -> Self {
        let Some(condition) = condition else { return Proof::default() };
        let items = condition.fail_if_events_match.items.iter().enumerate();
        let proven =
            |(i, item)| lone_tag(item).map(|tag| (tag.clone(), condition.item_after(i).unwrap_or(0)));
        Proof { tags: items.filter_map(proven).collect() }
    }

    /// The position after which the condition proved `tag`, if it did.
    fn after(&self, tag: &str) -> Option<u64> {
        self.tags.iter().find(|(proven, _)| proven == tag).map(|&(_, after)| after)
    }
}

/// A decision served from the cache: the events its query selects, oldest first, and for each
/// item of the query the held tag it was served from and the position that tag is known up to.
#[derive(Debug)]
pub(crate) struct Served {
    pub(crate) events: Vec<Arc<SequencedEvent>>,
    pub(crate) items_tag: Vec<String>,
    pub(crate) items_at: Vec<u64>,
}

impl Served {
    /// The lowest position an item is known up to: the whole decision is known up to there.
    pub(crate) fn head(&self) -> u64 {
        self.items_at.iter().copied().min().unwrap_or(0)
    }

    /// The condition of the decision's append: each item's tag alone, after the position it is
    /// known up to (see [`condition_at`]). As wide as what the cache knows, so that its success
    /// proves those tags whole and keeps them known; for an item with types or several tags,
    /// wider than the decision's own boundary: a change outside the boundary but on its tag
    /// fails the append, and the decision is then read and taken again on its own query.
    pub(crate) fn condition(&self) -> AppendCondition {
        let query = Query::new(self.items_tag.iter().map(|tag| QueryItem::tags([tag.as_str()])));
        condition_at(query, &self.items_at)
    }
}

/// The condition of an append decided on `query` with its items known up to `items_at`: each
/// item checked after its own position, and `after` at the lowest of them for stores that check
/// every item from there.
pub(crate) fn condition_at(query: Query, items_at: &[u64]) -> AppendCondition {
    let head = items_at.iter().copied().min();
    let condition = AppendCondition::new(query, head);
    items_at.iter().enumerate().fold(condition, |condition, (i, &at)| {
        if Some(at) > head { condition.with_item_after(i, at) } else { condition }
    })
}

/// Appends through `store`, teaching `cache` (if any) what the answer proves.
///
/// A failed append teaches nothing and leaves the cache as it was: what it holds stays exact
/// whether or not an append of unknown outcome was recorded (its positions lie beyond every
/// position the cache knows a tag up to, and no later append can seem to follow on from them),
/// and a conflict's cause lies beyond the condition's `after`, where a decision served from the
/// cache looks anyway.
pub(crate) async fn append<S: EventStore>(
    store: &S,
    cache: Option<&DecisionCache>,
    events: Vec<Event>,
    condition: Option<AppendCondition>,
) -> dcb::Result<u64> {
    let Some(cache) = cache else { return store.append(events, condition).await };
    let proof = Proof::of(condition.as_ref());
    let last = store.append(events.clone(), condition).await?;
    cache.learn_append(events, proof, last);
    Ok(last)
}

/// What a failed append of events chosen from the cache means. One of unknown outcome is the
/// caller's to see: taken again behind its back, it could be recorded twice. Any other (a
/// conflict with what the cache missed, or a refusal of what was chosen from it) is a miss: the
/// decision is taken again from a read, which brings the cache up to date.
pub(crate) fn after_served_failure(error: crate::Error) -> crate::Result<()> {
    if error.is_retryable() { Err(error) } else { Ok(()) }
}

/// Reads `query` from `store`, teaching `cache` (if any) the tags of a query of bare tags.
pub(crate) async fn read<S: EventStore>(
    store: &S,
    cache: Option<&DecisionCache>,
    query: &Query,
) -> dcb::Result<ReadResponse> {
    let read = store.read(query, dcb::ReadOptions::default()).await?;
    if let (Some(cache), Some(tags)) = (cache, bare_tags(query)) {
        cache.learn_read(&tags, &read.events, read.head);
    }
    Ok(read)
}

impl DecisionCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, Known> {
        self.known.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The tags a decision on `query` reads every event of, to be served later (see
    /// [`tags_to_read`]); `None` to read `query` itself.
    pub(crate) fn tags_to_read(&self, query: &Query) -> Option<Vec<String>> {
        tags_to_read(query, &self.lock().hot)
    }

    /// The events `query` selects and, per item, its furthest known tag and that tag's position,
    /// if every item has a held tag and no held event of those tags lies beyond the position of
    /// another of them that it carries (the served append, checking that tag from there, would
    /// meet it).
    pub(crate) fn serve(&self, query: &Query) -> Option<Served> {
        let known = self.lock();
        if query.items.is_empty() {
            return None;
        }
        let mut items_tag = Vec::with_capacity(query.items.len());
        let mut items_at = Vec::with_capacity(query.items.len());
        let mut lists = Vec::with_capacity(query.items.len());
        for item in &query.items {
            let (tag, held, at) = item
                .tags
                .iter()
                .filter_map(|tag| known.tags.get(tag).map(|held| (tag, held)))
                .map(|(tag, held)| (tag, held, known.position(held)))
                .max_by_key(|(_, _, at)| *at)?;
            items_tag.push(tag.clone());
            items_at.push(at);
            lists.push(held);
        }
        let beyond = |e: &Arc<SequencedEvent>| {
            items_tag.iter().zip(&items_at).any(|(tag, &at)| e.position > at && e.event.has_tag(tag))
        };
        // Only events past the lowest position can lie beyond one: the newest of each list.
        let lowest = items_at.iter().copied().min().unwrap_or(0);
        if lists.iter().any(|held| held.events.iter().rev().take_while(|e| e.position > lowest).any(beyond)) {
            return None;
        }
        let mut selected: Vec<Arc<SequencedEvent>> = Vec::new();
        for (item, held) in query.items.iter().zip(&lists) {
            selected.extend(held.events.iter().filter(|e| item.matches(&e.event)).cloned());
        }
        if query.items.len() > 1 {
            selected.sort_unstable_by_key(|e| e.position);
            selected.dedup_by_key(|e| e.position);
        }
        Some(Served { events: selected, items_tag, items_at })
    }

    /// Takes in a read of every event carrying `tags`, whose head was `head`.
    pub(crate) fn learn_read(&self, tags: &[String], events: &[SequencedEvent], head: Option<u64>) {
        let head = head.unwrap_or(0);
        let shared: Vec<Arc<SequencedEvent>> = events.iter().cloned().map(Arc::new).collect();
        let mut known = self.lock();
        if known.too_large() {
            known.start_over();
        }
        let run = known.run_ending_at(head, false);
        for tag in tags {
            // A tag known further (by an answer learnt meanwhile) keeps what it knows.
            if known.tag_position(tag).is_some_and(|at| at >= head) {
                continue;
            }
            let carrying = shared.iter().filter(|e| e.event.has_tag(tag)).cloned().collect();
            known.hold(tag, carrying, head, run);
        }
    }

    /// Takes in an append of `events` that succeeded, its last event at `last`, under a
    /// condition that proved what `proof` says.
    fn learn_append(&self, events: Vec<Event>, proof: Proof, last: u64) {
        let before = last - events.len() as u64;
        let appended: Vec<Arc<SequencedEvent>> = (before + 1..)
            .zip(events)
            .map(|(position, event)| Arc::new(SequencedEvent { position, event }))
            .collect();
        let mut known = self.lock();
        if known.too_large() {
            known.start_over();
        }
        // Where each tag the append touches stands before it: the run it joins moves on below.
        let mut touched: Vec<(&str, Option<u64>)> = Vec::new();
        for tag in appended.iter().flat_map(|e| &e.event.tags).chain(proof.tags.iter().map(|(tag, _)| tag)) {
            if !touched.iter().any(|(seen, _)| *seen == tag) {
                touched.push((tag, known.tag_position(tag)));
            }
        }
        let continues = known.frontier() == Some(before);
        let run = known.run_ending_at(last, continues);
        for (tag, at) in touched {
            let proven = proof.after(tag);
            let carrying = appended.iter().filter(|e| e.event.has_tag(tag)).cloned();
            match at {
                // Known past this append already.
                Some(at) if at >= last => {}
                // Nothing of the tag unseen before the append: its events follow on.
                Some(at) if at == before || proven.is_some_and(|after| at >= after) => {
                    known.extend(tag, carrying, last, run)
                }
                // Events of the tag may have come between: its own would be missing.
                Some(_) if carrying.clone().next().is_some() => known.release(tag),
                // Not carried: still known up to where it was.
                Some(_) => {}
                None if proven == Some(0) => known.hold(tag, carrying.collect(), last, run),
                None => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tagged(event_type: &str, tags: &[&str]) -> Event {
        Event::new(event_type, "").with_tags(tags.iter().copied())
    }

    /// The positions of the events served and the lowest position an item is known up to.
    fn positions(served: Option<Served>) -> Option<(Vec<u64>, u64)> {
        served.map(|served| (served.events.iter().map(|e| e.position).collect(), served.head()))
    }

    fn bare(tag: &str) -> QueryItem {
        QueryItem::tags([tag])
    }

    fn both(a: &str, b: &str) -> Query {
        Query::new([bare(a), bare(b)])
    }

    /// An append of `events` at `last` under a condition on the bare tags `tags` after `after`.
    fn appended(cache: &DecisionCache, events: Vec<Event>, tags: &[&str], after: Option<u64>, last: u64) {
        let condition = AppendCondition::new(Query::new(tags.iter().map(|tag| bare(tag))), after);
        cache.learn_append(events, Proof::of(Some(&condition)), last);
    }

    #[test]
    fn an_append_with_no_after_makes_its_bare_tags_known() {
        let cache = DecisionCache::default();
        appended(&cache, vec![tagged("Registered", &["s1"])], &["s1"], None, 4);
        assert_eq!(positions(cache.serve(&bare("s1").into())), Some((vec![4], 4)));
        // Another tag is not known, so a query needing it is not served.
        assert_eq!(positions(cache.serve(&both("s1", "c1"))), None);
        appended(&cache, vec![tagged("Registered", &["c1"])], &["c1"], None, 5);
        assert_eq!(positions(cache.serve(&both("s1", "c1"))), Some((vec![4, 5], 5)));
        // A join carries both tags: held by each, served once.
        appended(&cache, vec![tagged("Joined", &["s1", "c1"])], &["s1", "c1"], Some(5), 6);
        assert_eq!(positions(cache.serve(&both("s1", "c1"))), Some((vec![4, 5, 6], 6)));
        let joins = Query::from(QueryItem::types(["Joined"]).and_tags(["c1"]));
        assert_eq!(positions(cache.serve(&joins)), Some((vec![6], 6)));
    }

    #[test]
    fn tags_a_run_of_appends_does_not_carry_move_on_with_it() {
        let cache = DecisionCache::default();
        cache.learn_read(&["s1".to_owned(), "c1".to_owned()], &[], Some(3));
        // Right after 3, then right after that: every event in between was seen.
        cache.learn_append(vec![tagged("Noted", &["s1"])], Proof::default(), 4);
        cache.learn_append(vec![tagged("Noted", &["x"])], Proof::default(), 5);
        assert_eq!(positions(cache.serve(&both("s1", "c1"))), Some((vec![4], 5)));
    }

    #[test]
    fn after_a_gap_a_carried_tag_is_forgotten_unless_the_condition_proves_it() {
        let cache = DecisionCache::default();
        cache.learn_read(&["s1".to_owned(), "c1".to_owned(), "d1".to_owned()], &[], Some(3));
        // Positions 4 and 5 went to someone else: what they hold is unknown.
        cache.learn_append(vec![tagged("Noted", &["s1"])], Proof::default(), 6);
        assert_eq!(positions(cache.serve(&bare("s1").into())), None);
        // The tags it did not carry are still known up to 3.
        assert_eq!(positions(cache.serve(&bare("c1").into())), Some((vec![], 3)));
        // A condition on c1 after 3 proves that nothing of it came in between.
        appended(&cache, vec![tagged("Noted", &["c1"])], &["c1"], Some(3), 9);
        assert_eq!(positions(cache.serve(&bare("c1").into())), Some((vec![9], 9)));
        // d1 did not move on with c1 across the gap.
        assert_eq!(positions(cache.serve(&bare("d1").into())), Some((vec![], 3)));
        assert_eq!(positions(cache.serve(&both("d1", "x"))), None);
        assert_eq!(
            positions(cache.serve(&Query::new([bare("d1"), QueryItem::types(["Other"]).and_tags(["c1"])]))),
            Some((vec![], 3))
        );
        // Each item served at its own position, and its append checks it from there.
        let served = cache.serve(&both("d1", "c1")).expect("d1 and c1 are held");
        assert_eq!(served.items_at, [3, 9]);
        let condition = served.condition();
        assert_eq!(
            (condition.after, condition.item_after(0), condition.item_after(1)),
            (Some(3), Some(3), Some(9))
        );
    }

    #[test]
    fn a_held_event_beyond_the_position_of_an_item_it_matches_is_not_served() {
        let cache = DecisionCache::default();
        cache.learn_read(&["y".to_owned()], &[], Some(2));
        let both_tags = SequencedEvent { position: 5, event: tagged("Noted", &["x", "y"]) };
        cache.learn_read(&["x".to_owned()], &[both_tags], Some(6));
        // Held for x, the event at 5 also carries y, known up to 2 only: an append checking y
        // from 2 would meet it.
        assert_eq!(positions(cache.serve(&both("x", "y"))), None);
        assert_eq!(positions(cache.serve(&bare("x").into())), Some((vec![5], 6)));
    }

    #[test]
    fn answers_learnt_late_never_move_a_tag_back() {
        let cache = DecisionCache::default();
        cache.learn_read(&["s1".to_owned()], &[], Some(12));
        // An append at 11 whose answer arrives after the read at 12: already covered by it.
        cache.learn_append(vec![tagged("Noted", &["s1"])], Proof::default(), 11);
        assert_eq!(positions(cache.serve(&bare("s1").into())), Some((vec![], 12)));
        // A read at 11, older than what the cache knows of s1: ignored for s1, taken for c1.
        let c1 = SequencedEvent { position: 10, event: tagged("Registered", &["c1"]) };
        cache.learn_read(&["s1".to_owned(), "c1".to_owned()], &[c1], Some(11));
        assert_eq!(positions(cache.serve(&bare("s1").into())), Some((vec![], 12)));
        assert_eq!(positions(cache.serve(&bare("c1").into())), Some((vec![10], 11)));
    }

    #[test]
    fn a_late_read_does_not_join_a_run_that_went_past_it() {
        let cache = DecisionCache::default();
        cache.learn_read(&["s1".to_owned()], &[], Some(3));
        cache.learn_append(vec![tagged("Noted", &["c1"])], Proof::default(), 4);
        // A read of c1 at 3 answered late: c1's event at 4 is not in it, so c1 is known up to 3
        // only, not up to the run's end.
        cache.learn_read(&["c1".to_owned()], &[], Some(3));
        assert_eq!(positions(cache.serve(&bare("c1").into())), Some((vec![], 3)));
        assert_eq!(positions(cache.serve(&bare("s1").into())), Some((vec![], 4)));
    }

    #[test]
    fn a_run_forgotten_leaves_its_tags_where_they_joined_it() {
        let cache = DecisionCache::default();
        cache.learn_read(&["s1".to_owned()], &[], Some(1));
        cache.learn_append(vec![tagged("Noted", &["x"])], Proof::default(), 2);
        // MAX_RUNS runs begun by reads further on: the run of s1 is forgotten.
        for run in 0..MAX_RUNS as u64 {
            cache.learn_read(&[format!("t{run}")], &[], Some(10 + run));
        }
        assert_eq!(positions(cache.serve(&bare("s1").into())), Some((vec![], 1)));
    }

    #[test]
    fn a_tag_with_too_many_events_is_read_narrowly_instead() {
        let cache = DecisionCache::default();
        let many: Vec<SequencedEvent> = (1..=MAX_TAG_EVENTS as u64 + 1)
            .map(|position| SequencedEvent { position, event: tagged("Joined", &["c1"]) })
            .collect();
        let query = Query::from(QueryItem::types(["Opened"]).and_tags(["c1"]));
        assert_eq!(cache.tags_to_read(&query), Some(vec!["c1".to_owned()]));
        cache.learn_read(&["c1".to_owned()], &many, Some(many.len() as u64));
        assert_eq!(positions(cache.serve(&query)), None);
        assert_eq!(cache.tags_to_read(&query), None, "read the query itself from now on");
        // Types alone cannot be served: no tag says which events to hold.
        assert_eq!(cache.tags_to_read(&QueryItem::types(["Registered"]).into()), None);
    }

    #[test]
    fn a_cache_grown_past_its_bounds_starts_over_at_its_next_answer() {
        let cache = DecisionCache::default();
        // Tags of MAX_TAG_EVENTS events each, until more than MAX_EVENTS are held.
        let per_tag = MAX_TAG_EVENTS as u64;
        let tags = MAX_EVENTS as u64 / per_tag + 1;
        for t in 0..tags {
            let tag = format!("t{t}");
            let events: Vec<SequencedEvent> = (1..=per_tag)
                .map(|k| SequencedEvent { position: t * per_tag + k, event: tagged("Noted", &[&tag]) })
                .collect();
            cache.learn_read(&[tag], &events, Some(tags * per_tag));
        }
        assert!(cache.lock().too_large());
        assert!(cache.serve(&bare("t0").into()).is_some(), "held until the next answer");
        appended(&cache, vec![tagged("Registered", &["s1"])], &["s1"], None, tags * per_tag + 1);
        assert_eq!(positions(cache.serve(&bare("t0").into())), None, "started over");
        assert_eq!(
            positions(cache.serve(&bare("s1").into())),
            Some((vec![tags * per_tag + 1], tags * per_tag + 1))
        );
        assert_eq!(cache.lock().held, 1);
    }

    #[test]
    fn two_writers_each_keep_their_own_tags() {
        // Each cache sees only its own appends, which the other's interleave.
        let (one, two) = (DecisionCache::default(), DecisionCache::default());
        appended(&one, vec![tagged("Registered", &["s1"])], &["s1"], None, 1);
        appended(&two, vec![tagged("Registered", &["s2"])], &["s2"], None, 2);
        appended(&one, vec![tagged("Registered", &["c1"])], &["c1"], None, 3);
        appended(&two, vec![tagged("Registered", &["c2"])], &["c2"], None, 4);
        // one serves s1 as known up to 1 and c1 up to 3, two's events in between unseen.
        let served = one.serve(&both("s1", "c1")).expect("one holds s1 and c1");
        assert_eq!(positions(Some(served)), Some((vec![1, 3], 1)));
        let (s1, c1) = (
            SequencedEvent { position: 1, event: tagged("Registered", &["s1"]) },
            SequencedEvent { position: 3, event: tagged("Registered", &["c1"]) },
        );
        one.learn_read(&["s1".to_owned(), "c1".to_owned()], &[s1, c1], Some(4));
        assert_eq!(positions(one.serve(&both("s1", "c1"))), Some((vec![1, 3], 4)));
        appended(&two, vec![tagged("Joined", &["s2", "c2"])], &["s2", "c2"], Some(4), 5);
        // one's join comes after two's: its condition on s1 and c1 after 4 proves both.
        appended(&one, vec![tagged("Joined", &["s1", "c1"])], &["s1", "c1"], Some(4), 6);
        assert_eq!(positions(one.serve(&both("s1", "c1"))), Some((vec![1, 3, 6], 6)));
    }

    /// A store's answer on its way to the cache that asked, delivered in any order.
    enum Answer {
        Read(Vec<String>, Vec<SequencedEvent>, u64),
        Append(Vec<Event>, Proof, u64),
    }

    /// Every held tag holds exactly the events of `log` carrying it up to its position, and a
    /// query served is exactly what `log` holds for it up to the position served at.
    fn check_exact(cache: &DecisionCache, log: &[Event], seed: u64) {
        let known = cache.lock();
        for (tag, held) in &known.tags {
            let at = known.position(held);
            let expected: Vec<u64> =
                (1..=at.min(log.len() as u64)).filter(|p| log[*p as usize - 1].has_tag(tag)).collect();
            let actual: Vec<u64> = held.events.iter().map(|e| e.position).collect();
            assert_eq!(actual, expected, "seed {seed}: tag {tag} known up to {at}");
        }
    }

    #[test]
    fn what_the_cache_holds_stays_exact_whatever_the_order_of_answers() {
        const TAGS: [&str; 5] = ["a", "b", "c", "d", "e"];
        for seed in 0..200 {
            let mut rng = dcb::testkit::Rng::new(seed);
            let caches: Vec<DecisionCache> = (0..3).map(|_| DecisionCache::default()).collect();
            let mut log: Vec<Event> = Vec::new();
            let mut pending: Vec<(usize, Answer)> = Vec::new();
            let some_tags = |rng: &mut dcb::testkit::Rng, most: u64| -> Vec<String> {
                let mut tags: Vec<String> = Vec::new();
                for _ in 0..=rng.below(most) {
                    let tag = rng.pick(&TAGS).to_string();
                    if !tags.contains(&tag) {
                        tags.push(tag);
                    }
                }
                tags
            };
            for _ in 0..300 {
                let cache = rng.below(caches.len() as u64) as usize;
                let head = log.len() as u64;
                match rng.below(100) {
                    0..30 => {
                        let tags = some_tags(&mut rng, 2);
                        let events = (1..=head)
                            .filter(|p| tags.iter().any(|t| log[*p as usize - 1].has_tag(t)))
                            .map(|p| SequencedEvent { position: p, event: log[p as usize - 1].clone() })
                            .collect();
                        pending.push((cache, Answer::Read(tags, events, head)));
                    }
                    30..65 => {
                        let condition_tags = some_tags(&mut rng, 2);
                        let query = Query::new(condition_tags.iter().map(|t| bare(t)));
                        let condition = match rng.below(4) {
                            0 => AppendCondition::new(query, None),
                            1 => AppendCondition::new(query, Some(head)),
                            2 => AppendCondition::new(query, Some(rng.below(head + 1))),
                            _ => match caches[cache].serve(&query) {
                                Some(served) => {
                                    // What is served is exactly what the log holds of each item
                                    // up to the position the item is known up to.
                                    let expected: Vec<u64> = (1..=head)
                                        .filter(|&p| {
                                            let event = &log[p as usize - 1];
                                            query
                                                .items
                                                .iter()
                                                .zip(&served.items_at)
                                                .any(|(item, &at)| p <= at && item.matches(event))
                                        })
                                        .collect();
                                    let actual: Vec<u64> = served.events.iter().map(|e| e.position).collect();
                                    assert_eq!(actual, expected, "seed {seed}");
                                    served.condition()
                                }
                                None => AppendCondition::new(query, Some(head)),
                            },
                        };
                        let sequenced =
                            |p: u64| SequencedEvent { position: p, event: log[p as usize - 1].clone() };
                        if (1..=head).any(|p| condition.is_failed_by(&sequenced(p))) {
                            continue; // refused: nothing learnt
                        }
                        let events: Vec<Event> = (0..=rng.below(2))
                            .map(|_| {
                                tagged(
                                    "Noted",
                                    &some_tags(&mut rng, 3).iter().map(String::as_str).collect::<Vec<_>>(),
                                )
                            })
                            .collect();
                        log.extend(events.iter().cloned());
                        pending.push((
                            cache,
                            Answer::Append(events, Proof::of(Some(&condition)), log.len() as u64),
                        ));
                    }
                    65..80 => log.push(tagged(
                        "Other",
                        &some_tags(&mut rng, 2).iter().map(String::as_str).collect::<Vec<_>>(),
                    )),
                    _ => {
                        if pending.is_empty() {
                            continue;
                        }
                        let (to, answer) = pending.swap_remove(rng.below(pending.len() as u64) as usize);
                        match answer {
                            Answer::Read(tags, events, head) => {
                                caches[to].learn_read(&tags, &events, Some(head))
                            }
                            Answer::Append(events, proof, last) => {
                                caches[to].learn_append(events, proof, last)
                            }
                        }
                        check_exact(&caches[to], &log, seed);
                    }
                }
            }
        }
    }
}
