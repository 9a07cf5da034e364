//! Failures: errors and panics stay isolated, are counted, and are published
//! as `system.handler_error`; halts stop the emitter without stopping delivery.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nerve_core::query::HistoryQuery;
use nerve_core::sink::{SinkError, SinkErrorKind};
use nerve_core::{Event, TypedEvent, Value, json};
use nerve_router::{Bus, EmitError, HandlerError, Outcome, Subscribe};
use serde::{Deserialize, Serialize};

/// Upper bound on any wait; only reached when something is broken.
const LIMIT: Duration = Duration::from_secs(30);

/// Collects every `system.handler_error` event published on `bus`.
fn collect_errors(bus: &Bus) -> Arc<Mutex<Vec<Event>>> {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let e = errors.clone();
    bus.subscribe("system.handler_error", move |event: &Event| {
        e.lock().unwrap().push(event.clone());
    })
    .unwrap();
    errors
}

fn counter() -> (Arc<AtomicUsize>, impl Fn(&Event) + Send + Sync + 'static) {
    let count = Arc::new(AtomicUsize::new(0));
    let c = count.clone();
    (count, move |_: &Event| {
        c.fetch_add(1, Ordering::SeqCst);
    })
}

#[test]
fn an_error_is_isolated_counted_and_published_with_every_field() {
    let bus = Bus::new();
    let errors = collect_errors(&bus);
    let (before, h) = counter();
    bus.subscribe_with("order.placed", h, Subscribe::new().priority(2))
        .unwrap();
    let failing = bus
        .subscribe_with(
            "order.*",
            |_: &Event| -> Result<(), String> { Err("inventory service unreachable".into()) },
            Subscribe::new().priority(1).name("inventory"),
        )
        .unwrap();
    let (after, h) = counter();
    bus.subscribe(["order.placed"], h).unwrap();

    let event = Event::builder("order.placed")
        .data(json!({"order": 7}))
        .correlation_id("req-77")
        .run_id("run-3")
        .build()
        .unwrap();
    let event_id = bus
        .emit_event(event)
        .expect("a handler error does not fail emit");
    assert_eq!(before.load(Ordering::SeqCst), 1);
    assert_eq!(
        after.load(Ordering::SeqCst),
        1,
        "handlers after the failure still run"
    );

    let errors = errors.lock().unwrap();
    assert_eq!(errors.len(), 1);
    let report = &errors[0];
    assert_eq!(
        report.data(),
        &json!({
            "event_id": event_id.to_string(),
            "event_type": "order.placed",
            "subscription_id": failing.as_u64(),
            "subscription_name": "inventory",
            "kind": "error",
            "error": "inventory service unreachable",
            "correlation_id": "req-77",
        })
    );
    assert_eq!(report.source(), Some("nerve"));
    assert_eq!(report.correlation_id().unwrap(), "req-77");
    assert_eq!(report.causation_id(), Some(event_id));
    assert_eq!(report.run_id(), Some("run-3"));

    let stats = bus.stats();
    assert_eq!(stats.events.failed, 1);
    assert_eq!(stats.events.panicked, 0);
    assert_eq!(stats.handler_failures["inventory"], 1);
}

#[test]
fn a_panic_is_caught_and_reported_as_a_panic() {
    let bus = Bus::new();
    let errors = collect_errors(&bus);
    let panicking = bus
        .subscribe("job.run", |e: &Event| {
            if e.data()["explode"] == true {
                panic!("kaboom {}", e.data()["id"]);
            }
        })
        .unwrap();
    let (others, h) = counter();
    bus.subscribe_with("job.run", h, Subscribe::new().priority(-1))
        .unwrap();

    bus.emit("job.run", json!({"explode": true, "id": 1}))
        .unwrap();
    bus.emit("job.run", json!({"explode": false, "id": 2}))
        .unwrap();
    assert_eq!(others.load(Ordering::SeqCst), 2);

    let errors = errors.lock().unwrap();
    assert_eq!(errors.len(), 1);
    let data = errors[0].data();
    assert_eq!(data["kind"], "panic");
    assert_eq!(data["error"], "handler panicked: kaboom 1");
    assert_eq!(data["subscription_id"], panicking.as_u64());
    assert_eq!(data["subscription_name"], Value::Null);
    let stats = bus.stats();
    assert_eq!((stats.events.failed, stats.events.panicked), (1, 1));
    assert_eq!(stats.handler_failures[&panicking.to_string()], 1);
}

