//! JetStream: durable exports (publishes the stream acknowledges, terminal
//! emits waiting for it) and durable imports (a durable pull consumer,
//! acknowledged after local delivery, deduplicated by event id).

use std::collections::{HashMap, HashSet, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, SystemTime};

use async_nats::jetstream::{self, AckKind, consumer, stream};
use futures::{FutureExt, StreamExt};
use nerve_core::metrics::names::bridge_outcome as outcome;
use nerve_core::sink::{EventSink, SinkError, SinkErrorKind};
use nerve_core::{Event, EventId, Pattern, json};
use nerve_router::{EventStream, HandlerError, StreamOptions, Subscribe};
use tokio::runtime::{Handle, RuntimeFlavor};
use tokio::sync::watch;
use tokio::time::Instant;

use super::{BridgeError, Export, NatsBridge, Shared, forwardable};
use crate::subject;

/// A JetStream stream for [`NatsBridge::export_durable`]: its name, and the
/// limits it is created with when it does not exist yet. A `&str` or
/// `String` converts into one with the defaults.
///
/// | limit | default |
/// |-------|---------|
/// | `max_messages` | unlimited |
/// | `max_bytes` | unlimited |
/// | `max_age` | unlimited |
/// | `max_message_size` | the server's (1 MiB unless configured) |
/// | `replicas` | 1 |
/// | `duplicate_window` | 2 minutes: a message whose `Nats-Msg-Id` (event id) the stream stored within it is acknowledged as a duplicate, not stored again |
/// | `memory` | off: file storage |
///
/// The stream's subjects are the export pattern's subject filter (see the
/// mapping table in the crate docs). An existing stream is used as it is
/// (its limits are not changed); it must take the export's subjects.
///
/// ```
/// use std::time::Duration;
/// use nerve::nats::DurableStream;
///
/// let orders = DurableStream::new("ORDERS")
///     .max_age(Duration::from_secs(7 * 24 * 3600))
///     .max_bytes(10 << 30)
///     .replicas(3);
/// assert_eq!(orders.name(), "ORDERS");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
#[must_use]
pub struct DurableStream {
    name: String,
    max_messages: Option<i64>,
    max_bytes: Option<i64>,
    max_age: Option<Duration>,
    max_message_size: Option<i32>,
    replicas: usize,
    duplicate_window: Duration,
    memory: bool,
}

impl DurableStream {
    /// The stream `name`, with the default limits.
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            max_messages: None,
            max_bytes: None,
            max_age: None,
            max_message_size: None,
            replicas: 1,
            duplicate_window: Duration::from_secs(120),
            memory: false,
        }
    }

    /// The stream's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Keeps at most `n` messages (the oldest are discarded).
    pub fn max_messages(mut self, n: u64) -> Self {
        self.max_messages = Some(i64::try_from(n).unwrap_or(i64::MAX));
        self
    }

    /// Keeps at most `bytes` of messages (the oldest are discarded).
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = Some(i64::try_from(bytes).unwrap_or(i64::MAX));
        self
    }

    /// Discards messages older than `age`.
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = Some(age);
        self
    }

    /// Refuses messages larger than `bytes` (a refused publish is a failed
    /// attempt; the event is finally given up and reported).
    pub fn max_message_size(mut self, bytes: u32) -> Self {
        self.max_message_size = Some(i32::try_from(bytes).unwrap_or(i32::MAX));
        self
    }

    /// Copies kept in a JetStream cluster (1 to 5).
    pub fn replicas(mut self, n: usize) -> Self {
        self.replicas = n.clamp(1, 5);
        self
    }

    /// How long the stream remembers message ids to refuse duplicates.
    pub fn duplicate_window(mut self, window: Duration) -> Self {
        self.duplicate_window = window;
        self
    }

    /// Memory storage instead of files (lost when the server stops).
    pub fn memory(mut self, on: bool) -> Self {
        self.memory = on;
        self
    }

    fn config(&self, subject: String) -> stream::Config {
        stream::Config {
            name: self.name.clone(),
            subjects: vec![subject],
            max_messages: self.max_messages.unwrap_or(-1),
            max_bytes: self.max_bytes.unwrap_or(-1),
            max_age: self.max_age.unwrap_or_default(),
            max_message_size: self.max_message_size.unwrap_or(-1),
            num_replicas: self.replicas,
            duplicate_window: self.duplicate_window,
            storage: if self.memory {
                stream::StorageType::Memory
            } else {
                stream::StorageType::File
            },
            ..Default::default()
        }
    }
}

impl From<&str> for DurableStream {
    fn from(name: &str) -> Self {
        Self::new(name)
    }
}

impl From<String> for DurableStream {
    fn from(name: String) -> Self {
        Self::new(name)
    }
}

/// Where a new durable consumer starts. A consumer that already exists
/// continues where it stopped, whatever this says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeliverFrom {
    /// Only messages stored after the consumer was created.
    New,
    /// Every message the stream holds.
    All,
    /// From this stream sequence number on (the first message is 1).
    Seq(u64),
    /// From the first message stored at or after this time.
    Time(SystemTime),
}

