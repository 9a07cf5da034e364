//! Events larger than the server takes (`max_payload`, 1 MiB by default).
//! async-nats checks the size of a publish without headers only; the
//! server closes the connection on a larger message, and the messages sent
//! after it on that connection are lost. Before, a 2 MiB event made the
//! two small events after it vanish, with no error and no counter but a
//! disconnect.

use std::time::Duration;

use nerve::json;
use nerve::nats::{NatsBridge, NatsOptions};

use crate::support::NatsServer;
use crate::{bus, collect};

const LIMIT: Duration = Duration::from_secs(60);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_larger_than_the_server_takes_is_counted_and_said() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let (a, b) = (bus(), bus());
    let out = NatsBridge::connect(&server.url(), &a, NatsOptions::new().origin("a"))
        .await
        .unwrap();
    let inn = NatsBridge::connect(&server.url(), &b, NatsOptions::new().origin("b"))
        .await
        .unwrap();
    out.export("scan.*").unwrap();
    inn.import("scan.*").await.unwrap();
    let mut errors = a.stream("system.bridge_error").unwrap();
    let mut got = b.stream("scan.*").unwrap();
    let big = a
        .emit("scan.big", json!({ "image": "x".repeat(2 << 20) }))
        .unwrap();
    a.emit("scan.small", json!({ "n": 1 })).unwrap();
    // Terminal: its emit waits until the server has it, and every message
    // before it.
    a.emit("scan.completed", json!({ "n": 2 })).unwrap();
    let arrived = collect(&mut got, 2, LIMIT).await;
    let types: Vec<&str> = arrived.iter().map(|e| e.event_type()).collect();
    assert_eq!(types, ["scan.small", "scan.completed"]);
    let error = collect(&mut errors, 1, LIMIT).await.remove(0);
    assert_eq!(error.data()["event_id"], big.to_string());
    let said = error.data()["error"].as_str().unwrap();
    assert!(
        said.contains("is larger than the server takes (max_payload 1048576 bytes)"),
        "{said}"
    );
    let stats = out.stats();
    assert_eq!(
        (stats.too_large, stats.published, stats.disconnects),
        (1, 2, 0),
        "{stats:?}"
    );
    out.shutdown(LIMIT).await;
    inn.shutdown(LIMIT).await;
}

/// The same through a durable export: the large event is refused at once
/// (not retried: it will not get smaller), the stream acknowledges the
/// rest, and the connection stays up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_export_refuses_an_event_larger_than_the_server_takes() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let a = bus();
    let out = NatsBridge::connect(&server.url(), &a, NatsOptions::new().origin("a"))
        .await
        .unwrap();
    out.export_durable("scan.*", "SCANS").await.unwrap();
    let mut errors = a.stream("system.bridge_error").unwrap();
    a.emit("scan.small", json!({ "n": 0 })).unwrap();
    let big = a
        .emit("scan.big", json!({ "image": "x".repeat(2 << 20) }))
        .unwrap();
    a.emit("scan.small", json!({ "n": 1 })).unwrap();
    a.emit("scan.completed", json!({ "n": 2 })).unwrap();
    assert!(out.flush(LIMIT).await);
    let error = collect(&mut errors, 1, LIMIT).await.remove(0);
    assert_eq!(error.data()["event_id"], big.to_string());
    assert_eq!(error.data()["stream"], "SCANS");
    let stats = out.stats();
    assert_eq!(
        (
            stats.too_large,
            stats.acked,
            stats.retried,
            stats.disconnects
        ),
        (1, 3, 0, 0),
        "{stats:?}"
    );
    out.shutdown(LIMIT).await;
}