#[test]
fn a_panicking_filter_counts_as_a_handler_panic() {
    let bus = Bus::new();
    let errors = collect_errors(&bus);
    let (called, h) = counter();
    bus.subscribe_with(
        "a.b",
        h,
        Subscribe::new()
            .name("picky")
            .filter(|_| panic!("bad filter")),
    )
    .unwrap();
    let report = bus.emit_and_wait_blocking("a.b", json!({})).unwrap();
    assert_eq!(called.load(Ordering::SeqCst), 0);
    assert_eq!(
        report.outcomes[0].outcome,
        Outcome::Panicked("filter handler panicked: bad filter".into())
    );
    assert_eq!(errors.lock().unwrap()[0].data()["kind"], "panic");
}

#[tokio::test]
async fn async_errors_and_panics_are_reported_before_emit_and_wait_returns() {
    let bus = Bus::new();
    let errors = collect_errors(&bus);
    bus.subscribe_async_with(
        "task.*",
        |e: Event| async move {
            match e.data()["mode"].as_str() {
                Some("fail") => Err(HandlerError::new("remote said no")),
                Some("panic") => panic!("async kaboom"),
                _ => Ok(()),
            }
        },
        Subscribe::new().name("remote"),
    )
    .unwrap();

    let report = tokio::time::timeout(LIMIT, bus.emit_and_wait("task.go", json!({"mode": "fail"})))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        report.outcomes[0].outcome,
        Outcome::Failed("remote said no".into())
    );
    assert_eq!(report.failed(), 1);
    assert!(!report.is_success());

    let report = tokio::time::timeout(
        LIMIT,
        bus.emit_and_wait("task.go", json!({"mode": "panic"})),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(
        report.outcomes[0].outcome,
        Outcome::Panicked("handler panicked: async kaboom".into())
    );

    let errors = errors.lock().unwrap();
    let kinds: Vec<_> = errors.iter().map(|e| e.data()["kind"].clone()).collect();
    assert_eq!(kinds, ["error", "panic"]);
    assert!(
        errors
            .iter()
            .all(|e| e.data()["subscription_name"] == "remote")
    );
    let stats = bus.stats();
    assert_eq!((stats.events.failed, stats.events.panicked), (2, 1));
}

#[test]
fn a_failing_handler_error_handler_does_not_loop() {
    let bus = Bus::new();
    let (system_calls, count) = counter();
    bus.subscribe_with(
        "system.handler_error",
        move |e: &Event| -> Result<(), String> {
            count(e);
            Err("the alerting backend is down".into())
        },
        Subscribe::new().name("alerts"),
    )
    .unwrap();
    let (catch_all_calls, count) = counter();
    bus.subscribe("*", move |e: &Event| {
        count(e);
        // Always fails: no event type is empty.
        assert!(
            e.event_type().is_empty(),
            "fails on everything, {} included",
            e.event_type()
        );
    })
    .unwrap();
    bus.subscribe("job.run", |_: &Event| -> Result<(), &str> {
        Err("job failed")
    })
    .unwrap();

    bus.emit("job.run", json!({})).unwrap();

    // Two failures on job.run publish two reports; failures while handling
    // those are counted, not published again.
    let reports = bus.history(&HistoryQuery::new().pattern("system.*").unwrap());
    assert_eq!(reports.len(), 2);
    assert_eq!(system_calls.load(Ordering::SeqCst), 2);
    assert_eq!(catch_all_calls.load(Ordering::SeqCst), 3);
    let stats = bus.stats();
    assert_eq!(stats.events.emitted, 3);
    assert_eq!(stats.events.failed, 2 + 2 + 2);
    assert_eq!(stats.handler_failures["alerts"], 2);
}

