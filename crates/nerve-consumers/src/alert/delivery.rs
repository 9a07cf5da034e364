//! Delivery: the consumer's worker, which takes accepted alerts off the
//! channel and sends each to every sink with retries, and what it does when
//! a delivery fails (log, count, dead letter, `system.alert_failed`) or is
//! still under way when a terminal event's wait ends.
//!
//! The worker runs on a thread of its own with a current-thread tokio
//! runtime, unless the builder was given a runtime. So a terminal event
//! can block the emitting thread while it waits for the deliveries, wherever
//! that thread is (a plain thread, a tokio worker, a current-thread
//! runtime's only thread): nothing it waits for needs that thread.

use std::cell::Cell;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use nerve_core::Event;
use nerve_router::{DeadLetterQueue, WeakBus};
use serde_json::json;
use tokio::runtime::{Handle, Runtime};
use tokio::sync::{Semaphore, mpsc};

use super::ledger::Ledger;
use super::{ALERT_FAILED_EVENT, Alert, AlertError, AlertSink, MAX_CONCURRENT_DELIVERIES};

thread_local! {
    /// Set on the worker's thread, and while the worker publishes: a
    /// terminal event emitted there must not wait for the worker itself.
    static DELIVERING: Cell<bool> = const { Cell::new(false) };
}

/// Whether this thread is the worker's (or the worker is publishing on it).
pub(super) fn delivering() -> bool {
    DELIVERING.with(Cell::get)
}

/// Retries of a failed delivery: `attempts` in all, waiting `backoff`,
/// then twice as long each time, at most `max_backoff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Retry {
    pub(super) attempts: u32,
    pub(super) backoff: Duration,
    pub(super) max_backoff: Duration,
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) triggered: AtomicU64,
    pub(super) suppressed: AtomicU64,
    pub(super) dropped: AtomicU64,
    pub(super) delivered: AtomicU64,
    pub(super) failed: AtomicU64,
    pub(super) retries: AtomicU64,
    pub(super) overdue: AtomicU64,
}

/// What the worker needs: the sinks, how to retry, where failures go, the
/// counters and the ledger of open alerts.
pub(super) struct Delivery {
    pub(super) sinks: Vec<Arc<dyn AlertSink>>,
    pub(super) retry: Retry,
    pub(super) dead_letters: Option<DeadLetterQueue>,
    pub(super) counters: Counters,
    pub(super) ledger: Ledger,
}

/// An alert on its way to the sinks, with the event for dead letters and
/// the bus for `system.alert_failed`.
pub(super) struct Job {
    pub(super) ticket: u64,
    pub(super) alert: Alert,
    pub(super) event: Event,
    pub(super) bus: WeakBus,
    /// One per sink, in the consumer's order.
    progress: Mutex<Vec<SinkProgress>>,
}

/// How one sink's delivery of a job stands.
#[derive(Debug, Clone, Default)]
struct SinkProgress {
    attempts: u32,
    last_error: Option<String>,
    done: bool,
    /// A dead letter was recorded for it (at most one per alert and sink).
    dead_lettered: bool,
}

impl Job {
    pub(super) fn new(ticket: u64, alert: Alert, event: Event, bus: WeakBus, sinks: usize) -> Self {
        Self {
            ticket,
            alert,
            event,
            bus,
            progress: Mutex::new(vec![SinkProgress::default(); sinks]),
        }
    }

    fn update<R>(&self, sink: usize, f: impl FnOnce(&mut SinkProgress) -> R) -> Option<R> {
        let mut progress = self.progress.lock().unwrap_or_else(PoisonError::into_inner);
        progress.get_mut(sink).map(f)
    }

    /// The dead letter's target: which rule and sink failed.
    fn target(&self, sink: &dyn AlertSink) -> String {
        format!("alert:{}:{}", self.alert.rule, sink.name())
    }
}

/// Where the worker runs.
pub(super) enum Worker {
    /// A thread of its own, driving this runtime.
    Own(Runtime),
    /// A task on the runtime the builder was given.
    Shared(Handle),
}

