//! The dead letter queue: deliveries that failed, kept for inspection and
//! retry.
//!
//! A [`DeadLetterQueue`] attached with
//! [`BusBuilder::dead_letters`](crate::BusBuilder::dead_letters) receives an
//! entry for every handler error, panic and timeout, every event a full
//! queue dropped, every event refused by the naming rules, every event the
//! journal could not serialize, and (opt-in) every event no subscription
//! matched. [`retry`](DeadLetterQueue::retry) redelivers an entry's event to
//! the subscription that failed, and only to it.

use std::collections::{BTreeMap, VecDeque};
use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

use nerve_core::{Event, Timestamp};
use serde::{Deserialize, Serialize};

use crate::subscribe::SubscriptionId;

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
    /// No subscription matched the event (opt-in:
    /// [`DeadLetterQueue::record_unrouted`]).
    NoSubscriber,
    /// A delivery outside the bus failed, such as an alert sink giving up
    /// after its retries; added with [`DeadLetterQueue::record`].
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
    pub(crate) targets: Vec<SubscriptionId>,
}

/// How a queue reaches the bus it is attached to, to retry an entry: the
/// bus's redelivery, and nothing else of it.
pub(crate) trait Redeliver: Send + Sync {
    /// Redelivers `entry`'s event (see [`DeadLetterQueue::retry`]); `Err`
    /// with the failure's text.
    fn redeliver<'a>(
        &'a self,
        entry: &'a DeadLetter,
    ) -> futures::future::BoxFuture<'a, Result<(), String>>;
}

/// A failure as the bus reports it to the queue.
pub(crate) struct Failure {
    pub(crate) event: Event,
    pub(crate) subscription: Option<(SubscriptionId, Option<String>)>,
    pub(crate) reason: DeadLetterReason,
    pub(crate) error: String,
    pub(crate) targets: Vec<SubscriptionId>,
}

/// The queue's counts, as [`DeadLetterQueue::stats`] returns them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct DeadLetterStats {
    /// Entries held now.
    pub size: usize,
    /// Entries held at most.
    pub max_size: usize,
    /// Entries held now, by reason.
    pub by_reason: BTreeMap<&'static str, usize>,
    /// Entries held now, by event type.
    pub by_event_type: BTreeMap<String, usize>,
    /// Entries added since the queue was made (restored ones not included).
    pub added: u64,
    /// Entries evicted, oldest first, to make room.
    pub evicted: u64,
    /// Entries removed by a successful retry.
    pub retried_ok: u64,
    /// Retries that failed again.
    pub retried_failed: u64,
    /// Persistence writes that failed (the entry is still held in memory).
    pub persist_errors: u64,
    /// Lines of the persistence file that could not be read on restore.
    pub corrupt_lines: u64,
}

/// What [`DeadLetterQueue::retry_all`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[non_exhaustive]
pub struct RetrySummary {
    /// Entries whose retry succeeded (removed from the queue).
    pub succeeded: Vec<u64>,
    /// Entries whose retry failed again (kept, one attempt more).
    pub failed: Vec<u64>,
    /// Entries not retried because they had `max_attempts` attempts already.
    pub skipped: Vec<u64>,
}

/// A retry did not succeed.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RetryError {
    /// No entry has this id.
    #[error("no dead letter with id {0}")]
    NotFound(u64),
    /// Another retry of this entry is running.
    #[error("dead letter {0} is being retried already")]
    InProgress(u64),
    /// The queue is not attached to a live bus.
    #[error("the dead letter queue is not attached to a running bus")]
    NoBus,
    /// The redelivery failed; the entry is kept with one attempt more.
    #[error("retry of dead letter {id} failed (attempt {attempts}): {error}")]
    Failed {
        /// The entry.
        id: u64,
        /// Its attempts now.
        attempts: u32,
        /// Why it failed this time.
        error: String,
    },
}

