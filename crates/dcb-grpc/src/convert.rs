//! Between the wire messages and the `dcb` model, both ways, and between `dcb::Error` and gRPC
//! statuses. Everything here is plain data: testable without a network.

use std::collections::BTreeMap;

use bytes::Bytes;
use prost::Message;
use tonic::{Code, Status};

use crate::proto;
use crate::proto::error_response::ErrorType;

/// A status with `code` implied by `error_type`, whose details carry the encoded
/// [`proto::ErrorResponse`] that UmaDB clients decode.
pub(crate) fn status(error_type: ErrorType, message: impl Into<String>) -> Status {
    let code = match error_type {
        ErrorType::Integrity => Code::FailedPrecondition,
        ErrorType::Authentication => Code::Unauthenticated,
        ErrorType::InvalidArgument | ErrorType::Serialization => Code::InvalidArgument,
        ErrorType::Corruption => Code::DataLoss,
        ErrorType::Internal | ErrorType::Io => Code::Internal,
    };
    status_with_code(code, error_type, message.into())
}

fn status_with_code(code: Code, error_type: ErrorType, message: String) -> Status {
    let details = proto::ErrorResponse { message: message.clone(), error_type: error_type as i32 };
    Status::with_details(code, message, Bytes::from(details.encode_to_vec()))
}

/// The status a server answers with for a store error. Messages are the store's own, which never
/// contain event data (an integrity error names positions, not payloads).
pub(crate) fn error_to_status(error: &dcb::Error) -> Status {
    match error {
        dcb::Error::Integrity(message) => status(ErrorType::Integrity, message.as_str()),
        dcb::Error::InvalidArgument(message) => status(ErrorType::InvalidArgument, message.as_str()),
        dcb::Error::Corruption(message) => status(ErrorType::Corruption, message.as_str()),
        dcb::Error::Unauthenticated(message) => status(ErrorType::Authentication, message.as_str()),
        dcb::Error::Internal(message) => status(ErrorType::Internal, message.as_str()),
        dcb::Error::Io { message, .. } => status(ErrorType::Io, message.as_str()),
        // The protocol has no "unavailable" error type; IO is the nearest, and the UNAVAILABLE
        // code tells gRPC clients (ours included) that the call may be retried.
        dcb::Error::Unavailable { message, .. } => {
            status_with_code(Code::Unavailable, ErrorType::Io, message.clone())
        }
        other => status(ErrorType::Internal, other.to_string()),
    }
}

/// The `dcb::Error` a client reports for a status of an idempotent call (read, head, tracking,
/// subscribe): from the error response in its details when there is one (any UmaDB-compatible
/// server sends it), else from its code, with `INTERNAL` and `RESOURCE_EXHAUSTED` as unavailable:
/// without details they come from the transport (tonic's codes for an HTTP/2 stream reset, a
/// connection closed mid-message, an `ENHANCE_YOUR_CALM` reset), and the call may simply be made
/// again.
pub(crate) fn status_to_error(status: Status) -> dcb::Error {
    if matches!(status.code(), Code::Internal | Code::ResourceExhausted)
        && protocol_details(&status).is_none()
    {
        return unknown_outcome(&status, "");
    }
    mapped(status)
}

/// The `dcb::Error` a client reports for a status of an append. A status without the protocol's
/// error details did not come from a store's refusal, so unless its code says the call never ran,
/// the append may have been recorded before the connection failed (tonic reports an HTTP/2 reset
/// by a proxy as `INTERNAL`, or `RESOURCE_EXHAUSTED` for `ENHANCE_YOUR_CALM`) and is unavailable:
/// its outcome is unknown, and the caller retries it safely with uuids under a condition.
///
/// Codes that say it never ran, kept as mapped by code: `INVALID_ARGUMENT` and `OUT_OF_RANGE`
/// (refused as sent, a message too large among them), `FAILED_PRECONDITION` (its condition
/// failed), `UNAUTHENTICATED` and `PERMISSION_DENIED` (refused before it ran), `UNIMPLEMENTED`
/// (no such method there), `ALREADY_EXISTS` (refused as a duplicate). `DATA_LOSS` is kept as
/// corruption too: it is the server's report, not the transport's, and needs an operator either way.
pub(crate) fn append_status_to_error(status: Status) -> dcb::Error {
    let never_ran = matches!(
        status.code(),
        Code::InvalidArgument
            | Code::OutOfRange
            | Code::FailedPrecondition
            | Code::Unauthenticated
            | Code::PermissionDenied
            | Code::Unimplemented
            | Code::AlreadyExists
            | Code::DataLoss
    );
    if !never_ran && protocol_details(&status).is_none() {
        return unknown_outcome(&status, "; the append may or may not have been recorded");
    }
    mapped(status)
}

