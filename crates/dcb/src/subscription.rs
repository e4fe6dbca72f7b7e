//! Catch-up-then-live subscriptions for any store that can announce new heads.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::watch;

use crate::error::Result;
use crate::model::{Query, ReadOptions, SequencedEvent};
use crate::store::{EventStore, EventStream};

/// Most events read per round trip while a subscription catches up.
pub const CATCH_UP_BATCH: u32 = 1024;

/// The first read of a subscription takes this many events at most; later reads are sized from
/// the events of the read before to hold about [`CATCH_UP_BYTES`], between this and
/// [`CATCH_UP_BATCH`].
const FIRST_BATCH: u32 = 16;

/// How many bytes of events a subscription reads ahead of its consumer at most (and one event
/// more): what it holds while the consumer is slow. Each read carries it as its byte budget
/// ([`ReadOptions::max_bytes`]); the page sizes below only save reads that the budget would cut.
pub const CATCH_UP_BYTES: usize = 4 << 20;

/// The size of the next read after one that returned `events`: [`CATCH_UP_BYTES`] worth of events
/// as large as the largest of them (one large event among small ones is a sign of more), at most
/// twice as many as it returned, at least [`FIRST_BATCH`], at most [`CATCH_UP_BATCH`].
fn next_batch(events: &[SequencedEvent]) -> u32 {
    let largest = events.iter().map(|e| e.event.byte_size()).max().unwrap_or(0).max(1);
    (CATCH_UP_BYTES / largest).min(2 * events.len()).clamp(FIRST_BATCH as usize, CATCH_UP_BATCH as usize)
        as u32
}

/// How long a subscription whose store cannot be reached keeps trying before it yields the error
/// and ends.
pub const PATIENCE: Duration = Duration::from_secs(60);

/// Runs `attempt` until it succeeds, fails with an error that is not retryable, or has failed for
/// [`PATIENCE`], pausing 20 ms after the first failure and twice as long after each next one, up
/// to a second; returns the last outcome. For the reads and resubscriptions of a subscription,
/// which must outlive a restarting server rather than end at its first refusal.
///
/// ```
/// # tokio::runtime::Builder::new_current_thread().enable_time().build().unwrap().block_on(async {
/// let mut failures = 2;
/// let outcome = dcb::subscription::patiently(|| {
///     failures -= 1;
///     let result = if failures >= 0 { Err(dcb::Error::unavailable("restarting", "down")) } else { Ok(7) };
///     async move { result }
/// })
/// .await;
/// assert_eq!(outcome.unwrap(), 7);
/// # });
/// ```
pub async fn patiently<T, F, Fut>(mut attempt: F) -> Result<T>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<T>>,
{
    let started = tokio::time::Instant::now();
    let mut pause = Duration::from_millis(20);
    loop {
        match attempt().await {
            Err(error) if error.is_retryable() && started.elapsed() < PATIENCE => {
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(1));
            }
            outcome => return outcome,
        }
    }
}

/// A subscription built from reads: it reads matching events after its cursor in batches (of
/// at most [`CATCH_UP_BYTES`] and one event, so that a slow consumer holds no more), and when there are none it
/// waits until `heads` announces a new head, then reads again.
///
/// Correctness rests on the store's safe head: a read never returns position `p` while a lower
/// position can still appear, so advancing the cursor past what was returned can skip nothing.
/// The receiver is marked seen *before* each read, so a head announced during the read wakes the
/// next wait instead of being lost. The stream ends when `heads`' sender is dropped, or after
/// yielding the first read error.
pub fn follow<S: EventStore>(
    store: S,
    query: Query,
    after: Option<u64>,
    heads: watch::Receiver<u64>,
) -> EventStream {
    struct Follower<S> {
        store: S,
        query: Query,
        cursor: Option<u64>,
        buffer: VecDeque<SequencedEvent>,
        batch: u32,
        heads: watch::Receiver<u64>,
        failed: bool,
    }
    let follower = Follower {
        store,
        query,
        cursor: after,
        buffer: VecDeque::new(),
        batch: FIRST_BATCH,
        heads,
        failed: false,
    };
    Box::pin(futures_util::stream::unfold(follower, |mut f| async move {
        loop {
            if let Some(event) = f.buffer.pop_front() {
                return Some((Ok(event), f));
            }
            if f.failed {
                return None;
            }
            f.heads.borrow_and_update();
            let options = ReadOptions {
                after: f.cursor,
                limit: Some(f.batch),
                max_bytes: Some(CATCH_UP_BYTES),
                ..ReadOptions::default()
            };
            match f.store.read(&f.query, options).await {
                Err(error) => {
                    f.failed = true;
                    return Some((Err(error), f));
                }
                Ok(read) if read.events.is_empty() => {
                    if f.heads.changed().await.is_err() {
                        return None;
                    }
                }
                Ok(read) => {
                    f.cursor = read.events.last().map(|e| e.position);
                    f.batch = next_batch(&read.events);
                    f.buffer.extend(read.events);
                }
            }
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Event;

    fn events(count: usize, data_bytes: usize) -> Vec<SequencedEvent> {
        (1..=count as u64)
            .map(|position| SequencedEvent { position, event: Event::new("E", vec![0u8; data_bytes]) })
            .collect()
    }

    /// Large events met after many small ones, when pages have grown to a thousand events, are
    /// read about CATCH_UP_BYTES at a time, and every event comes once, in order.
    #[tokio::test]
    async fn catch_up_reads_hold_no_more_than_their_byte_budget() {
        use futures_util::StreamExt;

        let store = crate::MemoryStore::new();
        let small = (0..2000).map(|i| Event::new("Small", format!("{i}"))).collect();
        store.append(small, None).await.unwrap();
        let big = (0..12).map(|i| Event::new("Big", vec![i; crate::limits::MAX_EVENT_DATA_BYTES])).collect();
        store.append(big, None).await.unwrap();
        let recording = crate::testkit::RecordedReads::new(store);
        let (_announcer, heads) = watch::channel(2012);
        let mut stream = follow(recording.clone(), Query::all(), None, heads);
        for expected in 1..=2012 {
            assert_eq!(stream.next().await.unwrap().unwrap().position, expected);
        }
        let largest = recording.read_bytes().into_iter().max().unwrap();
        assert!(
            largest <= CATCH_UP_BYTES + crate::limits::MAX_EVENT_DATA_BYTES + 64,
            "a read of {largest} bytes"
        );
    }

    /// Pages hold about CATCH_UP_BYTES: many small events, few large ones (sized by the largest),
    /// growing at most twice per page, never fewer than the first page nor more than
    /// CATCH_UP_BATCH.
    #[test]
    fn catch_up_pages_are_sized_by_bytes() {
        assert_eq!(next_batch(&events(16, 100)), 32, "twice the page before at most");
        assert_eq!(next_batch(&events(1000, 100)), CATCH_UP_BATCH);
        assert_eq!(next_batch(&events(100, 64 << 10)), 63);
        let mut mixed = events(1000, 100);
        mixed.extend(events(1, 64 << 10));
        assert_eq!(next_batch(&mixed), 63);
        assert_eq!(next_batch(&events(3, 1 << 20)), FIRST_BATCH);
        assert_eq!(next_batch(&events(1, 0)), FIRST_BATCH);
    }
}
