//! `nerve demo --serve`: the page while the demo runs, both runs on it, and
//! a screenshot of it that is not blank. `cargo xtask screenshot` runs this
//! test with [`SCREENSHOT_ENV`] set to `docs/img/dashboard.png` to
//! regenerate the README's picture.

use crate::support::{Chromedriver, Picture, WINDOW};
use crate::{NerveServer, runs, wait_live, wait_run_status};

/// Where to save the screenshot; by default a temporary directory.
const SCREENSHOT_ENV: &str = "NERVE_DASHBOARD_SCREENSHOT";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_demo_served_shows_both_runs_in_a_screenshot_that_is_not_blank() {
    let Some(driver) = Chromedriver::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("a directory");
    let out = dir.path().join("runs");
    // Slow enough that the page is open while the healthy run goes on.
    let server = NerveServer::start(
        &[
            "demo",
            "--serve",
            "--bind",
            "127.0.0.1:0",
            "--delay-ms",
            "250",
            "--out",
            out.to_str().expect("UTF-8"),
        ],
        dir.path(),
    );
    let browser = driver.browser().await;
    browser.open(&server.url).await;
    wait_live(&browser).await;

    // Mid-demo: the broken run already stopped, the healthy one with items
    // on its chart.
    wait_run_status(&browser, "run-broken", "stopped").await;
    browser
        .wait_for("the healthy run's chart to have items", |b| async move {
            let drawn = b
                .js(
                    "const card = Array.from(document.querySelectorAll('[data-testid=run]'))\
                       .find(c => c.querySelector('[data-testid=run-name]').textContent.includes('run-healthy'));\
                     return !!(card && card.querySelector('[data-testid=rate-line]'));",
                    vec![],
                )
                .await;
            (drawn == true).then_some(())
        })
        .await;
    browser
        .wait_for_count(
            "rows in the event table",
            "#event-rows [data-testid=event-row]",
            10,
        )
        .await;
    let runs = runs(&browser).await;
    assert_eq!(runs.len(), 2, "{runs:?}");

    let png = browser.screenshot().await;
    let picture = Picture::decode(&png);
    assert_eq!(picture.width, WINDOW.0, "{picture:?}");
    assert!(picture.height >= 600, "{picture:?}");
    // Text, charts and status colours: a blank or single-colour page has a
    // handful of colours and nothing drawn.
    assert!(picture.colours >= 64, "too few colours: {picture:?}");
    assert!(picture.drawn >= 0.02, "too little drawn: {picture:?}");
    let path = std::env::var_os(SCREENSHOT_ENV)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| dir.path().join("dashboard.png"));
    std::fs::write(&path, &png).expect("the screenshot is saved");
    eprintln!("screenshot: {} ({picture:?})", path.display());

    browser.close().await;
    drop(server);
}
