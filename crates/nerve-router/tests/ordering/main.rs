//! Ordering and concurrency of async deliveries: each subscriber sees its
//! events in order, `concurrency(n)` runs n at once, and
//! `max_concurrent_handlers` caps the whole bus.

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
    let emitters: Vec<_> = (0..THREADS)
        .map(|t| {
            let bus = bus.clone();
            std::thread::spawn(move || {
                for i in 0..PER {
                    bus.emit("seq.item", json!({"t": t, "i": i})).unwrap();
                }
            })
        })
        .collect();
    for e in emitters {
        e.join().unwrap();
    }
    flush(&bus).await;
    let log = log.lock().unwrap();
    assert_eq!(log.len() as u64, THREADS * PER);
    for t in 0..THREADS {
        let mine: Vec<u64> = log
            .iter()
            .filter(|(x, _)| *x == t)
            .map(|(_, i)| *i)
            .collect();
        assert_eq!(mine, (0..PER).collect::<Vec<_>>(), "emitter {t}");
    }
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
