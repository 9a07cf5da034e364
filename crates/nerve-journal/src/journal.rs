//! The journal handle, its builder and its policies.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::thread::{JoinHandle, Thread};
use std::time::{Duration, Instant};

use crossbeam_channel::{SendTimeoutError, Sender, TrySendError};
use nerve_core::Event;
use nerve_core::query::HistoryQuery;
use nerve_core::sink::{EventSink, FaultReporter, SinkError, SinkErrorKind, SinkFault};

use crate::files::{self, Paths, Recovery};
use crate::follow::Follow;
use crate::fs::{JournalFs, StdFs};
use crate::marker::{self, Marker, Owed};
use crate::reader::JournalReader;
use crate::shifter::{Disk, Shifter};
use crate::writer::{Msg, Writer, await_reply};

/// The redaction hook: the event as it is to be written.
pub(crate) type Redact = nerve_core::sink::Redaction;

/// When written events are made durable (`fdatasync`).
///
/// | policy | after a process crash | after power loss or a kernel crash |
/// |--------|-----------------------|------------------------------------|
/// | `Never` | every event the writer thread wrote (it writes each batch as soon as it has it, so all but the last few microseconds' events) | whatever the OS had flushed: possibly nothing since the last rotation |
/// | `Interval(d)` | as `Never` | everything up to the last sync, at most `d` (plus one batch) old |
/// | `Always` | every event whose `emit` returned | every event whose `emit` returned |
///
/// With `Always`, `record` (so `emit`) returns only once the batch holding
/// the event is synced; concurrent emitters share one sync (group commit).
/// Under every policy, `record_and_wait` (what the bus calls for its durable,
/// by default terminal, events) returns once the event and everything before
/// it is written to the file, so it survives the process's exit or SIGKILL;
/// it syncs only under `Always`.
/// In every policy a crash never corrupts what precedes it: at most the last
/// line is torn, and reopening moves it to the `.torn` file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Fsync {
    /// Never sync; leave it to the OS. The fastest.
    #[default]
    Never,
    /// Sync at most this long after a write (group commit).
    Interval(Duration),
    /// Sync before `record` returns (group commit across emitters).
    Always,
}

/// What `record` does when the journal's queue is full.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum JournalOverflow {
    /// Wait for room: lossless, and the emitter slows to the disk's pace.
    /// (Except on the journal's own writer thread, where the bus runs the
    /// handlers of the faults it reports: waiting there for the writer would
    /// never end, so a full queue refuses as `DropNewest` does.)
    #[default]
    Block,
    /// Refuse the event: `record` fails with [`SinkErrorKind::Full`], the
    /// bus counts it, publishes `system.journal_error` and still delivers
    /// the event in memory. Counted in [`JournalStats::dropped`]. The writer
    /// writes a marker line in its place (`"$nerve_error":"dropped"`, or a
    /// `system.journal_gap` range once more than 1,024 wait), so its `seq`
    /// still appears in the journal. `record_and_wait` (a durable event)
    /// waits for room instead, up to the
    /// [`drop_timeout`](JournalBuilder::drop_timeout).
    DropNewest,
}

/// The journal could not be opened.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum JournalError {
    /// Another journal (in this or another process) has these files open.
    #[error("journal {path} is locked by another writer")]
    Locked {
        /// The active file's path.
        path: PathBuf,
    },
    /// A setting is out of range.
    #[error("invalid journal setting: {0}")]
    Invalid(&'static str),
    /// Opening, locking or repairing the files failed.
    #[error("could not open journal {path}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The I/O error.
        #[source]
        source: std::io::Error,
    },
}

