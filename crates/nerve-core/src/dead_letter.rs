//! Dead letters, and where a dead letter queue keeps them: the contract
//! between the routing engine's queue and persistence.
//!
//! A dead letter queue (`DeadLetterQueue` in the router) holds the
//! deliveries that failed, as [`DeadLetter`]s. Made with a store
//! (`DeadLetterQueue::with_store`), it takes the store's entries once, on
//! open ([`DeadLetterStore::restore`]), and then tells the store every change
//! it makes, in order, under its own lock: an entry added or updated
//! ([`put`](DeadLetterStore::put)), one removed
//! ([`remove`](DeadLetterStore::remove)), all removed
//! ([`clear`](DeadLetterStore::clear)). The journal's dead letter file
//! (`nerve-journal`) is the store nerve ships; the trait lives here so that
//! the router and the journal, siblings, both depend on it rather than on
//! each other (as [`EventSink`](crate::sink::EventSink) does for events).
//!
//! # Example
//!
//! A store that keeps the entries in memory:
//!
//! ```
//! use std::collections::BTreeMap;
//! use std::sync::Mutex;
//! use std::time::Duration;
//! use nerve::dead_letter::{DeadLetter, DeadLetterReason, DeadLetterStore, DeadLetterStoreError};
//! use nerve::{Event, Timestamp};
//!
//! #[derive(Default)]
//! struct Memory(Mutex<BTreeMap<u64, DeadLetter>>);
//!
//! impl DeadLetterStore for Memory {
//!     fn restore(&self) -> Vec<DeadLetter> {
//!         self.0.lock().unwrap().values().cloned().collect()
//!     }
//!     fn put(&self, entry: &DeadLetter) -> Result<(), DeadLetterStoreError> {
//!         self.0.lock().unwrap().insert(entry.id, entry.clone());
//!         Ok(())
//!     }
//!     fn remove(&self, id: u64) -> Result<(), DeadLetterStoreError> {
//!         self.0.lock().unwrap().remove(&id);
//!         Ok(())
//!     }
//!     fn clear(&self) -> Result<(), DeadLetterStoreError> {
//!         self.0.lock().unwrap().clear();
//!         Ok(())
//!     }
//!     fn flush(&self, _timeout: Duration) -> Result<(), DeadLetterStoreError> {
//!         Ok(())
//!     }
//! }
//!
//! let store = Memory::default();
//! let event = Event::builder("invoice.send").build()?;
//! let entry = DeadLetter::new(1, event, DeadLetterReason::DeliveryFailed, "HTTP 503", Timestamp::now());
//! store.put(&entry)?;
//! assert_eq!(store.restore(), [entry]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::{Event, Timestamp};

/// Identifies a subscription on its bus. Returned by every `subscribe*` call.
///
/// Defined here because a [`DeadLetter`] names the subscription that failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SubscriptionId(u64);

impl SubscriptionId {
    /// The id with this number. A bus numbers its subscriptions itself; this
    /// is for code that rebuilds ids it stored (a [`DeadLetterStore`], a
    /// test).
    pub fn from_u64(n: u64) -> Self {
        Self(n)
    }

    /// The id as a number (unique per bus, in subscription order).
    pub fn as_u64(&self) -> u64 {
        self.0
    }
}

impl fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sub-{}", self.0)
    }
}

/// Why an event became a dead letter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum DeadLetterReason {
    /// A handler returned an error.
    HandlerError,
    /// A handler panicked.
    HandlerPanic,
    /// A handler ran past its timeout.
    HandlerTimeout,
    /// Every handler of the event failed (recorded instead of one entry per
    /// handler when all of them ran inline).
    AllHandlersFailed,
    /// The event broke the bus's naming rules.
    ValidationError,
    /// The journal could not serialize the event.
    SerializationError,
    /// A subscriber's full queue dropped the event.
    OverflowDrop,
    /// No subscription matched the event (opt-in: the queue's
    /// `record_unrouted`).
    NoSubscriber,
    /// A delivery outside the bus failed, such as an alert sink giving up
    /// after its retries; added with the queue's `add`.
    DeliveryFailed,
}

impl DeadLetterReason {
    /// The reason as a label: `handler_error`, `handler_panic`, ...
    pub fn as_str(self) -> &'static str {
        match self {
            DeadLetterReason::HandlerError => "handler_error",
            DeadLetterReason::HandlerPanic => "handler_panic",
            DeadLetterReason::HandlerTimeout => "handler_timeout",
            DeadLetterReason::AllHandlersFailed => "all_handlers_failed",
            DeadLetterReason::ValidationError => "validation_error",
            DeadLetterReason::SerializationError => "serialization_error",
            DeadLetterReason::OverflowDrop => "overflow_drop",
            DeadLetterReason::NoSubscriber => "no_subscriber",
            DeadLetterReason::DeliveryFailed => "delivery_failed",
        }
    }
}

