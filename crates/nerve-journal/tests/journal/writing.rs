use std::sync::{Arc, Mutex};
use std::time::Duration;

use nerve_core::query::HistoryQuery;
use nerve_core::sink::EventSink;
use nerve_core::{Event, json};
use nerve_journal::{ERROR_MARKER_KEY, Fsync, Journal, JournalOverflow, MAX_DATA_DEPTH};
use nerve_router::Bus;

use crate::{WAIT, assert_whole_lines, files, names_in, read_all};

#[test]
fn a_bus_records_every_event_and_reads_them_back() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let journal = Journal::builder(&path).build().unwrap();
    let bus = Bus::builder().journal(journal.clone()).build().unwrap();
    for i in 0..50 {
        bus.emit(
            "task.progress",
            json!({"i": i, "metrics": {"success_rate": 0.5}}),
        )
        .unwrap();
    }
    bus.emit("user.login", json!({"user": "alice"})).unwrap();
    let newest = bus
        .events(&HistoryQuery::new().pattern("task.*").unwrap().limit(3))
        .unwrap();
    let is: Vec<_> = newest
        .iter()
        .map(|e| e.data()["i"].as_i64().unwrap())
        .collect();
    assert_eq!(is, [49, 48, 47]);
    let oldest = bus
        .events(&HistoryQuery::new().oldest_first().limit(1))
        .unwrap();
    assert_eq!(oldest[0].seq(), 1);

    bus.shutdown_blocking();
    let text = std::fs::read_to_string(&path).unwrap();
    assert_eq!(text.lines().count(), 51);
    for (n, line) in text.lines().enumerate() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        // What `jq -r '.event_type'` and `jq '.data.metrics.success_rate'` see.
        assert!(v["event_type"].is_string());
        if n < 50 {
            assert_eq!(v["data"]["metrics"]["success_rate"], 0.5);
        }
        assert_eq!(v["v"], 1);
        assert!(line.starts_with("{\"event_id\":\""), "{line}");
    }
    assert_eq!(journal.stats().written, 51);
    assert!(
        journal
            .record(&Event::builder("a.b").build().unwrap())
            .is_err(),
        "shutdown closed the journal"
    );
}

#[test]
fn rotation_is_exact_and_an_oversized_record_sits_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let max = 2_000;
    let journal = Journal::builder(&path)
        .max_bytes(max)
        .max_files(100)
        .fsync(Fsync::Never)
        .build()
        .unwrap();
    let mut sizes = Vec::new();
    for i in 0..200u64 {
        // Varying sizes, one far larger than max_bytes.
        let pad = if i == 77 {
            "x".repeat(5_000)
        } else {
            "y".repeat((i % 13 * 17) as usize)
        };
        journal
            .record(
                &Event::builder("a.b")
                    .seq(i + 1)
                    .data(json!({"pad": pad}))
                    .build()
                    .unwrap(),
            )
            .unwrap();
        sizes.push(pad.len());
    }
    journal.flush(WAIT).unwrap();
    let all = files(&path);
    assert_eq!(all.len() as u64, journal.stats().rotations + 1);
    let mut seqs = Vec::new();
    for f in &all {
        let bytes = std::fs::read(f).unwrap();
        assert!(!bytes.is_empty(), "no empty backups: {}", f.display());
        let lines = bytes
            .split(|b| *b == b'\n')
            .filter(|l| !l.is_empty())
            .count();
        if bytes.len() as u64 > max {
            assert_eq!(lines, 1, "an oversized record is alone in {}", f.display());
        }
        // Filling: the next file's first record would not have fitted.
        seqs.push(lines);
    }
    let events = read_all(&path);
    let got: Vec<u64> = events.iter().map(Event::seq).collect();
    assert_eq!(got, (1..=200).collect::<Vec<_>>());
    assert_whole_lines(&path);
    // Names: active plus events.1 .. events.N, no gaps.
    for k in 1..all.len() {
        assert!(dir.path().join(format!("events.{k}.jsonl")).exists());
    }
}

#[test]
fn each_file_is_filled_before_rotating() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let journal = Journal::builder(&path)
        .max_bytes(1_000)
        .max_files(50)
        .build()
        .unwrap();
    for _ in 0..100 {
        journal
            .record(&Event::new("a.b", json!("same size")).unwrap())
            .unwrap();
    }
    journal.flush(WAIT).unwrap();
    let line = std::fs::read_to_string(&path)
        .unwrap()
        .lines()
        .next()
        .unwrap()
        .len() as u64
        + 1;
    let per_file = 1_000 / line;
    for f in files(&path).iter().rev().skip(1) {
        assert_eq!(
            std::fs::metadata(f).unwrap().len(),
            per_file * line,
            "{}",
            f.display()
        );
    }
}

