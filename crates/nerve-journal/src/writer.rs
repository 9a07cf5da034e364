//! The writer thread: batches events off the channel, serializes them,
//! appends, rotates and syncs.

use std::io;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use nerve_core::sink::{SinkErrorKind, SinkFault};
use nerve_core::{Event, EventId};

use crate::Fsync;
use crate::files::{self, Paths};
use crate::format;
use crate::fs::{JournalFile, JournalFs};
use crate::journal::{Redact, Shared, retake_lock};
use crate::marker::{self, Gap, Marker, Owed, Skipped};
use crate::shifter::Shifter;

/// The answer to a record that waits (`record_and_wait`, or any record under
/// `Fsync::Always`): sent once the event is durable as the policy says,
/// written (handed to the OS) or, under `Fsync::Always`, synced. `Err`
/// carries the message.
pub(crate) type Ack = Sender<Result<(), String>>;

/// What the writer thread is asked to do, in order.
pub(crate) enum Msg {
    Event(Event, Option<Ack>),
    /// The `seq` of a replayed event not recorded again: written as part of
    /// a `replayed` range marker.
    Skipped(u64),
    Flush(Sender<Result<(), String>>),
    Clear(Sender<Result<(), String>>),
    Close(Sender<Result<(), String>>),
}

/// Short sleeps a writer with nothing to do takes before sleeping on the
/// channel (see `linger`).
const LINGER_ROUNDS: u32 = 20;
const LINGER_SLEEP: Duration = Duration::from_micros(50);

/// How much written data makes a write-behind hint (see `write_behind`).
const WRITE_BEHIND: u64 = 1 << 20;
const PAGE: u64 = 4096;

/// Under `Fsync::Never`, which has no syncs to check at, how often the
/// writer looks whether its file was removed (see `check_removed`).
const CHECK_REMOVED_EVERY: Duration = Duration::from_secs(1);

