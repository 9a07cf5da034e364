//! Promises of `docs/reliability.md` that no other test checked: async
//! handlers under every overflow policy, a process aborted right after its
//! terminal event, what each fsync policy has made durable when the power
//! could go (through a file system that records every write and sync),
//! and lines of several megabytes.
//!
//! Some tests run this binary again as a child process; the child's entry
//! points are ordinary `#[test]`s that do nothing unless `NERVE_PROMISE` is
//! set.

mod delivery;
mod exits;
mod lines;
mod power;
mod restart;

use std::time::Duration;

/// A generous bound for waits that should take milliseconds.
pub(crate) const WAIT: Duration = Duration::from_secs(30);

/// Whether `seqs` is strictly increasing.
pub(crate) fn strictly_increasing(seqs: &[u64]) -> bool {
    seqs.windows(2).all(|w| w[0] < w[1])
}
