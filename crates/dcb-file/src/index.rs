//! The in-memory index: where each position's record lies in the log, and which positions carry
//! each tag and each type. Queries are answered from it without touching the log; only the
//! events finally returned are read from disk.
//!
//! The index has two parts. The *frozen* part is the checkpoint file itself, mapped as one block
//! of 64-bit words and used in place: a table of entries, posting lists, and an open-addressing
//! hash table of tags. Opening a store therefore costs a mapping of the checkpoint and one
//! validation pass over it, with no per-tag allocation. The *delta* part holds the positions appended
//! since (ordinary vectors and hash maps). Every posting list is the frozen list followed by the
//! delta list, which stays ascending because delta positions all follow frozen ones.

use std::collections::HashMap;

use dcb::postings::{self, Positions};
use dcb::{Query, QueryItem, Uuid};

use crate::io::Words;

#[cfg(target_endian = "big")]
compile_error!("the dcb-file checkpoint is used in place as little-endian words");

/// Where the record of one position lies, and the event's type (so that type filters never read
/// the log).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) offset: u64,
    /// Total record length, header included.
    pub(crate) len: u32,
    pub(crate) type_id: u32,
}

/// Ascending positions: the frozen list, then the delta list.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Postings<'a> {
    a: &'a [u64],
    b: &'a [u64],
}

impl Positions for Postings<'_> {
    fn get(&self, i: usize) -> u64 {
        if i < self.a.len() { self.a[i] } else { self.b[i - self.a.len()] }
    }

    fn count_upto(&self, bound: u64) -> usize {
        match self.a.last() {
            Some(&last) if last > bound => self.a.partition_point(|&p| p <= bound),
            _ => self.a.len() + self.b.partition_point(|&p| p <= bound),
        }
    }
}

impl Postings<'_> {
    fn len(&self) -> usize {
        self.a.len() + self.b.len()
    }

    fn contains(&self, position: u64) -> bool {
        self.a.binary_search(&position).is_ok() || self.b.binary_search(&position).is_ok()
    }

    fn to_vec(self) -> Vec<u64> {
        [self.a, self.b].concat()
    }
}

const CHECKPOINT_MAGIC: &[u8; 8] = b"DCBFIDX2";
const CHECKPOINT_VERSION: u64 = 2;
const HEADER_WORDS: usize = 14;
/// A hash-table slot with no tag.
const EMPTY: u64 = u64::MAX;

/// A name stored in the checkpoint's names area: byte offset << 16 | length.
fn name_ref(offset: usize, len: usize) -> u64 {
    debug_assert!(len <= u16::MAX as usize);
    ((offset as u64) << 16) | len as u64
}

/// The tag hash of the checkpoint's table: keyed by a seed drawn for each checkpoint (so that
/// tags cannot be chosen to collide in every store), fixed by this format (so that every build
/// finds the tags a checkpoint holds). Not cryptographic; collisions only lengthen probes.
fn tag_hash(seed: u64, bytes: &[u8]) -> u64 {
    const M: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut h = seed ^ (bytes.len() as u64).wrapping_mul(M);
    let mut chunks = bytes.chunks_exact(8);
    for chunk in &mut chunks {
        h = (h ^ u64::from_le_bytes(chunk.try_into().unwrap())).wrapping_mul(M).rotate_left(29);
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        let mut last = [0u8; 8];
        last[..rest.len()].copy_from_slice(rest);
        h = (h ^ u64::from_le_bytes(last)).wrapping_mul(M).rotate_left(29);
    }
    h ^= h >> 30;
    h = h.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    h ^= h >> 27;
    h = h.wrapping_mul(0x94D0_49BB_1331_11EB);
    h ^ (h >> 31)
}

/// The checkpoint, used in place. Every reference in it was bounds-checked when it was loaded.
#[derive(Debug, Default)]
struct Frozen {
    words: Words,
    head: u64,
    seed: u64,
    entries_at: usize,
    types_at: usize,
    type_count: usize,
    slots_at: usize,
    slot_count: usize,
    tag_count: usize,
    names_at: usize,
    names_bytes: usize,
}

