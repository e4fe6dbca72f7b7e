//! The event store: reads through a few pipelined connections, appends through the group-commit
//! writer, subscriptions fed by a LISTEN connection.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use dcb::limits::{validate_append, validate_query, validate_source};
use dcb::{
    AppendRequest, Bytes, Error, Event, EventStore, EventStream, Query, ReadOptions, ReadResponse, Result,
    SequencedEvent, Uuid,
};
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio_postgres::AsyncMessage;
use tokio_postgres::types::ToSql;

use crate::connect::{Connector, Options, Pool};
use crate::schema::Schema;
use crate::sql::{Term, read_sql};
use crate::writer::{self, Job, clamp};

/// A DCB event store in a schema of a PostgreSQL database.
///
/// Cloning gives another handle to the same store, sharing its connections. A store holds one
/// connection for appends (group commit: appends from many tasks are batched into one
/// transaction), a few for reads, and one more for notifications once something subscribes.
/// Lost connections are replaced on next use.
///
/// ```no_run
/// use dcb::{AppendCondition, Event, EventStore, QueryItem, ReadOptions};
/// use dcb_postgres::{Options, PostgresStore};
///
/// # async fn demo() -> dcb::Result<()> {
/// let store = PostgresStore::open(Options::from_env("courses")).await?;
/// let course = dcb::Query::from(QueryItem::tags(["course-1"]));
/// let seen = store.read(&course, ReadOptions::default()).await?;
/// let event = Event::new("CourseRegistered", "{}").tagged("course-1");
/// store.append(vec![event], Some(AppendCondition::new(course, seen.head))).await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct PostgresStore {
    shared: Arc<Shared>,
    /// Set on the handle a subscription reads through, so that a lost connection is waited
    /// out instead of ending the stream.
    patient: bool,
}

struct Shared {
    schema: Schema,
    reads: Pool,
    jobs: mpsc::Sender<Job>,
    /// The head announcer, created by the first subscription with its LISTEN task.
    heads: Mutex<Option<(watch::Sender<u64>, JoinHandle<()>)>>,
    statements: Statements,
}

impl Drop for Shared {
    fn drop(&mut self) {
        if let Some((_, listener)) = self.heads.get_mut().ok().and_then(Option::take) {
            listener.abort();
        }
    }
}

/// SQL texts that do not depend on the query.
struct Statements {
    head: String,
    tracking: String,
}

impl PostgresStore {
    /// Connects, creates or updates the schema (tables, indexes and functions; safe when
    /// several processes open the same schema at once), and starts the append writer.
    ///
    /// Fails with [`Error::Unavailable`] naming the URL (without its password) when the server
    /// cannot be reached, and with [`Error::InvalidArgument`] for a malformed URL or schema name.
    pub async fn open(options: Options) -> Result<Self> {
        let schema = options.parsed_schema()?;
        let connector = options.connector()?;
        let conn = writer::connect(&connector).await?;
        connector.check_encoding(&conn.client).await?;
        schema.store_migration().run(&conn.client, &connector, "creating the schema").await?;
        let (jobs, queue) = mpsc::channel(writer::QUEUE_CAPACITY);
        tokio::spawn(writer::run(connector.clone(), schema.clone(), Some(conn), queue));
        let statements = Statements {
            head: schema.sql("SELECT max(position) FROM @S.events"),
            tracking: schema.sql("SELECT position FROM @S.tracking WHERE source = $1"),
        };
        Ok(PostgresStore {
            shared: Arc::new(Shared {
                reads: Pool::new(connector, options.read_connection_count()),
                schema,
                jobs,
                heads: Mutex::new(None),
                statements,
            }),
            patient: false,
        })
    }

    /// Connects to `url` and opens the store in `schema`; see [`PostgresStore::open`].
    pub async fn connect(url: &str, schema: &str) -> Result<Self> {
        Self::open(Options::new(url, schema)).await
    }

    /// Runs one statement on a read connection.
    async fn query(
        &self,
        doing: &str,
        sql: &str,
        params: &[&(dyn ToSql + Sync)],
    ) -> Result<Vec<tokio_postgres::Row>> {
        let connector = &self.shared.reads.connector;
        let conn = self.shared.reads.get().await?;
        let statement = conn.prepare(sql).await.map_err(|e| connector.error(doing, e))?;
        conn.client.query(&statement, params).await.map_err(|e| connector.error(doing, e))
    }

