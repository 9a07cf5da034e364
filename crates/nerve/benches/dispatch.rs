//! Dispatch benchmarks: what one `emit` costs, and how routing scales with
//! the number of subscriptions, against a naive linear scan in the same run.
//!
//! Run with `cargo bench -p nerve --bench dispatch`; results and targets are
//! in `docs/benchmarks.md`.
//!
//! * `emit`: one event to 0, 1 or 10 inline sync handlers on a default bus,
//!   one sync handler with history off, and 1,000 events through one async
//!   handler (time per batch; throughput per event).
//! * `routing`: 10,000 exact and 100 wildcard subscriptions; hot topics
//!   (served from the route cache) and 100,000 distinct topics (cache
//!   defeated), each against the naive scan.
//! * `routing_flat`: one topic with 10 to 10,000 subscriptions present.

use std::hint::black_box;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use nerve::{Bus, Event, Pattern, Value};

/// The topic of the `emit` group.
const TOPIC: &str = "bench.event";

/// Events per iteration of the async benchmark.
const ASYNC_BATCH: u64 = 1_000;

/// `svc{0..SERVICES}.event{0..EVENTS}`: the exact subscriptions of `routing`.
const SERVICES: usize = 100;
const EVENTS: usize = 100;

/// Wildcards of `routing`: `svc{k}.*` and `*.event{k}` for `k` below this.
const WILDCARDS_PER_SIDE: usize = 50;

/// Distinct topics cycled through to defeat the route cache (4,096 entries).
const COLD_TOPICS: usize = 100_000;

/// A handler doing trivial work the optimizer cannot remove.
fn counting(counter: &Arc<AtomicU64>) -> impl Fn(&Event) + Send + Sync + 'static {
    let counter = counter.clone();
    move |_: &Event| {
        black_box(&*counter).fetch_add(1, Ordering::Relaxed);
    }
}

/// A bus that spends an emit on routing and calling handlers only: no
/// history, no correlation id generation, no handler timing. The naive scan
/// pays for none of these either.
fn lean_bus() -> Bus {
    Bus::builder()
        .history_capacity(0)
        .generate_correlation_ids(false)
        .handler_timeout(None)
        .build()
        .expect("valid settings")
}

/// A handler of the naive scan.
type NaiveHandler = Box<dyn Fn(&Event)>;

/// The alternative to a trie and a cache: every pattern tried on every emit.
#[derive(Default)]
struct NaiveBus {
    subscriptions: Vec<(Pattern, NaiveHandler)>,
}

impl NaiveBus {
    fn subscribe(&mut self, pattern: &str, handler: impl Fn(&Event) + 'static) {
        let pattern = Pattern::parse(pattern).expect("valid pattern");
        self.subscriptions.push((pattern, Box::new(handler)));
    }

    /// Builds the event as `Bus::emit` does, then scans.
    fn emit(&self, topic: &str) {
        let event = Event::builder(topic)
            .data(Value::Null)
            .build()
            .expect("valid topic");
        for (pattern, handler) in &self.subscriptions {
            if pattern.matches(topic) {
                handler(&event);
            }
        }
    }
}

/// The same subscriptions on nerve and on the naive scan.
struct Both {
    nerve: Bus,
    naive: NaiveBus,
    counter: Arc<AtomicU64>,
}

impl Both {
    fn new() -> Self {
        Self {
            nerve: lean_bus(),
            naive: NaiveBus::default(),
            counter: Arc::default(),
        }
    }

    fn subscribe(&mut self, pattern: &str) {
        self.nerve
            .subscribe(pattern, counting(&self.counter))
            .expect("subscribe");
        self.naive.subscribe(pattern, counting(&self.counter));
    }
}

/// The `n`-th distinct exact topic of the `routing` layout.
fn exact_topic(n: usize) -> String {
    format!("svc{}.event{}", n / EVENTS, n % EVENTS)
}

/// Emits `topics` in turn, one per iteration.
fn cycle(topics: &[String], mut emit: impl FnMut(&str)) -> impl FnMut() {
    let mut next = 0;
    move || {
        emit(&topics[next]);
        next = if next + 1 == topics.len() {
            0
        } else {
            next + 1
        };
    }
}

