//! Flow control: overflow policies under a slow subscriber, terminal events,
//! streams, run replay, lanes, guards, `max_pending`, metrics.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use futures::StreamExt;
use nerve_core::metrics::{InMemoryMetrics, names};
use nerve_core::{Event, json, merge_lanes};
use nerve_router::{Bus, DropReason, EmitError, Overflow, Reject, StreamOptions, Subscribe};

/// A door a slow handler waits at until the test opens it.
#[derive(Clone, Default)]
struct Gate(Arc<(Mutex<bool>, Condvar)>);

impl Gate {
    fn wait(&self) {
        let (open, cv) = &*self.0;
        let mut open = open.lock().unwrap();
        while !*open {
            open = cv.wait(open).unwrap();
        }
    }

    fn open(&self) {
        let (open, cv) = &*self.0;
        *open.lock().unwrap() = true;
        cv.notify_all();
    }
}

/// Records the `seq` of every event a handler sees.
#[derive(Clone, Default)]
struct Seen(Arc<Mutex<Vec<u64>>>);

impl Seen {
    fn push(&self, e: &Event) {
        self.0.lock().unwrap().push(e.seq());
    }
    /// Records the `n` of the payload: system events also take `seq`s.
    fn push_n(&self, e: &Event) {
        self.0
            .lock()
            .unwrap()
            .push(e.data()["n"].as_u64().unwrap() + 1);
    }
    fn take(&self) -> Vec<u64> {
        std::mem::take(&mut *self.0.lock().unwrap())
    }
}

fn strictly_increasing(seqs: &[u64]) -> bool {
    seqs.windows(2).all(|w| w[0] < w[1])
}

const EVENTS: u64 = 100_000;

/// One fast subscriber (queued, lossless) and one slow one with `policy`,
/// over 100,000 events. Returns what the slow one got and the bus.
fn fast_and_slow(policy: Overflow, gated: bool) -> (Vec<u64>, Vec<u64>, Bus, Vec<EmitError>) {
    let bus = Bus::new();
    let fast = Seen::default();
    let slow = Seen::default();
    let gate = Gate::default();
    let f = fast.clone();
    bus.subscribe_with(
        "load.tick",
        move |e: &Event| f.push_n(e),
        Subscribe::new().name("fast").queued(1024),
    )
    .unwrap();
    let (s, g) = (slow.clone(), gate.clone());
    bus.subscribe_with(
        "load.tick",
        move |e: &Event| {
            if gated {
                g.wait();
            } else {
                // Slower than the emitter, but never stuck.
                for i in 0..200u64 {
                    std::hint::black_box(i);
                }
            }
            s.push_n(e);
        },
        Subscribe::new().name("slow").queued(64).overflow(policy),
    )
    .unwrap();
    let mut errors = Vec::new();
    for n in 0..EVENTS {
        if let Err(e) = bus.emit("load.tick", json!({ "n": n })) {
            errors.push(e);
        }
    }
    gate.open();
    bus.flush_blocking();
    (fast.take(), slow.take(), bus, errors)
}

fn check_accounting(bus: &Bus, slow: &[u64]) -> (u64, u64) {
    let stats = bus.stats();
    let sub = |name: &str| {
        stats
            .subscribers
            .iter()
            .find(|s| s.name.as_deref() == Some(name))
            .unwrap()
            .clone()
    };
    let (fast, slow_stats) = (sub("fast"), sub("slow"));
    assert_eq!(
        (fast.offered, fast.delivered, fast.dropped),
        (EVENTS, EVENTS, 0)
    );
    assert_eq!(slow_stats.offered, EVENTS);
    assert_eq!(
        slow_stats.delivered + slow_stats.dropped,
        EVENTS,
        "delivered + dropped == offered"
    );
    assert_eq!(slow_stats.delivered, slow.len() as u64);
    assert!(
        strictly_increasing(slow),
        "the slow subscriber's events are in order"
    );
    assert_eq!(stats.events.dropped, slow_stats.dropped);
    assert_eq!(stats.pending, 0);
    (slow_stats.delivered, slow_stats.dropped)
}

