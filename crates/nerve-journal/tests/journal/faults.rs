use std::sync::{Arc, Mutex};

use nerve_core::sink::{EventSink, SinkErrorKind};
use nerve_core::{Event, json};
use nerve_journal::fs::{FaultyFs, Op};
use nerve_journal::{Fsync, Journal};
use nerve_router::Bus;

use crate::{WAIT, assert_whole_lines, pending_names, read_all};

struct Rig {
    _dir: tempfile::TempDir,
    path: std::path::PathBuf,
    fs: FaultyFs,
    journal: Journal,
    bus: Bus,
    errors: Arc<Mutex<Vec<String>>>,
}

fn rig(fsync: Fsync, max_bytes: u64) -> Rig {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let fs = FaultyFs::new();
    let journal = Journal::builder(&path)
        .fsync(fsync)
        .max_bytes(max_bytes)
        .max_files(3)
        .file_system(fs.clone())
        .build()
        .unwrap();
    let bus = Bus::builder().journal(journal.clone()).build().unwrap();
    let errors = crate::journal_errors(&bus, "kind");
    Rig {
        _dir: dir,
        path,
        fs,
        journal,
        bus,
        errors,
    }
}

fn emit(rig: &Rig, n: u64, tag: &str) {
    let delivered = Arc::new(Mutex::new(0));
    for i in 0..n {
        rig.bus
            .emit("work.item", json!({"tag": tag, "i": i}))
            .unwrap();
    }
    drop(delivered);
}

/// Each line's tag; a marker line written for a lost event reads as its
/// reason (`"io"`).
fn tags(path: &std::path::Path) -> Vec<String> {
    read_all(path)
        .iter()
        .map(|e| match e.data()["$nerve_error"].as_str() {
            Some(reason) => reason.to_owned(),
            None => e.data()["tag"].as_str().unwrap().to_owned(),
        })
        .collect()
}

/// A fault in `op` loses (and reports) the events it hit, leaves no partial
/// line, and the journal resumes once healed.
fn check(op: Op, fsync: Fsync, max_bytes: u64) {
    let rig = rig(fsync, max_bytes);
    emit(&rig, 5, "before");
    rig.journal.flush(WAIT).unwrap();
    rig.fs.fail(op, 1);
    emit(&rig, 5, "during");
    let _ = rig.journal.flush(WAIT);
    rig.fs.heal();
    emit(&rig, 5, "after");
    rig.journal.flush(WAIT).unwrap();

    let stats = rig.journal.stats();
    assert!(stats.io_errors >= 1, "{op:?}: {stats:?}");
    assert!(rig.bus.stats().events.journal_errors >= 1, "{op:?}");
    assert!(!rig.errors.lock().unwrap().is_empty(), "{op:?}: published");
    assert!(
        rig.errors.lock().unwrap().iter().all(|k| k == "io"),
        "{op:?}"
    );
    assert_whole_lines(&rig.path);
    let tags = tags(&rig.path);
    assert_eq!(&tags[..5], ["before"; 5], "{op:?}");
    assert_eq!(&tags[tags.len() - 5..], ["after"; 5], "{op:?}: resumed");
    let during = tags.iter().filter(|t| *t == "during").count() as u64;
    assert_eq!(
        during + stats.lost,
        5,
        "{op:?}: kept or counted lost: {stats:?}"
    );
    // Each lost event has its marker line, written once writing worked
    // again, before the events that followed.
    let markers = tags.iter().filter(|t| *t == "io").count() as u64;
    assert_eq!(markers, stats.lost, "{op:?}: {tags:?}");
    assert_eq!(stats.markers, stats.lost, "{op:?}: {stats:?}");
    let mut seqs: Vec<u64> = read_all(&rig.path)
        .iter()
        .filter(|e| e.event_type() == "work.item")
        .map(Event::seq)
        .collect();
    seqs.sort_unstable();
    seqs.dedup();
    assert_eq!(seqs.len(), 15, "{op:?}: every work.item seq once: {seqs:?}");
    // Every event reached the handlers regardless.
    assert_eq!(rig.bus.stats().by_event_type["work.item"], 15);
}

#[test]
fn a_failed_write_leaves_no_partial_line() {
    check(Op::Write, Fsync::Never, 1 << 20);
}

#[test]
fn a_failed_flush_is_reported_and_cut_back() {
    check(Op::Flush, Fsync::Never, 1 << 20);
}

