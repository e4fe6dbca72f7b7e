//! Event mapping: domain events (serde enums or structs) to stored events and back.
//!
//! The stored event type is the serde name of the enum variant (or of the struct), and the
//! stored data is the JSON of the variant's content alone. Names are pinned with
//! `#[serde(rename = "...")]` so that renaming a Rust variant never renames stored history, and
//! an older stored form is converted on read by [`DomainEvent::upcast`]. A unit variant marked
//! `#[serde(other)]` catches the event types an enum does not know (a unit variant's stored data
//! is read as JSON and ignored), so that readers can skip events newer code added.
//!
//! Events go straight between the value and its JSON bytes, without an intermediate
//! `serde_json::Value`, because mapping sits on every command's hot path.

use std::fmt;

use serde::de::{self, DeserializeOwned};
use serde::ser::{self, Serialize};

use crate::error::{Error, Result};

mod decode;
mod encode;

use decode::{Probe, Stored};
use encode::Split;

/// A domain event: a serde enum (one variant per event type) or struct, externally tagged (serde's
/// default representation). Internally or adjacently tagged and untagged enums are refused by
/// [`encode`]: they would store every variant under one event type (or under none of the names
/// they decode), where queries naming the variants' types would never find them.
///
/// ```
/// use eventsourcing::{DomainEvent, codec};
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Debug, PartialEq, Serialize, Deserialize)]
/// enum CourseEvent {
///     #[serde(rename = "CourseRegistered.v2")]
///     Registered { id: String, name: String, places: u32 },
///     #[serde(rename = "CourseRenamed")]
///     Renamed { id: String, name: String },
/// }
///
/// impl DomainEvent for CourseEvent {
///     fn tags(&self) -> Vec<String> {
///         match self {
///             CourseEvent::Registered { id, .. } | CourseEvent::Renamed { id, .. } => vec![id.clone()],
///         }
///     }
///
///     // Version 1 had no places: such events are read as courses of 10 places.
///     fn upcast(event_type: &str, data: &[u8]) -> eventsourcing::Result<Option<Self>> {
///         #[derive(Deserialize)]
///         struct V1 { id: String, name: String }
///         Ok(match event_type {
///             "CourseRegistered" => {
///                 let V1 { id, name } = codec::from_json(event_type, data)?;
///                 Some(CourseEvent::Registered { id, name, places: 10 })
///             }
///             _ => None,
///         })
///     }
/// }
///
/// let stored = codec::to_event(&CourseEvent::Renamed { id: "course-1".into(), name: "Maths".into() })?;
/// assert_eq!(stored.event_type, "CourseRenamed");
/// assert_eq!(stored.tags, ["course-1"]);
/// assert_eq!(&stored.data[..], br#"{"id":"course-1","name":"Maths"}"#);
///
/// let old = codec::decode::<CourseEvent>("CourseRegistered", br#"{"id":"course-1","name":"Maths"}"#)?;
/// assert_eq!(old, CourseEvent::Registered { id: "course-1".into(), name: "Maths".into(), places: 10 });
/// # Ok::<(), eventsourcing::Error>(())
/// ```
pub trait DomainEvent: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The tags of the stored event: what the fact is about (ids), so that DCB queries find it.
    /// Objects and groups add their members' ids themselves. None by default.
    fn tags(&self) -> Vec<String> {
        Vec::new()
    }

    /// Converts a stored event of an older version, before normal decoding; `Ok(None)` (the
    /// default) means "not an old form, decode normally".
    ///
    /// Give each schema version its own stored type name (e.g. `"CourseRegistered.v2"` after
    /// `"CourseRegistered"`), so that the old form is recognised by its name alone.
    fn upcast(event_type: &str, data: &[u8]) -> Result<Option<Self>> {
        let _ = (event_type, data);
        Ok(None)
    }
}

