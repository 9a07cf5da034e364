//! A terminal event's `emit` returns only once the alerts before it were
//! delivered or recorded: on a plain thread, a tokio worker, a
//! current-thread runtime, and in a process that exits right after.

use std::path::Path;
use std::process::{Command, Output};
use std::time::Duration;

use nerve_consumers::alert::{AlertConsumer, AlertRule, Condition, WebhookSink};
use nerve_core::Event;
use nerve_journal::DeadLetterJournal;
use nerve_router::{Bus, DeadLetterQueue, DeadLetterReason};
use serde_json::json;

use super::PATIENCE;
use super::receiver::{Receiver, refused_port};

fn run_failed(url: &str) -> AlertConsumer {
    AlertConsumer::builder()
        .rule(AlertRule::new("run-failed", "extraction.failed"))
        .sink(WebhookSink::builder().url(url).build().unwrap())
        .terminal_wait(PATIENCE)
        .build()
        .unwrap()
}

/// Emits the guide's failure; the alert must have arrived when `emit`
/// returns, with no waiting after it.
fn fail_the_run(bus: &Bus, alerts: &AlertConsumer, receiver: &Receiver) {
    bus.emit(
        "extraction.failed",
        json!({"run_id": "extraction_001", "reason": "early_validation_failed"}),
    )
    .unwrap();
    let body = receiver
        .received()
        .expect("the alert arrived before emit returned");
    assert_eq!(body["text"], "run-failed: extraction.failed");
    let stats = alerts.stats();
    assert_eq!((stats.delivered, stats.pending), (1, 0));
}

