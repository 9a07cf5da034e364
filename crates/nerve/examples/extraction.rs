//! The extraction integration guide, ported: a batch job that emits an event
//! per specimen, is stopped by early validation at specimen 5 when it is
//! broken, alerts a person by email and webhook, and leaves its story in
//! `OUTPUT_DIR/events.jsonl`.
//!
//! ```sh
//! cargo run -p nerve --features webhook,email --example extraction -- extraction_output
//! EXTRACTION_BROKEN=1 EXTRACTION_RUN_ID=extraction_002 \
//!     cargo run -p nerve --features webhook,email --example extraction -- extraction_output
//! jq -r '.event_type' extraction_output/events.jsonl | sort | uniq -c
//! ```
//!
//! | variable            | meaning |
//! |---------------------|---------|
//! | `EXTRACTION_OUTPUT` | the output directory when no argument is given (default `extraction_output`) |
//! | `EXTRACTION_RUN_ID` | the run's id (default `extraction_001`) |
//! | `EXTRACTION_BROKEN` | `1`: every extraction comes back empty, as with a broken prompt |
//! | `ALERT_WEBHOOK_URL` | post alerts to this Slack-style webhook |
//! | `ALERT_SMTP_HOST`, `ALERT_SMTP_PORT`, `ALERT_EMAIL_TO` | email alerts through this relay (plain SMTP, port 25 unless set) |

use std::path::PathBuf;
use std::time::Duration;

use nerve::consumers::alert::{AlertConsumer, AlertRule, Condition, EmailSink, WebhookSink};
use nerve::consumers::{MetricsConsumer, ValidationConsumer};
use nerve::{Bus, EmitError, Journal, Value, json};

type Result<T, E = Box<dyn std::error::Error>> = std::result::Result<T, E>;

fn main() -> Result<()> {
    // Step 2: the output directory and its event log, one fixed file that
    // every run appends to.
    let output_dir = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("EXTRACTION_OUTPUT").ok())
        .map_or_else(|| PathBuf::from("extraction_output"), PathBuf::from);
    std::fs::create_dir_all(&output_dir)?;
    let event_log = output_dir.join("events.jsonl");
    let bus = Bus::builder()
        .journal(Journal::builder(&event_log).build()?)
        .build()?;
    // The guide's `with HybridEventBus(...)` block: however `main` ends (an
    // error, a panic), the bus is shut down and the journal flushed.
    let _shutdown = bus.shutdown_guard();

    // The consumers: the guide's two, and its custom email and Slack ones.
    let validator = ValidationConsumer::builder()
        .early_checkpoint(5) // validate after 5 specimens
        .early_threshold(0.5) // require 50 % success
        .warning_threshold(0.7) // warn if below 70 % ...
        .warning_interval(50) // ... every 50 specimens
        .build()?;
    validator.attach(&bus)?;
    let metrics = MetricsConsumer::builder().build()?;
    metrics.attach(&bus)?;
    let alerts = alert_consumers()?;
    for consumer in &alerts {
        consumer.attach(&bus)?;
    }

    run_extraction(&bus)?;

    for consumer in &alerts {
        // An error here says which alerts could not be delivered.
        consumer.flush_blocking(Duration::from_secs(10))?;
    }
    if let Some(run) = metrics.snapshot() {
        println!(
            "{} specimens, {:.0}% success",
            run.processed,
            100.0 * run.success_rate
        );
    }
    Ok(())
}

