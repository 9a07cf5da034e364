//! Handlers: what a subscription runs for each event, and how it reports.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use nerve_core::Event;
use nerve_core::sink::{SinkError, SinkErrorKind};

/// A handler failed, asks the emitter to stop, or could not record the event.
///
/// Handlers return `()` or `Result<(), E>` for any `E: Display`; an error
/// that is not a `HandlerError` is turned into one with its message. Return
/// [`HandlerError::halt`] to make `emit` return
/// [`EmitError::Halted`](crate::EmitError::Halted), and
/// [`HandlerError::not_recorded`] from a handler that stores events
/// elsewhere (an exporter) to make it return
/// [`EmitError::NotRecorded`](crate::EmitError::NotRecorded).
///
/// ```
/// use nerve::HandlerError;
/// let e = HandlerError::halt("early validation failed: 0% success rate after 5 specimens");
/// assert!(e.is_halt());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    kind: Kind,
    message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Failure,
    Halt,
    NotRecorded(SinkErrorKind),
}

impl HandlerError {
    /// A failure with this message.
    pub fn new(message: impl fmt::Display) -> Self {
        Self {
            kind: Kind::Failure,
            message: message.to_string(),
        }
    }

    /// A request to stop the emitter, with the reason.
    ///
    /// The event is still delivered to every other handler; `emit` then
    /// returns [`EmitError::Halted`](crate::EmitError::Halted) naming this
    /// subscription and the reason.
    pub fn halt(reason: impl fmt::Display) -> Self {
        Self {
            kind: Kind::Halt,
            message: reason.to_string(),
        }
    }

    /// The handler keeps events somewhere else (it exports them, say) and
    /// could not confirm that it kept this one, for the reason `error`
    /// gives. Not a failure of the handler: the event is not retried nor
    /// dead-lettered, and what went wrong is the handler's to report. The
    /// emitter is told, as the bus tells it of a journal that could not
    /// record an event: `emit` (inline handlers) and `emit_and_wait` (any
    /// handler) return [`EmitError::NotRecorded`](crate::EmitError::NotRecorded),
    /// unless a halt or a refusal of the same emit is returned instead.
    pub fn not_recorded(error: &SinkError) -> Self {
        Self {
            kind: Kind::NotRecorded(error.kind()),
            message: error.message().to_owned(),
        }
    }

    /// Whether this is a halt request rather than a failure.
    pub fn is_halt(&self) -> bool {
        self.kind == Kind::Halt
    }

    /// Whether this says the event was not recorded
    /// ([`HandlerError::not_recorded`]) rather than a failure.
    pub fn is_not_recorded(&self) -> bool {
        matches!(self.kind, Kind::NotRecorded(_))
    }

    /// The message or halt reason.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// What kind of error a [`not_recorded`](Self::not_recorded) one is.
    pub(crate) fn not_recorded_kind(&self) -> Option<SinkErrorKind> {
        match self.kind {
            Kind::NotRecorded(kind) => Some(kind),
            Kind::Failure | Kind::Halt => None,
        }
    }

    /// The message, taken.
    pub(crate) fn into_message(self) -> String {
        self.message
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.kind {
            Kind::Failure => f.write_str(&self.message),
            Kind::Halt => write!(f, "halt: {}", self.message),
            Kind::NotRecorded(_) => write!(f, "not recorded: {}", self.message),
        }
    }
}

impl std::error::Error for HandlerError {}

/// What a handler may return: `()` or `Result<(), E: Display>`.
pub trait IntoHandlerResult {
    /// Converts to the bus's result type.
    ///
    /// # Errors
    ///
    /// The handler's error as a [`HandlerError`].
    fn into_handler_result(self) -> Result<(), HandlerError>;
}

impl IntoHandlerResult for () {
    fn into_handler_result(self) -> Result<(), HandlerError> {
        Ok(())
    }
}

impl<E: fmt::Display + 'static> IntoHandlerResult for Result<(), E> {
    fn into_handler_result(self) -> Result<(), HandlerError> {
        self.map_err(|e| {
            // A `HandlerError` (a halt, say) passes through as it is; any other
            // error keeps its message. Stable Rust has no specialization, so
            // tell the two apart at run time, on the error path only.
            match (&e as &dyn Any).downcast_ref::<HandlerError>() {
                Some(h) => h.clone(),
                None => HandlerError::new(e),
            }
        })
    }
}

pub(crate) type SyncFn = Arc<dyn Fn(&Event) -> Result<(), HandlerError> + Send + Sync>;
pub(crate) type AsyncFn =
    Arc<dyn Fn(Event) -> BoxFuture<'static, Result<(), HandlerError>> + Send + Sync>;
pub(crate) type FilterFn = Arc<dyn Fn(&Event) -> bool + Send + Sync>;

pub(crate) fn sync_fn<F, R>(f: F) -> SyncFn
where
    F: Fn(&Event) -> R + Send + Sync + 'static,
    R: IntoHandlerResult,
{
    Arc::new(move |e: &Event| f(e).into_handler_result())
}

pub(crate) fn async_fn<F, Fut, R>(f: F) -> AsyncFn
where
    F: Fn(Event) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = R> + Send + 'static,
    R: IntoHandlerResult,
{
    Arc::new(move |e: Event| {
        let fut = f(e);
        Box::pin(async move { fut.await.into_handler_result() })
    })
}

/// Turns a caught panic payload into a message.
pub(crate) fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        format!("handler panicked: {s}")
    } else if let Some(s) = payload.downcast_ref::<String>() {
        format!("handler panicked: {s}")
    } else {
        "handler panicked".to_owned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn results_convert() {
        assert_eq!(().into_handler_result(), Ok(()));
        let r: Result<(), String> = Err("bad".into());
        assert_eq!(r.into_handler_result().unwrap_err().message(), "bad");
        let r: Result<(), HandlerError> = Err(HandlerError::halt("stop"));
        assert!(r.into_handler_result().unwrap_err().is_halt());
        let r: Result<(), std::io::Error> = Err(std::io::Error::other("disk"));
        assert_eq!(r.into_handler_result().unwrap_err().to_string(), "disk");
        let error = SinkError::new(SinkErrorKind::Timeout, "no acknowledgement in 5s");
        let r: Result<(), HandlerError> = Err(HandlerError::not_recorded(&error));
        let e = r.into_handler_result().unwrap_err();
        assert!(e.is_not_recorded() && !e.is_halt());
        assert_eq!(e.to_string(), "not recorded: no acknowledgement in 5s");
        assert_eq!(e.not_recorded_kind(), Some(SinkErrorKind::Timeout));
    }
}
