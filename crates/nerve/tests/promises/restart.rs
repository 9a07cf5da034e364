//! A program that shuts its bus down and opens the same files again in the
//! same process (a restart without exiting) finds them free.

use nerve::{Bus, DeadLetterJournal, DeadLetterQueue, Event, HandlerError, Subscribe, json};

/// Once `shutdown_blocking` returns and every handle is dropped, no worker
/// of the old bus still holds the dead letter store, so its file lock is
/// free for the next bus. (A worker used to let go of the bus only after
/// its last delivery counted as done, a window in which a reopen could
/// fail with `Locked`.)
#[test]
fn the_dead_letter_file_is_free_again_after_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("dead_letters.jsonl");
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    for round in 0..200 {
        let store = DeadLetterJournal::builder(&path)
            .build()
            .unwrap_or_else(|e| panic!("round {round}: {e}"));
        let dlq = DeadLetterQueue::with_store(store, 1_000);
        let bus = Bus::builder()
            .dead_letters(dlq.clone())
            .runtime(runtime.handle().clone())
            .build()
            .unwrap();
        bus.subscribe_async_with(
            "work.*",
            |_: Event| async { Err::<(), _>(HandlerError::new("fails")) },
            Subscribe::new(),
        )
        .unwrap();
        bus.subscribe_with(
            "work.*",
            |_: &Event| Err::<(), _>(HandlerError::new("fails")),
            Subscribe::new().queued(4),
        )
        .unwrap();
        for i in 0..3 {
            bus.emit("work.a", json!({ "i": i })).unwrap();
        }
        bus.shutdown_blocking();
        drop(bus);
        drop(dlq);
    }
}
