//! Fan-out to stream subscribers, side by side with the channels a Rust
//! program would otherwise use. Every measurement counts events *delivered*
//! to consumers (a consumer thread per subscriber), never publishes.
//!
//! * `fanout_lossless/<impl>/<n>`: 10,000 events to `n` subscribers, each of
//!   which must receive all of them. nerve streams use `Overflow::Block`;
//!   crossbeam uses one bounded channel per subscriber (blocking send);
//!   async-broadcast uses its blocking broadcast; tokio's broadcast cannot
//!   make a sender wait, so it gets a capacity of 10,000 (no lag possible).
//!   Readers run as nerve's do, either way: an OS thread each (crossbeam
//!   has only blocking receives, so its readers are threads only; compare
//!   nerve's thread readers with it), or a tokio task each on a 2-worker
//!   runtime, where one bounded tokio mpsc channel per subscriber is the
//!   counterpart of one crossbeam channel per subscriber.
//! * `fanout_lossy/<impl>`: 4 subscribers that do some work per event,
//!   capacity 1,024: nerve `DropOldest` against tokio broadcast (which drops
//!   the oldest too, as `Lagged`). The loss is printed to stderr.
//! * `fast_beside_slow/<policy>`: how long a fast subscriber takes to get
//!   10,000 events while a slow one shares the bus under each policy.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

#[path = "support/paired.rs"]
mod paired;

use criterion::{BenchmarkId, Criterion, criterion_group};
use futures::StreamExt;
use nerve::{Bus, Event, Overflow, StreamOptions, Value};

const EVENTS: u64 = 10_000;
const CAPACITY: usize = 1_024;

fn event() -> Event {
    Event::builder("bench.tick")
        .data(Value::Null)
        .build()
        .unwrap()
}

fn bus() -> Bus {
    Bus::builder()
        .history_capacity(0)
        .generate_correlation_ids(false)
        .build()
        .unwrap()
}

/// Starts a consumer thread per stream that reads (with the stream's
/// blocking receive) until `want` events or the end, returning how many it
/// read.
fn consume_streams(streams: Vec<nerve::EventStream>, want: u64, work: u64) -> Vec<JoinHandle<u64>> {
    streams
        .into_iter()
        .map(|mut s| {
            std::thread::spawn(move || {
                let mut got = 0;
                while got < want {
                    match s.recv_blocking() {
                        Some(e) => {
                            std::hint::black_box(&e);
                            spin(work);
                            got += 1;
                        }
                        None => break,
                    }
                }
                got
            })
        })
        .collect()
}

fn spin(work: u64) {
    for i in 0..work {
        std::hint::black_box(i);
    }
}

/// Times `EVENTS` calls of `send` on `sender` and then `finish`, which ends
/// the run (closing `sender`) and returns how many events the readers got;
/// checks that each got them all.
fn timed<S>(
    n: usize,
    sender: S,
    mut send: impl FnMut(&S),
    finish: impl FnOnce(S) -> u64,
) -> Duration {
    let start = Instant::now();
    for _ in 0..EVENTS {
        send(&sender);
    }
    let got = finish(sender);
    let elapsed = start.elapsed();
    assert_eq!(got, EVENTS * n as u64);
    elapsed
}

/// Joins reader threads, summing what they read.
fn join_threads(readers: Vec<JoinHandle<u64>>) -> u64 {
    readers.into_iter().map(|r| r.join().unwrap()).sum()
}

/// A reader thread that counts what `recv` returns until it fails.
fn count_on_thread<E>(
    mut recv: impl FnMut() -> Result<Event, E> + Send + 'static,
) -> JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut got = 0u64;
        while let Ok(e) = recv() {
            std::hint::black_box(&e);
            got += 1;
        }
        got
    })
}

fn lossless_streams(bus: &Bus, n: usize) -> Vec<nerve::EventStream> {
    (0..n)
        .map(|_| {
            bus.stream_with(
                "bench.*",
                StreamOptions::new()
                    .capacity(CAPACITY)
                    .overflow(Overflow::Block),
            )
            .unwrap()
        })
        .collect()
}

fn emit(bus: &Bus) {
    bus.emit_event(event()).unwrap();
}

fn nerve_lossless(n: usize) -> Duration {
    let bus = bus();
    let readers = consume_streams(lossless_streams(&bus, n), EVENTS, 0);
    timed(n, bus, emit, |_| join_threads(readers))
}

