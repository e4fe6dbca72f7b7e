//! # eventsourcing: the application layer over any DCB store
//!
//! Domain code written against this crate runs unchanged on every store of the workspace, since
//! everything here is generic over [`dcb::EventStore`] or [`dcb::recorder::AggregateRecorder`].
//!
//! Four styles, one mapping of events, one error type:
//!
//! - **Aggregates** ([`Aggregate`], [`Root`], [`Repository`]): the traditional style, with
//!   optimistic concurrency per aggregate, atomic saves of several aggregates and snapshots. They
//!   run on a native recorder or, through [`DcbRecorder`], on any DCB store.
//! - **Plain DCB** ([`Dcb::read`], [`Dcb::append`], [`Dcb::decide`]): read with a query, fold into
//!   a decision model, append under the matching condition.
//! - **Objects and groups** ([`Object`], [`Tagged`], [`Group`], [`Objects`]): enduring objects
//!   identified by one tag, deciding alone or together.
//! - **Slices** ([`Slice`], [`Dcb::execute`]): one decision per use case with its own tight
//!   boundary, so that unrelated changes do not conflict.
//!
//! Slices are tested without a store by [`harness::given`].
//!
//! Domain events are serde enums or structs ([`DomainEvent`], [`codec`]). The crate's [`Error`]
//! covers the store, the mapping and missing objects; the application's own refusals stay in its
//! own error type, which converts from [`Error`].
//!
//! With the `testkit` feature, `application_tests!` instantiates this crate's store-generic
//! tests on any store.

mod aggregate;
mod cache;
pub mod codec;
mod decision;
mod error;
pub mod harness;
mod objects;
mod recorder;
#[cfg(feature = "testkit")]
pub mod testkit;

pub use aggregate::{Aggregate, Repository, Root, Unsaved};
pub use codec::{DomainEvent, IntoEvents};
pub use decision::{Dcb, Decision, Slice};
pub use error::{Error, Result};
pub use objects::{Group, Members, Object, Objects, Save, Tagged};
pub use recorder::DcbRecorder;