/// Counters of one journal, from [`Journal::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct JournalStats {
    /// Events written to the active file (handed to the OS).
    pub written: u64,
    /// Bytes written.
    pub bytes: u64,
    /// Batches written (one write call each, between rotations).
    pub batches: u64,
    /// Syncs of the active file done: by the policy (`Interval`, `Always`),
    /// on `flush` and close, and at each rotation (before the full file is
    /// handed over) unless the policy is `Never`. Directory syncs are not
    /// counted.
    pub syncs: u64,
    /// Rotations done.
    pub rotations: u64,
    /// Time the writer thread spent rotating, in nanoseconds (syncing and
    /// closing the full file, one rename, opening the new one): the part of
    /// rotation emitters can wait for.
    pub rotation_nanos: u64,
    /// Renumbering passes done by the background thread that gives rotated
    /// files their final names (one pass serves every rotation pending when
    /// it starts).
    pub renumber_passes: u64,
    /// Renames done by those passes.
    pub renumber_renames: u64,
    /// Rotations that created the new active file on the writer thread
    /// because no spare file (made ahead by the renumbering thread) was
    /// ready; the others linked a spare in.
    pub rotations_created: u64,
    /// Events refused because the queue was full (`JournalOverflow::DropNewest`).
    pub dropped: u64,
    /// Events not written because of an I/O error, or written to a file
    /// that was removed while in use (`rm -r` of its directory); each also
    /// reported.
    pub lost: u64,
    /// I/O failures (write, flush, sync, rename, remove, open), and files
    /// found removed while in use with events lost in them.
    pub io_errors: u64,
    /// Events written with their payload replaced by an error marker.
    pub serialize_errors: u64,
    /// Replayed events not recorded again (see [`replay()`](crate::replay())).
    pub skipped_replayed: u64,
    /// Marker lines written in place of events that could not be written at
    /// all: refused by a full queue (`"$nerve_error":"dropped"`) or lost to a
    /// failed write (`"io"`). Payloads replaced by a marker are counted in
    /// `serialize_errors`.
    pub markers: u64,
    /// Range marker lines (`system.journal_gap`) written.
    pub gaps: u64,
    /// Events those range lines account for (the sum of their `count`).
    pub gap_events: u64,
}

#[derive(Default)]
pub(crate) struct Counter(AtomicU64);

impl Counter {
    pub(crate) fn inc(&self) {
        self.add(1);
    }
    pub(crate) fn add(&self, n: u64) {
        self.0.fetch_add(n, Ordering::Relaxed);
    }
    fn get(&self) -> u64 {
        self.0.load(Ordering::Relaxed)
    }
}

#[derive(Default)]
pub(crate) struct Counters {
    pub(crate) written: Counter,
    pub(crate) bytes: Counter,
    pub(crate) batches: Counter,
    pub(crate) syncs: Counter,
    pub(crate) rotations: Counter,
    pub(crate) rotation_nanos: Counter,
    pub(crate) renumber_passes: Counter,
    pub(crate) renumber_renames: Counter,
    pub(crate) rotations_created: Counter,
    pub(crate) dropped: Counter,
    pub(crate) lost: Counter,
    pub(crate) io_errors: Counter,
    pub(crate) serialize_errors: Counter,
    pub(crate) skipped_replayed: Counter,
    pub(crate) markers: Counter,
    pub(crate) gaps: Counter,
    pub(crate) gap_events: Counter,
}

/// What the writer thread and the handles share.
#[derive(Default)]
pub(crate) struct Shared {
    pub(crate) counters: Counters,
    reporter: RwLock<Option<FaultReporter>>,
    /// Events a full queue refused, for the writer to write as markers.
    dropped: Mutex<Owed>,
    /// Whether `dropped` holds anything: the writer checks it every batch.
    has_dropped: AtomicBool,
}

impl Shared {
    /// Keeps `marker` aside for the writer.
    fn owe(&self, marker: Marker) {
        self.dropped
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(marker);
        self.has_dropped.store(true, Ordering::Release);
    }

    /// The events kept aside since the last call, if any.
    pub(crate) fn take_dropped(&self) -> Option<Owed> {
        if !self.has_dropped.swap(false, Ordering::AcqRel) {
            return None;
        }
        let owed =
            std::mem::take(&mut *self.dropped.lock().unwrap_or_else(PoisonError::into_inner));
        (!owed.is_empty()).then_some(owed)
    }

    pub(crate) fn report(&self, fault: SinkFault) {
        tracing::warn!(kind = fault.kind.as_str(), message = %fault.message, "journal fault");
        let reporter = self
            .reporter
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let Some(r) = reporter {
            r.report(fault);
        }
    }
}

