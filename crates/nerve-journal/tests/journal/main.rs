//! Integration tests of the journal.