#[test]
fn drop_newest_keeps_the_first_and_counts_the_rest() {
    let (fast, slow, bus, errors) = fast_and_slow(Overflow::DropNewest, true);
    assert!(errors.is_empty());
    assert_eq!(
        fast.len() as u64,
        EVENTS,
        "the fast subscriber got everything"
    );
    let (delivered, dropped) = check_accounting(&bus, &slow);
    assert!(dropped > 0 && delivered <= 65, "{delivered} delivered");
    assert_eq!(slow[0], 1, "the first events were kept");
    let stats = bus.stats();
    let s = stats
        .subscribers
        .iter()
        .find(|s| s.name.as_deref() == Some("slow"))
        .unwrap();
    assert_eq!(s.dropped_by_reason.get("queue_full"), Some(&dropped));
}

#[test]
fn drop_oldest_keeps_the_newest() {
    let (fast, slow, bus, errors) = fast_and_slow(Overflow::DropOldest, true);
    assert!(errors.is_empty());
    assert_eq!(fast.len() as u64, EVENTS);
    let (_, dropped) = check_accounting(&bus, &slow);
    assert!(dropped > 0);
    assert_eq!(*slow.last().unwrap(), EVENTS, "the newest event was kept");
}

#[test]
fn error_policy_refuses_and_names_the_subscriber() {
    let (fast, slow, bus, errors) = fast_and_slow(Overflow::Error, true);
    assert_eq!(
        fast.len() as u64,
        EVENTS,
        "everyone else still got every event"
    );
    let (_, dropped) = check_accounting(&bus, &slow);
    assert_eq!(
        errors.len() as u64,
        dropped,
        "every refusal was reported by emit"
    );
    assert!(errors.iter().all(|e| matches!(e, EmitError::QueueFull { subscription_label, .. } if subscription_label == "slow")));
}

#[test]
fn block_loses_nothing() {
    let (fast, slow, bus, errors) = fast_and_slow(Overflow::Block, false);
    assert!(
        errors.is_empty(),
        "{} errors, first: {}",
        errors.len(),
        errors[0]
    );
    assert_eq!(fast.len() as u64, EVENTS);
    let (delivered, dropped) = check_accounting(&bus, &slow);
    assert_eq!((delivered, dropped), (EVENTS, 0));
}

#[test]
fn block_timeout_drops_after_waiting() {
    let (fast, slow, bus, errors) =
        fast_and_slow(Overflow::BlockTimeout(Duration::from_micros(20)), true);
    assert!(errors.is_empty());
    assert_eq!(fast.len() as u64, EVENTS);
    let (_, dropped) = check_accounting(&bus, &slow);
    assert!(dropped > 0);
    let stats = bus.stats();
    let s = stats
        .subscribers
        .iter()
        .find(|s| s.name.as_deref() == Some("slow"))
        .unwrap();
    assert_eq!(s.dropped_by_reason.get("block_timeout"), Some(&dropped));
}

#[test]
fn terminal_events_are_never_dropped() {
    let bus = Bus::new();
    let gate = Gate::default();
    let seen = Seen::default();
    let (g, s) = (gate.clone(), seen.clone());
    bus.subscribe_with(
        "job.*",
        move |e: &Event| {
            g.wait();
            s.push(e);
        },
        Subscribe::new()
            .name("slow")
            .queued(16)
            .overflow(Overflow::DropNewest),
    )
    .unwrap();
    let mut stream = bus
        .stream_with(
            "job.*",
            StreamOptions::new()
                .capacity(16)
                .overflow(Overflow::DropNewest),
        )
        .unwrap();
    // Fill every queue with plain events.
    for n in 0..100 {
        bus.emit("job.progress", json!({ "n": n })).unwrap();
    }
    // 1,000 terminal events: the first ones evict plain events, then the
    // emitter waits for room; the consumers drain once the gate opens.
    let emitter = {
        let bus = bus.clone();
        std::thread::spawn(move || {
            for n in 0..1000 {
                bus.emit("job.completed", json!({ "n": n })).unwrap();
            }
        })
    };
    let reader = std::thread::spawn(move || {
        futures::executor::block_on(async {
            let mut terminal = 0;
            while terminal < 1000 {
                let e = stream.next().await.unwrap();
                // The bus marks what its terminal patterns match.
                assert_eq!(
                    e.is_marked_terminal(),
                    e.event_type() == "job.completed",
                    "{e:?}"
                );
                if e.event_type() == "job.completed" {
                    terminal += 1;
                }
            }
            terminal
        })
    });
    gate.open();
    emitter.join().unwrap();
    assert_eq!(
        reader.join().unwrap(),
        1000,
        "the stream got every terminal event"
    );
    bus.flush_blocking();
    let completed = bus.history(
        &nerve_core::query::HistoryQuery::new()
            .pattern("job.completed")
            .unwrap(),
    );
    let completed: std::collections::HashSet<u64> = completed.iter().map(Event::seq).collect();
    let got = seen.take();
    assert_eq!(
        got.iter().filter(|s| completed.contains(s)).count(),
        1000,
        "the handler got every terminal event"
    );
    assert!(strictly_increasing(&got));
    let stats = bus.stats();
    let slow = stats
        .subscribers
        .iter()
        .find(|s| s.name.as_deref() == Some("slow"))
        .unwrap();
    assert_eq!(slow.delivered + slow.dropped, slow.offered);
}

