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
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};
use std::time::Duration;

pub use nerve_core::dead_letter::{
    DeadLetter, DeadLetterReason, DeadLetterStore, DeadLetterStoreError,
};
use nerve_core::{Event, Timestamp};
use serde::Serialize;

use nerve_core::SubscriptionId;

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
    /// Changes the store could not take or write (the entry is still held in
    /// memory), including the store's own
    /// [`write_errors`](DeadLetterStore::write_errors).
    pub persist_errors: u64,
    /// Records the store could not read when it was opened
    /// ([`DeadLetterStore::unreadable`]).
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

/// Turns an event into what may be written to disk.
type RedactFn = Arc<dyn Fn(&Event) -> Event + Send + Sync>;

struct State {
    entries: VecDeque<DeadLetter>,
    next_id: u64,
    stats: DeadLetterStats,
    store: Option<Box<dyn DeadLetterStore>>,
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
/// # Persistence
///
/// [`DeadLetterQueue::with_store`] keeps the entries in a
/// [`DeadLetterStore`] as well, so they survive a restart: the queue takes
/// the store's entries when it is made, then tells the store every change,
/// in order. The journal's dead letter file (`DeadLetterJournal`, feature
/// `journal` of `nerve`) is the store nerve ships; `docs/journal-format.md`
/// specifies its format.
///
/// ```
/// use nerve::DeadLetterQueue;
/// use nerve::journal::DeadLetterJournal;
///
/// # let dir = tempfile::tempdir()?;
/// # let path = dir.path().join("dead_letters.jsonl");
/// let store = DeadLetterJournal::builder(&path).build()?;
/// let dlq = DeadLetterQueue::with_store(store, 1000);
/// dlq.add(nerve::Event::builder("run.failed").build()?, None, "HTTP 503");
/// drop(dlq);
/// let reopened = DeadLetterQueue::with_store(DeadLetterJournal::builder(&path).build()?, 1000);
/// assert_eq!(reopened.len(), 1);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
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

    /// A queue whose entries `store` keeps as well, restored from it: the
    /// newest `max_size` of the store's entries (at least 1) are held, and
    /// ids continue after the highest restored. See
    /// [Persistence](DeadLetterQueue#persistence).
    pub fn with_store(store: impl DeadLetterStore, max_size: usize) -> Self {
        let max_size = max_size.max(1);
        let mut entries: VecDeque<DeadLetter> = store.restore().into();
        while entries.len() > max_size {
            if let Some(old) = entries.pop_front() {
                let _ = store.remove(old.id);
            }
        }
        let next_id = entries.iter().map(|e| e.id).max().unwrap_or(0) + 1;
        let corrupt = store.unreadable();
        Self::with_state(max_size, entries, next_id, Some(Box::new(store)), corrupt)
    }

    fn with_state(
        max_size: usize,
        entries: VecDeque<DeadLetter>,
        next_id: u64,
        store: Option<Box<dyn DeadLetterStore>>,
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

    /// Passes every event through `redact` before it is given to the
    /// [store](DeadLetterQueue::with_store) (the entries in memory keep the original, so a retry
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
        if let Some(store) = &state.store {
            stats.persist_errors += store.write_errors();
        }
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
        state.store_clear();
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
            state.store_remove(*id);
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
    /// let id = dlq.add(event, Some("alert:webhook".into()), "HTTP 503");
    /// let entry = dlq.get(id).unwrap();
    /// assert_eq!(entry.reason, DeadLetterReason::DeliveryFailed);
    /// assert_eq!(entry.subscription_name.as_deref(), Some("alert:webhook"));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn add(&self, event: Event, target: Option<String>, error: impl Into<String>) -> u64 {
        self.add_attempts(event, target, error, 1)
    }

    /// [`add`](Self::add) for a delivery that was already tried
    /// `attempts` times (at least 1 is kept), so that the entry's
    /// [`attempts`](DeadLetter::attempts) says how often it failed.
    pub fn add_attempts(
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
        let mut entry = DeadLetter::new(id, event, reason, error, now);
        entry.subscription_id = subscription_id;
        entry.subscription_name = subscription_name;
        entry.attempts = attempts;
        entry.targets = targets;
        state.store_put(&entry);
        state.entries.push_back(entry);
        self.inner.added.fetch_add(1, Ordering::Relaxed);
        while state.entries.len() > self.inner.max_size {
            if let Some(old) = state.entries.pop_front() {
                state.stats.evicted += 1;
                state.store_remove(old.id);
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
    /// An [`AllHandlersFailed`](DeadLetterReason::AllHandlersFailed) entry
    /// goes to each subscription in its `targets`, by id, in order, and
    /// stops at the first that fails. Those ids are the bus's that made the
    /// entry: for an entry restored from a store by a later bus they may
    /// name no subscription (the retry fails) or another one.
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
                state.store_remove(entry.id);
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
                state.store_put(&updated);
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

impl State {
    /// Gives the store, if any, an added or updated entry, redacted.
    fn store_put(&mut self, entry: &DeadLetter) {
        let Some(store) = &self.store else { return };
        let written = match &self.redact {
            Some(redact) => {
                let mut redacted = entry.clone();
                redacted.event = redact(&entry.event);
                store.put(&redacted)
            }
            None => store.put(entry),
        };
        self.count(written);
    }

    /// Tells the store, if any, that an entry went.
    fn store_remove(&mut self, id: u64) {
        if let Some(store) = &self.store {
            let removed = store.remove(id);
            self.count(removed);
        }
    }

    /// Tells the store, if any, that every entry went.
    fn store_clear(&mut self) {
        if let Some(store) = &self.store {
            let cleared = store.clear();
            self.count(cleared);
        }
    }

    fn count(&mut self, result: Result<(), DeadLetterStoreError>) {
        if let Err(e) = result {
            self.stats.persist_errors += 1;
            tracing::warn!(error = %e, "dead letter persistence failed");
        }
    }
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
            subscription: Some((SubscriptionId::from_u64(7), Some("worker".into()))),
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
    fn add_adds_a_delivery_failure_without_a_subscription() {
        let dlq = DeadLetterQueue::new(10);
        dlq.push(failure(1, DeadLetterReason::HandlerError));
        let event = Event::builder("run.failed").build().unwrap();
        let id = dlq.add(event, Some("alert:webhook".into()), "HTTP 503");
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
    fn a_queue_with_a_store_survives_reopen_and_counts_a_torn_line() {
        use nerve_journal::DeadLetterJournal;
        use std::io::Write;

        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("dead.jsonl");
        let open = || DeadLetterJournal::builder(&path).build().unwrap();
        {
            let dlq = DeadLetterQueue::with_store(open(), 10);
            dlq.push(failure(1, DeadLetterReason::HandlerError));
            dlq.push(failure(2, DeadLetterReason::HandlerPanic));
            dlq.push(failure(3, DeadLetterReason::OverflowDrop));
            let mut state = dlq.lock();
            state.entries.retain(|e| e.id != 2);
            state.store_remove(2);
        }
        // A crash mid-append leaves half a line.
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .unwrap();
        f.write_all(b"{\"op\":\"put\",\"entry\":{\"id\":9").unwrap();
        drop(f);
        let dlq = DeadLetterQueue::with_store(open(), 10);
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
    }
}
