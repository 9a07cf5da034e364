//! The synchronization that the subscriber queue (`queue.rs`), the route
//! table (`routes.rs`) and the bus's gate (`gate.rs`) are built on, in one
//! place, so that a model build can swap it for a model checker's.
//!
//! A normal build re-exports std, crossbeam, futures and arc-swap: nothing
//! changes for production. A build with `--cfg nerve_loom` (`cargo xtask
//! loom`) re-exports [`loom`](https://docs.rs/loom)'s atomics, mutex,
//! condition variable and thread park/unpark instead, and the models in
//! `loom.rs` explore every interleaving of the queue's and the route table's
//! protocols (within a preemption bound).
//!
//! Three parts are not std types and use their own atomics, which loom
//! cannot see. Under `nerve_loom` each is replaced by a stand-in with the
//! same interface built on a loom mutex, that is, by its contract (each
//! operation atomic, linearizable), not by its implementation:
//!
//! * the ring, `crossbeam_queue::ArrayQueue`: a lock-free bounded MPMC queue,
//!   linearizable and tested upstream. What is checked is the protocol
//!   around it (the `state`/`accepted`/`parked` handshake, the slow side,
//!   eviction, close), where nerve's own bugs would be;
//! * the reader's waker slot, `futures::task::AtomicWaker`: its contract is
//!   that a `wake` concurrent with a `register` wakes the registered task,
//!   which the stand-in gives trivially. (loom's own `AtomicWaker` prints
//!   through `dbg!` on every call, hence a stand-in here too);
//! * the route table's snapshot, `arc_swap::ArcSwap`: a load sees either the
//!   old or the new table, never a mix.
//!
//! Thread park/unpark is loom's type but not loom's `park`: loom's `unpark`
//! makes the target runnable whatever it is blocked on, so a wake-up that
//! reaches a reader while it waits for the queue's lock (which std turns
//! into a token for its next `park`) lets it run without the lock, and loom
//! fails its own assertion ("expected to be able to acquire lock"). The
//! stand-in keeps std's contract, a token per thread, with a loom mutex and
//! condition variable, so a lost wake-up is still a thread blocked for good,
//! which loom reports as a deadlock.
//!
//! Left as they are, unmodelled: the per-snapshot topic cache (a `DashMap`
//! filled from the immutable snapshot it belongs to, so a race there can
//! only compute the same route twice), the reference counts of routes and
//! subscriptions (std `Arc`, as `std::task::Wake` needs), and the reader's
//! spinning and dozing before it parks (they only delay the park, and the
//! checker cannot model time): [`MODEL`] turns them off.
//!
//! The per-thread route memo is a `thread_local!` in both builds: loom's
//! `thread_local!` gives each modelled thread its own, so the memo is
//! modelled (see `routes.rs`).

#[cfg(not(nerve_loom))]
pub(crate) use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
#[cfg(not(nerve_loom))]
pub(crate) use std::sync::{Condvar, Mutex, MutexGuard};

#[cfg(nerve_loom)]
pub(crate) use loom::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
#[cfg(nerve_loom)]
pub(crate) use loom::sync::{Condvar, Mutex, MutexGuard};

/// Shared ownership for the models' threads: loom's `Arc` checks for leaks.
#[cfg(all(test, nerve_loom))]
pub(crate) use loom::sync::Arc;

pub(crate) use std::sync::atomic::Ordering;

/// The ring of a subscriber's queue (see the module docs).
#[cfg(not(nerve_loom))]
pub(crate) use crossbeam_queue::ArrayQueue as Ring;
#[cfg(nerve_loom)]
pub(crate) use model::Ring;

/// The slot holding a parked reader's waker (see the module docs).
#[cfg(not(nerve_loom))]
pub(crate) use futures::task::AtomicWaker;
#[cfg(nerve_loom)]
pub(crate) use model::AtomicWaker;

/// The route table's published snapshot (see the module docs).
#[cfg(not(nerve_loom))]
pub(crate) type Snapshot<T> = arc_swap::ArcSwap<T>;
/// What loading a [`Snapshot`] gives.
#[cfg(not(nerve_loom))]
pub(crate) type SnapshotGuard<T> = arc_swap::Guard<std::sync::Arc<T>>;
#[cfg(nerve_loom)]
pub(crate) use model::Snapshot;
/// What loading a [`Snapshot`] gives.
#[cfg(nerve_loom)]
pub(crate) type SnapshotGuard<T> = std::sync::Arc<T>;

/// What a `SeqCst` access between a store and a load of another atomic
/// gives (Dekker's pattern, as in `gate.rs`), for the model: loom treats
/// `SeqCst` accesses as `AcqRel` (tokio-rs/loom#180, "it will fail to
/// validate algorithms that correctly rely on SeqCst guarantees"), but
/// models `SeqCst` fences. A fence there orders no more than the `SeqCst`
/// accesses already do, so a normal build needs none and has none.
#[inline(always)]
pub(crate) fn seq_cst_point() {
    #[cfg(nerve_loom)]
    loom::sync::atomic::fence(Ordering::SeqCst);
}