impl Frozen {
    fn entry(&self, position: u64) -> Entry {
        debug_assert!(position >= 1 && position <= self.head);
        let at = self.entries_at + 2 * (position - 1) as usize;
        let packed = self.words[at + 1];
        Entry { offset: self.words[at], len: packed as u32, type_id: (packed >> 32) as u32 }
    }

    fn names(&self) -> &[u8] {
        let words = &self.words[self.names_at..self.names_at + self.names_bytes.div_ceil(8)];
        &bytemuck::cast_slice::<u64, u8>(words)[..self.names_bytes]
    }

    fn name(&self, name_ref: u64) -> &[u8] {
        let offset = (name_ref >> 16) as usize;
        &self.names()[offset..offset + (name_ref & 0xFFFF) as usize]
    }

    /// Start and count words of a posting list, as a slice.
    fn list(&self, at: usize) -> &[u64] {
        let start = self.words[at] as usize;
        &self.words[start..start + self.words[at + 1] as usize]
    }

    fn type_postings(&self, id: usize) -> &[u64] {
        if id >= self.type_count {
            return &[];
        }
        self.list(self.types_at + 3 * id + 1)
    }

    fn tag_postings(&self, tag: &[u8]) -> Option<&[u64]> {
        if self.slot_count == 0 {
            return None;
        }
        let mask = self.slot_count - 1;
        let mut slot = tag_hash(self.seed, tag) as usize & mask;
        loop {
            let at = self.slots_at + 3 * slot;
            let name = self.words[at];
            if name == EMPTY {
                return None;
            }
            if self.name(name) == tag {
                return Some(self.list(at + 1));
            }
            slot = (slot + 1) & mask;
        }
    }

    fn tags(&self) -> impl Iterator<Item = (&[u8], &[u64])> {
        (0..self.slot_count).filter_map(move |slot| {
            let at = self.slots_at + 3 * slot;
            (self.words[at] != EMPTY).then(|| (self.name(self.words[at]), self.list(at + 1)))
        })
    }
}

#[derive(Debug, Default)]
pub(crate) struct Index {
    frozen: Frozen,
    /// Entries of the positions after the frozen head.
    entries: Vec<Entry>,
    type_names: Vec<String>,
    type_ids: HashMap<String, u32>,
    /// Delta positions of each type, by type id.
    by_type: Vec<Vec<u64>>,
    /// Delta positions of each tag (an event listing a tag twice appears once).
    by_tag: HashMap<String, Vec<u64>>,
    /// Last recorded position per tracking source (only durable ones: the writer applies
    /// tracking after the sync).
    pub(crate) tracking: HashMap<String, u64>,
}

impl Index {
    /// The highest indexed position (0 when empty). May exceed the durable head while the writer
    /// is between indexing a batch and syncing it.
    pub(crate) fn len(&self) -> u64 {
        self.frozen.head + self.entries.len() as u64
    }

    pub(crate) fn entry(&self, position: u64) -> Entry {
        debug_assert!(position >= 1 && position <= self.len());
        if position <= self.frozen.head {
            self.frozen.entry(position)
        } else {
            self.entries[(position - self.frozen.head - 1) as usize]
        }
    }

