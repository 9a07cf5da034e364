//! Lifecycle: flush, shutdown (drained or not), runtimes given to the bus,
//! and workers that outlive their runtime.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, mpsc as std_mpsc};
use std::time::Duration;

use nerve_core::{Event, json};
use nerve_router::{Bus, EmitError, Outcome, Subscribe, SubscribeError};
use tokio::sync::{Semaphore, mpsc};

/// Upper bound on any wait; only reached when something is broken.
const LIMIT: Duration = Duration::from_secs(30);

/// An async handler that signals when it starts and then waits for a permit
/// from `gate`, counting the deliveries that finished.
fn gated(
    gate: &Arc<Semaphore>,
    started: &mpsc::UnboundedSender<u64>,
    done: &Arc<AtomicUsize>,
) -> impl Fn(Event) -> futures::future::BoxFuture<'static, ()> + Send + Sync + 'static {
    let (gate, started, done) = (gate.clone(), started.clone(), done.clone());
    move |e: Event| {
        let (gate, started, done) = (gate.clone(), started.clone(), done.clone());
        Box::pin(async move {
            started.send(e.data()["i"].as_u64().unwrap_or(0)).unwrap();
            gate.acquire().await.unwrap().forget();
            done.fetch_add(1, Ordering::SeqCst);
        })
    }
}

/// Releases one permit each time a gated handler starts, `n` times.
fn release_as_they_start(
    gate: Arc<Semaphore>,
    mut started: mpsc::UnboundedReceiver<u64>,
    n: usize,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        for _ in 0..n {
            started.recv().await.unwrap();
            gate.add_permits(1);
        }
    })
}

