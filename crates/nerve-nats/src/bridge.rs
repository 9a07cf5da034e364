//! The bridge: a NATS connection attached to a bus.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::HeaderMap;
use futures::{FutureExt, StreamExt};
use nerve_core::metrics::Metrics;
use nerve_core::metrics::names::{self as metric, bridge_outcome as outcome};
use nerve_core::sink::{Redaction, SinkError, SinkErrorKind};
use nerve_core::{Event, Pattern, json};
use nerve_router::attachment::{Attachment, AttachmentId, AttachmentState, AttachmentStats};
use nerve_router::{Bus, Overflow, StreamOptions, SubscriptionId};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::subject::{self, Prefix, SubjectError};

mod durable;

pub use durable::{ConsumerPending, DeliverFrom, DurableImport, DurableStream};

/// Header: the event id (JetStream deduplicates on it).
pub const HEADER_MSG_ID: &str = "Nats-Msg-Id";
/// Header: the correlation id, when the event has one.
pub const HEADER_CORRELATION_ID: &str = "Nerve-Correlation-Id";
/// Header: the causation id, when the event has one.
pub const HEADER_CAUSATION_ID: &str = "Nerve-Causation-Id";
/// Header: the id of the bridge (and so the bus) that published the message.
pub const HEADER_ORIGIN: &str = "Nerve-Origin";
/// Header: W3C `traceparent`, when the event carries trace context.
pub const HEADER_TRACEPARENT: &str = "traceparent";
/// Header: W3C `tracestate`, when the event carries one.
pub const HEADER_TRACESTATE: &str = "tracestate";

/// The header names as `async-nats` keys, built at compile time: a
/// `&str` key is copied into a fresh allocation on every insert and lookup.
mod key {
    use async_nats::HeaderName;

    pub(super) const MSG_ID: HeaderName = HeaderName::from_static(super::HEADER_MSG_ID);
    pub(super) const CORRELATION_ID: HeaderName =
        HeaderName::from_static(super::HEADER_CORRELATION_ID);
    pub(super) const CAUSATION_ID: HeaderName = HeaderName::from_static(super::HEADER_CAUSATION_ID);
    pub(super) const ORIGIN: HeaderName = HeaderName::from_static(super::HEADER_ORIGIN);
    pub(super) const TRACEPARENT: HeaderName = HeaderName::from_static(super::HEADER_TRACEPARENT);
    pub(super) const TRACESTATE: HeaderName = HeaderName::from_static(super::HEADER_TRACESTATE);
}

/// The `source` prefix of imported events: `nats:{origin}` or
/// `nats:{origin}/{original source}`.
const SOURCE_PREFIX: &str = "nats:";

/// Emitted on the bus when the bridge's connection comes up again.
pub const BRIDGE_CONNECTED: &str = "system.bridge_connected";
/// Emitted on the bus when the bridge's connection is lost.
pub const BRIDGE_DISCONNECTED: &str = "system.bridge_disconnected";

/// Options of [`NatsBridge::connect`].
///
/// | option | default |
/// |--------|---------|
/// | `prefix` | none: subjects are the event types |
/// | `any_prefix` | off: without a `prefix`, a message published under one is refused |
/// | `origin` | a random UUID: this bridge's id in the `Nerve-Origin` header |
/// | `capacity` | 10,000 events per export waiting for the connection |
/// | `overflow` | [`Overflow::DropOldest`] |
/// | `redact_with` | the bus's journal's redaction hook, if it has one ([`Bus::redaction`]) |
/// | `reconnect_delay` | async-nats's backoff (0 ms, then growing to 4 s) |
/// | `ack_timeout` | 5 s: how long a durable export waits for JetStream's acknowledgement of one publish |
/// | `publish_attempts` | 10: publishes of one event (while connected) before a durable export gives it up |
/// | `max_in_flight` | 256: durable publishes awaiting their acknowledgement at once, per export |
/// | `terminal_wait` | 30 s: the longest a terminal event's `emit` waits until the server processed it (`export`) or the stream acknowledged it (`export_durable`) |
#[derive(Clone)]
#[must_use]
pub struct NatsOptions {
    prefix: String,
    any_prefix: bool,
    origin: Option<String>,
    capacity: usize,
    overflow: Overflow,
    redact: Option<Redaction>,
    reconnect_delay: Option<Duration>,
    ack_timeout: Duration,
    publish_attempts: u32,
    max_in_flight: usize,
    terminal_wait: Duration,
}

impl Default for NatsOptions {
    fn default() -> Self {
        Self {
            prefix: String::new(),
            any_prefix: false,
            origin: None,
            capacity: 10_000,
            overflow: Overflow::DropOldest,
            redact: None,
            reconnect_delay: None,
            ack_timeout: Duration::from_secs(5),
            publish_attempts: 10,
            max_in_flight: 256,
            terminal_wait: Duration::from_secs(30),
        }
    }
}

impl std::fmt::Debug for NatsOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsOptions")
            .field("prefix", &self.prefix)
            .field("any_prefix", &self.any_prefix)
            .field("origin", &self.origin)
            .field("capacity", &self.capacity)
            .field("overflow", &self.overflow)
            .field("redact", &self.redact.is_some())
            .field("reconnect_delay", &self.reconnect_delay)
            .field("ack_timeout", &self.ack_timeout)
            .field("publish_attempts", &self.publish_attempts)
            .field("max_in_flight", &self.max_in_flight)
            .field("terminal_wait", &self.terminal_wait)
            .finish()
    }
}

impl NatsOptions {
    /// The defaults.
    pub fn new() -> Self {
        Self::default()
    }

    /// A subject prefix that namespaces a deployment (`nerve.prod.`).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Whether a bridge without a [`prefix`](Self::prefix) of its own also
    /// imports the events that bridges publish under one: a message whose
    /// subject is some prefix followed by its body's event type
    /// (`nerve demo --nats` publishes under `nerve.demo.{nonce}.`), as
    /// `nerve tail --nats '*'` shows them. For watchers that import `*`
    /// from every deployment on a server (`nerve serve --nats`). Off by
    /// default: such a message is refused, counted in
    /// [`BridgeStats::import_rejected`] and reported as
    /// `system.bridge_error`. With a prefix it changes nothing: the
    /// bridge's subscriptions only match its own prefix.
    pub fn any_prefix(mut self, any: bool) -> Self {
        self.any_prefix = any;
        self
    }

    /// This bridge's origin id (default: a random UUID).
    pub fn origin(mut self, origin: impl Into<String>) -> Self {
        self.origin = Some(origin.into());
        self
    }

