//! A paired harness for the cost of an emit (issue 14), against channels
//! doing the same work in the same process, rounds interleaved so that a
//! noisy machine moves both sides alike. Prints the median of the per-round
//! ratios.
//!
//! ```text
//! cargo run --release -p nerve-router --example emit_paired -- [emit|threads|wait|all] [rounds]
//! ```
//!
//! - `emit`: `emit("bench.tick", json!({"i": n}))` to one inline sync
//!   handler, against tokio `broadcast` `send` + `try_recv` of an
//!   `Arc<Value>` of the same payload; then both with `Value::Null`.
//! - `threads`: events per second delivered by 1, 2 and 4 threads emitting
//!   into one bus with one inline handler.
//! - `wait`: `emit_and_wait` to one async handler from a tokio task (2
//!   worker threads), against a request and reply over tokio `mpsc` +
//!   `oneshot` on the same runtime.
//! - `profile N`, `profile-null N`: N emits only (`json!({"i": n})`,
//!   `Value::Null`), for `valgrind --tool=callgrind`; `wait-ours N`: N
//!   `emit_and_wait` round trips only. Instructions per emit are the
//!   difference between two runs (say N = 20,000 and 40,000) over the
//!   difference in N, so that start-up cancels out. For `wait-ours`, take
//!   N over the history's capacity (12,000 and 24,000): below it, the
//!   larger run also fills more of the history and frees more at exit.
//!
//! - `floor`: the json payload through [`floor::Floor`], the least a bus
//!   can do and still keep what the issue's emit keeps (nerve's clock read
//!   and event id, a `seq`, one allocation of an event of nerve's size, a
//!   history of 10,000 events behind a lock, the handler called under
//!   `catch_unwind` with the event as the thread's ambient context),
//!   beside the broadcast and nerve, the three taking turns: what the
//!   targets leave for everything else a bus does. `floor-null`: the same
//!   with `Value::Null`. `profile-floor N`, `profile-floor-null N`: N floor
//!   emits only, for callgrind.
//!
//! `NERVE_BENCH_HISTORY=N` gives the buses a history of `N` events instead
//! of the default 10,000; `NERVE_BENCH_BROADCAST=N` gives the broadcast
//! channel room for `N` values instead of 1,024.

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use nerve_core::{Event, Value};
use nerve_router::Bus;
use serde_json::json;

/// Emits per side per round: short, so that a round the machine preempts is
/// one outlier among many rather than a skewed mean.
const BATCH: u64 = 2_000;

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

fn ns_per(elapsed: Duration, n: u64) -> f64 {
    elapsed.as_nanos() as f64 / n as f64
}

fn nerve_emit(bus: &Bus, null: bool, n: u64) -> Duration {
    let start = Instant::now();
    for i in 0..n {
        let data = if null { Value::Null } else { json!({ "i": i }) };
        black_box(bus.emit("bench.tick", data).unwrap());
    }
    start.elapsed()
}

fn broadcast(
    tx: &tokio::sync::broadcast::Sender<Arc<Value>>,
    rx: &mut tokio::sync::broadcast::Receiver<Arc<Value>>,
    null: bool,
    n: u64,
) -> Duration {
    let start = Instant::now();
    for i in 0..n {
        let data = if null { Value::Null } else { json!({ "i": i }) };
        tx.send(Arc::new(data)).unwrap();
        black_box(rx.try_recv().unwrap());
    }
    start.elapsed()
}

/// A default bus's builder; with `NERVE_BENCH_HISTORY=N`, a history of
/// `N` events instead of the default 10,000 (what the history's memory
/// costs an emit: `docs/benchmarks.md`).
fn builder() -> nerve_router::BusBuilder {
    let builder = Bus::builder();
    match std::env::var("NERVE_BENCH_HISTORY") {
        Ok(n) => builder.history_capacity(n.parse().expect("NERVE_BENCH_HISTORY: a number")),
        Err(_) => builder,
    }
}

