//! What happened to one event: the report of `emit_and_wait`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use futures::task::AtomicWaker;

use nerve_core::EventId;
use nerve_core::sink::SinkErrorKind;
use serde::Serialize;

use crate::queue::DropReason;
use crate::subscribe::SubscriptionId;

/// How one handler's delivery ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", content = "detail", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Outcome {
    /// The handler returned success.
    Delivered,
    /// The handler returned an error.
    Failed(String),
    /// The handler panicked; the panic was caught.
    Panicked(String),
    /// The handler ran past its timeout: an async handler was cancelled, an
    /// inline sync handler returned late.
    TimedOut(Duration),
    /// The handler asked the emitter to stop, with this reason.
    Halted(String),
    /// The handler keeps events elsewhere and could not confirm it kept
    /// this one ([`HandlerError::not_recorded`](crate::HandlerError::not_recorded)).
    NotRecorded {
        /// What kind of failure.
        kind: SinkErrorKind,
        /// Why, in the handler's words.
        reason: String,
    },
    /// The delivery was dropped before it ran (the bus shut down or its
    /// runtime went away).
    Abandoned,
    /// The subscriber's queue had no room (see [`Overflow`](crate::Overflow)).
    Dropped(DropReason),
}

impl Outcome {
    /// The outcome of a delivery whose handler returned `e`.
    pub(crate) fn of_error(e: crate::HandlerError) -> Self {
        if e.is_halt() {
            Outcome::Halted(e.into_message())
        } else if let Some(kind) = e.not_recorded_kind() {
            Outcome::NotRecorded {
                kind,
                reason: e.into_message(),
            }
        } else {
            Outcome::Failed(e.into_message())
        }
    }

    /// Whether the handler failed: an error, a panic or a timeout.
    pub(crate) fn is_failure(&self) -> bool {
        matches!(
            self,
            Outcome::Failed(_) | Outcome::Panicked(_) | Outcome::TimedOut(_)
        )
    }

    /// The outcome as instruments see it (a handler that never ran counts
    /// as failed).
    pub(crate) fn as_delivery(&self) -> nerve_core::instrument::DeliveryOutcome<'_> {
        use nerve_core::instrument::DeliveryOutcome as D;
        match self {
            Outcome::Delivered => D::Delivered,
            Outcome::Failed(e) => D::Failed(e),
            Outcome::Panicked(e) => D::Panicked(e),
            Outcome::TimedOut(d) => D::TimedOut(*d),
            Outcome::Halted(e) => D::Halted(e),
            Outcome::NotRecorded { reason, .. } => D::Failed(reason),
            Outcome::Abandoned => D::Failed("abandoned"),
            Outcome::Dropped(_) => D::Failed("dropped"),
        }
    }

    /// Whether the handler succeeded.
    pub fn is_delivered(&self) -> bool {
        matches!(self, Outcome::Delivered)
    }

    /// The error text for failures, panics, timeouts, halts, events not
    /// recorded, and deliveries abandoned or dropped.
    pub fn error(&self) -> Option<String> {
        match self {
            Outcome::Delivered => None,
            Outcome::Failed(e) | Outcome::Panicked(e) | Outcome::Halted(e) => Some(e.clone()),
            Outcome::NotRecorded { reason, .. } => Some(format!("not recorded: {reason}")),
            Outcome::TimedOut(d) => Some(format!("handler timed out after {d:?}")),
            Outcome::Abandoned => Some("delivery abandoned before it ran".to_owned()),
            Outcome::Dropped(r) => Some(format!("dropped: {}", r.as_str())),
        }
    }

    /// A short word for the kind of outcome: `delivered`, `error`, `panic`,
    /// `timeout`, `halt`, `not_recorded`, `abandoned` or `dropped`.
    pub fn kind(&self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Failed(_) => "error",
            Outcome::Panicked(_) => "panic",
            Outcome::TimedOut(_) => "timeout",
            Outcome::Halted(_) => "halt",
            Outcome::NotRecorded { .. } => "not_recorded",
            Outcome::Abandoned => "abandoned",
            Outcome::Dropped(_) => "dropped",
        }
    }
}

/// One handler's part of a [`DeliveryReport`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct HandlerOutcome {
    /// The subscription.
    pub subscription: SubscriptionId,
    /// Its name, if it has one.
    pub name: Option<String>,
    /// How the delivery ended.
    pub outcome: Outcome,
    /// How long the handler ran.
    pub elapsed: Duration,
}

/// Every handler an event reached, and how each delivery ended. Returned by
/// `emit_and_wait` once all of them finished.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DeliveryReport {
    /// The event.
    pub event_id: EventId,
    /// One entry per handler the event was delivered to (filters passed), in
    /// the order they finished.
    pub outcomes: Vec<HandlerOutcome>,
}