    /// How many events of one export may wait (for the connection or the
    /// publisher) before `overflow` applies.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity.max(1);
        self
    }

    /// What happens to an export's events when `capacity` is reached;
    /// every drop is counted in [`BridgeStats::dropped_by_reason`].
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }

    /// Passes every exported event through `redact` before it is encoded,
    /// as a journal's hook is applied ([`line::encode_redacted`]): payload,
    /// source and correlation id from what `redact` returns, every id,
    /// name and time from the event; if `redact` panics, the payload goes
    /// out as an error marker, never unredacted (counted in
    /// [`BridgeStats::redaction_failed`]). With `nerve::redact`:
    /// `move |e| redactor.redact_event(e)`.
    ///
    /// Without it, a bridge redacts with its bus's journal's hook
    /// ([`Bus::redaction`]), so an event redacted on disk is redacted on the
    /// wire; `redact_with(|e| e.clone())` sends events as they are.
    ///
    /// [`line::encode_redacted`]: nerve_journal::line::encode_redacted
    pub fn redact_with(mut self, redact: impl Fn(&Event) -> Event + Send + Sync + 'static) -> Self {
        self.redact = Some(Arc::new(redact));
        self
    }

    /// A fixed delay between reconnection attempts instead of async-nats's
    /// growing backoff.
    pub fn reconnect_delay(mut self, delay: Duration) -> Self {
        self.reconnect_delay = Some(delay);
        self
    }

    /// How long a durable export waits for JetStream to acknowledge one
    /// publish before the attempt counts as failed (and is retried).
    pub fn ack_timeout(mut self, timeout: Duration) -> Self {
        self.ack_timeout = timeout.max(Duration::from_millis(1));
        self
    }

    /// How many times a durable export publishes one event while connected
    /// (with a growing delay between attempts: 50 ms doubling up to 5 s)
    /// before it gives the event up: counted in
    /// [`BridgeStats::ack_failed`] and reported as `system.bridge_error`.
    /// Attempts are not spent while the connection is down: events then
    /// wait in the export's buffer.
    pub fn publish_attempts(mut self, attempts: u32) -> Self {
        self.publish_attempts = attempts.max(1);
        self
    }

    /// How many durable publishes of one export may await their
    /// acknowledgement at once.
    pub fn max_in_flight(mut self, n: usize) -> Self {
        self.max_in_flight = n.max(1);
        self
    }

    /// The longest a terminal event's `emit` waits until the server has
    /// processed it (`export`) or the stream acknowledged it
    /// (`export_durable`), it and every event of the export before it;
    /// past it `emit` returns
    /// [`EmitError::NotRecorded`](nerve_router::EmitError::NotRecorded)
    /// (the event stays buffered; a durable export keeps retrying it), and
    /// the wait is counted in [`BridgeStats::ack_wait_timeouts`]. `Duration::ZERO`: terminal
    /// emits do not wait (nor does a core export send its probes).
    pub fn terminal_wait(mut self, wait: Duration) -> Self {
        self.terminal_wait = wait;
        self
    }
}

/// The NATS servers `url` names: one address or a comma-separated list
/// (`nats://10.0.0.5:4222,nats://10.0.0.6:4222`), each `nats://host:port`,
/// `host:port` or `host` (port 4222).
///
/// async-nats takes a `&str` as one address, so a list is split here, and
/// the client knows every server to fail over to. An address with no
/// server in it (`""`, `","`, `nats://`) is refused here: async-nats
/// panics on one (0.46).
///
/// # Errors
///
/// [`BridgeError::Url`] naming the address and what is wrong with it.
pub fn servers(url: &str) -> Result<Vec<async_nats::ServerAddr>, BridgeError> {
    let refuse = |reason: String| BridgeError::Url {
        url: url.to_owned(),
        reason,
    };
    let mut list = Vec::new();
    for one in url.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let addr: async_nats::ServerAddr = one
            .parse()
            .map_err(|e: std::io::Error| refuse(e.to_string()))?;
        if addr.host().is_empty() {
            return Err(refuse(format!("{one:?} names no host")));
        }
        list.push(addr);
    }
    if list.is_empty() {
        return Err(refuse("it names no server".to_owned()));
    }
    Ok(list)
}

