//! The aggregate recorder: the traditional persistence, one row per (aggregate id, version).

use std::sync::Arc;

use dcb::recorder::{AggregateEvent, AggregateRecorder, validate_insert};
use dcb::{Bytes, Error, ReadOptions, Result};
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use crate::connect::{Options, Pool};
use crate::writer::{BOUNDS, Batches, clamp, copy_failure};

/// An [`AggregateRecorder`] in a schema of a PostgreSQL database.
///
/// The table's primary key on (aggregate id, version) is the whole concurrency rule: an insert
/// that repeats a recorded version violates it, and nothing of that insert is written (it runs in
/// a statement or subtransaction of its own). Inserts made at the same time by many tasks
/// are committed together (group commit): one transaction and one round trip for all of them,
/// each with its own outcome. Cloning gives another handle to the same recorder.
///
/// ```no_run
/// use dcb::recorder::{AggregateEvent, AggregateRecorder};
/// use dcb_postgres::{Options, PostgresRecorder};
///
/// # async fn demo() -> dcb::Result<()> {
/// let recorder = PostgresRecorder::open(Options::from_env("my_app")).await?;
/// let created = AggregateEvent {
///     aggregate_id: "course-1".into(),
///     version: 1,
///     event_type: "CourseRegistered".into(),
///     data: "{}".into(),
/// };
/// recorder.insert_events(vec![created.clone()]).await?;
/// assert!(recorder.insert_events(vec![created]).await.unwrap_err().is_integrity());
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresRecorder {
    shared: Arc<Shared>,
}

struct Shared {
    pool: Arc<Pool>,
    /// Inserts waiting for the group-commit task.
    inserts: mpsc::Sender<InsertJob>,
    select_forward: String,
    select_backward: String,
    count: String,
}

impl PostgresRecorder {
    /// Connects and creates or updates the recorder's table and function in the schema of
    /// `options` (which may be the same schema as an event store's).
    pub async fn open(options: Options) -> Result<Self> {
        let schema = options.parsed_schema()?;
        let connector = options.connector()?;
        let client = connector.connect().await?;
        connector.check_encoding(&client).await?;
        schema.recorder_migration().run(&client, &connector, "creating the recorder schema").await?;
        drop(client);
        let select = |dir: &str| {
            schema.sql(&format!(
                "SELECT version, type, data FROM @S.aggregate_events \
                 WHERE aggregate_id = $1 AND version > $2 ORDER BY version {dir} LIMIT $3"
            ))
        };
        // The group commit has a connection of its own: on a shared, pipelined one, reads would
        // queue behind each commit's WAL flush.
        let writer = Arc::new(Pool::new(connector.clone(), 1));
        let pool = Arc::new(Pool::new(connector, options.read_connection_count()));
        let (inserts, jobs) = mpsc::channel(QUEUE_CAPACITY);
        let statements = Statements {
            plain: schema.sql(PLAIN_INSERT),
            batch: schema.sql("SELECT @S.insert_aggregate_batch($1, $2, $3, $4, $5)"),
        };
        tokio::spawn(group_commit(writer, statements, jobs));
        Ok(PostgresRecorder {
            shared: Arc::new(Shared {
                pool,
                inserts,
                select_forward: select("ASC"),
                select_backward: select("DESC"),
                count: schema.sql("SELECT coalesce(max(notification_id), 0) FROM @S.aggregate_events"),
            }),
        })
    }

