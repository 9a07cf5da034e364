//! What an emit costs against what a channel costs, in one run, with the
//! payload users emit (`json!({"i": n})`, built afresh for every event, the
//! same way on every side).
//!
//! `cargo xtask bench emit` runs it and writes the tables of
//! `docs/benchmarks.md`; `cargo bench -p nerve --bench emit` runs it alone.
//!
//! * `emit_json/*`, `emit_null/*`: one emit to one inline sync handler on a
//!   default bus, against tokio broadcast `send` + `try_recv` of an
//!   `Arc<Value>` and against cloning the payload and calling one boxed
//!   closure; with `json!({"i": n})` and with `Value::Null`.
//! * `emit_and_wait/*`: `emit_and_wait` to one async handler from a tokio
//!   task on a 2-worker runtime, against the same request and reply over a
//!   tokio `mpsc` + `oneshot` pair on the same runtime.
//! * `emit_threads/*`: 1, 2 and 4 threads emitting into one bus with one
//!   cheap inline handler (events per second), against the same threads
//!   sending into and receiving from one shared crossbeam channel.
//! * `journal_burst/*`: events back to back with the journal on (default
//!   options, a temporary directory, the flush included) and off.
//!
//! Then `paired`: the ratios the targets are about, from variants that take
//! turns round after round (see `support/paired.rs`), written to
//! `<target>/nerve-bench/paired/emit.json`. A filter argument that does not
//! name `paired` skips it, as criterion skips what a filter does not match;
//! `paired/<group>` (`paired/emit_threads`, say) runs that group alone.

#[path = "support/paired.rs"]
mod paired;

use std::cell::{Cell, RefCell};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use nerve::sink::EventSink;
use nerve::{Bus, Event, Journal, Value, json};
use paired::{Report, Rounds, Target, pick};

const TOPIC: &str = "bench.event";

/// The payload of the `json` cases: what users emit.
fn object(n: u64) -> Value {
    json!({ "i": n })
}

/// The payload of the `null` cases.
fn null(_: u64) -> Value {
    Value::Null
}

/// A payload maker: `object` or `null`.
type Payload = fn(u64) -> Value;

/// The one cheap handler every side calls: a count the optimizer keeps.
fn handle(counter: &AtomicU64, data: &Value) {
    black_box(data);
    black_box(counter).fetch_add(1, Ordering::Relaxed);
}

/// A default bus with one inline sync handler.
fn bus_with_handler(counter: &Arc<AtomicU64>) -> Bus {
    let bus = Bus::new();
    let counter = counter.clone();
    bus.subscribe(TOPIC, move |event: &Event| handle(&counter, event.data()))
        .expect("subscribe");
    bus
}

/// The three sides of `emit_json` and `emit_null`, each doing `n` emits (or
/// their counterpart) per call.
struct OneHandler {
    bus: Bus,
    tx: tokio::sync::broadcast::Sender<Arc<Value>>,
    rx: RefCell<tokio::sync::broadcast::Receiver<Arc<Value>>>,
    closure: Box<dyn Fn(&Value)>,
    counter: Arc<AtomicU64>,
    next: Cell<u64>,
}

impl OneHandler {
    fn new() -> Self {
        let counter = Arc::new(AtomicU64::new(0));
        let (tx, rx) = tokio::sync::broadcast::channel(1_024);
        let for_closure = counter.clone();
        OneHandler {
            bus: bus_with_handler(&counter),
            tx,
            rx: RefCell::new(rx),
            closure: Box::new(move |data: &Value| handle(&for_closure, data)),
            counter,
            next: Cell::new(0),
        }
    }

    /// The number of the next payload.
    fn next(&self) -> u64 {
        let n = self.next.get() + 1;
        self.next.set(n);
        n
    }

    fn nerve(&self, payload: Payload, n: u64) -> Duration {
        let start = Instant::now();
        for _ in 0..n {
            self.bus.emit(TOPIC, payload(self.next())).expect("emit");
        }
        start.elapsed()
    }

