//! The page and its assets, and untrusted event data served as data.

use nerve_core::json;
use nerve_router::Bus;

use crate::support::{Sse, get};

const HOSTILE: [&str; 4] = [
    "<script>window.__pwned = 1</script>",
    "<img src=x onerror=\"window.__pwned = 1\">",
    "javascript:window.__pwned=1",
    "</pre><svg onload=alert(1)>",
];

/// An event whose data holds markup and script is served as JSON data,
/// byte for byte, never as markup; the page is served with a policy that
/// runs only its own script, and its script writes event data as text.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_event_with_script_data_is_served_as_data() {
    let bus = Bus::new();
    let d = nerve_dashboard::serve(&bus, "127.0.0.1:0").unwrap();
    let base = format!("http://{}", d.local_addr());
    bus.emit(
        "specimen.completed",
        json!({ "html": HOSTILE[0], "img": HOSTILE[1], "link": HOSTILE[2], "pre": HOSTILE[3], "run_id": HOSTILE[0] }),
    )
    .unwrap();
    let mut sse = Sse::connect(&format!("{base}/api/stream"), None).await;
    let m = &sse.events(1).await[0];
    let data = &m.json()["event"]["data"];
    assert_eq!(data["html"], HOSTILE[0]);
    assert_eq!(data["img"], HOSTILE[1]);
    let r = reqwest::get(format!("{base}/api/events/1")).await.unwrap();
    assert_eq!(r.headers()["content-type"], "application/json");
    assert_eq!(r.headers()["x-content-type-options"], "nosniff");
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["event"]["data"]["link"], HOSTILE[2]);
    assert_eq!(v["event"]["data"]["pre"], HOSTILE[3]);
    d.shutdown();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_page_is_embedded_and_runs_only_its_own_script() {
    let bus = Bus::new();
    let d = nerve_dashboard::serve(&bus, "127.0.0.1:0").unwrap();
    let base = format!("http://{}", d.local_addr());
    let r = reqwest::get(format!("{base}/")).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/html; charset=utf-8");
    let csp = r.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    assert!(
        csp.contains("script-src 'self'") && csp.contains("default-src 'none'"),
        "{csp}"
    );
    assert!(!csp.contains("unsafe-inline"), "{csp}");
    let html = r.text().await.unwrap();
    for id in [
        "runs",
        "events",
        "event-rows",
        "filter",
        "detail",
        "detail-json",
        "chain",
        "counts",
        "losses",
    ] {
        assert!(html.contains(&format!("id=\"{id}\"")), "the page has #{id}");
    }
    // No inline script: everything runs from /app.js.
    assert_eq!(html.matches("<script").count(), 1);
    assert!(html.contains("<script src=\"/app.js\""));
    let (status, js) = get(&format!("{base}/app.js"), None).await;
    assert_eq!(status, 200);
    for sink in [
        "innerHTML",
        "outerHTML",
        "insertAdjacentHTML",
        "document.write",
        "eval(",
        "new Function",
    ] {
        assert!(!js.contains(sink), "app.js must not use {sink}");
    }
    let (status, css) = get(&format!("{base}/app.css"), None).await;
    assert_eq!(status, 200);
    assert!(css.contains("#events"));
    assert_eq!(
        get(&format!("{base}/healthz"), None).await,
        (200, "ok".to_owned())
    );
    d.shutdown();
}

/// Dropping the handle stops the server: open streams end, the port is
/// free again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutting_down_ends_open_streams_and_frees_the_port() {
    let bus = Bus::new();
    let d = nerve_dashboard::serve(&bus, "127.0.0.1:0").unwrap();
    let addr = d.local_addr();
    let mut sse = Sse::connect(&format!("http://{addr}/api/stream"), None).await;
    sse.until("caught-up").await;
    // Dropped from inside a runtime: must not panic.
    drop(d);
    let again = nerve_dashboard::Dashboard::builder().bind(addr).start();
    assert!(again.is_ok(), "{again:?}");
}