    async fn read_once(&self, query: &Query, options: ReadOptions) -> Result<ReadResponse> {
        let (sql, terms) =
            read_sql(&self.shared.schema, query, options.backwards, options.max_bytes.is_some());
        let after = options.after.map_or(0, clamp);
        let before = options.before.map_or(i64::MAX, clamp);
        let limit = options.limit.map(i64::from);
        let budget = options.max_bytes.map(|bytes| i64::try_from(bytes).unwrap_or(i64::MAX));
        let mut params: Vec<&(dyn ToSql + Sync)> = vec![&after, &before, &limit];
        if budget.is_some() {
            params.push(&budget);
        }
        for term in &terms {
            match term {
                Term::One(value) => params.push(value),
                Term::Many(values) => params.push(values),
            }
        }
        // A byte budget is applied by the statement itself (see `read_sql`).
        let rows = self.query("reading events", &sql, &params).await?;
        let mut head = None;
        let mut events = Vec::with_capacity(rows.len());
        for row in rows {
            let decode = |e| Error::Internal(format!("decoding an event row: {e}"));
            head = row.try_get::<_, Option<i64>>(0).map_err(decode)?;
            let Some(position) = row.try_get::<_, Option<i64>>(1).map_err(decode)? else {
                continue;
            };
            let keys: Option<Vec<String>> = row.try_get(6).map_err(decode)?;
            let values: Option<Vec<String>> = row.try_get(7).map_err(decode)?;
            let data: Vec<u8> = row.try_get(3).map_err(decode)?;
            events.push(SequencedEvent {
                position: position as u64,
                event: Event {
                    event_type: row.try_get(2).map_err(decode)?,
                    data: Bytes::from(data),
                    tags: row.try_get(4).map_err(decode)?,
                    uuid: row.try_get::<_, Option<Uuid>>(5).map_err(decode)?,
                    metadata: keys.unwrap_or_default().into_iter().zip(values.unwrap_or_default()).collect(),
                },
            });
        }
        Ok(ReadResponse::new(events, head.map_or(0, |head| head as u64), options))
    }

    /// The head announcer, starting the LISTEN task on first use.
    fn heads(&self) -> watch::Receiver<u64> {
        let mut heads = self.shared.heads.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((sender, _)) = heads.as_ref() {
            return sender.subscribe();
        }
        let (sender, receiver) = watch::channel(0);
        let listener = tokio::spawn(listen(
            self.shared.reads.connector.clone(),
            self.shared.schema.channel.clone(),
            sender.clone(),
        ));
        *heads = Some((sender, listener));
        receiver
    }
}

impl EventStore for PostgresStore {
    async fn read(&self, query: &Query, options: ReadOptions) -> Result<ReadResponse> {
        validate_query(query)?;
        if !self.patient {
            return self.read_once(query, options).await;
        }
        dcb::subscription::patiently(|| self.read_once(query, options)).await
    }

    async fn append_request(&self, request: AppendRequest) -> Result<u64> {
        validate_append(&request)?;
        if let Some(tracking) = &request.tracking
            && i64::try_from(tracking.position).is_err()
        {
            return Err(Error::invalid(format!(
                "tracking position {} exceeds the largest PostgreSQL bigint",
                tracking.position
            )));
        }
        let (reply, outcome) = oneshot::channel();
        let stopped = || Error::Internal("the append writer task has stopped".to_owned());
        self.shared.jobs.send(Job { request, reply }).await.map_err(|_| stopped())?;
        outcome.await.map_err(|_| stopped())?
    }

    async fn head(&self) -> Result<Option<u64>> {
        let rows = self.query("reading the head", &self.shared.statements.head, &[]).await?;
        let head: Option<i64> = rows.first().and_then(|row| row.try_get(0).ok()).flatten();
        Ok(head.map(|h| h as u64))
    }

    async fn tracking_position(&self, source: &str) -> Result<Option<u64>> {
        validate_source(source)?;
        let rows =
            self.query("reading a tracking position", &self.shared.statements.tracking, &[&source]).await?;
        let position: Option<i64> = rows.first().and_then(|row| row.try_get(0).ok());
        Ok(position.map(|p| p as u64))
    }

    async fn subscribe(&self, query: Query, after: Option<u64>) -> Result<EventStream> {
        validate_query(&query)?;
        let heads = self.heads();
        let patient = PostgresStore { shared: self.shared.clone(), patient: true };
        Ok(dcb::subscription::follow(patient, query, after, heads))
    }
}

