//! Queued deliveries: one worker per async subscription (a task) or queued
//! sync subscription (a thread), fed by the subscriber's bounded queue, so
//! each subscriber sees its events in order (or `concurrency(n)` at once).

use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::Instant;

use futures::{FutureExt, StreamExt};
use nerve_core::correlation;
use nerve_core::instrument::{HandleScope, HandlerMode};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;

use crate::call::Caller;
use crate::handler::{SyncFn, panic_message};
use crate::queue::{Queue, Waiting};
use crate::reentry::{self, Blocked, Chain, WithChain};
use crate::report::Outcome;
use crate::subscription::{AsyncSlot, Delivery, HandlerKind, Subscription};
use crate::turn::Turn;

/// If the worker task is cancelled (its runtime shut down), what it left in
/// the queue is abandoned, counted and reported, rather than left waiting for
/// a worker that may never come. Either way, the slot's `running` flag is
/// cleared, so that the next delivery looks at the worker again.
struct AbandonQueuedOnDrop(Arc<Queue<Delivery>>, Arc<AtomicBool>);

impl Drop for AbandonQueuedOnDrop {
    fn drop(&mut self) {
        self.1.store(false, Ordering::Release);
        drop(self.0.take_all());
    }
}

/// The turn of a subscription (see `turn.rs`), held until dropped.
struct Holding<'a> {
    turn: &'a Turn,
    held: bool,
}

impl Drop for Holding<'_> {
    fn drop(&mut self) {
        if self.held {
            self.turn.give_back();
        }
    }
}

/// Starts the worker of one async subscription on `handle`; `running` is
/// set by the caller and cleared when the worker's task ends or is dropped.
pub(crate) fn spawn(caller: Weak<Caller>, handle: &Handle, slot: &AsyncSlot) -> JoinHandle<()> {
    let queue = slot.queue.clone();
    let concurrency = slot.concurrency;
    let turn = slot.turn.clone();
    // Made outside the task so that a task dropped unpolled (its runtime is
    // shutting down) still abandons the queue.
    let abandon = AbandonQueuedOnDrop(queue.clone(), slot.running.clone());
    handle.spawn(async move {
        let _abandon = abandon;
        if concurrency == 1 {
            // Event N finishes before N+1 starts: the per-subscriber order.
            // The worker holds the subscription's turn from when it looks
            // for work until it finds none, so that a waiting emitter may
            // run its own delivery in between (`run_in_turn`).
            let mut holding = Holding {
                turn: &turn,
                held: false,
            };
            let mut alone = None;
            let mut waiting = Waiting::Poll;
            loop {
                let next = futures::future::poll_fn(|cx| {
                    holding
                        .turn
                        .poll_pop(&mut holding.held, &queue, cx, waiting)
                });
                let Some(delivery) = next.await else { return };
                // An emitter waiting for this reply sends nothing before it:
                // no point spinning for the next event.
                waiting = if delivery.waiter.is_some() {
                    Waiting::Park
                } else {
                    Waiting::Poll
                };
                run(&caller, delivery, &mut alone).await;
            }
        }
        // Up to `concurrency` at once (no turns: emitters never take one).
        futures::stream::poll_fn(|cx| queue.poll_pop(cx, Waiting::Poll))
            .for_each_concurrent(concurrency, |delivery| {
                let caller = caller.clone();
                async move { run(&caller, delivery, &mut None).await }
            })
            .await;
    })
}

/// The turn of an async subscription (see `turn.rs`), taken by a waiting
/// emitter when it delivered: given back when dropped, waking the worker if
/// the queue still holds anything (such as the emitter's own delivery, which
/// it pushed without a wake-up).
pub(crate) struct HeldTurn {
    sub: Arc<Subscription>,
    runtime: Handle,
}

impl HeldTurn {
    /// Takes `sub`'s turn for an emitter on `runtime`, if it is free.
    pub(crate) fn try_take(sub: &Arc<Subscription>, runtime: &Handle) -> Option<Self> {
        let HandlerKind::Async(slot) = &sub.kind else {
            return None;
        };
        (slot.concurrency == 1 && slot.turn.try_take()).then(|| Self {
            sub: sub.clone(),
            runtime: runtime.clone(),
        })
    }

    fn slot(&self) -> &AsyncSlot {
        match &self.sub.kind {
            HandlerKind::Async(slot) => slot,
            _ => unreachable!("only an async subscription has a turn"),
        }
    }
}

impl Drop for HeldTurn {
    fn drop(&mut self) {
        let slot = self.slot();
        slot.turn.give_back_after(&slot.queue);
    }
}