#[tokio::test]
async fn flush_returns_after_every_queued_delivery_finished() {
    const N: usize = 5;
    let bus = Bus::new();
    let gate = Arc::new(Semaphore::new(0));
    let (started_tx, started) = mpsc::unbounded_channel();
    let done = Arc::new(AtomicUsize::new(0));
    bus.subscribe_async("work.item", gated(&gate, &started_tx, &done))
        .unwrap();
    for i in 0..N {
        bus.emit("work.item", json!({"i": i})).unwrap();
    }
    assert_eq!(bus.stats().pending, N as u64);
    // Deliveries are only released one by one once they started, so if flush
    // returned early some would still be unfinished.
    let releaser = release_as_they_start(gate, started, N);
    tokio::time::timeout(LIMIT, bus.flush()).await.unwrap();
    assert_eq!(done.load(Ordering::SeqCst), N);
    assert_eq!(bus.stats().pending, 0);
    releaser.await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flush_waits_for_deliveries_queued_by_handlers() {
    let bus = Bus::new();
    let handled = Arc::new(Mutex::new(Vec::new()));
    let (b, h) = (bus.clone(), handled.clone());
    bus.subscribe_async("count.down", move |e: Event| {
        let (b, h) = (b.clone(), h.clone());
        async move {
            let n = e.data()["n"].as_u64().unwrap();
            tokio::task::yield_now().await;
            h.lock().unwrap().push(n);
            if n > 0 {
                b.emit("count.down", json!({"n": n - 1})).map(drop)
            } else {
                Ok(())
            }
        }
    })
    .unwrap();
    bus.emit("count.down", json!({"n": 20})).unwrap();
    tokio::time::timeout(LIMIT, bus.flush()).await.unwrap();
    assert_eq!(
        *handled.lock().unwrap(),
        (0..=20).rev().collect::<Vec<u64>>()
    );
}

#[tokio::test]
async fn shutdown_drains_and_is_idempotent() {
    const N: usize = 3;
    let bus = Bus::builder().shutdown_timeout(LIMIT).build().unwrap();
    let gate = Arc::new(Semaphore::new(0));
    let (started_tx, started) = mpsc::unbounded_channel();
    let done = Arc::new(AtomicUsize::new(0));
    bus.subscribe_async("work.item", gated(&gate, &started_tx, &done))
        .unwrap();
    bus.subscribe("work.*", |_: &Event| {}).unwrap();
    for i in 0..N {
        bus.emit("work.item", json!({"i": i})).unwrap();
    }
    let releaser = release_as_they_start(gate, started, N);

    let report = tokio::time::timeout(LIMIT, bus.shutdown()).await.unwrap();
    assert!(report.drained);
    assert_eq!(report.abandoned, 0);
    assert_eq!(
        done.load(Ordering::SeqCst),
        N,
        "queued deliveries ran to the end"
    );
    releaser.await.unwrap();

    assert_eq!(bus.shutdown().await, report);
    assert_eq!(bus.shutdown_blocking(), report);
    assert!(bus.is_closed());
    assert!(matches!(
        bus.emit("work.item", json!({})),
        Err(EmitError::Closed)
    ));
    assert!(matches!(
        bus.emit_and_wait("work.item", json!({})).await,
        Err(EmitError::Closed)
    ));
    assert!(matches!(
        bus.subscribe_async("work.*", |_: Event| async {}),
        Err(SubscribeError::Closed)
    ));
    let stats = bus.stats();
    assert_eq!(stats.subscriptions.active, 0);
    assert_eq!(
        (stats.events.delivered, stats.events.abandoned),
        (2 * N as u64, 0)
    );
}

/// Sets its flag when dropped: proof that a handler's future was cancelled.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

#[tokio::test]
async fn shutdown_with_a_stuck_handler_abandons_what_is_left() {
    let bus = Bus::builder()
        .handler_timeout(None)
        .shutdown_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let cancelled = Arc::new(AtomicBool::new(false));
    let c = cancelled.clone();
    bus.subscribe_async_with(
        "stuck.job",
        move |_: Event| {
            let (started_tx, flag) = (started_tx.clone(), DropFlag(c.clone()));
            async move {
                let _flag = flag;
                started_tx.send(()).unwrap();
                futures::future::pending::<()>().await;
            }
        },
        Subscribe::new().name("stuck").priority(1),
    )
    .unwrap();
    // Runs inline after the async delivery was queued: the emit is in.
    let (queued_tx, mut queued) = mpsc::unbounded_channel();
    bus.subscribe("stuck.job", move |_: &Event| queued_tx.send(()).unwrap())
        .unwrap();

    let waits: Vec<_> = (0..2)
        .map(|_| {
            let bus = bus.clone();
            tokio::spawn(async move { bus.emit_and_wait("stuck.job", json!({})).await })
        })
        .collect();
    for _ in 0..2 {
        tokio::time::timeout(LIMIT, queued.recv())
            .await
            .unwrap()
            .unwrap();
    }
    // The first delivery is running (and stuck); the second waits behind it.
    tokio::time::timeout(LIMIT, started.recv())
        .await
        .unwrap()
        .unwrap();

    let report = tokio::time::timeout(LIMIT, bus.shutdown()).await.unwrap();
    assert!(!report.drained);
    assert_eq!(report.abandoned, 2);

    for wait in waits {
        let report = tokio::time::timeout(LIMIT, wait)
            .await
            .expect("emit_and_wait hung after shutdown")
            .unwrap()
            .unwrap();
        let stuck: Vec<_> = report
            .outcomes
            .iter()
            .filter(|o| o.name.as_deref() == Some("stuck"))
            .map(|o| o.outcome.clone())
            .collect();
        assert_eq!(stuck, [Outcome::Abandoned]);
        assert_eq!(report.abandoned(), 1);
        assert!(!report.is_success());
    }
    assert!(
        cancelled.load(Ordering::SeqCst),
        "the stuck handler was cancelled"
    );
    let stats = bus.stats();
    assert_eq!(stats.events.abandoned, 2);
    assert_eq!(stats.pending, 0);
    assert_eq!(
        bus.shutdown().await,
        report,
        "a later call returns the first report"
    );
}

#[tokio::test]
async fn shutdown_also_cancels_deliveries_of_unsubscribed_handlers() {
    let bus = Bus::builder()
        .handler_timeout(None)
        .shutdown_timeout(Duration::from_millis(50))
        .build()
        .unwrap();
    let (started_tx, mut started) = mpsc::unbounded_channel();
    let id = bus
        .subscribe_async("stuck.job", move |_: Event| {
            let started_tx = started_tx.clone();
            async move {
                started_tx.send(()).unwrap();
                futures::future::pending::<()>().await;
            }
        })
        .unwrap();
    let b = bus.clone();
    let wait = tokio::spawn(async move { b.emit_and_wait("stuck.job", json!({})).await });
    tokio::time::timeout(LIMIT, started.recv())
        .await
        .unwrap()
        .unwrap();
    // Removed, but its delivery still runs.
    assert!(bus.unsubscribe(id));
    assert_eq!(bus.stats().pending, 1);

    let report = tokio::time::timeout(LIMIT, bus.shutdown()).await.unwrap();
    assert!(!report.drained);
    assert_eq!(report.abandoned, 1);
    let report = tokio::time::timeout(LIMIT, wait)
        .await
        .expect("emit_and_wait hung after shutdown")
        .unwrap()
        .unwrap();
    assert_eq!(report.outcomes[0].outcome, Outcome::Abandoned);
    let stats = bus.stats();
    assert_eq!((stats.events.abandoned, stats.pending), (1, 0));
}

#[test]
fn a_bus_with_its_own_runtime_serves_plain_sync_code() {
    assert!(tokio::runtime::Handle::try_current().is_err());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let bus = Bus::builder()
        .runtime(runtime.handle().clone())
        .build()
        .unwrap();
    let (tx, rx) = std_mpsc::channel();
    let tx = Mutex::new(tx);
    bus.subscribe_async("bg.task", move |e: Event| {
        let tx = tx.lock().unwrap().clone();
        async move {
            // A tokio timer: this runs on the bus's runtime, not on the caller's thread.
            tokio::time::sleep(Duration::ZERO).await;
            tx.send(e.data()["n"].as_u64().unwrap()).unwrap();
        }
    })
    .unwrap();

    bus.emit("bg.task", json!({"n": 1})).unwrap();
    assert_eq!(rx.recv_timeout(LIMIT).unwrap(), 1);

    let report = bus
        .emit_and_wait_blocking("bg.task", json!({"n": 2}))
        .unwrap();
    assert_eq!(report.outcomes[0].outcome, Outcome::Delivered);
    assert_eq!(rx.recv_timeout(LIMIT).unwrap(), 2);

    for n in 3..13 {
        bus.emit("bg.task", json!({"n": n})).unwrap();
    }
    bus.flush_blocking();
    assert_eq!(bus.stats().pending, 0);
    assert_eq!(
        rx.try_iter().collect::<Vec<_>>(),
        (3..13).collect::<Vec<u64>>()
    );
    assert!(bus.shutdown_blocking().drained);
}

#[test]
fn a_worker_is_restarted_after_its_runtime_was_dropped() {
    let bus = Bus::new();
    let handled = Arc::new(AtomicUsize::new(0));
    let h = handled.clone();
    bus.subscribe_async("job.run", move |_: Event| {
        let h = h.clone();
        async move {
            h.fetch_add(1, Ordering::SeqCst);
        }
    })
    .unwrap();
    let runtimes: [fn() -> tokio::runtime::Runtime; 3] = [
        || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        },
        || {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .enable_all()
                .build()
                .unwrap()
        },
        || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
        },
    ];
    for (n, make) in runtimes.iter().enumerate() {
        let runtime = make();
        let report = runtime
            .block_on(async {
                tokio::time::timeout(LIMIT, bus.emit_and_wait("job.run", json!({}))).await
            })
            .unwrap()
            .unwrap();
        assert_eq!(
            report.outcomes[0].outcome,
            Outcome::Delivered,
            "runtime {n}"
        );
        drop(runtime);
    }
    assert_eq!(handled.load(Ordering::SeqCst), 3);
    assert_eq!(bus.stats().events.abandoned, 0);
}

