//! The decision cache: the events of recently used tags, exact up to one position, so that a
//! decision whose boundary it covers needs no read (see [`Dcb::with_cache`](crate::Dcb::with_cache)).
//!
//! What the cache knows comes from the store's own answers. A read of every event of some tags
//! (at head `h`) knows those tags up to `h`. A conditional append that succeeded at positions
//! `p - n + 1 ..= p` proves that nothing its query selects came between its `after` and
//! `p - n`: with no `after`, an item that is one bare tag is then known up to `p`, as exactly
//! the appended events that carry it. An append right after the known position (`p - n` is it)
//! adds its events to the tags they carry and moves the known position to `p`; any other answer
//! means that events the cache has not seen came in between, and it starts over from what that
//! answer proves.
//!
//! Serving a decision from the cache is safe whatever happened since: the append goes under the
//! decision's own query, after the known position, so any change the cache missed inside the
//! boundary fails it, and the decision is then taken again from a fresh read.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use dcb::{AppendCondition, Event, EventStore, Query, ReadResponse, SequencedEvent};

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

/// Shared by the clones of one [`Dcb`](crate::Dcb).
#[derive(Debug, Clone, Default)]
pub(crate) struct DecisionCache {
    known: Arc<Mutex<Known>>,
}

#[derive(Debug, Default)]
struct Known {
    /// The position every held tag is known up to (`None`: nothing is known).
    head: Option<u64>,
    /// Per tag, every event carrying it up to `head`, oldest first.
    tags: HashMap<String, Vec<Arc<SequencedEvent>>>,
    /// Events held over all tags (an event with several held tags counts for each), and their
    /// bytes.
    held: usize,
    held_bytes: usize,
    /// Tags found with more than [`MAX_TAG_EVENTS`] events, never held; kept across starts over.
    hot: HashSet<String>,
}

impl Known {
    fn start_over(&mut self, head: Option<u64>) {
        self.head = head;
        self.tags.clear();
        self.held = 0;
        self.held_bytes = 0;
    }

    fn hold(&mut self, tag: &str, events: Vec<Arc<SequencedEvent>>) {
        if events.len() > MAX_TAG_EVENTS {
            if self.hot.len() >= MAX_HOT_TAGS {
                self.hot.clear();
            }
            self.hot.insert(tag.to_owned());
            self.release(tag);
            return;
        }
        self.held += events.len();
        self.held_bytes += events.iter().map(|e| e.event.byte_size()).sum::<usize>();
        self.release(tag);
        self.tags.insert(tag.to_owned(), events);
    }

