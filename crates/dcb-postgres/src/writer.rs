//! Group commit: one task owns the append connection and turns whatever appends are queued into
//! one call of `append_batch`, which is one statement, one transaction and one round trip.
//!
//! While a batch is at the server, new appends queue up; the next batch takes all of them (up to
//! the limits below). One client alone therefore pays one round trip per append, and many
//! clients share each commit. A batch of under half the appends of the one before waits a moment
//! (half the time that one took, at most 500 µs) for the callers just answered to come back:
//! otherwise sixteen clients split into two cohorts, each paying a whole commit for half of
//! them. Every append keeps its own condition and its own outcome: the function checks them in
//! queue order, so later ones see earlier ones.
//!
//! A batch of one append of one event, the lone client's usual case, first tries a single
//! statement without PL/pgSQL (see [`LoneAppend`]), which costs about a third less; so does a
//! batch of several single-event appends on conditions that cannot meet one another, the usual
//! case of many clients deciding on their own tags (see [`PlainBatch`]).

use std::collections::HashSet;
use std::time::{Duration, Instant};

use dcb::{AppendRequest, Error, Event, Query, Result};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use crate::connect::{Conn, Connector};
use crate::schema::Schema;

/// Appends queued before callers wait for room.
pub(crate) const QUEUE_CAPACITY: usize = 4096;
/// The bounds of one group commit: the jobs, the events, and the bytes of their types, data,
/// tags and metadata (PostgreSQL refuses a message over 1 GiB, and a batch is one message). A
/// job that would take a batch past a bound waits for the next one; a single larger job goes
/// alone.
pub(crate) struct BatchBounds {
    pub(crate) jobs: usize,
    pub(crate) events: usize,
    pub(crate) bytes: usize,
}

/// The longest a batch much smaller than the one before waits for more jobs.
const MAX_GATHER: Duration = Duration::from_micros(500);

/// The bounds of the store's and the recorder's group commits.
pub(crate) const BOUNDS: BatchBounds = BatchBounds { jobs: 512, events: 20_000, bytes: 16 << 20 };

/// Turns a queue of jobs into batches within [`BatchBounds`]: each batch is whatever is queued
/// once the previous one is done. The first job that does not fit is held for the next batch.
pub(crate) struct Batches<J, F> {
    jobs: mpsc::Receiver<J>,
    held: Option<J>,
    bounds: BatchBounds,
    /// A job's events and bytes.
    size: F,
    /// The jobs of the previous batch, and when it was handed out.
    last: Option<(usize, Instant)>,
    /// The longest a small batch waits for more jobs ([`MAX_GATHER`]).
    gather: Duration,
}

impl<J, F: Fn(&J) -> (usize, usize)> Batches<J, F> {
    pub(crate) fn new(jobs: mpsc::Receiver<J>, bounds: BatchBounds, size: F) -> Self {
        Batches { jobs, held: None, bounds, size, last: None, gather: MAX_GATHER }
    }

    /// The next batch, waiting for a first job; `None` once every sender is gone.
    pub(crate) async fn next(&mut self) -> Option<Vec<J>> {
        // The previous batch's time ends here, not once a job arrives: idle time is not a batch's.
        let called = Instant::now();
        let first = match self.held.take() {
            Some(job) => job,
            None => self.jobs.recv().await?,
        };
        let mut batch = vec![first];
        let mut sized = (self.size)(&batch[0]);
        self.take_queued(&mut batch, &mut sized);
        if let Some((last_len, handed_out)) = self.last
            && batch.len() * 2 < last_len
        {
            // The callers of the previous batch, just answered, are likely deciding their next
            // appends: rather than commit these few alone and make those wait a whole commit,
            // give them a moment (a share of the time the previous batch took) to join.
            let deadline = Instant::now() + ((called - handed_out) / 2).min(self.gather);
            while batch.len() < last_len && self.held.is_none() && Instant::now() < deadline {
                tokio::task::yield_now().await;
                self.take_queued(&mut batch, &mut sized);
            }
        }
        self.last = Some((batch.len(), Instant::now()));
        Some(batch)
    }