/// Why the bridge could not start or an `export`/`import` was refused.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BridgeError {
    /// The server could not be reached.
    #[error("could not connect to NATS")]
    Connect(#[source] async_nats::ConnectError),
    /// The address names no NATS server (see [`servers`]).
    #[error("{url:?} is not a NATS server address: {reason}")]
    Url {
        /// The address given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The subscription for an import was refused.
    #[error("could not subscribe to NATS")]
    Subscribe(#[source] async_nats::SubscribeError),
    /// A pattern or prefix has no NATS subject.
    #[error(transparent)]
    Subject(#[from] SubjectError),
    /// The pattern does not parse.
    #[error(transparent)]
    Pattern(#[from] nerve_core::PatternError),
    /// The bus refused the export's stream (it is shut down).
    #[error("the bus refused the export")]
    Bus(#[source] nerve_router::SubscribeError),
    /// A JetStream request (stream or consumer lookup or creation) failed.
    #[error("JetStream {what} failed for stream {stream:?}: {message}")]
    JetStream {
        /// What was asked (`stream lookup`, `stream creation`, `consumer creation`, ...).
        what: &'static str,
        /// The stream concerned.
        stream: String,
        /// The server's or client's answer.
        message: String,
    },
    /// `import_durable` names a stream that does not exist.
    #[error("no JetStream stream named {0:?} (create it, or export_durable into it first)")]
    StreamNotFound(String),
    /// An existing stream does not take the subjects of `export_durable`'s
    /// pattern, so its publishes would never be acknowledged.
    #[error("stream {stream:?} does not take subject {subject:?} (its subjects: {subjects:?})")]
    StreamSubjects {
        /// The stream.
        stream: String,
        /// The export's subject filter.
        subject: String,
        /// The stream's subjects.
        subjects: Vec<String>,
    },
    /// A stream or consumer name NATS would refuse (empty, or holding
    /// whitespace, `.`, `*`, `>`, `/` or `\`).
    #[error(
        "{what} name {name:?} is not valid in JetStream (no whitespace, '.', '*', '>', '/' or '\\', not empty)"
    )]
    Name {
        /// `stream` or `consumer`.
        what: &'static str,
        /// The name given.
        name: String,
    },
}

#[derive(Default)]
struct Counters {
    published: AtomicU64,
    publish_errors: AtomicU64,
    imported: AtomicU64,
    import_rejected: AtomicU64,
    echoes_suppressed: AtomicU64,
    internal_skipped: AtomicU64,
    not_forwarded: AtomicU64,
    unmappable: AtomicU64,
    redaction_failed: AtomicU64,
    too_large: AtomicU64,
    reconnects: AtomicU64,
    disconnects: AtomicU64,
    acked: AtomicU64,
    ack_duplicates: AtomicU64,
    nacked: AtomicU64,
    retried: AtomicU64,
    ack_failed: AtomicU64,
    ack_waits: AtomicU64,
    ack_wait_timeouts: AtomicU64,
    ack_waits_skipped: AtomicU64,
    redelivered: AtomicU64,
    duplicates_dropped: AtomicU64,
    consumer_errors: AtomicU64,
    acks_sent: AtomicU64,
}

struct Export {
    stream_id: SubscriptionId,
    /// The inline subscription that makes terminal emits wait until the
    /// stream acknowledged them (durable) or the server processed them
    /// (core), and what they wait on.
    waiter: Option<(SubscriptionId, Arc<durable::Waits>)>,
    /// Events taken off the stream and dealt with (published, refused or
    /// skipped): `flush` waits until this reaches what the stream delivered.
    done: Arc<AtomicU64>,
}

struct Shared {
    bus: Bus,
    client: async_nats::Client,
    origin: String,
    prefix: Prefix,
    options: NatsOptions,
    /// `options`' redaction hook, else the bus's journal's.
    redact: Option<Redaction>,
    counters: Arc<Counters>,
    connected: watch::Sender<bool>,
    exports: Arc<Mutex<Vec<Export>>>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
    /// The runtime `connect` ran on: the bridge's tasks run there, even
    /// when `export` is called from a plain thread.
    runtime: tokio::runtime::Handle,
    /// The bus's metrics recorder, if it has one: the counters go there too.
    metrics: Option<Arc<dyn Metrics>>,
    /// The largest message the server takes (`max_payload`; 0 unknown),
    /// as the server it is connected to announced it.
    max_payload: AtomicUsize,
    /// This bridge as the bus's stats see it.
    link: Arc<Link>,
    /// `link`'s id on the bus, until shutdown.
    attachment: Mutex<Option<AttachmentId>>,
}

/// A NATS connection attached to a bus; see the [crate docs](crate).
///
/// Cheap to clone. Tasks run on the tokio runtime `connect` was called on;
/// [`shutdown`](Self::shutdown) stops them.
#[derive(Clone)]
pub struct NatsBridge {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for NatsBridge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NatsBridge")
            .field("origin", &self.shared.origin)
            .field("prefix", &self.shared.prefix.as_str())
            .finish()
    }
}

/// A snapshot of a bridge's counters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct BridgeStats {
    /// Whether the connection is up now.
    pub connected: bool,
    /// The server the connection is (or was last) up with,
    /// `nats://{host}:{port}` as the server announces itself: after a
    /// failover in a cluster, the node it moved to.
    pub server: Option<String>,
    /// Events published to NATS.
    pub published: u64,
    /// Publishes async-nats refused (counted, the event is lost).
    pub publish_errors: u64,
    /// Messages emitted into the local bus.
    pub imported: u64,
    /// Messages that could not be imported: a body that is not a journal
    /// line, a subject that is no event type, a subject that does not match
    /// the body's type, or an emit the bus refused.
    pub import_rejected: u64,
    /// Messages this bridge had published itself, received back and dropped.
    pub echoes_suppressed: u64,
    /// Messages on NATS's own subjects (`_INBOX.…`, `$…`: replies, JetStream
    /// and system traffic) that an import pattern such as `*` (`>`) also
    /// matched: not events, not imported.
    pub internal_skipped: u64,
    /// Events matching an export that came in over a bridge (not forwarded
    /// again) or describe the bridge's own connection.
    pub not_forwarded: u64,
    /// Events whose type has no NATS subject (see the mapping table).
    pub unmappable: u64,
    /// Exported events whose redaction hook panicked: published with their
    /// payload replaced by an error marker (`"$nerve_error":"redact"`),
    /// never unredacted, each reported as a `system.bridge_error` event.
    pub redaction_failed: u64,
    /// Events whose message (the journal line and the headers) is larger
    /// than the server takes (its `max_payload`, 1 MiB by default): not
    /// published, each reported as a `system.bridge_error` event. The
    /// server would close the connection on such a message, and the
    /// messages sent after it on that connection would be lost.
    pub too_large: u64,
    /// Events dropped by the exports' buffers, all reasons.
    pub dropped: u64,
    /// `dropped` by reason (`evicted`, `queue_full`, `block_timeout`, ...).
    pub dropped_by_reason: BTreeMap<&'static str, u64>,
    /// Events waiting in the exports' buffers.
    pub buffered: u64,
    /// Connections re-established after a loss.
    pub reconnects: u64,
    /// Connection losses.
    pub disconnects: u64,
    /// Durable exports: publishes JetStream acknowledged (each event once).
    pub acked: u64,
    /// Of `acked`: acknowledgements saying the stream already had the
    /// event (a retry whose first attempt had landed; JetStream's
    /// duplicate window kept a second copy out).
    pub ack_duplicates: u64,
    /// Durable exports: publish attempts that failed (an error answer, no
    /// stream, or no acknowledgement within `ack_timeout`).
    pub nacked: u64,
    /// Durable exports: publishes repeated after a failed attempt.
    pub retried: u64,
    /// Durable exports: events given up after `publish_attempts` failures;
    /// each was reported as a `system.bridge_error` event.
    pub ack_failed: u64,
    /// Terminal emits that waited until the server processed them
    /// (`export`) or the stream acknowledged them (`export_durable`).
    pub ack_waits: u64,
    /// Of `ack_waits`: waits that ran out of `terminal_wait`, or that the
    /// export's shutdown ended (the event stayed buffered; a durable export
    /// retried it). Each such emit returned `EmitError::NotRecorded`, as did
    /// one whose event was given up (`ack_failed`) or refused
    /// (`too_large`).
    pub ack_wait_timeouts: u64,
    /// Terminal emits that could not wait because they were made on a
    /// current-thread tokio runtime (waiting there could block the bridge
    /// itself). The first one of an export is also said as a
    /// `system.bridge_error` event.
    pub ack_waits_skipped: u64,
    /// Durable imports: messages JetStream delivered more than once (not
    /// acknowledged in time, or by a process that stopped before it could).
    pub redelivered: u64,
    /// Durable imports: messages whose event id was already delivered
    /// within the deduplication window; acknowledged, not emitted again.
    pub duplicates_dropped: u64,
    /// Durable imports: errors of the consumer's message stream (missed
    /// heartbeats while the server was away, failed pull requests).
    pub consumer_errors: u64,
    /// Durable imports: acknowledgements sent back to JetStream.
    pub acks_sent: u64,
}

/// Where an imported event came from, read off its `source`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Origin<'a> {
    /// The origin id of the bridge that published it.
    pub bridge: &'a str,
    /// The event's source on the bus it was emitted on.
    pub source: Option<&'a str>,
}

/// Where `event` came from if a bridge imported it: imported events carry
/// `source` = `nats:{origin}` or `nats:{origin}/{original source}`.
///
/// ```
/// let event = nerve::Event::builder("a.b").source("nats:worker-1/auth").build()?;
/// let origin = nerve::nats::imported_from(&event).unwrap();
/// assert_eq!((origin.bridge, origin.source), ("worker-1", Some("auth")));
/// assert!(nerve::nats::imported_from(&nerve::Event::builder("a.b").build()?).is_none());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub fn imported_from(event: &Event) -> Option<Origin<'_>> {
    let rest = event.source()?.strip_prefix(SOURCE_PREFIX)?;
    Some(match rest.split_once('/') {
        Some((bridge, source)) => Origin {
            bridge,
            source: Some(source),
        },
        None => Origin {
            bridge: rest,
            source: None,
        },
    })
}