impl DeliverFrom {
    fn policy(self) -> consumer::DeliverPolicy {
        match self {
            DeliverFrom::New => consumer::DeliverPolicy::New,
            DeliverFrom::All => consumer::DeliverPolicy::All,
            DeliverFrom::Seq(n) => consumer::DeliverPolicy::ByStartSequence {
                start_sequence: n.max(1),
            },
            DeliverFrom::Time(t) => consumer::DeliverPolicy::ByStartTime {
                start_time: time::OffsetDateTime::from(t),
            },
        }
    }
}

/// Options of [`NatsBridge::import_durable_with`].
///
/// | option | default |
/// |--------|---------|
/// | `deliver_from` | [`DeliverFrom::All`] (for a consumer that does not exist yet) |
/// | `dedup_window` | the last 100,000 event ids delivered |
/// | `already_delivered` | none: ids to treat as delivered (what a restarted process already holds) |
/// | `ack_after_flush` | none: acknowledged once `emit` returned |
/// | `ack_wait` | 30 s: JetStream redelivers what is not acknowledged within it |
/// | `max_ack_pending` | 1,000 messages delivered and not yet acknowledged |
#[derive(Clone)]
#[must_use]
pub struct DurableImport {
    stream: String,
    consumer: String,
    from: DeliverFrom,
    dedup_window: usize,
    seen: Vec<EventId>,
    flush: Option<Arc<dyn EventSink>>,
    ack_wait: Duration,
    max_ack_pending: usize,
}

impl std::fmt::Debug for DurableImport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DurableImport")
            .field("stream", &self.stream)
            .field("consumer", &self.consumer)
            .field("from", &self.from)
            .field("dedup_window", &self.dedup_window)
            .field("already_delivered", &self.seen.len())
            .field("ack_after_flush", &self.flush.is_some())
            .field("ack_wait", &self.ack_wait)
            .field("max_ack_pending", &self.max_ack_pending)
            .finish()
    }
}

impl DurableImport {
    /// Consumes `stream` through the durable consumer `consumer`.
    pub fn new(stream: impl Into<String>, consumer: impl Into<String>) -> Self {
        Self {
            stream: stream.into(),
            consumer: consumer.into(),
            from: DeliverFrom::All,
            dedup_window: 100_000,
            seen: Vec::new(),
            flush: None,
            ack_wait: Duration::from_secs(30),
            max_ack_pending: 1_000,
        }
    }

    /// Where the consumer starts when it is created.
    pub fn deliver_from(mut self, from: DeliverFrom) -> Self {
        self.from = from;
        self
    }

    /// How many of the most recent event ids are remembered to drop
    /// duplicates (at least `max_ack_pending`).
    pub fn dedup_window(mut self, ids: usize) -> Self {
        self.dedup_window = ids.max(1);
        self
    }

    /// Event ids this process already delivered before (the tail of its
    /// journal after a restart): messages carrying them are acknowledged
    /// and dropped as duplicates. The newest `dedup_window` are kept.
    pub fn already_delivered(mut self, ids: impl IntoIterator<Item = EventId>) -> Self {
        self.seen.extend(ids);
        self
    }

    /// Acknowledges messages only once `sink.flush` succeeded after their
    /// events were emitted: with the bus's journal as `sink`, a message is
    /// acknowledged only when its journal line survives the process. A
    /// failed flush leaves the messages unacknowledged (redelivered),
    /// counted in `import_rejected` and reported as `system.bridge_error`.
    pub fn ack_after_flush(mut self, sink: Arc<dyn EventSink>) -> Self {
        self.flush = Some(sink);
        self
    }

    /// How long JetStream waits for an acknowledgement before it delivers
    /// a message again.
    pub fn ack_wait(mut self, wait: Duration) -> Self {
        self.ack_wait = wait.max(Duration::from_millis(100));
        self
    }

    /// How many messages may be delivered and not yet acknowledged.
    pub fn max_ack_pending(mut self, n: usize) -> Self {
        self.max_ack_pending = n.max(1);
        self
    }
}

/// A JetStream stream or consumer name: not empty, no whitespace, `.`,
/// `*`, `>`, `/` or `\`.
fn check_name(what: &'static str, name: &str) -> Result<(), BridgeError> {
    let bad = |c: char| c.is_whitespace() || matches!(c, '.' | '*' | '>' | '/' | '\\');
    if name.is_empty() || name.chars().any(bad) {
        return Err(BridgeError::Name {
            what,
            name: name.to_owned(),
        });
    }
    Ok(())
}

/// Whether the stream subject `stream` takes every subject `filter` matches.
fn covers(stream: &str, filter: &str) -> bool {
    let mut s = stream.split('.');
    let mut f = filter.split('.');
    loop {
        match (s.next(), f.next()) {
            (Some(">"), Some(_)) => return true,
            (Some("*"), Some(t)) if t != ">" => {}
            (Some(a), Some(b)) if a == b => {}
            (None, None) => return true,
            _ => return false,
        }
    }
}

fn js_error(what: &'static str, stream: &str, e: impl std::fmt::Display) -> BridgeError {
    BridgeError::JetStream {
        what,
        stream: stream.to_owned(),
        message: e.to_string(),
    }
}