/// Where a persistent queue keeps its entries.
struct Store {
    path: PathBuf,
    file: BufWriter<File>,
    /// Lines appended since the last compaction.
    lines: usize,
}

/// Turns an event into what may be written to disk.
type RedactFn = Arc<dyn Fn(&Event) -> Event + Send + Sync>;

struct State {
    entries: VecDeque<DeadLetter>,
    next_id: u64,
    stats: DeadLetterStats,
    store: Option<Store>,
    redact: Option<RedactFn>,
}

struct Inner {
    max_size: usize,
    record_unrouted: AtomicBool,
    state: Mutex<State>,
    bus: Mutex<Option<Weak<dyn Redeliver>>>,
    /// Entries being retried, so a concurrent retry of the same entry waits
    /// its turn instead of delivering twice.
    retrying: Mutex<Vec<u64>>,
    added: AtomicU64,
}

/// Failed deliveries, kept for inspection and retry.
///
/// A queue attached with [`BusBuilder::dead_letters`](crate::BusBuilder::dead_letters)
/// receives an entry for every handler error, panic and timeout, every event
/// a full queue dropped, every event refused by the naming rules, every event
/// the journal could not serialize, and (opt-in) every event no subscription
/// matched. [`retry`](DeadLetterQueue::retry) redelivers an entry's event to
/// the subscription that failed, and only to it; after a restart, to the
/// subscription with the same name.
///
/// Cheap to clone: clones share one queue. Attach it to one bus with
/// [`BusBuilder::dead_letters`](crate::BusBuilder::dead_letters).
///
/// ```
/// use nerve::{Bus, DeadLetterQueue, DeadLetterReason, HandlerError};
/// use nerve::Event;
///
/// let dlq = DeadLetterQueue::new(1000);
/// let bus = Bus::builder().dead_letters(dlq.clone()).build()?;
/// bus.subscribe("test.*", |e: &Event| -> Result<(), HandlerError> {
///     if e.data()["fail"] == true { Err(HandlerError::new("simulated")) } else { Ok(()) }
/// })?;
/// bus.emit("test.event", nerve::json!({"fail": true}))?;
/// assert_eq!(dlq.len(), 1);
/// assert_eq!(dlq.by_reason(DeadLetterReason::HandlerError).len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
///  # Persistence
///
///  [`DeadLetterQueue::persistent`] keeps the entries in a JSONL file, one
///  operation a line, so they survive a restart:
///
///  ```text
///  {"op":"put","entry":{"id":1,"event":{...},"subscription_id":3,"subscription_name":"billing","reason":"handler_error","error":"card declined","attempts":1,"first_failure":"2026-11-23T10:00:00.000000Z","last_failure":"2026-11-23T10:00:00.000000Z"}}
///  {"op":"remove","id":1}
///  ```
///
///  `put` adds or replaces an entry (a failed retry rewrites it with one more
///  attempt), `remove` deletes one, `clear` deletes all. On open the file is
///  replayed, then rewritten compacted (to a temporary file renamed over it,
///  so a crash leaves either the old or the new file). A torn last line (a
///  crash mid-append) is skipped and counted in [`DeadLetterStats::corrupt_lines`].
#[derive(Clone)]
pub struct DeadLetterQueue {
    inner: Arc<Inner>,
}

impl fmt::Debug for DeadLetterQueue {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DeadLetterQueue")
            .field("len", &self.len())
            .field("max_size", &self.inner.max_size)
            .finish_non_exhaustive()
    }
}

impl DeadLetterQueue {
    /// An in-memory queue holding at most `max_size` entries (at least 1);
    /// the oldest is evicted, and counted, to make room.
    pub fn new(max_size: usize) -> Self {
        Self::with_state(max_size, VecDeque::new(), 1, None, 0)
    }

