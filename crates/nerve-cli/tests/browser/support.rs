//! A real headless Chromium per test, driven over WebDriver: Debian's
//! `chromedriver` on a port it picks itself on 127.0.0.1, a fresh profile
//! directory, killed on drop.
//!
//! Without `chromium` and `chromedriver` a test skips with a loud message
//! naming the packages, or fails when `CI` is set, so CI cannot go green
//! without running them. `NERVE_CHROMEDRIVER` and `NERVE_CHROMIUM` name the
//! binaries to use instead (a path that does not exist shows the skip).
//!
//! Every wait polls the page for a condition, up to [`WAIT`]; nothing
//! sleeps to synchronise.

use std::future::Future;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder};
use serde_json::{Value, json};

/// The packages the browser tests need.
const PACKAGE_HINT: &str = "install Debian's packages `chromium` and `chromium-driver` \
     (apt-get install -y chromium chromium-driver)";

/// The longest any condition is waited for. Generous: a loaded two-core
/// CI machine starting Chromium can take seconds; a passing test returns as
/// soon as its condition holds.
pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// How often a wait looks at the page again.
const POLL: Duration = Duration::from_millis(25);

/// The browser window, big enough for the dashboard's side-by-side runs.
pub(crate) const WINDOW: (u32, u32) = (1400, 1000);

/// Whether `path --version` runs and succeeds.
fn works(path: &Path) -> bool {
    Command::new(path)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The first of `candidates` that works, or the one `var` names if set.
fn find(var: &str, candidates: &[&str]) -> Option<PathBuf> {
    if let Some(path) = std::env::var_os(var) {
        return Some(PathBuf::from(path)).filter(|p| works(p));
    }
    candidates.iter().map(PathBuf::from).find(|p| works(p))
}

/// Says loudly that the browser tests did not run, past libtest's capture
/// so a passing `cargo test` shows it too; panics instead when `CI` is set.
fn skip(why: &str) {
    if std::env::var_os("CI").is_some() {
        panic!("{why} and CI is set: {PACKAGE_HINT}");
    }
    let _ = writeln!(
        std::io::stderr(),
        "\n*** SKIPPED: {why}; the dashboard's browser tests did not run: {PACKAGE_HINT} ***\n"
    );
}

/// A running `chromedriver`, killed on drop.
pub(crate) struct Chromedriver {
    child: Child,
    port: u16,
    chromium: PathBuf,
}

impl Chromedriver {
    /// Starts `chromedriver`, or returns `None` (after a loud message) when
    /// it or Chromium is missing and `CI` is not set.
    ///
    /// # Panics
    ///
    /// When either is missing and `CI` is set, or chromedriver does not
    /// come up.
    pub(crate) fn start() -> Option<Self> {
        let Some(driver) = find(
            "NERVE_CHROMEDRIVER",
            &["chromedriver", "/usr/bin/chromedriver"],
        ) else {
            skip("chromedriver not found (on PATH, in /usr/bin, or at NERVE_CHROMEDRIVER)");
            return None;
        };
        // The real binary rather than Debian's /usr/bin/chromium wrapper
        // script, which only adds flags for desktop use.
        let Some(chromium) = find(
            "NERVE_CHROMIUM",
            &[
                "/usr/lib/chromium/chromium",
                "chromium",
                "/usr/bin/chromium",
            ],
        ) else {
            skip("chromium not found (in /usr/lib/chromium, on PATH, or at NERVE_CHROMIUM)");
            return None;
        };
        // `--port=0`: chromedriver binds a free port itself and says which,
        // so no other process can take it between a probe and the start.
        let mut child = Command::new(&driver)
            .args(["--port=0", "--allowed-ips=127.0.0.1", "--log-level=WARNING"])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|err| panic!("could not start {}: {err}", driver.display()));
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if !sent {
                    if let Some(port) = line
                        .strip_prefix("ChromeDriver was started successfully on port ")
                        .and_then(|rest| rest.trim_end_matches('.').parse::<u16>().ok())
                    {
                        let _ = tx.send(port);
                        sent = true;
                    }
                }
                // Keep draining so chromedriver never blocks on a full pipe.
            }
        });
        let port = rx.recv_timeout(WAIT).unwrap_or_else(|_| {
            let _ = child.kill();
            panic!("chromedriver did not say which port it listens on within {WAIT:?}")
        });
        Some(Self {
            child,
            port,
            chromium,
        })
    }

    /// A new headless Chromium session with a fresh profile.
    ///
    /// # Panics
    ///
    /// When the session cannot be created.
    pub(crate) async fn browser(&self) -> Browser {
        let profile = tempfile::tempdir().expect("a profile directory");
        let mut capabilities = serde_json::Map::new();
        capabilities.insert(
            "goog:chromeOptions".into(),
            json!({
                "binary": self.chromium,
                "args": [
                    "--headless=new",
                    // Tests run as root in CI, where Chromium's sandbox
                    // cannot start.
                    "--no-sandbox",
                    "--disable-gpu",
                    "--disable-dev-shm-usage",
                    "--disable-extensions",
                    "--no-first-run",
                    "--hide-scrollbars",
                    "--force-device-scale-factor=1",
                    format!("--window-size={},{}", WINDOW.0, WINDOW.1),
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            }),
        );
        // A dialog stays open for the test to find, instead of being
        // dismissed by the driver before anyone looks.
        capabilities.insert("unhandledPromptBehavior".into(), json!("ignore"));
        let connector = hyper_util::client::legacy::connect::HttpConnector::new();
        let client = ClientBuilder::new(connector)
            .capabilities(capabilities)
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .unwrap_or_else(|err| panic!("could not open a Chromium session: {err}"));
        Browser {
            client,
            _profile: std::sync::Arc::new(profile),
        }
    }
}

