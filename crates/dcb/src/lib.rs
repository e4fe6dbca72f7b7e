//! # dcb: a dynamic-consistency-boundary event store
//!
//! One sequence of events with types and tags, read by query, appended under a condition that
//! fails if anything relevant was recorded since the read.
//!
//! This crate holds what every part of the workspace shares:
//!
//! - the model ([`Event`], [`Query`], [`AppendCondition`], …) and its matching rules;
//! - the [`EventStore`] contract and its one [`Error`] type;
//! - the [`limits`] every store enforces;
//! - [`MemoryStore`], an indexed in-memory store for tests, demos and the fastest path;
//! - with the `testkit` feature, the conformance kit every store runs (`conformance_tests!`).
//!
//! ```
//! use dcb::{Event, EventStore, MemoryStore, Query, QueryItem, ReadOptions};
//!
//! # tokio::runtime::Builder::new_current_thread().build().unwrap().block_on(async {
//! let store = MemoryStore::new();
//! store.append(vec![Event::new("CourseRegistered", "{}").tagged("course-1")], None).await?;
//! let read = store.read(&QueryItem::tags(["course-1"]).into(), ReadOptions::default()).await?;
//! assert_eq!(read.events[0].position, 1);
//! assert_eq!(read.head, Some(1));
//! # Ok::<(), dcb::Error>(())
//! # }).unwrap();
//! ```

mod error;
pub mod huge_pages;
pub mod limits;
mod memory;
mod model;
pub mod postings;
pub mod recorder;
mod store;
pub mod subscription;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use error::{BoxError, Error, Result};
pub use memory::MemoryStore;
pub use model::{
    AppendCondition, AppendRequest, Event, Query, QueryItem, ReadOptions, ReadResponse, SequencedEvent,
    TrackingInfo, already_appended, retry_offset, retry_span,
};
pub use store::{EventStore, EventStream};

/// Re-exported so that stores and applications name the same `Bytes` as [`Event::data`].
pub use bytes::Bytes;
/// Re-exported so that stores and applications name the same `Uuid` as [`Event::uuid`].
pub use uuid::Uuid;