impl fmt::Display for DeadLetterReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One failed delivery.
///
/// Serialized as one JSON object, keys in this order (`targets` omitted when
/// empty):
///
/// ```text
/// {"id":1,"event":{...},"subscription_id":3,"subscription_name":"billing","reason":"handler_error","error":"card declined","attempts":1,"first_failure":"2026-11-23T10:00:00.000000Z","last_failure":"2026-11-23T10:00:00.000000Z"}
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct DeadLetter {
    /// Its id in the queue, increasing.
    pub id: u64,
    /// The event, as the subscriber was given it.
    pub event: Event,
    /// The subscription that failed; `None` when the failure was not one
    /// subscription's (validation, serialization, no subscriber, all failed).
    pub subscription_id: Option<SubscriptionId>,
    /// Its name, if it had one.
    pub subscription_name: Option<String>,
    /// Why.
    pub reason: DeadLetterReason,
    /// The error text.
    pub error: String,
    /// Delivery attempts so far: 1 for the original failure, plus one per
    /// failed retry.
    pub attempts: u32,
    /// When it first failed.
    pub first_failure: Timestamp,
    /// When it last failed.
    pub last_failure: Timestamp,
    /// For `AllHandlersFailed`: the subscriptions a retry redelivers to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<SubscriptionId>,
}

impl DeadLetter {
    /// An entry for one failed attempt at `at`, belonging to no subscription
    /// and with no targets (set the public fields for more).
    pub fn new(
        id: u64,
        event: Event,
        reason: DeadLetterReason,
        error: impl Into<String>,
        at: Timestamp,
    ) -> Self {
        Self {
            id,
            event,
            subscription_id: None,
            subscription_name: None,
            reason,
            error: error.into(),
            attempts: 1,
            first_failure: at,
            last_failure: at,
            targets: Vec::new(),
        }
    }
}

/// Keeps a dead letter queue's entries where they survive a restart. See the
/// [module docs](self).
///
/// The queue calls every method but [`restore`](Self::restore) with its own
/// lock held, so the calls arrive in the order of the changes they describe;
/// they should hand the change off and return, except where the store's
/// durability policy promises more (the journal's dead letter file returns
/// once the change is written to the file, and synced under
/// `Fsync::Always`).
pub trait DeadLetterStore: Send + Sync + 'static {
    /// The entries the store held when it was opened, oldest first. The
    /// queue made with the store calls this once, before any other call.
    fn restore(&self) -> Vec<DeadLetter>;

    /// Adds `entry`, or replaces the entry with its id (a failed retry
    /// rewrites it with one attempt more).
    ///
    /// # Errors
    ///
    /// A [`DeadLetterStoreError`] when the change could not be taken or
    /// written; the queue counts it and keeps the entry in memory.
    fn put(&self, entry: &DeadLetter) -> Result<(), DeadLetterStoreError>;

    /// Removes the entry with this id (retried, evicted, expired).
    ///
    /// # Errors
    ///
    /// As [`put`](Self::put).
    fn remove(&self, id: u64) -> Result<(), DeadLetterStoreError>;

    /// Removes every entry.
    ///
    /// # Errors
    ///
    /// As [`put`](Self::put).
    fn clear(&self) -> Result<(), DeadLetterStoreError>;

    /// Waits until every change so far is written, at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`DeadLetterStoreError::Timeout`] if the wait ran out, or the write
    /// error.
    fn flush(&self, timeout: Duration) -> Result<(), DeadLetterStoreError>;

    /// Records the store found unreadable when it was opened (and set aside).
    fn unreadable(&self) -> u64 {
        0
    }

    /// Writes that failed after the call that asked for them returned (a
    /// background writer hitting a full disk).
    fn write_errors(&self) -> u64 {
        0
    }
}

impl<S: DeadLetterStore + ?Sized> DeadLetterStore for Arc<S> {
    fn restore(&self) -> Vec<DeadLetter> {
        (**self).restore()
    }
    fn put(&self, entry: &DeadLetter) -> Result<(), DeadLetterStoreError> {
        (**self).put(entry)
    }
    fn remove(&self, id: u64) -> Result<(), DeadLetterStoreError> {
        (**self).remove(id)
    }
    fn clear(&self) -> Result<(), DeadLetterStoreError> {
        (**self).clear()
    }
    fn flush(&self, timeout: Duration) -> Result<(), DeadLetterStoreError> {
        (**self).flush(timeout)
    }
    fn unreadable(&self) -> u64 {
        (**self).unreadable()
    }
    fn write_errors(&self) -> u64 {
        (**self).write_errors()
    }
}

/// A [`DeadLetterStore`] operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum DeadLetterStoreError {
    /// The store was closed.
    #[error("the dead letter store is closed")]
    Closed,
    /// The store did not confirm the change in time (it may still write it).
    #[error("the dead letter store did not confirm the change within {0:?}")]
    Timeout(Duration),
    /// Writing or syncing failed.
    #[error("dead letter store i/o failed")]
    Io(#[source] std::io::Error),
    /// The entry could not be serialized.
    #[error("could not serialize dead letter {id}")]
    Serialize {
        /// The entry's id.
        id: u64,
        /// The serializer's error.
        #[source]
        source: serde_json::Error,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_entry_reads_back_as_written() {
        let event = Event::builder("job.run").build().unwrap();
        let mut entry = DeadLetter::new(
            4,
            event,
            DeadLetterReason::AllHandlersFailed,
            "a: nope",
            Timestamp::now(),
        );
        entry.targets = vec![SubscriptionId::from_u64(2), SubscriptionId::from_u64(5)];
        let text = serde_json::to_string(&entry).unwrap();
        assert!(
            text.contains("\"reason\":\"all_handlers_failed\""),
            "{text}"
        );
        assert!(text.contains("\"targets\":[2,5]"), "{text}");
        let back: DeadLetter = serde_json::from_str(&text).unwrap();
        assert_eq!(back, entry);
        assert_eq!(SubscriptionId::from_u64(3).to_string(), "sub-3");
        assert_eq!(DeadLetterReason::OverflowDrop.as_str(), "overflow_drop");
    }
}