/// Builds a [`Journal`]. Made by [`Journal::builder`].
///
/// | setting | default |
/// |---------|---------|
/// | [`max_bytes`](Self::max_bytes) | 10 MiB |
/// | [`max_files`](Self::max_files) | 5 backups |
/// | [`fsync`](Self::fsync) | [`Fsync::Interval`] of 200 ms |
/// | [`capacity`](Self::capacity) | 8,192 queued events |
/// | [`overflow`](Self::overflow) | [`JournalOverflow::Block`] |
/// | [`drop_timeout`](Self::drop_timeout) | 5 s |
/// | [`redact_with`](Self::redact_with) | none |
/// | [`record_replayed`](Self::record_replayed) | `false` |
#[must_use]
pub struct JournalBuilder {
    path: PathBuf,
    max_bytes: u64,
    max_files: usize,
    fsync: Fsync,
    capacity: usize,
    overflow: JournalOverflow,
    drop_timeout: Duration,
    redact: Option<Redact>,
    record_replayed: bool,
    fs: Arc<dyn JournalFs>,
}

impl std::fmt::Debug for JournalBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JournalBuilder")
            .field("path", &self.path)
            .field("max_bytes", &self.max_bytes)
            .field("max_files", &self.max_files)
            .field("fsync", &self.fsync)
            .field("capacity", &self.capacity)
            .field("overflow", &self.overflow)
            .finish_non_exhaustive()
    }
}

impl JournalBuilder {
    /// Rotate before the active file would exceed `bytes` (default 10 MiB).
    /// A single record larger than this is written alone in its own file.
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = bytes;
        self
    }

    /// Keep at most `n` backups (default 5); the oldest is deleted. With 0,
    /// rotation deletes the active file.
    ///
    /// The writer's cost per rotation does not depend on `n`: it renames the
    /// full file to a pending name, and a background thread renumbers the
    /// backups (one pass per batch of pending rotations). Once the journal is
    /// quiescent (after `flush`, `close` or `clear`) there are at most `n`
    /// backups, `events.1.jsonl` the newest; in between, the rotations not
    /// yet renumbered (a batch of about `max(n / 4, 4)`, or those of the last
    /// 100 ms) can add to them (`docs/journal-format.md`).
    pub fn max_files(mut self, n: usize) -> Self {
        self.max_files = n;
        self
    }

    /// When writes are made durable (default `Interval(200 ms)`).
    pub fn fsync(mut self, fsync: Fsync) -> Self {
        self.fsync = fsync;
        self
    }

    /// How many events may wait for the writer thread (default 8,192).
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// What `record` does when the queue is full (default `Block`).
    pub fn overflow(mut self, overflow: JournalOverflow) -> Self {
        self.overflow = overflow;
        self
    }

    /// How long dropping the last handle (or a [`FlushGuard`]) waits for the
    /// writer to finish (default 5 s).
    pub fn drop_timeout(mut self, timeout: Duration) -> Self {
        self.drop_timeout = timeout;
        self
    }

    /// Rewrites every event just before it is written, on the writer thread
    /// (so it costs emitters nothing): the hook for PII redaction. The
    /// `data`, `source` and `correlation_id` of the event `f` returns are
    /// written in place of the original's (what a redactor rewrites); every
    /// other field (ids, type, time, run, lane, seq) is written from the
    /// original, so a line always says truly which event it records. Only the
    /// line on disk changes; handlers see the original. If `f` panics, the
    /// event is written with its payload replaced by an error marker
    /// (`{"$nerve_error":"redact",...}`), never unredacted.
    pub fn redact_with(mut self, f: impl Fn(&Event) -> Event + Send + Sync + 'static) -> Self {
        self.redact = Some(Arc::new(f));
        self
    }

    /// Redacts every event with `redactor` before it is written (feature
    /// `redact`): [`redact_with`](Self::redact_with) with
    /// [`Redactor::redact_event`](nerve_core::redact::Redactor::redact_event).
    #[cfg(feature = "redact")]
    pub fn redactor(self, redactor: nerve_core::redact::Redactor) -> Self {
        self.redact_with(move |e| redactor.redact_event(e))
    }

    /// Whether events re-emitted by [`replay()`](crate::replay()) are recorded again
    /// (default `false`, so replaying a journal into a bus that writes to the
    /// same journal does not duplicate it). Not recorded, their numbers are
    /// accounted for by `system.journal_gap` range lines (reason
    /// `replayed`), so every `seq` still appears in the journal.
    pub fn record_replayed(mut self, on: bool) -> Self {
        self.record_replayed = on;
        self
    }

    /// The file operations the writer uses: for fault-injection tests.
    #[doc(hidden)]
    pub fn file_system(mut self, fs: impl JournalFs) -> Self {
        self.fs = Arc::new(fs);
        self
    }

    /// Opens the journal: takes the lock, repairs what a crash left, and
    /// starts the writer thread.
    ///
    /// # Errors
    ///
    /// [`JournalError::Locked`] if another writer holds the journal,
    /// [`JournalError::Invalid`] for a zero `max_bytes` or `capacity`,
    /// [`JournalError::Io`] if the files cannot be opened or repaired.
    pub fn build(self) -> Result<Journal, JournalError> {
        if self.max_bytes == 0 {
            return Err(JournalError::Invalid("max_bytes must be at least 1"));
        }
        if self.capacity == 0 {
            return Err(JournalError::Invalid("capacity must be at least 1"));
        }
        let paths = Paths::new(&self.path);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| JournalError::Io { path, source }
        };
        std::fs::create_dir_all(paths.dir()).map_err(io(paths.dir()))?;
        let lock = take_lock(&paths)?;
        let (recovery, len) = files::recover(&paths, self.max_files).map_err(io(&self.path))?;
        let backups = paths.list().map_err(io(paths.dir()))?.backups.len();
        let last_seq = files::last_seq(&paths).map_err(io(&self.path))?;
        if recovery.repaired_anything() {
            tracing::warn!(?recovery, path = %self.path.display(), "journal repaired after a crash");
        }
        let shared = Arc::new(Shared::default());
        let (tx, rx) = crossbeam_channel::bounded(self.capacity);
        let shifter = Disk::new(self.fs.clone(), paths.clone())
            .and_then(|disk| {
                Shifter::spawn(disk, self.max_files, self.fsync, shared.clone(), backups)
            })
            .map_err(io(&paths.rename_lock()))?;
        let writer = Writer::new(
            self.fs,
            paths.clone(),
            self.max_bytes,
            self.max_files,
            self.fsync,
            self.redact.clone(),
            shared.clone(),
            len,
            shifter,
        );
        let thread = std::thread::Builder::new()
            .name("nerve-journal".into())
            .spawn(move || writer.run(&rx))
            .map_err(io(&self.path))?;
        Ok(Journal {
            inner: Arc::new(Inner {
                writer: thread.thread().clone(),
                dropped_message: format!(
                    "journal queue full ({} events); event not written",
                    self.capacity
                )
                .into(),
                last_seq,
                tx,
                paths,
                fsync: self.fsync,
                overflow: self.overflow,
                drop_timeout: self.drop_timeout,
                record_replayed: self.record_replayed,
                closed: AtomicBool::new(false),
                shared,
                thread: Mutex::new(Some(thread)),
                recovery,
                lock: Mutex::new(Some(lock)),
                redact: self.redact,
            }),
        })
    }
}

