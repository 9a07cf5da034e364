//! Lanes: merging the parallel branches of a run back into one ordered list.
//!
//! A run that fans out into parallel branches tags each branch's events with a
//! [`lane`](crate::Event::lane), and the bus numbers them within their lane
//! ([`lane_seq`](crate::Event::lane_seq)). [`merge_lanes`] takes the events of
//! each lane, as collected separately, and interleaves them in one
//! deterministic order, reporting whatever looks wrong with the lanes instead
//! of hiding it.

use std::collections::BTreeMap;
use std::fmt;

use crate::event::{Event, EventId};

/// The events of several lanes in one deterministic order, and what was wrong
/// with them. Made by [`merge_lanes`].
#[derive(Debug, Clone, Default, PartialEq)]
#[non_exhaustive]
pub struct MergedLanes {
    /// Every input event, ordered by timestamp, then lane name, then
    /// `lane_seq` (an event without one first), then position in its lane.
    pub events: Vec<Event>,
    /// What was wrong with the input, by lane name, then position in the lane.
    pub anomalies: Vec<LaneAnomaly>,
}

impl MergedLanes {
    /// Whether no anomaly was found: every event carries its lane's name and a
    /// `lane_seq`, and each lane's `lane_seq`s strictly increase.
    pub fn is_clean(&self) -> bool {
        self.anomalies.is_empty()
    }
}

/// Something wrong with one event of the lanes given to [`merge_lanes`].
///
/// `lane` is always the name the event was given under, and `position` its
/// index in that lane's input list.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LaneAnomaly {
    /// The event repeats the `lane_seq` of the event before it in the lane.
    DuplicateLaneSeq {
        /// The lane name.
        lane: String,
        /// The event's index in the lane's input list.
        position: usize,
        /// The event.
        event_id: EventId,
        /// The repeated `lane_seq`.
        lane_seq: u64,
    },
    /// The event's `lane_seq` is lower than that of the event before it in the
    /// lane.
    LaneSeqRegression {
        /// The lane name.
        lane: String,
        /// The event's index in the lane's input list.
        position: usize,
        /// The event.
        event_id: EventId,
        /// The `lane_seq` of the event before it.
        previous: u64,
        /// The event's own `lane_seq`, lower than `previous`.
        found: u64,
    },
    /// The event has no `lane_seq`.
    MissingLaneSeq {
        /// The lane name.
        lane: String,
        /// The event's index in the lane's input list.
        position: usize,
        /// The event.
        event_id: EventId,
    },
    /// The event's own [`lane`](Event::lane) is not the lane it was given
    /// under.
    LaneMismatch {
        /// The lane name it was given under.
        lane: String,
        /// The event's index in the lane's input list.
        position: usize,
        /// The event.
        event_id: EventId,
        /// The event's own lane, if any.
        event_lane: Option<String>,
    },
}

impl LaneAnomaly {
    /// The lane the event was given under.
    pub fn lane(&self) -> &str {
        match self {
            Self::DuplicateLaneSeq { lane, .. }
            | Self::LaneSeqRegression { lane, .. }
            | Self::MissingLaneSeq { lane, .. }
            | Self::LaneMismatch { lane, .. } => lane,
        }
    }

    /// The event's index in its lane's input list.
    pub fn position(&self) -> usize {
        match self {
            Self::DuplicateLaneSeq { position, .. }
            | Self::LaneSeqRegression { position, .. }
            | Self::MissingLaneSeq { position, .. }
            | Self::LaneMismatch { position, .. } => *position,
        }
    }

    /// The event the anomaly is about.
    pub fn event_id(&self) -> EventId {
        match self {
            Self::DuplicateLaneSeq { event_id, .. }
            | Self::LaneSeqRegression { event_id, .. }
            | Self::MissingLaneSeq { event_id, .. }
            | Self::LaneMismatch { event_id, .. } => *event_id,
        }
    }
}

