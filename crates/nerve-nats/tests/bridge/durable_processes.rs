//! A durable importer in another process, killed with SIGKILL mid-stream
//! and started again: every event reaches it exactly once after
//! deduplication. This test binary re-runs itself as the child
//! (`child_imports_durably`, a no-op unless `NERVE_NATS_DURABLE_CHILD`
//! names a server).
//!
//! The child writes each event id it receives to a file (a `write` per
//! event, so it is in the operating system when the handler returns and
//! survives SIGKILL) and acknowledges after that. Its first life stops in
//! the handler of its `BLOCK_AT`th event, after writing it and before the
//! acknowledgement, and is killed there: so at least that message is
//! delivered again to the second life, which knows it from the file.

use std::collections::HashSet;
use std::io::Write;
use std::process::Stdio;
use std::time::{Duration, Instant};

use nerve::nats::{DeliverFrom, DurableImport, NatsBridge, NatsOptions};
use nerve::{Event, EventId, json};

use crate::bus;
use crate::support::NatsServer;

const VAR: &str = "NERVE_NATS_DURABLE_CHILD";
const FILE_VAR: &str = "NERVE_NATS_DURABLE_FILE";
const BLOCK_VAR: &str = "NERVE_NATS_DURABLE_BLOCK_AT";
const N: usize = 3_000;
const BLOCK_AT: usize = 1_000;
const LIMIT: Duration = Duration::from_secs(120);

/// The ids the child wrote, complete lines only: the test reads the file
/// while the child appends to it, so a last line may be half written.
fn read_ids(path: &std::path::Path) -> Vec<EventId> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Vec::new();
    };
    let complete = text.rfind('\n').map_or("", |end| &text[..end]);
    complete
        .lines()
        .map(|l| l.parse().unwrap_or_else(|e| panic!("bad id {l:?}: {e}")))
        .collect()
}