    /// A queue kept in the JSONL file at `path`, restored from it if it
    /// exists (see [Persistence](DeadLetterQueue#persistence) for the format).
    ///
    /// # Errors
    ///
    /// An I/O error when the file cannot be read, rewritten or opened.
    pub fn persistent(path: impl AsRef<Path>, max_size: usize) -> std::io::Result<Self> {
        let path = path.as_ref().to_path_buf();
        let max_size = max_size.max(1);
        let (entries, corrupt) = restore(&path, max_size)?;
        let next_id = entries.iter().map(|e| e.id).max().unwrap_or(0) + 1;
        let store = compact(&path, &entries, None)?;
        Ok(Self::with_state(
            max_size,
            entries,
            next_id,
            Some(store),
            corrupt,
        ))
    }

    fn with_state(
        max_size: usize,
        entries: VecDeque<DeadLetter>,
        next_id: u64,
        store: Option<Store>,
        corrupt_lines: u64,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                max_size: max_size.max(1),
                record_unrouted: AtomicBool::new(false),
                state: Mutex::new(State {
                    entries,
                    next_id,
                    stats: DeadLetterStats {
                        corrupt_lines,
                        ..DeadLetterStats::default()
                    },
                    store,
                    redact: None,
                }),
                bus: Mutex::new(None),
                retrying: Mutex::new(Vec::new()),
                added: AtomicU64::new(0),
            }),
        }
    }

    /// Also records events that no subscription matched (reason
    /// [`NoSubscriber`](DeadLetterReason::NoSubscriber)); `system.*` events
    /// are never recorded so. Call before attaching the queue to a bus.
    #[must_use]
    pub fn record_unrouted(self) -> Self {
        self.inner.record_unrouted.store(true, Ordering::Relaxed);
        self
    }

    /// Passes every event through `redact` before it is written to the
    /// persistence file (the entries in memory keep the original, so a retry
    /// delivers what failed; entries restored after a restart carry the
    /// redacted event). With the `redact` feature of nerve-core:
    /// `dlq.redact_with(move |e| redactor.redact_event(e))`.
    #[must_use]
    pub fn redact_with(self, redact: impl Fn(&Event) -> Event + Send + Sync + 'static) -> Self {
        self.lock().redact = Some(Arc::new(redact));
        self
    }

    pub(crate) fn records_unrouted(&self) -> bool {
        self.inner.record_unrouted.load(Ordering::Relaxed)
    }

    pub(crate) fn attach(&self, bus: Weak<dyn Redeliver>) {
        *self
            .inner
            .bus
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(bus);
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Entries held now.
    pub fn len(&self) -> usize {
        self.lock().entries.len()
    }

    /// Whether the queue is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The most entries held.
    pub fn max_size(&self) -> usize {
        self.inner.max_size
    }

    /// Every entry, oldest first.
    pub fn entries(&self) -> Vec<DeadLetter> {
        self.lock().entries.iter().cloned().collect()
    }

    /// The entry with this id.
    pub fn get(&self, id: u64) -> Option<DeadLetter> {
        self.lock().entries.iter().find(|e| e.id == id).cloned()
    }

    /// Entries with this reason, oldest first.
    pub fn by_reason(&self, reason: DeadLetterReason) -> Vec<DeadLetter> {
        self.filtered(|e| e.reason == reason)
    }

    /// Entries whose event has this type, oldest first.
    pub fn by_event_type(&self, event_type: &str) -> Vec<DeadLetter> {
        self.filtered(|e| e.event.event_type() == event_type)
    }

    fn filtered(&self, keep: impl Fn(&DeadLetter) -> bool) -> Vec<DeadLetter> {
        self.lock()
            .entries
            .iter()
            .filter(|e| keep(e))
            .cloned()
            .collect()
    }

    /// Counts by reason and event type, and what was evicted.
    pub fn stats(&self) -> DeadLetterStats {
        let state = self.lock();
        let mut stats = state.stats.clone();
        stats.size = state.entries.len();
        stats.max_size = self.inner.max_size;
        stats.added = self.inner.added.load(Ordering::Relaxed);
        for e in &state.entries {
            *stats.by_reason.entry(e.reason.as_str()).or_default() += 1;
            *stats
                .by_event_type
                .entry(e.event.event_type().to_owned())
                .or_default() += 1;
        }
        stats
    }

    /// Removes every entry.
    pub fn clear(&self) {
        let mut state = self.lock();
        state.entries.clear();
        persist(&mut state, &Op::Clear);
    }

    /// Removes entries whose last failure is older than `age`; returns how
    /// many.
    pub fn clear_older_than(&self, age: Duration) -> usize {
        let cutoff_micros = Timestamp::now()
            .as_micros()
            .saturating_sub(i64::try_from(age.as_micros()).unwrap_or(i64::MAX));
        let mut state = self.lock();
        let old: Vec<u64> = state
            .entries
            .iter()
            .filter(|e| e.last_failure.as_micros() < cutoff_micros)
            .map(|e| e.id)
            .collect();
        state.entries.retain(|e| !old.contains(&e.id));
        for id in &old {
            persist(&mut state, &Op::Remove { id: *id });
        }
        old.len()
    }

    /// Adds an entry for a delivery that failed outside the bus (an alert
    /// sink, a bridge), with reason
    /// [`DeliveryFailed`](DeadLetterReason::DeliveryFailed); `target` names
    /// what failed (shown as the entry's `subscription_name`). Returns the
    /// entry's id.
    ///
    /// Such an entry belongs to no subscription, so
    /// [`retry`](Self::retry) re-emits its event to the bus.
    ///
    /// ```
    /// use nerve::{DeadLetterQueue, DeadLetterReason};
    /// use nerve::Event;
    ///
    /// let dlq = DeadLetterQueue::new(10);
    /// let event = Event::builder("run.failed").build()?;
    /// let id = dlq.record(event, Some("alert:webhook".into()), "HTTP 503");
    /// let entry = dlq.get(id).unwrap();
    /// assert_eq!(entry.reason, DeadLetterReason::DeliveryFailed);
    /// assert_eq!(entry.subscription_name.as_deref(), Some("alert:webhook"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn record(&self, event: Event, target: Option<String>, error: impl Into<String>) -> u64 {
        self.record_attempts(event, target, error, 1)
    }

    /// [`record`](Self::record) for a delivery that was already tried
    /// `attempts` times (at least 1 is recorded), so that the entry's
    /// [`attempts`](DeadLetter::attempts) says how often it failed.
    pub fn record_attempts(
        &self,
        event: Event,
        target: Option<String>,
        error: impl Into<String>,
        attempts: u32,
    ) -> u64 {
        self.insert(
            event,
            (None, target),
            DeadLetterReason::DeliveryFailed,
            error.into(),
            Vec::new(),
            attempts.max(1),
        )
    }

    /// Adds a failure, evicting the oldest entry if full.
    pub(crate) fn push(&self, failure: Failure) {
        let subscription = match failure.subscription {
            Some((id, name)) => (Some(id), name),
            None => (None, None),
        };
        self.insert(
            failure.event,
            subscription,
            failure.reason,
            failure.error,
            failure.targets,
            1,
        );
    }

    /// Adds an entry, evicting the oldest if full; returns its id.
    fn insert(
        &self,
        event: Event,
        (subscription_id, subscription_name): (Option<SubscriptionId>, Option<String>),
        reason: DeadLetterReason,
        error: String,
        targets: Vec<SubscriptionId>,
        attempts: u32,
    ) -> u64 {
        let now = Timestamp::now();
        let mut state = self.lock();
        let id = state.next_id;
        state.next_id += 1;
        let entry = DeadLetter {
            id,
            event,
            subscription_id,
            subscription_name,
            reason,
            error,
            attempts,
            first_failure: now,
            last_failure: now,
            targets,
        };
        persist(&mut state, &Op::Put { entry: &entry });
        state.entries.push_back(entry);
        self.inner.added.fetch_add(1, Ordering::Relaxed);
        while state.entries.len() > self.inner.max_size {
            if let Some(old) = state.entries.pop_front() {
                state.stats.evicted += 1;
                persist(&mut state, &Op::Remove { id: old.id });
            }
        }
        id
    }

    /// Redelivers entry `id`'s event to the subscription that failed (for
    /// entries that belong to no subscription: re-emits it to the bus) and
    /// waits for the outcome. On success the entry is removed; on failure it
    /// is kept with `attempts + 1` and the failure is returned.
    ///
    /// A retry that fails does not add a new entry, and is counted in
    /// [`DeadLetterStats::retried_failed`].
    ///
    /// # Errors
    ///
    /// [`RetryError`]: no such entry, no bus, or the redelivery failed.
    pub async fn retry(&self, id: u64) -> Result<(), RetryError> {
        let Some(_turn) = RetryTurn::take(&self.inner, id) else {
            return Err(RetryError::InProgress(id));
        };
        let entry = self.get(id).ok_or(RetryError::NotFound(id))?;
        let bus = self.bus()?;
        let result = bus.redeliver(&entry).await;
        self.settle(entry, result)
    }

    /// The blocking twin of [`retry`](Self::retry), for sync code. Inside a
    /// tokio runtime use `retry(id).await`.
    ///
    /// # Errors
    ///
    /// As [`retry`](Self::retry).
    pub fn retry_blocking(&self, id: u64) -> Result<(), RetryError> {
        futures::executor::block_on(self.retry(id))
    }

    /// Retries every entry with fewer than `max_attempts` attempts, oldest
    /// first, one at a time; entries at `max_attempts` are skipped, never
    /// retried.
    pub async fn retry_all(&self, max_attempts: u32) -> RetrySummary {
        let mut summary = RetrySummary::default();
        for entry in self.entries() {
            if entry.attempts >= max_attempts {
                summary.skipped.push(entry.id);
                continue;
            }
            match self.retry(entry.id).await {
                Ok(()) => summary.succeeded.push(entry.id),
                Err(RetryError::NotFound(_)) => {}
                Err(_) => summary.failed.push(entry.id),
            }
        }
        summary
    }

    /// The blocking twin of [`retry_all`](Self::retry_all).
    pub fn retry_all_blocking(&self, max_attempts: u32) -> RetrySummary {
        futures::executor::block_on(self.retry_all(max_attempts))
    }

    fn bus(&self) -> Result<Arc<dyn Redeliver>, RetryError> {
        self.inner
            .bus
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .as_ref()
            .and_then(Weak::upgrade)
            .ok_or(RetryError::NoBus)
    }

    fn settle(&self, entry: DeadLetter, result: Result<(), String>) -> Result<(), RetryError> {
        let mut state = self.lock();
        let Some(at) = state.entries.iter().position(|e| e.id == entry.id) else {
            return match result {
                Ok(()) => Ok(()),
                Err(_) => Err(RetryError::NotFound(entry.id)),
            };
        };
        match result {
            Ok(()) => {
                state.entries.remove(at);
                state.stats.retried_ok += 1;
                persist(&mut state, &Op::Remove { id: entry.id });
                Ok(())
            }
            Err(error) => {
                state.stats.retried_failed += 1;
                let updated = {
                    let e = &mut state.entries[at];
                    e.attempts += 1;
                    e.last_failure = Timestamp::now();
                    e.error.clone_from(&error);
                    e.clone()
                };
                persist(&mut state, &Op::Put { entry: &updated });
                Err(RetryError::Failed {
                    id: entry.id,
                    attempts: updated.attempts,
                    error,
                })
            }
        }
    }
}