/// The protocol's error response in the status's details, if they hold one.
fn protocol_details(status: &Status) -> Option<proto::ErrorResponse> {
    if status.details().is_empty() {
        return None;
    }
    proto::ErrorResponse::decode(status.details()).ok()
}

fn unknown_outcome(status: &Status, consequence: &str) -> dcb::Error {
    dcb::Error::Unavailable {
        message: format!("gRPC {:?}: {}{consequence}", status.code(), status.message()),
        source: None,
    }
}

/// From the error type in the details when there is one, else from the code.
fn mapped(status: Status) -> dcb::Error {
    let message = status.message().to_owned();
    let error_type =
        protocol_details(&status).and_then(|details| ErrorType::try_from(details.error_type).ok());
    match (error_type, status.code()) {
        (_, Code::Unavailable | Code::Unknown | Code::DeadlineExceeded | Code::Cancelled) => {
            dcb::Error::Unavailable { message: format!("gRPC {:?}: {message}", status.code()), source: None }
        }
        (Some(ErrorType::Integrity), _) | (None, Code::FailedPrecondition) => dcb::Error::Integrity(message),
        (Some(ErrorType::InvalidArgument | ErrorType::Serialization), _)
        | (None, Code::InvalidArgument | Code::OutOfRange | Code::ResourceExhausted) => {
            dcb::Error::InvalidArgument(message)
        }
        (Some(ErrorType::Authentication), _) | (None, Code::Unauthenticated | Code::PermissionDenied) => {
            dcb::Error::Unauthenticated(message)
        }
        (Some(ErrorType::Corruption), _) | (None, Code::DataLoss) => dcb::Error::Corruption(message),
        (Some(ErrorType::Io), _) => dcb::Error::Io { message, source: None },
        (Some(ErrorType::Internal), _) | (None, _) => dcb::Error::Internal(message),
    }
}

/// A store error for a request the server could not interpret.
pub(crate) fn invalid(message: impl Into<String>) -> dcb::Error {
    dcb::Error::InvalidArgument(message.into())
}

/// `text` quoted for an error message, cut after 64 characters: the fields checked here are not
/// bounded yet (the limits come later), and a message never echoes more of a request than that.
fn excerpt(text: &str) -> String {
    match text.char_indices().nth(64) {
        Some((cut, _)) => format!("{:?}…", &text[..cut]),
        None => format!("{text:?}"),
    }
}

pub(crate) fn event_from_wire(event: proto::Event) -> dcb::Result<dcb::Event> {
    let uuid = if event.uuid.is_empty() {
        None
    } else {
        let parsed = dcb::Uuid::try_parse(&event.uuid).map_err(|_| {
            invalid(format!(
                "event {} has an invalid uuid {}",
                excerpt(&event.event_type),
                excerpt(&event.uuid)
            ))
        })?;
        Some(parsed)
    };
    let mut metadata = BTreeMap::new();
    for entry in event.metadata {
        if metadata.insert(entry.key, entry.value).is_some() {
            return Err(invalid(format!("event {} repeats a metadata key", excerpt(&event.event_type))));
        }
    }
    Ok(dcb::Event { event_type: event.event_type, data: event.data, tags: event.tags, uuid, metadata })
}

pub(crate) fn event_to_wire(event: dcb::Event) -> proto::Event {
    proto::Event {
        event_type: event.event_type,
        tags: event.tags,
        data: event.data,
        uuid: event.uuid.map(|uuid| uuid.hyphenated().to_string()).unwrap_or_default(),
        metadata: event
            .metadata
            .into_iter()
            .map(|(key, value)| proto::MetadataEntry { key, value })
            .collect(),
    }
}

/// The generated message of an event. The server writes events with `crate::batch` instead; this
/// is the reference its tests compare with.
#[cfg(test)]
pub(crate) fn sequenced_to_wire(event: dcb::SequencedEvent) -> proto::SequencedEvent {
    proto::SequencedEvent {
        position: event.position,
        event: Some(event_to_wire(event.event)),
        tracking_info: None,
    }
}

