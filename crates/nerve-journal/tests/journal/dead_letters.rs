//! The dead letter file: restore on reopen, quarantine of what a crash tore,
//! the lock, compaction, write faults, and an entry that survives SIGKILL.

use std::path::Path;

use nerve_core::dead_letter::{DeadLetter, DeadLetterReason, DeadLetterStore};
use nerve_core::{Event, Timestamp, json};
use nerve_journal::fs::{FaultyFs, Op};
use nerve_journal::{DeadLetterJournal, Fsync, JournalError};
use nerve_router::DeadLetterQueue;

use crate::child::{self, VAR};

/// Entry `id`, failed once with `error`.
fn letter(id: u64, error: &str) -> DeadLetter {
    let event = Event::builder("invoice.send")
        .data(json!({ "n": id }))
        .build()
        .unwrap();
    DeadLetter::new(
        id,
        event,
        DeadLetterReason::HandlerError,
        error,
        Timestamp::now(),
    )
}

/// Opens the store at `path`. A test of this process that spawns a child
/// (the second opener's, the SIGKILL one's) can hold a lock just released
/// here for a moment: the child's copy of the descriptor lives until its
/// `exec`. So `Locked` is tried again until it clears.
fn open(path: &Path) -> DeadLetterJournal {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        match DeadLetterJournal::builder(path).build() {
            Err(JournalError::Locked { .. }) if std::time::Instant::now() < deadline => {
                std::thread::yield_now();
            }
            opened => return opened.unwrap(),
        }
    }
}

fn ids(entries: &[DeadLetter]) -> Vec<u64> {
    entries.iter().map(|e| e.id).collect()
}

/// The file's lines, asserting that it ends on a whole line.
fn lines(path: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(path).unwrap();
    assert!(text.is_empty() || text.ends_with('\n'), "{text}");
    text.lines().map(str::to_owned).collect()
}

#[test]
fn reopening_restores_the_live_entries_oldest_first() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dead_letters.jsonl");
    {
        let store = open(&path);
        assert!(store.restore().is_empty());
        for id in 1..=4 {
            store.put(&letter(id, "smtp down")).unwrap();
        }
        let mut retried = letter(2, "smtp still down");
        retried.attempts = 2;
        store.put(&retried).unwrap();
        store.remove(3).unwrap();
        assert_eq!(store.stats().written, 6);
    }
    let store = open(&path);
    let entries = store.restore();
    assert_eq!(ids(&entries), [1, 2, 4]);
    assert_eq!(
        (entries[1].attempts, entries[1].error.as_str()),
        (2, "smtp still down")
    );
    assert_eq!(entries[2].event.data()["n"], 4);
    assert!(store.restore().is_empty(), "handed over once");
    assert_eq!(
        store.stats().compactions,
        1,
        "the replaced and removed lines went"
    );
    assert_eq!(lines(&path).len(), 3);
    store.clear().unwrap();
    drop(store);
    assert!(open(&path).restore().is_empty());
}

