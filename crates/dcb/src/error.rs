//! The one error type of the store contract.

use std::error::Error as StdError;

/// A boxed error from a lower layer (a driver, the operating system), kept as a source.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// What can go wrong when talking to an event store.
///
/// The variants answer the questions a caller has to decide on: was it a conflict to resolve by
/// reading again ([`Error::is_integrity`]), a mistake in the request that must not be retried, a
/// failure worth retrying ([`Error::is_retryable`]), or damage that needs an operator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The append condition failed, or tracking info did not advance: nothing was written.
    #[error("integrity error: {0}")]
    Integrity(String),

    /// The request was malformed or exceeded a limit: nothing was written.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The store could not be reached or did not answer. An append that fails this way may or
    /// may not have been recorded: give its events uuids, and it a condition that some of them
    /// match, to retry it safely (see [`EventStore::append_request`](crate::EventStore::append_request)).
    #[error("store unavailable: {message}")]
    Unavailable {
        /// What was being attempted, and where.
        message: String,
        /// The underlying failure.
        #[source]
        source: Option<BoxError>,
    },

    /// Local I/O failed (a full disk, a failed sync). A store that cannot be sure of its state
    /// after such a failure refuses further work until it is reopened.
    #[error("i/o error: {message}")]
    Io {
        /// What was being attempted, and on which file.
        message: String,
        /// The underlying failure.
        #[source]
        source: Option<BoxError>,
    },

    /// Stored data failed a check: the store will not serve it.
    #[error("corruption: {0}")]
    Corruption(String),

    /// The caller was not allowed to make the request (a remote store with an API key).
    #[error("unauthenticated: {0}")]
    Unauthenticated(String),

    /// A bug or an unexpected state in the store; the message says where.
    #[error("internal error: {0}")]
    Internal(String),
}

impl Error {
    /// An [`Error::InvalidArgument`] with `message`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidArgument(message.into())
    }

    /// An [`Error::Unavailable`] with `message` and the underlying `source`.
    pub fn unavailable(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Unavailable { message: message.into(), source: Some(source.into()) }
    }

    /// An [`Error::Io`] with `message` and the underlying `source`.
    pub fn io(message: impl Into<String>, source: impl Into<BoxError>) -> Self {
        Error::Io { message: message.into(), source: Some(source.into()) }
    }

    /// Whether this is an append condition (or tracking) conflict: read again and decide again.
    pub fn is_integrity(&self) -> bool {
        matches!(self, Error::Integrity(_))
    }

    /// Whether the same request may succeed if simply sent again.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Unavailable { .. })
    }
}

/// `Result` with the store contract's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
