//! Where a bus records what it accepts: the contract between the routing
//! engine and persistence.
//!
//! A bus built with a sink (`BusBuilder::journal`) calls
//! [`EventSink::record`] once for every event it accepts, after the guards
//! passed and the event was numbered, before any handler sees it, on the
//! emitting thread. The JSONL journal (`nerve-journal`) is the sink nerve
//! ships; the trait lives here so that the router and the journal, siblings,
//! both depend on it rather than on each other.
//!
//! Faults that happen after `record` returned (a background writer hitting a
//! full disk, a payload that could not be serialized) are reported through
//! the [`FaultReporter`] the bus installs with [`EventSink::attach`]. The bus
//! counts every fault, publishes it as a `system.journal_error` event and, if
//! a dead letter queue is attached, records the event there. Events of type
//! `system.journal_error` are not recorded in the sink that failed.
//!
//! # Example
//!
//! A sink that keeps events in memory:
//!
//! ```
//! use std::sync::Mutex;
//! use std::time::Duration;
//! use nerve::sink::{EventSink, SinkError};
//! use nerve::Event;
//!
//! #[derive(Default)]
//! struct Memory(Mutex<Vec<Event>>);
//!
//! impl EventSink for Memory {
//!     fn record(&self, event: &Event) -> Result<(), SinkError> {
//!         self.0.lock().unwrap().push(event.clone());
//!         Ok(())
//!     }
//!     fn flush(&self, _timeout: Duration) -> Result<(), SinkError> {
//!         Ok(())
//!     }
//! }
//!
//! let sink = Memory::default();
//! sink.record(&Event::builder("user.login").build()?)?;
//! assert_eq!(sink.0.lock().unwrap().len(), 1);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use crate::Event;
use crate::query::HistoryQuery;

/// A rewrite of an event before it leaves the process: a sink's redaction
/// hook ([`EventSink::redaction`]), which keeps what may be written down of
/// an event (its payload, source and correlation id) and drops the rest.
pub type Redaction = Arc<dyn Fn(&Event) -> Event + Send + Sync>;

/// Records every event a bus accepts. See the [module docs](self).
///
/// Implementations are called from any thread, concurrently, on the emit
/// path: `record` should hand the event off and return, except where the
/// sink's durability policy promises more (a journal with `Fsync::Always`
/// returns once the event is synced).
pub trait EventSink: Send + Sync + 'static {
    /// Records one accepted event.
    ///
    /// # Errors
    ///
    /// A [`SinkError`] when the event could not be taken. The bus counts it,
    /// publishes `system.journal_error`, dead-letters the event if it can,
    /// and still delivers the event to handlers.
    fn record(&self, event: &Event) -> Result<(), SinkError>;

    /// Records one accepted event and returns only once it, and everything
    /// recorded before it, is written where it survives the process: handed
    /// to the operating system, so that `std::process::exit` or SIGKILL right
    /// after cannot lose it (and synced too where the sink's durability
    /// policy says so). The bus calls this instead of [`record`](Self::record)
    /// for its *durable* events (by default its terminal events:
    /// `*.completed`, `*.failed`, ...), so a program may emit its last event
    /// and exit at once.
    ///
    /// The wait should be cheap (a hand-off and an acknowledgement, no sync
    /// unless the policy asks for one) and bounded: an implementation that
    /// cannot confirm the write in reasonable time fails with
    /// [`SinkErrorKind::Timeout`].
    ///
    /// The default records, then [`flush`](Self::flush)es with a 5 s limit.
    ///
    /// # Errors
    ///
    /// As [`record`](Self::record), plus the write error or
    /// [`SinkErrorKind::Timeout`] when the write could not be confirmed.
    fn record_and_wait(&self, event: &Event) -> Result<(), SinkError> {
        self.record(event)?;
        self.flush(Duration::from_secs(5))
    }

    /// The highest `seq` the sink already holds from before this bus was
    /// built (a journal reopened after an earlier run), or `None`. A bus
    /// built with the sink numbers its first event one more than this, so
    /// runs appended to one journal form one unbroken sequence.
    fn last_seq(&self) -> Option<u64> {
        None
    }

    /// Waits until everything recorded so far is written, at most `timeout`.
    ///
    /// # Errors
    ///
    /// [`SinkErrorKind::Timeout`] if the wait ran out, or the write error.
    fn flush(&self, timeout: Duration) -> Result<(), SinkError>;

    /// Flushes and stops taking events; later `record` calls fail with
    /// [`SinkErrorKind::Closed`]. Called by the bus's `shutdown`. Idempotent.
    ///
    /// # Errors
    ///
    /// As [`flush`](Self::flush).
    fn close(&self, timeout: Duration) -> Result<(), SinkError> {
        self.flush(timeout)
    }

    /// Reads recorded events back, for `Bus::events`.
    ///
    /// # Errors
    ///
    /// [`SinkErrorKind::Unsupported`] by default; read errors otherwise.
    fn query(&self, query: &HistoryQuery) -> Result<Vec<Event>, SinkError> {
        let _ = query;
        Err(SinkError::new(
            SinkErrorKind::Unsupported,
            "this sink cannot be queried",
        ))
    }

    /// Called once by the bus the sink is attached to, with the reporter of
    /// faults that happen after `record` returned.
    fn attach(&self, reporter: FaultReporter) {
        let _ = reporter;
    }

    /// The rewrite this sink applies to every event before writing it (a
    /// journal's redaction hook), if any. A NATS bridge on the bus applies
    /// it to its exports too (`Bus::redaction`), so what is redacted on
    /// disk is redacted on the wire. `None` by default.
    fn redaction(&self) -> Option<Redaction> {
        None
    }
}

