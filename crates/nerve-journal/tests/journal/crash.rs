use std::collections::HashMap;

use nerve_journal::Journal;

use crate::{child, pending_names};

/// A small deterministic generator (xorshift64*), so failures replay.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) % n
    }
}

#[test]
fn sigkill_never_loses_an_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let mut rng = Rng(0x5eed_cafe_f00d_0001);
    let mut acked: HashMap<String, u64> = HashMap::new();
    for run in 0..100 {
        let run = format!("r{run}");
        let target = rng.below(40);
        let mut child = child::spawn(
            "child::child_emits_until_killed",
            &format!("{}|{run}", path.display()),
        );
        let seen = child::lines(&mut child, "ACK ", |l| {
            l.parse::<u64>().is_ok_and(|i| i >= target)
        });
        // Killed while it keeps emitting (SIGKILL on Unix).
        child.kill().unwrap();
        child.wait().unwrap();
        assert_eq!(
            seen.first().map(String::as_str),
            Some("ready"),
            "child started"
        );
        assert!(
            !seen.iter().any(|l| l.starts_with("error")),
            "{run}: {seen:?}"
        );
        let last = seen.iter().filter_map(|l| l.parse::<u64>().ok()).max();
        if let Some(last) = last {
            acked.insert(run, last + 1);
        }
    }
    // As many backups as the children keep: opening trims to `max_files`.
    let journal = Journal::builder(&path).max_files(1_000).build().unwrap();
    assert!(crate::files(&path).len() > 3, "the children rotated");
    let mut counts: HashMap<(String, u64), u32> = HashMap::new();
    for e in crate::read_all(&path) {
        let key = (
            e.data()["run"].as_str().unwrap().to_owned(),
            e.data()["i"].as_u64().unwrap(),
        );
        *counts.entry(key).or_default() += 1;
    }
    assert!(counts.values().all(|n| *n == 1), "an event on disk twice");
    for (run, n) in &acked {
        for i in 0..*n {
            assert!(
                counts.contains_key(&(run.clone(), i)),
                "{run}:{i} acknowledged but missing"
            );
        }
    }
    crate::assert_whole_lines(&path);
    drop(journal);
}

#[test]
fn a_crash_with_rotated_files_still_pending_is_repaired_at_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let mut child = child::spawn(
        "child::child_rotates_while_renumbering_is_stuck",
        path.to_str().unwrap(),
    );
    // Enough for more rotations than `max_files` (about 10 records a file).
    let seen = child::lines(&mut child, "ACK ", |l| {
        l.parse::<u64>().is_ok_and(|i| i >= 80)
    });
    child.kill().unwrap();
    child.wait().unwrap();
    assert_eq!(seen.first().map(String::as_str), Some("ready"));
    let acked = seen
        .iter()
        .filter_map(|l| l.parse::<u64>().ok())
        .max()
        .unwrap();
    let pending = pending_names(dir.path()).len();
    // Renames failing, retention (deleting the oldest) still held at each
    // pass; rotations since the last pass may add to it.
    assert!(pending >= 1, "the crash left {pending} pending files");
    // Before repair, a reader already sees the newest records once each, in
    // order, up to at least the last acknowledged one.
    let before: Vec<u64> = crate::read_all(&path).iter().map(|e| e.seq()).collect();
    let first = before[0];
    let last = *before.last().unwrap();
    assert!(
        first > 0 && last >= acked,
        "{first}..={last}, {acked} acked"
    );
    assert_eq!(before, (first..=last).collect::<Vec<_>>());

    let journal = Journal::builder(&path).max_files(3).build().unwrap();
    let r = journal.recovery();
    assert!(r.renumbered && r.pending == pending, "{r:?}");
    let names: Vec<String> = crate::files(&path)
        .iter()
        .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names,
        [
            "events.3.jsonl",
            "events.2.jsonl",
            "events.1.jsonl",
            "events.jsonl"
        ],
        "max_files backups, final names"
    );
    // The newest of the same records, in the same order: nothing lost but
    // to retention, nothing twice.
    let after: Vec<u64> = crate::read_all(&path).iter().map(|e| e.seq()).collect();
    assert!(before.ends_with(&after), "{before:?} then {after:?}");
    assert!(after.len() >= 3, "{after:?}");
    crate::assert_whole_lines(&path);
    drop(journal);
}
