//! A bus of the test shown with `nerve::dashboard::serve`: a page opened
//! mid-run gets the run's history and then its live events, with no gap
//! and no duplicate at the seam; the pattern filter; one event's JSON and
//! its correlation chain.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use fantoccini::Locator;
use nerve::{Bus, Event, json};

use crate::support::Chromedriver;
use crate::{open_event, row_ids, row_types, runs, wait_live, wait_run_status};

/// Emits `specimen.completed` items of `run-live` numbered from `from`,
/// `count` of them.
fn items(bus: &Bus, from: u64, count: u64) {
    for sequence in from..from + count {
        bus.emit(
            "specimen.completed",
            json!({"run_id": "run-live", "sequence": sequence, "confidence": 0.9}),
        )
        .expect("emit");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_page_opened_mid_run_sees_the_history_then_live_events() {
    let Some(driver) = Chromedriver::start() else {
        return;
    };
    let bus = Bus::new();
    let dashboard = nerve::dashboard::serve(&bus, "127.0.0.1:0").expect("the dashboard starts");
    bus.emit(
        "extraction.started",
        json!({"run_id": "run-live", "total_specimens": 1_000}),
    )
    .expect("emit");
    items(&bus, 1, 20);
    let browser = driver.browser().await;

    // Events keep coming while the page loads its history and joins the
    // live stream, so the seam falls somewhere among them.
    let stop = Arc::new(AtomicBool::new(false));
    let emitter = {
        let (bus, stop) = (bus.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut next = 21;
            while !stop.load(Ordering::Relaxed) && next <= 900 {
                items(&bus, next, 1);
                next += 1;
                // Paced like a real run, not a synchronisation.
                std::thread::sleep(Duration::from_millis(5));
            }
            next - 1
        })
    };
    browser.open(&dashboard.url()).await;
    wait_live(&browser).await;
    // The page is live and has drawn rows while the emitter still runs.
    browser
        .wait_for_count(
            "the history's rows",
            "#event-rows [data-testid=event-row]",
            21,
        )
        .await;
    stop.store(true, Ordering::Relaxed);
    let last_item = emitter.join().expect("the emitter");
    let total = 1 + last_item; // the start event and the items

    // Every event once: ids 1..=total, newest on top.
    let ids = browser
        .wait_for("every event in the table", |b| async move {
            let ids = row_ids(&b).await;
            (ids.len() as u64 >= total).then_some(ids)
        })
        .await;
    let expected: Vec<u64> = (1..=total).rev().collect();
    assert_eq!(ids, expected, "a gap or a duplicate at the seam");
    let card = wait_run_status(&browser, "run-live", "running").await;
    assert_eq!(card["chart"], true, "{card}");

    // New events arrive live, on top.
    items(&bus, last_item + 1, 5);
    let ids = browser
        .wait_for("five live events", |b| async move {
            let ids = row_ids(&b).await;
            (ids.len() as u64 >= total + 5).then_some(ids)
        })
        .await;
    let expected: Vec<u64> = (1..=total + 5).rev().collect();
    assert_eq!(ids, expected);

    // The run's end reaches the card.
    bus.emit("extraction.completed", json!({"run_id": "run-live"}))
        .expect("emit");
    wait_run_status(&browser, "run-live", "completed").await;
    let counts = browser.text("#counts").await.expect("the counts");
    assert!(counts.contains("specimen.completed"), "{counts}");

    browser.close().await;
    dashboard.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pattern_filter_shows_only_matching_events() {
    let Some(driver) = Chromedriver::start() else {
        return;
    };
    let bus = Bus::new();
    let dashboard = nerve::dashboard::serve(&bus, "127.0.0.1:0").expect("the dashboard starts");
    bus.emit(
        "extraction.started",
        json!({"run_id": "run-f", "total_specimens": 4}),
    )
    .expect("emit");
    for i in 0..4 {
        let kind = if i % 2 == 0 {
            "specimen.completed"
        } else {
            "specimen.failed"
        };
        bus.emit(kind, json!({"run_id": "run-f", "sequence": i}))
            .expect("emit");
        bus.emit("user.login", json!({"username": format!("user{i}")}))
            .expect("emit");
    }
    let browser = driver.browser().await;
    browser.open(&dashboard.url()).await;
    wait_live(&browser).await;
    browser
        .wait_for_count("all nine events", "#event-rows [data-testid=event-row]", 9)
        .await;

    let filter = browser
        .client()
        .find(Locator::Id("filter"))
        .await
        .expect("the filter");
    let typed = |pattern: &'static str| {
        let filter = filter.clone();
        async move {
            filter.clear().await.expect("clearing the filter");
            filter.send_keys(pattern).await.expect("typing a pattern");
        }
    };
    let types_once = |want: Vec<&'static str>| {
        let browser = browser.clone();
        async move {
            browser
                .wait_for(&format!("only {want:?} rows"), |b| {
                    let want = want.clone();
                    async move {
                        let types = row_types(&b).await;
                        (!types.is_empty() && types.iter().all(|t| want.contains(&t.as_str())))
                            .then_some(types)
                    }
                })
                .await
        }
    };

    typed("specimen.*").await;
    let shown = types_once(vec!["specimen.completed", "specimen.failed"]).await;
    assert_eq!(shown.len(), 4, "{shown:?}");

    typed("*.failed").await;
    let shown = types_once(vec!["specimen.failed"]).await;
    assert_eq!(shown.len(), 2, "{shown:?}");

    // New events are filtered as they come.
    bus.emit("user.logout", json!({"username": "user0"}))
        .expect("emit");
    bus.emit("specimen.failed", json!({"run_id": "run-f", "sequence": 9}))
        .expect("emit");
    let shown = browser
        .wait_for("the live failure", |b| async move {
            let types = row_types(&b).await;
            (types.len() == 3).then_some(types)
        })
        .await;
    assert!(shown.iter().all(|t| t == "specimen.failed"), "{shown:?}");

    // A bad pattern is refused, said so, and the last good one stays
    // (typed after it: each key is a new pattern).
    filter.send_keys(".").await.expect("typing");
    let message = browser
        .wait_for_text("the bad pattern's message", "#filter-message", |t| {
            t.contains("bad pattern")
        })
        .await;
    assert!(message.contains("empty segment"), "{message}");
    let valid = browser
        .js(
            "return document.getElementById('filter').dataset.valid;",
            vec![],
        )
        .await;
    assert_eq!(valid, "false");
    assert_eq!(row_types(&browser).await.len(), 3);

    // Empty shows everything again.
    filter.clear().await.expect("clearing the filter");
    // `clear` sends no input event; one more key does.
    filter.send_keys("*").await.expect("typing");
    browser
        .wait_for_count(
            "every event again",
            "#event-rows [data-testid=event-row]",
            11,
        )
        .await;

    browser.close().await;
    dashboard.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_opens_with_its_json_and_correlation_chain() {
    let Some(driver) = Chromedriver::start() else {
        return;
    };
    let bus = Bus::new();
    let dashboard = nerve::dashboard::serve(&bus, "127.0.0.1:0").expect("the dashboard starts");
    let emit = |event: Event| bus.emit_event(event).expect("emit");
    let placed = emit(
        Event::builder("order.placed")
            .data(json!({"order": 7, "items": ["tea", "cup"]}))
            .correlation_id("req-7")
            .build()
            .unwrap(),
    );
    emit(
        Event::builder("user.login")
            .data(json!({"username": "bob"}))
            .correlation_id("req-8")
            .build()
            .unwrap(),
    );
    let charged = emit(
        Event::builder("payment.charged")
            .data(json!({"order": 7, "amount": {"value": 1250, "currency": "EUR"}}))
            .correlation_id("req-7")
            .causation_id(placed)
            .build()
            .unwrap(),
    );
    emit(
        Event::builder("order.shipped")
            .data(json!({"order": 7}))
            .correlation_id("req-7")
            .causation_id(charged)
            .build()
            .unwrap(),
    );
    let browser = driver.browser().await;
    browser.open(&dashboard.url()).await;
    wait_live(&browser).await;
    browser
        .wait_for_count("the four events", "#event-rows [data-testid=event-row]", 4)
        .await;

    // Dashboard ids follow arrival: placed 1, login 2, charged 3, shipped 4.
    let event = open_event(&browser, 3).await;
    assert_eq!(event["event_type"], "payment.charged");
    assert_eq!(event["event_id"], charged.to_string());
    assert_eq!(event["causation_id"], placed.to_string());
    assert_eq!(event["correlation_id"], "req-7");
    assert_eq!(
        event["data"],
        json!({"order": 7, "amount": {"value": 1250, "currency": "EUR"}})
    );

    let chain = browser
        .wait_for("the correlation chain", |b| async move {
            let rows = b
                .js(
                    "return Array.from(document.querySelectorAll('#chain [data-testid=chain-row]'), \
                     r => [Number(r.dataset.id), r.dataset.cause === undefined ? null : Number(r.dataset.cause)]);",
                    vec![],
                )
                .await;
            let rows: Vec<(u64, Option<u64>)> = serde_json::from_value(rows).ok()?;
            (rows.len() >= 3).then_some(rows)
        })
        .await;
    assert_eq!(chain, [(1, None), (3, Some(1)), (4, Some(3))]);
    let heading = browser
        .text("#chain-id")
        .await
        .expect("the chain's heading");
    assert!(heading.contains("req-7"), "{heading}");

    // The chain's rows open their event.
    browser
        .client()
        .find(Locator::Css("#chain [data-testid=chain-row][data-id='4']"))
        .await
        .expect("the chain's last row")
        .click()
        .await
        .expect("click");
    let shown = browser
        .wait_for_text("the shipped event", "#detail-id", |t| t == "#4")
        .await;
    assert_eq!(shown, "#4");
    let runs = runs(&browser).await;
    assert!(runs.is_empty(), "no run was started: {runs:?}");

    browser.close().await;
    dashboard.shutdown();
}
