//! Loom models of the hand-off between the writer thread and the
//! renumbering thread ([`crate::shifter`]).
//!
//! Run by `cargo xtask loom`, that is
//! `RUSTFLAGS="--cfg nerve_loom" cargo test -p nerve-journal --lib --release loom_`,
//! with `LOOM_MAX_PREEMPTIONS` as the preemption bound (3 when unset, at
//! least 2).
//!
//! Each model runs the real [`Shifter`] (its `hand_over`, `quiesce`, `Drop`
//! and the renumbering thread's loop, passes and spare refills) over an
//! in-memory directory: each file is the list of its lines' `seq` numbers.
//! loom's main thread plays the writer thread, exactly as the writer calls
//! the shifter: append, rotate (`hand_over`, then link the spare), flush
//! (`quiesce`), close (drop). After every change to the directory, by either
//! thread, the directory is read as a reader reads it (backups from the
//! highest number down, then pending files by generation, then the active
//! file) and must give contiguous, increasing numbers ending with the last
//! line written: no line lost, duplicated or reordered at any instant.

use std::collections::BTreeMap;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::Fsync;
use crate::files::{Listing, Paths};
use crate::fs::{JournalFile, JournalFs};
use crate::journal::Shared;
use crate::shifter::{Files, MAX_DELAY, Shifter};
use crate::sync::{Arc, Mutex};

/// What the directory holds, under one lock (a rename is atomic).
#[derive(Debug, Default)]
struct Contents {
    files: BTreeMap<PathBuf, Vec<u64>>,
    /// The last `seq` the writer appended.
    written: u64,
    /// Renumbering renames still to fail.
    failing: usize,
}

/// The in-memory directory.
#[derive(Debug)]
struct Dir {
    paths: Paths,
    contents: Mutex<Contents>,
    /// Whether every line ever written must stay (no retention in play).
    lossless: bool,
    /// Held once more by every spare made and not yet dropped.
    spares: Arc<()>,
}

/// The directory as the renumbering thread sees it (loom's `Arc`, so that a
/// leaked handle fails the model).
#[derive(Debug, Clone)]
struct Fake(Arc<Dir>);

impl Dir {
    fn new(lossless: bool, failing: usize) -> Self {
        Self::with_backups(0, lossless, failing)
    }

    /// With `backups` files already numbered, one line each (`.backups`
    /// holds line 1, `.1` line `backups`), as recovery leaves them.
    fn with_backups(backups: usize, lossless: bool, failing: usize) -> Self {
        let paths = Paths::new(Path::new("/j/events.jsonl"));
        let mut files = BTreeMap::new();
        for k in 1..=backups {
            files.insert(paths.backup(k), vec![(backups + 1 - k) as u64]);
        }
        Self {
            paths,
            contents: Mutex::new(Contents {
                files,
                written: backups as u64,
                failing,
            }),
            lossless,
            spares: Arc::new(()),
        }
    }

    fn lock(&self) -> crate::sync::MutexGuard<'_, Contents> {
        self.contents.lock().unwrap()
    }

    fn listing(&self, c: &Contents) -> Listing {
        self.paths.listing_of(
            c.files
                .keys()
                .filter_map(|p| p.file_name().and_then(|n| n.to_str())),
        )
    }

    /// Every line, in the order a reader reads the files.
    fn read(&self, c: &Contents) -> Vec<u64> {
        let mut order = self.paths.oldest_first(&self.listing(c));
        order.push(self.paths.active().to_path_buf());
        order
            .iter()
            .filter_map(|p| c.files.get(p))
            .flatten()
            .copied()
            .collect()
    }

    /// The invariant at every instant.
    fn check(&self, c: &Contents) {
        let lines = self.read(c);
        assert!(
            lines.windows(2).all(|w| w[1] == w[0] + 1),
            "lines out of order, doubled or missing: {lines:?} in {:?}",
            c.files
        );
        if c.written > 0 {
            assert_eq!(lines.last(), Some(&c.written), "newest line gone: {c:?}");
        }
        if self.lossless {
            assert_eq!(lines.first().copied().unwrap_or(1), 1, "oldest lost: {c:?}");
        }
    }

    /// The writer appends line `seq` to the active file (creating it, as
    /// `open` does, if no spare was linked in).
    fn append(&self, seq: u64) {
        let mut c = self.lock();
        c.files
            .entry(self.paths.active().to_path_buf())
            .or_default()
            .push(seq);
        c.written = seq;
        self.check(&c);
    }

    /// The writer links a spare in as the new active file.
    fn link(&self, spare: Spare) {
        let mut c = self.lock();
        let old = c
            .files
            .insert(self.paths.active().to_path_buf(), Vec::new());
        assert!(old.is_none(), "a link replaced the active file");
        drop(spare);
        self.check(&c);
    }

    fn move_file(&self, from: &Path, to: &Path, renumbering: bool) -> io::Result<()> {
        let mut c = self.lock();
        if renumbering && c.failing > 0 {
            c.failing -= 1;
            return Err(io::Error::other("injected renumber failure"));
        }
        let lines = c
            .files
            .remove(from)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        let old = c.files.insert(to.to_path_buf(), lines);
        assert!(old.is_none(), "{from:?} renamed over {to:?}");
        self.check(&c);
        Ok(())
    }

    /// The backups, `1..`, each file's lines.
    fn backups(&self) -> Vec<Vec<u64>> {
        let c = self.lock();
        let listing = self.listing(&c);
        assert!(listing.pending.is_empty(), "still pending: {c:?}");
        listing
            .backups
            .iter()
            .map(|k| c.files[&self.paths.backup(*k)].clone())
            .collect()
    }

    fn lines(&self) -> Vec<u64> {
        self.read(&self.lock())
    }
}

