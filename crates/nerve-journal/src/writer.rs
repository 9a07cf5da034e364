//! The writer thread: batches events off the channel, serializes them,
//! appends, rotates and syncs.

use std::io;
use std::panic::{AssertUnwindSafe, catch_unwind};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use nerve_core::Event;
use nerve_core::sink::{SinkErrorKind, SinkFault};

use crate::Fsync;
use crate::files::{self, Paths};
use crate::format;
use crate::fs::{JournalFile, JournalFs};
use crate::journal::{Redact, Shared};
use crate::shifter::Shifter;

/// The answer to an `Fsync::Always` record: `Err` carries the message.
pub(crate) type Ack = Sender<Result<(), String>>;

/// What the writer thread is asked to do, in order.
pub(crate) enum Msg {
    Event(Event, Option<Ack>),
    Flush(Sender<Result<(), String>>),
    Clear(Sender<Result<(), String>>),
    Close(Sender<Result<(), String>>),
}

/// The most messages one batch takes off the channel.
/// Short sleeps a writer with nothing to do takes before sleeping on the
/// channel (see `linger`).
const LINGER_ROUNDS: u32 = 20;
const LINGER_SLEEP: Duration = Duration::from_micros(50);

const MAX_BATCH: usize = 4096;

pub(crate) struct Writer {
    pub(crate) fs: Arc<dyn JournalFs>,
    pub(crate) paths: Paths,
    pub(crate) max_bytes: u64,
    pub(crate) max_files: usize,
    pub(crate) fsync: Fsync,
    pub(crate) redact: Option<Redact>,
    pub(crate) shared: Arc<Shared>,
    /// The active file; `None` until opened, or after a failure broke it.
    file: Option<Box<dyn JournalFile>>,
    /// Bytes of whole records in the active file: where the next record goes.
    len: u64,
    /// Of those, how many are synced (with `Fsync::Always`, the boundary a
    /// failed sync truncates back to).
    synced_len: u64,
    /// Gives rotated files their final names, off this thread.
    shifter: Shifter,
    /// The generation the next rotated file gets (`events.p<g>.jsonl`).
    next_gen: u64,
    /// Written but not yet synced.
    dirty: bool,
    last_sync: Instant,
    /// Records encoded but not yet written, and the events they hold.
    pending: Vec<u8>,
    pending_events: Vec<Event>,
    /// Acks waiting for the next sync.
    acks: Vec<Ack>,
    /// The first failure since the last flush answered.
    failure: Option<String>,
    scratch: Vec<u8>,
}

impl Writer {
    #[allow(clippy::too_many_arguments, reason = "one constructor, called once")]
    pub(crate) fn new(
        fs: Arc<dyn JournalFs>,
        paths: Paths,
        max_bytes: u64,
        max_files: usize,
        fsync: Fsync,
        redact: Option<Redact>,
        shared: Arc<Shared>,
        len: u64,
        shifter: Shifter,
    ) -> Self {
        Self {
            fs,
            paths,
            max_bytes,
            max_files,
            fsync,
            redact,
            shared,
            file: None,
            len,
            synced_len: len,
            shifter,
            next_gen: 1,
            dirty: false,
            last_sync: Instant::now(),
            pending: Vec::with_capacity(256 * 1024),
            pending_events: Vec::new(),
            acks: Vec::new(),
            failure: None,
            scratch: Vec::with_capacity(1024),
        }
    }

    /// Waits a little for the next message before going to sleep on the
    /// channel. A writer asleep in `recv` must be woken by the emitter, a
    /// futex call that made `emit` twice as slow as the rest of its work
    /// whenever the writer kept up; lingering for up to ~1 ms in short
    /// sleeps lets a busy emitter send without waking anyone. Not with
    /// `Fsync::Always`, where an emitter waits for its sync and a prompt
    /// wake-up is the point.
    fn linger(&self, rx: &Receiver<Msg>) -> Option<Msg> {
        if self.fsync == Fsync::Always {
            return None;
        }
        for _ in 0..LINGER_ROUNDS {
            match rx.try_recv() {
                Ok(m) => return Some(m),
                Err(crossbeam_channel::TryRecvError::Empty) => std::thread::sleep(LINGER_SLEEP),
                Err(crossbeam_channel::TryRecvError::Disconnected) => return None,
            }
        }
        None
    }

