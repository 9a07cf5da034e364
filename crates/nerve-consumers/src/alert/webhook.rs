//! [`WebhookSink`]: alerts as an HTTP POST of JSON.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use serde_json::{Value, json};

use super::{Alert, AlertError, AlertSink, SinkFuture};
use crate::error::ConfigError;

/// Body of a webhook request, made from the alert.
type BodyFn = Arc<dyn Fn(&Alert) -> Value + Send + Sync>;

/// Posts each alert as JSON to a URL.
///
/// The body is Slack-compatible by default, `{"text": "<message>"}`; give
/// [`body`](WebhookBuilder::body) a function for any other shape (Discord's
/// `content`, a `PagerDuty` event, the whole [`Alert`]). A 2xx answer is a
/// delivery; 408, 429 and 5xx answers and network errors are retried; other
/// 4xx answers fail at once.
///
/// | option    | default |
/// |-----------|---------|
/// | `url`     | required |
/// | `body`    | `{"text": alert.message}` |
/// | `header`  | none beyond `content-type: application/json` |
/// | `timeout` | 10 s per request |
///
/// ```
/// use nerve::consumers::alert::WebhookSink;
///
/// let slack = WebhookSink::builder()
///     .url("https://hooks.slack.com/services/T000/B000/XXXX")
///     .build()?;
/// let discord = WebhookSink::builder()
///     .url("https://discord.com/api/webhooks/1/abc")
///     .body(|alert| nerve::json!({"content": alert.message}))
///     .build()?;
/// # Ok::<(), nerve::consumers::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct WebhookSink {
    client: reqwest::Client,
    url: reqwest::Url,
    body: BodyFn,
    headers: Vec<(String, String)>,
}

impl WebhookSink {
    /// Starts configuring a webhook.
    pub fn builder() -> WebhookBuilder {
        WebhookBuilder::default()
    }
}

impl fmt::Debug for WebhookSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The URL of a webhook is often its secret: show the host only.
        f.debug_struct("WebhookSink")
            .field("host", &self.url.host_str())
            .finish_non_exhaustive()
    }
}

/// Builds a [`WebhookSink`]; see its docs for the defaults.
#[must_use]
pub struct WebhookBuilder {
    url: Option<String>,
    body: Option<BodyFn>,
    headers: Vec<(String, String)>,
    timeout: Duration,
}

impl Default for WebhookBuilder {
    fn default() -> Self {
        Self {
            url: None,
            body: None,
            headers: Vec::new(),
            timeout: Duration::from_secs(10),
        }
    }
}

impl fmt::Debug for WebhookBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WebhookBuilder")
            .field("timeout", &self.timeout)
            .finish_non_exhaustive()
    }
}

impl WebhookBuilder {
    /// Where to post (`http` or `https`).
    pub fn url(mut self, url: impl Into<String>) -> Self {
        self.url = Some(url.into());
        self
    }

    /// Makes the request body from the alert, instead of `{"text": message}`.
    pub fn body(mut self, body: impl Fn(&Alert) -> Value + Send + Sync + 'static) -> Self {
        self.body = Some(Arc::new(body));
        self
    }

    /// Adds a header to every request (an `authorization` token, say).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// How long one request may take.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] without a URL, for a URL that is not `http` or
    /// `https`, or when the HTTP client cannot be made.
    pub fn build(self) -> Result<WebhookSink, ConfigError> {
        let text = self.url.ok_or(ConfigError::Missing { option: "url" })?;
        let invalid = |reason: String| ConfigError::Invalid {
            option: "url",
            value: text.clone(),
            reason,
        };
        let url = reqwest::Url::parse(&text).map_err(|e| invalid(e.to_string()))?;
        if !matches!(url.scheme(), "http" | "https") {
            return Err(invalid("the scheme must be http or https".to_owned()));
        }
        let client = reqwest::Client::builder()
            .timeout(self.timeout)
            .build()
            .map_err(|e| ConfigError::Invalid {
                option: "http client",
                value: String::new(),
                reason: e.to_string(),
            })?;
        Ok(WebhookSink {
            client,
            url,
            body: self
                .body
                .unwrap_or_else(|| Arc::new(|alert: &Alert| json!({ "text": alert.message }))),
            headers: self.headers,
        })
    }
}

impl AlertSink for WebhookSink {
    fn name(&self) -> &str {
        "webhook"
    }

    fn send<'a>(&'a self, alert: &'a Alert) -> SinkFuture<'a> {
        Box::pin(async move {
            let mut request = self.client.post(self.url.clone()).json(&(self.body)(alert));
            for (name, value) in &self.headers {
                request = request.header(name, value);
            }
            // Never print the URL: webhook URLs carry their token.
            let response = request.send().await.map_err(|e| {
                AlertError::new(format!(
                    "webhook request failed: {}",
                    with_causes(&e.without_url())
                ))
            })?;
            let status = response.status();
            if status.is_success() {
                return Ok(());
            }
            let message = format!("webhook answered {status}");
            if status.is_server_error() || matches!(status.as_u16(), 408 | 429) {
                Err(AlertError::new(message))
            } else {
                Err(AlertError::permanent(message))
            }
        })
    }
}

/// An error and its causes, `error: cause: cause`, so that the reason (a
/// refused connection, a failed DNS lookup, a TLS failure) is said, not just
/// reqwest's "error sending request". A cause whose text the line already
/// holds is left out.
fn with_causes(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        let more = cause.to_string();
        if !text.contains(&more) {
            text.push_str(": ");
            text.push_str(&more);
        }
        source = cause.source();
    }
    text
}
