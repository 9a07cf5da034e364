//! The `extraction_nats` example as real processes against a real
//! `nats-server` on 127.0.0.1: one validator that starts three worker
//! processes of itself. Early validation runs in the validator over every
//! worker's specimens; its verdict stops every worker.
//!
//! The example is built once per test process (see `build`), with the
//! `cargo` that runs the test and this test's profile and features, as
//! `tests/extraction` does.

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use serde_json::Value;

// The bridge tests' server: a real `nats-server` on a free port, skipped
// loudly (or failing under `CI`) when the package is missing.
#[path = "../../../nerve-nats/tests/bridge/support.rs"]
#[allow(dead_code)] // restart and kill are for the bridge's own tests
mod support;

use support::NatsServer;

/// Most specimens a worker may take on after the verdict: the verdict
/// crosses the server twice in a few milliseconds on loopback, each
/// specimen takes `DELAY_MS`; generous for a loaded machine.
const AFTER_VERDICT_BOUND: u64 = 5;
const DELAY_MS: &str = "50";

/// Builds the example; returns its path.
fn example() -> &'static Path {
    static EXAMPLE: OnceLock<PathBuf> = OnceLock::new();
    EXAMPLE.get_or_init(|| {
        let mut features = vec!["nerve/consumers", "nerve/nats"];
        for (on, name) in [
            (cfg!(feature = "journal"), "nerve/journal"),
            (cfg!(feature = "metrics-facade"), "nerve/metrics-facade"),
            (cfg!(feature = "otel"), "nerve/otel"),
            (cfg!(feature = "redact"), "nerve/redact"),
            (cfg!(feature = "tracing"), "nerve/tracing"),
        ] {
            if on {
                features.push(name);
            }
        }
        let mut command = Command::new(env!("CARGO"));
        command
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .args(["build", "--message-format=json-render-diagnostics"])
            .args(["-p", "nerve", "--example", "extraction_nats"])
            .args(["--no-default-features", "--features"])
            .arg(features.join(","));
        let exe = std::env::current_exe().unwrap();
        match exe
            .parent()
            .and_then(Path::parent)
            .and_then(Path::file_name)
        {
            Some(p) if p == "release" => drop(command.arg("--release")),
            Some(p) if p != "debug" => drop(command.arg("--profile").arg(p)),
            _ => {}
        }
        let output = command
            .stderr(Stdio::inherit())
            .output()
            .expect("cargo runs");
        assert!(output.status.success(), "cargo build failed");
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .find(|m| m["target"]["name"] == "extraction_nats")
            .and_then(|m| m["executable"].as_str().map(PathBuf::from))
            .expect("cargo built the extraction_nats example")
    })
}

/// One run: the validator (which starts the workers), its output and
/// its journal, parsed.
struct Run {
    output: Output,
    stdout: String,
    journal: Vec<Value>,
}

fn run(server: &NatsServer, broken: bool, specimens: &str, delay_ms: &str) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let mut command = Command::new(example());
    command
        .env("NATS_URL", server.url())
        .env("EXTRACTION_OUTPUT", dir.path())
        .env("EXTRACTION_SPECIMENS", specimens)
        .env("EXTRACTION_DELAY_MS", delay_ms)
        .env("EXTRACTION_WORKERS", "3")
        .env_remove("EXTRACTION_RUN_ID")
        .stdin(Stdio::null());
    if broken {
        command.env("EXTRACTION_BROKEN", "1");
    } else {
        command.env_remove("EXTRACTION_BROKEN");
    }
    let output = command.output().expect("the example runs");
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    let journal = std::fs::read_to_string(dir.path().join("events.jsonl"))
        .unwrap_or_default()
        .lines()
        .map(|l| serde_json::from_str(l).expect("each journal line is JSON"))
        .collect();
    Run {
        output,
        stdout,
        journal,
    }
}

