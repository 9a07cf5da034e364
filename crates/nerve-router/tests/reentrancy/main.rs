//! Re-entrancy: waits that would wait on themselves fail fast instead of
//! hanging, emits with no runtime say so, and emit loops stop.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc as std_mpsc};
use std::time::Duration;

use nerve_core::query::HistoryQuery;
use nerve_core::{Event, json};
use nerve_router::{Bus, DeliveryReport, EmitError, Outcome, Subscribe};
use tokio::sync::{Semaphore, mpsc};

/// Upper bound on any wait; only reached when something is broken.
const LIMIT: Duration = Duration::from_secs(30);

async fn wait(bus: &Bus, event_type: &str) -> DeliveryReport {
    tokio::time::timeout(LIMIT, bus.emit_and_wait(event_type, json!({})))
        .await
        .expect("emit_and_wait hung")
        .expect("emit_and_wait failed")
}

fn deadlock_reason(result: Result<DeliveryReport, EmitError>) -> String {
    match result {
        Err(EmitError::WouldDeadlock { reason }) => reason,
        other => panic!("expected WouldDeadlock, got {other:?}"),
    }
}

#[tokio::test]
async fn emit_and_wait_in_an_async_handler_for_its_own_event_fails_fast() {
    let bus = Bus::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let b = bus.clone();
    bus.subscribe_async_with(
        "loop.ping",
        move |e: Event| {
            let (b, tx) = (b.clone(), tx.clone());
            async move {
                if e.data()["nested"] != true {
                    let inner = b.emit_and_wait("loop.ping", json!({"nested": true})).await;
                    tx.send(inner).unwrap();
                }
            }
        },
        Subscribe::new().name("pinger"),
    )
    .unwrap();

    let report = wait(&bus, "loop.ping").await;
    assert_eq!(report.outcomes[0].outcome, Outcome::Delivered);
    let reason = deadlock_reason(rx.recv().await.unwrap());
    assert_eq!(
        reason,
        "pinger handles loop.ping but is itself running or waiting higher up on this task"
    );
    assert_eq!(
        bus.history(&HistoryQuery::new()).len(),
        1,
        "the refused event was not published"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wait_cycle_through_two_async_handlers_fails_fast() {
    let bus = Bus::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    // A waits on B, and B waits on A: B's wait is refused.
    for (name, own, other) in [("a", "cycle.a", "cycle.b"), ("b", "cycle.b", "cycle.a")] {
        let (b, tx) = (bus.clone(), tx.clone());
        bus.subscribe_async_with(
            own,
            move |_: Event| {
                let (b, tx) = (b.clone(), tx.clone());
                async move {
                    let result = b.emit_and_wait(other, json!({})).await;
                    tx.send((name, result.map(|r| r.outcomes.len()))).unwrap();
                }
            },
            Subscribe::new().name(name),
        )
        .unwrap();
    }
    wait(&bus, "cycle.a").await;
    let (who, result) = rx.recv().await.unwrap();
    assert_eq!(who, "b");
    let Err(EmitError::WouldDeadlock { reason }) = result else {
        panic!("expected WouldDeadlock, got {result:?}");
    };
    assert!(reason.starts_with("a handles cycle.a"), "{reason}");
    let (who, result) = rx.recv().await.unwrap();
    assert_eq!((who, result.unwrap()), ("a", 1), "A's wait on B completed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nested_waits_holding_every_bus_permit_fail_fast() {
    // Each waiting handler holds one of the bus's permits: with two, one
    // nested wait works and a second would leave none for the innermost.
    let bus = Bus::builder().max_concurrent_handlers(2).build().unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    for (own, next) in [("nest.one", "nest.two"), ("nest.two", "nest.three")] {
        let (b, tx) = (bus.clone(), tx.clone());
        bus.subscribe_async(own, move |_: Event| {
            let (b, tx) = (b.clone(), tx.clone());
            async move {
                let result = b.emit_and_wait(next, json!({})).await;
                tx.send((own, result.map(|r| r.outcomes.len()))).unwrap();
            }
        })
        .unwrap();
    }
    bus.subscribe_async("nest.three", |_: Event| async {})
        .unwrap();

    assert!(
        wait(&bus, "nest.two").await.is_success(),
        "one level of nesting fits"
    );
    let (who, result) = rx.recv().await.unwrap();
    assert_eq!((who, result.unwrap()), ("nest.two", 1));

    assert!(wait(&bus, "nest.one").await.is_success());
    let (who, result) = rx.recv().await.unwrap();
    assert_eq!(who, "nest.two");
    let reason = match result {
        Err(EmitError::WouldDeadlock { reason }) => reason,
        other => panic!("expected WouldDeadlock, got {other:?}"),
    };
    assert_eq!(
        reason,
        "the async handlers waiting on this task hold all 2 of the bus's \
         max_concurrent_handlers permits, so the handlers of nest.three could never start"
    );
    let (who, result) = rx.recv().await.unwrap();
    assert_eq!((who, result.unwrap()), ("nest.one", 1));
}

#[tokio::test]
async fn emit_and_wait_in_an_async_handler_for_other_handlers_works() {
    let bus = Bus::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let b = bus.clone();
    bus.subscribe_async("step.outer", move |_: Event| {
        let (b, tx) = (b.clone(), tx.clone());
        async move {
            tx.send(b.emit_and_wait("step.inner", json!({})).await)
                .unwrap();
        }
    })
    .unwrap();
    bus.subscribe_async("step.inner", |_: Event| async {})
        .unwrap();
    wait(&bus, "step.outer").await;
    let inner = rx.recv().await.unwrap().unwrap();
    assert_eq!(inner.outcomes.len(), 1);
    assert!(inner.is_success());
}

// Multi-threaded, so that it is the wait chain, not the current-thread
// check, that refuses.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sync_handler_run_by_an_async_one_cannot_block_on_it() {
    let bus = Bus::new();
    let (tx, rx) = std_mpsc::channel();
    let tx = Mutex::new(tx);
    let b = bus.clone();
    bus.subscribe_async_with(
        "flow.start",
        move |_: Event| {
            let b = b.clone();
            async move { b.emit("flow.inline", json!({})).map(drop) }
        },
        Subscribe::new().name("starter"),
    )
    .unwrap();
    let b = bus.clone();
    bus.subscribe("flow.inline", move |_: &Event| {
        let result = b.emit_and_wait_blocking("flow.start", json!({}));
        tx.lock().unwrap().send(result).unwrap();
    })
    .unwrap();
    wait(&bus, "flow.start").await;
    let reason = deadlock_reason(rx.recv_timeout(LIMIT).unwrap());
    assert!(reason.starts_with("starter handles flow.start"), "{reason}");
}

#[test]
fn emit_and_wait_blocking_on_a_current_thread_runtime_with_async_handlers_fails_fast() {
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bus = Bus::new();
    bus.subscribe_async("needs.thread", |_: Event| async {})
        .unwrap();
    bus.subscribe("inline.only", |_: &Event| {}).unwrap();
    current.block_on(async {
        let reason = deadlock_reason(bus.emit_and_wait_blocking("needs.thread", json!({})));
        assert_eq!(
            reason,
            "event needs.thread has async handlers, and blocking this current-thread runtime \
             would stop them; use emit_and_wait().await"
        );
        // Inline handlers need no other thread.
        let report = bus
            .emit_and_wait_blocking("inline.only", json!({}))
            .unwrap();
        assert_eq!(report.outcomes.len(), 1);
        // The awaiting form works on the same runtime.
        assert!(wait(&bus, "needs.thread").await.is_success());
    });

    // With a runtime of its own, the bus does not need this thread.
    let pool = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let bus = Bus::builder()
        .runtime(pool.handle().clone())
        .build()
        .unwrap();
    bus.subscribe_async("needs.thread", |_: Event| async {})
        .unwrap();
    current.block_on(async {
        let report = bus
            .emit_and_wait_blocking("needs.thread", json!({}))
            .unwrap();
        assert!(report.is_success());
    });
}

#[test]
fn emit_with_an_async_handler_and_no_runtime_says_so() {
    let bus = Bus::new();
    let inline = Arc::new(AtomicUsize::new(0));
    let i = inline.clone();
    bus.subscribe("job.*", move |_: &Event| {
        i.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap();
    bus.subscribe_async("job.queued", |_: Event| async {})
        .expect("subscribing needs no runtime");

    let err = bus.emit("job.queued", json!({})).unwrap_err();
    assert!(matches!(&err, EmitError::NoRuntime { event_type } if event_type == "job.queued"));
    assert_eq!(
        err.to_string(),
        "event job.queued has async handlers but no tokio runtime is available; \
         emit from inside a runtime or give the bus one with Bus::builder().runtime(handle)"
    );
    assert!(matches!(
        bus.emit_and_wait_blocking("job.queued", json!({})),
        Err(EmitError::NoRuntime { .. })
    ));
    assert_eq!(
        inline.load(Ordering::SeqCst),
        0,
        "the event was not accepted"
    );
    assert!(bus.history(&HistoryQuery::new()).is_empty());

    // Events only sync handlers match need no runtime at all.
    bus.emit("job.done", json!({})).unwrap();
    let report = bus.emit_and_wait_blocking("job.done", json!({})).unwrap();
    assert!(report.is_success());
    assert_eq!(inline.load(Ordering::SeqCst), 2);
    assert_eq!(bus.stats().events.emitted, 2);
}

#[test]
fn a_sync_only_bus_needs_no_runtime() {
    assert!(tokio::runtime::Handle::try_current().is_err());
    let bus = Bus::new();
    let seen = Arc::new(AtomicUsize::new(0));
    let s = seen.clone();
    bus.subscribe("*", move |_: &Event| {
        s.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap();
    for _ in 0..10 {
        bus.emit("plain.sync", json!({})).unwrap();
    }
    bus.flush_blocking();
    assert_eq!(seen.load(Ordering::SeqCst), 10);
    assert!(bus.shutdown_blocking().drained);
}

/// A handler that re-emits the event it handles, and the errors it got.
fn recursive(bus: &Bus) -> (Arc<AtomicUsize>, Arc<Mutex<Vec<String>>>) {
    let calls = Arc::new(AtomicUsize::new(0));
    let errors = Arc::new(Mutex::new(Vec::new()));
    let (b, c, errs) = (bus.clone(), calls.clone(), errors.clone());
    bus.subscribe("echo.again", move |_: &Event| {
        c.fetch_add(1, Ordering::SeqCst);
        let result = b.emit("echo.again", json!({}));
        if let Err(e) = &result {
            assert!(matches!(e, EmitError::TooDeep { .. }), "{e:?}");
            errs.lock().unwrap().push(e.to_string());
        }
        result.map(drop)
    })
    .unwrap();
    (calls, errors)
}

#[test]
fn emits_nested_too_deep_fail_with_too_deep() {
    let bus = Bus::builder().max_depth(8).build().unwrap();
    let (calls, errors) = recursive(&bus);
    bus.emit("echo.again", json!({}))
        .expect("the outer emit is fine");
    assert_eq!(calls.load(Ordering::SeqCst), 8);
    assert_eq!(
        *errors.lock().unwrap(),
        ["emit nested 9 levels deep inside handlers; is a handler re-emitting its own event?"]
    );
    let stats = bus.stats();
    assert_eq!(stats.events.emitted, 8);
    assert_eq!(stats.events.failed, 1, "the innermost handler failed");

    let bus = Bus::new();
    let (calls, errors) = recursive(&bus);
    bus.emit("echo.again", json!({})).unwrap();
    assert_eq!(calls.load(Ordering::SeqCst), 64, "the default depth");
    assert!(errors.lock().unwrap()[0].starts_with("emit nested 65 levels deep"));
}

#[tokio::test]
async fn flush_inside_an_async_handler_returns() {
    let bus = Bus::new();
    let flushed = Arc::new(AtomicUsize::new(0));
    let (b, f) = (bus.clone(), flushed.clone());
    bus.subscribe_async("self.flush", move |_: Event| {
        let (b, f) = (b.clone(), f.clone());
        async move {
            // Waiting for every delivery here would wait for this one.
            b.flush().await;
            f.fetch_add(1, Ordering::SeqCst);
        }
    })
    .unwrap();
    wait(&bus, "self.flush").await;
    assert_eq!(flushed.load(Ordering::SeqCst), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_blocking_inside_a_sync_handler_returns() {
    let bus = Bus::new();
    // An async delivery held open until this test releases it, after the
    // emit below returns: a flush that waited for it would never return.
    let gate = Arc::new(Semaphore::new(0));
    let g = gate.clone();
    bus.subscribe_async("held.open", move |_: Event| {
        let g = g.clone();
        async move { drop(g.acquire().await.unwrap()) }
    })
    .unwrap();
    bus.emit("held.open", json!({})).unwrap();

    let flushed = Arc::new(AtomicUsize::new(0));
    let (b, f) = (bus.clone(), flushed.clone());
    bus.subscribe("flush.inline", move |_: &Event| {
        b.flush_blocking();
        futures::executor::block_on(b.flush());
        f.fetch_add(1, Ordering::SeqCst);
    })
    .unwrap();
    let (tx, rx) = std_mpsc::channel();
    let b = bus.clone();
    std::thread::spawn(move || tx.send(b.emit("flush.inline", json!({}))).unwrap());
    rx.recv_timeout(LIMIT)
        .expect("flush inside a handler hung")
        .unwrap();
    assert_eq!(flushed.load(Ordering::SeqCst), 1);
    assert_eq!(bus.stats().pending, 1, "the held delivery is still pending");

    gate.add_permits(1);
    tokio::time::timeout(LIMIT, bus.flush()).await.unwrap();
    assert_eq!(bus.stats().pending, 0);
}

/// On a multi-thread runtime's worker, the handler task woken by the emit can
/// sit in that worker's LIFO slot, which no other worker steals; blocking the
/// worker must hand it over (`block_in_place`) instead of waiting forever.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn emit_and_wait_blocking_on_a_multi_thread_worker_completes() {
    let bus = Bus::new();
    let seen = Arc::new(AtomicUsize::new(0));
    let counter = seen.clone();
    bus.subscribe_async("job.done", move |_e: Event| {
        let counter = counter.clone();
        async move {
            counter.fetch_add(1, Ordering::SeqCst);
        }
    })
    .unwrap();
    let emitter = bus.clone();
    let task = tokio::spawn(async move {
        let mut delivered = 0;
        for _ in 0..100 {
            let report = emitter
                .emit_and_wait_blocking("job.done", json!({}))
                .expect("blocking wait on a worker thread");
            delivered += report.delivered();
        }
        emitter.flush_blocking();
        delivered
    });
    let delivered = tokio::time::timeout(Duration::from_secs(30), task)
        .await
        .expect("blocking waits on a worker thread must not hang")
        .unwrap();
    assert_eq!(delivered, 100);
    assert_eq!(seen.load(Ordering::SeqCst), 100);
}