fn emit(c: &mut Criterion) {
    let mut group = c.benchmark_group("emit");
    group.throughput(Throughput::Elements(1));
    let counter = Arc::new(AtomicU64::new(0));
    let cases: [(&str, usize, Bus); 4] = [
        ("0 handlers", 0, Bus::new()),
        ("1 sync", 1, Bus::new()),
        ("10 sync", 10, Bus::new()),
        (
            "1 sync, history off",
            1,
            Bus::builder()
                .history_capacity(0)
                .build()
                .expect("valid settings"),
        ),
    ];
    for (name, handlers, bus) in cases {
        for _ in 0..handlers {
            bus.subscribe(TOPIC, counting(&counter)).expect("subscribe");
        }
        group.bench_function(name, |b| {
            b.iter(|| bus.emit(black_box(TOPIC), Value::Null).expect("emit"));
        });
    }

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    let bus = Bus::new();
    let delivered = counter.clone();
    bus.subscribe_async(TOPIC, move |_: Event| {
        let delivered = delivered.clone();
        async move {
            black_box(&*delivered).fetch_add(1, Ordering::Relaxed);
        }
    })
    .expect("subscribe");
    group.throughput(Throughput::Elements(ASYNC_BATCH));
    group.bench_function("1 async, 1000 events", |b| {
        b.iter(|| {
            runtime.block_on(async {
                for _ in 0..ASYNC_BATCH {
                    bus.emit(black_box(TOPIC), Value::Null).expect("emit");
                }
                bus.flush().await;
            });
        });
    });
    group.finish();
}

fn routing(c: &mut Criterion) {
    let mut both = Both::new();
    for n in 0..SERVICES * EVENTS {
        both.subscribe(&exact_topic(n));
    }
    for k in 0..WILDCARDS_PER_SIDE {
        both.subscribe(&format!("svc{k}.*"));
        both.subscribe(&format!("*.event{k}"));
    }
    // Each matches its exact subscription and both wildcards: 3 handlers.
    let hot: Vec<String> = (0..8).map(|k| format!("svc{k}.event{k}")).collect();
    // Never subscribed exactly; each matches one wildcard: 1 handler.
    let cold: Vec<String> = (0..COLD_TOPICS)
        .map(|n| {
            let k = n % WILDCARDS_PER_SIDE;
            if n % 2 == 0 {
                format!("svc{k}.new{n}")
            } else {
                format!("new{n}.event{k}")
            }
        })
        .collect();

    let mut group = c.benchmark_group("routing");
    group.throughput(Throughput::Elements(1));
    let Both { nerve, naive, .. } = &both;
    let nerve_emit = |topic: &str| {
        nerve.emit(black_box(topic), Value::Null).expect("emit");
    };
    let naive_emit = |topic: &str| naive.emit(black_box(topic));
    group.bench_function("hot/nerve", |b| b.iter(cycle(&hot, nerve_emit)));
    group.bench_function("hot/naive", |b| b.iter(cycle(&hot, naive_emit)));
    group.bench_function("cold/nerve", |b| b.iter(cycle(&cold, nerve_emit)));
    group.bench_function("cold/naive", |b| b.iter(cycle(&cold, naive_emit)));
    group.finish();
}

fn routing_flat(c: &mut Criterion) {
    let hot = vec!["hot.topic".to_owned()];
    let cold: Vec<String> = (0..COLD_TOPICS).map(|n| format!("hot.t{n}")).collect();
    let mut group = c.benchmark_group("routing_flat");
    group.throughput(Throughput::Elements(1));
    for size in [10, 100, 1_000, 10_000] {
        // One subscription matches every emitted topic; the rest match none.
        let mut both = Both::new();
        both.subscribe("hot.*");
        for n in 1..size {
            both.subscribe(&exact_topic(n));
        }
        let Both { nerve, naive, .. } = &both;
        let nerve_emit = |topic: &str| {
            nerve.emit(black_box(topic), Value::Null).expect("emit");
        };
        let naive_emit = |topic: &str| naive.emit(black_box(topic));
        group.bench_with_input(BenchmarkId::new("nerve", size), &size, |b, _| {
            b.iter(cycle(&hot, nerve_emit));
        });
        group.bench_with_input(BenchmarkId::new("nerve cold", size), &size, |b, _| {
            b.iter(cycle(&cold, nerve_emit));
        });
        group.bench_with_input(BenchmarkId::new("naive", size), &size, |b, _| {
            b.iter(cycle(&hot, naive_emit));
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    // Short runs: the whole file should finish in a few minutes on 2 cores.
    // Set here rather than per group so that criterion's command line
    // (`cargo xtask bench --quick`) can shorten them further.
    config = Criterion::default()
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(3))
        .sample_size(40);
    targets = emit, routing, routing_flat
}
criterion_main!(benches);
