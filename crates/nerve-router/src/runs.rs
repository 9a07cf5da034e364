//! Per-run history: the recent events of each run, kept so that a late
//! `subscribe_run` sees the whole run, and the lane counters that number
//! events within a run.

use std::collections::{HashMap, VecDeque};
use std::sync::{Mutex, MutexGuard, PoisonError};

use nerve_core::Event;

/// The recent events of each run, for late subscribers.
pub(crate) struct Runs {
    per_run: usize,
    max_runs: usize,
    state: Mutex<RunsState>,
}

#[derive(Default)]
pub(crate) struct RunsState {
    runs: HashMap<Box<str>, RunLog>,
    tick: u64,
    /// Events pushed out of a full run log, and whole runs evicted.
    pub(crate) events_evicted: u64,
    pub(crate) runs_evicted: u64,
}

#[derive(Default)]
pub(crate) struct RunLog {
    pub(crate) events: VecDeque<Event>,
    lanes: HashMap<Box<str>, u64>,
    pub(crate) closed: bool,
    last_used: u64,
}

impl Runs {
    pub(crate) fn new(per_run: usize, max_runs: usize) -> Self {
        Self {
            per_run,
            max_runs,
            state: Mutex::default(),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, RunsState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Appends `event` to its run's log, numbered in its lane.
    ///
    /// Lane counters live with their run (events with a lane and no run share
    /// the run `""`), so they are bounded with the runs; a run evicted and
    /// seen again restarts its lanes at 1, which `merge_lanes` reports.
    pub(crate) fn append(&self, event: Event) -> Event {
        let run_id = event.run_id().unwrap_or("");
        let max_runs = self.max_runs.max(1);
        let mut state = self.lock();
        let log = state.touch(run_id, max_runs);
        let event = match event.lane() {
            Some(lane) => {
                let next = log.lanes.entry(lane.into()).or_insert(0);
                *next += 1;
                let n = *next;
                event.with_lane_seq(n)
            }
            None => event,
        };
        if event.run_id().is_some() && self.per_run > 0 {
            log.events.push_back(event.clone());
            if log.events.len() > self.per_run {
                log.events.pop_front();
                state.events_evicted += 1;
            }
        }
        event
    }
}

impl RunsState {
    /// The log of `run_id`, made (evicting the least recently used run if
    /// there are too many) when it is new.
    pub(crate) fn touch(&mut self, run_id: &str, max_runs: usize) -> &mut RunLog {
        self.tick += 1;
        let tick = self.tick;
        if !self.runs.contains_key(run_id) && self.runs.len() >= max_runs {
            // A scan of at most `max_runs` logs, only when a new run starts.
            if let Some(oldest) = self
                .runs
                .iter()
                .min_by_key(|(_, log)| log.last_used)
                .map(|(id, _)| id.clone())
            {
                self.runs.remove(&oldest);
                self.runs_evicted += 1;
            }
        }
        let log = self.runs.entry(run_id.into()).or_default();
        log.last_used = tick;
        log
    }

    pub(crate) fn get(&self, run_id: &str) -> Option<&RunLog> {
        self.runs.get(run_id)
    }

    pub(crate) fn get_mut(&mut self, run_id: &str) -> Option<&mut RunLog> {
        self.runs.get_mut(run_id)
    }

    pub(crate) fn len(&self) -> usize {
        self.runs.len()
    }
}

impl Runs {
    pub(crate) fn max_runs(&self) -> usize {
        self.max_runs
    }
}