/// The delay before publish attempt `attempt + 1`: 50 ms doubling, at most 5 s.
fn backoff(attempt: u32) -> Duration {
    Duration::from_millis(50u64.saturating_mul(1 << attempt.min(8).saturating_sub(1)))
        .min(Duration::from_secs(5))
}

// ----- durable exports -----

/// How a terminal event of an export ended: acknowledged by the stream (a
/// core export: processed by the server), or why not.
pub(super) type Settled = Result<(), SinkError>;

/// Terminal events of one export whose outcome a waiting `emit` needs:
/// `None` while an emit waits, `Some` once settled.
#[derive(Default)]
pub(super) struct Waits {
    slots: Mutex<HashMap<EventId, Option<Settled>>>,
    settled: Condvar,
    /// Set by the bridge's shutdown: no emit waits any more.
    closed: std::sync::atomic::AtomicBool,
}

impl Waits {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<EventId, Option<Settled>>> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records `id`'s outcome and wakes its emit.
    pub(super) fn settle(&self, id: EventId, outcome: Settled) {
        let mut slots = self.lock();
        if slots.len() > 10_000 {
            // Outcomes no emit came for (it could not wait, or gave up):
            // forgotten, so they cannot pile up.
            slots.retain(|_, v| v.is_none());
        }
        slots.insert(id, Some(outcome));
        drop(slots);
        self.settled.notify_all();
    }

    /// Releases every waiting emit (the export is stopping) and lets no
    /// later one wait.
    pub(super) fn close(&self) {
        self.closed.store(true, Ordering::SeqCst);
        let _guard = self.lock();
        self.settled.notify_all();
    }

    /// Waits for `id`'s outcome, at most `limit`; a `Timeout` error when it
    /// ran out, a `Closed` one when the export stopped first.
    fn wait(&self, id: EventId, limit: Duration) -> Settled {
        let stopped = || {
            SinkError::new(
                SinkErrorKind::Closed,
                "the export stopped before NATS confirmed it",
            )
        };
        let mut slots = self.lock();
        if self.closed.load(Ordering::SeqCst) {
            return Err(stopped());
        }
        if let Some(Some(_)) = slots.get(&id) {
            return slots.remove(&id).flatten().expect("settled");
        }
        slots.insert(id, None);
        let (mut slots, _) = self
            .settled
            .wait_timeout_while(slots, limit, |s| {
                matches!(s.get(&id), Some(None)) && !self.closed.load(Ordering::SeqCst)
            })
            .unwrap_or_else(|e| e.into_inner());
        match slots.remove(&id).flatten() {
            Some(settled) => settled,
            None if self.closed.load(Ordering::SeqCst) => Err(stopped()),
            None => Err(SinkError::new(
                SinkErrorKind::Timeout,
                format!("NATS did not confirm it within {limit:?} (terminal_wait)"),
            )),
        }
    }
}

type AckFuture =
    Pin<Box<dyn Future<Output = Result<jetstream::publish::PublishAck, String>> + Send>>;

/// One event published and not yet settled.
struct InFlight {
    /// Kept to encode it again for a retry: each attempt's message is
    /// encoded into its own buffer and moved into the publish, uncopied.
    event: Event,
    terminal: bool,
    subject: async_nats::Subject,
    /// Attempts that failed so far.
    failures: u32,
    ack: AckFuture,
}

/// The state of one durable export's task.
struct DurableExport {
    shared: Arc<Shared>,
    js: jetstream::Context,
    stream: String,
    waits: Arc<Waits>,
    /// Which events hold their `emit` until acknowledged: the bus's own
    /// durable setting, as its journal uses it.
    durable: nerve_router::Durable,
    done: Arc<AtomicU64>,
    connected: watch::Receiver<bool>,
    /// The last body's length: the next message's buffer starts that
    /// large (events of one export are much alike).
    body_hint: usize,
    subjects: super::Subjects,
}

