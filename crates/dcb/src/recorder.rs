//! The aggregate recorder contract: the traditional event-sourcing persistence that the DCB store
//! is compared against, with optimistic concurrency by a uniqueness rule on (aggregate id, version).

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;

use crate::error::{Error, Result};
use crate::limits::{MAX_EVENTS_PER_APPEND, check_append_bytes, validate_event};
use crate::model::{Event, ReadOptions};

/// One event of one aggregate, as recorded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AggregateEvent {
    /// The aggregate the event belongs to.
    pub aggregate_id: String,
    /// The aggregate's version after this event: 1 for the event that created it.
    pub version: u64,
    /// What kind of fact this is.
    pub event_type: String,
    /// The payload, opaque to the recorder.
    pub data: Bytes,
}

/// Stores the events of aggregates, each aggregate a sequence of versions.
///
/// Inserting is atomic across aggregates: if any (aggregate id, version) of the batch is already
/// recorded, the whole insert fails with [`Error::Integrity`] and writes nothing. That one rule
/// gives optimistic concurrency to one aggregate and to several saved together.
pub trait AggregateRecorder: Clone + Send + Sync + 'static {
    /// Records `events` atomically; returns how many events the recorder holds in all afterwards
    /// (the notification id of the last one).
    fn insert_events(&self, events: Vec<AggregateEvent>) -> impl Future<Output = Result<u64>> + Send;

    /// The events of `aggregate_id` with versions after `options.after` (exclusive), oldest first
    /// (newest first when `options.backwards`), at most `options.limit` of them.
    fn select_events(
        &self,
        aggregate_id: &str,
        options: ReadOptions,
    ) -> impl Future<Output = Result<Vec<AggregateEvent>>> + Send;

    /// How many events the recorder holds, over all aggregates.
    fn count(&self) -> impl Future<Output = Result<u64>> + Send;
}

/// Checks an insert before anything is written: at least one event, valid ids, types and sizes,
/// versions from 1.
pub fn validate_insert(events: &[AggregateEvent]) -> Result<()> {
    if events.is_empty() {
        return Err(Error::invalid("insert of no aggregate events: give at least one event"));
    }
    if events.len() > MAX_EVENTS_PER_APPEND {
        return Err(Error::invalid(format!(
            "insert of {} events, more than the limit of {MAX_EVENTS_PER_APPEND}",
            events.len()
        )));
    }
    let bytes = events.iter().map(|e| e.event_type.len() + e.data.len() + e.aggregate_id.len()).sum();
    check_append_bytes("insert", bytes)?;
    for event in events {
        // The aggregate id follows the rules of a tag, and the event those of a DCB event.
        let as_event =
            Event::new(event.event_type.clone(), event.data.clone()).tagged(event.aggregate_id.clone());
        validate_event(&as_event)?;
        if event.version == 0 {
            return Err(Error::invalid(format!(
                "aggregate {:?} event has version 0; versions start at 1",
                event.aggregate_id
            )));
        }
    }
    Ok(())
}

/// An aggregate recorder in memory.
///
/// ```
/// use dcb::recorder::{AggregateEvent, AggregateRecorder, MemoryRecorder};
///
/// # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
/// let recorder = MemoryRecorder::new();
/// let created = AggregateEvent {
///     aggregate_id: "course-1".into(),
///     version: 1,
///     event_type: "CourseRegistered".into(),
///     data: "{}".into(),
/// };
/// recorder.insert_events(vec![created.clone()]).await?;
/// // A second writer that also thought it was creating version 1 loses.
/// assert!(recorder.insert_events(vec![created]).await.unwrap_err().is_integrity());
/// # Ok::<(), dcb::Error>(())
/// # }).unwrap();
/// ```
#[derive(Clone, Default)]
pub struct MemoryRecorder {
    state: Arc<Mutex<RecorderState>>,
}

#[derive(Default)]
struct RecorderState {
    aggregates: HashMap<String, BTreeMap<u64, AggregateEvent>>,
    count: u64,
}

impl MemoryRecorder {
    /// An empty recorder.
    pub fn new() -> Self {
        Self::default()
    }
}

impl AggregateRecorder for MemoryRecorder {
    async fn insert_events(&self, events: Vec<AggregateEvent>) -> Result<u64> {
        validate_insert(&events)?;
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        for (index, event) in events.iter().enumerate() {
            let recorded =
                state.aggregates.get(&event.aggregate_id).is_some_and(|a| a.contains_key(&event.version));
            let repeated = events[..index]
                .iter()
                .any(|e| e.aggregate_id == event.aggregate_id && e.version == event.version);
            if recorded || repeated {
                return Err(Error::Integrity(format!(
                    "version {} of aggregate {:?} is already recorded",
                    event.version, event.aggregate_id
                )));
            }
        }
        state.count += events.len() as u64;
        for event in events {
            state.aggregates.entry(event.aggregate_id.clone()).or_default().insert(event.version, event);
        }
        Ok(state.count)
    }

    async fn select_events(&self, aggregate_id: &str, options: ReadOptions) -> Result<Vec<AggregateEvent>> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(versions) = state.aggregates.get(aggregate_id) else {
            return Ok(Vec::new());
        };
        let window = versions.range(options.after.map_or(0, |a| a.saturating_add(1))..).map(|(_, e)| e);
        let limit = options.limit.map_or(usize::MAX, |l| l as usize);
        Ok(if options.backwards {
            window.rev().take(limit).cloned().collect()
        } else {
            window.take(limit).cloned().collect()
        })
    }

    async fn count(&self) -> Result<u64> {
        Ok(self.state.lock().unwrap_or_else(PoisonError::into_inner).count)
    }
}