fn crossbeam_lossless(n: usize) -> Duration {
    let (txs, readers): (Vec<_>, Vec<_>) = (0..n)
        .map(|_| {
            let (tx, rx) = crossbeam_channel::bounded::<Event>(CAPACITY);
            (tx, count_on_thread(move || rx.recv()))
        })
        .unzip();
    let send = |txs: &Vec<crossbeam_channel::Sender<Event>>| {
        let e = event();
        for tx in txs {
            tx.send(e.clone()).unwrap();
        }
    };
    timed(n, txs, send, |txs| {
        drop(txs);
        join_threads(readers)
    })
}

type TokioSender = tokio::sync::broadcast::Sender<Event>;
type AsyncBroadcastSender = async_broadcast::Sender<Event>;

fn tokio_send(tx: &TokioSender) {
    tx.send(event()).unwrap();
}

fn async_broadcast_send(tx: &AsyncBroadcastSender) {
    tx.broadcast_blocking(event()).unwrap();
}

fn tokio_lossless(n: usize) -> Duration {
    let (tx, _) = tokio::sync::broadcast::channel::<Event>(EVENTS as usize);
    let readers: Vec<_> = (0..n)
        .map(|_| {
            let mut rx = tx.subscribe();
            count_on_thread(move || rx.blocking_recv())
        })
        .collect();
    timed(n, tx, tokio_send, |tx| {
        drop(tx);
        join_threads(readers)
    })
}

fn async_broadcast_lossless(n: usize) -> Duration {
    let (tx, rx) = async_broadcast::broadcast::<Event>(CAPACITY);
    let readers: Vec<_> = (0..n)
        .map(|_| {
            let mut rx = rx.clone();
            count_on_thread(move || rx.recv_blocking())
        })
        .collect();
    drop(rx);
    timed(n, tx, async_broadcast_send, |tx| {
        drop(tx);
        join_threads(readers)
    })
}

/// The runtime async readers run on: 2 workers, as many as cores here.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: std::sync::OnceLock<tokio::runtime::Runtime> = std::sync::OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .build()
            .unwrap()
    })
}

/// Joins reader tasks, summing what they read.
fn join_tasks(tasks: Vec<tokio::task::JoinHandle<u64>>) -> u64 {
    runtime().block_on(async {
        let mut total = 0;
        for t in tasks {
            total += t.await.unwrap();
        }
        total
    })
}

/// A reader task that counts what `stream` yields, up to `EVENTS`.
fn count_in_task<S>(mut stream: S) -> tokio::task::JoinHandle<u64>
where
    S: futures::Stream<Item = Event> + Unpin + Send + 'static,
{
    runtime().spawn(async move {
        let mut got = 0u64;
        while got < EVENTS {
            match stream.next().await {
                Some(e) => {
                    std::hint::black_box(&e);
                    got += 1;
                }
                None => break,
            }
        }
        got
    })
}

/// A tokio broadcast receiver as a stream that ends when the channel closes.
fn tokio_stream_of(
    rx: tokio::sync::broadcast::Receiver<Event>,
) -> std::pin::Pin<Box<dyn futures::Stream<Item = Event> + Send>> {
    Box::pin(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.ok().map(|e| (e, rx))
    }))
}

fn nerve_lossless_tasks(n: usize) -> Duration {
    let bus = bus();
    let tasks = lossless_streams(&bus, n)
        .into_iter()
        .map(count_in_task)
        .collect();
    timed(n, bus, emit, |_| join_tasks(tasks))
}

fn tokio_lossless_tasks(n: usize) -> Duration {
    let (tx, _) = tokio::sync::broadcast::channel::<Event>(EVENTS as usize);
    let tasks = (0..n)
        .map(|_| count_in_task(tokio_stream_of(tx.subscribe())))
        .collect();
    timed(n, tx, tokio_send, |tx| {
        drop(tx);
        join_tasks(tasks)
    })
}

fn async_broadcast_lossless_tasks(n: usize) -> Duration {
    let (tx, rx) = async_broadcast::broadcast::<Event>(CAPACITY);
    let tasks = (0..n).map(|_| count_in_task(rx.clone())).collect();
    drop(rx);
    timed(n, tx, async_broadcast_send, |tx| {
        drop(tx);
        join_tasks(tasks)
    })
}

/// The async counterpart of one crossbeam channel per subscriber: one
/// bounded tokio mpsc channel each, read by tasks like nerve's task readers.
fn tokio_mpsc_lossless_tasks(n: usize) -> Duration {
    let (txs, tasks): (Vec<_>, Vec<_>) =
        (0..n)
            .map(|_| {
                let (tx, rx) = tokio::sync::mpsc::channel::<Event>(CAPACITY);
                let stream = futures::stream::unfold(rx, |mut rx| async move {
                    rx.recv().await.map(|e| (e, rx))
                });
                (tx, count_in_task(Box::pin(stream)))
            })
            .unzip();
    let send = |txs: &Vec<tokio::sync::mpsc::Sender<Event>>| {
        let e = event();
        for tx in txs {
            tx.blocking_send(e.clone()).unwrap();
        }
    };
    timed(n, txs, send, |txs| {
        drop(txs);
        join_tasks(tasks)
    })
}

