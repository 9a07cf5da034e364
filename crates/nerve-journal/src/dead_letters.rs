//! The dead letter file: a [`DeadLetterStore`] on the journal's machinery.
//!
//! One JSONL file of operations (`put`, `remove`, `clear`), appended by a
//! writer thread, under the journal's lock, [`Fsync`] policies, quarantine of
//! what a crash tore, and compaction. The format is specified on
//! [`DeadLetterJournal`] and in `docs/journal-format.md` ("The dead letter
//! file").

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, SendTimeoutError, Sender};
use nerve_core::dead_letter::{DeadLetter, DeadLetterStore, DeadLetterStoreError};
use serde::{Deserialize, Serialize};

use crate::files::{self, Paths};
use crate::fs::{JournalFile, JournalFs, StdFs};
use crate::journal::{Fsync, JournalError, retake_lock, take_lock};
use crate::writer::{Ack, await_reply};

/// The version of the dead letter file's lines (the `v` key).
const VERSION: u32 = 1;

/// Changes the writer takes from the queue at most before writing them.
const MAX_BATCH: usize = 256;

/// One line of the file, as written.
#[derive(Serialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum LineOut<'a> {
    Put { entry: &'a DeadLetter, v: u32 },
    Remove { id: u64, v: u32 },
    Clear { v: u32 },
}

/// One line of the file, as read: `v` is absent in the lines written before
/// the format had a version (the router's own file), which are version 1.
#[derive(Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
enum LineIn {
    Put { entry: DeadLetter },
    Remove { id: u64 },
    Clear,
}

/// A line's version, read before the line itself.
#[derive(Deserialize)]
struct Version {
    #[serde(default)]
    v: Option<u32>,
}

/// What the writer thread is asked to do, in order.
enum Msg {
    Put(DeadLetter, Ack),
    Remove(u64, Ack),
    Clear(Ack),
    Flush(Ack),
    Close(Ack),
}

#[derive(Default)]
struct Counters {
    written: AtomicU64,
    syncs: AtomicU64,
    compactions: AtomicU64,
    io_errors: AtomicU64,
    /// Failures no caller was told of (a timed sync, a compaction).
    unreported: AtomicU64,
    /// Files found removed while in use, and written again.
    rewritten_after_removal: AtomicU64,
}

fn inc(counter: &AtomicU64) {
    counter.fetch_add(1, Ordering::Relaxed);
}

/// Counters of one [`DeadLetterJournal`], from [`DeadLetterJournal::stats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct DeadLetterJournalStats {
    /// Operations written (handed to the OS).
    pub written: u64,
    /// Syncs done.
    pub syncs: u64,
    /// Compactions done (the one at open included).
    pub compactions: u64,
    /// I/O failures while writing, syncing or compacting. A failed write or
    /// sync is answered with the error, then repaired by a compaction when
    /// it can be.
    pub io_errors: u64,
    /// Lines found unreadable at open and moved to the quarantine file (a
    /// torn last line counts as one).
    pub unreadable: u64,
    /// Bytes moved to the quarantine file at open.
    pub quarantined_bytes: u64,
    /// Times the file was found removed while in use (alone, or with its
    /// directory: `rm -r` of a run's directory) and written again, whole,
    /// from the live entries the writer holds, in the directory made again
    /// where the lock is taken again: nothing is lost. Looked for at each
    /// sync and, under [`Fsync::Never`], once a second while writing.
    pub rewritten_after_removal: u64,
}

/// Builds a [`DeadLetterJournal`]. Made by [`DeadLetterJournal::builder`].
///
/// | setting | default |
/// |---------|---------|
/// | [`fsync`](Self::fsync) | [`Fsync::Interval`] of 200 ms |
/// | [`capacity`](Self::capacity) | 1,024 queued changes |
/// | [`compact_after`](Self::compact_after) | 1,024 removed entries |
/// | [`timeout`](Self::timeout) | 5 s |
#[must_use]
pub struct DeadLetterJournalBuilder {
    path: PathBuf,
    fsync: Fsync,
    capacity: usize,
    compact_after: usize,
    timeout: Duration,
    fs: Arc<dyn JournalFs>,
}