impl Worker {
    /// The worker's runtime: `handle`'s, or a new current-thread runtime.
    pub(super) fn new(handle: Option<Handle>) -> std::io::Result<Self> {
        match handle {
            Some(handle) => Ok(Self::Shared(handle)),
            None => tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .map(Self::Own),
        }
    }

    /// Starts taking jobs off `rx`; the worker ends once every sender is
    /// gone and the deliveries under way are done.
    pub(super) fn start(
        self,
        delivery: Arc<Delivery>,
        rx: mpsc::Receiver<Arc<Job>>,
    ) -> std::io::Result<()> {
        match self {
            Self::Shared(handle) => {
                handle.spawn(deliver_all(delivery, rx));
                Ok(())
            }
            Self::Own(runtime) => std::thread::Builder::new()
                .name("nerve-alerts".to_owned())
                .spawn(move || {
                    DELIVERING.with(|d| d.set(true));
                    runtime.block_on(deliver_all(delivery, rx));
                })
                .map(drop),
        }
    }
}

/// Settles a job's ticket when dropped, so a sink that panics cannot leave
/// it open.
struct Settle<'a>(&'a Ledger, u64);

impl Drop for Settle<'_> {
    fn drop(&mut self) {
        self.0.settle(self.1);
    }
}

/// The worker: each alert to every sink, up to
/// [`MAX_CONCURRENT_DELIVERIES`] alerts at once.
async fn deliver_all(delivery: Arc<Delivery>, mut rx: mpsc::Receiver<Arc<Job>>) {
    let permits = Arc::new(Semaphore::new(MAX_CONCURRENT_DELIVERIES));
    while let Some(job) = rx.recv().await {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            break;
        };
        let delivery = delivery.clone();
        tokio::spawn(async move {
            let _settle = Settle(&delivery.ledger, job.ticket);
            let sends = delivery
                .sinks
                .iter()
                .enumerate()
                .map(|(index, sink)| delivery.deliver(index, sink.as_ref(), &job));
            futures::future::join_all(sends).await;
            drop(permit);
        });
    }
    // The deliveries under way finish before the runtime goes.
    #[allow(clippy::cast_possible_truncation)] // A small constant.
    let _all = permits.acquire_many(MAX_CONCURRENT_DELIVERIES as u32).await;
}

impl Delivery {
    /// One sink, one alert, with retries; a final failure goes to
    /// [`failed`](Self::failed).
    async fn deliver(&self, index: usize, sink: &dyn AlertSink, job: &Job) {
        let mut backoff = self.retry.backoff;
        let mut attempt = 1;
        loop {
            let error = match sink.send(&job.alert).await {
                Ok(()) => {
                    self.counters.delivered.fetch_add(1, Ordering::Relaxed);
                    job.update(index, |p| {
                        p.attempts = attempt;
                        p.done = true;
                    });
                    return;
                }
                Err(e) => e,
            };
            job.update(index, |p| {
                p.attempts = attempt;
                p.last_error = Some(error.to_string());
            });
            if error.is_permanent() || attempt >= self.retry.attempts {
                self.failed(index, sink, job, attempt, &error);
                return;
            }
            self.counters.retries.fetch_add(1, Ordering::Relaxed);
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(self.retry.max_backoff);
            attempt += 1;
        }
    }

    /// A delivery failed for good: logged at warn, counted, dead-lettered
    /// (unless a terminal event's wait already did) and published as
    /// `system.alert_failed`.
    fn failed(
        &self,
        index: usize,
        sink: &dyn AlertSink,
        job: &Job,
        attempts: u32,
        error: &AlertError,
    ) {
        self.counters.failed.fetch_add(1, Ordering::Relaxed);
        tracing::warn!(
            rule = %job.alert.rule,
            sink = sink.name(),
            attempts,
            %error,
            event_type = %job.alert.event_type,
            event_id = %job.alert.event_id,
            "alert delivery failed"
        );
        let recorded = job
            .update(index, |p| {
                p.done = true;
                std::mem::replace(&mut p.dead_lettered, true)
            })
            .unwrap_or(true);
        if let (false, Some(dlq)) = (recorded, &self.dead_letters) {
            dlq.add_attempts(
                job.event.clone(),
                Some(job.target(sink)),
                format!("after {attempts} attempts: {error}"),
                attempts,
            );
        }
        publish_failure(job, sink.name(), attempts, &error.to_string(), false);
    }

