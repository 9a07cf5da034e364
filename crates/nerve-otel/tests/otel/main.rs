//! The OpenTelemetry bridge against the SDK's in-memory span exporter.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use nerve_core::trace::TraceContext;
use nerve_core::{Event, correlation};
use nerve_otel::{OtelLayer, attributes as attr};
use nerve_router::{Bus, HandlerError, Subscribe};
use opentelemetry::trace::{
    SpanId, SpanKind, Status, TraceContextExt, TraceId, Tracer, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue, Value};
use opentelemetry_sdk::trace::{InMemorySpanExporter, Sampler, SdkTracerProvider, SpanData};
use serde_json::json;

struct Otel {
    exporter: InMemorySpanExporter,
    provider: SdkTracerProvider,
}

impl Otel {
    fn new() -> Self {
        Self::with_sampler(Sampler::AlwaysOn)
    }

    fn with_sampler(sampler: Sampler) -> Self {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .with_sampler(sampler)
            .build();
        Self { exporter, provider }
    }

    fn layer(&self) -> OtelLayer<opentelemetry_sdk::trace::SdkTracer> {
        OtelLayer::with_tracer(self.provider.tracer("nerve"))
    }

    fn tracer(&self) -> opentelemetry_sdk::trace::SdkTracer {
        self.provider.tracer("test")
    }

    fn spans(&self) -> Vec<SpanData> {
        self.provider.force_flush().unwrap();
        self.exporter.get_finished_spans().unwrap()
    }

    fn named(&self, name: &str) -> Vec<SpanData> {
        self.spans()
            .into_iter()
            .filter(|s| s.name == name)
            .collect()
    }
}

fn attribute<'a>(span: &'a SpanData, key: &str) -> Option<&'a Value> {
    span.attributes
        .iter()
        .find(|kv| kv.key.as_str() == key)
        .map(|kv| &kv.value)
}

