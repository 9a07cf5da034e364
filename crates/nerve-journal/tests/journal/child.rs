//! Entry points run in a child process (this binary, re-executed).

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use nerve_core::json;
use nerve_journal::{Fsync, Journal, JournalError};
use nerve_router::Bus;

pub(crate) const VAR: &str = "NERVE_JOURNAL_CHILD";

/// Starts this test binary running only the test `name`, with `arg` in the
/// environment.
pub(crate) fn spawn(name: &str, arg: &str) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .env(VAR, arg)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The child's stdout lines starting with `prefix`, without it, until EOF or
/// `stop` says enough.
pub(crate) fn lines(
    child: &mut Child,
    prefix: &str,
    mut stop: impl FnMut(&str) -> bool,
) -> Vec<String> {
    let out = BufReader::new(child.stdout.as_mut().unwrap());
    let mut seen = Vec::new();
    for line in out.lines() {
        let Ok(line) = line else { break };
        // libtest prints `test name ... ` before the test's own output.
        if let Some(rest) = line.find(prefix).map(|i| &line[i + prefix.len()..]) {
            seen.push(rest.to_owned());
            if stop(rest) {
                break;
            }
        }
    }
    seen
}

#[test]
fn child_opens_a_locked_journal() {
    let Ok(path) = std::env::var(VAR) else { return };
    match Journal::builder(&path).build() {
        Err(JournalError::Locked { .. }) => println!("CHILD locked"),
        Err(e) => println!("CHILD error {e}"),
        Ok(_) => println!("CHILD opened"),
    }
}

#[test]
fn child_emits_until_killed() {
    let Ok(arg) = std::env::var(VAR) else { return };
    let (path, run) = arg.split_once('|').unwrap();
    let journal = Journal::builder(path)
        .fsync(Fsync::Always)
        .max_bytes(16 * 1024)
        .max_files(1_000)
        .build()
        .unwrap();
    let bus = Bus::builder()
        .journal(journal)
        .history_capacity(4)
        .build()
        .unwrap();
    println!("ACK ready");
    for i in 0u64.. {
        bus.emit("crash.tick", json!({"run": run, "i": i})).unwrap();
        // The bus delivers even when the journal fails; that must not happen here.
        let errors = bus.stats().events.journal_errors;
        if errors > 0 {
            println!("ACK error {errors}");
        }
        // Printed only after emit returned: the event is durable.
        println!("ACK {i}");
    }
}

#[test]
fn a_second_process_gets_locked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let journal = Journal::builder(&path).build().unwrap();
    let mut child = spawn(
        "child::child_opens_a_locked_journal",
        path.to_str().unwrap(),
    );
    let said = lines(&mut child, "CHILD ", |_| false);
    child.wait().unwrap();
    assert_eq!(said, ["locked"]);
    drop(journal);
    let mut child = spawn(
        "child::child_opens_a_locked_journal",
        path.to_str().unwrap(),
    );
    let said = lines(&mut child, "CHILD ", |_| false);
    child.wait().unwrap();
    assert_eq!(said, ["opened"], "the lock is released on close");
}

#[test]
fn child_rotates_while_renumbering_is_stuck() {
    use nerve_journal::fs::{FaultyFs, Op};
    let Ok(path) = std::env::var(VAR) else { return };
    let fs = FaultyFs::new();
    // Every rotated file stays pending: the crash finds them so.
    fs.fail_always(Op::Renumber);
    let journal = Journal::builder(&path)
        .fsync(Fsync::Always)
        .max_bytes(1024)
        .max_files(3)
        .file_system(fs)
        .build()
        .unwrap();
    println!("ACK ready");
    for i in 0u64.. {
        let e = nerve_core::Event::builder("crash.tick")
            .seq(i)
            .data(json!({"i": i}))
            .build()
            .unwrap();
        nerve_core::sink::EventSink::record(&journal, &e).unwrap();
        // Printed only after record returned: the event is durable.
        println!("ACK {i}");
    }
}

/// The policy named `never`, `interval` or `always`.
pub(crate) fn policy(name: &str) -> Fsync {
    match name {
        "never" => Fsync::Never,
        "interval" => Fsync::Interval(std::time::Duration::from_millis(200)),
        "always" => Fsync::Always,
        other => panic!("no policy {other}"),
    }
}

/// Records `n` events, then a terminal one with `record_and_wait`; then
/// exits at once (`exit`: status 1, no destructor runs) or says so and waits
/// to be killed (`kill`). Arg: `path|policy|n|mode`.
#[test]
fn child_records_a_terminal_event_and_ends() {
    use nerve_core::sink::EventSink;
    let Ok(arg) = std::env::var(VAR) else { return };
    let parts: Vec<&str> = arg.split('|').collect();
    let [path, fsync, n, mode] = parts[..] else {
        panic!("{arg}")
    };
    let n: u64 = n.parse().unwrap();
    let journal = Journal::builder(path)
        .fsync(policy(fsync))
        .max_bytes(8 * 1024)
        .max_files(1_000)
        .build()
        .unwrap();
    for seq in 1..=n {
        let e = nerve_core::Event::builder("specimen.completed")
            .seq(seq)
            .data(json!({"specimen": seq, "status": "ok"}))
            .build()
            .unwrap();
        journal.record(&e).unwrap();
    }
    let last = nerve_core::Event::builder("extraction.failed")
        .seq(n + 1)
        .data(json!({"reason": "early validation failed"}))
        .build()
        .unwrap();
    journal.record_and_wait(&last).unwrap();
    if mode == "exit" {
        std::process::exit(1);
    }
    println!("CHILD waited");
    // Killed by the parent now; the bound only keeps an orphan from staying.
    std::thread::sleep(std::time::Duration::from_secs(60));
    std::process::exit(3);
}

/// Writes with tiny files so that it rotates every few events, continuing
/// the journal's sequence (`last_seq`); every fifth event waits
/// (`record_and_wait`) and is then reported as `ACK <seq>`. Runs until
/// killed. Arg: the path.
#[test]
fn child_rotates_until_killed() {
    use nerve_core::sink::EventSink;
    let Ok(path) = std::env::var(VAR) else { return };
    let journal = Journal::builder(&path)
        .fsync(Fsync::Never)
        .max_bytes(600)
        .max_files(ROTATING_MAX_FILES)
        .build()
        .unwrap();
    let first = journal.last_seq().unwrap_or(0) + 1;
    println!("ACK ready {first}");
    for seq in first.. {
        let e = nerve_core::Event::builder("specimen.completed")
            .seq(seq)
            .data(json!({"specimen": seq, "status": "ok"}))
            .build()
            .unwrap();
        if seq % 5 == 0 {
            journal.record_and_wait(&e).unwrap();
            println!("ACK {seq}");
        } else {
            journal.record(&e).unwrap();
        }
    }
}

/// The backups [`child_rotates_until_killed`] keeps.
pub(crate) const ROTATING_MAX_FILES: usize = 6;