fn one_handler_bus() -> Bus {
    let bus = builder().build().unwrap();
    bus.subscribe("bench.*", |e: &Event| {
        black_box(e.data());
    })
    .unwrap();
    bus
}

fn emit(rounds: usize) {
    let bus = one_handler_bus();
    let capacity = std::env::var("NERVE_BENCH_BROADCAST").map_or(1024, |n| {
        n.parse().expect("NERVE_BENCH_BROADCAST: a number")
    });
    let (tx, mut rx) = tokio::sync::broadcast::channel(capacity);
    for null in [false, true] {
        // Warm up both (history ring full, allocator settled).
        nerve_emit(&bus, null, 20_000);
        broadcast(&tx, &mut rx, null, 20_000);
        let (mut ratios, mut ours, mut theirs) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let (a, b) = if round % 2 == 0 {
                let a = nerve_emit(&bus, null, BATCH);
                (a, broadcast(&tx, &mut rx, null, BATCH))
            } else {
                let b = broadcast(&tx, &mut rx, null, BATCH);
                (nerve_emit(&bus, null, BATCH), b)
            };
            let (a, b) = (ns_per(a, BATCH), ns_per(b, BATCH));
            ours.push(a);
            theirs.push(b);
            ratios.push(a / b);
        }
        println!(
            "emit {:<12} nerve {:7.1} ns  broadcast {:7.1} ns  ratio median {:.2} (min {:.2}, max {:.2}, {} rounds)",
            if null { "Value::Null" } else { "json!({i: n})" },
            median(ours),
            median(theirs),
            median(ratios.clone()),
            ratios.iter().copied().fold(f64::MAX, f64::min),
            ratios.iter().copied().fold(0.0, f64::max),
            rounds,
        );
    }
}

