//! Connection settings, connecting, and the mapping of driver errors onto the contract's errors.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dcb::{Error, Result};
use tokio_postgres::error::SqlState;
use tokio_postgres::{Client, NoTls, Socket, Statement, tls::NoTlsStream};

use crate::schema::Schema;

/// The environment variable [`Options::from_env`] reads the connection URL from.
pub const URL_ENV: &str = "DCB_POSTGRES_URL";

/// The URL used when [`URL_ENV`] is not set: the local server, user `postgres`, database
/// `postgres`, no password (trust authentication).
pub const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/postgres";

/// Read connections a store opens unless told otherwise.
const DEFAULT_READ_CONNECTIONS: usize = 2;

/// How long a connection attempt may take when the URL does not say.
const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// TCP keepalives, unless the URL sets them: idle time, then probes and their interval. A server
/// that vanished without closing the connection (a crashed host, a dropped route) is noticed in
/// about a minute instead of the system's two hours; until then a LISTEN connection would leave
/// subscriptions silent, and an append would wait.
const KEEPALIVE: (Duration, Duration, u32) = (Duration::from_secs(30), Duration::from_secs(10), 3);

/// The driver's own keepalive idle time, which stands for "not set".
const DRIVER_KEEPALIVE_IDLE: Duration = Duration::from_secs(2 * 60 * 60);

/// Where a store lives and how it connects.
///
/// ```
/// use dcb_postgres::Options;
///
/// let options = Options::new("postgres://app:secret@db.internal:5432/events", "billing")
///     .read_connections(4)
///     .application_name("billing-service");
/// assert_eq!(options.schema(), "billing");
/// ```
#[derive(Clone)]
pub struct Options {
    url: String,
    schema: String,
    read_connections: usize,
    application_name: String,
}

/// Shows the URL without its password.
impl std::fmt::Debug for Options {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Options")
            .field("url", &self.redacted_url())
            .field("schema", &self.schema)
            .field("read_connections", &self.read_connections)
            .field("application_name", &self.application_name)
            .finish()
    }
}

impl Options {
    /// A store in `schema` of the database at `url` (a `postgres://` URL or a `key=value`
    /// connection string, as understood by `tokio-postgres`; session settings can be passed
    /// with its `options` parameter, e.g. `?options=-c%20synchronous_commit%3Doff`).
    pub fn new(url: impl Into<String>, schema: impl Into<String>) -> Self {
        Options {
            url: url.into(),
            schema: schema.into(),
            read_connections: DEFAULT_READ_CONNECTIONS,
            application_name: "dcb-postgres".to_owned(),
        }
    }

    /// A store in `schema` of the database named by the [`URL_ENV`] environment variable, or
    /// at [`DEFAULT_URL`] when it is not set.
    pub fn from_env(schema: impl Into<String>) -> Self {
        let url = std::env::var(URL_ENV).unwrap_or_else(|_| DEFAULT_URL.to_owned());
        Options::new(url, schema)
    }

    /// How many connections serve reads (at least one; default 2). Each carries many
    /// concurrent reads, pipelined. Appends have their own connection.
    pub fn read_connections(mut self, count: usize) -> Self {
        self.read_connections = count.max(1);
        self
    }

    /// The `application_name` the store's connections report to the server (default
    /// `dcb-postgres`), which is how an operator tells them apart in `pg_stat_activity`.
    pub fn application_name(mut self, name: impl Into<String>) -> Self {
        self.application_name = name.into();
        self
    }

    /// The schema the store lives in.
    pub fn schema(&self) -> &str {
        &self.schema
    }

    /// The connection URL with any password removed, as error messages show it.
    pub fn redacted_url(&self) -> String {
        redact(&self.url)
    }

    pub(crate) fn read_connection_count(&self) -> usize {
        self.read_connections
    }

    pub(crate) fn parsed_schema(&self) -> Result<Schema> {
        Schema::new(&self.schema)
    }

