//! The renumbering thread: gives rotated files their final names off the
//! writer's path.
//!
//! A rotation on the writer thread is one rename, of the active file to a
//! pending name (`events.p<g>.jsonl`, `g` a generation growing with each
//! rotation). This thread then renames the backups up and the pending files
//! into `events.1.jsonl ..= events.N.jsonl`, deleting the oldest beyond
//! `max_files`. However many rotations are pending when it wakes, it makes
//! one pass (see [`files::renumber`]): the backups move once for all of them.
//!
//! The thread touches the files through [`Files`]: the journal's directory
//! ([`Disk`]) in every build, an in-memory one in the loom models
//! (`crate::loom`), which so check this protocol code itself. Its locks,
//! condition variable and thread come from [`crate::sync`].

use std::io;
use std::sync::PoisonError;
use std::time::Duration;

use nerve_core::sink::{SinkErrorKind, SinkFault};

use crate::Fsync;
use crate::files::{self, Listing, Paths, RenameLock};
use crate::fs::JournalFs;
use crate::journal::Shared;
use crate::spare;
use crate::sync::thread::{self, JoinHandle};
use crate::sync::{Arc, Condvar, Instant, Mutex, MutexGuard};

/// What the renumbering thread does to the files, and what a rotation
/// hands over: the journal's directory in production ([`Disk`]), an
/// in-memory directory in the loom models.
pub(crate) trait Files: Send + Sync + 'static {
    /// A file made ahead for a rotation's new active file.
    type Spare: Send + 'static;
    /// The renames and removals (the same seam the tests inject faults at).
    fn fs(&self) -> &dyn JournalFs;
    fn paths(&self) -> &Paths;
    /// Held for a pass, so that readers see the names stand still.
    fn hold_names(&self) -> io::Result<impl Sized + '_>;
    /// The rotated files present (after a failed pass).
    fn list(&self) -> io::Result<Listing>;
    /// Up to `n` spares; fewer (or none) is not an error.
    fn make_spares(&self, n: usize) -> Vec<Self::Spare>;
}

/// The journal's own directory.
pub(crate) struct Disk {
    fs: std::sync::Arc<dyn JournalFs>,
    paths: Paths,
    /// The rename lock; replaced when its file was removed (see
    /// `hold_names`). Only the renumbering thread takes it: the mutex is
    /// for the replacement, never contended. `std`'s, not
    /// [`crate::sync`]'s: the loom models use their own [`Files`].
    lock: std::sync::Mutex<std::sync::Arc<RenameLock>>,
}

impl Disk {
    /// Creates the rename lock file if missing.
    pub(crate) fn new(fs: std::sync::Arc<dyn JournalFs>, paths: Paths) -> io::Result<Self> {
        Ok(Self {
            lock: std::sync::Mutex::new(std::sync::Arc::new(RenameLock::create(&paths)?)),
            fs,
            paths,
        })
    }
}

impl Files for Disk {
    type Spare = spare::Spare;

    fn fs(&self) -> &dyn JournalFs {
        &*self.fs
    }

    fn paths(&self) -> &Paths {
        &self.paths
    }

    /// The rename lock, made again first if the journal's directory was
    /// removed with it: readers of the directory made again (the writer's
    /// `check_removed`) look for it by name. If it cannot be made (the
    /// directory is not back yet), the old one serves this pass.
    fn hold_names(&self) -> io::Result<impl Sized + '_> {
        let lock = {
            let mut current = self.lock.lock().unwrap_or_else(PoisonError::into_inner);
            if current.is_removed() {
                if let Ok(fresh) = RenameLock::create(&self.paths) {
                    *current = std::sync::Arc::new(fresh);
                }
            }
            std::sync::Arc::clone(&current)
        };
        lock.exclusive_shared()
    }

    fn list(&self) -> io::Result<Listing> {
        self.paths.list()
    }

    fn make_spares(&self, n: usize) -> Vec<Self::Spare> {
        spare::make_up_to(self.paths.dir(), n)
    }
}

/// What the writer and the renumbering thread share, under one mutex.
#[derive(Debug)]
struct State<S> {
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
    spares: Vec<S>,
}

impl<S> State<S> {
    fn new(backups: usize, spares: Vec<S>) -> Self {
        Self {
            pending: Vec::new(),
            taken: 0,
            backups,
            repair: false,
            running: false,
            asleep: false,
            requested: 0,
            done: 0,
            failure: None,
            stop: false,
            spares,
        }
    }

    /// Half the spares or more are gone: time to make more.
    fn spares_low(&self) -> bool {
        self.spares.len() <= SPARES / 2
    }
}

