//! The serializable snapshot `Bus::stats` returns, and how it is taken from
//! the bus's counters (kept by the [`Ledger`](crate::ledger::Ledger)).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::attachment::AttachmentStats;
use crate::dispatch::Dispatcher;
use crate::queue::{DropReason, Overflow};
use crate::subscription::Subscription;

/// A snapshot of a bus's counters. Serializes to JSON for dashboards.
///
/// Counts since the bus was built or `reset_stats` was last called.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct BusStats {
    /// Subscriptions.
    pub subscriptions: SubscriptionStats,
    /// Events and deliveries.
    pub events: EventStats,
    /// Events emitted per event type. At most 10,000 types are kept apart;
    /// beyond that they are counted under `"(other)"`.
    pub by_event_type: BTreeMap<String, u64>,
    /// Failures (errors, panics, timeouts) per live subscription, by name or id.
    pub handler_failures: BTreeMap<String, u64>,
    /// Each live subscription.
    pub subscribers: Vec<SubscriberStats>,
    /// Async deliveries accepted but not finished.
    pub pending: u64,
    /// Events in the in-memory history.
    pub history_size: usize,
    /// The history's capacity.
    pub history_capacity: usize,
    /// The per-run history behind `subscribe_run`.
    pub runs: RunStats,
    /// What is attached to the bus (bridges, servers), in the order they
    /// were attached; see [`Bus::attach`](crate::Bus::attach).
    pub attachments: Vec<AttachmentStats>,
}

impl BusStats {
    /// A snapshot of `bus`'s counters.
    pub(crate) fn of(bus: &Dispatcher) -> Self {
        let table = bus.routes.load();
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let ledger = &bus.ledger;
        let s = &ledger.totals;
        let mut patterns = BTreeSet::new();
        let mut subscribers = Vec::new();
        let mut handler_failures = BTreeMap::new();
        for sub in table.subscriptions() {
            patterns.extend(sub.patterns.iter().map(|p| p.as_str().to_owned()));
            let stats = SubscriberStats::of(sub);
            let failures = stats.failed + stats.timed_out;
            if failures > 0 {
                // Names need not be unique: subscriptions sharing one add up.
                *handler_failures.entry(sub.label()).or_insert(0) += failures;
            }
            subscribers.push(stats);
        }
        let attachments = bus
            .attachments
            .snapshot()
            .into_iter()
            .map(|(id, a)| complete(a.stats(), id, &subscribers))
            .collect();
        BusStats {
            attachments,
            subscriptions: SubscriptionStats {
                active: table.len(),
                total: get(&s.subscriptions_total),
                patterns: patterns.into_iter().collect(),
            },
            events: EventStats {
                emitted: get(&bus.seq).saturating_sub(get(&bus.emitted_base)),
                rejected: get(&s.rejected),
                delivered: s.delivered.get(),
                dropped: get(&s.dropped),
                journal_errors: get(&s.journal_errors),
                failed: get(&s.failed),
                panicked: get(&s.panicked),
                timed_out: get(&s.timed_out),
                halted: get(&s.halted),
                not_recorded: get(&s.not_recorded),
                abandoned: ledger.in_flight.abandoned(),
            },
            by_event_type: ledger.by_type().collect(),
            handler_failures,
            subscribers,
            pending: ledger.in_flight.get(),
            history_size: bus.history.len(),
            history_capacity: bus.history.capacity(),
            runs: {
                let runs = bus.runs.lock();
                RunStats {
                    tracked: runs.len(),
                    max_runs: bus.runs.max_runs(),
                    events_evicted: runs.events_evicted,
                    runs_evicted: runs.runs_evicted,
                }
            },
        }
    }
}

/// The per-run history's counts.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct RunStats {
    /// Runs whose recent events are kept.
    pub tracked: usize,
    /// How many runs are kept at most.
    pub max_runs: usize,
    /// Events pushed out of a full run log (late subscribers miss them).
    pub events_evicted: u64,
    /// Runs evicted, least recently used first.
    pub runs_evicted: u64,
}

/// Subscription counts.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct SubscriptionStats {
    /// Live subscriptions.
    pub active: usize,
    /// Subscriptions ever made on this bus.
    pub total: u64,
    /// The distinct patterns of live subscriptions.
    pub patterns: Vec<String>,
}

