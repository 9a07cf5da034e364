//! The dashboard as a person sees it: the page in a real headless Chromium
//! (Debian's `chromium`, driven through `chromedriver` over WebDriver),
//! served by `nerve::dashboard::serve` on a bus of the test, by `nerve serve`
//! on journals, and by `nerve demo --serve`.
//!
//! Each test starts its own chromedriver and browser; nextest runs them one
//! at a time (`.config/nextest.toml`, group `browser`), so two Chromiums
//! never share the CI machine's two cores. Every wait polls the page for a
//! condition with a generous upper bound ([`support::WAIT`]).
//!
//! Without Chromium the tests skip, naming the packages, unless `CI` is set
//! (then they fail).

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};

use fantoccini::Locator;
use serde_json::{Value, json};

mod support;

mod demo;
mod detector;
mod live;
mod runs;
mod untrusted;

use support::Browser;

/// A `nerve` process (`serve` or `demo --serve`) whose dashboard the test
/// opens; killed on drop.
struct NerveServer {
    child: Child,
    url: String,
    /// The rest of its output, drained on a thread so it never blocks on a
    /// full pipe; kept so the thread goes on draining.
    _output: std::sync::mpsc::Receiver<String>,
}

impl NerveServer {
    /// Runs `nerve ARGS` and waits for its `dashboard: URL` line.
    fn start(args: &[&str], dir: &Path) -> Self {
        let mut child = Command::new(env!("CARGO_BIN_EXE_nerve"))
            .args(args)
            .current_dir(dir)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("nerve starts");
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let deadline = std::time::Instant::now() + support::WAIT;
        let mut seen = Vec::new();
        let url = loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    if let Some(url) = line.strip_prefix("dashboard: ") {
                        break url.trim().to_owned();
                    }
                    seen.push(line);
                }
                Err(why) => {
                    let _ = child.kill();
                    let status = child.wait().expect("nerve is waited for");
                    let when = match why {
                        std::sync::mpsc::RecvTimeoutError::Timeout => {
                            format!("within {:?}", support::WAIT)
                        }
                        std::sync::mpsc::RecvTimeoutError::Disconnected => {
                            format!("before it exited ({status})")
                        }
                    };
                    panic!(
                        "`nerve {}` printed no `dashboard: URL` line {when}; it printed:\n{}",
                        args.join(" "),
                        seen.join("\n")
                    );
                }
            }
        };
        Self {
            child,
            url,
            _output: rx,
        }
    }
}

impl Drop for NerveServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The `data-id`s of the event table's rows, top to bottom.
async fn row_ids(browser: &Browser) -> Vec<u64> {
    let ids = browser
        .js(
            "return Array.from(document.querySelectorAll('#event-rows [data-testid=event-row]'), \
             r => Number(r.dataset.id));",
            vec![],
        )
        .await;
    serde_json::from_value(ids).expect("a list of ids")
}

/// The `data-type`s of the event table's rows, top to bottom.
async fn row_types(browser: &Browser) -> Vec<String> {
    let types = browser
        .js(
            "return Array.from(document.querySelectorAll('#event-rows [data-testid=event-row]'), \
             r => r.dataset.type);",
            vec![],
        )
        .await;
    serde_json::from_value(types).expect("a list of types")
}

/// Waits until the page says it is live: the history is in and the stream
/// is following.
async fn wait_live(browser: &Browser) {
    browser
        .wait_for("the page to say it is live", |b| async move {
            let state = b
                .js(
                    "return document.getElementById('connection').dataset.state;",
                    vec![],
                )
                .await;
            (state == json!("live")).then_some(())
        })
        .await;
}

/// The run cards: `data-run` key, `data-status`, and the texts of the
/// name, status and reason.
async fn runs(browser: &Browser) -> Vec<Value> {
    let runs = browser
        .js(
            "return Array.from(document.querySelectorAll('#runs [data-testid=run]'), r => {\
               const t = (id) => { const e = r.querySelector('[data-testid=' + id + ']'); \
                                   return e ? e.textContent : null; };\
               return { key: r.dataset.run, status: r.dataset.status, name: t('run-name'),\
                        status_text: t('run-status'), reason: t('run-reason'),\
                        chart: !!r.querySelector('svg[data-testid=run-chart]') };\
             });",
            vec![],
        )
        .await;
    runs.as_array().cloned().expect("a list of runs")
}

/// Waits for the run whose name contains `run_id` to have `status`, and
/// returns its card.
async fn wait_run_status(browser: &Browser, run_id: &str, status: &str) -> Value {
    let what = format!("run {run_id} to be {status}");
    browser
        .wait_for(&what, |b| async move {
            runs(&b).await.into_iter().find(|r| {
                r["name"].as_str().is_some_and(|n| n.contains(run_id)) && r["status"] == status
            })
        })
        .await
}

/// Clicks the event row with dashboard id `id`, and waits for the detail
/// panel to show that event's JSON.
async fn open_event(browser: &Browser, id: u64) -> Value {
    let row = browser
        .client()
        .find(Locator::Css(&format!(
            "#event-rows [data-testid=event-row][data-id='{id}']"
        )))
        .await
        .unwrap_or_else(|e| panic!("no row for event {id}: {e}"));
    row.click()
        .await
        .unwrap_or_else(|e| panic!("could not click event {id}: {e}"));
    browser
        .wait_for(&format!("the detail of event {id}"), |b| async move {
            let shown = b
                .js(
                    "const d = document.getElementById('detail');\
                     return d.hidden ? null : [document.getElementById('detail-id').textContent,\
                                               document.getElementById('detail-json').textContent];",
                    vec![],
                )
                .await;
            let [title, text]: [String; 2] = serde_json::from_value(shown).ok()?;
            if title != format!("#{id}") {
                return None;
            }
            serde_json::from_str::<Value>(&text).ok()
        })
        .await
}