impl std::fmt::Debug for DeadLetterJournalBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetterJournalBuilder")
            .field("path", &self.path)
            .field("fsync", &self.fsync)
            .field("capacity", &self.capacity)
            .field("compact_after", &self.compact_after)
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl DeadLetterJournalBuilder {
    /// When written changes are made durable (default `Interval(200 ms)`),
    /// as for the journal: see [`Fsync`] and the durability table on
    /// [`DeadLetterJournal`].
    pub fn fsync(mut self, fsync: Fsync) -> Self {
        self.fsync = fsync;
        self
    }

    /// How many changes may wait for the writer thread (default 1,024); a
    /// change that finds the queue full waits for room.
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// Rewrites the file once it holds at least `n` lines of entries no
    /// longer there (removed, replaced, cleared) and more of them than of
    /// live entries (default 1,024).
    pub fn compact_after(mut self, n: usize) -> Self {
        self.compact_after = n;
        self
    }

    /// How long a change, a flush or closing waits for the writer (default
    /// 5 s) before failing with
    /// [`Timeout`](DeadLetterStoreError::Timeout).
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The file operations the writer uses: for fault-injection tests.
    #[doc(hidden)]
    pub fn file_system(mut self, fs: impl JournalFs) -> Self {
        self.fs = Arc::new(fs);
        self
    }

    /// Opens the file: takes the lock, reads the entries, moves what a crash
    /// tore (and any line it cannot read) to the quarantine file, compacts
    /// the file if it holds anything but its live entries, and starts the
    /// writer thread.
    ///
    /// # Errors
    ///
    /// [`JournalError::Locked`] if another writer (in this or another
    /// process) holds the file, [`JournalError::Invalid`] for a zero
    /// `capacity` or `compact_after`, [`JournalError::Io`] if the file cannot
    /// be read, repaired or compacted, or holds a line of a newer format
    /// version (kind `InvalidData`).
    pub fn build(self) -> Result<DeadLetterJournal, JournalError> {
        if self.capacity == 0 {
            return Err(JournalError::Invalid("capacity must be at least 1"));
        }
        if self.compact_after == 0 {
            return Err(JournalError::Invalid("compact_after must be at least 1"));
        }
        let paths = Paths::new(&self.path);
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |source| JournalError::Io { path, source }
        };
        std::fs::create_dir_all(paths.dir()).map_err(io(paths.dir()))?;
        let lock = take_lock(&paths)?;
        let opened = open(&paths).map_err(io(&self.path))?;
        let counters = Arc::new(Counters::default());
        let mut writer = Writer {
            fs: self.fs,
            paths: paths.clone(),
            fsync: self.fsync,
            compact_after: self.compact_after,
            file: None,
            records: opened.records,
            live: BTreeMap::new(),
            broken: false,
            sync_due: None,
            looked: Instant::now(),
            relock: None,
            counters: counters.clone(),
        };
        for entry in &opened.entries {
            let line = encode(&LineOut::Put { entry, v: VERSION }).map_err(io(&self.path))?;
            writer.live.insert(entry.id, line);
        }
        if opened.records != writer.live.len() || opened.quarantined > 0 {
            writer.compact().map_err(io(&self.path))?;
        } else {
            writer.file = Some(writer.fs.open_append(&self.path).map_err(io(&self.path))?);
        }
        if opened.quarantined > 0 {
            tracing::warn!(
                path = %self.path.display(),
                lines = opened.unreadable,
                bytes = opened.quarantined,
                "dead letter file repaired: unreadable lines moved to the quarantine file"
            );
        }
        let (tx, rx) = crossbeam_channel::bounded(self.capacity);
        let thread = std::thread::Builder::new()
            .name("nerve-dead-letters".into())
            .spawn(move || writer.run(&rx))
            .map_err(io(&self.path))?;
        Ok(DeadLetterJournal {
            inner: Arc::new(Inner {
                tx,
                paths,
                fsync: self.fsync,
                timeout: self.timeout,
                restored: Mutex::new(Some(opened.entries)),
                unreadable: opened.unreadable,
                quarantined: opened.quarantined,
                counters,
                closed: AtomicBool::new(false),
                thread: Mutex::new(Some(thread)),
                lock: Mutex::new(Some(lock)),
            }),
        })
    }
}

