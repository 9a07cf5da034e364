use std::time::Duration;

use nerve_core::sink::EventSink;
use nerve_core::{Event, json};
use nerve_journal::{Fsync, Journal};

use crate::WAIT;

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
