//! A small cache of recently written event records, so that what is most likely read next (the
//! events subscriptions are about to deliver, the tags a service just decided on) is served
//! without a system call. Reads do not fill it: reads spread over a large store would only churn
//! it, and pay an allocation per event for that.
//!
//! Two-way set-associative by position, one lock per set: a lookup costs one uncontended lock
//! and one reference-count increment. Records are immutable once durable, and positions are never
//! reused while a store is open (a failed batch poisons the store), so a cached record is never
//! stale. Records longer than [`MAX_CACHED_RECORD`] are not cached, which bounds the memory to
//! 2 × [`SETS`] × [`MAX_CACHED_RECORD`] (64 MiB).

use std::sync::{Arc, Mutex, PoisonError};

/// Sets of two records each.
pub(crate) const SETS: usize = 1 << 16;
pub(crate) const MAX_CACHED_RECORD: usize = 512;
/// Records the cache can hold.
pub(crate) const CAPACITY: usize = 2 * SETS;

type Way = Option<(u64, Arc<[u8]>)>;

pub(crate) struct RecordCache {
    /// Per set, the most recently used record first.
    sets: Box<[Mutex<[Way; 2]>]>,
}

impl RecordCache {
    pub(crate) fn new() -> Self {
        RecordCache { sets: (0..SETS).map(|_| Mutex::new([None, None])).collect() }
    }

    fn set(&self, position: u64) -> &Mutex<[Way; 2]> {
        // Fibonacci hashing spreads consecutive positions over the table.
        let index = position.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - SETS.trailing_zeros());
        &self.sets[index as usize]
    }

    /// The record of `position`, if cached.
    pub(crate) fn get(&self, position: u64) -> Option<Arc<[u8]>> {
        let mut set = self.set(position).lock().unwrap_or_else(PoisonError::into_inner);
        let way = set.iter().position(|w| w.as_ref().is_some_and(|(p, _)| *p == position))?;
        set.swap(0, way);
        set[0].as_ref().map(|(_, record)| record.clone())
    }

    /// Caches the record of a durable `position`, evicting the less recently used of its set.
    pub(crate) fn put(&self, position: u64, record: &[u8]) {
        if record.len() > MAX_CACHED_RECORD {
            return;
        }
        let record: Arc<[u8]> = Arc::from(record);
        let mut set = self.set(position).lock().unwrap_or_else(PoisonError::into_inner);
        if set[0].as_ref().is_some_and(|(p, _)| *p == position) {
            return;
        }
        // The other way is evicted (or is this very position, now refreshed).
        set[1] = set[0].take();
        set[0] = Some((position, record));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_set_keeps_its_two_most_recently_used_records() {
        let cache = RecordCache::new();
        cache.put(7, b"seven");
        assert_eq!(cache.get(7).as_deref(), Some(&b"seven"[..]));
        assert_eq!(cache.get(8), None);
        let mut twins = (8..).filter(|&p| std::ptr::eq(cache.set(p), cache.set(7)));
        let (a, b) = (twins.next().unwrap(), twins.next().unwrap());
        cache.put(a, b"a");
        assert_eq!(cache.get(7).as_deref(), Some(&b"seven"[..]));
        // 7 was used last, so `a` is the one evicted.
        cache.put(b, b"b");
        assert_eq!(cache.get(a), None);
        assert_eq!(cache.get(7).as_deref(), Some(&b"seven"[..]));
        assert_eq!(cache.get(b).as_deref(), Some(&b"b"[..]));
        cache.put(9, &[0; MAX_CACHED_RECORD + 1]);
        assert_eq!(cache.get(9), None);
    }
}