#[test]
fn a_failed_write_whose_cut_back_fails_too_is_repaired_on_reopen() {
    let rig = rig(Fsync::Never, 1 << 20);
    emit(&rig, 3, "before");
    rig.journal.flush(WAIT).unwrap();
    rig.fs.fail(Op::Write, 1);
    rig.fs.fail(Op::Truncate, 1);
    emit(&rig, 3, "during");
    let _ = rig.journal.flush(WAIT);
    emit(&rig, 3, "after");
    rig.journal.flush(WAIT).unwrap();
    assert_whole_lines(&rig.path);
    assert_eq!(tags(&rig.path).last().unwrap(), "after");
}

#[test]
fn a_failed_rename_keeps_rotation_consistent() {
    let rig = rig(Fsync::Never, 400);
    emit(&rig, 10, "before");
    rig.journal.flush(WAIT).unwrap();
    rig.fs.fail(Op::Rename, 1);
    emit(&rig, 10, "during");
    let _ = rig.journal.flush(WAIT);
    rig.fs.heal();
    emit(&rig, 10, "after");
    rig.journal.flush(WAIT).unwrap();
    assert!(rig.journal.stats().io_errors >= 1);
    assert_whole_lines(&rig.path);
    for f in crate::files(&rig.path) {
        assert!(
            std::fs::metadata(&f).unwrap().len() <= 400,
            "{}",
            f.display()
        );
    }
    assert_eq!(tags(&rig.path).last().unwrap(), "after");
    assert_eq!(crate::files(&rig.path).len(), 4, "3 backups, no gap");
}

#[test]
fn a_failed_open_is_retried() {
    let rig = rig(Fsync::Never, 1 << 20);
    rig.fs.fail(Op::Open, 1);
    check_resumes(&rig);
}

fn check_resumes(rig: &Rig) {
    emit(rig, 2, "during");
    let _ = rig.journal.flush(WAIT);
    emit(rig, 2, "after");
    rig.journal.flush(WAIT).unwrap();
    // Which of the "during" events share the failing batch depends on how
    // the writer thread batches; every one is either written or counted.
    let tags = tags(&rig.path);
    let lost = rig.journal.stats().lost;
    let written = tags.iter().filter(|t| *t == "during").count() as u64;
    assert!(lost >= 1, "the fault lost its batch: {tags:?}");
    assert_eq!(written + lost, 2, "{tags:?}, {lost} lost");
    assert_eq!(tags[tags.len() - 2..], ["after", "after"], "{tags:?}");
}

#[test]
fn a_failed_sync_fails_the_emits_it_was_to_make_durable() {
    let rig = rig(Fsync::Always, 1 << 20);
    emit(&rig, 2, "before");
    rig.fs.fail(Op::Sync, 1);
    // The emit still succeeds (the bus delivers in memory) but the journal
    // error is counted, published, and the unsynced line is cut back.
    emit(&rig, 1, "during");
    emit(&rig, 2, "after");
    assert_eq!(rig.bus.stats().events.journal_errors, 1);
    assert_eq!(*rig.errors.lock().unwrap(), ["io"]);
    // The cut line's number is kept by an `io` marker, written with the
    // next batch.
    assert_eq!(
        tags(&rig.path),
        ["before", "before", "io", "after", "after"]
    );
    assert_eq!(rig.journal.stats().markers, 1);
    let err = rig.journal.record(&Event::new("x.y", json!(1)).unwrap());
    assert!(err.is_ok());
    rig.fs.fail(Op::Sync, 1);
    let err = rig
        .journal
        .record(&Event::new("x.y", json!(1)).unwrap())
        .unwrap_err();
    assert_eq!(err.kind(), SinkErrorKind::Io);
}

impl Rig {
    /// The rotated files still waiting for their number.
    fn pending(&self) -> Vec<String> {
        pending_names(self.path.parent().unwrap())
    }
}

fn numbers(path: &std::path::Path) -> Vec<u64> {
    read_all(path)
        .iter()
        .map(|e| e.data()["i"].as_u64().unwrap())
        .collect()
}

