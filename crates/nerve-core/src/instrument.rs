//! Instruments: how tracing bridges see what a bus does, without the bus
//! knowing any tracing system.
//!
//! A bus calls its [`Instrument`] at two moments:
//!
//! 1. At emit, on the emitting thread: [`prepare`](Instrument::prepare)
//!    before the event is numbered (it may record the current trace context
//!    on the event, or give it a correlation id), then
//!    [`emitted`](Instrument::emitted) once it is accepted (a span event, a
//!    field on the current span).
//! 2. Around every delivery, on whichever thread or task runs the handler:
//!    [`handle`](Instrument::handle) opens a [`HandleScope`] before the
//!    handler starts, the bus runs the handler (and, for an async handler,
//!    every poll of its future) inside [`HandleScope::in_scope`], and closes
//!    the scope with the outcome. A delivery that runs in one call (a sync
//!    handler) goes through [`deliver`](Instrument::deliver) instead, whose
//!    default does the same and which an instrument may override to keep
//!    its state on the stack.
//!
//! The OpenTelemetry and `tracing` bridges of the `nerve-otel` crate
//! implement it; a bus without instruments pays one branch per emit and per
//! delivery.
//!
//! ```
//! use std::sync::atomic::{AtomicUsize, Ordering};
//! use nerve::Event;
//! use nerve::instrument::{DeliveryOutcome, HandleScope, HandlerInfo, Instrument};
//!
//! /// Counts deliveries that did not succeed.
//! #[derive(Default)]
//! struct Failures(std::sync::Arc<AtomicUsize>);
//!
//! struct Scope(std::sync::Arc<AtomicUsize>);
//!
//! impl HandleScope for Scope {
//!     fn in_scope(&self, f: &mut dyn FnMut()) {
//!         f()
//!     }
//!     fn finish(self: Box<Self>, outcome: &DeliveryOutcome<'_>) {
//!         if !outcome.is_success() {
//!             self.0.fetch_add(1, Ordering::Relaxed);
//!         }
//!     }
//! }
//!
//! impl Instrument for Failures {
//!     fn handle(&self, _: &Event, _: &HandlerInfo<'_>) -> Option<Box<dyn HandleScope>> {
//!         Some(Box::new(Scope(self.0.clone())))
//!     }
//! }
//! ```

use std::sync::Arc;
use std::time::Duration;

use crate::Event;

/// What a bus tells a tracing bridge. See the [module docs](self).
///
/// Every method has a default that does nothing, so an instrument implements
/// only what it needs. Methods are called on hot paths: an instrument that
/// has nothing to do should return quickly (and `None` from
/// [`handle`](Self::handle)).
pub trait Instrument: Send + Sync + 'static {
    /// Called at emit, on the emitting thread, after the event's explicit
    /// and ambient correlation are applied and before a bus-generated
    /// correlation id or a sequence number is. Returns the event to emit:
    /// the same one, or one with trace context or a correlation id added.
    ///
    /// An instrument must not change the event's type, id or payload.
    fn prepare(&self, event: Event) -> Event {
        event
    }

    /// Called at emit, on the emitting thread, once the bus accepted the
    /// event (it has its sequence number and correlation id), before any
    /// handler runs.
    fn emitted(&self, event: &Event) {
        let _ = event;
    }

    /// Called as one delivery of `event` starts, on the thread or task that
    /// runs the handler; `None` when there is nothing to do around it.
    fn handle(&self, event: &Event, handler: &HandlerInfo<'_>) -> Option<Box<dyn HandleScope>> {
        let _ = (event, handler);
        None
    }

    /// Runs a delivery that completes in one call (every sync handler,
    /// inline or queued) around `run`, on the thread that runs the handler.
    /// `run` calls the handler, then the [`Report`] it is given with how the
    /// handler ended; an instrument calls `run` exactly once.
    ///
    /// The default opens a scope with [`handle`](Self::handle), runs `run`
    /// with [`HandleScope::in_scope_once`] and closes the scope with
    /// [`HandleScope::finish`]. An instrument overrides it to keep the
    /// delivery's state on the stack instead of in a boxed scope (the
    /// OpenTelemetry bridge does: one allocation and two dynamic calls less
    /// per delivery).
    fn deliver(&self, event: &Event, handler: &HandlerInfo<'_>, run: Run<'_>) {
        let Some(mut scope) = self.handle(event, handler) else {
            run(&mut |_| {});
            return;
        };
        let mut outcome = None;
        scope.in_scope_once(&mut || run(&mut |o| outcome = Some(OwnedOutcome::from(o))));
        let outcome = OwnedOutcome::reported(outcome);
        scope.finish(&outcome.as_delivery());
    }
}

