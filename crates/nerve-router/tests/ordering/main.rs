//! Ordering and concurrency of async deliveries: each subscriber sees its
//! events in order, `concurrency(n)` runs n at once, and
//! `max_concurrent_handlers` caps the whole bus.

use std::ops::Range;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nerve_core::{Event, json};
use nerve_router::{Bus, Subscribe};
use tokio::sync::{Barrier, Semaphore, mpsc};

/// Upper bound on any wait; only reached when something is broken.
const LIMIT: Duration = Duration::from_secs(30);

async fn flush(bus: &Bus) {
    tokio::time::timeout(LIMIT, bus.flush())
        .await
        .expect("flush hung");
}

/// Starts a thread per emitter in `emitters`, each emitting `seq.item`
/// with `{"t": emitter, "i": i}` for `i` in `0..per`, in order.
fn emit_from_threads(
    bus: &Bus,
    emitters: Range<u64>,
    per: u64,
) -> Vec<std::thread::JoinHandle<()>> {
    emitters
        .map(|t| {
            let bus = bus.clone();
            std::thread::spawn(move || {
                for i in 0..per {
                    bus.emit("seq.item", json!({"t": t, "i": i})).unwrap();
                }
            })
        })
        .collect()
}

/// Asserts that `log`, of `(emitter, i)` pairs as handled, holds every
/// emitter's `0..per` in the order it emitted them.
fn assert_each_emitter_in_order(log: &[(u64, u64)], emitters: Range<u64>, per: u64) {
    for t in emitters {
        let mine: Vec<u64> = log
            .iter()
            .filter(|(x, _)| *x == t)
            .map(|(_, i)| *i)
            .collect();
        assert_eq!(mine, (0..per).collect::<Vec<_>>(), "emitter {t}");
    }
}

/// Counts handlers running now and the most seen at once.
#[derive(Clone, Default)]
struct Running {
    now: Arc<AtomicUsize>,
    max: Arc<AtomicUsize>,
}

impl Running {
    fn enter(&self) {
        let now = self.now.fetch_add(1, Ordering::SeqCst) + 1;
        self.max.fetch_max(now, Ordering::SeqCst);
    }

    fn exit(&self) {
        self.now.fetch_sub(1, Ordering::SeqCst);
    }