/// This thread's time on a CPU so far, in ns (Linux; 0 elsewhere).
fn thread_cpu_ns() -> u64 {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// Events per second delivered by `n` threads emitting into one bus, and the
/// CPU time each event took. On a machine whose cores are busy with other
/// work, a second thread cannot run beside the first, so events per second
/// say little; CPU time per event says whether the threads slow each other
/// down (shared locks and counters), which is what stops them scaling.
fn threads(rounds: usize) {
    let per_thread = 100_000u64;
    let run = |n: usize| -> (f64, f64) {
        let bus = one_handler_bus();
        // Warm each thread's route memo and the history ring first.
        nerve_emit(&bus, false, 20_000);
        let barrier = Arc::new(std::sync::Barrier::new(n + 1));
        let handles: Vec<_> = (0..n)
            .map(|_| {
                let bus = bus.clone();
                let barrier = barrier.clone();
                std::thread::spawn(move || {
                    barrier.wait();
                    let cpu = thread_cpu_ns();
                    nerve_emit(&bus, false, per_thread);
                    thread_cpu_ns() - cpu
                })
            })
            .collect();
        barrier.wait();
        let start = Instant::now();
        let cpu: u64 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        let events = n as u64 * per_thread;
        (
            events as f64 / start.elapsed().as_secs_f64(),
            cpu as f64 / events as f64,
        )
    };
    let mut rate = [Vec::new(), Vec::new(), Vec::new()];
    let mut cpu = [Vec::new(), Vec::new(), Vec::new()];
    let mut r2 = Vec::new();
    let mut r4 = Vec::new();
    let mut e2 = Vec::new();
    let mut e4 = Vec::new();
    for _ in 0..rounds {
        let results = [run(1), run(2), run(4)];
        for (i, (r, c)) in results.iter().enumerate() {
            rate[i].push(*r);
            cpu[i].push(*c);
        }
        r2.push(results[1].0 / results[0].0);
        r4.push(results[2].0 / results[0].0);
        e2.push(results[0].1 / results[1].1);
        e4.push(results[0].1 / results[2].1);
    }
    for (i, n) in [1, 2, 4].into_iter().enumerate() {
        println!(
            "threads {n}: {:10.0} events/s, {:6.0} ns of CPU an event (medians)",
            median(rate[i].clone()),
            median(cpu[i].clone())
        );
    }
    println!(
        "threads events/s 2 vs 1: {:.2}x, 4 vs 1: {:.2}x; CPU an event 1 vs 2: {:.2}, 1 vs 4: {:.2} (1.00: no slowdown from sharing; medians of per-round ratios, {rounds} rounds)",
        median(r2),
        median(r4),
        median(e2),
        median(e4)
    );
}

fn wait(rounds: usize, timeout: bool) {
    wait_sides(rounds, timeout, true, true);
}

fn wait_sides(rounds: usize, timeout: bool, run_ours: bool, run_theirs: bool) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let n = 2_000u64;
    runtime.block_on(async move {
        let builder = builder();
        let builder = if timeout {
            builder
        } else {
            builder.handler_timeout(None)
        };
        let bus = builder.build().unwrap();
        bus.subscribe_async("bench.*", |e: Event| async move {
            black_box(e.data());
        })
        .unwrap();
        let (req_tx, mut req_rx) =
            tokio::sync::mpsc::channel::<(Value, tokio::sync::oneshot::Sender<()>)>(1024);
        tokio::spawn(async move {
            while let Some((v, reply)) = req_rx.recv().await {
                black_box(v);
                let _ = reply.send(());
            }
        });
        let ours = |bus: Bus, n: u64| {
            tokio::spawn(async move {
                let start = Instant::now();
                for i in 0..n {
                    black_box(
                        bus.emit_and_wait("bench.tick", json!({ "i": i }))
                            .await
                            .unwrap(),
                    );
                }
                start.elapsed()
            })
        };
        let theirs = |tx: tokio::sync::mpsc::Sender<_>, n: u64| {
            tokio::spawn(async move {
                let start = Instant::now();
                for i in 0..n {
                    let (reply, done) = tokio::sync::oneshot::channel();
                    tx.send((json!({ "i": i }), reply)).await.unwrap();
                    done.await.unwrap();
                }
                start.elapsed()
            })
        };
        if !(run_ours && run_theirs) {
            // One side alone, for a profile or a syscall count.
            if run_ours {
                ours(bus.clone(), rounds as u64).await.unwrap();
            } else {
                theirs(req_tx.clone(), rounds as u64).await.unwrap();
            }
            return;
        }
        ours(bus.clone(), 500).await.unwrap();
        theirs(req_tx.clone(), 500).await.unwrap();
        let (mut ratios, mut a_all, mut b_all) = (Vec::new(), Vec::new(), Vec::new());
        for round in 0..rounds {
            let (a, b) = if round % 2 == 0 {
                let a = ours(bus.clone(), n).await.unwrap();
                (a, theirs(req_tx.clone(), n).await.unwrap())
            } else {
                let b = theirs(req_tx.clone(), n).await.unwrap();
                (ours(bus.clone(), n).await.unwrap(), b)
            };
            let (a, b) = (ns_per(a, n), ns_per(b, n));
            a_all.push(a);
            b_all.push(b);
            ratios.push(a / b);
        }
        println!(
            "emit_and_wait {:8.0} ns  mpsc+oneshot {:8.0} ns  ratio median {:.2} ({rounds} rounds)",
            median(a_all),
            median(b_all),
            median(ratios)
        );
    });
}

