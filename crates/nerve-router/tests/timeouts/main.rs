//! Timeouts: async handlers are cancelled past their timeout, late sync
//! handlers are reported, and a subscription's timeout overrides the bus's.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use nerve_core::{Event, json};
use nerve_router::{Bus, DeliveryReport, Outcome, Subscribe};

/// Upper bound on any wait; only reached when something is broken.
const LIMIT: Duration = Duration::from_secs(30);

/// Sets its flag when dropped: proof that a handler's future was cancelled.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

async fn wait(bus: &Bus, event_type: &str) -> DeliveryReport {
    tokio::time::timeout(LIMIT, bus.emit_and_wait(event_type, json!({})))
        .await
        .expect("emit_and_wait hung")
        .expect("emit_and_wait failed")
}

fn timed_out(report: &DeliveryReport) -> Duration {
    assert_eq!(report.outcomes.len(), 1, "{report:?}");
    match report.outcomes[0].outcome {
        Outcome::TimedOut(d) => d,
        ref other => panic!("expected TimedOut, got {other:?}"),
    }
}

fn collect_errors(bus: &Bus) -> Arc<Mutex<Vec<Event>>> {
    let errors = Arc::new(Mutex::new(Vec::new()));
    let e = errors.clone();
    bus.subscribe("system.handler_error", move |event: &Event| {
        e.lock().unwrap().push(event.clone());
    })
    .unwrap();
    errors
}

#[tokio::test]
async fn an_async_handler_past_its_timeout_is_cancelled_and_reported() {
    let bus = Bus::new();
    let errors = collect_errors(&bus);
    let cancelled = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(AtomicUsize::new(0));
    let (c, f) = (cancelled.clone(), finished.clone());
    let id = bus
        .subscribe_async_with(
            "slow.call",
            move |_: Event| {
                let flag = DropFlag(c.clone());
                let f = f.clone();
                async move {
                    let _flag = flag;
                    futures::future::pending::<()>().await;
                    f.fetch_add(1, Ordering::SeqCst);
                }
            },
            Subscribe::new()
                .name("slow")
                .timeout(Duration::from_millis(50)),
        )
        .unwrap();

    let report = wait(&bus, "slow.call").await;
    let after = timed_out(&report);
    assert!(after >= Duration::from_millis(50), "{after:?}");
    assert!(after < LIMIT, "{after:?}");
    assert_eq!(report.timed_out(), 1);
    assert_eq!(report.outcomes[0].subscription, id);
    assert_eq!(report.outcomes[0].name.as_deref(), Some("slow"));
    assert!(
        cancelled.load(Ordering::SeqCst),
        "the handler's future was dropped"
    );
    assert_eq!(finished.load(Ordering::SeqCst), 0);

    let stats = bus.stats();
    assert_eq!(stats.events.timed_out, 1);
    assert_eq!(
        stats.events.failed, 0,
        "a timeout is counted apart from failures"
    );
    assert_eq!(stats.handler_failures["slow"], 1);
    let slow = stats
        .subscribers
        .iter()
        .find(|s| s.name.as_deref() == Some("slow"))
        .unwrap();
    assert_eq!((slow.timed_out, slow.pending), (1, 0));

    let errors = errors.lock().unwrap();
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].data()["kind"], "timeout");
    assert_eq!(errors[0].data()["subscription_name"], "slow");
    let text = errors[0].data()["error"].as_str().unwrap();
    assert!(text.starts_with("handler timed out after "), "{text}");
}

#[tokio::test]
async fn the_bus_timeout_applies_to_async_handlers_without_their_own() {
    let bus = Bus::builder()
        .handler_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    bus.subscribe_async("slow.call", |_: Event| futures::future::pending::<()>())
        .unwrap();
    let report = wait(&bus, "slow.call").await;
    assert!(timed_out(&report) >= Duration::from_millis(50));
    assert_eq!(bus.stats().events.timed_out, 1);
}

#[tokio::test]
async fn a_timed_out_delivery_does_not_hold_up_the_next_one() {
    let bus = Bus::new();
    let delivered = Arc::new(AtomicUsize::new(0));
    let d = delivered.clone();
    bus.subscribe_async_with(
        "work.item",
        move |e: Event| {
            let d = d.clone();
            async move {
                if e.data()["stuck"] == true {
                    futures::future::pending::<()>().await;
                }
                d.fetch_add(1, Ordering::SeqCst);
            }
        },
        Subscribe::new().timeout(Duration::from_millis(50)),
    )
    .unwrap();
    bus.emit("work.item", json!({"stuck": true})).unwrap();
    let report = wait(&bus, "work.item").await;
    assert_eq!(report.outcomes[0].outcome, Outcome::Delivered);
    assert_eq!(delivered.load(Ordering::SeqCst), 1);
    assert_eq!(bus.stats().events.timed_out, 1);
}

/// A sync handler that works for `work` (blocking on a channel nobody sends
/// on), then returns.
fn slow_sync(work: Duration, ran: Arc<AtomicUsize>) -> impl Fn(&Event) + Send + Sync + 'static {
    let (tx, rx) = mpsc::channel::<()>();
    let rx = Mutex::new(rx);
    move |_: &Event| {
        let _keep_open = &tx;
        let _ = rx.lock().unwrap().recv_timeout(work);
        ran.fetch_add(1, Ordering::SeqCst);
    }
}

