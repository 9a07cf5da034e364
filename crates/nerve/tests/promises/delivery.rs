//! Async handlers under every overflow policy: what they get is in emit
//! order, every offer is delivered or counted dropped, and terminal events
//! are never dropped.

use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use nerve::{Bus, EmitError, Event, Overflow, Subscribe, json};

use crate::{WAIT, strictly_increasing};

const PLAIN: u64 = 1_000;
const MIXED: u64 = 1_000;
/// Every `TERMINAL_EVERY`th event of the mixed part is terminal
/// (`load.finished`, a default terminal pattern).
const TERMINAL_EVERY: u64 = 25;

/// What one async subscriber with a queue of 8 and `policy` got.
struct Outcome {
    /// The `n` of each event it handled, in the order handled.
    got: Vec<(u64, bool)>,
    offered: u64,
    delivered: u64,
    dropped: u64,
    refused_by_emit: u64,
    /// Drops counted with reason `refused` (the `Error` policy).
    refused: u64,
    /// Drops counted with reason `terminal_priority` (evicted by a terminal
    /// event).
    terminal_priority: u64,
}

/// An async subscriber that waits at a gate until the emitter has emitted
/// `PLAIN` plain events (so a queue of 8 overflows, unless the policy
/// blocks), then `MIXED` events of which every 25th is terminal.
fn run(policy: Overflow) -> Outcome {
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
    // Under `Block` the emitter waits for the handler, so the gate starts
    // open; under every other policy it opens after the plain part.
    let blocks = policy == Overflow::Block;
    let (open, gate) = tokio::sync::watch::channel(blocks);
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    bus.subscribe_async_with(
        "load.*",
        move |e: Event| {
            let (s, mut gate) = (s.clone(), gate.clone());
            async move {
                gate.wait_for(|open| *open).await.unwrap();
                let n = e.data()["n"].as_u64().unwrap();
                s.lock()
                    .unwrap()
                    .push((n, e.event_type() == "load.finished"));
            }
        },
        Subscribe::new().name("async").queued(8).overflow(policy),
    )
    .unwrap();
    let (plain_done, plain_rx) = mpsc::channel();
    let emitter = {
        let bus = bus.clone();
        std::thread::spawn(move || {
            let mut refused = 0u64;
            let mut count = |r: Result<nerve::EventId, EmitError>| match r {
                Ok(_) => {}
                Err(EmitError::QueueFull { .. }) => refused += 1,
                Err(e) => panic!("{e}"),
            };
            for n in 0..PLAIN {
                count(bus.emit("load.tick", json!({ "n": n })));
            }
            plain_done.send(()).unwrap();
            for n in PLAIN..PLAIN + MIXED {
                let event_type = if n % TERMINAL_EVERY == 0 {
                    "load.finished"
                } else {
                    "load.tick"
                };
                count(bus.emit(event_type, json!({ "n": n })));
            }
            refused
        })
    };
    plain_rx.recv_timeout(WAIT).unwrap();
    open.send(true).unwrap();
    let refused_by_emit = emitter.join().unwrap();
    bus.flush_blocking();
    let stats = bus.stats();
    let sub = stats
        .subscribers
        .iter()
        .find(|s| s.name.as_deref() == Some("async"))
        .unwrap();
    let got = std::mem::take(&mut *seen.lock().unwrap());
    Outcome {
        got,
        offered: sub.offered,
        delivered: sub.delivered,
        dropped: sub.dropped,
        refused_by_emit,
        refused: sub.dropped_by_reason.get("refused").copied().unwrap_or(0),
        terminal_priority: sub
            .dropped_by_reason
            .get("terminal_priority")
            .copied()
            .unwrap_or(0),
    }
}

#[test]
fn async_handlers_under_every_policy_keep_order_account_exactly_and_keep_terminals() {
    let policies = [
        Overflow::DropNewest,
        Overflow::DropOldest,
        Overflow::Error,
        Overflow::Block,
        Overflow::BlockTimeout(Duration::from_micros(50)),
    ];
    for policy in policies {
        let o = run(policy);
        let ns: Vec<u64> = o.got.iter().map(|g| g.0).collect();
        assert_eq!(o.offered, PLAIN + MIXED, "{policy:?}");
        assert_eq!(o.delivered, ns.len() as u64, "{policy:?}");
        assert_eq!(o.delivered + o.dropped, o.offered, "{policy:?}");
        assert!(strictly_increasing(&ns), "{policy:?}: out of order");
        let terminals = o.got.iter().filter(|g| g.1).count() as u64;
        assert_eq!(
            terminals,
            MIXED / TERMINAL_EVERY,
            "{policy:?}: a terminal event was dropped"
        );
        match policy {
            // A terminal event finding the queue full evicts the oldest plain
            // one, whatever the policy: under `Block` that is the only loss.
            Overflow::Block => assert_eq!(o.dropped, o.terminal_priority, "Block"),
            Overflow::Error => {
                assert!(o.dropped > 0);
                assert_eq!(
                    o.refused_by_emit, o.refused,
                    "every refusal is an error from emit"
                );
            }
            // A queue of 8 behind a closed gate overflows.
            _ => assert!(o.dropped > 0, "{policy:?}"),
        }
        if policy != Overflow::Error {
            assert_eq!(o.refused_by_emit, 0, "{policy:?}");
        }
    }
}