    /// As `nerve`, but the payload is handed over as an `Arc`, built the
    /// way the broadcast side builds it.
    fn nerve_shared(&self, payload: Payload, n: u64) -> Duration {
        let start = Instant::now();
        for _ in 0..n {
            self.bus
                .emit_shared(TOPIC, Arc::new(payload(self.next())))
                .expect("emit");
        }
        start.elapsed()
    }

    fn broadcast(&self, payload: Payload, n: u64) -> Duration {
        let mut rx = self.rx.borrow_mut();
        let start = Instant::now();
        for _ in 0..n {
            self.tx.send(Arc::new(payload(self.next()))).expect("send");
            let data = rx.try_recv().expect("just sent");
            handle(&self.counter, &data);
        }
        start.elapsed()
    }

    fn closure(&self, payload: Payload, n: u64) -> Duration {
        let start = Instant::now();
        for _ in 0..n {
            let data = payload(self.next());
            let copy = data.clone();
            (self.closure)(black_box(&copy));
        }
        start.elapsed()
    }
}

/// The names of the three sides, as the tables show them.
const NERVE_EMIT: &str = "nerve emit";
const NERVE_SHARED: &str = "nerve emit_shared";
const BROADCAST: &str = "tokio broadcast send + try_recv";
const CLOSURE: &str = "clone + boxed closure";

fn one_handler(c: &mut Criterion) {
    let sides = OneHandler::new();
    for (group, payload) in [("emit_json", object as Payload), ("emit_null", null)] {
        let mut group = c.benchmark_group(group);
        group.throughput(Throughput::Elements(1));
        group.bench_function(NERVE_EMIT, |b| {
            b.iter_custom(|iters| sides.nerve(payload, iters));
        });
        group.bench_function(NERVE_SHARED, |b| {
            b.iter_custom(|iters| sides.nerve_shared(payload, iters));
        });
        group.bench_function(BROADCAST, |b| {
            b.iter_custom(|iters| sides.broadcast(payload, iters));
        });
        group.bench_function(CLOSURE, |b| {
            b.iter_custom(|iters| sides.closure(payload, iters));
        });
        group.finish();
    }
}

/// The runtime of `emit_and_wait`: 2 workers, as many as cores here.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("tokio runtime")
    })
}

/// A request of the `mpsc` + `oneshot` side: the payload and where to reply.
type Request = (Value, tokio::sync::oneshot::Sender<()>);

/// Both sides of `emit_and_wait`, each doing `n` round trips per call from
/// a task on [`runtime`].
struct RoundTrip {
    bus: Bus,
    requests: tokio::sync::mpsc::Sender<Request>,
}

impl RoundTrip {
    fn new() -> Self {
        let counter = Arc::new(AtomicU64::new(0));
        let bus = Bus::new();
        let for_bus = counter.clone();
        bus.subscribe_async(TOPIC, move |event: Event| {
            let counter = for_bus.clone();
            async move { handle(&counter, event.data()) }
        })
        .expect("subscribe");
        let (requests, mut incoming) = tokio::sync::mpsc::channel::<Request>(1_024);
        runtime().spawn(async move {
            while let Some((data, reply)) = incoming.recv().await {
                handle(&counter, &data);
                let _ = reply.send(());
            }
        });
        RoundTrip { bus, requests }
    }

    fn nerve(&self, n: u64) -> Duration {
        let bus = self.bus.clone();
        runtime()
            .block_on(runtime().spawn(async move {
                let start = Instant::now();
                for i in 0..n {
                    bus.emit_and_wait(TOPIC, object(i)).await.expect("emit");
                }
                start.elapsed()
            }))
            .expect("task")
    }