type Run = fn(usize) -> Duration;

/// Every lossless fan-out, by name.
const LOSSLESS: [(&str, Run); 8] = [
    ("nerve stream, tasks", nerve_lossless_tasks),
    ("nerve stream, threads", nerve_lossless),
    ("crossbeam per subscriber, threads", crossbeam_lossless),
    (
        "tokio mpsc per subscriber, tasks",
        tokio_mpsc_lossless_tasks,
    ),
    ("tokio broadcast, tasks", tokio_lossless_tasks),
    ("tokio broadcast, threads", tokio_lossless),
    ("async-broadcast, tasks", async_broadcast_lossless_tasks),
    ("async-broadcast, threads", async_broadcast_lossless),
];

fn fanout_lossless(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout_lossless");
    group.throughput(criterion::Throughput::Elements(EVENTS));
    for n in [1usize, 4, 16] {
        for (name, run) in LOSSLESS {
            group.bench_with_input(BenchmarkId::new(name, n), &n, |b, &n| {
                b.iter_custom(|iters| (0..iters).map(|_| run(n)).sum());
            });
        }
    }
    group.finish();
}

const LOSSY_WORK: u64 = 2_000;

fn fanout_lossy(c: &mut Criterion) {
    let mut group = c.benchmark_group("fanout_lossy");
    group.throughput(criterion::Throughput::Elements(EVENTS));
    let lost = Arc::new(AtomicU64::new(0));
    let runs = Arc::new(AtomicU64::new(0));
    let (l, r) = (lost.clone(), runs.clone());
    group.bench_function("nerve DropOldest", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let bus = bus();
                let streams: Vec<_> = (0..4)
                    .map(|_| {
                        bus.stream_with(
                            "bench.*",
                            StreamOptions::new()
                                .capacity(CAPACITY)
                                .overflow(Overflow::DropOldest),
                        )
                        .unwrap()
                    })
                    .collect();
                let start = Instant::now();
                let readers = consume_streams(streams, EVENTS, LOSSY_WORK);
                for _ in 0..EVENTS {
                    bus.emit_event(event()).unwrap();
                }
                let dropped = bus.stats().events.dropped;
                bus.shutdown_blocking(); // ends the streams once drained
                let got: u64 = readers.into_iter().map(|r| r.join().unwrap()).sum();
                total += start.elapsed();
                assert_eq!(
                    got + dropped,
                    4 * EVENTS,
                    "every event delivered or counted"
                );
                l.fetch_add(dropped, Ordering::Relaxed);
                r.fetch_add(1, Ordering::Relaxed);
            }
            total
        });
    });
    report_loss("nerve DropOldest", &lost, &runs);
    let (lost, runs) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let (l, r) = (lost.clone(), runs.clone());
    group.bench_function("tokio broadcast", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let (tx, _) = tokio::sync::broadcast::channel::<Event>(CAPACITY);
                let readers: Vec<_> = (0..4)
                    .map(|_| {
                        let mut rx = tx.subscribe();
                        std::thread::spawn(move || {
                            let (mut got, mut lagged) = (0u64, 0u64);
                            loop {
                                match rx.blocking_recv() {
                                    Ok(e) => {
                                        std::hint::black_box(&e);
                                        spin(LOSSY_WORK);
                                        got += 1;
                                    }
                                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                                        lagged += n
                                    }
                                    Err(_) => break,
                                }
                            }
                            (got, lagged)
                        })
                    })
                    .collect();
                let start = Instant::now();
                for _ in 0..EVENTS {
                    tx.send(event()).unwrap();
                }
                drop(tx);
                let (got, lagged) = readers
                    .into_iter()
                    .map(|r| r.join().unwrap())
                    .fold((0, 0), |a, b| (a.0 + b.0, a.1 + b.1));
                total += start.elapsed();
                assert_eq!(got + lagged, 4 * EVENTS);
                l.fetch_add(lagged, Ordering::Relaxed);
                r.fetch_add(1, Ordering::Relaxed);
            }
            total
        });
    });
    report_loss("tokio broadcast", &lost, &runs);
    group.finish();
}

