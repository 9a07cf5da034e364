//! The plain reference model: what the bus, its journal and its dead letter
//! queue should hold after each step, worked out with vectors and counters
//! only, without threads, files or clocks.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use crate::ops::{Behaviour, Kind, Pattern, Policy};

/// A handler subscription as the model sees it.
#[derive(Debug, Clone)]
pub(crate) struct Handler {
    /// Unique for the whole case: a restart subscribes it again by name.
    pub(crate) name: String,
    pub(crate) kind: Kind,
    pub(crate) behaviour: Behaviour,
    pub(crate) pattern: Pattern,
    pub(crate) healed: bool,
    /// Its id on the current bus.
    pub(crate) id: u64,
    /// Counts since the current bus was built.
    pub(crate) offered: u64,
    pub(crate) succeeded: u64,
    pub(crate) failed: u64,
    pub(crate) panicked: u64,
}

impl Handler {
    /// Whether a delivery of an event with `bad` set fails, and how.
    pub(crate) fn fails(&self, bad: bool) -> Option<&'static str> {
        if !bad || self.healed {
            return None;
        }
        match self.behaviour {
            Behaviour::Succeeds => None,
            Behaviour::Fails => Some("handler_error"),
            Behaviour::Panics => Some("handler_panic"),
        }
    }

    /// Counts one delivery; its failure's reason, if it failed.
    fn deliver(&mut self, bad: bool) -> Option<&'static str> {
        self.offered += 1;
        let failure = self.fails(bad);
        match failure {
            None => self.succeeded += 1,
            Some(reason) => {
                self.failed += 1;
                if reason == "handler_panic" {
                    self.panicked += 1;
                }
            }
        }
        failure
    }
}

/// A stream as the model sees it: its queue, and what its reader took.
#[derive(Debug, Clone)]
pub(crate) struct Stream {
    pub(crate) name: String,
    pub(crate) pattern: Pattern,
    pub(crate) policy: Policy,
    pub(crate) capacity: usize,
    pub(crate) id: u64,
    /// Events in the bus's queue, oldest first.
    pub(crate) queue: VecDeque<u64>,
    /// Events the reader took from the queue in one batch and has not
    /// returned yet (they count as delivered).
    pub(crate) batch: VecDeque<u64>,
    pub(crate) offered: u64,
    pub(crate) delivered: u64,
    pub(crate) dropped: BTreeMap<&'static str, u64>,
}

/// How many events a stream's reader takes from its queue at once
/// (`READ_BATCH` in the router's `stream.rs`).
const READ_BATCH: usize = 64;

impl Stream {
    /// Offers event `n`; what it lost (the event itself or an older one),
    /// and whether `emit` is refused.
    fn offer(&mut self, n: u64) -> (Option<(u64, &'static str)>, bool) {
        self.offered += 1;
        if self.queue.len() < self.capacity {
            self.queue.push_back(n);
            return (None, false);
        }
        let (lost, reason) = match self.policy {
            Policy::DropNewest => (n, "queue_full"),
            Policy::DropOldest => {
                let oldest = self.queue.pop_front().expect("a full queue has an oldest");
                self.queue.push_back(n);
                (oldest, "evicted")
            }
            Policy::Error => (n, "refused"),
            Policy::Block => unreachable!("the test makes room in a Block stream before an emit"),
            Policy::BlockTimeout => (n, "block_timeout"),
        };
        *self.dropped.entry(reason).or_default() += 1;
        (Some((lost, reason)), self.policy == Policy::Error)
    }

    /// Reads one event, as `EventStream::poll_next` does.
    pub(crate) fn read(&mut self) -> Option<u64> {
        if self.batch.is_empty() {
            let take = self.queue.len().min(READ_BATCH);
            self.batch.extend(self.queue.drain(..take));
            self.delivered += take as u64;
        }
        self.batch.pop_front()
    }
}

/// A dead letter as the model sees it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) struct Entry {
    pub(crate) reason: &'static str,
    pub(crate) n: u64,
    pub(crate) subscription: Option<String>,
    /// For `all_handlers_failed`: the handlers that failed, by name.
    pub(crate) targets: Vec<String>,
    pub(crate) attempts: u32,
    /// Read back from the dead letter file by a later bus.
    pub(crate) restored: bool,
    /// The event's `bad` flag.
    pub(crate) bad: bool,
}

impl Entry {
    /// Whether the model can say what a retry of this entry does: handler
    /// failures, except restored `all_handlers_failed` entries, whose
    /// targets are the old bus's subscription ids (a known limit).
    pub(crate) fn retryable(&self) -> bool {
        match self.reason {
            "handler_error" | "handler_panic" => true,
            "all_handlers_failed" => !self.restored,
            _ => false,
        }
    }
}

