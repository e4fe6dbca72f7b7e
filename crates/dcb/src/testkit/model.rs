//! Model-based testing: seeded random operations run against a store and against a naive model of
//! the semantics (a vector scanned in full), and every answer must agree.
//!
//! Operations are drawn from small alphabets of types and tags, and conditions are taken close to
//! the head, so that matches, conflicts and retries all happen often. A failure names the seed and
//! the operation; `DCB_MODEL_SEED=<seed>` replays it and `DCB_MODEL_OPS=<n>` makes runs longer.

use std::collections::HashMap;

use super::rng::Rng;
use crate::{
    AppendCondition, AppendRequest, Error, Event, EventStore, Query, QueryItem, ReadOptions, ReadResponse,
    SequencedEvent, TrackingInfo,
};

const TYPES: [&str; 3] = ["A", "B", "C"];
const TAGS: [&str; 4] = ["t0", "t1", "t2", "t3"];
const SOURCES: [&str; 2] = ["s0", "s1"];

/// How many random operations to run, from which seeds.
#[derive(Debug, Clone)]
pub struct ModelConfig {
    /// Each seed runs `operations` operations, continuing on the same store.
    pub seeds: Vec<u64>,
    /// Operations per seed.
    pub operations: usize,
}

impl ModelConfig {
    /// Three fixed seeds of 300 operations, unless `DCB_MODEL_SEED` or `DCB_MODEL_OPS` say
    /// otherwise.
    pub fn from_env() -> Self {
        let env = |name: &str| std::env::var(name).ok().and_then(|v| v.parse::<u64>().ok());
        let seeds = env("DCB_MODEL_SEED").map_or_else(|| vec![1, 2, 3], |seed| vec![seed]);
        let operations = env("DCB_MODEL_OPS").unwrap_or(300) as usize;
        ModelConfig { seeds, operations }
    }
}

/// The semantics at their simplest: a vector scanned in full for every question.
#[derive(Debug, Default)]
pub struct NaiveModel {
    events: Vec<SequencedEvent>,
    tracking: HashMap<String, u64>,
}

impl NaiveModel {
    /// What a store must answer to a read.
    pub fn read(&self, query: &Query, options: ReadOptions) -> ReadResponse {
        let after = options.after.unwrap_or(0);
        let before = options.before.unwrap_or(u64::MAX);
        let mut events: Vec<SequencedEvent> = self
            .events
            .iter()
            .filter(|e| e.position > after && e.position < before && query.matches(&e.event))
            .cloned()
            .collect();
        if options.backwards {
            events.reverse();
        }
        if let Some(limit) = options.limit {
            events.truncate(limit as usize);
        }
        let mut bytes = 0;
        let within_budget = events
            .iter()
            .take_while(|e| {
                let takes = options.takes_more(bytes);
                bytes += e.event.byte_size();
                takes
            })
            .count();
        events.truncate(within_budget);
        let head = if (options.limit.is_some() || options.max_bytes.is_some()) && !options.backwards {
            events.last().map(|e| e.position)
        } else {
            self.events.iter().map(|e| e.position).rfind(|&p| p < before)
        };
        ReadResponse { events, head }
    }

    /// What a store must answer to an append (already validated), applying it if it succeeds.
    /// The condition first, then tracking: a recognised retry answers with its position although
    /// its tracking position is recorded by then.
    pub fn append(&mut self, request: AppendRequest) -> Result<u64, &'static str> {
        if let Some(condition) = &request.condition
            && let Some(first_failure) = self.events.iter().find(|e| condition.is_failed_by(e))
        {
            return self.original_position(&request.events, condition, first_failure.position);
        }
        if let Some(tracking) = &request.tracking
            && self.tracking.get(&tracking.source).is_some_and(|&p| tracking.position <= p)
        {
            return Err("integrity");
        }
        for event in request.events {
            let position = self.events.len() as u64 + 1;
            self.events.push(SequencedEvent { position, event });
        }
        if let Some(tracking) = request.tracking {
            self.tracking.insert(tracking.source, tracking.position);
        }
        Ok(self.events.len() as u64)
    }

    /// The position of the append that `submitted` retries, found the plain way: every event
    /// carries a real uuid, and the recorded events lined up with the first match (at the
    /// submitted event that matches first) carry the same uuids in order.
    fn original_position(
        &self,
        submitted: &[Event],
        condition: &AppendCondition,
        first_match: u64,
    ) -> Result<u64, &'static str> {
        if submitted.iter().any(|e| e.uuid.is_none_or(|uuid| uuid.is_nil())) {
            return Err("integrity");
        }
        let query = &condition.fail_if_events_match;
        let offset = submitted.iter().position(|e| query.matches(e)).ok_or("integrity")?;
        let start = (first_match as usize).checked_sub(offset + 1).ok_or("integrity")?;
        if start < condition.latest_after().unwrap_or(0) as usize {
            return Err("integrity");
        }
        let recorded = self.events.get(start..start + submitted.len()).ok_or("integrity")?;
        if recorded.iter().zip(submitted).all(|(r, e)| r.event.uuid == e.uuid) {
            Ok(recorded.last().map_or(0, |e| e.position))
        } else {
            Err("integrity")
        }
    }

    fn head(&self) -> Option<u64> {
        self.events.last().map(|e| e.position)
    }
}