impl<S: EventSink + ?Sized> EventSink for Arc<S> {
    fn record(&self, event: &Event) -> Result<(), SinkError> {
        (**self).record(event)
    }
    fn record_and_wait(&self, event: &Event) -> Result<(), SinkError> {
        (**self).record_and_wait(event)
    }
    fn last_seq(&self) -> Option<u64> {
        (**self).last_seq()
    }
    fn flush(&self, timeout: Duration) -> Result<(), SinkError> {
        (**self).flush(timeout)
    }
    fn close(&self, timeout: Duration) -> Result<(), SinkError> {
        (**self).close(timeout)
    }
    fn query(&self, query: &HistoryQuery) -> Result<Vec<Event>, SinkError> {
        (**self).query(query)
    }
    fn attach(&self, reporter: FaultReporter) {
        (**self).attach(reporter);
    }
    fn redaction(&self) -> Option<Redaction> {
        (**self).redaction()
    }
}

/// What kind of failure a [`SinkError`] or [`SinkFault`] is. Serialized as
/// [`as_str`](Self::as_str) says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SinkErrorKind {
    /// Reading or writing failed (disk full, permissions, EIO).
    Io,
    /// The event's payload could not be serialized.
    Serialize,
    /// The sink's queue was full and its policy is to drop.
    Full,
    /// The sink was closed.
    Closed,
    /// A flush did not finish in time.
    Timeout,
    /// The sink does not support the operation.
    Unsupported,
}

impl SinkErrorKind {
    /// The kind as a metric label or JSON field: `io`, `serialize`, `full`,
    /// `closed`, `timeout`, `unsupported`.
    pub fn as_str(self) -> &'static str {
        match self {
            SinkErrorKind::Io => "io",
            SinkErrorKind::Serialize => "serialize",
            SinkErrorKind::Full => "full",
            SinkErrorKind::Closed => "closed",
            SinkErrorKind::Timeout => "timeout",
            SinkErrorKind::Unsupported => "unsupported",
        }
    }
}

/// A sink operation failed.
#[derive(Debug)]
pub struct SinkError {
    kind: SinkErrorKind,
    message: String,
    source: Option<Box<dyn std::error::Error + Send + Sync>>,
}

impl SinkError {
    /// An error of this kind with this message.
    pub fn new(kind: SinkErrorKind, message: impl Into<String>) -> Self {
        Self {
            kind,
            message: message.into(),
            source: None,
        }
    }

    /// An error of this kind caused by `source`.
    pub fn with_source(
        kind: SinkErrorKind,
        message: impl Into<String>,
        source: impl std::error::Error + Send + Sync + 'static,
    ) -> Self {
        Self {
            kind,
            message: message.into(),
            source: Some(Box::new(source)),
        }
    }

    /// What kind of failure this is.
    pub fn kind(&self) -> SinkErrorKind {
        self.kind
    }

    /// What went wrong.
    pub fn message(&self) -> &str {
        &self.message
    }
}

impl fmt::Display for SinkError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for SinkError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        self.source
            .as_deref()
            .map(|e| e as &(dyn std::error::Error + 'static))
    }
}

/// A fault a sink found after `record` returned: a background write failed,
/// or an event could not be written as it was.
#[derive(Debug, Clone)]
pub struct SinkFault {
    /// What kind of failure.
    pub kind: SinkErrorKind,
    /// What went wrong, for people.
    pub message: String,
    /// The event concerned, when there is one (a payload that could not be
    /// serialized, a write that lost this event).
    pub event: Option<Event>,
}

/// Receives a sink's [`SinkFault`]s; installed by the bus with
/// [`EventSink::attach`]. Cheap to clone.
#[derive(Clone)]
pub struct FaultReporter(Arc<dyn Fn(SinkFault) + Send + Sync>);

impl FaultReporter {
    /// A reporter that calls `f` for every fault.
    pub fn new(f: impl Fn(SinkFault) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// Reports one fault.
    pub fn report(&self, fault: SinkFault) {
        (self.0)(fault);
    }
}

impl fmt::Debug for FaultReporter {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("FaultReporter(..)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Nothing;
    impl EventSink for Nothing {
        fn record(&self, _: &Event) -> Result<(), SinkError> {
            Ok(())
        }
        fn flush(&self, _: Duration) -> Result<(), SinkError> {
            Ok(())
        }
    }

    #[test]
    fn defaults_say_what_they_do_not_support() {
        let sink: Arc<dyn EventSink> = Arc::new(Nothing);
        let err = sink.query(&HistoryQuery::new()).unwrap_err();
        assert_eq!(err.kind(), SinkErrorKind::Unsupported);
        assert!(sink.close(Duration::from_secs(1)).is_ok());
    }

    #[test]
    fn reporter_forwards_faults_and_errors_keep_their_source() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        let reporter = FaultReporter::new(move |f| log.lock().unwrap().push(f.kind));
        reporter.report(SinkFault {
            kind: SinkErrorKind::Io,
            message: "disk full".into(),
            event: None,
        });
        assert_eq!(*seen.lock().unwrap(), [SinkErrorKind::Io]);

        let io = std::io::Error::other("no space left on device");
        let err = SinkError::with_source(SinkErrorKind::Io, "could not append", io);
        assert_eq!(err.to_string(), "could not append");
        assert!(std::error::Error::source(&err).is_some());
        assert_eq!(SinkErrorKind::Serialize.as_str(), "serialize");
    }
}
