use nerve_core::sink::EventSink;
use nerve_core::{Event, json};
use nerve_journal::{Fsync, Journal, JournalReader, ReadError};

use crate::WAIT;

#[test]
fn truncation_at_every_byte_of_the_last_two_records() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let journal = Journal::builder(&path).fsync(Fsync::Never).build().unwrap();
    for i in 0..5 {
        journal
            .record(
                &Event::builder("a.b")
                    .seq(i + 1)
                    .data(json!({"i": i, "s": "é"}))
                    .build()
                    .unwrap(),
            )
            .unwrap();
    }
    journal.close(WAIT).unwrap();
    let full = std::fs::read(&path).unwrap();
    let boundaries: Vec<usize> = full
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .map(|(i, _)| i + 1)
        .collect();
    let from = boundaries[2];
    for cut in from..full.len() {
        let case = tempfile::tempdir().unwrap();
        let p = case.path().join("events.jsonl");
        std::fs::write(&p, &full[..cut]).unwrap();
        let whole = boundaries.iter().filter(|b| **b <= cut).count();
        let torn = !boundaries.contains(&cut);

        let items: Vec<_> = JournalReader::open(&p).unwrap().collect();
        let events: Vec<u64> = items
            .iter()
            .filter_map(|r| r.as_ref().ok())
            .map(Event::seq)
            .collect();
        assert_eq!(
            events,
            (1..=whole as u64).collect::<Vec<_>>(),
            "cut at {cut}"
        );
        let reports: Vec<_> = items.iter().filter_map(|r| r.as_ref().err()).collect();
        assert_eq!(
            reports.len(),
            usize::from(torn),
            "cut at {cut}: {reports:?}"
        );
        if torn {
            assert!(
                matches!(reports[0], ReadError::TornTail { .. }),
                "{reports:?}"
            );
        }

        // Reopening quarantines the torn line, and the next append starts clean.
        let reopened = Journal::builder(&p).build().unwrap();
        assert_eq!(reopened.recovery().torn_bytes > 0, torn, "cut at {cut}");
        reopened
            .record(&Event::builder("a.after").seq(99).build().unwrap())
            .unwrap();
        reopened.close(WAIT).unwrap();
        let after: Vec<u64> = crate::read_all(&p).iter().map(Event::seq).collect();
        let mut want: Vec<u64> = (1..=whole as u64).collect();
        want.push(99);
        assert_eq!(after, want, "cut at {cut}");
        if torn {
            let q = std::fs::read(case.path().join("events.jsonl.torn")).unwrap();
            assert_eq!(&q[..q.len() - 1], &full[boundaries[whole - 1]..cut]);
        }
    }
}

#[test]
fn a_missing_active_file_and_gaps_are_repaired_on_open() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let line = |seq: u64| {
        let mut s = String::new();
        let e = Event::builder("a.b").seq(seq).build().unwrap();
        s.push_str(&serde_json::to_string(&e).unwrap());
        s.push('\n');
        s
    };
    std::fs::write(dir.path().join("events.4.jsonl"), line(1)).unwrap();
    std::fs::write(dir.path().join("events.2.jsonl"), line(2)).unwrap();
    let journal = Journal::builder(&path).max_files(5).build().unwrap();
    let r = journal.recovery();
    assert!(r.renumbered && r.created_active);
    assert!(
        dir.path().join("events.1.jsonl").exists() && dir.path().join("events.2.jsonl").exists()
    );
    assert!(!dir.path().join("events.4.jsonl").exists());
    journal
        .record(&Event::builder("a.b").seq(3).build().unwrap())
        .unwrap();
    journal.flush(WAIT).unwrap();
    let seqs: Vec<u64> = crate::read_all(&path).iter().map(Event::seq).collect();
    assert_eq!(seqs, [1, 2, 3]);
}

#[test]
fn a_torn_tail_is_reported_to_the_bus_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    std::fs::write(&path, "{\"event_id\":\"01").unwrap();
    let journal = Journal::builder(&path).build().unwrap();
    let bus = nerve_router::Bus::builder()
        .journal(journal)
        .build()
        .unwrap();
    assert_eq!(bus.stats().events.journal_errors, 1);
    let errors = bus.history(
        &nerve_core::query::HistoryQuery::new()
            .pattern("system.journal_error")
            .unwrap(),
    );
    assert_eq!(errors.len(), 1);
    assert!(errors[0].data()["error"].as_str().unwrap().contains("torn"));
}

#[test]
fn a_crash_between_the_rename_and_the_new_file_is_finished_at_open() {
    // The names a SIGKILL leaves right after the writer renamed the full
    // active file to its pending name, before the new one was linked in.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let line = |seq: u64| {
        let e = Event::builder("a.b").seq(seq).build().unwrap();
        let j = Journal::builder(dir.path().join("scratch.jsonl"))
            .build()
            .unwrap();
        j.record(&e).unwrap();
        j.close(WAIT).unwrap();
        let text = std::fs::read_to_string(dir.path().join("scratch.jsonl")).unwrap();
        std::fs::remove_file(dir.path().join("scratch.jsonl")).unwrap();
        text
    };
    std::fs::write(dir.path().join("events.2.jsonl"), line(1)).unwrap();
    std::fs::write(dir.path().join("events.1.jsonl"), line(2)).unwrap();
    std::fs::write(dir.path().join("events.p7.jsonl"), line(3)).unwrap();
    assert!(!path.exists());
    let journal = Journal::builder(&path).max_files(5).build().unwrap();
    let r = journal.recovery();
    assert!(r.created_active && r.renumbered && r.pending == 1, "{r:?}");
    assert_eq!(journal.last_seq(), Some(3));
    journal
        .record_and_wait(&Event::builder("a.b").seq(4).build().unwrap())
        .unwrap();
    let seqs: Vec<u64> = crate::read_all(&path).iter().map(Event::seq).collect();
    assert_eq!(seqs, [1, 2, 3, 4]);
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
        ]
    );
}

/// Concurrent emitters hand events to the writer slightly out of `seq`
/// order; when a rotation falls between such a pair, the higher number is in
/// the older file. Reopening must still find it, or the bus would number its
/// next event with a `seq` the journal already holds.
#[test]
fn the_last_seq_is_found_across_a_rotation_that_split_an_out_of_order_pair() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    // Every record in a file of its own: each write rotates.
    let journal = Journal::builder(&path)
        .fsync(Fsync::Never)
        .max_bytes(1)
        .max_files(10)
        .build()
        .unwrap();
    for seq in [1, 2, 4, 3] {
        let event = Event::builder("a.b").seq(seq).build().unwrap();
        journal.record(&event).unwrap();
    }
    journal.close(WAIT).unwrap();
    drop(journal);
    let reopened = Journal::builder(&path)
        .fsync(Fsync::Never)
        .max_bytes(1)
        .max_files(10)
        .build()
        .unwrap();
    assert_eq!(reopened.last_seq(), Some(4));
}