impl DeliveryReport {
    fn count(&self, f: impl Fn(&Outcome) -> bool) -> usize {
        self.outcomes.iter().filter(|o| f(&o.outcome)).count()
    }

    /// Handlers that succeeded.
    pub fn delivered(&self) -> usize {
        self.count(Outcome::is_delivered)
    }

    /// Handlers that returned an error or panicked.
    pub fn failed(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Failed(_) | Outcome::Panicked(_)))
    }

    /// Handlers that timed out.
    pub fn timed_out(&self) -> usize {
        self.count(|o| matches!(o, Outcome::TimedOut(_)))
    }

    /// Deliveries dropped by a full queue.
    pub fn dropped(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Dropped(_)))
    }

    /// Deliveries abandoned before they ran.
    pub fn abandoned(&self) -> usize {
        self.count(|o| matches!(o, Outcome::Abandoned))
    }

    /// Whether every handler succeeded.
    pub fn is_success(&self) -> bool {
        self.outcomes.iter().all(|o| o.outcome.is_delivered())
    }
}

/// Where `emit_and_wait` collects the outcomes of one event's deliveries.
/// Every delivery made for the wait holds a clone and reports through it
/// once; the wait ends when the last clone is dropped, with one wake-up.
pub(crate) struct Waiter(Arc<Collected>);

struct Collected {
    outcomes: Mutex<Vec<HandlerOutcome>>,
    /// Live `Waiter`s.
    handles: AtomicUsize,
    waker: AtomicWaker,
}

impl Waiter {
    /// A waiter, and the future of its outcomes.
    pub(crate) fn new() -> (Self, Outcomes) {
        let collected = Arc::new(Collected {
            // Room for one outcome: most waits reach one handler, and
            // growing an empty `Vec` on the first report costs more.
            outcomes: Mutex::new(Vec::with_capacity(1)),
            handles: AtomicUsize::new(1),
            waker: AtomicWaker::new(),
        });
        (Self(collected.clone()), Outcomes(Some(collected)))
    }

    pub(crate) fn send(&self, outcome: HandlerOutcome) {
        self.0
            .outcomes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(outcome);
    }
}

impl Clone for Waiter {
    fn clone(&self) -> Self {
        self.0.handles.fetch_add(1, Ordering::Relaxed);
        Self(self.0.clone())
    }
}

impl Drop for Waiter {
    fn drop(&mut self) {
        if self.0.handles.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.waker.wake();
        }
    }
}

/// The outcomes a [`Waiter`] collects, in the order they were reported,
/// once every delivery has reported.
pub(crate) struct Outcomes(Option<Arc<Collected>>);

impl Future for Outcomes {
    type Output = Vec<HandlerOutcome>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let Some(collected) = &self.0 else {
            // Polled again after it was ready: nothing more to report.
            return Poll::Ready(Vec::new());
        };
        if collected.handles.load(Ordering::Acquire) != 0 {
            collected.waker.register(cx.waker());
            // Looked at again after registering: a drop in between woke
            // no one.
            if collected.handles.load(Ordering::Acquire) != 0 {
                return Poll::Pending;
            }
        }
        let Some(collected) = self.0.take() else {
            return Poll::Ready(Vec::new());
        };
        // Every `Waiter` is gone, so this is usually the last reference:
        // then the outcomes are taken without the lock.
        let outcomes = match Arc::try_unwrap(collected) {
            Ok(collected) => collected
                .outcomes
                .into_inner()
                .unwrap_or_else(PoisonError::into_inner),
            Err(shared) => std::mem::take(
                &mut *shared
                    .outcomes
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner),
            ),
        };
        Poll::Ready(outcomes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::HandlerError;
    use nerve_core::sink::SinkError;

    #[test]
    fn each_kind_of_handler_error_has_its_outcome() {
        assert_eq!(
            Outcome::of_error(HandlerError::new("bad")),
            Outcome::Failed("bad".to_owned())
        );
        assert_eq!(
            Outcome::of_error(HandlerError::halt("stop")),
            Outcome::Halted("stop".to_owned())
        );
        let error = SinkError::new(SinkErrorKind::Timeout, "no acknowledgement in 5s");
        let outcome = Outcome::of_error(HandlerError::not_recorded(&error));
        assert_eq!(
            outcome,
            Outcome::NotRecorded {
                kind: SinkErrorKind::Timeout,
                reason: "no acknowledgement in 5s".to_owned()
            }
        );
        assert_eq!(outcome.kind(), "not_recorded");
        assert!(!outcome.is_failure());
        assert_eq!(
            serde_json::to_value(&outcome).unwrap(),
            serde_json::json!({"status": "not_recorded", "detail": {"kind": "timeout", "reason": "no acknowledgement in 5s"}})
        );
    }
}