    fn channels(&self, n: u64) -> Duration {
        let requests = self.requests.clone();
        runtime()
            .block_on(runtime().spawn(async move {
                let start = Instant::now();
                for i in 0..n {
                    let (reply, replied) = tokio::sync::oneshot::channel();
                    requests.send((object(i), reply)).await.expect("send");
                    replied.await.expect("reply");
                }
                start.elapsed()
            }))
            .expect("task")
    }
}

const EMIT_AND_WAIT: &str = "nerve emit_and_wait";
const MPSC_ONESHOT: &str = "tokio mpsc + oneshot";

fn emit_and_wait(c: &mut Criterion) {
    let sides = RoundTrip::new();
    let mut group = c.benchmark_group("emit_and_wait");
    group.throughput(Throughput::Elements(1));
    group.bench_function(EMIT_AND_WAIT, |b| b.iter_custom(|iters| sides.nerve(iters)));
    group.bench_function(MPSC_ONESHOT, |b| {
        b.iter_custom(|iters| sides.channels(iters));
    });
    group.finish();
}

/// Runs `work(thread)` on `threads` threads released together, returning
/// the time from their release to the last one's end.
fn on_threads(threads: usize, work: impl Fn(usize) + Sync) -> Duration {
    let barrier = Barrier::new(threads + 1);
    std::thread::scope(|s| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let (barrier, work) = (&barrier, &work);
                s.spawn(move || {
                    barrier.wait();
                    work(t);
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        for handle in handles {
            handle.join().expect("emitting thread");
        }
        start.elapsed()
    })
}

/// `threads` threads each emitting `per_thread` events into one bus.
fn nerve_threads(bus: &Bus, threads: usize, per_thread: u64) -> Duration {
    on_threads(threads, |t| {
        for i in 0..per_thread {
            bus.emit(TOPIC, object(t as u64 * per_thread + i))
                .expect("emit");
        }
    })
}

/// The reference: `threads` threads each sending `per_thread` payloads
/// into one shared crossbeam channel and receiving one back after each
/// send (its own or another thread's), calling the handler on it.
fn channel_threads(counter: &AtomicU64, threads: usize, per_thread: u64) -> Duration {
    let (tx, rx) = crossbeam_channel::bounded::<Value>(1_024);
    on_threads(threads, |t| {
        for i in 0..per_thread {
            tx.send(object(t as u64 * per_thread + i)).expect("send");
            // Never blocks for long: this thread's send is still in the
            // channel or another thread's took its place.
            let data = rx.recv().expect("receive");
            handle(counter, &data);
        }
    })
}

const THREADS: [usize; 3] = [1, 2, 4];
const NERVE_THREADS: &str = "nerve emit";
const CROSSBEAM_THREADS: &str = "crossbeam channel, shared";

fn emit_threads(c: &mut Criterion) {
    const PER_THREAD: u64 = 10_000;
    let counter = Arc::new(AtomicU64::new(0));
    let bus = bus_with_handler(&counter);
    let mut group = c.benchmark_group("emit_threads");
    group.sample_size(10);
    for threads in THREADS {
        group.throughput(Throughput::Elements(threads as u64 * PER_THREAD));
        group.bench_with_input(
            BenchmarkId::new(NERVE_THREADS, threads),
            &threads,
            |b, &threads| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| nerve_threads(&bus, threads, PER_THREAD))
                        .sum()
                });
            },
        );
        group.bench_with_input(
            BenchmarkId::new(CROSSBEAM_THREADS, threads),
            &threads,
            |b, &threads| {
                b.iter_custom(|iters| {
                    (0..iters)
                        .map(|_| channel_threads(&counter, threads, PER_THREAD))
                        .sum()
                });
            },
        );
    }
    group.finish();
}