    fn type_postings(&self, id: u32) -> Postings<'_> {
        Postings { a: self.frozen.type_postings(id as usize), b: &self.by_type[id as usize] }
    }

    fn tag_postings(&self, tag: &str) -> Option<Postings<'_>> {
        let a = self.frozen.tag_postings(tag.as_bytes()).unwrap_or(&[]);
        let b = self.by_tag.get(tag).map_or(&[][..], Vec::as_slice);
        (!a.is_empty() || !b.is_empty()).then_some(Postings { a, b })
    }

    /// Every tag with its positions (slow: for verification).
    fn all_tags(&self) -> HashMap<String, Vec<u64>> {
        let mut tags: HashMap<String, Vec<u64>> = self
            .frozen
            .tags()
            .map(|(name, list)| (String::from_utf8_lossy(name).into_owned(), list.to_vec()))
            .collect();
        for (tag, list) in &self.by_tag {
            tags.entry(tag.clone()).or_default().extend_from_slice(list);
        }
        tags
    }

    pub(crate) fn tag_count(&self) -> usize {
        let new = self.by_tag.keys().filter(|t| self.frozen.tag_postings(t.as_bytes()).is_none()).count();
        self.frozen.tag_count + new
    }

    pub(crate) fn type_count(&self) -> usize {
        self.type_names.len()
    }

    /// Indexes the next position; returns it.
    pub(crate) fn push(&mut self, offset: u64, len: u32, event_type: &str, tags: &[String]) -> u64 {
        let position = self.len() + 1;
        if position > 1 {
            let previous = self.entry(position - 1);
            assert!(offset >= previous.offset + u64::from(previous.len), "index offsets go backwards");
        }
        let type_id = match self.type_ids.get(event_type) {
            Some(&id) => id,
            None => {
                let id = self.type_names.len() as u32;
                self.type_names.push(event_type.to_owned());
                self.type_ids.insert(event_type.to_owned(), id);
                self.by_type.push(Vec::new());
                id
            }
        };
        self.by_type[type_id as usize].push(position);
        for tag in tags {
            match self.by_tag.get_mut(tag.as_str()) {
                Some(list) => {
                    if list.last() != Some(&position) {
                        list.push(position);
                    }
                }
                None => {
                    self.by_tag.insert(tag.clone(), vec![position]);
                }
            }
        }
        self.entries.push(Entry { offset, len, type_id });
        position
    }

    /// Forgets every position above `len` (the writer's undo of a batch that was never written).
    pub(crate) fn truncate(&mut self, len: u64) {
        assert!(len >= self.frozen.head, "a checkpointed position cannot be forgotten");
        if len >= self.len() {
            return;
        }
        self.entries.truncate((len - self.frozen.head) as usize);
        for list in &mut self.by_type {
            let keep = list.partition_point(|&p| p <= len);
            list.truncate(keep);
        }
        self.by_tag.retain(|_, list| {
            let keep = list.partition_point(|&p| p <= len);
            list.truncate(keep);
            !list.is_empty()
        });
    }

    /// Positions matching `query` in `(after, upto]`, ascending (or descending when `backwards`),
    /// at most `limit` of them.
    pub(crate) fn matching(
        &self,
        query: &Query,
        after: u64,
        upto: u64,
        limit: usize,
        backwards: bool,
    ) -> Vec<u64> {
        debug_assert!(upto <= self.len());
        if limit == 0 || after >= upto {
            return Vec::new();
        }
        if query.matches_all() {
            let window = after + 1..=upto;
            return if backwards { window.rev().take(limit).collect() } else { window.take(limit).collect() };
        }
        postings::merge(self.sources(query), after, upto, limit, backwards)
    }

    /// Posting lists that together hold every match of `query` (which must not match all), each
    /// with the check a candidate from it must still pass.
    fn sources<'a>(&'a self, query: &'a Query) -> Vec<Source<'a>> {
        let mut sources = Vec::new();
        for item in &query.items {
            if item.tags.is_empty() {
                for ty in &item.types {
                    if let Some(&id) = self.type_ids.get(ty) {
                        sources.push(Source { positions: self.type_postings(id), check: None });
                    }
                }
                continue;
            }
            if let Some(source) = self.tag_source(item) {
                sources.push(source);
            }
        }
        sources
    }

    /// The rarest tag's list of `item` (a tag never seen means no candidate), checked against
    /// the item's types and other tags, all in memory.
    fn tag_source<'a>(&'a self, item: &'a QueryItem) -> Option<Source<'a>> {
        let mut lists = Vec::with_capacity(item.tags.len());
        for tag in &item.tags {
            lists.push(self.tag_postings(tag)?);
        }
        let type_ids = if item.types.is_empty() {
            None
        } else {
            let ids: Vec<u32> = item.types.iter().filter_map(|ty| self.type_ids.get(ty).copied()).collect();
            if ids.is_empty() {
                return None;
            }
            Some(ids)
        };
        let rarest = (0..lists.len()).min_by_key(|&i| lists[i].len())?;
        let positions = lists.swap_remove(rarest);
        let check = (type_ids.is_some() || !lists.is_empty()).then_some(Check {
            type_ids,
            other_tags: lists,
            index: self,
        });
        Some(Source { positions, check })
    }

    /// The first way in which `self` (rebuilt from the log) and `other` (a checkpoint) differ.
    pub(crate) fn first_difference(&self, other: &Index) -> Option<String> {
        if self.len() != other.len() {
            return Some(format!("{} positions in the log, {} in the checkpoint", self.len(), other.len()));
        }
        if let Some(p) = (1..=self.len()).find(|&p| self.entry(p) != other.entry(p)) {
            return Some(format!(
                "position {p}: log has {:?}, checkpoint has {:?}",
                self.entry(p),
                other.entry(p)
            ));
        }
        if self.type_names != other.type_names {
            return Some("the type tables differ".into());
        }
        if let Some(ty) = (0..self.type_names.len() as u32)
            .find(|&id| self.type_postings(id).to_vec() != other.type_postings(id).to_vec())
        {
            return Some(format!("the positions of type {:?} differ", self.type_names[ty as usize]));
        }
        let (mine, theirs) = (self.all_tags(), other.all_tags());
        if let Some(tag) = mine.keys().chain(theirs.keys()).find(|t| mine.get(*t) != theirs.get(*t)) {
            return Some(format!("the positions of tag {tag:?} differ"));
        }
        if let Some(tag) =
            theirs.keys().find(|t| other.tag_postings(t).map(Postings::to_vec).as_ref() != theirs.get(*t))
        {
            return Some(format!("tag {tag:?} cannot be found through the checkpoint's hash table"));
        }
        if self.tracking != other.tracking {
            return Some("the tracking positions differ".into());
        }
        None
    }

    /// Serialises the index (which must hold only durable positions, ending at log offset
    /// `log_end`) as the words of a checkpoint. The layout is in docs/FILE_FORMAT.md.
    pub(crate) fn encode_checkpoint(&self, store_id: Uuid, log_end: u64) -> Vec<u64> {
        let n = self.len() as usize;
        let mut names: Vec<u8> = Vec::new();
        let mut add_name = |name: &[u8]| {
            let r = name_ref(names.len(), name.len());
            names.extend_from_slice(name);
            r
        };
        let types: Vec<(u64, Postings<'_>)> = (0..self.type_names.len())
            .map(|id| (add_name(self.type_names[id].as_bytes()), self.type_postings(id as u32)))
            .collect();
        let mut tags: Vec<(&[u8], Postings<'_>)> = Vec::with_capacity(self.tag_count());
        for (name, frozen) in self.frozen.tags() {
            let delta = std::str::from_utf8(name).ok().and_then(|t| self.by_tag.get(t));
            tags.push((name, Postings { a: frozen, b: delta.map_or(&[][..], Vec::as_slice) }));
        }
        for (tag, delta) in &self.by_tag {
            if self.frozen.tag_postings(tag.as_bytes()).is_none() {
                tags.push((tag.as_bytes(), Postings { a: &[], b: delta }));
            }
        }
        // Tags in the order of their home slots, and their names and lists in the same order: the
        // table, the lists and the names are then checked in one sequential pass on open.
        let slot_count = (tags.len() * 2).next_power_of_two().max(2);
        let seed = Uuid::new_v4().as_u64_pair().0;
        let home = |name: &[u8]| tag_hash(seed, name) as usize & (slot_count - 1);
        tags.sort_by_cached_key(|(name, _)| home(name));
        let tags: Vec<(&[u8], u64, Postings<'_>)> =
            tags.into_iter().map(|(name, postings)| (name, add_name(name), postings)).collect();
        let tracking: Vec<(u64, u64)> =
            self.tracking.iter().map(|(source, &position)| (add_name(source.as_bytes()), position)).collect();
        let tag_postings: usize = tags.iter().map(|(_, _, p)| p.len()).sum();

        let entries_at = HEADER_WORDS;
        let types_at = entries_at + 2 * n;
        let slots_at = types_at + 3 * types.len();
        let tracking_at = slots_at + 3 * slot_count;
        let type_lists_at = tracking_at + 2 * tracking.len();
        let tag_lists_at = type_lists_at + n;
        let names_at = tag_lists_at + tag_postings;
        let crc_at = names_at + names.len().div_ceil(8);

        let mut words = Vec::with_capacity(crc_at + 1);
        words.push(u64::from_le_bytes(*CHECKPOINT_MAGIC));
        words.push(CHECKPOINT_VERSION);
        let (id_high, id_low) = store_id.as_u64_pair();
        words.extend([id_high, id_low, log_end, n as u64, seed]);
        words.extend(
            [types.len(), tags.len(), slot_count, tracking.len(), names.len(), n, tag_postings]
                .map(|x| x as u64),
        );
        debug_assert_eq!(words.len(), HEADER_WORDS);
        for p in 1..=n as u64 {
            let entry = self.entry(p);
            words.push(entry.offset);
            words.push(u64::from(entry.len) | (u64::from(entry.type_id) << 32));
        }
        let mut next_list = type_lists_at;
        for (name, postings) in &types {
            words.extend([*name, next_list as u64, postings.len() as u64]);
            next_list += postings.len();
        }
        debug_assert_eq!(next_list, tag_lists_at, "every position has exactly one type");
        let mut slots = vec![[EMPTY, 0, 0]; slot_count];
        let mut next_list = tag_lists_at;
        for (name, r, postings) in &tags {
            let mut slot = home(name);
            while slots[slot][0] != EMPTY {
                slot = (slot + 1) & (slot_count - 1);
            }
            slots[slot] = [*r, next_list as u64, postings.len() as u64];
            next_list += postings.len();
        }
        words.extend(slots.iter().flatten());
        for (name, position) in &tracking {
            words.extend([*name, *position]);
        }
        for (_, postings) in &types {
            words.extend_from_slice(postings.a);
            words.extend_from_slice(postings.b);
        }
        for (_, _, postings) in &tags {
            words.extend_from_slice(postings.a);
            words.extend_from_slice(postings.b);
        }
        debug_assert_eq!(words.len(), names_at);
        names.resize(names.len().div_ceil(8) * 8, 0);
        words.extend(names.chunks_exact(8).map(|w| u64::from_le_bytes(w.try_into().unwrap())));
        debug_assert_eq!(words.len(), crc_at);
        words.push(u64::from(crc32c::crc32c(bytemuck::cast_slice(&words))));
        words
    }

    /// Loads a checkpoint: the store id, the log offset it covers, and the index, after checking
    /// its checksum and every reference in it. An error says what is wrong (the caller names the
    /// file).
    pub(crate) fn decode_checkpoint(words: Words) -> Result<(Uuid, u64, Index), String> {
        if words.len() <= HEADER_WORDS || words[0] != u64::from_le_bytes(*CHECKPOINT_MAGIC) {
            return Err("not a dcb-file index checkpoint (bad magic or too short)".into());
        }
        let (content, crc) = words.split_at(words.len() - 1);
        if u64::from(crc32c::crc32c(bytemuck::cast_slice(content))) != crc[0] {
            return Err("checkpoint checksum mismatch".into());
        }
        if words[1] != CHECKPOINT_VERSION {
            return Err(format!("checkpoint version {}, this build reads {CHECKPOINT_VERSION}", words[1]));
        }
        let malformed = |what: &str| format!("checkpoint malformed: {what} (checksum valid: written wrong?)");
        let store_id = Uuid::from_u64_pair(words[2], words[3]);
        let log_end = words[4];
        let seed = words[6];
        let small =
            |w: u64| usize::try_from(w).ok().filter(|&x| x < (1 << 40)).ok_or_else(|| malformed("size"));
        let n = small(words[5])?;
        let [type_count, tag_count, slot_count, tracking_count, names_bytes, type_postings, tag_postings] =
            [7, 8, 9, 10, 11, 12, 13].map(|i| small(words[i]));
        let (type_count, tag_count, slot_count, tracking_count) =
            (type_count?, tag_count?, slot_count?, tracking_count?);
        let (names_bytes, type_postings, tag_postings) = (names_bytes?, type_postings?, tag_postings?);
        if type_postings != n || !slot_count.is_power_of_two() || tag_count >= slot_count {
            return Err(malformed("table sizes"));
        }
        let entries_at = HEADER_WORDS;
        let types_at = entries_at + 2 * n;
        let slots_at = types_at + 3 * type_count;
        let tracking_at = slots_at + 3 * slot_count;
        let type_lists_at = tracking_at + 2 * tracking_count;
        let tag_lists_at = type_lists_at + n;
        let names_at = tag_lists_at + tag_postings;
        if names_at + names_bytes.div_ceil(8) + 1 != words.len() {
            return Err(malformed("length does not match the table sizes"));
        }
        let frozen = Frozen {
            head: n as u64,
            seed,
            entries_at,
            types_at,
            type_count,
            slots_at,
            slot_count,
            tag_count,
            names_at,
            names_bytes,
            words,
        };
        let check_name = |r: u64| ((r >> 16) as usize + (r & 0xFFFF) as usize <= names_bytes).then_some(r);
        let check_list = |at: usize, region: std::ops::Range<usize>| -> Result<(), String> {
            let (start, count) = (frozen.words[at] as usize, frozen.words[at + 1] as usize);
            if start < region.start || start > region.end || count > region.end - start {
                return Err(malformed("posting list out of its region"));
            }
            let list = &frozen.words[start..start + count];
            if list.first().is_some_and(|&p| p == 0)
                || list.windows(2).any(|w| w[0] >= w[1])
                || list.last().is_some_and(|&p| p > n as u64)
            {
                return Err(malformed("posting list not ascending within the head"));
            }
            Ok(())
        };
        let mut previous_end = crate::format::LOG_HEADER_LEN;
        for p in 1..=n as u64 {
            let entry = frozen.entry(p);
            let end = entry.offset.checked_add(u64::from(entry.len));
            if entry.offset < previous_end
                || entry.type_id as usize >= type_count
                || (entry.len as usize) < crate::format::RECORD_HEADER_LEN
                || end.is_none()
            {
                return Err(malformed(&format!("entry of position {p}")));
            }
            previous_end = end.unwrap_or(u64::MAX);
        }
        if previous_end > log_end {
            return Err(malformed("entries beyond the log offset covered"));
        }
        let mut index = Index::default();
        for id in 0..type_count {
            let at = types_at + 3 * id;
            check_name(frozen.words[at]).ok_or_else(|| malformed("type name"))?;
            check_list(at + 1, type_lists_at..tag_lists_at)?;
            let name = String::from_utf8(frozen.name(frozen.words[at]).to_vec())
                .map_err(|_| malformed("type name"))?;
            index.type_ids.insert(name.clone(), id as u32);
            index.type_names.push(name);
        }
        let mut used = 0;
        for slot in 0..slot_count {
            let at = slots_at + 3 * slot;
            if frozen.words[at] == EMPTY {
                continue;
            }
            used += 1;
            check_name(frozen.words[at]).ok_or_else(|| malformed("tag name"))?;
            check_list(at + 1, tag_lists_at..names_at)?;
            // Every tag must be found by probing from its home slot, or reads would miss it.
            let mask = slot_count - 1;
            let mut probe = tag_hash(seed, frozen.name(frozen.words[at])) as usize & mask;
            while probe != slot {
                if frozen.words[slots_at + 3 * probe] == EMPTY {
                    return Err(malformed("tag table out of order"));
                }
                probe = (probe + 1) & mask;
            }
        }
        if used != tag_count {
            return Err(malformed("tag count"));
        }
        for i in 0..tracking_count {
            let at = tracking_at + 2 * i;
            check_name(frozen.words[at]).ok_or_else(|| malformed("tracking source"))?;
            let source = String::from_utf8(frozen.name(frozen.words[at]).to_vec())
                .map_err(|_| malformed("tracking source"))?;
            index.tracking.insert(source, frozen.words[at + 1]);
        }
        index.by_type = vec![Vec::new(); type_count];
        index.frozen = frozen;
        Ok((store_id, log_end, index))
    }
}

/// What a candidate from a tag list must still satisfy: one of the item's types, and every other
/// tag of the item.
struct Check<'a> {
    type_ids: Option<Vec<u32>>,
    other_tags: Vec<Postings<'a>>,
    index: &'a Index,
}

impl postings::Check for Check<'_> {
    fn passes(&self, position: u64) -> bool {
        if let Some(ids) = &self.type_ids
            && !ids.contains(&self.index.entry(position).type_id)
        {
            return false;
        }
        self.other_tags.iter().all(|list| list.contains(position))
    }
}

