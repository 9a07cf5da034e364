//! The edges of a run's life, with real processes: a program that emits its
//! last event and exits at once, is killed, is interrupted by a signal, or
//! panics out of `main`, leaves every event it emitted in the journal.
//!
//! Each scenario's child is this test binary re-executed with `NERVE_EDGE`
//! set, running one `child_*` test (which does nothing when run normally).

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nerve::consumers::alert::{AlertConsumer, AlertRule, WebhookSink};
use nerve::journal::JournalReader;
use nerve::{Bus, Event, Fsync, Journal, json};

const VAR: &str = "NERVE_EDGE";
const EVENTS: u64 = 40;

/// Starts this binary running only the test `name`, with `arg` in `NERVE_EDGE`.
fn spawn(name: &str, arg: &str, env: &[(&str, &str)]) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(VAR, arg)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap()
}

/// Reads the child's stdout until a line containing `marker`.
fn wait_for(child: &mut Child, marker: &str) {
    let out = BufReader::new(child.stdout.as_mut().unwrap());
    for line in out.lines() {
        let line = line.unwrap();
        if line.contains(marker) {
            return;
        }
    }
    panic!("the child ended without printing {marker}");
}

/// Waits for the child, failing after a generous bound instead of hanging.
fn finish(child: &mut Child) -> ExitStatus {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status;
        }
        assert!(Instant::now() < deadline, "the child did not exit");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn fsync_named(name: &str) -> Fsync {
    match name {
        "never" => Fsync::Never,
        "interval" => Fsync::Interval(Duration::from_millis(200)),
        "always" => Fsync::Always,
        other => panic!("unknown fsync policy {other}"),
    }
}

/// Every event in the journal at `path`, oldest first.
fn journal(path: &Path) -> Vec<Event> {
    JournalReader::open(path)
        .unwrap()
        .map(|e| e.expect("no damaged line"))
        .collect()
}

/// The child's work: `EVENTS` events of a run, then its terminal event.
fn emit_run(bus: &Bus) {
    bus.emit(
        "extraction.started",
        json!({"run_id": "extraction_001", "total_specimens": EVENTS}),
    )
    .unwrap();
    for i in 1..EVENTS {
        bus.emit(
            "specimen.processing",
            json!({"specimen_id": format!("s{i}"), "sequence": i}),
        )
        .unwrap();
    }
    bus.emit(
        "extraction.failed",
        json!({"run_id": "extraction_001", "reason": "early_validation_failed"}),
    )
    .unwrap();
}

fn assert_whole_run(events: &[Event]) {
    let types: Vec<&str> = events.iter().map(Event::event_type).collect();
    assert_eq!(types.len() as u64, EVENTS + 1, "{types:?}");
    assert_eq!(types[0], "extraction.started");
    assert_eq!(types[types.len() - 1], "extraction.failed");
    let seqs: Vec<u64> = events.iter().map(Event::seq).collect();
    assert_eq!(
        seqs,
        (1..=EVENTS + 1).collect::<Vec<_>>(),
        "in order, no gap"
    );
}

// ----- process::exit, or SIGKILL, right after the terminal event -----

/// The child: a run into a journal with the fsync policy named in
/// `NERVE_EDGE` (`path|policy|ending`), then the ending: `exit` (the guide's
/// `sys.exit(1)`: no destructor runs) or `kill` (say so, and wait for the
/// parent's SIGKILL).
#[test]
fn child_ends_right_after_the_terminal_event() {
    let Ok(arg) = std::env::var(VAR) else { return };
    let mut parts = arg.split('|');
    let (path, fsync, ending) = (
        parts.next().unwrap(),
        parts.next().unwrap(),
        parts.next().unwrap(),
    );
    let journal = Journal::builder(path)
        .fsync(fsync_named(fsync))
        .build()
        .unwrap();
    let bus = Bus::builder().journal(journal).build().unwrap();
    emit_run(&bus);
    if ending == "exit" {
        std::process::exit(1);
    }
    println!("EMITTED");
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::park();
    }
}

/// Runs the child under every fsync policy, ending it as `ending` says, and
/// checks the whole run is in the journal.
fn ends_right_after_the_terminal_event(ending: &str) {
    for fsync in ["never", "interval", "always"] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let arg = format!("{}|{fsync}|{ending}", path.display());
        let mut child = spawn("child_ends_right_after_the_terminal_event", &arg, &[]);
        if ending == "kill" {
            wait_for(&mut child, "EMITTED");
            child.kill().unwrap();
        }
        let status = finish(&mut child);
        match ending {
            "exit" => assert_eq!(status.code(), Some(1), "{fsync}"),
            _ => assert_eq!(status.signal(), Some(9), "{fsync}"),
        }
        assert_whole_run(&journal(&path));
    }
}