    /// A terminal event's wait ended with `jobs` still open: every delivery
    /// of theirs still under way is recorded as a dead letter saying so
    /// (on disk, when the queue is persistent), logged and counted as
    /// overdue, so an exit right after the terminal event leaves a trace.
    /// The deliveries go on; one that fails later is not dead-lettered
    /// twice.
    pub(super) fn overdue(&self, jobs: &[Arc<Job>], terminal: &Event, waited: Duration) {
        for job in jobs {
            for (index, sink) in self.sinks.iter().enumerate() {
                let Some(Some((attempts, last_error))) = job.update(index, |p| {
                    if p.done || p.dead_lettered {
                        return None;
                    }
                    p.dead_lettered = true;
                    Some((p.attempts, p.last_error.clone()))
                }) else {
                    continue;
                };
                self.counters.overdue.fetch_add(1, Ordering::Relaxed);
                let why = match last_error {
                    Some(error) => format!(
                        "not delivered within the {waited:?} that {} waited for it \
                         ({attempts} attempts so far, last error: {error})",
                        terminal.event_type()
                    ),
                    None => format!(
                        "not delivered within the {waited:?} that {} waited for it \
                         (first attempt still under way)",
                        terminal.event_type()
                    ),
                };
                tracing::warn!(
                    rule = %job.alert.rule,
                    sink = sink.name(),
                    event_type = %job.alert.event_type,
                    reason = %why,
                    "alert still undelivered when a terminal event stopped waiting"
                );
                // On disk whether or not a dead letter queue is attached:
                // published durable, so the journal has it before the
                // terminal event's `emit` returns.
                publish_failure(job, sink.name(), attempts, &why, true);
                if let Some(dlq) = &self.dead_letters {
                    dlq.add_attempts(
                        job.event.clone(),
                        Some(job.target(sink.as_ref())),
                        why,
                        attempts,
                    );
                }
            }
        }
    }
}

/// Publishes `system.alert_failed` on the bus the alert's event came from;
/// `overdue`: the delivery is still under way when a terminal event stopped
/// waiting for it (then the event is marked terminal, so the journal has it
/// before that `emit` returns). An alert raised by a `system.alert_failed`
/// event is not announced again when it fails (logged and counted only), so
/// a failing sink cannot loop.
fn publish_failure(job: &Job, sink: &str, attempts: u32, error: &str, overdue: bool) {
    if job.event.event_type() == ALERT_FAILED_EVENT {
        return;
    }
    let alert = &job.alert;
    let mut builder = Event::builder(ALERT_FAILED_EVENT)
        .data(json!({
            "sink": sink,
            "rule": alert.rule,
            "key": alert.key,
            "error": error,
            "attempts": attempts,
            "overdue": overdue,
            "event_id": alert.event_id,
            "event_type": alert.event_type,
            "run_id": alert.run_id,
        }))
        .causation_id(job.event.event_id());
    if let Some(run) = job.event.run_id() {
        builder = builder.run_id(run);
    }
    if let Some(correlation) = job.event.correlation_id() {
        builder = builder.correlation_id(correlation);
    }
    if overdue {
        builder = builder.terminal();
    }
    let was = DELIVERING.with(|d| d.replace(true));
    let published = builder
        .build()
        .map_err(|e| e.to_string())
        .and_then(|event| match job.bus.upgrade() {
            Some(bus) => bus.emit_event(event).map_err(|e| e.to_string()),
            None => Err("the bus is gone".to_owned()),
        });
    DELIVERING.with(|d| d.set(was));
    if let Err(error) = published {
        tracing::warn!(%error, "{ALERT_FAILED_EVENT} not published");
    }
}
