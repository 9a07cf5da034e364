//! The [`AlertSink`] trait: where alerts go.

use std::future::Future;
use std::pin::Pin;

use super::Alert;

/// The future an [`AlertSink`] returns: boxed, so sinks can be trait objects.
pub type SinkFuture<'a> = Pin<Box<dyn Future<Output = Result<(), AlertError>> + Send + 'a>>;

/// Where alerts are delivered: a webhook, an SMTP relay, a program.
///
/// `send` runs on the alert consumer's delivery thread (a current-thread
/// tokio runtime of its own) or on the runtime given to its builder, never
/// on the emitting thread. A failed send is retried with backoff unless the error is
/// [permanent](AlertError::permanent).
///
/// ```
/// use nerve::consumers::alert::{Alert, AlertSink, AlertError, SinkFuture};
///
/// /// Prints alerts.
/// struct Stdout;
///
/// impl AlertSink for Stdout {
///     fn name(&self) -> &str {
///         "stdout"
///     }
///     fn send<'a>(&'a self, alert: &'a Alert) -> SinkFuture<'a> {
///         Box::pin(async move {
///             println!("{}", alert.message);
///             Ok::<(), AlertError>(())
///         })
///     }
/// }
/// ```
pub trait AlertSink: Send + Sync + 'static {
    /// A short name for stats and dead letters (`webhook`, `email`, ...).
    fn name(&self) -> &str;

    /// Delivers one alert.
    ///
    /// # Errors
    ///
    /// [`AlertError`] when the alert could not be delivered.
    fn send<'a>(&'a self, alert: &'a Alert) -> SinkFuture<'a>;
}

/// A sink could not deliver an alert.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct AlertError {
    message: String,
    permanent: bool,
}

impl AlertError {
    /// A failure worth retrying (a timeout, a 5xx answer, a refused
    /// connection).
    pub fn new(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            permanent: false,
        }
    }

    /// A failure that retrying cannot fix (a 4xx answer, a rejected
    /// recipient); the alert fails at once.
    pub fn permanent(message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            permanent: true,
        }
    }

    /// Whether retrying is pointless.
    pub fn is_permanent(&self) -> bool {
        self.permanent
    }
}