#[test]
fn the_router_file_format_loads_and_a_newer_version_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dead_letters.jsonl");
    let entry = serde_json::to_string(&letter(7, "HTTP 503")).unwrap();
    // Lines as `DeadLetterQueue::persistent` wrote them: no `v`.
    std::fs::write(
        &path,
        format!("{{\"op\":\"put\",\"entry\":{entry}}}\n{{\"op\":\"clear\"}}\n{{\"op\":\"put\",\"entry\":{entry}}}\n"),
    )
    .unwrap();
    let store = open(&path);
    assert_eq!(ids(&store.restore()), [7]);
    store.put(&letter(8, "HTTP 503")).unwrap();
    drop(store);
    let written = lines(&path);
    assert!(
        written[1].starts_with("{\"op\":\"put\",\"entry\":{\"id\":8,"),
        "{written:?}"
    );
    assert!(written[1].ends_with(",\"v\":1}"), "{written:?}");

    std::fs::write(&path, "{\"op\":\"clear\",\"v\":2}\n").unwrap();
    match DeadLetterJournal::builder(&path).build() {
        Err(JournalError::Io { source, .. }) => {
            assert_eq!(source.kind(), std::io::ErrorKind::InvalidData);
            assert!(source.to_string().contains("version 2"), "{source}");
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_torn_tail_and_an_unreadable_line_are_quarantined_and_counted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dead_letters.jsonl");
    {
        let store = open(&path);
        store.put(&letter(1, "a")).unwrap();
        store.put(&letter(2, "b")).unwrap();
    }
    let mut bytes = std::fs::read(&path).unwrap();
    // A line damaged in the middle, and a crash mid-append at the end.
    let first = bytes.iter().position(|b| *b == b'\n').unwrap() + 1;
    bytes.splice(first..first, b"not json\n".iter().copied());
    let torn = b"{\"op\":\"put\",\"entry\":{\"id\":9";
    bytes.extend_from_slice(torn);
    std::fs::write(&path, &bytes).unwrap();

    let store = open(&path);
    assert_eq!(ids(&store.restore()), [1, 2]);
    assert_eq!(store.unreadable(), 2);
    let stats = store.stats();
    assert_eq!(stats.unreadable, 2);
    assert_eq!(stats.quarantined_bytes, (8 + torn.len()) as u64);
    let quarantine = std::fs::read(dir.path().join("dead_letters.jsonl.torn")).unwrap();
    assert_eq!(
        quarantine,
        [b"not json\n".as_slice(), torn, b"\n"].concat(),
        "set aside, not deleted"
    );
    assert_eq!(lines(&path).len(), 2, "the file holds its entries only");
    // The next append starts on a line of its own.
    store.put(&letter(3, "c")).unwrap();
    drop(store);
    let store = open(&path);
    assert_eq!(ids(&store.restore()), [1, 2, 3]);
    assert_eq!(store.unreadable(), 0);
}

#[test]
fn a_second_opener_is_locked_out_in_this_process_and_another() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dead_letters.jsonl");
    let store = open(&path);
    match DeadLetterJournal::builder(&path).build() {
        Err(e @ JournalError::Locked { .. }) => {
            assert!(e.to_string().contains("locked by another writer"), "{e}");
        }
        other => panic!("{other:?}"),
    }
    let said = |path: &Path| {
        let mut c = child::spawn(
            "dead_letters::child_opens_a_dead_letter_file",
            path.to_str().unwrap(),
        );
        let said = child::lines(&mut c, "CHILD ", |_| false);
        c.wait().unwrap();
        said
    };
    assert_eq!(said(&path), ["locked"]);
    store.close().unwrap();
    assert_eq!(said(&path), ["opened"], "close released the lock");
    assert!(matches!(
        store.put(&letter(1, "late")),
        Err(nerve_core::DeadLetterStoreError::Closed)
    ));
}

#[test]
fn child_opens_a_dead_letter_file() {
    let Ok(path) = std::env::var(VAR) else { return };
    match DeadLetterJournal::builder(&path).build() {
        Err(JournalError::Locked { .. }) => println!("CHILD locked"),
        Err(e) => println!("CHILD error {e}"),
        Ok(_) => println!("CHILD opened"),
    }
}

#[test]
fn compaction_keeps_exactly_the_live_entries() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dead_letters.jsonl");
    let store = DeadLetterJournal::builder(&path)
        .compact_after(8)
        .build()
        .unwrap();
    for id in 1..=30 {
        store.put(&letter(id, "x")).unwrap();
        // The queue evicts the oldest beyond 5.
        if id > 5 {
            store.remove(id - 5).unwrap();
        }
    }
    store.flush(crate::WAIT).unwrap();
    let stats = store.stats();
    assert!(stats.compactions >= 2, "{stats:?}");
    let on_disk = lines(&path);
    assert!(on_disk.len() < 2 * 8 + 5, "{}", on_disk.len());
    assert!(!dir.path().join("dead_letters.jsonl.compact").exists());
    drop(store);
    // Reopening compacts what is left over: exactly one put per live entry.
    let store = open(&path);
    assert_eq!(ids(&store.restore()), [26, 27, 28, 29, 30]);
    let on_disk = lines(&path);
    assert_eq!(on_disk.len(), 5);
    for (line, id) in on_disk.iter().zip(26..) {
        assert!(
            line.starts_with(&format!("{{\"op\":\"put\",\"entry\":{{\"id\":{id},")),
            "{line}"
        );
    }
}

