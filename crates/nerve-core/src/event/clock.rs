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

/// The text form the journal writes, `YYYY-MM-DDTHH:MM:SS.ffffffZ`: its
/// second (the first 20 bytes) and its microseconds.
fn split_written_form(s: &str) -> Option<(&[u8], i64)> {
    let b = s.as_bytes();
    if b.len() != 27 || b[19] != b'.' || b[26] != b'Z' {
        return None;
    }
    let mut frac = 0;
    for &d in &b[20..26] {
        if !d.is_ascii_digit() {
            return None;
        }
        frac = frac * 10 + i64::from(d - b'0');
    }
    Some((&b[..20], frac))
}

thread_local! {
    /// The second of the last timestamp chrono parsed on this thread, as
    /// text, and its start in microseconds (`None` until one is parsed):
    /// the events of a journal or a stream of messages mostly share their
    /// second with the one before, so the second's text is compared
    /// rather than parsed again (the mirror of the writer's cache in
    /// `nerve-journal`'s `format.rs`).
    static LAST_SECOND: std::cell::Cell<Option<(i64, [u8; 20])>> =
        const { std::cell::Cell::new(None) };
}

/// Microseconds since the epoch of `s`, if it is in the written form and
/// in the second chrono parsed last on this thread.
#[inline]
pub(super) fn parse_same_second(s: &str) -> Option<i64> {
    let (second, frac) = split_written_form(s)?;
    let (start, text) = LAST_SECOND.get()?;
    (second == text).then_some(start + frac)
}

/// Keeps the second of `s`, which chrono parsed as `micros`. Every text of
/// that second in the written form is then `start + its microseconds`, as
/// chrono would say (a leap second's too: chrono counts it as 1 to 2
/// seconds past the 59th).
pub(super) fn remember_second(s: &str, micros: i64) {
    if let Some((second, frac)) = split_written_form(s) {
        let mut text = [0; 20];
        text.copy_from_slice(second);
        LAST_SECOND.set(Some((micros - frac, text)));
    }
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

    use proptest::prelude::*;

    use super::now_micros;
    use crate::Timestamp;

    /// What chrono alone says of `s`.
    fn chrono_micros(s: &str) -> Option<i64> {
        chrono::DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|d| d.timestamp_micros())
    }

    #[test]
    fn a_timestamp_of_the_same_second_reads_as_chrono_reads_it() {
        for (first, then) in [
            ("2026-12-06T04:30:17.123456Z", "2026-12-06T04:30:17.999999Z"),
            ("2026-12-06T04:30:17.123456Z", "2026-12-06T04:30:17.000000Z"),
            // A leap second: chrono counts it past the 59th.
            ("2016-12-31T23:59:60.250000Z", "2016-12-31T23:59:60.750000Z"),
            ("1969-12-31T23:59:59.500000Z", "1969-12-31T23:59:59.000001Z"),
            ("0001-01-01T00:00:00.000000Z", "0001-01-01T00:00:00.999999Z"),
        ] {
            assert_eq!(
                Timestamp::parse_rfc3339(first).ok().map(|t| t.as_micros()),
                chrono_micros(first)
            );
            assert_eq!(
                super::parse_same_second(then),
                chrono_micros(then),
                "{then} after {first}"
            );
            assert_eq!(
                Timestamp::parse_rfc3339(then).ok().map(|t| t.as_micros()),
                chrono_micros(then)
            );
        }
        // Another form or another second goes to chrono.
        Timestamp::parse_rfc3339("2026-12-06T04:30:17.123456Z").unwrap();
        for other in [
            "2026-12-06T04:30:18.123456Z",
            "2026-12-06T04:30:17.123456z",
            "2026-12-06T04:30:17.1234567Z",
            "2026-12-06T04:30:17.12345xZ",
            "2026-12-06T04:30:17.123+00:00",
            "2026-12-06t04:30:17.123456Z",
        ] {
            assert_eq!(super::parse_same_second(other), None, "{other}");
        }
    }

    proptest! {
        /// Whatever chrono parsed last, a text that reads through the
        /// cache reads as chrono reads it, and one chrono refuses is
        /// refused.
        #[test]
        fn the_second_cache_agrees_with_chrono(
            first in "[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):[0-5][0-9]:([0-5][0-9]|60)\\.[0-9]{6}Z",
            fraction in "[0-9]{6}",
            junk in "[0-9.:TZ+-]{0,3}",
        ) {
            let then = format!("{}{fraction}Z", &first[..20]);
            prop_assert_eq!(
                Timestamp::parse_rfc3339(&first).ok().map(|t| t.as_micros()),
                chrono_micros(&first)
            );
            prop_assert_eq!(
                Timestamp::parse_rfc3339(&then).ok().map(|t| t.as_micros()),
                chrono_micros(&then)
            );
            let odd = format!("{}{junk}", &first[..20]);
            prop_assert_eq!(
                Timestamp::parse_rfc3339(&odd).ok().map(|t| t.as_micros()),
                chrono_micros(&odd)
            );
        }
    }

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