    fn max(&self) -> usize {
        self.max.load(Ordering::SeqCst)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_async_subscriber_sees_10_000_events_in_order() {
    const N: u64 = 10_000;
    let bus = Bus::new();
    let logs: Vec<Arc<Mutex<Vec<u64>>>> = (0..2).map(|_| Arc::default()).collect();
    let runnings: Vec<Running> = (0..2).map(|_| Running::default()).collect();
    for (log, running) in logs.iter().zip(&runnings) {
        let (log, running) = (log.clone(), running.clone());
        bus.subscribe_async("seq.item", move |e: Event| {
            let (log, running) = (log.clone(), running.clone());
            async move {
                running.enter();
                // Give the scheduler every chance to interleave deliveries.
                tokio::task::yield_now().await;
                log.lock().unwrap().push(e.data()["i"].as_u64().unwrap());
                running.exit();
            }
        })
        .unwrap();
    }
    for i in 0..N {
        bus.emit("seq.item", json!({"i": i})).unwrap();
    }
    flush(&bus).await;
    let expected: Vec<u64> = (0..N).collect();
    for log in &logs {
        assert_eq!(*log.lock().unwrap(), expected);
    }
    for running in &runnings {
        assert_eq!(running.max(), 1, "one delivery at a time per subscriber");
    }
    assert_eq!(bus.stats().events.delivered, 2 * N);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_from_several_emitters_keep_each_emitters_order() {
    const THREADS: u64 = 4;
    const PER: u64 = 2_500;
    let bus = Bus::builder()
        .runtime(tokio::runtime::Handle::current())
        .build()
        .unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let l = log.clone();
    bus.subscribe_async("seq.item", move |e: Event| {
        let l = l.clone();
        async move {
            let (t, i) = (
                e.data()["t"].as_u64().unwrap(),
                e.data()["i"].as_u64().unwrap(),
            );
            l.lock().unwrap().push((t, i));
        }
    })
    .unwrap();
    let emitters = emit_from_threads(&bus, 0..THREADS, PER);
    for e in emitters {
        e.join().unwrap();
    }
    flush(&bus).await;
    let log = log.lock().unwrap();
    assert_eq!(log.len() as u64, THREADS * PER);
    assert_each_emitter_in_order(&log, 0..THREADS, PER);
}

#[tokio::test]
async fn concurrency_n_runs_n_deliveries_at_once() {
    // Each delivery waits at a barrier for the other three: with fewer than
    // four running at once, none would ever pass it.
    let bus = Bus::new();
    let barrier = Arc::new(Barrier::new(4));
    let passed = Arc::new(AtomicUsize::new(0));
    let (b, p) = (barrier.clone(), passed.clone());
    bus.subscribe_async_with(
        "fan.out",
        move |_: Event| {
            let (b, p) = (b.clone(), p.clone());
            async move {
                b.wait().await;
                p.fetch_add(1, Ordering::SeqCst);
            }
        },
        Subscribe::new().concurrency(4),
    )
    .unwrap();
    for i in 0..8 {
        bus.emit("fan.out", json!({"i": i})).unwrap();
    }
    flush(&bus).await;
    assert_eq!(passed.load(Ordering::SeqCst), 8);
}

#[tokio::test]
async fn concurrency_n_runs_no_more_than_n_at_once() {
    let bus = Bus::new();
    let running = Running::default();
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let release = Arc::new(Semaphore::new(0));
    let (r, rel) = (running.clone(), release.clone());
    bus.subscribe_async_with(
        "fan.out",
        move |_: Event| {
            let (r, rel, started_tx) = (r.clone(), rel.clone(), started_tx.clone());
            async move {
                r.enter();
                started_tx.send(()).unwrap();
                rel.acquire().await.unwrap().forget();
                r.exit();
            }
        },
        Subscribe::new().concurrency(3),
    )
    .unwrap();
    for i in 0..9 {
        bus.emit("fan.out", json!({"i": i})).unwrap();
    }
    // Three start and hold; each release lets exactly one more start.
    for _ in 0..3 {
        tokio::time::timeout(LIMIT, started.recv())
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(running.now.load(Ordering::SeqCst), 3);
    for _ in 3..9 {
        release.add_permits(1);
        tokio::time::timeout(LIMIT, started.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(running.now.load(Ordering::SeqCst) <= 3);
    }
    release.add_permits(3);
    flush(&bus).await;
    assert_eq!(running.max(), 3);
    assert_eq!(bus.stats().events.delivered, 9);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn max_concurrent_handlers_caps_the_whole_bus() {
    let bus = Bus::builder().max_concurrent_handlers(2).build().unwrap();
    let running = Running::default();
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let release = Arc::new(Semaphore::new(0));
    for _ in 0..3 {
        let (r, rel, tx) = (running.clone(), release.clone(), started_tx.clone());
        bus.subscribe_async_with(
            "capped.*",
            move |_: Event| {
                let (r, rel, tx) = (r.clone(), rel.clone(), tx.clone());
                async move {
                    r.enter();
                    tx.send(()).unwrap();
                    rel.acquire().await.unwrap().forget();
                    r.exit();
                }
            },
            Subscribe::new().concurrency(4),
        )
        .unwrap();
    }
    // 4 events x 3 subscriptions = 12 deliveries, each subscription allowing 4.
    for i in 0..4 {
        bus.emit("capped.job", json!({"i": i})).unwrap();
    }
    for _ in 0..2 {
        tokio::time::timeout(LIMIT, started.recv())
            .await
            .unwrap()
            .unwrap();
    }
    assert_eq!(running.now.load(Ordering::SeqCst), 2);
    for _ in 2..12 {
        release.add_permits(1);
        tokio::time::timeout(LIMIT, started.recv())
            .await
            .unwrap()
            .unwrap();
    }
    release.add_permits(2);
    flush(&bus).await;
    assert_eq!(running.max(), 2);
    assert_eq!(bus.stats().events.delivered, 12);
}

#[test]
fn zero_bus_concurrency_is_refused() {
    let err = Bus::builder()
        .max_concurrent_handlers(0)
        .build()
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "max_concurrent_handlers must be at least 1"
    );
}

#[tokio::test]
async fn concurrency_zero_is_treated_as_one() {
    let bus = Bus::new();
    let running = Running::default();
    let log = Arc::new(Mutex::new(Vec::new()));
    let (r, l) = (running.clone(), log.clone());
    bus.subscribe_async_with(
        "one.at.a.time",
        move |e: Event| {
            let (r, l) = (r.clone(), l.clone());
            async move {
                r.enter();
                tokio::task::yield_now().await;
                l.lock().unwrap().push(e.data()["i"].as_u64().unwrap());
                r.exit();
            }
        },
        Subscribe::new().concurrency(0),
    )
    .unwrap();
    for i in 0..50 {
        bus.emit("one.at.a.time", json!({"i": i})).unwrap();
    }
    flush(&bus).await;
    assert_eq!(running.max(), 1);
    assert_eq!(*log.lock().unwrap(), (0..50).collect::<Vec<u64>>());
}

// An `emit_and_wait` from a task of the bus's runtime may run its own
// delivery to an idle async handler on its own task (`turn.rs`): the same
// order, one delivery at a time, and the same outcomes as the worker gives.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waiting_and_plain_emitters_share_a_subscriber_in_order_one_at_a_time() {
    const WAITERS: u64 = 3;
    const THREADS: u64 = 2;
    const PER: u64 = 1_000;
    // The plain emitters are threads outside the runtime: the bus has one.
    let bus = Bus::builder()
        .runtime(tokio::runtime::Handle::current())
        .build()
        .unwrap();
    let log = Arc::new(Mutex::new(Vec::new()));
    let running = Running::default();
    let (l, r) = (log.clone(), running.clone());
    bus.subscribe_async("seq.item", move |e: Event| {
        let (l, r) = (l.clone(), r.clone());
        async move {
            r.enter();
            let (t, i) = (
                e.data()["t"].as_u64().unwrap(),
                e.data()["i"].as_u64().unwrap(),
            );
            // Every third delivery waits once, so that some go on in a task
            // of their own after the emitter's first poll.
            if i % 3 == 0 {
                tokio::task::yield_now().await;
            }
            l.lock().unwrap().push((t, i));
            r.exit();
        }
    })
    .unwrap();
    let waiters: Vec<_> = (0..WAITERS)
        .map(|t| {
            let bus = bus.clone();
            tokio::spawn(async move {
                for i in 0..PER {
                    let report = bus
                        .emit_and_wait("seq.item", json!({"t": t, "i": i}))
                        .await
                        .unwrap();
                    assert_eq!(report.outcomes.len(), 1);
                    assert!(report.is_success(), "{report:?}");
                }
            })
        })
        .collect();
    let threads = emit_from_threads(&bus, WAITERS..WAITERS + THREADS, PER);
    for w in waiters {
        tokio::time::timeout(LIMIT, w).await.expect("hung").unwrap();
    }
    for t in threads {
        t.join().unwrap();
    }
    flush(&bus).await;
    let log = log.lock().unwrap();
    assert_eq!(log.len() as u64, (WAITERS + THREADS) * PER);
    assert_each_emitter_in_order(&log, 0..WAITERS + THREADS, PER);
    assert_eq!(running.max(), 1, "one delivery at a time");
    let stats = bus.stats();
    assert_eq!(stats.events.delivered, (WAITERS + THREADS) * PER);
    assert_eq!(stats.events.dropped, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_handler_still_waiting_when_the_emit_and_wait_is_dropped_finishes() {
    let bus = Bus::new();
    let gate = Arc::new(tokio::sync::Notify::new());
    let (done_tx, mut done_rx) = mpsc::unbounded_channel();
    let g = gate.clone();
    bus.subscribe_async("gated.item", move |e: Event| {
        let (g, done) = (g.clone(), done_tx.clone());
        async move {
            if e.data()["wait"] == true {
                g.notified().await;
            }
            done.send(e.data()["i"].as_u64().unwrap()).unwrap();
        }
    })
    .unwrap();
    {
        let wait = bus.emit_and_wait("gated.item", json!({"i": 1, "wait": true}));
        tokio::pin!(wait);
        // One poll: the delivery starts, and waits at the gate.
        assert!(futures::poll!(wait.as_mut()).is_pending());
    }
    // Dropped: the waiting stops, not the delivery. The next event queues
    // behind it, and runs only after it.
    let next = tokio::spawn({
        let bus = bus.clone();
        async move { bus.emit_and_wait("gated.item", json!({"i": 2})).await }
    });
    gate.notify_one();
    let report = tokio::time::timeout(LIMIT, next)
        .await
        .expect("hung")
        .unwrap()
        .unwrap();
    assert!(report.is_success(), "{report:?}");
    assert_eq!(done_rx.recv().await, Some(1));
    assert_eq!(done_rx.recv().await, Some(2));
    flush(&bus).await;
    assert_eq!(bus.stats().events.delivered, 2);
}

#[test]
fn a_bus_with_its_own_runtime_runs_waited_deliveries_there() {
    let own = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let other = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let bus = Bus::builder()
        .runtime(own.handle().clone())
        .build()
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    bus.subscribe_async("where.item", move |_e: Event| {
        let s = s.clone();
        async move {
            s.lock()
                .unwrap()
                .push(tokio::runtime::Handle::current().id());
        }
    })
    .unwrap();
    // From the bus's own runtime and from another one.
    for rt in [&own, &other] {
        let bus = bus.clone();
        rt.block_on(async move {
            for _ in 0..3 {
                bus.emit_and_wait("where.item", json!({})).await.unwrap();
            }
        });
    }
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 6);
    assert!(seen.iter().all(|id| *id == own.handle().id()), "{seen:?}");
}

#[tokio::test(flavor = "current_thread")]
async fn an_idle_async_handler_runs_on_the_waiting_emitters_task() {
    let bus = Bus::new();
    let (tx, mut rx) = mpsc::unbounded_channel();
    bus.subscribe_async("here.item", move |_e: Event| {
        let tx = tx.clone();
        async move {
            tx.send(tokio::task::try_id()).unwrap();
        }
    })
    .unwrap();
    let emitter = tokio::spawn({
        let bus = bus.clone();
        async move {
            for _ in 0..10 {
                let report = bus.emit_and_wait("here.item", json!({})).await.unwrap();
                assert!(report.is_success(), "{report:?}");
            }
            tokio::task::id()
        }
    });
    let emitter = emitter.await.unwrap();
    for _ in 0..10 {
        assert_eq!(rx.recv().await.unwrap(), Some(emitter));
    }
    // A plain emit still goes to the worker's task.
    bus.emit("here.item", json!({})).unwrap();
    let worker = rx.recv().await.unwrap();
    assert!(worker.is_some_and(|id| id != emitter), "{worker:?}");
}
