//! `nerve tail --nats` and `nerve demo --nats` against a real `nats-server`
//! on 127.0.0.1 (skipped loudly without one, failing under `CI`).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use nerve::nats::{NatsBridge, NatsOptions};
use nerve::{Bus, Event, Journal, json};

use crate::{dir, nerve, stderr, stdout};

#[path = "../../../nerve-nats/tests/bridge/support.rs"]
#[allow(dead_code)] // restart and kill are for the bridge's own tests
mod support;

use support::NatsServer;

const PATIENCE: Duration = Duration::from_secs(60);

/// Lines of a child's pipe, as they come.
fn lines(pipe: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

#[test]
fn tail_nats_prints_live_events_as_tail_prints_the_journal() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let url = server.url();
    let mut tail = Command::new(env!("CARGO_BIN_EXE_nerve"))
        .args(["tail", "--nats", &url, "*", "--prefix", "nerve.tail."])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = lines(tail.stdout.take().unwrap());
    let err = lines(tail.stderr.take().unwrap());
    // It says so once the server has its subscription.
    let ready = err
        .recv_timeout(PATIENCE)
        .expect("the tail says it follows");
    assert!(
        ready.starts_with("nerve: following nerve.tail.> on"),
        "{ready}"
    );

    // A bus that records to a journal and exports everything.
    let d = dir("tail-nats");
    let path = d.join("events.jsonl");
    let rt = tokio::runtime::Runtime::new().unwrap();
    let bus = Bus::builder()
        .journal(Journal::builder(&path).build().unwrap())
        .build()
        .unwrap();
    let bridge = rt
        .block_on(NatsBridge::connect(
            &url,
            &bus,
            NatsOptions::new().prefix("nerve.tail."),
        ))
        .unwrap();
    bridge.export("*").unwrap();
    let n = 20;
    for i in 0..n {
        let kind = [
            "extraction.started",
            "specimen.completed",
            "specimen.failed",
        ][i % 3];
        bus.emit_event(
            Event::builder(kind)
                .run_id("r1")
                .source("extractor")
                .correlation_id(format!("c-{i}"))
                .data(json!({"sequence": i, "text": "né à Zürich"}))
                .build()
                .unwrap(),
        )
        .unwrap();
    }
    assert!(rt.block_on(bridge.flush(PATIENCE)));
    let live: Vec<String> = (0..n)
        .map(|_| out.recv_timeout(PATIENCE).expect("a line from the tail"))
        .collect();
    tail.kill().unwrap();
    tail.wait().unwrap();
    rt.block_on(bridge.shutdown(PATIENCE));
    bus.shutdown_blocking();

    let o = nerve(&["tail", "-n", "1000", path.to_str().unwrap()]);
    assert!(o.status.success(), "{}", stderr(&o));
    let from_file: Vec<String> = stdout(&o).lines().map(str::to_owned).collect();
    assert_eq!(live, from_file);
}

#[test]
fn tail_nats_refuses_a_bad_url_or_pattern_clearly() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    // Nothing listens on port 1.
    let o = nerve(&["tail", "--nats", "nats://127.0.0.1:1", "*"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("nerve: error: cannot connect to NATS at `nats://127.0.0.1:1`"),
        "{}",
        stderr(&o)
    );
    // The cause once: async-nats's error holds its source's message too.
    assert_eq!(
        stderr(&o).matches("Connection refused").count(),
        1,
        "{}",
        stderr(&o)
    );
    // An address with no server in it: async-nats 0.46 panicked (exit
    // 101) on one, in every command that connects.
    // Refused before a directory is made.
    let out = dir("bad-nats-address");
    let there = out.join("made");
    let there = there.to_str().unwrap();
    for args in [
        &["tail", "--nats", "", "*"][..],
        &["tail", "--nats", "nats://", "*"],
        &["demo", "--nats", "", "--out", there],
        &["record", "--nats", " , ", "--stream", "S", there],
        // Well formed, but nothing listens on port 1.
        &["demo", "--nats", "nats://127.0.0.1:1", "--out", there],
        &[
            "record",
            "--nats",
            "nats://127.0.0.1:1",
            "--stream",
            "S",
            there,
        ],
    ] {
        let o = nerve(args);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {}", stderr(&o));
        assert!(
            stderr(&o).contains("is not a NATS server address")
                || stderr(&o).contains("cannot connect to NATS at `nats://127.0.0.1:1`"),
            "{args:?}: {}",
            stderr(&o)
        );
        assert!(!out.join("made").exists(), "{args:?}");
    }
    let url = server.url();
    for (pattern, says) in [
        ("a..b", "is not a valid pattern"),
        ("café.*", "has no NATS subject"),
    ] {
        let o = nerve(&["tail", "--nats", &url, pattern]);
        assert_eq!(o.status.code(), Some(2), "{pattern}");
        assert!(stderr(&o).contains(says), "{pattern}: {}", stderr(&o));
    }
    // No history in core NATS: -n has no meaning there.
    let o = nerve(&["tail", "--nats", &url, "*", "-n", "5"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("cannot be used with"), "{}", stderr(&o));
}

/// `event_type` and `data` of every line of a journal.
fn story(path: &std::path::Path) -> Vec<(String, serde_json::Value)> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (
                v["event_type"].as_str().unwrap().to_owned(),
                v["data"].clone(),
            )
        })
        .collect()
}

