//! A count of accepted-but-unfinished deliveries that sync and async code can
//! wait on reaching zero, and of those dropped before they ran.

use std::pin::pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Condvar, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

#[derive(Default)]
pub(crate) struct Pending {
    count: AtomicU64,
    lock: Mutex<()>,
    zero: Condvar,
    notify: Notify,
    /// Emitters waiting for the count to fall below the bus's `max_pending`.
    below_waiters: AtomicUsize,
    below: Condvar,
    /// Deliveries dropped unfinished (shutdown, lost runtime).
    abandoned: AtomicU64,
    /// Threads in `wait_blocking`: without any, reaching zero wakes no one
    /// (a condvar's notify is a system call even when nobody waits).
    zero_waiters: AtomicUsize,
    /// Tasks in `wait`: without any, reaching zero takes no lock.
    async_waiters: AtomicUsize,
}

impl Pending {
    pub(crate) fn add(&self) {
        self.count.fetch_add(1, Ordering::AcqRel);
    }

    /// Counts a delivery dropped before it finished; `done` follows.
    pub(crate) fn abandon(&self) {
        self.abandoned.fetch_add(1, Ordering::Relaxed);
    }

    /// Deliveries abandoned since the last `reset_abandoned`.
    pub(crate) fn abandoned(&self) -> u64 {
        self.abandoned.load(Ordering::Relaxed)
    }

    pub(crate) fn reset_abandoned(&self) {
        self.abandoned.store(0, Ordering::Relaxed);
    }

    pub(crate) fn done(&self) {
        // SeqCst on both sides (here, and in `wait_below`): a waiter either
        // sees the new count or is seen here and woken.
        let before = self.count.fetch_sub(1, Ordering::SeqCst);
        if self.below_waiters.load(Ordering::SeqCst) > 0 {
            drop(self.lock.lock().unwrap_or_else(PoisonError::into_inner));
            self.below.notify_all();
        }
        if before == 1 {
            // Taking the lock orders this wake-up after any blocking waiter's
            // check of the count, so no waiter can miss it.
            if self.zero_waiters.load(Ordering::SeqCst) > 0 {
                drop(self.lock.lock().unwrap_or_else(PoisonError::into_inner));
                self.zero.notify_all();
            }
            if self.async_waiters.load(Ordering::SeqCst) > 0 {
                self.notify.notify_waiters();
            }
        }
    }

    pub(crate) fn get(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }

    /// Waits until fewer than `max` are pending; `false` if `deadline`
    /// passed first.
    pub(crate) fn wait_below(&self, max: u64, deadline: Option<Instant>) -> bool {
        self.below_waiters.fetch_add(1, Ordering::SeqCst);
        let mut guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        let ok = loop {
            if self.count.load(Ordering::SeqCst) < max {
                break true;
            }
            guard = match deadline {
                None => self
                    .below
                    .wait(guard)
                    .unwrap_or_else(PoisonError::into_inner),
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        break false;
                    }
                    self.below
                        .wait_timeout(guard, left)
                        .unwrap_or_else(PoisonError::into_inner)
                        .0
                }
            };
        };
        drop(guard);
        self.below_waiters.fetch_sub(1, Ordering::AcqRel);
        ok
    }

    /// Waits for zero; `false` if `timeout` passed first.
    pub(crate) fn wait_blocking(&self, timeout: Option<Duration>) -> bool {
        // SeqCst, as in `done`: either `done` sees this waiter, or this
        // waiter sees the count it left.
        self.zero_waiters.fetch_add(1, Ordering::SeqCst);
        let reached = self.wait_zero(timeout);
        self.zero_waiters.fetch_sub(1, Ordering::AcqRel);
        reached
    }

    fn wait_zero(&self, timeout: Option<Duration>) -> bool {
        let deadline = timeout.map(|t| Instant::now() + t);
        let mut guard = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
        while self.count.load(Ordering::SeqCst) > 0 {
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
        /// Counts the waiting task while it waits, however the wait ends.
        struct Waiting<'a>(&'a AtomicUsize);
        impl Drop for Waiting<'_> {
            fn drop(&mut self) {
                self.0.fetch_sub(1, Ordering::AcqRel);
            }
        }
        // SeqCst, as in `done`: either `done` sees this task, or this task
        // sees the count it left.
        self.async_waiters.fetch_add(1, Ordering::SeqCst);
        let _waiting = Waiting(&self.async_waiters);
        loop {
            let mut notified = pin!(self.notify.notified());
            // Register before checking, so a `done` in between is not missed.
            notified.as_mut().enable();
            if self.count.load(Ordering::SeqCst) == 0 {
                return;
            }
            notified.await;
        }
    }
}