#[test]
fn process_exit_after_a_terminal_event_loses_nothing() {
    ends_right_after_the_terminal_event("exit");
}

#[test]
fn sigkill_after_a_terminal_event_returned_loses_nothing() {
    ends_right_after_the_terminal_event("kill");
}

// ----- a panic out of main -----

#[test]
fn child_panics_out_of_main() {
    let Ok(path) = std::env::var(VAR) else { return };
    // `Fsync::Never` and a long interval: only the drop can have written
    // the non-terminal tail.
    let journal = Journal::builder(&path)
        .fsync(Fsync::Interval(Duration::from_secs(3600)))
        .build()
        .unwrap();
    let bus = Bus::builder().journal(journal).build().unwrap();
    for i in 0..EVENTS {
        bus.emit("specimen.processing", json!({"sequence": i}))
            .unwrap();
    }
    panic!("extraction crashed");
}

#[test]
fn a_panic_that_unwinds_out_of_main_leaves_the_journal_flushed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let mut child = spawn("child_panics_out_of_main", &path.display().to_string(), &[]);
    let status = finish(&mut child);
    assert!(!status.success());
    let events = journal(&path);
    assert_eq!(events.len() as u64, EVENTS);
    assert_eq!(events.last().unwrap().data()["sequence"], EVENTS - 1);
}

// ----- SIGTERM and SIGINT with signal handling on -----

/// A local webhook receiver: answers the first request 500 (so the alert
/// is still pending, waiting to be retried, when the signal arrives), the
/// next ones 200. Sends each request's body on the returned channel, the
/// first one before answering it.
fn receiver() -> (String, mpsc::Receiver<(usize, String)>, mpsc::Sender<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let (tx, rx) = mpsc::channel();
    let (go_tx, go_rx) = mpsc::channel::<()>();
    std::thread::spawn(move || {
        for (n, stream) in listener.incoming().enumerate() {
            let Ok(mut stream) = stream else { return };
            let body = read_request(&mut stream);
            if tx.send((n, body)).is_err() {
                return;
            }
            let status = if n == 0 {
                // The parent sends the signal, then lets the answer go.
                let _ = go_rx.recv_timeout(Duration::from_secs(60));
                "500 Internal Server Error"
            } else {
                "200 OK"
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status}\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            );
        }
    });
    (url, rx, go_tx)
}

/// Reads one HTTP request; returns its body.
fn read_request(stream: &mut std::net::TcpStream) -> String {
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
            let len = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = stream.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return String::from_utf8_lossy(&buf[end + 4..]).into_owned();
        }
        let n = stream.read(&mut chunk).unwrap_or(0);
        if n == 0 {
            return String::new();
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

#[test]
fn child_runs_until_a_signal() {
    let Ok(path) = std::env::var(VAR) else { return };
    let url = std::env::var("NERVE_EDGE_HOOK").unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let journal = Journal::builder(&path).build().unwrap();
    let bus = Bus::builder()
        .journal(journal)
        .shutdown_timeout(Duration::from_secs(60))
        .build()
        .unwrap();
    let alerts = AlertConsumer::builder()
        .rule(AlertRule::new("low-success", "validation.warning"))
        .sink(WebhookSink::builder().url(url).build().unwrap())
        .retry(5, Duration::from_millis(100))
        .runtime(runtime.handle().clone())
        .build()
        .unwrap();
    alerts.attach(&bus).unwrap();
    if std::env::var("NERVE_EDGE_STUCK").is_ok() {
        // A handler that never finishes: shutdown waits for it, so only a
        // second signal can end the process early.
        bus.subscribe("system.interrupted", |_e: &Event| {
            println!("INTERRUPTED");
            std::io::stdout().flush().unwrap();
        })
        .unwrap();
        bus.subscribe_with(
            "system.interrupted",
            |_e: &Event| -> () {
                loop {
                    std::thread::park();
                }
            },
            nerve::Subscribe::new().queued(16),
        )
        .unwrap();
    }
    let _signals = nerve::signals::install(&bus).unwrap();
    bus.emit("extraction.started", json!({"run_id": "extraction_001"}))
        .unwrap();
    bus.emit("validation.warning", json!({"success_rate": 0.4}))
        .unwrap();
    println!("READY");
    std::io::stdout().flush().unwrap();
    loop {
        std::thread::park();
    }
}

fn interrupted_run(signal: &str, number: i32) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let (url, requests, go) = receiver();
    let mut child = spawn(
        "child_runs_until_a_signal",
        &path.display().to_string(),
        &[("NERVE_EDGE_HOOK", &url)],
    );
    wait_for(&mut child, "READY");
    // The alert's first attempt is in the receiver's hands: it is pending.
    let (n, first) = requests.recv_timeout(Duration::from_secs(60)).unwrap();
    assert_eq!(n, 0);
    assert!(first.contains("low-success"), "{first}");
    let status = Command::new("kill")
        .args([format!("-{signal}"), child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    go.send(()).unwrap();
    let status = finish(&mut child);
    assert_eq!(status.code(), Some(128 + number), "{signal}: {status:?}");
    // The retry reached the receiver before the process was gone.
    let (n, retried) = requests.recv_timeout(Duration::from_secs(5)).unwrap();
    assert_eq!(n, 1);
    assert!(retried.contains("low-success"), "{retried}");
    let events = journal(&path);
    let last = events.last().unwrap();
    assert_eq!(last.event_type(), "system.interrupted");
    assert_eq!(last.data()["signal"], signal);
    assert_eq!(last.data()["exit_status"], 128 + number);
}

#[test]
fn sigterm_records_the_interruption_flushes_alerts_and_exits_143() {
    interrupted_run("SIGTERM", 15);
}

#[test]
fn sigint_records_the_interruption_flushes_alerts_and_exits_130() {
    interrupted_run("SIGINT", 2);
}

#[test]
fn a_second_ctrl_c_exits_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let (url, _requests, _go) = receiver();
    let mut child = spawn(
        "child_runs_until_a_signal",
        &path.display().to_string(),
        &[("NERVE_EDGE_HOOK", &url), ("NERVE_EDGE_STUCK", "1")],
    );
    wait_for(&mut child, "READY");
    let started = Instant::now();
    let pid = child.id().to_string();
    let kill = |sig: &str| Command::new("kill").args([sig, &pid]).status().unwrap();
    assert!(kill("-INT").success());
    wait_for(&mut child, "INTERRUPTED");
    assert!(kill("-INT").success());
    let status = finish(&mut child);
    assert_eq!(status.code(), Some(130));
    // The first signal's shutdown would have waited 60 s for the stuck
    // handler; the second ended it well before.
    assert!(started.elapsed() < Duration::from_secs(50));
}

// ----- a drop that cannot wait says so -----

#[test]
fn child_drops_its_bus_on_a_current_thread_runtime() {
    if std::env::var(VAR).is_err() {
        return;
    }
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let bus = Bus::new();
        bus.subscribe_async("job.*", |_e: Event| async {}).unwrap();
        for i in 0..5 {
            bus.emit("job.step", json!({ "i": i })).unwrap();
        }
        // The handlers need this thread, which the drop would block.
        drop(bus);
    });
}