#[test]
fn event_terminal_marks_one_event() {
    let bus = Bus::new();
    let mut stream = bus
        .stream_with(
            "step.*",
            StreamOptions::new()
                .capacity(1)
                .overflow(Overflow::DropNewest),
        )
        .unwrap();
    bus.emit("step.one", json!(1)).unwrap();
    bus.emit("step.two", json!(2)).unwrap(); // dropped
    let marked = Event::builder("step.three")
        .data(json!(3))
        .terminal()
        .build()
        .unwrap();
    bus.emit_event(marked).unwrap(); // evicts step.one
    let got: Vec<String> = futures::executor::block_on(async {
        let mut got = Vec::new();
        while let Some(e) = stream.next().now_or_never().flatten() {
            got.push(e.event_type().to_owned());
        }
        got
    });
    assert_eq!(got, ["step.three"]);
}

use futures::FutureExt;

#[test]
fn a_late_run_subscriber_sees_the_whole_run_once_in_order() {
    let bus = Bus::builder().run_history(5_000, 10).build().unwrap();
    let (halfway_tx, halfway_rx) = std::sync::mpsc::channel();
    let (joined_tx, joined_rx) = std::sync::mpsc::channel::<()>();
    let emitter = {
        let bus = bus.clone();
        std::thread::spawn(move || {
            for n in 0..2_000u64 {
                if n == 700 {
                    halfway_tx.send(()).unwrap();
                }
                if n == 1_300 {
                    // Keep emitting while the subscriber may still be joining,
                    // but make sure some events arrive after it joined.
                    joined_rx.recv().unwrap();
                }
                let e = Event::builder("agent.step")
                    .run_id("run-1")
                    .data(json!({ "n": n }))
                    .build()
                    .unwrap();
                bus.emit_event(e).unwrap();
                // Another run's events never reach this run's stream.
                let other = Event::builder("agent.step")
                    .run_id("run-2")
                    .build()
                    .unwrap();
                bus.emit_event(other).unwrap();
            }
        })
    };
    halfway_rx.recv().unwrap();
    // Room for the whole run, so that what is checked is the seam between
    // replay and live events, not the overflow policy.
    let stream = bus
        .subscribe_run_with("run-1", StreamOptions::new().capacity(4_096))
        .unwrap();
    joined_tx.send(()).unwrap();
    // Read while the run goes on, as a browser tab would.
    let reader =
        std::thread::spawn(move || futures::executor::block_on(stream.collect::<Vec<Event>>()));
    emitter.join().unwrap();
    assert!(bus.close_run("run-1"));
    let got: Vec<Event> = reader.join().unwrap();
    let ns: Vec<u64> = got
        .iter()
        .map(|e| e.data()["n"].as_u64().unwrap())
        .collect();
    assert_eq!(
        ns,
        (0..2_000).collect::<Vec<_>>(),
        "every event once, in order"
    );
    assert!(got.iter().all(|e| e.run_id() == Some("run-1")));

    // After the close, a new subscriber replays the run and ends.
    let again: Vec<Event> =
        futures::executor::block_on(bus.subscribe_run("run-1").unwrap().collect());
    assert_eq!(again.len(), 2_000);
}