impl Drop for Chromedriver {
    /// Kills chromedriver; the browsers it started go with their sessions.
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One browser session. Call [`Browser::close`] at the end of a test so
/// Chromium exits; a panicking test leaves it to chromedriver's exit.
#[derive(Clone)]
pub(crate) struct Browser {
    client: Client,
    _profile: std::sync::Arc<tempfile::TempDir>,
}

impl Browser {
    /// The WebDriver client, for what the helpers here do not cover.
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// Opens `url` and waits for the document to be loaded.
    pub(crate) async fn open(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|err| panic!("could not open {url}: {err}"));
    }

    /// Runs `script` (a function body: `return` gives the value) in the
    /// page.
    pub(crate) async fn js(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|err| panic!("script failed: {err}\n{script}"))
    }

    /// The text of the first element matching `css`, if there is one.
    pub(crate) async fn text(&self, css: &str) -> Option<String> {
        let value = self
            .js(
                "const e = document.querySelector(arguments[0]); return e ? e.innerText : null;",
                vec![json!(css)],
            )
            .await;
        value.as_str().map(str::to_owned)
    }

    /// How many elements match `css`.
    pub(crate) async fn count(&self, css: &str) -> usize {
        let value = self
            .js(
                "return document.querySelectorAll(arguments[0]).length;",
                vec![json!(css)],
            )
            .await;
        value.as_u64().expect("a count") as usize
    }

    /// Waits until `check` gives `Some`, looking again every [`POLL`], up
    /// to [`WAIT`]; panics naming `what` (with the page's text, to see
    /// why) when it never does. `check` gets its own handle on the
    /// session, so it can be an `async move` block.
    pub(crate) async fn wait_for<T, F, Fut>(&self, what: &str, mut check: F) -> T
    where
        F: FnMut(Browser) -> Fut,
        Fut: Future<Output = Option<T>>,
    {
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(value) = check(self.clone()).await {
                return value;
            }
            if Instant::now() >= deadline {
                let body = self.text("body").await.unwrap_or_default();
                panic!(
                    "waited {WAIT:?} for {what}; the page says:\n{}",
                    truncate(&body, 4_000)
                );
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// Waits until the text of the first element matching `css` satisfies
    /// `accept`, and returns it.
    pub(crate) async fn wait_for_text(
        &self,
        what: &str,
        css: &str,
        accept: impl Fn(&str) -> bool,
    ) -> String {
        self.wait_for(what, |b| {
            let css = css.to_owned();
            let accept = &accept;
            async move { b.text(&css).await.filter(|t| accept(t)) }
        })
        .await
    }

    /// Waits until at least `n` elements match `css`.
    pub(crate) async fn wait_for_count(&self, what: &str, css: &str, n: usize) -> usize {
        self.wait_for(what, |b| {
            let css = css.to_owned();
            async move { Some(b.count(&css).await).filter(|c| *c >= n) }
        })
        .await
    }

    /// The text of the open dialog (`alert`, `confirm`, `prompt`), if one
    /// is open.
    pub(crate) async fn dialog(&self) -> Option<String> {
        match self.client.get_alert_text().await {
            Ok(text) => Some(text),
            Err(fantoccini::error::CmdError::Standard(err))
                if err.error == fantoccini::error::ErrorStatus::NoSuchAlert =>
            {
                None
            }
            Err(err) => panic!("could not ask for a dialog: {err}"),
        }
    }

    /// A PNG of the viewport.
    pub(crate) async fn screenshot(&self) -> Vec<u8> {
        self.client
            .screenshot()
            .await
            .unwrap_or_else(|err| panic!("could not take a screenshot: {err}"))
    }

    /// Ends the session, so Chromium exits.
    pub(crate) async fn close(self) {
        let _ = self.client.close().await;
    }
}

/// At most `max` bytes of `text`, cut at a character boundary.
fn truncate(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// What a screenshot shows, to tell a page from a blank one.
#[derive(Debug)]
pub(crate) struct Picture {
    /// Its size in pixels.
    pub(crate) width: u32,
    /// Its height in pixels.
    pub(crate) height: u32,
    /// How many distinct colours it has.
    pub(crate) colours: usize,
    /// The share of its pixels that differ from its most common colour
    /// (the background), 0 to 1.
    pub(crate) drawn: f64,
}

impl Picture {
    /// Decodes a PNG.
    ///
    /// # Panics
    ///
    /// When `bytes` is not a PNG.
    pub(crate) fn decode(bytes: &[u8]) -> Self {
        let mut decoder = png::Decoder::new(std::io::Cursor::new(bytes));
        decoder.set_transformations(png::Transformations::EXPAND | png::Transformations::STRIP_16);
        let mut reader = decoder.read_info().expect("a PNG header");
        let mut buf = vec![
            0;
            reader
                .output_buffer_size()
                .expect("a PNG that fits in memory")
        ];
        let frame = reader.next_frame(&mut buf).expect("a PNG frame");
        let channels = frame.color_type.samples();
        let pixels = &buf[..frame.buffer_size()];
        let mut counts = std::collections::HashMap::<[u8; 4], usize>::new();
        for px in pixels.chunks_exact(channels) {
            let mut key = [255; 4];
            key[..channels].copy_from_slice(px);
            *counts.entry(key).or_default() += 1;
        }
        let total = (frame.width as usize * frame.height as usize).max(1);
        let background = counts.values().copied().max().unwrap_or(0);
        Self {
            width: frame.width,
            height: frame.height,
            colours: counts.len(),
            drawn: (total - background) as f64 / total as f64,
        }
    }
}
