//! The progress bar follows a run through its state, and, in a
//! pseudo-terminal, through what it draws. Needs the feature `progress`.
#![cfg(feature = "progress")]

use nerve_consumers::{ProgressConsumer, ValidationConsumer};
use nerve_router::Bus;
use serde_json::json;

#[test]
fn the_bar_follows_the_run() {
    let bus = Bus::new();
    let progress = ProgressConsumer::builder().hidden().build().unwrap();
    progress.attach(&bus).unwrap();
    assert!(progress.state().hidden);

    bus.emit(
        "extraction.started",
        json!({"run_id": "r", "total_specimens": 8}),
    )
    .unwrap();
    assert_eq!(progress.state().length, Some(8));
    for i in 0..4 {
        let t = if i == 0 {
            "specimen.failed"
        } else {
            "specimen.completed"
        };
        bus.emit(t, json!({})).unwrap();
    }
    bus.emit("specimen.processing", json!({})).unwrap();
    let state = progress.state();
    assert_eq!(state.position, 4);
    assert!(
        state.message.starts_with("75% ok, ETA "),
        "{}",
        state.message
    );
    assert!(!state.finished);

    bus.emit("extraction.completed", json!({"run_id": "r"}))
        .unwrap();
    assert!(progress.state().finished);

    // A new run starts the bar afresh; without a total it has no length.
    bus.emit("extraction.started", json!({"run_id": "r2"}))
        .unwrap();
    bus.emit("specimen.completed", json!({})).unwrap();
    let state = progress.state();
    assert_eq!((state.position, state.length), (1, None));
    assert_eq!(state.message, "100% ok");
}

#[test]
fn a_run_that_ends_early_is_left_where_it_stopped() {
    let bus = Bus::new();
    let progress = ProgressConsumer::builder().hidden().build().unwrap();
    progress.attach(&bus).unwrap();
    ValidationConsumer::builder()
        .build()
        .unwrap()
        .attach(&bus)
        .unwrap();

    let stopped_at = stop_at_the_checkpoint(&bus);
    assert_eq!(stopped_at, 5);
    let state = progress.state();
    assert_eq!((state.position, state.length), (5, Some(30)));
    assert!(state.finished);
    assert_eq!(state.stopped.as_deref(), Some(REASON));
    assert_eq!(state.message, format!("stopped: {REASON}"));

    // A run that does all its items is filled and not stopped.
    bus.emit("extraction.started", json!({"run_id": "r2", "total": 2}))
        .unwrap();
    bus.emit("specimen.completed", json!({})).unwrap();
    bus.emit("specimen.completed", json!({})).unwrap();
    bus.emit("extraction.completed", json!({"run_id": "r2"}))
        .unwrap();
    let state = progress.state();
    assert_eq!((state.position, state.length), (2, Some(2)));
    assert!(state.finished);
    assert_eq!(state.stopped, None);
    assert!(state.message.starts_with("100% ok"), "{}", state.message);
}

/// The reason the validation consumer halts the guide's run with.
const REASON: &str = "early validation failed: 0% success rate after 5 specimens";

/// The guide's run of 30 specimens that all fail, stopped by early
/// validation: returns the specimen at which `emit` was halted.
fn stop_at_the_checkpoint(bus: &Bus) -> u64 {
    bus.emit(
        "extraction.started",
        json!({"run_id": "extraction_001", "total_specimens": 30}),
    )
    .unwrap();
    let mut stopped = 0;
    for sequence in 1..=30 {
        bus.emit("specimen.processing", json!({"sequence": sequence}))
            .unwrap();
        if bus
            .emit("specimen.failed", json!({"sequence": sequence}))
            .is_err()
        {
            stopped = sequence;
            break;
        }
    }
    bus.emit(
        "extraction.failed",
        json!({"run_id": "extraction_001", "reason": "early_validation_failed"}),
    )
    .unwrap();
    stopped
}

/// Set in the environment of the child that draws the bar in a terminal.
const PTY_CHILD: &str = "NERVE_PROGRESS_PTY_CHILD";

/// The child's side of [`a_stopped_run_ends_at_its_position_in_a_terminal`]:
/// does nothing unless run as that child, with a pseudo-terminal as its
/// standard streams.
#[test]
fn pty_child() {
    if std::env::var_os(PTY_CHILD).is_none() {
        return;
    }
    let bus = Bus::new();
    let progress = ProgressConsumer::builder().build().unwrap();
    assert!(
        !progress.state().hidden,
        "standard output is not a terminal"
    );
    progress.attach(&bus).unwrap();
    ValidationConsumer::builder()
        .build()
        .unwrap()
        .attach(&bus)
        .unwrap();
    stop_at_the_checkpoint(&bus);
    // As the guide's script does: exit at once, with the bar as it is.
    std::process::exit(1);
}