#[test]
fn a_failing_renumbering_is_reported_and_loses_nothing() {
    let rig = rig(Fsync::Interval(std::time::Duration::from_millis(5)), 400);
    rig.fs.fail_always(Op::Renumber);
    emit(&rig, 40, "stuck");
    let err = rig.journal.flush(WAIT).unwrap_err();
    assert_eq!(err.kind(), SinkErrorKind::Io);
    assert!(err.to_string().contains("renumbering"), "{err}");
    let stats = rig.journal.stats();
    assert!(stats.rotations > 5, "{stats:?}");
    assert!(stats.io_errors >= 1 && stats.lost == 0, "{stats:?}");
    assert!(
        rig.bus.stats().events.journal_errors >= 1,
        "reported to the bus"
    );
    assert!(rig.errors.lock().unwrap().iter().all(|k| k == "io"));
    // The rotated files keep their pending names; retention (deleting the
    // oldest) still holds; a reader sees the rest once each, in order.
    let pending = rig.pending();
    assert_eq!(pending.len(), 3, "{pending:?}");
    let stuck = numbers(&rig.path);
    let first = stuck[0];
    assert!(first > 0);
    assert_eq!(stuck, (first..40).collect::<Vec<_>>());
    assert_whole_lines(&rig.path);

    rig.fs.heal();
    rig.journal.flush(WAIT).unwrap();
    assert!(rig.pending().is_empty(), "final names after flush");
    let files = crate::files(&rig.path);
    assert_eq!(
        files.len(),
        4,
        "max_files backups once quiescent: {files:?}"
    );
    for (i, f) in files.iter().enumerate() {
        let want = match i {
            3 => "events.jsonl".to_owned(),
            _ => format!("events.{}.jsonl", 3 - i),
        };
        assert_eq!(f.file_name().unwrap().to_str().unwrap(), want);
        assert!(std::fs::metadata(f).unwrap().len() <= 400);
    }
    // Renumbered in place: the same records, in the same order.
    assert_eq!(numbers(&rig.path), stuck);
    emit(&rig, 5, "after");
    rig.journal.flush(WAIT).unwrap();
    assert_eq!(tags(&rig.path).last().unwrap(), "after", "resumed");
}

#[test]
fn a_renumbering_that_fails_once_is_retried_by_the_next_flush() {
    let rig = rig(Fsync::Never, 400);
    emit(&rig, 10, "before");
    rig.journal.flush(WAIT).unwrap();
    rig.fs.fail(Op::Renumber, 1);
    emit(&rig, 10, "during");
    // Either the failed pass's error, or (if a later pass already repaired
    // it) success; the names are final either way once a flush succeeds.
    let _ = rig.journal.flush(WAIT);
    rig.journal.flush(WAIT).unwrap();
    assert!(rig.journal.stats().io_errors >= 1);
    assert_eq!(rig.journal.stats().lost, 0);
    assert!(rig.pending().is_empty());
    assert_eq!(crate::files(&rig.path).len(), 4, "3 backups, no gap");
    assert_whole_lines(&rig.path);
    let kept = numbers(&rig.path);
    assert_eq!(*kept.last().unwrap(), 9);
}

#[test]
fn clear_removes_pending_files_too() {
    let rig = rig(Fsync::Never, 400);
    rig.fs.fail_always(Op::Renumber);
    emit(&rig, 20, "stuck");
    let _ = rig.journal.flush(WAIT);
    assert!(!rig.pending().is_empty());
    rig.journal.clear().unwrap();
    assert!(rig.pending().is_empty());
    assert_eq!(crate::files(&rig.path), std::slice::from_ref(&rig.path));
    rig.fs.heal();
    emit(&rig, 20, "after");
    rig.journal.flush(WAIT).unwrap();
    assert!(rig.pending().is_empty());
    assert!(tags(&rig.path).iter().all(|t| t == "after"));
}

#[test]
fn with_fsync_always_rotation_and_renumbering_keep_every_record() {
    let rig = rig(Fsync::Always, 400);
    emit(&rig, 30, "durable");
    rig.journal.flush(WAIT).unwrap();
    let stats = rig.journal.stats();
    assert!(
        stats.rotations > 5 && stats.renumber_passes >= 1,
        "{stats:?}"
    );
    assert_eq!(stats.io_errors, 0);
    assert!(rig.pending().is_empty());
    assert_eq!(crate::files(&rig.path).len(), 4);
    let kept = numbers(&rig.path);
    assert_eq!(*kept.last().unwrap(), 29);
    assert_eq!(kept, (kept[0]..30).collect::<Vec<_>>());
    assert_whole_lines(&rig.path);
}

#[test]
fn a_waited_event_whose_write_fails_gets_the_error_then_an_io_marker() {
    let rig = rig(Fsync::Never, 1 << 20);
    let item = |seq: u64, tag: &str| {
        Event::builder("work.item")
            .seq(seq)
            .data(json!({"tag": tag}))
            .build()
            .unwrap()
    };
    rig.fs.fail(Op::Write, 1);
    let err = rig.journal.record_and_wait(&item(1, "during")).unwrap_err();
    assert_eq!(err.kind(), SinkErrorKind::Io, "{err}");
    // Writing works again: the marker comes first, with the next batch.
    rig.journal.record_and_wait(&item(2, "after")).unwrap();
    assert_eq!(tags(&rig.path), ["io", "after"]);
    let marker = &read_all(&rig.path)[0];
    assert_eq!((marker.seq(), marker.event_type()), (1, "work.item"));
    assert!(
        marker.data()["message"]
            .as_str()
            .unwrap()
            .contains("injected Write failure"),
        "{}",
        marker.data()
    );
    let stats = rig.journal.stats();
    assert_eq!((stats.lost, stats.markers), (1, 1), "{stats:?}");
}

