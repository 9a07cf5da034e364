//! The stream of a journal on disk, followed across rotations.

use std::io::Write;

use nerve_core::json;
use nerve_dashboard::Dashboard;
use nerve_journal::Journal;
use nerve_router::Bus;

use crate::support::{Sse, assert_ids, get};

fn journal_bus(path: &std::path::Path) -> Bus {
    // Small files: the events below rotate it many times.
    let journal = Journal::builder(path)
        .max_bytes(4 * 1024)
        .max_files(1_000)
        .build()
        .unwrap();
    Bus::builder().journal(journal).build().unwrap()
}

/// The file first (all of it, rotated files included), then what is
/// appended, across rotations: every record once, in `seq` order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_streams_its_files_then_what_is_appended_across_rotations() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let bus = journal_bus(&path);
    for i in 0..200 {
        bus.emit("job.step", json!({ "i": i })).unwrap();
    }
    bus.flush_blocking();
    let d = Dashboard::builder()
        .bind("127.0.0.1:0")
        .journal("run-1", &path)
        .start()
        .unwrap();
    let url = format!("http://{}/api/stream", d.local_addr());
    let mut sse = Sse::connect(&url, None).await;
    let history = sse.events(200).await;
    assert_ids(&history, 1, 200);
    // Live, while the journal keeps rotating.
    let writer = std::thread::spawn(move || {
        for i in 200..800 {
            bus.emit("job.step", json!({ "i": i })).unwrap();
        }
        bus.shutdown_blocking();
    });
    let live = sse.events(600).await;
    writer.join().unwrap();
    assert_ids(&live, 201, 800);
    let seqs: Vec<u64> = history
        .iter()
        .chain(&live)
        .map(|m| m.json()["event"]["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(
        seqs,
        (1..=800).collect::<Vec<_>>(),
        "every record once, in order"
    );
    assert!(
        std::fs::read_dir(dir.path()).unwrap().count() > 10,
        "the journal rotated"
    );
    let (_, body) = get(&format!("http://{}/api/summary", d.local_addr()), None).await;
    let s: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s["sources"][0]["kind"], "journal");
    assert_eq!(s["sources"][0]["status"], "following");
    assert_eq!(s["sources"][0]["events"], 800);
    d.shutdown();
}

/// A browser that connects while the journal is being written gets the
/// file's history, then the live records, with no gap and no repeat; and
/// one that reconnects with `Last-Event-ID` continues where it was.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_a_journal_mid_run_and_resuming_lose_and_repeat_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let bus = journal_bus(&path);
    let d = Dashboard::builder()
        .bind("127.0.0.1:0")
        .journal("run-1", &path)
        .start()
        .unwrap();
    let url = format!("http://{}/api/stream", d.local_addr());
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let writer = std::thread::spawn(move || {
        for i in 0..3_000 {
            if i == 1_000 {
                ready_tx.send(()).unwrap();
            }
            bus.emit("job.step", json!({ "i": i })).unwrap();
        }
        bus.shutdown_blocking();
    });
    ready_rx.recv().unwrap();
    let mut sse = Sse::connect(&url, None).await;
    let first = sse.events(1_500).await;
    assert_ids(&first, 1, 1_500);
    let resume = first.last().unwrap().id.clone().unwrap();
    drop(sse);
    let mut again = Sse::connect(&url, Some(&resume)).await;
    let rest = again.events(1_500).await;
    writer.join().unwrap();
    assert_ids(&rest, 1_501, 3_000);
    let is: Vec<u64> = first
        .iter()
        .chain(&rest)
        .map(|m| m.json()["event"]["data"]["i"].as_u64().unwrap())
        .collect();
    assert_eq!(is, (0..3_000).collect::<Vec<_>>());
    d.shutdown();
}

/// A damaged line is skipped, counted and shown; the records around it
/// are served.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_journal_line_is_counted_not_served() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    {
        let bus = journal_bus(&path);
        bus.emit("job.step", json!({ "i": 0 })).unwrap();
        bus.shutdown_blocking();
    }
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(&path)
        .unwrap();
    f.write_all(b"{this is not a record}\n").unwrap();
    drop(f);
    {
        let bus = journal_bus(&path);
        bus.emit("job.step", json!({ "i": 1 })).unwrap();
        bus.shutdown_blocking();
    }
    let d = Dashboard::builder()
        .bind("127.0.0.1:0")
        .journal("damaged", &path)
        .start()
        .unwrap();
    let url = format!("http://{}/api/stream", d.local_addr());
    let mut sse = Sse::connect(&url, None).await;
    let got = sse.events(2).await;
    assert_ids(&got, 1, 2);
    let (_, body) = get(&format!("http://{}/api/summary", d.local_addr()), None).await;
    let s: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(s["sources"][0]["damaged_lines"], 1, "{s}");
    d.shutdown();
}

/// A journal that does not exist yet is waited for, and all of it is shown
/// once it appears.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_that_does_not_exist_yet_is_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    let d = Dashboard::builder()
        .bind("127.0.0.1:0")
        .journal("later", &path)
        .start()
        .unwrap();
    let url = format!("http://{}/api/stream", d.local_addr());
    let mut sse = Sse::connect(&url, None).await;
    sse.until("caught-up").await;
    let bus = journal_bus(&path);
    for i in 0..20 {
        bus.emit("job.step", json!({ "i": i })).unwrap();
    }
    bus.shutdown_blocking();
    assert_ids(&sse.events(20).await, 1, 20);
    d.shutdown();
}

/// A journal emptied beneath the page (`> events.jsonl`) and written
/// again: the new events are served and the source's status says what
/// happened.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_journal_truncated_beneath_the_page_is_said_and_followed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    {
        let bus = journal_bus(&path);
        for i in 0..2 {
            bus.emit("job.step", json!({ "i": i })).unwrap();
        }
        bus.shutdown_blocking();
    }
    let d = Dashboard::builder()
        .bind("127.0.0.1:0")
        .journal("cut", &path)
        .start()
        .unwrap();
    let url = format!("http://{}/api/stream", d.local_addr());
    let mut sse = Sse::connect(&url, None).await;
    assert_ids(&sse.events(2).await, 1, 2);
    std::fs::File::create(&path).unwrap();
    {
        let bus = journal_bus(&path);
        bus.emit("job.after", json!({ "i": 9 })).unwrap();
        bus.shutdown_blocking();
    }
    let got = sse.events(1).await;
    assert_eq!(got[0].json()["event"]["event_type"], "job.after");
    let (_, body) = get(&format!("http://{}/api/summary", d.local_addr()), None).await;
    let s: serde_json::Value = serde_json::from_str(&body).unwrap();
    let status = s["sources"][0]["status"].as_str().unwrap();
    assert!(
        status.starts_with("following; ") && status.contains("was truncated or rewritten"),
        "{s}"
    );
    d.shutdown();
}
