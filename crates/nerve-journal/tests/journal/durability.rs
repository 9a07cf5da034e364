//! The journal's side of "a terminal event is on disk before `emit`
//! returns", with real processes: `record_and_wait` then `process::exit`, or
//! SIGKILL the moment it returned; and crashes in the middle of rotations.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use nerve_core::Event;
use nerve_core::sink::EventSink;
use nerve_journal::Journal;

use crate::child::{self, ROTATING_MAX_FILES};
use crate::{assert_whole_lines, pending_names, read_all};

const EVENTS: u64 = 300;

/// Runs the child for `fsync` and `mode`, then checks that all `EVENTS + 1`
/// events are in the journal, in order, the terminal one last.
fn check(fsync: &str, mode: &str) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let mut c = child::spawn(
        "child::child_records_a_terminal_event_and_ends",
        &format!("{}|{fsync}|{EVENTS}|{mode}", path.display()),
    );
    if mode == "kill" {
        let said = child::lines(&mut c, "CHILD ", |l| l == "waited");
        // SIGKILL the moment the child said `record_and_wait` returned.
        c.kill().unwrap();
        assert_eq!(said, ["waited"], "{fsync}");
        c.wait().unwrap();
    } else {
        let status = c.wait().unwrap();
        assert_eq!(status.code(), Some(1), "{fsync}: exited at once");
    }
    let seqs: Vec<u64> = read_all(&path).iter().map(Event::seq).collect();
    assert_eq!(
        seqs,
        (1..=EVENTS + 1).collect::<Vec<_>>(),
        "{fsync} {mode}: every event, in order"
    );
    let last = read_all(&path).pop().unwrap();
    assert_eq!(last.event_type(), "extraction.failed");
    assert_whole_lines(&path);
}

#[test]
fn a_waited_event_and_all_before_it_survive_exit() {
    for fsync in ["never", "interval", "always"] {
        check(fsync, "exit");
    }
}

#[test]
fn a_waited_event_and_all_before_it_survive_sigkill() {
    for fsync in ["never", "interval", "always"] {
        check(fsync, "kill");
    }
}

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

/// Kills needed in the middle of a rotation.
const MID_ROTATION: usize = 20;
/// Kills done at least, mid-rotation or not: each costs about 25 ms, and
/// more land at the rarer points (between the rename and the new file).
const MIN_KILLS: usize = 60;

#[test]
fn sigkill_mid_rotation_is_finished_at_open_and_loses_no_acknowledged_event() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let mut rng = Rng(0x5eed_f00d_d00d_0013);
    let (mut kills, mut mid_rotation, mut active_missing) = (0, 0, 0);
    let mut acked_max = 0u64;
    let started = Instant::now();
    // Generous: in practice most kills land with rotated files pending.
    while (mid_rotation < MID_ROTATION || kills < MIN_KILLS) && kills < 400 {
        let mut c = child::spawn("child::child_rotates_until_killed", path.to_str().unwrap());
        let target = 1 + rng.below(40);
        let mut acks = 0;
        let said = child::lines(&mut c, "ACK ", |l| {
            acks += u64::from(!l.starts_with("ready"));
            acks >= target
        });
        c.kill().unwrap();
        c.wait().unwrap();
        kills += 1;
        // The child is gone: the directory is as the kill left it.
        let pending = pending_names(dir.path()).len();
        let missing = !path.exists();
        if pending > 0 || missing {
            mid_rotation += 1;
        }
        active_missing += usize::from(missing);
        let first: u64 = said[0]
            .strip_prefix("ready ")
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{said:?}"));
        assert!(first > acked_max, "kill {kills}: continues at {first}");
        let acked: Vec<u64> = said[1..].iter().map(|l| l.parse().unwrap()).collect();
        acked_max = acked.iter().copied().max().unwrap_or(acked_max);

        let journal = Journal::builder(&path)
            .max_bytes(600)
            .max_files(ROTATING_MAX_FILES)
            .build()
            .unwrap_or_else(|e| panic!("kill {kills}: reopening failed: {e}"));
        let r = journal.recovery();
        assert_eq!(r.pending, pending, "kill {kills}: {r:?}");
        assert!(pending_names(dir.path()).is_empty(), "kill {kills}");
        assert!(path.exists(), "kill {kills}");
        // One unbroken sequence in the retained window, each number once.
        let seqs: Vec<u64> = read_all(&path).iter().map(Event::seq).collect();
        let set: BTreeSet<u64> = seqs.iter().copied().collect();
        assert_eq!(set.len(), seqs.len(), "kill {kills}: a seq twice");
        let (lo, hi) = (*set.first().unwrap(), *set.last().unwrap());
        assert_eq!(
            set.len() as u64,
            hi - lo + 1,
            "kill {kills}: a gap in {lo}..={hi}"
        );
        assert!(
            hi >= acked_max,
            "kill {kills}: acked {acked_max}, on disk {hi}"
        );
        for a in acked.iter().filter(|a| **a >= lo) {
            assert!(set.contains(a), "kill {kills}: acked {a} missing");
        }
        assert_eq!(journal.last_seq(), Some(hi), "kill {kills}");
        assert_whole_lines(&path);
        journal.close(Duration::from_secs(30)).unwrap();
    }
    println!(
        "{kills} kills, {mid_rotation} mid-rotation ({active_missing} with the active file \
         missing), {:?}",
        started.elapsed()
    );
    assert!(
        mid_rotation >= MID_ROTATION,
        "only {mid_rotation} of {kills} kills landed mid-rotation"
    );
}
