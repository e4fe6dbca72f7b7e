//! The streamed answers of `Read` (pages read from the store up to the head captured at the
//! start) and `Subscribe` (the store's subscription, forwarded), both sent as messages bounded by
//! count and by bytes.

use std::collections::VecDeque;

use bytes::BytesMut;
use dcb::{EventStore, EventStream, Query, ReadOptions};
use futures_core::Stream;
use futures_util::{FutureExt, StreamExt};
use tokio::sync::watch;
use tonic::Status;

use super::{shutting_down, to_status};
use crate::batch::{self, EncodedBatch, Entry};
use crate::limits::{DEFAULT_BATCH_SIZE, MAX_BATCH_BYTES, MAX_BATCH_SIZE};
use crate::proto;

/// Events per message: the request's batch size, or the default, never more than the maximum.
fn batch_size(requested: Option<u32>) -> usize {
    match requested {
        None | Some(0) => DEFAULT_BATCH_SIZE as usize,
        Some(size) => size.min(MAX_BATCH_SIZE) as usize,
    }
}

/// The number of events to ask the store for after a page of `fetched` events whose largest
/// encoded entry was `largest` bytes: about one message worth of events that size (one large
/// event among small ones is a sign of more), at most twice as many as the page before, at most
/// a message's `batch`, at least one.
///
/// What a page holds is bounded by the byte budget of its read ([`ReadOptions::max_bytes`]);
/// the count only saves reads that would stop at the budget anyway. Growing at most twofold keeps
/// a read's first pages small (64, 128, 256, … events).
fn next_page(fetched: usize, largest: usize, batch: usize) -> u32 {
    (MAX_BATCH_BYTES / largest.max(1)).min(fetched.saturating_mul(2)).clamp(1, batch) as u32
}

/// Takes the next batch from `buffer`: up to `batch` events and [`MAX_BATCH_BYTES`], but always
/// at least one event (a single event is always far below the message limit).
fn take_batch(buffer: &mut VecDeque<Entry>, batch: usize) -> Vec<Entry> {
    let mut entries = Vec::new();
    let mut bytes = 0;
    while entries.len() < batch {
        match buffer.front() {
            Some(entry) if entries.is_empty() || bytes + entry.bytes.len() <= MAX_BATCH_BYTES => {
                bytes += entry.bytes.len();
                entries.push(buffer.pop_front().expect("just seen"));
            }
            _ => break,
        }
    }
    entries
}

enum ReadState {
    Start,
    /// Pages remain strictly between `after` and `before`: forwards, `after` moves up to the
    /// captured head; backwards, `before` moves down.
    Paging {
        after: Option<u64>,
        before: u64,
        remaining: Option<u64>,
    },
    /// Everything left is in the buffer.
    Drained,
    Done,
}

impl ReadState {
    /// Paging through the positions strictly between `after` and `before`, if there are any.
    fn window(after: Option<u64>, before: u64, remaining: Option<u64>) -> ReadState {
        if before > after.unwrap_or(0) + 1 {
            ReadState::Paging { after, before, remaining }
        } else {
            ReadState::Drained
        }
    }
}

/// One Read call: pages through the store up to the head captured at its start, and turns the
/// pages into messages bounded by count and by bytes.
///
/// Mapping to the store contract: a forward `start` is inclusive, so it reads `after = start - 1`,
/// page by page with `before` just above the captured head. A backward `start` is the highest
/// position to return (inclusive), so it reads from `before = start + 1` (or just above the
/// captured head) page by page downwards.
pub(super) struct Reader<S> {
    store: S,
    query: Query,
    backwards: bool,
    start: Option<u64>,
    limit: Option<u32>,
    batch: usize,
    stopping: watch::Receiver<bool>,
    state: ReadState,
    buffer: VecDeque<Entry>,
    /// Where the events of a page are encoded (the buffered entries share its allocations).
    encoder: BytesMut,
    /// The head every message reports: fixed for reads without a limit and backward reads, the
    /// last position sent for forward reads with a limit (see `dcb::ReadResponse::head`).
    head: Option<u64>,
    /// Events per store read; adapted so that a page holds about one message worth of bytes.
    page: u32,
    sent: bool,
}

impl<S: EventStore> Reader<S> {
    /// The reader of one `request` of `query` (checked already).
    pub(super) fn new(
        store: S,
        query: Query,
        request: &proto::ReadRequest,
        stopping: watch::Receiver<bool>,
    ) -> Self {
        let batch = batch_size(request.batch_size);
        Reader {
            store,
            query,
            backwards: request.backwards.unwrap_or(false),
            start: request.start,
            limit: request.limit,
            batch,
            stopping,
            state: ReadState::Start,
            buffer: VecDeque::new(),
            encoder: BytesMut::new(),
            head: None,
            // Small at first, until the events' size is known.
            page: (batch as u32).min(64),
            sent: false,
        }
    }

