//! The JetStream server is killed (SIGKILL) and restarted on the same
//! store mid-stream: the durable exporter reconnects and delivers what was
//! buffered meanwhile, a terminal emit made during the outage returns once
//! the restarted stream acknowledged it, a durable importer continues, and
//! nothing acknowledged before the kill is lost.

use std::collections::HashSet;
use std::time::Duration;

use nerve::nats::{DeliverFrom, NatsBridge, NatsOptions};
use nerve::{EventId, StreamOptions, json};

use crate::durable::stream_ids;
use crate::support::NatsServer;
use crate::{bus, collect};

const LIMIT: Duration = Duration::from_secs(90);
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_restarted_jetstream_server_gets_every_buffered_event_and_loses_nothing_acknowledged() {
    let Some(mut server) = NatsServer::start() else {
        return;
    };
    let fast = Duration::from_millis(10);
    let options = || {
        NatsOptions::new()
            .reconnect_delay(fast)
            .terminal_wait(LIMIT)
    };
    let (a, b) = (bus(), bus());
    let exporter = NatsBridge::connect(&server.url(), &a, options().origin("exporter"))
        .await
        .unwrap();
    exporter.export_durable("chunk.*", "CHUNKS").await.unwrap();
    let importer = NatsBridge::connect(&server.url(), &b, options().origin("importer"))
        .await
        .unwrap();
    let mut at_b = b
        .stream_with(
            "chunk.*",
            StreamOptions::new().capacity(2 * (BEFORE + DURING)),
        )
        .unwrap();
    importer
        .import_durable("CHUNKS", "reader", DeliverFrom::All)
        .await
        .unwrap();

    let mut sent: Vec<EventId> = (0..BEFORE)
        .map(|i| a.emit("chunk.item", json!({"i": i})).unwrap())
        .collect();
    assert!(exporter.flush(LIMIT).await, "the exporter could not flush");
    assert_eq!(exporter.stats().acked, BEFORE as u64);
    let mut received: Vec<EventId> = collect(&mut at_b, BEFORE, LIMIT)
        .await
        .iter()
        .map(|e| e.event_id())
        .collect();

    server.kill();
    until("both bridges see the loss", || {
        !exporter.stats().connected && !importer.stats().connected
    })
    .await;
    sent.extend((0..DURING).map(|i| a.emit("chunk.item", json!({"i": BEFORE + i})).unwrap()));
    // A terminal emit during the outage waits for the restarted stream.
    let emitter = a.clone();
    let last = std::thread::spawn(move || emitter.emit("chunk.completed", json!({})).unwrap());
    let s = exporter.stats();
    assert_eq!(s.acked, BEFORE as u64, "acknowledged while down: {s:?}");
    assert!(
        !last.is_finished(),
        "a terminal emit returned while the server was down"
    );

    server.restart();
    until("the exporter reconnects", || exporter.stats().connected).await;
    let last = tokio::task::spawn_blocking(move || last.join().unwrap())
        .await
        .unwrap();
    sent.push(last);
    // When the terminal emit returned, the restarted stream held it and
    // everything before it, the events acknowledged before the kill too.
    let stored = stream_ids(&server.url(), "CHUNKS").await;
    assert_eq!(stored.len(), sent.len(), "the stream lacks events");
    assert!(
        stored == sent,
        "the stream holds other events or another order"
    );

    assert!(exporter.flush(LIMIT).await, "the exporter could not flush");
    let s = exporter.stats();
    assert_eq!(s.published, sent.len() as u64, "{s:?}");
    assert_eq!(
        (s.acked, s.ack_failed, s.dropped),
        (sent.len() as u64, 0, 0),
        "{s:?}"
    );
    assert_eq!((s.disconnects, s.reconnects), (1, 1), "{s:?}");
    assert_eq!((s.ack_waits, s.ack_wait_timeouts), (1, 0), "{s:?}");
    // Every failed attempt was retried until acknowledged.
    assert_eq!(s.nacked, s.retried, "{s:?}");

    // The durable importer continued where it stopped: every event once.
    received.extend(
        collect(&mut at_b, DURING + 1, LIMIT)
            .await
            .iter()
            .map(|e| e.event_id()),
    );
    let unique: HashSet<EventId> = received.iter().copied().collect();
    assert_eq!(unique.len(), received.len(), "an event arrived twice");
    assert_eq!(unique, sent.iter().copied().collect::<HashSet<_>>());
    until("the importer acknowledges everything", || {
        let s = importer.stats();
        s.acks_sent >= s.imported + s.duplicates_dropped
    })
    .await;
    let s = importer.stats();
    assert_eq!(s.imported, sent.len() as u64, "{s:?}");
    assert!(s.reconnects >= 1, "{s:?}");
    assert!(at_b.is_empty(), "more arrived than was sent");
}