    /// Adds to `batch`, of `sized` events and bytes, whatever is queued, while it fits.
    fn take_queued(&mut self, batch: &mut Vec<J>, sized: &mut (usize, usize)) {
        let (mut events, mut bytes) = *sized;
        while batch.len() < self.bounds.jobs {
            let Ok(job) = self.jobs.try_recv() else { break };
            let (more_events, more_bytes) = (self.size)(&job);
            if events + more_events > self.bounds.events || bytes + more_bytes > self.bounds.bytes {
                self.held = Some(job);
                break;
            }
            (events, bytes) = (events + more_events, bytes + more_bytes);
            batch.push(job);
        }
        *sized = (events, bytes);
    }
}

/// An append waiting for its batch, and where its outcome goes.
pub(crate) struct Job {
    pub(crate) request: AppendRequest,
    pub(crate) reply: oneshot::Sender<Result<u64>>,
}

/// Runs until every sender of `jobs` is dropped.
pub(crate) async fn run(
    connector: Connector,
    schema: Schema,
    mut conn: Option<Conn>,
    jobs: mpsc::Receiver<Job>,
) {
    let placeholders: Vec<String> = (1..=Arrays::PARAMS).map(|n| format!("${n}")).collect();
    let sql = schema.sql(&format!("SELECT @S.append_batch({})", placeholders.join(", ")));
    let lone = LoneAppend::new(&schema);
    let plain = PlainBatch::new(&schema);
    let mut batches =
        Batches::new(jobs, BOUNDS, |job: &Job| (job.request.events.len(), request_bytes(&job.request)));
    while let Some(batch) = batches.next().await {
        if conn.as_ref().is_none_or(|c| c.client.is_closed()) {
            conn = None;
            match connect(&connector).await {
                Ok(new) => conn = Some(new),
                Err(error) => {
                    fail_all(batch, &error);
                    continue;
                }
            }
        }
        let Some(current) = conn.as_ref() else {
            continue;
        };
        let without_function = match batch.as_slice() {
            [job] => lone.execute(current, &job.request).await.map(|outcome| outcome.map(|o| vec![o])),
            _ => plain.execute(current, &batch).await,
        };
        let outcomes = match without_function {
            Ok(Some(outcomes)) => Ok(outcomes),
            Ok(None) => execute(current, &sql, &batch).await,
            Err(error) => Err(error),
        };
        match outcomes {
            Ok(outcomes) => {
                for (job, outcome) in batch.into_iter().zip(outcomes) {
                    let result = outcome_of(&job.request, outcome);
                    let _ = job.reply.send(result);
                }
            }
            Err(error) => {
                // A new connection only for a lost one: a lock timeout (55P03, also
                // `Unavailable`) leaves a healthy connection.
                if current.client.is_closed() || error.code().is_none() {
                    conn = None;
                }
                fail_all(batch, &connector.error("appending", error));
            }
        }
    }
}

/// One call of `append_batch` for the whole batch: one statement, so one transaction and one
/// round trip. It returns one outcome per append, in order.
async fn execute(conn: &Conn, sql: &str, batch: &[Job]) -> Result<Vec<i64>, tokio_postgres::Error> {
    let mut arrays = Arrays::default();
    for job in batch {
        arrays.push(&job.request);
    }
    let statement = conn.prepare(sql).await?;
    let row = conn.client.query_one(&statement, &arrays.params()).await?;
    row.try_get(0)
}

/// The single statement for a batch of one append of one event, with no tracking and a
/// condition, if any, of items that each name one tag (with or without types: the shape of most
/// decisions' conditions).
///
/// It checks the condition, takes the append lock, inserts the event at the head's next position
/// with its tag rows, and notifies, all in one statement and so in one snapshot, taken when the
/// statement starts: possibly before an append of another process that held the lock commits.
/// The position's primary key makes that safe. An append committed after the snapshot holds the
/// next position the snapshot implies (appends take positions in turn, under the lock), so the
/// insert then fails on the key, writing nothing, and the append goes through `append_batch`,
/// which takes the lock before it reads. A refused condition goes there too when the append might
/// be a retry of one that succeeded (see [`dcb::retry_offset`]), so that it is recognised.
pub(crate) struct LoneAppend {
    /// The statement per number of condition items (0 for an unconditional append) and per set
    /// of those items that have types (bit `i` for item `i`).
    statements: Vec<Vec<String>>,
}

