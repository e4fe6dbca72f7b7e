//! The history checker: given every append that was attempted, what each was told, and everything
//! the store holds afterwards, prove that the store kept its promises.

use std::collections::HashMap;

use crate::{AppendCondition, Event, SequencedEvent, Uuid};

/// What an attempted append was told.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Acknowledged, with the position of its last event.
    Appended(u64),
    /// Refused by its condition (or tracking): it must not be recorded.
    Conflict,
    /// The store was unreachable: it may or may not be recorded, but whole if at all.
    Unknown,
}

/// One attempted append. Every event must carry a uuid unique across the whole history, which
/// is how the checker finds it in the store.
#[derive(Debug, Clone)]
pub struct Attempt {
    /// The submitted events.
    pub events: Vec<Event>,
    /// The submitted condition.
    pub condition: Option<AppendCondition>,
    /// What the store answered.
    pub outcome: Outcome,
    /// What the read that the condition rests on returned, when the test kept it.
    pub read: Option<Seen>,
    /// For a refused append, the store's head read right after the refusal, when the test took
    /// it: whatever caused the refusal lies at or before it.
    pub head_after_refusal: Option<u64>,
}

impl Attempt {
    /// An attempt whose test kept neither its read nor a head after a refusal.
    pub fn new(events: Vec<Event>, condition: Option<AppendCondition>, outcome: Outcome) -> Self {
        Attempt { events, condition, outcome, read: None, head_after_refusal: None }
    }
}

/// The positions a read of the condition's query returned, with the head it reported as the
/// condition's `after`. A read with a safe head returned every match at or before that head: if a
/// store reported a head beyond what its read saw, a decision could miss an event and still
/// append after it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Seen {
    /// The positions returned, in the order returned.
    pub positions: Vec<u64>,
    /// Whether the read was backward with a limit of one (the newest match only) rather than
    /// forward without a limit (every match).
    pub newest_only: bool,
}

/// Counts of what a checked history held.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    /// Acknowledged appends.
    pub appended: usize,
    /// Appends refused by their condition.
    pub conflicts: usize,
    /// Appends with an unknown outcome that turned out to be recorded.
    pub unknown_recorded: usize,
    /// Appends with an unknown outcome that were not recorded.
    pub unknown_absent: usize,
}

