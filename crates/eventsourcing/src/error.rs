//! The one error type of the application layer.

/// What can go wrong below the application's own rules: the store, the mapping of events, or a
/// missing object.
///
/// Domain errors (a course that is fully booked) are the application's own type, kept apart from
/// this one: the decision calls of this crate return the caller's error type `E`, which only has
/// to implement `From<Error>`, so that a caller matches its rules' refusals without unwrapping
/// layers, and store failures still travel through `?`.
///
/// ```
/// use eventsourcing::Error;
///
/// #[derive(Debug)]
/// enum EnrolmentError {
///     FullyBooked,
///     Infrastructure(Error),
/// }
///
/// impl From<Error> for EnrolmentError {
///     fn from(error: Error) -> Self {
///         EnrolmentError::Infrastructure(error)
///     }
/// }
/// # let _ = EnrolmentError::FullyBooked;
/// ```
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The store refused or failed the request. An append condition that failed (a concurrent
    /// change inside the decision's boundary) is [`dcb::Error::Integrity`]: see
    /// [`Error::is_integrity`].
    #[error("event store: {0}")]
    Store(#[from] dcb::Error),

    /// No event was ever recorded for this id.
    #[error("{id:?} not found")]
    NotFound {
        /// The aggregate id or object tag that was looked for.
        id: String,
    },

    /// A domain event could not be turned into a stored event, or a stored event back into a
    /// domain event (unknown type, data of the wrong shape, a bad snapshot).
    #[error("cannot map event {event_type:?}: {message}")]
    Mapping {
        /// The stored event type concerned, or the Rust type when encoding failed early.
        event_type: String,
        /// What went wrong.
        message: String,
    },
}

impl Error {
    /// Whether a concurrent change made the save fail: load again and decide again.
    pub fn is_integrity(&self) -> bool {
        matches!(self, Error::Store(e) if e.is_integrity())
    }

    /// Whether the store could not be reached: an append failing so may or may not have been
    /// recorded ([`dcb::Error::is_retryable`]).
    pub fn is_retryable(&self) -> bool {
        matches!(self, Error::Store(e) if e.is_retryable())
    }

    /// Whether this is [`Error::NotFound`].
    pub fn is_not_found(&self) -> bool {
        matches!(self, Error::NotFound { .. })
    }

    /// The id that was not found, for [`Error::NotFound`].
    pub fn not_found_id(&self) -> Option<&str> {
        match self {
            Error::NotFound { id } => Some(id),
            _ => None,
        }
    }

    pub(crate) fn not_found(id: &str) -> Self {
        Error::NotFound { id: id.to_owned() }
    }

    pub(crate) fn mapping(event_type: &str, message: impl std::fmt::Display) -> Self {
        Error::Mapping { event_type: event_type.to_owned(), message: message.to_string() }
    }
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