/// Runs, on the waiting emitter's task, what the subscription of `held`
/// has queued, oldest first, up to and including the emitter's own
/// delivery (of the event `ours`), each as the worker would have run it.
/// Each is polled once here; one that is not finished then goes on in a
/// task of its own, which keeps the turn until it finishes, and whose
/// handle is returned. Finishes in its first poll.
pub(crate) fn run_in_turn(
    caller: Weak<Caller>,
    held: HeldTurn,
    ours: nerve_core::EventId,
) -> impl Future<Output = Option<JoinHandle<()>>> {
    let mut held = Some(held);
    futures::future::poll_fn(move |cx| {
        let Some(held) = held.take() else {
            return Poll::Ready(None);
        };
        // Bounded, in case emitters keep queueing ahead of this one (they
        // cannot: ours is already queued; the bound only caps the work).
        for _ in 0..64 {
            let Some(delivery) = held.slot().queue.pop_now() else {
                break;
            };
            let mine = delivery.event.event_id() == ours;
            let caller = caller.clone();
            let mut job = Box::pin(async move { run(&caller, delivery, &mut None).await });
            if job.as_mut().poll(cx).is_pending() {
                // The handler waits for something: it goes on in a task of
                // its own, on the bus's runtime, holding the turn.
                let runtime = held.runtime.clone();
                return Poll::Ready(Some(runtime.spawn(async move {
                    job.await;
                    drop(held);
                })));
            }
            if mine {
                break;
            }
        }
        Poll::Ready(None)
    })
}

/// Starts the thread of one queued sync subscription.
pub(crate) fn spawn_thread(
    caller: Weak<Caller>,
    name: String,
    queue: Arc<Queue<Delivery>>,
    handler: SyncFn,
) -> std::io::Result<()> {
    std::thread::Builder::new().name(name).spawn(move || {
        let waker = crate::queue::thread_waker();
        while let Some(delivery) = queue.pop_blocking(&waker) {
            let Some(caller) = caller.upgrade() else {
                continue; // The bus is gone: dropping counts it abandoned.
            };
            delivery
                .sub
                .counters
                .delivered
                .fetch_add(1, Ordering::Relaxed);
            let timeout = delivery.sub.timeout.or(caller.sync_timeout);
            let (outcome, elapsed) = {
                // Marks this thread as inside a handler, so that its emits
                // never block on a queue (its own, possibly) it drains.
                let _in_handler = crate::reentry::DepthGuard::enter(usize::MAX);
                let _ambient = correlation::enter_event(&delivery.event);
                caller.call_sync(
                    &handler,
                    &delivery.event,
                    timeout,
                    &delivery.sub,
                    HandlerMode::Queued,
                )
            };
            caller.ledger.account(
                &delivery.event,
                &delivery.sub,
                &outcome,
                elapsed,
                delivery.dead_letter,
            );
            // Let go of the bus before the delivery counts as done: once a
            // shutdown sees nothing in flight, no worker holds the bus's
            // state (the dead letter store's file lock among it).
            drop(caller);
            delivery.finish(outcome, elapsed);
        }
    })?;
    Ok(())
}

pin_project_lite::pin_project! {
    /// `tokio::time::timeout` that arms its timer only once the future
    /// returns `Pending`: most handlers finish in their first poll, and
    /// registering a timer (and cancelling it) is a large part of a
    /// delivery's cost. `None` once the time is up.
    struct Deadline<F> {
        #[pin]
        inner: F,
        start: Instant,
        limit: std::time::Duration,
        #[pin]
        sleep: Option<tokio::time::Sleep>,
        // Set once armed: `sleep` stays `None` when the deadline is too far
        // to represent (then there is none).
        armed: bool,
    }
}

impl<F> Deadline<F> {
    fn new(inner: F, start: Instant, limit: std::time::Duration) -> Self {
        Self {
            inner,
            start,
            limit,
            sleep: None,
            armed: false,
        }
    }
}

impl<F: Future> Future for Deadline<F> {
    type Output = Option<F::Output>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut this = self.project();
        if let Poll::Ready(out) = this.inner.poll(cx) {
            return Poll::Ready(Some(out));
        }
        if !*this.armed {
            *this.armed = true;
            // The time left of `limit` since `start`, on tokio's clock (which
            // tests may pause), as `timeout` called at `start` would have.
            let left = this.limit.saturating_sub(this.start.elapsed());
            if let Some(at) = tokio::time::Instant::now().checked_add(left) {
                this.sleep.set(Some(tokio::time::sleep_until(at)));
            }
        }
        match this.sleep.as_pin_mut() {
            Some(sleep) => sleep.poll(cx).map(|()| None),
            None => Poll::Pending,
        }
    }
}

pin_project_lite::pin_project! {
    /// A future polled inside an instrument's scope, when there is one.
    struct InScope<'a, F> {
        #[pin]
        inner: F,
        scope: Option<&'a dyn HandleScope>,
    }
}

impl<F: Future> Future for InScope<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        match this.scope {
            None => this.inner.poll(cx),
            Some(scope) => {
                let mut inner = Some(this.inner);
                let mut out = Poll::Pending;
                scope.in_scope(&mut || {
                    if let Some(inner) = inner.take() {
                        out = inner.poll(cx);
                    }
                });
                out
            }
        }
    }
}

