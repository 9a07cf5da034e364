//! Counters of a bus and the serializable snapshot `Bus::stats` returns.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::Serialize;

use crate::pending::Pending;
use crate::subscription::{HandlerKind, Subscription};

/// Bus-wide counters, shared with queued deliveries.
#[derive(Default)]
pub(crate) struct Shared {
    pub(crate) emitted: AtomicU64,
    pub(crate) rejected: AtomicU64,
    pub(crate) delivered: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) panicked: AtomicU64,
    pub(crate) timed_out: AtomicU64,
    pub(crate) halted: AtomicU64,
    pub(crate) abandoned: AtomicU64,
    pub(crate) subscriptions_total: AtomicU64,
    pub(crate) pending: Pending,
}

impl Shared {
    pub(crate) fn reset(&self) {
        for c in [
            &self.emitted,
            &self.rejected,
            &self.delivered,
            &self.failed,
            &self.panicked,
            &self.timed_out,
            &self.halted,
            &self.abandoned,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    }
}

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
    /// Deliveries that succeeded.
    pub delivered: u64,
    /// Deliveries that returned an error or panicked.
    pub failed: u64,
    /// Of `failed`, those that panicked.
    pub panicked: u64,
    /// Deliveries past their timeout.
    pub timed_out: u64,
    /// Deliveries whose handler asked the emitter to halt.
    pub halted: u64,
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
    /// `sync` or `async`.
    pub kind: &'static str,
    /// Deliveries that succeeded.
    pub delivered: u64,
    /// Deliveries that returned an error or panicked.
    pub failed: u64,
    /// Of `failed`, those that panicked.
    pub panicked: u64,
    /// Deliveries past their timeout.
    pub timed_out: u64,
    /// Deliveries that asked the emitter to halt.
    pub halted: u64,
    /// Deliveries queued or running.
    pub pending: u64,
}

impl SubscriberStats {
    pub(crate) fn of(sub: &Subscription) -> Self {
        let c = &sub.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        Self {
            id: sub.id.0,
            name: sub.name.as_deref().map(str::to_owned),
            patterns: sub.patterns.iter().map(|p| p.as_str().to_owned()).collect(),
            priority: sub.priority,
            kind: match sub.kind {
                HandlerKind::Sync(_) => "sync",
                HandlerKind::Async(_) => "async",
            },
            delivered: get(&c.delivered),
            failed: get(&c.failed),
            panicked: get(&c.panicked),
            timed_out: get(&c.timed_out),
            halted: get(&c.halted),
            pending: get(&c.pending),
        }
    }
}
