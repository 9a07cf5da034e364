//! The bus's door: what makes "stops accepting events" a clean cut.
//!
//! An emit takes a [`Pass`] before anything else and gives it back once its
//! event is recorded (the journal and the history have it). Shutting down
//! closes the door, then waits until every pass taken before is given
//! back. So every event the bus accepted is recorded before the shutdown
//! goes on: before `Bus::shutdown_with`'s last event, which the journal
//! therefore ends with, and before the journal is flushed and closed. An
//! emit that finds the door closed is refused (`EmitError::Closed`) and
//! leaves no trace.
//!
//! Taking a pass adds one to a counter and then reads the closed flag;
//! closing sets the flag and then reads the counters. Both sides are
//! `SeqCst` (Dekker's pattern), so either the emit sees the door closed or
//! the shutdown sees its pass; `loom.rs` checks it (with the fences of
//! [`seq_cst_point`], as loom does not model `SeqCst` accesses). The counters are
//! striped by thread, so that emitters on different threads do not write
//! one cache line (a `RwLock`'s readers all write its one state word):
//! two uncontended atomic adds per emit.

use std::cell::Cell;
use std::time::{Duration, Instant};

use crossbeam_utils::CachePadded;

use crate::counter::thread_number;
use crate::sync::{AtomicBool, AtomicUsize, Ordering, seq_cst_point};

/// Stripes of the pass counters: as many as a machine's emitting threads
/// are likely to be, so that they rarely share one.
const STRIPES: usize = 8;

/// The door of one bus.
pub(crate) struct Gate {
    closed: AtomicBool,
    /// Passes out, per stripe of threads.
    inside: [CachePadded<AtomicUsize>; STRIPES],
}

/// An emit's pass through an open [`Gate`], given back when dropped.
#[must_use = "the pass is given back when dropped"]
pub(crate) struct Pass<'a>(&'a AtomicUsize);

impl Drop for Pass<'_> {
    #[inline]
    fn drop(&mut self) {
        // Release: what the emit did with its pass (the journal's queue has
        // its event) happens before the shutdown that sees it given back.
        self.0.fetch_sub(1, Ordering::Release);
    }
}

thread_local! {
    /// This thread's stripe, once known: a `const` thread local without a
    /// destructor is a plain load, where [`thread_number`]'s (which gives
    /// its number back when the thread ends) first checks its state.
    static STRIPE: Cell<u8> = const { Cell::new(u8::MAX) };
}

/// This thread's stripe of the pass counters.
#[inline]
fn stripe() -> usize {
    STRIPE.with(|s| match s.get() {
        u8::MAX => {
            #[allow(clippy::cast_possible_truncation)] // Less than `STRIPES`.
            let n = (thread_number() % STRIPES) as u8;
            s.set(n);
            usize::from(n)
        }
        n => usize::from(n),
    })
}

impl Gate {
    pub(crate) fn new() -> Self {
        Self {
            closed: AtomicBool::new(false),
            inside: std::array::from_fn(|_| CachePadded::new(AtomicUsize::new(0))),
        }
    }

    /// A pass, or `None` if the gate is closed.
    #[inline]
    pub(crate) fn enter(&self) -> Option<Pass<'_>> {
        let inside = &self.inside[stripe()];
        inside.fetch_add(1, Ordering::SeqCst);
        seq_cst_point();
        if self.closed.load(Ordering::SeqCst) {
            inside.fetch_sub(1, Ordering::Release);
            return None;
        }
        Some(Pass(inside))
    }

    /// Closes the gate; `false` if it was closed already.
    pub(crate) fn close(&self) -> bool {
        let was_open = !self.closed.swap(true, Ordering::SeqCst);
        seq_cst_point();
        was_open
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Whether no pass is out. Once the gate is closed, a pass taken
    /// before stays counted until it is given back (a pass refused after
    /// shows for an instant only), so `true` then means every emit the bus
    /// accepted has recorded its event.
    pub(crate) fn is_empty(&self) -> bool {
        self.inside.iter().all(|n| n.load(Ordering::SeqCst) == 0)
    }

    /// Waits until no pass is out, at most `timeout`: whether none is.
    ///
    /// A pass is held only while an event is accepted and recorded, never
    /// across an await, so this waits for other threads' emits to finish
    /// their journal write. Spins first, then yields, then dozes: a
    /// condition variable would cost every emit a notification.
    pub(crate) fn wait_empty(&self, timeout: Duration) -> bool {
        let start = Instant::now();
        let mut round = 0u32;
        while !self.is_empty() {
            if start.elapsed() >= timeout {
                return false;
            }
            pause(round, std::thread::sleep);
            round = round.saturating_add(1);
        }
        true
    }

    /// [`wait_empty`](Self::wait_empty) for an async caller: it dozes with
    /// the runtime's timer rather than blocking its thread.
    pub(crate) async fn wait_empty_async(&self, timeout: Duration) -> bool {
        let start = Instant::now();
        let mut round = 0u32;
        while !self.is_empty() {
            if start.elapsed() >= timeout {
                return false;
            }
            if round < SPINS + YIELDS {
                pause(round, |_| {});
            } else {
                tokio::time::sleep(DOZE).await;
            }
            round = round.saturating_add(1);
        }
        true
    }
}

const SPINS: u32 = 64;
const YIELDS: u32 = 64;
const DOZE: Duration = Duration::from_micros(100);

/// The `round`th pause of a wait: a spin, a yield, or a doze by `doze`.
fn pause(round: u32, doze: impl FnOnce(Duration)) {
    if round < SPINS {
        std::hint::spin_loop();
    } else if round < SPINS + YIELDS {
        std::thread::yield_now();
    } else {
        doze(DOZE);
    }
}

#[cfg(all(test, not(nerve_loom)))]
mod tests {
    use super::*;

    #[test]
    fn a_closed_gate_refuses_and_counts_nothing() {
        let gate = Gate::new();
        assert!(gate.close());
        assert!(!gate.close(), "closed once");
        assert!(gate.enter().is_none());
        assert!(gate.is_empty());
    }

    #[test]
    fn closing_waits_for_the_passes_out() {
        let gate = std::sync::Arc::new(Gate::new());
        let (took, taken) = std::sync::mpsc::channel();
        let (give, given) = std::sync::mpsc::channel::<()>();
        let holder = {
            let gate = gate.clone();
            std::thread::spawn(move || {
                let pass = gate.enter().expect("open");
                took.send(()).unwrap();
                given.recv().unwrap();
                drop(pass);
            })
        };
        taken.recv().unwrap();
        assert!(gate.close());
        assert!(!gate.is_empty(), "the pass taken before is out");
        assert!(!gate.wait_empty(Duration::from_millis(1)), "not yet back");
        give.send(()).unwrap();
        assert!(gate.wait_empty(Duration::from_secs(60)));
        holder.join().unwrap();
    }
}