/// A sync delivery, as [`Instrument::deliver`] is given it: runs the
/// handler, then reports the outcome.
pub type Run<'a> = &'a mut dyn FnMut(Report<'_>);

/// Takes the outcome of a sync delivery (see [`Instrument::deliver`]),
/// while the instrument's context is still current.
pub type Report<'a> = &'a mut dyn FnMut(&DeliveryOutcome<'_>);

/// What a scope is closed with when the delivery never reported.
const NOT_REPORTED: &str = "the delivery reported no outcome";

/// A [`DeliveryOutcome`] that outlives the delivery (the error text is
/// copied, for the failures only).
enum OwnedOutcome {
    Delivered,
    Failed(String),
    Halted(String),
    Panicked(String),
    TimedOut(Duration),
}

impl From<&DeliveryOutcome<'_>> for OwnedOutcome {
    fn from(o: &DeliveryOutcome<'_>) -> Self {
        match *o {
            DeliveryOutcome::Delivered => Self::Delivered,
            DeliveryOutcome::Failed(e) => Self::Failed(e.to_owned()),
            DeliveryOutcome::Halted(e) => Self::Halted(e.to_owned()),
            DeliveryOutcome::Panicked(e) => Self::Panicked(e.to_owned()),
            DeliveryOutcome::TimedOut(d) => Self::TimedOut(d),
        }
    }
}

impl OwnedOutcome {
    /// The outcome a delivery reported, or a failure saying it reported none.
    fn reported(outcome: Option<Self>) -> Self {
        outcome.unwrap_or_else(|| Self::Failed(NOT_REPORTED.to_owned()))
    }

    fn as_delivery(&self) -> DeliveryOutcome<'_> {
        match self {
            Self::Delivered => DeliveryOutcome::Delivered,
            Self::Failed(e) => DeliveryOutcome::Failed(e),
            Self::Halted(e) => DeliveryOutcome::Halted(e),
            Self::Panicked(e) => DeliveryOutcome::Panicked(e),
            Self::TimedOut(d) => DeliveryOutcome::TimedOut(*d),
        }
    }
}

impl<I: Instrument + ?Sized> Instrument for Arc<I> {
    fn prepare(&self, event: Event) -> Event {
        (**self).prepare(event)
    }

    fn emitted(&self, event: &Event) {
        (**self).emitted(event);
    }

    fn handle(&self, event: &Event, handler: &HandlerInfo<'_>) -> Option<Box<dyn HandleScope>> {
        (**self).handle(event, handler)
    }

    fn deliver(&self, event: &Event, handler: &HandlerInfo<'_>, run: Run<'_>) {
        (**self).deliver(event, handler, run);
    }
}

/// One delivery in progress, opened by [`Instrument::handle`].
pub trait HandleScope: Send + Sync {
    /// Runs `f` (the handler call, or one poll of its future) with this
    /// delivery's context current on this thread.
    fn in_scope(&self, f: &mut dyn FnMut());

    /// [`in_scope`](Self::in_scope) for a delivery that runs in one call
    /// (a sync handler): the bus calls this once, then
    /// [`finish`](Self::finish), so a scope may hand its context over
    /// instead of copying it. The default calls `in_scope`.
    fn in_scope_once(&mut self, f: &mut dyn FnMut()) {
        self.in_scope(f);
    }

    /// Ends the delivery with its outcome.
    fn finish(self: Box<Self>, outcome: &DeliveryOutcome<'_>);
}

/// The subscription a delivery goes to.
#[derive(Debug, Clone, Copy)]
#[non_exhaustive]
pub struct HandlerInfo<'a> {
    /// The subscription's id (unique within its bus).
    pub subscription_id: u64,
    /// The subscription's name, when it was given one.
    pub name: Option<&'a str>,
    /// How the handler runs.
    pub mode: HandlerMode,
}

impl<'a> HandlerInfo<'a> {
    /// The description of one subscription.
    pub fn new(subscription_id: u64, name: Option<&'a str>, mode: HandlerMode) -> Self {
        Self {
            subscription_id,
            name,
            mode,
        }
    }
}

/// How a handler runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandlerMode {
    /// A sync handler called on the emitting thread.
    Inline,
    /// A sync handler on its own worker thread, fed by a queue.
    Queued,
    /// An async handler on a task, fed by a queue.
    Async,
}

impl HandlerMode {
    /// `inline`, `queued` or `async`.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Inline => "inline",
            Self::Queued => "queued",
            Self::Async => "async",
        }
    }
}

