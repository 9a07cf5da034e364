//! The real `nerve` binary, run on journals written by a real bus, and on
//! damaged ones.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use nerve::Bus;
use nerve::journal::Journal;
use nerve::{Event, json};

mod crash;
mod damaged;
mod demo;
mod edges;
mod follow;
mod nats;
mod record;
mod runs;

fn nerve(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_nerve"))
        .args(args)
        .output()
        .expect("the nerve binary runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// A fresh directory for one test.
fn dir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("nerve-cli-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Writes a journal with two runs: `good` (4 of 5 completed) and `bad` (1 of 5).
fn write_journal(path: &Path) {
    let journal = Journal::builder(path).build().unwrap();
    let bus = Bus::builder().journal(journal).build().unwrap();
    for (run, ok) in [("good", 4), ("bad", 1)] {
        bus.emit_event(
            Event::builder("extraction.started")
                .run_id(run)
                .data(json!({"total_specimens": 5}))
                .build()
                .unwrap(),
        )
        .unwrap();
        for n in 0..5 {
            let kind = if n < ok {
                "specimen.completed"
            } else {
                "specimen.failed"
            };
            let rate = f64::from(n.min(ok) as u32) / 5.0;
            bus.emit_event(
                Event::builder(kind)
                    .run_id(run)
                    .source("extractor")
                    .correlation_id(format!("{run}-{n}"))
                    .data(json!({"n": n, "metrics": {"success_rate": rate}}))
                    .build()
                    .unwrap(),
            )
            .unwrap();
        }
    }
    bus.shutdown_blocking();
}

#[test]
fn stats_counts_types_runs_and_rates() {
    let d = dir("stats");
    let path = d.join("events.jsonl");
    write_journal(&path);
    let o = nerve(&["stats", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("       2  extraction.started"), "{text}");
    assert!(text.contains("       5  specimen.completed"), "{text}");
    assert!(text.contains("      12  total"), "{text}");
    assert!(text.contains("80.0%") && text.contains("20.0%"), "{text}");
    assert!(text.contains("0 torn, 0 corrupt"), "{text}");

    let o = nerve(&["stats", "--json", d.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(v["events"], 12);
    assert_eq!(v["runs"]["bad"]["failed"], 4);
    assert_eq!(v["runs"]["good"]["success_rate"], 0.8);
}

#[test]
fn query_filters_and_prints_json_lines() {
    let d = dir("query");
    let path = d.join("events.jsonl");
    write_journal(&path);
    let p = path.to_str().unwrap();
    let o = nerve(&["query", p, "--type", "specimen.failed", "--run", "bad"]);
    assert!(o.status.success(), "{}", stderr(&o));
    let lines: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 4);
    assert!(
        lines
            .iter()
            .all(|e| e["event_type"] == "specimen.failed" && e["run_id"] == "bad")
    );
    let ns: Vec<u64> = lines
        .iter()
        .map(|e| e["data"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(ns, [1, 2, 3, 4], "oldest first");

    let o = nerve(&["query", p, "--correlation", "good-3"]);
    assert_eq!(stdout(&o).lines().count(), 1);
    let o = nerve(&["query", p, "--limit", "2", "--reverse"]);
    let last: Vec<serde_json::Value> = stdout(&o)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(last.len(), 2);
    assert!(
        last[0]["seq"].as_u64() > last[1]["seq"].as_u64(),
        "newest first"
    );
    let o = nerve(&[
        "query",
        p,
        "--table",
        "--source",
        "extractor",
        "--limit",
        "3",
    ]);
    assert!(stdout(&o).lines().next().unwrap().contains("event type"));
    assert_eq!(stdout(&o).lines().count(), 4);
}

#[test]
fn timeline_shows_where_the_rate_dropped() {
    let d = dir("timeline");
    let path = d.join("events.jsonl");
    write_journal(&path);
    let o = nerve(&[
        "timeline",
        path.to_str().unwrap(),
        "--field",
        "data.metrics.success_rate",
        "--run",
        "good",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("5 values"), "{text}");
    assert!(text.contains('▁') && text.contains('█'), "{text}");

    // A path written without `data.` gets a hint.
    let o = nerve(&[
        "timeline",
        path.to_str().unwrap(),
        "--field",
        "metrics.success_rate",
    ]);
    let text = stdout(&o);
    assert!(text.contains("no numeric values"), "{text}");
    assert!(
        text.contains("hint: did you mean --field data.metrics.success_rate?"),
        "{text}"
    );
}

#[test]
fn bad_input_is_one_clear_line_and_a_nonzero_exit() {
    let d = dir("errors");
    let missing = d.join("nope.jsonl");
    for args in [
        vec!["stats", missing.to_str().unwrap()],
        vec!["query", d.to_str().unwrap()],
        vec!["query", "--since", "yesterday", missing.to_str().unwrap()],
    ] {
        let o = nerve(&args);
        assert_eq!(o.status.code(), Some(2), "{args:?}");
        let err = stderr(&o);
        assert!(err.starts_with("nerve: error: "), "{err}");
        assert_eq!(err.trim_end().lines().count(), 1, "one line: {err}");
        assert!(
            !err.contains("panicked") && !err.contains("backtrace"),
            "{err}"
        );
    }
    let path = d.join("events.jsonl");
    write_journal(&path);
    let o = nerve(&["query", path.to_str().unwrap(), "--type", "bad*pattern"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("not a valid pattern"), "{}", stderr(&o));
}

#[test]
fn every_command_has_help_with_an_example() {
    for cmd in ["demo", "stats", "query", "timeline", "tail", "verify"] {
        let o = nerve(&[cmd, "--help"]);
        assert!(o.status.success(), "{cmd}");
        assert!(
            stdout(&o).contains("Example: nerve"),
            "{cmd}: {}",
            stdout(&o)
        );
    }
}

#[test]
fn a_closed_pipe_ends_quietly() {
    let d = dir("pipe");
    let path = d.join("events.jsonl");
    let journal = Journal::builder(&path).build().unwrap();
    let bus = Bus::builder().journal(journal).build().unwrap();
    for n in 0..20_000 {
        bus.emit("load.tick", json!({ "n": n })).unwrap();
    }
    bus.shutdown_blocking();
    let mut child = Command::new(env!("CARGO_BIN_EXE_nerve"))
        .args(["query", path.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut first)
        .unwrap();
    // Dropping the reader closes the pipe: like `| head -1`.
    let o = child.wait_with_output().unwrap();
    assert!(first.contains("load.tick"));
    assert!(o.status.success(), "{:?} {}", o.status, stderr(&o));
    assert!(stderr(&o).is_empty(), "{}", stderr(&o));
}

/// `nerve stats LOG 2>&1 | head`: both streams close while a warning about
/// a damaged line is still to be written. No command panics (exit 101).
#[test]
fn a_closed_stderr_ends_quietly_too() {
    let d = dir("stderr-pipe");
    let path = d.join("events.jsonl");
    write_journal(&path);
    let mut text = std::fs::read(&path).unwrap();
    text.extend_from_slice(b"not json\n");
    std::fs::write(&path, text).unwrap();
    let p = path.to_str().unwrap();
    for args in [
        vec!["stats", p],
        vec!["query", p],
        vec!["tail", p],
        vec!["timeline", p, "--field", "data.metrics.success_rate"],
        vec!["verify", p],
    ] {
        // The reader is gone before the child starts: every write fails.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let status = Command::new(env!("CARGO_BIN_EXE_nerve"))
            .args(&args)
            .stdout(writer.try_clone().unwrap())
            .stderr(writer)
            .status()
            .unwrap();
        let code = status.code();
        assert!(matches!(code, Some(0 | 1)), "{args:?}: {status:?}");
    }
}

#[test]
fn verify_reports_clean_and_damaged_journals() {
    let d = dir("verify");
    let path = d.join("events.jsonl");
    write_journal(&path);
    let p = path.to_str().unwrap();
    let o = nerve(&["verify", p]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    assert!(stdout(&o).contains("ok: no problems found"));

    // A corrupt line in the middle, a duplicated record and a torn tail.
    let text = std::fs::read_to_string(&path).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut damaged = String::new();
    for (i, l) in lines.iter().enumerate() {
        if i == 3 {
            damaged.push_str("{not json\n");
            continue; // also a seq gap
        }
        damaged.push_str(l);
        damaged.push('\n');
        if i == 5 {
            damaged.push_str(l);
            damaged.push('\n');
        }
    }
    damaged.push_str("{\"event_id\":\"0190");
    std::fs::write(&path, damaged).unwrap();
    let o = nerve(&["verify", p]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let report = stdout(&o);
    assert!(report.contains(":4: not a journal record"), "{report}");
    assert!(report.contains("torn last line"), "{report}");
    assert!(report.contains("appears 2 times"), "{report}");
    assert!(report.contains("is missing"), "{report}");

    let o = nerve(&["verify", d.join("absent.jsonl").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(2));
}

#[test]
fn verify_finds_a_gap_in_the_rotation_numbering() {
    let d = dir("rotation");
    let path = d.join("events.jsonl");
    let journal = Journal::builder(&path)
        .max_bytes(2_000)
        .max_files(10)
        .build()
        .unwrap();
    let bus = Bus::builder().journal(journal).build().unwrap();
    for n in 0..100 {
        bus.emit("load.tick", json!({ "n": n })).unwrap();
    }
    bus.shutdown_blocking();
    assert!(d.join("events.3.jsonl").exists());
    let o = nerve(&["verify", d.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    std::fs::remove_file(d.join("events.2.jsonl")).unwrap();
    let o = nerve(&["verify", d.to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        stdout(&o).contains("backup events.2.jsonl is missing"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn tail_prints_the_last_events_and_follows_across_rotation() {
    let d = dir("tail");
    let path = d.join("events.jsonl");
    let journal = Journal::builder(&path)
        .max_bytes(4_000)
        .max_files(50)
        .build()
        .unwrap();
    let bus = Bus::builder().journal(journal.clone()).build().unwrap();
    for n in 0..30 {
        bus.emit("before.tick", json!({ "n": n })).unwrap();
    }
    bus.flush_blocking();
    let o = nerve(&["tail", "-n", "3", path.to_str().unwrap()]);
    let ns: Vec<u64> = stdout(&o)
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["data"]["n"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(ns, [27, 28, 29]);

    let mut child = Command::new(env!("CARGO_BIN_EXE_nerve"))
        // `-n` covers what is written before the tail starts following:
        // it reads the last events after it began following, skipping
        // what it would print twice.
        .args([
            "tail",
            "-f",
            "-n",
            "1000",
            "--type",
            "live.*",
            path.to_str().unwrap(),
        ])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    // Enough events to rotate several times while the tail follows.
    let writer = std::thread::spawn(move || {
        for n in 0..200u64 {
            bus.emit("live.tick", json!({ "n": n })).unwrap();
            bus.emit("other.tick", json!({ "n": n })).unwrap();
            if n % 20 == 0 {
                bus.flush_blocking();
            }
        }
        bus.shutdown_blocking();
    });
    let mut got = Vec::new();
    while got.len() < 200 {
        let line = lines.next().expect("tail ended early").unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["event_type"], "live.tick");
        got.push(v["data"]["n"].as_u64().unwrap());
    }
    writer.join().unwrap();
    child.kill().unwrap();
    let _ = child.wait();
    assert_eq!(
        got,
        (0..200).collect::<Vec<_>>(),
        "no line lost or repeated"
    );
    assert!(
        d.join("events.2.jsonl").exists(),
        "the journal rotated while followed"
    );
}