#[tokio::test]
async fn a_failing_async_handler_error_handler_does_not_loop() {
    let bus = Bus::new();
    let (calls, count) = counter();
    bus.subscribe_async("system.handler_error", move |e: Event| {
        count(&e);
        async { Err::<(), _>("still down") }
    })
    .unwrap();
    bus.subscribe("job.run", |_: &Event| -> Result<(), &str> {
        Err("job failed")
    })
    .unwrap();
    bus.emit("job.run", json!({})).unwrap();
    tokio::time::timeout(LIMIT, bus.flush()).await.unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    let stats = bus.stats();
    assert_eq!((stats.events.emitted, stats.events.failed), (2, 2));
}

#[test]
fn a_sync_halt_names_the_subscription_and_every_handler_still_runs() {
    let bus = Bus::new();
    let errors = collect_errors(&bus);
    let (first, h) = counter();
    bus.subscribe_with("batch.*", h, Subscribe::new().priority(300))
        .unwrap();
    let gate = bus
        .subscribe_with(
            "batch.progress",
            |e: &Event| -> Result<(), HandlerError> {
                if e.data()["success_rate"] == 0 {
                    return Err(HandlerError::halt("0% success rate after 5 specimens"));
                }
                Ok(())
            },
            Subscribe::new().priority(200).name("early-validation"),
        )
        .unwrap();
    // A second halt, lower in priority: the first one is reported.
    bus.subscribe_with(
        "batch.progress",
        |_: &Event| Err::<(), _>(HandlerError::halt("me too")),
        Subscribe::new()
            .priority(150)
            .filter(|e| e.data()["success_rate"] == 0),
    )
    .unwrap();
    let (last, h) = counter();
    bus.subscribe_with("batch.progress", h, Subscribe::new().priority(100))
        .unwrap();

    bus.emit("batch.progress", json!({"success_rate": 80}))
        .unwrap();
    let err = bus
        .emit("batch.progress", json!({"success_rate": 0}))
        .unwrap_err();
    let EmitError::Halted {
        event_id,
        subscription,
        subscription_label,
        reason,
    } = &err
    else {
        panic!("expected Halted, got {err:?}");
    };
    assert_eq!(*subscription, gate);
    assert_eq!(subscription_label, "early-validation");
    assert_eq!(reason, "0% success rate after 5 specimens");
    assert_eq!(
        err.to_string(),
        format!(
            "0% success rate after 5 specimens (halted by early-validation on event {event_id})"
        )
    );
    let recorded = bus.history(&HistoryQuery::new().limit(1));
    assert_eq!(recorded[0].event_id(), *event_id);

    assert_eq!(first.load(Ordering::SeqCst), 2);
    assert_eq!(
        last.load(Ordering::SeqCst),
        2,
        "handlers after the halt got the event"
    );
    assert!(errors.lock().unwrap().is_empty(), "a halt is not a failure");
    let stats = bus.stats();
    assert_eq!((stats.events.halted, stats.events.failed), (2, 0));
}

#[test]
fn an_unnamed_halting_subscription_is_named_by_its_id() {
    let bus = Bus::new();
    let id = bus
        .subscribe("a.b", |_: &Event| Err::<(), _>(HandlerError::halt("stop")))
        .unwrap();
    let err = bus.emit_and_wait_blocking("a.b", json!({})).unwrap_err();
    let EmitError::Halted {
        subscription_label, ..
    } = &err
    else {
        panic!("expected Halted, got {err:?}");
    };
    assert_eq!(*subscription_label, id.to_string());
    assert!(
        err.to_string()
            .starts_with(&format!("stop (halted by sub-{} on event ", id.as_u64()))
    );
}

