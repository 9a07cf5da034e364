//! `loom` models of the subscriber queue, the route table and the bus's
//! gate: every
//! interleaving of a few threads, within a preemption bound, through the
//! primitives of `sync.rs` (see there for what is modelled and what is
//! taken by its contract).
//!
//! Run with `cargo xtask loom` (every model, the full bound) or as CI's
//! `loom-ci` step (a small bound). Each model prints how many interleavings
//! it explored and how long it took. `LOOM_MAX_PREEMPTIONS` sets the bound
//! (default [`DEFAULT_PREEMPTIONS`]); loom's other variables
//! (`LOOM_MAX_BRANCHES`, `LOOM_LOG`, `LOOM_CHECKPOINT_FILE`, ...) apply too.

use std::collections::BTreeSet;
use std::sync::atomic::AtomicUsize as StdAtomicUsize;
use std::time::Instant;

use ::loom::thread;
use nerve_core::Event;

use crate::counter::Counter;
use crate::gate::Gate;
use crate::queue::{DropReason, Overflow, Pushed, Queue, QueueItem, Wakes, thread_waker, wake_all};
use crate::routes::{RouteTable, Routes, TopicTraits};
use crate::subscribe::SubscriptionId;
use crate::subscription::{HandlerKind, StreamItem, Subscription};
use crate::sync::{Arc, Mutex, Ordering};

/// The preemption bound when `LOOM_MAX_PREEMPTIONS` is not set.
const DEFAULT_PREEMPTIONS: usize = 2;

/// Explores `model` under every interleaving within the bound, then prints
/// how many it explored and how long that took.
fn check(name: &str, model: impl Fn() + Sync + Send + 'static) {
    let mut builder = ::loom::model::Builder::new();
    let bound = *builder.preemption_bound.get_or_insert(DEFAULT_PREEMPTIONS);
    let runs = std::sync::Arc::new(StdAtomicUsize::new(0));
    let counted = runs.clone();
    let start = Instant::now();
    builder.check(move || {
        counted.fetch_add(1, Ordering::Relaxed);
        model();
    });
    println!(
        "loom: {name}: {} interleavings in {:.2?} (preemption bound {bound})",
        runs.load(Ordering::Relaxed),
        start.elapsed()
    );
}

/// A queue item: an id, and whether it is terminal.
#[derive(Debug, PartialEq)]
struct Item(u32, bool);

impl QueueItem for Item {
    fn is_terminal(&self) -> bool {
        self.1
    }
}

fn no_block(_: &mut dyn FnMut()) {}

/// Reads until the queue is closed and empty, as a stream's thread does.
fn read_to_end(q: &Queue<Item>) -> Vec<u32> {
    let waker = thread_waker();
    let mut got = Vec::new();
    while let Some(item) = q.pop_blocking(&waker) {
        got.push(item.0);
    }
    got
}

/// Whether `ids` keeps each emitter's ids (`id / 10`) in increasing order.
fn per_emitter_order_kept(ids: &[u32]) -> bool {
    let mut last = std::collections::BTreeMap::new();
    ids.iter().all(|&id| {
        let before = last.insert(id / 10, id);
        before.is_none_or(|b| b < id)
    })
}

/// (1) An emitter pushes while the reader goes to sleep: whichever comes
/// first, the reader wakes for every item. A lost wake-up leaves the reader
/// parked for good, which loom reports as a deadlock. The second push defers
/// its wake-up as a fan-out does.
#[test]
fn loom_push_racing_a_parking_reader_never_loses_the_wake_up() {
    check("push racing a parking reader", || {
        let q = Arc::new(Queue::<Item>::new(4, Overflow::Block));
        let reader = {
            let q = q.clone();
            thread::spawn(move || {
                let waker = thread_waker();
                (0..2)
                    .map(|_| q.pop_blocking(&waker).expect("queue is open").0)
                    .collect::<Vec<_>>()
            })
        };
        assert!(matches!(
            q.push(Item(1, false), false, no_block),
            Pushed::Queued(None)
        ));
        let mut wakes = Wakes::new();
        assert!(matches!(
            q.push_deferring(Item(2, false), || false, no_block, Some(&mut wakes)),
            Pushed::Queued(None)
        ));
        wake_all(Some(&mut wakes));
        assert_eq!(reader.join().unwrap(), [1, 2]);
    });
}