#[test]
fn a_delivery_to_a_dropped_runtime_is_abandoned_not_lost() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let bus = Bus::builder()
        .runtime(runtime.handle().clone())
        .build()
        .unwrap();
    bus.subscribe_async("job.run", |_: Event| async {}).unwrap();
    drop(runtime);
    let report = bus.emit_and_wait_blocking("job.run", json!({})).unwrap();
    assert_eq!(report.outcomes[0].outcome, Outcome::Abandoned);
    let stats = bus.stats();
    assert_eq!((stats.events.abandoned, stats.pending), (1, 0));
}

// ----- the edges of a run's life: the last handle, durable events, seq -----

/// A sink that records which events it was given and how.
#[derive(Default)]
struct Recording {
    /// `(seq, event_type, waited)` per recorded event.
    seen: Mutex<Vec<(u64, String, bool)>>,
    flushes: AtomicUsize,
    closes: AtomicUsize,
    last_seq: Option<u64>,
}

impl nerve_core::sink::EventSink for Recording {
    fn record(&self, event: &Event) -> Result<(), nerve_core::sink::SinkError> {
        let entry = (event.seq(), event.event_type().to_owned(), false);
        self.seen.lock().unwrap().push(entry);
        Ok(())
    }
    fn record_and_wait(&self, event: &Event) -> Result<(), nerve_core::sink::SinkError> {
        let entry = (event.seq(), event.event_type().to_owned(), true);
        self.seen.lock().unwrap().push(entry);
        Ok(())
    }
    fn last_seq(&self) -> Option<u64> {
        self.last_seq
    }
    fn flush(&self, _: Duration) -> Result<(), nerve_core::sink::SinkError> {
        self.flushes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
    fn close(&self, _: Duration) -> Result<(), nerve_core::sink::SinkError> {
        self.closes.fetch_add(1, Ordering::SeqCst);
        Ok(())
    }
}

#[test]
fn terminal_events_are_recorded_with_a_wait_and_others_are_not() {
    let sink = Arc::new(Recording::default());
    let bus = Bus::builder().journal(sink.clone()).build().unwrap();
    bus.emit("specimen.processing", json!({"sequence": 1}))
        .unwrap();
    bus.emit("specimen.failed", json!({"sequence": 1})).unwrap();
    bus.emit_event(Event::builder("run.note").terminal().build().unwrap())
        .unwrap();
    bus.emit("extraction.failed", json!({"run_id": "extraction_001"}))
        .unwrap();
    let waited: Vec<(String, bool)> = sink
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|(_, t, w)| (t.clone(), *w))
        .collect();
    assert_eq!(
        waited,
        [
            ("specimen.processing".to_owned(), false),
            ("specimen.failed".to_owned(), true),
            ("run.note".to_owned(), true),
            ("extraction.failed".to_owned(), true),
        ]
    );
}