/// The child: imports the stream `ITEMS` durably, writing each event id to
/// the file; stops (blocks) at the `BLOCK_AT`th event of this life when
/// asked to, or exits once the file holds `N` ids, printing its stats.
#[test]
fn child_imports_durably() {
    let Ok(url) = std::env::var(VAR) else { return };
    let path = std::path::PathBuf::from(std::env::var(FILE_VAR).unwrap());
    let block_at: Option<usize> = std::env::var(BLOCK_VAR).ok().map(|v| v.parse().unwrap());
    let rt = crate::child_runtime();
    rt.block_on(async {
        let known = read_ids(&path);
        let total = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(known.len()));
        let bus = bus();
        let file = std::sync::Mutex::new(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .unwrap(),
        );
        let count = total.clone();
        let this_life_count = std::sync::Mutex::new(0usize);
        bus.subscribe("item.*", move |e: &Event| {
            // One write per line (O_APPEND): never two half lines.
            let line = format!("{}\n", e.event_id());
            file.lock().unwrap().write_all(line.as_bytes()).unwrap();
            count.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let mut n = this_life_count.lock().unwrap();
            *n += 1;
            if Some(*n) == block_at {
                // Written, not acknowledged: wait here to be killed.
                loop {
                    std::thread::park();
                }
            }
        })
        .unwrap();
        let bridge = NatsBridge::connect(&url, &bus, NatsOptions::new().origin("child"))
            .await
            .unwrap();
        bridge
            .import_durable_with(
                DurableImport::new("ITEMS", "child")
                    .deliver_from(DeliverFrom::All)
                    .max_ack_pending(200)
                    // The first life's last message comes back this soon.
                    .ack_wait(Duration::from_secs(1))
                    .already_delivered(known),
            )
            .await
            .unwrap();
        let deadline = Instant::now() + LIMIT;
        while total.load(std::sync::atomic::Ordering::SeqCst) < N {
            assert!(
                Instant::now() < deadline,
                "the child did not get every event"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Then until the consumer has nothing left to deliver or to have
        // acknowledged: the message the first life was killed on comes
        // back before that.
        let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
        let mut consumer: async_nats::jetstream::consumer::PullConsumer = js
            .get_stream("ITEMS")
            .await
            .unwrap()
            .get_consumer("child")
            .await
            .unwrap();
        loop {
            let info = consumer.info().await.unwrap();
            if info.num_ack_pending == 0 && info.num_pending == 0 {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "the child did not acknowledge: {info:?}"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let s = bridge.stats();
        println!(
            "STATS {}",
            json!({
                "imported": s.imported,
                "duplicates_dropped": s.duplicates_dropped,
                "redelivered": s.redelivered,
            })
        );
        bridge.shutdown(LIMIT).await;
    });
}

fn spawn_child(url: &str, file: &std::path::Path, block_at: Option<usize>) -> std::process::Child {
    let mut command = crate::rerun("durable_processes::child_imports_durably");
    command
        .env(VAR, url)
        .env(FILE_VAR, file)
        .stdout(Stdio::piped());
    if let Some(n) = block_at {
        command.env(BLOCK_VAR, n.to_string());
    }
    command.spawn().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_consumer_process_killed_mid_stream_gets_every_event_exactly_once() {
    let Some(server) = NatsServer::start() else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("received");

    let a = bus();
    let exporter = NatsBridge::connect(&server.url(), &a, NatsOptions::new())
        .await
        .unwrap();
    exporter.export_durable("item.*", "ITEMS").await.unwrap();
    let sent: Vec<EventId> = (0..N)
        .map(|i| a.emit("item.made", json!({"i": i})).unwrap())
        .collect();
    assert!(exporter.flush(LIMIT).await);
    assert_eq!(exporter.stats().acked, N as u64);

    // First life: killed (SIGKILL) inside the handler of its BLOCK_AT-th
    // event, which is written and not acknowledged.
    let mut first = spawn_child(&server.url(), &file, Some(BLOCK_AT));
    let deadline = Instant::now() + LIMIT;
    while read_ids(&file).len() < BLOCK_AT {
        assert!(Instant::now() < deadline, "the first life did not get far");
        assert!(first.try_wait().unwrap().is_none(), "the first life exited");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    first.kill().unwrap(); // SIGKILL
    first.wait().unwrap();
    let before = read_ids(&file);
    assert_eq!(before.len(), BLOCK_AT, "the first life went past its block");

    // Second life: continues where the consumer stopped.
    let mut second = spawn_child(&server.url(), &file, None);
    let deadline = Instant::now() + LIMIT;
    let status = loop {
        if let Some(status) = second.try_wait().unwrap() {
            break status;
        }
        assert!(Instant::now() < deadline, "the second life did not finish");
        tokio::time::sleep(Duration::from_millis(10)).await;
    };
    assert!(status.success(), "the second life failed: {status}");
    let mut out = String::new();
    std::io::Read::read_to_string(&mut second.stdout.take().unwrap(), &mut out).unwrap();
    let stats: serde_json::Value = out
        .lines()
        // libtest may have written the test's name on the same line.
        .find_map(|l| l.split_once("STATS ").map(|(_, stats)| stats))
        .map(|l| serde_json::from_str(l).unwrap())
        .unwrap_or_else(|| panic!("no stats from the second life: {out}"));

    let received = read_ids(&file);
    let unique: HashSet<EventId> = received.iter().copied().collect();
    assert_eq!(unique.len(), received.len(), "an event was received twice");
    assert_eq!(unique, sent.iter().copied().collect(), "events lost");
    assert_eq!(stats["imported"], (N - BLOCK_AT) as u64, "{stats}");
    // The message the first life was killed on came again, was known, and
    // was dropped.
    assert!(stats["redelivered"].as_u64().unwrap() >= 1, "{stats}");
    assert!(
        stats["duplicates_dropped"].as_u64().unwrap() >= 1,
        "{stats}"
    );
}