/// A dead letter queue's entries in a JSONL file, written by a background
/// thread on the journal's machinery: the [`DeadLetterStore`] nerve ships.
///
/// Give it to `DeadLetterQueue::with_store`; the queue restores the file's
/// entries and then tells it every change. A cheap handle: clones share the
/// file. When the last handle is dropped, the writer finishes what is queued
/// (waiting at most the [`timeout`](DeadLetterJournalBuilder::timeout)) and
/// the lock is released.
///
/// ```
/// use nerve::{Bus, DeadLetterQueue, HandlerError};
/// use nerve::journal::{DeadLetterJournal, Fsync};
///
/// # let dir = tempfile::tempdir()?;
/// # let path = dir.path().join("dead_letters.jsonl");
/// let store = DeadLetterJournal::builder(&path).fsync(Fsync::Always).build()?;
/// let dlq = DeadLetterQueue::with_store(store, 1000);
/// let bus = Bus::builder().dead_letters(dlq.clone()).build()?;
/// bus.subscribe("invoice.send", |_: &nerve::Event| -> Result<(), HandlerError> {
///     Err(HandlerError::new("smtp down"))
/// })?;
/// bus.emit("invoice.send", nerve::json!({"n": 1}))?;
/// bus.shutdown_blocking();
/// drop((bus, dlq)); // closes the file
///
/// // After a restart: the same entries.
/// let dlq = DeadLetterQueue::with_store(DeadLetterJournal::builder(&path).build()?, 1000);
/// assert_eq!(dlq.entries()[0].error, "smtp down");
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
///
/// # The file
///
/// One operation a line, compact JSON, newline-terminated, `v` (the format
/// version, `1`) the last key:
///
/// ```text
/// {"op":"put","entry":{"id":1,"event":{...},"subscription_id":3,"subscription_name":"billing","reason":"handler_error","error":"card declined","attempts":1,"first_failure":"2026-11-23T10:00:00.000000Z","last_failure":"2026-11-23T10:00:00.000000Z"},"v":1}
/// {"op":"remove","id":1,"v":1}
/// {"op":"clear","v":1}
/// ```
///
/// `put` adds the entry ([`DeadLetter`], as it serializes) or replaces the
/// one with its id (a failed retry rewrites it with one attempt more),
/// `remove` deletes one, `clear` deletes all. Replaying the lines in order
/// gives the entries, oldest (lowest id) first. Lines without `v` (written by
/// the router before this file existed) are version 1 and load as they are; a
/// line with a higher `v` makes [`build`](DeadLetterJournalBuilder::build)
/// fail rather than guess.
///
/// Beside `dead_letters.jsonl`: `dead_letters.jsonl.lock` (the advisory lock:
/// one writer per file, [`JournalError::Locked`] for a second opener in any
/// process), `dead_letters.jsonl.torn` (quarantine: what opening cut off or
/// could not read, appended, never deleted) and, for a moment,
/// `dead_letters.jsonl.compact` (a compaction's new file).
///
/// # Durability
///
/// Every change ([`put`](DeadLetterStore::put), `remove`, `clear`) returns
/// once the writer thread has written it to the file, so it survives the
/// process's exit or SIGKILL right after; under [`Fsync::Always`] once it is
/// synced too, so it survives power loss. Under `Interval(d)` the writer
/// syncs at most `d` after a write, and on flush and close; under `Never`
/// it leaves syncing to the OS.
///
/// # Recovery and compaction
///
/// Opening replays the file. A last line without its newline (a crash
/// mid-append) and any line that is not a valid operation are appended to
/// the quarantine file and counted ([`DeadLetterJournalStats::unreadable`],
/// which the queue reports as `corrupt_lines`). If the file then holds
/// anything but one `put` per live entry, it is compacted before the first
/// append. Compaction writes the live entries to the `.compact` file, syncs
/// it, renames it over the file and syncs the directory, so a crash leaves
/// the old file or the new one, whole; the writer compacts again once the
/// removed entries dominate ([`compact_after`](DeadLetterJournalBuilder::compact_after)),
/// and after a failed write (the file is rewritten from the entries it should
/// hold, so it is whole again).
#[derive(Clone)]
pub struct DeadLetterJournal {
    inner: Arc<Inner>,
}

struct Inner {
    tx: Sender<Msg>,
    paths: Paths,
    fsync: Fsync,
    timeout: Duration,
    /// The entries read at open, until the queue takes them.
    restored: Mutex<Option<Vec<DeadLetter>>>,
    unreadable: u64,
    quarantined: u64,
    counters: Arc<Counters>,
    closed: AtomicBool,
    thread: Mutex<Option<JoinHandle<()>>>,
    /// The advisory lock, held until the writer finished.
    lock: Mutex<Option<File>>,
}