#[tokio::test]
async fn an_async_halt_reaches_emit_and_wait() {
    let bus = Bus::new();
    let (sync_calls, h) = counter();
    bus.subscribe("deploy.*", h).unwrap();
    let gate = bus
        .subscribe_async_with(
            "deploy.requested",
            |e: Event| async move {
                if e.data()["env"] == "prod" {
                    Err(HandlerError::halt("change freeze"))
                } else {
                    Ok(())
                }
            },
            Subscribe::new().name("freeze"),
        )
        .unwrap();
    let (async_calls, h) = counter();
    bus.subscribe_async("deploy.requested", move |e: Event| {
        h(&e);
        async {}
    })
    .unwrap();

    let wait = |env: &'static str| {
        let bus = bus.clone();
        async move {
            tokio::time::timeout(
                LIMIT,
                bus.emit_and_wait("deploy.requested", json!({"env": env})),
            )
            .await
            .unwrap()
        }
    };
    assert!(wait("staging").await.unwrap().is_success());
    let err = wait("prod").await.unwrap_err();
    let EmitError::Halted {
        subscription,
        subscription_label,
        reason,
        ..
    } = &err
    else {
        panic!("expected Halted, got {err:?}");
    };
    assert_eq!(
        (*subscription, subscription_label.as_str()),
        (gate, "freeze")
    );
    assert_eq!(reason, "change freeze");
    assert_eq!(sync_calls.load(Ordering::SeqCst), 2);
    assert_eq!(
        async_calls.load(Ordering::SeqCst),
        2,
        "the other async handler ran too"
    );
    assert_eq!(bus.stats().events.halted, 1);
}

/// An exporter's handler that could not confirm an event is not a failure:
/// every handler still runs, nothing is retried, dead-lettered or
/// published as `system.handler_error`, and `emit` says
/// `NotRecorded` naming the subscription, as for the journal.
#[test]
fn a_handler_that_could_not_record_an_event_makes_emit_say_not_recorded() {
    let dlq = nerve_router::DeadLetterQueue::new(100);
    let bus = Bus::builder().dead_letters(dlq.clone()).build().unwrap();
    let errors = collect_errors(&bus);
    let exporter = bus
        .subscribe_with(
            "run.*",
            |e: &Event| -> Result<(), HandlerError> {
                if e.event_type() == "run.failed" {
                    let error = SinkError::new(SinkErrorKind::Timeout, "no acknowledgement in 5s");
                    return Err(HandlerError::not_recorded(&error));
                }
                Ok(())
            },
            Subscribe::new().priority(i32::MIN).name("exporter"),
        )
        .unwrap();
    let (others, h) = counter();
    bus.subscribe("run.*", h).unwrap();

    bus.emit("run.started", json!({})).unwrap();
    let err = bus.emit("run.failed", json!({})).unwrap_err();
    let EmitError::NotRecorded { event_id, error } = &err else {
        panic!("expected NotRecorded, got {err:?}");
    };
    assert_eq!(error.kind(), SinkErrorKind::Timeout);
    assert_eq!(error.message(), "exporter: no acknowledgement in 5s");
    assert_eq!(
        err.to_string(),
        format!(
            "event {event_id} was delivered but not recorded: exporter: no acknowledgement in 5s"
        )
    );
    let recorded = bus.history(&HistoryQuery::new().limit(1));
    assert_eq!(recorded[0].event_id(), *event_id);
    assert_eq!(others.load(Ordering::SeqCst), 2);

    // `emit_and_wait` says the same, and its report would have named it.
    let err = bus
        .emit_and_wait_blocking("run.failed", json!({}))
        .unwrap_err();
    assert!(matches!(err, EmitError::NotRecorded { .. }), "{err:?}");

    assert!(errors.lock().unwrap().is_empty(), "not a handler failure");
    assert!(dlq.is_empty(), "nothing to retry");
    let stats = bus.stats();
    assert_eq!(
        (
            stats.events.not_recorded,
            stats.events.failed,
            stats.events.halted
        ),
        (2, 0, 0)
    );
    let sub = stats
        .subscribers
        .iter()
        .find(|s| s.id == exporter.as_u64())
        .unwrap();
    assert_eq!((sub.not_recorded, sub.succeeded, sub.delivered), (2, 1, 3));
}

