//! The ledger of alerts on their way to the sinks: which are still open,
//! so that a terminal event or a flush can wait for those accepted before
//! it, from a plain thread or from async code.

use std::collections::BTreeMap;
use std::pin::pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::Notify;

use super::delivery::Job;

/// Open alerts by ticket, numbered in the order they were accepted.
pub(super) struct Ledger {
    open: Mutex<Open>,
    /// Woken on every settle, for blocking waits.
    settled: Condvar,
    /// Woken on every settle, for async waits.
    notify: Notify,
    /// `open.jobs.len()`, readable without the lock: the terminal wait's
    /// fast path when nothing is on its way.
    pending: AtomicU64,
}

#[derive(Default)]
struct Open {
    /// The last ticket issued.
    last: u64,
    jobs: BTreeMap<u64, Arc<Job>>,
    /// Open jobs a terminal event already waited for in vain, and recorded
    /// as dead letters: a flush still waits for them, terminal events no
    /// longer do (each item of a run would wait out a dead sink again).
    late: BTreeMap<u64, Arc<Job>>,
}

/// Which open jobs a wait is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Waiting {
    /// Every open job: a flush.
    All,
    /// Jobs not yet recorded as late: a terminal event.
    OnTime,
}

impl Open {
    /// Whether every ticket up to `upto` is settled, for `waiting`.
    fn settled(&self, upto: u64, waiting: Waiting) -> bool {
        let before = |jobs: &BTreeMap<u64, Arc<Job>>| {
            jobs.first_key_value()
                .is_some_and(|(ticket, _)| *ticket <= upto)
        };
        !before(&self.jobs) && (waiting == Waiting::OnTime || !before(&self.late))
    }

    fn unsettled(&self, upto: u64) -> Vec<Arc<Job>> {
        self.jobs
            .range(..=upto)
            .map(|(_, job)| job.clone())
            .collect()
    }
}

impl Ledger {
    pub(super) fn new() -> Self {
        Self {
            open: Mutex::new(Open::default()),
            settled: Condvar::new(),
            notify: Notify::new(),
            pending: AtomicU64::new(0),
        }
    }

    fn lock(&self) -> MutexGuard<'_, Open> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Issues the next ticket to the job `make` builds, and records it
    /// open.
    pub(super) fn open(&self, make: impl FnOnce(u64) -> Job) -> Arc<Job> {
        let mut open = self.lock();
        open.last += 1;
        let ticket = open.last;
        let job = Arc::new(make(ticket));
        open.jobs.insert(ticket, job.clone());
        self.pending.fetch_add(1, Ordering::AcqRel);
        job
    }

    /// Records `ticket` settled (delivered, failed or dropped) and wakes the
    /// waiters.
    pub(super) fn settle(&self, ticket: u64) {
        let removed = {
            let mut open = self.lock();
            open.jobs.remove(&ticket).is_some() || open.late.remove(&ticket).is_some()
        };
        if removed {
            self.pending.fetch_sub(1, Ordering::AcqRel);
        }
        self.settled.notify_all();
        self.notify.notify_waiters();
    }

    /// Records `jobs` as late: terminal events no longer wait for them.
    pub(super) fn mark_late(&self, jobs: &[Arc<Job>]) {
        let mut open = self.lock();
        for job in jobs {
            if let Some(job) = open.jobs.remove(&job.ticket) {
                open.late.insert(job.ticket, job);
            }
        }
    }

    /// Alerts open now.
    pub(super) fn pending(&self) -> u64 {
        self.pending.load(Ordering::Acquire)
    }

    /// The last ticket issued: waiting up to it waits for every alert
    /// accepted so far.
    pub(super) fn mark(&self) -> u64 {
        self.lock().last
    }

    /// Blocks the thread until every ticket up to `upto` is settled (for
    /// `waiting`), at most `timeout`; on timeout, returns the jobs still
    /// open and not yet late.
    pub(super) fn wait_blocking(
        &self,
        upto: u64,
        timeout: Duration,
        waiting: Waiting,
    ) -> Result<(), Vec<Arc<Job>>> {
        let deadline = Instant::now().checked_add(timeout);
        let mut open = self.lock();
        loop {
            if open.settled(upto, waiting) {
                return Ok(());
            }
            let left = match deadline {
                Some(deadline) => deadline.saturating_duration_since(Instant::now()),
                None => Duration::MAX,
            };
            if left.is_zero() {
                return Err(open.unsettled(upto));
            }
            open = self
                .settled
                .wait_timeout(open, left)
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// Waits until every ticket up to `upto` is settled, late ones too, at
    /// most `timeout` (a flush); on timeout, returns the jobs still open and
    /// not yet late.
    pub(super) async fn wait(&self, upto: u64, timeout: Duration) -> Result<(), Vec<Arc<Job>>> {
        let settled = async {
            loop {
                // Registered before the check, so a settle between the check
                // and the await still wakes it.
                let mut notified = pin!(self.notify.notified());
                notified.as_mut().enable();
                if self.lock().settled(upto, Waiting::All) {
                    return;
                }
                notified.await;
            }
        };
        match tokio::time::timeout(timeout, settled).await {
            Ok(()) => Ok(()),
            Err(_) => Err(self.lock().unsettled(upto)),
        }
    }
}