#[test]
fn run_history_is_bounded_per_run_and_by_runs() {
    let bus = Bus::builder().run_history(10, 2).build().unwrap();
    for run in ["a", "b", "c"] {
        for n in 0..25 {
            bus.emit_event(
                Event::builder("agent.step")
                    .run_id(run)
                    .data(json!(n))
                    .build()
                    .unwrap(),
            )
            .unwrap();
        }
    }
    let stats = bus.stats().runs;
    assert_eq!(
        (stats.tracked, stats.max_runs, stats.runs_evicted),
        (2, 2, 1)
    );
    assert_eq!(stats.events_evicted, 45);
    bus.close_run("c");
    let c: Vec<Event> = futures::executor::block_on(bus.subscribe_run("c").unwrap().collect());
    let ns: Vec<u64> = c.iter().map(|e| e.data().as_u64().unwrap()).collect();
    assert_eq!(ns, (15..25).collect::<Vec<_>>(), "the newest 10 of the run");
    assert!(!bus.close_run("a"), "run a was evicted");
}

#[test]
fn streams_filter_and_unsubscribe_on_drop() {
    let bus = Bus::new();
    let stream = bus
        .stream_with(
            "task.*",
            StreamOptions::new()
                .source("wf-1")
                .lane("left")
                .filter(|e| e.data()["keep"] == true)
                .name("watch"),
        )
        .unwrap();
    let global = bus.stream_global().unwrap();
    let emit = |source: &str, lane: &str, keep: bool| {
        let e = Event::builder("task.done")
            .source(source)
            .lane(lane)
            .data(json!({ "keep": keep }))
            .build()
            .unwrap();
        bus.emit_event(e).unwrap();
    };
    emit("wf-1", "left", true);
    emit("wf-2", "left", true);
    emit("wf-1", "right", true);
    emit("wf-1", "left", false);
    assert_eq!(stream.len(), 1);
    assert_eq!(global.len(), 4);
    assert_eq!(bus.stats().subscriptions.active, 2);
    drop(stream);
    drop(global);
    assert_eq!(
        bus.stats().subscriptions.active,
        0,
        "dropping a stream unsubscribes it"
    );
}

#[test]
fn lanes_are_numbered_and_merge_deterministically() {
    let bus = Bus::new();
    let mut by_lane: std::collections::HashMap<String, Vec<Event>> = Default::default();
    let mut stream = bus
        .stream_with("*", StreamOptions::new().capacity(10_000))
        .unwrap();
    for n in 0..300 {
        let lane = ["search", "write", "review"][n % 3];
        bus.emit_event(
            Event::builder("agent.step")
                .run_id("r")
                .lane(lane)
                .data(json!(n))
                .build()
                .unwrap(),
        )
        .unwrap();
    }
    for _ in 0..300 {
        let e = stream.next().now_or_never().flatten().unwrap();
        by_lane
            .entry(e.lane().unwrap().to_owned())
            .or_default()
            .push(e);
    }
    for events in by_lane.values() {
        let seqs: Vec<u64> = events.iter().map(|e| e.lane_seq().unwrap()).collect();
        assert_eq!(seqs, (1..=100).collect::<Vec<_>>());
    }
    let merged = merge_lanes(by_lane.clone());
    assert!(merged.is_clean(), "{:?}", merged.anomalies);
    assert_eq!(merged.events.len(), 300);
    let mut reversed: Vec<(String, Vec<Event>)> = by_lane.into_iter().collect();
    reversed.sort_by(|a, b| b.0.cmp(&a.0));
    assert_eq!(
        merge_lanes(reversed).events,
        merged.events,
        "order does not depend on input order"
    );
}

#[test]
fn guards_reject_before_delivery_and_recording() {
    let bus = Bus::builder()
        .guard(|e: &Event| match e.data().get("chain_of_thought") {
            Some(_) => Err(Reject::new("events must not carry hidden reasoning")),
            None => Ok(()),
        })
        .build()
        .unwrap();
    let seen = Seen::default();
    let s = seen.clone();
    bus.subscribe("agent.*", move |e: &Event| s.push(e))
        .unwrap();
    let err = bus
        .emit("agent.step", json!({"chain_of_thought": "..."}))
        .unwrap_err();
    assert!(
        matches!(&err, EmitError::Rejected { reason, .. } if reason.contains("hidden reasoning")),
        "{err}"
    );
    bus.emit("agent.step", json!({"answer": 42})).unwrap();
    assert_eq!(seen.take().len(), 1);
    assert_eq!(
        bus.history(&Default::default()).len(),
        1,
        "the rejected event was not recorded"
    );
    assert_eq!(bus.stats().events.rejected, 1);
}