impl fmt::Display for LaneAnomaly {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::DuplicateLaneSeq {
                lane,
                position,
                event_id,
                lane_seq,
            } => write!(
                f,
                "lane {lane:?} position {position} (event {event_id}): duplicate lane_seq {lane_seq}"
            ),
            Self::LaneSeqRegression {
                lane,
                position,
                event_id,
                previous,
                found,
            } => write!(
                f,
                "lane {lane:?} position {position} (event {event_id}): lane_seq went back from {previous} to {found}"
            ),
            Self::MissingLaneSeq {
                lane,
                position,
                event_id,
            } => write!(
                f,
                "lane {lane:?} position {position} (event {event_id}): no lane_seq"
            ),
            Self::LaneMismatch {
                lane,
                position,
                event_id,
                event_lane,
            } => match event_lane {
                Some(own) => write!(
                    f,
                    "lane {lane:?} position {position} (event {event_id}): event is in lane {own:?}"
                ),
                None => write!(
                    f,
                    "lane {lane:?} position {position} (event {event_id}): event has no lane"
                ),
            },
        }
    }
}

/// Merges the events of several lanes into one deterministic order and reports
/// what is wrong with them.
///
/// `lanes` pairs each lane name with that lane's events in the order they were
/// collected: a `HashMap<String, Vec<Event>>`, a `BTreeMap`, or a `Vec` of
/// pairs all work. The result does not depend on the order the lanes come in,
/// so a `HashMap` gives the same result on every run. A name given more than
/// once (possible with a `Vec` of pairs) counts as one lane whose lists are
/// joined in the order they come.
///
/// [`MergedLanes::events`] holds every input event, none dropped, ordered by
///
/// 1. [`timestamp`](Event::timestamp),
/// 2. the name of the lane it was given under,
/// 3. [`lane_seq`](Event::lane_seq), an event without one before those with one,
/// 4. its position in its lane's list, so even exact duplicates have a fixed place.
///
/// [`MergedLanes::anomalies`] reports, lane by lane in name order and within a
/// lane in list order:
///
/// * an event whose `lane_seq` is not strictly greater than that of the
///   nearest event before it in the lane that has one
///   ([`LaneAnomaly::DuplicateLaneSeq`] when equal,
///   [`LaneAnomaly::LaneSeqRegression`] when lower),
/// * an event without a `lane_seq` ([`LaneAnomaly::MissingLaneSeq`]),
/// * an event whose own [`lane`](Event::lane) is not the name it was given
///   under ([`LaneAnomaly::LaneMismatch`]).
///
/// Each break in a lane's numbering is reported once, where it happens:
/// `[1, 5, 3, 4]` reports 3 (after 5) and not 4 (after 3).
///
/// ```
/// use nerve::{Event, LaneAnomaly, Timestamp, merge_lanes};
/// use std::collections::HashMap;
///
/// let at = |micros, lane: &str, lane_seq| {
///     Event::builder("agent.step")
///         .timestamp(Timestamp::from_micros(micros))
///         .lane(lane)
///         .lane_seq(lane_seq)
///         .build()
/// };
/// let lanes = HashMap::from([
///     ("search", vec![at(10, "search", 1)?, at(30, "search", 2)?]),
///     ("write", vec![at(10, "write", 1)?, at(20, "write", 1)?]),
/// ]);
///
/// let merged = merge_lanes(lanes);
/// let order: Vec<_> = merged
///     .events
///     .iter()
///     .map(|e| (e.timestamp().as_micros(), e.lane().unwrap()))
///     .collect();
/// assert_eq!(
///     order,
///     [(10, "search"), (10, "write"), (20, "write"), (30, "search")]
/// );
/// assert!(!merged.is_clean());
/// assert!(matches!(
///     &merged.anomalies[..],
///     [LaneAnomaly::DuplicateLaneSeq { lane, position: 1, lane_seq: 1, .. }] if lane == "write"
/// ));
/// # Ok::<(), nerve::name::ValidationError>(())
/// ```
pub fn merge_lanes<K, I>(lanes: I) -> MergedLanes
where
    I: IntoIterator<Item = (K, Vec<Event>)>,
    K: Into<String>,
{
    // Sorting the lanes by name first is what makes the result independent of
    // the input order; after that a lane's rank stands in for its name.
    let mut by_name: BTreeMap<String, Vec<Event>> = BTreeMap::new();
    for (name, events) in lanes {
        by_name.entry(name.into()).or_default().extend(events);
    }

    let total = by_name.values().map(Vec::len).sum();
    let mut keyed = Vec::with_capacity(total);
    let mut anomalies = Vec::new();
    for (rank, (lane, events)) in by_name.into_iter().enumerate() {
        check_lane(&lane, &events, &mut anomalies);
        keyed.extend(events.into_iter().enumerate().map(|(position, event)| {
            let key = (event.timestamp(), rank, event.lane_seq(), position);
            (key, event)
        }));
    }
    // (rank, position) is unique, so keys never tie and an unstable sort is
    // still deterministic.
    keyed.sort_unstable_by_key(|(key, _)| *key);

    MergedLanes {
        events: keyed.into_iter().map(|(_, event)| event).collect(),
        anomalies,
    }
}