impl std::fmt::Debug for DeadLetterJournal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadLetterJournal")
            .field("path", &self.inner.paths.active())
            .field("fsync", &self.inner.fsync)
            .finish_non_exhaustive()
    }
}

impl DeadLetterJournal {
    /// Starts building a dead letter file at `path`
    /// (`dead_letters.jsonl`, say).
    pub fn builder(path: impl AsRef<Path>) -> DeadLetterJournalBuilder {
        DeadLetterJournalBuilder {
            path: path.as_ref().to_path_buf(),
            fsync: Fsync::Interval(Duration::from_millis(200)),
            capacity: 1024,
            compact_after: 1024,
            timeout: Duration::from_secs(5),
            fs: Arc::new(StdFs),
        }
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        self.inner.paths.active()
    }

    /// A snapshot of the counters.
    pub fn stats(&self) -> DeadLetterJournalStats {
        let c = &self.inner.counters;
        DeadLetterJournalStats {
            written: c.written.load(Ordering::Relaxed),
            syncs: c.syncs.load(Ordering::Relaxed),
            compactions: c.compactions.load(Ordering::Relaxed),
            io_errors: c.io_errors.load(Ordering::Relaxed),
            unreadable: self.inner.unreadable,
            quarantined_bytes: self.inner.quarantined,
            rewritten_after_removal: c.rewritten_after_removal.load(Ordering::Relaxed),
        }
    }

    /// Writes and syncs what is queued (unless the policy is
    /// [`Fsync::Never`]), stops the writer thread and releases the lock;
    /// later changes fail with [`Closed`](DeadLetterStoreError::Closed).
    /// Idempotent; dropping the last handle does it too.
    ///
    /// # Errors
    ///
    /// The write or sync error, or
    /// [`Timeout`](DeadLetterStoreError::Timeout) if the writer did not
    /// finish in time (the lock is then held until it does).
    pub fn close(&self) -> Result<(), DeadLetterStoreError> {
        self.inner.close()
    }

    fn request(&self, msg: impl FnOnce(Ack) -> Msg) -> Result<(), DeadLetterStoreError> {
        self.inner.request(msg)
    }
}

impl Inner {
    fn request(&self, msg: impl FnOnce(Ack) -> Msg) -> Result<(), DeadLetterStoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Err(DeadLetterStoreError::Closed);
        }
        let timeout = self.timeout;
        let deadline = Instant::now() + timeout;
        let (ack, answer) = crossbeam_channel::bounded(1);
        match self.tx.send_timeout(msg(ack), timeout) {
            Ok(()) => {}
            Err(SendTimeoutError::Timeout(_)) => {
                return Err(DeadLetterStoreError::Timeout(timeout));
            }
            Err(SendTimeoutError::Disconnected(_)) => return Err(DeadLetterStoreError::Closed),
        }
        let left = deadline.saturating_duration_since(Instant::now());
        match await_reply(&answer, left) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(DeadLetterStoreError::Io(io::Error::other(message))),
            Err(RecvTimeoutError::Timeout) => Err(DeadLetterStoreError::Timeout(timeout)),
            Err(RecvTimeoutError::Disconnected) => Err(DeadLetterStoreError::Closed),
        }
    }

    fn close(&self) -> Result<(), DeadLetterStoreError> {
        if self.closed.load(Ordering::Acquire) {
            return Ok(());
        }
        let result = self.request(Msg::Close);
        self.closed.store(true, Ordering::Release);
        if !matches!(result, Err(DeadLetterStoreError::Timeout(_))) {
            let thread = self
                .thread
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
            if let Some(t) = thread {
                let _ = t.join();
            }
            self.lock
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .take();
        }
        match result {
            Err(DeadLetterStoreError::Closed) => Ok(()),
            other => other,
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        if let Err(e) = self.close() {
            tracing::warn!(path = %self.paths.active().display(), error = %e, "dead letter file not closed cleanly");
        }
    }
}

impl DeadLetterStore for DeadLetterJournal {
    /// The entries read at open, oldest first; handed over once (a second
    /// call returns none: one queue owns a store).
    fn restore(&self) -> Vec<DeadLetter> {
        self.inner
            .restored
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .unwrap_or_default()
    }

    /// Writes a `put` line; returns once it is written (synced under
    /// [`Fsync::Always`]).
    fn put(&self, entry: &DeadLetter) -> Result<(), DeadLetterStoreError> {
        self.request(|ack| Msg::Put(entry.clone(), ack))
    }