#[test]
fn a_failed_write_is_repaired_by_rewriting_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dead_letters.jsonl");
    let fs = FaultyFs::new();
    let store = DeadLetterJournal::builder(&path)
        .file_system(fs.clone())
        .build()
        .unwrap();
    store.put(&letter(1, "a")).unwrap();
    // A torn write, then the rewrite from the live entries succeeds.
    fs.fail(Op::Write, 1);
    store.put(&letter(2, "b")).unwrap();
    assert_eq!(store.stats().io_errors, 1);
    assert_eq!(lines(&path).len(), 2);
    // A disk that keeps failing: the change fails, then heals.
    fs.fail_always(Op::Write);
    assert!(store.put(&letter(3, "c")).is_err());
    fs.heal();
    store.remove(1).unwrap();
    drop(store);
    let store = open(&path);
    assert_eq!(ids(&store.restore()), [2, 3]);
    assert_eq!(store.unreadable(), 0);
}

#[test]
fn an_entry_added_under_fsync_always_survives_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dead_letters.jsonl");
    let mut c = child::spawn(
        "dead_letters::child_adds_a_dead_letter_and_waits",
        path.to_str().unwrap(),
    );
    let said = child::lines(&mut c, "CHILD ", |l| l == "added");
    // SIGKILL the moment the child said `add` returned.
    c.kill().unwrap();
    c.wait().unwrap();
    assert_eq!(said, ["added"]);
    let store = open(&path);
    let entries = store.restore();
    assert_eq!(ids(&entries), [1]);
    assert_eq!(entries[0].error, "webhook down");
    assert_eq!(entries[0].event.event_type(), "extraction.failed");
}

#[test]
fn child_adds_a_dead_letter_and_waits() {
    let Ok(path) = std::env::var(VAR) else { return };
    let store = DeadLetterJournal::builder(&path)
        .fsync(Fsync::Always)
        .build()
        .unwrap();
    let dlq = DeadLetterQueue::with_store(store, 10);
    let event = Event::builder("extraction.failed").build().unwrap();
    dlq.add(event, Some("alert:webhook".into()), "webhook down");
    assert_eq!(dlq.stats().persist_errors, 0);
    println!("CHILD added");
    loop {
        std::thread::park();
    }
}

/// `rm -r` of the directory while the store is open, under each fsync
/// policy: the file is written again, whole, from the live entries, the
/// lock is taken again, and nothing acknowledged is lost.
fn removed_directory_is_made_again(fsync: Fsync) {
    let dir = tempfile::tempdir().unwrap();
    let run = dir.path().join("run-1");
    let path = run.join("dead_letters.jsonl");
    let store = DeadLetterJournal::builder(&path)
        .fsync(fsync)
        .build()
        .unwrap();
    for id in 1..=3 {
        store.put(&letter(id, "smtp down")).unwrap();
    }
    store.remove(2).unwrap();
    store.flush(std::time::Duration::from_secs(10)).unwrap();
    std::fs::remove_dir_all(&run).unwrap();
    // Written to the removed file, then found at the next look.
    store.put(&letter(4, "smtp down")).unwrap();
    store.flush(std::time::Duration::from_secs(10)).unwrap();
    if fsync == Fsync::Never {
        // No sync to look at: closing looks.
        store.close().unwrap();
    }
    assert_eq!(store.stats().rewritten_after_removal, 1, "{fsync:?}");
    assert!(path.exists(), "{fsync:?}");
    if fsync != Fsync::Never {
        // The lock is this store's again: a second one is refused.
        assert!(
            matches!(
                DeadLetterJournal::builder(&path).build(),
                Err(JournalError::Locked { .. })
            ),
            "{fsync:?}"
        );
        store.close().unwrap();
    }
    drop(store);
    let written: Vec<u64> = lines(&path)
        .iter()
        .map(|line| {
            let v: serde_json::Value = serde_json::from_str(line).unwrap();
            assert_eq!(v["op"], "put", "{line}");
            v["entry"]["id"].as_u64().unwrap()
        })
        .collect();
    assert_eq!(written, [1, 3, 4], "{fsync:?}: the live entries, rewritten");
}

#[test]
fn a_removed_directory_is_made_again_with_every_entry() {
    for fsync in [
        Fsync::Always,
        Fsync::Interval(std::time::Duration::from_millis(200)),
        Fsync::Never,
    ] {
        removed_directory_is_made_again(fsync);
    }
}
