//! Connection settings, connecting, and the mapping of driver errors onto the contract's errors.

use std::collections::HashMap;
use std::str::FromStr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use dcb::{Error, Result};
use tokio_postgres::config::Host;
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

    /// What error messages show of the connection URL: its user, hosts, ports and database,
    /// never its password.
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
        // Not shown when it does not parse: where its password is cannot be told.
        let mut config = tokio_postgres::Config::from_str(&self.url)
            .map_err(|e| Error::invalid(format!("cannot parse the PostgreSQL URL (not shown): {e}")))?;
        let redacted = self.redacted_url();
        if config.get_application_name().is_none() {
            config.application_name(&self.application_name);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
        }
        // The batch functions take a lock, then check conditions and versions by statements that
        // each need a snapshot taken after it: READ COMMITTED, whatever the database, the role or
        // the URL sets as the default (a later `-c` wins). A startup option costs no round trip.
        let mut startup = config.get_options().map_or_else(String::new, |o| format!("{o} "));
        startup.push_str(r"-c default_transaction_isolation=read\ committed");
        // A `lock_timeout` of the role or the database would make an append that waits for the
        // schema's append lock fail, having written nothing, as often as appends contend. Unless
        // the URL asks for one itself (then a timeout is `Unavailable`, see `is_connection_error`).
        if !config.get_options().is_some_and(|o| sets_option(o, "lock_timeout")) {
            startup.push_str(" -c lock_timeout=0");
        }
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

/// What error messages and `Debug` show of a connection string: the user, the hosts with their
/// ports and the database, taken from the parsed settings, never from the text. A password can sit
/// in the URL's user part (with unencoded `/` or `?` in it), in a `password` query parameter, or
/// quoted or escaped in a key-value string; editing the text would have to know every form. A
/// string that does not parse is not shown at all, since where its password is cannot be told.
fn redact(url: &str) -> String {
    let Ok(config) = tokio_postgres::Config::from_str(url) else {
        return "(a connection string that could not be parsed)".to_owned();
    };
    let ports = config.get_ports();
    // Without a port for each host, one port (or none, the default) serves them all.
    let port = |i: usize| ports.get(if ports.len() == 1 { 0 } else { i }).map(|p| format!(":{p}"));
    let mut hosts: Vec<String> = config
        .get_hosts()
        .iter()
        .enumerate()
        .map(|(i, host)| {
            let name = match host {
                Host::Tcp(name) => name.clone(),
                Host::Unix(path) => path.display().to_string(),
            };
            name + &port(i).unwrap_or_default()
        })
        .collect();
    if hosts.is_empty() {
        hosts = config
            .get_hostaddrs()
            .iter()
            .enumerate()
            .map(|(i, addr)| addr.to_string() + &port(i).unwrap_or_default())
            .collect();
    }
    let user = config.get_user().map(|u| format!("{u}@")).unwrap_or_default();
    let dbname = config.get_dbname().map(|d| format!("/{d}")).unwrap_or_default();
    format!("postgres://{user}{}{dbname}", hosts.join(","))
}