impl NatsBridge {
    /// Publishes every local event matching `pattern` into the JetStream
    /// `stream`, each acknowledged by the stream. The stream is created
    /// when missing, with the pattern's subjects and the limits given.
    ///
    /// Events wait in a bounded buffer of the bus as with
    /// [`export`](Self::export); each publish is retried (with backoff)
    /// until the stream acknowledges it or `publish_attempts` failed, when
    /// it is counted in [`BridgeStats::ack_failed`](crate::BridgeStats::ack_failed)
    /// and reported as `system.bridge_error`. A **terminal** event's `emit`
    /// (one the bus marks terminal: `*.completed`, `*.failed`, ... or
    /// [`Event::terminal`](nerve_core::Event::terminal); or, on a bus built
    /// with [`durable_patterns`](nerve_router::BusBuilder::durable_patterns),
    /// one matching those, as for the journal) returns only once
    /// the stream acknowledged it and every event of this export before
    /// it, at most `terminal_wait`: the promise the journal makes locally,
    /// made by the stream. See the crate docs, "Durable".
    ///
    /// # Errors
    ///
    /// [`BridgeError::Pattern`] or [`BridgeError::Subject`] when the
    /// pattern has no subject, [`BridgeError::Name`] for a stream name
    /// JetStream refuses, [`BridgeError::StreamSubjects`] when an existing
    /// stream does not take the pattern's subjects,
    /// [`BridgeError::JetStream`] when the stream could not be looked up or
    /// created (JetStream off, limits refused), [`BridgeError::Bus`] when
    /// the bus is shut down.
    pub async fn export_durable(
        &self,
        pattern: &str,
        stream: impl Into<DurableStream>,
    ) -> Result<(), BridgeError> {
        let stream = stream.into();
        check_name("stream", &stream.name)?;
        let parsed = Pattern::parse(pattern)?;
        let filter = subject::pattern_subject(&self.shared.prefix, &parsed)?;
        let options = &self.shared.options;
        let js = jetstream::ContextBuilder::new()
            .timeout(options.ack_timeout)
            .build(self.shared.client.clone());
        let existing = js
            .get_or_create_stream(stream.config(filter.clone()))
            .await
            .map_err(|e| js_error("stream lookup or creation", &stream.name, e))?;
        let subjects = existing.cached_info().config.subjects.clone();
        if !subjects.iter().any(|s| covers(s, &filter)) {
            return Err(BridgeError::StreamSubjects {
                stream: stream.name.clone(),
                subject: filter,
                subjects,
            });
        }

        let events = self
            .shared
            .bus
            .stream_with(
                parsed.clone(),
                StreamOptions::new()
                    .capacity(options.capacity)
                    .overflow(options.overflow)
                    .name(format!("nats export_durable {pattern} -> {}", stream.name)),
            )
            .map_err(BridgeError::Bus)?;
        let waits = Arc::new(Waits::default());
        // `terminal_wait` zero: no emit waits (outcomes settled for no one
        // are forgotten, see `Waits::settle`).
        let waiter = if self.shared.options.terminal_wait.is_zero() {
            None
        } else {
            let label = format!("nats export_durable {pattern} (terminal ack wait)");
            match self.terminal_waiter(parsed, &label, &waits) {
                Ok(id) => Some((id, waits.clone())),
                Err(e) => {
                    self.shared.bus.unsubscribe(events.id());
                    return Err(BridgeError::Bus(e));
                }
            }
        };
        let done = Arc::new(AtomicU64::new(0));
        self.lock_exports().push(Export {
            stream_id: events.id(),
            waiter,
            done: done.clone(),
        });
        let export = DurableExport {
            connected: self.shared.connected.subscribe(),
            shared: self.shared.clone(),
            js,
            stream: stream.name,
            waits,
            durable: self.shared.bus.durable(),
            done,
            body_hint: 512,
            subjects: super::Subjects::default(),
        };
        let task = tokio::spawn(export.run(events));
        self.lock_tasks().push(task);
        Ok(())
    }

    /// The inline subscription `name`d, after every other one (lowest
    /// priority, subscribed last), that holds a terminal event's `emit`
    /// until its export settled it: by then a durable export's stream holds
    /// the event, and the server has processed a core export's message.
    pub(super) fn terminal_waiter(
        &self,
        pattern: Pattern,
        name: &str,
        waits: &Arc<Waits>,
    ) -> Result<nerve_router::SubscriptionId, nerve_router::SubscribeError> {
        let shared: Weak<Shared> = Arc::downgrade(&self.shared);
        let waits = waits.clone();
        let limit = self.shared.options.terminal_wait;
        let durable = self.shared.bus.durable();
        self.shared.bus.subscribe_with(
            pattern,
            move |event: &Event| -> Result<(), HandlerError> {
                if !forwardable(event) {
                    return Ok(());
                }
                let Some(shared) = shared.upgrade() else {
                    return Ok(());
                };
                let c = &shared.counters;
                let wait = || waits.wait(event.event_id(), limit);
                let outcome = match Handle::try_current() {
                    Ok(h) if h.runtime_flavor() == RuntimeFlavor::CurrentThread => {
                        // This thread may be the one the bridge's tasks
                        // need: waiting could only time out.
                        if c.ack_waits_skipped.fetch_add(1, Ordering::Relaxed) == 0 {
                            // Said once, where a program's events are seen:
                            // a counter alone is read by few.
                            shared.report_error(event, "a terminal event's emit cannot wait for NATS on a current-thread tokio runtime (the bridge runs on that thread); call the bridge's flush or shutdown before the program exits (counted in ack_waits_skipped; said once)");
                        }
                        return Ok(());
                    }
                    Ok(_) => tokio::task::block_in_place(wait),
                    Err(_) => wait(),
                };
                c.ack_waits.fetch_add(1, Ordering::Relaxed);
                outcome.map_err(|e| {
                    if matches!(e.kind(), SinkErrorKind::Timeout | SinkErrorKind::Closed) {
                        c.ack_wait_timeouts.fetch_add(1, Ordering::Relaxed);
                    }
                    // `emit` says so, as for an event the journal could not
                    // record; the bridge counted and reported the cause.
                    HandlerError::not_recorded(&e)
                })
            },
            Subscribe::new()
                .priority(i32::MIN)
                .name(name)
                .filter(move |e: &Event| durable.matches(e)),
        )
    }
}