/// Event and delivery counts.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct EventStats {
    /// Events accepted.
    pub emitted: u64,
    /// Events refused (invalid names).
    pub rejected: u64,
    /// Handler deliveries that succeeded.
    pub delivered: u64,
    /// Events lost by full or closed subscriber queues (see each
    /// subscriber's `dropped_by_reason`).
    pub dropped: u64,
    /// Failures of the journal (the bus's sink): events it could not take,
    /// background write errors, failed flushes.
    pub journal_errors: u64,
    /// Deliveries that returned an error or panicked.
    pub failed: u64,
    /// Of `failed`, those that panicked.
    pub panicked: u64,
    /// Deliveries past their timeout.
    pub timed_out: u64,
    /// Deliveries whose handler asked the emitter to halt.
    pub halted: u64,
    /// Deliveries whose handler could not confirm it recorded the event
    /// ([`HandlerError::not_recorded`](crate::HandlerError::not_recorded):
    /// an exporter, say). Not in `failed`.
    pub not_recorded: u64,
    /// Deliveries dropped before they ran (shutdown, lost runtime).
    pub abandoned: u64,
}

/// One subscription's counts.
#[derive(Debug, Clone, Serialize)]
#[non_exhaustive]
pub struct SubscriberStats {
    /// Its id.
    pub id: u64,
    /// Its name.
    pub name: Option<String>,
    /// Its patterns.
    pub patterns: Vec<String>,
    /// Its priority.
    pub priority: i32,
    /// `sync` (inline), `queued`, `async` or `stream`.
    pub kind: &'static str,
    /// Events offered: matched the patterns and passed the filter.
    pub offered: u64,
    /// Events handed to the handler or the stream, whatever the outcome.
    /// Once the queue is empty, `delivered + dropped == offered`.
    pub delivered: u64,
    /// Events lost by this subscriber's queue.
    pub dropped: u64,
    /// `dropped` by reason (`queue_full`, `evicted`, `terminal_priority`,
    /// `refused`, `block_timeout`, `closed`); reasons with no drops are left out.
    pub dropped_by_reason: BTreeMap<&'static str, u64>,
    /// Events waiting in the queue now (0 for inline handlers).
    pub queued: u64,
    /// The queue's capacity, if it has one.
    pub capacity: Option<usize>,
    /// The queue's overflow policy, if it has one.
    pub overflow: Option<Overflow>,
    /// Deliveries whose handler succeeded (streams: 0).
    pub succeeded: u64,
    /// Deliveries that returned an error or panicked.
    pub failed: u64,
    /// Of `failed`, those that panicked.
    pub panicked: u64,
    /// Deliveries past their timeout.
    pub timed_out: u64,
    /// Deliveries that asked the emitter to halt.
    pub halted: u64,
    /// Deliveries whose handler could not confirm it recorded the event.
    pub not_recorded: u64,
    /// Deliveries queued or running.
    pub pending: u64,
}

impl SubscriberStats {
    pub(crate) fn of(sub: &Subscription) -> Self {
        let c = &sub.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let queue = sub.kind.queue_depth();
        // An inline handler is called for every event it is offered, and
        // its outcomes are counted anyway: derived, not counted twice.
        let (offered, delivered) = if sub.is_inline() {
            let ran = c.succeeded.get()
                + get(&c.failed)
                + get(&c.timed_out)
                + get(&c.halted)
                + get(&c.not_recorded);
            (ran, ran)
        } else {
            (sub.kind.offered(c), get(&c.delivered))
        };
        Self {
            id: sub.id.as_u64(),
            name: sub.name.as_deref().map(str::to_owned),
            patterns: sub.patterns.iter().map(|p| p.as_str().to_owned()).collect(),
            priority: sub.priority,
            kind: sub.kind.name(),
            offered,
            delivered,
            dropped: c.dropped_total(),
            dropped_by_reason: DropReason::ALL
                .iter()
                .map(|r| (r.as_str(), get(&c.dropped[r.index()])))
                .filter(|(_, n)| *n > 0)
                .collect(),
            queued: queue.map_or(0, |q| q.0 as u64),
            capacity: queue.map(|q| q.1),
            overflow: queue.map(|q| q.2),
            succeeded: c.succeeded.get(),
            failed: get(&c.failed),
            panicked: get(&c.panicked),
            timed_out: get(&c.timed_out),
            halted: get(&c.halted),
            not_recorded: get(&c.not_recorded),
            pending: get(&c.pending),
        }
    }
}

/// An attachment's stats with the bus's part filled in: the id and what the listed subscriptions
/// hold and dropped. A listed id with no live subscription adds nothing.
fn complete(
    mut this: AttachmentStats,
    id: u64,
    subscribers: &[SubscriberStats],
) -> AttachmentStats {
    this.id = id;
    this.buffered = 0;
    this.dropped = 0;
    this.dropped_by_reason.clear();
    for s in subscribers
        .iter()
        .filter(|s| this.subscriptions.contains(&s.id))
    {
        this.buffered += s.queued;
        this.dropped += s.dropped;
        for (reason, n) in &s.dropped_by_reason {
            *this.dropped_by_reason.entry(reason).or_insert(0) += n;
        }
    }
    this
}