/// The comparator shaped as `emit_and_wait` is: the reply is one message on
/// an unbounded channel, then the channel's close.
fn wait_mimic(n: u64) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async move {
        let (req_tx, mut req_rx) =
            tokio::sync::mpsc::channel::<(Value, tokio::sync::mpsc::UnboundedSender<u8>)>(1024);
        tokio::spawn(async move {
            while let Some((v, reply)) = req_rx.recv().await {
                black_box(v);
                let _ = reply.send(1);
            }
        });
        let start = Instant::now();
        tokio::spawn(async move {
            for i in 0..n {
                let (reply, mut done) = tokio::sync::mpsc::unbounded_channel();
                req_tx.send((json!({ "i": i }), reply)).await.unwrap();
                while let Some(x) = done.recv().await {
                    black_box(x);
                }
            }
        })
        .await
        .unwrap();
        println!("mimic {:.0} ns", ns_per(start.elapsed(), n));
    });
}

/// The floor under any bus's emit (`floor` mode): only what the issue's
/// emit must do whatever the design. It has no routing (one handler,
/// called directly), no shutdown gate, no counters, no per-subscription
/// outcome, no depth limit, no correlation id but a copied one, and its
/// history is one lock for every thread.
mod floor {
    use nerve_core::{EventId, Timestamp, Value};
    use std::cell::Cell;
    use std::collections::VecDeque;
    use std::hint::black_box;
    use std::panic::{AssertUnwindSafe, catch_unwind};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::{Arc, Mutex};

    /// The fields of nerve's event, of the same size (224 bytes).
    #[allow(dead_code)]
    pub(super) struct FloorEvent {
        event_id: EventId,
        timestamp: Timestamp,
        seq: u64,
        lane_seq: Option<u64>,
        event_type: Arc<str>,
        source: Option<Box<str>>,
        run_id: Option<Box<str>>,
        lane: Option<Box<str>>,
        correlation_id: Option<[u8; 36]>,
        causation_id: Option<EventId>,
        trace_context: Option<Box<[u8; 64]>>,
        terminal: bool,
        /// The room nerve's inline event type takes beyond a pointer, and
        /// its padding.
        _rest: [u64; 2],
        pub(super) data: Value,
    }

    type Handler = Box<dyn Fn(&Arc<FloorEvent>) + Send + Sync>;

    thread_local! {
        static AMBIENT: Cell<Option<Arc<FloorEvent>>> = const { Cell::new(None) };
    }

    pub(super) struct Floor {
        event_type: Arc<str>,
        seq: AtomicU64,
        history: Mutex<VecDeque<Arc<FloorEvent>>>,
        capacity: usize,
        handler: Handler,
    }

    impl Floor {
        pub(super) fn new(
            capacity: usize,
            handler: impl Fn(&Arc<FloorEvent>) + Send + Sync + 'static,
        ) -> Self {
            assert_eq!(size_of::<FloorEvent>(), 224, "the size of nerve's event");
            Self {
                event_type: Arc::from("bench.tick"),
                seq: AtomicU64::new(0),
                history: Mutex::new(VecDeque::with_capacity(capacity + 1)),
                capacity,
                handler: Box::new(handler),
            }
        }

        #[inline(never)]
        pub(super) fn emit(&self, data: Value) -> EventId {
            // nerve's own clock read and id (a UUIDv7 with a per-thread
            // counter): the same cost on both sides.
            let timestamp = Timestamp::now();
            let id = EventId::for_timestamp(timestamp);
            let event = Arc::new(FloorEvent {
                event_id: id,
                timestamp,
                seq: self.seq.fetch_add(1, Ordering::Relaxed) + 1,
                lane_seq: None,
                event_type: self.event_type.clone(),
                source: None,
                run_id: None,
                lane: None,
                correlation_id: Some([b'0'; 36]),
                causation_id: None,
                trace_context: None,
                terminal: false,
                _rest: [0; 2],
                data,
            });
            let evicted = {
                let mut history = self.history.lock().unwrap_or_else(|e| e.into_inner());
                history.push_back(event.clone());
                (history.len() > self.capacity).then(|| history.pop_front())
            };
            drop(evicted);
            let previous = AMBIENT.replace(Some(event.clone()));
            let result = catch_unwind(AssertUnwindSafe(|| (self.handler)(&event)));
            drop(AMBIENT.replace(previous));
            black_box(result.is_ok());
            id
        }
    }
}

