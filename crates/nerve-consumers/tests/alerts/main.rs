//! Alerting end to end over loopback: a real HTTP server receives the
//! webhook, a real SMTP conversation receives the email, a real process
//! reads the command sink's JSON. The webhook and email tests need the
//! features `webhook` and `email`; the command sink's run without them.

use std::time::Duration;

#[cfg(feature = "webhook")]
use nerve_consumers::ValidationConsumer;
#[cfg(any(feature = "webhook", feature = "email"))]
use nerve_consumers::alert::Condition;
#[cfg(feature = "email")]
use nerve_consumers::alert::EmailSink;
#[cfg(feature = "webhook")]
use nerve_consumers::alert::WebhookSink;
use nerve_consumers::alert::{AlertConsumer, AlertRule, CommandSink};
#[cfg(feature = "webhook")]
use nerve_core::redact::Redactor;
#[cfg(feature = "webhook")]
use nerve_router::DeadLetterReason;
use nerve_router::{Bus, DeadLetterQueue};
use serde_json::{Value, json};
#[cfg(feature = "webhook")]
use tokio::io::AsyncReadExt;
#[cfg(any(feature = "webhook", feature = "email"))]
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
#[cfg(any(feature = "webhook", feature = "email"))]
use tokio::net::TcpListener;
#[cfg(any(feature = "webhook", feature = "email"))]
use tokio::sync::mpsc;

#[cfg(feature = "webhook")]
mod failures;
#[cfg(feature = "webhook")]
mod receiver;
#[cfg(feature = "webhook")]
mod terminal;

/// Generous bound on any wait; tests finish far sooner.
const PATIENCE: Duration = Duration::from_secs(20);

/// An HTTP/1.1 server on 127.0.0.1 answering `status` to every request
/// and sending each request body down the channel.
#[cfg(feature = "webhook")]
async fn http_server(status: u16) -> (String, mpsc::UnboundedReceiver<Value>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!(
        "http://{}/hook/secret-token",
        listener.local_addr().unwrap()
    );
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut reader = BufReader::new(stream);
                // One connection may carry several requests (keep-alive).
                loop {
                    let mut length = 0;
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if reader.read_line(&mut line).await.unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                        let lower = line.to_ascii_lowercase();
                        if let Some(v) = lower.strip_prefix("content-length:") {
                            length = v.trim().parse().unwrap();
                        }
                    }
                    let mut body = vec![0; length];
                    reader.read_exact(&mut body).await.unwrap();
                    tx.send(serde_json::from_slice(&body).unwrap()).unwrap();
                    let answer = format!("HTTP/1.1 {status} X\r\ncontent-length: 0\r\n\r\n");
                    reader.get_mut().write_all(answer.as_bytes()).await.unwrap();
                }
            });
        }
    });
    (url, rx)
}

/// An SMTP server on 127.0.0.1 that accepts every mail and sends its
/// envelope and content down the channel.
#[cfg(feature = "email")]
async fn smtp_server() -> (u16, mpsc::UnboundedReceiver<(Vec<String>, String)>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let tx = tx.clone();
            tokio::spawn(async move {
                let mut stream = BufReader::new(stream);
                let mut envelope = Vec::new();
                stream
                    .get_mut()
                    .write_all(b"220 localhost ESMTP test\r\n")
                    .await
                    .unwrap();
                let mut line = String::new();
                loop {
                    line.clear();
                    if stream.read_line(&mut line).await.unwrap_or(0) == 0 {
                        return;
                    }
                    let command = line.trim_end().to_owned();
                    let upper = command.to_ascii_uppercase();
                    let answer: &[u8] = if upper.starts_with("EHLO") {
                        b"250-localhost\r\n250 8BITMIME\r\n"
                    } else if upper.starts_with("MAIL FROM") || upper.starts_with("RCPT TO") {
                        envelope.push(command);
                        b"250 OK\r\n"
                    } else if upper == "DATA" {
                        stream
                            .get_mut()
                            .write_all(b"354 go ahead\r\n")
                            .await
                            .unwrap();
                        let mut content = String::new();
                        loop {
                            line.clear();
                            stream.read_line(&mut line).await.unwrap();
                            if line == ".\r\n" {
                                break;
                            }
                            content.push_str(&line);
                        }
                        tx.send((std::mem::take(&mut envelope), content)).unwrap();
                        b"250 queued\r\n"
                    } else if upper == "QUIT" {
                        let _ = stream.get_mut().write_all(b"221 bye\r\n").await;
                        return;
                    } else {
                        b"250 OK\r\n"
                    };
                    stream.get_mut().write_all(answer).await.unwrap();
                }
            });
        }
    });
    (port, rx)
}

#[cfg(any(feature = "webhook", feature = "email"))]
async fn next<T>(rx: &mut mpsc::UnboundedReceiver<T>) -> T {
    tokio::time::timeout(PATIENCE, rx.recv())
        .await
        .expect("nothing arrived in time")
        .expect("the server stopped")
}