    /// Writes a `remove` line; returns as [`put`](Self::put) does.
    fn remove(&self, id: u64) -> Result<(), DeadLetterStoreError> {
        self.request(|ack| Msg::Remove(id, ack))
    }

    /// Writes a `clear` line; returns as [`put`](Self::put) does.
    fn clear(&self) -> Result<(), DeadLetterStoreError> {
        self.request(Msg::Clear)
    }

    /// Waits for what is queued to be written and, unless the policy is
    /// [`Fsync::Never`], synced.
    fn flush(&self, timeout: Duration) -> Result<(), DeadLetterStoreError> {
        let (ack, answer) = crossbeam_channel::bounded(1);
        if self.inner.closed.load(Ordering::Acquire) {
            return Err(DeadLetterStoreError::Closed);
        }
        match self.inner.tx.send_timeout(Msg::Flush(ack), timeout) {
            Ok(()) => {}
            Err(SendTimeoutError::Timeout(_)) => {
                return Err(DeadLetterStoreError::Timeout(timeout));
            }
            Err(SendTimeoutError::Disconnected(_)) => return Err(DeadLetterStoreError::Closed),
        }
        match await_reply(&answer, timeout) {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(DeadLetterStoreError::Io(io::Error::other(message))),
            Err(RecvTimeoutError::Timeout) => Err(DeadLetterStoreError::Timeout(timeout)),
            Err(RecvTimeoutError::Disconnected) => Err(DeadLetterStoreError::Closed),
        }
    }

    fn unreadable(&self) -> u64 {
        self.inner.unreadable
    }

    /// Failures no change was answered with: a timed sync under
    /// [`Fsync::Interval`], a compaction, the last sync on close.
    fn write_errors(&self) -> u64 {
        self.inner.counters.unreported.load(Ordering::Relaxed)
    }
}

/// What opening found in the file.
struct Opened {
    /// The live entries, oldest (lowest id) first.
    entries: Vec<DeadLetter>,
    /// Operation lines read (the file's records, unreadable ones excluded).
    records: usize,
    /// Lines moved to the quarantine file.
    unreadable: u64,
    /// Bytes moved to the quarantine file.
    quarantined: u64,
}

/// Reads the file at `paths`' active path and moves what it cannot read to
/// the quarantine file.
fn open(paths: &Paths) -> io::Result<Opened> {
    let bytes = match std::fs::read(paths.active()) {
        Ok(b) => b,
        Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(e) => return Err(e),
    };
    let mut live: BTreeMap<u64, DeadLetter> = BTreeMap::new();
    let mut records = 0;
    let mut bad: Vec<&[u8]> = Vec::new();
    let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    for line in bytes[..whole].split(|b| *b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Version>(line) {
            Ok(Version { v: Some(v) }) if v > VERSION => {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!(
                        "dead letter line of format version {v}; this build reads version {VERSION}"
                    ),
                ));
            }
            _ => {}
        }
        match serde_json::from_slice::<LineIn>(line) {
            Ok(LineIn::Put { entry }) => {
                live.insert(entry.id, entry);
            }
            Ok(LineIn::Remove { id }) => {
                live.remove(&id);
            }
            Ok(LineIn::Clear) => live.clear(),
            Err(_) => {
                bad.push(line);
                continue;
            }
        }
        records += 1;
    }
    let torn = &bytes[whole..];
    if !torn.is_empty() {
        bad.push(torn);
    }
    let quarantined = bad.iter().map(|l| l.len() as u64).sum();
    if !bad.is_empty() {
        files::quarantine(paths, bad.iter().copied())?;
    }
    Ok(Opened {
        entries: live.into_values().collect(),
        records,
        unreadable: bad.len() as u64,
        quarantined,
    })
}

/// One line, newline-terminated.
fn encode(line: &LineOut<'_>) -> io::Result<Box<[u8]>> {
    let mut bytes = serde_json::to_vec(line).map_err(io::Error::other)?;
    bytes.push(b'\n');
    Ok(bytes.into_boxed_slice())
}

