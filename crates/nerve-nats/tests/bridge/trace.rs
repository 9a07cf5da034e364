//! One trace across two processes: each has its own bus, its own bridge and
//! its own OpenTelemetry SDK with the in-memory exporter. An event emitted in
//! a span in this process (A) is handled in the child (B), whose handler
//! replies; A handles the reply. B's handler span is a child of A's span,
//! A's reply span a child of B's handler span, all in one trace id.
//!
//! The child (`child_handles_in_the_same_trace`, a no-op unless
//! `NERVE_NATS_TRACE_CHILD` names a server) sends its finished spans back as
//! an event, since its exporter lives in its own memory.

use std::time::{Duration, Instant};

use nerve::nats::{NatsBridge, NatsOptions, imported_from};
use nerve::otel::OtelLayer;
use nerve::{Bus, json};
use opentelemetry::trace::{TraceContextExt, Tracer, TracerProvider as _};
use opentelemetry_sdk::trace::{InMemorySpanExporter, SdkTracerProvider, SpanData};

use crate::collect;
use crate::support::NatsServer;

const VAR: &str = "NERVE_NATS_TRACE_CHILD";
const LIMIT: Duration = Duration::from_secs(60);

fn provider() -> (SdkTracerProvider, InMemorySpanExporter) {
    let exporter = InMemorySpanExporter::default();
    let provider = SdkTracerProvider::builder()
        .with_simple_exporter(exporter.clone())
        .build();
    (provider, exporter)
}

fn traced_bus(provider: &SdkTracerProvider) -> Bus {
    Bus::builder()
        .history_capacity(0)
        .instrument(OtelLayer::with_tracer(provider.tracer("nerve")))
        .build()
        .unwrap()
}

fn hex(span: &SpanData) -> serde_json::Value {
    json!({
        "name": span.name,
        "trace_id": format!("{:032x}", span.span_context.trace_id()),
        "span_id": format!("{:016x}", span.span_context.span_id()),
        "parent_span_id": format!("{:016x}", span.parent_span_id),
    })
}

/// The child, B: handles `work.requested` by emitting `reply.done` (inside
/// its handler span), then reports its finished spans as `reply.spans`.
#[test]
fn child_handles_in_the_same_trace() {
    let Ok(url) = std::env::var(VAR) else { return };
    let rt = crate::child_runtime();
    rt.block_on(async {
        let (provider, exporter) = provider();
        let bus = traced_bus(&provider);
        let bridge = NatsBridge::connect(&url, &bus, NatsOptions::new().origin("b"))
            .await
            .unwrap();
        let replies = bus.downgrade();
        bus.subscribe("work.requested", move |event| {
            let bus = replies.upgrade().expect("the bus");
            bus.emit("reply.done", json!({"for": event.data()["order"]}))
                .unwrap();
        })
        .unwrap();
        let mut handled = bus.stream("work.requested").unwrap();
        bridge.import("work.*").await.unwrap();
        bridge.export("reply.*").unwrap();
        bus.emit("reply.ready", json!({})).unwrap();
        collect(&mut handled, 1, LIMIT).await;
        // The handler's span ends as it returns: wait for the exporter to
        // have it.
        let deadline = Instant::now() + LIMIT;
        let finished = loop {
            provider.force_flush().unwrap();
            let finished = exporter.get_finished_spans().unwrap();
            if finished
                .iter()
                .any(|s| s.name == "nerve.handle work.requested")
            {
                break finished;
            }
            assert!(Instant::now() < deadline, "the handler span never ended");
            tokio::time::sleep(Duration::from_millis(5)).await;
        };
        let spans: Vec<_> = finished.iter().map(hex).collect();
        bus.emit("reply.spans", json!({ "spans": spans })).unwrap();
        assert!(bridge.flush(LIMIT).await, "the child could not flush");
        bridge.shutdown(LIMIT).await;
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_spans_two_processes() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let (provider, exporter) = provider();
    let a = traced_bus(&provider);
    let bridge = NatsBridge::connect(&server.url(), &a, NatsOptions::new().origin("a"))
        .await
        .unwrap();
    a.subscribe("reply.done", |_| {}).unwrap();
    let mut replies = a
        .stream_with("reply.*", nerve::StreamOptions::new().capacity(16))
        .unwrap();
    bridge.import("reply.*").await.unwrap();
    bridge.export("work.*").unwrap();

    let mut child = crate::rerun("trace::child_handles_in_the_same_trace")
        .env(VAR, server.url())
        .spawn()
        .unwrap();
    let ready = collect(&mut replies, 1, LIMIT).await.remove(0);
    assert_eq!(ready.event_type(), "reply.ready");

    let tracer = provider.tracer("shop");
    let (request_id, checkout) = tracer.in_span("checkout", |cx| {
        let id = a.emit("work.requested", json!({"order": 7})).unwrap();
        (id, cx.span().span_context().clone())
    });
    let got = collect(&mut replies, 2, LIMIT).await;
    let (done, report) = (&got[0], &got[1]);
    assert_eq!(
        (done.event_type(), report.event_type()),
        ("reply.done", "reply.spans")
    );

    // B's handler span: a child of A's `checkout`, in its trace.
    let trace_id = format!("{:032x}", checkout.trace_id());
    let spans = report.data()["spans"].as_array().unwrap();
    let handled_in_b = spans
        .iter()
        .find(|s| s["name"] == "nerve.handle work.requested")
        .unwrap_or_else(|| panic!("no handler span in B: {spans:?}"));
    assert_eq!(handled_in_b["trace_id"], trace_id.as_str());
    assert_eq!(
        handled_in_b["parent_span_id"],
        format!("{:016x}", checkout.span_id()).as_str()
    );

    // The reply carries B's handler span as its parent context, its cause
    // and correlation, and A's handler span for it continues the trace.
    let b_span = handled_in_b["span_id"].as_str().unwrap();
    let tc = done.trace_context().expect("the reply's trace context");
    assert_eq!(tc.traceparent(), format!("00-{trace_id}-{b_span}-01"));
    assert_eq!(done.causation_id(), Some(request_id));
    assert_eq!(imported_from(done).unwrap().bridge, "b");
    provider.force_flush().unwrap();
    let a_spans = exporter.get_finished_spans().unwrap();
    let handled_in_a = a_spans
        .iter()
        .find(|s| s.name == "nerve.handle reply.done")
        .unwrap_or_else(|| panic!("no handler span in A: {a_spans:?}"));
    assert_eq!(handled_in_a.span_context.trace_id(), checkout.trace_id());
    assert_eq!(format!("{:016x}", handled_in_a.parent_span_id), b_span);

    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the child did not exit");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(status.success(), "the child failed: {status}");
    bridge.shutdown(LIMIT).await;
}