/// `n` events back to back on a fresh default bus with one inline handler,
/// with a fresh journal of default options in a temporary directory when
/// `journal` is set; the time includes the flush that waits for the
/// journal's writer.
fn burst(journal: bool, n: u64) -> Duration {
    let counter = Arc::new(AtomicU64::new(0));
    let dir = tempfile::tempdir().expect("temporary directory");
    let sink = journal.then(|| {
        Journal::builder(dir.path().join("bench.jsonl"))
            .build()
            .expect("journal")
    });
    let mut builder = Bus::builder();
    if let Some(sink) = &sink {
        builder = builder.journal(sink.clone());
    }
    let bus = builder.build().expect("bus");
    let for_bus = counter.clone();
    bus.subscribe(TOPIC, move |event: &Event| handle(&for_bus, event.data()))
        .expect("subscribe");
    let start = Instant::now();
    for i in 0..n {
        bus.emit(TOPIC, object(i)).expect("emit");
    }
    bus.flush_blocking();
    if let Some(sink) = &sink {
        // The bus's flush gives up after its shutdown timeout; a long burst
        // can leave the writer further behind than that.
        sink.flush(Duration::from_secs(600)).expect("journal flush");
    }
    let elapsed = start.elapsed();
    bus.shutdown_blocking();
    elapsed
}

const JOURNAL_ON: &str = "journal on";
const JOURNAL_OFF: &str = "journal off";

fn journal_burst(c: &mut Criterion) {
    const EVENTS: u64 = 20_000;
    let mut group = c.benchmark_group("journal_burst");
    group
        .sample_size(10)
        .throughput(Throughput::Elements(EVENTS));
    for (name, journal) in [(JOURNAL_ON, true), (JOURNAL_OFF, false)] {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| (0..iters).map(|_| burst(journal, EVENTS)).sum());
        });
    }
    group.finish();
}

/// `2000000` as `2,000,000`.
fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Seconds per operation of a measurement of `n` operations.
fn per_op(elapsed: Duration, n: u64) -> f64 {
    elapsed.as_secs_f64() / n as f64
}

