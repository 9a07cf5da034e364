//! Dispatch: priority and tie order, once-only delivery, filters, typed
//! events, `emit_many`, history queries, stats, shutdown and the global bus.

mod history;
mod routing;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use nerve_core::{Event, TypedEvent, json};
use nerve_router::{Bus, EmitError, Outcome, Subscribe, SubscribeError};
use serde::{Deserialize, Serialize};

/// Upper bound on any wait; only reached when something is broken.
const LIMIT: Duration = Duration::from_secs(30);

/// A shared log that handlers append to.
#[derive(Clone, Default)]
struct Log(Arc<Mutex<Vec<String>>>);

impl Log {
    fn push(&self, s: impl Into<String>) {
        self.0.lock().unwrap().push(s.into());
    }

    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

#[test]
fn higher_priority_first_ties_in_subscription_order() {
    let bus = Bus::new();
    let log = Log::default();
    for (name, priority) in [
        ("a", 0),
        ("b", 10),
        ("c", 0),
        ("d", 10),
        ("e", -5),
        ("f", 300),
    ] {
        let log = log.clone();
        bus.subscribe_with(
            "job.*",
            move |_: &Event| log.push(name),
            Subscribe::new().priority(priority).name(name),
        )
        .unwrap();
    }
    bus.emit("job.started", json!({})).unwrap();
    assert_eq!(log.take(), ["f", "b", "d", "a", "c", "e"]);

    // Exact and wildcard patterns interleave by priority, not by pattern kind.
    let l = log.clone();
    bus.subscribe_with(
        "job.started",
        move |_: &Event| l.push("exact"),
        Subscribe::new().priority(5),
    )
    .unwrap();
    bus.emit("job.started", json!({})).unwrap();
    assert_eq!(log.take(), ["f", "b", "d", "exact", "a", "c", "e"]);
}

#[test]
fn a_subscription_with_several_matching_patterns_gets_the_event_once() {
    let bus = Bus::new();
    let log = Log::default();
    let l = log.clone();
    let id = bus
        .subscribe(
            ["user.*", "user.login", "*", "*.login", "user.login"],
            move |e: &Event| l.push(e.event_type()),
        )
        .unwrap();
    bus.emit("user.login", json!({})).unwrap();
    bus.emit("user.logout", json!({})).unwrap();
    bus.emit("chat.sent", json!({})).unwrap();
    assert_eq!(log.take(), ["user.login", "user.logout", "chat.sent"]);
    assert_eq!(bus.stats().subscribers[0].delivered, 3);

    assert!(bus.unsubscribe(id));
    assert!(!bus.unsubscribe(id), "a second unsubscribe finds nothing");
    bus.emit("user.login", json!({})).unwrap();
    assert!(log.take().is_empty());
}

#[tokio::test]
async fn an_async_subscription_with_several_matching_patterns_gets_the_event_once() {
    let bus = Bus::new();
    let log = Log::default();
    let l = log.clone();
    bus.subscribe_async(["a.*", "a.b", "*"], move |e: Event| {
        let l = l.clone();
        async move { l.push(e.event_type()) }
    })
    .unwrap();
    let report = tokio::time::timeout(LIMIT, bus.emit_and_wait("a.b", json!({})))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.outcomes.len(), 1);
    assert!(report.is_success());
    assert_eq!(log.take(), ["a.b"]);
}

#[test]
fn filters_select_events_and_see_the_payload() {
    let bus = Bus::new();
    let log = Log::default();
    let l = log.clone();
    bus.subscribe_with(
        "alert.*",
        move |e: &Event| l.push(e.data()["id"].to_string()),
        Subscribe::new().filter(|e| e.data()["severity"] == "critical"),
    )
    .unwrap();
    for (id, severity) in [(1, "info"), (2, "critical"), (3, "warn"), (4, "critical")] {
        bus.emit("alert.raised", json!({"id": id, "severity": severity}))
            .unwrap();
    }
    assert_eq!(log.take(), ["2", "4"]);
    let stats = bus.stats();
    assert_eq!(stats.events.emitted, 4);
    assert_eq!(
        stats.events.delivered, 2,
        "filtered-out events are not deliveries"
    );
}

