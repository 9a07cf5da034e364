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
//! `not_forwarded`, `unmappable`, and for JetStream `acked`, `ack_failed`,
//! `duplicate_dropped`), `nerve_bridge_connected{bridge}` (1 or
//! 0), `nerve_bridge_disconnects_total{bridge}` and
//! `nerve_bridge_reconnects_total{bridge}`, `bridge` being the origin id.
//! Core NATS is at-most-once: a message written to a connection just as it
//! fails, or published while no importer is subscribed, is lost. Durable
//! delivery through JetStream is a later release.
//!
//! # Supported Rust versions
//!
//! The minimum supported Rust version is 1.85 (edition 2024).
//!
//! [nerve]: https://docs.rs/nerve

mod bridge;
pub mod subject;

pub use bridge::{
    BRIDGE_CONNECTED, BRIDGE_DISCONNECTED, BridgeError, BridgeStats, DeliverFrom, DurableImport,
    DurableStream, HEADER_CAUSATION_ID, HEADER_CORRELATION_ID, HEADER_MSG_ID, HEADER_ORIGIN,
    HEADER_TRACEPARENT, HEADER_TRACESTATE, NatsBridge, NatsOptions, Origin, imported_from,
};
pub use subject::SubjectError;