/// Marks an entry as being retried; a second retry of it waits.
struct RetryTurn<'a> {
    inner: &'a Inner,
    id: u64,
}

impl<'a> RetryTurn<'a> {
    fn take(inner: &'a Inner, id: u64) -> Option<Self> {
        let mut retrying = inner
            .retrying
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if retrying.contains(&id) {
            return None;
        }
        retrying.push(id);
        Some(Self { inner, id })
    }
}

impl Drop for RetryTurn<'_> {
    fn drop(&mut self) {
        self.inner
            .retrying
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|i| *i != self.id);
    }
}

#[derive(Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum Op<'a> {
    Put { entry: &'a DeadLetter },
    Remove { id: u64 },
    Clear,
}

#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum OwnedOp {
    Put { entry: DeadLetter },
    Remove { id: u64 },
    Clear,
}

/// Appends one operation to the store, if any, compacting when the file has
/// grown well past what it holds.
fn persist(state: &mut State, op: &Op<'_>) {
    let redacted;
    let op = match (op, &state.redact) {
        (Op::Put { entry }, Some(redact)) => {
            redacted = DeadLetter {
                event: redact(&entry.event),
                ..(*entry).clone()
            };
            &Op::Put { entry: &redacted }
        }
        _ => op,
    };
    let Some(store) = state.store.as_mut() else {
        return;
    };
    let written = serde_json::to_vec(op)
        .map_err(std::io::Error::other)
        .and_then(|mut line| {
            line.push(b'\n');
            store.file.write_all(&line)?;
            store.file.flush()
        });
    store.lines += 1;
    if written.is_err() {
        state.stats.persist_errors += 1;
        tracing::warn!(path = %store.path.display(), "dead letter persistence failed");
        return;
    }
    if store.lines > 4 * state.entries.len() + 1024 {
        let entries = state.entries.clone();
        match compact(&store.path.clone(), &entries, state.redact.as_ref()) {
            Ok(fresh) => state.store = Some(fresh),
            Err(_) => state.stats.persist_errors += 1,
        }
    }
}

