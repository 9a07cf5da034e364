//! The README quick start: sync and async handlers, priorities, a failing
//! handler, correlation ids, `emit_and_wait`, history and stats.
//!
//! Run with `cargo run --release -p nerve --example quickstart`.

use nerve::{Bus, Event, HandlerError, HistoryQuery, Subscribe, json};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bus = Bus::builder()
        .validate_names(true)
        .allowed_domains(["user", "chat", "system"])
        .build()?;

    // Sync handlers run inline, highest priority first.
    bus.subscribe_with(
        "user.login",
        |e: &Event| println!("[audit   p=100] {} {}", e.event_type(), e.data()),
        Subscribe::new().name("audit").priority(100),
    )?;
    bus.subscribe_with(
        "user.*",
        |e: &Event| -> Result<(), HandlerError> {
            if e.data()["username"] == "mallory" {
                return Err(HandlerError::new("unknown user"));
            }
            println!("[security p=300] checked {}", e.data()["username"]);
            Ok(())
        },
        Subscribe::new().name("security").priority(300),
    )?;

    // Async handlers run on the runtime, in order per subscriber.
    bus.subscribe_async("chat.*", |e: Event| async move {
        println!(
            "[chat   async] {} (correlation {})",
            e.data()["text"],
            e.correlation_id().map_or("-", |c| c.as_str())
        );
    })?;

    // Handler failures are isolated and published as events.
    bus.subscribe("system.handler_error", |e: &Event| {
        println!(
            "[errors      ] {} failed on {}: {}",
            e.data()["subscription_name"],
            e.data()["event_type"],
            e.data()["error"]
        );
    })?;

    bus.emit("user.login", json!({"username": "alice"}))?;
    bus.emit("user.login", json!({"username": "mallory"}))?;

    // Everything emitted in this scope carries the request's correlation id.
    let report = nerve::correlation::scope("req-42", async {
        bus.emit_and_wait("chat.message", json!({"text": "hello"}))
            .await
    })
    .await?;
    println!(
        "chat.message: {} delivered, {} failed",
        report.delivered(),
        report.failed()
    );

    if let Err(e) = bus.emit("billing.charge", json!({})) {
        println!("rejected: {e}");
    }

    let recent = bus.history(&HistoryQuery::new().pattern("user.*")?.limit(10));
    println!(
        "history: {} user events, newest seq {}",
        recent.len(),
        recent[0].seq()
    );
    println!(
        "stats: {}",
        serde_json::to_string_pretty(&bus.stats().events)?
    );

    let report = bus.shutdown().await;
    println!("shutdown: drained={}", report.drained);
    Ok(())
}
