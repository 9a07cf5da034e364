//! A sink that is down is logged at warn, published as
//! `system.alert_failed`, counted, and reported by `flush`.

use std::io::Write;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

#[cfg(feature = "email")]
use nerve_consumers::alert::EmailSink;
use nerve_consumers::alert::{AlertConsumer, AlertRule, WebhookSink};
use nerve_core::Event;
use nerve_router::{Bus, HandlerError};
use serde_json::json;

use super::PATIENCE;
use super::receiver::{Receiver, refused_port};

/// Everything logged through `tracing` by this test binary, from every
/// thread (the failures are logged on the consumer's delivery thread).
fn logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let logs = Arc::new(Mutex::new(Vec::new()));
        let sink = logs.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::WARN)
            .with_writer(move || Log(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).unwrap();
        logs
    })
    .clone()
}

struct Log(Arc<Mutex<Vec<u8>>>);

impl Write for Log {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The warnings logged so far that mention `rule`.
fn warnings_about(rule: &str) -> Vec<String> {
    let logs = logs();
    let text = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    text.lines()
        .filter(|l| l.contains("WARN") && l.contains(rule))
        .map(str::to_owned)
        .collect()
}

/// Every `system.alert_failed` event published on `bus`.
fn published(bus: &Bus) -> Arc<Mutex<Vec<Event>>> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    bus.subscribe("system.alert_failed", move |e: &Event| {
        sink.lock().unwrap().push(e.clone());
        Ok::<(), HandlerError>(())
    })
    .unwrap();
    seen
}

#[cfg(feature = "email")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_webhook_and_relay_are_logged_published_counted_and_flushed_as_failures() {
    logs();
    let port = refused_port();
    let bus = Bus::new();
    let failures = published(&bus);
    let alerts = AlertConsumer::builder()
        .rule(AlertRule::new("refused-rule", "extraction.failed"))
        .sink(
            WebhookSink::builder()
                .url(format!("http://127.0.0.1:{port}/hook"))
                .build()
                .unwrap(),
        )
        .sink(
            EmailSink::builder()
                .plain("127.0.0.1")
                .port(port)
                .from("alerts@herbarium.example.org")
                .to("oncall@herbarium.example.org")
                .build()
                .unwrap(),
        )
        .retry(2, Duration::from_millis(1))
        .terminal_wait(PATIENCE)
        .build()
        .unwrap();
    alerts.attach(&bus).unwrap();

    let id = bus
        .emit("extraction.failed", json!({"run_id": "r1"}))
        .unwrap();
    // A terminal event: both deliveries failed before emit returned.
    let mut events = failures.lock().unwrap().clone();
    events.sort_by_key(|e| e.data()["sink"].to_string());
    assert_eq!(events.len(), 2, "{events:?}");
    for (event, sink, error) in [
        (&events[0], "email", "smtp: "),
        (&events[1], "webhook", "webhook request failed"),
    ] {
        let data = event.data();
        assert_eq!(data["sink"], sink);
        assert_eq!(data["rule"], "refused-rule");
        assert_eq!(data["attempts"], 2);
        assert_eq!(data["event_type"], "extraction.failed");
        assert_eq!(data["event_id"], id.to_string());
        assert_eq!(data["run_id"], "r1");
        assert!(data["error"].as_str().unwrap().starts_with(error), "{data}");
        assert_eq!(event.causation_id(), Some(id));
    }
    // The webhook's error says why it failed, not just reqwest's "error
    // sending request", and never prints the URL (it carries a token).
    let webhook_error = events[1].data()["error"].as_str().unwrap().to_owned();
    assert!(
        webhook_error.to_lowercase().contains("connection refused"),
        "{webhook_error}"
    );
    assert!(!webhook_error.contains("/hook"), "{webhook_error}");
    let stats = alerts.stats();
    assert_eq!((stats.failed, stats.retries, stats.delivered), (2, 2, 0));

    let error = alerts.flush(PATIENCE).await.unwrap_err();
    assert_eq!((error.report.failed, error.report.delivered), (2, 0));
    assert_eq!(error.to_string(), "2 alert deliveries failed (0 delivered)");
    // The next flush reports only what happened since.
    assert!(alerts.flush(PATIENCE).await.unwrap().is_clean());

    let warnings = warnings_about("refused-rule");
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(warnings.iter().all(|w| w.contains("alert delivery failed")));
    assert!(
        warnings
            .iter()
            .any(|w| w.contains("sink=\"webhook\"") || w.contains("sink=webhook"))
    );
}

#[test]
fn a_webhook_answering_500_is_logged_published_counted_and_flushed_as_a_failure() {
    logs();
    let receiver = Receiver::answering(500);
    let bus = Bus::new();
    let failures = published(&bus);
    let alerts = AlertConsumer::builder()
        .rule(AlertRule::new("answers-500", "validation.warning"))
        .sink(WebhookSink::builder().url(&receiver.url).build().unwrap())
        .retry(3, Duration::from_millis(1))
        .build()
        .unwrap();
    alerts.attach(&bus).unwrap();

    // Not terminal: emit returns at once, and flush waits.
    bus.emit("validation.warning", json!({"success_rate": 0.1}))
        .unwrap();
    let error = alerts.flush_blocking(PATIENCE).unwrap_err();
    assert_eq!(error.report.failed, 1);
    assert_eq!(error.to_string(), "1 alert delivery failed (0 delivered)");
    for _ in 0..3 {
        receiver.next();
    }

    let events = failures.lock().unwrap().clone();
    assert_eq!(events.len(), 1);
    let data = events[0].data();
    assert_eq!(data["sink"], "webhook");
    assert_eq!(data["attempts"], 3);
    assert_eq!(data["error"], "webhook answered 500 Internal Server Error");
    assert_eq!(data["event_type"], "validation.warning");
    assert_eq!(alerts.stats().failed, 1);
    let warnings = warnings_about("answers-500");
    assert_eq!(warnings.len(), 1, "{warnings:?}");
    assert!(
        warnings[0].contains("webhook answered 500"),
        "{}",
        warnings[0]
    );
}

#[test]
fn an_alert_about_a_failed_alert_that_fails_is_not_announced_again() {
    let port = refused_port();
    let bus = Bus::new();
    let failures = published(&bus);
    let alerts = AlertConsumer::builder()
        .rule(AlertRule::new("run-failed", "extraction.failed"))
        .rule(AlertRule::new("alert-failed", "system.alert_failed"))
        .sink(
            WebhookSink::builder()
                .url(format!("http://127.0.0.1:{port}/hook"))
                .build()
                .unwrap(),
        )
        .retry(1, Duration::from_millis(1))
        .build()
        .unwrap();
    alerts.attach(&bus).unwrap();
    bus.emit("extraction.failed", json!({})).unwrap();
    let error = alerts.flush_blocking(PATIENCE).unwrap_err();
    // The first failure raised the second alert, whose failure is counted
    // but not published: no loop.
    assert_eq!(error.report.failed, 2);
    assert_eq!(alerts.stats().triggered, 2);
    assert_eq!(failures.lock().unwrap().len(), 1);
}
