//! 404s and bad queries: a status and a JSON error that says what to do.

use nerve_core::json;
use nerve_router::Bus;

use crate::support::{Sse, get};

async fn check(base: &str, path: &str, status: u16, says: &str) {
    let (got, body) = get(&format!("{base}{path}"), None).await;
    assert_eq!(got, status, "{path}: {body}");
    let v: serde_json::Value =
        serde_json::from_str(&body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"));
    let message = v["error"].as_str().unwrap();
    assert!(message.contains(says), "{path}: {message}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unknown_pages_and_bad_queries_get_clear_errors() {
    let bus = Bus::new();
    let d = nerve_dashboard::serve(&bus, "127.0.0.1:0").unwrap();
    for i in 0..3 {
        bus.emit("job.step", json!({ "i": i })).unwrap();
    }
    let base = format!("http://{}", d.local_addr());
    // Make sure the three events are in.
    Sse::connect(&format!("{base}/api/stream"), None)
        .await
        .events(3)
        .await;
    check(&base, "/nope", 404, "no such page: GET /nope").await;
    check(
        &base,
        "/api/events/99",
        404,
        "no event 99: ids 1..=3 are retained",
    )
    .await;
    check(&base, "/api/events/abc", 400, "bad event id \"abc\"").await;
    check(&base, "/api/events/abc/chain", 400, "bad event id").await;
    check(&base, "/api/events/99/chain", 404, "no event 99").await;
    check(
        &base,
        "/api/events?limit=0",
        400,
        "limit must be from 1 to 10000",
    )
    .await;
    check(&base, "/api/events?limit=many", 400, "bad query: limit").await;
    check(&base, "/api/events?after=-1", 400, "bad query: after").await;
    check(&base, "/api/events?pattern=a..b", 400, "bad pattern").await;
    check(
        &base,
        "/api/events?colour=red",
        400,
        "unknown field `colour`",
    )
    .await;
    check(&base, "/api/stream?pattern=ch*t", 400, "bad pattern").await;
    check(
        &base,
        "/api/stream?after=1000",
        400,
        "ahead of this dashboard",
    )
    .await;
    check(&base, "/api/stream?after=x", 400, "bad Last-Event-ID").await;
    check(
        &base,
        "/api/stream?unknown=1",
        400,
        "unknown field `unknown`",
    )
    .await;
    let r = reqwest::Client::new()
        .get(format!("{base}/api/stream"))
        .header("Last-Event-ID", "not-an-id")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = reqwest::Client::new()
        .post(format!("{base}/api/events"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
    assert!(r.text().await.unwrap().contains("read-only"));
    // And what works: a query that filters.
    let (status, body) = get(
        &format!("{base}/api/events?after=1&limit=1&pattern=job.*"),
        None,
    )
    .await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["events"].as_array().unwrap().len(), 1);
    assert_eq!(v["events"][0]["id"], 2);
    assert_eq!(
        (v["first_id"].as_u64(), v["last_id"].as_u64()),
        (Some(1), Some(3))
    );
    d.shutdown();
}
