//! Two buses in one process through one server.

use std::time::Duration;

use nerve::nats::{NatsBridge, NatsOptions, imported_from};
use nerve::trace::TraceContext;
use nerve::{Event, EventId, json};

use crate::support::NatsServer;
use crate::{bus, collect, try_collect};

const LIMIT: Duration = Duration::from_secs(60);

async fn until(mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + LIMIT;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "condition not met in {LIMIT:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn routes_both_ways_keeping_ids_correlation_and_trace_context() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let (a, b) = (bus(), bus());
    let opts = || NatsOptions::new().prefix("nerve.test.");
    let bridge_a = NatsBridge::connect(&server.url(), &a, opts().origin("bus-a"))
        .await
        .unwrap();
    let bridge_b = NatsBridge::connect(&server.url(), &b, opts().origin("bus-b"))
        .await
        .unwrap();
    bridge_a.export("order.*").unwrap();
    bridge_a.import("payment.*").await.unwrap();
    bridge_b.export("payment.*").unwrap();
    bridge_b.import("order.*").await.unwrap();
    let mut at_b = b.stream("order.*").unwrap();
    let mut at_a = a.stream("payment.*").unwrap();

    let trace = TraceContext::parse(
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        Some("vendor=x"),
    )
    .unwrap();
    let cause = EventId::new();
    let order = Event::builder("order.placed")
        .data(json!({"id": 7}))
        .source("shop")
        .correlation_id("req-1")
        .causation_id(cause)
        .run_id("run-1")
        .trace_context(trace.clone())
        .build()
        .unwrap();
    let id = a.emit_event(order.clone()).unwrap();

    let got = collect(&mut at_b, 1, LIMIT).await.remove(0);
    assert_eq!(got.event_id(), id);
    assert_eq!(got.event_type(), "order.placed");
    assert_eq!(got.timestamp(), order.timestamp());
    assert_eq!(got.correlation_id().unwrap().as_str(), "req-1");
    assert_eq!(got.causation_id(), Some(cause));
    assert_eq!(got.run_id(), Some("run-1"));
    assert_eq!(got.trace_context(), Some(&trace));
    assert_eq!(got.data(), &json!({"id": 7}));
    let origin = imported_from(&got).unwrap();
    assert_eq!((origin.bridge, origin.source), ("bus-a", Some("shop")));

    // And back: B answers within the same correlation, caused by the order.
    let _corr = nerve::correlation::enter("req-1");
    let reply = Event::builder("payment.captured")
        .causation_id(id)
        .correlation_id("req-1")
        .build()
        .unwrap();
    let reply_id = b.emit_event(reply).unwrap();
    let back = collect(&mut at_a, 1, LIMIT).await.remove(0);
    assert_eq!(back.event_id(), reply_id);
    assert_eq!(back.causation_id(), Some(id));
    assert_eq!(back.correlation_id().unwrap().as_str(), "req-1");
    assert_eq!(imported_from(&back).unwrap().bridge, "bus-b");

    // Nothing came back to where it started.
    assert!(bridge_a.flush(LIMIT).await && bridge_b.flush(LIMIT).await);
    crate::eventually(LIMIT, || {
        let (sa, sb) = (bridge_a.stats(), bridge_b.stats());
        sa.imported + sa.import_rejected >= 1 && sb.imported + sb.import_rejected >= 1
    })
    .await;
    let (sa, sb) = (bridge_a.stats(), bridge_b.stats());
    assert_eq!((sa.published, sa.imported), (1, 1), "{sa:?}");
    assert_eq!((sb.published, sb.imported), (1, 1), "{sb:?}");
    assert_eq!(
        sa.dropped + sb.dropped + sa.import_rejected + sb.import_rejected,
        0
    );
    assert!(at_b.is_empty() && at_a.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_and_import_everything_on_one_bus_never_echoes() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let (a, b) = (bus(), bus());
    let bridge_a = NatsBridge::connect(&server.url(), &a, NatsOptions::new())
        .await
        .unwrap();
    bridge_a.export("*").unwrap();
    bridge_a.import("*").await.unwrap();
    let bridge_b = NatsBridge::connect(&server.url(), &b, NatsOptions::new())
        .await
        .unwrap();
    bridge_b.import("*").await.unwrap();
    let mut at_a = a.stream("*").unwrap();
    let mut at_b = b.stream("*").unwrap();

    for i in 0..100 {
        a.emit("task.step", json!({"i": i})).unwrap();
    }
    let elsewhere = collect(&mut at_b, 100, LIMIT).await;
    assert!(elsewhere.iter().all(|e| imported_from(e).is_some()));
    // Every one of A's messages also reached A's own subscription, and was
    // dropped there as an echo.
    until(|| bridge_a.stats().echoes_suppressed == 100).await;
    let local = collect(&mut at_a, 100, LIMIT).await;
    assert!(local.iter().all(|e| imported_from(e).is_none()));
    assert!(at_a.is_empty(), "an echo came back into bus A");
    let s = bridge_a.stats();
    assert_eq!(
        (s.published, s.imported, s.echoes_suppressed),
        (100, 0, 100),
        "{s:?}"
    );

    // B's imported events are not exported again by B (it exports nothing)
    // nor by A (it never receives them twice).
    crate::eventually(LIMIT, || bridge_b.stats().imported >= 100).await;
    assert_eq!(bridge_b.stats().imported, 100);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_events_arrive_exactly_once_and_in_order() {
    const N: usize = 10_000;
    let Some(server) = NatsServer::start() else {
        return;
    };
    let (a, b) = (bus(), bus());
    let bridge_a = NatsBridge::connect(&server.url(), &a, NatsOptions::new())
        .await
        .unwrap();
    let bridge_b = NatsBridge::connect(&server.url(), &b, NatsOptions::new())
        .await
        .unwrap();
    bridge_b.import("bulk.*").await.unwrap();
    let mut at_b = b
        .stream_with("bulk.*", nerve::StreamOptions::new().capacity(2 * N))
        .unwrap();
    bridge_a.export("bulk.*").unwrap();

    let mut sent = Vec::with_capacity(N);
    for i in 0..N {
        sent.push(a.emit("bulk.item", json!({"i": i})).unwrap());
    }
    let got = try_collect(&mut at_b, N, LIMIT)
        .await
        .unwrap_or_else(|got| {
            let have: std::collections::HashSet<EventId> =
                got.iter().map(Event::event_id).collect();
            let missing: Vec<usize> = (0..N).filter(|i| !have.contains(&sent[*i])).collect();
            panic!(
                "{} of {N}, missing {missing:?}: exporter {:?} importer {:?}",
                got.len(),
                bridge_a.stats(),
                bridge_b.stats()
            )
        });
    let ids: Vec<EventId> = got.iter().map(Event::event_id).collect();
    assert_eq!(ids, sent, "not exactly once in order");
    assert!(bridge_a.flush(LIMIT).await);
    crate::eventually(LIMIT, || {
        let s = bridge_b.stats();
        s.imported + s.import_rejected >= N as u64
    })
    .await;
    let (sa, sb) = (bridge_a.stats(), bridge_b.stats());
    assert_eq!((sa.published, sa.dropped), (N as u64, 0), "{sa:?}");
    assert_eq!((sb.imported, sb.import_rejected), (N as u64, 0), "{sb:?}");
    assert!(at_b.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn exported_events_pass_the_redaction_hook_and_keep_their_ids() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let (a, b) = (bus(), bus());
    let options = NatsOptions::new().redact_with(|e: &Event| {
        // A hook that also tries to change the id: the bridge keeps the
        // original's.
        Event::builder(e.event_type())
            .data(json!({"email": "[redacted]"}))
            .build()
            .unwrap()
    });
    let (_bridges, mut at_b) = user_events_from_a_to_b(&server, &a, options, &b).await;
    let id = a
        .emit("user.signed_up", json!({"email": "alice@example.com"}))
        .unwrap();
    let got = collect(&mut at_b, 1, LIMIT).await.remove(0);
    assert_eq!(got.event_id(), id);
    assert_eq!(got.data(), &json!({"email": "[redacted]"}));
}

/// A bridge on `a` (with `options`) exporting `user.*`, one on `b`
/// importing it, and a stream of `user.*` on `b`.
async fn user_events_from_a_to_b(
    server: &NatsServer,
    a: &nerve::Bus,
    options: NatsOptions,
    b: &nerve::Bus,
) -> ((NatsBridge, NatsBridge), nerve::EventStream) {
    let bridge_a = NatsBridge::connect(&server.url(), a, options)
        .await
        .unwrap();
    let bridge_b = NatsBridge::connect(&server.url(), b, NatsOptions::new())
        .await
        .unwrap();
    bridge_b.import("user.*").await.unwrap();
    let at_b = b.stream("user.*").unwrap();
    bridge_a.export("user.*").unwrap();
    ((bridge_a, bridge_b), at_b)
}

/// A bus whose journal (in `dir`) redacts every payload to `{"email":
/// "[redacted]"}`, or panics on `user.broken`.
fn journaled_bus(dir: &std::path::Path) -> nerve::Bus {
    let journal = nerve::journal::Journal::builder(dir.join("events.jsonl"))
        .redact_with(|e: &Event| {
            assert!(e.event_type() != "user.broken", "no rule for this event");
            Event::builder(e.event_type())
                .data(json!({"email": "[redacted]"}))
                .correlation_id("[redacted]")
                .build()
                .unwrap()
        })
        .build()
        .unwrap();
    nerve::Bus::builder()
        .history_capacity(0)
        .journal(journal)
        .build()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bridge_redacts_with_its_bus_s_journal_hook_unless_told_otherwise() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let a = journaled_bus(dir.path());
    assert!(a.redaction().is_some());
    let b = bus();
    // No `redact_with`: the journal's hook applies, on disk and on the wire.
    let ((bridge_a, bridge_b), mut at_b) =
        user_events_from_a_to_b(&server, &a, NatsOptions::new(), &b).await;
    let mut errors = a.stream("system.bridge_error").unwrap();
    let signed_up = nerve::Event::builder("user.signed_up")
        .data(json!({"email": "alice@example.com"}))
        .correlation_id("alice@example.com")
        .build()
        .unwrap();
    let id = a.emit_event(signed_up).unwrap();
    let got = collect(&mut at_b, 1, LIMIT).await.remove(0);
    assert_eq!(got.event_id(), id);
    assert_eq!(got.event_type(), "user.signed_up");
    assert_eq!(got.data(), &json!({"email": "[redacted]"}));
    assert_eq!(got.correlation_id().unwrap().as_str(), "[redacted]");

    // A hook that panics: the payload goes out as an error marker, never
    // as it was; counted, reported, and the export goes on.
    let broken = a
        .emit("user.broken", json!({"email": "bob@example.com"}))
        .unwrap();
    let after = a
        .emit("user.signed_up", json!({"email": "carol@example.com"}))
        .unwrap();
    let got = collect(&mut at_b, 2, LIMIT).await;
    assert_eq!(got[0].event_id(), broken);
    assert_eq!(got[0].data()["$nerve_error"], json!("redact"), "{got:?}");
    assert!(
        !format!("{:?}", got[0].data()).contains("bob@"),
        "{:?}",
        got[0].data()
    );
    assert_eq!(got[1].event_id(), after);
    assert_eq!(got[1].data(), &json!({"email": "[redacted]"}));
    assert_eq!(bridge_a.stats().redaction_failed, 1);
    let error = collect(&mut errors, 1, LIMIT).await.remove(0);
    assert_eq!(error.data()["event_id"], json!(broken.to_string()));
    assert!(
        error.data()["error"]
            .as_str()
            .unwrap()
            .contains("redaction panicked: no rule for this event"),
        "{:?}",
        error.data()
    );

    // `redact_with` replaces the journal's hook: here, events as they are.
    let bridge_c = NatsBridge::connect(
        &server.url(),
        &a,
        NatsOptions::new().redact_with(Event::clone),
    )
    .await
    .unwrap();
    let mut at_b_c = b.stream("plain.*").unwrap();
    bridge_b.import("plain.*").await.unwrap();
    bridge_c.export("plain.*").unwrap();
    a.emit("plain.note", json!({"email": "dave@example.com"}))
        .unwrap();
    let got = collect(&mut at_b_c, 1, LIMIT).await.remove(0);
    assert_eq!(got.data(), &json!({"email": "dave@example.com"}));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_terminal_emit_waits_until_the_server_has_it_and_everything_before() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let (a, b) = (bus(), bus());
    let bridge_a = NatsBridge::connect(&server.url(), &a, NatsOptions::new())
        .await
        .unwrap();
    let bridge_b = NatsBridge::connect(&server.url(), &b, NatsOptions::new())
        .await
        .unwrap();
    let mut at_b = b.stream("job.*").unwrap();
    bridge_b.import("job.*").await.unwrap();
    bridge_a.export("job.*").unwrap();
    for i in 0..300 {
        a.emit("job.step", json!({"i": i})).unwrap();
    }
    // Terminal (`*.completed`): its emit waited for the server's answer.
    a.emit("job.completed", json!({})).unwrap();
    let s = bridge_a.stats();
    assert_eq!((s.ack_waits, s.ack_wait_timeouts), (1, 0), "{s:?}");
    // The server had everything: all of it reaches the importer, which
    // subscribed before the first emit.
    let got = collect(&mut at_b, 301, LIMIT).await;
    assert_eq!(got[300].event_type(), "job.completed");
    // From a plain thread too; a step is not terminal and does not wait.
    let a2 = a.clone();
    std::thread::spawn(move || {
        a2.emit("job.step", json!({})).unwrap();
        a2.emit("job.failed", json!({})).unwrap();
    })
    .join()
    .unwrap();
    assert_eq!(bridge_a.stats().ack_waits, 2);
    let got = collect(&mut at_b, 2, LIMIT).await;
    assert_eq!(got[1].event_type(), "job.failed");
}

#[tokio::test(flavor = "current_thread")]
async fn on_a_current_thread_runtime_a_terminal_emit_does_not_wait_and_is_counted() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let a = bus();
    let bridge = NatsBridge::connect(&server.url(), &a, NatsOptions::new())
        .await
        .unwrap();
    bridge.export("job.*").unwrap();
    let mut said = a.stream("system.bridge_error").unwrap();
    // This thread is the one the bridge's tasks need: waiting here could
    // only time out.
    a.emit("job.completed", json!({})).unwrap();
    a.emit("job.failed", json!({})).unwrap();
    let s = bridge.stats();
    assert_eq!((s.ack_waits, s.ack_waits_skipped), (0, 2), "{s:?}");
    assert!(bridge.flush(LIMIT).await);
    assert_eq!(bridge.stats().published, 2);
    // Said once, on the bus, naming what to do.
    let error = collect(&mut said, 1, LIMIT).await.remove(0);
    assert!(
        error.data()["error"]
            .as_str()
            .unwrap()
            .contains("cannot wait for NATS on a current-thread tokio runtime"),
        "{error:?}"
    );
    assert_eq!(error.data()["event_type"], "job.completed");
    assert!(said.is_empty(), "said once");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_zero_terminal_wait_turns_the_wait_off() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let a = bus();
    let bridge = NatsBridge::connect(
        &server.url(),
        &a,
        NatsOptions::new().terminal_wait(Duration::ZERO),
    )
    .await
    .unwrap();
    bridge.export("job.*").unwrap();
    let waiting = |a: &nerve::Bus| {
        a.stats()
            .subscribers
            .iter()
            .filter(|s| s.name.as_deref().is_some_and(|n| n.contains("terminal")))
            .count()
    };
    assert_eq!(waiting(&a), 0, "{:?}", a.stats().subscribers);
    a.emit("job.completed", json!({})).unwrap();
    assert!(bridge.flush(LIMIT).await);
    let s = bridge.stats();
    assert_eq!(
        (s.published, s.ack_waits, s.ack_wait_timeouts),
        (1, 0, 0),
        "{s:?}"
    );

    // The default waits, through one inline subscription per export.
    let b = bus();
    let waits = NatsBridge::connect(&server.url(), &b, NatsOptions::new())
        .await
        .unwrap();
    waits.export("job.*").unwrap();
    assert_eq!(waiting(&b), 1, "{:?}", b.stats().subscribers);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_prefix_events_under_one_are_refused_unless_any_prefix() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    // A deployment publishing under a prefix, as `nerve demo --nats` does.
    let (source, strict, watcher) = (bus(), bus(), bus());
    let exporter = NatsBridge::connect(
        &server.url(),
        &source,
        NatsOptions::new().prefix("nerve.demo.7f3a."),
    )
    .await
    .unwrap();
    exporter.export("*").unwrap();
    // Two prefix-less bridges importing `*`: the default refuses what it
    // cannot read as an event of its own subject; `any_prefix` takes it.
    let refusing = NatsBridge::connect(&server.url(), &strict, NatsOptions::new())
        .await
        .unwrap();
    refusing.import("*").await.unwrap();
    let taking = NatsBridge::connect(&server.url(), &watcher, NatsOptions::new().any_prefix(true))
        .await
        .unwrap();
    taking.import("*").await.unwrap();
    let mut errors = strict.stream("system.bridge_error").unwrap();
    let mut orders = watcher.stream("order.*").unwrap();

    let id = source.emit("order.placed", json!({"order": 7})).unwrap();
    let got = collect(&mut orders, 1, LIMIT).await;
    assert_eq!(got[0].event_id(), id);
    assert_eq!(got[0].event_type(), "order.placed");
    assert_eq!(got[0].data()["order"], 7);
    assert!(imported_from(&got[0]).is_some());

    let refused = collect(&mut errors, 1, LIMIT).await;
    let error = refused[0].data()["error"].as_str().unwrap().to_owned();
    assert!(
        error.contains("nerve.demo.7f3a.order.placed") && error.contains("\"order.placed\" event"),
        "{error}"
    );
    // Counted once the emit into the watcher's bus returned.
    crate::eventually(LIMIT, || taking.stats().imported == 1).await;
    let (s, w) = (refusing.stats(), taking.stats());
    assert_eq!((s.imported, s.import_rejected), (0, 1), "{s:?}");
    assert_eq!((w.imported, w.import_rejected), (1, 0), "{w:?}");
}
