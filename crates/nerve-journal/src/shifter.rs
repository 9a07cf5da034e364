//! The renumbering thread: gives rotated files their final names off the
//! writer's path.
//!
//! A rotation on the writer thread is one rename, of the active file to a
//! pending name (`events.p<g>.jsonl`, `g` a generation growing with each
//! rotation). This thread then renames the backups up and the pending files
//! into `events.1.jsonl ..= events.N.jsonl`, deleting the oldest beyond
//! `max_files`. However many rotations are pending when it wakes, it makes
//! one pass (see [`files::renumber`]): the backups move once for all of them.

use std::io;
use std::sync::{Arc, Condvar, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use nerve_core::sink::{SinkErrorKind, SinkFault};

use crate::Fsync;
use crate::files::{self, Listing, Paths, RenameLock};
use crate::fs::JournalFs;
use crate::journal::Shared;
use crate::spare;

/// What the writer and the renumbering thread share, under one mutex.
#[derive(Debug, Default)]
struct State {
    /// Generations renamed by the writer and not yet taken by a pass.
    pending: Vec<u64>,
    /// The newest generation any pass has taken: pending files on disk up to
    /// it belong to the renumbering, newer ones may still be on their way.
    taken: u64,
    /// Backups on disk, `1..=backups`, when `repair` is false.
    backups: usize,
    /// A pass failed part-way: the next one lists the directory instead of
    /// trusting `backups`.
    repair: bool,
    /// A pass is running.
    running: bool,
    /// The thread sleeps on the condition variable (so a push must wake it).
    asleep: bool,
    /// Passes asked for by [`Shifter::quiesce`], and the last one finished.
    requested: u64,
    done: u64,
    /// The first failure since a `quiesce` last returned one.
    failure: Option<String>,
    stop: bool,
    /// Spare files ready for the writer's next rotations.
    spares: Vec<spare::Spare>,
}

impl State {
    /// Half the spares or more are gone: time to make more.
    fn spares_low(&self) -> bool {
        self.spares.len() <= SPARES / 2
    }
}

struct Signal {
    state: Mutex<State>,
    changed: Condvar,
}

/// The longest a rotated file waits for its final name while the journal is
/// not flushed (unless renumbering fails).
pub(crate) const MAX_DELAY: Duration = Duration::from_millis(100);

/// Pending rotations that start a pass at once: a pass renames every
/// backup, so waiting for `backups / 4` rotations (at least 4, so that a
/// pass and its wake-up are shared even with few backups) bounds the renames
/// to about 5 per rotation however fast rotations come, while `MAX_DELAY`
/// bounds how long names stay pending when they come slowly.
pub(crate) fn batch(backups: usize) -> usize {
    (backups / 4).max(4)
}

/// Spare files kept ready (see [`spare`]).
pub(crate) const SPARES: usize = 4;

impl Signal {
    fn wait_timeout<'a>(
        &self,
        guard: MutexGuard<'a, State>,
        timeout: Duration,
    ) -> MutexGuard<'a, State> {
        self.changed
            .wait_timeout(guard, timeout)
            .unwrap_or_else(PoisonError::into_inner)
            .0
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        self.changed
            .wait(guard)
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The writer's handle on the renumbering thread; stops and joins it when
/// dropped.
pub(crate) struct Shifter {
    sync: Arc<Signal>,
    thread: Option<JoinHandle<()>>,
}

/// The renumbering thread's own settings.
struct Worker {
    fs: Arc<dyn JournalFs>,
    paths: Paths,
    max_files: usize,
    fsync: Fsync,
    shared: Arc<Shared>,
    lock: RenameLock,
    sync: Arc<Signal>,
}

impl Shifter {
    /// Starts the thread. `backups` are present as `1..=backups`, with
    /// nothing pending (as recovery leaves them).
    pub(crate) fn spawn(
        fs: Arc<dyn JournalFs>,
        paths: Paths,
        max_files: usize,
        fsync: Fsync,
        shared: Arc<Shared>,
        backups: usize,
    ) -> io::Result<Self> {
        // The first spares now, so that even the first rotation finds one.
        let spares = spare::make_up_to(paths.dir(), SPARES);
        let sync = Arc::new(Signal {
            state: Mutex::new(State {
                backups,
                spares,
                ..State::default()
            }),
            changed: Condvar::new(),
        });
        let worker = Worker {
            lock: RenameLock::create(&paths)?,
            fs,
            paths,
            max_files,
            fsync,
            shared,
            sync: sync.clone(),
        };
        let thread = std::thread::Builder::new()
            .name("nerve-journal-renumber".into())
            .spawn(move || worker.run())?;
        Ok(Self {
            sync,
            thread: Some(thread),
        })
    }

    /// Hands over generation `g`, just renamed by the writer.
    pub(crate) fn push(&self, g: u64) {
        let mut state = self.sync.lock();
        state.pending.push(g);
        let n = state.pending.len();
        let wake = state.asleep && (n == 1 || n == batch(state.backups));
        drop(state);
        // Woken to start its clock, and when a batch is full; a thread
        // awake takes the rest with its next pass. So most rotations make
        // no wake-up call.
        if wake {
            self.sync.changed.notify_all();
        }
    }

    /// A spare file for the rotation under way, if one is ready: the
    /// writer links it in as the active file. Wakes the thread to make
    /// more once half are gone.
    pub(crate) fn take_spare(&self) -> Option<spare::Spare> {
        let mut state = self.sync.lock();
        let spare = state.spares.pop();
        let wake = state.asleep && state.spares_low();
        drop(state);
        if wake {
            self.sync.changed.notify_all();
        }
        spare
    }

    /// Waits until every rotation handed over so far has its final name
    /// (retrying a pass that failed before), and returns the first failure
    /// since the last call.
    pub(crate) fn quiesce(&self) -> Result<(), String> {
        let mut state = self.sync.lock();
        if !state.pending.is_empty() || state.repair || state.running {
            state.requested += 1;
            let ticket = state.requested;
            self.sync.changed.notify_all();
            while state.done < ticket && !state.stop {
                state = self.sync.wait(state);
            }
        }
        state.failure.take().map_or(Ok(()), Err)
    }

    /// With the thread idle (after [`quiesce`](Self::quiesce)), the writer
    /// removed every rotated file (`ok`), or failed part-way: then the next
    /// pass lists the directory.
    pub(crate) fn cleared(&self, ok: bool) {
        let mut state = self.sync.lock();
        state.backups = 0;
        state.repair = !ok;
    }
}

impl Drop for Shifter {
    fn drop(&mut self) {
        self.sync.lock().stop = true;
        self.sync.changed.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Worker {
    fn run(self) {
        let mut state = self.sync.lock();
        // When the oldest rotation still pending was first seen.
        let mut since: Option<Instant> = None;
        loop {
            state = self.make_spares(state);
            let asked = state.requested > state.done;
            if state.pending.is_empty() && !asked {
                if state.stop {
                    return;
                }
                since = None;
                state.asleep = true;
                state = self.sync.wait(state);
                state.asleep = false;
                continue;
            }
            if !asked && !state.stop && state.pending.len() < batch(state.backups) {
                // Too few to be worth a pass yet: wait for more, or for the
                // oldest to have waited `MAX_DELAY`.
                let first = *since.get_or_insert_with(Instant::now);
                let left = MAX_DELAY.saturating_sub(first.elapsed());
                if !left.is_zero() {
                    state.asleep = true;
                    state = self.sync.wait_timeout(state, left);
                    state.asleep = false;
                    continue;
                }
            }
            since = None;
            let ticket = state.requested;
            let mut pending = std::mem::take(&mut state.pending);
            pending.sort_unstable();
            if let Some(g) = pending.last() {
                state.taken = state.taken.max(*g);
            }
            let (repair, backups, taken) = (state.repair, state.backups, state.taken);
            state.running = true;
            drop(state);

            let result = self.pass(repair, backups, taken, pending);
            let failure = result.as_ref().err().map(|e| {
                let message = format!("renumbering rotated files failed: {e}");
                // Reported before a waiting flush is answered (as the writer
                // does), and without the lock: the bus runs
                // `system.journal_error` handlers on this thread.
                self.shared.counters.io_errors.inc();
                self.shared.report(SinkFault {
                    kind: SinkErrorKind::Io,
                    message: format!(
                        "journal {message}; the files keep their names and order, \
                         and the next rotation, flush or open retries"
                    ),
                    event: None,
                });
                message
            });

            state = self.sync.lock();
            state.running = false;
            state.done = state.done.max(ticket);
            match (result, failure) {
                (Ok(backups), _) => {
                    state.backups = backups;
                    state.repair = false;
                }
                (Err(_), message) => {
                    state.repair = true;
                    if state.failure.is_none() {
                        state.failure = message;
                    }
                }
            }
            self.sync.changed.notify_all();
        }
    }

    /// During a pass: tops the spares up once half are gone (a pass over
    /// many backups takes as long as many rotations).
    fn refill_spares(&self) {
        let state = self.sync.lock();
        if state.spares_low() {
            drop(self.make_spares(state));
        }
    }

    /// Tops the spare files up to [`SPARES`], without the lock while it
    /// makes them. A spare that cannot be made is not an error: the writer
    /// then creates the active file itself, and reports what fails there.
    fn make_spares<'a>(&'a self, mut state: MutexGuard<'a, State>) -> MutexGuard<'a, State> {
        if state.stop || state.spares.len() >= SPARES {
            return state;
        }
        let wanted = SPARES - state.spares.len();
        drop(state);
        let made = spare::make_up_to(self.paths.dir(), wanted);
        state = self.sync.lock();
        state.spares.extend(made);
        state
    }

    /// One pass: the backups move up once for all of `pending`. After a
    /// failure the directory is listed instead (pending files up to `taken`
    /// are this thread's; newer ones are left for the next pass).
    fn pass(
        &self,
        repair: bool,
        backups: usize,
        taken: u64,
        pending: Vec<u64>,
    ) -> io::Result<usize> {
        let _held = self.lock.exclusive()?;
        let listing = if repair {
            let mut found = self.paths.list()?;
            found.pending.retain(|g| *g <= taken);
            found
        } else {
            Listing {
                backups: (1..=backups).collect(),
                pending,
            }
        };
        let done = files::renumber_with(
            &*self.fs,
            &self.paths,
            &listing,
            self.max_files,
            &mut || self.refill_spares(),
        )?;
        self.shared.counters.renumber_passes.inc();
        self.shared.counters.renumber_renames.add(done.renames);
        if self.fsync != Fsync::Never {
            self.fs.sync_dir(self.paths.dir())?;
        }
        Ok(done.backups)
    }
}
