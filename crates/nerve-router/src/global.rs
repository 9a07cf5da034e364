//! The process-wide bus.

use std::sync::OnceLock;

use crate::bus::Bus;

/// A process-wide bus with the default settings, created on first use.
///
/// Libraries should take a `Bus` from their caller instead; the global bus
/// is for applications that want one without passing it around.
///
/// ```
/// let a = nerve::global();
/// let b = nerve::global();
/// a.emit("app.started", nerve::json!({}))?;
/// assert!(b.stats().events.emitted >= 1);
/// # Ok::<(), nerve::EmitError>(())
/// ```
pub fn global() -> &'static Bus {
    static GLOBAL: OnceLock<Bus> = OnceLock::new();
    GLOBAL.get_or_init(Bus::new)
}
