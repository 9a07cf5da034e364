//! JetStream in one process: terminal emits wait for the stream's
//! acknowledgement, durable consumers start where `DeliverFrom` says and
//! continue where they stopped, refused setups fail clearly.

use std::time::{Duration, SystemTime};

use async_nats::jetstream;
use nerve::nats::{
    BridgeError, DeliverFrom, DurableImport, DurableStream, NatsBridge, NatsOptions,
};
use nerve::{EventId, StreamOptions, json};

use crate::support::NatsServer;
use crate::{bus, collect};

const LIMIT: Duration = Duration::from_secs(60);

/// The stream `name` read directly with async-nats: its messages' event
/// ids (`Nats-Msg-Id`), in stream order.
pub(crate) async fn stream_ids(url: &str, name: &str) -> Vec<EventId> {
    let client = async_nats::connect(url).await.unwrap();
    let js = jetstream::new(client);
    let mut stream = js.get_stream(name).await.unwrap();
    let state = stream.info().await.unwrap().state.clone();
    let mut ids = Vec::new();
    for seq in state.first_sequence..=state.last_sequence {
        if state.messages == 0 {
            break;
        }
        let message = stream.get_raw_message(seq).await.unwrap();
        // Read back as the standard header, not under the custom name.
        let id = message.headers.get(async_nats::header::NATS_MESSAGE_ID);
        let id = id.unwrap().as_str();
        ids.push(id.parse().unwrap());
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_emit_returns_once_the_stream_holds_it_and_everything_before() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let a = bus();
    let bridge = NatsBridge::connect(&server.url(), &a, NatsOptions::new())
        .await
        .unwrap();
    bridge
        .export_durable("job.*", DurableStream::new("JOBS").max_messages(1_000_000))
        .await
        .unwrap();
    let mut sent: Vec<EventId> = (0..500)
        .map(|i| a.emit("job.step", json!({"i": i})).unwrap())
        .collect();
    // Terminal (`*.completed`): when `emit` returns, the stream has it,
    // and every step before it. Checked on the server, not the bridge.
    sent.push(a.emit("job.completed", json!({})).unwrap());
    let stored = stream_ids(&server.url(), "JOBS").await;
    assert_eq!(
        stored, sent,
        "the stream does not hold exactly what was emitted"
    );
    let s = bridge.stats();
    assert_eq!((s.published, s.acked, s.ack_failed), (501, 501, 0), "{s:?}");
    assert_eq!((s.ack_waits, s.ack_wait_timeouts), (1, 0), "{s:?}");

    // A terminal event emitted from a plain thread waits too.
    let b = a.clone();
    let id = std::thread::spawn(move || b.emit("job.failed", json!({})).unwrap())
        .join()
        .unwrap();
    assert_eq!(stream_ids(&server.url(), "JOBS").await.last(), Some(&id));
    assert_eq!(bridge.stats().ack_waits, 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_buses_durable_patterns_decide_which_emits_wait_for_the_stream() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    // As for its journal: on this bus `work.saved` is durable, and the
    // terminal `work.completed` is not.
    let a = nerve::Bus::builder()
        .durable_patterns(["work.saved"])
        .unwrap()
        .build()
        .unwrap();
    let bridge = NatsBridge::connect(&server.url(), &a, NatsOptions::new())
        .await
        .unwrap();
    bridge
        .export_durable("work.*", DurableStream::new("WORK"))
        .await
        .unwrap();
    let mut sent: Vec<EventId> = (0..300)
        .map(|i| a.emit("work.step", json!({"i": i})).unwrap())
        .collect();
    sent.push(a.emit("work.saved", json!({})).unwrap());
    assert_eq!(
        stream_ids(&server.url(), "WORK").await,
        sent,
        "a durable emit returned before the stream held it and everything before it"
    );
    a.emit("work.completed", json!({})).unwrap();
    let s = bridge.stats();
    assert_eq!((s.ack_waits, s.ack_wait_timeouts), (1, 0), "{s:?}");
    assert!(bridge.flush(LIMIT).await);
    assert_eq!(bridge.stats().acked, 302);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliver_from_new_all_seq_and_time() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let a = bus();
    let exporter = NatsBridge::connect(&server.url(), &a, NatsOptions::new())
        .await
        .unwrap();
    exporter.export_durable("tick.*", "TICKS").await.unwrap();
    let first: Vec<EventId> = (0..10)
        .map(|i| a.emit("tick.n", json!({"i": i})).unwrap())
        .collect();
    assert!(exporter.flush(LIMIT).await);
    assert_eq!(exporter.stats().acked, 10);
    // Every message of the first batch was stored before this instant
    // (acknowledged), every one of the second after it.
    let between = SystemTime::now();

    let mut importers = Vec::new();
    for (name, from) in [
        ("new", DeliverFrom::New),
        ("all", DeliverFrom::All),
        ("seq", DeliverFrom::Seq(4)),
        ("time", DeliverFrom::Time(between)),
    ] {
        let b = bus();
        let events = b
            .stream_with("tick.*", StreamOptions::new().capacity(100))
            .unwrap();
        let bridge = NatsBridge::connect(&server.url(), &b, NatsOptions::new())
            .await
            .unwrap();
        bridge.import_durable("TICKS", name, from).await.unwrap();
        importers.push((name, b, bridge, events));
    }
    let second: Vec<EventId> = (10..15)
        .map(|i| a.emit("tick.n", json!({"i": i})).unwrap())
        .collect();
    assert!(exporter.flush(LIMIT).await);

    for (name, _bus, bridge, mut events) in importers {
        let expected: Vec<EventId> = match name {
            "new" | "time" => second.clone(),
            "all" => first.iter().chain(&second).copied().collect(),
            "seq" => first[3..].iter().chain(&second).copied().collect(),
            _ => unreachable!(),
        };
        let got: Vec<EventId> = collect(&mut events, expected.len(), LIMIT)
            .await
            .iter()
            .map(|e| e.event_id())
            .collect();
        assert_eq!(got, expected, "DeliverFrom for consumer {name:?}");
        crate::eventually(LIMIT, || bridge.stats().imported >= expected.len() as u64).await;
        let s = bridge.stats();
        assert_eq!(s.imported, expected.len() as u64, "{name}: {s:?}");
        // Acknowledged after delivery; nothing else is pending.
        let deadline = tokio::time::Instant::now() + LIMIT;
        while bridge.stats().acks_sent < expected.len() as u64 {
            assert!(tokio::time::Instant::now() < deadline, "{name}: not acked");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert!(events.is_empty(), "{name}: more than expected");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_consumer_continues_where_it_stopped_and_drops_known_ids() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let a = bus();
    let exporter = NatsBridge::connect(&server.url(), &a, NatsOptions::new())
        .await
        .unwrap();
    exporter.export_durable("doc.*", "DOCS").await.unwrap();
    let ids: Vec<EventId> = (0..20)
        .map(|i| a.emit("doc.saved", json!({"i": i})).unwrap())
        .collect();
    assert!(exporter.flush(LIMIT).await);

    // First life: takes the first batch, acknowledges, stops.
    let b = bus();
    let mut events = b.stream("doc.*").unwrap();
    let first = NatsBridge::connect(&server.url(), &b, NatsOptions::new())
        .await
        .unwrap();
    first
        .import_durable("DOCS", "archiver", DeliverFrom::All)
        .await
        .unwrap();
    let got = collect(&mut events, 20, LIMIT).await;
    assert_eq!(got.iter().map(|e| e.event_id()).collect::<Vec<_>>(), ids);
    let deadline = tokio::time::Instant::now() + LIMIT;
    while first.stats().acks_sent < 20 {
        assert!(tokio::time::Instant::now() < deadline, "not acked");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.shutdown(LIMIT).await;

    // Meanwhile: the stream gets event 5 a second time (published again
    // without its message id, as a re-send after JetStream's duplicate
    // window would be), then more events.
    let js = jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let old = js
        .get_stream("DOCS")
        .await
        .unwrap()
        .get_raw_message(6)
        .await
        .unwrap();
    js.publish(old.subject.clone(), old.payload.clone())
        .await
        .unwrap()
        .await
        .unwrap();
    let more: Vec<EventId> = (20..25)
        .map(|i| a.emit("doc.saved", json!({"i": i})).unwrap())
        .collect();
    assert!(exporter.flush(LIMIT).await);

    // Second life, remembering what it already holds: continues at 21.
    let c = bus();
    let mut events = c.stream("doc.*").unwrap();
    let second = NatsBridge::connect(&server.url(), &c, NatsOptions::new())
        .await
        .unwrap();
    second
        .import_durable_with(
            DurableImport::new("DOCS", "archiver")
                .deliver_from(DeliverFrom::New)
                .already_delivered(ids.iter().copied()),
        )
        .await
        .unwrap();
    let got = collect(&mut events, 5, LIMIT).await;
    assert_eq!(got.iter().map(|e| e.event_id()).collect::<Vec<_>>(), more);
    let deadline = tokio::time::Instant::now() + LIMIT;
    while second.stats().acks_sent < 6 {
        assert!(tokio::time::Instant::now() < deadline, "not acked");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let s = second.stats();
    assert_eq!((s.imported, s.duplicates_dropped), (5, 1), "{s:?}");
    assert!(events.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_setups_fail_with_clear_errors() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let a = bus();
    let bridge = NatsBridge::connect(&server.url(), &a, NatsOptions::new())
        .await
        .unwrap();
    let err = bridge
        .import_durable("NOPE", "c", DeliverFrom::All)
        .await
        .unwrap_err();
    assert!(
        matches!(err, BridgeError::StreamNotFound(ref s) if s == "NOPE"),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("no JetStream stream named \"NOPE\""),
        "{err}"
    );

    let err = bridge.export_durable("x.*", "a.b").await.unwrap_err();
    assert!(
        matches!(err, BridgeError::Name { what: "stream", .. }),
        "{err}"
    );
    let err = bridge
        .import_durable("S", "bad consumer", DeliverFrom::All)
        .await
        .unwrap_err();
    assert!(
        matches!(
            err,
            BridgeError::Name {
                what: "consumer",
                ..
            }
        ),
        "{err}"
    );

    // A stream that exists for other subjects is not silently used.
    bridge.export_durable("order.*", "SHOP").await.unwrap();
    let err = bridge
        .export_durable("payment.*", "SHOP")
        .await
        .unwrap_err();
    assert!(
        matches!(err, BridgeError::StreamSubjects { ref subject, .. } if subject == "payment.>"),
        "{err}"
    );
    // A narrower pattern is inside it.
    bridge.export_durable("order.placed", "SHOP").await.unwrap();
}