fn text(span: &SpanData, key: &str) -> String {
    match attribute(span, key) {
        Some(v) => v.as_str().into_owned(),
        None => panic!("span {} has no attribute {key}", span.name),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_kinds_of_handler_are_children_of_the_emitting_span() {
    let otel = Otel::new();
    let bus = Bus::builder().instrument(otel.layer()).build().unwrap();
    bus.subscribe_with(
        "order.placed",
        |_| Ok::<_, HandlerError>(()),
        Subscribe::new().name("inline"),
    )
    .unwrap();
    bus.subscribe_with(
        "order.placed",
        |_| Ok::<_, HandlerError>(()),
        Subscribe::new().name("queued").queued(16),
    )
    .unwrap();
    bus.subscribe_async_with(
        "order.placed",
        |_event: Event| async move {
            // A hop inside the handler: still the handler's span.
            tokio::task::yield_now().await;
            assert!(nerve_otel::trace_correlation_id().is_some());
            Ok::<_, HandlerError>(())
        },
        Subscribe::new().name("async"),
    )
    .unwrap();

    let (event_id, emit_span) = otel.tracer().in_span("checkout", |cx| {
        let id = bus.emit("order.placed", json!({"order": 7})).unwrap();
        (id, cx.span().span_context().clone())
    });
    bus.flush().await;

    let handled = otel.named("nerve.handle order.placed");
    assert_eq!(handled.len(), 3, "{handled:#?}");
    let mut modes = Vec::new();
    for span in &handled {
        assert_eq!(span.parent_span_id, emit_span.span_id(), "{span:#?}");
        assert_eq!(span.span_context.trace_id(), emit_span.trace_id());
        assert_eq!(span.span_kind, SpanKind::Consumer);
        assert_eq!(span.status, Status::Unset);
        assert_eq!(text(span, attr::MESSAGING_SYSTEM), "nerve");
        assert_eq!(text(span, attr::MESSAGING_DESTINATION_NAME), "order.placed");
        assert_eq!(text(span, attr::MESSAGING_MESSAGE_ID), event_id.to_string());
        assert_eq!(
            text(span, attr::MESSAGING_CONVERSATION_ID),
            event_id.to_string(),
            "a root event's correlation id is its own id"
        );
        assert_eq!(attribute(span, attr::EVENT_SEQ), Some(&Value::I64(1)));
        assert_eq!(text(span, attr::OUTCOME), "delivered");
        modes.push((
            text(span, attr::SUBSCRIPTION_NAME),
            text(span, attr::HANDLER_MODE),
        ));
    }
    modes.sort();
    assert_eq!(
        modes,
        [
            ("async".to_owned(), "async".to_owned()),
            ("inline".to_owned(), "inline".to_owned()),
            ("queued".to_owned(), "queued".to_owned()),
        ]
    );
    // Siblings: three different spans under one parent.
    let mut ids: Vec<SpanId> = handled.iter().map(|s| s.span_context.span_id()).collect();
    ids.dedup();
    assert_eq!(ids.len(), 3);

    // The emit itself is a span event on the emitting span.
    let checkout = otel.named("checkout").pop().unwrap();
    let emit = checkout
        .events
        .iter()
        .find(|e| e.name == "nerve.emit order.placed")
        .expect("a nerve.emit span event");
    assert!(emit.attributes.contains(&KeyValue::new(
        attr::MESSAGING_MESSAGE_ID,
        event_id.to_string()
    )));
    bus.shutdown().await;
}

#[test]
fn the_event_carries_the_emitting_spans_context() {
    let otel = Otel::new();
    let bus = Bus::builder().instrument(otel.layer()).build().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    bus.subscribe("a.b", move |e| {
        s.lock().unwrap().push(e.clone());
        Ok::<_, HandlerError>(())
    })
    .unwrap();
    bus.emit("a.b", 1).unwrap();
    let cx = otel.tracer().in_span("outer", |cx| {
        bus.emit("a.b", 2).unwrap();
        cx.span().span_context().clone()
    });
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].trace_context(), None, "emitted outside any span");
    let tc = seen[1].trace_context().unwrap();
    assert_eq!(tc.trace_id(), cx.trace_id().to_bytes());
    assert_eq!(tc.span_id(), cx.span_id().to_bytes());
    assert!(tc.is_sampled());
    // An event emitted outside a span gets a root span of its own.
    let roots: Vec<_> = otel
        .named("nerve.handle a.b")
        .into_iter()
        .filter(|s| s.parent_span_id == SpanId::INVALID)
        .collect();
    assert_eq!(roots.len(), 1);
}

