//! The ported integration guide (`examples/extraction.rs`) run as a real
//! process, twice in a row into one output directory: a healthy run, then a
//! broken one that early validation stops at specimen 5 and that ends with
//! `std::process::exit(1)`. A webhook receiver and an SMTP receiver on
//! 127.0.0.1 take the alerts; the real `nerve` binary reads the journal.
//!
//! Cargo gives integration tests the path of their own package's binaries
//! only (`CARGO_BIN_EXE_*`), not of examples or of another package's
//! binaries, so the test builds both with the `cargo` that runs it
//! (`env!("CARGO")`), with this test's profile and features so the
//! artifacts already built are reused, and takes their paths from cargo's
//! JSON messages. A `--target-dir` given on the command line is not seen;
//! `CARGO_TARGET_DIR` is.
//!
//! Both runs happen once per test process, in [`outcome`] (once in all
//! under `cargo test`, once per test under nextest); each test checks one
//! promise, so a failing one does not hide the others.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc::{self, Receiver};
use std::time::{Duration, Instant};

use serde_json::Value;

/// Generous bound on waiting for an alert; deliveries take milliseconds.
const PATIENCE: Duration = Duration::from_secs(20);

/// What the two runs left behind.
struct Outcome {
    dir: PathBuf,
    nerve: PathBuf,
    healthy: Output,
    broken: Output,
    /// Every line of `events.jsonl`, parsed.
    journal: Vec<Value>,
    /// Webhook bodies received, in order.
    webhook: Vec<Value>,
    /// Emails received: envelope and content.
    mails: Vec<(Vec<String>, String)>,
}

fn outcome() -> &'static Outcome {
    static OUTCOME: OnceLock<Outcome> = OnceLock::new();
    OUTCOME.get_or_init(|| {
        let (example, nerve) = build();
        let dir = std::env::temp_dir().join(format!("nerve-extraction-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let (url, bodies) = webhook_receiver();
        let (port, mails) = smtp_receiver();
        let run = |run_id: &str, broken: bool| {
            let mut command = Command::new(&example);
            command
                .arg(&dir)
                .env("EXTRACTION_RUN_ID", run_id)
                .env("ALERT_WEBHOOK_URL", &url)
                .env("ALERT_SMTP_HOST", "127.0.0.1")
                .env("ALERT_SMTP_PORT", port.to_string())
                .env("ALERT_EMAIL_TO", "curator@herbarium.example.org")
                .env_remove("EXTRACTION_OUTPUT")
                .stdin(Stdio::null());
            if broken {
                command.env("EXTRACTION_BROKEN", "1");
            } else {
                command.env_remove("EXTRACTION_BROKEN");
            }
            command.output().expect("the extraction example runs")
        };
        let healthy = run("extraction_001", false);
        let broken = run("extraction_002", true);
        let journal = std::fs::read_to_string(dir.join("events.jsonl"))
            .expect("the example wrote events.jsonl")
            .lines()
            .map(|line| serde_json::from_str(line).expect("each journal line is JSON"))
            .collect();
        // The children are gone: whatever they sent is on its way to the
        // receivers. Wait for the failure alert, which comes last.
        let webhook = collect(&bodies, |b| b["text"].as_str().is_some_and(is_failure));
        let mails = collect(&mails, |(_, content)| is_failure(&unfold(content)));
        Outcome {
            dir,
            nerve,
            healthy,
            broken,
            journal,
            webhook,
            mails,
        }
    })
}

/// Whether an alert's text is the broken run's failure alert.
fn is_failure(text: &str) -> bool {
    text.contains("extraction_002") && text.contains("early_validation_failed")
}

/// Everything received until `last` matched one, or `PATIENCE` passed.
fn collect<T>(rx: &Receiver<T>, last: impl Fn(&T) -> bool) -> Vec<T> {
    let deadline = Instant::now() + PATIENCE;
    let mut all = Vec::new();
    while !all.iter().any(&last) {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(item) => all.push(item),
            Err(_) => break,
        }
    }
    all.extend(rx.try_iter());
    all
}

