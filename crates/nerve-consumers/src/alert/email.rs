//! [`EmailSink`]: alerts by SMTP.

use std::fmt;
use std::time::Duration;

use lettre::message::header::ContentType;
use lettre::message::{Mailbox, Message};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use super::{Alert, AlertError, AlertSink, SinkFuture};
use crate::error::ConfigError;

/// How the SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Security {
    /// STARTTLS, required (port 587 unless set).
    StartTls,
    /// No TLS at all, for a relay on localhost or a trusted network (port 25
    /// unless set).
    Plain,
}

/// Sends each alert as a plain-text email through an SMTP relay, with
/// STARTTLS (rustls) or, for a local relay, without TLS.
///
/// The subject is a template like a rule's message (default
/// `[nerve] {rule}: {message}`, where `{message}` is the alert's message);
/// the body is the message followed by the alert as pretty JSON. A
/// permanent SMTP answer (5xx, such as a rejected recipient) fails at once;
/// the rest is retried.
///
/// | option        | default |
/// |---------------|---------|
/// | `starttls(host)` / `plain(host)` | required: the relay |
/// | `port`        | 587 with STARTTLS, 25 plain |
/// | `credentials` | none |
/// | `from`, `to`  | required (`to` may be given several times) |
/// | `subject`     | `[nerve] {rule}: {message}` |
/// | `timeout`     | 10 s per connection and command |
///
/// ```
/// use nerve::consumers::alert::EmailSink;
///
/// let email = EmailSink::builder()
///     .starttls("smtp.example.org")
///     .credentials("alerts", "app-password")
///     .from("nerve <alerts@example.org>")
///     .to("oncall@example.org")
///     .build()?;
/// # Ok::<(), nerve::consumers::ConfigError>(())
/// ```
#[derive(Clone)]
pub struct EmailSink {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
    subject: String,
}

impl fmt::Debug for EmailSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailSink")
            .field("from", &self.from.to_string())
            .field("to", &self.to.len())
            .finish_non_exhaustive()
    }
}

/// Builds an [`EmailSink`]; see its docs for the defaults.
#[must_use]
pub struct EmailBuilder {
    relay: Option<(String, Security)>,
    port: Option<u16>,
    credentials: Option<(String, String)>,
    from: Option<String>,
    to: Vec<String>,
    subject: String,
    timeout: Duration,
}

impl Default for EmailBuilder {
    fn default() -> Self {
        Self {
            relay: None,
            port: None,
            credentials: None,
            from: None,
            to: Vec::new(),
            subject: "[nerve] {rule}: {message}".to_owned(),
            timeout: Duration::from_secs(10),
        }
    }
}

impl fmt::Debug for EmailBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EmailBuilder")
            .field("relay", &self.relay)
            .field("port", &self.port)
            .field("from", &self.from)
            .field("to", &self.to)
            .finish_non_exhaustive()
    }
}

impl EmailSink {
    /// Starts configuring an email sink.
    pub fn builder() -> EmailBuilder {
        EmailBuilder::default()
    }
}

impl EmailBuilder {
    /// Relay through `host` with STARTTLS (required, verified with the
    /// webpki roots).
    pub fn starttls(mut self, host: impl Into<String>) -> Self {
        self.relay = Some((host.into(), Security::StartTls));
        self
    }

    /// Relay through `host` without TLS: only for a relay on localhost or a
    /// trusted network, since the mail and any credentials travel in clear.
    pub fn plain(mut self, host: impl Into<String>) -> Self {
        self.relay = Some((host.into(), Security::Plain));
        self
    }

    /// The relay's port.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Authenticates with this user name and password.
    pub fn credentials(mut self, user: impl Into<String>, password: impl Into<String>) -> Self {
        self.credentials = Some((user.into(), password.into()));
        self
    }

    /// The sender, `alerts@example.org` or `Name <alerts@example.org>`.
    pub fn from(mut self, address: impl Into<String>) -> Self {
        self.from = Some(address.into());
        self
    }

    /// Adds a recipient.
    pub fn to(mut self, address: impl Into<String>) -> Self {
        self.to.push(address.into());
        self
    }

    /// The subject template (see the [type docs](EmailSink)).
    pub fn subject(mut self, template: impl Into<String>) -> Self {
        self.subject = template.into();
        self
    }

    /// How long connecting and each SMTP command may take.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// Checks the settings.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] without a relay, a sender or a recipient, or for an
    /// address that does not parse.
    pub fn build(self) -> Result<EmailSink, ConfigError> {
        let (host, security) = self.relay.ok_or(ConfigError::Missing { option: "relay" })?;
        let mailbox = |option: &'static str, text: &str| {
            text.parse::<Mailbox>().map_err(|e| ConfigError::Invalid {
                option,
                value: text.to_owned(),
                reason: e.to_string(),
            })
        };
        let from = mailbox(
            "from",
            &self.from.ok_or(ConfigError::Missing { option: "from" })?,
        )?;
        if self.to.is_empty() {
            return Err(ConfigError::Missing { option: "to" });
        }
        let to = self
            .to
            .iter()
            .map(|t| mailbox("to", t))
            .collect::<Result<Vec<_>, _>>()?;
        let mut transport = match security {
            Security::StartTls => AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&host)
                .map_err(|e| ConfigError::Invalid {
                    option: "relay",
                    value: host.clone(),
                    reason: e.to_string(),
                })?,
            Security::Plain => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(&host).port(25)
            }
        };
        if let Some(port) = self.port {
            transport = transport.port(port);
        }
        if let Some((user, password)) = self.credentials {
            transport = transport.credentials(Credentials::new(user, password));
        }
        Ok(EmailSink {
            transport: transport.timeout(Some(self.timeout)).build(),
            from,
            to,
            subject: self.subject,
        })
    }
}

impl EmailSink {
    fn message(&self, alert: &Alert) -> Result<Message, AlertError> {
        let subject = self
            .subject
            .replace("{rule}", &alert.rule)
            .replace("{message}", &alert.message)
            .replace("{event_type}", &alert.event_type)
            .replace("{run_id}", alert.run_id.as_deref().unwrap_or(""));
        let details = serde_json::to_string_pretty(alert)
            .map_err(|e| AlertError::permanent(format!("alert not serializable: {e}")))?;
        let mut builder = Message::builder()
            .from(self.from.clone())
            .subject(subject)
            .header(ContentType::TEXT_PLAIN);
        for to in &self.to {
            builder = builder.to(to.clone());
        }
        builder
            .body(format!("{}\n\n{details}\n", alert.message))
            .map_err(|e| AlertError::permanent(format!("email not built: {e}")))
    }
}

impl AlertSink for EmailSink {
    fn name(&self) -> &str {
        "email"
    }

    fn send<'a>(&'a self, alert: &'a Alert) -> SinkFuture<'a> {
        Box::pin(async move {
            let message = self.message(alert)?;
            match self.transport.send(message).await {
                Ok(_) => Ok(()),
                Err(e) if e.is_permanent() => Err(AlertError::permanent(format!("smtp: {e}"))),
                Err(e) => Err(AlertError::new(format!("smtp: {e}"))),
            }
        })
    }
}