/// Takes the advisory lock on `paths`' lock file (`events.jsonl.lock`), held
/// while the returned file is open: one writer per file, in any process.
/// The lock taken again in a directory made again after it was removed
/// with its files in use (the journal's, the dead letter file's). `None`
/// when the lock file is still there: the writer's own (only its data file
/// was removed), or one another writer took first, which `take_lock` in a
/// new opener reports.
pub(crate) fn retake_lock(paths: &Paths) -> Option<Result<File, JournalError>> {
    (!paths.lock().exists()).then(|| take_lock(paths))
}

pub(crate) fn take_lock(paths: &Paths) -> Result<File, JournalError> {
    let io = |source| JournalError::Io {
        path: paths.lock(),
        source,
    };
    let lock = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(paths.lock())
        .map_err(io)?;
    match fs4::FileExt::try_lock(&lock) {
        Ok(()) => Ok(lock),
        Err(fs4::TryLockError::WouldBlock) => Err(JournalError::Locked {
            path: paths.active().to_path_buf(),
        }),
        Err(fs4::TryLockError::Error(e)) => Err(io(e)),
    }
}

/// An append-only JSONL audit log of every event a bus accepts, rotated by
/// size, written by a background thread. See the [crate docs](crate).
///
/// A cheap handle: clones share the journal. Give one to the bus
/// (`Bus::builder().journal(journal.clone())`) and keep one to read it back.
/// When the last handle is dropped, the journal is flushed and closed (waiting
/// at most the [`drop_timeout`](JournalBuilder::drop_timeout)).
#[derive(Clone)]
pub struct Journal {
    inner: Arc<Inner>,
}

