//! What the page shows above the event table, kept up to date event by
//! event: the runs, counts by event type, drops and dead letters.
//!
//! Every event the dashboard takes in passes through [`Summary::observe`]
//! once, in the order of its source, so the summary covers every event ever
//! seen, not only those the retained history still holds.

use std::collections::{BTreeMap, HashMap, VecDeque};

use nerve_core::run::{END_ACTIONS, START_ACTION, explicit_run_id};
use nerve_core::{Event, Pattern};
use serde::Serialize;

/// At most this many points of a run's success-rate series are kept; past
/// it every other point goes and the stride doubles, so a run of millions
/// of items still draws from a few hundred points.
const MAX_SERIES: usize = 1024;

/// Throughput is measured over the items of the last minute (event time).
const THROUGHPUT_WINDOW_MICROS: i64 = 60_000_000;

/// How items and runs are recognised, and the thresholds drawn when no
/// validation event says otherwise.
#[derive(Debug, Clone)]
pub(crate) struct Rules {
    pub(crate) success: Pattern,
    pub(crate) failure: Pattern,
    pub(crate) warning_threshold: f64,
    pub(crate) checkpoint_threshold: f64,
}

/// A run's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum RunStatus {
    Running,
    Completed,
    Stopped,
}

/// The early checkpoint a validation consumer reported.
#[derive(Debug, Clone, Serialize)]
pub(crate) struct Checkpoint {
    at: u64,
    threshold: f64,
    success_rate: f64,
    passed: bool,
}

#[derive(Debug, Clone, Serialize)]
pub(crate) struct Run {
    /// `run_id`, with ` #2` etc. for a run started again under the same id.
    key: String,
    run_id: String,
    source: String,
    status: RunStatus,
    /// Why it stopped early (`message`, `reason` or `error` of the end event).
    reason: Option<String>,
    /// The end event's type.
    ended_by: Option<String>,
    started_at: Option<String>,
    ended_at: Option<String>,
    last_at: Option<String>,
    /// Items the run said it would process (`total_specimens`, `total`,
    /// `total_items` of its start event).
    total: Option<u64>,
    processed: u64,
    succeeded: u64,
    failed: u64,
    success_rate: Option<f64>,
    /// Items per second over the last minute of the run (event time).
    throughput: Option<f64>,
    /// Seconds left at that throughput, while running with a known total.
    eta_seconds: Option<f64>,
    warning_threshold: f64,
    checkpoint_threshold: f64,
    checkpoint: Option<Checkpoint>,
    warnings: u64,
    events: u64,
    /// `[item, success rate after it]`, thinned to at most 1,024 points.
    series: Vec<(u64, f64)>,
    #[serde(skip)]
    stride: u64,
    #[serde(skip)]
    prefix: String,
    #[serde(skip)]
    window: VecDeque<(i64, u64)>,
    #[serde(skip)]
    started_micros: Option<i64>,
    #[serde(skip)]
    last_micros: Option<i64>,
}

impl Run {
    fn new(key: String, run_id: &str, source: &str, prefix: &str, rules: &Rules) -> Self {
        Self {
            key,
            run_id: run_id.to_owned(),
            source: source.to_owned(),
            status: RunStatus::Running,
            reason: None,
            ended_by: None,
            started_at: None,
            ended_at: None,
            last_at: None,
            total: None,
            processed: 0,
            succeeded: 0,
            failed: 0,
            success_rate: None,
            throughput: None,
            eta_seconds: None,
            warning_threshold: rules.warning_threshold,
            checkpoint_threshold: rules.checkpoint_threshold,
            checkpoint: None,
            warnings: 0,
            events: 0,
            series: Vec::new(),
            stride: 1,
            prefix: prefix.to_owned(),
            window: VecDeque::new(),
            started_micros: None,
            last_micros: None,
        }
    }

    fn item(&mut self, ok: bool, at: i64) {
        self.processed += 1;
        if ok {
            self.succeeded += 1;
        } else {
            self.failed += 1;
        }
        let rate = self.succeeded as f64 / self.processed as f64;
        self.success_rate = Some(rate);
        if self.processed % self.stride == 0 {
            self.series.push((self.processed, rate));
            if self.series.len() >= MAX_SERIES {
                let mut i = 0;
                self.series.retain(|_| {
                    i += 1;
                    i % 2 == 0
                });
                self.stride *= 2;
            }
        }
        self.window.push_back((at, self.processed));
        while self
            .window
            .front()
            .is_some_and(|(t, _)| at - t > THROUGHPUT_WINDOW_MICROS)
        {
            self.window.pop_front();
        }
        self.measure();
    }

