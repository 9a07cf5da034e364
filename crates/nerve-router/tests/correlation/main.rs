//! Correlation: ids follow a piece of work through nested emits, across
//! threads and tasks; causation points at the handled event.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use nerve_core::correlation::{self, CorrelationId, FutureExt};
use nerve_core::query::HistoryQuery;
use nerve_core::{Event, EventId, json};
use nerve_router::{Bus, Subscribe};

/// Upper bound on any wait; only reached when something is broken.
const LIMIT: Duration = Duration::from_secs(30);

/// The recorded event of this type (there must be exactly one).
fn the(bus: &Bus, event_type: &str) -> Event {
    let found = bus.history(&HistoryQuery::new().pattern(event_type).unwrap());
    assert_eq!(found.len(), 1, "{event_type}: {found:?}");
    found.into_iter().next().unwrap()
}

fn correlation_of(event: &Event) -> Option<&str> {
    event.correlation_id().map(CorrelationId::as_str)
}

/// An order flow where each step's handler emits the next step.
fn chain_sync(bus: &Bus) {
    for (from, to) in [
        ("order.placed", "order.billed"),
        ("order.billed", "order.shipped"),
    ] {
        let b = bus.clone();
        bus.subscribe(from, move |_: &Event| b.emit(to, json!({})).map(drop))
            .unwrap();
    }
}

fn assert_chain(bus: &Bus, correlation: &str, root: EventId) {
    let placed = the(bus, "order.placed");
    let billed = the(bus, "order.billed");
    let shipped = the(bus, "order.shipped");
    assert_eq!(placed.event_id(), root);
    for e in [&placed, &billed, &shipped] {
        assert_eq!(correlation_of(e), Some(correlation), "{e:?}");
    }
    assert_eq!(placed.causation_id(), None);
    assert_eq!(billed.causation_id(), Some(placed.event_id()));
    assert_eq!(shipped.causation_id(), Some(billed.event_id()));
    let all = bus.history(
        &HistoryQuery::new()
            .correlation_id(correlation)
            .oldest_first(),
    );
    let types: Vec<_> = all.iter().map(Event::event_type).collect();
    assert_eq!(types, ["order.placed", "order.billed", "order.shipped"]);
}

#[test]
fn nested_emits_in_sync_handlers_inherit_the_correlation() {
    let bus = Bus::new();
    chain_sync(&bus);
    let root = {
        let _guard = correlation::enter("req-1");
        bus.emit("order.placed", json!({})).unwrap()
    };
    assert_chain(&bus, "req-1", root);
    assert_eq!(
        correlation::current(),
        None,
        "the handler's ambient id was restored"
    );
}

