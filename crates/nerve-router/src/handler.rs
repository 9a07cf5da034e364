//! Handlers: what a subscription runs for each event, and how it reports.

use std::any::Any;
use std::fmt;
use std::future::Future;
use std::sync::Arc;

use futures::future::BoxFuture;
use nerve_core::Event;

/// A handler failed, or asks the emitter to stop.
///
/// Handlers return `()` or `Result<(), E>` for any `E: Display`; an error
/// that is not a `HandlerError` is turned into one with its message. Return
/// [`HandlerError::halt`] to make `emit` return
/// [`EmitError::Halted`](crate::EmitError::Halted).
///
/// ```
/// use nerve::HandlerError;
/// let e = HandlerError::halt("early validation failed: 0% success rate after 5 specimens");
/// assert!(e.is_halt());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HandlerError {
    halt: bool,
    message: String,
}

impl HandlerError {
    /// A failure with this message.
    pub fn new(message: impl fmt::Display) -> Self {
        Self {
            halt: false,
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
            halt: true,
            message: reason.to_string(),
        }
    }

    /// Whether this is a halt request rather than a failure.
    pub fn is_halt(&self) -> bool {
        self.halt
    }

    /// The message or halt reason.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for HandlerError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.halt {
            write!(f, "halt: {}", self.message)
        } else {
            f.write_str(&self.message)
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
    }
}