struct Inner {
    tx: Sender<Msg>,
    /// The writer thread, unparked by a `record_and_wait` so that it does not
    /// finish a linger sleep first.
    writer: Thread,
    dropped_message: Arc<str>,
    /// The highest `seq` on disk when the journal was opened.
    last_seq: Option<u64>,
    paths: Paths,
    fsync: Fsync,
    overflow: JournalOverflow,
    drop_timeout: Duration,
    record_replayed: bool,
    closed: AtomicBool,
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
    recovery: Recovery,
    /// The advisory lock, held until the journal is closed (its threads
    /// joined), not until the last handle goes: a process may reopen the
    /// journal as soon as `close` (or the bus's shutdown) returned.
    lock: Mutex<Option<File>>,
    /// The writer's redaction hook, for the bus's other ways out
    /// (`EventSink::redaction`).
    redact: Option<Redact>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal")
            .field("path", &self.inner.paths.active())
            .field("fsync", &self.inner.fsync)
            .finish_non_exhaustive()
    }
}

impl Journal {
    /// Starts building a journal whose active file is `path`.
    pub fn builder(path: impl AsRef<Path>) -> JournalBuilder {
        JournalBuilder {
            path: path.as_ref().to_path_buf(),
            max_bytes: 10 << 20,
            max_files: 5,
            fsync: Fsync::Interval(Duration::from_millis(200)),
            capacity: 8192,
            overflow: JournalOverflow::Block,
            drop_timeout: Duration::from_secs(5),
            redact: None,
            record_replayed: false,
            fs: Arc::new(StdFs),
        }
    }

    /// The active file's path.
    pub fn path(&self) -> &Path {
        self.inner.paths.active()
    }

    /// What opening the journal repaired.
    pub fn recovery(&self) -> &Recovery {
        &self.inner.recovery
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> JournalStats {
        let c = &self.inner.shared.counters;
        JournalStats {
            written: c.written.get(),
            bytes: c.bytes.get(),
            batches: c.batches.get(),
            syncs: c.syncs.get(),
            rotations: c.rotations.get(),
            rotation_nanos: c.rotation_nanos.get(),
            renumber_passes: c.renumber_passes.get(),
            renumber_renames: c.renumber_renames.get(),
            rotations_created: c.rotations_created.get(),
            dropped: c.dropped.get(),
            lost: c.lost.get(),
            io_errors: c.io_errors.get(),
            serialize_errors: c.serialize_errors.get(),
            skipped_replayed: c.skipped_replayed.get(),
            markers: c.markers.get(),
            gaps: c.gaps.get(),
            gap_events: c.gap_events.get(),
        }
    }

    /// A reader over everything written so far (call [`flush`](EventSink::flush)
    /// first to include what is still queued), oldest file first.
    ///
    /// # Errors
    ///
    /// A [`ReadError`](crate::ReadError) if the files cannot be opened.
    pub fn reader(&self) -> Result<JournalReader, crate::ReadError> {
        JournalReader::open(self.path())
    }

    /// Follows the active file from its current end: yields each event
    /// written from now on, across rotations. See [`Follow`].
    ///
    /// # Errors
    ///
    /// A [`ReadError`](crate::ReadError) if the active file cannot be opened.
    pub fn follow(&self) -> Result<Follow, crate::ReadError> {
        Follow::from_end(self.path())
    }

    /// Removes the active file and every backup (rotated files still waiting
    /// for their number included, once the renumbering in progress is done);
    /// the journal carries on with an empty active file. Events queued before
    /// the call are written (and removed) first.
    ///
    /// # Errors
    ///
    /// A [`SinkError`] if a file could not be removed, or the writer did not
    /// answer within the drop timeout.
    pub fn clear(&self) -> Result<(), SinkError> {
        self.request(Msg::Clear, self.inner.drop_timeout)
    }

    /// A guard that flushes the journal when dropped, waiting at most the
    /// [`drop_timeout`](JournalBuilder::drop_timeout). Keep it in `main`.
    pub fn flush_guard(&self) -> FlushGuard {
        FlushGuard {
            journal: self.clone(),
        }
    }

    fn request(
        &self,
        msg: impl FnOnce(Sender<Result<(), String>>) -> Msg,
        timeout: Duration,
    ) -> Result<(), SinkError> {
        let (reply, answer) = crossbeam_channel::bounded(1);
        let deadline = std::time::Instant::now() + timeout;
        match self.inner.tx.send_timeout(msg(reply), timeout) {
            Ok(()) => {}
            Err(SendTimeoutError::Timeout(_)) => return Err(timed_out(timeout)),
            Err(SendTimeoutError::Disconnected(_)) => return Err(closed()),
        }
        // As for `record_and_wait`: the caller waits, so no linger sleep
        // should finish first.
        self.inner.writer.unpark();
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match await_reply(&answer, left) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(SinkError::new(SinkErrorKind::Io, message)),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => Err(timed_out(timeout)),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Err(closed()),
        }
    }
}

