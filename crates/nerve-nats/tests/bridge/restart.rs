//! The server is killed (SIGKILL) and restarted mid-stream: the exporting
//! bridge reconnects, the events emitted meanwhile wait in its buffer and
//! are delivered, and its counters say what happened.
//!
//! The exporter reaches the server through a [`Gate`] the test keeps
//! closed until the importer has reconnected and resubscribed: core NATS
//! delivers only to subscriptions that exist when a message is published,
//! so the order of the two reconnections is decided, not left to chance.

use std::time::Duration;

use nerve::nats::{BRIDGE_CONNECTED, BRIDGE_DISCONNECTED, BridgeStats, NatsBridge, NatsOptions};
use nerve::{EventId, StreamOptions, json};

use crate::support::{Gate, NatsServer};
use crate::{bus, collect, try_collect};

const LIMIT: Duration = Duration::from_secs(60);
const BEFORE: usize = 1_000;
const DURING: usize = 2_000;

async fn until(what: &str, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: not within {LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// Runs the scenario with an export buffer of `capacity`; returns the
/// exporter's stats, the ids emitted (before and during the outage), and
/// the ids the importer received.
async fn kill_and_restart(capacity: usize) -> Option<(BridgeStats, Vec<EventId>, Vec<EventId>)> {
    let mut server = NatsServer::start()?;
    let gate = Gate::start(server.port()).await;
    let (a, b) = (bus(), bus());
    let fast = Duration::from_millis(10);
    let exporter = NatsBridge::connect(
        &gate.url(),
        &a,
        NatsOptions::new()
            .origin("exporter")
            .capacity(capacity)
            .reconnect_delay(fast),
    )
    .await
    .unwrap();
    let importer = NatsBridge::connect(
        &server.url(),
        &b,
        NatsOptions::new().origin("importer").reconnect_delay(fast),
    )
    .await
    .unwrap();
    importer.import("chunk.*").await.unwrap();
    importer.export("chunk.probe").unwrap();
    exporter.export("chunk.item").unwrap();
    let mut at_b = b
        .stream_with("chunk.item", StreamOptions::new().capacity(4 * DURING))
        .unwrap();
    let mut link = a.stream([BRIDGE_CONNECTED, BRIDGE_DISCONNECTED]).unwrap();

    let before: Vec<EventId> = (0..BEFORE)
        .map(|i| a.emit("chunk.item", json!({"i": i})).unwrap())
        .collect();
    // With a small buffer some of these are already evicted: wait for what
    // was published.
    assert!(exporter.flush(LIMIT).await, "the exporter could not flush");
    let published_before = exporter.stats().published;
    let mut received: Vec<EventId> = try_collect(&mut at_b, published_before as usize, LIMIT)
        .await
        .unwrap_or_else(|got| {
            panic!(
                "{} of {published_before}: exporter {:?} importer {:?} bus b {:?}",
                got.len(),
                exporter.stats(),
                importer.stats(),
                b.stats().subscribers
            )
        })
        .iter()
        .map(|e| e.event_id())
        .collect();

    gate.set_open(false);
    server.kill();
    until("both bridges see the loss", || {
        !exporter.stats().connected && !importer.stats().connected
    })
    .await;
    let mut sent = before;
    sent.extend((0..DURING).map(|i| a.emit("chunk.item", json!({"i": BEFORE + i})).unwrap()));
    assert_eq!(
        exporter.stats().published,
        published_before,
        "published while down"
    );

    server.restart();
    until("the importer reconnects", || importer.stats().connected).await;
    // The importer's subscription is back once its own probe comes back to
    // it (and is dropped there as an echo).
    let deadline = tokio::time::Instant::now() + LIMIT;
    while importer.stats().echoes_suppressed == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the importer did not resubscribe"
        );
        b.emit("chunk.probe", json!({})).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gate.set_open(true);
    until("the exporter reconnects", || exporter.stats().connected).await;
    assert!(exporter.flush(LIMIT).await, "the exporter could not flush");
    let stats = exporter.stats();
    let expected = (stats.published - published_before) as usize;
    received.extend(
        collect(&mut at_b, expected, LIMIT)
            .await
            .iter()
            .map(|e| e.event_id()),
    );
    assert!(at_b.is_empty(), "more arrived than was published");

    let kinds: Vec<String> = collect(&mut link, 2, LIMIT)
        .await
        .iter()
        .map(|e| e.event_type().to_owned())
        .collect();
    assert_eq!(kinds, [BRIDGE_DISCONNECTED, BRIDGE_CONNECTED]);
    Some((stats, sent, received))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_server_gets_every_buffered_event() {
    let Some((stats, sent, received)) = kill_and_restart(10_000).await else {
        return;
    };
    assert_eq!(received, sent, "events lost, repeated or reordered");
    assert_eq!(stats.published, (BEFORE + DURING) as u64, "{stats:?}");
    assert_eq!((stats.dropped, stats.publish_errors), (0, 0), "{stats:?}");
    assert_eq!((stats.disconnects, stats.reconnects), (1, 1), "{stats:?}");
    assert!(stats.connected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_buffer_while_disconnected_counts_every_drop() {
    let Some((stats, sent, received)) = kill_and_restart(100).await else {
        return;
    };
    // DropOldest: what arrives is the newest part of what was emitted, in
    // order, and everything else is counted as evicted.
    assert!(stats.dropped > 0, "{stats:?}");
    assert_eq!(stats.dropped_by_reason.get("evicted"), Some(&stats.dropped));
    assert_eq!(
        stats.published + stats.dropped,
        (BEFORE + DURING) as u64,
        "an event neither published nor counted as dropped: {stats:?}"
    );
    assert_eq!(received.len() as u64, stats.published);
    let mut rest = sent.iter();
    assert!(
        received.iter().all(|id| rest.any(|d| d == id)),
        "received events are not an ordered subset of those emitted"
    );
    assert_eq!((stats.disconnects, stats.reconnects), (1, 1), "{stats:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_emit_during_an_outage_returns_once_the_restarted_server_has_it() {
    let Some(mut server) = NatsServer::start() else {
        return;
    };
    let a = bus();
    let exporter = NatsBridge::connect(
        &server.url(),
        &a,
        NatsOptions::new().reconnect_delay(Duration::from_millis(10)),
    )
    .await
    .unwrap();
    exporter.export("job.*").unwrap();
    // Settled once before the outage: the probe inbox works.
    a.emit("job.completed", json!({"n": 1})).unwrap();
    assert_eq!(exporter.stats().ack_waits, 1);

    server.kill();
    until("the exporter sees the loss", || !exporter.stats().connected).await;
    for i in 0..100 {
        a.emit("job.step", json!({"i": i})).unwrap();
    }
    let emitter = a.clone();
    let last = std::thread::spawn(move || emitter.emit("job.failed", json!({})).unwrap());
    assert!(
        !last.is_finished(),
        "a terminal emit returned while the server was down"
    );
    server.restart();
    tokio::task::spawn_blocking(move || last.join().unwrap())
        .await
        .unwrap();
    let s = exporter.stats();
    assert!(s.connected, "{s:?}");
    // Published after the reconnection, in order, and answered for.
    assert_eq!((s.published, s.dropped), (102, 0), "{s:?}");
    assert_eq!((s.ack_waits, s.ack_wait_timeouts), (2, 0), "{s:?}");
}
