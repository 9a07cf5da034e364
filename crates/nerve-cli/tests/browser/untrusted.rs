//! Event data is untrusted: payloads that would run script if written as
//! HTML (`<script>`, `<img onerror>`, `javascript:` URLs, an SVG `onload`)
//! are shown as text in every place the page shows data (the run card, its
//! reason, the table, the detail, the chain, the filter) and run nothing. Checked from inside the page: no dialog, the sentinel global
//! the payloads set left unset, no element with an event handler attribute
//! or a `javascript:` link, no script but the page's own.
//! [`super::detector`] shows these checks catch a page that does run them.

use nerve::{Bus, Event, json};
use serde_json::Value;

use crate::support::{Browser, Chromedriver};
use crate::{open_event, row_ids, wait_live, wait_run_status};

/// What a page shows of script having run, or being ready to run.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct Execution {
    /// The text of an open dialog.
    pub(crate) dialog: Option<String>,
    /// The value the payloads give `window.__nerve_pwned`.
    pub(crate) sentinel: Option<Value>,
    /// Elements that run script or navigate to it: `TAG[onerror]`,
    /// `A[href=javascript:]`, `IFRAME`.
    pub(crate) active_elements: Vec<String>,
    /// `<script>` elements beyond the page's own.
    pub(crate) extra_scripts: i64,
}

/// Looks for [`Execution`] in the page, which has `own_scripts` scripts
/// of its own. With a dialog open nothing else can be asked, so only the
/// dialog is reported.
pub(crate) async fn executed(browser: &Browser, own_scripts: i64) -> Execution {
    if let Some(dialog) = browser.dialog().await {
        return Execution {
            dialog: Some(dialog),
            ..Execution::default()
        };
    }
    let found = browser
        .js(
            r#"
            const found = [];
            const urls = ["href", "src", "action", "formaction", "xlink:href", "data"];
            for (const e of document.querySelectorAll("*")) {
              if (["IFRAME", "OBJECT", "EMBED", "FRAME"].includes(e.tagName)) found.push(e.tagName);
              for (const a of e.attributes) {
                const n = a.name.toLowerCase();
                if (n.startsWith("on")) found.push(e.tagName + "[" + n + "]");
                if (urls.includes(n) && /^\s*(javascript|data|vbscript):/i.test(a.value))
                  found.push(e.tagName + "[" + n + "=" + a.value.trim().split(":")[0].toLowerCase() + ":]");
              }
            }
            return {
              sentinel: window.__nerve_pwned === undefined ? null : window.__nerve_pwned,
              found,
              scripts: document.scripts.length,
            };"#,
            vec![],
        )
        .await;
    Execution {
        dialog: None,
        sentinel: Some(found["sentinel"].clone()).filter(|v| !v.is_null()),
        active_elements: serde_json::from_value(found["found"].clone()).expect("a list"),
        extra_scripts: found["scripts"].as_i64().expect("a count") - own_scripts,
    }
}

/// A payload for each way HTML runs script, each setting the sentinel to
/// its own name and opening a dialog.
fn payload(name: &str) -> [String; 4] {
    [
        format!("<script>window.__nerve_pwned='{name}';alert('{name}')</script>"),
        format!("<img src=x onerror=\"window.__nerve_pwned='{name}';alert('{name}')\">"),
        format!("javascript:window.__nerve_pwned='{name}';alert('{name}')"),
        format!(
            "<svg onload=\"window.__nerve_pwned='{name}'\"><a href=\"javascript:alert('{name}')\">x</a></svg>"
        ),
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn script_in_event_data_runs_nothing() {
    let Some(driver) = Chromedriver::start() else {
        return;
    };
    let bus = Bus::new();
    let dashboard = nerve::dashboard::serve(&bus, "127.0.0.1:0").expect("the dashboard starts");

    let run_id = payload("run")[1].clone();
    let emit = |event: Event| bus.emit_event(event).expect("emit");
    emit(
        Event::new(
            "xss.started",
            json!({"run_id": run_id, "total_specimens": 3}),
        )
        .unwrap(),
    );
    let [script, img, href, svg] = payload("data");
    let chat = emit(
        Event::builder("chat.message")
            .data(json!({"run_id": run_id, "text": script, "html": img, "link": href, "svg": svg}))
            .correlation_id(payload("correlation")[1].as_str())
            .source(payload("source")[0].as_str())
            .build()
            .unwrap(),
    );
    // A payload as a key, too.
    let mut data = serde_json::Map::new();
    data.insert("run_id".into(), json!(run_id));
    data.insert(payload("key")[1].clone(), json!(payload("value")[2]));
    emit(
        Event::builder("specimen.completed")
            .data(Value::Object(data))
            .correlation_id(payload("correlation")[1].as_str())
            .causation_id(chat)
            .build()
            .unwrap(),
    );
    emit(
        Event::new(
            "xss.failed",
            json!({"run_id": run_id, "reason": payload("reason").join(" ")}),
        )
        .unwrap(),
    );

    let browser = driver.browser().await;
    browser.open(&dashboard.url()).await;
    wait_live(&browser).await;
    browser
        .wait_for_count("the four events", "#event-rows [data-testid=event-row]", 4)
        .await;

    // The run card shows the run id and the reason as text.
    let card = wait_run_status(&browser, "<img src=x onerror=", "stopped").await;
    assert!(
        card["reason"]
            .as_str()
            .is_some_and(|r| r.contains("<script>window.__nerve_pwned='reason'")),
        "{card}"
    );
    // The table shows the data as text (the run column holds the run id).
    let table = browser.text("#event-rows").await.expect("the table");
    assert!(
        table.contains(r#"<img src=x onerror="window.__nerve_pwned='run';alert('run')">"#),
        "{table}"
    );
    assert!(
        table.contains("javascript:window.__nerve_pwned='data'"),
        "{table}"
    );
    assert_eq!(executed(&browser, 1).await, Execution::default());

    // The detail and the chain of each event show it as text too.
    for id in row_ids(&browser).await {
        let event = open_event(&browser, id).await;
        assert!(event["event_type"].is_string(), "{event}");
        if event["event_type"] == "chat.message" {
            assert_eq!(event["data"]["text"], payload("data")[0]);
            assert_eq!(event["data"]["html"], payload("data")[1]);
            assert_eq!(event["data"]["svg"], payload("data")[3]);
            assert_eq!(event["source"], payload("source")[0]);
            browser
                .wait_for_count("the chain", "#chain [data-testid=chain-row]", 2)
                .await;
        }
        assert_eq!(
            executed(&browser, 1).await,
            Execution::default(),
            "event {id}"
        );
    }

    // Typed into the filter, a payload is refused as a pattern, and runs
    // nothing either.
    let filter = browser
        .client()
        .find(fantoccini::Locator::Id("filter"))
        .await
        .expect("the filter");
    filter
        .send_keys(&payload("filter")[1])
        .await
        .expect("typing in the filter");
    browser
        .wait_for("the filter to refuse the payload", |b| async move {
            let valid = b
                .js(
                    "return document.getElementById('filter').dataset.valid;",
                    vec![],
                )
                .await;
            (valid == "false").then_some(())
        })
        .await;
    assert_eq!(executed(&browser, 1).await, Execution::default());

    browser.close().await;
    dashboard.shutdown();
}