/// Replays the file at `path`: the entries it holds and the lines it could
/// not read.
fn restore(path: &Path, max_size: usize) -> std::io::Result<(VecDeque<DeadLetter>, u64)> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok((VecDeque::new(), 0)),
        Err(e) => return Err(e),
    };
    let mut entries: VecDeque<DeadLetter> = VecDeque::new();
    let mut corrupt = 0;
    for line in BufReader::new(file).split(b'\n') {
        let line = line?;
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<OwnedOp>(&line) {
            Ok(OwnedOp::Put { entry }) => match entries.iter_mut().find(|e| e.id == entry.id) {
                Some(slot) => *slot = entry,
                None => entries.push_back(entry),
            },
            Ok(OwnedOp::Remove { id }) => entries.retain(|e| e.id != id),
            Ok(OwnedOp::Clear) => entries.clear(),
            Err(_) => corrupt += 1,
        }
    }
    while entries.len() > max_size {
        entries.pop_front();
    }
    Ok((entries, corrupt))
}

/// Rewrites the file to hold exactly `entries`, atomically.
fn compact(
    path: &Path,
    entries: &VecDeque<DeadLetter>,
    redact: Option<&RedactFn>,
) -> std::io::Result<Store> {
    let tmp = path.with_extension("compact.tmp");
    {
        let mut out = BufWriter::new(File::create(&tmp)?);
        for entry in entries {
            let redacted;
            let entry = match redact {
                Some(redact) => {
                    redacted = DeadLetter {
                        event: redact(&entry.event),
                        ..entry.clone()
                    };
                    &redacted
                }
                None => entry,
            };
            serde_json::to_writer(&mut out, &Op::Put { entry })?;
            out.write_all(b"\n")?;
        }
        out.flush()?;
        out.get_ref().sync_all()?;
    }
    std::fs::rename(&tmp, path)?;
    let file = OpenOptions::new().append(true).create(true).open(path)?;
    Ok(Store {
        path: path.to_path_buf(),
        file: BufWriter::new(file),
        lines: entries.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn failure(n: u32, reason: DeadLetterReason) -> Failure {
        Failure {
            event: Event::builder("job.run")
                .data(serde_json::json!({ "n": n }))
                .build()
                .unwrap(),
            subscription: Some((SubscriptionId(7), Some("worker".into()))),
            reason,
            error: format!("failure {n}"),
            targets: Vec::new(),
        }
    }

    #[test]
    fn evicts_oldest_and_counts() {
        let dlq = DeadLetterQueue::new(2);
        for n in 0..5 {
            dlq.push(failure(n, DeadLetterReason::HandlerError));
        }
        let stats = dlq.stats();
        assert_eq!((stats.size, stats.evicted, stats.added), (2, 3, 5));
        let ids: Vec<u64> = dlq.entries().iter().map(|e| e.id).collect();
        assert_eq!(ids, [4, 5]);
        assert_eq!(stats.by_reason["handler_error"], 2);
        assert_eq!(stats.by_event_type["job.run"], 2);
    }

    #[test]
    fn record_adds_a_delivery_failure_without_a_subscription() {
        let dlq = DeadLetterQueue::new(10);
        dlq.push(failure(1, DeadLetterReason::HandlerError));
        let event = Event::builder("run.failed").build().unwrap();
        let id = dlq.record(event, Some("alert:webhook".into()), "HTTP 503");
        assert_eq!(id, 2);
        let entry = dlq.get(id).unwrap();
        assert_eq!(entry.reason, DeadLetterReason::DeliveryFailed);
        assert_eq!(entry.subscription_id, None);
        assert_eq!(entry.subscription_name.as_deref(), Some("alert:webhook"));
        assert_eq!((entry.error.as_str(), entry.attempts), ("HTTP 503", 1));
        assert_eq!(dlq.stats().by_reason["delivery_failed"], 1);
    }

    #[test]
    fn queries_and_clearing() {
        let dlq = DeadLetterQueue::new(10);
        dlq.push(failure(1, DeadLetterReason::HandlerError));
        dlq.push(failure(2, DeadLetterReason::HandlerTimeout));
        assert_eq!(dlq.by_reason(DeadLetterReason::HandlerTimeout).len(), 1);
        assert_eq!(dlq.by_event_type("job.run").len(), 2);
        assert_eq!(dlq.by_event_type("other.type").len(), 0);
        assert_eq!(dlq.clear_older_than(Duration::from_secs(3600)), 0);
        assert_eq!(dlq.clear_older_than(Duration::ZERO), 2);
        assert!(dlq.is_empty());
    }

    #[test]
    fn persistent_queue_survives_reopen_and_skips_a_torn_line() {
        let dir = std::env::temp_dir().join(format!("nerve-dlq-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("dead.jsonl");
        let _ = std::fs::remove_file(&path);
        {
            let dlq = DeadLetterQueue::persistent(&path, 10).unwrap();
            dlq.push(failure(1, DeadLetterReason::HandlerError));
            dlq.push(failure(2, DeadLetterReason::HandlerPanic));
            dlq.push(failure(3, DeadLetterReason::OverflowDrop));
            let mut state = dlq.lock();
            state.entries.retain(|e| e.id != 2);
            persist(&mut state, &Op::Remove { id: 2 });
        }
        // A crash mid-append leaves half a line.
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"op\":\"put\",\"entry\":{\"id\":9").unwrap();
        drop(f);
        let dlq = DeadLetterQueue::persistent(&path, 10).unwrap();
        let ids: Vec<u64> = dlq.entries().iter().map(|e| e.id).collect();
        assert_eq!(ids, [1, 3]);
        assert_eq!(dlq.stats().corrupt_lines, 1);
        assert_eq!(dlq.entries()[1].reason, DeadLetterReason::OverflowDrop);
        dlq.push(failure(4, DeadLetterReason::HandlerError));
        assert_eq!(
            dlq.entries()[2].id,
            4,
            "ids continue after the restored ones"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
