//! A NATS bridge for the [nerve] event bus: events leave one process as
//! NATS messages and arrive in another as events, ids, correlation and
//! trace context intact.
//!
//! # Key types
//!
//! * [`NatsBridge`]: a NATS connection attached to a bus.
//!   [`export`](NatsBridge::export) publishes the local events matching a
//!   pattern; [`import`](NatsBridge::import) emits the messages on matching
//!   subjects into the local bus.
//! * [`NatsOptions`]: subject prefix, origin id, export buffer and overflow
//!   policy, redaction, reconnect delay.
//! * [`BridgeStats`]: what was published, imported, dropped (by reason),
//!   suppressed as echo, and how often the connection came back.
//! * [`subject`]: the mapping between names, patterns and subjects.
//! * [`DurableStream`], [`DurableImport`], [`DeliverFrom`]: JetStream
//!   streams and durable consumers for
//!   [`export_durable`](NatsBridge::export_durable) and
//!   [`import_durable`](NatsBridge::import_durable).
//!
//! # Example
//!
//! Run a server locally first (Debian/Ubuntu: `apt-get install nats-server`,
//! then `nats-server -a 127.0.0.1`).
//!
//! ```no_run
//! use nerve::nats::{NatsBridge, NatsOptions};
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let bus = nerve::Bus::new();
//! let bridge = NatsBridge::connect(
//!     "nats://127.0.0.1:4222",
//!     &bus,
//!     NatsOptions::new().prefix("nerve.prod."),
//! )
//! .await?;
//! bridge.export("order.*")?; // order.placed -> nerve.prod.order.placed
//! bridge.import("payment.*").await?; // nerve.prod.payment.> -> payment.*
//! bus.subscribe("payment.*", |event| {
//!     // `event` came from another process: same id, time, correlation.
//!     let origin = nerve::nats::imported_from(event);
//!     assert!(origin.is_some());
//! })?;
//! bus.emit("order.placed", nerve::json!({"id": 7}))?;
//! bridge.shutdown(std::time::Duration::from_secs(5)).await;
//! # Ok(())
//! # }
//! ```
//!
//! # Subject mapping
//!
//! A subject is the optional prefix followed by the event type; patterns
//! map segment by segment. Both directions:
//!
//! | nerve | NATS | note |
//! |-------|------|------|
//! | event `user.login` | subject `{prefix}user.login` | |
//! | pattern `user.login` | filter `{prefix}user.login` | |
//! | pattern `chat.*` (trailing `*`: one or more segments) | `{prefix}chat.>` | |
//! | pattern `*` (everything) | `{prefix}>` | |
//! | pattern `*.failed`, `a.*.c` (inner `*`: one segment) | `{prefix}*.failed`, `{prefix}a.*.c` | |
//! | event or pattern with a segment holding `>` (`a.>`, `a.b>c`) | none | `export`/`import` of such a pattern fails with [`SubjectError`]; such an event under a wider export is not published, counted in [`BridgeStats::unmappable`] and reported as a `system.bridge_error` event |
//! | event or pattern with a non-ASCII or non-printable segment (`café.opened`) | none | as above: NATS tokens are kept to printable ASCII |
//! | name with whitespace, `*`, an empty segment, over 255 bytes | none | already impossible in nerve |
//! | subject `{prefix}a.b` | event type `a.b` | must equal the body's `event_type` |
//! | subject without the prefix, or whose rest is no valid event type | none | the message is not imported: counted in [`BridgeStats::import_rejected`], reported as `system.bridge_error` |
//! | subject `{other prefix}a.b`, on a bridge with no prefix and [`NatsOptions::any_prefix`] | event type `a.b` | the body's `event_type`, when the subject ends with it after a `.`; otherwise refused as above |
//! | subject under `_INBOX.` or `$` (NATS's replies, JetStream, system) | none | matched only by a prefix-less `*` import (`>`); skipped, counted in [`BridgeStats::internal_skipped`] |
//! | prefix `nerve.prod` or `nerve.prod.` | `nerve.prod.` | a prefix with an empty, wildcard or non-ASCII token is refused at `connect` |
//!
//! # Wire format
//!
//! The body is the event's journal line (`nerve::journal::line`, the
//! format of `docs/journal-format.md`, newline included): one format
//! everywhere. Headers:
//!
//! | header | value |
//! |--------|-------|
//! | `Nats-Msg-Id` | the event id (JetStream deduplicates on it) |
//! | `Nerve-Origin` | the publishing bridge's origin id |
//! | `Nerve-Correlation-Id`, `Nerve-Causation-Id` | when the event has them |
//! | `traceparent`, `tracestate` | W3C trace context, when the event carries one |
//!
//! # Imported events
//!
//! An imported event keeps its id, type, timestamp, correlation and
//! causation ids, run, lane, trace context and payload; the importing bus
//! gives it its own `seq`. Its `source` marks where it came from:
//! `nats:{origin}` or `nats:{origin}/{original source}`, read back with
//! [`imported_from`]. A bridge never re-imports what it exported itself
//! (even with `export("*")` and `import("*")` on one bus: messages carrying
//! its own `Nerve-Origin` are dropped and counted in
//! [`BridgeStats::echoes_suppressed`]), and never exports events that
//! came in over a bridge or its own `system.bridge_*` events
//! ([`BridgeStats::not_forwarded`]): no loops, no multi-hop forwarding.
//!
//! # Failure behaviour
//!
//! Exports read a bounded stream of the bus (`capacity`, `overflow`, shown
//! in `bus.stats()` as the subscriber `nats export {pattern}`), so emitting
//! never waits for NATS; while the connection is down events wait there,
//! and what the overflow policy drops is counted in
//! [`BridgeStats::dropped_by_reason`]. The connection is re-established
//! forever, with backoff; each loss and recovery is emitted as
//! `system.bridge_disconnected` / `system.bridge_connected` and counted.
//! The bridge is an attachment of its bus (`nerve::attachment`): every
//! `bus.stats()` lists it in `attachments` (kind `nats`, named by its
//! origin id) with its state (`connected` / `disconnected`), the server it
//! is on, the counters of [`BridgeStats`] and its export buffers, until
//! [`shutdown`](NatsBridge::shutdown). When the bus has a metrics recorder
//! the bridge records into it: `nerve_bridge_messages_total{bridge,
//! outcome}` (outcomes `published`, `imported`, `publish_error`,
//! `import_rejected`, `echo_suppressed`, `internal_skipped`,
//! `not_forwarded`, `unmappable`, `too_large`, and for JetStream `acked`, `ack_failed`,
//! `duplicate_dropped`), `nerve_bridge_connected{bridge}` (1 or
//! 0), `nerve_bridge_disconnects_total{bridge}` and
//! `nerve_bridge_reconnects_total{bridge}`, `bridge` being the origin id.
//! An event whose message (its journal line and headers) is larger than
//! the server takes (`max_payload`, 1 MiB by default) is not published:
//! counted in [`BridgeStats::too_large`] and reported as a
//! `system.bridge_error` event naming it. The server would close the
//! connection on it, losing the messages sent after it; async-nats checks
//! the size of a publish without headers only. A durable export does not
//! retry it.
//! Core NATS is at-most-once: a message written to a connection just as it
//! fails, or published while no importer is subscribed, is lost. For
//! delivery that survives both, use JetStream ("Durable", below).
//!
//! A **terminal event** (`*.completed`, `*.failed`, ... or
//! [`Event::terminal`](nerve_core::Event::terminal); on a bus built with
//! `durable_patterns`, the events those match, as for the journal) is not
//! left in the buffer: its `emit` returns once the server has processed it
//! and every event of the export before it, so a program may emit its last
//! event and exit (`process::exit(1)` right after `extraction.failed`)
//! without losing it. The bridge knows by a probe message to an inbox of
//! its own, answered in order after everything it published before;
//! written to the socket is not enough, as a process that exits with
//! unread input resets its connection. The wait is bounded by
//! `terminal_wait` (30 s) and counted as for durable exports
//! ([`BridgeStats::ack_waits`], [`BridgeStats::ack_wait_timeouts`];
//! skipped on a current-thread runtime, [`BridgeStats::ack_waits_skipped`]).
//! When the server did not confirm the event (the wait ran out, the event
//! was too large for the server, its type has no subject), the emit
//! returns [`EmitError::NotRecorded`](nerve_router::EmitError::NotRecorded),
//! as it does when the journal could not record an event: the event was
//! delivered to every local handler, and the program is told its last word
//! may not have left.
//! Other events are not waited for: call [`NatsBridge::flush`] or
//! [`NatsBridge::shutdown`] before exiting to send what is still buffered.
//! `terminal_wait(Duration::ZERO)` turns the wait off.
//!
//! # Durable: JetStream
//!
//! * [`NatsBridge::export_durable`]`(pattern, stream)` publishes the
//!   matching events into a JetStream stream ([`DurableStream`]: a name, or
//!   a name with limits; created when missing with the pattern's subjects)
//!   and has each one acknowledged by the stream. Events wait in the same
//!   bounded, counted buffer as `export`. A failed attempt (an error, no
//!   stream, no acknowledgement within `ack_timeout`) is published again
//!   after 50 ms, doubling up to 5 s, with the same `Nats-Msg-Id`, so the
//!   stream stores it once even when the first attempt had landed (within
//!   the stream's duplicate window; counted in [`BridgeStats::ack_duplicates`]).
//!   Attempts are not spent while the connection is down. After
//!   `publish_attempts` failures (10) the event is given up: counted in
//!   [`BridgeStats::ack_failed`] and reported as a `system.bridge_error`
//!   event naming it. A retried event may be stored after events emitted
//!   after it (up to `max_in_flight` publishes are in flight).
//! * **Terminal events wait**: the emit of an event the bus marks terminal
//!   (`*.completed`, `*.failed`, ... or [`Event::terminal`](nerve_core::Event::terminal);
//!   on a bus built with `durable_patterns`, the events those match, as
//!   for the journal: [`Bus::durable`](nerve_router::Bus::durable))
//!   returns once the stream acknowledged it and every event of the export
//!   before it (or gave them up), the promise the journal makes for the
//!   same events on disk: a program may emit its last event and exit. The
//!   wait is an inline subscription that runs after every other one, and
//!   is bounded by `terminal_wait` (30 s; [`BridgeStats::ack_wait_timeouts`]).
//!   An event the stream did not acknowledge (the attempts were spent, the
//!   wait ran out, the event was too large) makes the emit return
//!   [`EmitError::NotRecorded`](nerve_router::EmitError::NotRecorded)
//!   naming the cause, after delivering it locally.
//!   It needs a thread it may block: a plain thread or a multi-thread tokio
//!   runtime (it uses `block_in_place`). On a current-thread runtime,
//!   whose only thread the bridge itself may need, the emit does not wait;
//!   counted in [`BridgeStats::ack_waits_skipped`], and said once per
//!   export as a `system.bridge_error` event (call `flush` or `shutdown`
//!   before exiting there).
//! * [`NatsBridge::import_durable`]`(stream, consumer, DeliverFrom)` reads
//!   the stream through a durable pull consumer: a restarted process using
//!   the same consumer name continues where the last one stopped.
//!   [`DeliverFrom`] (`New`, `All`, `Seq(n)`, `Time(t)`) says where a
//!   consumer that does not exist yet starts.
//!
//! Delivery is **at least once**. A message is acknowledged only after its
//! event was emitted into the local bus (inline handlers ran; with
//! [`DurableImport::ack_after_flush`], after the journal's flush), so a
//! process that stops in between receives it again after the consumer's
//! `ack_wait` (30 s). Repeats are removed by event id: the importer
//! remembers the last `dedup_window` ids it delivered (100,000, never
//! fewer than `max_ack_pending`, 1,000), seeded after a restart with
//! [`DurableImport::already_delivered`] (what the process already holds,
//! e.g. its journal's tail). Every redelivery of an unacknowledged message
//! falls inside that window, since at most `max_ack_pending` messages are
//! unacknowledged at once. Beyond it, one event stored twice in the stream
//! further apart than `dedup_window` messages (re-published after
//! JetStream's own duplicate window, 2 minutes by default) is delivered
//! twice. Counted: [`BridgeStats::redelivered`],
//! [`BridgeStats::duplicates_dropped`], [`BridgeStats::acks_sent`]. A message
//! that is not a journal line is terminated (never redelivered), counted
//! in `import_rejected` and reported.
//!
//! ```no_run
//! use std::time::Duration;
//! use nerve::nats::{DeliverFrom, DurableStream, NatsBridge, NatsOptions};
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let bus = nerve::Bus::new();
//! let bridge = NatsBridge::connect("nats://127.0.0.1:4222", &bus, NatsOptions::new()).await?;
//! let stream = DurableStream::new("RUNS").max_age(Duration::from_secs(30 * 24 * 3600));
//! bridge.export_durable("extraction.*", stream).await?;
//! // Terminal: returns once the RUNS stream has it.
//! bus.emit("extraction.completed", nerve::json!({"specimens": 2885}))?;
//!
//! // In the process that reads the runs, restartable:
//! bridge.import_durable("RUNS", "auditor", DeliverFrom::All).await?;
//! # Ok(())
//! # }
//! ```
//!
//! `nerve record --nats URL --stream NAME DIR` (the `nerve` command line)
//! records a stream into a journal this way.
//!
//! # Supported Rust versions
//!
//! The minimum supported Rust version is 1.85 (edition 2024).
//!
//! [nerve]: https://docs.rs/nerve

#![cfg_attr(docsrs, feature(doc_cfg))]

/// The README's example, compiled as a doctest: the crate used without the
/// `nerve` facade, as its own dependency.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
pub struct ReadmeDoctests;

mod bridge;
pub mod subject;

pub use bridge::{
    BRIDGE_CONNECTED, BRIDGE_DISCONNECTED, BridgeError, BridgeStats, ConsumerPending, DeliverFrom,
    DurableImport, DurableStream, HEADER_CAUSATION_ID, HEADER_CORRELATION_ID, HEADER_MSG_ID,
    HEADER_ORIGIN, HEADER_TRACEPARENT, HEADER_TRACESTATE, NatsBridge, NatsOptions, Origin,
    imported_from, servers,
};
pub use subject::SubjectError;
