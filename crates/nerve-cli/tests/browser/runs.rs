//! `nerve serve` on the demo's journals: the healthy run completed, the
//! broken one marked stopped with the reason its journal gives, each with
//! its chart and thresholds.

use std::process::Command;

use serde_json::Value;

use crate::support::Chromedriver;
use crate::{NerveServer, wait_live, wait_run_status};

/// The `message` of the `extraction.failed` event in `journal`.
fn stop_message(journal: &std::path::Path) -> String {
    let text = std::fs::read_to_string(journal).expect("the broken run's journal");
    text.lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .find(|event| event["event_type"] == "extraction.failed")
        .and_then(|event| event["data"]["message"].as_str().map(str::to_owned))
        .expect("the broken run ends with extraction.failed and a message")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stopped_run_is_marked_stopped_with_its_reason() {
    let Some(driver) = Chromedriver::start() else {
        return;
    };
    let dir = tempfile::tempdir().expect("a directory");
    let out = dir.path().join("runs");
    let status = Command::new(env!("CARGO_BIN_EXE_nerve"))
        .args(["demo", "--delay-ms", "0", "--out"])
        .arg(&out)
        .stdout(std::process::Stdio::null())
        .status()
        .expect("nerve demo runs");
    assert!(status.success(), "nerve demo failed: {status}");
    let reason = stop_message(&out.join("run-broken").join("events.jsonl"));

    let server = NerveServer::start(
        &[
            "serve",
            "--bind",
            "127.0.0.1:0",
            out.to_str().expect("UTF-8"),
        ],
        dir.path(),
    );
    let browser = driver.browser().await;
    browser.open(&server.url).await;
    wait_live(&browser).await;

    let broken = wait_run_status(&browser, "run-broken", "stopped").await;
    assert_eq!(broken["reason"].as_str(), Some(reason.as_str()), "{broken}");
    assert!(
        broken["status_text"]
            .as_str()
            .is_some_and(|s| s.to_lowercase().contains("stopped")),
        "{broken}"
    );
    assert_eq!(broken["chart"], true, "{broken}");
    let healthy = wait_run_status(&browser, "run-healthy", "completed").await;
    assert_eq!(healthy["reason"], Value::Null, "{healthy}");
    assert_eq!(healthy["chart"], true, "{healthy}");

    // The broken run's chart draws both thresholds and the checkpoint it
    // failed.
    let drawn = browser
        .js(
            "const card = Array.from(document.querySelectorAll('[data-testid=run]'))\
               .find(c => c.dataset.status === 'stopped');\
             const has = (id) => !!card.querySelector('[data-testid=' + id + ']');\
             return [has('rate-line'), has('threshold-warning'), has('threshold-checkpoint')];",
            vec![],
        )
        .await;
    assert_eq!(drawn, serde_json::json!([true, true, true]));

    browser.close().await;
}