/// (2) Two emitters push into a full queue of one while its reader takes:
/// every item is delivered or dropped (never both, never neither:
/// `delivered + dropped == offered`), and each emitter's items arrive in the
/// order it pushed them.
fn two_emitters_and_a_dropping_consumer(overflow: Overflow) {
    let q = Arc::new(Queue::new(1, overflow));
    let reader = {
        let q = q.clone();
        thread::spawn(move || read_to_end(&q))
    };
    let emitters: Vec<_> = [1u32, 2]
        .into_iter()
        .map(|e| {
            let q = q.clone();
            thread::spawn(move || {
                let mut dropped = Vec::new();
                for id in [e * 10, e * 10 + 1] {
                    match q.push(Item(id, false), false, no_block) {
                        Pushed::Queued(None) => {}
                        Pushed::Queued(Some((lost, DropReason::Evicted)))
                        | Pushed::Dropped(lost, DropReason::QueueFull) => dropped.push(lost.0),
                        _ => panic!("unexpected push outcome for {id}"),
                    }
                }
                dropped
            })
        })
        .collect();
    let dropped: Vec<u32> = emitters
        .into_iter()
        .flat_map(|e| e.join().unwrap())
        .collect();
    q.close();
    let delivered = reader.join().unwrap();
    assert!(q.close_and_drain().is_empty(), "left in a closed queue");
    assert!(per_emitter_order_kept(&delivered), "{delivered:?}");
    let mut all: Vec<u32> = delivered.iter().chain(&dropped).copied().collect();
    all.sort_unstable();
    assert_eq!(
        all,
        [10, 11, 20, 21],
        "delivered {delivered:?}, dropped {dropped:?}"
    );
}

#[test]
fn loom_two_emitters_and_a_drop_oldest_consumer_account_for_every_item() {
    check("two emitters, DropOldest consumer", || {
        two_emitters_and_a_dropping_consumer(Overflow::DropOldest);
    });
}

#[test]
fn loom_two_emitters_and_a_drop_newest_consumer_account_for_every_item() {
    check("two emitters, DropNewest consumer", || {
        two_emitters_and_a_dropping_consumer(Overflow::DropNewest);
    });
}

/// (3) The queue is closed while an emitter pushes and the reader reads:
/// every item is either delivered or handed back as `Closed` (refused, or
/// withdrawn by a push that raced the close), none both, and nothing stays
/// behind in the closed queue.
#[test]
fn loom_close_racing_push_delivers_or_counts_closed_each_item_once() {
    check("close racing push", || {
        let q = Arc::new(Queue::new(2, Overflow::DropNewest));
        let reader = {
            let q = q.clone();
            thread::spawn(move || read_to_end(&q))
        };
        let emitter = {
            let q = q.clone();
            thread::spawn(move || {
                let mut closed = Vec::new();
                for id in [1, 2] {
                    match q.push(Item(id, false), false, no_block) {
                        Pushed::Queued(None) => {}
                        Pushed::Closed(item) => closed.push(item.0),
                        Pushed::Withdrawn(items) => closed.extend(items.into_iter().map(|i| i.0)),
                        _ => panic!("unexpected push outcome for {id}"),
                    }
                }
                closed
            })
        };
        q.close();
        let closed = emitter.join().unwrap();
        let delivered = reader.join().unwrap();
        assert!(q.close_and_drain().is_empty(), "left in a closed queue");
        let both: Vec<_> = delivered.iter().filter(|i| closed.contains(i)).collect();
        assert!(both.is_empty(), "delivered and closed: {both:?}");
        let mut all: Vec<u32> = delivered.iter().chain(&closed).copied().collect();
        all.sort_unstable();
        assert_eq!(all, [1, 2], "delivered {delivered:?}, closed {closed:?}");
        assert!(per_emitter_order_kept(&delivered), "{delivered:?}");
    });
}