/// The most messages one batch takes off the channel. Small enough that the
/// default queue (8,192) plus a batch is less than a default bus's history
/// (10,000): the writer lets go of an event before the history evicts it,
/// so the emitting thread, which allocated it, frees it (a free on another
/// thread contends for the allocator's lock; docs/benchmarks.md).
const MAX_BATCH: usize = 1024;

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
    /// Written but not yet synced.
    dirty: bool,
    /// Where in the active file the last write-behind hint ended.
    behind: u64,
    /// Under `Fsync::Interval`, a rotation's renames whose directory sync
    /// waits for the next sync of the active file (see `rotate`).
    dir_unsynced: bool,
    last_sync: Instant,
    /// Records encoded but not yet written, and the events, marker lines and
    /// range lines they hold.
    pending: Vec<u8>,
    pending_events: Vec<Event>,
    pending_markers: Owed,
    /// Under `Fsync::Always`, the events written since the last sync: a failed
    /// sync cuts them off the file, and they are owed as `io` markers.
    unsynced: Vec<Event>,
    /// And the marker lines written since then, owed again if cut off.
    unsynced_markers: Owed,
    /// Acks waiting for the next write (or, under `Fsync::Always`, sync),
    /// with the event each one waits for.
    acks: Vec<(EventId, Ack)>,
    /// Marker lines not yet written (events lost to failed writes, refused
    /// by a full queue), paid at the next batch.
    owed: Owed,
    /// The open range of replayed events not recorded again.
    skipped: Skipped,
    /// The first failure since the last flush answered.
    failure: Option<String>,
    /// The events written to the active file since it was last seen still
    /// linked, as a range: what goes with it if it turns out removed (see
    /// `check_removed`).
    since_check: Option<Gap>,
    /// When that was.
    last_check: Instant,
    /// The journal's lock, taken again in the directory made again after it
    /// was removed (the first is the journal's own, on the removed file).
    relock: Option<std::fs::File>,
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
            dirty: false,
            behind: len,
            dir_unsynced: false,
            last_sync: Instant::now(),
            pending: Vec::with_capacity(256 * 1024),
            pending_events: Vec::new(),
            pending_markers: Owed::default(),
            unsynced: Vec::new(),
            unsynced_markers: Owed::default(),
            acks: Vec::new(),
            owed: Owed::default(),
            skipped: Skipped::default(),
            failure: None,
            since_check: None,
            last_check: Instant::now(),
            relock: None,
            scratch: Vec::with_capacity(1024),
        }
    }

    /// Waits a little for the next message before going to sleep on the
    /// channel. A writer asleep in `recv` must be woken by the emitter, a
    /// futex call that costs `emit` more than the rest of its work whenever
    /// the writer keeps up (docs/benchmarks.md, "Journal"); lingering for up
    /// to ~1 ms in short sleeps lets a busy emitter send without waking
    /// anyone. Not with
    /// `Fsync::Always`, where an emitter waits for its sync and a prompt
    /// wake-up is the point. The sleeps are parks: an emitter that waits for
    /// its event (`record_and_wait`) unparks the writer, so it does not wait
    /// out the rest of a sleep.
    fn linger(&self, rx: &Receiver<Msg>) -> Option<Msg> {
        if self.fsync == Fsync::Always {
            return None;
        }
        for _ in 0..LINGER_ROUNDS {
            match rx.try_recv() {
                Ok(m) => return Some(m),
                Err(crossbeam_channel::TryRecvError::Empty) => {
                    std::thread::park_timeout(LINGER_SLEEP);
                }
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
            } else if self.take_dropped() {
                // Refused while the queue was full, after the last batch.
                self.pay_owed();
                self.commit();
                self.after_batch();
                continue;
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
            // Markers first: for events refused before any message of this
            // batch was sent (a flush among them must find them written),
            // and for earlier failed writes, now that writing may work again.
            self.take_dropped();
            self.pay_owed();
            let mut stop = false;
            for msg in batch.drain(..) {
                if stop {
                    // Nothing follows a close; answer so no one waits.
                    refuse(msg);
                    continue;
                }
                match msg {
                    Msg::Event(event, ack) => self.push(event, ack),
                    Msg::Skipped(seq) => {
                        if let Some(closed) = self.skipped.add(seq) {
                            self.push_gap(closed);
                        }
                    }
                    Msg::Flush(reply) => {
                        let _ = reply.send(self.settle());
                    }
                    Msg::Clear(reply) => {
                        self.close_skipped();
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
        self.close_skipped();
        self.take_dropped();
        self.pay_owed();
        self.commit();
        let _ = self.check_removed();
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
            Fsync::Never if self.last_check.elapsed() >= CHECK_REMOVED_EVERY => {
                let _ = self.check_removed();
            }
            _ => {}
        }
    }

    /// Encodes one event into the pending bytes, rotating first if it would
    /// not fit. Encoded in place, at the end of the pending bytes: moved
    /// aside only in the rare case that it needs a rotation first.
    fn push(&mut self, event: Event, ack: Option<Ack>) {
        let event_id = event.event_id();
        // A range of replayed numbers ends where a recorded event comes.
        self.close_skipped();
        let start = self.pending.len();
        let replaced = match &self.redact {
            None => format::encode(&event, None, &mut self.pending),
            Some(f) => format::encode_through(&event, &**f, &mut self.pending).1,
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
        let size = (self.pending.len() - start) as u64;
        let used = self.len + start as u64;
        if used > 0 && used + size > self.max_bytes {
            self.scratch.clear();
            self.scratch.extend_from_slice(&self.pending[start..]);
            self.pending.truncate(start);
            if let Err(e) = self.make_room() {
                let acks = ack.map(|ack| (event_id, ack));
                self.fail(&format!("rotation failed: {e}"), vec![event], acks);
                return;
            }
            self.pending.extend_from_slice(&self.scratch);
        }
        self.pending_events.push(event);
        if let Some(ack) = ack {
            self.acks.push((event_id, ack));
        }
    }

    /// Rotates first if the record in `scratch` would not fit the active file.
    fn make_room(&mut self) -> io::Result<()> {
        let size = self.scratch.len() as u64;
        let used = self.len + self.pending.len() as u64;
        if used > 0 && used + size > self.max_bytes {
            self.commit();
            self.rotate()?;
        }
        Ok(())
    }

    /// Moves the events a full queue refused (kept aside by `record`) into
    /// what this writer owes; whether there were any.
    fn take_dropped(&mut self) -> bool {
        match self.shared.take_dropped() {
            Some(dropped) => {
                self.owed.append(dropped);
                true
            }
            None => false,
        }
    }

    /// Encodes every owed marker and range into the pending bytes. What a
    /// failed rotation leaves unpaid stays owed.
    fn pay_owed(&mut self) {
        if self.owed.is_empty() {
            return;
        }
        let owed = std::mem::take(&mut self.owed);
        let mut markers = owed.markers.into_iter();
        let mut gaps = owed.gaps.into_iter();
        let mut stuck = false;
        for m in markers.by_ref() {
            self.scratch.clear();
            let data = format::error_marker(m.reason, &m.message);
            format::encode(&m.event, Some(&data), &mut self.scratch);
            if self.make_room().is_err() {
                self.owed.push(m);
                stuck = true;
                break;
            }
            self.pending.extend_from_slice(&self.scratch);
            self.pending_markers.markers.push(m);
        }
        if !stuck {
            for g in gaps.by_ref() {
                if !self.place_gap(g) {
                    break;
                }
            }
        }
        for m in markers {
            self.owed.push(m);
        }
        for g in gaps {
            self.owed.push_gap(g);
        }
    }

    /// Encodes a range line into the pending bytes; owed again (and `false`)
    /// if a rotation to make room for it failed.
    fn place_gap(&mut self, gap: Gap) -> bool {
        self.scratch.clear();
        format::encode_gap(&gap, &mut self.scratch);
        if self.make_room().is_err() {
            self.owed.push_gap(gap);
            return false;
        }
        self.pending.extend_from_slice(&self.scratch);
        self.pending_markers.gaps.push(gap);
        true
    }

    fn push_gap(&mut self, gap: Gap) {
        self.place_gap(gap);
    }

    /// Writes the open range of replayed numbers, if there is one.
    fn close_skipped(&mut self) {
        if let Some(gap) = self.skipped.take() {
            self.push_gap(gap);
        }
    }

    /// Writes the pending bytes to the active file. On failure, cuts the file
    /// back to the last record boundary and reports the events lost.
    fn commit(&mut self) {
        if self.pending.is_empty() {
            return;
        }
        let result = self.write_pending();
        let mut events = std::mem::take(&mut self.pending_events);
        let markers = std::mem::take(&mut self.pending_markers);
        let bytes = self.pending.len() as u64;
        self.pending.clear();
        match result {
            Ok(()) => {
                self.len += bytes;
                self.dirty = true;
                self.write_behind();
                for event in &events {
                    match &mut self.since_check {
                        Some(written) => written.add(event.seq()),
                        None => self.since_check = Some(Gap::one(event.seq(), marker::IO)),
                    }
                }
                let c = &self.shared.counters;
                c.written.add(events.len() as u64);
                c.bytes.add(bytes);
                c.batches.inc();
                c.markers.add(markers.markers.len() as u64);
                c.gaps.add(markers.gaps.len() as u64);
                c.gap_events
                    .add(markers.gaps.iter().map(|g| g.count).sum::<u64>());
                if self.fsync == Fsync::Always {
                    self.unsynced.append(&mut events);
                    self.unsynced_markers.append(markers);
                } else {
                    // Written is what the other policies promise a waiter:
                    // not to a file that was removed (its acks fail there).
                    if !self.acks.is_empty() {
                        let _ = self.check_removed();
                    }
                    self.answer_acks(Ok(()));
                }
                // Kept with its capacity: the next batch is as large.
                events.clear();
                self.pending_events = events;
            }
            Err(e) => {
                self.cut_back(self.len);
                // The markers lost nothing new: they are owed again.
                self.owed.append(markers);
                let acks = std::mem::take(&mut self.acks);
                self.fail(&format!("write failed: {e}"), events, acks);
            }
        }
    }

    /// Under a policy that syncs, starts the disk writing each whole
    /// `WRITE_BEHIND` of the active file as soon as it is written, so that
    /// the sync at the next interval or rotation waits only for the rest.
    fn write_behind(&mut self) {
        if self.fsync == Fsync::Never {
            return;
        }
        let end = self.len - self.len % PAGE;
        if end < self.behind + WRITE_BEHIND {
            return;
        }
        if let Some(file) = self.file.as_mut() {
            file.write_behind(self.behind, end - self.behind);
        }
        self.behind = end;
    }

    fn write_pending(&mut self) -> io::Result<()> {
        self.open()?;
        let file = self.file.as_mut().expect("opened above");
        file.write_all(&self.pending)?;
        file.flush()
    }

    /// The active file, opened (and cut back to the last record boundary)
    /// if a failure closed it; its directory made again if it was removed.
    fn open(&mut self) -> io::Result<&mut Box<dyn JournalFile>> {
        if self.file.is_none() {
            let active = self.paths.active();
            let mut file = match self.fs.open_append(active) {
                // The directory was removed (`check_removed`).
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    self.fs.create_dir_all(self.paths.dir())?;
                    self.fs.open_append(active)?
                }
                opened => opened?,
            };
            let len = file.len()?;
            if len > self.len {
                file.truncate(self.len)?;
            } else if len < self.len {
                // Cut short, or made again, while closed: records go where
                // the file ends, so a later cut-back never pads it.
                self.len = len;
                self.synced_len = self.synced_len.min(len);
                self.behind = self.behind.min(len);
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
        self.behind = self.behind.min(len);
    }

    /// Counts and reports events the journal could not keep, and owes an
    /// `io` marker line for each.
    fn fail(
        &mut self,
        message: &str,
        events: Vec<Event>,
        acks: impl IntoIterator<Item = (EventId, Ack)>,
    ) {
        self.shared.counters.io_errors.inc();
        if self.failure.is_none() {
            self.failure = Some(message.to_owned());
        }
        let mut waited = Vec::new();
        for (id, ack) in acks {
            waited.push(id);
            let _ = ack.send(Err(message.to_owned()));
        }
        // Under `Fsync::Always` every event of a batch may be waited for.
        waited.sort_unstable();
        self.shared.counters.lost.add(events.len() as u64);
        self.owe_io(message, &events);
        for event in events {
            if waited.binary_search(&event.event_id()).is_ok() {
                // Its `record_and_wait` returns the error, and the bus
                // reports the event itself.
                continue;
            }
            self.shared.report(SinkFault {
                kind: SinkErrorKind::Io,
                message: format!("journal {message}; event not recorded"),
                event: Some(event),
            });
        }
    }

    /// Owes an `io` marker line for each of `events`.
    fn owe_io(&mut self, message: &str, events: &[Event]) {
        if events.is_empty() {
            return;
        }
        let message: Arc<str> = format!("journal {message}; event not written").into();
        for event in events {
            self.owed.push(Marker {
                event: event.clone(),
                reason: marker::IO,
                message: message.clone(),
            });
        }
    }

    fn sync_now(&mut self) {
        self.commit();
        let _ = self.check_removed();
        self.sync_dir();
        if !self.dirty {
            self.unsynced.clear();
            self.unsynced_markers = Owed::default();
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
                self.unsynced.clear();
                self.unsynced_markers = Owed::default();
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
                    // Events whose emit will fail must not stay on disk; their
                    // numbers get `io` markers once writing works again.
                    let synced = self.synced_len;
                    self.cut_back(synced);
                    self.dirty = false;
                    let cut = std::mem::take(&mut self.unsynced);
                    self.owe_io(&message, &cut);
                    let markers = std::mem::take(&mut self.unsynced_markers);
                    self.owed.append(markers);
                    self.answer_acks(Err(message));
                }
            }
        }
    }

    /// Looks whether the active file was removed while open, alone or with
    /// the journal's directory (`rm -r` of a run's directory mid-run). The
    /// records written to a removed file since it was last seen linked go
    /// with it when it is closed, synced or not: they are counted as lost
    /// (`JournalStats::lost`, an I/O error), reported once (a waited event
    /// by its own record's error), owed as one
    /// `io` range line (`system.journal_gap`), and a flush answers with
    /// the failure. The directory is made again and the range line starts
    /// a new active file, so what follows is kept. Marker and range lines
    /// written in that window go too; their events were counted when the
    /// markers were made.
    ///
    /// Whether it was removed. Called after a commit: before each sync and rotation, at each flush and close,
    /// before a waiter is told its event is written, and under
    /// `Fsync::Never` every `CHECK_REMOVED_EVERY`. A removal takes at most
    /// what was written since the check before it; a waited event
    /// (`record_and_wait`, a terminal event) is never acknowledged in a
    /// removed file. One `fstat`, and only when something was written
    /// since the last look.
    fn check_removed(&mut self) -> bool {
        if self.since_check.is_none() {
            return false;
        }
        self.look_removed()
    }

    /// [`check_removed`](Self::check_removed) whether or not anything was
    /// written since the last look: before a rotation, which would rename
    /// the removed file's path and lose its handle.
    fn look_removed(&mut self) -> bool {
        self.last_check = Instant::now();
        let removed = self
            .file
            .as_ref()
            .is_some_and(|file| file.is_removed().unwrap_or(false));
        let written = self.since_check.take();
        if !removed {
            return false;
        }
        let count = written.as_ref().map_or(0, |range| range.count);
        let path = self.paths.active().display();
        let message = if count == 0 {
            // Found before anything more was written to it (a rotation):
            // nothing of this run's since the last look went with it.
            format!(
                "file {path} was removed while in use, with no event written to it since it \
                 was last seen; a new file is started"
            )
        } else {
            format!(
                "file {path} was removed while in use: the {count} events written to it since \
                 it was last seen went with it; a new file is started"
            )
        };
        if count > 0 {
            self.shared.counters.io_errors.inc();
            self.shared.counters.lost.add(count);
            if self.failure.is_none() {
                self.failure = Some(message.clone());
            }
        }
        // A waited event's record returns the error and the bus reports
        // it; the rest is reported here, together.
        if count == 0 || count > self.acks.len() as u64 {
            self.shared.report(SinkFault {
                kind: SinkErrorKind::Io,
                message: format!("journal {message}"),
                event: None,
            });
        }
        // Nothing of the removed file is left to sync or cut back.
        self.forget_file();
        // Under `Fsync::Always`, these events' emits return the error.
        if count > 0 {
            self.answer_acks(Err(message));
        }
        if let Some(range) = written {
            self.owed.push_gap(range);
        }
        // A failure here fails the next open, which reports it.
        let _ = self.fs.create_dir_all(self.paths.dir());
        self.relock();
        // The range line starts the new file.
        self.pay_owed();
        self.commit();
        true
    }

    /// Takes the journal's lock again when its file is gone with the
    /// directory, so that a second writer is refused in the directory made
    /// again as it was before. A lock file still there is this journal's
    /// (only the active file was removed), or another writer's that got in
    /// first: that is said.
    fn relock(&mut self) {
        match retake_lock(&self.paths) {
            None => {}
            Some(Ok(lock)) => self.relock = Some(lock),
            Some(Err(e)) => self.shared.report(SinkFault {
                kind: SinkErrorKind::Io,
                message: format!(
                    "journal lock not taken again after its directory was removed: {e}"
                ),
                event: None,
            }),
        }
    }

    /// Syncs the directory if a rotation left its renames unsynced; a
    /// failure is counted and reported, and the next sync retries.
    fn sync_dir(&mut self) {
        if !self.dir_unsynced {
            return;
        }
        match self.fs.sync_dir(self.paths.dir()) {
            Ok(()) => self.dir_unsynced = false,
            Err(e) => {
                self.shared.counters.io_errors.inc();
                let message = format!("directory sync failed: {e}");
                if self.failure.is_none() {
                    self.failure = Some(message.clone());
                }
                self.shared.report(SinkFault {
                    kind: SinkErrorKind::Io,
                    message: format!("journal {message}"),
                    event: None,
                });
            }
        }
    }

    fn answer_acks(&mut self, result: Result<(), String>) {
        for (_, ack) in self.acks.drain(..) {
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
        // A removed file is not renamed: the new one replacing it has room.
        if self.look_removed() {
            return Ok(());
        }
        let start = Instant::now();
        if let Some(mut file) = self.file.take() {
            if self.fsync != Fsync::Never {
                if let Err(e) = file.sync() {
                    // Kept, so that the next sync retries it and, failing,
                    // cuts back and fails the waiters (not a sync of no file
                    // answering them as synced).
                    self.file = Some(file);
                    return Err(e);
                }
                self.dirty = false;
                self.synced_len = self.len;
                self.unsynced.clear();
                self.unsynced_markers = Owed::default();
                // A sync like any other (docs/journal-format.md: synced
                // "at rotation"), so counted like any other.
                self.shared.counters.syncs.inc();
                self.answer_acks(Ok(()));
            }
        }
        let spare = if self.max_files == 0 {
            self.fs.remove(self.paths.active())?;
            None
        } else {
            self.shifter.hand_over()?
        };
        self.len = 0;
        self.synced_len = 0;
        self.behind = 0;
        self.shared.counters.rotations.inc();
        // A spare made ahead by the renumbering thread is linked in as the
        // active file: no file to allocate on this thread. Without one (or
        // if the link fails) `open` creates the file as at start.
        let from_spare = spare.is_some_and(|spare| spare.link(self.paths.active()).is_ok());
        if !from_spare {
            self.shared.counters.rotations_created.inc();
        }
        self.open()?;
        match self.fsync {
            Fsync::Always => self.fs.sync_dir(self.paths.dir())?,
            // Nothing in the new file is promised before the next sync,
            // which syncs the directory too: one directory sync per interval,
            // not one per rotation.
            Fsync::Interval(_) => self.dir_unsynced = true,
            Fsync::Never => {}
        }
        self.shared
            .counters
            .rotation_nanos
            .add(u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX));
        Ok(())
    }

    /// Lets go of the active file and of everything known about what it
    /// holds (its length, what is unsynced, what was written since the
    /// last look for a removal): it is gone, or about to be. The next write
    /// opens the file at its path anew.
    fn forget_file(&mut self) {
        self.file = None;
        self.len = 0;
        self.synced_len = 0;
        self.behind = 0;
        self.dirty = false;
        self.unsynced.clear();
        self.unsynced_markers = Owed::default();
        self.since_check = None;
    }

    /// Removes every file, once renumbering is idle (its failure, if any,
    /// no longer matters: the files it was renaming are gone).
    fn clear(&mut self) -> io::Result<()> {
        self.forget_file();
        // Markers owed for events before the clear would stand for numbers
        // whose neighbours are gone: they go with the files.
        self.owed = Owed::default();
        let _ = self.shared.take_dropped();
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
        Msg::Event(_, None) | Msg::Skipped(_) => {}
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