/// A server's event, for a client. An event the server could not have stored is its fault.
pub(crate) fn sequenced_from_wire(event: proto::SequencedEvent) -> dcb::Result<dcb::SequencedEvent> {
    let position = event.position;
    let wire = event.event.ok_or_else(|| {
        dcb::Error::Internal(format!("the server sent position {position} without an event"))
    })?;
    let event = event_from_wire(wire)
        .map_err(|error| dcb::Error::Internal(format!("the server sent an invalid event: {error}")))?;
    Ok(dcb::SequencedEvent { position, event })
}

pub(crate) fn query_from_wire(query: Option<proto::Query>) -> dcb::Query {
    let items = query.map(|q| q.items).unwrap_or_default();
    dcb::Query {
        items: items.into_iter().map(|item| dcb::QueryItem { types: item.types, tags: item.tags }).collect(),
    }
}

pub(crate) fn query_to_wire(query: &dcb::Query) -> proto::Query {
    proto::Query {
        items: query
            .items
            .iter()
            .map(|item| proto::QueryItem { types: item.types.clone(), tags: item.tags.clone() })
            .collect(),
    }
}

pub(crate) fn append_from_wire(request: proto::AppendRequest) -> dcb::Result<dcb::AppendRequest> {
    let events = request.events.into_iter().map(event_from_wire).collect::<dcb::Result<Vec<_>>>()?;
    let condition = request.condition.map(|condition| dcb::AppendCondition {
        fail_if_events_match: query_from_wire(condition.fail_if_events_match),
        after: condition.after,
        items_after: condition.items_after.into_iter().map(|p| (p != 0).then_some(p)).collect(),
    });
    let tracking =
        request.tracking_info.map(|t| dcb::TrackingInfo { source: t.source, position: t.position });
    Ok(dcb::AppendRequest { events, condition, tracking })
}