impl DurableExport {
    async fn run(mut self, mut events: EventStream) {
        let window = self.shared.options.max_in_flight;
        let mut in_flight: VecDeque<InFlight> = VecDeque::with_capacity(window);
        let mut open = true;
        while open || !in_flight.is_empty() {
            let room = open && in_flight.len() < window;
            tokio::select! {
                biased;
                next = events.next(), if room => match next {
                    Some(event) => self.start(event, &mut in_flight).await,
                    None => open = false,
                },
                answer = async { (&mut in_flight.front_mut().expect("guarded").ack).await },
                    if !in_flight.is_empty() => {
                    let entry = in_flight.pop_front().expect("guarded");
                    self.settle(entry, answer).await;
                }
            }
        }
    }

    /// Publishes `event` (or skips it, settled at once).
    async fn start(&mut self, event: Event, in_flight: &mut VecDeque<InFlight>) {
        let terminal = self.durable.matches(&event);
        let Some(subject) = self.shared.outgoing_subject(&event, &mut self.subjects) else {
            if terminal {
                self.waits
                    .settle(event.event_id(), Err(super::no_subject(&event)));
            }
            self.done.fetch_add(1, Ordering::Release);
            return;
        };
        let ack = match self.publish(&subject, &event).await {
            Ok(ack) => ack,
            Err(error) => {
                // It will not get smaller: not retried.
                let refused =
                    self.shared
                        .refuse_too_large(&event, &subject, Some(&self.stream), error);
                if terminal {
                    self.waits.settle(event.event_id(), Err(refused));
                }
                self.done.fetch_add(1, Ordering::Release);
                return;
            }
        };
        let entry = InFlight {
            event,
            terminal,
            subject,
            failures: 0,
            ack,
        };
        self.shared
            .counters
            .published
            .fetch_add(1, Ordering::Relaxed);
        in_flight.push_back(entry);
    }

    /// Sends one attempt of `event` (once connected); its acknowledgement,
    /// or why it cannot be sent (larger than the server takes).
    async fn publish(
        &mut self,
        subject: &async_nats::Subject,
        event: &Event,
    ) -> Result<AckFuture, String> {
        // While the connection is down, events wait in the export's bounded
        // stream, and attempts are not spent.
        let _ = self.connected.wait_for(|up| *up).await;
        let limit = self.shared.options.ack_timeout;
        let mut body = Vec::with_capacity(self.body_hint);
        let headers = self.shared.encode(event, &mut body);
        self.body_hint = body.len();
        if let Some(error) = self.shared.oversized(&headers, &body) {
            return Err(error);
        }
        let sent = self
            .js
            .send_publish(
                subject.clone(),
                jetstream::message::PublishMessage::build()
                    .payload(body.into())
                    .headers(headers),
            )
            .await;
        let deadline = Instant::now() + limit;
        Ok(match sent {
            Ok(ack) => Box::pin(async move {
                match tokio::time::timeout_at(deadline, ack.into_future()).await {
                    Ok(Ok(ack)) => Ok(ack),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no acknowledgement within {limit:?}")),
                }
            }),
            Err(e) => {
                let e = e.to_string();
                Box::pin(async move { Err(e) })
            }
        })
    }

    /// Deals with `entry`'s answer: counts an acknowledgement, or retries
    /// (with backoff) until one comes or the attempts are spent.
    async fn settle(
        &mut self,
        mut entry: InFlight,
        mut answer: Result<jetstream::publish::PublishAck, String>,
    ) {
        let shared = self.shared.clone();
        let c = &shared.counters;
        let settled = loop {
            match answer {
                Ok(ack) => {
                    shared.count(&c.acked, outcome::ACKED);
                    if ack.duplicate {
                        c.ack_duplicates.fetch_add(1, Ordering::Relaxed);
                    }
                    break Ok(());
                }
                Err(error) => {
                    c.nacked.fetch_add(1, Ordering::Relaxed);
                    entry.failures += 1;
                    if entry.failures >= self.shared.options.publish_attempts {
                        shared.count(&c.ack_failed, outcome::ACK_FAILED);
                        let _ = self.shared.bus.emit(
                            "system.bridge_error",
                            json!({
                                "origin": self.shared.origin,
                                "stream": self.stream,
                                "event_id": entry.event.event_id().to_string(),
                                "attempts": entry.failures,
                                "error": format!("not acknowledged by the stream: {error}"),
                            }),
                        );
                        break Err(SinkError::new(
                            SinkErrorKind::Io,
                            format!(
                                "the stream {} did not acknowledge it ({} attempts; the last: {error})",
                                self.stream, entry.failures
                            ),
                        ));
                    }
                    tokio::time::sleep(backoff(entry.failures)).await;
                    c.retried.fetch_add(1, Ordering::Relaxed);
                    answer = match self.publish(&entry.subject, &entry.event).await {
                        Ok(ack) => ack.await,
                        // A node that takes less than the one that refused it.
                        Err(error) => Err(error),
                    };
                }
            }
        };
        if entry.terminal {
            self.waits.settle(entry.event.event_id(), settled);
        }
        self.done.fetch_add(1, Ordering::Release);
    }
}