#[test]
fn durable_patterns_replace_the_terminal_default() {
    let sink = Arc::new(Recording::default());
    let bus = Bus::builder()
        .journal(sink.clone())
        .durable_patterns(["audit.*"])
        .unwrap()
        .build()
        .unwrap();
    bus.emit("audit.login", json!({})).unwrap();
    bus.emit("specimen.failed", json!({})).unwrap();
    let none = Bus::builder()
        .journal(sink.clone())
        .durable_patterns(Vec::<&str>::new())
        .unwrap()
        .build()
        .unwrap();
    none.emit("extraction.failed", json!({})).unwrap();
    let waited: Vec<bool> = sink.seen.lock().unwrap().iter().map(|e| e.2).collect();
    assert_eq!(waited, [true, false, false]);
    assert!(
        Bus::builder().durable_patterns(["a..b"]).is_err(),
        "an invalid pattern is refused"
    );
}

#[test]
fn a_reopened_sink_continues_its_sequence() {
    let sink = Arc::new(Recording {
        last_seq: Some(41),
        ..Recording::default()
    });
    let bus = Bus::builder().journal(sink.clone()).build().unwrap();
    bus.emit("a.b", json!({})).unwrap();
    bus.emit("a.c", json!({})).unwrap();
    let seqs: Vec<u64> = sink.seen.lock().unwrap().iter().map(|e| e.0).collect();
    assert_eq!(seqs, [42, 43]);
    assert_eq!(
        bus.stats().events.emitted,
        2,
        "stats count this bus's events"
    );
}