type Source<'a> = postings::Source<Postings<'a>, Check<'a>>;

#[cfg(test)]
mod tests {
    use super::*;
    use dcb::{Event, EventStore, ReadOptions};

    const EVENTS: [(&str, &[&str]); 6] = [
        ("A", &["x"]),
        ("B", &["x", "y"]),
        ("C", &["y"]),
        ("A", &["y", "z", "y"]),
        ("B", &[]),
        ("C", &["x", "y", "z"]),
    ];

    fn push(index: &mut Index, range: std::ops::Range<usize>) {
        for i in range {
            let (ty, tags) = EVENTS[i];
            let tags: Vec<String> = tags.iter().map(|t| t.to_string()).collect();
            index.push(100 + i as u64 * 100, 100, ty, &tags);
        }
    }

    /// The sample, all in the delta part; then with its first `frozen` positions checkpointed.
    fn samples() -> Vec<Index> {
        let mut all = Vec::new();
        for frozen in [0, 1, 3, 6] {
            let mut index = Index::default();
            push(&mut index, 0..frozen);
            if frozen > 0 {
                let words = index.encode_checkpoint(Uuid::from_u128(1), 100 + frozen as u64 * 100);
                index = Index::decode_checkpoint(Words::from(words)).unwrap().2;
            }
            push(&mut index, frozen..6);
            all.push(index);
        }
        all
    }