fn check_lane(lane: &str, events: &[Event], anomalies: &mut Vec<LaneAnomaly>) {
    let mut previous = None;
    for (position, event) in events.iter().enumerate() {
        let event_id = event.event_id();
        if event.lane() != Some(lane) {
            anomalies.push(LaneAnomaly::LaneMismatch {
                lane: lane.to_owned(),
                position,
                event_id,
                event_lane: event.lane().map(str::to_owned),
            });
        }
        let Some(found) = event.lane_seq() else {
            anomalies.push(LaneAnomaly::MissingLaneSeq {
                lane: lane.to_owned(),
                position,
                event_id,
            });
            continue;
        };
        match previous {
            Some(previous) if found == previous => {
                anomalies.push(LaneAnomaly::DuplicateLaneSeq {
                    lane: lane.to_owned(),
                    position,
                    event_id,
                    lane_seq: found,
                });
            }
            Some(previous) if found < previous => {
                anomalies.push(LaneAnomaly::LaneSeqRegression {
                    lane: lane.to_owned(),
                    position,
                    event_id,
                    previous,
                    found,
                });
            }
            _ => {}
        }
        previous = Some(found);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::hash::RandomState;

    use proptest::prelude::*;

    use super::*;
    use crate::event::Timestamp;

    fn event(micros: i64, lane: &str, lane_seq: Option<u64>) -> Event {
        let builder = Event::builder("run.step")
            .timestamp(Timestamp::from_micros(micros))
            .lane(lane);
        match lane_seq {
            Some(n) => builder.lane_seq(n),
            None => builder,
        }
        .build()
        .unwrap()
    }

    /// (timestamp, lane, lane_seq) of each merged event.
    fn order(merged: &MergedLanes) -> Vec<(i64, &str, Option<u64>)> {
        merged
            .events
            .iter()
            .map(|e| (e.timestamp().as_micros(), e.lane().unwrap(), e.lane_seq()))
            .collect()
    }

    #[test]
    fn orders_by_timestamp_then_lane_then_lane_seq() {
        let merged = merge_lanes([
            (
                "b",
                vec![
                    event(5, "b", Some(1)),
                    event(5, "b", Some(2)),
                    event(9, "b", Some(3)),
                ],
            ),
            ("a", vec![event(5, "a", Some(7)), event(6, "a", Some(8))]),
            ("c", vec![event(1, "c", Some(1))]),
        ]);
        assert_eq!(
            order(&merged),
            [
                (1, "c", Some(1)),
                (5, "a", Some(7)),
                (5, "b", Some(1)),
                (5, "b", Some(2)),
                (6, "a", Some(8)),
                (9, "b", Some(3)),
            ]
        );
        assert!(merged.is_clean(), "{:?}", merged.anomalies);
    }

    #[test]
    fn lane_seq_breaks_ties_even_against_list_order() {
        // Same timestamp and lane, listed out of order: lane_seq decides the
        // output, and the out-of-order listing is still reported.
        let merged = merge_lanes([("a", vec![event(5, "a", Some(2)), event(5, "a", Some(1))])]);
        assert_eq!(order(&merged), [(5, "a", Some(1)), (5, "a", Some(2))]);
        assert_eq!(merged.anomalies.len(), 1);
    }

    #[test]
    fn empty_input_is_clean() {
        let merged = merge_lanes(Vec::<(String, Vec<Event>)>::new());
        assert!(merged.events.is_empty());
        assert!(merged.is_clean());
    }

    #[test]
    fn reports_duplicate_and_regressing_lane_seq() {
        let lane = vec![
            event(1, "a", Some(1)),
            event(2, "a", Some(5)),
            event(3, "a", Some(5)),
            event(4, "a", Some(3)),
            event(5, "a", Some(4)),
            event(6, "a", Some(6)),
        ];
        let ids: Vec<EventId> = lane.iter().map(Event::event_id).collect();
        let merged = merge_lanes([("a", lane)]);
        assert_eq!(
            merged.anomalies,
            [
                LaneAnomaly::DuplicateLaneSeq {
                    lane: "a".into(),
                    position: 2,
                    event_id: ids[2],
                    lane_seq: 5,
                },
                LaneAnomaly::LaneSeqRegression {
                    lane: "a".into(),
                    position: 3,
                    event_id: ids[3],
                    previous: 5,
                    found: 3,
                },
            ]
        );
        assert_eq!(merged.events.len(), 6, "nothing is dropped");
        assert!(!merged.is_clean());
        assert_eq!(merged.anomalies[1].lane(), "a");
        assert_eq!(merged.anomalies[1].position(), 3);
        assert_eq!(merged.anomalies[1].event_id(), ids[3]);
        assert!(
            merged.anomalies[1]
                .to_string()
                .ends_with("lane_seq went back from 5 to 3"),
            "{}",
            merged.anomalies[1]
        );
    }

    #[test]
    fn reports_missing_lane_seq_and_compares_across_the_gap() {
        let lane = vec![
            event(1, "a", Some(4)),
            event(2, "a", None),
            event(3, "a", Some(4)),
        ];
        let ids: Vec<EventId> = lane.iter().map(Event::event_id).collect();
        let merged = merge_lanes([("a", lane)]);
        assert_eq!(
            merged.anomalies,
            [
                LaneAnomaly::MissingLaneSeq {
                    lane: "a".into(),
                    position: 1,
                    event_id: ids[1],
                },
                LaneAnomaly::DuplicateLaneSeq {
                    lane: "a".into(),
                    position: 2,
                    event_id: ids[2],
                    lane_seq: 4,
                },
            ]
        );
        assert_eq!(merged.events.len(), 3);
    }

    #[test]
    fn missing_lane_seq_sorts_first_within_a_tie() {
        let merged = merge_lanes([("a", vec![event(5, "a", Some(1)), event(5, "a", None)])]);
        assert_eq!(order(&merged), [(5, "a", None), (5, "a", Some(1))]);
    }

    #[test]
    fn reports_mismatched_lane() {
        let stray = event(1, "b", Some(1));
        let unlaned = Event::builder("run.step")
            .timestamp(Timestamp::from_micros(2))
            .lane_seq(2)
            .build()
            .unwrap();
        let (stray_id, unlaned_id) = (stray.event_id(), unlaned.event_id());
        let merged = merge_lanes([("a", vec![stray, unlaned])]);
        assert_eq!(
            merged.anomalies,
            [
                LaneAnomaly::LaneMismatch {
                    lane: "a".into(),
                    position: 0,
                    event_id: stray_id,
                    event_lane: Some("b".into()),
                },
                LaneAnomaly::LaneMismatch {
                    lane: "a".into(),
                    position: 1,
                    event_id: unlaned_id,
                    event_lane: None,
                },
            ]
        );
        assert_eq!(merged.events.len(), 2);
        assert!(
            merged.anomalies[1]
                .to_string()
                .ends_with("event has no lane")
        );
    }

    #[test]
    fn a_repeated_lane_name_joins_its_lists() {
        let merged = merge_lanes([
            ("a".to_owned(), vec![event(1, "a", Some(2))]),
            ("a".to_owned(), vec![event(2, "a", Some(1))]),
        ]);
        assert_eq!(merged.events.len(), 2);
        assert!(matches!(
            &merged.anomalies[..],
            [LaneAnomaly::LaneSeqRegression {
                position: 1,
                previous: 2,
                found: 1,
                ..
            }]
        ));
    }

    /// Lanes of a few events each, with colliding timestamps and lane_seqs,
    /// some missing, duplicated, regressing or in the wrong lane.
    fn arb_lanes() -> impl Strategy<Value = Vec<(String, Vec<Event>)>> {
        let arb_event = (0i64..4, prop::option::weighted(0.9, 0u64..4), any::<bool>());
        prop::collection::btree_map("[a-d]{1,2}", prop::collection::vec(arb_event, 0..6), 0..5)
            .prop_map(|lanes| {
                lanes
                    .into_iter()
                    .map(|(lane, specs)| {
                        let events = specs
                            .into_iter()
                            .map(|(micros, lane_seq, stray)| {
                                let own = if stray { "elsewhere" } else { lane.as_str() };
                                event(micros, own, lane_seq)
                            })
                            .collect();
                        (lane, events)
                    })
                    .collect()
            })
    }

    proptest! {
        #[test]
        fn merge_is_independent_of_lane_order(
            (lanes, shuffled) in arb_lanes()
                .prop_flat_map(|lanes| (Just(lanes.clone()), Just(lanes).prop_shuffle())),
        ) {
            let expected = merge_lanes(lanes.clone());

            prop_assert_eq!(&merge_lanes(shuffled.clone()), &expected);

            // Two hash maps with their own random state and opposite
            // insertion orders iterate differently.
            let mut forward = HashMap::with_hasher(RandomState::new());
            forward.extend(shuffled.iter().cloned());
            let mut backward = HashMap::with_hasher(RandomState::new());
            backward.extend(shuffled.iter().rev().cloned());
            prop_assert_eq!(&merge_lanes(forward), &expected);
            prop_assert_eq!(&merge_lanes(backward), &expected);

            let btree: BTreeMap<String, Vec<Event>> = shuffled.into_iter().collect();
            prop_assert_eq!(&merge_lanes(btree), &expected);
        }

        #[test]
        fn merge_keeps_every_event_in_order(lanes in arb_lanes()) {
            let mut input: Vec<EventId> = lanes
                .iter()
                .flat_map(|(_, events)| events.iter().map(Event::event_id))
                .collect();
            let rank: HashMap<EventId, (&str, usize)> = lanes
                .iter()
                .flat_map(|(lane, events)| {
                    events
                        .iter()
                        .enumerate()
                        .map(move |(position, e)| (e.event_id(), (lane.as_str(), position)))
                })
                .collect();
            let merged = merge_lanes(lanes.clone());

            let mut output: Vec<EventId> = merged.events.iter().map(Event::event_id).collect();
            input.sort();
            output.sort();
            prop_assert_eq!(input, output);

            let keys: Vec<_> = merged
                .events
                .iter()
                .map(|e| {
                    let (lane, position) = rank[&e.event_id()];
                    (e.timestamp(), lane, e.lane_seq(), position)
                })
                .collect();
            prop_assert!(keys.windows(2).all(|w| w[0] < w[1]), "{:?}", keys);

            let strays = lanes
                .iter()
                .flat_map(|(lane, events)| events.iter().filter(move |e| e.lane() != Some(lane)))
                .count();
            let mismatches = merged
                .anomalies
                .iter()
                .filter(|a| matches!(a, LaneAnomaly::LaneMismatch { .. }))
                .count();
            prop_assert_eq!(strays, mismatches);
        }
    }
}
