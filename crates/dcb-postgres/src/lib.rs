//! # dcb-postgres: the DCB event store on PostgreSQL
//!
//! [`PostgresStore`] implements the whole [`dcb::EventStore`] contract in a schema of a
//! PostgreSQL database (so several stores can share one database), and [`PostgresRecorder`]
//! implements [`dcb::recorder::AggregateRecorder`] with a table keyed by (aggregate id, version).
//!
//! - Every read is one prepared statement answered by B-tree indexes: `(tag, position)` for
//!   tags, `(type, position)` for types.
//! - Every append is one round trip: one call of a PL/pgSQL function that checks and inserts
//!   under a transaction-scoped advisory lock, so positions are gapless and become visible in
//!   order. Appends from many tasks of one process are batched into one such call (group
//!   commit), each with its own condition and its own outcome.
//! - Subscriptions catch up by reading, then wait for `NOTIFY`; they survive lost connections.
//!
//! Connection settings come from a URL: [`Options::new`] takes one, [`Options::from_env`] reads
//! [`URL_ENV`] and falls back to [`DEFAULT_URL`]. Connections are unencrypted (no TLS).
//!
//! ```no_run
//! use dcb::{Event, EventStore, QueryItem, ReadOptions};
//! use dcb_postgres::{Options, PostgresStore};
//!
//! # async fn demo() -> dcb::Result<()> {
//! let store = PostgresStore::open(Options::from_env("my_app")).await?;
//! store.append(vec![Event::new("CourseRegistered", "{}").tagged("course-1")], None).await?;
//! let read = store.read(&QueryItem::tags(["course-1"]).into(), ReadOptions::default()).await?;
//! assert_eq!(read.events.len(), 1);
//! # Ok(())
//! # }
//! ```

mod connect;
mod recorder;
mod schema;
mod sql;
mod store;
#[cfg(feature = "testkit")]
pub mod testkit;
mod writer;

pub use connect::{DEFAULT_URL, Options, URL_ENV};
pub use recorder::PostgresRecorder;
pub use store::PostgresStore;