/// Step 3: the extraction, emitting events as it goes.
fn run_extraction(bus: &Bus) -> Result<()> {
    let run_id = std::env::var("EXTRACTION_RUN_ID").unwrap_or_else(|_| "extraction_001".into());
    let images: Vec<String> = (1..=30).map(|n| format!("HERB-{n:04}")).collect();

    bus.emit(
        "extraction.started",
        json!({"run_id": run_id, "total_specimens": images.len(), "model": "gpt-4o-mini"}),
    )?;

    let (mut successful, mut failed) = (0_u32, 0_u32);
    for (i, specimen_id) in images.iter().enumerate() {
        let sequence = i + 1;
        println!("Processing specimen {sequence}/{}...", images.len());
        bus.emit(
            "specimen.processing",
            json!({"specimen_id": specimen_id, "sequence": sequence}),
        )?;

        let result = extract_specimen(specimen_id);

        let event_type = if result["dwc"].as_object().is_some_and(|dwc| !dwc.is_empty()) {
            successful += 1;
            "specimen.completed"
        } else {
            failed += 1;
            "specimen.failed"
        };
        let success_rate = f64::from(successful) / sequence as f64;
        // Validation happens here: at specimen 5 of a broken run, `emit`
        // returns `Halted`, where Python raised `EarlyValidationError`.
        let emitted = bus.emit(
            event_type,
            json!({
                "specimen_id": specimen_id,
                "sequence": sequence,
                "result": result,
                "metrics": {
                    "total_processed": sequence,
                    "success_count": successful,
                    "failed_count": failed,
                    "success_rate": success_rate,
                },
            }),
        );
        if let Err(EmitError::Halted { reason, .. }) = emitted {
            // Early validation failed: stop the extraction.
            eprintln!("❌ Extraction stopped: {reason}");
            bus.emit(
                "extraction.failed",
                json!({
                    "run_id": run_id,
                    "reason": "early_validation_failed",
                    "processed": sequence,
                    "success_rate": success_rate,
                }),
            )?;
            // Like the guide's `sys.exit(1)`. Nothing is lost: `emit` of a
            // terminal event returns once it and everything before it is
            // in the journal, and its alerts were sent (or dead-lettered).
            std::process::exit(1);
        }
        emitted?;
    }

    bus.emit(
        "extraction.completed",
        json!({
            "run_id": run_id,
            "total_processed": images.len(),
            "successful": successful,
            "failed": failed,
            "success_rate": f64::from(successful) / images.len() as f64,
        }),
    )?;
    Ok(())
}

/// Stands in for the model call: Darwin Core fields for most specimens,
/// nothing at all when the prompt is broken.
fn extract_specimen(specimen_id: &str) -> Value {
    let broken = std::env::var("EXTRACTION_BROKEN").is_ok_and(|v| v == "1");
    let unreadable = specimen_id.ends_with('7'); // one label in ten
    if broken || unreadable {
        return json!({"dwc": {}});
    }
    json!({"dwc": {"catalogNumber": specimen_id, "scientificName": "Carex aquatilis"}})
}

/// The guide's custom consumers: an email alert on failure and low success,
/// and a Slack-style webhook on the checkpoint and the run's end. Each is on
/// only when its address is set, and delivers on a thread of its own.
fn alert_consumers() -> Result<Vec<AlertConsumer>> {
    let mut consumers = Vec::new();
    if let Ok(host) = std::env::var("ALERT_SMTP_HOST") {
        let port = std::env::var("ALERT_SMTP_PORT").map_or(Ok(25), |p| p.parse())?;
        let to = std::env::var("ALERT_EMAIL_TO").unwrap_or_else(|_| "curator@example.org".into());
        let email = EmailSink::builder()
            .plain(host)
            .port(port)
            .from("extraction <extraction@example.org>")
            .to(to)
            .subject("{message}")
            .build()?;
        consumers.push(
            AlertConsumer::builder()
                .rule(
                    AlertRule::new("extraction-failed", "extraction.failed")
                        .message("🚨 Extraction Failed: {run_id}: {data.reason}"),
                )
                .rule(
                    AlertRule::new("low-success", "validation.warning")
                        .when(Condition::below("success_rate", 0.6)) // critical threshold
                        .message("⚠️ Low Success Rate: dropped to {data.success_rate:%}"),
                )
                .sink(email)
                .build()?,
        );
    }
    if let Ok(url) = std::env::var("ALERT_WEBHOOK_URL") {
        consumers.push(
            AlertConsumer::builder()
                .rule(
                    AlertRule::new("checkpoint", "validation.checkpoint")
                        .when(Condition::equals("passed", true))
                        .message("✅ Early validation passed: {data.success_rate:%} success"),
                )
                .rule(
                    AlertRule::new("completed", "extraction.completed").message(
                        "🎉 Extraction completed: {data.successful}/{data.total_processed}",
                    ),
                )
                .rule(
                    AlertRule::new("failed", "extraction.failed")
                        .message("🚨 Extraction failed: {run_id}: {data.reason}"),
                )
                .sink(WebhookSink::builder().url(url).build()?)
                .build()?,
        );
    }
    Ok(consumers)
}