#[test]
fn fsync_always_acknowledges_after_sync() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let journal = Journal::builder(&path)
        .fsync(Fsync::Always)
        .build()
        .unwrap();
    let bus = Bus::builder().journal(journal.clone()).build().unwrap();
    std::thread::scope(|s| {
        for t in 0..4 {
            let bus = &bus;
            s.spawn(move || {
                for i in 0..25 {
                    bus.emit("a.b", json!({"t": t, "i": i})).unwrap();
                }
            });
        }
    });
    // Every emit returned after its sync: on disk without a flush.
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 100);
    let stats = journal.stats();
    assert!(stats.syncs >= 1 && stats.syncs <= 100, "{stats:?}");
}

#[test]
fn interval_fsync_syncs_without_being_asked() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::builder(dir.path().join("e.jsonl"))
        .fsync(Fsync::Interval(Duration::from_millis(10)))
        .build()
        .unwrap();
    journal
        .record(&Event::builder("a.b").build().unwrap())
        .unwrap();
    let start = std::time::Instant::now();
    while journal.stats().syncs == 0 {
        assert!(start.elapsed() < WAIT, "no interval sync");
        std::thread::yield_now();
    }
}

#[test]
fn drop_newest_counts_what_it_refuses() {
    let dir = tempfile::tempdir().unwrap();
    let journal = Journal::builder(dir.path().join("e.jsonl"))
        .capacity(1)
        .overflow(JournalOverflow::DropNewest)
        .fsync(Fsync::Never)
        .build()
        .unwrap();
    let bus = Bus::builder().journal(journal.clone()).build().unwrap();
    for _ in 0..5_000 {
        bus.emit("a.b", json!(null)).unwrap();
    }
    journal.flush(WAIT).unwrap();
    let stats = journal.stats();
    assert_eq!(stats.written + stats.dropped, 5_000, "{stats:?}");
    assert_eq!(bus.stats().events.journal_errors, stats.dropped);
}

#[test]
fn unwritable_payloads_get_a_marker_line_and_a_fault() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let journal = Journal::builder(&path)
        .redact_with(|e: &Event| {
            assert!(e.event_type() != "secret.boom", "hook failed");
            let mut data = e.data().clone();
            if let Some(obj) = data.as_object_mut() {
                if obj.contains_key("password") {
                    obj.insert("password".into(), json!("[REDACTED]"));
                }
            }
            Event::builder(e.event_type())
                .event_id(e.event_id())
                .data(data)
                .build()
                .unwrap()
        })
        .build()
        .unwrap();
    let bus = Bus::builder().journal(journal.clone()).build().unwrap();
    let errors = crate::journal_errors(&bus, "kind");

    let mut deep = json!(1);
    for _ in 0..=MAX_DATA_DEPTH {
        deep = json!([deep]);
    }
    bus.emit("user.login", json!({"user": "bob", "password": "hunter2"}))
        .unwrap();
    bus.emit("secret.boom", json!({"password": "hunter2"}))
        .unwrap();
    bus.emit("deep.payload", deep).unwrap();
    bus.flush_blocking();

    let text = std::fs::read_to_string(&path).unwrap();
    assert!(!text.contains("hunter2"), "{text}");
    let events = crate::read_all(&path);
    assert_eq!(events.len(), 3, "no event is missing");
    assert_eq!(events[0].data()["password"], "[REDACTED]");
    assert_eq!(events[1].data()[ERROR_MARKER_KEY], "redact");
    assert_eq!(events[2].data()[ERROR_MARKER_KEY], "too_deep");
    assert_eq!(journal.stats().serialize_errors, 2);
    assert_eq!(bus.stats().events.journal_errors, 2);
    assert_eq!(*errors.lock().unwrap(), ["serialize", "serialize"]);
}

#[test]
fn clear_removes_every_file_and_the_journal_carries_on() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let journal = Journal::builder(&path)
        .max_bytes(300)
        .max_files(3)
        .build()
        .unwrap();
    for _ in 0..20 {
        journal
            .record(&Event::builder("a.b").build().unwrap())
            .unwrap();
    }
    journal.clear().unwrap();
    assert_eq!(files(&path).len(), 1);
    assert_eq!(read_all(&path).len(), 0);
    journal
        .record(&Event::builder("a.c").build().unwrap())
        .unwrap();
    journal.flush(WAIT).unwrap();
    assert_eq!(read_all(&path).len(), 1);
}