impl NatsBridge {
    /// Connects to the NATS server at `url` (`nats://127.0.0.1:4222`, or
    /// several, comma-separated) and attaches to `bus`. The connection is
    /// kept up (reconnects forever, with backoff) until [`shutdown`](Self::shutdown).
    ///
    /// # Errors
    ///
    /// [`BridgeError::Connect`] when no server answers, and
    /// [`BridgeError::Subject`] for a bad prefix.
    pub async fn connect(url: &str, bus: &Bus, options: NatsOptions) -> Result<Self, BridgeError> {
        let prefix = Prefix::new(&options.prefix)?;
        let origin = options
            .origin
            .clone()
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let (connected, _) = watch::channel(false);
        let weak: Arc<Mutex<Option<std::sync::Weak<Shared>>>> = Arc::default();
        let hook = weak.clone();
        let mut connect = async_nats::ConnectOptions::new()
            .max_reconnects(None)
            .event_callback(move |event| {
                let hook = hook.clone();
                async move {
                    let shared = hook.lock().ok().and_then(|w| w.as_ref()?.upgrade());
                    if let Some(shared) = shared {
                        shared.on_connection_event(event);
                    }
                }
            });
        if let Some(delay) = options.reconnect_delay {
            connect = connect.reconnect_delay_callback(move |_| delay);
        }
        let servers = servers(url)?;
        let client = connect
            .connect(servers)
            .await
            .map_err(BridgeError::Connect)?;
        connected.send_replace(true);
        let counters = Arc::new(Counters::default());
        let exports = Arc::new(Mutex::new(Vec::new()));
        let link = Arc::new(Link {
            origin: origin.clone(),
            client: client.clone(),
            counters: counters.clone(),
            connected: connected.subscribe(),
            exports: exports.clone(),
        });
        let metrics = bus.metrics();
        if let Some(m) = &metrics {
            m.gauge(
                metric::BRIDGE_CONNECTED,
                1.0,
                &[(metric::label::BRIDGE, &origin)],
            );
        }
        let max_payload = client.server_info().max_payload;
        let redact = options.redact.clone().or_else(|| bus.redaction());
        let shared = Arc::new(Shared {
            bus: bus.clone(),
            client,
            origin,
            prefix,
            options,
            redact,
            counters,
            connected,
            exports,
            tasks: Mutex::new(Vec::new()),
            runtime: tokio::runtime::Handle::current(),
            metrics,
            max_payload: AtomicUsize::new(max_payload),
            attachment: Mutex::new(Some(bus.attach(link.clone()))),
            link,
        });
        if let Ok(mut w) = weak.lock() {
            *w = Some(Arc::downgrade(&shared));
        }
        Ok(Self { shared })
    }

    /// This bridge's origin id, sent as the `Nerve-Origin` header.
    pub fn origin(&self) -> &str {
        &self.shared.origin
    }

    /// Publishes every local event matching `pattern` on its subject (see
    /// the mapping table). Events wait in a bounded buffer of the bus
    /// (`capacity`, `overflow`) so local delivery never waits for NATS.
    ///
    /// # Errors
    ///
    /// [`BridgeError::Pattern`] or [`BridgeError::Subject`] when the pattern
    /// has no subject; [`BridgeError::Bus`] when the bus is shut down.
    pub fn export(&self, pattern: &str) -> Result<(), BridgeError> {
        let parsed = Pattern::parse(pattern)?;
        subject::pattern_subject(&self.shared.prefix, &parsed)?;
        let options = StreamOptions::new()
            .capacity(self.shared.options.capacity)
            .overflow(self.shared.options.overflow)
            .name(format!("nats export {pattern}"));
        let stream = self
            .shared
            .bus
            .stream_with(parsed.clone(), options)
            .map_err(BridgeError::Bus)?;
        // `terminal_wait` zero: no emit waits, and no probe is sent.
        let waiter = if self.shared.options.terminal_wait.is_zero() {
            None
        } else {
            let waits = Arc::new(durable::Waits::default());
            let label = format!("nats export {pattern} (terminal wait)");
            match self.terminal_waiter(parsed, &label, &waits) {
                Ok(id) => Some((id, waits)),
                Err(e) => {
                    self.shared.bus.unsubscribe(stream.id());
                    return Err(BridgeError::Bus(e));
                }
            }
        };
        let waits = waiter.as_ref().map(|(_, waits)| waits.clone());
        let done = Arc::new(AtomicU64::new(0));
        self.lock_exports().push(Export {
            stream_id: stream.id(),
            waiter,
            done: done.clone(),
        });
        let shared = self.shared.clone();
        let task = (self.shared.runtime)
            .spawn(async move { shared.run_export(stream, done, waits).await });
        self.lock_tasks().push(task);
        Ok(())
    }

    /// Emits every message on a subject matching `pattern` into the local
    /// bus, except those this bridge published itself. Returns once the
    /// server has the subscription: messages published after that are
    /// imported.
    ///
    /// # Errors
    ///
    /// [`BridgeError::Pattern`] or [`BridgeError::Subject`] when the pattern
    /// has no subject; [`BridgeError::Subscribe`] when NATS refused.
    pub async fn import(&self, pattern: &str) -> Result<(), BridgeError> {
        let parsed = Pattern::parse(pattern)?;
        let filter = subject::pattern_subject(&self.shared.prefix, &parsed)?;
        let subscriber = self
            .shared
            .client
            .subscribe(filter)
            .await
            .map_err(BridgeError::Subscribe)?;
        // Return only once the server has the subscription, so that what
        // is published after `import` returns is delivered.
        self.shared.round_trip().await;
        let shared = self.shared.clone();
        let task = (self.shared.runtime).spawn(async move { shared.run_import(subscriber).await });
        self.lock_tasks().push(task);
        Ok(())
    }