/// A spare file: only its existence matters.
#[derive(Debug)]
struct Spare(#[allow(dead_code, reason = "held for the leak count")] Arc<()>);

impl JournalFs for Fake {
    fn open_append(&self, _: &Path) -> io::Result<Box<dyn JournalFile>> {
        Err(io::Error::from(io::ErrorKind::Unsupported))
    }
    fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.0.move_file(from, to, false)
    }
    fn renumber(&self, from: &Path, to: &Path) -> io::Result<()> {
        self.0.move_file(from, to, true)
    }
    fn remove(&self, path: &Path) -> io::Result<()> {
        let mut c = self.0.lock();
        c.files
            .remove(path)
            .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))?;
        self.0.check(&c);
        Ok(())
    }
    fn sync_dir(&self, _: &Path) -> io::Result<()> {
        Ok(())
    }
}

impl Files for Fake {
    type Spare = Spare;

    fn fs(&self) -> &dyn JournalFs {
        self
    }
    fn paths(&self) -> &Paths {
        &self.0.paths
    }
    fn hold_names(&self) -> io::Result<impl Sized + '_> {
        Ok(())
    }
    fn list(&self) -> io::Result<Listing> {
        Ok(self.0.listing(&self.0.lock()))
    }
    fn make_spares(&self, n: usize) -> Vec<Spare> {
        (0..n).map(|_| Spare(self.0.spares.clone())).collect()
    }
}

/// The writer thread's calls, in the writer's order.
struct Writer {
    dir: Arc<Dir>,
    shifter: Shifter<Fake>,
    next: u64,
}

impl Writer {
    /// `eager`: the renumbering thread takes a pass as soon as a rotation
    /// is pending (else it waits for a batch, which in a model only a
    /// flush or close ends).
    fn start(dir: &Arc<Dir>, max_files: usize, eager: bool) -> Self {
        let delay = if eager { Duration::ZERO } else { MAX_DELAY };
        let backups = dir.lock().files.len();
        let shifter = Shifter::spawn_with(
            Fake(dir.clone()),
            max_files,
            Fsync::Interval(MAX_DELAY),
            std::sync::Arc::new(Shared::default()),
            backups,
            delay,
        )
        .unwrap();
        Self {
            dir: dir.clone(),
            shifter,
            next: backups as u64 + 1,
        }
    }

    fn append(&mut self) {
        self.dir.append(self.next);
        self.next += 1;
    }

    /// `Writer::rotate` after its sync: hand over, link a spare if any.
    fn rotate(&mut self) {
        if let Some(spare) = self.shifter.hand_over().unwrap() {
            self.dir.link(spare);
        }
    }

    fn flush(&self) -> Result<(), String> {
        self.shifter.quiesce()
    }
}

/// The least bound these models run at, even in CI's `loom-ci` (bound 1):
/// a `quiesce` returning while a pass still runs is caught only from 2 on,
/// and bound 2 costs these models well under a second.
const MIN_PREEMPTIONS: usize = 2;

/// Runs `f` under loom with the environment's preemption bound (3 when
/// unset, never below [`MIN_PREEMPTIONS`]), and prints the executions
/// explored and the time taken.
fn model(name: &str, f: impl Fn() + Send + Sync + 'static) {
    let mut builder = loom::model::Builder::new();
    builder.preemption_bound = Some(builder.preemption_bound.unwrap_or(3).max(MIN_PREEMPTIONS));
    let bound = builder.preemption_bound;
    let runs = std::sync::Arc::new(AtomicUsize::new(0));
    let counted = runs.clone();
    let start = Instant::now();
    builder.check(move || {
        counted.fetch_add(1, Ordering::Relaxed);
        f();
    });
    println!(
        "{name}: {} interleavings in {:.2?} (preemption bound {bound:?})",
        runs.load(Ordering::Relaxed),
        start.elapsed()
    );
}

