//! Attachments: components that live beside a bus and report in its stats.
//!
//! A bridge to NATS, a dashboard's HTTP server or a bridge to another
//! broker has a state (connected, listening, closed) and counters of its
//! own that belong in the same snapshot as the bus's: whoever reads
//! [`Bus::stats`](crate::Bus::stats) should see that events leave through a
//! bridge that is down right now. Such a component implements
//! [`Attachment`] and registers with [`Bus::attach`](crate::Bus::attach);
//! every snapshot then carries one [`AttachmentStats`] per attachment, in
//! [`BusStats::attachments`](crate::BusStats::attachments).
//!
//! The bus holds the attachment, never the other way round: an attachment
//! should keep only the small state it reports (counters, a state flag),
//! not the bus or the component that owns it, so that registering makes no
//! reference cycle. The owner [`detach`](crate::Bus::detach)es it when it
//! stops.
//!
//! Counters the bus keeps already are not counted twice: an attachment that
//! reads events through bus streams lists their subscription ids
//! ([`AttachmentStats::subscription`]), and the bus adds up what those
//! streams hold and dropped in [`AttachmentStats::buffered`] and
//! [`AttachmentStats::dropped`].
//!
//! For metrics, an attachment records into the bus's own recorder
//! ([`Bus::metrics`](crate::Bus::metrics)) under names of its own.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use std::sync::atomic::{AtomicU64, Ordering};
//! use nerve::attachment::{Attachment, AttachmentState, AttachmentStats};
//!
//! /// A webhook forwarder's counters.
//! #[derive(Default)]
//! struct Forwarder {
//!     sent: AtomicU64,
//! }
//!
//! impl Attachment for Forwarder {
//!     fn stats(&self) -> AttachmentStats {
//!         AttachmentStats::new("webhook", "alerts")
//!             .state(AttachmentState::Connected)
//!             .endpoint("https://hooks.example.com/alerts")
//!             .counter("sent", self.sent.load(Ordering::Relaxed))
//!     }
//! }
//!
//! let bus = nerve::Bus::new();
//! let forwarder = Arc::new(Forwarder::default());
//! let id = bus.attach(forwarder.clone());
//! forwarder.sent.fetch_add(3, Ordering::Relaxed);
//!
//! let stats = bus.stats();
//! let webhook = &stats.attachments[0];
//! assert_eq!((webhook.kind.as_str(), webhook.name.as_str()), ("webhook", "alerts"));
//! assert_eq!(webhook.state, AttachmentState::Connected);
//! assert_eq!(webhook.counters["sent"], 3);
//!
//! assert!(bus.detach(id));
//! assert!(bus.stats().attachments.is_empty());
//! ```

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;

/// A component attached to a bus that reports its state and counters in
/// the bus's stats; see the [module docs](crate::attachment).
pub trait Attachment: Send + Sync + 'static {
    /// Its state and counters now.
    ///
    /// Called by every [`Bus::stats`](crate::Bus::stats), from the caller's
    /// thread: it should read a few atomics and return, and must not call
    /// `Bus::stats` itself.
    fn stats(&self) -> AttachmentStats;
}

/// The state of an attachment's link to the outside.
///
/// A set that may grow: match with a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum AttachmentState {
    /// Starting: not connected yet for the first time.
    Starting,
    /// Connected (a bridge) or serving (a server).
    Connected,
    /// The link is down; the attachment is trying to restore it.
    Disconnected,
    /// Stopped for good (shut down).
    Closed,
}

impl AttachmentState {
    /// The state in snake case, as it serializes: `connected`, ...
    #[must_use]
    pub const fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Connected => "connected",
            Self::Disconnected => "disconnected",
            Self::Closed => "closed",
        }
    }
}

impl std::fmt::Display for AttachmentState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One attachment in a [`BusStats`](crate::BusStats) snapshot.
///
/// The attachment fills in `kind`, `name`, `state`, `endpoint`, `counters`
/// and `subscriptions` (with [`new`](Self::new) and the setters); the bus
/// fills in `id`, `buffered`, `dropped` and `dropped_by_reason`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct AttachmentStats {
    /// The id [`Bus::attach`](crate::Bus::attach) returned.
    pub id: u64,
    /// What it is: `nats`, `dashboard`, ...
    pub kind: String,
    /// Which one: a bridge's origin id, a server's name.
    pub name: String,
    /// Its link's state.
    pub state: AttachmentState,
    /// Where it is linked to now (a server URL, a listening address).
    pub endpoint: Option<String>,
    /// Its own counters, by name (`published`, `imported`, ...).
    pub counters: BTreeMap<String, u64>,
    /// The ids of the bus subscriptions (streams) it reads events through.
    pub subscriptions: Vec<u64>,
    /// Events waiting in those subscriptions' queues (filled in by the bus).
    pub buffered: u64,
    /// Events those subscriptions' queues dropped (filled in by the bus).
    pub dropped: u64,
    /// `dropped` by reason (filled in by the bus).
    pub dropped_by_reason: BTreeMap<&'static str, u64>,
}