    pub(crate) fn connector(&self) -> Result<Connector> {
        let redacted = self.redacted_url();
        let mut config = tokio_postgres::Config::from_str(&self.url)
            .map_err(|e| Error::invalid(format!("cannot parse PostgreSQL URL {redacted}: {e}")))?;
        if config.get_application_name().is_none() {
            config.application_name(&self.application_name);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        // The batch functions take a lock, then check conditions and versions by statements that
        // each need a snapshot taken after it: READ COMMITTED, whatever the database, the role or
        // the URL sets as the default (a later `-c` wins). A startup option costs no round trip.
        let isolation = r"-c default_transaction_isolation=read\ committed";
        let startup =
            config.get_options().map_or_else(|| isolation.to_owned(), |o| format!("{o} {isolation}"));
        config.options(&startup);
        let (idle, interval, retries) = KEEPALIVE;
        if config.get_keepalives_idle() == DRIVER_KEEPALIVE_IDLE {
            config.keepalives_idle(idle);
        }
        if config.get_keepalives_interval().is_none() {
            config.keepalives_interval(interval);
        }
        if config.get_keepalives_retries().is_none() {
            config.keepalives_retries(retries);
        }
        Ok(Connector { config: Arc::new(config), redacted: Arc::from(redacted) })
    }
}

/// Removes the password from a `postgres://user:password@host` URL or a `password=...` pair
/// of a key-value connection string.
fn redact(url: &str) -> String {
    if let Some((scheme, rest)) = url.split_once("://") {
        let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(authority_end);
        if let Some((userinfo, host)) = authority.rsplit_once('@') {
            let user = userinfo.split(':').next().unwrap_or_default();
            return format!("{scheme}://{user}@{host}{tail}");
        }
        return url.to_owned();
    }
    url.split_whitespace()
        .map(|pair| if pair.starts_with("password=") { "password=***" } else { pair })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Opens connections with parsed settings.
#[derive(Clone)]
pub(crate) struct Connector {
    config: Arc<tokio_postgres::Config>,
    redacted: Arc<str>,
}

impl Connector {
    /// A connection whose driving half runs on its own task.
    pub(crate) async fn connect(&self) -> Result<Client> {
        let (client, connection) = self.connect_raw().await?;
        tokio::spawn(async move {
            // The error, if any, reaches the client's next call as a closed connection.
            let _ = connection.await;
        });
        Ok(client)
    }

    /// A connection whose driving half the caller polls (to receive notifications).
    pub(crate) async fn connect_raw(
        &self,
    ) -> Result<(Client, tokio_postgres::Connection<Socket, NoTlsStream>)> {
        self.config
            .connect(NoTls)
            .await
            .map_err(|e| Error::unavailable(format!("cannot connect to PostgreSQL at {}", self.redacted), e))
    }

    /// Refuses a database whose encoding is not UTF-8: types, tags and metadata are any Unicode
    /// text, and in another encoding one event that it cannot hold would fail every append of
    /// its batch. Checked on open rather than discovered by an append.
    pub(crate) async fn check_encoding(&self, client: &Client) -> Result<()> {
        let row = client
            .query_one("SELECT current_setting('server_encoding')", &[])
            .await
            .map_err(|e| self.error("reading the database encoding", e))?;
        let encoding: String = row.get(0);
        if encoding != "UTF8" {
            return Err(Error::invalid(format!(
                "the database at {} uses the {encoding} encoding; the store needs a UTF8 database \
                 (CREATE DATABASE ... ENCODING 'UTF8')",
                self.redacted
            )));
        }
        Ok(())
    }

    /// Maps a driver error met while `doing` something onto the contract's errors: a lost or
    /// refused connection is retryable, anything else is a bug or an unexpected state.
    pub(crate) fn error(&self, doing: &str, error: tokio_postgres::Error) -> Error {
        if is_connection_error(&error) {
            return Error::unavailable(
                format!("{doing}: lost the connection to PostgreSQL at {}", self.redacted),
                error,
            );
        }
        Error::Internal(format!("{doing} on PostgreSQL at {}: {}", self.redacted, describe(&error)))
    }
}

/// Whether the error means the connection (or the server) went away, or the transaction was
/// aborted for reasons a retry may not meet again.
pub(crate) fn is_connection_error(error: &tokio_postgres::Error) -> bool {
    use std::error::Error as _;
    match error.code() {
        // Without a SQLSTATE the error is the driver's own: the connection (closed, or an I/O
        // failure), or a conversion, which no retry would cure.
        None => error.is_closed() || error.source().is_some_and(|s| s.is::<std::io::Error>()),
        Some(code) => {
            let class = &code.code()[..2];
            // 08: connection exception; 57: operator intervention (terminated backend, shutdown);
            // 53: insufficient resources (too many connections); 40: rollback (serialization).
            matches!(class, "08" | "57" | "53" | "40") || *code == SqlState::ADMIN_SHUTDOWN
        }
    }
}

/// The server's message when there is one, which `Display` of the driver error leaves out.
fn describe(error: &tokio_postgres::Error) -> String {
    match error.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => error.to_string(),
    }
}

/// A connection with the statements it has prepared, by SQL text.
pub(crate) struct Conn {
    pub(crate) client: Client,
    statements: std::sync::Mutex<HashMap<String, Statement>>,
}

/// Statements kept per connection; read shapes beyond it are prepared again after a reset.
const MAX_CACHED_STATEMENTS: usize = 512;

impl Conn {
    pub(crate) fn new(client: Client) -> Self {
        Conn { client, statements: std::sync::Mutex::new(HashMap::new()) }
    }

