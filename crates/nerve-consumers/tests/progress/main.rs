//! The progress bar follows a run through its state, not the terminal.

use nerve_consumers::ProgressConsumer;
use nerve_router::Bus;
use serde_json::json;

#[test]
fn the_bar_follows_the_run() {
    let bus = Bus::new();
    let progress = ProgressConsumer::builder().hidden().build().unwrap();
    progress.attach(&bus).unwrap();
    assert!(progress.state().hidden);

    bus.emit(
        "extraction.started",
        json!({"run_id": "r", "total_specimens": 8}),
    )
    .unwrap();
    assert_eq!(progress.state().length, Some(8));
    for i in 0..4 {
        let t = if i == 0 {
            "specimen.failed"
        } else {
            "specimen.completed"
        };
        bus.emit(t, json!({})).unwrap();
    }
    bus.emit("specimen.processing", json!({})).unwrap();
    let state = progress.state();
    assert_eq!(state.position, 4);
    assert!(
        state.message.starts_with("75% ok, ETA "),
        "{}",
        state.message
    );
    assert!(!state.finished);

    bus.emit("extraction.completed", json!({"run_id": "r"}))
        .unwrap();
    assert!(progress.state().finished);

    // A new run starts the bar afresh; without a total it has no length.
    bus.emit("extraction.started", json!({"run_id": "r2"}))
        .unwrap();
    bus.emit("specimen.completed", json!({})).unwrap();
    let state = progress.state();
    assert_eq!((state.position, state.length), (1, None));
    assert_eq!(state.message, "100% ok");
}
