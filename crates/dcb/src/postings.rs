//! Answering a query from posting lists: a building block for stores that index events by name.
//!
//! A store keeps, per type and per tag, the ascending positions of the events that carry it. A
//! query item becomes one source of candidates (the list of its rarest tag, or one list per type of
//! a types-only item), with a check that a candidate must still pass (the item's other tags and
//! types). [`merge`] walks every source at once in position order and yields each position that
//! passes its source's check once, so a read costs the candidates it visits, not the store's size.
//! The in-memory store and the file store both answer queries this way.

use std::cmp::Reverse;
use std::collections::BinaryHeap;

/// Ascending positions, possibly kept in several pieces.
pub trait Positions {
    /// The `index`th position, ascending.
    fn get(&self, index: usize) -> u64;
    /// How many positions are at most `bound`.
    fn count_upto(&self, bound: u64) -> usize;
}

impl Positions for &[u64] {
    fn get(&self, index: usize) -> u64 {
        self[index]
    }

    fn count_upto(&self, bound: u64) -> usize {
        self.partition_point(|&p| p <= bound)
    }
}

/// What a candidate must still satisfy to match.
pub trait Check {
    /// Whether the event at `position` matches.
    fn passes(&self, position: u64) -> bool;
}

/// Candidates for one query item: `positions`, each of which matches if it passes `check` (or
/// always, without one).
#[derive(Debug)]
pub struct Source<P, C> {
    /// The candidates, ascending.
    pub positions: P,
    /// What a candidate must still satisfy.
    pub check: Option<C>,
}

/// The positions in `after + 1 ..= last` offered by `sources` that pass their source's check, each
/// once, ascending (descending when `backwards`), at most `limit` of them.
///
/// ```
/// use dcb::postings::{Check, Source, merge};
///
/// struct Even;
/// impl Check for Even {
///     fn passes(&self, position: u64) -> bool {
///         position % 2 == 0
///     }
/// }
/// let first: &[u64] = &[1, 2, 4, 7];
/// let second: &[u64] = &[3, 4, 6, 8];
/// let sources = vec![Source { positions: first, check: None }, Source { positions: second, check: Some(Even) }];
/// assert_eq!(merge(sources, 1, 7, 10, false), [2, 4, 6, 7]);
/// ```
pub fn merge<P: Positions, C: Check>(
    sources: Vec<Source<P, C>>,
    after: u64,
    last: u64,
    limit: usize,
    backwards: bool,
) -> Vec<u64> {
    let mut merge = Merge::new(sources, after, last, backwards);
    let mut found = Vec::new();
    while found.len() < limit {
        match merge.next() {
            Some(position) => found.push(position),
            None => break,
        }
    }
    found
}

/// A k-way merge of the sources' candidates that pass their checks, within a window of positions,
/// in either direction.
struct Merge<P, C> {
    sources: Vec<Source<P, C>>,
    /// Per source: the next index to look at (forward), or one past it (backward).
    cursors: Vec<usize>,
    /// Per source: the window as a range of indexes.
    lows: Vec<usize>,
    highs: Vec<usize>,
    /// The next position to yield has the greatest key.
    heap: BinaryHeap<(u64, Reverse<usize>)>,
    backwards: bool,
}

impl<P: Positions, C: Check> Merge<P, C> {
    fn new(sources: Vec<Source<P, C>>, after: u64, last: u64, backwards: bool) -> Self {
        let lows: Vec<usize> = sources.iter().map(|s| s.positions.count_upto(after)).collect();
        let highs: Vec<usize> = sources.iter().map(|s| s.positions.count_upto(last)).collect();
        let cursors = if backwards { highs.clone() } else { lows.clone() };
        let mut merge = Merge { sources, cursors, lows, highs, heap: BinaryHeap::new(), backwards };
        for source in 0..merge.sources.len() {
            merge.advance(source);
        }
        merge
    }

    /// Moves the source to its next candidate that passes its check and pushes it on the heap.
    fn advance(&mut self, source: usize) {
        let Source { positions, check } = &self.sources[source];
        loop {
            let cursor = self.cursors[source];
            let position = if self.backwards {
                if cursor <= self.lows[source] {
                    return;
                }
                self.cursors[source] -= 1;
                positions.get(cursor - 1)
            } else {
                if cursor >= self.highs[source] {
                    return;
                }
                self.cursors[source] += 1;
                positions.get(cursor)
            };
            if check.as_ref().is_none_or(|c| c.passes(position)) {
                let key = if self.backwards { position } else { !position };
                self.heap.push((key, Reverse(source)));
                return;
            }
        }
    }

    fn next(&mut self) -> Option<u64> {
        let (key, _) = *self.heap.peek()?;
        while let Some(&(k, Reverse(source))) = self.heap.peek() {
            if k != key {
                break;
            }
            self.heap.pop();
            self.advance(source);
        }
        Some(if self.backwards { key } else { !key })
    }
}