fn count(journal: &[Value], event_type: &str) -> usize {
    journal
        .iter()
        .filter(|e| e["event_type"] == event_type)
        .count()
}

#[test]
fn a_failed_checkpoint_stops_every_worker_at_its_next_specimen() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let run = run(&server, true, "300", DELAY_MS);
    let stderr = String::from_utf8_lossy(&run.output.stderr);
    let context = format!("stdout:\n{}\nstderr:\n{stderr}", run.stdout);
    // The validator's verdict, and its `sys.exit(1)`.
    assert_eq!(run.output.status.code(), Some(1), "{context}");
    assert!(
        run.stdout
            .contains("verdict: early validation failed: 0% success rate after 5 specimens"),
        "{context}"
    );
    // Each worker said it stopped (the guide's message), exited 1, and
    // took on at most a few specimens after the verdict.
    assert_eq!(
        run.stdout
            .matches(
                "❌ Extraction stopped: early validation failed: 0% success rate after 5 specimens"
            )
            .count(),
        3,
        "{context}"
    );
    for worker in 1..=3 {
        let line = run
            .stdout
            .lines()
            .find(|l| l.starts_with(&format!("worker {worker}: ")))
            .unwrap_or_else(|| panic!("no line for worker {worker}\n{context}"));
        assert!(line.contains("stopped at the checkpoint"), "{line}");
        assert!(line.ends_with("exit status 1"), "{line}");
        let after: u64 = line
            .split(", ")
            .find_map(|part| part.strip_suffix(" after the verdict"))
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("no count after the verdict in {line:?}"));
        assert!(after <= AFTER_VERDICT_BOUND, "{line}");
    }
    // The journal tells the same story: one verdict, three stopped
    // workers, a handful of specimens of the 300.
    let j = &run.journal;
    assert_eq!(count(j, "extraction.failed"), 1, "{context}");
    assert_eq!(count(j, "extraction.completed"), 0, "{context}");
    assert_eq!(count(j, "worker.stopped"), 3, "{context}");
    let checkpoint = j
        .iter()
        .find(|e| e["event_type"] == "validation.checkpoint")
        .expect("a checkpoint");
    assert_eq!(checkpoint["data"]["passed"], false);
    assert_eq!(checkpoint["data"]["processed"], 5);
    let items = count(j, "specimen.failed") + count(j, "specimen.completed");
    assert!(
        (5..=5 + 3 * AFTER_VERDICT_BOUND as usize).contains(&items),
        "{items} specimens\n{context}"
    );
    let failed = j
        .iter()
        .find(|e| e["event_type"] == "extraction.failed")
        .unwrap();
    assert_eq!(failed["data"]["reason"], "early_validation_failed");
}

#[test]
fn a_healthy_run_over_three_workers_completes() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let run = run(&server, false, "30", "0");
    let stderr = String::from_utf8_lossy(&run.output.stderr);
    let context = format!("stdout:\n{}\nstderr:\n{stderr}", run.stdout);
    assert_eq!(run.output.status.code(), Some(0), "{context}");
    for worker in 1..=3 {
        assert!(
            run.stdout.contains(&format!(
                "worker {worker}: finished (10 specimens), 0 after the verdict, exit status 0"
            )),
            "{context}"
        );
    }
    // HERB-0007, -0017, -0027 are unreadable: 27 of 30.
    assert!(
        run.stdout.contains("30 specimens, 27 successful"),
        "{context}"
    );
    let j = &run.journal;
    assert_eq!(count(j, "specimen.completed"), 27, "{context}");
    assert_eq!(count(j, "specimen.failed"), 3, "{context}");
    assert_eq!(count(j, "extraction.completed"), 1, "{context}");
    assert_eq!(count(j, "extraction.failed"), 0, "{context}");
    let checkpoint = j
        .iter()
        .find(|e| e["event_type"] == "validation.checkpoint")
        .expect("a checkpoint");
    assert_eq!(checkpoint["data"]["passed"], true);
}
