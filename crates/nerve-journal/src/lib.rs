//! The journal of the [nerve] event bus: an append-only JSONL audit trail of
//! every event a bus accepts, in order, rotated by size, surviving crashes.
//!
//! # Key types
//!
//! * [`Journal`]: the writer. Implements
//!   [`EventSink`](nerve_core::sink::EventSink), so
//!   `Bus::builder().journal(journal.clone())` records every accepted event;
//!   `bus.events(query)` reads through it; `bus.shutdown()` flushes and
//!   closes it. Built with [`Journal::builder`]; durability is an [`Fsync`]
//!   policy, a full queue a [`JournalOverflow`] policy.
//! * [`JournalReader`]: reads a journal (or an aperion-event-bus log) back,
//!   oldest file first, streaming, answering a
//!   [`HistoryQuery`](nerve_core::query::HistoryQuery).
//! * [`Follow`]: `tail -F` for a journal, across rotations.
//! * [`replay()`]: re-emits recorded events into a bus after a restart.
//!
//! # Example
//!
//! Every example in these docs is written as a user of the
//! [`nerve`](https://docs.rs/nerve) facade writes it, and runs as a doctest
//! that way: this crate is `nerve::journal` (feature `journal`, on by
//! default) there.
//!
//! ```
//! use std::time::Duration;
//! use nerve::HistoryQuery;
//! use nerve::journal::{Fsync, Journal};
//! use nerve::{Bus, json};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! # let dir = tempfile::tempdir()?;
//! # let path = dir.path().join("events.jsonl");
//! let journal = Journal::builder(&path)
//!     .max_bytes(10 << 20)
//!     .max_files(5)
//!     .fsync(Fsync::Interval(Duration::from_millis(200)))
//!     .build()?;
//! let bus = Bus::builder().journal(journal.clone()).build()?;
//!
//! bus.emit("user.login", json!({"username": "alice"}))?;
//! bus.emit("task.done", json!({"metrics": {"success_rate": 0.98}}))?;
//!
//! // Reads through the journal (flushing it first), newest first.
//! let done = bus.events(&HistoryQuery::new().pattern("task.*")?)?;
//! assert_eq!(done[0].data()["metrics"]["success_rate"], 0.98);
//!
//! bus.shutdown_blocking(); // flushes and closes the journal
//! let text = std::fs::read_to_string(&path)?;
//! assert_eq!(text.lines().count(), 2);
//! # Ok(()) }
//! ```
//!
//! # The line format
//!
//! One compact JSON object per event, newline-terminated, keys in this
//! order; absent optional fields are omitted:
//!
//! ```text
//! {"event_id":"0190b6e0-8c4e-7a31-9f2d-3c5b1e7a9d40","event_type":"task.done","timestamp":"2026-11-23T09:01:32.123456Z","source":"worker","correlation_id":"req-1","causation_id":"0190b6e0-8c4d-7f00-8000-000000000001","run_id":"run-7","lane":"left","lane_seq":3,"seq":42,"data":{"metrics":{"success_rate":0.98}},"v":1}
//! ```
//!
//! | key | value |
//! |-----|-------|
//! | `event_id` | UUIDv7, hyphenated |
//! | `event_type` | the event's name |
//! | `timestamp` | RFC 3339, UTC, exactly six fractional digits, `Z` |
//! | `source`, `correlation_id`, `run_id`, `lane` | strings, omitted when absent |
//! | `causation_id` | UUID, omitted when absent; equal to `event_id` on a replayed copy |
//! | `lane_seq` | number, omitted when absent |
//! | `seq` | the bus-wide sequence number |
//! | `data` | the payload; an error marker object `{"$nerve_error":reason,"message":...}` when it could not be written as it was; the text it was read as, copied, for an event read from a line or a message (see below) |
//! | `v` | the format version, `1`; always the last key |
//!
//! An event read from a journal line or a NATS message keeps an array or
//! object payload as the JSON text it was read as ([`Event::data_text`](nerve_core::Event::data_text)),
//! and its line copies that text (unless a redaction hook replaces the
//! payload, or the text spans lines): a recorder writes what it received,
//! key order and spacing included, without parsing and rebuilding it.
//!
//! `jq -r '.event_type' events.jsonl` and `jq '.data.metrics.success_rate'`
//! work on it directly. `docs/journal-format.md` in the repository is the
//! full specification: rotation names, the lock and quarantine files,
//! recovery, and what each [`Fsync`] policy promises after a crash.
//!
//! # Payloads that cannot be written
//!
//! Serialization happens on the writer thread. A payload that cannot be
//! written as it is still gets its line, with `data` replaced by an error
//! marker; the event is reported to the bus as a
//! [`SinkErrorKind::Serialize`](nerve_core::sink::SinkErrorKind) fault (counted,
//! published as `system.journal_error`, dead-lettered when the bus has a
//! dead letter queue) and counted in [`JournalStats::serialize_errors`].
//! The reachable cases are a payload nested more than [`MAX_DATA_DEPTH`]
//! levels (`"$nerve_error":"too_deep"`: no JSON reader could parse it back),
//! a line longer than [`MAX_LINE_BYTES`] (`"too_long"`: readers skip such a
//! line unread) and a [`redact_with`](JournalBuilder::redact_with) hook that panics
//! (`"redact"`: the unredacted payload is never written). `NaN` and
//! non-string keys cannot occur: a `serde_json::Value` holds neither.
//!
//! # I/O errors
//!
//! A failed write, flush, sync or rotation is counted
//! ([`JournalStats::io_errors`], and `lost` for the events of the batch),
//! reported for each lost event (the bus counts it and publishes
//! `system.journal_error`), and the file is cut back to its last record
//! boundary. The bus keeps delivering in memory meanwhile, and the journal
//! resumes with the next batch once the fault clears.
//!
//! A journal file removed while in use (`rm -r` of a run's directory
//! mid-run) is found at the next sync, flush, close, rotation or waited
//! record (each second under [`Fsync::Never`]): what was written to it
//! since the last look is counted in `lost`, reported, returned by the next
//! `flush` and owed one `io` range line; a waited event is never
//! acknowledged in it. The directory is made again, with both locks, and
//! the journal goes on in a new file.
//!
//! Rotation on the writer thread is a single rename (of the active file to a
//! pending name, `events.p<g>.jsonl`); a background thread of the journal
//! then renames the backups into `events.1.jsonl` (newest) ...
//! `events.N.jsonl`, one pass for however many rotations are pending. Its
//! failures lose nothing (the files keep names that read in order); they are
//! counted in `io_errors`, reported (`system.journal_error`, with no event),
//! returned by the next `flush`, and retried.
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

mod dead_letters;
mod files;
mod follow;
mod format;
#[doc(hidden)]
pub mod fs;
mod journal;
pub mod line;
mod marker;
mod reader;
pub mod replay;
mod shifter;
mod spare;
mod sync;
mod writer;

#[cfg(all(test, nerve_loom))]
mod loom;

pub use dead_letters::{DeadLetterJournal, DeadLetterJournalBuilder, DeadLetterJournalStats};
pub use files::Recovery;
pub use follow::Follow;
pub use format::{
    ERROR_MARKER_KEY, FORMAT_VERSION, GAP_EVENT_TYPE, MAX_DATA_DEPTH, MAX_LINE_BYTES,
};
pub use journal::{
    FlushGuard, Fsync, Journal, JournalBuilder, JournalError, JournalOverflow, JournalStats,
};
pub use reader::{JournalReader, ReadError};
#[doc(inline)]
pub use replay::{ReplayError, ReplayReport, is_replayed, replay};