/// What a command returns for the events it records: one event, `Option` of one, or a `Vec`.
///
/// Lets [`Root::execute`](crate::Root::execute) and
/// [`Tagged::execute`](crate::Tagged::execute) take commands of the natural shape without
/// wrapping single events in collections.
pub trait IntoEvents<E> {
    /// The events, in order.
    fn into_events(self) -> impl Iterator<Item = E>;
}

impl<E: DomainEvent> IntoEvents<E> for E {
    fn into_events(self) -> impl Iterator<Item = E> {
        std::iter::once(self)
    }
}

impl<E: DomainEvent> IntoEvents<E> for Option<E> {
    fn into_events(self) -> impl Iterator<Item = E> {
        self.into_iter()
    }
}

impl<E: DomainEvent> IntoEvents<E> for Vec<E> {
    fn into_events(self) -> impl Iterator<Item = E> {
        self.into_iter()
    }
}

/// The stored type name of `event` and its data as JSON bytes.
///
/// Refused when the name is not one that `E` decodes (one of [`event_types`]): serde reports the
/// enum's own name, or a variant's content's, for enums that are not externally tagged.
pub fn encode<E: Serialize + DeserializeOwned>(event: &E) -> Result<(&'static str, Vec<u8>)> {
    let mut data = Vec::with_capacity(64);
    let event_type = event
        .serialize(Split { out: &mut data })
        .map_err(|e| Error::mapping(std::any::type_name::<E>(), e))?;
    let mut known = false;
    probe::<E>(&mut |names| known |= names.contains(&event_type));
    if !known {
        return Err(Error::mapping(
            std::any::type_name::<E>(),
            format!(
                "serde names it {event_type:?}, which is not among the stored types it decodes ({:?}); {}",
                event_types::<E>(),
                unsupported("an enum that is not externally tagged")
            ),
        ));
    }
    Ok((event_type, data))
}

/// The domain event stored as `event_type` with `data`: upcast if it is an older form, decoded
/// otherwise.
pub fn decode<E: DomainEvent>(event_type: &str, data: &[u8]) -> Result<E> {
    if let Some(event) = E::upcast(event_type, data)? {
        return Ok(event);
    }
    E::deserialize(Stored { event_type, data }).map_err(|e| Error::mapping(event_type, e))
}

/// The DCB event that records `event`, tagged with [`DomainEvent::tags`].
pub fn to_event<E: DomainEvent>(event: &E) -> Result<dcb::Event> {
    let (event_type, data) = encode(event)?;
    let mut stored = dcb::Event::new(event_type, data);
    stored.tags = event.tags();
    Ok(stored)
}

/// Like [`to_event`], with `extra` tags added after the event's own (each at most once).
pub(crate) fn to_event_with<'a>(
    event: &impl DomainEvent,
    extra: impl IntoIterator<Item = &'a str>,
) -> Result<dcb::Event> {
    let mut stored = to_event(event)?;
    for tag in extra {
        if !stored.has_tag(tag) {
            stored.tags.push(tag.to_owned());
        }
    }
    Ok(stored)
}

/// The domain event that `stored` records.
pub fn from_event<E: DomainEvent>(stored: &dcb::Event) -> Result<E> {
    decode(&stored.event_type, &stored.data)
}

/// The stored type names `E` can decode, in declaration order: the serde names of its variants
/// (or of the struct), with their `#[serde(alias)]` names. Pin them in a test, so that a rename
/// that would orphan stored history fails it.
///
/// ```
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// enum Ev {
///     #[serde(rename = "CourseRegistered")]
///     Registered,
///     #[serde(rename = "CourseRenamed")]
///     Renamed,
/// }
/// assert_eq!(eventsourcing::codec::event_types::<Ev>(), ["CourseRegistered", "CourseRenamed"]);
/// ```
pub fn event_types<E: DeserializeOwned>() -> Vec<&'static str> {
    let mut names = Vec::new();
    probe::<E>(&mut |found| names.extend_from_slice(found));
    names
}