#[test]
fn max_pending_bounds_the_whole_bus() {
    let bus = Bus::builder()
        .max_pending(8, Overflow::Error)
        .build()
        .unwrap();
    let gate = Gate::default();
    for name in ["a", "b"] {
        let g = gate.clone();
        bus.subscribe_with(
            "work.item",
            move |_: &Event| g.wait(),
            Subscribe::new().name(name).queued(1000),
        )
        .unwrap();
    }
    let mut refused = 0;
    for n in 0..20 {
        if let Err(e) = bus.emit("work.item", json!(n)) {
            assert!(
                matches!(e, EmitError::PendingFull { max_pending: 8, .. }),
                "{e}"
            );
            refused += 1;
        }
    }
    assert!(refused > 0);
    assert!(bus.stats().pending <= 8);
    gate.open();
    bus.flush_blocking();
    let stats = bus.stats();
    for s in &stats.subscribers {
        assert_eq!(s.delivered + s.dropped, s.offered);
    }
    assert_eq!(stats.events.dropped, 40 - 8);
}

#[test]
fn max_pending_block_waits_and_loses_nothing() {
    let bus = Bus::builder()
        .max_pending(4, Overflow::Block)
        .build()
        .unwrap();
    let count = Arc::new(AtomicU64::new(0));
    let c = count.clone();
    bus.subscribe_with(
        "work.item",
        move |_: &Event| {
            c.fetch_add(1, Ordering::Relaxed);
        },
        Subscribe::new().queued(1000),
    )
    .unwrap();
    for n in 0..10_000 {
        bus.emit("work.item", json!(n)).unwrap();
        assert!(bus.stats().pending <= 5);
    }
    bus.flush_blocking();
    assert_eq!(count.load(Ordering::Relaxed), 10_000);
    assert_eq!(bus.stats().events.dropped, 0);
}

#[test]
fn block_inside_a_handler_fails_fast_instead_of_deadlocking() {
    let bus = Bus::new();
    let gate = Gate::default();
    let g = gate.clone();
    bus.subscribe_with(
        "inner.work",
        move |_: &Event| g.wait(),
        Subscribe::new().queued(1).overflow(Overflow::Block),
    )
    .unwrap();
    let results = Arc::new(Mutex::new(Vec::new()));
    let (b, r) = (bus.clone(), results.clone());
    bus.subscribe("outer.start", move |_: &Event| {
        for n in 0..3 {
            r.lock().unwrap().push(
                b.emit("inner.work", json!(n))
                    .map(|_| ())
                    .map_err(|e| e.to_string()),
            );
        }
    })
    .unwrap();
    bus.emit("outer.start", json!({})).unwrap();
    let results = results.lock().unwrap().clone();
    assert!(
        results.iter().any(|r| r
            .as_ref()
            .is_err_and(|e| e.contains("would wait on itself"))),
        "{results:?}"
    );
    gate.open();
    bus.flush_blocking();
}