#[test]
fn a_nested_emit_continues_the_same_trace() {
    let otel = Otel::new();
    let bus = Bus::builder().instrument(otel.layer()).build().unwrap();
    let inner = bus.clone();
    bus.subscribe("order.placed", move |_| {
        inner.emit("order.shipped", json!({})).map(drop)
    })
    .unwrap();
    bus.subscribe("order.shipped", |_| Ok::<_, HandlerError>(()))
        .unwrap();
    let root = otel.tracer().in_span("request", |cx| {
        bus.emit("order.placed", json!({})).unwrap();
        cx.span().span_context().clone()
    });
    let placed = otel.named("nerve.handle order.placed").pop().unwrap();
    let shipped = otel.named("nerve.handle order.shipped").pop().unwrap();
    assert_eq!(placed.parent_span_id, root.span_id());
    assert_eq!(shipped.parent_span_id, placed.span_context.span_id());
    assert_eq!(shipped.span_context.trace_id(), root.trace_id());
    // The nested emit is a span event on the handler's span.
    assert!(
        placed
            .events
            .iter()
            .any(|e| e.name == "nerve.emit order.shipped")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_panics_and_timeouts_have_error_status() {
    let otel = Otel::new();
    let bus = Bus::builder()
        .instrument(otel.layer())
        .handler_timeout(std::time::Duration::from_millis(50))
        .build()
        .unwrap();
    bus.subscribe_with(
        "job.run",
        |_| Err(HandlerError::new("disk full")),
        Subscribe::new().name("fails"),
    )
    .unwrap();
    bus.subscribe_with(
        "job.run",
        |_| -> Result<(), HandlerError> { panic!("boom") },
        Subscribe::new().name("panics"),
    )
    .unwrap();
    bus.subscribe_async_with(
        "job.run",
        |_e: Event| async {
            std::future::pending::<()>().await;
            Ok::<_, HandlerError>(())
        },
        Subscribe::new().name("hangs"),
    )
    .unwrap();
    otel.tracer()
        .in_span("request", |_| bus.emit("job.run", json!({})).unwrap());
    bus.flush().await;
    let spans = otel.named("nerve.handle job.run");
    assert_eq!(spans.len(), 3);
    for span in spans {
        let name = text(&span, attr::SUBSCRIPTION_NAME);
        let (outcome, error) = match name.as_str() {
            "fails" => ("failed", "disk full"),
            "panics" => ("panicked", "boom"),
            "hangs" => ("timed_out", "timed out after"),
            other => panic!("unexpected subscription {other}"),
        };
        assert_eq!(text(&span, attr::OUTCOME), outcome);
        assert_eq!(text(&span, attr::ERROR_TYPE), outcome);
        match &span.status {
            Status::Error { description } => {
                assert!(description.contains(error), "{name}: {description}");
            }
            other => panic!("{name}: status {other:?}"),
        }
    }
    bus.shutdown().await;
}

#[test]
fn correlation_from_trace_fills_only_what_is_missing() {
    let otel = Otel::new();
    let bus = Bus::builder()
        .instrument(otel.layer().correlation_from_trace(true))
        .build()
        .unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    bus.subscribe("a.*", move |e| {
        s.lock()
            .unwrap()
            .push(e.correlation_id().unwrap().as_str().to_owned());
        Ok::<_, HandlerError>(())
    })
    .unwrap();
    let trace_id = otel.tracer().in_span("request", |cx| {
        bus.emit("a.implicit", 1).unwrap();
        bus.emit_event(
            Event::builder("a.explicit")
                .correlation_id("given")
                .build()
                .unwrap(),
        )
        .unwrap();
        let _ambient = correlation::enter("ambient-id");
        bus.emit("a.ambient", 1).unwrap();
        format!("{:032x}", cx.span().span_context().trace_id())
    });
    let outside = bus.emit("a.outside", 1).unwrap();
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0], trace_id);
    assert_eq!(trace_id.len(), 32);
    assert_eq!(seen[1], "given");
    assert_eq!(seen[2], "ambient-id");
    assert_eq!(seen[3], outside.to_string(), "outside a span: generated");
}

#[test]
fn trace_correlation_id_is_the_current_trace_id() {
    let otel = Otel::new();
    assert_eq!(nerve_otel::trace_correlation_id(), None);
    otel.tracer().in_span("x", |cx| {
        let id = nerve_otel::trace_correlation_id().unwrap();
        assert_eq!(id, format!("{:032x}", cx.span().span_context().trace_id()));
        assert!(
            id.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        );
    });
}

#[test]
fn traced_wraps_a_closure_and_a_future_in_a_span() {
    let otel = Otel::new();
    opentelemetry::global::set_tracer_provider(otel.provider.clone());
    let bus = Bus::builder().instrument(OtelLayer::new()).build().unwrap();
    bus.subscribe("a.b", |_| Ok::<_, HandlerError>(())).unwrap();
    let inside = nerve_otel::traced("unit of work", || {
        bus.emit("a.b", 1).unwrap();
        nerve_otel::trace_correlation_id()
    });
    assert!(inside.is_some());
    let work = otel.named("unit of work").pop().unwrap();
    let handled = otel.named("nerve.handle a.b").pop().unwrap();
    assert_eq!(handled.parent_span_id, work.span_context.span_id());

    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    let id = rt.block_on(nerve_otel::traced_async("async work", async {
        tokio::task::yield_now().await;
        nerve_otel::trace_correlation_id()
    }));
    let span = otel.named("async work").pop().expect("ended on completion");
    assert_eq!(id, Some(format!("{:032x}", span.span_context.trace_id())));
}

