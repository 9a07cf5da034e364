//! Every number the bus assigns appears in the journal, as the event or as a
//! marker line; `record_and_wait` and `last_seq`, the bus's side of it.

use std::collections::BTreeSet;
use std::sync::Mutex;
use std::sync::mpsc;
use std::time::Duration;

use nerve_core::sink::{EventSink, SinkErrorKind};
use nerve_core::{Event, json};
use nerve_journal::{Fsync, GAP_EVENT_TYPE, Journal, JournalOverflow};

use crate::{WAIT, read_all};

fn numbered(seq: u64) -> Event {
    Event::builder("specimen.completed")
        .seq(seq)
        .data(json!({"specimen": seq, "ok": true}))
        .build()
        .unwrap()
}

/// The numbers the journal at `path` accounts for: each event's `seq`, and
/// every number of each range line. Panics on a number seen twice as an
/// event or marker line.
fn accounted(path: &std::path::Path) -> BTreeSet<u64> {
    let mut seen = BTreeSet::new();
    for e in read_all(path) {
        if e.event_type() == GAP_EVENT_TYPE {
            let d = e.data();
            let (from, to) = (
                d["from_seq"].as_u64().unwrap(),
                d["to_seq"].as_u64().unwrap(),
            );
            assert!(d["count"].as_u64().unwrap() <= to - from + 1, "{d}");
            seen.extend(from..=to);
        } else {
            assert!(seen.insert(e.seq()), "seq {} twice", e.seq());
        }
    }
    seen
}

/// A journal whose writer thread stops in the redaction hook on the event
/// `hold.writer` (seq 1, recorded here) until the returned sender is
/// dropped: lets a test fill the queue deterministically.
fn held_writer(path: &std::path::Path, capacity: usize) -> (Journal, mpsc::Sender<()>) {
    let (release, held) = mpsc::channel::<()>();
    let (entered, inside) = mpsc::channel::<()>();
    let hook = Mutex::new((held, entered));
    let journal = Journal::builder(path)
        .capacity(capacity)
        .overflow(JournalOverflow::DropNewest)
        .fsync(Fsync::Never)
        .drop_timeout(Duration::from_millis(200))
        .redact_with(move |e| {
            if e.event_type() == "hold.writer" {
                let hook = hook.lock().unwrap();
                let _ = hook.1.send(());
                let _ = hook.0.recv();
            }
            e.clone()
        })
        .build()
        .unwrap();
    journal
        .record(&Event::builder("hold.writer").seq(1).build().unwrap())
        .unwrap();
    inside.recv_timeout(WAIT).unwrap();
    (journal, release)
}

#[test]
fn events_a_full_queue_refuses_are_written_as_dropped_markers() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    // The writer is stopped: 4 fit in the queue, the rest are refused.
    let (journal, release) = held_writer(&path, 4);
    let mut refused = 0;
    for seq in 2..=20 {
        match journal.record(&numbered(seq)) {
            Ok(()) => {}
            Err(e) => {
                assert_eq!(e.kind(), SinkErrorKind::Full);
                refused += 1;
            }
        }
    }
    drop(release);
    journal.flush(WAIT).unwrap();
    let stats = journal.stats();
    assert_eq!(stats.dropped, refused, "{stats:?}");
    assert_eq!(refused, 15);
    assert_eq!(stats.markers, refused, "{stats:?}");
    assert_eq!(
        accounted(&path),
        (1..=20).collect(),
        "every seq accounted for"
    );
    let markers: Vec<Event> = read_all(&path)
        .into_iter()
        .filter(|e| e.data().get("$nerve_error").is_some())
        .collect();
    assert_eq!(markers.len() as u64, refused);
    for m in &markers {
        assert_eq!(
            m.event_type(),
            "specimen.completed",
            "the event's own envelope"
        );
        assert_eq!(m.data()["$nerve_error"], "dropped");
        assert!(m.data()["message"].as_str().unwrap().contains("queue full"));
    }
}

#[test]
fn refusals_beyond_the_side_list_become_one_gap_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let (journal, release) = held_writer(&path, 1);
    let mut refused = 0u64;
    for seq in 2..=3_000 {
        if journal.record(&numbered(seq)).is_err() {
            refused += 1;
        }
    }
    drop(release);
    journal.flush(WAIT).unwrap();
    let stats = journal.stats();
    assert_eq!(stats.dropped, refused);
    assert_eq!(stats.markers, 1_024, "{stats:?}");
    assert_eq!(stats.gaps, 1, "{stats:?}");
    assert_eq!(stats.markers + stats.gap_events, refused, "{stats:?}");
    assert_eq!(accounted(&path), (1..=3_000).collect());
    let gap = read_all(&path)
        .into_iter()
        .find(|e| e.event_type() == GAP_EVENT_TYPE)
        .unwrap();
    assert_eq!(gap.data()["reason"], "dropped");
    assert_eq!(gap.data()["to_seq"], 3_000);
    assert_eq!(gap.source(), Some("nerve"));
}

#[test]
fn record_and_wait_times_out_when_the_writer_is_stuck_and_owes_a_marker() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let (journal, release) = held_writer(&path, 1);
    journal.record(&numbered(2)).unwrap();
    // Taken by no one: the queue stays full for the whole drop timeout.
    let err = journal.record_and_wait(&numbered(3)).unwrap_err();
    assert_eq!(err.kind(), SinkErrorKind::Timeout, "{err}");
    drop(release);
    journal.flush(WAIT).unwrap();
    assert_eq!(accounted(&path), (1..=3).collect());
    let marker = read_all(&path).into_iter().find(|e| e.seq() == 3).unwrap();
    assert_eq!(marker.data()["$nerve_error"], "dropped");
    assert!(
        marker.data()["message"]
            .as_str()
            .unwrap()
            .contains("did not take")
    );
}

