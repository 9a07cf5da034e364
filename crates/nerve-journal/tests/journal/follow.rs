use std::time::Duration;

use nerve_core::sink::EventSink;
use nerve_core::{Event, json};
use nerve_journal::{Fsync, Journal};

use crate::{WAIT, pending_names};

#[test]
fn follow_crosses_rotations_without_losing_or_repeating() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let journal = Journal::builder(&path)
        .max_bytes(2_000)
        .max_files(1_000)
        .fsync(Fsync::Never)
        .build()
        .unwrap();
    journal
        .record(&Event::new("old.event", json!(0)).unwrap())
        .unwrap();
    journal.flush(WAIT).unwrap();
    let mut tail = journal
        .follow()
        .unwrap()
        .poll_interval(Duration::from_millis(1));
    let total = 3_000u64;
    let writer = {
        let journal = journal.clone();
        std::thread::spawn(move || {
            for i in 0..total {
                journal
                    .record(&Event::builder("a.b").seq(i + 1).build().unwrap())
                    .unwrap();
                if i % 100 == 0 {
                    journal.flush(WAIT).unwrap();
                }
            }
            journal.flush(WAIT).unwrap();
        })
    };
    let mut seqs = Vec::new();
    while seqs.len() < total as usize {
        let e = tail.next_timeout(WAIT).expect("the tail keeps up").unwrap();
        seqs.push(e.seq());
    }
    writer.join().unwrap();
    assert_eq!(seqs, (1..=total).collect::<Vec<_>>());
    assert!(journal.stats().rotations > 50, "{:?}", journal.stats());
    assert!(
        tail.next_timeout(Duration::from_millis(50)).is_none(),
        "nothing repeated"
    );
}

#[test]
fn follow_and_replay_read_pending_files_in_order() {
    use nerve_journal::fs::{FaultyFs, Op};
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let fs = FaultyFs::new();
    // Renumbering stuck: every rotated file stays pending.
    fs.fail_always(Op::Renumber);
    let journal = Journal::builder(&path)
        .max_bytes(600)
        .max_files(100)
        .fsync(Fsync::Never)
        .file_system(fs.clone())
        .build()
        .unwrap();
    let mut tail = nerve_journal::Follow::from_start(&path)
        .unwrap()
        .poll_interval(Duration::from_millis(1));
    for i in 0..60 {
        journal
            .record(&Event::builder("a.b").seq(i + 1).build().unwrap())
            .unwrap();
    }
    assert!(journal.flush(WAIT).is_err(), "the renumbering failed");
    assert!(journal.stats().rotations > 5);
    let pending = pending_names(dir.path()).len();
    assert!(pending > 5, "{pending} pending files");
    let mut seqs = Vec::new();
    while seqs.len() < 60 {
        seqs.push(
            tail.next_timeout(WAIT)
                .expect("the tail keeps up")
                .unwrap()
                .seq(),
        );
    }
    assert_eq!(seqs, (1..=60).collect::<Vec<_>>());

    // Replay reads them in the same order.
    let bus = nerve_router::Bus::builder().build().unwrap();
    let seen = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let s = seen.clone();
    bus.subscribe("a.b", move |e: &Event| {
        s.lock().unwrap().push(e.event_id());
    })
    .unwrap();
    let report = nerve_journal::replay(
        nerve_journal::JournalReader::open(&path).unwrap(),
        &nerve_core::query::HistoryQuery::new(),
        &bus,
    )
    .unwrap();
    assert_eq!(report.replayed, 60);
    let ids: Vec<_> = crate::read_all(&path).iter().map(Event::event_id).collect();
    assert_eq!(*seen.lock().unwrap(), ids);

    // Renumbering resumes; the tail goes on across the renames.
    fs.heal();
    for i in 60..80 {
        journal
            .record(&Event::builder("a.b").seq(i + 1).build().unwrap())
            .unwrap();
    }
    journal.flush(WAIT).unwrap();
    while seqs.len() < 80 {
        seqs.push(
            tail.next_timeout(WAIT)
                .expect("the tail keeps up")
                .unwrap()
                .seq(),
        );
    }
    assert_eq!(seqs, (1..=80).collect::<Vec<_>>());
}

/// A run killed mid-write leaves a torn last line; the next run into the
/// same log cuts it (setting it aside in `events.jsonl.torn`) and appends.
/// A tail that followed both runs says a line was torn and reads the next
/// run's records whole: none is lost or merged with the torn bytes.
#[test]
fn a_tail_across_a_crash_and_the_next_run_reads_the_next_run_whole() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let first = Journal::builder(&path).fsync(Fsync::Never).build().unwrap();
    for n in 1..=3 {
        first
            .record(&Event::builder("run.one").seq(n).build().unwrap())
            .unwrap();
    }
    first.close(WAIT).unwrap();
    drop(first);
    // The crash: half of a fourth record reached the file.
    let torn = Event::builder("run.one").seq(4).build().unwrap();
    let torn = serde_json::to_string(&torn).unwrap();
    let torn = &torn.as_bytes()[..torn.len() / 2];
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    std::io::Write::write_all(&mut file, torn).unwrap();
    drop(file);

    let mut tail = nerve_journal::Follow::from_start(&path)
        .unwrap()
        .poll_interval(Duration::from_millis(1));
    for n in 1..=3 {
        assert_eq!(tail.next_timeout(WAIT).unwrap().unwrap().seq(), n);
    }
    assert!(tail.next_timeout(Duration::from_millis(5)).is_none());

    let second = Journal::builder(&path).fsync(Fsync::Never).build().unwrap();
    assert_eq!(second.recovery().torn_bytes, torn.len() as u64);
    for n in 1..=2 {
        second
            .record(
                &Event::builder("run.two")
                    .data(json!({"n": n}))
                    .build()
                    .unwrap(),
            )
            .unwrap();
    }
    second.flush(WAIT).unwrap();
    let cut = tail.next_timeout(WAIT).unwrap().unwrap_err();
    assert!(
        cut.to_string().ends_with(&format!(
            ":4: torn last line ({} bytes without a newline)",
            torn.len()
        )),
        "{cut}"
    );
    for n in 1..=2 {
        let e = tail.next_timeout(WAIT).unwrap().unwrap();
        assert_eq!((e.event_type(), e.data()), ("run.two", &json!({"n": n})));
    }
    assert_eq!(
        std::fs::read(dir.path().join("events.jsonl.torn")).unwrap(),
        [torn, b"\n"].concat()
    );
    second.close(WAIT).unwrap();
}
