//! The consumers the demo attaches to each run's bus.

use anyhow::Result;
use nerve_core::Event;
use nerve_router::{Bus, HandlerError, Subscribe};
use std::sync::{Arc, Mutex};

/// What the demo attached; `finish` ends the progress display.
pub(crate) struct Attached;

impl Attached {
    pub(crate) fn finish(&self) {}
}

/// Early validation: at the fifth specimen, a success rate below 50 % halts
/// the run.
pub(crate) fn attach(bus: &Bus, _total: u32) -> Result<Attached> {
    let counts = Arc::new(Mutex::new((0u32, 0u32)));
    let b = bus.clone();
    bus.subscribe_with(
        ["specimen.completed", "specimen.failed"],
        move |e: &Event| -> Result<(), HandlerError> {
            let (processed, ok) = {
                let mut c = counts.lock().unwrap();
                c.0 += 1;
                if e.event_type() == "specimen.completed" {
                    c.1 += 1;
                }
                *c
            };
            if processed == 5 {
                let rate = f64::from(ok) / f64::from(processed);
                let passed = rate >= 0.5;
                let _ = b.emit(
                    "validation.checkpoint",
                    serde_json::json!({"processed": processed, "success_rate": rate, "passed": passed}),
                );
                if !passed {
                    return Err(HandlerError::halt(format!(
                        "early validation failed: {:.0}% success rate after {processed} specimens",
                        rate * 100.0
                    )));
                }
            }
            Ok(())
        },
        Subscribe::new().name("validation").priority(1000),
    )?;
    Ok(Attached)
}
