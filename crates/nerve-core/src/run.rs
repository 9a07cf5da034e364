//! Which run an event belongs to: one rule, shared by the consumers and the
//! command line.
//!
//! An event's run is, in this order:
//!
//! 1. its envelope's `run_id` ([`Event::run_id`]);
//! 2. else a `run_id` string in its data (`{"run_id": "extraction_001"}`),
//!    the way the extraction guide's scripts write it;
//! 3. else the run opened by the latest start event (`*.started` naming a
//!    run) that has not been ended by that run's end event.
//!
//! The third step needs the events in order, so the rule is a small state
//! machine, [`RunTracker`], fed every event once. By default a start event is
//! any `<prefix>.started` that names a run, and the run ends with a
//! `<prefix>.completed`, `.failed`, `.stopped`, `.cancelled`, `.aborted`,
//! `.interrupted` or `.ended` event of the same prefix or naming the same run
//! ([`END_ACTIONS`]); consumers configured with their own patterns say the
//! role of each event themselves ([`RunTracker::observe`]).
//!
//! ```
//! use nerve::run::RunTracker;
//! use nerve::{Event, json};
//!
//! let log = [
//!     Event::new("extraction.started", json!({"run_id": "extraction_001", "total": 2}))?,
//!     Event::new("specimen.completed", json!({"sequence": 1}))?,
//!     Event::new("extraction.failed", json!({"run_id": "extraction_001"}))?,
//!     Event::new("specimen.completed", json!({"sequence": 2}))?,
//! ];
//! let mut runs = RunTracker::new();
//! let seen: Vec<Option<String>> = log.iter().map(|e| runs.run_of(e)).collect();
//! assert_eq!(
//!     seen,
//!     [Some("extraction_001".into()), Some("extraction_001".into()), Some("extraction_001".into()), None]
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use crate::Event;

/// The last segment of a default start event's type.
pub const START_ACTION: &str = "started";

/// The last segments of the event types that end a run by default.
pub const END_ACTIONS: [&str; 7] = [
    "completed",
    "failed",
    "stopped",
    "cancelled",
    "aborted",
    "interrupted",
    "ended",
];

/// The run an event names itself: its envelope's `run_id`, else a `run_id`
/// string in its data. `None` when it names none (its run then depends on
/// the events before it; see [`RunTracker`]).
pub fn explicit_run_id(event: &Event) -> Option<&str> {
    event
        .run_id()
        .or_else(|| event.data().get("run_id").and_then(|v| v.as_str()))
}

/// What an event means to the runs around it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum RunRole {
    /// It opens a run: the run it names becomes the current one (one that
    /// names no run leaves no run current).
    Start,
    /// It ends its run: if that is the current run, none is current after it.
    End,
    /// Anything else: it belongs to the run it names, else the current one.
    Member,
}

/// The run currently open, for events that name none.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Open {
    run: String,
    /// The start event's type without its last segment (`extraction`), whose
    /// end events close the run by default.
    prefix: String,
}

/// Follows runs through a sequence of events, in order, and says which run
/// each belongs to (see the [module docs](self) for the rule).
///
/// It holds one run id; it does no I/O and allocates only when a run opens
/// or an event's run is returned.
#[derive(Debug, Clone, Default)]
pub struct RunTracker {
    current: Option<Open>,
}

/// `extraction.started` → `("extraction", "started")`.
fn split_last(event_type: &str) -> (&str, &str) {
    event_type.rsplit_once('.').unwrap_or(("", event_type))
}

impl RunTracker {
    /// A tracker with no run open.
    pub fn new() -> Self {
        Self::default()
    }

    /// The run open now, if any.
    pub fn current(&self) -> Option<&str> {
        self.current.as_ref().map(|o| o.run.as_str())
    }

    /// The role the default rule gives `event`, given the run open now: a
    /// `*.started` event naming a run starts one; an end action
    /// ([`END_ACTIONS`]) of the current run's prefix, or naming the current
    /// run, ends it; everything else is a member.
    pub fn role(&self, event: &Event) -> RunRole {
        let (prefix, action) = split_last(event.event_type());
        if action == START_ACTION && explicit_run_id(event).is_some() {
            return RunRole::Start;
        }
        if END_ACTIONS.contains(&action) {
            if let Some(open) = &self.current {
                let names_it = explicit_run_id(event).is_some_and(|r| r == open.run);
                let same_prefix = explicit_run_id(event).is_none() && prefix == open.prefix;
                if names_it || same_prefix {
                    return RunRole::End;
                }
            }
        }
        RunRole::Member
    }

    /// The run of `event` under the default rule ([`role`](Self::role)),
    /// updating the run open.
    pub fn run_of(&mut self, event: &Event) -> Option<String> {
        let role = self.role(event);
        self.observe(event, role)
    }