/// What the journal must hold.
#[derive(Debug, Clone, Default)]
pub(crate) struct Disk {
    /// Events emitted with no fault injected, in emit order: on disk, in
    /// this order, unless retention removed them (oldest first) or a torn
    /// tail took them.
    pub(crate) acknowledged: Vec<u64>,
    /// Events emitted while a fault was injected: on disk or not.
    pub(crate) uncertain: BTreeSet<u64>,
    /// Events whose line was torn by a cut of the file: gone.
    pub(crate) torn: BTreeSet<u64>,
}

/// The whole reference model.
#[derive(Debug, Clone, Default)]
pub(crate) struct Model {
    pub(crate) next_n: u64,
    pub(crate) handlers: Vec<Handler>,
    pub(crate) streams: Vec<Stream>,
    pub(crate) dead: Vec<Entry>,
    pub(crate) disk: Disk,
    /// The current bus's events, in emit order.
    pub(crate) history: Vec<u64>,
    pub(crate) names: u64,
    pub(crate) restarts: u64,
}

/// What one emit should do.
#[derive(Debug)]
pub(crate) struct Emitted {
    pub(crate) n: u64,
    pub(crate) refused: bool,
}

impl Model {
    pub(crate) fn name(&mut self, prefix: &str) -> String {
        self.names += 1;
        format!("{prefix}{}", self.names)
    }

    /// Emits one event of type `work.{a|b}`.
    pub(crate) fn emit(&mut self, b: bool, bad: bool, fault: bool) -> Emitted {
        let n = self.next_n;
        self.next_n += 1;
        let kind = if b { Pattern::B } else { Pattern::A };
        self.history.push(n);
        if fault {
            self.disk.uncertain.insert(n);
        } else {
            self.disk.acknowledged.push(n);
        }
        let queued_any = self
            .handlers
            .iter()
            .any(|h| h.kind == Kind::Async && h.pattern.matches(kind));
        let mut inline_ran = 0;
        let mut inline_failures = Vec::new();
        let mut refused = false;
        for h in self.handlers.iter_mut().filter(|h| h.pattern.matches(kind)) {
            let failure = h.deliver(bad);
            match h.kind {
                Kind::Sync => {
                    inline_ran += 1;
                    if let Some(reason) = failure {
                        inline_failures.push((h.name.clone(), reason));
                    }
                }
                Kind::Async => {
                    if let Some(reason) = failure {
                        self.dead.push(entry(reason, n, Some(h.name.clone()), bad));
                    }
                }
            }
        }
        let all_failed = !queued_any && inline_ran >= 2 && inline_failures.len() == inline_ran;
        if all_failed {
            let mut e = entry("all_handlers_failed", n, None, bad);
            e.targets = inline_failures.into_iter().map(|(name, _)| name).collect();
            self.dead.push(e);
        } else {
            for (name, reason) in inline_failures {
                self.dead.push(entry(reason, n, Some(name), bad));
            }
        }
        for s in self.streams.iter_mut().filter(|s| s.pattern.matches(kind)) {
            let (lost, refuse) = s.offer(n);
            refused |= refuse;
            if let Some((lost, _)) = lost {
                // The lost event's own `bad` flag does not matter: overflow
                // entries are not retried by the model.
                self.dead
                    .push(entry("overflow_drop", lost, Some(s.name.clone()), false));
            }
        }
        Emitted { n, refused }
    }

    /// Retries entry `i`: whether it succeeds. Updates the entry and the
    /// handlers' counts.
    pub(crate) fn retry(&mut self, i: usize) -> bool {
        let entry = self.dead[i].clone();
        let targets: Vec<String> = match &entry.subscription {
            Some(name) => vec![name.clone()],
            None => entry.targets.clone(),
        };
        let mut ok = true;
        for name in targets {
            let Some(h) = self.handlers.iter_mut().find(|h| h.name == name) else {
                ok = false;
                break;
            };
            if h.deliver(entry.bad).is_some() {
                ok = false;
                break;
            }
        }
        if ok {
            self.dead.remove(i);
        } else {
            self.dead[i].attempts += 1;
        }
        ok
    }

    /// A restart: a new bus, the same handlers and streams subscribed again
    /// by name, counts from zero, the dead letters read back.
    pub(crate) fn restart(&mut self) {
        self.restarts += 1;
        self.history.clear();
        for h in &mut self.handlers {
            h.offered = 0;
            h.succeeded = 0;
            h.failed = 0;
            h.panicked = 0;
        }
        for s in &mut self.streams {
            s.queue.clear();
            s.batch.clear();
            s.offered = 0;
            s.delivered = 0;
            s.dropped.clear();
        }
        for e in &mut self.dead {
            e.restored = true;
        }
    }

    /// A cut of the active file tore the line of event `n`.
    pub(crate) fn tear(&mut self, n: u64) {
        self.disk.acknowledged.retain(|m| *m != n);
        self.disk.uncertain.remove(&n);
        self.disk.torn.insert(n);
    }
}

fn entry(reason: &'static str, n: u64, subscription: Option<String>, bad: bool) -> Entry {
    Entry {
        reason,
        n,
        subscription,
        targets: Vec::new(),
        attempts: 1,
        restored: false,
        bad,
    }
}