#[test]
fn a_drop_that_abandons_deliveries_says_so_on_stderr() {
    let out = Command::new(std::env::current_exe().unwrap())
        .args([
            "child_drops_its_bus_on_a_current_thread_runtime",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(VAR, "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("dropping the last bus handle abandoned 5 queued deliveries"),
        "{stderr}"
    );
}

// ----- a program run under valgrind -----

/// The child: a run into a journal (the spare file, the write-back advice
/// and the interval sync on the way), one sync and one async handler, then
/// an orderly return. Every part of an emit reads the clock.
#[test]
fn child_runs_a_journaled_run() {
    let Ok(path) = std::env::var(VAR) else { return };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let journal = Journal::builder(&path)
            .fsync(Fsync::Interval(Duration::from_millis(50)))
            .build()
            .unwrap();
        let bus = Bus::builder().journal(journal).build().unwrap();
        let seen = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
        let counter = std::sync::Arc::clone(&seen);
        bus.subscribe("specimen.*", move |_e: &Event| {
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        })
        .unwrap();
        bus.subscribe_async("extraction.*", |_e: Event| async {})
            .unwrap();
        emit_run(&bus);
        bus.shutdown().await;
        println!(
            "HANDLED {}",
            seen.load(std::sync::atomic::Ordering::Relaxed)
        );
    });
}

/// Programs that use nerve are run under valgrind (memcheck for a leak or a
/// bad read, callgrind to count instructions): one that crashes there cannot
/// be checked at all. rustix's own vDSO lookup did, on the event clock's
/// first read (bytecodealliance/rustix#1559).
#[test]
fn a_program_runs_under_valgrind() {
    if Command::new("valgrind").arg("--version").output().is_err() {
        let hint = "valgrind not found on PATH: install Debian's package `valgrind`";
        assert!(std::env::var_os("CI").is_none(), "{hint} (CI is set)");
        eprintln!("SKIPPED a_program_runs_under_valgrind: {hint}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let out = Command::new("valgrind")
        .args(["--tool=memcheck", "--error-exitcode=99", "-q"])
        .arg(std::env::current_exe().unwrap())
        .args([
            "child_runs_a_journaled_run",
            "--exact",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(VAR, &path)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "{:?}\n--- stdout\n{stdout}\n--- stderr\n{stderr}",
        out.status
    );
    assert!(
        stdout.contains(&format!("HANDLED {}", EVENTS - 1)),
        "{stdout}"
    );
    assert_whole_run(&journal(&path));
}