fn report_loss(name: &str, lost: &AtomicU64, runs: &AtomicU64) {
    let runs = runs.load(Ordering::Relaxed).max(1);
    let offered = runs * 4 * EVENTS;
    eprintln!(
        "fanout_lossy/{name}: {:.1}% of deliveries lost over {runs} runs",
        100.0 * lost.load(Ordering::Relaxed) as f64 / offered as f64
    );
}

fn fast_beside_slow(c: &mut Criterion) {
    let mut group = c.benchmark_group("fast_beside_slow");
    group.throughput(criterion::Throughput::Elements(EVENTS));
    let policies = [
        ("alone", None),
        ("DropNewest", Some(Overflow::DropNewest)),
        ("DropOldest", Some(Overflow::DropOldest)),
        (
            "BlockTimeout(10us)",
            Some(Overflow::BlockTimeout(Duration::from_micros(10))),
        ),
        ("Block", Some(Overflow::Block)),
    ];
    for (name, policy) in policies {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    let bus = bus();
                    let fast = bus
                        .stream_with(
                            "bench.*",
                            StreamOptions::new()
                                .capacity(CAPACITY)
                                .overflow(Overflow::Block),
                        )
                        .unwrap();
                    let slow = policy.map(|p| {
                        bus.stream_with("bench.*", StreamOptions::new().capacity(64).overflow(p))
                            .unwrap()
                    });
                    let fast_reader = consume_streams(vec![fast], EVENTS, 0);
                    let slow_reader = slow.map(|s| consume_streams(vec![s], EVENTS, 20_000));
                    let start = Instant::now();
                    for _ in 0..EVENTS {
                        bus.emit_event(event()).unwrap();
                    }
                    let got: u64 = fast_reader.into_iter().map(|r| r.join().unwrap()).sum();
                    total += start.elapsed();
                    assert_eq!(got, EVENTS);
                    bus.shutdown_blocking();
                    if let Some(readers) = slow_reader {
                        for r in readers {
                            r.join().unwrap();
                        }
                    }
                }
                total
            });
        });
    }
    group.finish();
}

/// `FANOUT_ROUNDS=n cargo bench -p nerve --bench flow`: instead of
/// criterion, runs every lossless fan-out once per round, round after round,
/// so that on a shared machine each sees the same load. Prints each one's
/// median time and its ratios to crossbeam's (and to tokio mpsc's, for task
/// readers) at the same subscriber count: the median, and the quartiles, of
/// the ratios taken round by round (a round's variants run back to back, so
/// a ratio within a round cancels most of the machine's drift; the ratio of
/// the medians swung by 15 % between runs here, this one much less).
fn interleaved(rounds: usize) {
    // FANOUT_SUBS=16 (or 1,4) measures only these subscriber counts.
    let subs: Vec<usize> = std::env::var("FANOUT_SUBS")
        .ok()
        .map(|v| v.split(',').filter_map(|n| n.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![1, 4, 16]);
    for n in subs {
        // FANOUT_ONLY='a|b' runs only the fan-outs whose names contain one
        // of these (and crossbeam's and tokio mpsc's, for the ratios); `|`,
        // as the names themselves hold commas.
        let only = std::env::var("FANOUT_ONLY").unwrap_or_default();
        let wanted = |name: &str| {
            only.is_empty()
                || name.starts_with("crossbeam")
                || name.starts_with("tokio mpsc")
                || only.split('|').any(|o| name.contains(o))
        };
        let mut measures: Vec<(&str, paired::Measure<'_>)> = LOSSLESS
            .iter()
            .filter(|(name, _)| wanted(name))
            .map(|&(name, run)| {
                let measure: paired::Measure<'_> = Box::new(move || run(n).as_secs_f64());
                (name, measure)
            })
            .collect();
        let times = paired::Rounds::run_boxed(0, rounds, &mut measures);
        let crossbeam = "crossbeam per subscriber, threads";
        let mpsc = "tokio mpsc per subscriber, tasks";
        for (name, _) in LOSSLESS.iter().filter(|(name, _)| wanted(name)) {
            let median = times.spread(name).median;
            let c = times.ratio(name, crossbeam);
            let m = times.ratio(name, mpsc);
            println!(
                "{n:>2} subscribers  {name:<36} {:>8.2} ms  {:>5.2} x crossbeam ({:.2}-{:.2})  \
                 {:>5.2} x tokio mpsc ({:.2}-{:.2})",
                median * 1e3,
                c.median,
                c.q1,
                c.q3,
                m.median,
                m.q1,
                m.q3,
            );
        }
    }
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = fanout_lossless, fanout_lossy, fast_beside_slow
}

fn main() {
    if let Some(rounds) = std::env::var("FANOUT_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
    {
        interleaved(rounds);
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