    /// The messages answering the call.
    pub(super) fn messages(self) -> impl Stream<Item = Result<EncodedBatch, Status>> + Send + 'static {
        futures_util::stream::unfold(self, Reader::next_message)
    }

    async fn next_message(mut self) -> Option<(Result<EncodedBatch, Status>, Self)> {
        loop {
            if matches!(self.state, ReadState::Done) {
                return None;
            }
            if *self.stopping.borrow() {
                self.state = ReadState::Done;
                return Some((Err(shutting_down()), self));
            }
            if !self.buffer.is_empty() {
                let entries = take_batch(&mut self.buffer, self.batch);
                if self.limit.is_some() && !self.backwards {
                    self.head = entries.last().map(|e| e.position);
                }
                self.sent = true;
                return Some((Ok(EncodedBatch { entries, head: self.head }), self));
            }
            let step = match self.state {
                ReadState::Start => self.start().await,
                ReadState::Paging { after, before, remaining } => self.page(after, before, remaining).await,
                ReadState::Drained => {
                    self.state = ReadState::Done;
                    if self.sent {
                        return None;
                    }
                    // Nothing matched: one empty message still tells the client the head.
                    return Some((Ok(EncodedBatch { entries: Vec::new(), head: self.head }), self));
                }
                ReadState::Done => return None,
            };
            if let Err(error) = step {
                self.state = ReadState::Done;
                return Some((Err(to_status(error)), self));
            }
        }
    }

    /// Captures the head and sets out the window. Every message of a backward read, and of a
    /// read without a limit, reports the captured head.
    async fn start(&mut self) -> dcb::Result<()> {
        let captured = self.store.head().await?;
        if self.limit.is_none() || self.backwards {
            self.head = captured;
        }
        let (after, before) = match (self.backwards, captured) {
            (_, None) => (None, 0),
            (false, Some(captured)) => (self.start.and_then(|start| start.checked_sub(1)), captured + 1),
            (true, Some(captured)) => {
                (None, self.start.map_or(captured, |start| start.min(captured)).saturating_add(1))
            }
        };
        self.state = if self.limit == Some(0) {
            ReadState::Drained
        } else {
            ReadState::window(after, before, self.limit.map(u64::from))
        };
        Ok(())
    }

    async fn page(&mut self, after: Option<u64>, before: u64, remaining: Option<u64>) -> dcb::Result<()> {
        let limit = remaining.map_or(self.page, |left| left.min(u64::from(self.page)) as u32);
        // About one message's worth of bytes at most, so that a page of large events never
        // holds more than that (and one event) in memory.
        let options = ReadOptions {
            after,
            before: Some(before),
            limit: Some(limit),
            max_bytes: Some(MAX_BATCH_BYTES),
            backwards: self.backwards,
        };
        let read = self.store.read(&self.query, options).await?;
        let fetched = read.events.len();
        self.encoder.reserve(read.events.iter().map(batch::entry_len_bound).sum());
        let (mut largest, mut fetched_bytes) = (0, 0);
        for event in &read.events {
            fetched_bytes += event.event.byte_size();
            let entry = batch::encode_entry(event, &mut self.encoder);
            largest = largest.max(entry.bytes.len());
            self.buffer.push_back(entry);
        }
        if fetched > 0 {
            self.page = next_page(fetched, largest, self.batch);
        }
        let remaining = remaining.map(|left| left - fetched as u64);
        let last = self.buffer.back().map(|e| e.position);
        self.state = match last {
            Some(last)
                if (fetched == limit as usize || !options.takes_more(fetched_bytes))
                    && remaining != Some(0) =>
            {
                let (after, before) = if self.backwards { (after, last) } else { (Some(last), before) };
                ReadState::window(after, before, remaining)
            }
            _ => ReadState::Drained,
        };
        Ok(())
    }
}

/// One Subscribe call: the store's subscription, in messages of the events already available
/// (up to the batch size and [`MAX_BATCH_BYTES`]).
///
/// Nothing is read ahead of what the transport can send: the next event is taken from the store
/// only when the previous message is on its way, so a slow client holds at most one batch here
/// and the transport's flow-control window, never a growing queue.
pub(super) struct Subscriber {
    events: EventStream,
    /// An item taken from the store that did not fit in the previous message.
    pending: Option<dcb::Result<Entry>>,
    /// Where events are encoded (the entries of a message share its allocations).
    encoder: BytesMut,
    batch: usize,
    stopping: watch::Receiver<bool>,
    done: bool,
}