/// Keeps a LISTEN connection open and announces every notified head. After (re)connecting it
/// announces once unprompted, because notifications sent while it was away are lost: the
/// followers then read again from their own cursors, so nothing is skipped.
async fn listen(connector: Connector, channel: String, heads: watch::Sender<u64>) {
    let listen_sql = format!("LISTEN \"{channel}\"");
    let mut pause = Duration::from_millis(20);
    loop {
        if let Ok((client, mut connection)) = connector.connect_raw().await {
            let (notified, mut notifications) = mpsc::unbounded_channel();
            let driver = tokio::spawn(async move {
                let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                while let Some(Ok(message)) = messages.next().await {
                    if let AsyncMessage::Notification(n) = message
                        && notified.send(n.payload().parse::<u64>().ok()).is_err()
                    {
                        break;
                    }
                }
            });
            if client.batch_execute(&listen_sql).await.is_ok() {
                pause = Duration::from_millis(20);
                heads.send_modify(|_| {});
                while let Some(head) = notifications.recv().await {
                    heads.send_modify(|current| *current = head.unwrap_or(*current).max(*current));
                }
            }
            driver.abort();
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_secs(1));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dcb::QueryItem;

    fn item(types: &[&str], tags: &[&str]) -> QueryItem {
        QueryItem::types(types.iter().copied()).and_tags(tags.iter().copied())
    }

    /// A budgeted statement sends only the rows the contract's byte budget keeps, weighing each
    /// event as `Event::byte_size` does (type, data, tags and metadata).
    #[tokio::test]
    async fn a_budgeted_read_is_cut_by_the_database() {
        let options = crate::testkit::fresh_options().await;
        let store = PostgresStore::open(options.clone()).await.expect("open");
        let events: Vec<Event> = [10usize, 100, 0, 1000, 10]
            .iter()
            .map(|&size| Event::new("Ev", vec![1u8; size]).with_tags(["ab", "c"]).with_metadata("k", "vv"))
            .collect();
        let mut model = dcb::testkit::model::NaiveModel::default();
        model.append(AppendRequest { events: events.clone(), ..AppendRequest::default() }).unwrap();
        let sizes: Vec<usize> = events.iter().map(Event::byte_size).collect();
        store.append(events, None).await.unwrap();
        let (client, connection) =
            tokio_postgres::connect(&crate::testkit::url(), tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        for budget in [0, 1, sizes[0], sizes[0] + 1, sizes[0] + sizes[1] + sizes[2] + 1, 1 << 20] {
            let expected = model.read(&Query::all(), ReadOptions::default().max_bytes(budget)).events.len();
            let (sql, _) = read_sql(&store.shared.schema, &Query::all(), false, true);
            let budget = budget as i64;
            let params: [&(dyn ToSql + Sync); 4] = [&0i64, &i64::MAX, &None::<i64>, &budget];
            let rows = client.query(&sql, &params).await.unwrap();
            assert_eq!(rows.len(), expected, "budget {budget}, sizes {sizes:?}");
        }
        crate::testkit::drop_schema(options.schema()).await;
    }

    /// Every query shape is answered from the indexes: with sequential scans priced out, no
    /// plan of any shape, either direction, still contains one (which it would if no index
    /// could answer it).
    #[tokio::test]
    async fn every_query_shape_is_answered_by_indexes() {
        let url = std::env::var("DCB_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/dcb_test".to_owned());
        let name = format!("dcbpgunit_{}", std::process::id());
        let store = PostgresStore::open(Options::new(url.clone(), name.clone()))
            .await
            .expect("open (is PostgreSQL running? see scripts/ensure-postgres)");
        let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await.unwrap();
        tokio::spawn(connection);
        client.batch_execute("SET enable_seqscan = off").await.unwrap();
        let shapes = [
            Query::all(),
            Query::from(item(&["A"], &[])),
            Query::from(item(&["A", "B"], &[])),
            Query::from(item(&[], &["x"])),
            Query::from(item(&[], &["x", "y"])),
            Query::from(item(&["A"], &["x"])),
            Query::from(item(&["A", "B"], &["x", "y"])),
            Query::new([item(&["A"], &[]), item(&[], &["z"]), item(&["C"], &["x"])]),
        ];
        for query in &shapes {
            for (backwards, budgeted) in [(false, false), (true, false), (false, true), (true, true)] {
                let (sql, terms) = read_sql(&store.shared.schema, query, backwards, budgeted);
                let mut params: Vec<&(dyn ToSql + Sync)> = vec![&0i64, &i64::MAX, &Some(10i64)];
                if budgeted {
                    params.push(&1_000_000i64);
                }
                for term in &terms {
                    match term {
                        Term::One(value) => params.push(value),
                        Term::Many(values) => params.push(values),
                    }
                }
                let plan: Vec<String> = client
                    .query(&format!("EXPLAIN {sql}"), &params)
                    .await
                    .unwrap()
                    .iter()
                    .map(|row| row.get(0))
                    .collect();
                let plan = plan.join("\n");
                assert!(!plan.contains("Seq Scan"), "{query:?} budgeted {budgeted}:\n{plan}");
            }
        }
        client.batch_execute(&format!("DROP SCHEMA \"{name}\" CASCADE")).await.unwrap();
    }
}
