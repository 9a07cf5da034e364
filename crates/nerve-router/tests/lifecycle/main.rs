//! Lifecycle: flush, shutdown (drained or not), runtimes given to the bus,
//! and workers that outlive their runtime.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc as std_mpsc};
use std::time::Duration;

use nerve_core::{Event, json};
use nerve_router::{Bus, EmitError, Outcome, Subscribe, SubscribeError};
use tokio::sync::{Semaphore, mpsc};

/// Upper bound on any wait; only reached when something is broken.
const LIMIT: Duration = Duration::from_secs(30);

/// An async handler that signals when it starts and then waits for a permit
/// from `gate`, counting the deliveries that finished.
fn gated(
    gate: &Arc<Semaphore>,
    started: &mpsc::UnboundedSender<u64>,
    done: &Arc<AtomicUsize>,
) -> impl Fn(Event) -> futures::future::BoxFuture<'static, ()> + Send + Sync + 'static {
    let (gate, started, done) = (gate.clone(), started.clone(), done.clone());
    move |e: Event| {
        let (gate, started, done) = (gate.clone(), started.clone(), done.clone());
        Box::pin(async move {
            started.send(e.data()["i"].as_u64().unwrap_or(0)).unwrap();
            gate.acquire().await.unwrap().forget();
            done.fetch_add(1, Ordering::SeqCst);
        })
    }
}

/// Releases one permit each time a gated handler starts, `n` times.
fn release_as_they_start(
    gate: Arc<Semaphore>,
    mut started: mpsc::UnboundedReceiver<u64>,
    n: usize,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for _ in 0..n {
            started.recv().await.unwrap();
            gate.add_permits(1);
        }
    })
}