/// Whether the `options` startup parameter sets the server setting `name` (as `-c name=v`,
/// `-cname=v` or `--name=v`; the server splits it at unescaped whitespace and reads `-` in a
/// name as `_`, case-insensitively).
fn sets_option(options: &str, name: &str) -> bool {
    let mut words = Vec::new();
    let mut word = String::new();
    let mut chars = options.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => word.extend(chars.next()),
            c if c.is_whitespace() => words.push(std::mem::take(&mut word)),
            c => word.push(c),
        }
    }
    words.push(word);
    words.iter().any(|word| {
        let setting = word.strip_prefix("--").or_else(|| word.strip_prefix("-c")).unwrap_or(word);
        setting.split_once('=').is_some_and(|(key, _)| key.replace('-', "_").eq_ignore_ascii_case(name))
    })
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
        if let Some(cause) = unencodable(&error) {
            // Nothing was sent, and the same request would fail the same way: retrying it (a
            // gigabyte, say) forever is what an `Unavailable` would invite.
            return Error::invalid(format!(
                "{doing}: the request cannot be sent to PostgreSQL at {} ({error}: {cause})",
                self.redacted
            ));
        }
        let changed_under_us = error.as_db_error().is_some_and(|db| {
            *db.code() == SqlState::UNDEFINED_FUNCTION
                || (*db.code() == SqlState::FEATURE_NOT_SUPPORTED && db.message().contains("cached plan"))
        });
        if changed_under_us {
            // A prepared statement whose function went away (42883) or now returns another type
            // (0A000, "cached plan must not change result type"): a process of another build
            // opened the schema and made its own functions. The statement works again once
            // this build's functions are back, so the message says what to do.
            return Error::Internal(format!(
                "{doing} on PostgreSQL at {}: the schema's functions are not the ones this build \
                 made; a process of another (older or newer) build has changed them since this \
                 one opened the store. Run one build against the schema and reopen: {}",
                self.redacted,
                describe(&error)
            ));
        }
        Error::Internal(format!("{doing} on PostgreSQL at {}: {}", self.redacted, describe(&error)))
    }
}

/// Whether the error means the connection (or the server) went away, or the transaction was
/// aborted for reasons a retry may not meet again.
pub(crate) fn is_connection_error(error: &tokio_postgres::Error) -> bool {
    match error.code() {
        // Without a SQLSTATE the error is the driver's own: the connection (closed, or an I/O
        // failure), or a conversion or encoding, which no retry would cure.
        None => error.is_closed() || (io_cause(error).is_some() && unencodable(error).is_none()),
        Some(code) => {
            let class = &code.code()[..2];
            // 08: connection exception; 57: operator intervention (terminated backend, shutdown);
            // 53: insufficient resources (too many connections); 40: rollback (serialization);
            // 55P03: a lock wait passed the `lock_timeout` the URL set, nothing written.
            matches!(class, "08" | "57" | "53" | "40")
                || *code == SqlState::ADMIN_SHUTDOWN
                || *code == SqlState::LOCK_NOT_AVAILABLE
        }
    }
}

/// The I/O error a driver error carries, if any.
fn io_cause(error: &tokio_postgres::Error) -> Option<&std::io::Error> {
    use std::error::Error as _;
    error.source().and_then(|source| source.downcast_ref::<std::io::Error>())
}