#[test]
fn inject_and_extract_round_trip_a_traceparent() {
    let tc = TraceContext::parse(
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        Some("congo=t61rcWkgMzE"),
    )
    .unwrap();
    let event = Event::builder("a.b")
        .trace_context(tc.clone())
        .build()
        .unwrap();
    let mut headers = HashMap::new();
    assert!(nerve_otel::inject(&event, &mut headers));
    assert_eq!(
        headers["traceparent"],
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
    );
    assert_eq!(headers["tracestate"], "congo=t61rcWkgMzE");
    assert_eq!(
        nerve_otel::extract_trace_context(&headers).unwrap(),
        Some(tc)
    );

    let cx = nerve_otel::extract(&headers);
    let span = cx.span();
    let sc = span.span_context();
    assert!(sc.is_remote() && sc.is_sampled());
    assert_eq!(
        sc.trace_id(),
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
    );
    assert_eq!(sc.trace_state().get("congo"), Some("t61rcWkgMzE"));

    // An event without context writes nothing; bad headers are an error.
    let mut empty = HashMap::new();
    assert!(!nerve_otel::inject(
        &Event::new("a.b", 1).unwrap(),
        &mut empty
    ));
    assert!(empty.is_empty());
    let bad = HashMap::from([("traceparent".to_owned(), "00-xyz".to_owned())]);
    assert!(nerve_otel::extract_trace_context(&bad).is_err());
    assert!(!nerve_otel::extract(&bad).has_active_span());
}

#[test]
fn an_extracted_context_becomes_the_handlers_parent() {
    let otel = Otel::new();
    let bus = Bus::builder().instrument(otel.layer()).build().unwrap();
    bus.subscribe("http.request", |_| Ok::<_, HandlerError>(()))
        .unwrap();
    let headers = HashMap::from([(
        "traceparent".to_owned(),
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".to_owned(),
    )]);
    let tc = nerve_otel::extract_trace_context(&headers)
        .unwrap()
        .unwrap();
    bus.emit_event(
        Event::builder("http.request")
            .trace_context(tc)
            .build()
            .unwrap(),
    )
    .unwrap();
    let span = otel.named("nerve.handle http.request").pop().unwrap();
    assert_eq!(
        span.span_context.trace_id(),
        TraceId::from_hex("4bf92f3577b34da6a3ce929d0e0e4736").unwrap()
    );
    assert_eq!(
        span.parent_span_id,
        SpanId::from_hex("00f067aa0ba902b7").unwrap()
    );
}

#[test]
fn always_off_records_nothing_but_still_propagates() {
    let otel = Otel::with_sampler(Sampler::AlwaysOff);
    let bus = Bus::builder().instrument(otel.layer()).build().unwrap();
    let inner = bus.clone();
    let nested = Arc::new(Mutex::new(None));
    let n = nested.clone();
    bus.subscribe("a.outer", move |_| inner.emit("a.inner", 1).map(drop))
        .unwrap();
    bus.subscribe("a.inner", move |e| {
        *n.lock().unwrap() = e.trace_context().cloned();
        Ok::<_, HandlerError>(())
    })
    .unwrap();
    otel.tracer()
        .in_span("request", |_| bus.emit("a.outer", 1).unwrap());
    assert!(otel.spans().is_empty());
    let tc = nested
        .lock()
        .unwrap()
        .clone()
        .expect("context propagates unsampled");
    assert!(!tc.is_sampled());
}

#[test]
fn without_a_provider_everything_is_a_no_op() {
    // No global provider in this test's process (nextest runs each test in
    // its own): the layer's tracer is the no-op one.
    if std::env::var_os("NEXTEST").is_none() {
        return; // Under plain `cargo test` another test may have set one.
    }
    let bus = Bus::builder().instrument(OtelLayer::new()).build().unwrap();
    let seen = Arc::new(Mutex::new(None));
    let s = seen.clone();
    bus.subscribe("a.b", move |e| {
        *s.lock().unwrap() = Some(e.trace_context().cloned());
        Ok::<_, HandlerError>(())
    })
    .unwrap();
    assert_eq!(
        nerve_otel::traced("x", nerve_otel::trace_correlation_id),
        None
    );
    bus.emit("a.b", 1).unwrap();
    assert_eq!(*seen.lock().unwrap(), Some(None));
    assert!(!Context::current().has_active_span());
}

