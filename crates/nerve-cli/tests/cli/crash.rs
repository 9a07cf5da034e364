//! `nerve verify` on journals left by real crashes: a child process
//! writing a fast-rotating journal is SIGKILLed, again and again, until at
//! least 20 kills landed mid-rotation (rotated files still waiting for their
//! number). Each time, `verify DIR` accepts the directory as it was left,
//! and again after the journal was reopened (which finishes the rotation),
//! and every event the child was told is durable is there.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use nerve::Bus;
use nerve::journal::{Journal, JournalReader};
use nerve::json;

use super::{dir, nerve, stdout};

const VAR: &str = "NERVE_CLI_CRASH_CHILD";

#[test]
fn child_writes_until_killed() {
    let Ok(path) = std::env::var(VAR) else { return };
    let journal = Journal::builder(&path)
        .max_bytes(600)
        .max_files(50)
        .build()
        .unwrap();
    let bus = Bus::builder().journal(journal).build().unwrap();
    // The number of the last terminal event, seen by an inline handler.
    let last = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let seen = last.clone();
    bus.subscribe("tick.completed", move |e: &nerve::Event| {
        seen.store(e.seq(), std::sync::atomic::Ordering::SeqCst);
    })
    .unwrap();
    for i in 0u64.. {
        // Every fifth event is terminal, so durable: `emit` returns once it
        // is written.
        let event_type = if i % 5 == 4 {
            "tick.completed"
        } else {
            "tick.step"
        };
        bus.emit(event_type, json!({ "i": i })).unwrap();
        if i % 5 == 4 {
            let seq = last.load(std::sync::atomic::Ordering::SeqCst);
            println!("ACK {seq}");
        }
    }
}

/// The numbers in the journal at `path`, read as `nerve` reads them.
fn seqs(path: &std::path::Path) -> BTreeSet<u64> {
    JournalReader::open(path)
        .unwrap()
        .map(|e| e.unwrap().seq())
        .collect()
}

#[test]
fn verify_accepts_journals_killed_mid_rotation() {
    let d = dir("crash");
    let path = d.join("events.jsonl");
    let (mut kills, mut mid_rotation) = (0, 0);
    let mut acked: BTreeSet<u64> = BTreeSet::new();
    while mid_rotation < 20 {
        assert!(
            kills < 400,
            "only {mid_rotation} of {kills} kills landed mid-rotation"
        );
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "crash::child_writes_until_killed",
                "--exact",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(VAR, &path)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        // Let it write a varying number of durable events, then kill it.
        let want = 3 + kills % 11;
        let out = BufReader::new(child.stdout.take().unwrap());
        let mut got = 0;
        for line in out.lines() {
            let Ok(line) = line else { break };
            if let Some(seq) = line.find("ACK ").map(|i| &line[i + 4..]) {
                acked.insert(seq.trim().parse().unwrap());
                got += 1;
                if got == want {
                    break;
                }
            }
        }
        child.kill().unwrap();
        child.wait().unwrap();
        kills += 1;
        let pending = std::fs::read_dir(&d)
            .unwrap()
            .filter_map(Result::ok)
            .any(|e| {
                let name = e.file_name().to_string_lossy().into_owned();
                name.starts_with("events.p") && name.ends_with(".jsonl")
            });
        if pending || !path.exists() {
            mid_rotation += 1;
        }

        // As the crash left it, then after reopening.
        let o = nerve(&["verify", d.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(0), "as left: {}", stdout(&o));
        drop(Journal::builder(&path).max_files(50).build().unwrap());
        let o = nerve(&["verify", d.to_str().unwrap()]);
        assert_eq!(o.status.code(), Some(0), "reopened: {}", stdout(&o));
        let on_disk = seqs(&path);
        let oldest = on_disk.first().copied().unwrap_or(0);
        let lost: Vec<u64> = acked
            .range(oldest..)
            .filter(|s| !on_disk.contains(s))
            .copied()
            .collect();
        assert!(lost.is_empty(), "acknowledged but gone: {lost:?}");
    }
    let last = acked.last().copied().unwrap_or(0);
    println!(
        "{mid_rotation} of {kills} kills landed mid-rotation; {} durable events acknowledged, the last seq {last}",
        acked.len()
    );
    assert!(last > 100, "the runs continued one sequence");
}