/// Most condition items [`LoneAppend`] takes, each checked by subqueries of its own.
const LONE_ITEMS: usize = 4;

impl LoneAppend {
    pub(crate) fn new(schema: &Schema) -> Self {
        // Item `i` has its tag as parameter `7 + 3i`, its types, if any, as `8 + 3i` and the
        // position it is checked after as `9 + 3i`. One scalar subquery per check, not `EXISTS`
        // or `tag = ANY`, whose generic plans scan the tag table from its start. An item with types checks its bare tag first, as in
        // `append_batch`: no event of it after the position, the usual answer, settles the item
        // without the join. Items without types have a statement without the join, whose
        // generic plan PostgreSQL keeps; with it, the statement is planned at every call.
        let check = |i: usize, typed: bool| {
            let (tag, types, after) = (7 + 3 * i, 8 + 3 * i, 9 + 3 * i);
            let bare = format!(
                "(SELECT x.position FROM @S.event_tags x WHERE x.tag = ${tag} AND x.position > ${after} \
                 ORDER BY x.position LIMIT 1) IS NULL"
            );
            if typed {
                format!(
                    "\n AND ({bare} OR (SELECT x.position FROM @S.event_tags x \
                     JOIN @S.events e ON e.position = x.position WHERE x.tag = ${tag} AND x.position > ${after} \
                     AND e.type = ANY (${types}::text[]) ORDER BY x.position LIMIT 1) IS NULL)"
                )
            } else {
                format!("\n AND {bare} AND ${types}::text[] IS NOT NULL")
            }
        };
        let statement = |items: usize, typed: usize| {
            let checks: String = (0..items).map(|i| check(i, typed & (1 << i) != 0)).collect();
            schema.sql(&format!(
                "WITH inserted AS (\
                 INSERT INTO @S.events (position, type, data, tags, uuid, meta_keys, meta_values) \
                 SELECT (SELECT coalesce(max(position), 0) FROM @S.events) + 1, $1, $2, $3, $4, $5, $6 \
                 WHERE @S.store_protocol_v@V() AND pg_advisory_xact_lock(@LOCK) IS NOT NULL{checks} \
                 RETURNING position, tags), \
                 tagged AS (INSERT INTO @S.event_tags (tag, position) \
                 SELECT DISTINCT t.tag, i.position FROM inserted i, unnest(i.tags) AS t(tag)) \
                 SELECT i.position FROM inserted i \
                 WHERE pg_notify('@CHANNEL', i.position::text) IS NOT NULL"
            ))
        };
        let statements = (0..=LONE_ITEMS)
            .map(|items| (0..1 << items).map(|typed| statement(items, typed)).collect())
            .collect();
        LoneAppend { statements }
    }

    /// Every statement, one after the other (for the schema version's digest).
    #[cfg(test)]
    pub(crate) fn all_statements(&self) -> String {
        self.statements.iter().flatten().map(String::as_str).collect()
    }

    /// The statement for `request`, if it has the shape this path takes.
    fn statement(&self, request: &AppendRequest) -> Option<&str> {
        if request.events.len() != 1 || request.tracking.is_some() {
            return None;
        }
        let (items, typed) = match &request.condition {
            None => (0, 0),
            Some(condition) => {
                let items = &condition.fail_if_events_match.items;
                if items.is_empty() || items.iter().any(|item| item.tags.len() != 1) {
                    return None;
                }
                let typed = items.iter().enumerate().filter(|(_, item)| !item.types.is_empty());
                (items.len(), typed.map(|(i, _)| 1usize << i).sum())
            }
        };
        self.statements.get(items).and_then(|by_types| by_types.get(typed)).map(String::as_str)
    }