#[tokio::test]
async fn flush_returns_after_every_queued_delivery_finished() {
    const N: usize = 5;
    let bus = Bus::new();
    let gate = Arc::new(Semaphore::new(0));
    let (started_tx, started) = mpsc::unbounded_channel();
    let done = Arc::new(AtomicUsize::new(0));
    bus.subscribe_async("work.item", gated(&gate, &started_tx, &done))
        .unwrap();
    for i in 0..N {
        bus.emit("work.item", json!({"i": i})).unwrap();
    }
    assert_eq!(bus.stats().pending, N as u64);
    // Deliveries are only released one by one once they started, so if flush
    // returned early some would still be unfinished.
    let releaser = release_as_they_start(gate, started, N);
    tokio::time::timeout(LIMIT, bus.flush()).await.unwrap();
    assert_eq!(done.load(Ordering::SeqCst), N);
    assert_eq!(bus.stats().pending, 0);
    releaser.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_waits_for_deliveries_queued_by_handlers() {
    let bus = Bus::new();
    let handled = Arc::new(Mutex::new(Vec::new()));
    let (b, h) = (bus.clone(), handled.clone());
    bus.subscribe_async("count.down", move |e: Event| {
        let (b, h) = (b.clone(), h.clone());
        async move {
            let n = e.data()["n"].as_u64().unwrap();
            tokio::task::yield_now().await;
            h.lock().unwrap().push(n);
            if n > 0 {
                b.emit("count.down", json!({"n": n - 1})).map(drop)
            } else {
                Ok(())
            }
        }
    })
    .unwrap();
    bus.emit("count.down", json!({"n": 20})).unwrap();
    tokio::time::timeout(LIMIT, bus.flush()).await.unwrap();
    assert_eq!(
        *handled.lock().unwrap(),
        (0..=20).rev().collect::<Vec<u64>>()
    );
}

#[tokio::test]
async fn shutdown_drains_and_is_idempotent() {
    const N: usize = 3;
    let bus = Bus::builder().shutdown_timeout(LIMIT).build().unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let (started_tx, started) = mpsc::unbounded_channel();
    let done = Arc::new(AtomicUsize::new(0));
    bus.subscribe_async("work.item", gated(&gate, &started_tx, &done))
        .unwrap();
    bus.subscribe("work.*", |_: &Event| {}).unwrap();
    for i in 0..N {
        bus.emit("work.item", json!({"i": i})).unwrap();
    }
    let releaser = release_as_they_start(gate, started, N);

    let report = tokio::time::timeout(LIMIT, bus.shutdown()).await.unwrap();
    assert!(report.drained);
    assert_eq!(report.abandoned, 0);
    assert_eq!(
        done.load(Ordering::SeqCst),
        N,
        "queued deliveries ran to the end"
    );
    releaser.await.unwrap();

    assert_eq!(bus.shutdown().await, report);
    assert_eq!(bus.shutdown_blocking(), report);
    assert!(bus.is_closed());
    assert!(matches!(
        bus.emit("work.item", json!({})),
        Err(EmitError::Closed)
    ));
    assert!(matches!(
        bus.emit_and_wait("work.item", json!({})).await,
        Err(EmitError::Closed)
    ));
    assert!(matches!(
        bus.subscribe_async("work.*", |_: Event| async {}),
        Err(SubscribeError::Closed)
    ));
    let stats = bus.stats();
    assert_eq!(stats.subscriptions.active, 0);
    assert_eq!(
        (stats.events.delivered, stats.events.abandoned),
        (2 * N as u64, 0)
    );
}

/// Sets its flag when dropped: proof that a handler's future was cancelled.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn shutdown_with_a_stuck_handler_abandons_what_is_left() {
    let bus = Bus::builder()
        .handler_timeout(None)
        .shutdown_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let cancelled = Arc::new(AtomicBool::new(false));
    let c = cancelled.clone();
    bus.subscribe_async_with(
        "stuck.job",
        move |_: Event| {
            let (started_tx, flag) = (started_tx.clone(), DropFlag(c.clone()));
            async move {
                let _flag = flag;
                started_tx.send(()).unwrap();
                futures::future::pending::<()>().await;
            }
        },
        Subscribe::new().name("stuck").priority(1),
    )
    .unwrap();
    // Runs inline after the async delivery was queued: the emit is in.
    let (queued_tx, mut queued) = mpsc::unbounded_channel();
    bus.subscribe("stuck.job", move |_: &Event| queued_tx.send(()).unwrap())
        .unwrap();

    let waits: Vec<_> = (0..2)
        .map(|_| {
            let bus = bus.clone();
            tokio::spawn(async move { bus.emit_and_wait("stuck.job", json!({})).await })
        })
        .collect();
    for _ in 0..2 {
        tokio::time::timeout(LIMIT, queued.recv())
            .await
            .unwrap()
            .unwrap();
    }
    // The first delivery is running (and stuck); the second waits behind it.
    tokio::time::timeout(LIMIT, started.recv())
        .await
        .unwrap()
        .unwrap();

    let report = tokio::time::timeout(LIMIT, bus.shutdown()).await.unwrap();
    assert!(!report.drained);
    assert_eq!(report.abandoned, 2);

    for wait in waits {
        let report = tokio::time::timeout(LIMIT, wait)
            .await
            .expect("emit_and_wait hung after shutdown")
            .unwrap()
            .unwrap();
        let stuck: Vec<_> = report
            .outcomes
            .iter()
            .filter(|o| o.name.as_deref() == Some("stuck"))
            .map(|o| o.outcome.clone())
            .collect();
        assert_eq!(stuck, [Outcome::Abandoned]);
        assert_eq!(report.abandoned(), 1);
        assert!(!report.is_success());
    }
    assert!(
        cancelled.load(Ordering::SeqCst),
        "the stuck handler was cancelled"
    );
    let stats = bus.stats();
    assert_eq!(stats.events.abandoned, 2);
    assert_eq!(stats.pending, 0);
    assert_eq!(
        bus.shutdown().await,
        report,
        "a later call returns the first report"
    );
}

