//! Runs: which events start, end and count the items of a run, and which
//! run an event belongs to.

use std::fmt;

use nerve_core::run::{RunRole, RunTracker};
use nerve_core::{Event, Pattern, PatternError};
use nerve_router::{Bus, SubscriptionId, WeakBus};

/// Start events of a run, unless configured otherwise.
pub const DEFAULT_START: &str = "extraction.started";
/// End events of a run (success or failure), unless configured otherwise.
pub const DEFAULT_END: [&str; 2] = ["extraction.completed", "extraction.failed"];
/// Events counted as a successful item, unless configured otherwise.
pub const DEFAULT_SUCCESS: &str = "specimen.completed";
/// Events counted as a failed item, unless configured otherwise.
pub const DEFAULT_FAILURE: &str = "specimen.failed";
/// Data keys of a start event that give the number of items of the run,
/// tried in this order.
pub const TOTAL_KEYS: [&str; 2] = ["total_specimens", "total"];

/// The run an event names itself: its envelope's `run_id`, else a `run_id`
/// string in its data (the rule lives in [`nerve_core::run`]).
pub(crate) fn run_of(event: &Event) -> Option<&str> {
    nerve_core::run::explicit_run_id(event)
}

/// The number of items a start event announces (see [`TOTAL_KEYS`]).
pub(crate) fn total_of(event: &Event) -> Option<u64> {
    TOTAL_KEYS
        .iter()
        .find_map(|k| event.data().get(*k).and_then(serde_json::Value::as_u64))
}

/// What an event means to a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Role {
    Start,
    Success,
    Failure,
    End,
}

/// The patterns that give events their [`Role`], shared by the consumers'
/// builders.
#[derive(Debug, Clone)]
pub(crate) struct RunPatterns {
    pub(crate) start: Vec<Pattern>,
    pub(crate) success: Vec<Pattern>,
    pub(crate) failure: Vec<Pattern>,
    pub(crate) end: Vec<Pattern>,
}

/// The patterns as the builders keep them before `build` parses them.
#[derive(Debug, Clone)]
pub(crate) struct RunPatternText {
    pub(crate) start: Vec<String>,
    pub(crate) success: Vec<String>,
    pub(crate) failure: Vec<String>,
    pub(crate) end: Vec<String>,
}

impl Default for RunPatternText {
    fn default() -> Self {
        Self {
            start: vec![DEFAULT_START.to_owned()],
            success: vec![DEFAULT_SUCCESS.to_owned()],
            failure: vec![DEFAULT_FAILURE.to_owned()],
            end: DEFAULT_END.iter().map(|s| (*s).to_owned()).collect(),
        }
    }
}

/// The four pattern setters every run consumer's builder has, written once:
/// `success`, `failure`, `start` and `end`, on a builder with a field
/// `patterns: RunPatternText`. (A trait would make users import it to call
/// a builder method.)
macro_rules! run_pattern_setters {
    () => {
        /// The pattern of successful item events (default `specimen.completed`).
        pub fn success(mut self, pattern: impl Into<String>) -> Self {
            self.patterns.success = vec![pattern.into()];
            self
        }

        /// The pattern of failed item events (default `specimen.failed`).
        pub fn failure(mut self, pattern: impl Into<String>) -> Self {
            self.patterns.failure = vec![pattern.into()];
            self
        }

        /// The pattern of run start events (default `extraction.started`).
        pub fn start(mut self, pattern: impl Into<String>) -> Self {
            self.patterns.start = vec![pattern.into()];
            self
        }

        /// The patterns of run end events (default `extraction.completed`
        /// and `extraction.failed`).
        pub fn end<I, S>(mut self, patterns: I) -> Self
        where
            I: IntoIterator<Item = S>,
            S: Into<String>,
        {
            self.patterns.end = patterns.into_iter().map(Into::into).collect();
            self
        }
    };
}
pub(crate) use run_pattern_setters;

impl RunPatternText {
    pub(crate) fn parse(&self) -> Result<RunPatterns, PatternError> {
        let parse = |v: &[String]| -> Result<Vec<Pattern>, PatternError> {
            v.iter().map(|p| Pattern::parse(p)).collect()
        };
        Ok(RunPatterns {
            start: parse(&self.start)?,
            success: parse(&self.success)?,
            failure: parse(&self.failure)?,
            end: parse(&self.end)?,
        })
    }
}

