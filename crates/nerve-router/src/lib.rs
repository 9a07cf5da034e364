//! The routing engine of the [nerve] event bus: the [`Bus`].
//!
//! Applications use it through the `nerve` facade. A bus takes events by
//! name, finds the subscriptions whose patterns match, and delivers:
//!
//! * **Sync handlers** ([`Bus::subscribe`]) run inline on the emitting thread,
//!   highest priority first, ties in subscription order. `emit` returns after
//!   they ran. No async runtime is needed.
//! * **Async handlers** ([`Bus::subscribe_async`]) run on a tokio runtime, one
//!   worker per subscription, each event after the previous one finished for
//!   that subscriber (or up to [`Subscribe::concurrency`] at once).
//!   [`Bus::emit_and_wait`] waits for them and reports how each ended.
//! * **Isolation**: an error or a panic in one handler never stops the others.
//!   It is counted in [`Bus::stats`] and published as a `system.handler_error`
//!   event (see below). Panics are caught with `catch_unwind`, so a build
//!   with `panic = "abort"` loses this isolation.
//! * **Halting**: a handler returning [`HandlerError::halt`] makes `emit`
//!   return [`EmitError::Halted`] after every handler had the event.
//! * **Timeouts**: an async handler past its timeout is cancelled; an inline
//!   sync handler cannot be interrupted, so one that returns late is reported
//!   and counted as timed out.
//! * **Streams and backpressure**: [`Bus::stream`] and [`Bus::subscribe_run`]
//!   return an [`EventStream`] behind a bounded queue; queued and async
//!   handlers have one too. Each queue applies its [`Overflow`] policy when
//!   full, terminal events are never dropped, and every loss is counted by
//!   [`DropReason`] (`offered == delivered + dropped` per subscriber).
//! * **Dead letters**: a [`DeadLetterQueue`] keeps failed deliveries for
//!   inspection and [`retry`](DeadLetterQueue::retry).
//! * **Correlation**: while a handler runs, the event's correlation id is
//!   ambient (see [`nerve_core::correlation`]), so events it emits carry the
//!   same id and the handled event as their `causation_id`.
//!
//! # `system.handler_error`
//!
//! Published for every failed delivery (error, panic, timeout), with the
//! failed event's correlation id and the failed event as its cause. Its data:
//!
//! | key                 | value                                    |
//! |---------------------|------------------------------------------|
//! | `event_id`          | id of the event whose handler failed     |
//! | `event_type`        | its type                                 |
//! | `subscription_id`   | the failing subscription's id            |
//! | `subscription_name` | its name, or `null`                      |
//! | `kind`              | `error`, `panic` or `timeout`            |
//! | `error`             | the error text                           |
//! | `correlation_id`    | the failed event's correlation id        |
//!
//! A failure while handling `system.handler_error` itself is counted and
//! logged, never re-published, so a failing `system.*` handler cannot loop.
//!
//! # Routing
//!
//! Routing cost grows with the handlers that match, not with the number of
//! subscriptions: patterns live in a token trie, published as an immutable
//! snapshot that emitters read without locks, with a bounded cache of
//! recent topics in front. Subscribing copies only the trie path it changes.
//!
//! # Example
//!
//! Every example in these docs is written as a user of the
//! [`nerve`](https://docs.rs/nerve) facade writes it, and runs as a doctest
//! that way: this crate is re-exported at the root of `nerve` (`nerve::Bus`,
//! `nerve::Subscribe`, ...) there.
//!
//! ```
//! use nerve::{Bus, HandlerError, Subscribe};
//! use nerve::{Event, json};
//!
//! let bus = Bus::builder().validate_names(true).build()?;
//! bus.subscribe_with(
//!     "alert.*",
//!     |e: &Event| -> Result<(), HandlerError> {
//!         if e.data()["level"] == "fatal" {
//!             return Err(HandlerError::halt("fatal alert"));
//!         }
//!         Ok(())
//!     },
//!     Subscribe::new().priority(300).name("pager"),
//! )?;
//! bus.emit("alert.raised", json!({"level": "warn"}))?;
//! let err = bus.emit("alert.raised", json!({"level": "fatal"})).unwrap_err();
//! assert!(err.to_string().starts_with("fatal alert (halted by pager"));
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
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

pub mod attachment;
mod builder;
mod bus;
mod call;
mod config;
mod counter;
mod dead_letter;
mod dispatch;
mod error;
mod gate;
mod global;
mod handler;
mod history;
mod ledger;
#[cfg(all(test, nerve_loom))]
mod loom;
mod pending;
mod queue;
mod reentry;
mod report;
mod retry;
mod routes;
mod runs;
#[cfg(unix)]
pub mod signals;
mod stats;
mod stream;
mod subscribe;
mod subscription;
mod sync;
mod turn;
mod worker;

pub use attachment::{Attachment, AttachmentId, AttachmentState, AttachmentStats};
pub use builder::BusBuilder;
pub use bus::{Bus, ShutdownGuard, ShutdownReport, WeakBus};
pub use config::{DEFAULT_TERMINAL_PATTERNS, Durable, Reject};
pub use dead_letter::{
    DeadLetter, DeadLetterQueue, DeadLetterReason, DeadLetterStats, DeadLetterStore,
    DeadLetterStoreError, RetryError, RetrySummary,
};
pub use error::{BuildError, EmitError, EmitManyError, SubscribeError};
pub use global::global;
pub use handler::{HandlerError, IntoHandlerResult};
pub use queue::{DropReason, Overflow};
pub use report::{DeliveryReport, HandlerOutcome, Outcome};
pub use stats::{BusStats, EventStats, RunStats, SubscriberStats, SubscriptionStats};
pub use stream::{EventStream, StreamOptions};
pub use subscribe::{IntoPatterns, Subscribe, SubscriptionId};