#[tokio::test]
async fn shutdown_also_cancels_deliveries_of_unsubscribed_handlers() {
    let bus = Bus::builder()
        .handler_timeout(None)
        .shutdown_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let id = bus
        .subscribe_async("stuck.job", move |_: Event| {
            let started_tx = started_tx.clone();
            async move {
                started_tx.send(()).unwrap();
                futures::future::pending::<()>().await;
            }
        })
        .unwrap();
    let b = bus.clone();
    let wait = tokio::spawn(async move { b.emit_and_wait("stuck.job", json!({})).await });
    tokio::time::timeout(LIMIT, started.recv())
        .await
        .unwrap()
        .unwrap();
    // Removed, but its delivery still runs.
    assert!(bus.unsubscribe(id));
    assert_eq!(bus.stats().pending, 1);

    let report = tokio::time::timeout(LIMIT, bus.shutdown()).await.unwrap();
    assert!(!report.drained);
    assert_eq!(report.abandoned, 1);
    let report = tokio::time::timeout(LIMIT, wait)
        .await
        .expect("emit_and_wait hung after shutdown")
        .unwrap()
        .unwrap();
    assert_eq!(report.outcomes[0].outcome, Outcome::Abandoned);
    let stats = bus.stats();
    assert_eq!((stats.events.abandoned, stats.pending), (1, 0));
}

#[test]
fn a_bus_with_its_own_runtime_serves_plain_sync_code() {
    assert!(tokio::runtime::Handle::try_current().is_err());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let bus = Bus::builder()
        .runtime(runtime.handle().clone())
        .build()
        .unwrap();
    let (tx, rx) = std_mpsc::channel();
    let tx = Mutex::new(tx);
    bus.subscribe_async("bg.task", move |e: Event| {
        let tx = tx.lock().unwrap().clone();
        async move {
            // A tokio timer: this runs on the bus's runtime, not on the caller's thread.
            tokio::time::sleep(Duration::ZERO).await;
            tx.send(e.data()["n"].as_u64().unwrap()).unwrap();
        }
    })
    .unwrap();

    bus.emit("bg.task", json!({"n": 1})).unwrap();
    assert_eq!(rx.recv_timeout(LIMIT).unwrap(), 1);

    let report = bus
        .emit_and_wait_blocking("bg.task", json!({"n": 2}))
        .unwrap();
    assert_eq!(report.outcomes[0].outcome, Outcome::Delivered);
    assert_eq!(rx.recv_timeout(LIMIT).unwrap(), 2);

    for n in 3..13 {
        bus.emit("bg.task", json!({"n": n})).unwrap();
    }
    bus.flush_blocking();
    assert_eq!(bus.stats().pending, 0);
    assert_eq!(
        rx.try_iter().collect::<Vec<_>>(),
        (3..13).collect::<Vec<u64>>()
    );
    assert!(bus.shutdown_blocking().drained);
}

#[test]
fn a_worker_is_restarted_after_its_runtime_was_dropped() {
    let bus = Bus::new();
    let handled = Arc::new(AtomicUsize::new(0));
    let h = handled.clone();
    bus.subscribe_async("job.run", move |_: Event| {
        let h = h.clone();
        async move {
            h.fetch_add(1, Ordering::SeqCst);
        }
    })
    .unwrap();
    let runtimes: [fn() -> tokio::runtime::Runtime; 3] = [
        || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        },
        || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap()
        },
        || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        },
    ];
    for (n, make) in runtimes.iter().enumerate() {
        let runtime = make();
        let report = runtime
            .block_on(async {
                tokio::time::timeout(LIMIT, bus.emit_and_wait("job.run", json!({}))).await
            })
            .unwrap()
            .unwrap();
        assert_eq!(
            report.outcomes[0].outcome,
            Outcome::Delivered,
            "runtime {n}"
        );
        drop(runtime);
    }
    assert_eq!(handled.load(Ordering::SeqCst), 3);
    assert_eq!(bus.stats().events.abandoned, 0);
}

#[test]
fn a_delivery_to_a_dropped_runtime_is_abandoned_not_lost() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let bus = Bus::builder()
        .runtime(runtime.handle().clone())
        .build()
        .unwrap();
    bus.subscribe_async("job.run", |_: Event| async {}).unwrap();
    drop(runtime);
    let report = bus.emit_and_wait_blocking("job.run", json!({})).unwrap();
    assert_eq!(report.outcomes[0].outcome, Outcome::Abandoned);
    let stats = bus.stats();
    assert_eq!((stats.events.abandoned, stats.pending), (1, 0));
}