#[test]
fn drops_are_announced_as_events() {
    let bus = Bus::new();
    let announced = Arc::new(Mutex::new(Vec::new()));
    let a = announced.clone();
    bus.subscribe("system.events_dropped", move |e: &Event| {
        a.lock().unwrap().push(e.data().clone())
    })
    .unwrap();
    let _stream = bus
        .stream_with(
            "feed.*",
            StreamOptions::new()
                .capacity(2)
                .overflow(Overflow::DropNewest)
                .name("feed"),
        )
        .unwrap();
    for n in 0..10 {
        bus.emit("feed.item", json!(n)).unwrap();
    }
    let announced = announced.lock().unwrap();
    assert_eq!(
        announced.len(),
        1,
        "rate limited: one announcement per interval"
    );
    assert_eq!(announced[0]["subscription_name"], "feed");
    assert_eq!(announced[0]["dropped"], 1);
    assert_eq!(
        bus.stats().events.dropped,
        8,
        "every drop is counted even when not announced"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_report_what_the_bus_does() {
    let metrics = InMemoryMetrics::new();
    let bus = Bus::builder().metrics(metrics.clone()).build().unwrap();
    bus.subscribe_with("order.*", |_: &Event| {}, Subscribe::new().name("audit"))
        .unwrap();
    bus.subscribe_with(
        "order.*",
        |e: &Event| -> Result<(), String> {
            if e.data()["bad"] == true {
                Err("bad order".into())
            } else {
                Ok(())
            }
        },
        Subscribe::new().name("checker"),
    )
    .unwrap();
    bus.subscribe_async_with(
        "order.*",
        |_: Event| async {},
        Subscribe::new().name("mailer"),
    )
    .unwrap();
    bus.emit("order.placed", json!({})).unwrap();
    bus.emit("order.placed", json!({"bad": true})).unwrap();
    bus.flush().await;
    assert_eq!(
        metrics.counter_value(
            names::EVENTS_EMITTED_TOTAL,
            &[("event_type", "order.placed")]
        ),
        2
    );
    for sub in ["audit", "checker", "mailer"] {
        assert_eq!(
            metrics.counter_value(names::EVENTS_DELIVERED_TOTAL, &[("subscription", sub)]),
            2,
            "{sub}"
        );
        assert_eq!(
            metrics.histogram_count(names::HANDLER_DURATION_SECONDS, &[("subscription", sub)]),
            2,
            "{sub}"
        );
    }
    assert_eq!(
        metrics.counter_value(
            names::HANDLER_FAILURES_TOTAL,
            &[("reason", "error"), ("subscription", "checker")]
        ),
        1
    );
    assert!(
        metrics
            .gauge_value(names::QUEUE_DEPTH, &[("subscription", "mailer")])
            .is_some()
    );

    let _stream = bus
        .stream_with(
            "order.*",
            StreamOptions::new()
                .capacity(1)
                .overflow(Overflow::DropNewest)
                .name("tail"),
        )
        .unwrap();
    bus.emit("order.placed", json!({})).unwrap();
    bus.emit("order.placed", json!({})).unwrap();
    assert_eq!(
        metrics.counter_value(
            names::EVENTS_DROPPED_TOTAL,
            &[
                ("reason", DropReason::QueueFull.as_str()),
                ("subscription", "tail")
            ]
        ),
        1
    );
}

/// Wake-ups of a fan-out are deferred until every queue has the event; an
/// emitter about to wait on a full `Block` queue must hand them out first,
/// or a reader parked on one stream while another is full never wakes.
#[test]
fn a_blocked_emitter_wakes_the_readers_it_deferred() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .build()
        .unwrap();
    let bus = Bus::new();
    // Subscribed first, so that a `pair.both` event reaches it first.
    let mut first = bus
        .stream_with(
            "pair.both",
            StreamOptions::new().capacity(16).overflow(Overflow::Block),
        )
        .unwrap();
    let mut second = bus
        .stream_with(
            "pair.*",
            StreamOptions::new().capacity(1).overflow(Overflow::Block),
        )
        .unwrap();
    let reader = runtime.spawn(async move {
        let mut n = 0u64;
        while n < 1_000 {
            // Parked on `first` while `second` holds a `pair.only`.
            first.next().await.unwrap();
            second.next().await.unwrap();
            second.next().await.unwrap();
            n += 1;
        }
        n
    });
    let (done_tx, done_rx) = std::sync::mpsc::channel();
    let emitter = std::thread::spawn(move || {
        for n in 0..1_000 {
            // Fills `second`; then `pair.both` wakes the reader on `first`
            // (deferred) and must wait for room in `second`.
            bus.emit("pair.only", json!(n)).unwrap();
            bus.emit("pair.both", json!(n)).unwrap();
        }
        done_tx.send(()).unwrap();
    });
    done_rx
        .recv_timeout(Duration::from_secs(30))
        .expect("the emitter finished: no reader was left unwoken");
    emitter.join().unwrap();
    assert_eq!(runtime.block_on(reader).unwrap(), 1_000);
}

/// Two emitting threads, streams under every policy read by threads: every
/// offer is delivered or counted dropped once the readers are done, each
/// emitter's events reach each stream in the order emitted, and terminal
/// events (`*.finished`, every 25th) are never lost. `reset_stats` starts
/// every count from zero again.
#[test]
fn streams_account_exactly_under_concurrent_emitters() {
    const PER: u64 = 3_000;
    const LAST: u64 = 99;
    let bus = Bus::builder().history_capacity(0).build().unwrap();
    let policies = [
        Overflow::DropNewest,
        Overflow::DropOldest,
        Overflow::Error,
        Overflow::Block,
        Overflow::BlockTimeout(Duration::from_micros(50)),
    ];
    let readers: Vec<_> = policies
        .iter()
        .enumerate()
        .map(|(i, &overflow)| {
            let mut stream = bus
                .stream_with(
                    "load.*",
                    StreamOptions::new()
                        .capacity(8)
                        .overflow(overflow)
                        .name(format!("s{i}")),
                )
                .unwrap();
            std::thread::spawn(move || {
                futures::executor::block_on(async {
                    let mut got = Vec::new();
                    while let Some(e) = stream.next().await {
                        let n = e.data()["n"].as_u64().unwrap();
                        let from = e.data()["from"].as_u64().unwrap();
                        if from == LAST {
                            break;
                        }
                        got.push((from, n, e.event_type().ends_with("finished")));
                    }
                    (got, stream)
                })
            })
        })
        .collect();
    let emitters: Vec<_> = (0..2u64)
        .map(|from| {
            let bus = bus.clone();
            std::thread::spawn(move || {
                for n in 0..PER {
                    let event_type = if n % 25 == 0 {
                        "load.finished"
                    } else {
                        "load.tick"
                    };
                    // `Error` refuses now and then: that is counted, not lost.
                    let _ = bus.emit(event_type, json!({ "from": from, "n": n }));
                }
            })
        })
        .collect();
    for e in emitters {
        e.join().unwrap();
    }
    // Terminal, so never dropped, and queued after everything else: once a
    // reader sees it, it has seen or lost every other event.
    bus.emit("load.finished", json!({ "from": LAST, "n": 0 }))
        .unwrap();
    let mut streams = Vec::new();
    for (i, reader) in readers.into_iter().enumerate() {
        let (got, stream) = reader.join().unwrap();
        streams.push(stream); // dropped, it would leave the stats
        let stats = bus.stats();
        let s = stats
            .subscribers
            .iter()
            .find(|s| s.name.as_deref() == Some(&*format!("s{i}")))
            .unwrap();
        assert_eq!(s.offered, 2 * PER + 1, "{:?}", policies[i]);
        assert_eq!(s.delivered, got.len() as u64 + 1, "{:?}", policies[i]);
        assert_eq!(s.delivered + s.dropped, s.offered, "{:?}", policies[i]);
        for from in 0..2 {
            let mine: Vec<u64> = got.iter().filter(|g| g.0 == from).map(|g| g.1).collect();
            assert!(strictly_increasing(&mine), "{:?} out of order", policies[i]);
            let finished = got.iter().filter(|g| g.0 == from && g.2).count() as u64;
            assert_eq!(
                finished,
                PER.div_ceil(25),
                "{:?} lost a terminal",
                policies[i]
            );
        }
        if policies[i] == Overflow::Block {
            // Only terminal events make room under `Block`.
            assert!(
                s.dropped_by_reason
                    .keys()
                    .all(|r| *r == DropReason::TerminalPriority.as_str())
            );
        }
    }
    bus.reset_stats();
    let stats = bus.stats();
    assert_eq!(stats.subscribers.len(), policies.len());
    assert!(stats.subscribers.iter().all(|s| s.offered == 0));
}

/// A reader thread with `recv_blocking` (no executor) gets every event of a
/// `Block` stream in order, and the stream ends when the bus shuts down,
/// even after the stream moved to another thread halfway.
#[test]
fn recv_blocking_reads_everything_in_order_across_threads() {
    const N: u64 = 20_000;
    let bus = Bus::builder().history_capacity(0).build().unwrap();
    let mut stream = bus
        .stream_with(
            "tick.*",
            StreamOptions::new().capacity(16).overflow(Overflow::Block),
        )
        .unwrap();
    let first = std::thread::spawn(move || {
        let got: Vec<u64> = stream
            .blocking_iter()
            .take(N as usize / 2)
            .map(|e| e.data()["n"].as_u64().unwrap())
            .collect();
        (got, stream)
    });
    for n in 0..N / 2 {
        bus.emit("tick.n", json!({ "n": n })).unwrap();
    }
    let (mut got, mut stream) = first.join().unwrap();
    let second = std::thread::spawn(move || {
        let mut rest = Vec::new();
        while let Some(e) = stream.recv_blocking() {
            rest.push(e.data()["n"].as_u64().unwrap());
        }
        (rest, stream.recv_blocking())
    });
    for n in N / 2..N {
        bus.emit("tick.n", json!({ "n": n })).unwrap();
    }
    bus.shutdown_blocking();
    let (rest, after_end) = second.join().unwrap();
    got.extend(rest);
    assert_eq!(got, (0..N).collect::<Vec<_>>());
    assert!(after_end.is_none(), "an ended stream stays ended");
    let stats = bus.stats();
    assert_eq!(stats.events.emitted, N);
}
