//! `cargo xtask deny`: the dependency graph against `deny.toml` with
//! cargo-deny: `licenses` (only the licenses `deny.toml` allows) and `bans`
//! (duplicate versions of a crate, each exception written down there).
//!
//! `advisories` needs the RustSec database, fetched over the network from
//! outside the package registries; when it cannot be fetched (or
//! `CARGO_NET_OFFLINE` is set) the check is skipped with a warning naming
//! what was not checked, never silently.

use anyhow::{Result, bail};

use crate::cargo::Cargo;
use crate::release::offline;

/// Runs cargo-deny's checks.
///
/// # Errors
///
/// When cargo-deny is not installed or a check fails.
pub(crate) fn check() -> Result<()> {
    if !Cargo::new(["deny", "--version"]).succeeds_quietly() {
        bail!(
            "cargo-deny is not installed: `cargo install cargo-deny --locked` \
             (.ci/run installs it)"
        );
    }
    Cargo::new(["deny", "--workspace", "check", "bans", "licenses"]).run()?;
    if offline() {
        println!("xtask: WARNING: SKIPPED cargo deny check advisories: CARGO_NET_OFFLINE is set");
        return Ok(());
    }
    if !Cargo::new(["deny", "fetch", "db"]).succeeds_quietly() {
        println!(
            "xtask: WARNING: SKIPPED cargo deny check advisories: the advisory database \
             could not be fetched (offline?); known vulnerabilities are NOT checked"
        );
        return Ok(());
    }
    Cargo::new([
        "deny",
        "--workspace",
        "check",
        "--disable-fetch",
        "advisories",
    ])
    .run()
}