#[test]
fn demo_nats_runs_the_workers_as_processes_with_the_same_outcome() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let (here, there) = (dir("demo-local"), dir("demo-nats"));
    let o = nerve(&[
        "demo",
        "--out",
        here.to_str().unwrap(),
        "--seed",
        "7",
        "--delay-ms",
        "0",
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let url = server.url();
    // Watched from "another machine" as a user would, without knowing the
    // demo's subject prefix.
    let mut tail = Command::new(env!("CARGO_BIN_EXE_nerve"))
        .args(["tail", "--nats", &url, "*"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let watched = lines(tail.stdout.take().unwrap());
    let said = lines(tail.stderr.take().unwrap());
    let ready = said
        .recv_timeout(PATIENCE)
        .expect("the tail says it follows");
    assert!(ready.starts_with("nerve: following > on"), "{ready}");
    let o = nerve(&[
        "demo",
        "--out",
        there.to_str().unwrap(),
        "--seed",
        "7",
        "--delay-ms",
        "0",
        "--nats",
        &url,
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let summary = stdout(&o);
    let row = |run: &str| {
        summary
            .lines()
            .find(|l| l.starts_with(run))
            .unwrap_or_else(|| panic!("no row for {run}: {summary}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    assert_eq!(&row("run-healthy")[1..3], ["25", "92%"], "{summary}");
    assert_eq!(row("run-healthy")[4], "completed", "{summary}");
    assert_eq!(&row("run-broken")[1..3], ["5", "20%"], "{summary}");
    assert!(
        summary.contains("stopped: early validation failed: 20% success rate after 5 specimens"),
        "{summary}"
    );
    // The same events, in the same order, with the same data, as in one
    // process (the workers' events came in over NATS).
    for run in ["run-healthy", "run-broken"] {
        let local = story(&here.join(run).join("events.jsonl"));
        let remote = story(&there.join(run).join("events.jsonl"));
        assert_eq!(local, remote, "{run}");
        assert!(!local.is_empty());
    }
    let sources: Vec<String> = std::fs::read_to_string(there.join("run-broken/events.jsonl"))
        .unwrap()
        .lines()
        .filter_map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            (v["event_type"] == "specimen.failed").then(|| v["source"].as_str().unwrap().to_owned())
        })
        .collect();
    assert!(
        sources
            .iter()
            .all(|s| s == "nats:worker-run-broken/extractor"),
        "{sources:?}"
    );
    let o = nerve(&["verify", there.join("run-broken").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));

    // The tail showed both runs to their ends (each worker's terminal emit
    // returned once the server had it), and said under which prefixes.
    let mut ends = Vec::new();
    while ends.len() < 2 {
        let line = watched
            .recv_timeout(PATIENCE)
            .expect("a line from the tail");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        let t = v["event_type"].as_str().unwrap().to_owned();
        if t == "extraction.completed" || t == "extraction.failed" {
            ends.push(t);
        }
    }
    ends.sort();
    assert_eq!(ends, ["extraction.completed", "extraction.failed"]);
    tail.kill().unwrap();
    tail.wait().unwrap();
    let notes: Vec<String> = said.iter().collect();
    assert!(
        notes
            .iter()
            .any(|l| l.starts_with("nerve: note: events under the subject prefix nerve.demo.")),
        "{notes:?}"
    );
    assert!(!notes.iter().any(|l| l.contains("skipped")), "{notes:?}");
}

/// The fields of `/proc/{pid}/stat` after the command name (`state ppid
/// ...`): the name is in parentheses and may hold spaces.
#[cfg(target_os = "linux")]
fn stat_fields(pid: &str) -> Option<Vec<String>> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, rest) = stat.rsplit_once(')')?;
    Some(rest.split_whitespace().map(str::to_owned).collect())
}

/// The pids of `parent`'s children whose command line holds `word`.
#[cfg(target_os = "linux")]
fn children_running(parent: u32, word: &str) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        let Ok(pid) = name.parse::<i32>() else {
            continue;
        };
        let (Some(fields), Ok(cmdline)) = (
            stat_fields(&name),
            std::fs::read(entry.path().join("cmdline")),
        ) else {
            continue;
        };
        let ppid = fields.get(1).and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(parent) && String::from_utf8_lossy(&cmdline).contains(word) {
            found.push(pid);
        }
    }
    found
}

/// Whether process `pid` is gone (or a zombie nobody reaped yet).
#[cfg(target_os = "linux")]
fn gone(pid: i32) -> bool {
    stat_fields(&pid.to_string()).is_none_or(|f| f.first().map(String::as_str) == Some("Z"))
}

/// `nerve demo --nats` into a fresh directory `name`, specimens taking
/// `delay_ms` each, once its first run is under way (the run started and
/// a specimen is in hand): the demo, its output directory and the pid of
/// its one worker.
#[cfg(target_os = "linux")]
fn demo_under_way(
    url: &str,
    name: &str,
    delay_ms: &str,
    stderr: Stdio,
) -> (std::process::Child, std::path::PathBuf, i32) {
    let out = dir(name);
    let demo = Command::new(env!("CARGO_BIN_EXE_nerve"))
        .args([
            "demo",
            "--out",
            out.to_str().unwrap(),
            "--delay-ms",
            delay_ms,
        ])
        .args(["--nats", url])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(stderr)
        .spawn()
        .unwrap();
    let log = out.join("run-healthy/events.jsonl");
    let deadline = std::time::Instant::now() + PATIENCE;
    while std::fs::read_to_string(&log).map_or(0, |t| t.lines().count()) < 3 {
        assert!(
            std::time::Instant::now() < deadline,
            "the run did not start"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let workers = children_running(demo.id(), "demo-worker");
    assert_eq!(workers.len(), 1, "one worker at a time: {workers:?}");
    (demo, out, workers[0])
}

/// A worker of `nerve demo --nats` killed (SIGKILL) mid-run: the demo
/// says which and where the events are, exits 2, and the run's journal
/// ends with an `extraction.failed` saying so, instead of a run that never
/// ended; `nerve verify` reads it clean.
#[cfg(target_os = "linux")]
#[test]
fn a_demo_whose_worker_is_killed_records_the_run_as_failed() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    // 25 specimens of a second each: the worker is killed mid-run.
    let (mut demo, out, worker) =
        demo_under_way(&server.url(), "demo-worker-killed", "1000", Stdio::piped());
    let said = lines(demo.stderr.take().unwrap());
    let killed = Command::new("kill")
        .args(["-KILL", &worker.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = demo.wait().unwrap();
    let said: Vec<String> = said.iter().collect();
    assert_eq!(status.code(), Some(2), "{said:?}");
    assert!(
        said.iter().any(|l| l.contains(
            "the worker of run-healthy failed (signal: 9 (SIGKILL)). Its events so far, and its failure, are in"
        )),
        "{said:?}"
    );
    let log = out.join("run-healthy/events.jsonl");
    let text = std::fs::read_to_string(&log).unwrap();
    let last: serde_json::Value = serde_json::from_str(text.lines().last().unwrap()).unwrap();
    assert_eq!(last["event_type"], "extraction.failed", "{text}");
    assert_eq!(last["run_id"], "run-healthy");
    assert_eq!(last["data"]["reason"], "worker_failed");
    assert_eq!(
        last["data"]["message"],
        "the worker process failed (signal: 9 (SIGKILL))"
    );
    let o = nerve(&["verify", out.join("run-healthy").to_str().unwrap()]);
    assert_eq!(o.status.code(), Some(0), "{}", stdout(&o));
    assert!(!out.join("run-broken").exists(), "the demo stopped there");
}

/// The demo killed (SIGKILL) while its worker runs: the worker ends with
/// it, instead of extracting and publishing to nobody for the rest of its
/// run (25 specimens of two seconds each here).
#[cfg(target_os = "linux")]
#[test]
fn a_demo_killed_takes_its_worker_with_it() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let (mut demo, _out, worker) =
        demo_under_way(&server.url(), "demo-killed", "2000", Stdio::null());
    demo.kill().unwrap();
    demo.wait().unwrap();
    // A generous bound: without the parent-death signal the worker lives
    // on for its run's 50 seconds.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while !gone(worker) {
        assert!(
            std::time::Instant::now() < deadline,
            "the worker outlived the demo"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// `GET path` on the dashboard at `addr` (`127.0.0.1:PORT`): the body.
fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(addr).unwrap();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let (head, body) = response.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    body.to_owned()
}

#[test]
fn serve_nats_shows_the_events_bridges_export() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    serve_shows_orders(
        &server.url(),
        &["--prefix", "nerve.serve.", "--nats-pattern", "order.*"],
        "nerve.serve.",
    );
}

#[test]
fn serve_nats_without_a_prefix_shows_events_published_under_any() {
    // `nerve demo --nats` publishes under a fresh `nerve.demo.{nonce}.`:
    // a page that names no prefix shows those events too.
    let Some(server) = NatsServer::start() else {
        return;
    };
    serve_shows_orders(&server.url(), &[], "nerve.demo.7f3a.");
}

/// Starts `nerve serve --nats URL` with `args`, exports orders and noise
/// from a bus whose bridge publishes under `prefix`, and checks that the
/// page shows the orders.
fn serve_shows_orders(url: &str, args: &[&str], prefix: &str) {
    let url = url.to_owned();
    let mut serve = Command::new(env!("CARGO_BIN_EXE_nerve"))
        .args(["serve", "--nats", &url])
        .args(args)
        .args(["--bind", "127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = lines(serve.stdout.take().unwrap());
    let mut addr = None;
    while addr.is_none() {
        let line = out.recv_timeout(PATIENCE).expect("nerve serve says where");
        if let Some(rest) = line.strip_prefix("dashboard: http://") {
            addr = Some(rest.trim_end_matches('/').to_owned());
        }
    }
    let addr = addr.unwrap();
    let following = out.recv_timeout(PATIENCE).unwrap();
    assert!(following.contains(&format!("nats {url}")), "{following}");

    // A program's bus exporting through its bridge, as the docs show.
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let bus = Bus::new();
    let bridge = runtime
        .block_on(NatsBridge::connect(
            &url,
            &bus,
            NatsOptions::new().prefix(prefix).origin("shop"),
        ))
        .unwrap();
    bridge.export("*").unwrap();
    // The import's subscription reaches the server on its own connection:
    // emit until the page has one (each emit a new order), then check it.
    let deadline = std::time::Instant::now() + PATIENCE;
    let body = loop {
        bus.emit("order.placed", json!({"order": 7})).unwrap();
        bus.emit("audit.noise", json!({})).unwrap();
        let body = http_get(&addr, "/api/events?pattern=*");
        if body.contains("order.placed") {
            break body;
        }
        assert!(std::time::Instant::now() < deadline, "no event: {body}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let page: serde_json::Value = serde_json::from_str(&body).unwrap();
    let events = page["events"].as_array().unwrap();
    assert!(!events.is_empty());
    let text = body.as_str();
    assert!(text.contains("\"order\":7"), "{text}");
    if args.contains(&"--nats-pattern") {
        // Only the imported pattern: `audit.*` was exported but not imported.
        assert!(!text.contains("audit.noise"), "{text}");
    }
    // Nothing was refused on the way in.
    assert!(!text.contains("bridge_error"), "{text}");
    runtime.block_on(bridge.shutdown(PATIENCE));
    serve.kill().unwrap();
    serve.wait().unwrap();
}

#[test]
fn serve_without_a_source_says_what_to_name() {
    let output = nerve(&["serve"]);
    assert_eq!(output.status.code(), Some(2), "{}", stderr(&output));
    assert!(
        stderr(&output).contains("--nats URL"),
        "{}",
        stderr(&output)
    );
}
