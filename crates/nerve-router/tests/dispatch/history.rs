//! History queries against the bus's in-memory ring.

use nerve_core::query::HistoryQuery;
use nerve_core::{Event, Timestamp, json};
use nerve_router::Bus;

fn types(events: &[Event]) -> Vec<String> {
    events.iter().map(|e| e.data()["n"].to_string()).collect()
}

fn emit(bus: &Bus, event_type: &str, n: u32, source: &str, run: &str, correlation: &str) {
    let event = Event::builder(event_type)
        .data(json!({"n": n}))
        .source(source)
        .run_id(run)
        .correlation_id(correlation)
        .timestamp(Timestamp::from_micros(1_000_000 * i64::from(n)))
        .build()
        .unwrap();
    bus.emit_event(event).unwrap();
}

fn populated() -> Bus {
    let bus = Bus::new();
    emit(&bus, "task.started", 1, "wf-1", "run-a", "req-1");
    emit(&bus, "task.done", 2, "wf-1", "run-a", "req-1");
    emit(&bus, "user.login", 3, "auth", "run-b", "req-2");
    emit(&bus, "task.failed", 4, "wf-2", "run-b", "req-2");
    emit(&bus, "task.run.failed", 5, "wf-2", "run-c", "req-3");
    bus
}

#[test]
fn every_condition_must_hold() {
    let bus = populated();
    let check = |query: HistoryQuery, expected: &[&str]| {
        assert_eq!(types(&bus.history(&query)), expected, "{query:?}");
    };
    check(HistoryQuery::new(), &["5", "4", "3", "2", "1"]);
    check(
        HistoryQuery::new().oldest_first(),
        &["1", "2", "3", "4", "5"],
    );
    check(HistoryQuery::new().limit(2), &["5", "4"]);
    check(HistoryQuery::new().oldest_first().limit(2), &["1", "2"]);
    check(
        HistoryQuery::new().pattern("task.*").unwrap(),
        &["5", "4", "2", "1"],
    );
    check(HistoryQuery::new().pattern("*.failed").unwrap(), &["4"]);
    check(
        HistoryQuery::new()
            .pattern("user.*")
            .unwrap()
            .pattern("*.done")
            .unwrap(),
        &["3", "2"],
    );
    check(HistoryQuery::new().source("wf-2"), &["5", "4"]);
    check(HistoryQuery::new().run_id("run-b"), &["4", "3"]);
    check(HistoryQuery::new().correlation_id("req-1"), &["2", "1"]);
    check(
        HistoryQuery::new()
            .pattern("task.*")
            .unwrap()
            .run_id("run-b"),
        &["4"],
    );
    check(
        HistoryQuery::new()
            .since(Timestamp::from_micros(2_000_000))
            .until(Timestamp::from_micros(4_000_000)),
        &["4", "3", "2"],
    );
    check(HistoryQuery::new().source("nobody"), &[]);
}

#[test]
fn the_ring_keeps_the_most_recent_events() {
    let bus = Bus::builder().history_capacity(3).build().unwrap();
    for n in 0..10 {
        bus.emit("tick.tock", json!({"n": n})).unwrap();
    }
    assert_eq!(types(&bus.history(&HistoryQuery::new())), ["9", "8", "7"]);
    assert_eq!(bus.stats().history_size, 3);
    bus.clear_history();
    assert!(bus.history(&HistoryQuery::new()).is_empty());
    bus.emit("tick.tock", json!({"n": 10})).unwrap();
    assert_eq!(types(&bus.history(&HistoryQuery::new())), ["10"]);
}

#[test]
fn zero_capacity_turns_history_off() {
    let bus = Bus::builder().history_capacity(0).build().unwrap();
    bus.emit("tick.tock", json!({"n": 1})).unwrap();
    assert!(bus.history(&HistoryQuery::new()).is_empty());
    let stats = bus.stats();
    assert_eq!((stats.history_size, stats.history_capacity), (0, 0));
    assert_eq!(stats.events.emitted, 1);
}

#[test]
fn history_holds_the_accepted_event() {
    let bus = Bus::new();
    let id = bus.emit("a.b", json!({"x": 1})).unwrap();
    let found = bus.history(&HistoryQuery::new());
    assert_eq!(found.len(), 1);
    assert_eq!(found[0].event_id(), id);
    assert_eq!(found[0].seq(), 1);
    assert!(
        found[0].correlation_id().is_some(),
        "a fresh id was generated"
    );
}

#[test]
fn the_history_of_several_threads_is_the_newest_events_by_seq() {
    let bus = Bus::builder().history_capacity(100).build().unwrap();
    std::thread::scope(|s| {
        for t in 0..4 {
            let bus = &bus;
            s.spawn(move || {
                for n in 0..500 {
                    bus.emit("tick.tock", json!({"n": t * 1000 + n})).unwrap();
                }
            });
        }
    });
    let seqs = |bus: &Bus| -> Vec<u64> {
        bus.history(&HistoryQuery::new().oldest_first())
            .iter()
            .map(Event::seq)
            .collect()
    };
    assert_eq!(seqs(&bus), (1901..=2000).collect::<Vec<_>>());
    assert_eq!(bus.stats().history_size, 100);
    // The threads above have stopped: what they left ages out as this one
    // emits.
    for n in 0..150 {
        bus.emit("tick.tock", json!({"n": n})).unwrap();
    }
    assert_eq!(seqs(&bus), (2051..=2150).collect::<Vec<_>>());
    assert_eq!(bus.stats().history_size, 100);
    let newest = bus.history(&HistoryQuery::new().limit(2));
    assert_eq!(
        newest.iter().map(Event::seq).collect::<Vec<_>>(),
        [2150, 2149]
    );
}