// ----- durable imports -----

/// The most recent event ids delivered, oldest first out.
struct Dedup {
    ids: HashSet<EventId>,
    order: VecDeque<EventId>,
    capacity: usize,
}

impl Dedup {
    fn new(capacity: usize, seen: Vec<EventId>) -> Self {
        let mut d = Self {
            ids: HashSet::with_capacity(capacity.min(1 << 16)),
            order: VecDeque::with_capacity(capacity.min(1 << 16)),
            capacity,
        };
        let skip = seen.len().saturating_sub(capacity);
        for id in seen.into_iter().skip(skip) {
            d.remember(id);
        }
        d
    }

    fn contains(&self, id: &EventId) -> bool {
        self.ids.contains(id)
    }

    fn remember(&mut self, id: EventId) {
        if self.ids.insert(id) {
            self.order.push_back(id);
            if self.order.len() > self.capacity {
                if let Some(old) = self.order.pop_front() {
                    self.ids.remove(&old);
                }
            }
        }
    }

    /// Forgets `id` (its delivery did not count): a redelivery is emitted.
    fn forget(&mut self, id: &EventId) {
        if self.ids.remove(id) {
            if let Some(at) = self.order.iter().rposition(|x| x == id) {
                self.order.remove(at);
            }
        }
    }
}

/// What to tell JetStream about one message.
enum Answer {
    /// Delivered (or a duplicate, or an echo): acknowledge.
    Ack,
    /// Emitted; acknowledge once the flush confirmed it.
    AckAfterFlush(EventId),
    /// Never importable: do not deliver it again.
    Term,
    /// Not delivered now: deliver it again later.
    Nak,
}

struct DurableImporter {
    shared: Arc<Shared>,
    stream: String,
    consumer: consumer::PullConsumer,
    dedup: Dedup,
    flush: Option<Arc<dyn EventSink>>,
}

impl NatsBridge {
    /// Emits every message of the JetStream `stream` into the local bus
    /// through the durable pull consumer `consumer` (created if missing,
    /// starting at `from`): a restarted process continues where the
    /// consumer stopped. See [`import_durable_with`](Self::import_durable_with).
    ///
    /// # Errors
    ///
    /// As [`import_durable_with`](Self::import_durable_with).
    pub async fn import_durable(
        &self,
        stream: &str,
        consumer: &str,
        from: DeliverFrom,
    ) -> Result<(), BridgeError> {
        self.import_durable_with(DurableImport::new(stream, consumer).deliver_from(from))
            .await
    }

    /// [`import_durable`](Self::import_durable) with options.
    ///
    /// Delivery is **at least once**: a message is acknowledged only after
    /// its event was emitted into the local bus (and, with
    /// [`DurableImport::ack_after_flush`], flushed), so a process stopped
    /// in between gets it again. Such repeats are removed by event id
    /// within the deduplication window (see the crate docs, "Durable").
    ///
    /// # Errors
    ///
    /// [`BridgeError::Name`] for a stream or consumer name JetStream
    /// refuses, [`BridgeError::StreamNotFound`] when the stream does not
    /// exist, [`BridgeError::JetStream`] when the stream could not be
    /// looked up or the consumer created (for instance a consumer of that
    /// name that is not a pull consumer).
    pub async fn import_durable_with(&self, options: DurableImport) -> Result<(), BridgeError> {
        check_name("stream", &options.stream)?;
        check_name("consumer", &options.consumer)?;
        let stream = self.jetstream_stream(&options.stream).await?;
        let config = consumer::pull::Config {
            durable_name: Some(options.consumer.clone()),
            deliver_policy: options.from.policy(),
            ack_policy: consumer::AckPolicy::Explicit,
            ack_wait: options.ack_wait,
            max_ack_pending: i64::try_from(options.max_ack_pending).unwrap_or(i64::MAX),
            ..Default::default()
        };
        let consumer = stream
            .get_or_create_consumer(&options.consumer, config)
            .await
            .map_err(|e| js_error("consumer creation", &options.stream, e))?;
        let importer = DurableImporter {
            shared: self.shared.clone(),
            stream: options.stream,
            consumer,
            dedup: Dedup::new(
                options.dedup_window.max(options.max_ack_pending),
                options.seen,
            ),
            flush: options.flush,
        };
        let task = tokio::spawn(importer.run());
        self.lock_tasks().push(task);
        Ok(())
    }
}

/// What a durable consumer still has for its importer, from
/// [`NatsBridge::consumer_pending`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ConsumerPending {
    /// Messages of the stream not yet delivered to the consumer.
    pub undelivered: u64,
    /// Messages delivered and not yet acknowledged.
    pub unacknowledged: u64,
}

impl ConsumerPending {
    /// Whether the consumer has delivered, and had acknowledged, everything
    /// the stream holds now.
    pub fn is_caught_up(&self) -> bool {
        self.undelivered == 0 && self.unacknowledged == 0
    }
}

