//! Concurrency: emitting on several threads while other threads subscribe and
//! unsubscribe loses no delivery and duplicates none.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nerve_core::{Event, json};
use nerve_router::{Bus, Subscribe};

const EMITTERS: usize = 4;
const PER_EMITTER: usize = 2_000;
const TOTAL: usize = EMITTERS * PER_EMITTER;

/// One delivery counter per event, indexed by the event's `t` and `i`.
struct Tally(Vec<AtomicU32>);

impl Tally {
    fn new() -> Arc<Self> {
        Arc::new(Self((0..TOTAL).map(|_| AtomicU32::new(0)).collect()))
    }

    fn record(&self, e: &Event) {
        let t = usize::try_from(e.data()["t"].as_u64().unwrap()).unwrap();
        let i = usize::try_from(e.data()["i"].as_u64().unwrap()).unwrap();
        self.0[t * PER_EMITTER + i].fetch_add(1, Ordering::Relaxed);
    }

    /// Events that were not delivered exactly once, as (index, count).
    fn not_once(&self) -> Vec<(usize, u32)> {
        self.0
            .iter()
            .enumerate()
            .map(|(n, c)| (n, c.load(Ordering::Relaxed)))
            .filter(|(_, c)| *c != 1)
            .collect()
    }
}

fn emit_all(bus: &Bus, t: usize) {
    for i in 0..PER_EMITTER {
        // Two event types so that both exact and wildcard routes are exercised.
        let event_type = if i % 2 == 0 { "load.tick" } else { "load.tock" };
        bus.emit(event_type, json!({"t": t, "i": i})).unwrap();
    }
}

/// Subscribes and unsubscribes until `stop`, checking that each of its own
/// short-lived subscriptions never sees an event twice.
fn churn(bus: &Bus, stop: &AtomicBool, duplicates: &AtomicU64, made: &AtomicU64, seed: usize) {
    let patterns = ["load.tick", "load.*", "*", "load.tock"];
    let mut n = seed;
    while !stop.load(Ordering::Relaxed) {
        let seen = Arc::new(Mutex::new(HashSet::new()));
        let dups = Arc::new(AtomicU64::new(0));
        let (s, d) = (seen.clone(), dups.clone());
        let priority = i32::try_from(n % 7).unwrap() - 3;
        let id = bus
            .subscribe_with(
                [patterns[n % 4], patterns[(n + 1) % 4]],
                move |e: &Event| {
                    if !s.lock().unwrap().insert(e.event_id()) {
                        d.fetch_add(1, Ordering::Relaxed);
                    }
                },
                Subscribe::new().priority(priority),
            )
            .unwrap();
        made.fetch_add(1, Ordering::Relaxed);
        std::thread::yield_now();
        assert!(bus.unsubscribe(id));
        duplicates.fetch_add(dups.load(Ordering::Relaxed), Ordering::Relaxed);
        n += 1;
    }
}