    /// The outcome of `request` (as `append_batch` would give it), or `None` when it has
    /// another shape or must go through `append_batch` after all.
    async fn execute(
        &self,
        conn: &Conn,
        request: &AppendRequest,
    ) -> Result<Option<i64>, tokio_postgres::Error> {
        let (Some(sql), [event]) = (self.statement(request), request.events.as_slice()) else {
            return Ok(None);
        };
        let tags: Vec<&str> = event.tags.iter().map(String::as_str).collect();
        let keys: Vec<&str> = event.metadata.keys().map(String::as_str).collect();
        let values: Vec<&str> = event.metadata.values().map(String::as_str).collect();
        let condition = request.condition.as_ref();
        let items = condition.map_or(&[][..], |c| &c.fail_if_events_match.items[..]);
        let item_types: Vec<Vec<&str>> =
            items.iter().map(|item| item.types.iter().map(String::as_str).collect()).collect();
        let item_after: Vec<i64> = match condition {
            Some(c) => (0..items.len()).map(|i| item_position(c, i)).collect(),
            None => Vec::new(),
        };
        let data: &[u8] = &event.data;
        let mut params: Vec<&(dyn ToSql + Sync)> =
            vec![&event.event_type, &data, &tags, &event.uuid, &keys, &values];
        for ((item, types), after) in items.iter().zip(&item_types).zip(&item_after) {
            params.push(&item.tags[0]);
            params.push(types);
            params.push(after);
        }
        let statement = conn.prepare(sql).await?;
        match conn.client.query_opt(&statement, &params).await {
            Ok(Some(row)) => Ok(Some(row.try_get(0)?)),
            Ok(None) => Ok(if may_be_retry(request) { None } else { Some(-1) }),
            Err(error) if error.code() == Some(&SqlState::UNIQUE_VIOLATION) => Ok(None),
            Err(error) => Err(error),
        }
    }
}

/// One plain statement for a batch of single-event appends with no tracking and conditions, if
/// any, of items that are each one tag alone, none of which an earlier append of the batch could
/// meet (the shape of many clients' decisions on their own tags): the batch without PL/pgSQL,
/// whose per-append steps cost about as much as the writes themselves.
///
/// Every condition is checked against the table as it was when the statement started, which is
/// all a batch of this shape needs; the accepted appends are inserted at the head's next
/// positions in queue order. As for [`LoneAppend`], the primary key catches a snapshot taken
/// before another process's append committed: the insert fails, writing nothing, and the batch
/// goes through `append_batch`. So does a batch in which a refused append might be a retry of
/// one that succeeded (see [`dcb::retry_offset`]): the statement then inserts nothing.
pub(crate) struct PlainBatch {
    statement: String,
}

/// Most appends [`PlainBatch`] takes in one statement.
const PLAIN_BATCH_APPENDS: usize = 256;

impl PlainBatch {
    pub(crate) fn new(schema: &Schema) -> Self {
        let statement = schema.sql(
            "WITH hits AS (\
             SELECT DISTINCT i.app FROM unnest($7::int[], $8::text[], $9::bigint[]) AS i(app, tag, aft) \
             WHERE (SELECT x.position FROM @S.event_tags x WHERE x.tag = i.tag AND x.position > i.aft \
             ORDER BY x.position LIMIT 1) IS NOT NULL), \
             accepted AS (\
             SELECT e.*, row_number() OVER (ORDER BY e.app) AS rank \
             FROM unnest($1::text[], $2::bytea[], $3::uuid[], $4::text[], $5::text[], $6::text[]) \
             WITH ORDINALITY AS e(type, data, uuid, tags, keys, vals, app) \
             WHERE e.app NOT IN (SELECT h.app FROM hits h)), \
             inserted AS (\
             INSERT INTO @S.events (position, type, data, tags, uuid, meta_keys, meta_values) \
             SELECT (SELECT coalesce(max(position), 0) FROM @S.events) + a.rank, a.type, a.data, \
             a.tags::text[], a.uuid, a.keys::text[], a.vals::text[] FROM accepted a \
             WHERE @S.store_protocol_v@V() AND pg_advisory_xact_lock(@LOCK) IS NOT NULL \
             AND NOT EXISTS (SELECT 1 FROM hits h WHERE ($10::bool[])[h.app]) \
             RETURNING position, tags), \
             tagged AS (INSERT INTO @S.event_tags (tag, position) \
             SELECT DISTINCT t.tag, i.position FROM inserted i, unnest(i.tags) AS t(tag)) \
             SELECT (SELECT count(*) FROM inserted), ARRAY(SELECT h.app FROM hits h ORDER BY h.app)::int[], \
             (SELECT pg_notify('@CHANNEL', max(i.position)::text) FROM inserted i HAVING count(*) > 0) IS NULL, \
             (SELECT min(i.position) FROM inserted i)",
        );
        PlainBatch { statement }
    }