fn floor_emit(floor: &floor::Floor, null: bool, n: u64) -> Duration {
    let start = Instant::now();
    for i in 0..n {
        let data = if null { Value::Null } else { json!({ "i": i }) };
        black_box(floor.emit(data));
    }
    start.elapsed()
}

fn floor_bus() -> floor::Floor {
    let capacity = std::env::var("NERVE_BENCH_HISTORY").map_or(10_000, |n| {
        n.parse().expect("NERVE_BENCH_HISTORY: a number")
    });
    floor::Floor::new(capacity, |e| {
        black_box(&e.data);
    })
}

/// `floor` and `floor-null` modes: the broadcast, the floor and nerve,
/// taking turns in a rotating order; the floor's and nerve's ratios to the
/// broadcast. One payload a process: after json rounds, the allocator's
/// free memory is laid out for json's allocations, and the floor's
/// `Value::Null` emits took twice as long in the same process as alone.
fn floor(rounds: usize, null: bool) {
    let bus = one_handler_bus();
    let floor = floor_bus();
    let (tx, mut rx) = tokio::sync::broadcast::channel(1024);
    {
        nerve_emit(&bus, null, 20_000);
        floor_emit(&floor, null, 20_000);
        broadcast(&tx, &mut rx, null, 20_000);
        let mut times: [Vec<f64>; 3] = Default::default();
        let (mut floor_ratios, mut nerve_ratios) = (Vec::new(), Vec::new());
        for round in 0..rounds {
            let mut t = [0.0; 3];
            for k in 0..3 {
                let side = (round + k) % 3;
                let elapsed = match side {
                    0 => broadcast(&tx, &mut rx, null, BATCH),
                    1 => floor_emit(&floor, null, BATCH),
                    _ => nerve_emit(&bus, null, BATCH),
                };
                t[side] = ns_per(elapsed, BATCH);
            }
            for side in 0..3 {
                times[side].push(t[side]);
            }
            floor_ratios.push(t[1] / t[0]);
            nerve_ratios.push(t[2] / t[0]);
        }
        let [b, f, n] = times;
        println!(
            "floor {:<12} broadcast {:6.1} ns  floor {:6.1} ns ({:.2} x)  nerve {:6.1} ns ({:.2} x)  (medians, {} rounds)",
            if null { "Value::Null" } else { "json!({i: n})" },
            median(b),
            median(f),
            median(floor_ratios),
            median(n),
            median(nerve_ratios),
            rounds,
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let what = args.get(1).map_or("all", String::as_str);
    let rounds = args.get(2).and_then(|r| r.parse().ok()).unwrap_or(21);
    match what {
        "emit" => emit(rounds),
        "threads" => threads(rounds),
        "wait" => wait(rounds, true),
        "wait-untimed" => wait(rounds, false),
        "wait-mimic" => wait_mimic(rounds as u64),
        "wait-ours" => wait_sides(rounds, true, true, false),
        "wait-ours-untimed" => wait_sides(rounds, false, true, false),
        "wait-theirs" => wait_sides(rounds, true, false, true),
        "profile" => {
            let bus = one_handler_bus();
            nerve_emit(&bus, false, rounds as u64);
        }
        "floor" => floor(rounds, false),
        "floor-null" => floor(rounds, true),
        "profile-floor" => {
            let floor = floor_bus();
            floor_emit(&floor, false, rounds as u64);
        }
        "profile-floor-null" => {
            let floor = floor_bus();
            floor_emit(&floor, true, rounds as u64);
        }
        "profile-null" => {
            let bus = one_handler_bus();
            nerve_emit(&bus, true, rounds as u64);
        }
        _ => {
            emit(rounds);
            threads(rounds.min(7));
            wait(rounds, true);
        }
    }
}