    /// The thread's body: runs until `Close` or every sender is gone.
    pub(crate) fn run(mut self, rx: &Receiver<Msg>) {
        let mut batch = Vec::with_capacity(MAX_BATCH);
        loop {
            if let Some(m) = self.linger(rx) {
                batch.push(m);
            }
            let first = match batch.pop() {
                Some(m) => m,
                None => match self.sync_deadline() {
                    Some(deadline) => {
                        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                            Ok(m) => m,
                            Err(RecvTimeoutError::Timeout) => {
                                self.sync_now();
                                continue;
                            }
                            Err(RecvTimeoutError::Disconnected) => break,
                        }
                    }
                    None => match rx.recv() {
                        Ok(m) => m,
                        Err(_) => break,
                    },
                },
            };
            batch.push(first);
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(m) => batch.push(m),
                    Err(_) => break,
                }
            }
            let mut stop = false;
            for msg in batch.drain(..) {
                if stop {
                    // Nothing follows a close; answer so no one waits.
                    refuse(msg);
                    continue;
                }
                match msg {
                    Msg::Event(event, ack) => self.push(event, ack),
                    Msg::Flush(reply) => {
                        let _ = reply.send(self.settle());
                    }
                    Msg::Clear(reply) => {
                        self.commit();
                        let _ = reply.send(self.clear().map_err(|e| e.to_string()));
                    }
                    Msg::Close(reply) => {
                        let _ = reply.send(self.settle());
                        stop = true;
                    }
                }
            }
            self.commit();
            self.after_batch();
            if stop {
                break;
            }
        }
        let _ = self.settle();
    }

    /// Writes and (unless the policy is `Never`) syncs everything, waits for
    /// the rotated files' final names, and answers with the first failure
    /// since the last answer.
    fn settle(&mut self) -> Result<(), String> {
        self.commit();
        if self.fsync != Fsync::Never {
            self.sync_now();
        }
        let renumbered = self.shifter.quiesce();
        match self.failure.take() {
            Some(e) => Err(e),
            None => renumbered,
        }
    }

    /// When the next interval sync is due, if one is.
    fn sync_deadline(&self) -> Option<Instant> {
        match self.fsync {
            Fsync::Interval(d) if self.dirty => Some(self.last_sync + d),
            _ => None,
        }
    }

    fn after_batch(&mut self) {
        match self.fsync {
            Fsync::Always => self.sync_now(),
            Fsync::Interval(d) if self.dirty && self.last_sync.elapsed() >= d => self.sync_now(),
            _ => {}
        }
    }

    /// Encodes one event into the pending bytes, rotating first if it would
    /// not fit.
    fn push(&mut self, event: Event, ack: Option<Ack>) {
        self.scratch.clear();
        let redacted = match &self.redact {
            None => Ok(None),
            Some(f) => catch_unwind(AssertUnwindSafe(|| f(&event))).map(Some),
        };
        let replaced = match redacted {
            Ok(Some(redacted)) => format::encode_redacted(&event, &redacted, &mut self.scratch),
            Ok(None) => format::encode(&event, None, &mut self.scratch),
            Err(panic) => {
                // Writing the unredacted payload could leak what the hook
                // exists to hide, so the payload is replaced.
                let message = format!("redaction panicked: {}", panic_message(&*panic));
                let marker = format::error_marker("redact", &message);
                format::encode(&event, Some(&marker), &mut self.scratch);
                Some(format::Replaced {
                    reason: "redact",
                    message,
                })
            }
        };
        if let Some(r) = replaced {
            self.shared.counters.serialize_errors.inc();
            self.shared.report(SinkFault {
                kind: SinkErrorKind::Serialize,
                message: format!(
                    "event {} ({}) written with its payload replaced by an error marker: {}",
                    event.event_type(),
                    event.event_id(),
                    r.message
                ),
                event: Some(event.clone()),
            });
        }
        let size = self.scratch.len() as u64;
        let used = self.len + self.pending.len() as u64;
        if used > 0 && used + size > self.max_bytes {
            self.commit();
            if let Err(e) = self.rotate() {
                self.fail(
                    &format!("rotation failed: {e}"),
                    vec![event],
                    ack.into_iter(),
                );
                return;
            }
        }
        self.pending.extend_from_slice(&self.scratch);
        self.pending_events.push(event);
        if let Some(ack) = ack {
            self.acks.push(ack);
        }
    }

    /// Writes the pending bytes to the active file. On failure, cuts the file
    /// back to the last record boundary and reports the events lost.
    fn commit(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let result = self.write_pending();
        let events = std::mem::take(&mut self.pending_events);
        let bytes = self.pending.len() as u64;
        self.pending.clear();
        match result {
            Ok(()) => {
                self.len += bytes;
                self.dirty = true;
                self.shared.counters.written.add(events.len() as u64);
                self.shared.counters.bytes.add(bytes);
                self.shared.counters.batches.inc();
            }
            Err(e) => {
                self.cut_back(self.len);
                let acks = std::mem::take(&mut self.acks);
                self.fail(&format!("write failed: {e}"), events, acks.into_iter());
            }
        }
    }

    fn write_pending(&mut self) -> io::Result<()> {
        self.open()?;
        let file = self.file.as_mut().expect("opened above");
        file.write_all(&self.pending)?;
        file.flush()
    }

    /// The active file, opened (and cut back to the last record boundary)
    /// if a failure closed it.
    fn open(&mut self) -> io::Result<&mut Box<dyn JournalFile>> {
        if self.file.is_none() {
            let mut file = self.fs.open_append(self.paths.active())?;
            if file.len()? > self.len {
                file.truncate(self.len)?;
            }
            self.file = Some(file);
        }
        Ok(self.file.as_mut().expect("opened above"))
    }

    /// Cuts the active file back to `len`; if that fails too, drops the
    /// handle so the next open retries the cut.
    fn cut_back(&mut self, len: u64) {
        let ok = match self.file.as_mut() {
            Some(f) => f.truncate(len).is_ok(),
            None => true,
        };
        if !ok {
            self.file = None;
        }
        self.len = len;
        self.synced_len = self.synced_len.min(len);
    }

    /// Counts and reports events the journal could not keep.
    fn fail(&mut self, message: &str, events: Vec<Event>, acks: impl Iterator<Item = Ack>) {
        self.shared.counters.io_errors.inc();
        if self.failure.is_none() {
            self.failure = Some(message.to_owned());
        }
        let mut acked = false;
        for ack in acks {
            acked = true;
            let _ = ack.send(Err(message.to_owned()));
        }
        self.shared.counters.lost.add(events.len() as u64);
        if acked {
            // `record` returns the error; the bus reports each event itself.
            return;
        }
        for event in events {
            self.shared.report(SinkFault {
                kind: SinkErrorKind::Io,
                message: format!("journal {message}; event not recorded"),
                event: Some(event),
            });
        }
    }

    fn sync_now(&mut self) {
        self.commit();
        if !self.dirty {
            self.answer_acks(Ok(()));
            return;
        }
        let result = match self.file.as_mut() {
            Some(f) => f.sync(),
            None => Ok(()),
        };
        self.last_sync = Instant::now();
        match result {
            Ok(()) => {
                self.dirty = false;
                self.synced_len = self.len;
                self.shared.counters.syncs.inc();
                self.answer_acks(Ok(()));
            }
            Err(e) => {
                self.shared.counters.io_errors.inc();
                let message = format!("sync failed: {e}");
                if self.failure.is_none() {
                    self.failure = Some(message.clone());
                }
                if self.acks.is_empty() {
                    // Nobody was promised durability; the bytes stay and the
                    // next sync retries.
                    self.shared.report(SinkFault {
                        kind: SinkErrorKind::Io,
                        message: format!("journal {message}"),
                        event: None,
                    });
                } else {
                    // Events whose emit will fail must not stay on disk.
                    let synced = self.synced_len;
                    self.cut_back(synced);
                    self.dirty = false;
                    self.answer_acks(Err(message));
                }
            }
        }
    }

    fn answer_acks(&mut self, result: Result<(), String>) {
        for ack in self.acks.drain(..) {
            let _ = ack.send(result.clone());
        }
    }

    /// Renames the active file to the next pending name
    /// (`events.p<g>.jsonl`), hands it to the renumbering thread (which gives
    /// it the name `.1`, shifting the backups up and deleting the oldest
    /// beyond `max_files`) and starts a new active file: a constant cost,
    /// whatever `max_files`. The old handle is closed first, so nothing is
    /// ever written to a renamed file.
    fn rotate(&mut self) -> io::Result<()> {
        let start = Instant::now();
        if let Some(mut file) = self.file.take() {
            if self.fsync != Fsync::Never {
                file.sync()?;
                self.dirty = false;
                self.synced_len = self.len;
                self.answer_acks(Ok(()));
            }
        }
        if self.max_files == 0 {
            self.fs.remove(self.paths.active())?;
        } else {
            let g = self.next_gen;
            self.fs
                .rename(self.paths.active(), &self.paths.pending(g))?;
            self.next_gen += 1;
            self.shifter.push(g);
        }
        self.len = 0;
        self.synced_len = 0;
        self.shared.counters.rotations.inc();
        // A spare made ahead by the renumbering thread is linked in as the
        // active file: no file to allocate on this thread. Without one (or
        // if the link fails) `open` creates the file as at start.
        let from_spare = self
            .shifter
            .take_spare()
            .is_some_and(|spare| spare.link(self.paths.active()).is_ok());
        if !from_spare {
            self.shared.counters.rotations_created.inc();
        }
        self.open()?;
        if self.fsync != Fsync::Never {
            self.fs.sync_dir(self.paths.dir())?;
        }
        self.shared
            .counters
            .rotation_nanos
            .add(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX));
        Ok(())
    }

    /// Removes every file, once renumbering is idle (its failure, if any,
    /// no longer matters: the files it was renaming are gone).
    fn clear(&mut self) -> io::Result<()> {
        self.file = None;
        self.len = 0;
        self.synced_len = 0;
        self.dirty = false;
        let _ = self.shifter.quiesce();
        let removed = self.remove_all();
        self.shifter.cleared(removed.is_ok());
        removed?;
        self.open()?;
        Ok(())
    }

    fn remove_all(&self) -> io::Result<()> {
        files::remove_if_present(&*self.fs, self.paths.active())?;
        let listing = self.paths.list()?;
        for path in self.paths.oldest_first(&listing) {
            files::remove_if_present(&*self.fs, &path)?;
        }
        Ok(())
    }
}

/// Answers a message that arrived after `Close`.
fn refuse(msg: Msg) {
    let closed = || Err("journal closed".to_owned());
    match msg {
        Msg::Event(_, Some(ack)) => drop(ack.send(closed())),
        Msg::Event(_, None) => {}
        Msg::Flush(r) | Msg::Clear(r) | Msg::Close(r) => drop(r.send(closed())),
    }
}

pub(crate) fn panic_message(panic: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "non-string panic".to_owned()
    }
}

/// Waits up to `timeout` for a reply from the writer.
pub(crate) fn await_reply(
    rx: &crossbeam_channel::Receiver<Result<(), String>>,
    timeout: Duration,
) -> Result<Result<(), String>, RecvTimeoutError> {
    rx.recv_timeout(timeout)
}