    /// The statement (for the schema version's digest).
    #[cfg(test)]
    pub(crate) fn statement(&self) -> &str {
        &self.statement
    }

    /// Whether `batch` has the shape this path takes.
    fn fits(batch: &[Job]) -> bool {
        if batch.len() < 2 || batch.len() > PLAIN_BATCH_APPENDS {
            return false;
        }
        let mut earlier: HashSet<&str> = HashSet::new();
        for job in batch {
            let request = &job.request;
            let ([event], None) = (request.events.as_slice(), &request.tracking) else { return false };
            if let Some(condition) = &request.condition {
                let items = &condition.fail_if_events_match.items;
                let lone_tags = items.iter().all(|item| item.types.is_empty() && item.tags.len() == 1);
                if items.is_empty()
                    || !lone_tags
                    || items.iter().any(|item| earlier.contains(item.tags[0].as_str()))
                {
                    return false;
                }
            }
            earlier.extend(event.tags.iter().map(String::as_str));
        }
        true
    }

    /// The outcomes of `batch` (as `append_batch` would give them), or `None` when it has another
    /// shape or must go through `append_batch` after all.
    async fn execute(&self, conn: &Conn, batch: &[Job]) -> Result<Option<Vec<i64>>, tokio_postgres::Error> {
        if !Self::fits(batch) {
            return Ok(None);
        }
        let events = || batch.iter().map(|job| &job.request.events[0]);
        let types: Vec<&str> = events().map(|e| e.event_type.as_str()).collect();
        let data: Vec<&[u8]> = events().map(|e| &e.data[..]).collect();
        let uuids: Vec<Option<dcb::Uuid>> = events().map(|e| e.uuid).collect();
        let tags: Vec<String> = events().map(|e| text_array(e.tags.iter().map(String::as_str))).collect();
        let keys: Vec<String> = events().map(|e| text_array(e.metadata.keys().map(String::as_str))).collect();
        let values: Vec<String> =
            events().map(|e| text_array(e.metadata.values().map(String::as_str))).collect();
        let (mut item_app, mut item_tag, mut item_after) = (Vec::new(), Vec::new(), Vec::new());
        let mut may_retry = Vec::with_capacity(batch.len());
        for (app, job) in (1..).zip(batch) {
            if let Some(condition) = &job.request.condition {
                for (i, item) in condition.fail_if_events_match.items.iter().enumerate() {
                    item_app.push(app);
                    item_tag.push(item.tags[0].as_str());
                    item_after.push(item_position(condition, i));
                }
            }
            may_retry.push(may_be_retry(&job.request));
        }
        let params: [&(dyn ToSql + Sync); 10] =
            [&types, &data, &uuids, &tags, &keys, &values, &item_app, &item_tag, &item_after, &may_retry];
        let statement = conn.prepare(&self.statement).await?;
        let row = match conn.client.query_one(&statement, &params).await {
            Ok(row) => row,
            Err(error) if error.code() == Some(&SqlState::UNIQUE_VIOLATION) => return Ok(None),
            Err(error) => return Err(error),
        };
        let inserted: i64 = row.try_get(0)?;
        let refused: Vec<i32> = row.try_get(1)?;
        if refused.iter().any(|&app| may_retry[app as usize - 1]) {
            return Ok(None);
        }
        if inserted as usize + refused.len() != batch.len() {
            // Cannot happen; 0 is no outcome, so each append reports the inconsistency.
            return Ok(Some(vec![0; batch.len()]));
        }
        let mut next: i64 = row.try_get::<_, Option<i64>>(3)?.unwrap_or(0);
        let outcomes = (1..=int(batch.len()))
            .map(|app| {
                if refused.binary_search(&app).is_ok() {
                    -1
                } else {
                    next += 1;
                    next - 1
                }
            })
            .collect();
        Ok(Some(outcomes))
    }
}