    #[test]
    fn matching_agrees_with_the_memory_store_on_every_small_query() {
        let memory = dcb::MemoryStore::new();
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        for (ty, tags) in EVENTS {
            let event = Event::new(ty, "").with_tags(tags.iter().copied());
            rt.block_on(memory.append(vec![event], None)).unwrap();
        }
        let items = [
            QueryItem::types(["A"]),
            QueryItem::types(["A", "C"]),
            QueryItem::types(["Q"]),
            QueryItem::tags(["x"]),
            QueryItem::tags(["y", "z"]),
            QueryItem::tags(["q"]),
            QueryItem::types(["A", "B"]).and_tags(["y"]),
            QueryItem::types(["Q"]).and_tags(["y"]),
            QueryItem::default(),
        ];
        let mut queries = vec![Query::all()];
        for a in &items {
            queries.push(a.clone().into());
            for b in &items {
                queries.push(Query::from(a.clone()).or(b.clone()));
            }
        }
        for index in samples() {
            for query in &queries {
                for after in 0..=6 {
                    for limit in [1, 2, 100] {
                        for (backwards, upto) in [false, true].into_iter().flat_map(|b| [(b, 6), (b, 4)]) {
                            let options = ReadOptions {
                                after: Some(after),
                                before: Some(upto + 1),
                                limit: Some(limit),
                                backwards,
                                ..ReadOptions::default()
                            };
                            let expected: Vec<u64> = rt
                                .block_on(memory.read(query, options))
                                .unwrap()
                                .events
                                .iter()
                                .map(|e| e.position)
                                .collect();
                            let got = index.matching(query, after, upto, limit as usize, backwards);
                            assert_eq!(got, expected, "{query:?} {options:?} frozen {}", index.frozen.head);
                        }
                    }
                }
            }
            // A window that stops below the end leaves out later positions.
            assert_eq!(index.matching(&QueryItem::tags(["y"]).into(), 0, 3, 10, false), [2, 3]);
        }
    }