#[test]
fn dropping_the_last_handle_drains_queued_deliveries_then_closes_the_journal() {
    let sink = Arc::new(Recording::default());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let bus = Bus::builder()
        .journal(sink.clone())
        .runtime(runtime.handle().clone())
        .build()
        .unwrap();
    let done = Arc::new(AtomicUsize::new(0));
    let (started_tx, started_rx) = std_mpsc::channel();
    let gate = Arc::new(Semaphore::new(0));
    {
        let (done, gate) = (done.clone(), gate.clone());
        bus.subscribe_async("job.*", move |_e: Event| {
            let (done, gate, started) = (done.clone(), gate.clone(), started_tx.clone());
            async move {
                let _ = started.send(());
                gate.acquire().await.unwrap().forget();
                done.fetch_add(1, Ordering::SeqCst);
            }
        })
        .unwrap();
    }
    // A handler that emits holds the bus weakly, so it does not keep it open.
    let weak = bus.downgrade();
    bus.subscribe("job.step", move |_e: &Event| {
        if let Some(bus) = weak.upgrade() {
            bus.emit("note.seen", json!({})).unwrap();
        }
    })
    .unwrap();
    let clone = bus.clone();
    for i in 0..3 {
        bus.emit("job.step", json!({"i": i})).unwrap();
    }
    started_rx.recv_timeout(Duration::from_secs(30)).unwrap();
    drop(clone);
    assert_eq!(sink.closes.load(Ordering::SeqCst), 0, "a handle is left");
    // Released from another thread, before or while the drop waits: either
    // way all three must have finished when it returns.
    let releaser = {
        let gate = gate.clone();
        std::thread::spawn(move || gate.add_permits(3))
    };
    drop(bus);
    releaser.join().unwrap();
    assert_eq!(
        done.load(Ordering::SeqCst),
        3,
        "the drop waited for the queue"
    );
    assert_eq!(
        sink.closes.load(Ordering::SeqCst),
        1,
        "and closed the journal"
    );
    let types: Vec<String> = sink
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|e| e.1.clone())
        .collect();
    assert_eq!(types.iter().filter(|t| *t == "note.seen").count(), 3);
}

#[test]
fn a_weak_handle_does_not_revive_a_dropped_bus() {
    let bus = Bus::new();
    let weak = bus.downgrade();
    assert!(weak.upgrade().is_some());
    drop(bus);
    assert!(weak.upgrade().is_none());
}

#[test]
fn a_shutdown_guard_shuts_down_a_bus_that_handlers_keep_alive() {
    let sink = Arc::new(Recording::default());
    let bus = Bus::builder().journal(sink.clone()).build().unwrap();
    let kept = bus.clone();
    // A handler holding a strong clone keeps the bus from its last drop.
    bus.subscribe("a.b", move |_e: &Event| {
        let _ = &kept;
    })
    .unwrap();
    {
        let _guard = bus.shutdown_guard();
        bus.emit("a.b", json!({})).unwrap();
    }
    assert!(bus.is_closed());
    assert_eq!(sink.closes.load(Ordering::SeqCst), 1);
}

/// A sink that refuses events of one type (or all).
struct Refusing {
    refuse: Option<&'static str>,
    seen: Mutex<Vec<(u64, String)>>,
}

impl nerve_core::sink::EventSink for Refusing {
    fn record(&self, event: &Event) -> Result<(), nerve_core::sink::SinkError> {
        if self.refuse.is_none_or(|t| t == event.event_type()) {
            return Err(nerve_core::sink::SinkError::new(
                nerve_core::sink::SinkErrorKind::Io,
                "disk full",
            ));
        }
        let entry = (event.seq(), event.event_type().to_owned());
        self.seen.lock().unwrap().push(entry);
        Ok(())
    }
    fn flush(&self, _: Duration) -> Result<(), nerve_core::sink::SinkError> {
        Ok(())
    }
}