struct Signal<S> {
    state: Mutex<State<S>>,
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

impl<S> Signal<S> {
    fn wait_timeout<'a>(
        &self,
        guard: MutexGuard<'a, State<S>>,
        timeout: Duration,
    ) -> MutexGuard<'a, State<S>> {
        self.changed
            .wait_timeout(guard, timeout)
            .unwrap_or_else(PoisonError::into_inner)
            .0
    }

    fn lock(&self) -> MutexGuard<'_, State<S>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn wait<'a>(&self, guard: MutexGuard<'a, State<S>>) -> MutexGuard<'a, State<S>> {
        self.changed
            .wait(guard)
            .unwrap_or_else(PoisonError::into_inner)
    }
}

/// The writer's handle on the renumbering thread; stops and joins it when
/// dropped.
pub(crate) struct Shifter<F: Files = Disk> {
    files: Arc<F>,
    sync: Arc<Signal<F::Spare>>,
    thread: Option<JoinHandle<()>>,
    /// The generation the next rotated file gets (`events.p<g>.jsonl`).
    next_gen: u64,
}

/// The renumbering thread's own settings.
struct Worker<F: Files> {
    files: Arc<F>,
    max_files: usize,
    fsync: Fsync,
    /// How long the oldest pending rotation may wait for a batch to fill.
    max_delay: Duration,
    shared: std::sync::Arc<Shared>,
    sync: Arc<Signal<F::Spare>>,
}

impl<F: Files> Shifter<F> {
    /// Starts the thread. `backups` are present as `1..=backups`, with
    /// nothing pending (as recovery leaves them).
    pub(crate) fn spawn(
        files: F,
        max_files: usize,
        fsync: Fsync,
        shared: std::sync::Arc<Shared>,
        backups: usize,
    ) -> io::Result<Self> {
        Self::spawn_with(files, max_files, fsync, shared, backups, MAX_DELAY)
    }

    /// [`spawn`](Self::spawn), with rotations waiting at most `max_delay`
    /// for a batch (the models take `ZERO`: a pass as soon as one is there).
    pub(crate) fn spawn_with(
        files: F,
        max_files: usize,
        fsync: Fsync,
        shared: std::sync::Arc<Shared>,
        backups: usize,
        max_delay: Duration,
    ) -> io::Result<Self> {
        // The first spares now, so that even the first rotation finds one.
        let spares = files.make_spares(SPARES);
        let sync = Arc::new(Signal {
            state: Mutex::new(State::new(backups, spares)),
            changed: Condvar::new(),
        });
        let files = Arc::new(files);
        let worker = Worker {
            files: files.clone(),
            max_files,
            fsync,
            max_delay,
            shared,
            sync: sync.clone(),
        };
        let thread = thread::Builder::new()
            .name("nerve-journal-renumber".into())
            .spawn(move || worker.run())?;
        Ok(Self {
            files,
            sync,
            thread: Some(thread),
            next_gen: 1,
        })
    }

    /// The writer's side of a rotation, after it closed the full active
    /// file: renames it to the next pending name (`events.p<g>.jsonl`),
    /// hands it to this thread, and returns a spare for the new active file
    /// if one is ready. A failed rename hands over nothing (the active file
    /// keeps its name).
    pub(crate) fn hand_over(&mut self) -> io::Result<Option<F::Spare>> {
        let g = self.next_gen;
        let paths = self.files.paths();
        self.files.fs().rename(paths.active(), &paths.pending(g))?;
        self.next_gen += 1;
        self.push(g);
        Ok(self.take_spare())
    }

    /// Hands over generation `g`, just renamed by the writer.
    fn push(&self, g: u64) {
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
    fn take_spare(&self) -> Option<F::Spare> {
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

impl<F: Files> Drop for Shifter<F> {
    fn drop(&mut self) {
        self.sync.lock().stop = true;
        self.sync.changed.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl<F: Files> Worker<F> {
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
                let left = self.max_delay.saturating_sub(first.elapsed());
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
    fn make_spares<'a>(
        &'a self,
        mut state: MutexGuard<'a, State<F::Spare>>,
    ) -> MutexGuard<'a, State<F::Spare>> {
        if state.stop || state.spares.len() >= SPARES {
            return state;
        }
        let wanted = SPARES - state.spares.len();
        drop(state);
        let made = self.files.make_spares(wanted);
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
        let _held = self.files.hold_names()?;
        let listing = if repair {
            let mut found = self.files.list()?;
            found.pending.retain(|g| *g <= taken);
            found
        } else {
            Listing {
                backups: (1..=backups).collect(),
                pending,
            }
        };
        let done = files::renumber_with(
            self.files.fs(),
            self.files.paths(),
            &listing,
            self.max_files,
            &mut || self.refill_spares(),
        )?;
        self.shared.counters.renumber_passes.inc();
        self.shared.counters.renumber_renames.add(done.renames);
        if self.fsync != Fsync::Never {
            self.files.fs().sync_dir(self.files.paths().dir())?;
        }
        Ok(done.backups)
    }
}