#[test]
fn a_sync_handler_that_returns_late_is_reported_as_timed_out() {
    let bus = Bus::new();
    let errors = collect_errors(&bus);
    let ran = Arc::new(AtomicUsize::new(0));
    bus.subscribe_with(
        "slow.sync",
        slow_sync(Duration::from_millis(20), ran.clone()),
        Subscribe::new()
            .name("late")
            .timeout(Duration::from_millis(1)),
    )
    .unwrap();

    let report = bus.emit_and_wait_blocking("slow.sync", json!({})).unwrap();
    let after = timed_out(&report);
    assert!(after >= Duration::from_millis(20), "{after:?}");
    assert_eq!(
        ran.load(Ordering::SeqCst),
        1,
        "an inline handler runs to its end"
    );
    assert!(
        bus.emit("slow.sync", json!({})).is_ok(),
        "a timeout does not fail emit"
    );
    assert_eq!(ran.load(Ordering::SeqCst), 2);

    let stats = bus.stats();
    assert_eq!((stats.events.timed_out, stats.events.delivered), (2, 2));
    assert_eq!(stats.handler_failures["late"], 2);
    let errors = errors.lock().unwrap();
    assert_eq!(errors.len(), 2);
    assert!(errors.iter().all(|e| e.data()["kind"] == "timeout"));
}

#[test]
fn inline_sync_handlers_are_untimed_unless_a_timeout_is_set() {
    let bus = Bus::new();
    let ran = Arc::new(AtomicUsize::new(0));
    bus.subscribe("a.b", slow_sync(Duration::from_millis(10), ran.clone()))
        .unwrap();
    let report = bus.emit_and_wait_blocking("a.b", json!({})).unwrap();
    assert_eq!(report.outcomes[0].outcome, Outcome::Delivered);
    assert_eq!(
        report.outcomes[0].elapsed,
        Duration::ZERO,
        "not even measured"
    );
    assert_eq!(ran.load(Ordering::SeqCst), 1);
}

#[test]
fn a_subscription_timeout_overrides_the_bus_timeout_for_sync_handlers() {
    // Longer than the bus's: not late.
    let bus = Bus::builder()
        .handler_timeout(Duration::from_millis(1))
        .build()
        .unwrap();
    let ran = Arc::new(AtomicUsize::new(0));
    bus.subscribe_with(
        "a.b",
        slow_sync(Duration::from_millis(10), ran.clone()),
        Subscribe::new().timeout(LIMIT),
    )
    .unwrap();
    let report = bus.emit_and_wait_blocking("a.b", json!({})).unwrap();
    assert_eq!(report.outcomes[0].outcome, Outcome::Delivered);

    // The same handler without its own timeout is late for the bus's.
    bus.subscribe("a.c", slow_sync(Duration::from_millis(10), ran.clone()))
        .unwrap();
    let report = bus.emit_and_wait_blocking("a.c", json!({})).unwrap();
    timed_out(&report);

    // Shorter than the bus's (none at all): late.
    let bus = Bus::builder().handler_timeout(None).build().unwrap();
    bus.subscribe_with(
        "a.b",
        slow_sync(Duration::from_millis(10), ran.clone()),
        Subscribe::new().timeout(Duration::from_millis(1)),
    )
    .unwrap();
    let report = bus.emit_and_wait_blocking("a.b", json!({})).unwrap();
    timed_out(&report);
    assert_eq!(ran.load(Ordering::SeqCst), 3);
}

#[tokio::test(start_paused = true)]
async fn a_subscription_timeout_overrides_the_bus_timeout_for_async_handlers() {
    let bus = Bus::builder()
        .handler_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    // Sleeps on the paused clock: a second of virtual time, no real waiting.
    let sleepy = |_: Event| tokio::time::sleep(Duration::from_secs(1));
    bus.subscribe_async_with(
        "long.ok",
        sleepy,
        Subscribe::new().timeout(Duration::from_secs(20)),
    )
    .unwrap();
    bus.subscribe_async("long.late", sleepy).unwrap();
    assert_eq!(
        wait(&bus, "long.ok").await.outcomes[0].outcome,
        Outcome::Delivered
    );
    timed_out(&wait(&bus, "long.late").await);

    let bus = Bus::builder().handler_timeout(None).build().unwrap();
    bus.subscribe_async_with(
        "short",
        |_: Event| futures::future::pending::<()>(),
        Subscribe::new().timeout(Duration::from_millis(50)),
    )
    .unwrap();
    timed_out(&wait(&bus, "short").await);
}

#[tokio::test(start_paused = true)]
async fn no_timeout_lets_a_handler_run_as_long_as_it_needs() {
    let bus = Bus::builder().handler_timeout(None).build().unwrap();
    bus.subscribe_async("very.long", |_: Event| {
        tokio::time::sleep(Duration::from_secs(3600))
    })
    .unwrap();
    let report = tokio::time::timeout(
        Duration::from_secs(7200),
        bus.emit_and_wait("very.long", json!({})),
    )
    .await
    .unwrap()
    .unwrap();
    assert_eq!(report.outcomes[0].outcome, Outcome::Delivered);
    assert_eq!(bus.stats().events.timed_out, 0);
}
