//! Ready-made consumers for the [nerve] event bus: early validation, run
//! metrics, progress bars and alerts.
//!
//! Each consumer is built with `Thing::builder()...build()?`, subscribes to a
//! bus with [`attach`](ValidationConsumer::attach), and is `Clone` over
//! shared state, so the caller keeps a handle to read it.
//!
//! # Key types
//!
//! * [`ValidationConsumer`]: checks a run's success rate after its first
//!   items (5 by default) and halts the emitter when it is below the early
//!   threshold; warns every 50 items while below the warning threshold.
//! * [`VerdictConsumer`]: halts this bus's emitter of a run at its next
//!   item once a validator elsewhere (another process, over the NATS
//!   bridge) declared the run failed: early validation across workers.
//! * [`MetricsConsumer`]: per-run processed, succeeded, failed, success
//!   rate, throughput, elapsed, ETA and item latency percentiles, as a serde
//!   [`RunMetrics`], as `metrics.snapshot` events and through a
//!   [`Metrics`](nerve_core::metrics::Metrics) backend.
//! * `ProgressConsumer` (feature `progress`): an `indicatif` progress bar
//!   driven by events.
//! * [`AlertConsumer`]: [rules](AlertRule) that turn events into alerts,
//!   delivered by `alert::WebhookSink` (feature `webhook`),
//!   `alert::EmailSink` (feature `email`), [`alert::CommandSink`] or any
//!   [`alert::AlertSink`] of your own on tokio, deduplicated, rate limited,
//!   retried, redacted, and dead-lettered when they fail.
//!
//! # Runs
//!
//! The consumers follow runs, such as one extraction job. Start events
//! (`extraction.started`) carry the run's `run_id` and its size
//! (`total_specimens` or `total`); success and failure events
//! (`specimen.completed`, `specimen.failed`) count its items; end events
//! (`extraction.completed`, `extraction.failed`) close it. Every pattern can
//! be changed (`task.completed` / `task.failed`, say). An event belongs to
//! the run in its envelope's `run_id`, else in a `run_id` of its data, else
//! to the run started last and not yet ended.
//!
//! # Example
//!
//! Every example in these docs is written as a user of the
//! [`nerve`](https://docs.rs/nerve) facade writes it, and runs as a doctest
//! that way: this crate is `nerve::consumers` (feature `consumers`) there.
//!
//! Early validation stops a broken run at its fifth specimen:
//!
//! ```
//! use nerve::consumers::{MetricsConsumer, ValidationConsumer};
//! use nerve::{Bus, EmitError, json};
//!
//! let bus = Bus::new();
//! let validator = ValidationConsumer::builder()
//!     .early_checkpoint(5)
//!     .early_threshold(0.5)
//!     .build()?;
//! validator.attach(&bus)?;
//! let metrics = MetricsConsumer::builder().build()?;
//! metrics.attach(&bus)?;
//!
//! bus.emit("extraction.started", json!({"run_id": "extraction_001", "total_specimens": 2885}))?;
//! let mut stopped = None;
//! for sequence in 1..=2885 {
//!     bus.emit("specimen.processing", json!({"specimen_id": sequence}))?;
//!     // Every extraction comes back empty.
//!     if let Err(e) = bus.emit("specimen.failed", json!({"specimen_id": sequence})) {
//!         stopped = Some((sequence, e));
//!         break;
//!     }
//! }
//! let (at, error) = stopped.expect("the run was halted");
//! assert_eq!(at, 5);
//! assert!(matches!(&error, EmitError::Halted { reason, .. }
//!     if reason == "early validation failed: 0% success rate after 5 specimens"));
//! bus.emit("extraction.failed", json!({"run_id": "extraction_001", "reason": "early_validation_failed"}))?;
//!
//! let status = validator.status().unwrap();
//! assert!(!status.passed() && status.ended);
//! assert_eq!(metrics.snapshot().unwrap().failed, 5);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! # Feature flags
//!
//! None is on by default: validation, run metrics, the alert consumer and
//! its command sink need only tokio. Each sink that pulls in a large
//! dependency tree has a feature of its own:
//!
//! | feature | adds | pulls in |
//! |---------|------|----------|
//! | `webhook` | `alert::WebhookSink`: alerts POSTed as JSON (Slack's body by default) | `reqwest` with rustls (hyper, rustls, ring) |
//! | `email` | `alert::EmailSink`: alerts by SMTP, STARTTLS through rustls or plain | `lettre` with rustls |
//! | `progress` | `ProgressConsumer`: a progress bar driven by events | `indicatif` |
//!
//! The `nerve` facade re-exports this crate as `nerve::consumers` under its
//! feature `consumers`, and forwards `webhook`, `email` and `progress` under
//! the same names (each implies `consumers`).
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

pub mod alert;
mod error;
#[cfg(feature = "progress")]
#[cfg_attr(docsrs, doc(cfg(feature = "progress")))]
pub mod progress;
mod run;
pub mod run_metrics;
pub mod validation;
pub mod verdict;

#[doc(inline)]
pub use alert::{AlertConsumer, AlertRule, AlertStats};
pub use error::{AttachError, ConfigError};
#[cfg(feature = "progress")]
#[doc(inline)]
pub use progress::{ProgressBuilder, ProgressConsumer, ProgressState};
pub use run::{
    Attachment, DEFAULT_END, DEFAULT_FAILURE, DEFAULT_START, DEFAULT_SUCCESS, TOTAL_KEYS,
};
#[doc(inline)]
pub use run_metrics::{Latency, MetricsBuilder, MetricsConsumer, RunMetrics};
#[doc(inline)]
pub use validation::{Checkpoint, ValidationBuilder, ValidationConsumer, ValidationStatus};
#[doc(inline)]
pub use verdict::{Verdict, VerdictBuilder, VerdictConsumer};
