//! A process that aborts (`std::process::abort`, what `panic = "abort"`
//! does: no destructor, no flush, SIGABRT) right after its terminal event's
//! `emit` returned leaves the whole run in the journal, under every fsync
//! policy.

use std::os::unix::process::ExitStatusExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use nerve::journal::JournalReader;
use nerve::{Bus, Event, Fsync, Journal, json};

const VAR: &str = "NERVE_PROMISE";
const EVENTS: u64 = 40;

/// The child: `EVENTS` events of a run and its terminal event into the
/// journal named in `NERVE_PROMISE` (`path|policy`), then an abort.
#[test]
fn child_aborts_right_after_the_terminal_event() {
    let Ok(arg) = std::env::var(VAR) else { return };
    let (path, policy) = arg.split_once('|').unwrap();
    let fsync = match policy {
        "never" => Fsync::Never,
        // Long enough that no interval sync happens during the run.
        "interval" => Fsync::Interval(Duration::from_secs(3600)),
        "always" => Fsync::Always,
        other => panic!("unknown policy {other}"),
    };
    let journal = Journal::builder(path).fsync(fsync).build().unwrap();
    let bus = Bus::builder().journal(journal).build().unwrap();
    bus.emit("extraction.started", json!({"run_id": "r1"}))
        .unwrap();
    for i in 1..EVENTS {
        bus.emit("specimen.processing", json!({"sequence": i}))
            .unwrap();
    }
    bus.emit("extraction.failed", json!({"run_id": "r1"}))
        .unwrap();
    std::process::abort();
}

#[test]
fn an_abort_right_after_a_terminal_event_loses_nothing() {
    for policy in ["never", "interval", "always"] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "exits::child_aborts_right_after_the_terminal_event",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(VAR, format!("{}|{policy}", path.display()))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(status) = child.try_wait().unwrap() {
                break status;
            }
            assert!(Instant::now() < deadline, "the child did not exit");
            std::thread::sleep(Duration::from_millis(20));
        };
        assert_eq!(status.signal(), Some(6), "{policy}: SIGABRT, {status:?}");
        let events: Vec<Event> = JournalReader::open(&path)
            .unwrap()
            .map(|e| e.expect("no damaged line"))
            .collect();
        let seqs: Vec<u64> = events.iter().map(Event::seq).collect();
        assert_eq!(seqs, (1..=EVENTS + 1).collect::<Vec<_>>(), "{policy}");
        assert_eq!(events[0].event_type(), "extraction.started");
        assert_eq!(events[EVENTS as usize].event_type(), "extraction.failed");
    }
}
