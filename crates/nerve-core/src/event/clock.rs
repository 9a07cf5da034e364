//! The wall clock, read once per event.
//!
//! On Linux the clock is read through `rustix`'s libc backend, which calls
//! libc's `clock_gettime` (the kernel's vDSO) and nothing more;
//! `SystemTime::now` then normalises a `Duration` against the epoch, about
//! 40 % more a read (see `docs/benchmarks.md`, "The event's clock").
//! rustix's own backend, as fast, finds the vDSO itself in a way that
//! crashes every program run under valgrind (bytecodealliance/rustix#1559),
//! so the workspace asks for `use-libc`. Elsewhere, std.

/// Microseconds since the Unix epoch, negative before it, saturating.
#[inline]
pub(super) fn now_micros() -> i64 {
    imp::now_micros()
}

#[cfg(target_os = "linux")]
mod imp {
    #[inline]
    pub(super) fn now_micros() -> i64 {
        let t = rustix::time::clock_gettime(rustix::time::ClockId::Realtime);
        // `tv_nsec` is in 0..1e9 and `tv_sec` is the floor, before the
        // epoch too, so this is the floor in microseconds.
        t.tv_sec
            .saturating_mul(1_000_000)
            .saturating_add(t.tv_nsec / 1000)
    }
}

#[cfg(not(target_os = "linux"))]
mod imp {
    #[inline]
    pub(super) fn now_micros() -> i64 {
        match std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH) {
            // In 64 bits: `as_micros` multiplies in 128.
            Ok(d) => i64::try_from(d.as_secs())
                .ok()
                .and_then(|secs| secs.checked_mul(1_000_000))
                .map_or(i64::MAX, |m| m.saturating_add(i64::from(d.subsec_micros()))),
            Err(e) => -i64::try_from(e.duration().as_micros()).unwrap_or(i64::MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::{SystemTime, UNIX_EPOCH};

    use super::now_micros;

    #[test]
    fn reads_the_same_clock_as_std() {
        let before = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let ours = now_micros();
        let after = SystemTime::now().duration_since(UNIX_EPOCH).unwrap();
        let micros = |d: std::time::Duration| i64::try_from(d.as_micros()).unwrap();
        // Both std reads bracket ours (to the microsecond, which std's
        // reads are truncated to as well): the same clock, the same unit.
        assert!(micros(before) <= ours, "{before:?} > {ours}");
        assert!(ours <= micros(after), "{ours} > {after:?}");
    }
}
