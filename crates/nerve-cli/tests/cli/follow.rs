//! `nerve tail -f` at the edges: a journal that does not exist yet, and a
//! tail that falls behind retention. The real binary runs as a child; the
//! test waits on its output, never on time.

use std::io::{BufRead, BufReader, Lines};
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use nerve::Bus;
use nerve::journal::{Journal, JournalReader};
use nerve::json;

use super::dir;

/// A running `nerve tail -f`, killed when dropped.
struct Tail {
    child: Child,
    out: Lines<BufReader<ChildStdout>>,
    err: mpsc::Receiver<String>,
}

impl Tail {
    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_nerve"))
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = BufReader::new(child.stdout.take().unwrap()).lines();
        let stderr = child.stderr.take().unwrap();
        let (tx, err) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Self { child, out, err }
    }

    /// The next event printed.
    fn event(&mut self) -> serde_json::Value {
        let line = self.out.next().expect("tail ended early").unwrap();
        serde_json::from_str(&line).unwrap()
    }

    /// The next line on stderr (waits up to a minute).
    fn warning(&self) -> String {
        self.err
            .recv_timeout(Duration::from_secs(60))
            .expect("a line on stderr")
    }

    /// Sends `sig` (`-STOP`, `-CONT`) to the child with kill(1).
    #[cfg(unix)]
    fn signal(&self, sig: &str) {
        let ok = Command::new("kill")
            .args([sig, &self.child.id().to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill {sig}");
    }
}

impl Drop for Tail {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn tail_f_waits_for_a_journal_that_does_not_exist_yet() {
    let d = dir("follow-missing");
    let path = d.join("events.jsonl");
    let mut tail = Tail::start(&["tail", "-f", path.to_str().unwrap()]);
    let said = tail.warning();
    assert!(said.contains("does not exist yet; waiting"), "{said}");
    let journal = Journal::builder(&path).build().unwrap();
    let bus = Bus::builder().journal(journal).build().unwrap();
    for n in 0..5 {
        bus.emit("late.tick", json!({ "n": n })).unwrap();
    }
    bus.flush_blocking();
    let got: Vec<u64> = (0..5)
        .map(|_| tail.event()["data"]["n"].as_u64().unwrap())
        .collect();
    assert_eq!(got, [0, 1, 2, 3, 4]);
    bus.shutdown_blocking();
}

#[cfg(unix)]
#[test]
fn tail_f_behind_retention_says_what_it_missed_and_goes_on() {
    let d = dir("follow-behind");
    let path = d.join("events.jsonl");
    let journal = Journal::builder(&path)
        .max_bytes(2_000)
        .max_files(1)
        .build()
        .unwrap();
    let bus = Bus::builder().journal(journal).build().unwrap();
    bus.emit("live.tick", json!({ "n": 0 })).unwrap();
    bus.flush_blocking();
    let mut emitted = 1u64;
    // The tail starts following before it prints the last event, so once
    // that is printed, it follows.
    let mut tail = Tail::start(&["tail", "-f", "-n", "1", path.to_str().unwrap()]);
    let first = tail.event()["seq"].as_u64().unwrap();
    assert_eq!(first, 1);
    // Stopped, it falls far behind: many rotations, one backup kept.
    tail.signal("-STOP");
    for _ in 0..400 {
        bus.emit("live.tick", json!({ "n": emitted })).unwrap();
        emitted += 1;
    }
    bus.flush_blocking();
    // The renumbering thread deletes beyond `max_files` in the background:
    // wait until the file the tail reads (the one holding seq 1) is gone.
    let deadline = Instant::now() + Duration::from_secs(60);
    while JournalReader::open(&path)
        .unwrap()
        .find_map(Result::ok)
        .is_some_and(|e| e.seq() == 1)
    {
        assert!(Instant::now() < deadline, "retention never removed seq 1");
        std::thread::yield_now();
    }
    tail.signal("-CONT");
    bus.emit("live.last", json!({ "n": emitted })).unwrap();
    emitted += 1;
    bus.flush_blocking();
    let mut printed = vec![first];
    loop {
        let e = tail.event();
        printed.push(e["seq"].as_u64().unwrap());
        if e["event_type"] == "live.last" {
            break;
        }
    }
    let warning = tail.warning();
    assert!(warning.contains("fell behind retention"), "{warning}");
    // "missed N events (seq a..=b)"
    let range = warning
        .split("(seq ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .unwrap_or_else(|| panic!("{warning}"));
    let (a, b) = range.split_once("..=").unwrap_or((range, range));
    let (a, b): (u64, u64) = (a.parse().unwrap(), b.parse().unwrap());
    assert!(
        warning.contains(&format!("missed {} events", b - a + 1)),
        "{warning}"
    );
    // What it printed and what it says it missed are every event after it
    // started, each once.
    let mut all: Vec<u64> = printed.clone();
    all.extend(a..=b);
    all.sort_unstable();
    assert_eq!(
        all,
        (1..=emitted).collect::<Vec<_>>(),
        "{printed:?} {warning}"
    );
    bus.shutdown_blocking();
}

/// `> events.jsonl` while `nerve tail -f` follows it, then new events: the
/// tail says the file was truncated and prints the new events from the
/// file's start. Before, it went on reading at its old offset and printed
/// nothing until the file grew past it, then a damaged line.
#[test]
fn tail_f_of_a_truncated_journal_says_so_and_prints_what_follows() {
    let d = dir("follow-truncated");
    let path = d.join("events.jsonl");
    let bus = Bus::builder()
        .journal(Journal::builder(&path).build().unwrap())
        .build()
        .unwrap();
    for n in 0..20 {
        bus.emit("before.tick", json!({ "n": n })).unwrap();
    }
    bus.shutdown_blocking();
    let mut tail = Tail::start(&["tail", "-f", "-n", "1", path.to_str().unwrap()]);
    assert_eq!(tail.event()["data"]["n"], 19);
    std::fs::File::create(&path).unwrap();
    let bus = Bus::builder()
        .journal(Journal::builder(&path).build().unwrap())
        .build()
        .unwrap();
    for n in 0..3 {
        bus.emit("after.tick", json!({ "n": n })).unwrap();
    }
    bus.flush_blocking();
    for n in 0..3 {
        let e = tail.event();
        assert_eq!(
            (&e["event_type"], &e["data"]["n"]),
            (&json!("after.tick"), &json!(n))
        );
    }
    let warning = tail.warning();
    assert!(
        warning.contains("was truncated or rewritten while being followed"),
        "{warning}"
    );
    bus.shutdown_blocking();
}
