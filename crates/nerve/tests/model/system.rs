//! The system under test: a bus with a journal (on a file system that fails
//! on command), a persistent dead letter queue, handlers and streams; each
//! step applied to it and to the model, then everything compared.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use futures::{FutureExt, StreamExt};
use nerve::journal::fs::{FaultyFs, Op as FsOp};
use nerve::journal::{JournalReader, ReadError};
use nerve::sink::EventSink;
use nerve::{
    Bus, DeadLetterJournal, DeadLetterQueue, EmitError, Event, EventStream, HandlerError,
    HistoryQuery, Journal, Overflow, StreamOptions, Subscribe, json,
};

use crate::model::{Handler, Model, Stream};
use crate::ops::{Behaviour, Fault, Kind, Op, Pattern, Policy};

/// A generous bound for flushes that take milliseconds.
const WAIT: Duration = Duration::from_secs(30);
/// Backups the journal keeps; small, so that retention removes files.
pub(crate) const MAX_FILES: usize = 2;
/// The journal's rotation size: a few events a file.
const MAX_BYTES: u64 = 1024;
/// The in-memory history's capacity.
const HISTORY: usize = 8;

/// One tokio runtime for every case's async handlers.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
}

/// Handler panics are part of the test: keep them out of the output.
pub(crate) fn quiet_injected_panics() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let injected = info
                .payload()
                .downcast_ref::<&str>()
                .is_some_and(|m| m.contains("injected panic"));
            if !injected {
                default(info);
            }
        }));
    });
}

/// What a handler does with `event`.
fn handle(event: &Event, behaviour: Behaviour, healed: &AtomicBool) -> Result<(), HandlerError> {
    if event.data()["bad"] != true || healed.load(Ordering::SeqCst) {
        return Ok(());
    }
    match behaviour {
        Behaviour::Succeeds => Ok(()),
        Behaviour::Fails => Err(HandlerError::new("injected failure")),
        Behaviour::Panics => panic!("injected panic"),
    }
}

/// The running parts, rebuilt on each restart.
struct Live {
    bus: Bus,
    journal: Journal,
    dlq: DeadLetterQueue,
    fs: FaultyFs,
    streams: Vec<EventStream>,
}

pub(crate) struct System {
    _dir: tempfile::TempDir,
    path: PathBuf,
    dead_path: PathBuf,
    live: Option<Live>,
    /// Per model handler, by name: the flag its `Heal` step sets.
    healed: BTreeMap<String, Arc<AtomicBool>>,
    /// Every handler subscribed to the current bus, by id, unsubscribed
    /// ones included.
    names: BTreeMap<u64, String>,
    pub(crate) model: Model,
}

impl System {
    pub(crate) fn new() -> Self {
        quiet_injected_panics();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("events.jsonl");
        let dead_path = dir.path().join("dead_letters.jsonl");
        let mut system = Self {
            _dir: dir,
            path,
            dead_path,
            live: None,
            healed: BTreeMap::new(),
            names: BTreeMap::new(),
            model: Model::default(),
        };
        system.open();
        system
    }

    fn live(&self) -> &Live {
        self.live.as_ref().expect("open")
    }

    /// Opens the journal, the dead letter queue and the bus, and subscribes
    /// the model's handlers and streams again.
    fn open(&mut self) {
        let fs = FaultyFs::new();
        let journal = Journal::builder(&self.path)
            .max_bytes(MAX_BYTES)
            .max_files(MAX_FILES)
            .fsync(nerve::Fsync::Never)
            .file_system(fs.clone())
            .build()
            .unwrap();
        let store = DeadLetterJournal::builder(&self.dead_path).build().unwrap();
        let dlq = DeadLetterQueue::with_store(store, 100_000);
        let bus = Bus::builder()
            .journal(journal.clone())
            .dead_letters(dlq.clone())
            .history_capacity(HISTORY)
            .runtime(runtime().handle().clone())
            .build()
            .unwrap();
        let mut live = Live {
            bus,
            journal,
            dlq,
            fs,
            streams: Vec::new(),
        };
        self.names.clear();
        for h in &mut self.model.handlers {
            h.id = subscribe(&live.bus, h, &self.healed[&h.name]);
            self.names.insert(h.id, h.name.clone());
        }
        for s in &mut self.model.streams {
            let stream = open_stream(&live.bus, s);
            s.id = stream.id().as_u64();
            live.streams.push(stream);
        }
        self.live = Some(live);
    }