/// The writer thread's state.
struct Writer {
    fs: Arc<dyn JournalFs>,
    paths: Paths,
    fsync: Fsync,
    compact_after: usize,
    /// The file, open for appending; `None` after a failure broke it.
    file: Option<Box<dyn JournalFile>>,
    /// Operation lines in the file.
    records: usize,
    /// The `put` line of every live entry, by id (so oldest first).
    live: BTreeMap<u64, Box<[u8]>>,
    /// A write failed: the file is not what `live` says until compacted.
    broken: bool,
    /// When the `Interval` policy wants the next sync.
    sync_due: Option<Instant>,
    /// When the writer last looked whether its file was removed.
    looked: Instant,
    /// The lock taken again in a directory made again (`relock`).
    relock: Option<File>,
    counters: Arc<Counters>,
}

/// How often a writer that is not syncing (under `Fsync::Never`, or between
/// syncs of a long burst) looks whether its file was removed.
const LOOK_EVERY: Duration = Duration::from_secs(1);

impl Writer {
    fn run(mut self, rx: &Receiver<Msg>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            let first = match self.sync_due {
                Some(due) => match rx.recv_deadline(due) {
                    Ok(m) => m,
                    Err(RecvTimeoutError::Timeout) => {
                        if self.sync().is_err() {
                            inc(&self.counters.unreported);
                        }
                        continue;
                    }
                    Err(RecvTimeoutError::Disconnected) => break,
                },
                None => match rx.recv() {
                    Ok(m) => m,
                    Err(_) => break,
                },
            };
            batch.push(first);
            batch.extend(rx.try_iter().take(MAX_BATCH - 1));
            if self.serve(&mut batch) {
                return;
            }
        }
        if self.finish().is_err() {
            inc(&self.counters.unreported);
        }
    }

    /// Writes one batch and answers its callers; whether it closed the file.
    fn serve(&mut self, batch: &mut Vec<Msg>) -> bool {
        let mut bytes = Vec::new();
        let mut acks: Vec<(Ack, Option<String>)> = Vec::with_capacity(batch.len());
        let mut sync = self.fsync == Fsync::Always;
        let mut close = None;
        let mut ops = 0;
        for msg in batch.drain(..) {
            let line = match msg {
                Msg::Put(entry, ack) => {
                    match encode(&LineOut::Put {
                        entry: &entry,
                        v: VERSION,
                    }) {
                        Ok(line) => {
                            self.live.insert(entry.id, line.clone());
                            acks.push((ack, None));
                            line
                        }
                        Err(e) => {
                            acks.push((
                                ack,
                                Some(format!("could not serialize dead letter {}: {e}", entry.id)),
                            ));
                            continue;
                        }
                    }
                }
                Msg::Remove(id, ack) => {
                    self.live.remove(&id);
                    acks.push((ack, None));
                    encode_fixed(&LineOut::Remove { id, v: VERSION })
                }
                Msg::Clear(ack) => {
                    self.live.clear();
                    acks.push((ack, None));
                    encode_fixed(&LineOut::Clear { v: VERSION })
                }
                Msg::Flush(ack) => {
                    sync |= self.fsync != Fsync::Never;
                    acks.push((ack, None));
                    continue;
                }
                Msg::Close(ack) => {
                    close = Some(ack);
                    continue;
                }
            };
            bytes.extend_from_slice(&line);
            ops += 1;
        }
        if self.looked.elapsed() >= LOOK_EVERY {
            self.look_removed();
        }
        let mut result = self.write(&bytes, ops);
        if result.is_ok() && (sync || (close.is_some() && self.fsync != Fsync::Never)) {
            result = self.sync();
        } else if result.is_ok() && ops > 0 && self.sync_due.is_none() {
            if let Fsync::Interval(d) = self.fsync {
                self.sync_due = Some(Instant::now() + d);
            }
        }
        if result.is_err() && self.broken {
            // Rewriting the file from the live entries writes (and syncs)
            // this batch too: if that works, nothing was lost.
            result = self.compact();
        }
        let failed = result.err().map(|e| e.to_string());
        for (ack, error) in acks {
            let _ = ack.send(match error.or_else(|| failed.clone()) {
                Some(message) => Err(message),
                None => Ok(()),
            });
        }
        if self.due_for_compaction() {
            if let Err(e) = self.compact() {
                inc(&self.counters.unreported);
                tracing::warn!(path = %self.paths.active().display(), error = %e, "dead letter file compaction failed");
            }
        }
        match close {
            Some(ack) => {
                let _ = ack.send(self.finish().map_err(|e| e.to_string()));
                true
            }
            None => false,
        }
    }

    /// Appends `bytes` (`ops` lines); on failure cuts the file back to its
    /// last whole line and marks it for compaction.
    fn write(&mut self, bytes: &[u8], ops: usize) -> io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        if self.broken {
            // The file misses earlier changes; rewriting it writes these too.
            return self.compact();
        }
        let file = match &mut self.file {
            Some(f) => f,
            None => self.file.insert(self.fs.open_append(self.paths.active())?),
        };
        let before = file.len();
        match file.write_all(bytes).and_then(|()| file.flush()) {
            Ok(()) => {
                self.records += ops;
                self.counters
                    .written
                    .fetch_add(ops as u64, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                inc(&self.counters.io_errors);
                self.broken = true;
                if before.and_then(|len| file.truncate(len)).is_err() {
                    self.file = None;
                }
                Err(e)
            }
        }
    }

    fn sync(&mut self) -> io::Result<()> {
        self.sync_due = None;
        self.look_removed();
        if self.broken {
            // Rewritten, synced, and its directory synced.
            return self.compact();
        }
        let Some(file) = &mut self.file else {
            return Ok(());
        };
        match file.sync() {
            Ok(()) => {
                inc(&self.counters.syncs);
                Ok(())
            }
            Err(e) => {
                inc(&self.counters.io_errors);
                // What the failed sync covered may be lost: rewrite it all.
                self.broken = true;
                Err(e)
            }
        }
    }

    /// Whether the file was removed while in use (alone, or with its
    /// directory): if so, it is to be written again from `live`, which holds
    /// every acknowledged change, so nothing written to the removed file is
    /// lost. The directory is made again and the lock taken again there.
    fn look_removed(&mut self) {
        self.looked = Instant::now();
        let removed = self
            .file
            .as_ref()
            .is_some_and(|file| file.is_removed().unwrap_or(false));
        if !removed {
            return;
        }
        inc(&self.counters.rewritten_after_removal);
        tracing::warn!(
            path = %self.paths.active().display(),
            entries = self.live.len(),
            "dead letter file removed while in use: written again from the live entries"
        );
        // A failure here fails the rewrite, which is counted and answered.
        let _ = self.fs.create_dir_all(self.paths.dir());
        self.relock();
        self.file = None;
        self.broken = true;
    }

    /// Takes the lock again when its file went with the directory, so that
    /// a second store is still refused there. A lock file still there is
    /// this store's (only the dead letter file was removed), or one another
    /// store took first: that is said.
    fn relock(&mut self) {
        match retake_lock(&self.paths) {
            None => {}
            Some(Ok(lock)) => self.relock = Some(lock),
            Some(Err(e)) => {
                inc(&self.counters.unreported);
                tracing::warn!(
                    path = %self.paths.lock().display(),
                    error = %e,
                    "dead letter lock not taken again after its directory was removed"
                );
            }
        }
    }

    fn due_for_compaction(&self) -> bool {
        let dead = self.records.saturating_sub(self.live.len());
        self.broken || (dead >= self.compact_after && dead > self.live.len())
    }

    /// Rewrites the file to hold exactly the live entries: to the
    /// `.compact` file, synced, renamed over the file, directory synced.
    fn compact(&mut self) -> io::Result<()> {
        let done = self.rewrite();
        if done.is_err() {
            inc(&self.counters.io_errors);
        }
        done
    }

    fn rewrite(&mut self) -> io::Result<()> {
        let tmp = self.paths.compacting();
        files::remove_if_present(&*self.fs, &tmp)?;
        {
            let mut out = self.fs.open_append(&tmp)?;
            let mut bytes = Vec::new();
            for line in self.live.values() {
                bytes.extend_from_slice(line);
            }
            out.write_all(&bytes)?;
            out.flush()?;
            out.sync()?;
        }
        self.file = None;
        self.fs.rename(&tmp, self.paths.active())?;
        self.fs.sync_dir(self.paths.dir())?;
        self.file = Some(self.fs.open_append(self.paths.active())?);
        self.records = self.live.len();
        self.broken = false;
        self.sync_due = None;
        inc(&self.counters.compactions);
        Ok(())
    }

    /// Leaves the file whole and, unless the policy is `Never`, synced.
    fn finish(&mut self) -> io::Result<()> {
        self.look_removed();
        if self.broken {
            self.compact()?;
        }
        if self.fsync != Fsync::Never {
            self.sync()?;
        }
        Ok(())
    }
}

/// A line that cannot fail to serialize (no payload).
fn encode_fixed(line: &LineOut<'_>) -> Box<[u8]> {
    encode(line).unwrap_or_default()
}
