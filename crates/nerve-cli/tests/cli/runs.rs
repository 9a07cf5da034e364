//! Runs read the way the consumers read them: the extraction guide's log,
//! ported, puts `run_id` only in the data of its start and end events.

use std::path::Path;
use std::time::{Duration, Instant};

use nerve::Bus;
use nerve::journal::{Journal, JournalError};
use nerve::{Event, json};

use super::{dir, nerve, stderr, stdout};

/// One run of the guide's script, ported: `extraction.started` and
/// `extraction.failed` carry `run_id` in their data, the specimen events none,
/// the checkpoint (a consumer's) the envelope's. `ok` of the 5 specimens
/// succeed. 13 events.
fn guide_run(path: &Path, ok: u64) {
    let journal = open_when_free(path);
    let bus = Bus::builder().journal(journal).build().unwrap();
    bus.emit(
        "extraction.started",
        json!({"run_id": "extraction_001", "total_specimens": 30, "model": "gpt-4o-mini"}),
    )
    .unwrap();
    let mut successful = 0;
    for i in 1..=5u64 {
        bus.emit(
            "specimen.processing",
            json!({"specimen_id": format!("img_{i}"), "sequence": i}),
        )
        .unwrap();
        let kind = if i <= ok {
            successful += 1;
            "specimen.completed"
        } else {
            "specimen.failed"
        };
        bus.emit(
            kind,
            json!({"specimen_id": format!("img_{i}"), "sequence": i,
                   "metrics": {"total_processed": i, "success_count": successful,
                               "success_rate": successful as f64 / i as f64}}),
        )
        .unwrap();
    }
    bus.emit_event(
        Event::builder("validation.checkpoint")
            .run_id("extraction_001")
            .data(json!({"passed": false}))
            .build()
            .unwrap(),
    )
    .unwrap();
    bus.emit(
        "extraction.failed",
        json!({"run_id": "extraction_001", "reason": "early_validation_failed", "processed": 5}),
    )
    .unwrap();
    // After the run: belongs to none.
    bus.emit("specimen.processing", json!({"sequence": 6}))
        .unwrap();
    bus.shutdown_blocking();
}

/// Opens the journal, waiting while the previous run's journal still holds
/// its lock: the lock goes with the last handle to it, which a bus's
/// background threads may drop just after `shutdown_blocking` returned.
fn open_when_free(path: &Path) -> Journal {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        match Journal::builder(path).build() {
            Ok(j) => return j,
            Err(JournalError::Locked { .. }) if Instant::now() < deadline => {
                std::thread::yield_now();
            }
            Err(e) => panic!("{e}"),
        }
    }
}

#[test]
fn stats_query_and_timeline_see_the_guides_run_with_its_true_counts() {
    let d = dir("guide-run");
    let path = d.join("events.jsonl");
    guide_run(&path, 1);
    let p = path.to_str().unwrap();

    let o = nerve(&["stats", "--json", p]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let run = &v["runs"]["extraction_001"];
    assert_eq!(run["events"], 13, "{v}");
    assert_eq!(run["succeeded"], 1, "{v}");
    assert_eq!(run["failed"], 4, "{v}");
    assert_eq!(run["success_rate"], 0.2, "{v}");
    assert_eq!(v["runs"].as_object().unwrap().len(), 1, "{v}");

    let text = stdout(&nerve(&["stats", p]));
    let row: Vec<&str> = text
        .lines()
        .find(|l| l.starts_with("extraction_001"))
        .unwrap_or_else(|| panic!("{text}"))
        .split_whitespace()
        .collect();
    assert_eq!(row, ["extraction_001", "13", "1", "4", "20.0%"], "{text}");

    let o = nerve(&["query", p, "--run", "extraction_001"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let types: Vec<String> = stdout(&o)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["event_type"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(types.len(), 13, "{types:?}");
    assert_eq!(types[0], "extraction.started");
    assert_eq!(types[12], "extraction.failed");

    let o = nerve(&[
        "query",
        p,
        "--run",
        "extraction_001",
        "--type",
        "specimen.failed",
        "--reverse",
        "--limit",
        "2",
    ]);
    let seqs: Vec<u64> = stdout(&o)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["data"]["sequence"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(seqs, [5, 4], "newest first, the newest two");

    let o = nerve(&[
        "timeline",
        p,
        "--run",
        "extraction_001",
        "--field",
        "data.metrics.success_rate",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(stdout(&o).contains("5 values"), "{}", stdout(&o));
}

#[test]
fn two_runs_appended_to_one_file_are_two_runs() {
    let d = dir("two-runs");
    let path = d.join("events.jsonl");
    guide_run(&path, 1);
    guide_run(&path, 3);
    let o = nerve(&["stats", "--json", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let runs = v["runs"].as_object().unwrap();
    assert_eq!(runs.len(), 2, "{v}");
    let first = &v["runs"]["extraction_001 #1"];
    let second = &v["runs"]["extraction_001 #2"];
    assert_eq!(
        (
            first["events"].as_u64(),
            first["succeeded"].as_u64(),
            first["failed"].as_u64()
        ),
        (Some(13), Some(1), Some(4)),
        "{v}"
    );
    assert_eq!(
        (
            second["events"].as_u64(),
            second["succeeded"].as_u64(),
            second["failed"].as_u64()
        ),
        (Some(13), Some(3), Some(2)),
        "{v}"
    );
    let text = stdout(&nerve(&["stats", path.to_str().unwrap()]));
    let one = text.find("extraction_001 #1").unwrap();
    let two = text.find("extraction_001 #2").unwrap();
    assert!(one < two, "in the order they ran: {text}");
}
