//! A journal whose directory is removed while a run writes to it (`rm -r`
//! of the run's directory, a cleanup script): what was written to the
//! removed file is counted lost and said, and the run goes on in a new
//! file in the directory made again.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use nerve_core::sink::EventSink;
use nerve_core::{Event, json};
use nerve_journal::{Fsync, Journal, JournalError};
use nerve_router::{Bus, EmitError};

use crate::{WAIT, assert_whole_lines, read_all};

/// A bus journaling into `<tmp>/run/events.jsonl`, with what it publishes
/// as `system.journal_error`.
struct Run {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    path: PathBuf,
    journal: Journal,
    bus: Bus,
    errors: Arc<Mutex<Vec<String>>>,
}

fn run(fsync: Fsync) -> Run {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let path = dir.join("events.jsonl");
    let journal = Journal::builder(&path).fsync(fsync).build().unwrap();
    let bus = Bus::builder().journal(journal.clone()).build().unwrap();
    let errors = crate::journal_errors(&bus, "error");
    Run {
        _tmp: tmp,
        dir,
        path,
        journal,
        bus,
        errors,
    }
}

fn emit(run: &Run, n: u64, tag: &str) {
    for i in 0..n {
        run.bus
            .emit("work.item", json!({"tag": tag, "i": i}))
            .unwrap();
    }
}

/// Each line as its tag, or `gap <count> <reason>` for a range line.
fn lines(path: &Path) -> Vec<String> {
    read_all(path)
        .iter()
        .map(|e| {
            if e.event_type() == "system.journal_gap" {
                format!("gap {} {}", e.data()["count"], e.data()["reason"])
            } else {
                e.data()["tag"]
                    .as_str()
                    .unwrap_or(e.event_type())
                    .to_owned()
            }
        })
        .collect()
}

/// Removing the directory between two flushes: the next flush fails and
/// says why, the events written to the removed file are counted lost and
/// published as a journal error, and the directory comes back with a new
/// file that starts with one range line for them, then what follows.
fn check(fsync: Fsync) {
    let run = run(fsync);
    emit(&run, 5, "before");
    run.journal.flush(WAIT).unwrap();

    std::fs::remove_dir_all(&run.dir).unwrap();
    emit(&run, 3, "during");
    let err = run
        .journal
        .flush(WAIT)
        .expect_err("the flush says the file went");
    let text = err.to_string();
    assert!(
        text.contains("was removed while in use"),
        "{fsync:?}: {text}"
    );
    assert!(text.contains("the 3 events"), "{fsync:?}: {text}");

    // The lock is taken again: a second writer is refused as before.
    match Journal::builder(&run.path).build() {
        Err(JournalError::Locked { .. }) => {}
        Err(other) => panic!("{fsync:?}: {other}"),
        Ok(_) => panic!("{fsync:?}: a second writer got the journal"),
    }

    emit(&run, 2, "after");
    run.journal.flush(WAIT).unwrap();
    let stats = run.journal.stats();
    assert_eq!(stats.lost, 3, "{fsync:?}: {stats:?}");
    assert!(stats.io_errors >= 1, "{fsync:?}: {stats:?}");
    assert_eq!(stats.gap_events, 3, "{fsync:?}: {stats:?}");
    assert!(run.dir.is_dir(), "{fsync:?}: the directory is made again");
    assert_whole_lines(&run.path);
    assert_eq!(
        lines(&run.path),
        ["gap 3 \"io\"", "after", "after"],
        "{fsync:?}"
    );
    let gap = &read_all(&run.path)[0];
    let seqs: Vec<u64> = read_all(&run.path)[1..].iter().map(Event::seq).collect();
    assert_eq!(
        gap.data()["to_seq"].as_u64().unwrap() + 1,
        seqs[0],
        "{fsync:?}"
    );
    let published = run.errors.lock().unwrap().clone();
    assert!(
        published
            .iter()
            .any(|m| m.contains("was removed while in use")),
        "{fsync:?}: {published:?}"
    );
}

#[test]
fn a_removed_directory_is_counted_and_made_again_without_sync() {
    check(Fsync::Never);
}

#[test]
fn a_removed_directory_is_counted_and_made_again_with_interval_sync() {
    // An interval longer than the test: only the flush checks.
    check(Fsync::Interval(WAIT * 10));
}

