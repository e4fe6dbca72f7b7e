//! The aggregate recorder: the traditional persistence, one row per (aggregate id, version).

use std::sync::Arc;

use dcb::recorder::{AggregateEvent, AggregateRecorder, validate_insert};
use dcb::{Bytes, Error, ReadOptions, Result};
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;

use crate::connect::{Options, Pool};
use crate::writer::clamp;

/// An [`AggregateRecorder`] in a schema of a PostgreSQL database.
///
/// The table's primary key on (aggregate id, version) is the whole concurrency rule: an insert
/// that repeats a recorded version violates it, and because a batch is inserted by one
/// statement, nothing of the batch is written. Cloning gives another handle to the same
/// recorder.
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
    pool: Pool,
    insert: String,
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
        client
            .batch_execute(&schema.recorder_migration())
            .await
            .map_err(|e| connector.error("creating the recorder schema", e))?;
        drop(client);
        let select = |dir: &str| {
            schema.sql(&format!(
                "SELECT version, type, data FROM @S.aggregate_events \
                 WHERE aggregate_id = $1 AND version > $2 ORDER BY version {dir} LIMIT $3"
            ))
        };
        Ok(PostgresRecorder {
            shared: Arc::new(Shared {
                pool: Pool::new(connector, options.read_connection_count()),
                insert: schema.sql("SELECT @S.insert_aggregate_events($1, $2, $3, $4)"),
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
        let connector = &self.shared.pool.connector;
        let conn = self.shared.pool.get().await?;
        let statement = conn.prepare(sql).await.map_err(|e| connector.error(doing, e))?;
        conn.client.query(&statement, params).await.map_err(|e| match e.code() {
            Some(code) if *code == SqlState::UNIQUE_VIOLATION => Error::Integrity(format!(
                "an aggregate version of the insert is already recorded: {}",
                e.as_db_error().map_or("", |db| db.detail().unwrap_or_default())
            )),
            _ => connector.error(doing, e),
        })
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
        let ids: Vec<&str> = events.iter().map(|e| e.aggregate_id.as_str()).collect();
        let types: Vec<&str> = events.iter().map(|e| e.event_type.as_str()).collect();
        let data: Vec<&[u8]> = events.iter().map(|e| e.data.as_ref()).collect();
        let rows = self
            .query("inserting aggregate events", &self.shared.insert, &[&ids, &versions, &types, &data])
            .await?;
        let last: i64 = rows
            .first()
            .and_then(|row| row.try_get(0).ok())
            .ok_or_else(|| Error::Internal("insert_aggregate_events returned nothing".into()))?;
        Ok(last as u64)
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