/// Checks `attempts` against `recorded` (every event in the store, ascending). Returns what was
/// wrong, every problem found, or a summary when the history is valid:
///
/// - positions are exactly 1..=n and every recorded event belongs to exactly one attempt;
/// - an acknowledged append is recorded once, whole, at consecutive positions ending where it was
///   told; a refused one is absent; an unknown one is whole or absent;
/// - no acknowledged conditional append has an event matching its condition between its `after`
///   and its own first position;
/// - every refused conditional append has a matching event after its `after` (it was not refused
///   for nothing), at or before the head read after the refusal when there is one;
/// - every kept read returned exactly the matches at or before the head it reported (the
///   condition's `after`).
pub fn check(attempts: &[Attempt], recorded: &[SequencedEvent]) -> Result<Summary, Vec<String>> {
    let mut problems = Vec::new();
    for (index, event) in recorded.iter().enumerate() {
        if event.position != index as u64 + 1 {
            problems.push(format!("position {} recorded where {} was expected", event.position, index + 1));
            return Err(problems);
        }
    }
    let mut where_recorded: HashMap<Uuid, u64> = HashMap::new();
    for event in recorded {
        let Some(uuid) = event.event.uuid else {
            problems.push(format!("event at {} has no uuid: not from this history", event.position));
            continue;
        };
        if let Some(earlier) = where_recorded.insert(uuid, event.position) {
            problems.push(format!("event {uuid} recorded twice, at {earlier} and {}", event.position));
        }
    }
    let mut owned = 0usize;
    let mut summary = Summary::default();
    for (index, attempt) in attempts.iter().enumerate() {
        let found: Vec<Option<u64>> =
            attempt.events.iter().map(|e| e.uuid.and_then(|u| where_recorded.get(&u).copied())).collect();
        let present = found.iter().filter(|p| p.is_some()).count();
        if present != 0 && present != found.len() {
            problems.push(format!("attempt {index} is partly recorded: {found:?}"));
            continue;
        }
        let first = found.first().copied().flatten();
        if let Some(first) = first {
            owned += found.len();
            let consecutive = found.iter().enumerate().all(|(i, p)| *p == Some(first + i as u64));
            if !consecutive {
                problems.push(format!("attempt {index} recorded at non-consecutive positions {found:?}"));
            }
            let events_match = attempt
                .events
                .iter()
                .zip(&found)
                .all(|(e, p)| p.is_some_and(|p| recorded[(p - 1) as usize].event == *e));
            if !events_match {
                problems.push(format!("attempt {index} recorded with different contents"));
            }
        }
        let last = first.map(|f| f + found.len() as u64 - 1);
        match (&attempt.outcome, last) {
            (Outcome::Appended(told), Some(last)) if *told == last => summary.appended += 1,
            (Outcome::Appended(told), Some(last)) => {
                problems.push(format!("attempt {index} was told position {told} but ends at {last}"))
            }
            (Outcome::Appended(told), None) => {
                problems.push(format!("attempt {index} was acknowledged at {told} but is missing"))
            }
            (Outcome::Conflict, Some(last)) => {
                problems.push(format!("attempt {index} was refused but is recorded, ending at {last}"))
            }
            (Outcome::Conflict, None) => summary.conflicts += 1,
            (Outcome::Unknown, Some(_)) => summary.unknown_recorded += 1,
            (Outcome::Unknown, None) => summary.unknown_absent += 1,
        }
        let Some(condition) = &attempt.condition else {
            continue;
        };
        let after = condition.after.unwrap_or(0);
        let matches_after = |until: u64| {
            recorded
                .iter()
                .take_while(|e| e.position < until)
                .find(|e| condition.is_failed_by(e))
                .map(|e| e.position)
        };
        let refused_by = attempt.head_after_refusal.map_or(u64::MAX, |head| head.saturating_add(1));
        let refused_for_nothing = attempt.outcome == Outcome::Conflict && matches_after(refused_by).is_none();
        if refused_for_nothing {
            problems.push(format!(
                "attempt {index} was refused, but nothing after {after} (and before it was refused) matches its condition"
            ));
        }
        if let Some(seen) = &attempt.read {
            let mut expected: Vec<u64> = recorded[..(after as usize).min(recorded.len())]
                .iter()
                .filter(|e| condition.fail_if_events_match.matches(&e.event))
                .map(|e| e.position)
                .collect();
            if seen.newest_only {
                expected = expected.pop().into_iter().collect();
            }
            if seen.positions != expected {
                problems.push(format!(
                    "attempt {index} rests on a read with head {after} that returned {:?}, not the matches {expected:?}",
                    seen.positions
                ));
            }
        }
        if let Some(conflict) = first.and_then(|first| matches_after(first).map(|c| (first, c))) {
            let (first, conflict) = conflict;
            problems.push(format!(
                "attempt {index} was recorded at {first} although event {conflict} matched its condition after {after}"
            ));
        }
    }
    if owned != recorded.len() {
        problems.push(format!("{} recorded events belong to no attempt", recorded.len() - owned));
    }
    if problems.is_empty() { Ok(summary) } else { Err(problems) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Query, QueryItem};

    fn ev(n: u128, tag: &str) -> Event {
        Event::new("E", "").tagged(tag).with_uuid(Uuid::from_u128(n))
    }

    fn seq(position: u64, event: Event) -> SequencedEvent {
        SequencedEvent { position, event }
    }

    fn conditional(events: Vec<Event>, tag: &str, after: Option<u64>, outcome: Outcome) -> Attempt {
        let condition = AppendCondition::new(Query::from(QueryItem::tags([tag])), after);
        Attempt::new(events, Some(condition), outcome)
    }

    #[test]
    fn a_valid_history_passes() {
        let attempts = vec![
            conditional(vec![ev(1, "t"), ev(2, "t")], "t", None, Outcome::Appended(2)),
            conditional(vec![ev(3, "t")], "t", None, Outcome::Conflict),
            conditional(vec![ev(4, "t")], "t", Some(2), Outcome::Unknown),
        ];
        let recorded = vec![seq(1, ev(1, "t")), seq(2, ev(2, "t")), seq(3, ev(4, "t"))];
        let summary = check(&attempts, &recorded).unwrap();
        assert_eq!(summary, Summary { appended: 1, conflicts: 1, unknown_recorded: 1, unknown_absent: 0 });
    }

    #[test]
    fn a_success_over_a_conflicting_event_is_caught() {
        let attempts = vec![
            conditional(vec![ev(1, "t")], "t", None, Outcome::Appended(1)),
            conditional(vec![ev(2, "t")], "t", Some(0), Outcome::Appended(2)),
        ];
        let recorded = vec![seq(1, ev(1, "t")), seq(2, ev(2, "t"))];
        let problems = check(&attempts, &recorded).unwrap_err();
        assert!(problems[0].contains("although event 1 matched"), "{problems:?}");
    }

    #[test]
    fn items_are_judged_from_their_own_positions() {
        let two_items = |own: u64, outcome| {
            let query = Query::from(QueryItem::tags(["t"])).or(QueryItem::tags(["u"]));
            let condition = AppendCondition::new(query, Some(0)).with_item_after(1, own);
            Attempt::new(vec![ev(3, "v")], Some(condition), outcome)
        };
        let recorded = vec![seq(1, ev(1, "u")), seq(2, ev(2, "u")), seq(3, ev(3, "v"))];
        let unconditional = |n, tag| Attempt::new(vec![ev(n, tag)], None, Outcome::Appended(n as u64));
        let attempts = |last| vec![unconditional(1, "u"), unconditional(2, "u"), last];
        // `u` checked after 2: its events at 1 and 2 are no conflict.
        assert!(check(&attempts(two_items(2, Outcome::Appended(3))), &recorded).is_ok());
        // After 1, the event at 2 is one.
        let problems = check(&attempts(two_items(1, Outcome::Appended(3))), &recorded).unwrap_err();
        assert!(problems[0].contains("although event 2 matched"), "{problems:?}");
        let problems = check(&attempts(two_items(2, Outcome::Conflict)), &recorded[..2]).unwrap_err();
        assert!(problems[0].contains("was refused, but nothing"), "{problems:?}");
    }

    #[test]
    fn lost_partial_duplicated_and_unfounded_appends_are_caught() {
        let attempts = vec![
            conditional(vec![ev(1, "t")], "t", None, Outcome::Appended(1)),
            conditional(vec![ev(2, "u"), ev(3, "u")], "u", None, Outcome::Unknown),
            conditional(vec![ev(4, "v")], "v", None, Outcome::Conflict),
        ];
        let recorded = vec![seq(1, ev(2, "u")), seq(2, ev(2, "u"))];
        let problems = check(&attempts, &recorded).unwrap_err().join("\n");
        assert!(problems.contains("recorded twice"), "{problems}");
        assert!(problems.contains("partly recorded"), "{problems}");
        assert!(problems.contains("acknowledged at 1 but is missing"), "{problems}");
        assert!(problems.contains("nothing after 0 (and before it was refused) matches"), "{problems}");
    }

    #[test]
    fn a_refusal_before_its_conflict_is_caught() {
        let mut refused = conditional(vec![ev(2, "t")], "t", None, Outcome::Conflict);
        refused.head_after_refusal = Some(0);
        let attempts = vec![refused, conditional(vec![ev(1, "t")], "t", None, Outcome::Appended(1))];
        let problems = check(&attempts, &[seq(1, ev(1, "t"))]).unwrap_err();
        assert!(problems[0].contains("before it was refused"), "{problems:?}");
    }

    #[test]
    fn a_read_that_missed_a_match_below_its_head_is_caught() {
        let seen = |positions: Vec<u64>, newest_only| Some(Seen { positions, newest_only });
        let recorded = vec![seq(1, ev(1, "t")), seq(2, ev(2, "u")), seq(3, ev(3, "t"))];
        let mut attempts = vec![
            conditional(vec![ev(1, "t")], "t", None, Outcome::Appended(1)),
            conditional(vec![ev(2, "u")], "u", None, Outcome::Appended(2)),
            conditional(vec![ev(3, "t")], "t", Some(2), Outcome::Appended(3)),
        ];
        attempts[2].read = seen(vec![1], false);
        assert!(check(&attempts, &recorded).is_ok());
        attempts[2].read = seen(vec![1], true);
        assert!(check(&attempts, &recorded).is_ok());
        attempts[2].read = seen(vec![], false);
        let problems = check(&attempts, &recorded).unwrap_err();
        assert!(problems[0].contains("returned [], not the matches [1]"), "{problems:?}");
    }
}