fn timed_out(timeout: Duration) -> SinkError {
    SinkError::new(
        SinkErrorKind::Timeout,
        format!("journal writer did not finish within {timeout:?}"),
    )
}

fn closed() -> SinkError {
    SinkError::new(SinkErrorKind::Closed, "journal closed")
}

impl EventSink for Journal {
    fn record(&self, event: &Event) -> Result<(), SinkError> {
        let inner = &*self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(closed());
        }
        if !inner.record_replayed && crate::replay::is_replayed(event) {
            return inner.skip_replayed(event);
        }
        if inner.fsync == Fsync::Always && inner.on_writer_thread() {
            return inner.hand_off_from_writer(event);
        }
        let (ack, answer) = if inner.fsync == Fsync::Always {
            let (tx, rx) = crossbeam_channel::bounded(1);
            (Some(tx), Some(rx))
        } else {
            (None, None)
        };
        let msg = Msg::Event(event.clone(), ack);
        match inner.tx.try_send(msg) {
            Ok(()) => {}
            Err(TrySendError::Full(msg))
                if inner.overflow == JournalOverflow::Block && !inner.on_writer_thread() =>
            {
                inner.tx.send(msg).map_err(|_| closed())?;
            }
            Err(TrySendError::Full(msg)) => return Err(inner.refuse(msg)),
            Err(TrySendError::Disconnected(_)) => return Err(closed()),
        }
        match answer.map(|rx| rx.recv()) {
            None | Some(Ok(Ok(()))) => Ok(()),
            Some(Ok(Err(message))) => Err(SinkError::new(SinkErrorKind::Io, message)),
            Some(Err(_)) => Err(closed()),
        }
    }

    /// Hands the event to the writer and waits for its acknowledgement that
    /// the batch holding it (so everything recorded before it too) is
    /// written to the file, or under [`Fsync::Always`] synced. No sync is
    /// done for it under the other policies. Waits for room in a full queue
    /// whatever the [`JournalOverflow`]; bounded by the
    /// [`drop_timeout`](JournalBuilder::drop_timeout). A replayed event not
    /// recorded again returns at once (its original is on disk).
    ///
    /// Called on the journal's own writer thread (a handler of a fault the
    /// journal reported, which the bus runs there), it cannot wait for
    /// itself: the event is queued without waiting, after the batch being
    /// written, or refused as by `DropNewest` if the queue is full.
    ///
    /// # Errors
    ///
    /// [`SinkErrorKind::Timeout`] if the writer did not take or confirm it in
    /// time (an event it never took is written later as a `dropped` marker),
    /// [`SinkErrorKind::Io`] if its batch could not be written,
    /// [`SinkErrorKind::Closed`] after `close`.
    fn record_and_wait(&self, event: &Event) -> Result<(), SinkError> {
        let inner = &*self.inner;
        if inner.closed.load(Ordering::Acquire) {
            return Err(closed());
        }
        if !inner.record_replayed && crate::replay::is_replayed(event) {
            return inner.skip_replayed(event);
        }
        if inner.on_writer_thread() {
            return inner.hand_off_from_writer(event);
        }
        let timeout = inner.drop_timeout;
        let deadline = Instant::now() + timeout;
        let (ack, answer) = crossbeam_channel::bounded(1);
        match inner
            .tx
            .send_timeout(Msg::Event(event.clone(), Some(ack)), timeout)
        {
            Ok(()) => {}
            Err(SendTimeoutError::Timeout(msg)) => {
                inner.shared.counters.dropped.inc();
                if let Msg::Event(event, _) = msg {
                    let message = format!(
                        "journal writer did not take the event within {timeout:?}; event not written"
                    );
                    inner.owe_dropped(event, message.into());
                }
                return Err(timed_out(timeout));
            }
            Err(SendTimeoutError::Disconnected(_)) => return Err(closed()),
        }
        // A lingering writer is parked in short sleeps: wake it now, rather
        // than after the sleep, which timer slack makes longer than asked
        // (docs/benchmarks.md, "Durable terminal events").
        inner.writer.unpark();
        let left = deadline.saturating_duration_since(Instant::now());
        match await_reply(&answer, left) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(SinkError::new(SinkErrorKind::Io, message)),
            Err(crossbeam_channel::RecvTimeoutError::Timeout) => Err(timed_out(timeout)),
            Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Err(closed()),
        }
    }

    /// The highest `seq` on disk when the journal was opened (after
    /// recovery): the largest among the last 64 records of the newest
    /// non-empty file, a `system.journal_gap` line counting with its
    /// `to_seq`. `None` for a new or empty journal.
    fn last_seq(&self) -> Option<u64> {
        self.inner.last_seq
    }

    /// Writes everything queued so far and, unless the policy is
    /// [`Fsync::Never`], syncs it; then waits until every rotated file has
    /// its final name (`events.1.jsonl` ...). Fails with the first I/O
    /// error since the last flush, the background renumbering's included.
    fn flush(&self, timeout: Duration) -> Result<(), SinkError> {
        self.request(Msg::Flush, timeout)
    }

    /// Flushes as [`flush`](EventSink::flush) does (rotated files get their
    /// final names first), then stops the writer and renumbering threads
    /// and releases the lock.
    fn close(&self, timeout: Duration) -> Result<(), SinkError> {
        self.inner.close(timeout)
    }

    fn query(&self, query: &HistoryQuery) -> Result<Vec<Event>, SinkError> {
        let reader = self
            .reader()
            .map_err(|e| SinkError::with_source(SinkErrorKind::Io, e.to_string(), e))?;
        reader
            .query(query)
            .map_err(|e| SinkError::with_source(SinkErrorKind::Io, e.to_string(), e))
    }

    fn attach(&self, reporter: FaultReporter) {
        let recovery = &self.inner.recovery;
        if recovery.torn_bytes > 0 {
            reporter.report(SinkFault {
                kind: SinkErrorKind::Io,
                message: format!(
                    "journal {} recovered from a crash: a torn last line of {} bytes was moved to {}",
                    self.path().display(),
                    recovery.torn_bytes,
                    self.inner.paths.torn().display()
                ),
                event: None,
            });
        }
        *self
            .inner
            .shared
            .reporter
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(reporter);
    }

    /// The hook given to [`JournalBuilder::redact_with`] (or `redactor`,
    /// feature `redact`), for the bus's other ways out of the process: a
    /// NATS bridge on the bus redacts its exports with it.
    fn redaction(&self) -> Option<nerve_core::sink::Redaction> {
        self.inner.redact.clone()
    }
}