#[test]
fn the_journal_writes_the_trace_context() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let otel = Otel::new();
    let journal = nerve_journal::Journal::builder(&path).build().unwrap();
    let bus = Bus::builder()
        .instrument(otel.layer())
        .journal(journal.clone())
        .build()
        .unwrap();
    let span = otel.tracer().in_span("request", |cx| {
        bus.emit("a.b", 1).unwrap();
        cx.span().span_context().clone()
    });
    bus.shutdown_blocking();
    let text = std::fs::read_to_string(&path).unwrap();
    let line: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(
        line["trace_context"]["traceparent"],
        format!("00-{:032x}-{:016x}-01", span.trace_id(), span.span_id())
    );
    // And reads it back.
    let events: Vec<Event> = nerve_journal::JournalReader::open(&path)
        .unwrap()
        .map(Result::unwrap)
        .collect();
    assert_eq!(
        events[0].trace_context().unwrap().span_id(),
        span.span_id().to_bytes()
    );
}

#[test]
fn a_dead_letter_retry_continues_the_original_trace() {
    let otel = Otel::new();
    let dlq = nerve_router::DeadLetterQueue::new(10);
    let bus = Bus::builder()
        .instrument(otel.layer())
        .dead_letters(dlq.clone())
        .build()
        .unwrap();
    let fail = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let f = fail.clone();
    bus.subscribe_with(
        "job.run",
        move |_| {
            if f.load(std::sync::atomic::Ordering::SeqCst) {
                Err(HandlerError::new("not yet"))
            } else {
                Ok(())
            }
        },
        Subscribe::new().name("flaky").queued(4),
    )
    .unwrap();
    let root = otel.tracer().in_span("request", |cx| {
        bus.emit("job.run", json!({})).unwrap();
        cx.span().span_context().clone()
    });
    bus.flush_blocking();
    let entry = dlq.entries().pop().expect("one dead letter");
    fail.store(false, std::sync::atomic::Ordering::SeqCst);
    dlq.retry_blocking(entry.id).unwrap();
    let spans = otel.named("nerve.handle job.run");
    assert_eq!(spans.len(), 2);
    let outcomes: Vec<String> = spans.iter().map(|s| text(s, attr::OUTCOME)).collect();
    assert_eq!(outcomes, ["failed", "delivered"]);
    for span in spans {
        assert_eq!(span.parent_span_id, root.span_id());
        assert_eq!(span.span_context.trace_id(), root.trace_id());
    }
}

#[test]
fn inline_handlers_run_in_the_emitters_own_context() {
    #[derive(Debug, Clone, PartialEq)]
    struct Tenant(&'static str);

    let otel = Otel::new();
    let bus = Bus::builder().instrument(otel.layer()).build().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    for queued in [false, true] {
        let s = seen.clone();
        let handler = move |_: &Event| {
            let tenant = Context::map_current(|cx| cx.get::<Tenant>().cloned());
            s.lock().unwrap().push((queued, tenant));
            Ok::<_, HandlerError>(())
        };
        let options = Subscribe::new().name(if queued { "queued" } else { "inline" });
        let options = if queued { options.queued(8) } else { options };
        bus.subscribe_with("a.b", handler, options).unwrap();
    }
    let root = {
        let cx = Context::current_with_value(Tenant("acme"));
        let _guard = cx.attach();
        otel.tracer().in_span("request", |cx| {
            bus.emit("a.b", 1).unwrap();
            cx.span().span_context().clone()
        })
    };
    bus.flush_blocking();
    let mut seen = seen.lock().unwrap().clone();
    seen.sort_by_key(|(queued, _)| *queued);
    // Inline: the emitter's context itself, its values included. Queued: a
    // context rebuilt from the trace context the event carries, which is
    // all that crosses to another thread (or process).
    assert_eq!(seen, [(false, Some(Tenant("acme"))), (true, None)]);
    let spans = otel.named("nerve.handle a.b");
    assert_eq!(spans.len(), 2);
    assert!(spans.iter().all(|s| s.parent_span_id == root.span_id()));
}
