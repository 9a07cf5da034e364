//! `cargo xtask screenshot`: regenerates `docs/img/dashboard.png`, the
//! README's picture of the dashboard during `nerve demo --serve`.
//!
//! It runs the browser test that takes the screenshot (and checks it is not
//! blank) with `NERVE_DASHBOARD_SCREENSHOT` pointing at the picture, and
//! with `CI` set, so a machine without Chromium fails here instead of
//! skipping and leaving the old picture.

use anyhow::{Result, bail};

use crate::cargo::{Cargo, workspace_root};

/// The usage of `cargo xtask screenshot`, for the help.
pub(crate) const USAGE: &str =
    "  screenshot  Regenerate docs/img/dashboard.png: the dashboard during `nerve demo --serve`,
            in headless Chromium (needs Debian's chromium and chromium-driver)
";

/// The test that takes the picture.
const TEST: &str = "demo::the_demo_served_shows_both_runs_in_a_screenshot_that_is_not_blank";

/// Runs the command.
///
/// # Errors
///
/// When the test fails (no Chromium, a blank page) or the picture is not
/// written.
pub(crate) fn run() -> Result<()> {
    let path = workspace_root()
        .join("docs")
        .join("img")
        .join("dashboard.png");
    std::fs::create_dir_all(path.parent().expect("docs/img"))?;
    let before = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
    Cargo::new([
        "test",
        "-p",
        "nerve-cli",
        "--test",
        "browser",
        "--",
        TEST,
        "--exact",
        "--nocapture",
    ])
    .env("NERVE_DASHBOARD_SCREENSHOT", path.display().to_string())
    .env("CI", "1")
    .run()?;
    let after = std::fs::metadata(&path).and_then(|m| m.modified()).ok();
    if after.is_none() || after == before {
        bail!("the test passed but did not write {}", path.display());
    }
    println!("xtask: wrote {}", path.display());
    Ok(())
}