#[cfg(any(feature = "webhook", feature = "email"))]
fn low_success_rule() -> AlertRule {
    AlertRule::new("low-success", "validation.warning")
        .when(Condition::below("success_rate", 0.6))
        .message("Success rate dropped to {data.success_rate:%} in {run_id} ({data.contact})")
}

#[cfg(feature = "webhook")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_webhook_receives_a_slack_body_with_redacted_data() {
    let (url, mut bodies) = http_server(200).await;
    let bus = Bus::new();
    let alerts = AlertConsumer::builder()
        .rule(low_success_rule())
        .sink(WebhookSink::builder().url(url).build().unwrap())
        .redactor(Redactor::builder().build().unwrap())
        .build()
        .unwrap();
    alerts.attach(&bus).unwrap();

    // Above the condition's limit: no alert.
    bus.emit(
        "validation.warning",
        json!({"run_id": "r1", "success_rate": 0.65, "contact": "x"}),
    )
    .unwrap();
    bus.emit(
        "validation.warning",
        json!({"run_id": "r1", "success_rate": 0.55, "contact": "curator@herbarium.example.org"}),
    )
    .unwrap();

    let body = next(&mut bodies).await;
    assert_eq!(
        body,
        json!({"text": "Success rate dropped to 55% in r1 ([REDACTED_EMAIL])"})
    );
    alerts.flush(PATIENCE).await.unwrap();
    let stats = alerts.stats();
    assert_eq!((stats.triggered, stats.delivered, stats.pending), (1, 1, 0));
}

#[cfg(feature = "webhook")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_custom_body_carries_the_whole_alert() {
    let (url, mut bodies) = http_server(200).await;
    let bus = Bus::new();
    let alerts = AlertConsumer::builder()
        .rule(AlertRule::new("run-failed", "extraction.failed"))
        .sink(
            WebhookSink::builder()
                .url(url)
                .body(|alert| serde_json::to_value(alert).unwrap())
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    alerts.attach(&bus).unwrap();
    bus.emit(
        "extraction.failed",
        json!({"run_id": "r9", "reason": "early_validation_failed"}),
    )
    .unwrap();
    let body = next(&mut bodies).await;
    assert_eq!(body["rule"], "run-failed");
    assert_eq!(body["key"], "run-failed:r9");
    assert_eq!(body["run_id"], "r9");
    assert_eq!(body["message"], "run-failed: extraction.failed");
    assert_eq!(body["data"]["reason"], "early_validation_failed");
}

#[cfg(feature = "webhook")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limiting_holds_under_1000_triggering_events() {
    let (url, mut bodies) = http_server(200).await;
    let bus = Bus::new();
    let alerts = AlertConsumer::builder()
        .rule(low_success_rule().window(Duration::from_secs(3600)))
        .sink(WebhookSink::builder().url(url).build().unwrap())
        .build()
        .unwrap();
    alerts.attach(&bus).unwrap();

    for i in 0..1_000 {
        // Two runs: each is its own key, so each alerts once.
        let run = if i % 2 == 0 { "even" } else { "odd" };
        bus.emit(
            "validation.warning",
            json!({"run_id": run, "success_rate": 0.1, "contact": i}),
        )
        .unwrap();
    }
    alerts.flush(PATIENCE).await.unwrap();

    let mut texts = vec![
        next(&mut bodies).await["text"].clone(),
        next(&mut bodies).await["text"].clone(),
    ];
    texts.sort_by_key(ToString::to_string);
    assert_eq!(
        texts,
        [
            "Success rate dropped to 10% in even (0)",
            "Success rate dropped to 10% in odd (1)"
        ]
    );
    // Every delivery was counted before flush returned: nothing else came.
    assert!(bodies.try_recv().is_err());
    let stats = alerts.stats();
    assert_eq!(
        (stats.triggered, stats.suppressed, stats.delivered),
        (1_000, 998, 2)
    );
    assert_eq!((stats.dropped, stats.failed, stats.pending), (0, 0, 0));
}

#[cfg(feature = "webhook")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deliveries_are_retried_counted_and_dead_lettered() {
    let (url, mut bodies) = http_server(503).await;
    let dlq = DeadLetterQueue::new(100);
    let bus = Bus::new();
    let alerts = AlertConsumer::builder()
        .rule(AlertRule::new("run-failed", "extraction.failed"))
        .sink(WebhookSink::builder().url(url).build().unwrap())
        .retry(3, Duration::from_millis(1))
        .dead_letters(dlq.clone())
        .build()
        .unwrap();
    alerts.attach(&bus).unwrap();

    bus.emit("extraction.failed", json!({"run_id": "r1"}))
        .unwrap();
    assert_eq!(alerts.flush(PATIENCE).await.unwrap_err().report.failed, 1);

    for _ in 0..3 {
        next(&mut bodies).await;
    }
    assert!(bodies.try_recv().is_err());
    let stats = alerts.stats();
    assert_eq!((stats.failed, stats.retries, stats.delivered), (1, 2, 0));
    let letters = dlq.by_reason(DeadLetterReason::DeliveryFailed);
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].event.event_type(), "extraction.failed");
    assert_eq!(
        letters[0].subscription_name.as_deref(),
        Some("alert:run-failed:webhook")
    );
    assert_eq!(
        letters[0].error,
        "after 3 attempts: webhook answered 503 Service Unavailable"
    );
    assert_eq!(letters[0].attempts, 3, "the entry counts the same attempts");
}

