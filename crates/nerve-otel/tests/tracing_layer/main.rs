//! The `tracing` bridge, with a real `tracing-subscriber` formatter.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};

use nerve_core::Event;
use nerve_otel::TracingLayer;
use nerve_router::{Bus, HandlerError, Subscribe};
use serde_json::json;

/// Everything the global subscriber wrote (one subscriber per process: the
/// queued and async handlers log from other threads).
fn logs() -> &'static Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buffer = Arc::new(Mutex::new(Vec::new()));
        let writer = buffer.clone();
        tracing_subscriber::fmt()
            .with_writer(move || Sink(writer.clone()))
            .with_ansi(false)
            .with_max_level(tracing::Level::INFO)
            .init();
        buffer
    })
}

struct Sink(Arc<Mutex<Vec<u8>>>);

impl Write for Sink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

fn lines_with(needle: &str) -> Vec<String> {
    let text = String::from_utf8(logs().lock().unwrap().clone()).unwrap();
    text.lines()
        .filter(|l| l.contains(needle))
        .map(str::to_owned)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn handler_logs_carry_the_event_and_its_correlation_id() {
    logs();
    let bus = Bus::builder()
        .instrument(TracingLayer::new())
        .build()
        .unwrap();
    bus.subscribe_with(
        "order.placed",
        |_| {
            tracing::info!("logged inline");
            Ok::<_, HandlerError>(())
        },
        Subscribe::new().name("inline"),
    )
    .unwrap();
    bus.subscribe_with(
        "order.placed",
        |_| {
            tracing::info!("logged queued");
            Ok::<_, HandlerError>(())
        },
        Subscribe::new().name("queued").queued(4),
    )
    .unwrap();
    bus.subscribe_async_with(
        "order.placed",
        |_e: Event| async {
            tokio::task::yield_now().await;
            tracing::info!("logged async");
            Ok::<_, HandlerError>(())
        },
        Subscribe::new().name("async"),
    )
    .unwrap();
    bus.emit_event(
        Event::builder("order.placed")
            .correlation_id("corr-tracing-1")
            .data(json!({}))
            .build()
            .unwrap(),
    )
    .unwrap();
    bus.flush().await;
    for mode in ["inline", "queued", "async"] {
        let lines = lines_with(&format!("logged {mode}"));
        assert_eq!(lines.len(), 1, "{lines:?}");
        let line = &lines[0];
        assert!(line.contains("nerve.handle{"), "{line}");
        assert!(line.contains("event_type=\"order.placed\""), "{line}");
        assert!(line.contains("correlation_id=\"corr-tracing-1\""), "{line}");
        assert!(line.contains(&format!("subscription=\"{mode}\"")), "{line}");
    }
    bus.shutdown().await;
}

#[test]
fn emits_record_the_correlation_id_on_the_current_span() {
    logs();
    let bus = Bus::builder()
        .instrument(TracingLayer::new())
        .build()
        .unwrap();
    let span = tracing::info_span!("request", correlation_id = tracing::field::Empty);
    span.in_scope(|| {
        bus.emit_event(
            Event::builder("a.b")
                .correlation_id("corr-tracing-2")
                .build()
                .unwrap(),
        )
        .unwrap();
        tracing::info!("after the emit");
    });
    let lines = lines_with("after the emit");
    assert_eq!(lines.len(), 1);
    assert!(
        lines[0].contains("request{correlation_id=\"corr-tracing-2\"}"),
        "{}",
        lines[0]
    );
}

#[test]
fn failures_are_recorded_on_the_span() {
    logs();
    let bus = Bus::builder()
        .instrument(TracingLayer::new())
        .build()
        .unwrap();
    bus.subscribe_with(
        "a.fail",
        |_| {
            tracing::info!("about to fail");
            Err(HandlerError::new("no stock"))
        },
        Subscribe::new().name("fails"),
    )
    .unwrap();
    let _ = bus.emit("a.fail", 1);
    // The formatter prints a span's recorded fields with each event inside
    // it; the handler's log line shows the span as it was when logged.
    let lines = lines_with("about to fail");
    assert_eq!(lines.len(), 1);
    assert!(lines[0].contains("subscription=\"fails\""), "{}", lines[0]);
}
