//! The stream of a bus in this process.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use nerve_core::json;
use nerve_dashboard::Dashboard;
use nerve_router::Bus;

use crate::support::{Sse, assert_ids, get, settle};

fn stream_url(d: &Dashboard) -> String {
    format!("http://{}/api/stream", d.local_addr())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bus_stream_gives_its_history_then_live_events_in_order() {
    let bus = Bus::new();
    for i in 0..100 {
        bus.emit("job.step", json!({ "i": i })).unwrap();
    }
    let d = Dashboard::builder()
        .bind("127.0.0.1:0")
        .bus("bus", &bus)
        .start()
        .unwrap();
    let mut sse = Sse::connect(&stream_url(&d), None).await;
    let first = sse.until("caught-up").await;
    let kinds: Vec<&str> = first.iter().map(|m| m.event.as_str()).take(2).collect();
    assert_eq!(kinds, ["hello", "summary"]);
    assert_ids(&first, 1, 100);
    assert_eq!(first.last().unwrap().json()["last_id"], 100);
    // History is the bus's, in its order.
    let seqs: Vec<u64> = first
        .iter()
        .filter(|m| m.event == "event")
        .map(|m| m.json()["event"]["seq"].as_u64().unwrap())
        .collect();
    assert_eq!(seqs, (1..=100).collect::<Vec<_>>());
    for i in 100..150 {
        bus.emit("job.step", json!({ "i": i })).unwrap();
    }
    let live = sse.events(50).await;
    assert_ids(&live, 101, 150);
    let is: Vec<u64> = live
        .iter()
        .map(|m| m.json()["event"]["data"]["i"].as_u64().unwrap())
        .collect();
    assert_eq!(is, (100..150).collect::<Vec<_>>());
    // Each event carries its SSE id `<instance>-<id>`.
    let instance = first[0].json()["instance"].as_str().unwrap().to_owned();
    assert_eq!(
        live[0].id.as_deref(),
        Some(format!("{instance}-101").as_str())
    );
    d.shutdown();
}

/// A client that joins while a run is emitting sees every event exactly
/// once: the history up to its join, then live, with nothing lost or
/// repeated at the seam; and so does the dashboard joining the bus.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn joining_mid_run_sees_every_event_once_across_the_seam() {
    const N: u64 = 20_000;
    let bus = Bus::builder().history_capacity(100_000).build().unwrap();
    let go = Arc::new(AtomicBool::new(false));
    let emitter = {
        let (bus, go) = (bus.clone(), go.clone());
        std::thread::spawn(move || {
            for i in 0..N {
                if i == 2_000 {
                    go.store(true, Ordering::SeqCst);
                }
                bus.emit("item.completed", json!({ "i": i })).unwrap();
            }
        })
    };
    // The dashboard joins the bus mid-run ...
    while !go.load(Ordering::SeqCst) {
        std::thread::yield_now();
    }
    let d = Dashboard::builder()
        .bind("127.0.0.1:0")
        // Room for the whole run: this test is about the seam, not about
        // a slow client (see below).
        .client_queue(N as usize)
        .bus("bus", &bus)
        .start()
        .unwrap();
    // ... and a client joins the dashboard mid-run.
    let mut sse = Sse::connect(&stream_url(&d), None).await;
    let all = sse.events(N as usize).await;
    emitter.join().unwrap();
    assert_ids(&all, 1, N);
    let is: Vec<u64> = all
        .iter()
        .map(|m| m.json()["event"]["data"]["i"].as_u64().unwrap())
        .collect();
    if let Some(at) = (0..N as usize).find(|&k| is[k] != k as u64) {
        let expected = at as u64;
        let found = is.iter().position(|&v| v == expected);
        let distinct: std::collections::HashSet<u64> = is.iter().copied().collect();
        panic!(
            "each event once, in order: at position {at} came {:?}; {expected} is at {found:?}; {} distinct",
            &is[at.saturating_sub(3)..(at + 5).min(is.len())],
            distinct.len()
        );
    }
    d.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn last_event_id_resumes_without_loss_or_repeat() {
    let bus = Bus::new();
    let d = Dashboard::builder()
        .bind("127.0.0.1:0")
        .bus("bus", &bus)
        .start()
        .unwrap();
    for i in 0..50 {
        bus.emit("job.step", json!({ "i": i })).unwrap();
    }
    let mut sse = Sse::connect(&stream_url(&d), None).await;
    let got = sse.events(30).await;
    let resume_from = got.last().unwrap().id.clone().unwrap();
    drop(sse); // the connection drops after event 30
    for i in 50..80 {
        bus.emit("job.step", json!({ "i": i })).unwrap();
    }
    settle(&format!("http://{}", d.local_addr()), 80).await;
    let mut again = Sse::connect(&stream_url(&d), Some(&resume_from)).await;
    let rest = again.until("caught-up").await;
    assert_eq!(rest[0].json()["resumed_after"], 30);
    assert_ids(&rest, 31, 80);
    // `?after=` does the same for clients that cannot set the header.
    let mut by_query = Sse::connect(&format!("{}?after=75", stream_url(&d)), None).await;
    assert_ids(&by_query.until("caught-up").await, 76, 80);
    d.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_id_from_another_server_replays_everything_after_a_reset() {
    let bus = Bus::new();
    let d = Dashboard::builder()
        .bind("127.0.0.1:0")
        .bus("bus", &bus)
        .start()
        .unwrap();
    for i in 0..5 {
        bus.emit("job.step", json!({ "i": i })).unwrap();
    }
    settle(&format!("http://{}", d.local_addr()), 5).await;
    let mut sse = Sse::connect(&stream_url(&d), Some("deadbeef-3")).await;
    let msgs = sse.until("caught-up").await;
    assert_eq!(msgs[1].event, "reset");
    assert_ids(&msgs, 1, 5);
    d.shutdown();
}

/// A client that stops reading loses events only from its own bounded
/// queue, is told exactly which ones (`missed`), and everything it was
/// not told about arrives, in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_client_is_told_what_it_missed_and_nothing_else_is_lost() {
    const N: u64 = 6_000;
    let bus = Bus::new();
    let d = Dashboard::builder()
        .bind("127.0.0.1:0")
        .retain(1_000)
        .client_queue(64)
        .bus("bus", &bus)
        .start()
        .unwrap();
    let mut slow = Sse::connect(&stream_url(&d), None).await;
    slow.until("caught-up").await;
    // 16 KiB per event: the socket's buffers fill long before N events,
    // so the server stops writing and this client's queue overflows.
    let pad = "x".repeat(16 * 1024);
    for i in 0..N {
        bus.emit("bulk.item", json!({ "i": i, "pad": pad }))
            .unwrap();
    }
    let mut seen = Vec::new();
    let mut missed = 0;
    let mut next_expected = 1;
    while next_expected <= N {
        let m = slow.next().await;
        match m.event.as_str() {
            "event" => {
                let id = m.dashboard_id();
                assert_eq!(id, next_expected, "no gap without a notice");
                seen.push(id);
                next_expected = id + 1;
            }
            "missed" => {
                let j = m.json();
                assert_eq!(j["reason"], "slow_client");
                assert_eq!(j["first"].as_u64().unwrap(), next_expected);
                let count = j["count"].as_u64().unwrap();
                assert_eq!(j["last"].as_u64().unwrap(), next_expected + count - 1);
                missed += count;
                next_expected += count;
            }
            _ => {}
        }
    }
    assert!(missed > 0, "the client was slow enough to miss events");
    assert_eq!(
        seen.len() as u64 + missed,
        N,
        "every event received or counted"
    );
    // The server kept its bounds, and counted the loss where the page shows it.
    let (_, summary) = get(&format!("http://{}/api/summary", d.local_addr()), None).await;
    let s: serde_json::Value = serde_json::from_str(&summary).unwrap();
    assert_eq!(s["retained"]["events"], 1_000);
    assert_eq!(s["retained"]["evicted"], N - 1_000);
    assert!(s["clients"]["missed"].as_u64().unwrap() >= missed);
    assert_eq!(s["events"], N, "the summary covers every event");
    d.shutdown();
}

/// A client resuming from an id older than the retained history is told
/// how many events it will never see, then gets the rest.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resuming_before_the_retained_history_says_what_was_evicted() {
    let bus = Bus::new();
    let d = Dashboard::builder()
        .bind("127.0.0.1:0")
        .retain(10)
        .bus("bus", &bus)
        .start()
        .unwrap();
    for i in 0..30 {
        bus.emit("job.step", json!({ "i": i })).unwrap();
    }
    // Once a client has seen event 30, the dashboard has taken all in.
    let mut sse = Sse::connect(&stream_url(&d), None).await;
    let mut seen = Vec::new();
    while seen
        .last()
        .is_none_or(|m: &crate::support::Msg| m.event != "event" || m.dashboard_id() < 30)
    {
        seen.push(sse.next().await);
    }
    let mut late = Sse::connect(&format!("{}?after=5", stream_url(&d)), None).await;
    let msgs = late.until("caught-up").await;
    let missed = msgs.iter().find(|m| m.event == "missed").unwrap().json();
    assert_eq!(
        (missed["first"].as_u64(), missed["last"].as_u64()),
        (Some(6), Some(20))
    );
    assert_eq!(missed["reason"], "evicted");
    assert_ids(&msgs, 21, 30);
    d.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pattern_filter_applies_to_the_stream() {
    let bus = Bus::new();
    let d = Dashboard::builder()
        .bind("127.0.0.1:0")
        .bus("bus", &bus)
        .start()
        .unwrap();
    for i in 0..10 {
        let t = if i % 2 == 0 {
            "specimen.completed"
        } else {
            "specimen.failed"
        };
        bus.emit(t, json!({ "i": i })).unwrap();
    }
    settle(&format!("http://{}", d.local_addr()), 10).await;
    let mut sse = Sse::connect(&format!("{}?pattern=*.failed", stream_url(&d)), None).await;
    let msgs = sse.until("caught-up").await;
    let types: Vec<String> = msgs
        .iter()
        .filter(|m| m.event == "event")
        .map(|m| m.json()["event"]["event_type"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(types, vec!["specimen.failed"; 5]);
    d.shutdown();
}

/// The summary: a run stopped by validation is stopped, with its reason,
/// its checkpoint and its success-rate series.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_summary_shows_a_stopped_run_with_its_reason() {
    let bus = Bus::new();
    let d = nerve_dashboard::serve(&bus, "127.0.0.1:0").unwrap();
    let run = |t: &str, data: serde_json::Value| {
        bus.emit_event(
            nerve_core::Event::builder(t)
                .run_id("run-broken")
                .data(data)
                .build()
                .unwrap(),
        )
        .unwrap();
    };
    run(
        "extraction.started",
        json!({"run_id": "run-broken", "total_specimens": 25}),
    );
    for ok in [false, true, false, false, false] {
        run(
            if ok {
                "specimen.completed"
            } else {
                "specimen.failed"
            },
            json!({}),
        );
    }
    run(
        "validation.checkpoint",
        json!({"processed": 5, "threshold": 0.5, "passed": false, "success_rate": 0.2}),
    );
    run(
        "extraction.failed",
        json!({"run_id": "run-broken", "message": "early validation failed: 20% success rate after 5 specimens"}),
    );
    settle(&format!("http://{}", d.local_addr()), 8).await;
    let (status, body) = get(&format!("http://{}/api/summary", d.local_addr()), None).await;
    assert_eq!(status, 200);
    let s: serde_json::Value = serde_json::from_str(&body).unwrap();
    let r = &s["runs"][0];
    assert_eq!(r["status"], "stopped");
    assert_eq!(
        r["reason"],
        "early validation failed: 20% success rate after 5 specimens"
    );
    assert_eq!(
        (r["processed"].as_u64(), r["failed"].as_u64()),
        (Some(5), Some(4))
    );
    assert_eq!(r["total"], 25);
    assert_eq!(r["checkpoint"]["passed"], false);
    assert_eq!(r["series"].as_array().unwrap().len(), 5);
    assert_eq!(s["counts"]["specimen.failed"], 4);
    assert_eq!(s["sources"][0]["kind"], "bus");
    d.shutdown();
}

/// The chain of an event: the events sharing its correlation id, and the
/// causation links between them (a handler's emit is caused by the event
/// it handles).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_events_chain_holds_its_correlation_and_causation_links() {
    let bus = Bus::new();
    let inner = bus.clone();
    bus.subscribe("order.placed", move |_: &nerve_core::Event| {
        inner.emit("order.charged", json!({})).unwrap();
    })
    .unwrap();
    let inner = bus.clone();
    bus.subscribe("order.charged", move |_: &nerve_core::Event| {
        inner.emit("order.shipped", json!({})).unwrap();
    })
    .unwrap();
    let d = nerve_dashboard::serve(&bus, "127.0.0.1:0").unwrap();
    {
        let _c = nerve_core::correlation::enter("order-1");
        bus.emit("order.placed", json!({})).unwrap();
    }
    bus.emit("unrelated.thing", json!({})).unwrap();
    let mut sse = Sse::connect(&stream_url(&d), None).await;
    sse.events(4).await;
    // The dashboard id of `order.charged` (handlers run before the stream
    // gets the event they handle, so arrival order is not emission order).
    let (_, body) = get(
        &format!("http://{}/api/events?pattern=order.*", d.local_addr()),
        None,
    )
    .await;
    let list: serde_json::Value = serde_json::from_str(&body).unwrap();
    let id_of = |t: &str| {
        list["events"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["event"]["event_type"] == t)
            .unwrap()["id"]
            .as_u64()
            .unwrap()
    };
    let (placed, charged, shipped) = (
        id_of("order.placed"),
        id_of("order.charged"),
        id_of("order.shipped"),
    );
    let (status, body) = get(
        &format!("http://{}/api/events/{charged}/chain", d.local_addr()),
        None,
    )
    .await;
    assert_eq!(status, 200, "{body}");
    let c: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(c["correlation_id"], "order-1");
    let types: Vec<&str> = c["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["event"]["event_type"].as_str().unwrap())
        .collect();
    // In emission order (timestamp, then seq), whatever order they arrived in.
    assert_eq!(types, ["order.placed", "order.charged", "order.shipped"]);
    assert_eq!(
        c["links"],
        json!([{"cause": placed, "effect": charged}, {"cause": charged, "effect": shipped}])
    );
    d.shutdown();
}
