use std::collections::HashMap;

use nerve_journal::Journal;

use crate::child;

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
