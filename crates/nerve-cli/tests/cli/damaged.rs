//! Damaged input is never silent: every command that reads a journal names
//! the lines it skipped on stderr, and `--strict` makes that exit 1.

use std::path::Path;

use nerve::Bus;
use nerve::journal::Journal;
use nerve::json;

use super::{dir, nerve, stderr, stdout};

/// Deterministic pseudo-random bytes (xorshift64*).
fn random_bytes(n: usize, mut state: u64) -> Vec<u8> {
    (0..n)
        .map(|_| {
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            (state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 56) as u8
        })
        .collect()
}

/// A healthy journal of `n` events.
fn healthy(path: &Path, n: u64) {
    let journal = Journal::builder(path).build().unwrap();
    let bus = Bus::builder().journal(journal).build().unwrap();
    for i in 0..n {
        bus.emit("load.tick", json!({ "n": i })).unwrap();
    }
    bus.shutdown_blocking();
}

/// Every reading command on `path`: each names the skipped lines (`want` in
/// its stderr) and hints at `verify`, exits 0, and 1 with `--strict`;
/// `verify` exits 1. Returns the events `query` printed.
fn every_command_says(path: &Path, want: &[&str]) -> usize {
    let p = path.to_str().unwrap();
    let commands: [Vec<&str>; 4] = [
        vec!["stats", p],
        vec!["query", p],
        vec!["timeline", p, "--field", "seq"],
        vec!["tail", "-n", "1000", p],
    ];
    let mut printed = 0;
    for args in commands {
        let o = nerve(&args);
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {err}");
        assert!(err.contains("nerve: warning: skipped"), "{args:?}: {err}");
        assert!(err.contains("damaged line"), "{args:?}: {err}");
        assert!(
            err.contains(&format!("nerve verify {p}")),
            "{args:?}: {err}"
        );
        for w in want {
            assert!(err.contains(w), "{args:?}: want {w:?} in {err}");
        }
        assert!(!err.contains("LineIn"), "{err}");
        if args[0] == "query" {
            printed = stdout(&o).lines().count();
        }
        let mut strict = args.clone();
        strict.push("--strict");
        let o = nerve(&strict);
        assert_eq!(o.status.code(), Some(1), "{strict:?}: {}", stderr(&o));
        assert!(stderr(&o).contains("damaged line"), "{strict:?}");
    }
    let o = nerve(&["verify", p]);
    assert_eq!(o.status.code(), Some(1), "{}", stdout(&o));
    let strict = nerve(&["verify", "--strict", p]);
    assert_eq!(strict.status.code(), Some(1), "verify --strict is accepted");
    for w in want {
        assert!(
            stderr(&o).contains(w),
            "verify: want {w:?} in {}",
            stderr(&o)
        );
    }
    printed
}

#[test]
fn random_bytes_are_named_not_swallowed() {
    let d = dir("random");
    let path = d.join("events.jsonl");
    std::fs::write(&path, random_bytes(100 * 1024, 0x9e37_79b9_7f4a_7c15)).unwrap();
    let printed = every_command_says(&path, &["events.jsonl:1", "more"]);
    assert_eq!(printed, 0);
    // The count is every non-blank line.
    let o = nerve(&["query", path.to_str().unwrap()]);
    let err = stderr(&o);
    let text = std::fs::read(&path).unwrap();
    let lines = text
        .split(|b| *b == b'\n')
        .filter(|l| !l.trim_ascii().is_empty())
        .count();
    assert!(
        err.contains(&format!("skipped {lines} damaged lines")),
        "{lines}: {err}"
    );
}

#[test]
fn invalid_utf8_is_named_by_line() {
    let d = dir("utf8");
    let path = d.join("events.jsonl");
    healthy(&path, 5);
    let text = std::fs::read(&path).unwrap();
    let mut lines: Vec<Vec<u8>> = text.split(|b| *b == b'\n').map(<[u8]>::to_vec).collect();
    // Line 3's event type gets a byte that is not UTF-8.
    let at = lines[2].windows(4).position(|w| w == b"load").unwrap();
    lines[2][at] = 0xff;
    std::fs::write(&path, lines.join(&b'\n')).unwrap();
    let printed = every_command_says(&path, &["events.jsonl:3"]);
    assert_eq!(printed, 4, "the other events are still read");
    let o = nerve(&["verify", path.to_str().unwrap()]);
    assert!(
        stdout(&o).contains(":3: not a journal record: not UTF-8"),
        "{}",
        stdout(&o)
    );
}

#[test]
fn a_torn_tail_is_named() {
    let d = dir("torn");
    let path = d.join("events.jsonl");
    healthy(&path, 3);
    let mut text = std::fs::read(&path).unwrap();
    text.extend_from_slice(br#"{"event_id":"0190b6e0-0000"#);
    std::fs::write(&path, text).unwrap();
    let printed = every_command_says(&path, &["events.jsonl:4 (torn)", "1 torn"]);
    assert_eq!(printed, 3);
}