#[tokio::test]
async fn filtered_out_handlers_are_not_in_the_report() {
    let bus = Bus::new();
    bus.subscribe_with("a.b", |_: &Event| {}, Subscribe::new().name("all"))
        .unwrap();
    bus.subscribe_async_with(
        "a.b",
        |_: Event| async {},
        Subscribe::new().name("none").filter(|_| false),
    )
    .unwrap();
    let report = tokio::time::timeout(LIMIT, bus.emit_and_wait("a.b", json!({})))
        .await
        .unwrap()
        .unwrap();
    let names: Vec<_> = report.outcomes.iter().map(|o| o.name.as_deref()).collect();
    assert_eq!(names, [Some("all")]);
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct SpecimenCompleted {
    specimen_id: String,
    confidence: f64,
}

impl TypedEvent for SpecimenCompleted {
    const NAME: &'static str = "specimen.completed";
}

#[tokio::test]
async fn typed_events_round_trip_through_sync_and_async_handlers() {
    let bus = Bus::new();
    let got = Arc::new(Mutex::new(Vec::new()));
    let g = got.clone();
    bus.subscribe_typed(move |s: SpecimenCompleted| g.lock().unwrap().push(("sync", s)))
        .unwrap();
    let g = got.clone();
    bus.subscribe_typed_async(
        move |s: SpecimenCompleted| {
            let g = g.clone();
            async move { g.lock().unwrap().push(("async", s)) }
        },
        Subscribe::new(),
    )
    .unwrap();
    // Untyped subscribers see the same event as JSON.
    let raw = Log::default();
    let r = raw.clone();
    bus.subscribe("specimen.*", move |e: &Event| r.push(e.data().to_string()))
        .unwrap();

    let value = SpecimenCompleted {
        specimen_id: "s-1".into(),
        confidence: 0.75,
    };
    let id = bus.emit_typed(&value).unwrap();
    tokio::time::timeout(LIMIT, bus.flush()).await.unwrap();

    let mut got = std::mem::take(&mut *got.lock().unwrap());
    got.sort_by_key(|(k, _)| *k);
    assert_eq!(got, [("async", value.clone()), ("sync", value)]);
    assert_eq!(raw.take(), [r#"{"confidence":0.75,"specimen_id":"s-1"}"#]);
    let recorded = bus.history(&nerve_core::query::HistoryQuery::new().limit(1));
    assert_eq!(recorded[0].event_id(), id);
    assert_eq!(recorded[0].event_type(), "specimen.completed");
}

#[test]
fn typed_payloads_that_do_not_serialize_are_refused() {
    #[derive(Serialize, Deserialize)]
    struct BadKeys(std::collections::HashMap<(u8, u8), u8>);
    impl TypedEvent for BadKeys {
        const NAME: &'static str = "bad.keys";
    }
    let bus = Bus::new();
    let value = BadKeys([((1, 2), 3)].into_iter().collect());
    let err = bus.emit_typed(&value).unwrap_err();
    let EmitError::Serialize { event_type, .. } = &err else {
        panic!("expected Serialize, got {err:?}");
    };
    assert_eq!(event_type, "bad.keys");
    assert!(
        err.to_string()
            .starts_with("event bad.keys could not be serialized: ")
    );
    assert!(std::error::Error::source(&err).is_some());
    assert_eq!(bus.stats().events.emitted, 0);
}

#[test]
fn emit_many_delivers_in_order_and_stops_at_the_first_failure() {
    let bus = Bus::builder().validate_names(true).build().unwrap();
    let log = Log::default();
    let l = log.clone();
    bus.subscribe("*", move |e: &Event| l.push(e.data()["n"].to_string()))
        .unwrap();

    let events: Vec<Event> = (0..3)
        .map(|n| Event::new("batch.item", json!({"n": n})).unwrap())
        .collect();
    let ids = bus.emit_many(events).unwrap();
    assert_eq!(ids.len(), 3);
    assert_eq!(log.take(), ["0", "1", "2"]);
    let seqs: Vec<u64> = bus
        .history(&nerve_core::query::HistoryQuery::new().oldest_first())
        .iter()
        .map(Event::seq)
        .collect();
    assert_eq!(seqs, [1, 2, 3]);

    // "Batch.item" passes the base rules but not the strict ones this bus keeps.
    let events = vec![
        Event::new("batch.item", json!({"n": 10})).unwrap(),
        Event::new("batch.item", json!({"n": 11})).unwrap(),
        Event::new("Batch.item", json!({"n": 12})).unwrap(),
        Event::new("batch.item", json!({"n": 13})).unwrap(),
    ];
    let first_two = [events[0].event_id(), events[1].event_id()];
    let err = bus.emit_many(events).unwrap_err();
    assert_eq!(err.index, 2);
    assert_eq!(err.emitted, first_two);
    assert!(
        matches!(err.source, EmitError::Invalid(_)),
        "{:?}",
        err.source
    );
    assert!(
        err.to_string().starts_with("event 2 of emit_many failed: "),
        "{err}"
    );
    assert_eq!(
        log.take(),
        ["10", "11"],
        "nothing after the failure is emitted"
    );
}

#[test]
fn emit_event_keeps_the_fields_it_was_built_with() {
    let bus = Bus::new();
    let seen = Arc::new(Mutex::new(None));
    let s = seen.clone();
    bus.subscribe("task.done", move |e: &Event| {
        *s.lock().unwrap() = Some(e.clone())
    })
    .unwrap();
    let event = Event::builder("task.done")
        .data(json!({"ok": true}))
        .source("worker-3")
        .run_id("run-9")
        .lane("lane-b")
        .correlation_id("req-5")
        .seq(999)
        .build()
        .unwrap();
    let id = bus.emit_event(event.clone()).unwrap();
    let seen = seen.lock().unwrap().clone().unwrap();
    assert_eq!(id, event.event_id());
    assert_eq!(seen.event_id(), event.event_id());
    assert_eq!(seen.source(), Some("worker-3"));
    assert_eq!(seen.run_id(), Some("run-9"));
    assert_eq!(seen.lane(), Some("lane-b"));
    assert_eq!(seen.correlation_id().unwrap(), "req-5");
    assert_eq!(seen.causation_id(), None);
    assert_eq!(seen.data(), &json!({"ok": true}));
    assert_eq!(seen.seq(), 1, "the bus stamps its own sequence number");
    assert_eq!(event.seq(), 999, "the caller's event is not changed");
}

#[test]
fn sequence_numbers_increase_across_event_types() {
    let bus = Bus::new();
    let seqs = Arc::new(Mutex::new(Vec::new()));
    let s = seqs.clone();
    bus.subscribe("*", move |e: &Event| s.lock().unwrap().push(e.seq()))
        .unwrap();
    for t in ["a.x", "b.y", "a.x", "c.z"] {
        bus.emit(t, json!(null)).unwrap();
    }
    assert_eq!(*seqs.lock().unwrap(), [1, 2, 3, 4]);
}

#[test]
fn stats_count_events_deliveries_and_subscribers() {
    let bus = Bus::builder().validate_names(true).build().unwrap();
    bus.subscribe_with(
        "order.*",
        |_: &Event| {},
        Subscribe::new().name("audit").priority(7),
    )
    .unwrap();
    bus.subscribe_with(
        "order.placed",
        |_: &Event| -> Result<(), String> { Err("no stock".into()) },
        Subscribe::new().name("stock"),
    )
    .unwrap();
    let gone = bus.subscribe("gone.*", |_: &Event| {}).unwrap();
    assert!(bus.unsubscribe(gone));

    bus.emit("order.placed", json!({})).unwrap();
    bus.emit("order.placed", json!({})).unwrap();
    bus.emit("order.shipped", json!({})).unwrap();
    assert!(bus.emit("Order.placed", json!({})).is_err());
    assert!(bus.emit("order placed", json!({})).is_err());

    let stats = bus.stats();
    assert_eq!(stats.subscriptions.active, 2);
    assert_eq!(stats.subscriptions.total, 3);
    assert_eq!(stats.subscriptions.patterns, ["order.*", "order.placed"]);
    // Two failures publish two `system.handler_error` events.
    assert_eq!(stats.events.emitted, 5);
    assert_eq!(stats.events.rejected, 2);
    assert_eq!(stats.events.delivered, 3);
    assert_eq!(stats.events.failed, 2);
    assert_eq!(stats.events.panicked, 0);
    assert_eq!(stats.by_event_type["order.placed"], 2);
    assert_eq!(stats.by_event_type["order.shipped"], 1);
    assert_eq!(stats.by_event_type["system.handler_error"], 2);
    assert_eq!(stats.handler_failures.len(), 1);
    assert_eq!(stats.handler_failures["stock"], 2);
    assert_eq!(stats.history_size, 5);
    assert_eq!(stats.history_capacity, 10_000);
    assert_eq!(stats.pending, 0);

    let audit = stats
        .subscribers
        .iter()
        .find(|s| s.name.as_deref() == Some("audit"))
        .unwrap();
    assert_eq!(
        (audit.kind, audit.priority, audit.delivered, audit.failed),
        ("sync", 7, 3, 0)
    );
    assert_eq!(audit.patterns, ["order.*"]);

    let json = serde_json::to_value(&stats).unwrap();
    assert_eq!(json["events"]["emitted"], 5);
    assert_eq!(json["handler_failures"]["stock"], 2);

    bus.reset_stats();
    let stats = bus.stats();
    assert_eq!(stats.events.emitted, 0);
    assert_eq!(stats.events.failed, 0);
    assert!(stats.by_event_type.is_empty());
    assert!(stats.handler_failures.is_empty());
    assert_eq!(stats.subscribers[0].delivered, 0);
    assert_eq!(
        stats.subscriptions.active, 2,
        "subscriptions are not counters"
    );
}

#[test]
fn shutdown_closes_the_bus_for_emits_and_subscribes() {
    let bus = Bus::new();
    bus.subscribe("a.*", |_: &Event| {}).unwrap();
    assert!(!bus.is_closed());
    let report = bus.shutdown_blocking();
    assert!(report.drained);
    assert_eq!(report.abandoned, 0);
    assert!(bus.is_closed());
    assert!(bus.clone().is_closed(), "clones share the bus");

    assert!(matches!(bus.emit("a.b", json!({})), Err(EmitError::Closed)));
    assert!(matches!(
        bus.emit_event(Event::new("a.b", json!({})).unwrap()),
        Err(EmitError::Closed)
    ));
    assert!(matches!(
        bus.emit_and_wait_blocking("a.b", json!({})),
        Err(EmitError::Closed)
    ));
    let err = bus.subscribe("a.*", |_: &Event| {}).unwrap_err();
    assert!(matches!(err, SubscribeError::Closed));
    assert_eq!(err.to_string(), "the bus is shut down");
    assert_eq!(bus.stats().subscriptions.active, 0);
    assert_eq!(bus.shutdown_blocking(), report, "shutdown is idempotent");
}

#[test]
fn the_global_bus_is_one_bus() {
    let a = nerve_router::global();
    let b = nerve_router::global();
    assert!(std::ptr::eq(a, b));
    let log = Log::default();
    let l = log.clone();
    let id = a
        .subscribe("dispatch_test.global", move |e: &Event| {
            l.push(e.data()["n"].to_string());
        })
        .unwrap();
    b.emit("dispatch_test.global", json!({"n": 1})).unwrap();
    assert_eq!(log.take(), ["1"]);
    assert!(b.unsubscribe(id));
    assert!(a.stats().events.emitted >= 1);
}

#[tokio::test]
async fn emit_and_wait_reports_every_handler_sync_and_async() {
    let bus = Bus::new();
    bus.subscribe_with("a.b", |_: &Event| {}, Subscribe::new().name("inline"))
        .unwrap();
    bus.subscribe_async_with("a.*", |_: Event| async {}, Subscribe::new().name("queued"))
        .unwrap();
    bus.subscribe("other.x", |_: &Event| {}).unwrap();
    let report = tokio::time::timeout(LIMIT, bus.emit_and_wait("a.b", json!({})))
        .await
        .unwrap()
        .unwrap();
    let mut names: Vec<_> = report
        .outcomes
        .iter()
        .map(|o| (o.name.clone().unwrap(), o.outcome.clone()))
        .collect();
    names.sort_by(|a, b| a.0.cmp(&b.0));
    assert_eq!(
        names,
        [
            ("inline".to_owned(), Outcome::Delivered),
            ("queued".to_owned(), Outcome::Delivered)
        ]
    );
    assert_eq!(report.delivered(), 2);
    assert!(report.is_success());
    assert_eq!(
        report.event_id,
        bus.history(&Default::default())[0].event_id()
    );

    // With no handler at all, the report is empty and immediate.
    let report = bus
        .emit_and_wait("nobody.listens", json!({}))
        .await
        .unwrap();
    assert!(report.outcomes.is_empty());
}

#[test]
fn handler_failures_add_up_subscriptions_that_share_a_name() {
    let bus = Bus::new();
    for _ in 0..2 {
        bus.subscribe_with(
            "a.b",
            |_: &Event| Err::<(), _>("no"),
            Subscribe::new().name("shared"),
        )
        .unwrap();
    }
    bus.emit("a.b", json!({})).unwrap();
    let stats = bus.stats();
    assert_eq!(stats.events.failed, 2);
    assert_eq!(stats.handler_failures["shared"], 2);
}