    /// Shuts everything down: the bus (flushing and closing the journal),
    /// then the handles.
    fn close(&mut self) {
        let live = self.live.take().expect("open");
        live.bus.flush_blocking();
        live.bus.shutdown_blocking();
        drop(live.streams);
        drop(live.bus);
        drop(live.dlq);
        let _ = live.journal.close(WAIT);
        drop(live.journal);
    }

    pub(crate) fn apply(&mut self, op: &Op) {
        match *op {
            Op::Emit { b, bad, count } => {
                for _ in 0..count {
                    self.emit(b, bad, false);
                }
            }
            Op::Subscribe {
                kind,
                behaviour,
                pattern,
            } => {
                let name = self.model.name("h");
                let healed = Arc::new(AtomicBool::new(false));
                self.healed.insert(name.clone(), healed.clone());
                let mut h = Handler {
                    name,
                    kind,
                    behaviour,
                    pattern,
                    healed: false,
                    id: 0,
                    offered: 0,
                    succeeded: 0,
                    failed: 0,
                    panicked: 0,
                };
                h.id = subscribe(&self.live().bus, &h, &healed);
                self.names.insert(h.id, h.name.clone());
                self.model.handlers.push(h);
            }
            Op::Unsubscribe { pick } => {
                if self.model.handlers.is_empty() {
                    return;
                }
                let h = self.model.handlers.remove(pick % self.model.handlers.len());
                let id = nerve::SubscriptionId::from_u64(h.id);
                assert!(self.live().bus.unsubscribe(id), "unsubscribe {}", h.name);
            }
            Op::Heal { pick } => {
                if self.model.handlers.is_empty() {
                    return;
                }
                let i = pick % self.model.handlers.len();
                let h = &mut self.model.handlers[i];
                h.healed = true;
                self.healed[&h.name].store(true, Ordering::SeqCst);
            }
            Op::OpenStream {
                pattern,
                policy,
                capacity,
            } => {
                let name = self.model.name("s");
                let mut s = Stream {
                    name,
                    pattern,
                    policy,
                    capacity,
                    id: 0,
                    queue: Default::default(),
                    batch: Default::default(),
                    offered: 0,
                    delivered: 0,
                    dropped: BTreeMap::new(),
                };
                let stream = open_stream(&self.live().bus, &s);
                s.id = stream.id().as_u64();
                self.model.streams.push(s);
                self.live.as_mut().unwrap().streams.push(stream);
            }
            Op::Read { pick, count } => {
                if self.model.streams.is_empty() {
                    return;
                }
                let i = pick % self.model.streams.len();
                let stream = &mut self.live.as_mut().unwrap().streams[i];
                for _ in 0..count {
                    let expected = self.model.streams[i].read();
                    let got = stream.next().now_or_never().flatten();
                    assert_eq!(
                        got.map(|e| n_of(&e)),
                        expected.map(Some),
                        "stream {} read",
                        self.model.streams[i].name
                    );
                }
            }
            Op::CloseStream { pick } => {
                if self.model.streams.is_empty() {
                    return;
                }
                let i = pick % self.model.streams.len();
                self.model.streams.remove(i);
                drop(self.live.as_mut().unwrap().streams.remove(i));
            }
            Op::Retry { pick } => self.retry(pick),
            Op::Fault {
                fault,
                times,
                emits,
            } => {
                let live = self.live();
                live.fs.fail(fs_op(fault), times);
                for k in 0..emits {
                    self.emit(k % 2 == 0, false, true);
                }
                let live = self.live();
                let _ = live.journal.flush(WAIT);
                live.fs.heal();
                let _ = live.journal.flush(WAIT);
            }
            Op::Restart { torn } => {
                self.close();
                if let Some(cut) = torn {
                    self.tear(u64::from(cut));
                }
                self.model.restart();
                self.open();
            }
        }
    }

    fn emit(&mut self, b: bool, bad: bool, fault: bool) {
        self.make_room_in_block_streams(b);
        let expected = self.model.emit(b, bad, fault);
        let kind = if b { "work.b" } else { "work.a" };
        let result = self
            .live()
            .bus
            .emit(kind, json!({"n": expected.n, "bad": bad}));
        match result {
            Ok(_) => assert!(!expected.refused, "emit {} not refused", expected.n),
            Err(EmitError::QueueFull { .. }) => {
                assert!(expected.refused, "emit {} refused", expected.n);
            }
            Err(e) => panic!("emit {}: {e}", expected.n),
        }
    }