#[test]
fn stable_subscribers_get_every_event_exactly_once_while_others_churn() {
    let bus = Bus::builder().history_capacity(0).build().unwrap();
    // Stable subscribers with exact, wildcard and overlapping patterns, and
    // priorities on both sides of the churning ones.
    let stable: Vec<(Arc<Tally>, Vec<&str>, i32)> = vec![
        (Tally::new(), vec!["load.*"], 5),
        (Tally::new(), vec!["load.tick", "load.tock"], 0),
        (Tally::new(), vec!["*", "load.*", "load.tick"], -5),
    ];
    for (tally, patterns, priority) in &stable {
        let tally = tally.clone();
        bus.subscribe_with(
            patterns.clone(),
            move |e: &Event| tally.record(e),
            Subscribe::new().priority(*priority),
        )
        .unwrap();
    }

    let stop = AtomicBool::new(false);
    let duplicates = AtomicU64::new(0);
    let made = AtomicU64::new(0);
    std::thread::scope(|s| {
        let churners: Vec<_> = (0..2)
            .map(|seed| {
                let (bus, stop, duplicates, made) = (&bus, &stop, &duplicates, &made);
                s.spawn(move || churn(bus, stop, duplicates, made, seed))
            })
            .collect();
        let emitters: Vec<_> = (0..EMITTERS)
            .map(|t| {
                let bus = &bus;
                s.spawn(move || emit_all(bus, t))
            })
            .collect();
        for e in emitters {
            e.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        for c in churners {
            c.join().unwrap();
        }
    });

    for (n, (tally, patterns, _)) in stable.iter().enumerate() {
        let wrong = tally.not_once();
        assert!(
            wrong.is_empty(),
            "stable subscriber {n} {patterns:?}: {} events not delivered exactly once, first {:?}",
            wrong.len(),
            &wrong[..wrong.len().min(5)]
        );
    }
    assert_eq!(
        duplicates.load(Ordering::Relaxed),
        0,
        "a churning subscriber saw an event twice"
    );
    let made = made.load(Ordering::Relaxed);
    assert!(made > 0, "the churners ran");

    let stats = bus.stats();
    assert_eq!(stats.events.emitted, TOTAL as u64);
    assert_eq!(stats.events.failed, 0);
    assert_eq!(stats.subscriptions.active, stable.len());
    assert_eq!(stats.subscriptions.total, stable.len() as u64 + made);
    for s in &stats.subscribers {
        assert_eq!(s.delivered, TOTAL as u64, "{s:?}");
    }
    assert_eq!(stats.by_event_type["load.tick"], (TOTAL / 2) as u64);
    assert_eq!(stats.by_event_type["load.tock"], (TOTAL / 2) as u64);
}

#[test]
fn async_stable_subscribers_get_every_event_exactly_once_while_others_churn() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let bus = Bus::builder()
        .runtime(runtime.handle().clone())
        .history_capacity(0)
        .build()
        .unwrap();
    let tally = Tally::new();
    let t = tally.clone();
    bus.subscribe_async_with(
        ["load.*", "*"],
        move |e: Event| {
            let t = t.clone();
            async move { t.record(&e) }
        },
        Subscribe::new().concurrency(8),
    )
    .unwrap();

    let stop = AtomicBool::new(false);
    let duplicates = AtomicU64::new(0);
    let made = AtomicU64::new(0);
    std::thread::scope(|s| {
        let churner = s.spawn(|| churn(&bus, &stop, &duplicates, &made, 0));
        let emitters: Vec<_> = (0..EMITTERS)
            .map(|t| {
                let bus = &bus;
                s.spawn(move || emit_all(bus, t))
            })
            .collect();
        for e in emitters {
            e.join().unwrap();
        }
        stop.store(true, Ordering::Relaxed);
        churner.join().unwrap();
    });
    runtime.block_on(async {
        tokio::time::timeout(Duration::from_secs(30), bus.flush())
            .await
            .expect("flush hung");
    });

    assert_eq!(tally.not_once(), []);
    assert_eq!(duplicates.load(Ordering::Relaxed), 0);
    let stats = bus.stats();
    assert_eq!(stats.subscribers.len(), 1);
    assert_eq!(stats.subscribers[0].delivered, TOTAL as u64);
    assert_eq!(stats.subscribers[0].pending, 0);
    assert_eq!(stats.pending, 0);
    assert_eq!(stats.events.abandoned, 0);
}

#[test]
fn after_unsubscribe_returns_no_new_delivery_starts() {
    let bus = Bus::new();
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    let id = bus
        .subscribe("a.b", move |_: &Event| {
            c.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
    bus.emit("a.b", json!({})).unwrap();
    assert!(bus.unsubscribe(id));
    for _ in 0..10 {
        bus.emit("a.b", json!({})).unwrap();
    }
    assert_eq!(count.load(Ordering::Relaxed), 1);
}