/// The writer keeps appending while the renumbering thread gives the
/// rotated file its name: every line stays readable, once and in order, at
/// every instant, and a flush finds the final names.
#[test]
fn loom_rotation_hand_off_while_the_writer_appends() {
    model("loom_rotation_hand_off_while_the_writer_appends", || {
        let dir = Arc::new(Dir::new(true, 0));
        let mut w = Writer::start(&dir, 4, true);
        w.append();
        w.rotate();
        w.append();
        w.append();
        assert_eq!(w.flush(), Ok(()));
        assert_eq!(dir.backups(), [vec![1]]);
        assert_eq!(dir.lines(), [1, 2, 3]);
        drop(w);
    });
}

/// Closing (dropping the shifter) right after a rotation, whether the pass
/// has not started, is running or is done: every line written is in a file
/// under its final name, the thread is joined, and no spare or handle
/// outlives it.
#[test]
fn loom_close_races_an_in_flight_hand_off() {
    model("loom_close_races_an_in_flight_hand_off", || {
        let dir = Arc::new(Dir::new(true, 0));
        let mut w = Writer::start(&dir, 4, true);
        w.append();
        w.rotate();
        w.append();
        drop(w);
        assert_eq!(dir.backups(), [vec![1]]);
        assert_eq!(dir.lines(), [1, 2]);
        assert_eq!(Arc::strong_count(&dir.spares), 1, "a spare leaked");
        assert_eq!(Arc::strong_count(&dir), 1, "the thread kept the files");
    });
}

/// The same close while the thread waits for a batch to fill: the close
/// wakes it, and it still gives the file its name before it exits.
#[test]
fn loom_close_wakes_a_thread_waiting_for_a_batch() {
    model("loom_close_wakes_a_thread_waiting_for_a_batch", || {
        let dir = Arc::new(Dir::new(true, 0));
        let mut w = Writer::start(&dir, 4, false);
        w.append();
        w.rotate();
        drop(w);
        assert_eq!(dir.backups(), [vec![1]]);
        assert_eq!(dir.lines(), [1]);
        assert_eq!(Arc::strong_count(&dir.spares), 1, "a spare leaked");
        assert_eq!(Arc::strong_count(&dir), 1, "the thread kept the files");
    });
}

/// A flush (`quiesce`, what `flush`, close and `clear` wait on) right after
/// a rotation, with the thread waiting for a batch: no lost wake-up (loom
/// reports a deadlock if the flush waited forever), and when it returns the
/// rotated file has its final name.
#[test]
fn loom_flush_races_rotation() {
    model("loom_flush_races_rotation", || {
        let dir = Arc::new(Dir::new(true, 0));
        let mut w = Writer::start(&dir, 4, false);
        w.append();
        w.rotate();
        w.append();
        assert_eq!(w.flush(), Ok(()));
        assert_eq!(dir.backups(), [vec![1]]);
        w.append();
        assert_eq!(w.flush(), Ok(()));
        assert_eq!(dir.lines(), [1, 2, 3]);
    });
}

/// A pass that fails part-way, racing the flush after the rotation: the
/// flush returns the failure whatever the order, nothing is lost or
/// reordered meanwhile, and the next flush retries (listing the directory)
/// and succeeds.
#[test]
fn loom_failed_pass_is_reported_by_the_flush_and_retried() {
    model(
        "loom_failed_pass_is_reported_by_the_flush_and_retried",
        || {
            let dir = Arc::new(Dir::new(true, 1));
            let mut w = Writer::start(&dir, 4, true);
            w.append();
            w.rotate();
            w.append();
            assert!(w.flush().is_err(), "the failed pass must be reported");
            assert_eq!(w.flush(), Ok(()));
            assert_eq!(dir.backups(), [vec![1]]);
            assert_eq!(dir.lines(), [1, 2]);
        },
    );
}

/// A second rotation handed over while the pass for the first may be
/// running, over two backups and with `max_files` 3, so that the passes
/// delete the oldest file, move a backup up and number pending files: the
/// files keep their order at every instant, only the oldest lines are ever
/// deleted, and a flush finds the final names.
#[test]
fn loom_second_rotation_before_the_first_finished() {
    model("loom_second_rotation_before_the_first_finished", || {
        let dir = Arc::new(Dir::with_backups(2, false, 0));
        let mut w = Writer::start(&dir, 3, true);
        w.append();
        w.rotate();
        w.append();
        w.rotate();
        w.append();
        assert_eq!(w.flush(), Ok(()));
        assert_eq!(dir.backups(), [vec![4], vec![3], vec![2]]);
        assert_eq!(dir.lines(), [2, 3, 4, 5]);
    });
}