    /// Reads from every full `Block` stream that a `work.{a|b}` event
    /// matches until it has room, checking each event read against the
    /// model, so that the emit does not wait forever on this one thread.
    fn make_room_in_block_streams(&mut self, b: bool) {
        let kind = if b { Pattern::B } else { Pattern::A };
        for i in 0..self.model.streams.len() {
            let s = &self.model.streams[i];
            if s.policy != Policy::Block || !s.pattern.matches(kind) {
                continue;
            }
            while self.model.streams[i].queue.len() >= self.model.streams[i].capacity {
                let expected = self.model.streams[i].read();
                let stream = &mut self.live.as_mut().unwrap().streams[i];
                let got = stream.next().now_or_never().flatten();
                assert_eq!(
                    got.map(|e| n_of(&e)),
                    expected.map(Some),
                    "Block stream {} read to make room",
                    self.model.streams[i].name
                );
            }
        }
    }

    /// Retries one of the dead letters the model can predict.
    fn retry(&mut self, pick: usize) {
        let retryable: Vec<usize> = (0..self.model.dead.len())
            .filter(|i| self.model.dead[*i].retryable())
            .collect();
        if retryable.is_empty() {
            return;
        }
        let i = retryable[pick % retryable.len()];
        let want = self.model.dead[i].clone();
        let real = self
            .live()
            .dlq
            .entries()
            .into_iter()
            .find(|e| {
                e.reason.as_str() == want.reason
                    && n_of(&e.event) == Some(want.n)
                    && e.subscription_name == want.subscription
            })
            .unwrap_or_else(|| panic!("no dead letter like {want:?}"));
        let ok = self.model.retry(i);
        let result = self.live().dlq.retry_blocking(real.id);
        assert_eq!(result.is_ok(), ok, "retry of {want:?}: {result:?}");
    }

    /// Cuts `cut` bytes (at most the last line) off the closed journal's
    /// active file: its last line is torn, and its event lost.
    fn tear(&mut self, cut: u64) {
        let bytes = std::fs::read(&self.path).unwrap_or_default();
        if bytes.is_empty() {
            return;
        }
        let body = &bytes[..bytes.len() - 1];
        let start = body.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
        let last = &bytes[start..];
        let cut = cut.min(last.len() as u64);
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(&self.path)
            .unwrap();
        file.set_len(bytes.len() as u64 - cut).unwrap();
        let line: serde_json::Value = serde_json::from_slice(last).unwrap();
        if let Some(n) = line["data"]["n"].as_u64() {
            self.model.tear(n);
        }
    }

    /// Compares everything with the model.
    pub(crate) fn check(&self) {
        let live = self.live();
        live.bus.flush_blocking();
        live.journal.flush(WAIT).expect("the journal flushes");
        self.check_journal();
        self.check_history();
        self.check_subscribers();
        self.check_dead_letters();
    }

    fn check_journal(&self) {
        let disk = &self.model.disk;
        let (events, errors) = read_journal(&self.path);
        assert!(errors.is_empty(), "journal read errors: {errors:?}");
        let work: Vec<(u64, u64)> = events
            .iter()
            .filter_map(|e| n_of(e).map(|n| (n, e.seq())))
            .collect();
        for pair in work.windows(2) {
            assert!(
                pair[0].0 < pair[1].0 && pair[0].1 < pair[1].1,
                "events on disk in emit and seq order: {pair:?}"
            );
        }
        // Every accepted event has at most one line (itself, or a marker
        // saying why it could not be written, which may come later than
        // newer events): a number twice means a restart numbered again
        // what the journal held.
        let mut seqs: Vec<u64> = events.iter().map(Event::seq).filter(|s| *s != 0).collect();
        seqs.sort_unstable();
        for pair in seqs.windows(2) {
            assert!(
                pair[0] < pair[1],
                "every seq on disk once: {}",
                dump(&events)
            );
        }
        let on_disk: Vec<u64> = work.iter().map(|(n, _)| *n).collect();
        for n in &on_disk {
            assert!(
                disk.acknowledged.binary_search(n).is_ok() || disk.uncertain.contains(n),
                "event {n} on disk was never emitted or was torn"
            );
        }
        // Retention removes the oldest files: what is left of the
        // acknowledged events is a suffix, and holds the newest.
        let first = on_disk.first().copied().unwrap_or(u64::MAX);
        let kept: Vec<u64> = disk
            .acknowledged
            .iter()
            .copied()
            .filter(|n| *n >= first)
            .collect();
        let acknowledged_on_disk: Vec<u64> = on_disk
            .iter()
            .copied()
            .filter(|n| !disk.uncertain.contains(n))
            .collect();
        assert_eq!(
            acknowledged_on_disk,
            kept,
            "acknowledged events from the oldest kept on: {}",
            dump(&events)
        );
        if std::env::var_os("NERVE_MODEL_DEBUG").is_some() {
            eprintln!("{}", listing(self.path.parent().unwrap()));
        }
        let files = JournalReader::open(&self.path).unwrap().files().len();
        assert!(files <= MAX_FILES + 1, "{files} journal files");
    }