impl NatsBridge {
    /// Asks the server how far the durable `consumer` of `stream` is: what
    /// it has not delivered yet and what is not acknowledged yet. With
    /// [`ConsumerPending::is_caught_up`], "import everything there is, then
    /// stop" (`nerve record --drain`).
    ///
    /// # Errors
    ///
    /// [`BridgeError::Name`] for a name JetStream refuses,
    /// [`BridgeError::StreamNotFound`], or [`BridgeError::JetStream`] when
    /// the consumer does not exist or the server did not answer.
    pub async fn consumer_pending(
        &self,
        stream: &str,
        consumer: &str,
    ) -> Result<ConsumerPending, BridgeError> {
        check_name("stream", stream)?;
        check_name("consumer", consumer)?;
        let stream_handle = self.jetstream_stream(stream).await?;
        let mut handle: consumer::PullConsumer = stream_handle
            .get_consumer(consumer)
            .await
            .map_err(|e| js_error("consumer lookup", stream, e))?;
        let info = handle
            .info()
            .await
            .map_err(|e| js_error("consumer info", stream, e))?;
        Ok(ConsumerPending {
            undelivered: info.num_pending,
            unacknowledged: u64::try_from(info.num_ack_pending).unwrap_or(0),
        })
    }

    /// The existing stream `name`.
    async fn jetstream_stream(&self, name: &str) -> Result<jetstream::stream::Stream, BridgeError> {
        let js = jetstream::new(self.shared.client.clone());
        match js.get_stream(name).await {
            Ok(s) => Ok(s),
            Err(e) => {
                if let jetstream::context::GetStreamErrorKind::JetStream(inner) = e.kind() {
                    if inner.error_code() == jetstream::ErrorCode::STREAM_NOT_FOUND {
                        return Err(BridgeError::StreamNotFound(name.to_owned()));
                    }
                }
                Err(js_error("stream lookup", name, e))
            }
        }
    }
}

impl DurableImporter {
    async fn run(mut self) {
        let c = &self.shared.clone().counters;
        let mut failures = 0u32;
        loop {
            let mut messages = match self.consumer.messages().await {
                Ok(m) => m,
                Err(e) => {
                    c.consumer_errors.fetch_add(1, Ordering::Relaxed);
                    self.report(format!("could not read the consumer: {e}"));
                    failures += 1;
                    tokio::time::sleep(backoff(failures)).await;
                    continue;
                }
            };
            failures = 0;
            let mut batch: Vec<(jetstream::Message, Answer)> = Vec::new();
            loop {
                let next = match messages.next().now_or_never() {
                    Some(next) => next,
                    None => {
                        // Nothing more ready: answer what was taken first.
                        self.answer(&mut batch).await;
                        messages.next().await
                    }
                };
                match next {
                    Some(Ok(message)) => {
                        let answer = self.take(&message);
                        batch.push((message, answer));
                        if batch.len() >= 256 {
                            self.answer(&mut batch).await;
                        }
                    }
                    Some(Err(e)) => {
                        // Missed heartbeats while the server is away and
                        // the like: the stream goes on by itself.
                        c.consumer_errors.fetch_add(1, Ordering::Relaxed);
                        if matches!(e.kind(), consumer::pull::MessagesErrorKind::ConsumerDeleted) {
                            self.answer(&mut batch).await;
                            self.report("the consumer was deleted; import stopped".to_owned());
                            return;
                        }
                    }
                    None => break,
                }
            }
            self.answer(&mut batch).await;
        }
    }

    fn report(&self, error: String) {
        let _ = self.shared.bus.emit(
            "system.bridge_error",
            json!({"origin": self.shared.origin, "stream": self.stream, "error": error}),
        );
    }

    /// Delivers one message locally (or not); what to answer.
    fn take(&mut self, message: &jetstream::Message) -> Answer {
        let shared = self.shared.clone();
        let c = &shared.counters;
        if message.info().is_ok_and(|i| i.delivered > 1) {
            c.redelivered.fetch_add(1, Ordering::Relaxed);
        }
        let origin = message
            .headers
            .as_ref()
            .and_then(|h| h.get(super::HEADER_ORIGIN))
            .map(|v| v.as_str());
        if origin == Some(shared.origin.as_str()) {
            shared.count(&c.echoes_suppressed, outcome::ECHO_SUPPRESSED);
            return Answer::Ack;
        }
        let event = match shared.decode(&message.message, origin) {
            Ok(event) => event,
            Err(error) => {
                shared.count(&c.import_rejected, outcome::IMPORT_REJECTED);
                let _ = shared.bus.emit(
                    "system.bridge_error",
                    json!({"origin": shared.origin, "stream": self.stream, "subject": message.subject.as_str(), "error": error}),
                );
                return Answer::Term;
            }
        };
        let id = event.event_id();
        if self.dedup.contains(&id) {
            shared.count(&c.duplicates_dropped, outcome::DUPLICATE_DROPPED);
            return Answer::Ack;
        }
        match shared.bus.emit_event(event) {
            Ok(_) => {}
            // Delivered: acknowledged, not delivered (and halted) again.
            Err(e) if super::delivered_anyway(&e) => {}
            Err(_) => {
                // The bus refused it (shut down): left to a later process.
                shared.count(&c.import_rejected, outcome::IMPORT_REJECTED);
                return Answer::Nak;
            }
        }
        shared.count(&c.imported, outcome::IMPORTED);
        self.dedup.remember(id);
        if self.flush.is_some() {
            Answer::AckAfterFlush(id)
        } else {
            Answer::Ack
        }
    }