#[test]
fn the_flush_guard_flushes_on_drop() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let journal = Journal::builder(&path).fsync(Fsync::Never).build().unwrap();
    {
        let _guard = journal.flush_guard();
        for _ in 0..1_000 {
            journal
                .record(&Event::builder("a.b").build().unwrap())
                .unwrap();
        }
    }
    assert_eq!(
        std::fs::read_to_string(&path).unwrap().lines().count(),
        1_000
    );
}

#[test]
fn aperion_logs_are_read_and_queried() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    std::fs::write(
        dir.path().join("events.1.jsonl"),
        concat!(
            r#"{"event_type": "user.login", "payload": {"user": "alice"}, "timestamp": 1700000000.123456, "event_id": "6f1c0b8e-3c1d-4c5e-9a0b-2b1d3c4e5f60", "source": "auth", "correlation_id": "req-abc-123"}"#,
            "\n",
            r#"{"event_type": "system.handler_error", "payload": {"error": "boom"}, "timestamp": 1700000001.5, "event_id": "7a2d1c9f-4e2b-4d6f-8b1c-3c2e4d5f6a71", "source": null, "correlation_id": null}"#,
            "\n"
        ),
    )
    .unwrap();
    // The journal opens an aperion log in place and appends its own lines.
    let journal = Journal::builder(&path).build().unwrap();
    journal
        .record(&Event::new("user.logout", json!({"user": "alice"})).unwrap())
        .unwrap();
    journal.flush(WAIT).unwrap();
    let all = read_all(&path);
    assert_eq!(all.len(), 3);
    assert_eq!(all[0].data()["user"], "alice");
    assert_eq!(all[0].timestamp().as_micros(), 1_700_000_000_123_456);
    let q = HistoryQuery::new().correlation_id("req-abc-123");
    let found = journal.query(&q).unwrap();
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].source(), Some("auth"));
    let since =
        HistoryQuery::new().since(nerve_core::Timestamp::from_micros(1_700_000_001_000_000));
    assert_eq!(journal.query(&since).unwrap().len(), 2);
}

#[test]
fn the_redactor_keeps_pii_off_the_disk() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let journal = Journal::builder(&path)
        .redact_with({
            let redactor = nerve_core::redact::Redactor::default();
            move |e: &Event| redactor.redact_event(e)
        })
        .build()
        .unwrap();
    let bus = Bus::builder().journal(journal).build().unwrap();
    let e = Event::builder("user.signup")
        .source("alice@example.com")
        .correlation_id("req-bob@example.org")
        .run_id("r1")
        .data(json!({"email": "carol@example.com", "password": "hunter2", "card": "4111 1111 1111 1111", "plan": "pro"}))
        .build()
        .unwrap();
    let seen = Arc::new(Mutex::new(None));
    let s = seen.clone();
    bus.subscribe("user.signup", move |e: &Event| {
        *s.lock().unwrap() = Some(e.data().clone())
    })
    .unwrap();
    let id = bus.emit_event(e).unwrap();
    bus.flush_blocking();
    let text = std::fs::read_to_string(&path).unwrap();
    for secret in [
        "alice@example.com",
        "bob@example.org",
        "carol@example.com",
        "hunter2",
        "4111",
    ] {
        assert!(!text.contains(secret), "{secret} reached the disk: {text}");
    }
    let events = crate::read_all(&path);
    assert_eq!(
        events[0].event_id(),
        id,
        "identity fields are the original's"
    );
    assert_eq!(events[0].run_id(), Some("r1"));
    assert_eq!(events[0].seq(), 1);
    assert_eq!(events[0].data()["plan"], "pro");
    assert_eq!(
        seen.lock().unwrap().as_ref().unwrap()["email"],
        "carol@example.com",
        "handlers see the original"
    );
}

#[test]
fn an_event_written_with_a_marker_is_dead_lettered_by_the_bus() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let journal = Journal::builder(&path)
        .redact_with(|e: &Event| {
            assert!(e.event_type() != "secret.boom", "redactor bug");
            e.clone()
        })
        .build()
        .unwrap();
    let dlq = nerve_router::DeadLetterQueue::new(10);
    let bus = Bus::builder()
        .journal(journal)
        .dead_letters(dlq.clone())
        .build()
        .unwrap();
    bus.emit("secret.boom", json!({"password": "hunter2"}))
        .unwrap();
    bus.emit("plain.event", json!({})).unwrap();
    bus.flush_blocking();
    let entries = dlq.by_reason(nerve_router::DeadLetterReason::SerializationError);
    assert_eq!(entries.len(), 1, "{:?}", dlq.entries());
    assert_eq!(entries[0].event.event_type(), "secret.boom");
    assert!(
        entries[0].error.contains("redaction panicked"),
        "{}",
        entries[0].error
    );
    assert_eq!(dlq.len(), 1, "nothing else was dead-lettered");
}