/// The cause of an error raised while encoding a message, before anything was sent: postgres-
/// protocol refuses a value or a message longer than its length fields hold ("value too large
/// to transmit") with an I/O error of kind `InvalidInput`. The connection's own I/O failures
/// reach a call as a closed connection instead (the task driving it ends).
fn unencodable(error: &tokio_postgres::Error) -> Option<&std::io::Error> {
    io_cause(error).filter(|cause| !error.is_closed() && cause.kind() == std::io::ErrorKind::InvalidInput)
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

    /// The shown text is built from the parsed settings: no form of password survives, and a
    /// string that does not parse is not shown.
    #[test]
    fn passwords_are_removed_from_urls() {
        let cases = [
            ("postgres://app:s3cret@db:5432/events?sslmode=disable", "postgres://app@db:5432/events"),
            ("postgresql://a:b:s3cret@h/d", "postgres://a@h:5432/d"),
            ("postgres://app@db/x?password=s3cret", "postgres://app@db:5432/x"),
            ("postgres://app@db/x?sslmode=disable&password=s3cret", "postgres://app@db:5432/x"),
            ("postgres://app:pa/s3cret@db/x", "postgres://app@db:5432/x"),
            ("postgres://app:pa?s3cret@db/x", "postgres://app@db:5432/x"),
            ("postgres://app:s3cret@db1:5433,db2:5434/x", "postgres://app@db1:5433,db2:5434/x"),
            ("host=db user=app password=s3cret dbname=x", "postgres://app@db/x"),
            ("host=db user=app password = s3cret dbname=x", "postgres://app@db/x"),
            ("host=db user=app password='my s3cret' dbname=x", "postgres://app@db/x"),
            (r"host=db user=app password=my\ s3cret dbname=x", "postgres://app@db/x"),
            ("postgres://app:s3cret@db:notaport/x", "(a connection string that could not be parsed)"),
            ("host=db password='s3cret", "(a connection string that could not be parsed)"),
            (DEFAULT_URL, DEFAULT_URL),
        ];
        for (url, shown) in cases {
            assert_eq!(redact(url), shown, "{url}");
            let options = format!("{:?}", Options::new(url, "s"));
            assert!(!options.contains("s3cret"), "{options}");
            if let Err(error) = Options::new(url, "s").connector() {
                assert!(!error.to_string().contains("s3cret"), "{error}");
            }
        }
    }

    /// Every connection turns off a `lock_timeout` of the role or database, unless the URL sets
    /// one itself (in any of the forms the server reads).
    #[test]
    fn lock_timeout_is_off_unless_the_url_sets_it() {
        let options = |url: &str| {
            let connector = Options::new(url, "s").connector().unwrap();
            connector.config.get_options().unwrap_or_default().to_owned()
        };
        let default = options("postgres://u@h/db");
        assert!(default.ends_with(" -c lock_timeout=0"), "{default}");
        assert!(sets_option(&default, "lock_timeout"));
        let other = options("postgres://u@h/db?options=-c%20deadlock_timeout%3D5s");
        assert!(other.ends_with(" -c lock_timeout=0"), "{other}");
        for set in
            ["-c%20lock_timeout%3D5s", "-clock_timeout%3D5s", "--lock-timeout%3D5s", "-c%20Lock_Timeout%3D1"]
        {
            let chosen = options(&format!("postgres://u@h/db?options={set}"));
            assert!(!chosen.contains("lock_timeout=0"), "{chosen}");
            assert!(sets_option(&chosen, "lock_timeout"), "{chosen}");
        }
        assert!(!sets_option(r"-c search_path=a\ lock_timeout=1", "lock_timeout"));
    }

    /// A request postgres-protocol cannot encode (as it cannot a value or message over its
    /// length fields, "value too large to transmit") was never sent and would fail the same way
    /// again: an invalid argument, not a retryable loss of the connection. Both paths are taken
    /// without a gigabyte: a query text with a NUL (the message encoder) and a parameter whose
    /// encoding fails as an oversized one does.
    #[tokio::test]
    async fn requests_that_cannot_be_encoded_are_not_retryable() {
        #[derive(Debug)]
        struct Oversized;
        impl tokio_postgres::types::ToSql for Oversized {
            fn to_sql(
                &self,
                _: &tokio_postgres::types::Type,
                _: &mut tokio_postgres::types::private::BytesMut,
            ) -> Result<tokio_postgres::types::IsNull, Box<dyn std::error::Error + Sync + Send>> {
                Err(Box::new(std::io::Error::new(
                    std::io::ErrorKind::InvalidInput,
                    "value too large to transmit",
                )))
            }
            tokio_postgres::types::accepts!(BYTEA);
            tokio_postgres::types::to_sql_checked!();
        }
        let url = std::env::var("DCB_TEST_POSTGRES_URL")
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/dcb_test".to_owned());
        let connector = Options::new(url, "s").connector().unwrap();
        let client = connector.connect().await.expect("connect (is PostgreSQL running?)");
        let message = client.prepare("SELECT 1\0").await.unwrap_err();
        let statement = client.prepare("SELECT length($1::bytea)").await.unwrap();
        let parameter = client.query(&statement, &[&Oversized]).await.unwrap_err();
        for error in [message, parameter] {
            assert!(!is_connection_error(&error), "{error:?}");
            let mapped = connector.error("appending", error);
            assert!(matches!(&mapped, Error::InvalidArgument(m) if m.contains("cannot be sent")), "{mapped}");
        }
        assert!(!client.is_closed());
        let closed = client.query("SELECT pg_terminate_backend(pg_backend_pid())", &[]).await.unwrap_err();
        assert!(connector.error("reading", closed).is_retryable());
    }
}
