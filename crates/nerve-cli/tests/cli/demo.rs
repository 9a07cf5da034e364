//! `nerve demo`: the two runs, their outcomes, and their journals.

use std::collections::BTreeMap;
use std::path::Path;

use crate::{dir, nerve, stderr, stdout};

/// `jq -r '.event_type' events.jsonl | sort | uniq -c`, in Rust.
fn counts(log: &Path) -> BTreeMap<String, u64> {
    let mut counts = BTreeMap::new();
    for line in std::fs::read_to_string(log).unwrap().lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        *counts
            .entry(v["event_type"].as_str().unwrap().to_owned())
            .or_default() += 1;
    }
    counts
}

#[test]
fn the_broken_run_stops_at_the_checkpoint_and_the_healthy_one_completes() {
    let d = dir("demo");
    let o = nerve(&[
        "demo",
        "--out",
        d.to_str().unwrap(),
        "--seed",
        "7",
        "--delay-ms",
        "0",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let summary = stdout(&o);
    assert!(
        summary.contains("run-healthy") && summary.contains("completed"),
        "{summary}"
    );
    assert!(
        summary.contains("stopped: early validation failed: 20% success rate after 5 specimens"),
        "{summary}"
    );

    let broken = counts(&d.join("run-broken/events.jsonl"));
    assert_eq!(broken["extraction.started"], 1);
    assert_eq!(broken["specimen.processing"], 5);
    assert_eq!(broken.get("specimen.completed").copied().unwrap_or(0), 1);
    assert_eq!(broken["specimen.failed"], 4);
    assert_eq!(broken["validation.checkpoint"], 1);
    assert_eq!(broken["extraction.failed"], 1);
    assert!(!broken.contains_key("extraction.completed"));

    let healthy = counts(&d.join("run-healthy/events.jsonl"));
    assert_eq!(healthy["specimen.processing"], 25);
    assert_eq!(healthy["specimen.completed"], 23, "92 %");
    assert_eq!(healthy["extraction.completed"], 1);
    assert_eq!(healthy["validation.checkpoint"], 1);

    // The CLI reads what the demo wrote.
    let o = nerve(&["verify", d.join("run-broken").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    let o = nerve(&["stats", "--json", d.join("run-healthy").to_str().unwrap()]);
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["runs"]["run-healthy"]["success_rate"], 0.92);
}

#[test]
fn the_same_seed_gives_the_same_events() {
    let types = |seed: &str| {
        let d = dir(&format!("demo-seed-{seed}"));
        let o = nerve(&[
            "demo",
            "--out",
            d.to_str().unwrap(),
            "--seed",
            seed,
            "--delay-ms",
            "0",
        ]);
        assert!(o.status.success(), "{}", stderr(&o));
        let text = std::fs::read_to_string(d.join("run-healthy/events.jsonl")).unwrap();
        text.lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                format!("{} {}", v["event_type"], v["data"]["specimen_id"])
            })
            .collect::<Vec<_>>()
    };
    assert_eq!(types("11"), types("11"));
    assert_ne!(types("11"), types("12"));
}

#[test]
fn running_the_demo_twice_starts_each_log_afresh() {
    let d = dir("demo-twice");
    for _ in 0..2 {
        let o = nerve(&["demo", "--out", d.to_str().unwrap(), "--delay-ms", "0"]);
        assert!(o.status.success(), "{}", stderr(&o));
    }
    assert_eq!(
        counts(&d.join("run-broken/events.jsonl"))["extraction.started"],
        1
    );
}

/// Every `jq` command of the integration guide reads real values from the
/// demo's journals: `.data.sequence`, `.data.metrics.*` on every specimen
/// event, `.data.run_id` on the start and end events.
#[test]
fn the_demo_journal_carries_the_guides_fields() {
    let d = dir("demo-fields");
    let o = nerve(&["demo", "--out", d.to_str().unwrap(), "--delay-ms", "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    for run in ["run-healthy", "run-broken"] {
        let text = std::fs::read_to_string(d.join(run).join("events.jsonl")).unwrap();
        let events: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();

        // `head -1 | jq`: the start event names its run.
        assert_eq!(events[0]["event_type"], "extraction.started");
        assert_eq!(events[0]["data"]["run_id"], run);
        assert_eq!(events[0]["data"]["total_specimens"], 25);
        let end = events
            .iter()
            .find(|e| {
                e["event_type"] == "extraction.completed" || e["event_type"] == "extraction.failed"
            })
            .expect("the run ends");
        assert_eq!(end["data"]["run_id"], run, "{end}");

        let (mut processing, mut done, mut succeeded) = (0_u64, 0_u64, 0_u64);
        for e in &events {
            let data = &e["data"];
            match e["event_type"].as_str().unwrap() {
                "specimen.processing" => {
                    processing += 1;
                    assert_eq!(data["sequence"], processing, "{e}");
                }
                kind @ ("specimen.completed" | "specimen.failed") => {
                    done += 1;
                    if kind == "specimen.completed" {
                        succeeded += 1;
                    }
                    assert_eq!(data["sequence"], done, "{e}");
                    assert!(data["specimen_id"].is_string(), "{e}");
                    assert!(data["result"]["dwc"].is_object(), "{e}");
                    let m = &data["metrics"];
                    assert_eq!(m["total_processed"], done, "{e}");
                    assert_eq!(m["success_count"], succeeded, "{e}");
                    assert_eq!(m["failed_count"], done - succeeded, "{e}");
                    let rate = m["success_rate"].as_f64().expect("a rate");
                    assert!((rate - succeeded as f64 / done as f64).abs() < 1e-9, "{e}");
                }
                _ => {}
            }
        }
        assert!(
            done > 0 && processing == done,
            "{run}: {processing} / {done}"
        );
    }
}

/// The summary table's columns line up: the event log column starts at the
/// same place on every line, however long the outcome.
#[test]
fn the_summary_table_is_aligned() {
    let d = dir("demo-table");
    let o = nerve(&["demo", "--out", d.to_str().unwrap(), "--delay-ms", "0"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    let rows: Vec<&str> = text
        .lines()
        .filter(|l| l.starts_with("run ") || l.starts_with("run-"))
        .collect();
    assert_eq!(rows.len(), 3, "{text}");
    let column = |l: &str| l.rfind("  ").map(|at| l[..at + 2].chars().count());
    assert!(rows.iter().all(|l| column(l) == column(rows[0])), "{text}");
}

/// Ctrl-C mid-run: the run's journal ends with `system.interrupted` naming
/// the signal, and the demo exits with 130.
#[cfg(unix)]
#[test]
fn ctrl_c_ends_the_run_cleanly() {
    use std::time::{Duration, Instant};

    let d = dir("demo-sigint");
    let child = std::process::Command::new(env!("CARGO_BIN_EXE_nerve"))
        .args(["demo", "--out", d.to_str().unwrap()])
        .args(["--specimens", "100000", "--delay-ms", "5"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait for the run itself to be under way: its first items in the journal.
    let log = d.join("run-healthy/events.jsonl");
    let deadline = Instant::now() + Duration::from_secs(30);
    while !std::fs::read_to_string(&log).is_ok_and(|t| t.contains("specimen.completed")) {
        assert!(Instant::now() < deadline, "the demo did not start");
        std::thread::yield_now();
    }
    let killed = std::process::Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let o = child.wait_with_output().unwrap();
    assert_eq!(o.status.code(), Some(130), "{}", stderr(&o));
    // It says so, and where the run's events are, rather than nothing.
    assert!(
        stderr(&o).contains("interrupted by SIGINT: the run's events so far are in")
            && stderr(&o).contains("run-healthy/events.jsonl"),
        "{}",
        stderr(&o)
    );

    // The journal ends with the interruption: nothing the still running
    // extraction emitted is accepted after it.
    let text = std::fs::read_to_string(&log).unwrap();
    let events: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let at = events
        .iter()
        .position(|e| e["event_type"] == "system.interrupted")
        .unwrap_or_else(|| panic!("no system.interrupted; stderr: {}", stderr(&o)));
    assert_eq!(events[at]["data"]["signal"], "SIGINT", "{}", events[at]);
    let after: Vec<&serde_json::Value> =
        events[at + 1..].iter().map(|e| &e["event_type"]).collect();
    assert!(
        after.is_empty(),
        "accepted after system.interrupted: {after:?}"
    );
    assert!(
        !d.join("run-broken").exists(),
        "the demo stopped at the first run"
    );
}
