//! Two buses in separate processes: this test binary re-runs itself as the
//! child (`child_exports_ten_thousand_events`, a no-op unless
//! `NERVE_NATS_CHILD` names a server).

use std::process::Stdio;
use std::time::{Duration, Instant};

use nerve::nats::{NatsBridge, NatsOptions, imported_from};
use nerve::trace::TraceContext;
use nerve::{Event, json};

use crate::support::NatsServer;
use crate::{bus, collect};

const VAR: &str = "NERVE_NATS_CHILD";
const N: usize = 10_000;
const LIMIT: Duration = Duration::from_secs(120);
const TRACEPARENT: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

/// The child: says `proc.ready` once it listens for `ctl.*`, waits for
/// `ctl.start`, then exports `N` events caused by it and exits.
#[test]
fn child_exports_ten_thousand_events() {
    let Ok(url) = std::env::var(VAR) else { return };
    let rt = crate::child_runtime();
    rt.block_on(async {
        let bus = bus();
        let bridge = NatsBridge::connect(&url, &bus, NatsOptions::new().origin("child"))
            .await
            .unwrap();
        let mut control = bus.stream("ctl.*").unwrap();
        bridge.import("ctl.*").await.unwrap();
        bridge.export("proc.*").unwrap();
        bus.emit("proc.ready", json!({"pid": std::process::id()}))
            .unwrap();
        let start = collect(&mut control, 1, LIMIT).await.remove(0);
        let trace = TraceContext::parse(TRACEPARENT, None).unwrap();
        for i in 0..N {
            let event = Event::builder("proc.item")
                .data(json!({"i": i}))
                .correlation_id(start.correlation_id().unwrap().clone())
                .causation_id(start.event_id())
                .trace_context(trace.clone())
                .build()
                .unwrap();
            bus.emit_event(event).unwrap();
        }
        assert!(bridge.flush(LIMIT).await, "the child could not flush");
        let s = bridge.stats();
        assert_eq!((s.published, s.dropped), (N as u64 + 1, 0), "{s:?}");
        bridge.shutdown(LIMIT).await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_cross_processes_exactly_once_and_in_order() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let parent = bus();
    let bridge = NatsBridge::connect(&server.url(), &parent, NatsOptions::new().origin("parent"))
        .await
        .unwrap();
    let mut from_child = parent
        .stream_with("proc.*", nerve::StreamOptions::new().capacity(2 * N))
        .unwrap();
    bridge.import("proc.*").await.unwrap();
    bridge.export("ctl.*").unwrap();

    let mut child = crate::rerun("processes::child_exports_ten_thousand_events")
        .env(VAR, server.url())
        .spawn()
        .unwrap();

    let ready = collect(&mut from_child, 1, LIMIT).await.remove(0);
    assert_eq!(ready.event_type(), "proc.ready");
    let start = Event::builder("ctl.start")
        .correlation_id("batch-1")
        .build()
        .unwrap();
    let start_id = parent.emit_event(start).unwrap();

    let got = collect(&mut from_child, N, LIMIT).await;
    for (i, e) in got.iter().enumerate() {
        assert_eq!(e.data()["i"], i, "out of order or duplicated at {i}");
        assert_eq!(e.causation_id(), Some(start_id));
        assert_eq!(e.correlation_id().unwrap().as_str(), "batch-1");
        assert_eq!(e.trace_context().unwrap().traceparent(), TRACEPARENT);
        assert_eq!(imported_from(e).unwrap().bridge, "child");
    }
    let mut ids: Vec<_> = got.iter().map(Event::event_id).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), N, "an event id arrived twice");

    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the child did not exit");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(status.success(), "the child failed: {status}");
    assert!(from_child.is_empty(), "more than the child sent");
    crate::eventually(LIMIT, || {
        let s = bridge.stats();
        s.imported + s.import_rejected > N as u64
    })
    .await;
    let s = bridge.stats();
    assert_eq!((s.imported, s.import_rejected), (N as u64 + 1, 0), "{s:?}");
    assert_eq!(s.published, 1);
}

const EXIT_VAR: &str = "NERVE_NATS_EXIT_CHILD";
const ITEMS: usize = 2_000;

/// The child: exports `run.*`, emits `ITEMS` items and the terminal
/// `run.failed` from a plain `#[tokio::main]`-like runtime, and exits with
/// `process::exit(1)` the moment the emit returns: no flush, no shutdown,
/// as a port of `sys.exit(1)` would.
#[test]
fn child_exits_right_after_its_terminal_event() {
    let Ok(url) = std::env::var(EXIT_VAR) else {
        return;
    };
    let rt = crate::child_runtime();
    rt.block_on(async {
        let bus = bus();
        let bridge = NatsBridge::connect(&url, &bus, NatsOptions::new().origin("exiting"))
            .await
            .unwrap();
        bridge.export("run.*").unwrap();
        for i in 0..ITEMS {
            bus.emit("run.item", json!({"i": i})).unwrap();
        }
        bus.emit("run.failed", json!({"reason": "early validation"}))
            .unwrap();
        std::process::exit(1);
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_process_that_exits_right_after_its_terminal_emit_loses_nothing() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let parent = bus();
    let bridge = NatsBridge::connect(&server.url(), &parent, NatsOptions::new())
        .await
        .unwrap();
    let mut from_child = parent
        .stream_with("run.*", nerve::StreamOptions::new().capacity(4 * ITEMS))
        .unwrap();
    bridge.import("run.*").await.unwrap();
    // Three lives, each ended by `process::exit` at once.
    for life in 0..3 {
        let status = crate::rerun("processes::child_exits_right_after_its_terminal_event")
            .env(EXIT_VAR, server.url())
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert_eq!(status.code(), Some(1), "life {life}: {status}");
        let got = collect(&mut from_child, ITEMS + 1, LIMIT).await;
        for (i, e) in got[..ITEMS].iter().enumerate() {
            assert_eq!(e.event_type(), "run.item", "life {life}");
            assert_eq!(e.data()["i"], i, "life {life}: out of order at {i}");
        }
        assert_eq!(got[ITEMS].event_type(), "run.failed", "life {life}");
    }
}
