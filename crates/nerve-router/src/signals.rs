//! Ending a run cleanly on Ctrl-C or a scheduler's stop: SIGINT and SIGTERM.
//!
//! Off by default. [`install`] starts a thread that, on the first SIGINT or
//! SIGTERM:
//!
//! 1. stops the bus accepting events, waits for the events it had
//!    accepted to be recorded (an emit under way on another thread is
//!    either refused or written before), then emits a terminal
//!    `system.interrupted` event naming the signal
//!    (`{"signal":"SIGTERM","number":15,"exit_status":143}`) as its last
//!    event ([`Bus::shutdown_with`]): the journal has it on disk, after
//!    everything else, before anything more happens (terminal events are
//!    durable), and alert consumers deliver every pending alert (a terminal
//!    event is their barrier);
//! 2. finishes the shutdown as [`Bus::shutdown_blocking`] does: queued
//!    deliveries get up to the shutdown timeout, then the journal is flushed
//!    and closed;
//! 3. exits the process with the conventional status, 128 + the signal's
//!    number: 130 for SIGINT, 143 for SIGTERM.
//!
//! A second SIGINT or SIGTERM while that runs exits at once with the same
//! status, as a second Ctrl-C does in most programs.
//!
//! Dropping the returned [`SignalHandler`] restores the previous behaviour
//! (the process's default: terminate). The handler holds the bus weakly, so
//! it never keeps it open; if the bus is gone when a signal arrives, the
//! process just exits with the status.
//!
//! ```no_run
//! use nerve::{Bus, signals};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let bus = Bus::new();
//! let _signals = signals::install(&bus)?;
//! bus.emit("extraction.started", nerve::json!({"run_id": "extraction_001"}))?;
//! // ... Ctrl-C here records `system.interrupted`, flushes, exits with 130.
//! # Ok(()) }
//! ```
//!
//! Unix only (Linux, macOS, the BSDs).

use std::io;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::thread::JoinHandle;

use nerve_core::Event;
use serde_json::json;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook::iterator::{Handle, Signals};
use signal_hook::{SigId, flag, low_level};

use crate::bus::{Bus, WeakBus};

/// Actions emulating the default, registered when a handler is dropped.
static RESTORED_DEFAULTS: std::sync::Mutex<Vec<SigId>> = std::sync::Mutex::new(Vec::new());

/// The event emitted when a signal interrupts the program.
pub const INTERRUPTED: &str = "system.interrupted";

/// Handles SIGINT and SIGTERM for one bus until dropped. Made by [`install`].
#[must_use = "signals are handled only while the handler is kept"]
#[derive(Debug)]
pub struct SignalHandler {
    handle: Handle,
    thread: Option<JoinHandle<()>>,
    second: Vec<SigId>,
}

/// Handles SIGINT and SIGTERM as the [module docs](self) say, for `bus`.
///
/// If a tokio runtime is current when this is called, the event is emitted
/// inside it, so async handlers of `system.interrupted` can run.
///
/// # Errors
///
/// The I/O error if the signal handlers could not be registered or the
/// thread could not be started.
pub fn install(bus: &Bus) -> io::Result<SignalHandler> {
    // A handler dropped earlier left the default action emulated; ours
    // come back in its place.
    unregister(&std::mem::take(
        &mut *RESTORED_DEFAULTS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner),
    ));
    let armed = Arc::new(AtomicBool::new(false));
    let mut second = Vec::new();
    for signal in [SIGINT, SIGTERM] {
        // Registered first, so that the first signal finds the flag unset;
        // the `register` below then sets it, and a second signal exits.
        second.push(flag::register_conditional_shutdown(
            signal,
            128 + signal,
            armed.clone(),
        )?);
        second.push(flag::register(signal, armed.clone())?);
    }
    let mut signals = match Signals::new([SIGINT, SIGTERM]) {
        Ok(s) => s,
        Err(e) => {
            unregister(&second);
            return Err(e);
        }
    };
    let handle = signals.handle();
    let bus = bus.downgrade();
    let runtime = tokio::runtime::Handle::try_current().ok();
    let thread = std::thread::Builder::new()
        .name("nerve-signals".into())
        .spawn(move || {
            if let Some(signal) = signals.forever().next() {
                interrupted(&bus, runtime.as_ref(), signal);
            }
        });
    match thread {
        Ok(thread) => Ok(SignalHandler {
            handle,
            thread: Some(thread),
            second,
        }),
        Err(e) => {
            handle.close();
            unregister(&second);
            Err(e)
        }
    }
}

/// Records the signal, shuts the bus down and exits.
fn interrupted(bus: &WeakBus, runtime: Option<&tokio::runtime::Handle>, signal: i32) {
    let status = 128 + signal;
    let name = low_level::signal_name(signal).unwrap_or("signal");
    if let Some(bus) = bus.upgrade() {
        tracing::warn!(signal = name, "interrupted; shutting the bus down");
        let event = Event::builder(INTERRUPTED)
            .data(json!({"signal": name, "number": signal, "exit_status": status}))
            .source("nerve")
            .terminal()
            .build()
            .expect("a valid event");
        let report = bus.shutdown_with_in(event, runtime);
        if !report.drained {
            tracing::warn!(
                abandoned = report.abandoned,
                "interrupted before the queues drained"
            );
        }
    }
    std::process::exit(status);
}

fn unregister(ids: &[SigId]) {
    for id in ids {
        low_level::unregister(*id);
    }
}

impl Drop for SignalHandler {
    fn drop(&mut self) {
        unregister(&self.second);
        self.handle.close();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        // The registry's handler stays installed, doing nothing once its
        // actions are gone: a signal would be ignored. Emulate the default
        // (terminate) instead.
        let mut restored = RESTORED_DEFAULTS
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        for signal in [SIGINT, SIGTERM] {
            match flag::register_conditional_default(signal, Arc::new(AtomicBool::new(true))) {
                Ok(id) => restored.push(id),
                Err(e) => tracing::warn!(error = %e, "could not restore the default signal action"),
            }
        }
    }
}
