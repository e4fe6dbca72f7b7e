//! Given/when/then tests of [`Slice`]s, without a store: given these recorded events, when this
//! use case runs, then it records those events (or refuses).
//!
//! The given events pass through the event mapping and the slice's query, as they would through a
//! store, so a test also shows that the boundary selects what the decision needs.
//!
//! ```
//! use dcb::{Query, QueryItem};
//! use eventsourcing::{DomainEvent, Error, Slice, harness::given};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Debug, PartialEq, Serialize, Deserialize)]
//! enum Ev {
//!     #[serde(rename = "Opened")]
//!     Opened { door: String },
//!     #[serde(rename = "Closed")]
//!     Closed { door: String },
//! }
//! impl DomainEvent for Ev {
//!     fn tags(&self) -> Vec<String> {
//!         match self { Ev::Opened { door } | Ev::Closed { door } => vec![door.clone()] }
//!     }
//! }
//!
//! struct Close<'a>(&'a str);
//! impl Slice for Close<'_> {
//!     type Event = Ev;
//!     type State = bool;
//!     type Error = Error;
//!     fn query(&self) -> Query { QueryItem::tags([self.0]).into() }
//!     fn apply(&self, open: &mut bool, event: &Ev) { *open = matches!(event, Ev::Opened { .. }) }
//!     fn decide(&self, open: &bool) -> Result<Vec<Ev>, Error> {
//!         Ok(if *open { vec![Ev::Closed { door: self.0.into() }] } else { vec![] })
//!     }
//! }
//!
//! given([Ev::Opened { door: "front".into() }, Ev::Opened { door: "back".into() }])
//!     .when(&Close("front"))
//!     .then([Ev::Closed { door: "front".into() }]);
//! given([Ev::Opened { door: "back".into() }]).when(&Close("front")).then([]);
//! ```

use std::fmt::Debug;

use crate::codec::{self, DomainEvent};
use crate::decision::Slice;

/// The recorded history a use case runs against.
pub struct Given {
    history: Vec<dcb::Event>,
}

/// What the use case decided.
pub struct Then<E, Err> {
    outcome: Result<Vec<E>, Err>,
}

/// Starts a test from `events`, recorded in this order.
#[track_caller]
pub fn given<E: DomainEvent>(events: impl IntoIterator<Item = E>) -> Given {
    let history = events
        .into_iter()
        .map(|event| codec::to_event(&event).unwrap_or_else(|e| panic!("given event: {e}")))
        .collect();
    Given { history }
}

impl Given {
    /// Runs `slice` on the given events its query selects.
    #[track_caller]
    pub fn when<Sl: Slice>(&self, slice: &Sl) -> Then<Sl::Event, Sl::Error> {
        let query = slice.query();
        let mut state = Sl::State::default();
        for stored in self.history.iter().filter(|e| query.matches(e)) {
            let event: Sl::Event = codec::from_event(stored).unwrap_or_else(|e| panic!("given event: {e}"));
            slice.apply(&mut state, &event);
        }
        Then { outcome: slice.decide(&state) }
    }
}

impl<E: PartialEq + Debug, Err: Debug> Then<E, Err> {
    /// Asserts that the use case recorded exactly `expected`, in order.
    #[track_caller]
    pub fn then(self, expected: impl IntoIterator<Item = E>) {
        let expected: Vec<E> = expected.into_iter().collect();
        match self.outcome {
            Ok(events) => assert_eq!(events, expected, "the use case recorded other events"),
            Err(error) => panic!("the use case refused with {error:?}, expected {expected:?}"),
        }
    }

    /// Asserts that the use case refused, and returns the refusal to be checked.
    #[track_caller]
    pub fn then_refused(self) -> Err {
        match self.outcome {
            Ok(events) => panic!("the use case recorded {events:?}, expected a refusal"),
            Err(error) => error,
        }
    }
}