#[test]
fn a_removed_directory_is_counted_and_made_again_with_every_event_synced() {
    let run = run(Fsync::Always);
    emit(&run, 2, "before");
    std::fs::remove_dir_all(&run.dir).unwrap();
    // Under `Always` each record waits for its sync: the one written to the
    // removed file is told so (the bus counts and publishes it, and the
    // emit of an event that is not terminal still returns), and the next
    // lands in the new file.
    emit(&run, 1, "during");
    assert_eq!(run.bus.stats().events.journal_errors, 1);
    let published = run.errors.lock().unwrap().clone();
    assert!(
        published.len() == 1 && published[0].contains("was removed while in use"),
        "{published:?}"
    );
    emit(&run, 1, "after");
    let err = run.journal.flush(WAIT).expect_err("said at the flush too");
    assert!(err.to_string().contains("was removed"), "{err}");
    assert_eq!(run.journal.stats().lost, 1);
    assert_eq!(lines(&run.path), ["gap 1 \"io\"", "after"]);
}

/// A terminal event is waited for whatever the policy: it is never
/// acknowledged in a removed file, so a program that emits its verdict and
/// exits knows when it was not kept.
#[test]
fn a_terminal_event_written_to_a_removed_file_is_not_recorded() {
    let run = run(Fsync::Never);
    emit(&run, 2, "before");
    run.journal.flush(WAIT).unwrap();
    std::fs::remove_dir_all(&run.dir).unwrap();
    match run
        .bus
        .emit("extraction.failed", json!({"reason": "validation"}))
    {
        Err(EmitError::NotRecorded { error, .. }) => {
            assert!(error.to_string().contains("was removed"), "{error}");
        }
        other => panic!("a terminal event acknowledged in a removed file: {other:?}"),
    }
    // Said again, the verdict is kept; the flush says what was lost since
    // the last one.
    run.bus
        .emit("extraction.failed", json!({"reason": "validation"}))
        .unwrap();
    assert!(run.journal.flush(WAIT).is_err());
    run.journal.flush(WAIT).unwrap();
    assert_eq!(lines(&run.path), ["gap 1 \"io\"", "extraction.failed"]);
}

/// With rotation: the removed file is found before it would be renamed
/// (its handle closed, what it held gone), the backups went with the
/// directory, and the journal rotates on in the new one within its limits.
#[test]
fn a_removed_directory_of_a_rotating_journal() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("run");
    let path = dir.join("events.jsonl");
    let journal = Journal::builder(&path)
        .max_bytes(2_000)
        .max_files(3)
        .build()
        .unwrap();
    let bus = Bus::builder().journal(journal.clone()).build().unwrap();
    let emit = |tag: &str| {
        for i in 0..20 {
            bus.emit("work.item", json!({"tag": tag, "i": i})).unwrap();
        }
    };
    emit("before");
    journal.flush(WAIT).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    emit("during");
    let _ = journal.flush(WAIT);
    emit("after");
    journal.flush(WAIT).unwrap();

    let stats = journal.stats();
    assert!(dir.is_dir());
    assert_whole_lines(&path);
    let files = crate::files(&path);
    assert!(files.len() <= 4, "{files:?}");
    for file in &files {
        let len = std::fs::metadata(file).unwrap().len();
        assert!(len <= 2_000, "{}: {len}", file.display());
    }
    let lines = lines(&path);
    assert_eq!(lines.last().unwrap(), "after", "{lines:?}");
    // What went with the removed file is counted and has its range line
    // (perhaps rotated out since); none of it is both.
    assert_eq!(stats.gap_events, stats.lost, "{stats:?}");
    let during = lines.iter().filter(|l| *l == "during").count() as u64;
    assert!(during + stats.lost <= 20, "{stats:?} {lines:?}");
    // Both locks are back under their names: the writer's, and the one
    // readers in other processes wait on while files are renumbered.
    let names = crate::names_in(&dir);
    assert!(
        names.iter().any(|n| n.ends_with(".rename-lock")),
        "{names:?}"
    );
    assert!(names.iter().any(|n| n.ends_with(".lock")), "{names:?}");
    assert!(matches!(
        Journal::builder(&path).build(),
        Err(JournalError::Locked { .. })
    ));
}
