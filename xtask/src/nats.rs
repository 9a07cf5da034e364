//! `cargo xtask nats`: the heavy NATS tests in full. CI runs the same tests
//! bounded (a few thousand events, one kill, well under a minute); this
//! runs the three-node JetStream cluster failover with more events and
//! more kills, sizes taken from the environment when set.

use anyhow::Result;

use crate::cargo::Cargo;

/// The usage line of the command.
pub(crate) const USAGE: &str =
    "  nats      Run the NATS cluster failover test in full (needs Debian's nats-server;
            NERVE_NATS_CLUSTER_EVENTS, default 50000; NERVE_NATS_CLUSTER_KILLS, default 4)\n";

/// The full sizes, when the environment does not set them.
const FULL: [(&str, &str); 2] = [
    ("NERVE_NATS_CLUSTER_EVENTS", "50000"),
    ("NERVE_NATS_CLUSTER_KILLS", "4"),
];

/// Runs the command.
///
/// # Errors
///
/// When the tests fail (or `nats-server` is missing and `CI` is set).
pub(crate) fn run() -> Result<()> {
    let mut cargo = Cargo::new([
        "test",
        "-p",
        "nerve-nats",
        "--release",
        "--test",
        "bridge",
        "--",
        "cluster::",
        "--nocapture",
    ]);
    for (key, value) in FULL {
        let value = std::env::var(key).unwrap_or_else(|_| value.to_owned());
        println!("xtask: {key}={value}");
        cargo = cargo.env(key, value);
    }
    cargo.run()
}