    fn check_history(&self) {
        let live = self.live();
        // The bus's reports of journal faults are not numbered, and kept in
        // a ring of their own: only numbered events count here.
        let all: Vec<Event> = live
            .bus
            .history(&HistoryQuery::new().oldest_first())
            .into_iter()
            .filter(|e| e.seq() != 0)
            .collect();
        assert!(all.len() <= HISTORY, "history within its capacity");
        let work: Vec<u64> = all.iter().filter_map(n_of).collect();
        let model = &self.model.history;
        if all.len() < HISTORY {
            // Not full: every event of this bus is there (the bus's own
            // `system.*` events besides).
            assert_eq!(&work, model, "history holds every event");
        }
        assert!(
            model.ends_with(&work),
            "history's events {work:?} are the newest of {model:?}"
        );
    }

    fn check_subscribers(&self) {
        let stats = self.live().bus.stats();
        let by_id: BTreeMap<u64, _> = stats.subscribers.iter().map(|s| (s.id, s)).collect();
        assert_eq!(
            by_id.len(),
            self.model.handlers.len() + self.model.streams.len(),
            "live subscriptions"
        );
        for s in &stats.subscribers {
            assert_eq!(
                s.offered,
                s.delivered + s.dropped + s.queued,
                "offered == delivered + dropped + queued for {:?}",
                s.name
            );
            assert_eq!(s.dropped, s.dropped_by_reason.values().sum::<u64>());
        }
        for h in &self.model.handlers {
            let s = by_id[&h.id];
            assert_eq!(s.name.as_deref(), Some(h.name.as_str()));
            let got = (s.offered, s.succeeded, s.failed, s.panicked, s.dropped);
            let want = (h.offered, h.succeeded, h.failed, h.panicked, 0);
            assert_eq!(
                got, want,
                "(offered, succeeded, failed, panicked, dropped) of {}",
                h.name
            );
        }
        for m in &self.model.streams {
            let s = by_id[&m.id];
            assert_eq!(s.name.as_deref(), Some(m.name.as_str()));
            let got = (s.offered, s.delivered, s.queued);
            let want = (m.offered, m.delivered, m.queue.len() as u64);
            assert_eq!(got, want, "(offered, delivered, queued) of {}", m.name);
            let dropped: BTreeMap<&str, u64> =
                s.dropped_by_reason.iter().map(|(k, v)| (*k, *v)).collect();
            assert_eq!(dropped, m.dropped, "drops by reason of {}", m.name);
        }
    }

