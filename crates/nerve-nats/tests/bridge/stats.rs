//! The bridge in the bus's own stats and metrics: its state, server and
//! counters appear in `bus.stats().attachments` and in the bus's metrics
//! recorder, through a connection loss and recovery, and leave with
//! `shutdown`.

use std::time::Duration;

use nerve::attachment::AttachmentState;
use nerve::metrics::{InMemoryMetrics, names};
use nerve::nats::{NatsBridge, NatsOptions};
use nerve::{Bus, json};

use crate::support::NatsServer;
use crate::{bus, collect};

const LIMIT: Duration = Duration::from_secs(60);

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

fn messages(metrics: &InMemoryMetrics, outcome: &str) -> u64 {
    metrics.counter_value(
        names::BRIDGE_MESSAGES_TOTAL,
        &[("bridge", "stats-a"), ("outcome", outcome)],
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bus_stats_and_metrics_show_the_bridge_through_an_outage() {
    let Some(mut server) = NatsServer::start() else {
        return;
    };
    let metrics = InMemoryMetrics::new();
    let a = Bus::builder()
        .history_capacity(0)
        .metrics(metrics.clone())
        .build()
        .unwrap();
    let b = bus();
    let fast = Duration::from_millis(10);
    let bridge = NatsBridge::connect(
        &server.url(),
        &a,
        NatsOptions::new()
            .origin("stats-a")
            .capacity(4)
            .reconnect_delay(fast),
    )
    .await
    .unwrap();
    let other = NatsBridge::connect(&server.url(), &b, NatsOptions::new().origin("stats-b"))
        .await
        .unwrap();
    bridge.export("job.*").unwrap();
    bridge.import("reply.*").await.unwrap();
    other.import("job.*").await.unwrap();
    other.export("reply.*").unwrap();
    let mut at_b = b.stream("job.*").unwrap();
    let mut at_a = a.stream("reply.*").unwrap();

    for i in 0..3 {
        a.emit("job.queued", json!({"i": i})).unwrap();
    }
    collect(&mut at_b, 3, LIMIT).await;
    b.emit("reply.done", json!({})).unwrap();
    collect(&mut at_a, 1, LIMIT).await;
    // The import is counted once the local emit returned, after the stream
    // had the event.
    crate::eventually(LIMIT, || bridge.stats().imported >= 1).await;

    let stats = a.stats();
    assert_eq!(stats.attachments.len(), 1, "{:?}", stats.attachments);
    let link = &stats.attachments[0];
    assert_eq!(
        (link.kind.as_str(), link.name.as_str()),
        ("nats", "stats-a")
    );
    assert_eq!(link.state, AttachmentState::Connected);
    assert_eq!(link.endpoint.as_deref(), Some(server.url().as_str()));
    assert_eq!(link.counters["published"], 3, "{link:?}");
    assert_eq!(link.counters["imported"], 1, "{link:?}");
    assert_eq!(link.counters["disconnects"], 0, "{link:?}");
    assert_eq!(link.subscriptions.len(), 1, "the export's stream");
    assert_eq!((link.buffered, link.dropped), (0, 0));
    // The snapshot serializes for dashboards with the attachment in it.
    let value = serde_json::to_value(&stats).unwrap();
    assert_eq!(value["attachments"][0]["state"], "connected");
    assert_eq!(value["attachments"][0]["counters"]["published"], 3);
    // The same counts in the bus's metrics recorder.
    assert_eq!(messages(&metrics, "published"), 3);
    assert_eq!(messages(&metrics, "imported"), 1);
    let label = [("bridge", "stats-a")];
    assert_eq!(
        metrics.gauge_value(names::BRIDGE_CONNECTED, &label),
        Some(1.0)
    );

    // Down: the state says so, and what is emitted waits in (and overflows)
    // the export's buffer, counted in the attachment's figures.
    server.kill();
    until("the bridge sees the loss", || !bridge.stats().connected).await;
    for i in 0..10 {
        a.emit("job.queued", json!({"i": 3 + i})).unwrap();
    }
    let down = a.stats().attachments.remove(0);
    assert_eq!(down.state, AttachmentState::Disconnected);
    assert_eq!(down.counters["disconnects"], 1);
    // Capacity 4: at most 4 wait in the stream (and the publisher holds
    // what it took off it), the rest were evicted, and counted as such.
    assert_eq!(down.dropped_by_reason.get("evicted"), Some(&down.dropped));
    assert!(down.dropped >= 1 && down.buffered <= 4, "{down:?}");
    assert_eq!(
        metrics.gauge_value(names::BRIDGE_CONNECTED, &label),
        Some(0.0)
    );
    assert_eq!(
        metrics.counter_value(names::BRIDGE_DISCONNECTS_TOTAL, &label),
        1
    );
    let bridge_stats = bridge.stats();
    assert_eq!(
        (bridge_stats.dropped, bridge_stats.buffered),
        (down.dropped, down.buffered),
        "BridgeStats and the attachment disagree"
    );

    // Back: connected again, what was buffered is published.
    server.restart();
    until("the bridge reconnects", || bridge.stats().connected).await;
    assert!(bridge.flush(LIMIT).await);
    let up = a.stats().attachments.remove(0);
    assert_eq!(up.state, AttachmentState::Connected);
    assert_eq!(up.counters["reconnects"], 1);
    assert_eq!(up.buffered, 0);
    assert_eq!(
        up.counters["published"] + up.dropped,
        13,
        "an event neither published nor counted as dropped: {up:?}"
    );
    assert_eq!(messages(&metrics, "published"), up.counters["published"]);
    assert_eq!(
        metrics.counter_value(names::BRIDGE_RECONNECTS_TOTAL, &label),
        1
    );
    assert_eq!(
        metrics.gauge_value(names::BRIDGE_CONNECTED, &label),
        Some(1.0)
    );

    bridge.shutdown(LIMIT).await;
    assert!(a.stats().attachments.is_empty(), "still attached");
    other.shutdown(LIMIT).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bridge_on_a_bus_is_its_own_attachment() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let a = bus();
    let one = NatsBridge::connect(&server.url(), &a, NatsOptions::new().origin("one"))
        .await
        .unwrap();
    let two = NatsBridge::connect(&server.url(), &a, NatsOptions::new().origin("two"))
        .await
        .unwrap();
    let names: Vec<String> = a.stats().attachments.into_iter().map(|s| s.name).collect();
    assert_eq!(names, ["one", "two"]);
    one.shutdown(LIMIT).await;
    one.shutdown(LIMIT).await; // idempotent
    let left: Vec<String> = a.stats().attachments.into_iter().map(|s| s.name).collect();
    assert_eq!(left, ["two"]);
    two.shutdown(LIMIT).await;
}