#[test]
fn record_and_wait_returns_with_the_event_in_the_file() {
    for fsync in [
        Fsync::Never,
        Fsync::Interval(Duration::from_secs(3600)),
        Fsync::Always,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let journal = Journal::builder(&path)
            .fsync(fsync)
            .max_bytes(2_000)
            .max_files(1_000)
            .build()
            .unwrap();
        for seq in 1..=200 {
            if seq % 10 == 0 {
                journal.record_and_wait(&numbered(seq)).unwrap();
                // No flush: the file already holds this event and all before it.
                let on_disk: Vec<u64> = read_all(&path).iter().map(Event::seq).collect();
                assert_eq!(on_disk, (1..=seq).collect::<Vec<_>>(), "{fsync:?}");
            } else {
                journal.record(&numbered(seq)).unwrap();
            }
        }
        let stats = journal.stats();
        assert!(stats.rotations > 3, "{fsync:?}: {stats:?}");
        if fsync != Fsync::Always {
            // Waiting asks for no sync: only rotation syncs (under
            // Interval, one each, counted), none under Never.
            let rotation_syncs = if fsync == Fsync::Never {
                0
            } else {
                stats.rotations
            };
            assert_eq!(stats.syncs, rotation_syncs, "{fsync:?}: {stats:?}");
        }
    }
}

#[test]
fn last_seq_is_the_highest_number_on_disk_when_opened() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let open = || {
        Journal::builder(&path)
            .max_bytes(1_000)
            .max_files(3)
            .build()
            .unwrap()
    };
    assert_eq!(open().last_seq(), None, "a new journal");
    {
        let j = open();
        // Concurrent emitters hand events over slightly out of order.
        for seq in [1, 2, 3, 5, 4, 7, 6] {
            j.record(&numbered(seq)).unwrap();
        }
    }
    assert_eq!(open().last_seq(), Some(7));
    {
        // Across a rotation, continuing the sequence.
        let j = open();
        let mut seq = j.last_seq().unwrap();
        while j.stats().rotations < 2 {
            seq += 1;
            j.record_and_wait(&numbered(seq)).unwrap();
        }
    }
    let j = open();
    assert_eq!(j.last_seq(), Some(seq_on_disk(&path)));
    drop(j);
    // A torn last line does not count; a range line counts with its end.
    std::fs::write(
        &path,
        format!(
            "{}\n{{\"event_id\":\"0190b6e0-8c4e-7a31-9f2d-3c5b1e7a9d40\",\"event_type\":\"{GAP_EVENT_TYPE}\",\
             \"timestamp\":\"2026-11-23T09:01:32.123456Z\",\"data\":{{\"from_seq\":41,\"to_seq\":60,\"count\":3,\"reason\":\"dropped\"}},\"v\":1}}\n{{\"seq\":99",
            serde_json::to_string(&json!({
                "event_id": "0190b6e0-8c4e-7a31-9f2d-3c5b1e7a9d41",
                "event_type": "a.b", "timestamp": "2026-11-23T09:01:32.123456Z",
                "seq": 40, "data": null, "v": 1
            }))
            .unwrap()
        ),
    )
    .unwrap();
    let j = open();
    assert_eq!(j.recovery().torn_bytes, 9);
    assert_eq!(j.last_seq(), Some(60));
}

#[test]
fn an_empty_active_file_reads_the_newest_backup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let line = |seq: u64| {
        let mut s = serde_json::to_string(&json!({
            "event_id": "0190b6e0-8c4e-7a31-9f2d-3c5b1e7a9d40",
            "event_type": "a.b", "timestamp": "2026-11-23T09:01:32.123456Z",
            "seq": seq, "data": "x".repeat(200), "v": 1
        }))
        .unwrap();
        s.push('\n');
        s
    };
    std::fs::write(dir.path().join("events.2.jsonl"), line(1)).unwrap();
    // More than the 64 records looked at, the highest not last.
    let newest: String = (2..200).map(line).chain([line(250), line(201)]).collect();
    std::fs::write(dir.path().join("events.p9.jsonl"), newest).unwrap();
    std::fs::write(&path, "").unwrap();
    let j = Journal::builder(&path).build().unwrap();
    assert_eq!(j.recovery().pending, 1);
    assert_eq!(j.last_seq(), Some(250));
}

/// The highest `seq` of the journal, read in full.
fn seq_on_disk(path: &std::path::Path) -> u64 {
    read_all(path).iter().map(Event::seq).max().unwrap()
}

#[test]
fn a_newest_file_without_numbers_defers_to_the_one_before() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let line = serde_json::to_string(&json!({
        "event_id": "0190b6e0-8c4e-7a31-9f2d-3c5b1e7a9d40",
        "event_type": "a.b", "timestamp": "2026-11-23T09:01:32.123456Z",
        "seq": 12, "data": null, "v": 1
    }))
    .unwrap();
    std::fs::write(dir.path().join("events.1.jsonl"), format!("{line}\n")).unwrap();
    std::fs::write(&path, "not json\n").unwrap();
    let j = Journal::builder(&path).build().unwrap();
    assert_eq!(j.last_seq(), Some(12));
}