    #[test]
    fn checkpoints_round_trip_and_refuse_damage() {
        let indexes = samples();
        let all_delta = &indexes[0];
        for mut index in samples() {
            index.tracking.insert("src".into(), 9);
            let words = index.encode_checkpoint(Uuid::from_u128(5), 700);
            let (id, end, decoded) = Index::decode_checkpoint(Words::from(words.clone())).unwrap();
            assert_eq!((id, end), (Uuid::from_u128(5), 700));
            assert_eq!(decoded.first_difference(&index), None);
            assert_eq!(all_delta.first_difference(&decoded), Some("the tracking positions differ".into()));
            for word in [0, 5, words.len() / 2, words.len() - 2] {
                let mut damaged = words.clone();
                damaged[word] ^= 1 << 9;
                assert!(
                    Index::decode_checkpoint(Words::from(damaged)).is_err(),
                    "damage at word {word} went unnoticed"
                );
            }
        }
    }

    /// A checkpoint written wrong (its checksum valid) is refused, never followed out of bounds.
    #[test]
    fn checkpoints_with_impossible_references_are_refused() {
        let index = samples().pop().unwrap();
        let words = index.encode_checkpoint(Uuid::from_u128(5), 700);
        let n = words[5] as usize;
        let types_at = HEADER_WORDS + 2 * n;
        let damages: [&[(usize, u64)]; 2] = [
            // The first type's posting list: empty, but starting past the end of the file.
            &[(types_at + 1, u64::MAX), (types_at + 2, 0)],
            // The last entry: a record whose end overflows.
            &[(HEADER_WORDS + 2 * (n - 1), u64::MAX - 4)],
        ];
        for damage in damages {
            let mut damaged = words.clone();
            for &(at, value) in damage {
                damaged[at] = value;
            }
            let crc_at = damaged.len() - 1;
            damaged[crc_at] = u64::from(crc32c::crc32c(bytemuck::cast_slice(&damaged[..crc_at])));
            let refused = Index::decode_checkpoint(Words::from(damaged));
            assert!(refused.is_err_and(|why| why.contains("malformed")), "{damage:?} was accepted");
        }
    }

    #[test]
    fn truncate_forgets_later_positions() {
        for mut index in samples().into_iter().take(3) {
            index.truncate(3);
            assert_eq!(index.len(), 3);
            assert_eq!(index.matching(&QueryItem::tags(["z"]).into(), 0, 3, 10, false), Vec::<u64>::new());
            assert_eq!(index.matching(&QueryItem::types(["C"]).into(), 0, 3, 10, false), [3]);
        }
    }

    #[test]
    fn many_tags_are_all_found_through_the_checkpoint_table() {
        let mut index = Index::default();
        for i in 0..5000u64 {
            index.push(100 + i * 50, 50, "T", &[format!("tag-{}", i % 1700), "common".into()]);
        }
        let words = index.encode_checkpoint(Uuid::from_u128(2), 100 + 5000 * 50);
        let (_, _, loaded) = Index::decode_checkpoint(Words::from(words)).unwrap();
        assert_eq!(loaded.first_difference(&index), None);
        assert_eq!(loaded.tag_count(), 1701);
        assert_eq!(loaded.matching(&QueryItem::tags(["tag-3"]).into(), 0, 5000, 10, false), [4, 1704, 3404]);
    }
}
