//! Redaction fixtures.