    /// Throughput and ETA from the window of recent items.
    fn measure(&mut self) {
        let first = self
            .window
            .front()
            .copied()
            .or(self.started_micros.map(|t| (t, 0)));
        let last = self.window.back().copied();
        self.throughput = match (first, last, self.started_micros) {
            (Some((t0, n0)), Some((t1, n1)), _) if t1 > t0 && n1 > n0 => {
                Some((n1 - n0) as f64 / ((t1 - t0) as f64 / 1e6))
            }
            // One item in the window: measure from the run's start.
            (_, Some((t1, n1)), Some(start)) if t1 > start => {
                Some(n1.min(self.processed) as f64 / ((t1 - start) as f64 / 1e6))
            }
            _ => self.throughput,
        };
        self.eta_seconds = match (self.status, self.total, self.throughput) {
            (RunStatus::Running, Some(total), Some(rate)) if rate > 0.0 => {
                Some(total.saturating_sub(self.processed) as f64 / rate)
            }
            _ => None,
        };
    }

    /// The series, with the latest point even when the stride skipped it.
    fn series_with_last(&self) -> Vec<(u64, f64)> {
        let mut s = self.series.clone();
        if let Some(rate) = self.success_rate {
            if s.last().is_none_or(|(n, _)| *n != self.processed) {
                s.push((self.processed, rate));
            }
        }
        s
    }
}

/// The run one source has open, for its events that name none.
#[derive(Debug, Default, Clone)]
struct SourceRuns {
    open: Option<usize>,
}

/// Counters of what was dropped or failed, from the events themselves
/// (`system.*`), so journals show them too.
#[derive(Debug, Default, Clone, Serialize)]
pub(crate) struct Losses {
    /// Sum of `dropped` over `system.events_dropped` reports.
    pub(crate) events_dropped: u64,
    /// `system.handler_error` reports.
    pub(crate) handler_errors: u64,
    /// `system.journal_error` reports.
    pub(crate) journal_errors: u64,
    /// `system.journal_gap` ranges (events the journal could not write).
    pub(crate) journal_gaps: u64,
    /// Events in `system.dead_letter*` reports.
    pub(crate) dead_letters: u64,
}

/// The summary of everything observed.
#[derive(Debug)]
pub(crate) struct Summary {
    rules: Rules,
    runs: Vec<Run>,
    /// Run id → how many runs have used it.
    restarts: HashMap<String, u32>,
    /// By source index.
    sources: Vec<SourceRuns>,
    counts: BTreeMap<String, u64>,
    events: u64,
    losses: Losses,
}

/// How many distinct event types are counted apart; the rest go to `(other)`.
const MAX_TYPES: usize = 10_000;

impl Summary {
    pub(crate) fn new(rules: Rules) -> Self {
        Self {
            rules,
            runs: Vec::new(),
            restarts: HashMap::new(),
            sources: Vec::new(),
            counts: BTreeMap::new(),
            events: 0,
            losses: Losses::default(),
        }
    }