/// Builds the example and the `nerve` binary; returns their paths.
fn build() -> (PathBuf, PathBuf) {
    let mut features: Vec<&str> = Vec::new();
    for (on, name) in [
        (cfg!(feature = "consumers"), "nerve/consumers"),
        (cfg!(feature = "email"), "nerve/email"),
        (cfg!(feature = "journal"), "nerve/journal"),
        (cfg!(feature = "metrics-facade"), "nerve/metrics-facade"),
        (cfg!(feature = "otel"), "nerve/otel"),
        (cfg!(feature = "progress"), "nerve/progress"),
        (cfg!(feature = "redact"), "nerve/redact"),
        (cfg!(feature = "tracing"), "nerve/tracing"),
        (cfg!(feature = "webhook"), "nerve/webhook"),
    ] {
        if on {
            features.push(name);
        }
    }
    let mut command = Command::new(env!("CARGO"));
    command
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .args(["build", "--message-format=json-render-diagnostics"])
        .args(["-p", "nerve", "-p", "nerve-cli", "--example", "extraction"])
        .args(["--bin", "nerve", "--no-default-features", "--features"])
        .arg(features.join(","));
    // This test runs from target/<profile>/deps: build with the same profile.
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
    let mut example = None;
    let mut nerve = None;
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let message: Value = serde_json::from_str(line).unwrap_or_default();
        let Some(executable) = message["executable"].as_str() else {
            continue;
        };
        match message["target"]["name"].as_str() {
            Some("extraction") => example = Some(PathBuf::from(executable)),
            Some("nerve") => nerve = Some(PathBuf::from(executable)),
            _ => {}
        }
    }
    (
        example.expect("cargo built the extraction example"),
        nerve.expect("cargo built the nerve binary"),
    )
}

/// An HTTP/1.1 server on 127.0.0.1 answering 200 to every request and
/// sending each JSON body down the channel.
fn webhook_receiver() -> (String, Receiver<Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut reader = BufReader::new(stream);
                // One connection may carry several requests (keep-alive).
                loop {
                    let mut length = 0;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).unwrap();
                    let _ = tx.send(serde_json::from_slice(&body).unwrap());
                    let answer = b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n";
                    reader.get_mut().write_all(answer).unwrap();
                }
            });
        }
    });
    (url, rx)
}

/// An SMTP server on 127.0.0.1 that accepts every mail and sends its
/// envelope and content down the channel.
fn smtp_receiver() -> (u16, Receiver<(Vec<String>, String)>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { return };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut stream = BufReader::new(stream);
                let mut envelope = Vec::new();
                stream
                    .get_mut()
                    .write_all(b"220 localhost ESMTP test\r\n")
                    .unwrap();
                let mut line = String::new();
                loop {
                    line.clear();
                    if stream.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let command = line.trim_end().to_owned();
                    let upper = command.to_ascii_uppercase();
                    let answer: &[u8] = if upper.starts_with("EHLO") {
                        b"250-localhost\r\n250 8BITMIME\r\n"
                    } else if upper.starts_with("MAIL FROM") || upper.starts_with("RCPT TO") {
                        envelope.push(command);
                        b"250 OK\r\n"
                    } else if upper == "DATA" {
                        stream.get_mut().write_all(b"354 go ahead\r\n").unwrap();
                        let mut content = String::new();
                        loop {
                            line.clear();
                            if stream.read_line(&mut line).unwrap_or(0) == 0 || line == ".\r\n" {
                                break;
                            }
                            content.push_str(&line);
                        }
                        let _ = tx.send((std::mem::take(&mut envelope), content));
                        b"250 queued\r\n"
                    } else if upper == "QUIT" {
                        let _ = stream.get_mut().write_all(b"221 bye\r\n");
                        return;
                    } else {
                        b"250 OK\r\n"
                    };
                    if stream.get_mut().write_all(answer).is_err() {
                        return;
                    }
                }
            });
        }
    });
    (port, rx)
}

/// A mail's content with quoted-printable soft line breaks removed.
fn unfold(content: &str) -> String {
    content.replace("=\r\n", "")
}

/// The journal cut into runs, each starting at its `extraction.started`.
fn runs(journal: &[Value]) -> Vec<&[Value]> {
    let starts: Vec<usize> = journal
        .iter()
        .enumerate()
        .filter(|(_, e)| e["event_type"] == "extraction.started")
        .map(|(i, _)| i)
        .collect();
    starts
        .iter()
        .enumerate()
        .map(|(n, &start)| {
            let end = starts.get(n + 1).copied().unwrap_or(journal.len());
            &journal[start..end]
        })
        .collect()
}

