//! The errors of the consumers, one type per operation.

use nerve_core::PatternError;
use nerve_router::SubscribeError;

/// A consumer or a sink could not be built from its builder's settings.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// A pattern is invalid.
    #[error(transparent)]
    Pattern(#[from] PatternError),
    /// A threshold or rate is outside `0.0..=1.0`.
    #[error("{option} must be between 0 and 1, got {value}")]
    OutOfRange {
        /// The option.
        option: &'static str,
        /// The value given.
        value: f64,
    },
    /// A count or duration that must be positive is zero.
    #[error("{option} must be greater than zero")]
    Zero {
        /// The option.
        option: &'static str,
    },
    /// A required setting was not given.
    #[error("{option} is required")]
    Missing {
        /// The option.
        option: &'static str,
    },
    /// A setting could not be used as given: an address, a URL, a host.
    #[error("invalid {option} {value:?}: {reason}")]
    Invalid {
        /// The option.
        option: &'static str,
        /// The value given.
        value: String,
        /// Why it is invalid.
        reason: String,
    },
}

/// A consumer could not attach to a bus.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum AttachError {
    /// The bus refused the subscription.
    #[error(transparent)]
    Subscribe(#[from] SubscribeError),
    /// The consumer runs background work on tokio, and neither its builder
    /// was given a runtime handle nor was `attach` called inside a runtime.
    /// (No consumer of this crate needs one now: the alert consumer runs a
    /// thread of its own.)
    #[error(
        "no tokio runtime: attach inside a runtime or give the builder one with .runtime(handle)"
    )]
    NoRuntime,
    /// The alert consumer's delivery thread, or its runtime, could not be
    /// started.
    #[error("could not start the alert delivery thread")]
    Worker(#[source] std::io::Error),
}
