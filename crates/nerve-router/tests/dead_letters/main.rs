//! The dead letter queue: what becomes a dead letter, retry semantics, and
//! persistence across a restart.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use nerve_core::{Event, json};
use nerve_journal::DeadLetterJournal;
use nerve_router::{
    Bus, DeadLetterQueue, DeadLetterReason, HandlerError, Overflow, RetryError, StreamOptions,
    Subscribe,
};

/// The journal's dead letter file at `path`.
fn store(path: &std::path::Path) -> DeadLetterJournal {
    DeadLetterJournal::builder(path).build().unwrap()
}

/// A handler that fails while `failing` is set, counting its calls.
#[derive(Clone, Default)]
struct Flaky {
    calls: Arc<AtomicU64>,
    failing: Arc<std::sync::atomic::AtomicBool>,
}

impl Flaky {
    fn failing() -> Self {
        let f = Self::default();
        f.failing.store(true, Ordering::SeqCst);
        f
    }
    fn heal(&self) {
        self.failing.store(false, Ordering::SeqCst);
    }
    fn calls(&self) -> u64 {
        self.calls.load(Ordering::SeqCst)
    }
    fn handler(&self) -> impl Fn(&Event) -> Result<(), HandlerError> + Send + Sync + 'static {
        let f = self.clone();
        move |_| {
            f.calls.fetch_add(1, Ordering::SeqCst);
            if f.failing.load(Ordering::SeqCst) {
                Err(HandlerError::new("downstream unavailable"))
            } else {
                Ok(())
            }
        }
    }
}

#[test]
fn retry_goes_only_to_the_failed_subscriber_and_removes_on_success() {
    let dlq = DeadLetterQueue::new(100);
    let bus = Bus::builder().dead_letters(dlq.clone()).build().unwrap();
    let flaky = Flaky::failing();
    let healthy = Flaky::default();
    bus.subscribe_with(
        "order.placed",
        flaky.handler(),
        Subscribe::new().name("billing"),
    )
    .unwrap();
    bus.subscribe_with(
        "order.placed",
        healthy.handler(),
        Subscribe::new().name("audit"),
    )
    .unwrap();
    bus.emit("order.placed", json!({"id": 1})).unwrap();

    let entries = dlq.entries();
    assert_eq!(entries.len(), 1);
    let entry = &entries[0];
    assert_eq!(entry.reason, DeadLetterReason::HandlerError);
    assert_eq!(entry.subscription_name.as_deref(), Some("billing"));
    assert_eq!(entry.error, "downstream unavailable");
    assert_eq!(entry.attempts, 1);
    assert_eq!(entry.event.data()["id"], 1);

    // A failing retry keeps the entry with one more attempt, adds none.
    let err = dlq.retry_blocking(entry.id).unwrap_err();
    assert!(
        matches!(err, RetryError::Failed { attempts: 2, .. }),
        "{err}"
    );
    assert_eq!(dlq.len(), 1);
    assert_eq!(dlq.get(entry.id).unwrap().attempts, 2);

    flaky.heal();
    dlq.retry_blocking(entry.id).unwrap();
    assert!(dlq.is_empty(), "success removes the entry");
    assert_eq!(flaky.calls(), 3);
    assert_eq!(
        healthy.calls(),
        1,
        "the healthy subscriber was never called again"
    );
    let stats = dlq.stats();
    assert_eq!((stats.retried_ok, stats.retried_failed), (1, 1));
    assert_eq!(
        dlq.retry_blocking(entry.id),
        Err(RetryError::NotFound(entry.id))
    );
}