/// How a delivery ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum DeliveryOutcome<'a> {
    /// The handler succeeded.
    Delivered,
    /// The handler returned an error.
    Failed(&'a str),
    /// The handler asked to halt the emit (a deliberate stop, with a reason).
    Halted(&'a str),
    /// The handler panicked (the panic message).
    Panicked(&'a str),
    /// The handler ran past its timeout.
    TimedOut(Duration),
}

impl DeliveryOutcome<'_> {
    /// `delivered`, `failed`, `halted`, `panicked` or `timed_out`: the
    /// outcome names the bus uses in its metrics and dead letters.
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Delivered => "delivered",
            Self::Failed(_) => "failed",
            Self::Halted(_) => "halted",
            Self::Panicked(_) => "panicked",
            Self::TimedOut(_) => "timed_out",
        }
    }

    /// Whether the handler succeeded.
    pub fn is_success(&self) -> bool {
        matches!(self, Self::Delivered)
    }

    /// What went wrong, for every outcome but success.
    pub fn error(&self) -> Option<String> {
        match self {
            Self::Delivered => None,
            Self::Failed(e) | Self::Halted(e) | Self::Panicked(e) => Some((*e).to_owned()),
            Self::TimedOut(d) => Some(format!("timed out after {d:?}")),
        }
    }
}

/// Several instruments as one, called in the order given; scopes nest
/// (the first instrument's scope is the outermost).
#[derive(Default, Clone)]
pub struct Instruments(Vec<Arc<dyn Instrument>>);

impl std::fmt::Debug for Instruments {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Instruments")
            .field("len", &self.0.len())
            .finish()
    }
}

impl Instruments {
    /// No instruments.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `instrument`, innermost.
    pub fn push(&mut self, instrument: Arc<dyn Instrument>) {
        self.0.push(instrument);
    }