/// `jq -r '.event_type' | sort | uniq -c`, in Rust.
fn counts(events: &[Value]) -> BTreeMap<&str, u64> {
    let mut counts = BTreeMap::new();
    for e in events {
        *counts.entry(e["event_type"].as_str().unwrap()).or_default() += 1;
    }
    counts
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

fn nerve(args: &[&str]) -> Output {
    Command::new(&outcome().nerve)
        .args(args)
        .output()
        .expect("the nerve binary runs")
}

#[test]
fn the_healthy_run_completes_and_the_broken_one_exits_1_at_specimen_5() {
    let o = outcome();
    assert_eq!(
        o.healthy.status.code(),
        Some(0),
        "{}",
        text(&o.healthy.stderr)
    );
    let out = text(&o.healthy.stdout);
    assert!(out.contains("Processing specimen 30/30..."), "{out}");

    assert_eq!(
        o.broken.status.code(),
        Some(1),
        "{}",
        text(&o.broken.stderr)
    );
    let out = text(&o.broken.stdout);
    assert!(out.contains("Processing specimen 5/30..."), "{out}");
    assert!(!out.contains("Processing specimen 6/30"), "{out}");
    let err = text(&o.broken.stderr);
    assert!(
        err.contains(
            "❌ Extraction stopped: early validation failed: 0% success rate after 5 specimens"
        ),
        "{err}"
    );
}

#[test]
fn the_journal_holds_both_runs_with_the_guides_counts() {
    let o = outcome();
    let runs = runs(&o.journal);
    assert_eq!(runs.len(), 2, "two runs in one events.jsonl");

    let healthy = counts(runs[0]);
    let expected: BTreeMap<&str, u64> = [
        ("extraction.started", 1),
        ("specimen.processing", 30),
        ("specimen.completed", 27),
        ("specimen.failed", 3),
        ("validation.checkpoint", 1),
        ("extraction.completed", 1),
    ]
    .into();
    assert_eq!(healthy, expected);

    // The guide's `jq -r '.event_type' | sort | uniq -c` for the broken run.
    let broken = counts(runs[1]);
    let expected: BTreeMap<&str, u64> = [
        ("extraction.started", 1),
        ("specimen.processing", 5),
        ("specimen.failed", 5),
        ("validation.checkpoint", 1),
        ("extraction.failed", 1),
    ]
    .into();
    assert_eq!(broken, expected);

    // In order: what the script emitted, the checkpoint after the fifth
    // item, and the failure as the very last line.
    let types: Vec<&str> = runs[1]
        .iter()
        .map(|e| e["event_type"].as_str().unwrap())
        .collect();
    let mut want = vec!["extraction.started"];
    for _ in 0..5 {
        want.extend(["specimen.processing", "specimen.failed"]);
    }
    want.extend(["validation.checkpoint", "extraction.failed"]);
    assert_eq!(types, want);
}

#[test]
fn events_carry_the_guides_data() {
    let o = outcome();
    for (run, run_id, total) in [
        (runs(&o.journal)[0], "extraction_001", 30),
        (runs(&o.journal)[1], "extraction_002", 5),
    ] {
        let start = &run[0];
        assert_eq!(start["data"]["run_id"], run_id);
        assert_eq!(start["data"]["total_specimens"], 30);
        let end = run.last().unwrap();
        assert_eq!(end["data"]["run_id"], run_id, "{end}");
        let items: Vec<&Value> = run
            .iter()
            .filter(|e| {
                e["event_type"] == "specimen.completed" || e["event_type"] == "specimen.failed"
            })
            .collect();
        assert_eq!(items.len(), total);
        let mut successes = 0;
        for (i, e) in items.iter().enumerate() {
            let d = &e["data"];
            let sequence = i as u64 + 1;
            if e["event_type"] == "specimen.completed" {
                successes += 1;
            }
            assert_eq!(d["sequence"], sequence, "{e}");
            assert!(d["specimen_id"].is_string(), "{e}");
            assert!(d["result"]["dwc"].is_object(), "{e}");
            let m = &d["metrics"];
            assert_eq!(m["total_processed"], sequence, "{e}");
            assert_eq!(m["success_count"], successes, "{e}");
            assert_eq!(m["failed_count"], sequence - successes, "{e}");
            // serde_json parses floats to within one ulp, not exactly.
            let rate = m["success_rate"].as_f64().unwrap();
            assert!(
                (rate - successes as f64 / sequence as f64).abs() < 1e-9,
                "{e}"
            );
        }
    }
    let failed = &runs(&o.journal)[1].last().unwrap()["data"];
    assert_eq!(failed["reason"], "early_validation_failed");
    assert_eq!(failed["processed"], 5);
}

#[test]
fn seq_is_one_unbroken_sequence_across_both_runs() {
    let o = outcome();
    let seqs: Vec<u64> = o
        .journal
        .iter()
        .map(|e| e["seq"].as_u64().unwrap())
        .collect();
    let want: Vec<u64> = (1..=seqs.len() as u64).collect();
    assert_eq!(seqs, want);
}

#[test]
fn the_webhook_receives_checkpoint_completion_and_failure() {
    let o = outcome();
    let texts: Vec<&str> = o
        .webhook
        .iter()
        .map(|b| b["text"].as_str().unwrap())
        .collect();
    assert!(
        texts.contains(&"✅ Early validation passed: 100% success"),
        "{texts:?}"
    );
    assert!(
        texts.contains(&"🎉 Extraction completed: 27/30"),
        "{texts:?}"
    );
    assert!(
        texts.contains(&"🚨 Extraction failed: extraction_002: early_validation_failed"),
        "the failure alert was sent before exit(1): {texts:?}"
    );
}

#[test]
fn the_email_receives_the_failure_alert() {
    let o = outcome();
    let failure = o
        .mails
        .iter()
        .find(|(_, content)| is_failure(&unfold(content)));
    let (envelope, _) = failure.unwrap_or_else(|| {
        panic!(
            "the failure email was sent before exit(1); {} mails arrived",
            o.mails.len()
        )
    });
    assert_eq!(
        envelope,
        &[
            "MAIL FROM:<extraction@example.org>",
            "RCPT TO:<curator@herbarium.example.org>"
        ]
    );
    assert_eq!(o.mails.len(), 1, "no email for the healthy run");
}

#[test]
fn nerve_verify_accepts_the_directory() {
    let o = outcome();
    let v = nerve(&["verify", o.dir.to_str().unwrap()]);
    assert_eq!(
        v.status.code(),
        Some(0),
        "{}{}",
        text(&v.stdout),
        text(&v.stderr)
    );
}

#[test]
fn nerve_stats_shows_two_runs_with_their_true_counts() {
    let o = outcome();
    let s = nerve(&["stats", "--json", o.dir.to_str().unwrap()]);
    assert_eq!(s.status.code(), Some(0), "{}", text(&s.stderr));
    let v: Value = serde_json::from_slice(&s.stdout).unwrap();
    let runs = &v["runs"];
    assert_eq!(runs.as_object().map(|r| r.len()), Some(2), "{runs}");
    let first = &runs["extraction_001"];
    assert_eq!(
        (
            &first["succeeded"],
            &first["failed"],
            &first["success_rate"]
        ),
        (&Value::from(27), &Value::from(3), &Value::from(0.9)),
        "{runs}"
    );
    let second = &runs["extraction_002"];
    assert_eq!(
        (
            &second["succeeded"],
            &second["failed"],
            &second["success_rate"]
        ),
        (&Value::from(0), &Value::from(5), &Value::from(0.0)),
        "{runs}"
    );
}

#[test]
fn nerve_query_by_run_returns_the_whole_run() {
    let o = outcome();
    let q = nerve(&["query", o.dir.to_str().unwrap(), "--run", "extraction_002"]);
    assert_eq!(q.status.code(), Some(0), "{}", text(&q.stderr));
    let types: Vec<String> = text(&q.stdout)
        .lines()
        .map(|l| {
            let e: Value = serde_json::from_str(l).unwrap();
            e["event_type"].as_str().unwrap().to_owned()
        })
        .collect();
    let want: Vec<String> = runs(&o.journal)[1]
        .iter()
        .map(|e| e["event_type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(types, want);
}