#[test]
fn retry_all_caps_attempts() {
    let dlq = DeadLetterQueue::new(100);
    let bus = Bus::builder().dead_letters(dlq.clone()).build().unwrap();
    let flaky = Flaky::failing();
    bus.subscribe_with("job.run", flaky.handler(), Subscribe::new().name("runner"))
        .unwrap();
    for n in 0..3 {
        bus.emit("job.run", json!(n)).unwrap();
    }
    assert_eq!(dlq.len(), 3);
    let first = dlq.retry_all_blocking(3);
    assert_eq!((first.failed.len(), first.skipped.len()), (3, 0));
    let second = dlq.retry_all_blocking(3);
    assert_eq!((second.failed.len(), second.skipped.len()), (3, 0));
    // Every entry has 3 attempts now: none is retried again.
    let third = dlq.retry_all_blocking(3);
    assert_eq!(
        (
            third.failed.len(),
            third.skipped.len(),
            third.succeeded.len()
        ),
        (0, 3, 0)
    );
    assert_eq!(flaky.calls(), 3 + 3 + 3);
    assert!(dlq.entries().iter().all(|e| e.attempts == 3));

    flaky.heal();
    let healed = dlq.retry_all_blocking(4);
    assert_eq!(healed.succeeded.len(), 3);
    assert!(dlq.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn async_handler_failures_and_timeouts_are_retried_on_their_worker() {
    let dlq = DeadLetterQueue::new(100);
    let bus = Bus::builder()
        .dead_letters(dlq.clone())
        .handler_timeout(std::time::Duration::from_millis(50))
        .build()
        .unwrap();
    let calls = Arc::new(AtomicU64::new(0));
    let c = calls.clone();
    bus.subscribe_async_with(
        "mail.send",
        move |e: Event| {
            let c = c.clone();
            async move {
                let n = c.fetch_add(1, Ordering::SeqCst);
                if e.data()["hang"] == true && n == 0 {
                    std::future::pending::<()>().await;
                }
                if e.data()["fail"] == true && n == 0 {
                    return Err(HandlerError::new("smtp refused"));
                }
                Ok(())
            }
        },
        Subscribe::new().name("mailer"),
    )
    .unwrap();
    bus.emit_and_wait("mail.send", json!({"fail": true}))
        .await
        .unwrap();
    assert_eq!(dlq.by_reason(DeadLetterReason::HandlerError).len(), 1);
    let id = dlq.entries()[0].id;
    dlq.retry(id).await.unwrap();
    assert!(dlq.is_empty());

    calls.store(0, Ordering::SeqCst);
    bus.emit_and_wait("mail.send", json!({"hang": true}))
        .await
        .unwrap();
    let timeouts = dlq.by_reason(DeadLetterReason::HandlerTimeout);
    assert_eq!(timeouts.len(), 1);
    dlq.retry(timeouts[0].id).await.unwrap();
    assert!(dlq.is_empty());
}

#[test]
fn a_panicking_handler_leaves_healthy_subscribers_whole() {
    std::panic::set_hook(Box::new(|_| {})); // 10,000 panics, quietly
    let dlq = DeadLetterQueue::new(20_000);
    let bus = Bus::builder()
        .dead_letters(dlq.clone())
        .history_capacity(0)
        .build()
        .unwrap();
    let healthy = [Flaky::default(), Flaky::default()];
    for (n, h) in healthy.iter().enumerate() {
        bus.subscribe_with(
            "data.row",
            h.handler(),
            Subscribe::new().name(format!("healthy-{n}")),
        )
        .unwrap();
    }
    bus.subscribe_with(
        "data.row",
        |e: &Event| {
            if e.data().is_u64() {
                panic!("corrupt row");
            }
        },
        Subscribe::new().name("parser"),
    )
    .unwrap();
    for n in 0..10_000u64 {
        bus.emit("data.row", json!(n)).unwrap();
    }
    let _ = std::panic::take_hook();
    for h in &healthy {
        assert_eq!(h.calls(), 10_000);
    }
    let stats = dlq.stats();
    assert_eq!(stats.size, 10_000);
    assert_eq!(stats.by_reason["handler_panic"], 10_000);
    assert_eq!(stats.evicted, 0);
    assert_eq!(bus.stats().events.panicked, 10_000);
}

#[test]
fn a_full_queue_evicts_the_oldest_and_counts() {
    std::panic::set_hook(Box::new(|_| {}));
    let dlq = DeadLetterQueue::new(100);
    let bus = Bus::builder().dead_letters(dlq.clone()).build().unwrap();
    bus.subscribe("data.row", |_: &Event| -> Result<(), String> {
        Err("no".into())
    })
    .unwrap();
    for n in 0..1_000 {
        bus.emit("data.row", json!(n)).unwrap();
    }
    let stats = dlq.stats();
    assert_eq!((stats.size, stats.evicted, stats.added), (100, 900, 1_000));
    assert_eq!(
        dlq.entries()[0].event.data(),
        &json!(900),
        "the oldest went first"
    );
}

#[test]
fn every_kind_of_failure_becomes_a_dead_letter() {
    let dlq = DeadLetterQueue::new(100).record_unrouted();
    let bus = Bus::builder()
        .dead_letters(dlq.clone())
        .validate_names(true)
        .build()
        .unwrap();
    // No subscriber (opt-in).
    bus.emit("nobody.listens", json!({})).unwrap();
    // Validation.
    assert!(bus.emit("Bad.Name", json!({})).is_err());
    // Every inline handler failed: one entry, not one per handler.
    for name in ["a", "b"] {
        bus.subscribe_with(
            "all.fail",
            |_: &Event| -> Result<(), String> { Err("nope".into()) },
            Subscribe::new().name(name),
        )
        .unwrap();
    }
    bus.emit("all.fail", json!({})).unwrap();
    // An overflow drop.
    let _stream = bus
        .stream_with(
            "feed.item",
            StreamOptions::new()
                .capacity(1)
                .overflow(Overflow::DropNewest)
                .name("feed"),
        )
        .unwrap();
    bus.emit("feed.item", json!(1)).unwrap();
    bus.emit("feed.item", json!(2)).unwrap();

    let count = |r| dlq.by_reason(r).len();
    assert_eq!(count(DeadLetterReason::NoSubscriber), 1);
    assert_eq!(count(DeadLetterReason::ValidationError), 1);
    assert_eq!(count(DeadLetterReason::AllHandlersFailed), 1);
    assert_eq!(count(DeadLetterReason::HandlerError), 0);
    assert_eq!(count(DeadLetterReason::OverflowDrop), 1);
    let all_failed = &dlq.by_reason(DeadLetterReason::AllHandlersFailed)[0];
    assert!(all_failed.error.contains("a: nope") && all_failed.error.contains("b: nope"));
    let dropped = &dlq.by_reason(DeadLetterReason::OverflowDrop)[0];
    assert_eq!(dropped.subscription_name.as_deref(), Some("feed"));
    assert_eq!(dropped.event.data(), &json!(2));
    assert_eq!(dlq.by_event_type("all.fail").len(), 1);
    let stats = dlq.stats();
    assert_eq!(stats.by_reason.values().sum::<usize>(), 4);
}

#[test]
fn a_persistent_queue_survives_a_restart() {
    let dir = std::env::temp_dir().join(format!("nerve-dlq-restart-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("dead_letters.jsonl");
    let _ = std::fs::remove_file(&path);
    {
        let dlq = DeadLetterQueue::with_store(store(&path), 100);
        let bus = Bus::builder().dead_letters(dlq.clone()).build().unwrap();
        let flaky = Flaky::failing();
        bus.subscribe_with(
            "invoice.send",
            flaky.handler(),
            Subscribe::new().name("sender"),
        )
        .unwrap();
        for n in 0..5 {
            bus.emit("invoice.send", json!({ "n": n })).unwrap();
        }
        let first = dlq.entries()[0].id;
        assert!(dlq.retry_blocking(first).is_err());
        assert_eq!(dlq.len(), 5);
        bus.shutdown_blocking();
    }
    // A new process: a new bus, the same subscriber by name.
    let dlq = DeadLetterQueue::with_store(store(&path), 100);
    assert_eq!(dlq.len(), 5);
    let entries = dlq.entries();
    assert_eq!(entries[0].attempts, 2, "the failed retry survived too");
    assert_eq!(entries[4].event.data()["n"], 4);
    let bus = Bus::builder().dead_letters(dlq.clone()).build().unwrap();
    bus.subscribe("other.thing", |_: &Event| {}).unwrap(); // shifts the ids
    let healed = Flaky::default();
    bus.subscribe_with(
        "invoice.send",
        healed.handler(),
        Subscribe::new().name("sender"),
    )
    .unwrap();
    let summary = dlq.retry_all_blocking(10);
    assert_eq!(summary.succeeded.len(), 5);
    assert_eq!(healed.calls(), 5);
    // The bus holds the queue, and the queue the file's lock.
    bus.shutdown_blocking();
    drop((bus, dlq));
    let reopened = DeadLetterQueue::with_store(store(&path), 100);
    assert!(reopened.is_empty(), "successful retries were persisted");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn persisted_dead_letters_are_redacted() {
    let dir = std::env::temp_dir().join(format!("nerve-dlq-redact-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("dead_letters.jsonl");
    let _ = std::fs::remove_file(&path);
    let redactor = nerve_core::redact::Redactor::default();
    let dlq = DeadLetterQueue::with_store(store(&path), 10)
        .redact_with(move |e| redactor.redact_event(e));
    let bus = Bus::builder().dead_letters(dlq.clone()).build().unwrap();
    bus.subscribe("user.signup", |_: &Event| -> Result<(), String> {
        Err("crm down".into())
    })
    .unwrap();
    bus.emit(
        "user.signup",
        json!({"email": "alice@example.com", "password": "hunter2", "plan": "pro"}),
    )
    .unwrap();
    let on_disk = std::fs::read_to_string(&path).unwrap();
    assert!(!on_disk.contains("alice@example.com"), "{on_disk}");
    assert!(!on_disk.contains("hunter2"), "{on_disk}");
    assert!(on_disk.contains("\"plan\":\"pro\""), "{on_disk}");
    assert_eq!(
        dlq.entries()[0].event.data()["email"],
        "alice@example.com",
        "memory keeps the original, so a retry delivers what failed"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// An `AllHandlersFailed` entry belongs to no single subscription: it
/// names its targets by id. A retry must reach each of them (named or not)
/// and, once they all succeed, remove the entry.
#[test]
fn retrying_an_all_handlers_failed_entry_reaches_its_named_targets() {
    let dlq = DeadLetterQueue::new(100);
    let bus = Bus::builder().dead_letters(dlq.clone()).build().unwrap();
    let named = Flaky::failing();
    let unnamed = Flaky::failing();
    bus.subscribe_with("all.fail", named.handler(), Subscribe::new().name("a"))
        .unwrap();
    bus.subscribe("all.fail", unnamed.handler()).unwrap();
    bus.emit("all.fail", json!({})).unwrap();
    let entries = dlq.by_reason(DeadLetterReason::AllHandlersFailed);
    assert_eq!(entries.len(), 1);
    assert_eq!(entries[0].targets.len(), 2);
    assert_eq!((named.calls(), unnamed.calls()), (1, 1));

    named.heal();
    unnamed.heal();
    dlq.retry_blocking(entries[0].id).unwrap();
    assert_eq!((named.calls(), unnamed.calls()), (2, 2), "each target once");
    assert!(dlq.is_empty());
    assert_eq!(dlq.stats().retried_ok, 1);
}
