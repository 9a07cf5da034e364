//! Ready-made consumers for the [nerve] event bus.
//!
//! placeholder docs
//!
//! [nerve]: https://docs.rs/nerve

pub mod alert;
mod error;
pub mod progress;
mod run;
pub mod run_metrics;
pub mod validation;

pub use error::{AttachError, BuildError};
pub use run::{Attachment, DEFAULT_END, DEFAULT_FAILURE, DEFAULT_START, DEFAULT_SUCCESS, TOTAL_KEYS};
#[doc(inline)]
pub use validation::{Checkpoint, ValidationBuilder, ValidationConsumer, ValidationStatus};
#[doc(inline)]
pub use run_metrics::{Latency, MetricsBuilder, MetricsConsumer, RunMetrics};
#[doc(inline)]
pub use alert::{AlertConsumer, AlertRule, AlertStats};
#[doc(inline)]
pub use progress::{ProgressBuilder, ProgressConsumer, ProgressState};
