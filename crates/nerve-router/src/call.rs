//! Calling one handler: what every delivery needs from its bus (the
//! instrument, the timeouts, the permits, the ledger its outcome goes to),
//! and the call of a sync handler, which the dispatch pipeline and the
//! queued handlers' threads share.

use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use nerve_core::Event;
use nerve_core::instrument::{HandlerMode, Instrument};
use tokio::sync::Semaphore;

use crate::handler::{SyncFn, panic_message};
use crate::ledger::Ledger;
use crate::report::Outcome;
use crate::subscription::Subscription;

/// What running a handler needs from its bus. Workers hold it (weakly)
/// instead of the bus.
pub(crate) struct Caller {
    /// The bus's id, which marks the subscriptions blocked on a task.
    pub(crate) bus: u64,
    pub(crate) instrument: Option<Arc<dyn Instrument>>,
    /// Whether calls are timed even without a timeout (metrics want durations).
    timed: bool,
    /// The timeout of inline and queued sync handlers (explicit only).
    pub(crate) sync_timeout: Option<Duration>,
    /// The timeout of async handlers.
    pub(crate) handler_timeout: Option<Duration>,
    /// `max_concurrent_handlers`' permits.
    pub(crate) semaphore: Option<Arc<Semaphore>>,
    pub(crate) ledger: Arc<Ledger>,
}

impl Caller {
    pub(crate) fn new(
        bus: u64,
        instrument: Option<Arc<dyn Instrument>>,
        sync_timeout: Option<Duration>,
        handler_timeout: Option<Duration>,
        max_concurrent_handlers: Option<usize>,
        ledger: Arc<Ledger>,
    ) -> Self {
        Self {
            bus,
            instrument,
            timed: ledger.metrics().is_some(),
            sync_timeout,
            handler_timeout,
            semaphore: max_concurrent_handlers.map(|n| Arc::new(Semaphore::new(n))),
            ledger,
        }
    }

    /// Calls a sync handler, catching panics, timing it if `limit` is set,
    /// inside the scope of the bus's instrument if it has one.
    #[inline(always)]
    pub(crate) fn call_sync(
        &self,
        f: &SyncFn,
        event: &Event,
        limit: Option<Duration>,
        sub: &Subscription,
        mode: HandlerMode,
    ) -> (Outcome, Duration) {
        match &self.instrument {
            None => self.call_sync_plain(f, event, limit),
            Some(instrument) => {
                self.call_sync_instrumented(&**instrument, f, event, limit, sub, mode)
            }
        }
    }

    #[inline(never)]
    fn call_sync_instrumented(
        &self,
        instrument: &dyn Instrument,
        f: &SyncFn,
        event: &Event,
        limit: Option<Duration>,
        sub: &Subscription,
        mode: HandlerMode,
    ) -> (Outcome, Duration) {
        let mut result = None;
        instrument.deliver(event, &sub.handler_info(mode), &mut |report| {
            let (outcome, elapsed) = self.call_sync_plain(f, event, limit);
            report(&outcome.as_delivery());
            result = Some((outcome, elapsed));
        });
        result.unwrap_or_else(|| {
            (
                Outcome::Failed("the instrument did not run the handler".to_owned()),
                Duration::ZERO,
            )
        })
    }

    #[inline(always)]
    fn call_sync_plain(
        &self,
        f: &SyncFn,
        event: &Event,
        limit: Option<Duration>,
    ) -> (Outcome, Duration) {
        let timed = limit.is_some() || self.timed;
        let start = timed.then(Instant::now);
        let result = catch_unwind(AssertUnwindSafe(|| f(event)));
        let elapsed = start.map_or(Duration::ZERO, |s| s.elapsed());
        let outcome = match result {
            Ok(Ok(())) if limit.is_some_and(|l| elapsed > l) => Outcome::TimedOut(elapsed),
            Ok(Ok(())) => Outcome::Delivered,
            Ok(Err(e)) => Outcome::of_error(e),
            Err(panic) => Outcome::Panicked(panic_message(&*panic)),
        };
        (outcome, elapsed)
    }
}
