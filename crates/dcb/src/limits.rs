//! The limits every store enforces, and the validation of requests against them.
//!
//! Checking happens before anything is written, with the same rules in every store, so that a
//! request refused by one store is refused by all of them with the same message.

use crate::error::{Error, Result};
use crate::model::{AppendRequest, Event, Query};

/// Largest `data` of one event, in bytes (1 MiB).
pub const MAX_EVENT_DATA_BYTES: usize = 1 << 20;
/// Most events in one append.
pub const MAX_EVENTS_PER_APPEND: usize = 10_000;
/// Most bytes in one append, over its events' types, data, tags and metadata
/// ([`Event::byte_size`]) (64 MiB). Without it an append within the other limits could reach
/// 10 GiB, more than one PostgreSQL message can carry: the server drops the connection, which
/// would look like a failure worth retrying, for ever.
pub const MAX_APPEND_BYTES: usize = 64 << 20;
/// Most tags on one event.
pub const MAX_TAGS_PER_EVENT: usize = 64;
/// Longest event type, tag, tracking source or metadata key, in bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Most metadata entries on one event.
pub const MAX_METADATA_ENTRIES: usize = 64;
/// Longest metadata value, in bytes.
pub const MAX_METADATA_VALUE_BYTES: usize = 4096;
/// Most items in one query.
pub const MAX_QUERY_ITEMS: usize = 1024;
/// Most types plus tags in one query item.
pub const MAX_ITEM_TERMS: usize = 64;

/// Checks a name (type, tag, source, metadata key): not empty, not too long, no NUL byte (which
/// SQL text columns cannot hold, so it is refused everywhere).
fn check_name(what: &str, name: &str) -> Result<()> {
    if name.is_empty() {
        return Err(Error::invalid(format!("{what} is empty")));
    }
    if name.len() > MAX_NAME_BYTES {
        return Err(Error::invalid(format!(
            "{what} is {} bytes long, more than the limit of {MAX_NAME_BYTES}",
            name.len()
        )));
    }
    if name.contains('\0') {
        return Err(Error::invalid(format!("{what} {name:?} contains a NUL character")));
    }
    Ok(())
}

/// Checks one event against the limits.
pub fn validate_event(event: &Event) -> Result<()> {
    check_name("event type", &event.event_type)?;
    let ty = &event.event_type;
    if event.data.len() > MAX_EVENT_DATA_BYTES {
        return Err(Error::invalid(format!(
            "data of event {ty:?} is {} bytes, more than the limit of {MAX_EVENT_DATA_BYTES}",
            event.data.len()
        )));
    }
    if event.tags.len() > MAX_TAGS_PER_EVENT {
        return Err(Error::invalid(format!(
            "event {ty:?} has {} tags, more than the limit of {MAX_TAGS_PER_EVENT}",
            event.tags.len()
        )));
    }
    for tag in &event.tags {
        check_name(&format!("a tag of event {ty:?}"), tag)?;
    }
    if event.metadata.len() > MAX_METADATA_ENTRIES {
        return Err(Error::invalid(format!(
            "event {ty:?} has {} metadata entries, more than the limit of {MAX_METADATA_ENTRIES}",
            event.metadata.len()
        )));
    }
    for (key, value) in &event.metadata {
        check_name(&format!("a metadata key of event {ty:?}"), key)?;
        if value.len() > MAX_METADATA_VALUE_BYTES || value.contains('\0') {
            return Err(Error::invalid(format!(
                "metadata value of {key:?} on event {ty:?} is longer than \
                 {MAX_METADATA_VALUE_BYTES} bytes or contains a NUL character"
            )));
        }
    }
    Ok(())
}

/// Checks a query against the limits. Any query within them is valid, including the empty one.
pub fn validate_query(query: &Query) -> Result<()> {
    if query.items.len() > MAX_QUERY_ITEMS {
        return Err(Error::invalid(format!(
            "query has {} items, more than the limit of {MAX_QUERY_ITEMS}",
            query.items.len()
        )));
    }
    for item in &query.items {
        if item.types.len() + item.tags.len() > MAX_ITEM_TERMS {
            return Err(Error::invalid(format!(
                "a query item has {} types and tags, more than the limit of {MAX_ITEM_TERMS}",
                item.types.len() + item.tags.len()
            )));
        }
        for ty in &item.types {
            check_name("a query item's type", ty)?;
        }
        for tag in &item.tags {
            check_name("a query item's tag", tag)?;
        }
    }
    Ok(())
}

/// Checks a whole append request: at least one event, every event, the condition's query and the
/// tracking source. Stores call this before taking any lock or starting any transaction.
pub fn validate_append(request: &AppendRequest) -> Result<()> {
    if request.events.is_empty() {
        return Err(Error::invalid("append of no events: give at least one event"));
    }
    if request.events.len() > MAX_EVENTS_PER_APPEND {
        return Err(Error::invalid(format!(
            "append of {} events, more than the limit of {MAX_EVENTS_PER_APPEND}",
            request.events.len()
        )));
    }
    for event in &request.events {
        validate_event(event)?;
    }
    check_append_bytes("append", request.events.iter().map(Event::byte_size).sum())?;
    if let Some(condition) = &request.condition {
        validate_query(&condition.fail_if_events_match)?;
        let (items, positions) = (condition.fail_if_events_match.items.len(), condition.items_after.len());
        if positions != 0 && positions != items {
            return Err(Error::invalid(format!(
                "an append condition gives positions for {positions} items of a query of {items}: give one per item, or none"
            )));
        }
    }
    if let Some(tracking) = &request.tracking {
        check_name("tracking source", &tracking.source)?;
    }
    Ok(())
}

/// Refuses an append (or insert) of more than [`MAX_APPEND_BYTES`].
pub(crate) fn check_append_bytes(what: &str, bytes: usize) -> Result<()> {
    if bytes > MAX_APPEND_BYTES {
        return Err(Error::invalid(format!(
            "{what} of {bytes} bytes, more than the limit of {MAX_APPEND_BYTES}: split it"
        )));
    }
    Ok(())
}

/// Checks a tracking source name (for [`EventStore::tracking_position`](crate::EventStore::tracking_position)).
pub fn validate_source(source: &str) -> Result<()> {
    check_name("tracking source", source)
}
