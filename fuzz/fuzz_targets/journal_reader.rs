//! The journal reader on arbitrary bytes as a journal file: no panic, no
//! I/O error, `valid + bad + torn == lines read`, each item at its line.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;

#[path = "../../crates/nerve-journal/tests/fuzz/check.rs"]
#[allow(dead_code, reason = "the test's helpers this target does not use")]
mod check;

/// One directory for the whole run; each input overwrites the file.
fn path() -> &'static PathBuf {
    static DIR: OnceLock<(tempfile::TempDir, PathBuf)> = OnceLock::new();
    let (_, path) = DIR.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("events.jsonl");
        (dir, path)
    });
    path
}

fuzz_target!(|data: &[u8]| {
    check::check(path(), data);
});