#[test]
fn a_stopped_run_ends_at_its_position_in_a_terminal() {
    let output = pty::run_in_terminal(PTY_CHILD, "pty_child");
    let last = pty::last_frame(&output, "/30").unwrap_or_else(|| {
        panic!("no frame of the bar in {output:?}");
    });
    assert!(last.contains(" 5/30 "), "{last:?}");
    assert!(last.contains(&format!("stopped: {REASON}")), "{last:?}");
    assert!(last.contains("✗ ["), "{last:?}");
    // Never drawn full: the bar did not jump to the end.
    assert!(!output.contains("30/30"), "{output:?}");
}

mod pty {
    //! A child process of this test binary with a pseudo-terminal as its
    //! standard input, output and error.

    use std::fs::{File, OpenOptions};
    use std::io::Read;
    use std::process::{Command, Stdio};

    use rustix::pty::{OpenptFlags, grantpt, openpt, ptsname, unlockpt};
    use rustix::termios::{Winsize, tcsetwinsize};

    /// Runs test `name` of this binary as a child with `flag` set in its
    /// environment, in a 200-column terminal; returns all it wrote.
    pub(crate) fn run_in_terminal(flag: &str, name: &str) -> String {
        let master =
            openpt(OpenptFlags::RDWR | OpenptFlags::NOCTTY | OpenptFlags::CLOEXEC).unwrap();
        grantpt(&master).unwrap();
        unlockpt(&master).unwrap();
        let path = ptsname(&master, Vec::new()).unwrap();
        let slave = OpenOptions::new()
            .read(true)
            .write(true)
            .open(path.to_str().unwrap())
            .unwrap();
        tcsetwinsize(
            &slave,
            Winsize {
                ws_row: 40,
                ws_col: 200,
                ws_xpixel: 0,
                ws_ypixel: 0,
            },
        )
        .unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", name, "--nocapture", "--test-threads=1"])
            .env(flag, "1")
            .env("TERM", "xterm-256color")
            .env_remove("NO_COLOR")
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave))
            .spawn()
            .unwrap();
        // Read until the child and every copy of the terminal's other end
        // are gone: then Linux answers EIO, which is the end here.
        let mut master = File::from(master);
        let mut bytes = Vec::new();
        let mut buf = [0; 4096];
        loop {
            match master.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => bytes.extend_from_slice(&buf[..n]),
            }
        }
        let status = child.wait().unwrap();
        assert_eq!(
            status.code(),
            Some(1),
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The last line or redraw of `output` that contains `marker`, without
    /// its escape sequences.
    pub(crate) fn last_frame(output: &str, marker: &str) -> Option<String> {
        strip_escapes(output)
            .split(['\r', '\n'])
            .rfind(|frame| frame.contains(marker))
            .map(|frame| frame.trim().to_owned())
    }

    /// `text` without ANSI CSI sequences (`ESC [ ... final byte`).
    fn strip_escapes(text: &str) -> String {
        let mut out = String::with_capacity(text.len());
        let mut chars = text.chars().peekable();
        while let Some(c) = chars.next() {
            if c != '\u{1b}' {
                out.push(c);
                continue;
            }
            if chars.peek() == Some(&'[') {
                chars.next();
                for c in chars.by_ref() {
                    if ('@'..='~').contains(&c) {
                        break;
                    }
                }
            }
        }
        out
    }
}

/// What `nerve::signals` does on Ctrl-C: a terminal `system.interrupted`
/// as the bus's last event. The bar of the run in progress is left where it
/// was, with the signal as the reason, not as a running bar.
#[test]
fn a_run_interrupted_by_a_signal_is_left_where_it_stopped() {
    let bus = Bus::new();
    let progress = ProgressConsumer::builder().hidden().build().unwrap();
    progress.attach(&bus).unwrap();
    bus.emit(
        "extraction.started",
        json!({"run_id": "r", "total_specimens": 30}),
    )
    .unwrap();
    for _ in 0..3 {
        bus.emit("specimen.completed", json!({})).unwrap();
    }
    let interrupted = nerve_core::Event::builder("system.interrupted")
        .data(json!({"signal": "SIGINT", "number": 2, "exit_status": 130}))
        .terminal()
        .build()
        .unwrap();
    bus.shutdown_with(interrupted);
    let state = progress.state();
    assert_eq!((state.position, state.length), (3, Some(30)));
    assert_eq!(state.stopped.as_deref(), Some("interrupted (SIGINT)"));
    assert_eq!(state.message, "stopped: interrupted (SIGINT)");
}

/// A signal after the run ended leaves its bar as it was.
#[test]
fn a_signal_after_the_run_leaves_its_bar_alone() {
    let bus = Bus::new();
    let progress = ProgressConsumer::builder().hidden().build().unwrap();
    progress.attach(&bus).unwrap();
    bus.emit(
        "extraction.started",
        json!({"run_id": "r", "total_specimens": 1}),
    )
    .unwrap();
    bus.emit("specimen.completed", json!({})).unwrap();
    bus.emit("extraction.completed", json!({"run_id": "r"}))
        .unwrap();
    let interrupted = nerve_core::Event::builder("system.interrupted")
        .data(json!({"signal": "SIGTERM"}))
        .terminal()
        .build()
        .unwrap();
    bus.shutdown_with(interrupted);
    let state = progress.state();
    assert!(state.finished);
    assert_eq!(state.stopped, None);
}