impl AttachmentStats {
    /// An attachment of kind `kind` called `name`, [`Starting`](AttachmentState::Starting),
    /// with no counters.
    #[must_use]
    pub fn new(kind: impl Into<String>, name: impl Into<String>) -> Self {
        Self {
            id: 0,
            kind: kind.into(),
            name: name.into(),
            state: AttachmentState::Starting,
            endpoint: None,
            counters: BTreeMap::new(),
            subscriptions: Vec::new(),
            buffered: 0,
            dropped: 0,
            dropped_by_reason: BTreeMap::new(),
        }
    }

    /// Sets the state.
    #[must_use]
    pub fn state(mut self, state: AttachmentState) -> Self {
        self.state = state;
        self
    }

    /// Sets where it is linked to now.
    #[must_use]
    pub fn endpoint(mut self, endpoint: impl Into<String>) -> Self {
        self.endpoint = Some(endpoint.into());
        self
    }

    /// Adds (or replaces) the counter `name`.
    #[must_use]
    pub fn counter(mut self, name: impl Into<String>, value: u64) -> Self {
        self.counters.insert(name.into(), value);
        self
    }

    /// Adds a bus subscription it reads events through, by id
    /// ([`SubscriptionId::as_u64`](crate::SubscriptionId::as_u64)).
    #[must_use]
    pub fn subscription(mut self, id: u64) -> Self {
        self.subscriptions.push(id);
        self
    }
}

/// The id of an attachment on its bus, for [`Bus::detach`](crate::Bus::detach).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttachmentId(u64);

impl AttachmentId {
    /// The id as a number, as in [`AttachmentStats::id`].
    #[must_use]
    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

/// The bus's attachments, in the order they were attached.
#[derive(Default)]
pub(crate) struct Attachments {
    next: AtomicU64,
    list: Mutex<Vec<(u64, Arc<dyn Attachment>)>>,
}

impl Attachments {
    pub(crate) fn attach(&self, attachment: Arc<dyn Attachment>) -> AttachmentId {
        let id = self.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.lock().push((id, attachment));
        AttachmentId(id)
    }

    pub(crate) fn detach(&self, id: AttachmentId) -> bool {
        let mut list = self.lock();
        let before = list.len();
        list.retain(|(i, _)| *i != id.0);
        list.len() != before
    }

    /// Every attachment with its id, to ask for its stats outside the lock:
    /// an attachment's `stats` may take locks of its own, and one attaching
    /// meanwhile must not wait on it.
    pub(crate) fn snapshot(&self) -> Vec<(u64, Arc<dyn Attachment>)> {
        self.lock().clone()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<(u64, Arc<dyn Attachment>)>> {
        self.list.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixed(AttachmentStats);

    impl Attachment for Fixed {
        fn stats(&self) -> AttachmentStats {
            self.0.clone()
        }
    }

    #[test]
    fn states_serialize_in_snake_case() {
        for (state, text) in [
            (AttachmentState::Starting, "starting"),
            (AttachmentState::Connected, "connected"),
            (AttachmentState::Disconnected, "disconnected"),
            (AttachmentState::Closed, "closed"),
        ] {
            assert_eq!(state.to_string(), text);
            assert_eq!(serde_json::to_value(state).unwrap(), text);
        }
    }

    #[test]
    fn ids_are_distinct_and_detach_removes_only_its_own() {
        let list = Attachments::default();
        let a = list.attach(Arc::new(Fixed(AttachmentStats::new("k", "a"))));
        let b = list.attach(Arc::new(Fixed(AttachmentStats::new("k", "b"))));
        assert_ne!(a, b);
        assert!(list.detach(a));
        assert!(!list.detach(a), "detached twice");
        let left = list.snapshot();
        let names: Vec<_> = left.iter().map(|(_, a)| a.stats().name).collect();
        assert_eq!(names, ["b"]);
        assert_eq!(left[0].0, b.as_u64());
    }
}
