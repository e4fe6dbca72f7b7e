//! Catch-up-then-live subscriptions for any store that can announce new heads.

use std::collections::VecDeque;
use std::time::Duration;

use tokio::sync::watch;

use crate::error::Result;
use crate::model::{Query, ReadOptions, SequencedEvent};
use crate::store::{EventStore, EventStream};

/// Events read per round trip while a subscription catches up.
pub const CATCH_UP_BATCH: u32 = 1024;

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

/// A subscription built from reads: it reads matching events after its cursor in batches, and
/// when there are none it waits until `heads` announces a new head, then reads again.
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
        heads: watch::Receiver<u64>,
        failed: bool,
    }
    let follower = Follower { store, query, cursor: after, buffer: VecDeque::new(), heads, failed: false };
    Box::pin(futures_util::stream::unfold(follower, |mut f| async move {
        loop {
            if let Some(event) = f.buffer.pop_front() {
                return Some((Ok(event), f));
            }
            if f.failed {
                return None;
            }
            f.heads.borrow_and_update();
            let options =
                ReadOptions { after: f.cursor, limit: Some(CATCH_UP_BATCH), ..ReadOptions::default() };
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
                    f.buffer.extend(read.events);
                }
            }
        }
    }))
}
