//! Records run metrics into SQLite from a custom consumer, as the
//! herbarium integration guide does with its database consumer.
//!
//! Run with `cargo run -p nerve-consumers --example sqlite_metrics`. It
//! simulates a 25-specimen run (92% success) with the validation and metrics
//! consumers attached, stores a row per completed specimen, and prints the
//! time series read back from the database.

use std::sync::{Arc, Mutex};

use nerve_consumers::{MetricsConsumer, ValidationConsumer};
use nerve_core::Event;
use nerve_router::Bus;
use rusqlite::Connection;
use serde_json::json;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let db = Connection::open_in_memory()?;
    db.execute_batch(
        "CREATE TABLE extraction_metrics (
             timestamp TEXT NOT NULL,
             run_id TEXT,
             processed INTEGER NOT NULL,
             success_rate REAL NOT NULL,
             throughput REAL NOT NULL
         );",
    )?;
    let db = Arc::new(Mutex::new(db));

    let bus = Bus::new();
    ValidationConsumer::builder().build()?.attach(&bus)?;
    let metrics = MetricsConsumer::builder().build()?;
    metrics.attach(&bus)?;

    // The custom consumer: after the metrics consumer updated (it has the
    // default priority and subscribed first), one row per completion.
    let (sink, live) = (db.clone(), metrics.clone());
    bus.subscribe(
        "specimen.completed",
        move |event: &Event| -> Result<(), String> {
            let Some(m) = live.snapshot() else {
                return Ok(());
            };
            let db = sink.lock().map_err(|e| e.to_string())?;
            db.execute(
            "INSERT INTO extraction_metrics (timestamp, run_id, processed, success_rate, throughput)
             VALUES (?1, ?2, ?3, ?4, ?5)",
            rusqlite::params![
                event.timestamp().to_string(),
                m.run_id,
                m.processed,
                m.success_rate,
                m.throughput_per_minute
            ],
        )
        .map_err(|e| e.to_string())?;
            Ok(())
        },
    )?;

    bus.emit(
        "extraction.started",
        json!({"run_id": "demo_run_001", "total_specimens": 25, "model": "demo-model"}),
    )?;
    for i in 1..=25_u32 {
        let id = format!("specimen-{i:03}");
        bus.emit(
            "specimen.processing",
            json!({"specimen_id": id, "sequence": i}),
        )?;
        let outcome = if i == 7 || i == 19 {
            "specimen.failed"
        } else {
            "specimen.completed"
        };
        bus.emit(outcome, json!({"specimen_id": id, "sequence": i}))?;
    }
    bus.emit("extraction.completed", json!({"run_id": "demo_run_001"}))?;

    let db = db.lock().map_err(|e| e.to_string())?;
    let mut rows = db.prepare(
        "SELECT processed, success_rate FROM extraction_metrics WHERE processed % 5 = 0 ORDER BY processed",
    )?;
    println!("processed  success_rate");
    for row in rows.query_map([], |r| Ok((r.get::<_, u64>(0)?, r.get::<_, f64>(1)?)))? {
        let (processed, rate) = row?;
        println!("{processed:>9}  {rate:>12.2}");
    }
    let count: u64 = db.query_row("SELECT COUNT(*) FROM extraction_metrics", [], |r| r.get(0))?;
    let final_metrics = metrics.snapshot().ok_or("no metrics")?;
    println!(
        "{count} rows; run {} ended with {:.0}% success",
        final_metrics.run_id.as_deref().unwrap_or("-"),
        final_metrics.success_rate * 100.0
    );
    assert_eq!(count, 23);
    Ok(())
}
