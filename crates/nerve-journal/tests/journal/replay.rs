use std::sync::{Arc, Mutex};

use nerve_core::query::HistoryQuery;
use nerve_core::{Event, json};
use nerve_journal::{GAP_EVENT_TYPE, Journal, is_replayed};
use nerve_router::Bus;

#[test]
fn replay_rebuilds_state_with_original_ids_and_is_not_recorded_twice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let originals: Vec<Event> = {
        let journal = Journal::builder(&path).build().unwrap();
        let bus = Bus::builder().journal(journal.clone()).build().unwrap();
        for i in 0..10 {
            bus.emit("account.credit", json!({"amount": i})).unwrap();
        }
        bus.emit("other.thing", json!(null)).unwrap();
        bus.shutdown_blocking();
        crate::read_all(&path)
    };

    // A restarted service: same journal, fresh bus, state rebuilt by replay.
    let journal = Journal::builder(&path).build().unwrap();
    let bus = Bus::builder().journal(journal.clone()).build().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    bus.subscribe("account.*", move |e: &Event| {
        log.lock().unwrap().push(e.clone())
    })
    .unwrap();
    let report = journal
        .replay(&HistoryQuery::new().pattern("account.*").unwrap(), &bus)
        .unwrap();
    assert_eq!(report.replayed, 10);
    let seen = seen.lock().unwrap();
    let balance: i64 = seen
        .iter()
        .map(|e| e.data()["amount"].as_i64().unwrap())
        .sum();
    assert_eq!(balance, 45);
    for (got, original) in seen.iter().zip(&originals) {
        assert!(is_replayed(got));
        assert!(!is_replayed(original));
        assert_eq!(got.event_id(), original.event_id());
        assert_eq!(got.timestamp(), original.timestamp());
        assert_eq!(got.data(), original.data());
        assert_eq!(got.correlation_id(), original.correlation_id());
    }
    drop(seen);
    bus.emit("account.credit", json!({"amount": 100})).unwrap();
    bus.shutdown_blocking();
    let lines = crate::read_all(&path);
    let (gaps, events): (Vec<Event>, Vec<Event>) = lines
        .into_iter()
        .partition(|e| e.event_type() == GAP_EVENT_TYPE);
    assert_eq!(events.len(), 12, "replayed events are not appended again");
    let mut ids: Vec<_> = events.iter().map(Event::event_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 12, "no event id twice");
    // Their numbers are accounted for by one range line, in place.
    assert_eq!(gaps.len(), 1, "{gaps:?}");
    let gap = gaps[0].data();
    let (from, to) = (
        gap["from_seq"].as_u64().unwrap(),
        gap["to_seq"].as_u64().unwrap(),
    );
    assert_eq!((to - from + 1, gap["count"].as_u64()), (10, Some(10)));
    assert_eq!(gap["reason"], "replayed");
    assert_eq!(events[11].seq(), to + 1, "the live event follows the range");
    let stats = journal.stats();
    assert_eq!(stats.skipped_replayed, 10);
    assert_eq!((stats.gaps, stats.gap_events), (1, 10));
}

#[test]
fn replay_with_a_newest_first_limit_emits_the_newest_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let journal = Journal::builder(&path).build().unwrap();
    let bus = Bus::builder().journal(journal.clone()).build().unwrap();
    for i in 0..10 {
        bus.emit("n.tick", json!(i)).unwrap();
    }
    let target = Bus::new();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    target
        .subscribe("*", move |e: &Event| {
            log.lock().unwrap().push(e.data().as_i64().unwrap())
        })
        .unwrap();
    journal
        .replay(&HistoryQuery::new().limit(3), &target)
        .unwrap();
    assert_eq!(*seen.lock().unwrap(), [7, 8, 9]);
}