/// (4) A push into a full `DropOldest` queue evicts (moving a terminal item
/// at the ring's head to `front` on the way) while another emitter pushes
/// lock-free: the bound overshoots by at most one (one racing emitter),
/// nothing is lost and nothing reordered. Before the fix in `evict_locked`
/// the racing emitter filled both slots the eviction freed: two over.
#[test]
fn loom_eviction_racing_push_overshoots_by_at_most_one_per_emitter() {
    check("eviction racing a lock-free push", || {
        const CAPACITY: usize = 2;
        let q = Arc::new(Queue::new(CAPACITY, Overflow::DropOldest));
        for item in [Item(1, true), Item(2, false)] {
            assert!(matches!(
                q.push(item, false, no_block),
                Pushed::Queued(None)
            ));
        }
        let racer = {
            let q = q.clone();
            thread::spawn(move || {
                let mut evicted = Vec::new();
                for id in [20, 21] {
                    match q.push(Item(id, false), false, no_block) {
                        Pushed::Queued(None) => {}
                        Pushed::Queued(Some((lost, DropReason::Evicted))) => evicted.push(lost.0),
                        _ => panic!("unexpected push outcome for {id}"),
                    }
                }
                evicted
            })
        };
        let mut evicted = Vec::new();
        match q.push(Item(10, false), false, no_block) {
            Pushed::Queued(None) => {}
            Pushed::Queued(Some((lost, DropReason::Evicted))) => evicted.push(lost.0),
            _ => panic!("unexpected push outcome for 10"),
        }
        evicted.extend(racer.join().unwrap());
        // No reader: the length only grows, so the end is the worst moment.
        let len = q.len();
        assert!(
            len <= CAPACITY + 1,
            "bound {CAPACITY} overshot by {}",
            len - CAPACITY
        );
        let left: Vec<u32> = q.close_and_drain().into_iter().map(|i| i.0).collect();
        assert_eq!(left.len(), len);
        assert_eq!(left.first(), Some(&1), "the terminal item stays first");
        assert!(!evicted.contains(&1), "a terminal item was evicted");
        assert!(per_emitter_order_kept(&left), "{left:?}");
        let mut all: Vec<u32> = left.iter().chain(&evicted).copied().collect();
        all.sort_unstable();
        assert_eq!(
            all,
            [1, 2, 10, 20, 21],
            "left {left:?}, evicted {evicted:?}"
        );
    });
}

/// Subscribes as `Bus` does: under the writers' lock, publish a copy.
fn subscribe(routes: &Routes, sub: std::sync::Arc<Subscription>) {
    let _writer = routes.writer();
    routes.store(routes.load().with(sub));
}

/// Emits as the dispatcher does: the route (through the per-thread memo),
/// then each active subscriber's queue.
fn emit(routes: &Routes, event: &Event) {
    let route = routes.route(event.event_type(), |_| TopicTraits {
        event_type: event.checked_type(),
        type_counter: std::sync::Arc::new(Counter::default()),
        terminal: false,
        durable: false,
        recorded: true,
    });
    for sub in route.subscriptions.iter() {
        if !sub.active.load(Ordering::Acquire) {
            continue;
        }
        if let HandlerKind::Stream(q) = &sub.kind {
            let _ = q.push(StreamItem::Event(event.clone()), false, no_block);
        }
    }
}

