//! The consumers the demo attaches to each run's bus: early validation (which
//! halts the broken run at its fifth specimen), live metrics for the
//! summary, and a progress bar (hidden when stdout is not a terminal).

use anyhow::Result;
use nerve::Bus;
use nerve::consumers::{MetricsConsumer, ProgressConsumer, RunMetrics, ValidationConsumer};

/// What the demo attached to one run's bus.
pub(crate) struct Attached {
    pub(crate) validation: ValidationConsumer,
    metrics: MetricsConsumer,
    progress: ProgressConsumer,
}

impl Attached {
    /// Ends the progress display.
    pub(crate) fn finish(&self) {
        if !self.progress.bar().is_finished() {
            self.progress.bar().abandon();
        }
    }

    /// The run's metrics as the consumer measured them.
    pub(crate) fn snapshot(&self) -> Option<RunMetrics> {
        self.metrics.snapshot()
    }
}

/// Attaches the integration guide's consumers, with its settings: a
/// checkpoint after 5 specimens that halts below 50 %, warnings below 70 %.
pub(crate) fn attach(bus: &Bus, _total: u32) -> Result<Attached> {
    let validation = ValidationConsumer::builder()
        .early_checkpoint(5)
        .early_threshold(0.5)
        .warning_threshold(0.7)
        .warning_interval(50)
        .build()?;
    validation.attach(bus)?;
    let metrics = MetricsConsumer::builder().build()?;
    metrics.attach(bus)?;
    let progress = ProgressConsumer::builder().build()?;
    progress.attach(bus)?;
    Ok(Attached {
        validation,
        metrics,
        progress,
    })
}