#[cfg(feature = "webhook")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_error_is_not_retried() {
    let (url, mut bodies) = http_server(404).await;
    let bus = Bus::new();
    let alerts = AlertConsumer::builder()
        .rule(AlertRule::new("run-failed", "extraction.failed"))
        .sink(WebhookSink::builder().url(url).build().unwrap())
        .retry(5, Duration::from_millis(1))
        .build()
        .unwrap();
    alerts.attach(&bus).unwrap();
    bus.emit("extraction.failed", json!({})).unwrap();
    assert_eq!(alerts.flush(PATIENCE).await.unwrap_err().report.failed, 1);
    next(&mut bodies).await;
    assert!(bodies.try_recv().is_err());
    assert_eq!((alerts.stats().failed, alerts.stats().retries), (1, 0));
}

#[cfg(feature = "email")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_email_goes_through_a_real_smtp_conversation() {
    let (port, mut mails) = smtp_server().await;
    let bus = Bus::new();
    let alerts = AlertConsumer::builder()
        .rule(low_success_rule())
        .sink(
            EmailSink::builder()
                .plain("127.0.0.1")
                .port(port)
                .from("nerve <alerts@herbarium.example.org>")
                .to("oncall@herbarium.example.org")
                .build()
                .unwrap(),
        )
        .build()
        .unwrap();
    alerts.attach(&bus).unwrap();

    bus.emit(
        "validation.warning",
        json!({"run_id": "r1", "success_rate": 0.4, "contact": "c"}),
    )
    .unwrap();
    let (envelope, content) = next(&mut mails).await;
    assert_eq!(
        envelope,
        [
            "MAIL FROM:<alerts@herbarium.example.org>",
            "RCPT TO:<oncall@herbarium.example.org>"
        ]
    );
    assert!(
        content.contains("Subject: [nerve] low-success: Success rate dropped to 40% in r1 (c)"),
        "{content}"
    );
    assert!(content.contains("\"rule\": \"low-success\""), "{content}");
    alerts.flush(PATIENCE).await.unwrap();
    assert_eq!(alerts.stats().delivered, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_command_reads_the_alert_as_json_on_stdin() {
    let dir = std::env::temp_dir().join(format!("nerve-alert-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let out = dir.join("alert.json");
    let bus = Bus::new();
    let alerts = AlertConsumer::builder()
        .rule(AlertRule::new("run-failed", "extraction.failed"))
        .sink(
            CommandSink::new("sh")
                .arg("-c")
                .arg("cat > \"$1\"")
                .arg("sh")
                .arg(&out),
        )
        .build()
        .unwrap();
    alerts.attach(&bus).unwrap();
    bus.emit("extraction.failed", json!({"run_id": "r2", "processed": 5}))
        .unwrap();
    alerts.flush(PATIENCE).await.unwrap();
    assert_eq!(alerts.stats().delivered, 1);

    let alert: Value = serde_json::from_slice(&std::fs::read(&out).unwrap()).unwrap();
    assert_eq!(alert["rule"], "run-failed");
    assert_eq!(alert["data"]["processed"], 5);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_command_reports_its_stderr() {
    let dlq = DeadLetterQueue::new(10);
    let bus = Bus::new();
    let alerts = AlertConsumer::builder()
        .rule(AlertRule::new("run-failed", "extraction.failed"))
        .sink(
            CommandSink::new("sh")
                .arg("-c")
                .arg("echo no pager >&2; exit 3"),
        )
        .retry(1, Duration::from_millis(1))
        .dead_letters(dlq.clone())
        .build()
        .unwrap();
    alerts.attach(&bus).unwrap();
    bus.emit("extraction.failed", json!({})).unwrap();
    assert_eq!(alerts.flush(PATIENCE).await.unwrap_err().report.failed, 1);
    assert_eq!(alerts.stats().failed, 1);
    let error = &dlq.entries()[0].error;
    assert!(error.ends_with("exit status: 3: no pager"), "{error}");
}

#[cfg(feature = "webhook")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_halted_run_alerts_without_delaying_the_halt() {
    let (url, mut bodies) = http_server(200).await;
    let bus = Bus::new();
    ValidationConsumer::builder()
        .build()
        .unwrap()
        .attach(&bus)
        .unwrap();
    let alerts = AlertConsumer::builder()
        .rule(
            AlertRule::new("checkpoint-failed", "validation.checkpoint")
                .when(Condition::equals("passed", false))
                .message("Early validation failed: {data.success_rate:%} after {data.processed}"),
        )
        .sink(WebhookSink::builder().url(url).build().unwrap())
        .build()
        .unwrap();
    alerts.attach(&bus).unwrap();

    let halted = (1..=5)
        .map(|_| bus.emit("specimen.failed", json!({})))
        .position(|r| r.is_err());
    assert_eq!(halted, Some(4));
    let body = next(&mut bodies).await;
    assert_eq!(body["text"], "Early validation failed: 0% after 5");
}
