//! The synchronization primitives of the hand-off between the writer thread
//! and the renumbering thread ([`crate::shifter`]): std's in every build,
//! loom's when the crate is compiled with `--cfg nerve_loom`, so that the
//! models in `crate::loom` check the very code that ships.
//!
//! The writer's own channel (crossbeam) is not part of the hand-off: the
//! writer thread alone calls into the [`Shifter`](crate::shifter::Shifter),
//! so the models play the writer on loom's main thread.
//!
//! Time does not exist in a model: loom's `Condvar::wait_timeout` never
//! times out, and the [`Instant`] here never advances, so a renumbering
//! thread told to wait for a batch waits until it is woken. The models that
//! want the thread to take a pass at once give it a zero delay instead.

#[cfg(not(nerve_loom))]
pub(crate) use std::sync::{Arc, Condvar, Mutex, MutexGuard};
#[cfg(not(nerve_loom))]
pub(crate) use std::thread;
#[cfg(not(nerve_loom))]
pub(crate) use std::time::Instant;

#[cfg(nerve_loom)]
pub(crate) use frozen::Instant;
#[cfg(nerve_loom)]
pub(crate) use loom::sync::{Arc, Condvar, Mutex, MutexGuard};
#[cfg(nerve_loom)]
pub(crate) use loom::thread;

#[cfg(nerve_loom)]
mod frozen {
    use std::time::Duration;

    /// A clock that never advances: a model's outcome must depend on the
    /// schedule alone, not on how long an execution took.
    #[derive(Debug, Clone, Copy)]
    pub(crate) struct Instant;

    impl Instant {
        pub(crate) fn now() -> Self {
            Self
        }

        pub(crate) fn elapsed(self) -> Duration {
            Duration::ZERO
        }
    }
}