/// The ratios of the targets, paired (see `support/paired.rs`); written
/// to `emit.json` for `cargo xtask bench`.
fn paired() {
    // `paired/emit_threads` (say) as the filter runs that group alone.
    let part = |group: &str| paired::selected(&format!("paired/{group}"));
    let mut report = Report::new("emit");
    let ns = |seconds: f64| (seconds * 1e9, "ns");

    let chunk: u64 = pick(20_000, 2_000);
    let rounds = pick(101, 7);
    let sides = OneHandler::new();
    for (group, payload, target) in [
        ("emit_json", object as Payload, 2.5),
        ("emit_null", null, 2.0),
    ] {
        if !part(group) {
            continue;
        }
        let r = Rounds::run(
            3,
            rounds,
            &mut [
                (NERVE_EMIT, &mut || {
                    per_op(sides.nerve(payload, chunk), chunk)
                }),
                (NERVE_SHARED, &mut || {
                    per_op(sides.nerve_shared(payload, chunk), chunk)
                }),
                (BROADCAST, &mut || {
                    per_op(sides.broadcast(payload, chunk), chunk)
                }),
                (CLOSURE, &mut || {
                    per_op(sides.closure(payload, chunk), chunk)
                }),
            ],
        );
        let nerve = ns(r.spread(NERVE_EMIT).median);
        report.row(
            group,
            NERVE_EMIT,
            nerve,
            rounds,
            Some((BROADCAST, r.ratio(NERVE_EMIT, BROADCAST))),
            Some(Target::AtMost(target)),
        );
        report.row(
            group,
            NERVE_EMIT,
            nerve,
            rounds,
            Some((CLOSURE, r.ratio(NERVE_EMIT, CLOSURE))),
            None,
        );
        report.row(
            group,
            NERVE_SHARED,
            ns(r.spread(NERVE_SHARED).median),
            rounds,
            Some((BROADCAST, r.ratio(NERVE_SHARED, BROADCAST))),
            None,
        );
        for name in [BROADCAST, CLOSURE] {
            report.row(group, name, ns(r.spread(name).median), rounds, None, None);
        }
    }

    if part("emit_and_wait") {
        let trips: u64 = pick(2_000, 200);
        let rounds = pick(51, 5);
        let sides = RoundTrip::new();
        let r = Rounds::run(
            2,
            rounds,
            &mut [
                (EMIT_AND_WAIT, &mut || per_op(sides.nerve(trips), trips)),
                (MPSC_ONESHOT, &mut || per_op(sides.channels(trips), trips)),
            ],
        );
        report.row(
            "emit_and_wait",
            EMIT_AND_WAIT,
            ns(r.spread(EMIT_AND_WAIT).median),
            rounds,
            Some((MPSC_ONESHOT, r.ratio(EMIT_AND_WAIT, MPSC_ONESHOT))),
            Some(Target::AtMost(1.5)),
        );
        report.row(
            "emit_and_wait",
            MPSC_ONESHOT,
            ns(r.spread(MPSC_ONESHOT).median),
            rounds,
            None,
            None,
        );
    }

    if part("emit_threads") {
        let per_thread: u64 = pick(100_000, 5_000);
        let rounds = pick(21, 3);
        let counter = Arc::new(AtomicU64::new(0));
        let bus = bus_with_handler(&counter);
        let rate = |threads: usize, elapsed: Duration| {
            (threads as u64 * per_thread) as f64 / elapsed.as_secs_f64()
        };
        let names: Vec<(usize, String, String)> = THREADS
            .iter()
            .map(|&t| {
                let plural = if t == 1 { "" } else { "s" };
                (
                    t,
                    format!("{NERVE_THREADS}, {t} thread{plural}"),
                    format!("{CROSSBEAM_THREADS}, {t} thread{plural}"),
                )
            })
            .collect();
        let mut measures: Vec<(String, paired::Measure<'_>)> = Vec::new();
        for (t, nerve_name, channel_name) in &names {
            let (t, bus, counter) = (*t, &bus, &counter);
            measures.push((
                nerve_name.clone(),
                Box::new(move || rate(t, nerve_threads(bus, t, per_thread))),
            ));
            measures.push((
                channel_name.clone(),
                Box::new(move || rate(t, channel_threads(counter, t, per_thread))),
            ));
        }
        let r = Rounds::run_boxed(1, rounds, &mut measures);
        for (i, (t, nerve_name, channel_name)) in names.iter().enumerate() {
            for (name, one) in [(nerve_name, &names[0].1), (channel_name, &names[0].2)] {
                let rate = (r.spread(name).median, "events/s");
                let ratio = (i > 0).then(|| (one.as_str(), r.ratio(name, one)));
                let target = (*t == 2 && name == nerve_name).then_some(Target::AtLeast(1.5));
                report.row("emit_threads", name, rate, rounds, ratio, target);
            }
        }
    }

    if part("journal_burst") {
        let events: u64 = pick(2_000_000, 20_000);
        let rounds = pick(5, 3);
        let r = Rounds::run(
            1,
            rounds,
            &mut [
                (JOURNAL_OFF, &mut || per_op(burst(false, events), events)),
                (JOURNAL_ON, &mut || per_op(burst(true, events), events)),
            ],
        );
        let (on, off) = (
            format!("{JOURNAL_ON}, {} events", thousands(events)),
            format!("{JOURNAL_OFF}, {} events", thousands(events)),
        );
        report.row(
            "journal_burst",
            &on,
            ns(r.spread(JOURNAL_ON).median),
            rounds,
            Some((&off, r.ratio(JOURNAL_ON, JOURNAL_OFF))),
            Some(Target::AtMost(2.0)),
        );
        report.row(
            "journal_burst",
            &off,
            ns(r.spread(JOURNAL_OFF).median),
            rounds,
            None,
            None,
        );
    }

    report.write();
}

criterion_group!(
    benches,
    one_handler,
    emit_and_wait,
    emit_threads,
    journal_burst
);

fn main() {
    if paired::selected("paired") {
        paired();
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
