//! The checks [`super::untrusted`] relies on, shown to catch what they look
//! for: a page of this test that writes its input with `innerHTML` runs
//! the payload, and the checks say so. Without this, a check that could
//! never fail would pass the dashboard.

use axum::response::Html;
use serde_json::json;

use crate::support::Chromedriver;
use crate::untrusted::{Execution, executed};

/// A page that does what the dashboard must never do.
const UNSAFE_PAGE: &str = r#"<!doctype html>
<html><head><title>unsafe</title></head><body>
<div id="out"></div>
<script>
  const p = new URLSearchParams(location.search).get("p");
  if (p) document.getElementById("out").innerHTML = p;
</script>
</body></html>"#;

/// Serves [`UNSAFE_PAGE`] on a free loopback port.
async fn serve_unsafe_page() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("a free port");
    let addr = listener.local_addr().expect("its address");
    let app = axum::Router::new().route("/", axum::routing::get(|| async { Html(UNSAFE_PAGE) }));
    tokio::spawn(async move { axum::serve(listener, app).await });
    format!("http://{addr}/")
}

/// `s` percent-encoded for a query string.
fn encode(s: &str) -> String {
    s.bytes().map(|b| format!("%{b:02X}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_checks_catch_a_page_that_runs_a_payload() {
    let Some(driver) = Chromedriver::start() else {
        return;
    };
    let url = serve_unsafe_page().await;
    let browser = driver.browser().await;

    // A clean page: nothing ran.
    browser.open(&url).await;
    assert_eq!(executed(&browser, 1).await, Execution::default());

    // An `<img onerror>` written as HTML: the element exists, its handler
    // sets the sentinel and opens a dialog.
    let payload = r#"<img src=x onerror="window.__nerve_pwned='img';alert('img')">"#;
    browser.open(&format!("{url}?p={}", encode(payload))).await;
    let dialog = browser
        .wait_for("the payload's dialog", |b| async move { b.dialog().await })
        .await;
    assert_eq!(dialog, "img");
    let found = executed(&browser, 1).await;
    assert_eq!(found.dialog.as_deref(), Some("img"));
    browser
        .client()
        .dismiss_alert()
        .await
        .expect("the dialog closes");
    let found = executed(&browser, 1).await;
    assert_eq!(found.sentinel, Some(json!("img")));
    assert_eq!(found.active_elements, ["IMG[onerror]"]);

    // A `javascript:` link written as HTML is there to be clicked.
    let payload = r#"<a id="go" href="javascript:window.__nerve_pwned='href'">go</a>"#;
    browser.open(&format!("{url}?p={}", encode(payload))).await;
    let found = executed(&browser, 1).await;
    assert_eq!(found.active_elements, ["A[href=javascript:]"]);

    browser.close().await;
}