    /// Sends the answers of `batch`, flushing first when acknowledgements
    /// wait for it.
    async fn answer(&mut self, batch: &mut Vec<(jetstream::Message, Answer)>) {
        if batch.is_empty() {
            return;
        }
        let flushed = match &self.flush {
            Some(sink)
                if batch
                    .iter()
                    .any(|(_, a)| matches!(a, Answer::AckAfterFlush(_))) =>
            {
                let sink = sink.clone();
                match tokio::task::spawn_blocking(move || sink.flush(Duration::from_secs(30))).await
                {
                    Ok(Ok(())) => true,
                    Ok(Err(e)) => {
                        self.report(format!("flush failed, messages left unacknowledged: {e}"));
                        false
                    }
                    Err(e) => {
                        self.report(format!("flush failed, messages left unacknowledged: {e}"));
                        false
                    }
                }
            }
            _ => true,
        };
        let c = &self.shared.counters;
        for (message, answer) in batch.drain(..) {
            let kind = match answer {
                Answer::Ack => AckKind::Ack,
                Answer::AckAfterFlush(_) if flushed => AckKind::Ack,
                Answer::AckAfterFlush(id) => {
                    // Not known to be written: delivered again later, and
                    // then emitted again.
                    self.dedup.forget(&id);
                    c.import_rejected.fetch_add(1, Ordering::Relaxed);
                    AckKind::Nak(Some(Duration::from_secs(1)))
                }
                Answer::Term => AckKind::Term,
                Answer::Nak => AckKind::Nak(Some(Duration::from_secs(1))),
            };
            let is_ack = matches!(kind, AckKind::Ack);
            if message.ack_with(kind).await.is_ok() && is_ack {
                c.acks_sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stream_subjects_cover_filters_token_by_token() {
        assert!(covers(">", "a.b"));
        assert!(covers("a.>", "a.b.c"));
        assert!(covers("a.>", "a.>"));
        assert!(covers("a.*", "a.b"));
        assert!(covers("a.*", "a.*"));
        assert!(!covers("a.*", "a.>"));
        assert!(!covers("a.*", "a.b.c"));
        assert!(!covers("a.b", "a.*"));
        assert!(!covers("a.b", "a.b.c"));
        assert!(covers("nerve.order.placed", "nerve.order.placed"));
    }

    #[test]
    fn names_nats_refuses_are_refused() {
        for bad in ["", "a.b", "a b", "a*", "a>", "a/b", "a\\b"] {
            assert!(check_name("stream", bad).is_err(), "{bad:?}");
        }
        assert!(check_name("stream", "ORDERS-1_x").is_ok());
    }

    #[test]
    fn the_dedup_window_keeps_the_newest_ids() {
        let ids: Vec<EventId> = (0..5).map(|_| EventId::new()).collect();
        let mut d = Dedup::new(3, ids.clone());
        assert!(!d.contains(&ids[1]) && d.contains(&ids[2]) && d.contains(&ids[4]));
        let more = EventId::new();
        d.remember(more);
        assert!(!d.contains(&ids[2]) && d.contains(&more));
        d.forget(&more);
        assert!(!d.contains(&more));
        d.remember(more);
        assert!(d.contains(&ids[3]) && d.contains(&more));
    }

    #[test]
    fn backoff_doubles_to_five_seconds() {
        assert_eq!(backoff(1), Duration::from_millis(50));
        assert_eq!(backoff(2), Duration::from_millis(100));
        assert_eq!(backoff(30), Duration::from_secs(5));
    }

    #[test]
    fn a_settled_outcome_reaches_an_emit_that_comes_later() {
        let waits = Waits::default();
        let id = EventId::new();
        waits.settle(id, Ok(()));
        assert!(waits.wait(id, Duration::from_secs(5)).is_ok());
        let refused = SinkError::new(SinkErrorKind::Io, "refused");
        let other = EventId::new();
        waits.settle(other, Err(refused));
        let e = waits.wait(other, Duration::from_secs(5)).unwrap_err();
        assert_eq!((e.kind(), e.message()), (SinkErrorKind::Io, "refused"));
        let e = waits
            .wait(EventId::new(), Duration::from_millis(1))
            .unwrap_err();
        assert_eq!(e.kind(), SinkErrorKind::Timeout, "{e}");
    }

    #[test]
    fn closing_releases_a_waiting_emit_at_once() {
        let waits = Arc::new(Waits::default());
        let w = waits.clone();
        let waiter = std::thread::spawn(move || w.wait(EventId::new(), Duration::from_secs(600)));
        // Closed before or while it waits: either way it returns.
        waits.close();
        let e = waiter.join().unwrap().unwrap_err();
        assert_eq!(e.kind(), SinkErrorKind::Closed, "{e}");
    }
}