fn kind(error: &Error) -> &'static str {
    match error {
        Error::Integrity(_) => "integrity",
        Error::InvalidArgument(_) => "invalid",
        _ => "other",
    }
}

fn random_query(rng: &mut Rng) -> Query {
    let items = (0..rng.below(3)).map(|_| {
        let types = (0..rng.below(3)).map(|_| rng.pick(&TYPES).to_string()).collect();
        let tags = (0..rng.below(3)).map(|_| rng.pick(&TAGS).to_string()).collect();
        QueryItem { types, tags }
    });
    Query::new(items)
}

fn random_position(rng: &mut Rng, head: u64) -> Option<u64> {
    if rng.chance(10) { None } else { Some(head.saturating_sub(rng.below(4)) + u64::from(rng.chance(5))) }
}

fn random_append(rng: &mut Rng, model: &NaiveModel) -> AppendRequest {
    let head = model.head().unwrap_or(0);
    let count = 1 + rng.below(3) as usize;
    let events = (0..count)
        .map(|_| {
            let tags: Vec<&str> = (0..rng.below(3)).map(|_| *rng.pick(&TAGS)).collect();
            let event = Event::new(*rng.pick(&TYPES), rng.next_u64().to_le_bytes().to_vec()).with_tags(tags);
            if rng.chance(50) { event.with_uuid(rng.uuid()) } else { event }
        })
        .collect();
    let mut request = AppendRequest::new(events);
    if rng.chance(60) {
        let mut condition = AppendCondition::new(random_query(rng), random_position(rng, head));
        // Some items checked from positions of their own, as a cache of tags would give them.
        for item in 0..condition.fail_if_events_match.items.len() {
            if rng.chance(25) {
                condition = condition.with_item_after(item, random_position(rng, head).unwrap_or(0));
            }
        }
        request = request.condition(condition);
    }
    if rng.chance(20) {
        let source = *rng.pick(&SOURCES);
        let recorded = model.tracking.get(source).copied().unwrap_or(0);
        request = request.tracking(TrackingInfo::new(source, (recorded + rng.below(3)).saturating_sub(1)));
    }
    request
}

/// Runs the configured operations against `store` (which must start empty) and the model,
/// panicking at the first disagreement.
pub async fn run<S: EventStore>(store: &S, config: ModelConfig) {
    let mut model = NaiveModel::default();
    for seed in config.seeds {
        let mut rng = Rng::new(seed);
        // A retry of an earlier successful append, to exercise idempotent retries.
        let mut last_success: Option<AppendRequest> = None;
        for step in 0..config.operations {
            let at = |what: &str| format!("seed {seed}, operation {step}: {what}");
            match rng.below(10) {
                0..=3 => {
                    let request = match &last_success {
                        Some(previous) if rng.chance(10) => previous.clone(),
                        _ => random_append(&mut rng, &model),
                    };
                    let expected = model.append(request.clone());
                    let actual = store.append_request(request.clone()).await;
                    let actual = actual.as_ref().map(|p| *p).map_err(kind);
                    assert_eq!(actual, expected, "{}", at(&format!("append {request:?}")));
                    if expected.is_ok()
                        && request.condition.is_some()
                        && request.events.iter().all(|e| e.uuid.is_some())
                    {
                        last_success = Some(request);
                    }
                }
                4 => {
                    let invalid = if rng.chance(50) { vec![] } else { vec![Event::new("", "")] };
                    let actual = store.append(invalid, None).await.map_err(|e| kind(&e));
                    assert_eq!(actual, Err("invalid"), "{}", at("invalid append"));
                }
                5..=8 => {
                    let query = random_query(&mut rng);
                    let head = model.head().unwrap_or(0);
                    let after = random_position(&mut rng, head);
                    let before = rng.chance(30).then(|| {
                        if rng.chance(50) { rng.below(head + 2) } else { after.unwrap_or(0) + rng.below(8) }
                    });
                    let options = ReadOptions {
                        after,
                        before,
                        limit: rng.chance(50).then(|| rng.below(5) as u32),
                        max_bytes: rng.chance(30).then(|| rng.below(64) as usize),
                        backwards: rng.chance(30),
                    };
                    let actual = store.read(&query, options).await.expect("read");
                    assert_eq!(
                        actual,
                        model.read(&query, options),
                        "{}",
                        at(&format!("read {query:?} {options:?}"))
                    );
                }
                _ => {
                    assert_eq!(store.head().await.unwrap(), model.head(), "{}", at("head"));
                    let source = *rng.pick(&SOURCES);
                    let expected = model.tracking.get(source).copied();
                    assert_eq!(
                        store.tracking_position(source).await.unwrap(),
                        expected,
                        "{}",
                        at("tracking")
                    );
                }
            }
        }
    }
}