#[test]
fn syncs_count_the_sync_at_rotation_flush_and_close() {
    // docs/journal-format.md: under `Interval` the file is "also synced on
    // `flush`, at rotation, and on close"; `syncs` counts each of them.
    for fsync in [Fsync::Never, Fsync::Interval(Duration::from_secs(3600))] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let journal = Journal::builder(&path)
            .max_bytes(1_000)
            .max_files(20)
            .fsync(fsync)
            .build()
            .unwrap();
        let record = |i: u64| {
            let e = Event::builder("a.b")
                .seq(i)
                .data(json!({"pad": "z".repeat(300)}))
                .build()
                .unwrap();
            journal.record(&e).unwrap();
        };
        // Two or three records of ~450 bytes fill a file.
        for i in 1..=10 {
            record(i);
        }
        journal.flush(WAIT).unwrap();
        let s = journal.stats();
        assert!(s.rotations >= 3, "{fsync:?}: {s:?}");
        if fsync == Fsync::Never {
            assert_eq!(s.syncs, 0, "{s:?}");
        } else {
            // One at each rotation, one for the flush (the interval is
            // an hour: none of its own).
            assert_eq!(s.syncs, s.rotations + 1, "{s:?}");
        }
        record(11);
        journal.close(WAIT).unwrap();
        let closed = journal.stats();
        // Record 11 may rotate again: that sync, then close's.
        let expected = if fsync == Fsync::Never {
            0
        } else {
            s.syncs + (closed.rotations - s.rotations) + 1
        };
        assert_eq!(
            closed.syncs, expected,
            "close syncs what it wrote: {closed:?}"
        );
    }
}

#[test]
fn rotations_link_spares_into_place_and_leave_no_other_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let journal = Journal::builder(&path)
        .max_bytes(1_000)
        .max_files(3)
        .fsync(Fsync::Never)
        .build()
        .unwrap();
    let record = |i: u64| {
        let e = Event::builder("a.b")
            .seq(i)
            .data(json!({"pad": "z".repeat(300)}))
            .build()
            .unwrap();
        journal.record(&e).unwrap();
    };
    // Three records of ~400 bytes fill a file: the fourth rotates.
    for i in 1..=4 {
        record(i);
    }
    journal.flush(WAIT).unwrap();
    let s = journal.stats();
    assert_eq!(s.rotations, 1);
    if unnamed_files_supported(dir.path()) {
        // Spares are made when the journal opens: the first rotation
        // linked one into place instead of creating the file.
        assert_eq!(s.rotations_created, 0, "{s:?}");
    } else {
        assert_eq!(s.rotations_created, 1, "{s:?}");
    }
    for i in 5..=40 {
        record(i);
    }
    journal.flush(WAIT).unwrap();
    let s = journal.stats();
    assert!(
        s.rotations >= 10 && s.rotations_created <= s.rotations,
        "{s:?}"
    );
    drop(journal);
    // Spares have no names: only the journal's own files are there.
    assert_eq!(
        names_in(dir.path()),
        [
            "events.1.jsonl",
            "events.2.jsonl",
            "events.3.jsonl",
            "events.jsonl",
            "events.jsonl.lock",
            "events.jsonl.rename-lock"
        ]
    );
    let got: Vec<u64> = read_all(&path).iter().map(Event::seq).collect();
    assert_eq!(got.last(), Some(&40));
    assert!(
        got.windows(2).all(|w| w[1] == w[0] + 1),
        "a contiguous suffix"
    );
}

/// Whether `dir`'s file system makes unnamed files (`O_TMPFILE`), which
/// spares need; elsewhere every rotation creates its file.
fn unnamed_files_supported(dir: &std::path::Path) -> bool {
    #[cfg(target_os = "linux")]
    {
        use rustix::fs::{Mode, OFlags};
        rustix::fs::open(
            dir,
            OFlags::WRONLY | OFlags::TMPFILE | OFlags::CLOEXEC,
            Mode::from_raw_mode(0o600),
        )
        .is_ok()
    }
    #[cfg(not(target_os = "linux"))]
    {
        let _ = dir;
        false
    }
}