/// Whether `request`, if its condition fails, might be a retry of an append that succeeded (see
/// [`dcb::retry_offset`]), which only `append_batch` recognises.
fn may_be_retry(request: &AppendRequest) -> bool {
    let condition = request.condition.as_ref();
    condition.is_some_and(|c| dcb::retry_offset(&c.fail_if_events_match, &request.events).is_some())
}

/// A connection set up for appending.
pub(crate) async fn connect(connector: &Connector) -> Result<Conn> {
    let client = connector.connect().await?;
    // The generic plans inside `append_batch` estimate their set-returning functions generously
    // enough for PostgreSQL to compile a one-row insert with JIT, which costs milliseconds.
    client
        .batch_execute("SET jit = off")
        .await
        .map_err(|e| connector.error("setting up the append connection", e))?;
    Ok(Conn::new(client))
}

/// What an append weighs in a batch's message.
fn request_bytes(request: &AppendRequest) -> usize {
    request.events.iter().map(Event::byte_size).sum()
}

/// Gives every append of a failed batch the same failure.
fn fail_all(batch: Vec<Job>, error: &Error) {
    for job in batch {
        let _ = job.reply.send(Err(copy_failure(error)));
    }
}

/// A copy of a batch's failure for one more of its callers: the error type is not `Clone`, so
/// the variant and message are rebuilt (an unavailable store stays retryable, a request that
/// cannot be sent stays an invalid argument: an append too large for the protocol goes alone).
pub(crate) fn copy_failure(error: &Error) -> Error {
    match error {
        Error::Unavailable { message, .. } => {
            Error::Unavailable { message: message.clone(), source: Some(error.to_string().into()) }
        }
        Error::InvalidArgument(message) => Error::InvalidArgument(message.clone()),
        other => Error::Internal(other.to_string()),
    }
}

/// What one append was told, from its entry in the function's result.
fn outcome_of(request: &AppendRequest, outcome: i64) -> Result<u64> {
    match outcome {
        -1 => {
            let after = request.condition.as_ref().and_then(|c| c.after).unwrap_or(0);
            Err(Error::Integrity(format!(
                "an event matching the append condition was recorded after position {after}"
            )))
        }
        -2 => {
            let tracking = request.tracking.as_ref();
            Err(Error::Integrity(format!(
                "tracking position {} for source {:?} does not exceed the recorded one",
                tracking.map_or(0, |t| t.position),
                tracking.map_or("", |t| t.source.as_str())
            )))
        }
        position if position > 0 => Ok(position as u64),
        other => Err(Error::Internal(format!("append_batch returned the unexpected outcome {other}"))),
    }
}

/// Converts a position from the contract's `u64` to SQL's `bigint`; nothing is ever beyond
/// `i64::MAX`, so a larger `after` means the same as `i64::MAX`.
pub(crate) fn clamp(position: u64) -> i64 {
    i64::try_from(position).unwrap_or(i64::MAX)
}

/// The position item `i` of `condition` is checked after, as SQL's `bigint`.
fn item_position(condition: &dcb::AppendCondition, i: usize) -> i64 {
    condition.item_after(i).map_or(0, clamp)
}

/// Array lengths and offsets as `int`. Requests are validated against the limits and batches
/// are bounded, so every count fits; saturating keeps the conversion total anyway.
fn int(n: usize) -> i32 {
    i32::try_from(n).unwrap_or(i32::MAX)
}