    fn check_dead_letters(&self) {
        let live = self.live();
        let ids: BTreeMap<u64, &str> = self
            .names
            .iter()
            .map(|(id, name)| (*id, name.as_str()))
            .collect();
        let mut got: Vec<_> = live
            .dlq
            .entries()
            .iter()
            .map(|e| {
                let targets: Vec<String> = e
                    .targets
                    .iter()
                    .map(|t| {
                        ids.get(&t.as_u64())
                            .map_or(format!("{t}"), |n| (*n).to_owned())
                    })
                    .collect();
                (
                    e.reason.as_str(),
                    n_of(&e.event).expect("a work event"),
                    e.subscription_name.clone(),
                    e.attempts,
                    targets.len(),
                )
            })
            .collect();
        let mut want: Vec<_> = self
            .model
            .dead
            .iter()
            .map(|e| {
                (
                    e.reason,
                    e.n,
                    e.subscription.clone(),
                    e.attempts,
                    e.targets.len(),
                )
            })
            .collect();
        got.sort();
        want.sort();
        assert_eq!(
            got, want,
            "dead letters (reason, event, subscription, attempts, targets)"
        );
        let mut by_reason: BTreeMap<&str, usize> = BTreeMap::new();
        for e in &self.model.dead {
            *by_reason.entry(e.reason).or_default() += 1;
        }
        assert_eq!(
            live.dlq.stats().by_reason,
            by_reason,
            "dead letters by reason"
        );
        // Named targets of entries made by this bus are the model's.
        for e in self
            .model
            .dead
            .iter()
            .filter(|e| !e.restored && !e.targets.is_empty())
        {
            let real = live
                .dlq
                .entries()
                .into_iter()
                .find(|r| r.reason.as_str() == e.reason && n_of(&r.event) == Some(e.n))
                .unwrap();
            let names: Vec<&str> = real.targets.iter().map(|t| ids[&t.as_u64()]).collect();
            let mut want: Vec<&str> = e.targets.iter().map(String::as_str).collect();
            let mut names = names;
            names.sort_unstable();
            want.sort_unstable();
            assert_eq!(names, want, "targets of the all-failed entry for {}", e.n);
        }
    }

    pub(crate) fn finish(mut self) {
        self.close();
    }
}

fn subscribe(bus: &Bus, h: &Handler, healed: &Arc<AtomicBool>) -> u64 {
    let options = Subscribe::new().name(h.name.clone());
    let behaviour = h.behaviour;
    let healed = healed.clone();
    let id = match h.kind {
        Kind::Sync => bus.subscribe_with(
            h.pattern.as_str(),
            move |e: &Event| handle(e, behaviour, &healed),
            options,
        ),
        Kind::Async => bus.subscribe_async_with(
            h.pattern.as_str(),
            move |e: Event| {
                let healed = healed.clone();
                async move { handle(&e, behaviour, &healed) }
            },
            options,
        ),
    };
    id.unwrap().as_u64()
}

fn open_stream(bus: &Bus, s: &Stream) -> EventStream {
    let overflow = match s.policy {
        Policy::DropNewest => Overflow::DropNewest,
        Policy::DropOldest => Overflow::DropOldest,
        Policy::Error => Overflow::Error,
        Policy::Block => Overflow::Block,
        Policy::BlockTimeout => Overflow::BlockTimeout(Duration::from_millis(1)),
    };
    bus.stream_with(
        s.pattern.as_str(),
        StreamOptions::new()
            .capacity(s.capacity)
            .overflow(overflow)
            .name(s.name.clone()),
    )
    .unwrap()
}

fn fs_op(fault: Fault) -> FsOp {
    match fault {
        Fault::Open => FsOp::Open,
        Fault::Write => FsOp::Write,
        Fault::Flush => FsOp::Flush,
        Fault::Sync => FsOp::Sync,
        Fault::Rename => FsOp::Rename,
        Fault::Renumber => FsOp::Renumber,
        Fault::Remove => FsOp::Remove,
    }
}

/// The model's number of a work event.
fn n_of(event: &Event) -> Option<u64> {
    event.data()["n"].as_u64()
}

fn read_journal(path: &Path) -> (Vec<Event>, Vec<ReadError>) {
    let mut events = Vec::new();
    let mut errors = Vec::new();
    for item in JournalReader::open(path).unwrap() {
        match item {
            Ok(e) => events.push(e),
            Err(e) => errors.push(e),
        }
    }
    (events, errors)
}

/// The journal's lines, short, for a failure's message.
fn dump(events: &[Event]) -> String {
    events
        .iter()
        .map(|e| format!("\n  seq {} {} {}", e.seq(), e.event_type(), e.data()))
        .collect()
}

/// Each file of the journal's directory with its size and the numbers of
/// its lines, for `NERVE_MODEL_DEBUG=1` (where retention and markers left
/// what).
fn listing(dir: &Path) -> String {
    let mut out = String::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let seqs: Vec<u64> = text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter_map(|v| v["seq"].as_u64())
            .collect();
        let name = path.file_name().unwrap().to_string_lossy();
        out += &format!("{name}: {} bytes, seqs {seqs:?}\n", text.len());
    }
    out
}