#[test]
fn journal_errors_take_no_seq_and_are_not_recorded() {
    let sink = Arc::new(Refusing {
        refuse: Some("bad.event"),
        seen: Mutex::default(),
    });
    let bus = Bus::builder().journal(sink.clone()).build().unwrap();
    let reports = Arc::new(Mutex::new(Vec::new()));
    let log = reports.clone();
    bus.subscribe("system.journal_error", move |e: &Event| {
        log.lock().unwrap().push(e.seq());
    })
    .unwrap();
    bus.emit("good.event", json!({})).unwrap();
    bus.emit("bad.event", json!({})).unwrap();
    bus.emit("good.event", json!({})).unwrap();
    assert_eq!(
        *sink.seen.lock().unwrap(),
        [(1, "good.event".to_owned()), (3, "good.event".to_owned())],
        "seq 2 is the refused event, the journal's to account for"
    );
    assert_eq!(*reports.lock().unwrap(), [0], "published, unnumbered");
    assert_eq!(bus.stats().events.journal_errors, 1);
}

/// A durable event's `emit` promised it on disk: when the journal cannot
/// confirm it (a full disk here), the event is still delivered and
/// reported as every journal failure is, and `emit` says so. An event that
/// was not promised on disk is only reported.
#[test]
fn a_durable_event_the_journal_could_not_record_is_delivered_and_emit_says_so() {
    let sink = Arc::new(Refusing {
        refuse: None,
        seen: Mutex::default(),
    });
    let bus = Bus::builder().journal(sink).build().unwrap();
    let handled = Arc::new(Mutex::new(Vec::new()));
    let log = handled.clone();
    bus.subscribe("*", move |e: &Event| {
        log.lock().unwrap().push(e.event_type().to_owned());
    })
    .unwrap();
    bus.emit("specimen.processing", json!({"sequence": 1}))
        .unwrap();
    let err = bus
        .emit("extraction.failed", json!({"run_id": "extraction_001"}))
        .unwrap_err();
    let EmitError::NotRecorded { event_id, error } = &err else {
        panic!("{err:?}");
    };
    assert_eq!(error.kind(), nerve_core::sink::SinkErrorKind::Io);
    assert!(err.to_string().contains("disk full"), "{err}");
    let report = bus
        .emit_and_wait_blocking("upload.completed", json!({}))
        .unwrap_err();
    assert!(
        matches!(report, EmitError::NotRecorded { .. }),
        "{report:?}"
    );
    let query = nerve_core::query::HistoryQuery::new()
        .pattern("extraction.failed")
        .unwrap();
    let history = bus.history(&query);
    assert_eq!(history[0].event_id(), *event_id);
    assert_eq!(
        *handled.lock().unwrap(),
        [
            // Each report comes from the journal stage, before delivery.
            "system.journal_error",
            "specimen.processing",
            "system.journal_error",
            "extraction.failed",
            "system.journal_error",
            "upload.completed",
        ]
    );
    assert_eq!(bus.stats().events.journal_errors, 3);
}

// ----- a shutdown racing emits: refused, or recorded before the end -----

/// A sink that holds the recording of one event type until released,
/// saying when it started holding it.
struct Holding {
    held: &'static str,
    holding: std_mpsc::Sender<()>,
    release: Mutex<std_mpsc::Receiver<()>>,
    seen: Mutex<Vec<(u64, String)>>,
}

impl Holding {
    fn new(held: &'static str) -> (Arc<Self>, std_mpsc::Receiver<()>, std_mpsc::Sender<()>) {
        let (holding, is_holding) = std_mpsc::channel();
        let (release, released) = std_mpsc::channel();
        let sink = Arc::new(Self {
            held,
            holding,
            release: Mutex::new(released),
            seen: Mutex::default(),
        });
        (sink, is_holding, release)
    }

    fn write(&self, event: &Event) {
        if event.event_type() == self.held {
            self.holding.send(()).unwrap();
            self.release.lock().unwrap().recv_timeout(LIMIT).unwrap();
        }
        let entry = (event.seq(), event.event_type().to_owned());
        self.seen.lock().unwrap().push(entry);
    }

    fn seen(&self) -> Vec<(u64, String)> {
        self.seen.lock().unwrap().clone()
    }
}

impl nerve_core::sink::EventSink for Holding {
    fn record(&self, event: &Event) -> Result<(), nerve_core::sink::SinkError> {
        self.write(event);
        Ok(())
    }
    fn record_and_wait(&self, event: &Event) -> Result<(), nerve_core::sink::SinkError> {
        self.write(event);
        Ok(())
    }
    fn flush(&self, _: Duration) -> Result<(), nerve_core::sink::SinkError> {
        Ok(())
    }
}