/// The batch as the parallel arrays `append_batch` takes: per append, per condition item (with
/// its types and tags flattened, addressed by offset and count) and per event (its tags and
/// metadata as the text of arrays, so that the insert joins nothing).
#[derive(Default)]
struct Arrays<'a> {
    a_events: Vec<i32>,
    a_conditional: Vec<bool>,
    a_after: Vec<i64>,
    a_item_off: Vec<i32>,
    a_items: Vec<i32>,
    a_flush: Vec<bool>,
    /// Per conditional append that could be a retry, the rank of its first event matching the
    /// condition (see [`dcb::retry_offset`]); -1 for the others.
    a_retry: Vec<i32>,
    a_source: Vec<Option<&'a str>>,
    a_source_pos: Vec<Option<i64>>,
    i_type_off: Vec<i32>,
    i_types: Vec<i32>,
    i_tag_off: Vec<i32>,
    i_tags: Vec<i32>,
    i_after: Vec<i64>,
    q_types: Vec<&'a str>,
    q_tags: Vec<&'a str>,
    e_app: Vec<i32>,
    e_k: Vec<i32>,
    e_type: Vec<&'a str>,
    e_data: Vec<&'a [u8]>,
    e_uuid: Vec<Option<dcb::Uuid>>,
    /// Per event, the text of its tags as a `text[]` (see [`text_array`]); the same below for
    /// its metadata keys and values.
    e_tags: Vec<String>,
    e_meta_keys: Vec<String>,
    e_meta_values: Vec<String>,
    /// Types and tags of the batch's events so far, to tell which conditions might match them.
    seen_types: HashSet<&'a str>,
    seen_tags: HashSet<&'a str>,
}

impl<'a> Arrays<'a> {
    fn push(&mut self, request: &'a AppendRequest) {
        self.a_events.push(int(request.events.len()));
        self.a_item_off.push(int(self.i_types.len()));
        match &request.condition {
            Some(condition) => {
                let query = &condition.fail_if_events_match;
                self.a_conditional.push(true);
                self.a_after.push(condition.latest_after().map_or(0, clamp));
                self.a_items.push(int(query.items.len()));
                self.a_flush.push(self.might_match_earlier(query));
                self.a_retry.push(dcb::retry_offset(query, &request.events).map_or(-1, int));
                for (i, item) in query.items.iter().enumerate() {
                    self.i_after.push(item_position(condition, i));
                    self.i_type_off.push(int(self.q_types.len()));
                    self.i_types.push(int(item.types.len()));
                    self.q_types.extend(item.types.iter().map(String::as_str));
                    self.i_tag_off.push(int(self.q_tags.len()));
                    self.i_tags.push(int(item.tags.len()));
                    self.q_tags.extend(item.tags.iter().map(String::as_str));
                }
            }
            None => {
                self.a_conditional.push(false);
                self.a_after.push(0);
                self.a_items.push(0);
                self.a_flush.push(false);
                self.a_retry.push(-1);
            }
        }
        self.a_source.push(request.tracking.as_ref().map(|t| t.source.as_str()));
        self.a_source_pos.push(request.tracking.as_ref().map(|t| clamp(t.position)));
        let append = int(self.a_events.len());
        for (rank, event) in request.events.iter().enumerate() {
            self.seen_types.insert(&event.event_type);
            self.seen_tags.extend(event.tags.iter().map(String::as_str));
            self.e_app.push(append);
            self.e_k.push(int(rank + 1));
            self.e_type.push(&event.event_type);
            self.e_data.push(&event.data);
            self.e_uuid.push(event.uuid);
            self.e_tags.push(text_array(event.tags.iter().map(String::as_str)));
            self.e_meta_keys.push(text_array(event.metadata.keys().map(String::as_str)));
            self.e_meta_values.push(text_array(event.metadata.values().map(String::as_str)));
        }
    }

    /// Whether `query` might match an event of the appends pushed so far. It may say yes
    /// wrongly (an item's tags can be spread over several events), never no wrongly, which is
    /// all `append_batch` needs to decide when to insert before checking.
    fn might_match_earlier(&self, query: &Query) -> bool {
        if self.e_type.is_empty() {
            return false;
        }
        query.items.is_empty()
            || query.items.iter().any(|item| {
                item.tags.iter().all(|t| self.seen_tags.contains(t.as_str()))
                    && (item.types.is_empty()
                        || item.types.iter().any(|t| self.seen_types.contains(t.as_str())))
            })
    }