    /// The prepared statement for `sql`, preparing it on first use.
    pub(crate) async fn prepare(&self, sql: &str) -> Result<Statement, tokio_postgres::Error> {
        if let Some(statement) = self.cache().get(sql) {
            return Ok(statement.clone());
        }
        let statement = self.client.prepare(sql).await?;
        let mut cache = self.cache();
        if cache.len() >= MAX_CACHED_STATEMENTS {
            cache.clear();
        }
        cache.insert(sql.to_owned(), statement.clone());
        Ok(statement)
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, HashMap<String, Statement>> {
        self.statements.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// A few connections shared round-robin; each carries concurrent requests pipelined, and a
/// closed one is replaced on its next use.
pub(crate) struct Pool {
    pub(crate) connector: Connector,
    slots: Vec<tokio::sync::Mutex<Option<Arc<Conn>>>>,
    next: AtomicUsize,
}

impl Pool {
    pub(crate) fn new(connector: Connector, size: usize) -> Self {
        Pool {
            connector,
            slots: (0..size.max(1)).map(|_| tokio::sync::Mutex::new(None)).collect(),
            next: AtomicUsize::new(0),
        }
    }

    pub(crate) async fn get(&self) -> Result<Arc<Conn>> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.slots.len();
        let mut slot = self.slots[index].lock().await;
        if let Some(conn) = slot.as_ref().filter(|c| !c.client.is_closed()) {
            return Ok(conn.clone());
        }
        let conn = Arc::new(Conn::new(self.connector.connect().await?));
        *slot = Some(conn.clone());
        Ok(conn)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Keepalives notice a vanished server within about a minute, unless the URL says otherwise.
    #[test]
    fn keepalives_default_to_a_minute_and_the_url_wins() {
        let config = |url: &str| Options::new(url, "s").connector().unwrap().config;
        let default = config("postgres://u@h/db");
        assert!(default.get_keepalives());
        assert_eq!(default.get_keepalives_idle(), Duration::from_secs(30));
        assert_eq!(default.get_keepalives_interval(), Some(Duration::from_secs(10)));
        assert_eq!(default.get_keepalives_retries(), Some(3));
        let chosen =
            config("postgres://u@h/db?keepalives_idle=600&keepalives_interval=5&keepalives_retries=9");
        assert_eq!(chosen.get_keepalives_idle(), Duration::from_secs(600));
        assert_eq!(chosen.get_keepalives_interval(), Some(Duration::from_secs(5)));
        assert_eq!(chosen.get_keepalives_retries(), Some(9));
    }

    #[test]
    fn passwords_are_removed_from_urls() {
        assert_eq!(
            redact("postgres://app:s3cret@db:5432/events?sslmode=disable"),
            "postgres://app@db:5432/events?sslmode=disable"
        );
        assert_eq!(redact("postgresql://a:b:c@h/d"), "postgresql://a@h/d", "a colon in the password");
        assert_eq!(DEFAULT_URL, redact(DEFAULT_URL));
        let options = Options::new("postgres://app:s3cret@db/x", "s");
        assert!(!format!("{options:?}").contains("s3cret"));
        assert_eq!(
            redact("host=db user=app password=s3cret dbname=x"),
            "host=db user=app password=*** dbname=x"
        );
    }
}