    /// Takes one event of source `source` (named `source_name`) into
    /// account. Returns the run it belongs to, if any.
    pub(crate) fn observe(&mut self, source: usize, source_name: &str, event: &Event) {
        if self.sources.len() <= source {
            self.sources.resize(source + 1, SourceRuns::default());
        }
        self.events += 1;
        let event_type = event.event_type();
        if self.counts.len() < MAX_TYPES || self.counts.contains_key(event_type) {
            *self.counts.entry(event_type.to_owned()).or_insert(0) += 1;
        } else {
            *self.counts.entry("(other)".to_owned()).or_insert(0) += 1;
        }
        self.count_losses(event);
        let (prefix, action) = event_type.rsplit_once('.').unwrap_or(("", event_type));
        let named = explicit_run_id(event);
        let at = event.timestamp().as_micros();
        let stamp = event.timestamp().to_string();

        if action == START_ACTION {
            if let Some(run_id) = named {
                let n = self.restarts.entry(run_id.to_owned()).or_insert(0);
                *n += 1;
                let key = if *n == 1 {
                    run_id.to_owned()
                } else {
                    format!("{run_id} #{n}")
                };
                let mut run = Run::new(key, run_id, source_name, prefix, &self.rules);
                run.started_at = Some(stamp.clone());
                run.started_micros = Some(at);
                run.total = ["total_specimens", "total", "total_items"]
                    .iter()
                    .find_map(|k| event.data().get(*k).and_then(|v| v.as_u64()));
                run.events = 1;
                run.last_at = Some(stamp);
                run.last_micros = Some(at);
                self.runs.push(run);
                self.sources[source].open = Some(self.runs.len() - 1);
                return;
            }
        }

        // The run of the event: the latest run of the id it names (on any
        // source), else the run its source has open.
        let index = match named {
            Some(id) => self.runs.iter().rposition(|r| r.run_id == id),
            None => self.sources[source].open,
        };
        if event_type == "system.interrupted" {
            // A signal ends the run its process had open.
            if let Some(i) = index.or(self.sources[source].open) {
                let signal = event.data()["signal"].as_str().unwrap_or("a signal");
                self.end(
                    i,
                    source,
                    RunStatus::Stopped,
                    event,
                    Some(format!("interrupted by {signal}")),
                );
            }
            return;
        }
        let Some(i) = index else { return };
        {
            let run = &mut self.runs[i];
            run.events += 1;
            run.last_at = Some(stamp);
            run.last_micros = Some(at);
        }
        let run_prefix = self.runs[i].prefix.clone();
        if END_ACTIONS.contains(&action) && prefix == run_prefix {
            let (status, reason) = if action == "completed" || action == "ended" {
                (RunStatus::Completed, None)
            } else {
                let data = event.data();
                let reason = ["message", "reason", "error"]
                    .iter()
                    .find_map(|k| data.get(*k).and_then(|v| v.as_str()))
                    .map(str::to_owned)
                    .or_else(|| self.runs[i].reason.clone())
                    .unwrap_or_else(|| format!("{event_type} (no reason given)"));
                (RunStatus::Stopped, Some(reason))
            };
            self.end(i, source, status, event, reason);
            return;
        }
        let run = &mut self.runs[i];
        match event_type {
            "validation.checkpoint" => {
                let d = event.data();
                let threshold = d["threshold"].as_f64().unwrap_or(run.checkpoint_threshold);
                run.checkpoint_threshold = threshold;
                run.checkpoint = Some(Checkpoint {
                    at: d["processed"].as_u64().unwrap_or(run.processed),
                    threshold,
                    success_rate: d["success_rate"]
                        .as_f64()
                        .or(run.success_rate)
                        .unwrap_or(0.0),
                    passed: d["passed"].as_bool().unwrap_or(true),
                });
                if let Some(reason) = d["reason"].as_str() {
                    run.reason.get_or_insert_with(|| reason.to_owned());
                }
                return;
            }
            "validation.warning" => {
                run.warnings += 1;
                if let Some(t) = event.data()["threshold"].as_f64() {
                    run.warning_threshold = t;
                }
                return;
            }
            _ => {}
        }
        if prefix != run.prefix && run.status == RunStatus::Running {
            if self.rules.success.matches(event_type) {
                run.item(true, at);
            } else if self.rules.failure.matches(event_type) {
                run.item(false, at);
            }
        }
    }

    fn end(
        &mut self,
        i: usize,
        source: usize,
        status: RunStatus,
        event: &Event,
        reason: Option<String>,
    ) {
        let run = &mut self.runs[i];
        if run.status == RunStatus::Running {
            run.status = status;
            run.reason = match status {
                RunStatus::Completed => None,
                _ => reason,
            };
            run.ended_by = Some(event.event_type().to_owned());
            run.ended_at = Some(event.timestamp().to_string());
            // A finished run's throughput is its average over the run.
            if let (Some(start), Some(end)) =
                (run.started_micros, Some(event.timestamp().as_micros()))
            {
                if end > start && run.processed > 0 {
                    run.throughput = Some(run.processed as f64 / ((end - start) as f64 / 1e6));
                }
            }
            run.eta_seconds = None;
        }
        if self.sources[source].open == Some(i) {
            self.sources[source].open = None;
        }
    }

