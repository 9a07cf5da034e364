//! What this thread is in the middle of: how deep emits are nested inside
//! handlers, and which async subscriptions are running or waited on here.
//! Used to fail fast where waiting would deadlock.

use std::cell::{Cell, RefCell};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use tokio::runtime::{Handle, RuntimeFlavor};

use crate::subscribe::SubscriptionId;

/// An async subscription that cannot make progress until the code running on
/// this thread returns: its handler is being polled here, or it waits (through
/// `emit_and_wait`) on the handler being polled here.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Blocked {
    pub(crate) bus: u64,
    pub(crate) subscription: SubscriptionId,
}

pub(crate) type Chain = Arc<[Blocked]>;

thread_local! {
    static DEPTH: Cell<usize> = const { Cell::new(0) };
    static CHAIN: RefCell<Option<Chain>> = const { RefCell::new(None) };
}

/// Marks one more level of emit nesting until dropped.
pub(crate) struct DepthGuard(());

impl DepthGuard {
    /// `Err(depth)` when entering would pass `max`.
    pub(crate) fn enter(max: usize) -> Result<Self, usize> {
        DEPTH.with(|d| {
            let depth = d.get() + 1;
            if depth > max {
                return Err(depth);
            }
            d.set(depth);
            Ok(DepthGuard(()))
        })
    }
}

impl Drop for DepthGuard {
    fn drop(&mut self) {
        DEPTH.with(|d| d.set(d.get().saturating_sub(1)));
    }
}

/// Whether this thread is inside a handler of any bus.
pub(crate) fn in_handler() -> bool {
    DEPTH.with(Cell::get) > 0 || CHAIN.with(|c| c.borrow().is_some())
}

/// Whether a dispatch running on this thread was started inside a handler:
/// the dispatch itself counts one level of depth.
pub(crate) fn dispatching_in_handler() -> bool {
    DEPTH.with(Cell::get) > 1 || CHAIN.with(|c| c.borrow().is_some())
}

/// The async subscriptions blocked on this thread.
pub(crate) fn chain() -> Option<Chain> {
    CHAIN.with(|c| c.borrow().clone())
}

/// `chain` plus `one`.
pub(crate) fn extended(chain: Option<&Chain>, one: Blocked) -> Chain {
    let mut v: Vec<Blocked> = chain.map(|c| c.to_vec()).unwrap_or_default();
    v.push(one);
    v.into()
}

pin_project_lite::pin_project! {
    /// Runs a handler's future with its chain set while it is polled. The
    /// chain is borrowed from the worker and moved into the thread-local
    /// for each poll and back after it, rather than cloned (two atomic
    /// operations a poll, on every delivery).
    pub(crate) struct WithChain<'a, F> {
        chain: &'a mut Option<Chain>,
        #[pin]
        inner: F,
    }
}

impl<'a, F> WithChain<'a, F> {
    /// `chain` is `Some` (the poll sets it); it is left as it was found.
    pub(crate) fn new(chain: &'a mut Option<Chain>, inner: F) -> Self {
        Self { chain, inner }
    }
}

impl<F: Future> Future for WithChain<'_, F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        /// Puts the thread's previous chain back, and this future's chain
        /// back where it is borrowed from, however the poll ends.
        struct Restore<'a> {
            previous: Option<Chain>,
            mine: &'a mut Option<Chain>,
        }
        impl Drop for Restore<'_> {
            fn drop(&mut self) {
                let previous = self.previous.take();
                *self.mine = CHAIN.with(|c| c.replace(previous));
            }
        }
        let mine: &mut Option<Chain> = this.chain;
        let previous = CHAIN.with(|c| c.replace(mine.take()));
        let _restore = Restore { previous, mine };
        this.inner.poll(cx)
    }
}

thread_local! {
    /// Set while a dead letter is being retried on this thread, so that a
    /// retry that fails again updates its entry instead of adding another.
    static RETRYING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

pub(crate) fn retrying() -> bool {
    RETRYING.with(std::cell::Cell::get)
}

/// Runs `f` with `retrying()` true on this thread.
pub(crate) fn while_retrying<R>(f: impl FnOnce() -> R) -> R {
    struct Restore(bool);
    impl Drop for Restore {
        fn drop(&mut self) {
            RETRYING.with(|r| r.set(self.0));
        }
    }
    let _restore = Restore(RETRYING.with(|r| r.replace(true)));
    f()
}

/// Runs `wait`, which blocks this thread until async handlers finish.
///
/// On a worker thread of a multi-thread runtime, a task this thread just woke
/// can sit in the worker's LIFO slot, which other workers never steal, so
/// blocking there could wait forever on a handler that never starts.
/// `block_in_place` hands the worker's queued tasks to another thread first.
pub(crate) fn block_here<R>(wait: impl FnOnce() -> R) -> R {
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => {
            tokio::task::block_in_place(wait)
        }
        _ => wait(),
    }
}
