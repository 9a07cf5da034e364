//! An SSE client over reqwest, and helpers.

use std::time::Duration;

use futures::StreamExt;

/// Every wait in these tests is bounded by this (generous: it is only
/// reached when something is broken).
pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// One SSE message.
#[derive(Debug, Clone)]
pub(crate) struct Msg {
    pub(crate) event: String,
    pub(crate) id: Option<String>,
    pub(crate) data: String,
}

impl Msg {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.data).unwrap_or_else(|e| panic!("{e}: {}", self.data))
    }

    /// The dashboard id of an `event` message.
    pub(crate) fn dashboard_id(&self) -> u64 {
        self.json()["id"].as_u64().unwrap()
    }
}

/// Reads an SSE response message by message.
pub(crate) struct Sse {
    body: futures::stream::BoxStream<'static, reqwest::Result<Vec<u8>>>,
    buf: Vec<u8>,
}

impl Sse {
    pub(crate) async fn connect(url: &str, last_event_id: Option<&str>) -> Self {
        let mut req = reqwest::Client::new().get(url);
        if let Some(id) = last_event_id {
            req = req.header("Last-Event-ID", id);
        }
        let resp = tokio::time::timeout(WAIT, req.send())
            .await
            .expect("connect timed out")
            .expect("connect failed");
        assert_eq!(resp.status(), 200, "{url}");
        assert_eq!(
            resp.headers()["content-type"].to_str().unwrap(),
            "text/event-stream"
        );
        Self {
            body: resp.bytes_stream().map(|r| r.map(|b| b.to_vec())).boxed(),
            buf: Vec::new(),
        }
    }

    /// The next message (comments skipped); panics after [`WAIT`].
    pub(crate) async fn next(&mut self) -> Msg {
        tokio::time::timeout(WAIT, self.next_inner())
            .await
            .expect("no SSE message in time")
            .expect("the stream ended")
    }

    async fn next_inner(&mut self) -> Option<Msg> {
        loop {
            if let Some(end) = find(&self.buf, b"\n\n") {
                let block: Vec<u8> = self.buf.drain(..end + 2).collect();
                let text = String::from_utf8(block).unwrap();
                let mut msg = Msg {
                    event: "message".into(),
                    id: None,
                    data: String::new(),
                };
                let mut any = false;
                for line in text.lines() {
                    if line.starts_with(':') || line.is_empty() {
                        continue;
                    }
                    let (k, v) = line.split_once(':').unwrap_or((line, ""));
                    let v = v.strip_prefix(' ').unwrap_or(v);
                    match k {
                        "event" => msg.event = v.to_owned(),
                        "id" => msg.id = Some(v.to_owned()),
                        "data" => {
                            if !msg.data.is_empty() {
                                msg.data.push('\n');
                            }
                            msg.data.push_str(v);
                        }
                        _ => {}
                    }
                    any = true;
                }
                if any {
                    return Some(msg);
                }
                continue;
            }
            let chunk = self.body.next().await?.ok()?;
            self.buf.extend_from_slice(&chunk);
        }
    }

    /// Messages up to and including the first of kind `event`.
    pub(crate) async fn until(&mut self, event: &str) -> Vec<Msg> {
        let mut out = Vec::new();
        loop {
            let m = self.next().await;
            let done = m.event == event;
            out.push(m);
            if done {
                return out;
            }
        }
    }

    /// The next `n` messages of kind `event` (others skipped; a `missed`
    /// notice fails the test), within [`WAIT`] in all.
    pub(crate) async fn events(&mut self, n: usize) -> Vec<Msg> {
        let collect = async {
            let mut out = Vec::new();
            while out.len() < n {
                let m = self.next().await;
                assert_ne!(m.event, "missed", "unexpected loss: {}", m.data);
                if m.event == "event" {
                    out.push(m);
                }
            }
            out
        };
        tokio::time::timeout(WAIT, collect)
            .await
            .unwrap_or_else(|_| panic!("{n} events did not come in time"))
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `GET url` with an optional bearer token: (status, body).
pub(crate) async fn get(url: &str, token: Option<&str>) -> (u16, String) {
    let mut req = reqwest::Client::new().get(url);
    if let Some(t) = token {
        req = req.bearer_auth(t);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.text().await.unwrap())
}

/// The `event` messages' dashboard ids are exactly `from..=to`.
pub(crate) fn assert_ids(msgs: &[Msg], from: u64, to: u64) {
    let ids: Vec<u64> = msgs
        .iter()
        .filter(|m| m.event == "event")
        .map(Msg::dashboard_id)
        .collect();
    let want: Vec<u64> = (from..=to).collect();
    assert_eq!(ids, want, "dashboard ids");
}

/// Waits until the dashboard at `base` has taken in `n` events (a bus's
/// events reach it asynchronously): reads them on a client of its own.
pub(crate) async fn settle(base: &str, n: usize) {
    Sse::connect(&format!("{base}/api/stream"), None)
        .await
        .events(n)
        .await;
}