/// (5) A subscriber that stays subscribed gets every event once, in order,
/// while another subscribes and unsubscribes: whichever table an emit
/// loads, and whether the per-thread memo hits or misses.
#[test]
fn loom_subscribe_and_unsubscribe_racing_emit_keep_a_stable_subscriber_exact() {
    check("subscribe/unsubscribe racing emit", || {
        let routes = Arc::new(Routes::new());
        let stable = Subscription::stream_for_test(1, "order.*");
        subscribe(&routes, stable.clone());
        let events: Vec<Event> = (0..2)
            .map(|n| Event::new("order.placed", serde_json::json!({ "n": n })).unwrap())
            .collect();
        let emitter = {
            let routes = routes.clone();
            let events = events.clone();
            thread::spawn(move || {
                for event in &events {
                    emit(&routes, event);
                }
            })
        };
        let churn = {
            let routes = routes.clone();
            thread::spawn(move || {
                let other = Subscription::stream_for_test(2, "order.placed");
                subscribe(&routes, other);
                assert!(routes.remove(SubscriptionId::from_u64(2)));
            })
        };
        emitter.join().unwrap();
        churn.join().unwrap();
        let HandlerKind::Stream(q) = &stable.kind else {
            unreachable!("a stream subscription")
        };
        let got: Vec<_> = q
            .close_and_drain()
            .into_iter()
            .filter_map(|item| match item {
                StreamItem::Event(e) => Some(e.event_id()),
                StreamItem::End => None,
            })
            .collect();
        let want: Vec<_> = events.iter().map(Event::event_id).collect();
        assert_eq!(got, want, "missed or doubled");
        assert_eq!(
            routes
                .load()
                .subscriptions()
                .map(|s| s.id)
                .collect::<BTreeSet<_>>(),
            BTreeSet::from([SubscriptionId::from_u64(1)])
        );
        // Drop the table (and with it the subscriptions' queues) inside the
        // model, as loom wants every object it tracks gone by the end.
        drop(routes.swap(RouteTable::default()));
    });
}