/// Waits (yielding, up to `LIMIT`) until the bus is closed.
fn until_closed(bus: &Bus) {
    let deadline = std::time::Instant::now() + LIMIT;
    while !bus.is_closed() {
        assert!(std::time::Instant::now() < deadline, "the bus never closed");
        std::thread::yield_now();
    }
}

/// What Ctrl-C in the demo does: the signal thread shuts the bus down with
/// `system.interrupted` while the run's thread is inside an emit (here,
/// held in the journal's write). The shutdown waits for that emit, so the
/// journal ends with the last event, and the emits after the close are
/// refused. Before the gate, `system.interrupted` was written first and
/// the straggler after it (CI saw this in `ctrl_c_ends_the_run_cleanly`).
#[test]
fn shutdown_with_waits_for_an_emit_already_accepted_then_ends_the_journal() {
    let (sink, holding, release) = Holding::new("specimen.processing");
    let bus = Bus::builder().journal(sink.clone()).build().unwrap();
    bus.emit("extraction.started", json!({})).unwrap();
    let emitter = {
        let bus = bus.clone();
        std::thread::spawn(move || bus.emit("specimen.processing", json!({"sequence": 7})))
    };
    holding.recv_timeout(LIMIT).unwrap();
    let stopper = {
        let bus = bus.clone();
        std::thread::spawn(move || {
            let last = Event::builder("system.interrupted")
                .terminal()
                .build()
                .unwrap();
            bus.shutdown_with(last)
        })
    };
    until_closed(&bus);
    assert!(matches!(
        bus.emit("specimen.completed", json!({})),
        Err(EmitError::Closed)
    ));
    assert_eq!(
        sink.seen().len(),
        1,
        "nothing more is recorded while the accepted emit is held: {:?}",
        sink.seen()
    );
    release.send(()).unwrap();
    assert!(emitter.join().unwrap().is_ok(), "accepted, so recorded");
    let report = stopper.join().unwrap();
    assert!(report.drained);
    let types: Vec<(u64, String)> = sink.seen();
    assert_eq!(
        types,
        [
            (1, "extraction.started".to_owned()),
            (2, "specimen.processing".to_owned()),
            (3, "system.interrupted".to_owned()),
        ]
    );
}

/// The same for a plain shutdown: the journal is closed only after the
/// emit it accepted has been written.
#[test]
fn shutdown_blocking_waits_for_an_emit_already_accepted_before_closing_the_journal() {
    let (sink, holding, release) = Holding::new("specimen.processing");
    let bus = Bus::builder().journal(sink.clone()).build().unwrap();
    let emitter = {
        let bus = bus.clone();
        std::thread::spawn(move || bus.emit("specimen.processing", json!({})))
    };
    holding.recv_timeout(LIMIT).unwrap();
    let stopper = {
        let bus = bus.clone();
        std::thread::spawn(move || bus.shutdown_blocking())
    };
    until_closed(&bus);
    release.send(()).unwrap();
    assert!(emitter.join().unwrap().is_ok());
    assert!(stopper.join().unwrap().drained);
    assert_eq!(sink.seen(), [(1, "specimen.processing".to_owned())]);
}

/// A shutdown that cannot wait for an emit stuck in the journal gives up
/// after its timeout, rather than hanging the program's exit.
#[test]
fn a_shutdown_waits_for_a_stuck_emit_only_up_to_its_timeout() {
    let (sink, holding, release) = Holding::new("specimen.processing");
    let bus = Bus::builder()
        .journal(sink.clone())
        .shutdown_timeout(Duration::from_millis(20))
        .build()
        .unwrap();
    let emitter = {
        let bus = bus.clone();
        std::thread::spawn(move || bus.emit("specimen.processing", json!({})))
    };
    holding.recv_timeout(LIMIT).unwrap();
    let last = Event::builder("system.interrupted").build().unwrap();
    let report = bus.shutdown_with(last);
    assert!(report.drained, "no delivery was queued");
    assert_eq!(sink.seen(), [(2, "system.interrupted".to_owned())]);
    release.send(()).unwrap();
    assert!(emitter.join().unwrap().is_ok());
}