    fn count_losses(&mut self, event: &Event) {
        let d = event.data();
        match event.event_type() {
            "system.events_dropped" => {
                self.losses.events_dropped += d["dropped"].as_u64().unwrap_or(1);
            }
            "system.handler_error" => self.losses.handler_errors += 1,
            "system.journal_error" => self.losses.journal_errors += 1,
            "system.journal_gap" => {
                let n = match (
                    d["count"].as_u64(),
                    d["from_seq"].as_u64(),
                    d["to_seq"].as_u64(),
                ) {
                    (Some(n), _, _) => n,
                    (None, Some(a), Some(b)) if b >= a => b - a + 1,
                    _ => 1,
                };
                self.losses.journal_gaps += n;
            }
            t if t.starts_with("system.dead_letter") => self.losses.dead_letters += 1,
            _ => {}
        }
    }

    /// The runs, counts and losses as the page reads them.
    pub(crate) fn to_json(&self) -> serde_json::Value {
        let runs: Vec<serde_json::Value> = self
            .runs
            .iter()
            .map(|r| {
                let mut v = serde_json::to_value(r).unwrap_or_default();
                v["series"] = serde_json::to_value(r.series_with_last()).unwrap_or_default();
                v
            })
            .collect();
        serde_json::json!({
            "events": self.events,
            "runs": runs,
            "counts": self.counts,
            "losses": self.losses,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nerve_core::json;

    fn rules() -> Rules {
        Rules {
            success: Pattern::parse("*.completed").unwrap(),
            failure: Pattern::parse("*.failed").unwrap(),
            warning_threshold: 0.7,
            checkpoint_threshold: 0.5,
        }
    }

    fn ev(t: &str, run: Option<&str>, data: serde_json::Value) -> Event {
        let mut b = Event::builder(t).data(data);
        if let Some(r) = run {
            b = b.run_id(r);
        }
        b.build().unwrap()
    }

    #[test]
    fn a_run_stopped_by_validation_is_stopped_with_its_reason() {
        let mut s = Summary::new(rules());
        s.observe(
            0,
            "j",
            &ev(
                "extraction.started",
                Some("r"),
                json!({"run_id": "r", "total_specimens": 25}),
            ),
        );
        for ok in [true, false, false, false] {
            let t = if ok {
                "specimen.completed"
            } else {
                "specimen.failed"
            };
            s.observe(0, "j", &ev(t, Some("r"), json!({})));
        }
        s.observe(0, "j", &ev("validation.checkpoint", Some("r"), json!({"processed": 5, "threshold": 0.5, "passed": false, "success_rate": 0.2, "reason": "early validation failed: 20%"})));
        s.observe(0, "j", &ev("specimen.failed", Some("r"), json!({})));
        s.observe(0, "j", &ev("extraction.failed", Some("r"), json!({"run_id": "r", "reason": "early_validation_failed", "message": "early validation failed: 20% success rate after 5 specimens"})));
        let v = s.to_json();
        let run = &v["runs"][0];
        assert_eq!(run["status"], "stopped");
        assert_eq!(
            run["reason"],
            "early validation failed: 20% success rate after 5 specimens"
        );
        assert_eq!(
            (run["processed"].as_u64(), run["succeeded"].as_u64()),
            (Some(5), Some(1))
        );
        assert_eq!(run["checkpoint"]["at"], 5);
        assert_eq!(run["series"].as_array().unwrap().len(), 5);
        assert_eq!(v["counts"]["specimen.failed"], 4);
    }

    #[test]
    fn items_without_run_ids_belong_to_the_open_run_and_a_restart_is_a_new_run() {
        let mut s = Summary::new(rules());
        for _ in 0..2 {
            s.observe(0, "j", &ev("job.started", None, json!({"run_id": "a"})));
            s.observe(0, "j", &ev("item.completed", None, json!({})));
            s.observe(0, "j", &ev("job.completed", None, json!({})));
        }
        let v = s.to_json();
        assert_eq!(v["runs"][0]["key"], "a");
        assert_eq!(v["runs"][1]["key"], "a #2");
        assert_eq!(v["runs"][1]["status"], "completed");
        assert_eq!(v["runs"][1]["processed"], 1);
    }

    #[test]
    fn a_long_run_keeps_a_bounded_series_ending_at_its_last_item() {
        let mut s = Summary::new(rules());
        s.observe(
            0,
            "j",
            &ev("job.started", Some("r"), json!({"run_id": "r"})),
        );
        for _ in 0..100_001 {
            s.observe(0, "j", &ev("item.completed", Some("r"), json!({})));
        }
        let v = s.to_json();
        let series = v["runs"][0]["series"].as_array().unwrap();
        assert!(series.len() <= MAX_SERIES + 1, "{}", series.len());
        assert_eq!(series.last().unwrap()[0], 100_001);
    }
}