    /// How many instruments there are.
    pub fn len(&self) -> usize {
        self.0.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl FromIterator<Arc<dyn Instrument>> for Instruments {
    fn from_iter<T: IntoIterator<Item = Arc<dyn Instrument>>>(iter: T) -> Self {
        Self(iter.into_iter().collect())
    }
}

impl Instrument for Instruments {
    fn prepare(&self, mut event: Event) -> Event {
        for i in &self.0 {
            event = i.prepare(event);
        }
        event
    }

    fn emitted(&self, event: &Event) {
        for i in &self.0 {
            i.emitted(event);
        }
    }

    fn handle(&self, event: &Event, handler: &HandlerInfo<'_>) -> Option<Box<dyn HandleScope>> {
        let scopes: Vec<_> = self
            .0
            .iter()
            .filter_map(|i| i.handle(event, handler))
            .collect();
        match scopes.len() {
            0 => None,
            _ => Some(Box::new(Nested(scopes))),
        }
    }

    fn deliver(&self, event: &Event, handler: &HandlerInfo<'_>, run: Run<'_>) {
        deliver_nested(&self.0, event, handler, run);
    }
}

/// `instruments[0]` delivers around `instruments[1]`, and so on; the
/// outcome reaches the innermost first, and each outer instrument once the
/// inner ones have closed, as scopes close.
fn deliver_nested(
    instruments: &[Arc<dyn Instrument>],
    event: &Event,
    handler: &HandlerInfo<'_>,
    run: Run<'_>,
) {
    match instruments.split_first() {
        None => run(&mut |_| {}),
        Some((only, [])) => only.deliver(event, handler, run),
        Some((outer, inner)) => outer.deliver(event, handler, &mut |report_outer| {
            let mut outcome = None;
            deliver_nested(inner, event, handler, &mut |report_inner| {
                run(&mut |o| {
                    report_inner(o);
                    outcome = Some(OwnedOutcome::from(o));
                });
            });
            let outcome = OwnedOutcome::reported(outcome);
            report_outer(&outcome.as_delivery());
        }),
    }
}

struct Nested(Vec<Box<dyn HandleScope>>);

impl Nested {
    fn run(scopes: &[Box<dyn HandleScope>], f: &mut dyn FnMut()) {
        match scopes.split_first() {
            None => f(),
            Some((outer, inner)) => outer.in_scope(&mut || Self::run(inner, f)),
        }
    }
}

impl HandleScope for Nested {
    fn in_scope(&self, f: &mut dyn FnMut()) {
        Self::run(&self.0, f);
    }

    fn finish(self: Box<Self>, outcome: &DeliveryOutcome<'_>) {
        // Innermost first, as scopes close.
        for scope in self.0.into_iter().rev() {
            scope.finish(outcome);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Log(Arc<Mutex<Vec<String>>>, &'static str);

    struct LogScope(Arc<Mutex<Vec<String>>>, &'static str);

    impl HandleScope for LogScope {
        fn in_scope(&self, f: &mut dyn FnMut()) {
            self.0.lock().unwrap().push(format!("{} in", self.1));
            f();
            self.0.lock().unwrap().push(format!("{} out", self.1));
        }
        fn finish(self: Box<Self>, outcome: &DeliveryOutcome<'_>) {
            self.0
                .lock()
                .unwrap()
                .push(format!("{} {}", self.1, outcome.as_str()));
        }
    }

    impl Instrument for Log {
        fn handle(&self, _: &Event, _: &HandlerInfo<'_>) -> Option<Box<dyn HandleScope>> {
            Some(Box::new(LogScope(self.0.clone(), self.1)))
        }
    }

    #[test]
    fn scopes_nest_and_close_innermost_first() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut all = Instruments::new();
        all.push(Arc::new(Log(log.clone(), "a")));
        all.push(Arc::new(Log(log.clone(), "b")));
        let event = Event::new("x.y", 1).unwrap();
        let scope = all
            .handle(&event, &HandlerInfo::new(1, None, HandlerMode::Inline))
            .unwrap();
        scope.in_scope(&mut || log.lock().unwrap().push("call".into()));
        scope.finish(&DeliveryOutcome::Failed("no"));
        assert_eq!(
            *log.lock().unwrap(),
            [
                "a in", "b in", "call", "b out", "a out", "b failed", "a failed"
            ]
        );
    }

    /// Overrides `deliver`: its state on the stack, no scope.
    struct StackLog(Arc<Mutex<Vec<String>>>, &'static str);

    impl Instrument for StackLog {
        fn deliver(&self, _: &Event, _: &HandlerInfo<'_>, run: Run<'_>) {
            self.0.lock().unwrap().push(format!("{} in", self.1));
            run(&mut |outcome| {
                self.0
                    .lock()
                    .unwrap()
                    .push(format!("{} {}", self.1, outcome.as_str()));
            });
            self.0.lock().unwrap().push(format!("{} out", self.1));
        }
    }

    /// Delivers through `instrument` as a bus does: the call, then the
    /// report.
    fn deliver(
        instrument: &dyn Instrument,
        log: &Arc<Mutex<Vec<String>>>,
        outcome: DeliveryOutcome<'_>,
    ) {
        let event = Event::new("x.y", 1).unwrap();
        let info = HandlerInfo::new(1, None, HandlerMode::Inline);
        let mut calls = 0;
        instrument.deliver(&event, &info, &mut |report| {
            calls += 1;
            log.lock().unwrap().push("call".into());
            report(&outcome);
        });
        assert_eq!(calls, 1, "deliver runs the delivery exactly once");
    }

    #[test]
    fn deliver_defaults_to_a_scope_closed_with_the_reported_outcome() {
        let log = Arc::new(Mutex::new(Vec::new()));
        deliver(
            &Log(log.clone(), "a"),
            &log,
            DeliveryOutcome::Panicked("boom"),
        );
        assert_eq!(
            *log.lock().unwrap(),
            ["a in", "call", "a out", "a panicked"]
        );
    }

    #[test]
    fn delivering_through_several_instruments_nests_and_reports_innermost_first() {
        let log = Arc::new(Mutex::new(Vec::new()));
        let mut all = Instruments::new();
        all.push(Arc::new(StackLog(log.clone(), "a")));
        all.push(Arc::new(Log(log.clone(), "b")));
        all.push(Arc::new(StackLog(log.clone(), "c")));
        deliver(&all, &log, DeliveryOutcome::Failed("no"));
        assert_eq!(
            *log.lock().unwrap(),
            [
                "a in", "b in", "c in", "call", "c failed", "c out", "b out", "b failed",
                "a failed", "a out"
            ]
        );
        // No instruments at all: the delivery still runs, once.
        log.lock().unwrap().clear();
        deliver(&Instruments::new(), &log, DeliveryOutcome::Delivered);
        assert_eq!(*log.lock().unwrap(), ["call"]);
    }

    #[test]
    fn outcomes_name_themselves() {
        assert_eq!(DeliveryOutcome::Delivered.error(), None);
        assert_eq!(
            DeliveryOutcome::TimedOut(Duration::from_millis(5))
                .error()
                .unwrap(),
            "timed out after 5ms"
        );
        assert!(!DeliveryOutcome::Panicked("boom").is_success());
    }
}
