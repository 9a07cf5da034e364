//! A count of accepted-but-unfinished deliveries that sync and async code can
//! wait on reaching zero.

use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

#[derive(Default)]
pub(crate) struct Pending {
    count: AtomicU64,
    lock: Mutex<()>,
    zero: Condvar,
    notify: Notify,
}

impl Pending {
    pub(crate) fn add(&self) {
        self.count.fetch_add(1, Ordering::AcqRel);
    }

    pub(crate) fn done(&self) {
        if self.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            // Taking the lock orders this wake-up after any blocking waiter's
            // check of the count, so no waiter can miss it.
            drop(self.lock.lock().unwrap_or_else(PoisonError::into_inner));
            self.zero.notify_all();
            self.notify.notify_waiters();
        }
    }

    pub(crate) fn get(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    /// Waits for zero; `false` if `timeout` passed first.
    pub(crate) fn wait_blocking(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        while self.get() > 0 {
            match deadline {
                None => {
                    guard = self
                        .zero
                        .wait(guard)
                        .unwrap_or_else(PoisonError::into_inner)
                }
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return false;
                    }
                    guard = self
                        .zero
                        .wait_timeout(guard, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0;
                }
            }
        }
        true
    }

    /// Waits for zero.
    pub(crate) async fn wait(&self) {
        loop {
            let mut notified = pin!(self.notify.notified());
            // Register before checking, so a `done` in between is not missed.
            notified.as_mut().enable();
            if self.get() == 0 {
                return;
            }
            notified.await;
        }
    }
}