/// Shows `seen` the names `E`'s `Deserialize` asks for. The probe refuses to deserialize
/// anything, so this costs one call and no allocation: cheap enough for every [`encode`].
fn probe<E: DeserializeOwned>(seen: &mut dyn FnMut(&[&'static str])) {
    let _ = E::deserialize(Probe { seen });
}

/// JSON bytes of `value`: for snapshots and hand-written upcasts.
pub fn to_json<T: Serialize>(value: &T) -> Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(|e| Error::mapping(std::any::type_name::<T>(), e))
}

/// `T` from JSON bytes, naming `event_type` in the error: for snapshots and hand-written
/// upcasts.
pub fn from_json<T: DeserializeOwned>(event_type: &str, data: &[u8]) -> Result<T> {
    serde_json::from_slice(data).map_err(|e| Error::mapping(event_type, e))
}

/// The error of the serde plumbing below; turned into [`Error::Mapping`] at the boundary.
#[derive(Debug)]
struct Message(String);

impl fmt::Display for Message {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Message {}

impl ser::Error for Message {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Message(msg.to_string())
    }
}

impl de::Error for Message {
    fn custom<T: fmt::Display>(msg: T) -> Self {
        Message(msg.to_string())
    }
}

impl From<serde_json::Error> for Message {
    fn from(e: serde_json::Error) -> Self {
        Message(e.to_string())
    }
}

fn unsupported(what: &str) -> Message {
    Message(format!(
        "a domain event must be an enum or a struct in serde's default representation, not {what}"
    ))
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    enum Shapes {
        #[serde(rename = "Struct")]
        Struct { a: u32, b: String },
        #[serde(rename = "Newtype")]
        Newtype(String),
        #[serde(rename = "Tuple")]
        Tuple(u8, bool),
        #[serde(rename = "Unit")]
        Unit,
        #[serde(rename = "Renamed.v2", alias = "Renamed")]
        Renamed { x: i64 },
    }

    impl DomainEvent for Shapes {}

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    #[serde(rename = "Ping")]
    struct Ping {
        n: u32,
    }

    impl DomainEvent for Ping {}

    #[test]
    fn every_shape_round_trips_with_its_explicit_name_and_content_only() {
        let cases = [
            (Shapes::Struct { a: 1, b: "x\"y".into() }, "Struct", r#"{"a":1,"b":"x\"y"}"#),
            (Shapes::Newtype("n".into()), "Newtype", r#""n""#),
            (Shapes::Tuple(7, true), "Tuple", "[7,true]"),
            (Shapes::Unit, "Unit", "null"),
            (Shapes::Renamed { x: -3 }, "Renamed.v2", r#"{"x":-3}"#),
        ];
        for (event, name, json) in cases {
            let (event_type, data) = encode(&event).unwrap();
            assert_eq!(event_type, name);
            assert_eq!(std::str::from_utf8(&data).unwrap(), json);
            assert_eq!(decode::<Shapes>(event_type, &data).unwrap(), event);
        }
    }

    #[test]
    fn structs_are_events_named_by_their_serde_name() {
        let (event_type, data) = encode(&Ping { n: 4 }).unwrap();
        assert_eq!((event_type, &data[..]), ("Ping", &br#"{"n":4}"#[..]));
        assert_eq!(decode::<Ping>("Ping", &data).unwrap(), Ping { n: 4 });
        let wrong = decode::<Ping>("Pong", &data).unwrap_err();
        assert!(matches!(wrong, Error::Mapping { ref event_type, .. } if event_type == "Pong"));
    }

    #[test]
    fn event_types_lists_the_stored_names() {
        assert_eq!(event_types::<Shapes>(), ["Struct", "Newtype", "Tuple", "Unit", "Renamed", "Renamed.v2"]);
        assert_eq!(event_types::<Ping>(), ["Ping"]);
    }

    #[test]
    fn an_alias_reads_the_old_name() {
        let old = decode::<Shapes>("Renamed", br#"{"x":5}"#).unwrap();
        assert_eq!(old, Shapes::Renamed { x: 5 });
    }

    #[test]
    fn unknown_types_and_bad_data_are_mapping_errors() {
        for (event_type, data) in
            [("Nope", &b"{}"[..]), ("Struct", b"{\"a\":\"no\"}"), ("Struct", b"{\"a\":1,\"b\":\"\"} x")]
        {
            match decode::<Shapes>(event_type, data) {
                Err(Error::Mapping { event_type: named, .. }) => assert_eq!(named, event_type),
                other => panic!("{event_type}: expected a mapping error, got {other:?}"),
            }
        }
    }

    /// A `#[serde(other)]` variant catches unknown event types whatever their data; data that is
    /// not JSON is still a mapping error.
    #[test]
    fn an_other_variant_catches_unknown_types() {
        #[derive(Debug, PartialEq, Serialize, Deserialize)]
        enum Known {
            Seen {
                a: u32,
            },
            #[serde(other)]
            Unknown,
        }
        impl DomainEvent for Known {}
        assert_eq!(decode::<Known>("Seen", br#"{"a":1}"#).unwrap(), Known::Seen { a: 1 });
        assert_eq!(decode::<Known>("Added.later", br#"{"a":1,"b":[2]}"#).unwrap(), Known::Unknown);
        assert_eq!(decode::<Known>("Added.later", b"").unwrap(), Known::Unknown);
        assert!(matches!(decode::<Known>("Added.later", b"{not json"), Err(Error::Mapping { .. })));
    }

    /// Serde gives these one name for every variant (the enum's, or a content's), so stored they
    /// would hide from queries naming the variants' types.
    #[test]
    fn enums_that_are_not_externally_tagged_are_refused() {
        #[derive(Debug, Serialize, Deserialize)]
        #[serde(tag = "type")]
        enum Internal {
            #[serde(rename = "Opened")]
            Opened { door: String },
            #[serde(rename = "Closed")]
            Closed { door: String },
        }
        impl DomainEvent for Internal {}
        #[derive(Debug, Serialize, Deserialize)]
        #[serde(tag = "t", content = "c")]
        enum Adjacent {
            #[serde(rename = "Opened")]
            Opened { door: String },
            #[serde(rename = "Closed")]
            Closed,
        }
        impl DomainEvent for Adjacent {}
        #[derive(Debug, Serialize, Deserialize)]
        #[serde(untagged)]
        enum Untagged {
            Opened { door: String },
            Pinged(Ping),
        }
        impl DomainEvent for Untagged {}

        fn refused<E: DomainEvent + fmt::Debug>(event: E) {
            match to_event(&event) {
                Err(Error::Mapping { message, .. }) => assert!(message.contains("tagged"), "{message}"),
                other => panic!("{event:?}: expected a mapping error, got {other:?}"),
            }
        }
        refused(Internal::Opened { door: "front".into() });
        refused(Internal::Closed { door: "front".into() });
        refused(Adjacent::Opened { door: "front".into() });
        refused(Adjacent::Closed);
        refused(Untagged::Opened { door: "front".into() });
        refused(Untagged::Pinged(Ping { n: 1 }));
    }

    #[test]
    fn values_that_are_not_events_are_refused() {
        assert!(matches!(encode(&5u32), Err(Error::Mapping { .. })));
        assert!(matches!(encode(&vec![1]), Err(Error::Mapping { .. })));
    }

    #[test]
    fn extra_tags_are_added_once_after_the_events_own() {
        #[derive(Serialize, Deserialize)]
        #[serde(rename = "T")]
        struct T;
        impl DomainEvent for T {
            fn tags(&self) -> Vec<String> {
                vec!["a".into()]
            }
        }
        let stored = to_event_with(&T, ["a", "b"]).unwrap();
        assert_eq!(stored.tags, ["a", "b"]);
        assert_eq!(&stored.data[..], b"null");
    }
}
