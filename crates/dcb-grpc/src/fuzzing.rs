//! A hook for fuzzing request decoding and validation: everything the server does with request
//! bytes before a store sees them.

use bytes::Bytes;
use prost::Message;
use tonic::{Code, Status};

use crate::codec::DecodeFailure;
use crate::proto;
use crate::proto::error_response::ErrorType;
use crate::server::{checked_append, checked_query, checked_source};

/// Decodes `bytes[1..]` as the request type picked by `bytes[0]` (append, read, subscribe,
/// tracking), then runs the server's checks on it. Panics if an invariant breaks: every refusal
/// must be `INVALID_ARGUMENT` with an `ErrorResponse` of type INVALID_ARGUMENT or SERIALIZATION
/// in its details. Decoding and checking themselves must never panic. Returns whether the request
/// was accepted.
#[cfg_attr(not(feature = "fuzzing"), allow(unreachable_pub))]
#[cfg_attr(not(any(test, feature = "fuzzing")), allow(dead_code))]
pub fn check_request(bytes: &[u8]) -> bool {
    let Some((&selector, body)) = bytes.split_first() else { return false };
    let result = match selector % 4 {
        0 => decode::<proto::AppendRequest>(body).and_then(|r| checked_append(r).map(drop)),
        1 => decode::<proto::ReadRequest>(body).and_then(|r| checked_query(r.query).map(drop)),
        2 => decode::<proto::SubscribeRequest>(body).and_then(|r| checked_query(r.query).map(drop)),
        _ => decode::<proto::TrackingRequest>(body).and_then(|r| checked_source(&r.source)),
    };
    if let Err(status) = result {
        assert_eq!(status.code(), Code::InvalidArgument, "refused with the wrong code: {status:?}");
        let details = proto::ErrorResponse::decode(status.details()).expect("error details decode");
        let kind = ErrorType::try_from(details.error_type).expect("a known error type");
        assert!(matches!(kind, ErrorType::InvalidArgument | ErrorType::Serialization), "{kind:?}");
        return false;
    }
    true
}

/// Decodes as the server does, and checks that the server's decoding agrees with prost's: the
/// same message when both decode, and a refusal by the server only where prost decodes something
/// over a limit, which validation refuses too.
fn decode<M: DecodeFailure + PartialEq>(bytes: &[u8]) -> Result<M, Status> {
    let decoded = M::decode_message(Bytes::copy_from_slice(bytes));
    match (&decoded, M::decode(bytes)) {
        (Ok(ours), Ok(prost)) => assert!(*ours == prost, "the server's decoding differs from prost's"),
        (Ok(_), Err(error)) => panic!("the server decoded what prost refuses: {error}"),
        (Err(status), Ok(_)) => {
            let details = proto::ErrorResponse::decode(status.details()).expect("error details decode");
            assert_eq!(details.error_type, ErrorType::InvalidArgument as i32, "{status:?}");
        }
        (Err(_), Err(_)) => {}
    }
    decoded
}

#[cfg(test)]
mod tests {
    use dcb::testkit::Rng;

    use super::*;

    fn seeds() -> Vec<Vec<u8>> {
        let event = proto::Event {
            event_type: "Joined".into(),
            tags: vec!["course-1".into(), "student-2".into()],
            data: "{}".into(),
            uuid: "67e55044-10b1-426f-9247-bb680e5fe0c8".into(),
            metadata: vec![proto::MetadataEntry { key: "k".into(), value: "v".into() }],
        };
        let query = proto::Query {
            items: vec![proto::QueryItem { types: vec!["Joined".into()], tags: vec!["course-1".into()] }],
        };
        let append = proto::AppendRequest {
            events: vec![event.clone(), event],
            condition: Some(proto::AppendCondition {
                fail_if_events_match: Some(query.clone()),
                after: Some(3),
                items_after: Vec::new(),
            }),
            tracking_info: Some(proto::TrackingInfo { source: "s".into(), position: 9 }),
        };
        let read = proto::ReadRequest {
            query: Some(query.clone()),
            start: Some(2),
            limit: Some(5),
            ..Default::default()
        };
        let subscribe = proto::SubscribeRequest { query: Some(query), after: Some(1), batch_size: Some(10) };
        let tracking = proto::TrackingRequest { source: "upstream".into() };
        let with = |selector: u8, body: Vec<u8>| [vec![selector], body].concat();
        vec![
            with(0, append.encode_to_vec()),
            with(1, read.encode_to_vec()),
            with(2, subscribe.encode_to_vec()),
            with(3, tracking.encode_to_vec()),
        ]
    }

    /// A seeded stand-in for the fuzzer in ordinary test runs: valid requests, mutated by byte
    /// flips, truncations, insertions and splices.
    #[test]
    fn mutated_requests_are_accepted_or_refused_as_invalid_never_panic() {
        let seeds = seeds();
        for seed in &seeds {
            assert!(check_request(seed), "a valid request was refused");
        }
        let (mut accepted, mut refused) = (0, 0);
        let mut rng = Rng::new(0xF022);
        for _ in 0..20_000 {
            let mut bytes = seeds[rng.below(seeds.len() as u64) as usize].clone();
            for _ in 0..1 + rng.below(4) {
                let at = 1 + rng.below(bytes.len().max(2) as u64 - 1) as usize;
                match rng.below(4) {
                    0 if at < bytes.len() => bytes[at] ^= 1 << rng.below(8),
                    1 => bytes.truncate(at),
                    2 => bytes.insert(at.min(bytes.len()), rng.below(256) as u8),
                    _ if at < bytes.len() => bytes[at] = [0x00, 0x7f, 0x80, 0xff][rng.below(4) as usize],
                    _ => {}
                }
            }
            if check_request(&bytes) {
                accepted += 1;
            } else {
                refused += 1;
            }
        }
        // Both outcomes must be common, or the mutations explore too little.
        assert!(accepted > 1000 && refused > 1000, "accepted {accepted}, refused {refused}");
    }
}