    /// The run of `event`, whose role the caller decided (consumers with
    /// their own start and end patterns), updating the run open: a start
    /// opens the run it names (or closes the current one if it names none),
    /// an end of the current run closes it.
    pub fn observe(&mut self, event: &Event, role: RunRole) -> Option<String> {
        let explicit = explicit_run_id(event);
        match role {
            RunRole::Start => {
                self.current = explicit.map(|run| Open {
                    run: run.to_owned(),
                    prefix: split_last(event.event_type()).0.to_owned(),
                });
                explicit.map(str::to_owned)
            }
            RunRole::End => {
                let run = explicit
                    .map(str::to_owned)
                    .or_else(|| self.current().map(str::to_owned));
                if run.is_some() && self.current() == run.as_deref() {
                    self.current = None;
                }
                run
            }
            RunRole::Member => explicit
                .map(str::to_owned)
                .or_else(|| self.current().map(str::to_owned)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn ev(t: &str, data: serde_json::Value) -> Event {
        Event::builder(t).data(data).build().unwrap()
    }

    fn runs(events: &[Event]) -> Vec<Option<String>> {
        let mut t = RunTracker::new();
        events.iter().map(|e| t.run_of(e)).collect()
    }

    fn s(v: &str) -> Option<String> {
        Some(v.to_owned())
    }

    #[test]
    fn envelope_then_data_then_the_open_run() {
        let env = Event::builder("specimen.completed")
            .run_id("env")
            .data(json!({"run_id": "data"}))
            .build()
            .unwrap();
        assert_eq!(explicit_run_id(&env), Some("env"));
        assert_eq!(
            explicit_run_id(&ev("a.b", json!({"run_id": "data"}))),
            Some("data")
        );
        assert_eq!(explicit_run_id(&ev("a.b", json!({"run_id": 7}))), None);
        assert_eq!(
            runs(&[
                ev("specimen.completed", json!({})),
                ev("extraction.started", json!({"run_id": "r1"})),
                ev("specimen.processing", json!({})),
                ev("specimen.failed", json!({})),
                env,
                ev("validation.checkpoint", json!({})),
                ev("extraction.failed", json!({"run_id": "r1"})),
                ev("specimen.completed", json!({})),
            ]),
            [
                None,
                s("r1"),
                s("r1"),
                s("r1"),
                s("env"),
                s("r1"),
                s("r1"),
                None
            ]
        );
    }

    #[test]
    fn items_named_like_end_events_do_not_end_the_run() {
        // `specimen.failed` ends nothing: another prefix, and it names no run.
        let mut t = RunTracker::new();
        t.run_of(&ev("extraction.started", json!({"run_id": "r1"})));
        assert_eq!(t.role(&ev("specimen.failed", json!({}))), RunRole::Member);
        assert_eq!(t.role(&ev("extraction.completed", json!({}))), RunRole::End);
        assert_eq!(
            t.role(&ev("job.failed", json!({"run_id": "r1"}))),
            RunRole::End
        );
        assert_eq!(
            t.role(&ev("extraction.failed", json!({"run_id": "other"}))),
            RunRole::Member
        );
        // A `*.started` naming no run opens none.
        assert_eq!(t.role(&ev("specimen.started", json!({}))), RunRole::Member);
    }

    #[test]
    fn a_second_run_with_the_same_id_opens_again() {
        let log = [
            ev("extraction.started", json!({"run_id": "x"})),
            ev("specimen.completed", json!({})),
            ev("extraction.completed", json!({"run_id": "x"})),
            ev("extraction.started", json!({"run_id": "x"})),
            ev("specimen.failed", json!({})),
        ];
        let mut t = RunTracker::new();
        let roles: Vec<RunRole> = log
            .iter()
            .map(|e| {
                let r = t.role(e);
                t.observe(e, r);
                r
            })
            .collect();
        assert_eq!(
            roles,
            [
                RunRole::Start,
                RunRole::Member,
                RunRole::End,
                RunRole::Start,
                RunRole::Member
            ]
        );
        assert_eq!(t.current(), Some("x"));
    }

    #[test]
    fn roles_given_by_the_caller() {
        let mut t = RunTracker::new();
        let start = ev("batch.begin", json!({"run_id": "b"}));
        assert_eq!(t.observe(&start, RunRole::Start), s("b"));
        assert_eq!(t.observe(&ev("x.y", json!({})), RunRole::Member), s("b"));
        assert_eq!(t.observe(&ev("batch.end", json!({})), RunRole::End), s("b"));
        assert_eq!(t.current(), None);
        assert_eq!(t.observe(&ev("x.y", json!({})), RunRole::Member), None);
        // A start naming no run closes the open one.
        t.observe(&start, RunRole::Start);
        assert_eq!(
            t.observe(&ev("batch.begin", json!({})), RunRole::Start),
            None
        );
        assert_eq!(t.current(), None);
    }
}