impl Subscriber {
    /// The subscriber of one call, sending `events` in messages of up to the `requested` batch size.
    pub(super) fn new(events: EventStream, requested: Option<u32>, stopping: watch::Receiver<bool>) -> Self {
        Subscriber {
            events,
            pending: None,
            encoder: BytesMut::new(),
            batch: batch_size(requested),
            stopping,
            done: false,
        }
    }

    /// The messages answering the call.
    pub(super) fn messages(self) -> impl Stream<Item = Result<EncodedBatch, Status>> + Send + 'static {
        futures_util::stream::unfold(self, Subscriber::next_message)
    }

    async fn next_message(mut self) -> Option<(Result<EncodedBatch, Status>, Self)> {
        if self.done {
            return None;
        }
        let first = match self.pending.take() {
            Some(item) => Some(item),
            None => {
                let next = tokio::select! {
                    biased;
                    // Also when the sender is gone: the server is past its shutdown signal.
                    _ = self.stopping.wait_for(|stopping| *stopping) => None,
                    next = self.events.next() => {
                        Some(next.map(|item| item.map(|event| batch::encode_entry(&event, &mut self.encoder))))
                    }
                };
                match next {
                    Some(next) => next,
                    None => {
                        self.done = true;
                        return Some((Err(shutting_down()), self));
                    }
                }
            }
        };
        let first = match first {
            // The store closed the subscription.
            None => return None,
            Some(Err(error)) => {
                self.done = true;
                return Some((Err(to_status(error)), self));
            }
            Some(Ok(event)) => event,
        };
        let mut bytes = first.bytes.len();
        let mut entries = vec![first];
        while entries.len() < self.batch {
            match self.events.next().now_or_never() {
                Some(Some(Ok(event))) => {
                    let entry = batch::encode_entry(&event, &mut self.encoder);
                    if bytes + entry.bytes.len() > MAX_BATCH_BYTES {
                        self.pending = Some(Ok(entry));
                        break;
                    }
                    bytes += entry.bytes.len();
                    entries.push(entry);
                }
                Some(Some(Err(error))) => {
                    self.pending = Some(Err(error));
                    break;
                }
                Some(None) => {
                    self.done = true;
                    break;
                }
                None => break,
            }
        }
        Some((Ok(EncodedBatch { entries, head: None }), self))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_bounded_by_count_and_bytes() {
        let mut encoder = BytesMut::new();
        let mut entries = |size: usize, count: u64| -> VecDeque<Entry> {
            let event =
                |position| dcb::SequencedEvent { position, event: dcb::Event::new("E", vec![0u8; size]) };
            (1..=count).map(|position| batch::encode_entry(&event(position), &mut encoder)).collect()
        };
        let mut buffer = entries(900_000, 5);
        let first = take_batch(&mut buffer, 1024);
        assert_eq!(first.len(), 2, "two events of 900 kB fit in a 2 MiB batch, three do not");
        assert!(first.iter().map(|e| e.bytes.len()).sum::<usize>() <= MAX_BATCH_BYTES);
        let mut buffer = entries(1, 10);
        assert_eq!(take_batch(&mut buffer, 4).len(), 4);
        assert_eq!(buffer.len(), 6);
    }

    #[test]
    fn pages_grow_at_most_twofold_and_hold_about_a_message_of_the_largest_event() {
        // Small events: the page doubles up to the batch size, never jumps to it.
        let mut page = 64;
        let mut pages = vec![page];
        while page < 4096 {
            page = next_page(page as usize, 100, 4096);
            pages.push(page);
        }
        assert_eq!(pages, [64, 128, 256, 512, 1024, 2048, 4096]);
        assert_eq!(next_page(4096, 100, 4096), 4096);
        // Large events shrink it at once, down to one event.
        assert_eq!(next_page(4096, 1 << 20, 4096), 2);
        assert_eq!(next_page(2, 1_300_000, 4096), 1);
        assert_eq!(next_page(1, 100, 4096), 2);
        assert_eq!(next_page(64, 100, 10), 10);
    }

    #[test]
    fn batch_sizes_default_and_are_capped() {
        assert_eq!(batch_size(None), 1024);
        assert_eq!(batch_size(Some(0)), 1024);
        assert_eq!(batch_size(Some(10)), 10);
        assert_eq!(batch_size(Some(1_000_000)), 4096);
    }
}