#[test]
fn nested_emits_inherit_a_generated_correlation() {
    let bus = Bus::new();
    chain_sync(&bus);
    let root = bus.emit("order.placed", json!({})).unwrap();
    let id = correlation_of(&the(&bus, "order.placed"))
        .unwrap()
        .to_owned();
    assert!(!id.is_empty());
    assert_chain(&bus, &id, root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_emits_in_async_handlers_inherit_the_correlation() {
    let bus = Bus::new();
    let seen_inside = Arc::new(Mutex::new(Vec::new()));
    for (from, to) in [
        ("order.placed", "order.billed"),
        ("order.billed", "order.shipped"),
    ] {
        let (b, seen) = (bus.clone(), seen_inside.clone());
        bus.subscribe_async(from, move |e: Event| {
            let (b, seen) = (b.clone(), seen.clone());
            async move {
                // Across an await, on whatever thread resumes the handler.
                tokio::task::yield_now().await;
                seen.lock()
                    .unwrap()
                    .push((correlation::current(), e.correlation_id().cloned()));
                b.emit(to, json!({})).map(drop)
            }
        })
        .unwrap();
    }
    let root = correlation::scope("req-async", async { bus.emit("order.placed", json!({})) })
        .await
        .unwrap();
    tokio::time::timeout(LIMIT, bus.flush()).await.unwrap();
    assert_chain(&bus, "req-async", root);
    let seen = seen_inside.lock().unwrap();
    assert_eq!(seen.len(), 2);
    for (ambient, of_event) in seen.iter() {
        assert_eq!(ambient.as_ref().unwrap(), "req-async");
        assert_eq!(of_event.as_ref().unwrap(), "req-async");
    }
}

#[test]
fn an_explicit_id_wins_over_the_ambient_one() {
    let bus = Bus::new();
    let b = bus.clone();
    bus.subscribe("outer.event", move |_: &Event| {
        let inner = Event::builder("inner.event")
            .correlation_id("explicit-inner")
            .build()
            .unwrap();
        b.emit_event(inner).map(drop)
    })
    .unwrap();

    let _guard = correlation::enter("ambient");
    let outer = Event::builder("outer.event")
        .correlation_id("explicit-outer")
        .build()
        .unwrap();
    let outer_id = bus.emit_event(outer).unwrap();
    assert_eq!(
        correlation_of(&the(&bus, "outer.event")),
        Some("explicit-outer")
    );
    let inner = the(&bus, "inner.event");
    assert_eq!(correlation_of(&inner), Some("explicit-inner"));
    assert_eq!(
        inner.causation_id(),
        Some(outer_id),
        "an explicit correlation id still gets its cause"
    );

    // An explicit causation id is kept too.
    let cause = EventId::new();
    let event = Event::builder("caused.event")
        .causation_id(cause)
        .build()
        .unwrap();
    bus.emit_event(event).unwrap();
    let caused = the(&bus, "caused.event");
    assert_eq!(caused.causation_id(), Some(cause));
    assert_eq!(correlation_of(&caused), Some("ambient"));
}

#[tokio::test]
async fn scope_and_with_correlation_set_the_id_while_the_future_runs() {
    let bus = Bus::new();
    correlation::scope("job-7", async {
        bus.emit("job.started", json!({})).unwrap();
        tokio::task::yield_now().await;
        bus.emit("job.step", json!({})).unwrap();
    })
    .await;
    async { bus.emit("job.other", json!({})).unwrap() }
        .with_correlation("job-8")
        .await;
    bus.emit("job.after", json!({})).unwrap();

    assert_eq!(correlation_of(&the(&bus, "job.started")), Some("job-7"));
    assert_eq!(correlation_of(&the(&bus, "job.step")), Some("job-7"));
    assert_eq!(correlation_of(&the(&bus, "job.other")), Some("job-8"));
    let after = the(&bus, "job.after");
    assert!(!matches!(correlation_of(&after), Some("job-7" | "job-8")));
    assert_eq!(correlation::current(), None);
}

#[test]
fn enter_guards_nest() {
    let bus = Bus::new();
    let outer = correlation::enter("outer");
    bus.emit("step.one", json!({})).unwrap();
    {
        let _inner = correlation::enter("inner");
        bus.emit("step.two", json!({})).unwrap();
    }
    bus.emit("step.three", json!({})).unwrap();
    drop(outer);
    bus.emit("step.four", json!({})).unwrap();

    assert_eq!(correlation_of(&the(&bus, "step.one")), Some("outer"));
    assert_eq!(correlation_of(&the(&bus, "step.two")), Some("inner"));
    assert_eq!(correlation_of(&the(&bus, "step.three")), Some("outer"));
    let four = the(&bus, "step.four");
    assert!(!matches!(correlation_of(&four), Some("outer" | "inner")));
}

#[test]
fn ids_from_request_headers_follow_the_request() {
    let bus = Bus::new();
    let headers = [("Content-Type", "json"), ("X-Request-ID", " r-42 ")];
    let _guard = correlation::enter(correlation::from_headers(headers));
    bus.emit("http.request", json!({})).unwrap();
    assert_eq!(correlation_of(&the(&bus, "http.request")), Some("r-42"));

    let traceparent = [(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
    )];
    let _guard = correlation::enter(correlation::from_headers(traceparent));
    bus.emit("http.traced", json!({})).unwrap();
    assert_eq!(
        correlation_of(&the(&bus, "http.traced")),
        Some("4bf92f3577b34da6a3ce929d0e0e4736")
    );

    // No usable header: a fresh id, different each time.
    let a = correlation::from_headers([("x-correlation-id", "bad\nvalue")]);
    let b = correlation::from_headers(Vec::<(&str, &str)>::new());
    assert!(!a.as_str().is_empty() && !b.as_str().is_empty());
    assert_ne!(a, b);
}

#[test]
fn a_fresh_id_is_generated_when_none_is_given_unless_turned_off() {
    let bus = Bus::new();
    bus.emit("a.one", json!({})).unwrap();
    bus.emit("a.two", json!({})).unwrap();
    let one = correlation_of(&the(&bus, "a.one")).unwrap().to_owned();
    let two = correlation_of(&the(&bus, "a.two")).unwrap().to_owned();
    assert_ne!(one, two, "unrelated emits get unrelated ids");
    let root = the(&bus, "a.one");
    assert_eq!(
        one,
        root.event_id().to_string(),
        "a root names its work after itself"
    );

    let bus = Bus::builder()
        .generate_correlation_ids(false)
        .build()
        .unwrap();
    bus.emit("a.one", json!({})).unwrap();
    assert_eq!(the(&bus, "a.one").correlation_id(), None);
    let _guard = correlation::enter("still-ambient");
    bus.emit("a.two", json!({})).unwrap();
    assert_eq!(correlation_of(&the(&bus, "a.two")), Some("still-ambient"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn in_current_correlation_carries_the_id_into_a_spawned_task() {
    let bus = Bus::new();
    let _guard = correlation::enter("req-spawn");
    let b = bus.clone();
    tokio::spawn(
        async move { b.emit("spawned.carried", json!({})).unwrap() }.in_current_correlation(),
    )
    .await
    .unwrap();
    // Without it, the task runs on a worker thread with no ambient id.
    let b = bus.clone();
    tokio::spawn(async move { b.emit("spawned.bare", json!({})).unwrap() })
        .await
        .unwrap();
    assert_eq!(
        correlation_of(&the(&bus, "spawned.carried")),
        Some("req-spawn")
    );
    assert_ne!(
        correlation_of(&the(&bus, "spawned.bare")),
        Some("req-spawn")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_spawned_by_a_handler_keeps_the_handled_events_context() {
    let bus = Bus::new();
    let b = bus.clone();
    bus.subscribe_async_with(
        "parent.event",
        move |_: Event| {
            let b = b.clone();
            async move {
                tokio::spawn(
                    async move { b.emit("child.event", json!({})).unwrap() }
                        .in_current_correlation(),
                )
                .await
                .unwrap();
            }
        },
        Subscribe::new().name("spawner"),
    )
    .unwrap();
    let parent = correlation::scope("req-parent", bus.emit_and_wait("parent.event", json!({})));
    let report = tokio::time::timeout(LIMIT, parent).await.unwrap().unwrap();
    let child = the(&bus, "child.event");
    assert_eq!(correlation_of(&child), Some("req-parent"));
    assert_eq!(child.causation_id(), Some(report.event_id));
}

#[test]
fn handler_errors_carry_the_failed_events_correlation() {
    let bus = Bus::new();
    bus.subscribe("pay.charge", |_: &Event| -> Result<(), &str> {
        Err("declined")
    })
    .unwrap();
    let _guard = correlation::enter("req-pay");
    let id = bus.emit("pay.charge", json!({})).unwrap();
    let report = the(&bus, "system.handler_error");
    assert_eq!(correlation_of(&report), Some("req-pay"));
    assert_eq!(report.causation_id(), Some(id));
    assert_eq!(report.data()["correlation_id"], "req-pay");
}

mod instruments {
    use super::*;
    use nerve_core::instrument::{DeliveryOutcome, HandleScope, HandlerInfo, Instrument};
    use nerve_router::HandlerError;

    /// Records every hook call as text.
    #[derive(Clone, Default)]
    struct Recorder {
        name: &'static str,
        log: Arc<Mutex<Vec<String>>>,
        /// A correlation id to give events that have none (as a tracing
        /// bridge gives the trace id).
        fallback: Option<&'static str>,
    }

    struct Scope(Recorder, String);

    impl HandleScope for Scope {
        fn in_scope(&self, f: &mut dyn FnMut()) {
            let _ambient = correlation::enter(format!("inside-{}", self.0.name));
            f();
        }
        fn finish(self: Box<Self>, outcome: &DeliveryOutcome<'_>) {
            self.0.log.lock().unwrap().push(format!(
                "{} {} {}",
                self.0.name,
                self.1,
                outcome.as_str()
            ));
        }
    }

    impl Instrument for Recorder {
        fn prepare(&self, event: Event) -> Event {
            match (event.correlation_id(), self.fallback) {
                (None, Some(id)) => event.with_correlation_id(id),
                _ => event,
            }
        }
        fn emitted(&self, event: &Event) {
            self.log.lock().unwrap().push(format!(
                "{} emitted {} #{}",
                self.name,
                event.event_type(),
                event.seq()
            ));
        }
        fn handle(&self, event: &Event, h: &HandlerInfo<'_>) -> Option<Box<dyn HandleScope>> {
            let what = format!(
                "{}:{}:{}",
                event.event_type(),
                h.name.unwrap_or("-"),
                h.mode.as_str()
            );
            Some(Box::new(Scope(self.clone(), what)))
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn every_kind_of_delivery_runs_inside_every_instrument() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let outer = Recorder {
            name: "outer",
            log: log.clone(),
            fallback: None,
        };
        let inner = Recorder {
            name: "inner",
            log: log.clone(),
            fallback: None,
        };
        let bus = Bus::builder()
            .instrument(outer)
            .instrument(inner)
            .build()
            .unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        bus.subscribe_with(
            "a.b",
            move |_: &Event| {
                // The innermost scope's ambient id is current.
                s.lock()
                    .unwrap()
                    .push(correlation::current().map(|c| c.as_str().to_owned()));
                Err::<(), _>(HandlerError::new("no"))
            },
            Subscribe::new().name("inline"),
        )
        .unwrap();
        bus.subscribe_with(
            "a.b",
            |_: &Event| {},
            Subscribe::new().name("queued").queued(4),
        )
        .unwrap();
        bus.subscribe_async_with("a.b", |_e: Event| async {}, Subscribe::new().name("async"))
            .unwrap();
        bus.emit("a.b", 1).unwrap();
        tokio::time::timeout(LIMIT, bus.flush()).await.unwrap();
        assert_eq!(*seen.lock().unwrap(), [Some("inside-inner".to_owned())]);
        let mut log = log.lock().unwrap().clone();
        log.sort();
        assert_eq!(
            log,
            [
                "inner a.b:async:async delivered",
                "inner a.b:inline:inline failed",
                "inner a.b:queued:queued delivered",
                "inner emitted a.b #1",
                // The failure's announcement is an event like any other.
                "inner emitted system.handler_error #2",
                "outer a.b:async:async delivered",
                "outer a.b:inline:inline failed",
                "outer a.b:queued:queued delivered",
                "outer emitted a.b #1",
                "outer emitted system.handler_error #2",
            ]
        );
        bus.shutdown().await;
    }

    #[test]
    fn an_instrument_correlates_after_ambient_ids_and_before_generated_ones() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let bus = Bus::builder()
            .instrument(Recorder {
                name: "r",
                log,
                fallback: Some("from-trace"),
            })
            .build()
            .unwrap();
        let root = bus.emit("a.root", 1).unwrap();
        let explicit = Event::builder("a.explicit")
            .correlation_id("given")
            .build()
            .unwrap();
        bus.emit_event(explicit).unwrap();
        {
            let _ambient = correlation::enter("ambient");
            bus.emit("a.ambient", 1).unwrap();
        }
        assert_eq!(correlation_of(&the(&bus, "a.root")), Some("from-trace"));
        assert_ne!(
            correlation_of(&the(&bus, "a.root")),
            Some(root.to_string().as_str())
        );
        assert_eq!(correlation_of(&the(&bus, "a.explicit")), Some("given"));
        assert_eq!(correlation_of(&the(&bus, "a.ambient")), Some("ambient"));
    }
}

/// A route with no inline handler and no filter does not set the ambient
/// context around its deliveries; what the emitter had stays ambient, and
/// a queued handler still sees the event's own context.
#[test]
fn emits_to_queued_subscribers_keep_the_emitters_context() {
    let bus = Bus::builder()
        .generate_correlation_ids(false)
        .build()
        .unwrap();
    let mut stream = bus.stream("job.*").unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    bus.subscribe_with(
        "job.*",
        move |e: &Event| {
            let ambient = correlation::current_ambient();
            s.lock().unwrap().push((
                ambient.correlation_id.map(|c| c.as_str().to_owned()),
                ambient.causation_id == Some(e.event_id()),
            ));
        },
        Subscribe::new().queued(16),
    )
    .unwrap();

    bus.emit("job.untraced", json!({})).unwrap();
    assert_eq!(correlation::current(), None);
    {
        let _outer = correlation::enter("outer");
        bus.emit("job.started", json!({})).unwrap();
        assert_eq!(correlation::current().unwrap().as_str(), "outer");
        assert_eq!(correlation::current_ambient().causation_id, None);
        {
            let _inner = correlation::enter("inner");
            bus.emit("job.step", json!({})).unwrap();
            assert_eq!(correlation::current().unwrap().as_str(), "inner");
        }
        assert_eq!(correlation::current().unwrap().as_str(), "outer");
    }
    assert_eq!(correlation::current(), None);
    assert_eq!(correlation::current_ambient(), Default::default());

    let streamed: Vec<Option<String>> = futures::executor::block_on(async {
        use futures::StreamExt;
        let mut got = Vec::new();
        for _ in 0..3 {
            let e = stream.next().await.unwrap();
            got.push(e.correlation_id().map(|c| c.as_str().to_owned()));
        }
        got
    });
    assert_eq!(
        streamed,
        [None, Some("outer".to_owned()), Some("inner".to_owned())]
    );
    bus.flush_blocking();
    assert_eq!(
        *seen.lock().unwrap(),
        [
            (None, true),
            (Some("outer".to_owned()), true),
            (Some("inner".to_owned()), true)
        ]
    );
}
