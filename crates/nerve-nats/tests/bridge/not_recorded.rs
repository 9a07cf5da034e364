//! A terminal event an export could not get confirmed: its `emit` says so
//! with `EmitError::NotRecorded`, as it does for an event the local
//! journal could not record. Before, such an emit returned `Ok` and only
//! the bridge's counters and a `system.bridge_error` told: a program that
//! emitted `extraction.failed` and then exited had no sign that its
//! verdict never reached the stream.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use nerve::nats::{NatsBridge, NatsOptions};
use nerve::sink::SinkErrorKind;
use nerve::{EmitError, Event, json};

use crate::support::NatsServer;
use crate::{bus, collect};

const LIMIT: Duration = Duration::from_secs(60);

/// The `scan.*` event types a handler of `bus` saw, in order.
fn seen(bus: &nerve::Bus) -> Arc<Mutex<Vec<String>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    bus.subscribe("scan.*", move |e: &Event| {
        log.lock().unwrap().push(e.event_type().to_owned());
    })
    .unwrap();
    seen
}

/// The `NotRecorded` error of `result`, failing on anything else.
fn not_recorded(result: Result<nerve::EventId, EmitError>) -> (String, SinkErrorKind) {
    match result {
        Err(e @ EmitError::NotRecorded { .. }) => {
            let EmitError::NotRecorded { error, .. } = &e else {
                unreachable!()
            };
            (e.to_string(), error.kind())
        }
        other => panic!("expected NotRecorded, got {other:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_event_larger_than_the_server_takes_is_delivered_and_emit_says_not_recorded() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let a = bus();
    let handled = seen(&a);
    let out = NatsBridge::connect(&server.url(), &a, NatsOptions::new().origin("a"))
        .await
        .unwrap();
    out.export("scan.*").unwrap();
    let (said, kind) = not_recorded(a.emit("scan.failed", json!({ "image": "x".repeat(2 << 20) })));
    assert_eq!(kind, SinkErrorKind::Unsupported, "{said}");
    assert!(
        said.contains("not recorded: nats export scan.* (terminal wait): a message of")
            && said.contains("is larger than the server takes"),
        "{said}"
    );
    // Delivered locally all the same, and the next terminal event, which
    // fits, is confirmed as before.
    assert_eq!(*handled.lock().unwrap(), ["scan.failed"]);
    a.emit("scan.completed", json!({ "n": 1 })).unwrap();
    let s = out.stats();
    assert_eq!(
        (s.too_large, s.published, s.ack_waits, s.ack_wait_timeouts),
        (1, 1, 2, 0),
        "{s:?}"
    );
    let bus_stats = a.stats();
    assert_eq!(bus_stats.events.not_recorded, 1, "{:?}", bus_stats.events);
    assert_eq!(bus_stats.events.failed, 0, "not a handler failure");
    out.shutdown(LIMIT).await;
}

/// A durable export whose stream is gone: every attempt to publish the
/// terminal event is refused, and its emit says so once they are spent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_event_the_stream_never_acknowledges_makes_emit_say_not_recorded() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let a = bus();
    let handled = seen(&a);
    let out = NatsBridge::connect(
        &server.url(),
        &a,
        NatsOptions::new().origin("a").publish_attempts(2),
    )
    .await
    .unwrap();
    out.export_durable("scan.*", "SCANS").await.unwrap();
    let mut errors = a.stream("system.bridge_error").unwrap();
    a.emit("scan.completed", json!({ "n": 0 })).unwrap();
    let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    js.delete_stream("SCANS").await.unwrap();

    let (said, kind) = not_recorded(a.emit("scan.failed", json!({ "n": 1 })));
    assert_eq!(kind, SinkErrorKind::Io, "{said}");
    assert!(
        said.contains(
            "not recorded: nats export_durable scan.* (terminal ack wait): the stream SCANS did not acknowledge it (2 attempts; the last: "
        ),
        "{said}"
    );
    assert_eq!(*handled.lock().unwrap(), ["scan.completed", "scan.failed"]);
    let error = collect(&mut errors, 1, LIMIT).await.remove(0);
    assert_eq!(error.data()["attempts"], 2);
    let s = out.stats();
    assert_eq!(
        (s.acked, s.ack_failed, s.ack_waits, s.ack_wait_timeouts),
        (1, 1, 2, 0),
        "{s:?}"
    );
    // `emit_and_wait` says the same.
    let report = a
        .emit_and_wait("scan.failed", json!({ "n": 2 }))
        .await
        .unwrap_err();
    assert!(
        matches!(report, EmitError::NotRecorded { .. }),
        "{report:?}"
    );
    out.shutdown(LIMIT).await;
}

/// With the server gone, nothing can confirm a terminal event: its emit
/// waits `terminal_wait` and then says so (the event waits in the export's
/// buffer and may still go out once the server is back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_server_gone_a_terminal_emit_says_not_recorded_after_its_wait() {
    let Some(mut server) = NatsServer::start() else {
        return;
    };
    let a = bus();
    let wait = Duration::from_millis(300);
    let out = NatsBridge::connect(
        &server.url(),
        &a,
        NatsOptions::new().origin("a").terminal_wait(wait),
    )
    .await
    .unwrap();
    out.export("scan.*").unwrap();
    a.emit("scan.completed", json!({ "n": 0 })).unwrap();
    server.kill();
    let (said, kind) = not_recorded(a.emit("scan.failed", json!({ "n": 1 })));
    assert_eq!(kind, SinkErrorKind::Timeout, "{said}");
    assert!(
        said.contains(
            "not recorded: nats export scan.* (terminal wait): NATS did not confirm it within 300ms"
        ),
        "{said}"
    );
    let s = out.stats();
    assert_eq!((s.ack_waits, s.ack_wait_timeouts), (2, 1), "{s:?}");
    out.shutdown(Duration::from_secs(1)).await;
}