    async fn query(
        &self,
        doing: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>> {
        query(&self.shared.pool, doing, sql, params).await
    }
}

async fn query(
    pool: &Pool,
    doing: &str,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Vec<tokio_postgres::Row>> {
    run(pool, sql, params).await?.map_err(|e| pool.connector.error(doing, e))
}

/// Runs one statement on a connection of `pool`: the outer error is that of getting the
/// connection, the inner one the statement's own, for callers that tell its kinds apart.
async fn run(
    pool: &Pool,
    sql: &str,
    params: &[&(dyn ToSql + Sync)],
) -> Result<Result<Vec<tokio_postgres::Row>, tokio_postgres::Error>> {
    let conn = pool.get().await?;
    Ok(match conn.prepare(sql).await {
        Ok(statement) => conn.client.query(&statement, params).await,
        Err(error) => Err(error),
    })
}

/// Inserts queued before callers wait for room.
const QUEUE_CAPACITY: usize = 4096;

/// An insert waiting for its group commit, and where its outcome goes.
struct InsertJob {
    ids: Vec<String>,
    versions: Vec<i64>,
    types: Vec<String>,
    data: Vec<Bytes>,
    reply: oneshot::Sender<Result<u64>>,
}

/// The statements of the group commit.
struct Statements {
    /// [`PLAIN_INSERT`], tried first.
    plain: String,
    /// One call of `insert_aggregate_batch`, when the plain insert met a unique key.
    batch: String,
}

/// A whole batch as one plain statement, without the PL/pgSQL function's subtransaction per
/// insert (which costs about a third of a lone insert). Its notification ids follow the greatest
/// one in the statement's snapshot, taken before the lock, so an insert of another process
/// committed in between makes it fail on the ids' unique key, as does a recorded version on the
/// primary key: on either violation nothing is written, and the function, which gives each insert
/// its own outcome, takes the batch. Answers the first notification id and the events inserted.
pub(crate) const PLAIN_INSERT: &str = "WITH inserted AS (\
     INSERT INTO @S.aggregate_events (aggregate_id, version, notification_id, type, data) \
     SELECT u.id, u.version, (SELECT coalesce(max(notification_id), 0) FROM @S.aggregate_events) + u.rank, \
            u.type, u.data \
     FROM unnest($1::text[], $2::bigint[], $3::text[], $4::bytea[]) WITH ORDINALITY AS u(id, version, type, data, rank) \
     WHERE @S.recorder_protocol_v@V() AND pg_advisory_xact_lock(@RLOCK) IS NOT NULL \
     RETURNING notification_id) \
     SELECT min(notification_id), count(*) FROM inserted";

/// Runs until every recorder handle is dropped: takes whatever inserts are queued and commits
/// them in one statement (two when the first meets a unique key).
async fn group_commit(pool: Arc<Pool>, statements: Statements, jobs: mpsc::Receiver<InsertJob>) {
    let mut batches = Batches::new(jobs, BOUNDS, |job: &InsertJob| {
        let bytes = job.ids.iter().chain(&job.types).map(String::len).sum::<usize>()
            + job.data.iter().map(Bytes::len).sum::<usize>();
        (job.ids.len(), bytes)
    });
    while let Some(batch) = batches.next().await {
        let flat = Flat::new(&batch);
        let outcome = match insert_plain(&pool, &statements.plain, &flat).await {
            Ok(Some(outcomes)) => Ok(outcomes),
            Ok(None) => insert_batch(&pool, &statements.batch, &flat).await,
            Err(error) => Err(error),
        };
        match outcome {
            Ok(results) => {
                for (job, last) in batch.into_iter().zip(results) {
                    let result = if last < 0 {
                        Err(Error::Integrity("an aggregate version of the insert is already recorded".into()))
                    } else {
                        Ok(last as u64)
                    };
                    let _ = job.reply.send(result);
                }
            }
            Err(error) => {
                // Every insert of the batch shares the failure; nothing of the batch was committed
                // unless the connection dropped after the commit, which `Unavailable` leaves open.
                for job in batch {
                    let _ = job.reply.send(Err(copy_failure(&error)));
                }
            }
        }
    }
}

/// A batch's events as the parallel arrays both statements take, with each insert's count.
struct Flat<'a> {
    counts: Vec<i32>,
    ids: Vec<&'a str>,
    versions: Vec<i64>,
    types: Vec<&'a str>,
    data: Vec<&'a [u8]>,
}

impl<'a> Flat<'a> {
    fn new(batch: &'a [InsertJob]) -> Self {
        Flat {
            counts: batch.iter().map(|job| job.ids.len() as i32).collect(),
            ids: batch.iter().flat_map(|job| job.ids.iter().map(String::as_str)).collect(),
            versions: batch.iter().flat_map(|job| job.versions.iter().copied()).collect(),
            types: batch.iter().flat_map(|job| job.types.iter().map(String::as_str)).collect(),
            data: batch.iter().flat_map(|job| job.data.iter().map(|d| d.as_ref())).collect(),
        }
    }
}

const DOING: &str = "inserting aggregate events";

/// Per insert, the notification id of its last event by [`PLAIN_INSERT`], or `None` when it met
/// a unique key and the batch function must decide.
async fn insert_plain(pool: &Pool, sql: &str, flat: &Flat<'_>) -> Result<Option<Vec<i64>>> {
    let params: [&(dyn ToSql + Sync); 4] = [&flat.ids, &flat.versions, &flat.types, &flat.data];
    let rows = match run(pool, sql, &params).await? {
        Ok(rows) => rows,
        Err(error) if error.code() == Some(&SqlState::UNIQUE_VIOLATION) => return Ok(None),
        Err(error) => return Err(pool.connector.error(DOING, error)),
    };
    let row = rows.first().ok_or_else(|| Error::Internal("the plain insert answered no row".into()))?;
    let decode = |e| Error::Internal(format!("decoding the plain insert's answer: {e}"));
    let first: Option<i64> = row.try_get(0).map_err(decode)?;
    let inserted: i64 = row.try_get(1).map_err(decode)?;
    match first {
        Some(first) if inserted == flat.ids.len() as i64 => Ok(Some(
            flat.counts
                .iter()
                .scan(first - 1, |last, &count| {
                    *last += i64::from(count);
                    Some(*last)
                })
                .collect(),
        )),
        _ => Err(Error::Internal(format!(
            "the insert of {} aggregate events inserted {inserted}",
            flat.ids.len()
        ))),
    }
}

/// One call of `insert_aggregate_batch`: per insert, the notification id of its last event, or
/// -1 when one of its versions is recorded already.
async fn insert_batch(pool: &Pool, sql: &str, flat: &Flat<'_>) -> Result<Vec<i64>> {
    let params: [&(dyn ToSql + Sync); 5] = [&flat.counts, &flat.ids, &flat.versions, &flat.types, &flat.data];
    let rows = query(pool, DOING, sql, &params).await?;
    let results: Vec<i64> = rows.first().and_then(|row| row.try_get(0).ok()).unwrap_or_default();
    if results.len() == flat.counts.len() {
        Ok(results)
    } else {
        Err(Error::Internal(format!(
            "insert_aggregate_batch answered {} outcomes for {} inserts",
            results.len(),
            flat.counts.len()
        )))
    }
}

impl AggregateRecorder for PostgresRecorder {
    async fn insert_events(&self, events: Vec<AggregateEvent>) -> Result<u64> {
        validate_insert(&events)?;
        let mut versions = Vec::with_capacity(events.len());
        for event in &events {
            versions.push(i64::try_from(event.version).map_err(|_| {
                Error::invalid(format!(
                    "version {} of aggregate {:?} exceeds the largest PostgreSQL bigint",
                    event.version, event.aggregate_id
                ))
            })?);
        }
        let (reply, outcome) = oneshot::channel();
        let job = InsertJob {
            ids: events.iter().map(|e| e.aggregate_id.clone()).collect(),
            versions,
            types: events.iter().map(|e| e.event_type.clone()).collect(),
            data: events.into_iter().map(|e| e.data).collect(),
            reply,
        };
        let stopped = || Error::Internal("the recorder's group-commit task has stopped".into());
        self.shared.inserts.send(job).await.map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }

    async fn select_events(&self, aggregate_id: &str, options: ReadOptions) -> Result<Vec<AggregateEvent>> {
        let sql = if options.backwards { &self.shared.select_backward } else { &self.shared.select_forward };
        let after = options.after.map_or(0, clamp);
        let limit = options.limit.map(i64::from);
        let rows = self.query("selecting aggregate events", sql, &[&aggregate_id, &after, &limit]).await?;
        rows.into_iter()
            .map(|row| {
                let decode = |e| Error::Internal(format!("decoding an aggregate event row: {e}"));
                let version: i64 = row.try_get(0).map_err(decode)?;
                let data: Vec<u8> = row.try_get(2).map_err(decode)?;
                Ok(AggregateEvent {
                    aggregate_id: aggregate_id.to_owned(),
                    version: version as u64,
                    event_type: row.try_get(1).map_err(decode)?,
                    data: Bytes::from(data),
                })
            })
            .collect()
    }

    async fn count(&self) -> Result<u64> {
        let rows = self.query("counting aggregate events", &self.shared.count, &[]).await?;
        let count: i64 = rows.first().and_then(|row| row.try_get(0).ok()).unwrap_or(0);
        Ok(count as u64)
    }
}