pub(crate) fn append_to_wire(request: dcb::AppendRequest) -> proto::AppendRequest {
    proto::AppendRequest {
        events: request.events.into_iter().map(event_to_wire).collect(),
        condition: request.condition.map(|condition| proto::AppendCondition {
            fail_if_events_match: Some(query_to_wire(&condition.fail_if_events_match)),
            after: condition.after,
            items_after: condition.items_after.iter().map(|p| p.unwrap_or(0)).collect(),
        }),
        tracking_info: request
            .tracking
            .map(|t| proto::TrackingInfo { source: t.source, position: t.position }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A refusal quotes at most a short excerpt of the fields it could not accept.
    #[test]
    fn refusals_of_unchecked_fields_quote_an_excerpt_only() {
        let event = proto::Event {
            event_type: "T".repeat(1 << 20),
            uuid: "not a uuid".repeat(1 << 16),
            ..proto::Event::default()
        };
        let error = event_from_wire(event).unwrap_err();
        let message = error.to_string();
        assert!(
            matches!(error, dcb::Error::InvalidArgument(_)) && message.len() < 400,
            "{} bytes",
            message.len()
        );
        assert!(message.contains(&format!("{:?}…", "T".repeat(64))), "{message}");
    }

    #[test]
    fn events_survive_the_wire_both_ways() {
        let event = dcb::Event::new("Joined", vec![0u8, 255, 7])
            .with_tags(["b", "a"])
            .with_uuid(dcb::Uuid::from_u128(42))
            .with_metadata("k", "v");
        assert_eq!(event_from_wire(event_to_wire(event.clone())).unwrap(), event);
    }

    #[test]
    fn an_invalid_uuid_is_an_invalid_argument() {
        let wire = proto::Event { event_type: "A".into(), uuid: "not-a-uuid".into(), ..Default::default() };
        assert!(matches!(event_from_wire(wire), Err(dcb::Error::InvalidArgument(_))));
    }

    #[test]
    fn repeated_metadata_keys_are_refused() {
        let entry = proto::MetadataEntry { key: "k".into(), value: "v".into() };
        let wire = proto::Event {
            event_type: "A".into(),
            metadata: vec![entry.clone(), entry],
            ..Default::default()
        };
        assert!(matches!(event_from_wire(wire), Err(dcb::Error::InvalidArgument(_))));
    }

    #[test]
    fn every_error_kind_survives_a_status() {
        let errors = [
            (dcb::Error::Integrity("i".into()), Code::FailedPrecondition),
            (dcb::Error::InvalidArgument("a".into()), Code::InvalidArgument),
            (dcb::Error::Corruption("c".into()), Code::DataLoss),
            (dcb::Error::Unauthenticated("u".into()), Code::Unauthenticated),
            (dcb::Error::Internal("x".into()), Code::Internal),
            (dcb::Error::Io { message: "io".into(), source: None }, Code::Internal),
            (dcb::Error::Unavailable { message: "down".into(), source: None }, Code::Unavailable),
        ];
        for (error, code) in errors {
            let status = error_to_status(&error);
            assert_eq!(status.code(), code, "{error}");
            let details = proto::ErrorResponse::decode(status.details()).unwrap();
            assert!(!details.message.is_empty());
            for back in [status_to_error(status.clone()), append_status_to_error(status.clone())] {
                assert_eq!(
                    std::mem::discriminant(&back),
                    std::mem::discriminant(&error),
                    "{error} -> {back}"
                );
            }
        }
    }

    fn kind(error: &dcb::Error) -> &'static str {
        match error {
            dcb::Error::Integrity(_) => "integrity",
            dcb::Error::InvalidArgument(_) => "invalid",
            dcb::Error::Unauthenticated(_) => "auth",
            dcb::Error::Unavailable { .. } => "unavailable",
            dcb::Error::Corruption(_) => "corruption",
            dcb::Error::Internal(_) => "internal",
            dcb::Error::Io { .. } => "io",
            other => panic!("unexpected {other}"),
        }
    }

    #[test]
    fn statuses_without_details_map_by_code() {
        let cases = [
            (Code::FailedPrecondition, "integrity"),
            (Code::InvalidArgument, "invalid"),
            (Code::Unauthenticated, "auth"),
            (Code::Unavailable, "unavailable"),
            (Code::DataLoss, "corruption"),
            // tonic's codes for an HTTP/2 reset or a stream cut mid-message, and for an
            // `ENHANCE_YOUR_CALM` reset: an idempotent call is simply made again.
            (Code::Internal, "unavailable"),
            (Code::ResourceExhausted, "unavailable"),
            (Code::Unimplemented, "internal"),
        ];
        for (code, expected) in cases {
            assert_eq!(kind(&status_to_error(Status::new(code, "m"))), expected, "{code:?}");
        }
    }

    /// An append whose status does not come from the store may have been recorded before the
    /// connection failed: only codes that say it never ran keep their meaning.
    #[test]
    fn append_statuses_without_details_are_of_unknown_outcome_unless_they_say_it_never_ran() {
        let cases = [
            // What tonic reports for HTTP/2 resets (INTERNAL_ERROR, NO_ERROR, PROTOCOL_ERROR, an
            // unexpected EOF) and for ENHANCE_YOUR_CALM.
            (Code::Internal, "unavailable"),
            (Code::ResourceExhausted, "unavailable"),
            (Code::Aborted, "unavailable"),
            (Code::NotFound, "unavailable"),
            (Code::Unknown, "unavailable"),
            (Code::Cancelled, "unavailable"),
            (Code::DeadlineExceeded, "unavailable"),
            (Code::Unavailable, "unavailable"),
            (Code::InvalidArgument, "invalid"),
            (Code::OutOfRange, "invalid"),
            (Code::FailedPrecondition, "integrity"),
            (Code::Unauthenticated, "auth"),
            (Code::PermissionDenied, "auth"),
            (Code::Unimplemented, "internal"),
            (Code::AlreadyExists, "internal"),
            (Code::DataLoss, "corruption"),
        ];
        for (code, expected) in cases {
            let error = append_status_to_error(Status::new(code, "h2 protocol error: reset"));
            assert_eq!(kind(&error), expected, "{code:?}: {error}");
        }
    }

    /// A store's own refusal, with the protocol's details, means what it says, for appends too.
    #[test]
    fn statuses_with_details_keep_their_meaning() {
        let internal = error_to_status(&dcb::Error::Internal("bug".into()));
        assert_eq!(kind(&append_status_to_error(internal.clone())), "internal");
        assert_eq!(kind(&status_to_error(internal)), "internal");
        let io = error_to_status(&dcb::Error::Io { message: "disk full".into(), source: None });
        assert_eq!(kind(&append_status_to_error(io)), "io");
        let invalid = status_with_code(Code::ResourceExhausted, ErrorType::InvalidArgument, "big".into());
        assert_eq!(kind(&append_status_to_error(invalid)), "invalid");
    }
}