#[test]
fn the_alert_is_sent_before_emit_returns_on_a_plain_thread() {
    assert!(tokio::runtime::Handle::try_current().is_err());
    let receiver = Receiver::answering(200);
    let bus = Bus::new();
    let alerts = run_failed(&receiver.url);
    alerts.attach(&bus).unwrap();
    fail_the_run(&bus, &alerts, &receiver);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_alert_is_sent_before_emit_returns_on_a_tokio_worker() {
    let receiver = Receiver::answering(200);
    let bus = Bus::new();
    let alerts = run_failed(&receiver.url);
    alerts.attach(&bus).unwrap();
    fail_the_run(&bus, &alerts, &receiver);
}

#[tokio::test(flavor = "current_thread")]
async fn the_alert_is_sent_before_emit_returns_on_a_current_thread_runtime() {
    // The emitter blocks the runtime's only thread: the delivery cannot
    // need it.
    let receiver = Receiver::answering(200);
    let bus = Bus::new();
    let alerts = run_failed(&receiver.url);
    alerts.attach(&bus).unwrap();
    fail_the_run(&bus, &alerts, &receiver);
    alerts.flush(PATIENCE).await.unwrap();
}

#[test]
fn system_interrupted_flushes_the_alerts_pending_before_it() {
    let receiver = Receiver::answering(200);
    let bus = Bus::new();
    let alerts = AlertConsumer::builder()
        .rule(
            AlertRule::new("low-success", "validation.warning")
                .when(Condition::below("success_rate", 0.6)),
        )
        .sink(WebhookSink::builder().url(&receiver.url).build().unwrap())
        .terminal_wait(PATIENCE)
        .build()
        .unwrap();
    alerts.attach(&bus).unwrap();
    bus.emit(
        "validation.warning",
        json!({"run_id": "r1", "success_rate": 0.2}),
    )
    .unwrap();
    // As a bus with signal handling emits it on SIGTERM: marked terminal,
    // matching none of the bus's terminal patterns.
    let interrupted = Event::builder("system.interrupted")
        .data(json!({"signal": "SIGTERM"}))
        .terminal()
        .build()
        .unwrap();
    bus.emit_event(interrupted).unwrap();
    let body = receiver
        .received()
        .expect("the pending alert arrived before emit returned");
    assert_eq!(body["text"], "low-success: validation.warning");
    assert_eq!(alerts.stats().pending, 0);
}

#[test]
fn a_wait_that_runs_out_leaves_a_dead_letter_on_disk_saying_why() {
    let receiver = Receiver::silent();
    let dir = scratch("overdue");
    let path = dir.join("dead_letters.jsonl");
    let dlq = DeadLetterQueue::with_store(DeadLetterJournal::builder(&path).build().unwrap(), 100);
    let bus = Bus::new();
    let alerts = AlertConsumer::builder()
        .rule(AlertRule::new("run-failed", "extraction.failed"))
        .sink(WebhookSink::builder().url(&receiver.url).build().unwrap())
        .terminal_wait(Duration::from_millis(500))
        .dead_letters(dlq.clone())
        .build()
        .unwrap();
    alerts.attach(&bus).unwrap();

    bus.emit("extraction.failed", json!({"run_id": "r1"}))
        .unwrap();
    receiver.next();
    let stats = alerts.stats();
    assert_eq!((stats.overdue, stats.delivered, stats.pending), (1, 0, 1));
    let reason = "not delivered within the 500ms that extraction.failed waited for it \
                  (first attempt still under way)";
    let letters = dlq.by_reason(DeadLetterReason::DeliveryFailed);
    assert_eq!(letters.len(), 1);
    assert_eq!(letters[0].error, reason);
    // Written to the file before emit returned.
    let file = std::fs::read_to_string(&path).unwrap();
    assert!(file.contains(reason), "{file}");
    assert!(file.contains("alert:run-failed:webhook"), "{file}");

    // Recorded, so the next terminal event (a per-item one, say) does not
    // wait out the dead sink again: it returns well within the wait.
    let start = std::time::Instant::now();
    bus.emit("specimen.completed", json!({})).unwrap();
    assert!(start.elapsed() < Duration::from_millis(500));
    assert_eq!(alerts.stats().overdue, 1);
    assert_eq!(dlq.len(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_bus_with_its_own_terminal_patterns_waits_when_the_consumer_is_told_them() {
    let receiver = Receiver::answering(200);
    let bus = Bus::builder()
        .terminal_patterns(["job.done"])
        .unwrap()
        .build()
        .unwrap();
    let alerts = AlertConsumer::builder()
        .rule(AlertRule::new("job-warning", "job.warning"))
        .sink(WebhookSink::builder().url(&receiver.url).build().unwrap())
        .terminal_patterns(["job.done"])
        .terminal_wait(PATIENCE)
        .build()
        .unwrap();
    alerts.attach(&bus).unwrap();
    bus.emit("job.warning", json!({})).unwrap();
    bus.emit("job.done", json!({})).unwrap();
    assert!(receiver.received().is_some());
}

#[test]
fn the_wait_holds_with_the_sinks_on_a_runtime_of_the_callers() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let receiver = Receiver::answering(200);
    let bus = Bus::new();
    let alerts = AlertConsumer::builder()
        .rule(AlertRule::new("run-failed", "extraction.failed"))
        .sink(WebhookSink::builder().url(&receiver.url).build().unwrap())
        .terminal_wait(PATIENCE)
        .runtime(runtime.handle().clone())
        .build()
        .unwrap();
    alerts.attach(&bus).unwrap();
    fail_the_run(&bus, &alerts, &receiver);
}

/// The webhook URL the child alerts, set by its parent.
const CHILD_URL: &str = "NERVE_ALERT_CHILD_URL";
/// The child's persistent dead letter queue, when set.
const CHILD_DEAD_LETTERS: &str = "NERVE_ALERT_CHILD_DEAD_LETTERS";

/// The child's side of the tests below: the guide's ending, then
/// `process::exit(1)` at once. Does nothing unless run as that child.
#[test]
fn child() {
    let Some(url) = std::env::var_os(CHILD_URL) else {
        return;
    };
    let bus = Bus::new();
    let mut builder = AlertConsumer::builder()
        .rule(AlertRule::new("run-failed", "extraction.failed"))
        .sink(
            WebhookSink::builder()
                .url(url.to_str().unwrap())
                .build()
                .unwrap(),
        )
        .retry(2, Duration::from_millis(1))
        .terminal_wait(PATIENCE);
    if let Some(path) = std::env::var_os(CHILD_DEAD_LETTERS) {
        builder = builder.dead_letters(DeadLetterQueue::with_store(
            DeadLetterJournal::builder(path).build().unwrap(),
            100,
        ));
    }
    let alerts = builder.build().unwrap();
    alerts.attach(&bus).unwrap();
    bus.emit(
        "extraction.failed",
        json!({"run_id": "extraction_001", "reason": "early_validation_failed"}),
    )
    .unwrap();
    std::process::exit(1);
}

/// Runs [`child`] as a process of its own; returns once it exited.
fn run_child(url: &str, dead_letters: Option<&Path>) -> Output {
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args(["--exact", "terminal::child", "--test-threads=1"])
        .env(CHILD_URL, url);
    if let Some(path) = dead_letters {
        command.env(CHILD_DEAD_LETTERS, path);
    }
    let output = command.output().unwrap();
    assert_eq!(
        output.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    output
}

#[test]
fn a_process_that_exits_right_after_the_terminal_event_still_alerts() {
    let receiver = Receiver::answering(200);
    run_child(&receiver.url, None);
    let body = receiver
        .received()
        .expect("the alert arrived before the child exited");
    assert_eq!(body["text"], "run-failed: extraction.failed");
}

#[test]
fn a_process_whose_webhook_is_down_leaves_the_dead_letter_on_disk() {
    let dir = scratch("child");
    let path = dir.join("dead_letters.jsonl");
    let url = format!("http://127.0.0.1:{}/hook", refused_port());
    run_child(&url, Some(&path));

    let dlq = DeadLetterQueue::with_store(DeadLetterJournal::builder(&path).build().unwrap(), 100);
    let letters = dlq.entries();
    assert_eq!(letters.len(), 1, "{letters:?}");
    assert_eq!(letters[0].event.event_type(), "extraction.failed");
    assert_eq!(
        letters[0].subscription_name.as_deref(),
        Some("alert:run-failed:webhook")
    );
    assert!(
        letters[0]
            .error
            .starts_with("after 2 attempts: webhook request failed"),
        "{}",
        letters[0].error
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A fresh directory for one test.
fn scratch(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("nerve-alerts-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A journal stand-in: what was recorded, and whether the bus waited for it.
#[derive(Default)]
struct Recorded(std::sync::Mutex<Vec<(Event, bool)>>);

impl nerve_core::sink::EventSink for Recorded {
    fn record(&self, event: &Event) -> Result<(), nerve_core::sink::SinkError> {
        self.0.lock().unwrap().push((event.clone(), false));
        Ok(())
    }
    fn record_and_wait(&self, event: &Event) -> Result<(), nerve_core::sink::SinkError> {
        self.0.lock().unwrap().push((event.clone(), true));
        Ok(())
    }
    fn flush(&self, _: Duration) -> Result<(), nerve_core::sink::SinkError> {
        Ok(())
    }
}

#[test]
fn an_overdue_alert_is_journaled_before_the_terminal_emit_returns_without_a_dead_letter_queue() {
    let receiver = Receiver::silent();
    let journal = std::sync::Arc::new(Recorded::default());
    let bus = Bus::builder().journal(journal.clone()).build().unwrap();
    let alerts = AlertConsumer::builder()
        .rule(AlertRule::new("run-failed", "extraction.failed"))
        .sink(WebhookSink::builder().url(&receiver.url).build().unwrap())
        .terminal_wait(Duration::from_millis(300))
        .build()
        .unwrap();
    alerts.attach(&bus).unwrap();

    bus.emit("extraction.failed", json!({"run_id": "r1"}))
        .unwrap();
    // Nothing flushed: what is recorded now is what an exit would leave.
    let recorded = journal.0.lock().unwrap().clone();
    let (failed, waited) = recorded
        .iter()
        .find(|(e, _)| e.event_type() == "system.alert_failed")
        .expect("system.alert_failed journaled before emit returned");
    assert!(*waited, "recorded as a durable event");
    assert_eq!(failed.data()["overdue"], true);
    assert_eq!(failed.data()["rule"], "run-failed");
    assert!(
        failed.data()["error"]
            .as_str()
            .unwrap()
            .contains("first attempt still under way"),
        "{}",
        failed.data()
    );
    receiver.next();
}
