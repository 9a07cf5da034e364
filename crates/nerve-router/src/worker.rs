//! Async deliveries: one worker task per async subscription, fed by a queue,
//! so each subscriber sees its events in order (or `concurrency(n)` at once).

use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

use futures::{FutureExt, StreamExt};
use nerve_core::Event;
use nerve_core::correlation::{Ambient, Scoped};
use tokio::runtime::Handle;
use tokio::sync::mpsc;

use crate::bus::BusInner;
use crate::handler::panic_message;
use crate::reentry::{self, Blocked, Chain, WithChain};
use crate::report::{HandlerOutcome, Outcome};
use crate::stats::Shared;
use crate::subscription::{HandlerKind, Subscription};

/// Where `emit_and_wait` collects outcomes.
pub(crate) type Waiter = mpsc::UnboundedSender<HandlerOutcome>;

pub(crate) struct WorkerHandle {
    pub(crate) tx: mpsc::UnboundedSender<Delivery>,
    pub(crate) task: tokio::task::JoinHandle<()>,
}

/// One event on its way to one async handler. Counted as pending from
/// creation until dropped; dropped unfinished, it counts as abandoned.
pub(crate) struct Delivery {
    pub(crate) event: Event,
    pub(crate) sub: Arc<Subscription>,
    pub(crate) waiter: Option<Waiter>,
    /// The subscriptions blocked on the emitter, when it waits for this one.
    pub(crate) chain: Option<Chain>,
    shared: Arc<Shared>,
    finished: bool,
}

impl Delivery {
    pub(crate) fn new(
        event: Event,
        sub: Arc<Subscription>,
        waiter: Option<Waiter>,
        chain: Option<Chain>,
        shared: Arc<Shared>,
    ) -> Self {
        shared.pending.add();
        sub.counters.pending.fetch_add(1, Ordering::Relaxed);
        Self {
            event,
            sub,
            waiter,
            chain,
            shared,
            finished: false,
        }
    }

    fn finish(mut self, outcome: Outcome, elapsed: Duration) {
        self.finished = true;
        if let Some(waiter) = self.waiter.take() {
            let _ = waiter.send(HandlerOutcome {
                subscription: self.sub.id,
                name: self.sub.name.as_deref().map(str::to_owned),
                outcome,
                elapsed,
            });
        }
    }
}

impl Drop for Delivery {
    fn drop(&mut self) {
        if !self.finished {
            self.shared.abandoned.fetch_add(1, Ordering::Relaxed);
            if let Some(waiter) = self.waiter.take() {
                let _ = waiter.send(HandlerOutcome {
                    subscription: self.sub.id,
                    name: self.sub.name.as_deref().map(str::to_owned),
                    outcome: Outcome::Abandoned,
                    elapsed: Duration::ZERO,
                });
            }
        }
        self.sub.counters.pending.fetch_sub(1, Ordering::Relaxed);
        self.shared.pending.done();
    }
}

/// Starts the worker of one async subscription on `handle`.
pub(crate) fn spawn(bus: Weak<BusInner>, handle: &Handle, concurrency: usize) -> WorkerHandle {
    let (tx, mut rx) = mpsc::unbounded_channel::<Delivery>();
    let task = handle.spawn(async move {
        // `for_each_concurrent(1)` finishes event N before starting N+1, which
        // is the per-subscriber order; `n` runs up to n at once.
        futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
            .for_each_concurrent(concurrency, |delivery| run(bus.clone(), delivery))
            .await;
    });
    WorkerHandle { tx, task }
}

async fn run(bus: Weak<BusInner>, delivery: Delivery) {
    let Some(bus) = bus.upgrade() else {
        return; // The bus is gone: dropping the delivery counts it abandoned.
    };
    let HandlerKind::Async(slot) = &delivery.sub.kind else {
        return;
    };
    let _permit = match &bus.semaphore {
        Some(semaphore) => semaphore.clone().acquire_owned().await.ok(),
        None => None,
    };
    let timeout = delivery.sub.timeout.or(bus.config.handler_timeout);
    let chain = reentry::extended(
        delivery.chain.as_ref(),
        Blocked {
            bus: bus.id,
            subscription: delivery.sub.id,
        },
    );
    let handler = slot.handler.clone();
    let event = delivery.event.clone();
    // The call itself runs inside the first poll, so a handler that panics
    // before returning its future is caught like any other panic.
    let call = async move { handler(event).await };
    let scoped = WithChain::new(chain, Scoped::new(Ambient::of_event(&delivery.event), call));
    let caught = AssertUnwindSafe(scoped).catch_unwind();
    let start = Instant::now();
    let result = match timeout {
        Some(limit) => tokio::time::timeout(limit, caught).await.ok(),
        None => Some(caught.await),
    };
    let elapsed = start.elapsed();
    let outcome = match result {
        None => Outcome::TimedOut(elapsed),
        Some(Ok(Ok(()))) => Outcome::Delivered,
        Some(Ok(Err(e))) if e.is_halt() => Outcome::Halted(e.message().to_owned()),
        Some(Ok(Err(e))) => Outcome::Failed(e.message().to_owned()),
        Some(Err(panic)) => Outcome::Panicked(panic_message(&*panic)),
    };
    bus.record(&delivery.event, &delivery.sub, &outcome);
    if matches!(outcome, Outcome::Halted(_)) && delivery.waiter.is_none() {
        tracing::warn!(
            subscription = %delivery.sub.label(),
            event_type = delivery.event.event_type(),
            "an async handler asked to halt an emit that did not wait; only emit_and_wait sees async halts",
        );
    }
    delivery.finish(outcome, elapsed);
}