/// Runs one delivery. `alone` keeps, from one delivery to the next, the
/// chain of a delivery no emitter waits on (this subscription alone), so
/// that it is made once rather than for every event.
async fn run(caller: &Weak<Caller>, delivery: Delivery, alone: &mut Option<Chain>) {
    let Some(caller) = caller.upgrade() else {
        return; // The bus is gone: dropping the delivery counts it abandoned.
    };
    delivery
        .sub
        .counters
        .delivered
        .fetch_add(1, Ordering::Relaxed);
    let HandlerKind::Async(slot) = &delivery.sub.kind else {
        return;
    };
    let _permit = match &caller.semaphore {
        Some(semaphore) => semaphore.clone().acquire_owned().await.ok(),
        None => None,
    };
    let timeout = delivery.sub.timeout.or(caller.handler_timeout);
    let me = Blocked {
        bus: caller.bus,
        subscription: delivery.sub.id,
    };
    let mut waited;
    let chain: &mut Option<Chain> = match delivery.chain.as_ref() {
        Some(waiting) => {
            waited = Some(reentry::extended(Some(waiting), me));
            &mut waited
        }
        None => {
            alone.get_or_insert_with(|| {
                Chain::clone(slot.alone.get_or_init(|| reentry::extended(None, me)))
            });
            alone
        }
    };
    let event = delivery.event.clone();
    // The call itself runs inside the first poll, so a handler that panics
    // before returning its future is caught like any other panic.
    let call = async move { (slot.handler)(event).await };
    let scoped = WithChain::new(chain, correlation::scope_event(&delivery.event, call));
    let caught = AssertUnwindSafe(scoped).catch_unwind();
    // Every poll of the handler's future runs inside the instrument's scope,
    // so whatever it emits or logs belongs to this delivery.
    let scope = caller.instrument.as_ref().and_then(|i| {
        i.handle(
            &delivery.event,
            &delivery.sub.handler_info(HandlerMode::Async),
        )
    });
    let caught = InScope {
        inner: caught,
        scope: scope.as_deref(),
    };
    let start = Instant::now();
    let result = match timeout {
        Some(limit) => Deadline::new(caught, start, limit).await,
        None => Some(caught.await),
    };
    let elapsed = start.elapsed();
    let outcome = match result {
        None => Outcome::TimedOut(elapsed),
        Some(Ok(Ok(()))) => Outcome::Delivered,
        Some(Ok(Err(e))) => Outcome::of_error(e),
        Some(Err(panic)) => Outcome::Panicked(panic_message(&*panic)),
    };
    if let Some(scope) = scope {
        scope.finish(&outcome.as_delivery());
    }
    caller.ledger.account(
        &delivery.event,
        &delivery.sub,
        &outcome,
        elapsed,
        delivery.dead_letter,
    );
    if matches!(outcome, Outcome::Halted(_)) && delivery.waiter.is_none() {
        tracing::warn!(
            subscription = %delivery.sub.label(),
            event_type = delivery.event.event_type(),
            "an async handler asked to halt an emit that did not wait; only emit_and_wait sees async halts",
        );
    }
    // Let go of the bus before the delivery counts as done (as above).
    drop(caller);
    delivery.finish(outcome, elapsed);
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn a_deadline_whose_future_finishes_in_its_first_poll_arms_no_timer() {
        // No tokio runtime here: arming a timer would panic.
        let out = futures::executor::block_on(Deadline::new(
            async { 7 },
            Instant::now(),
            Duration::from_millis(1),
        ));
        assert_eq!(out, Some(7));
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_times_out_a_future_that_never_finishes() {
        let out = Deadline::new(
            futures::future::pending::<()>(),
            Instant::now(),
            Duration::from_millis(50),
        )
        .await;
        assert_eq!(out, None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_lets_a_future_finish_within_its_limit() {
        let out = Deadline::new(
            async {
                tokio::time::sleep(Duration::from_millis(10)).await;
                3
            },
            Instant::now(),
            Duration::from_secs(1),
        )
        .await;
        assert_eq!(out, Some(3));
    }

    #[tokio::test(start_paused = true)]
    async fn a_deadline_counts_the_time_before_it_was_armed() {
        // Started longer ago than its limit (a first poll that blocked):
        // over as soon as the future is pending, not a full limit later.
        let long_ago = Instant::now()
            .checked_sub(Duration::from_secs(2))
            .expect("an instant 2 s ago");
        let armed = tokio::time::Instant::now();
        let out = Deadline::new(
            futures::future::pending::<()>(),
            long_ago,
            Duration::from_secs(1),
        )
        .await;
        assert_eq!(out, None);
        assert!(
            armed.elapsed() < Duration::from_secs(1),
            "{:?}",
            armed.elapsed()
        );
    }
}