#[test]
fn a_fault_handler_on_the_writer_thread_can_record_a_durable_event() {
    use nerve_core::sink::FaultReporter;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let fs = FaultyFs::new();
    let journal = Journal::builder(&path)
        .fsync(Fsync::Always)
        .drop_timeout(std::time::Duration::from_secs(2))
        .file_system(fs.clone())
        .build()
        .unwrap();
    // What a bus does with a fault: runs handlers, on the writer thread,
    // which may emit a terminal (durable) event of their own.
    let handle = Arc::new(Mutex::new(Some(journal.clone())));
    let results = Arc::new(Mutex::new(Vec::new()));
    let (h, r) = (handle.clone(), results.clone());
    journal.attach(FaultReporter::new(move |_| {
        let Some(j) = h.lock().unwrap().clone() else {
            return;
        };
        let alert = Event::builder("alert.failed").seq(100).build().unwrap();
        let waited = j.record_and_wait(&alert).map_err(|e| e.kind());
        let plain = j.record(&alert).map_err(|e| e.kind());
        r.lock().unwrap().push((waited, plain));
    }));
    fs.fail(Op::Sync, 1);
    let err = journal
        .record(&Event::builder("work.item").seq(1).build().unwrap())
        .unwrap_err();
    assert_eq!(err.kind(), SinkErrorKind::Io);
    // The failed sync with no waiter left is reported on the writer thread:
    // fail the next sync with nothing waiting, via a marker-only batch.
    fs.fail(Op::Sync, 1);
    let _ = journal.flush(WAIT);
    journal.flush(WAIT).unwrap();
    let results = results.lock().unwrap().clone();
    handle.lock().unwrap().take();
    assert!(!results.is_empty(), "the reporter ran");
    for (waited, plain) in &results {
        assert_eq!(*waited, Ok(()), "queued without waiting for itself");
        assert_eq!(*plain, Ok(()));
    }
    let types: Vec<String> = read_all(&path)
        .iter()
        .map(|e| e.event_type().to_owned())
        .collect();
    assert!(types.iter().any(|t| t == "alert.failed"), "{types:?}");
}

/// A full disk (every write failing): each event the journal loses is
/// reported once, with its id, whether or not a durable event shared its
/// batch (the durable one through its `emit`, which returns the error,
/// the others by the writer), and a terminal event's `emit` fails.
#[test]
fn on_a_full_disk_every_lost_event_is_reported_once_and_terminal_emits_fail() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let fs = FaultyFs::new();
    let journal = Journal::builder(&path)
        .file_system(fs.clone())
        .build()
        .unwrap();
    let bus = Bus::builder().journal(journal.clone()).build().unwrap();
    let reported = Arc::new(Mutex::new(Vec::new()));
    let seen = reported.clone();
    bus.subscribe("system.journal_error", move |e: &Event| {
        if let Some(id) = e.data()["event_id"].as_str() {
            seen.lock().unwrap().push(id.to_owned());
        }
    })
    .unwrap();
    fs.fail_always(Op::Write);
    let mut emitted = Vec::new();
    for batch in 0..20 {
        for i in 0..100 {
            let id = bus
                .emit("specimen.processing", json!({"batch": batch, "i": i}))
                .unwrap();
            emitted.push(id.to_string());
        }
        match bus.emit("batch.failed", json!({"batch": batch})) {
            Err(nerve_router::EmitError::NotRecorded { event_id, error }) => {
                assert_eq!(error.kind(), SinkErrorKind::Io, "{error}");
                emitted.push(event_id.to_string());
            }
            other => panic!("a terminal event not on disk: {other:?}"),
        }
    }
    let _ = journal.flush(WAIT);
    let stats = journal.stats();
    assert_eq!(stats.lost, 2_020, "{stats:?}");
    let mut reported = reported.lock().unwrap().clone();
    reported.sort_unstable();
    emitted.sort_unstable();
    assert_eq!(reported, emitted, "each lost event reported once");
    assert_eq!(stats.written, 0, "{stats:?}");
}
