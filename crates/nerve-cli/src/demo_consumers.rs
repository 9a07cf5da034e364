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
    /// None when runs go side by side (two bars would garble the terminal).
    progress: Option<ProgressConsumer>,
}

impl Attached {
    /// Ends the progress display.
    pub(crate) fn finish(&self) {
        if let Some(progress) = &self.progress {
            if !progress.bar().is_finished() {
                progress.bar().abandon();
            }
        }
    }

    /// The run's metrics as the consumer measured them.
    pub(crate) fn snapshot(&self) -> Option<RunMetrics> {
        self.metrics.snapshot()
    }
}

/// Attaches the integration guide's consumers, with its settings: a
/// checkpoint after 5 specimens that halts below 50 %, warnings below 70 %;
/// and a progress bar when `progress`.
pub(crate) fn attach(bus: &Bus, progress: bool) -> Result<Attached> {
    let validation = ValidationConsumer::builder()
        .early_checkpoint(5)
        .early_threshold(0.5)
        .warning_threshold(0.7)
        .warning_interval(50)
        .build()?;
    validation.attach(bus)?;
    let metrics = MetricsConsumer::builder().build()?;
    metrics.attach(bus)?;
    let progress = if progress {
        let p = ProgressConsumer::builder().build()?;
        p.attach(bus)?;
        Some(p)
    } else {
        None
    };
    Ok(Attached {
        validation,
        metrics,
        progress,
    })
}
