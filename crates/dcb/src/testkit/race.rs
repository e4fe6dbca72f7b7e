//! The race test: many tasks read, decide and append under conditions on a few shared tags at
//! once, then the [history checker](super::history) proves the store kept every promise.

use super::history::{self, Attempt, Outcome, Seen};
use super::rng::Rng;
use crate::{AppendCondition, Error, Event, EventStore, Query, QueryItem, ReadOptions};

/// The shape of a race.
#[derive(Debug, Clone)]
pub struct RaceConfig {
    /// Appends each task attempts.
    pub appends_per_task: usize,
    /// How many tags the tasks contend on: fewer tags, more conflicts.
    pub contended_tags: usize,
    /// Seed of the first task; task `i` uses `seed + i`.
    pub seed: u64,
}

impl Default for RaceConfig {
    fn default() -> Self {
        RaceConfig { appends_per_task: 25, contended_tags: 3, seed: 0x5EED }
    }
}

/// Runs one task per handle (use separate connections to the same store where the store has
/// them), checks the history, and returns the summary. Panics with every problem found.
///
/// A task's append is a conditional one three times in four: it reads a query over one or two
/// contended tags (forward, or backward with a limit of one) and appends one to three events
/// under the condition "nothing new matches since the head I read" (some two-item queries read
/// each item on its own and check it from its own read's head). The rest are unconditional
/// appends, which must keep their positions consecutive among the others.
pub async fn run<S: EventStore>(handles: Vec<S>, config: RaceConfig) -> history::Summary {
    assert!(handles.len() >= 2, "a race needs at least two tasks");
    let store = handles[0].clone();
    let mut tasks = Vec::new();
    for (index, handle) in handles.into_iter().enumerate() {
        let config = config.clone();
        tasks.push(tokio::spawn(async move { contend(handle, index, config).await }));
    }
    let mut attempts = Vec::new();
    for task in tasks {
        attempts.extend(task.await.expect("race task panicked"));
    }
    let recorded = store.read(&Query::all(), ReadOptions::default()).await.expect("final read").events;
    let summary = history::check(&attempts, &recorded)
        .unwrap_or_else(|problems| panic!("the race left an invalid history:\n{}", problems.join("\n")));
    assert!(summary.appended > 0, "no append succeeded: {summary:?}");
    assert!(summary.conflicts > 0, "no append conflicted, so the race proved nothing: {summary:?}");
    summary
}

/// One task of the race: `config.appends_per_task` attempts on `store` (see [`run`]), as the
/// [history checker](super::history) takes them. A read that fails with a retryable error skips
/// its attempt, and an append that does is an [`Outcome::Unknown`], so a task can run while the
/// store's connections are being cut.
pub async fn contend<S: EventStore>(store: S, task: usize, config: RaceConfig) -> Vec<Attempt> {
    let mut rng = Rng::new(config.seed.wrapping_add(task as u64));
    let tag = |rng: &mut Rng| format!("contended-{}", rng.below(config.contended_tags as u64));
    let mut attempts = Vec::new();
    for _ in 0..config.appends_per_task {
        let count = 1 + rng.below(3) as usize;
        let mut events: Vec<Event> = Vec::with_capacity(count);
        for _ in 0..count {
            events.push(
                Event::new("Raced", format!("task {task}")).tagged(tag(&mut rng)).with_uuid(rng.uuid()),
            );
        }
        let mut seen = None;
        let condition = if rng.chance(75) {
            let mut query = Query::from(QueryItem::tags([tag(&mut rng)]));
            let mut each_item = false;
            if rng.chance(30) {
                query = query.or(QueryItem::types(["Raced"]).and_tags([tag(&mut rng)]));
                each_item = rng.chance(50);
            }
            if each_item {
                // Each item read on its own, at a moment of its own, and checked from there.
                let Some(condition) = read_each_item(&store, query).await else { continue };
                Some(condition)
            } else {
                let newest_only = rng.chance(50);
                let options = if newest_only {
                    ReadOptions::default().backwards().limit(1)
                } else {
                    ReadOptions::default()
                };
                let read = match store.read(&query, options).await {
                    Ok(read) => read,
                    Err(error) if error.is_retryable() => continue,
                    Err(error) => panic!("race read failed unexpectedly: {error}"),
                };
                seen =
                    Some(Seen { positions: read.events.iter().map(|e| e.position).collect(), newest_only });
                // Give the other tasks a chance to slip in between the read and the append.
                tokio::task::yield_now().await;
                Some(AppendCondition::new(query, read.head))
            }
        } else {
            None
        };
        let outcome = append(&store, &events, condition.as_ref()).await;
        // The head after a refusal bounds where its cause lies (skipped if the store is away).
        let head_after_refusal = match outcome {
            Outcome::Conflict => store.head().await.ok().map(|head| head.unwrap_or(0)),
            _ => None,
        };
        attempts.push(Attempt { events, condition, outcome, read: seen, head_after_refusal });
    }
    attempts
}

/// The condition of a decision that read each item of `query` on its own: each item checked after
/// the head its read returned, `after` the lowest of them. `None` if a read failed retryably.
async fn read_each_item<S: EventStore>(store: &S, query: Query) -> Option<AppendCondition> {
    let mut heads = Vec::with_capacity(query.items.len());
    for item in &query.items {
        match store.read(&Query::from(item.clone()), ReadOptions::default()).await {
            Ok(read) => heads.push(read.head.unwrap_or(0)),
            Err(error) if error.is_retryable() => return None,
            Err(error) => panic!("race read failed unexpectedly: {error}"),
        }
        tokio::task::yield_now().await;
    }
    let mut condition = AppendCondition::new(query, heads.iter().copied().min());
    condition.items_after = heads.into_iter().map(Some).collect();
    Some(condition)
}

/// Appends `events` under `condition` and tells what became of them.
async fn append<S: EventStore>(store: &S, events: &[Event], condition: Option<&AppendCondition>) -> Outcome {
    match store.append(events.to_vec(), condition.cloned()).await {
        Ok(position) => Outcome::Appended(position),
        Err(Error::Integrity(_)) => Outcome::Conflict,
        Err(error) if error.is_retryable() => Outcome::Unknown,
        Err(error) => panic!("race append failed unexpectedly: {error}"),
    }
}
