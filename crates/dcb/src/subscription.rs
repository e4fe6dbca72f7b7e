//! Catch-up-then-live subscriptions for any store that can announce new heads.

use std::collections::VecDeque;

use tokio::sync::watch;

use crate::model::{Query, ReadOptions, SequencedEvent};
use crate::store::{EventStore, EventStream};

/// Events read per round trip while a subscription catches up.
pub const CATCH_UP_BATCH: u32 = 1024;

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