    fn release(&mut self, tag: &str) {
        if let Some(previous) = self.tags.remove(tag) {
            self.held -= previous.len();
            self.held_bytes -= previous.iter().map(|e| e.event.byte_size()).sum::<usize>();
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

/// The tags of `query` if each of its items is one bare tag (no types), so that a read of it
/// returns every event of those tags.
fn bare_tags(query: &Query) -> Option<Vec<String>> {
    let tags = tags_to_read(query, &HashSet::new())?;
    let bare = query.items.iter().all(|item| item.types.is_empty() && item.tags.len() == 1);
    bare.then_some(tags)
}

/// The tags a successful append under `condition` proves carried nothing before it: with no
/// `after`, those of the items that are one bare tag.
fn proven_empty(condition: Option<&AppendCondition>) -> Vec<String> {
    let Some(condition) = condition.filter(|c| c.after.is_none()) else { return Vec::new() };
    condition
        .fail_if_events_match
        .items
        .iter()
        .filter_map(|item| match item.tags.as_slice() {
            [tag] if item.types.is_empty() => Some(tag.clone()),
            _ => None,
        })
        .collect()
}

/// Appends through `store`, teaching `cache` (if any) what the answer proves.
pub(crate) async fn append<S: EventStore>(
    store: &S,
    cache: Option<&DecisionCache>,
    events: Vec<Event>,
    condition: Option<AppendCondition>,
) -> dcb::Result<u64> {
    let Some(cache) = cache else { return store.append(events, condition).await };
    let proven = proven_empty(condition.as_ref());
    match store.append(events.clone(), condition).await {
        Ok(last) => {
            cache.learn_append(events, proven, last);
            Ok(last)
        }
        Err(error) => {
            // Perhaps recorded (the outcome is unknown), or refused by a change the cache may
            // not have seen: either way it cannot say what follows its position.
            if error.is_retryable() || error.is_integrity() {
                cache.forget();
            }
            Err(error)
        }
    }
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

    /// The events `query` selects, oldest first, and the position they are known up to, if every
    /// item has a held tag.
    pub(crate) fn serve(&self, query: &Query) -> Option<(Vec<Arc<SequencedEvent>>, u64)> {
        let known = self.lock();
        let head = known.head?;
        if query.items.is_empty() {
            return None;
        }
        let mut selected: Vec<Arc<SequencedEvent>> = Vec::new();
        for item in &query.items {
            let held = item.tags.iter().find_map(|tag| known.tags.get(tag))?;
            selected.extend(held.iter().filter(|e| item.matches(&e.event)).cloned());
        }
        if query.items.len() > 1 {
            selected.sort_unstable_by_key(|e| e.position);
            selected.dedup_by_key(|e| e.position);
        }
        Some((selected, head))
    }

    /// Takes in a read of every event carrying `tags`, whose head was `head`.
    pub(crate) fn learn_read(&self, tags: &[String], events: &[SequencedEvent], head: Option<u64>) {
        let head = head.unwrap_or(0);
        let shared: Vec<Arc<SequencedEvent>> = events.iter().cloned().map(Arc::new).collect();
        let mut known = self.lock();
        if known.head.is_some_and(|known| known > head) {
            // Older than what the cache knows (another task's append was learnt meanwhile).
            return;
        }
        if known.head != Some(head) || known.too_large() {
            known.start_over(Some(head));
        }
        for tag in tags {
            let carrying = shared.iter().filter(|e| e.event.has_tag(tag)).cloned().collect();
            known.hold(tag, carrying);
        }
    }

    /// Takes in an append of `events` that succeeded, its last event at `last`, under a
    /// condition that proved the `proven` tags empty before it (see [`proven_empty`]).
    pub(crate) fn learn_append(&self, events: Vec<Event>, proven: Vec<String>, last: u64) {
        let before = last - events.len() as u64;
        let appended: Vec<Arc<SequencedEvent>> = (before + 1..)
            .zip(events)
            .map(|(position, event)| Arc::new(SequencedEvent { position, event }))
            .collect();
        let mut known = self.lock();
        if known.head.is_some_and(|known| known >= last) {
            // Already known: a read or an append learnt after this one covered it.
            return;
        }
        if known.head == Some(before) && !known.too_large() {
            let Known { tags, held, held_bytes, .. } = &mut *known;
            for event in &appended {
                for tag in &event.event.tags {
                    if let Some(carrying) = tags.get_mut(tag)
                        && carrying.last().is_none_or(|e| e.position != event.position)
                    {
                        carrying.push(event.clone());
                        *held += 1;
                        *held_bytes += event.event.byte_size();
                    }
                }
            }
        } else {
            known.start_over(Some(last));
        }
        known.head = Some(last);
        for tag in proven {
            if !known.tags.contains_key(&tag) {
                let carrying = appended.iter().filter(|e| e.event.has_tag(&tag)).cloned().collect();
                known.hold(&tag, carrying);
            }
        }
    }

    /// What a failed append of a decision served from this cache means: `Err` for one of unknown
    /// outcome, to give the caller (it is not to be taken again behind the caller's back); `Ok`
    /// for any refusal (a conflict with what the cache missed, or events chosen from it refused),
    /// after forgetting everything, to take the decision again from a read.
    pub(crate) fn after_served_failure<E>(&self, error: E, retryable: bool) -> Result<(), E> {
        if retryable {
            return Err(error);
        }
        self.forget();
        Ok(())
    }

    /// Forgets everything: an append's outcome is unknown, or it met a change the cache missed.
    pub(crate) fn forget(&self) {
        self.lock().start_over(None);
    }
}

#[cfg(test)]
mod tests {
    use dcb::QueryItem;

    use super::*;

    fn tagged(event_type: &str, tags: &[&str]) -> Event {
        Event::new(event_type, "").with_tags(tags.iter().copied())
    }

    fn positions(served: Option<(Vec<Arc<SequencedEvent>>, u64)>) -> Option<(Vec<u64>, u64)> {
        served.map(|(events, head)| (events.iter().map(|e| e.position).collect(), head))
    }

    fn bare(tag: &str) -> QueryItem {
        QueryItem::tags([tag])
    }

    #[test]
    fn an_append_with_no_after_makes_its_bare_tags_known() {
        let cache = DecisionCache::default();
        let registered = AppendCondition::new(bare("s1").into(), None);
        cache.learn_append(vec![tagged("Registered", &["s1"])], proven_empty(Some(&registered)), 4);
        assert_eq!(positions(cache.serve(&bare("s1").into())), Some((vec![4], 4)));
        // Another tag is not known, so a query needing it is not served.
        assert_eq!(positions(cache.serve(&Query::new([bare("s1"), bare("c1")]))), None);
        let registered = AppendCondition::new(bare("c1").into(), None);
        cache.learn_append(vec![tagged("Registered", &["c1"])], proven_empty(Some(&registered)), 5);
        let both = Query::new([bare("s1"), bare("c1")]);
        assert_eq!(positions(cache.serve(&both)), Some((vec![4, 5], 5)));
        // A join carries both tags: held by each, served once.
        let joined = AppendCondition::new(both.clone(), Some(5));
        cache.learn_append(vec![tagged("Joined", &["s1", "c1"])], proven_empty(Some(&joined)), 6);
        assert_eq!(positions(cache.serve(&both)), Some((vec![4, 5, 6], 6)));
        let joins = Query::from(QueryItem::types(["Joined"]).and_tags(["c1"]));
        assert_eq!(positions(cache.serve(&joins)), Some((vec![6], 6)));
    }

    #[test]
    fn an_append_after_a_gap_starts_over() {
        let cache = DecisionCache::default();
        cache.learn_read(&["s1".to_owned()], &[], Some(3));
        assert_eq!(positions(cache.serve(&bare("s1").into())), Some((vec![], 3)));
        // Positions 4 and 5 went to someone else: what they hold is unknown.
        cache.learn_append(vec![tagged("Noted", &["s1"])], vec![], 6);
        assert_eq!(positions(cache.serve(&bare("s1").into())), None);
    }

    #[test]
    fn answers_learnt_late_never_move_the_known_position_back() {
        let cache = DecisionCache::default();
        cache.learn_read(&["s1".to_owned()], &[], Some(12));
        // An append at 11 whose answer arrives after the read at 12: already covered by it.
        cache.learn_append(vec![tagged("Noted", &["c1"])], vec![], 11);
        assert_eq!(positions(cache.serve(&bare("s1").into())), Some((vec![], 12)));
        // A read at 11, older than what the cache knows: ignored.
        cache.learn_read(&["c1".to_owned()], &[], Some(11));
        assert_eq!(positions(cache.serve(&bare("c1").into())), None);
        assert_eq!(positions(cache.serve(&bare("s1").into())), Some((vec![], 12)));
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
    }

    #[test]
    fn a_read_at_another_head_starts_over() {
        let cache = DecisionCache::default();
        cache.learn_read(&["s1".to_owned()], &[], Some(3));
        let c1 = SequencedEvent { position: 5, event: tagged("Registered", &["c1"]) };
        cache.learn_read(&["c1".to_owned()], &[c1], Some(5));
        assert_eq!(positions(cache.serve(&bare("s1").into())), None);
        assert_eq!(positions(cache.serve(&bare("c1").into())), Some((vec![5], 5)));
        // Types alone cannot be served: no tag says which events to hold.
        assert_eq!(cache.tags_to_read(&QueryItem::types(["Registered"]).into()), None);
        cache.forget();
        assert_eq!(positions(cache.serve(&bare("c1").into())), None);
    }
}