impl Inner {
    /// Whether this is the journal's writer thread, which runs the bus's
    /// handlers of the faults it reports: there, nothing may wait for the
    /// writer.
    fn on_writer_thread(&self) -> bool {
        std::thread::current().id() == self.writer.id()
    }

    /// Queues an event from the writer thread without waiting: written after
    /// the batch under way, or refused if the queue is full.
    fn hand_off_from_writer(&self, event: &Event) -> Result<(), SinkError> {
        match self.tx.try_send(Msg::Event(event.clone(), None)) {
            Ok(()) => Ok(()),
            Err(TrySendError::Full(msg)) => Err(self.refuse(msg)),
            Err(TrySendError::Disconnected(_)) => Err(closed()),
        }
    }

    /// Refuses an event the full queue has no room for: counted, kept aside
    /// for its `dropped` marker.
    fn refuse(&self, msg: Msg) -> SinkError {
        self.shared.counters.dropped.inc();
        if let Msg::Event(event, _) = msg {
            self.owe_dropped(event, self.dropped_message.clone());
        }
        SinkError::new(
            SinkErrorKind::Full,
            "journal queue full; event not recorded",
        )
    }

    /// Keeps a refused event aside; the writer writes its `dropped` marker.
    fn owe_dropped(&self, event: Event, message: Arc<str>) {
        self.shared.owe(Marker {
            event,
            reason: marker::DROPPED,
            message,
        });
    }