    /// How many parameters `append_batch` takes.
    const PARAMS: usize = 24;

    fn params(&self) -> [&(dyn ToSql + Sync); Arrays::PARAMS] {
        [
            &self.a_events,
            &self.a_conditional,
            &self.a_after,
            &self.a_item_off,
            &self.a_items,
            &self.a_flush,
            &self.a_retry,
            &self.a_source,
            &self.a_source_pos,
            &self.i_type_off,
            &self.i_types,
            &self.i_tag_off,
            &self.i_tags,
            &self.i_after,
            &self.q_types,
            &self.q_tags,
            &self.e_app,
            &self.e_k,
            &self.e_type,
            &self.e_data,
            &self.e_uuid,
            &self.e_tags,
            &self.e_meta_keys,
            &self.e_meta_values,
        ]
    }
}

/// The text form of the one-dimensional `text[]` holding `items` in order, every element quoted
/// (with `"` and `\` escaped), so that any string, `NULL`, braces and commas included, reads
/// back as itself.
fn text_array<'s>(items: impl Iterator<Item = &'s str>) -> String {
    let mut text = String::from("{");
    for (i, item) in items.enumerate() {
        if i > 0 {
            text.push(',');
        }
        text.push('"');
        for c in item.chars() {
            if c == '"' || c == '\\' {
                text.push('\\');
            }
            text.push(c);
        }
        text.push('"');
    }
    text.push('}');
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Jobs are taken while they fit; the first that would pass a bound starts the next batch,
    /// and a job larger than the bounds goes alone.
    #[tokio::test]
    async fn batches_end_before_the_job_that_would_pass_a_bound() {
        let (sender, jobs) = mpsc::channel(8);
        for job in [(1, 10), (1, 10), (1, 85), (1, 5), (30, 1), (1, 1)] {
            sender.try_send(job).unwrap();
        }
        drop(sender);
        let bounds = BatchBounds { jobs: 8, events: 20, bytes: 100 };
        let mut batches = Batches::new(jobs, bounds, |job: &(usize, usize)| *job);
        assert_eq!(batches.next().await.unwrap(), [(1, 10), (1, 10)]);
        assert_eq!(batches.next().await.unwrap(), [(1, 85), (1, 5)]);
        assert_eq!(batches.next().await.unwrap(), [(30, 1)]);
        assert_eq!(batches.next().await.unwrap(), [(1, 1)]);
        assert!(batches.next().await.is_none());
    }

    /// A batch far smaller than the one before waits a moment for the callers of that one to
    /// come back, and goes once as many jobs are queued as that one had, or when nobody comes.
    #[tokio::test]
    async fn a_small_batch_waits_for_the_callers_of_the_one_before() {
        let (sender, jobs) = mpsc::channel(16);
        let bounds = BatchBounds { jobs: 16, events: 100, bytes: 100 };
        let mut batches = Batches::new(jobs, bounds, |_: &u32| (1, 1));
        // A wider window than in use, so that a busy machine cannot close it early.
        batches.gather = Duration::from_secs(1);
        for job in 0..4 {
            sender.try_send(job).unwrap();
        }
        assert_eq!(batches.next().await.unwrap(), [0, 1, 2, 3]);
        // The batch at the server, then one of its callers back at once, three a little later.
        std::thread::sleep(Duration::from_millis(40));
        sender.try_send(4).unwrap();
        let late = tokio::spawn({
            let sender = sender.clone();
            async move {
                for job in 5..8 {
                    tokio::task::yield_now().await;
                    sender.send(job).await.unwrap();
                }
            }
        });
        assert_eq!(batches.next().await.unwrap(), [4, 5, 6, 7]);
        late.await.unwrap();
        std::thread::sleep(Duration::from_millis(2));
        sender.try_send(8).unwrap();
        assert_eq!(batches.next().await.unwrap(), [8]);
    }
}
