//! Running work in a new span.

use std::borrow::Cow;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context as TaskContext, Poll};

use opentelemetry::Context;
use opentelemetry::global;
use opentelemetry::trace::{TraceContextExt, Tracer};

const TRACER: &str = "nerve";

/// Runs `f` inside a new span `name` (a child of the current span), made
/// current while `f` runs and ended when it returns. Events emitted inside
/// carry the span's trace context.
///
/// Uses the global tracer provider; with none installed it only runs `f`.
///
/// ```
/// let n = nerve::otel::traced("load config", || 40 + 2);
/// assert_eq!(n, 42);
/// ```
pub fn traced<T>(name: impl Into<Cow<'static, str>>, f: impl FnOnce() -> T) -> T {
    global::tracer(TRACER).in_span(name, |_| f())
}

/// Runs `future` inside a new span `name` (a child of the span current when
/// `traced_async` is called), current during every poll and ended when the
/// future completes (or when it is dropped unfinished).
///
/// ```
/// # let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
/// # rt.block_on(async {
/// let n = nerve::otel::traced_async("fetch", async { 42 }).await;
/// assert_eq!(n, 42);
/// # });
/// ```
pub fn traced_async<F: Future>(name: impl Into<Cow<'static, str>>, future: F) -> Traced<F> {
    let tracer = global::tracer(TRACER);
    let span = tracer.start_with_context(name, &Context::current());
    Traced {
        inner: future,
        cx: Some(Context::current_with_span(span)),
    }
}

pin_project_lite::pin_project! {
    /// A future running inside a span; made by [`traced_async`].
    #[must_use = "futures do nothing unless polled"]
    pub struct Traced<F> {
        #[pin]
        inner: F,
        cx: Option<Context>,
    }
}

impl<F: Future> Future for Traced<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, task: &mut TaskContext<'_>) -> Poll<F::Output> {
        let this = self.project();
        let Some(cx) = this.cx.as_ref() else {
            // Polled after completion: the inner future decides.
            return this.inner.poll(task);
        };
        let poll = {
            let _guard = cx.clone().attach();
            this.inner.poll(task)
        };
        if poll.is_ready() {
            if let Some(cx) = this.cx.take() {
                cx.span().end();
            }
        }
        poll
    }
}

impl<F> std::fmt::Debug for Traced<F> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Traced").finish_non_exhaustive()
    }
}