/// Whether this is a model build: the reader then neither spins nor dozes
/// before it parks.
pub(crate) const MODEL: bool = cfg!(nerve_loom);

/// Thread handles, park and unpark: a queue's blocking reader parks its
/// thread, and a push unparks it.
pub(crate) mod thread {
    #[cfg(nerve_loom)]
    pub(crate) use super::model::{Thread, current, park};
    #[cfg(not(nerve_loom))]
    pub(crate) use std::thread::{Thread, current, park};
}

/// The stand-ins of a model build (see the module docs).
#[cfg(nerve_loom)]
mod model {
    use std::collections::VecDeque;
    use std::task::Waker;

    use loom::sync::Mutex;

    /// `crossbeam_queue::ArrayQueue`'s interface over a loom mutex.
    pub(crate) struct Ring<T> {
        items: Mutex<VecDeque<T>>,
        capacity: usize,
    }

    impl<T> Ring<T> {
        pub(crate) fn new(capacity: usize) -> Self {
            assert!(capacity > 0, "capacity must be non-zero");
            Self {
                items: Mutex::new(VecDeque::with_capacity(capacity)),
                capacity,
            }
        }

        fn items(&self) -> loom::sync::MutexGuard<'_, VecDeque<T>> {
            self.items
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        }

        pub(crate) fn push(&self, item: T) -> Result<(), T> {
            let mut items = self.items();
            if items.len() == self.capacity {
                return Err(item);
            }
            items.push_back(item);
            Ok(())
        }

        pub(crate) fn pop(&self) -> Option<T> {
            self.items().pop_front()
        }

        pub(crate) fn len(&self) -> usize {
            self.items().len()
        }

        pub(crate) fn is_empty(&self) -> bool {
            self.items().is_empty()
        }

        pub(crate) fn capacity(&self) -> usize {
            self.capacity
        }
    }

    /// `futures::task::AtomicWaker`'s interface over a loom mutex.
    pub(crate) struct AtomicWaker(Mutex<Option<Waker>>);

    impl AtomicWaker {
        pub(crate) fn new() -> Self {
            Self(Mutex::new(None))
        }

        fn slot(&self) -> loom::sync::MutexGuard<'_, Option<Waker>> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        }

        pub(crate) fn register(&self, waker: &Waker) {
            let mut slot = self.slot();
            if !slot.as_ref().is_some_and(|w| w.will_wake(waker)) {
                *slot = Some(waker.clone());
            }
        }

        pub(crate) fn take(&self) -> Option<Waker> {
            self.slot().take()
        }

        pub(crate) fn wake(&self) {
            if let Some(waker) = self.take() {
                waker.wake();
            }
        }
    }

    /// A thread's park token.
    struct Parker {
        token: Mutex<bool>,
        unparked: loom::sync::Condvar,
    }

    /// `std::thread::Thread`'s `unpark`, with std's token semantics.
    #[derive(Clone)]
    pub(crate) struct Thread(std::sync::Arc<Parker>);

    impl Thread {
        fn token(&self) -> loom::sync::MutexGuard<'_, bool> {
            self.0
                .token
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        }

        pub(crate) fn unpark(&self) {
            *self.token() = true;
            self.0.unparked.notify_one();
        }
    }

    loom::thread_local! {
        static CURRENT: Thread = Thread(std::sync::Arc::new(Parker {
            token: Mutex::new(false),
            unparked: loom::sync::Condvar::new(),
        }));
    }

    /// This modelled thread's handle.
    pub(crate) fn current() -> Thread {
        CURRENT.with(Thread::clone)
    }

    /// Blocks until this thread's token is available, then takes it.
    pub(crate) fn park() {
        let me = current();
        let mut token = me.token();
        while !*token {
            token =
                me.0.unparked
                    .wait(token)
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
        }
        *token = false;
    }

    /// `arc_swap::ArcSwap`'s interface over a loom mutex.
    pub(crate) struct Snapshot<T>(Mutex<std::sync::Arc<T>>);

    impl<T> Snapshot<T> {
        pub(crate) fn from_pointee(value: T) -> Self {
            Self(Mutex::new(std::sync::Arc::new(value)))
        }

        fn current(&self) -> loom::sync::MutexGuard<'_, std::sync::Arc<T>> {
            self.0
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
        }

        pub(crate) fn load(&self) -> std::sync::Arc<T> {
            self.current().clone()
        }

        pub(crate) fn swap(&self, value: std::sync::Arc<T>) -> std::sync::Arc<T> {
            std::mem::replace(&mut *self.current(), value)
        }
    }
}