impl RunPatterns {
    /// The role of an event; success and failure win over start and end
    /// when patterns overlap, since items are what the consumers count.
    pub(crate) fn role(&self, event_type: &str) -> Option<Role> {
        let any = |ps: &[Pattern]| ps.iter().any(|p| p.matches(event_type));
        if any(&self.success) {
            Some(Role::Success)
        } else if any(&self.failure) {
            Some(Role::Failure)
        } else if any(&self.start) {
            Some(Role::Start)
        } else if any(&self.end) {
            Some(Role::End)
        } else {
            None
        }
    }

    /// Every pattern, for one subscription.
    pub(crate) fn all(&self) -> Vec<Pattern> {
        let mut all = Vec::new();
        for p in self
            .start
            .iter()
            .chain(&self.success)
            .chain(&self.failure)
            .chain(&self.end)
        {
            if !all.contains(p) {
                all.push(p.clone());
            }
        }
        all
    }
}

/// Which run an event without a run id belongs to: the run started last and
/// not yet ended, as in a script that emits `run_id` only on its start and
/// end events. The rule is [`nerve_core::run::RunTracker`]'s, with the
/// consumer's own patterns deciding each event's role.
#[derive(Debug, Default)]
pub(crate) struct CurrentRun(RunTracker);

impl CurrentRun {
    /// The run key of `event` (`""` for events of no run), updating the
    /// current run on start and end events.
    pub(crate) fn key(&mut self, event: &Event, role: Role) -> String {
        let role = match role {
            Role::Start => RunRole::Start,
            Role::End => RunRole::End,
            Role::Success | Role::Failure => RunRole::Member,
        };
        self.0.observe(event, role).unwrap_or_default()
    }
}

/// The subscriptions a consumer made on a bus; [`detach`](Self::detach)
/// removes them.
///
/// Neither the attachment nor the consumer's handlers keep the bus open
/// (they hold it weakly), so dropping the last `Bus` handle still shuts the
/// bus down and flushes its journal.
#[derive(Clone)]
pub struct Attachment {
    bus: WeakBus,
    ids: Vec<SubscriptionId>,
}

impl Attachment {
    pub(crate) fn new(bus: &Bus, ids: Vec<SubscriptionId>) -> Self {
        Self {
            bus: bus.downgrade(),
            ids,
        }
    }

    /// The subscriptions made.
    pub fn ids(&self) -> &[SubscriptionId] {
        &self.ids
    }

    /// Unsubscribes; returns how many subscriptions were still there (none
    /// once the bus is gone).
    pub fn detach(self) -> usize {
        let Some(bus) = self.bus.upgrade() else {
            return 0;
        };
        self.ids.iter().filter(|id| bus.unsubscribe(**id)).count()
    }
}

impl fmt::Debug for Attachment {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Attachment")
            .field("ids", &self.ids)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn event(t: &str, data: serde_json::Value) -> Event {
        Event::builder(t).data(data).build().unwrap()
    }

    #[test]
    fn roles_follow_the_patterns() {
        let p = RunPatternText::default().parse().unwrap();
        for (t, role) in [
            ("extraction.started", Some(Role::Start)),
            ("specimen.completed", Some(Role::Success)),
            ("specimen.failed", Some(Role::Failure)),
            ("extraction.completed", Some(Role::End)),
            ("extraction.failed", Some(Role::End)),
            ("specimen.processing", None),
        ] {
            assert_eq!(p.role(t), role, "{t}");
        }
        assert_eq!(p.all().len(), 5);
    }

    #[test]
    fn run_ids_come_from_the_envelope_then_the_data_then_the_current_run() {
        let mut current = CurrentRun::default();
        let start = event("extraction.started", json!({"run_id": "r1", "total": 3}));
        assert_eq!(total_of(&start), Some(3));
        assert_eq!(current.key(&start, Role::Start), "r1");
        let item = event("specimen.completed", json!({}));
        assert_eq!(current.key(&item, Role::Success), "r1");
        let other = Event::builder("specimen.failed")
            .run_id("r2")
            .build()
            .unwrap();
        assert_eq!(current.key(&other, Role::Failure), "r2");
        let end = event("extraction.completed", json!({"run_id": "r1"}));
        assert_eq!(current.key(&end, Role::End), "r1");
        assert_eq!(current.key(&item, Role::Success), "");
    }
}
