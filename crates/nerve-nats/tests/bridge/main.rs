//! The bridge against real `nats-server` processes (see `support`).

mod cluster;
mod durable;
mod durable_processes;
mod durable_restart;
mod halt;
mod limits;
mod not_recorded;
mod plain_thread;
mod processes;
mod restart;
mod stats;
mod support;
mod trace;
mod two_buses;

use std::time::Duration;

use nerve::{Bus, Event, EventStream};

/// Collects `n` events from `stream`, failing after a generous `limit`.
pub(crate) async fn collect(stream: &mut EventStream, n: usize, limit: Duration) -> Vec<Event> {
    try_collect(stream, n, limit)
        .await
        .unwrap_or_else(|got| panic!("only {} of {n} events within {limit:?}", got.len()))
}

/// Collects `n` events from `stream`; what arrived within `limit` as the
/// error when it was fewer.
pub(crate) async fn try_collect(
    stream: &mut EventStream,
    n: usize,
    limit: Duration,
) -> Result<Vec<Event>, Vec<Event>> {
    use futures::StreamExt;
    let mut got = Vec::with_capacity(n);
    let deadline = tokio::time::Instant::now() + limit;
    while got.len() < n {
        match tokio::time::timeout_at(deadline, stream.next()).await {
            Ok(Some(e)) => got.push(e),
            Ok(None) => break,
            Err(_) => return Err(got),
        }
    }
    Ok(got)
}

/// This test binary, run again as a child process that runs the one test
/// `name` (`module::test`, a no-op unless its environment says otherwise).
pub(crate) fn rerun(name: &str) -> std::process::Command {
    let mut command = std::process::Command::new(std::env::current_exe().unwrap());
    command
        .args([name, "--exact", "--nocapture", "--test-threads=1"])
        .stdin(std::process::Stdio::null());
    command
}

/// The runtime of a child process: two workers, as a small service has.
pub(crate) fn child_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// A bus whose history keeps nothing: these tests count through streams.
pub(crate) fn bus() -> Bus {
    Bus::builder().history_capacity(0).build().unwrap()
}

/// Waits until `done` holds, failing after a generous `limit`. A bridge
/// counts an import once the local emit returned, which is after the
/// bus's streams have the event: a test that saw the event reads the
/// counter through this, not at once.
pub(crate) async fn eventually(limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + limit;
    while !done() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "not within {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}