    /// Waits until every event the exports had accepted when it was called
    /// is published and written to the server, at most `timeout`. Returns
    /// whether it got there.
    pub async fn flush(&self, timeout: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if self.exports_idle() {
                return tokio::time::timeout_at(deadline, self.shared.client.flush())
                    .await
                    .is_ok_and(|r| r.is_ok());
            }
            if tokio::time::Instant::now() >= deadline {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
    }

    fn exports_idle(&self) -> bool {
        let stats = self.shared.bus.stats();
        self.lock_exports().iter().all(|export| {
            stats
                .subscribers
                .iter()
                .find(|s| s.id == export.stream_id.as_u64())
                // Every event offered to the export's stream was dropped by
                // its overflow policy or dealt with by the publisher (the
                // stream's own counts cannot tell: it hands events over in
                // batches).
                .is_none_or(|s| s.dropped + export.done.load(Ordering::Acquire) >= s.offered)
        })
    }

    /// The bridge's counters now.
    pub fn stats(&self) -> BridgeStats {
        let link = &self.shared.link;
        let mut stats = link.counts();
        let bus = self.shared.bus.stats();
        let ids = link.export_ids();
        for s in bus.subscribers.iter().filter(|s| ids.contains(&s.id)) {
            stats.dropped += s.dropped;
            stats.buffered += s.queued;
            for (reason, n) in &s.dropped_by_reason {
                *stats.dropped_by_reason.entry(reason).or_insert(0) += n;
            }
        }
        stats
    }

    /// Flushes (at most `timeout`), stops the exports and imports and
    /// closes the connection. Idempotent.
    pub async fn shutdown(&self, timeout: Duration) {
        self.flush(timeout).await;
        let attachment = self
            .shared
            .attachment
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(id) = attachment {
            self.shared.bus.detach(id);
        }
        let tasks = std::mem::take(&mut *self.lock_tasks());
        for task in tasks {
            task.abort();
        }
        for export in self.lock_exports().drain(..) {
            self.shared.bus.unsubscribe(export.stream_id);
            if let Some((waiter, waits)) = export.waiter {
                self.shared.bus.unsubscribe(waiter);
                waits.close();
            }
        }
        let _ = self.shared.client.drain().await;
    }

    fn lock_exports(&self) -> std::sync::MutexGuard<'_, Vec<Export>> {
        self.shared
            .exports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn lock_tasks(&self) -> std::sync::MutexGuard<'_, Vec<JoinHandle<()>>> {
        self.shared.tasks.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Shared {
    /// Waits (at most 10 s) until the server has processed everything this
    /// connection sent before: a server handles one connection's commands
    /// in order, so a message to a fresh inbox coming back proves it.
    /// (`Client::flush` only empties the socket buffer.)
    /// Whether the answer came back in time.
    async fn round_trip(&self) -> bool {
        let inbox = self.client.new_inbox();
        let Ok(mut probe) = self.client.subscribe(inbox.clone()).await else {
            return false;
        };
        let answered = self.client.publish(inbox, Vec::new().into()).await.is_ok()
            && matches!(
                tokio::time::timeout(Duration::from_secs(10), probe.next()).await,
                Ok(Some(_))
            );
        let _ = probe.unsubscribe().await;
        answered
    }

    /// Counts one message with `outcome`, in the bridge's counters and the
    /// bus's metrics.
    fn count(&self, counter: &AtomicU64, outcome: &'static str) {
        counter.fetch_add(1, Ordering::Relaxed);
        if let Some(m) = &self.metrics {
            m.counter(
                metric::BRIDGE_MESSAGES_TOTAL,
                1,
                &[
                    (metric::label::BRIDGE, &self.origin),
                    (metric::label::OUTCOME, outcome),
                ],
            );
        }
    }

    /// Records a connection change in the bus's metrics.
    fn count_connection(&self, up: bool) {
        if let Some(m) = &self.metrics {
            let label = [(metric::label::BRIDGE, self.origin.as_str())];
            let total = if up {
                metric::BRIDGE_RECONNECTS_TOTAL
            } else {
                metric::BRIDGE_DISCONNECTS_TOTAL
            };
            m.counter(total, 1, &label);
            m.gauge(metric::BRIDGE_CONNECTED, f64::from(u8::from(up)), &label);
        }
    }

    fn on_connection_event(&self, event: async_nats::Event) {
        let c = &self.counters;
        if matches!(event, async_nats::Event::Connected) {
            // A node of a cluster may take other sizes than the last one.
            let max = self.client.server_info().max_payload;
            self.max_payload.store(max, Ordering::Relaxed);
        }
        match event {
            // The first `Connected` (from `connect`) finds the flag already
            // up: only a recovery counts.
            async_nats::Event::Connected if !self.connected.send_replace(true) => {
                let reconnects = c.reconnects.fetch_add(1, Ordering::Relaxed) + 1;
                self.count_connection(true);
                let _ = self.bus.emit(
                    BRIDGE_CONNECTED,
                    json!({"origin": self.origin, "reconnects": reconnects}),
                );
            }
            async_nats::Event::Disconnected if self.connected.send_replace(false) => {
                c.disconnects.fetch_add(1, Ordering::Relaxed);
                self.count_connection(false);
                let _ = self
                    .bus
                    .emit(BRIDGE_DISCONNECTED, json!({"origin": self.origin}));
            }
            _ => {}
        }
    }

    async fn run_export(
        self: Arc<Self>,
        mut stream: nerve_router::EventStream,
        done: Arc<AtomicU64>,
        waits: Option<Arc<durable::Waits>>,
    ) {
        let mut body = Vec::with_capacity(512);
        let mut bodies = Bodies::default();
        let mut subjects = Subjects::default();
        let mut connected = self.connected.subscribe();
        // Which events hold their `emit` until the server has them: the
        // bus's own durable setting, as its journal uses it.
        let durable = self.bus.durable();
        let mut probes = match waits {
            Some(waits) => Some(Probes::new(&self.client, waits).await),
            None => None,
        };
        loop {
            // Publish back to back while events are ready; when none is,
            // flush before waiting: async-nats may otherwise keep the last
            // messages of a burst in its write buffer until more traffic
            // (or its next ping) comes, seconds later.
            let event = match stream.next().now_or_never() {
                Some(Some(event)) => event,
                Some(None) => break,
                None => {
                    let _ = self.client.flush().await;
                    loop {
                        tokio::select! {
                            biased;
                            next = stream.next() => match next {
                                Some(event) => break event,
                                None => return,
                            },
                            answer = Probes::next_of(&mut probes), if Probes::any_waiting(&probes) => {
                                if let Some(probes) = &mut probes {
                                    probes.answered(answer);
                                }
                            }
                            () = tokio::time::sleep(REPROBE), if Probes::any_waiting(&probes) => {
                                if let Some(probes) = &mut probes {
                                    probes.send(&self.client).await;
                                }
                            }
                        }
                    }
                }
            };
            let published = self
                .export_one(
                    &event,
                    &mut body,
                    &mut bodies,
                    &mut subjects,
                    &mut connected,
                )
                .await;
            if let Some(probes) = &mut probes {
                if durable.matches(&event) {
                    // Its emit waits until the server has processed it, and
                    // every message before it: a program may emit its last
                    // event and exit.
                    match published {
                        Ok(()) => probes.after(&self.client, event.event_id()).await,
                        Err(e) => probes.waits.settle(event.event_id(), Err(e)),
                    }
                }
                probes.take_ready(&self.client).await;
            }
            done.fetch_add(1, Ordering::Release);
        }
    }

    /// Publishes `event`: hands it to the connection, or says why not.
    async fn export_one(
        &self,
        event: &Event,
        body: &mut Vec<u8>,
        bodies: &mut Bodies,
        subjects: &mut Subjects,
        connected: &mut watch::Receiver<bool>,
    ) -> durable::Settled {
        let c = &self.counters;
        let Some(subject) = self.outgoing_subject(event, subjects) else {
            return Err(no_subject(event));
        };
        let headers = self.encode(event, body);
        // While the connection is down, events wait in the export's
        // bounded stream (counted), not in the socket of a dead connection.
        let _ = connected.wait_for(|up| *up).await;
        if let Some(error) = self.oversized(&headers, body) {
            return Err(self.refuse_too_large(event, &subject, None, error));
        }
        let payload = bodies.cut(body);
        match self
            .client
            .publish_with_headers(subject, headers, payload)
            .await
        {
            Ok(()) => {
                self.count(&c.published, outcome::PUBLISHED);
                Ok(())
            }
            Err(e) => {
                self.count(&c.publish_errors, outcome::PUBLISH_ERROR);
                Err(SinkError::new(
                    SinkErrorKind::Io,
                    format!("not published: {e}"),
                ))
            }
        }
    }

    /// Why a message of `headers` and `body` cannot be published: it is
    /// larger than the server takes. async-nats checks that for a publish
    /// without headers only; the server closes the connection on such a
    /// message, losing what was sent after it.
    pub(crate) fn oversized(&self, headers: &HeaderMap, body: &[u8]) -> Option<String> {
        let max = self.max_payload.load(Ordering::Relaxed);
        // `NATS/1.0\r\n`, `name: value\r\n` each, and `\r\n`.
        let header_bytes: usize = 12
            + headers
                .iter()
                .map(|(name, values)| {
                    let name: &str = name.as_ref();
                    values
                        .iter()
                        .map(|v| name.len() + v.as_str().len() + 4)
                        .sum::<usize>()
                })
                .sum::<usize>();
        let size = header_bytes + body.len();
        (max > 0 && size > max).then(|| {
            format!(
                "a message of {size} bytes is larger than the server takes (max_payload {max} bytes): not published"
            )
        })
    }

    /// Counts and reports an event [`oversized`](Self::oversized) found too
    /// large to publish; what a terminal event's emit is told.
    pub(crate) fn refuse_too_large(
        &self,
        event: &Event,
        subject: &str,
        stream: Option<&str>,
        error: String,
    ) -> SinkError {
        let refused = SinkError::new(SinkErrorKind::Unsupported, &error);
        self.count(&self.counters.too_large, outcome::TOO_LARGE);
        let _ = self.bus.emit(
            "system.bridge_error",
            json!({
                "origin": self.origin,
                "stream": stream,
                "subject": subject,
                "event_id": event.event_id().to_string(),
                "event_type": event.event_type(),
                "error": error,
            }),
        );
        refused
    }

    /// The subject `event` goes out on, or `None` (counted, and reported
    /// when it is an error) when it is not to be exported.
    fn outgoing_subject(
        &self,
        event: &Event,
        subjects: &mut Subjects,
    ) -> Option<async_nats::Subject> {
        let c = &self.counters;
        if !forwardable(event) {
            self.count(&c.not_forwarded, outcome::NOT_FORWARDED);
            return None;
        }
        if let Some(subject) = subjects.get(event.event_type()) {
            return Some(subject);
        }
        match subject::event_subject(&self.prefix, event.event_type()) {
            Ok(s) => Some(subjects.keep(event.event_type(), s)),
            Err(e) => {
                self.count(&c.unmappable, outcome::UNMAPPABLE);
                let _ = self.bus.emit(
                    "system.bridge_error",
                    json!({"origin": self.origin, "event_id": event.event_id().to_string(), "error": e.to_string()}),
                );
                None
            }
        }
    }

    /// `event`'s journal line (after the redaction hook) into `body`; its
    /// headers, with the correlation id the line holds.
    fn encode(&self, event: &Event, body: &mut Vec<u8>) -> HeaderMap {
        body.clear();
        let Some(redact) = &self.redact else {
            nerve_journal::line::encode(event, body);
            return self.headers(event, event.correlation_id());
        };
        // As the journal applies its hook: payload, source and correlation
        // id from the hook, every id, name and time from the event, so a
        // hook cannot make a message lie about which event it is; a hook
        // that panics sends an error marker, never the payload.
        let written = nerve_journal::line::encode_redacted(event, &**redact, body);
        let correlation_id = match &written.event {
            Some(redacted) => redacted.correlation_id(),
            None => {
                self.counters
                    .redaction_failed
                    .fetch_add(1, Ordering::Relaxed);
                self.report_error(
                    event,
                    format!(
                        "{}; published with its payload replaced by an error marker",
                        written.message.as_deref().unwrap_or("redaction failed")
                    ),
                );
                event.correlation_id()
            }
        };
        self.headers(event, correlation_id)
    }

    /// Says what went wrong with `event` as a `system.bridge_error` event
    /// on the bus, where a program's events are seen.
    pub(crate) fn report_error(&self, event: &Event, error: impl Into<nerve_core::Value>) {
        let _ = self.bus.emit(
            "system.bridge_error",
            json!({
                "origin": self.origin,
                "event_id": event.event_id().to_string(),
                "event_type": event.event_type(),
                "error": error.into(),
            }),
        );
    }

    /// The headers of `event`'s message, `correlation_id` the one its body
    /// holds.
    fn headers(
        &self,
        event: &Event,
        correlation_id: Option<&nerve_core::CorrelationId>,
    ) -> HeaderMap {
        let mut h = HeaderMap::new();
        let mut id = uuid::Uuid::encode_buffer();
        h.insert(
            key::MSG_ID,
            &*event
                .event_id()
                .as_uuid()
                .hyphenated()
                .encode_lower(&mut id),
        );
        h.insert(key::ORIGIN, self.origin.as_str());
        if let Some(id) = correlation_id {
            h.insert(key::CORRELATION_ID, id.as_str());
        }
        if let Some(id) = event.causation_id() {
            h.insert(key::CAUSATION_ID, id.to_string());
        }
        if let Some(tc) = event.trace_context() {
            h.insert(key::TRACEPARENT, tc.traceparent());
            if let Some(state) = tc.tracestate() {
                h.insert(key::TRACESTATE, state);
            }
        }
        h
    }

    async fn run_import(self: Arc<Self>, mut subscriber: async_nats::Subscriber) {
        while let Some(message) = subscriber.next().await {
            self.import_one(&message);
        }
    }

    fn import_one(&self, message: &async_nats::Message) {
        let c = &self.counters;
        if is_nats_internal(message.subject.as_str()) {
            self.count(&c.internal_skipped, outcome::INTERNAL_SKIPPED);
            return;
        }
        let origin = origin_of(message);
        if origin == Some(self.origin.as_str()) {
            self.count(&c.echoes_suppressed, outcome::ECHO_SUPPRESSED);
            return;
        }
        match self.decode(message, origin) {
            Ok(event) => match self.bus.emit_event(event) {
                Ok(_) => self.count(&c.imported, outcome::IMPORTED),
                Err(e) if delivered_anyway(&e) => self.count(&c.imported, outcome::IMPORTED),
                Err(_) => self.count(&c.import_rejected, outcome::IMPORT_REJECTED),
            },
            Err(error) => {
                self.count(&c.import_rejected, outcome::IMPORT_REJECTED);
                let _ = self.bus.emit(
                    "system.bridge_error",
                    json!({"origin": self.origin, "subject": message.subject.as_str(), "error": error}),
                );
            }
        }
    }

    /// Whether this bridge takes events published under any prefix
    /// ([`NatsOptions::any_prefix`]): only one with no prefix of its own.
    fn takes_any_prefix(&self) -> bool {
        self.options.any_prefix && self.prefix.as_str().is_empty()
    }

    fn decode(&self, message: &async_nats::Message, origin: Option<&str>) -> Result<Event, String> {
        let subject = message.subject.as_str();
        let name = subject::subject_event_type(&self.prefix, subject);
        if let Err(e) = &name {
            if !self.takes_any_prefix() {
                return Err(e.to_string());
            }
        }
        let event = nerve_journal::line::decode(&message.payload).map_err(|e| e.to_string())?;
        if name.as_deref().ok() != Some(event.event_type())
            && !(self.takes_any_prefix()
                && subject::published_prefix(subject, event.event_type()).is_some())
        {
            return Err(match name {
                Ok(name) => format!(
                    "subject names {name:?} but the body is a {:?} event",
                    event.event_type()
                ),
                Err(e) => e.to_string(),
            });
        }
        let origin = origin.unwrap_or("unknown");
        let mut source = String::with_capacity(
            SOURCE_PREFIX.len() + origin.len() + 1 + event.source().map_or(0, str::len),
        );
        source.push_str(SOURCE_PREFIX);
        source.push_str(origin);
        if let Some(s) = event.source() {
            source.push('/');
            source.push_str(s);
        }
        // The decoded event is this task's alone: setting its source moves
        // nothing (no copy of the payload); the bus assigns `seq`.
        Ok(event.with_source(source))
    }
}

/// Whether an import whose `emit` returned `e` still reached every local
/// handler, and so was imported. A halt (a validator's verdict on a remote
/// worker's item) is said to the emitter after every handler had the event,
/// and there is no emitter here to stop: the verdict travels back as events
/// of its own. `NotRecorded` is the local journal's failure, counted and
/// reported by the bus; a durable import that must not acknowledge what is
/// not on disk asks for `ack_after_flush`.
pub(crate) fn delivered_anyway(e: &nerve_router::EmitError) -> bool {
    matches!(
        e,
        nerve_router::EmitError::Halted { .. } | nerve_router::EmitError::NotRecorded { .. }
    )
}

/// The subjects of the event types an export published last, checked,
/// mapped and made a `Subject` once: each message then takes a reference
/// count instead of two allocations (the mapped `String`, and its copy
/// into a `Subject`). A few entries, looked up in order: an export mostly
/// sends a few types, and a miss only costs the mapping again.
#[derive(Default)]
struct Subjects {
    recent: Vec<(Box<str>, async_nats::Subject)>,
    next: usize,
}

impl Subjects {
    const KEPT: usize = 8;

    fn get(&self, event_type: &str) -> Option<async_nats::Subject> {
        self.recent
            .iter()
            .find(|(t, _)| &**t == event_type)
            .map(|(_, s)| s.clone())
    }

    fn keep(&mut self, event_type: &str, subject: String) -> async_nats::Subject {
        let subject = async_nats::Subject::from(subject);
        let entry = (event_type.into(), subject.clone());
        if self.recent.len() < Self::KEPT {
            self.recent.push(entry);
        } else {
            self.recent[self.next] = entry;
            self.next = (self.next + 1) % Self::KEPT;
        }
        subject
    }
}

/// The size of a block a core export cuts its message bodies from (see
/// [`Bodies`]).
const BODIES: usize = 64 * 1024;

/// Where a core export's message bodies are copied: one allocation for a
/// few hundred messages rather than two each (the body, and the shared
/// header `Bytes` makes of a `Vec` when the connection clones it). Two
/// blocks, filled in turn: a block is used again once the connection has
/// written and dropped every body cut from it, as it has by the time the
/// other block is full, so in the steady state the export allocates and
/// frees no block at all (a block this size makes glibc's allocator sweep
/// its free lists on each allocation and each free).
#[derive(Default)]
struct Bodies {
    filling: bytes::BytesMut,
    other: bytes::BytesMut,
}

impl Bodies {
    /// A copy of `body` the connection can hold until it has written it.
    fn cut(&mut self, body: &[u8]) -> bytes::Bytes {
        if self.filling.capacity() < body.len() {
            std::mem::swap(&mut self.filling, &mut self.other);
            // Still in use (a body not yet written): a new block, and the
            // old one is freed with its last body.
            if !self.filling.try_reclaim(body.len()) {
                self.filling = bytes::BytesMut::with_capacity(body.len().max(BODIES));
            }
        }
        self.filling.extend_from_slice(body);
        self.filling.split().freeze()
    }
}

/// How long a core export waits for a probe's answer before it sends
/// another (the first was lost with its connection).
const REPROBE: Duration = Duration::from_secs(1);

/// Settles a core export's terminal events once the server has processed
/// them. After each one a probe, numbered in order, goes to an inbox of
/// the export's own on the same connection; the server handles one
/// connection's messages in order, so probe `n` coming back means that it
/// has processed everything published before it. Written to the socket is
/// not enough: a process that exits with unread input resets its
/// connection, and the server may never read what it had been sent.
/// Several terminal events awaiting answers are settled by the latest.
struct Probes {
    inbox: String,
    /// `None` if the inbox could not be subscribed: terminal events are
    /// then settled once flushed to the socket.
    answers: Option<async_nats::Subscriber>,
    sent: u64,
    last_sent: tokio::time::Instant,
    /// Terminal events, each with the probe that settles it.
    waiting: std::collections::VecDeque<(u64, nerve_core::EventId)>,
    waits: Arc<durable::Waits>,
}

impl Probes {
    async fn new(client: &async_nats::Client, waits: Arc<durable::Waits>) -> Self {
        let inbox = client.new_inbox();
        let answers = client.subscribe(inbox.clone()).await.ok();
        Self {
            inbox,
            answers,
            sent: 0,
            last_sent: tokio::time::Instant::now(),
            waiting: std::collections::VecDeque::new(),
            waits,
        }
    }

    fn waiting(&self) -> bool {
        !self.waiting.is_empty()
    }

    /// After terminal event `id` was published.
    async fn after(&mut self, client: &async_nats::Client, id: nerve_core::EventId) {
        if self.answers.is_none() {
            let flushed = client.flush().await.map_err(|e| {
                SinkError::new(SinkErrorKind::Io, format!("not written to the server: {e}"))
            });
            self.waits.settle(id, flushed);
            return;
        }
        self.waiting.push_back((self.sent + 1, id));
        self.send(client).await;
    }

    /// Sends the next probe: its answer settles every event waiting.
    async fn send(&mut self, client: &async_nats::Client) {
        self.sent += 1;
        self.last_sent = tokio::time::Instant::now();
        let _ = client
            .publish(self.inbox.clone(), self.sent.to_string().into())
            .await;
    }

    /// Whether an export's probes (if it has any) await an answer.
    fn any_waiting(probes: &Option<Self>) -> bool {
        probes.as_ref().is_some_and(Self::waiting)
    }

    /// The next answer of an export's probes (pending if it has none).
    async fn next_of(probes: &mut Option<Self>) -> Option<async_nats::Message> {
        match probes {
            Some(probes) => probes.next_answer().await,
            None => std::future::pending().await,
        }
    }

    /// The next answer (pending while there is no subscription).
    async fn next_answer(&mut self) -> Option<async_nats::Message> {
        match &mut self.answers {
            Some(answers) => answers.next().await,
            None => std::future::pending().await,
        }
    }

    /// Settles what `answer` (probe `n`) covers; `None`, the subscription
    /// ended (the connection closed for good), settles everything as not
    /// processed.
    fn answered(&mut self, answer: Option<async_nats::Message>) {
        let Some(answer) = answer else {
            self.answers = None;
            for (_, id) in self.waiting.drain(..) {
                self.waits.settle(
                    id,
                    Err(SinkError::new(
                        SinkErrorKind::Closed,
                        "the connection closed before the server confirmed it",
                    )),
                );
            }
            return;
        };
        let n = std::str::from_utf8(&answer.payload)
            .ok()
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        while let Some(&(probe, id)) = self.waiting.front() {
            if probe > n {
                break;
            }
            self.waiting.pop_front();
            self.waits.settle(id, Ok(()));
        }
    }

    /// Between events: settles what answers have come, and probes again
    /// if the last probe went unanswered for too long.
    async fn take_ready(&mut self, client: &async_nats::Client) {
        while self.waiting() {
            match self.next_answer().now_or_never() {
                Some(answer) => self.answered(answer),
                None => break,
            }
        }
        if self.waiting() && self.last_sent.elapsed() >= REPROBE {
            self.send(client).await;
        }
    }
}

/// The bridge as the bus's stats see it ([`Attachment`]): kind `nats`,
/// named by its origin id, its connection's state and server, and the
/// counters of [`BridgeStats`] by their field names. The bus adds the
/// export buffers (the streams listed) as `buffered` and `dropped`.
///
/// It holds the counters and the connection, not the bus: the bus holds it.
struct Link {
    origin: String,
    client: async_nats::Client,
    counters: Arc<Counters>,
    connected: watch::Receiver<bool>,
    exports: Arc<Mutex<Vec<Export>>>,
}

impl Link {
    /// The counters, state and server; no buffer figures (those are the
    /// bus's).
    fn counts(&self) -> BridgeStats {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        let info = self.client.server_info();
        BridgeStats {
            connected: *self.connected.borrow(),
            server: (!info.host.is_empty()).then(|| format!("nats://{}:{}", info.host, info.port)),
            published: get(&c.published),
            publish_errors: get(&c.publish_errors),
            imported: get(&c.imported),
            import_rejected: get(&c.import_rejected),
            echoes_suppressed: get(&c.echoes_suppressed),
            internal_skipped: get(&c.internal_skipped),
            not_forwarded: get(&c.not_forwarded),
            unmappable: get(&c.unmappable),
            redaction_failed: get(&c.redaction_failed),
            too_large: get(&c.too_large),
            reconnects: get(&c.reconnects),
            disconnects: get(&c.disconnects),
            acked: get(&c.acked),
            ack_duplicates: get(&c.ack_duplicates),
            nacked: get(&c.nacked),
            retried: get(&c.retried),
            ack_failed: get(&c.ack_failed),
            ack_waits: get(&c.ack_waits),
            ack_wait_timeouts: get(&c.ack_wait_timeouts),
            ack_waits_skipped: get(&c.ack_waits_skipped),
            redelivered: get(&c.redelivered),
            duplicates_dropped: get(&c.duplicates_dropped),
            consumer_errors: get(&c.consumer_errors),
            acks_sent: get(&c.acks_sent),
            ..BridgeStats::default()
        }
    }

    fn export_ids(&self) -> Vec<u64> {
        self.exports
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .map(|e| e.stream_id.as_u64())
            .collect()
    }
}

impl Attachment for Link {
    fn stats(&self) -> AttachmentStats {
        let s = self.counts();
        let state = if s.connected {
            AttachmentState::Connected
        } else {
            AttachmentState::Disconnected
        };
        let mut a = AttachmentStats::new("nats", self.origin.as_str()).state(state);
        if let Some(server) = s.server {
            a = a.endpoint(server);
        }
        for (name, value) in [
            ("published", s.published),
            ("publish_errors", s.publish_errors),
            ("imported", s.imported),
            ("import_rejected", s.import_rejected),
            ("echoes_suppressed", s.echoes_suppressed),
            ("internal_skipped", s.internal_skipped),
            ("not_forwarded", s.not_forwarded),
            ("unmappable", s.unmappable),
            ("redaction_failed", s.redaction_failed),
            ("too_large", s.too_large),
            ("reconnects", s.reconnects),
            ("disconnects", s.disconnects),
            ("acked", s.acked),
            ("ack_duplicates", s.ack_duplicates),
            ("nacked", s.nacked),
            ("retried", s.retried),
            ("ack_failed", s.ack_failed),
            ("ack_waits", s.ack_waits),
            ("ack_wait_timeouts", s.ack_wait_timeouts),
            ("ack_waits_skipped", s.ack_waits_skipped),
            ("redelivered", s.redelivered),
            ("duplicates_dropped", s.duplicates_dropped),
            ("consumer_errors", s.consumer_errors),
            ("acks_sent", s.acks_sent),
        ] {
            a = a.counter(name, value);
        }
        for id in self.export_ids() {
            a = a.subscription(id);
        }
        a
    }
}

/// The `Nerve-Origin` header of `message`, when it has one.
fn origin_of(message: &async_nats::Message) -> Option<&str> {
    message
        .headers
        .as_ref()
        .and_then(|h| h.get(key::ORIGIN))
        .map(|v| v.as_str())
}

/// Why a terminal event whose type maps to no subject was not exported
/// (counted as `unmappable` and reported).
#[cold]
fn no_subject(event: &Event) -> SinkError {
    SinkError::new(
        SinkErrorKind::Unsupported,
        format!("its type {:?} has no NATS subject", event.event_type()),
    )
}

/// Whether `event` may leave over a bridge: not one that came in over a
/// bridge (no multi-hop forwarding, no loops), not a bridge's own report.
fn forwardable(event: &Event) -> bool {
    imported_from(event).is_none() && !event.event_type().starts_with("system.bridge_")
}

/// Whether `subject` is in one of NATS's own namespaces: `_INBOX.` (reply
/// subjects) or `$` (`$JS.`, `$SYS.`, ...). Only reachable when there is no
/// prefix.
fn is_nats_internal(subject: &str) -> bool {
    subject.starts_with("_INBOX.") || subject.starts_with('$')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_take_turns_between_two_blocks_and_reuse_one_that_is_free() {
        let mut bodies = Bodies::default();
        let body = [7u8; 1000];
        // Cuts bodies into `held` until the block being filled is full.
        let fill = |bodies: &mut Bodies, held: &mut Vec<bytes::Bytes>| {
            while bodies.filling.capacity() >= body.len() {
                held.push(bodies.cut(&body));
            }
        };
        let first = bodies.cut(&body);
        assert_eq!(&first[..], &body[..]);
        // Fill the first block; keep its first body alive until it is full.
        let mut rest = Vec::new();
        fill(&mut bodies, &mut rest);
        let block_one = first.as_ptr();
        // The second block is new; the first is still in use.
        let second = bodies.cut(&body);
        assert_ne!(second.as_ptr(), block_one);
        drop(rest);
        // The first block is still held by `first`: once the second is
        // full, a third block is made rather than the first overwritten.
        let mut more = vec![second];
        fill(&mut bodies, &mut more);
        let third = bodies.cut(&body);
        assert_ne!(third.as_ptr(), block_one);
        assert_eq!(&first[..], &body[..], "a body in use is never overwritten");
        // Every body of the second block written and dropped: once the
        // third is full, the second is used again, from its start.
        let block_two = more[0].as_ptr();
        drop(more);
        let mut held = vec![third];
        fill(&mut bodies, &mut held);
        let again = bodies.cut(&body);
        assert_eq!(again.as_ptr(), block_two);
        assert_eq!(&again[..], &body[..]);
        // A body larger than a block gets a block of its own size.
        let large = vec![9u8; BODIES + 1];
        assert_eq!(&bodies.cut(&large)[..], &large[..]);
    }

    #[test]
    fn an_export_keeps_the_subjects_of_its_last_eight_types() {
        let mut subjects = Subjects::default();
        let name = |i: usize| format!("order.t{i}");
        for i in 0..10 {
            assert!(subjects.get(&name(i)).is_none());
            let kept = subjects.keep(&name(i), format!("nerve.prod.{}", name(i)));
            assert_eq!(kept.as_str(), format!("nerve.prod.{}", name(i)));
        }
        // The two oldest made room for the last two.
        for i in 0..2 {
            assert!(subjects.get(&name(i)).is_none(), "{i}");
        }
        for i in 2..10 {
            let subject = subjects.get(&name(i)).expect("kept");
            assert_eq!(subject.as_str(), format!("nerve.prod.{}", name(i)));
        }
    }

    #[test]
    fn servers_are_a_list_of_addresses_and_an_empty_one_is_refused() {
        let list = servers(" nats://10.0.0.5:4222, 10.0.0.6:4223 ,localhost").unwrap();
        let hosts: Vec<(&str, u16)> = list.iter().map(|a| (a.host(), a.port())).collect();
        assert_eq!(
            hosts,
            [("10.0.0.5", 4222), ("10.0.0.6", 4223), ("localhost", 4222)]
        );
        for (url, reason) in [
            ("", "it names no server"),
            (" , ", "it names no server"),
            ("nats://", "\"nats://\" names no host"),
        ] {
            let e = servers(url).unwrap_err();
            assert_eq!(
                e.to_string(),
                format!("{url:?} is not a NATS server address: {reason}")
            );
        }
        let e = servers("nats://[::1").unwrap_err().to_string();
        assert!(e.contains("NATS server URL is invalid"), "{e}");
    }
}