    /// A replayed event not recorded again: its number goes to the writer,
    /// which accounts for it in a `replayed` range line. Sent whatever the
    /// overflow policy (replays are not a hot path, and the range must not
    /// miss a number).
    fn skip_replayed(&self, event: &Event) -> Result<(), SinkError> {
        self.shared.counters.skipped_replayed.inc();
        self.tx
            .send(Msg::Skipped(event.seq()))
            .map_err(|_| closed())
    }

    fn close(&self, timeout: Duration) -> Result<(), SinkError> {
        if self.closed.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let (reply, answer) = crossbeam_channel::bounded(1);
        let result = match self.tx.send_timeout(Msg::Close(reply), timeout) {
            Ok(()) => {
                self.writer.unpark();
                match answer.recv_timeout(timeout) {
                    Ok(Ok(())) => Ok(()),
                    Ok(Err(message)) => Err(SinkError::new(SinkErrorKind::Io, message)),
                    Err(crossbeam_channel::RecvTimeoutError::Timeout) => Err(timed_out(timeout)),
                    Err(crossbeam_channel::RecvTimeoutError::Disconnected) => Ok(()),
                }
            }
            Err(SendTimeoutError::Timeout(_)) => Err(timed_out(timeout)),
            Err(SendTimeoutError::Disconnected(_)) => Ok(()),
        };
        if result.is_ok() {
            let thread = self
                .thread
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(t) = thread {
                let _ = t.join();
            }
            // Both threads are done with the files: let the next writer in.
            drop(
                self.lock
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .take(),
            );
        }
        result
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(e) = self.close(self.drop_timeout) {
            tracing::warn!(error = %e, "journal not closed cleanly");
        }
    }
}

/// Flushes its journal when dropped, waiting at most the journal's
/// [`drop_timeout`](JournalBuilder::drop_timeout). Made by
/// [`Journal::flush_guard`].
#[must_use = "the journal is flushed when the guard is dropped"]
#[derive(Debug)]
pub struct FlushGuard {
    journal: Journal,
}

impl Drop for FlushGuard {
    fn drop(&mut self) {
        let timeout = self.journal.inner.drop_timeout;
        if let Err(e) = self.journal.flush(timeout) {
            if e.kind() != SinkErrorKind::Closed {
                tracing::warn!(error = %e, "journal not flushed on drop");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn zero_settings_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.jsonl");
        assert!(matches!(
            Journal::builder(&p).max_bytes(0).build(),
            Err(JournalError::Invalid(_))
        ));
        assert!(matches!(
            Journal::builder(&p).capacity(0).build(),
            Err(JournalError::Invalid(_))
        ));
    }

    #[test]
    fn a_second_writer_in_the_same_process_is_locked_out() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.jsonl");
        let first = Journal::builder(&p).build().unwrap();
        assert!(matches!(
            Journal::builder(&p).build(),
            Err(JournalError::Locked { .. })
        ));
        drop(first);
        Journal::builder(&p).build().unwrap();
    }

    #[test]
    fn close_is_idempotent_and_later_records_fail() {
        let dir = tempfile::tempdir().unwrap();
        let j = Journal::builder(dir.path().join("e.jsonl"))
            .build()
            .unwrap();
        j.record(&Event::builder("a.b").build().unwrap()).unwrap();
        j.close(Duration::from_secs(5)).unwrap();
        j.close(Duration::from_secs(5)).unwrap();
        let err = j
            .record(&Event::builder("a.b").build().unwrap())
            .unwrap_err();
        assert_eq!(err.kind(), SinkErrorKind::Closed);
        assert_eq!(j.stats().written, 1);
    }

    #[test]
    fn a_closed_journal_can_be_reopened_while_handles_remain() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("e.jsonl");
        let first = Journal::builder(&p).build().unwrap();
        let kept = first.clone();
        first.close(Duration::from_secs(5)).unwrap();
        let second = Journal::builder(&p).build().unwrap();
        assert!(matches!(
            Journal::builder(&p).build(),
            Err(JournalError::Locked { .. })
        ));
        drop((kept, second));
    }
}