/// (7) A waiting emitter takes its subscription's turn (`turn.rs`), pushes
/// its item without a wake-up and reads it itself, twice, while another
/// emitter pushes as usual and the worker looks for work: every item is
/// read once, by one reader at a time, in each emitter's order, and an item
/// left in the queue once the emitters are done always has the worker
/// awake or woken for it (a worker asleep over it is a deadlock here).
#[test]
fn loom_an_emitter_taking_the_turn_never_strands_an_item() {
    use std::task::{Context, Poll};

    use crate::queue::{Fast, Waiting};
    use crate::sync::AtomicBool;
    use crate::turn::Turn;

    check("emitter taking the turn", || {
        let q = Arc::new(Queue::<Item>::new(4, Overflow::Block));
        let turn = Arc::new(Turn::new());
        let log = Arc::new(Mutex::new(Vec::new()));
        let reading = Arc::new(AtomicBool::new(false));
        // Read by whoever holds the turn, one at a time.
        let read = {
            let (log, reading) = (log.clone(), reading.clone());
            move |item: Item| {
                assert!(!reading.swap(true, Ordering::SeqCst), "two readers at once");
                log.lock().unwrap().push(item.0);
                reading.store(false, Ordering::SeqCst);
            }
        };
        // How many the worker has read, and how many it must read (set once
        // the emitters are done), under one lock: loom models `SeqCst` as
        // acquire/release, so two atomics here could each miss the other's
        // store and fail the model for a reason outside the protocol.
        let tally = Arc::new(Mutex::new((0_usize, usize::MAX)));
        let worker_waker = Arc::new(Mutex::new(None));
        let worker = {
            let (q, turn, read) = (q.clone(), turn.clone(), read.clone());
            let (tally, worker_waker) = (tally.clone(), worker_waker.clone());
            thread::spawn(move || {
                let waker = thread_waker();
                *worker_waker.lock().unwrap() = Some(waker.clone());
                let mut cx = Context::from_waker(&waker);
                let mut held = false;
                loop {
                    match turn.poll_pop(&mut held, &q, &mut cx, Waiting::Poll) {
                        Poll::Ready(Some(item)) => {
                            read(item);
                            tally.lock().unwrap().0 += 1;
                        }
                        Poll::Ready(None) => unreachable!("never closed"),
                        Poll::Pending => {
                            let (read, expect) = *tally.lock().unwrap();
                            if read >= expect {
                                break;
                            }
                            crate::sync::thread::park();
                        }
                    }
                }
                assert!(!held, "the worker keeps the turn only with work in hand");
            })
        };
        // The waiting emitter: takes the turn, or else queues as usual.
        let waiting = {
            let (q, turn, read) = (q.clone(), turn.clone(), read.clone());
            thread::spawn(move || {
                let mut ran = 0;
                for id in [10, 11] {
                    if !turn.try_take() {
                        assert!(matches!(
                            q.push(Item(id, false), false, no_block),
                            Pushed::Queued(None)
                        ));
                        continue;
                    }
                    match q.push_fast(Item(id, false)) {
                        Fast::Queued => {
                            while let Some(item) = q.pop_now() {
                                let mine = item.0 == id;
                                read(item);
                                ran += 1;
                                if mine {
                                    break;
                                }
                            }
                            turn.give_back_after(&q);
                        }
                        Fast::Slow(item) => {
                            turn.give_back_after(&q);
                            assert!(matches!(
                                q.push(item, false, no_block),
                                Pushed::Queued(None)
                            ));
                        }
                        Fast::Withdrawn(_) => unreachable!("never closed"),
                    }
                }
                ran
            })
        };
        let plain = {
            let q = q.clone();
            thread::spawn(move || {
                assert!(matches!(
                    q.push(Item(20, false), false, no_block),
                    Pushed::Queued(None)
                ));
            })
        };
        let ran = waiting.join().unwrap();
        plain.join().unwrap();
        let done = {
            let mut tally = tally.lock().unwrap();
            tally.1 = 3 - ran;
            tally.0 >= tally.1
        };
        // Done with everything it had to read, the worker may be asleep:
        // wake it to let it end. Otherwise it must wake by itself.
        if done {
            if let Some(waker) = worker_waker.lock().unwrap().take() {
                waker.wake();
            }
        }
        worker.join().unwrap();
        let log = log.lock().unwrap().clone();
        assert!(per_emitter_order_kept(&log), "{log:?}");
        let mut all = log.clone();
        all.sort_unstable();
        assert_eq!(all, [10, 11, 20], "read {log:?}");
        assert!(q.close_and_drain().is_empty());
    });
}

/// (8) Two emitters pass the bus's gate and record an event while the bus
/// shuts down and records its last event once the gate is empty (as
/// `Bus::shutdown_with` does): each emit is either refused or recorded
/// before the last event, never after it.
#[test]
fn loom_an_emit_racing_shutdown_is_refused_or_recorded_before_the_last_event() {
    const LAST: u32 = 0;
    check("emit racing shutdown", || {
        let gate = Arc::new(Gate::new());
        let log = Arc::new(Mutex::new(Vec::new()));
        let emitters: Vec<_> = [1, 2]
            .map(|id| {
                let (gate, log) = (gate.clone(), log.clone());
                thread::spawn(move || {
                    let Some(pass) = gate.enter() else {
                        return None;
                    };
                    log.lock().unwrap().push(id);
                    drop(pass);
                    Some(id)
                })
            })
            .into();
        assert!(gate.close());
        while !gate.is_empty() {
            thread::yield_now();
        }
        log.lock().unwrap().push(LAST);
        let mut accepted: Vec<u32> = emitters
            .into_iter()
            .filter_map(|e| e.join().unwrap())
            .collect();
        let log = log.lock().unwrap().clone();
        assert_eq!(
            log.last(),
            Some(&LAST),
            "recorded after the last event: {log:?}"
        );
        let mut recorded = log[..log.len() - 1].to_vec();
        recorded.sort_unstable();
        accepted.sort_unstable();
        assert_eq!(recorded, accepted, "log {log:?}");
    });
}