/// A halt of the same emit is what `emit` returns; an async handler's
/// `not_recorded` reaches only a waiting emitter.
#[tokio::test]
async fn a_halt_comes_before_not_recorded_and_async_handlers_tell_a_waiting_emit() {
    let bus = Bus::new();
    let not_kept =
        || HandlerError::not_recorded(&SinkError::new(SinkErrorKind::Io, "the store refused it"));
    bus.subscribe_with(
        "a.b",
        move |_: &Event| Err::<(), _>(not_kept()),
        Subscribe::new().priority(1),
    )
    .unwrap();
    bus.subscribe("a.b", |_: &Event| Err::<(), _>(HandlerError::halt("stop")))
        .unwrap();
    let err = bus.emit("a.b", json!({})).unwrap_err();
    assert!(matches!(err, EmitError::Halted { .. }), "{err:?}");

    bus.subscribe_async_with(
        "c.d",
        move |_: Event| async move { Err::<(), _>(not_kept()) },
        Subscribe::new().name("uploader"),
    )
    .unwrap();
    let report = tokio::time::timeout(LIMIT, bus.emit_and_wait("c.d", json!({})))
        .await
        .unwrap()
        .unwrap_err();
    let EmitError::NotRecorded { error, .. } = &report else {
        panic!("expected NotRecorded, got {report:?}");
    };
    assert_eq!(
        (error.kind(), error.message()),
        (SinkErrorKind::Io, "uploader: the store refused it")
    );
    assert_eq!(bus.stats().events.not_recorded, 2);
}

#[derive(Debug, Serialize, Deserialize)]
struct Login {
    username: String,
}

impl TypedEvent for Login {
    const NAME: &'static str = "user.login";
}

#[tokio::test]
async fn an_undecodable_typed_payload_is_a_handler_failure() {
    let bus = Bus::new();
    let errors = collect_errors(&bus);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    bus.subscribe_typed_with(
        move |l: Login| s.lock().unwrap().push(l.username),
        Subscribe::new().name("typed-sync"),
    )
    .unwrap();
    bus.subscribe_typed_async(|_: Login| async {}, Subscribe::new().name("typed-async"))
        .unwrap();

    let report = tokio::time::timeout(LIMIT, bus.emit_and_wait("user.login", json!({"user": 1})))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(report.outcomes.len(), 2);
    for outcome in &report.outcomes {
        let Outcome::Failed(message) = &outcome.outcome else {
            panic!("expected Failed, got {outcome:?}");
        };
        assert!(message.starts_with("event user.login ("), "{message}");
        assert!(
            message.contains("does not deserialize into failures::Login: missing field `username`"),
            "{message}"
        );
    }
    let errors = errors.lock().unwrap();
    assert_eq!(errors.len(), 2);
    assert!(errors.iter().all(|e| e.data()["kind"] == "error"));

    // A good payload still decodes afterwards.
    bus.emit("user.login", json!({"username": "alice"}))
        .unwrap();
    assert_eq!(*seen.lock().unwrap(), ["alice"]);
}

#[test]
fn any_display_error_keeps_its_message() {
    let bus = Bus::new();
    bus.subscribe("disk.write", |_: &Event| -> Result<(), std::io::Error> {
        Err(std::io::Error::other("no space left on device"))
    })
    .unwrap();
    let report = bus.emit_and_wait_blocking("disk.write", json!({})).unwrap();
    assert_eq!(
        report.outcomes[0].outcome,
        Outcome::Failed("no space left on device".into())
    );
    assert_eq!(report.outcomes[0].outcome.kind(), "error");
}
