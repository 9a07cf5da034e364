//! Event ids: UUIDv7s made from per-thread state, without a lock or a
//! cryptographic generator on the emitting path.
//!
//! The layout follows RFC 9562 §6.2, method 1 (a fixed-length dedicated
//! counter), as `uuid::ContextV7` does:
//!
//! | bits   | field       | content                                            |
//! |--------|-------------|----------------------------------------------------|
//! | 48     | unix_ts_ms  | the millisecond the event was made                 |
//! | 4      | ver         | 7                                                  |
//! | 12     | rand_a      | the top 12 bits of the counter                     |
//! | 2      | var         | `0b10`                                             |
//! | 30     | rand_b      | the low 30 bits of the counter                     |
//! | 32     | rand_b      | random, fresh for each id                          |
//!
//! The 42-bit counter is reseeded with 41 random bits (the top bit clear, so
//! at least 2^41 ids fit in a millisecond) whenever the clock moves on to a
//! later millisecond, and incremented for each further id in the same one. If
//! the clock steps back, the thread keeps its last millisecond and counts on,
//! so ids from one thread are strictly increasing whatever the clock does;
//! if the counter ever ran out (2^41 ids in one millisecond, far beyond what a
//! thread can make) the millisecond would advance by one, as `uuid` does.
//!
//! Uniqueness: one thread never repeats an id (its (millisecond, counter)
//! pairs strictly increase). Two threads, or two processes, make the same id
//! only if in the same millisecond their independently random-seeded counters
//! hit the same value and their 32 fresh random bits agree as well: for two
//! threads making `a` and `b` ids in one millisecond, at most about
//! `a * b / 2^41 / 2^32`, which is nil for any rate a machine can reach.
//!
//! The randomness is a per-thread wyrand generator (one multiply per id),
//! seeded once per thread from the operating system through `uuid`'s v4
//! generator. It is not meant to make ids unguessable: the time and counter
//! fields already make them predictable, as every UUIDv7 is.

use std::cell::Cell;

/// Bits of the counter: 12 in `rand_a`, 30 at the top of `rand_b`.
const COUNTER_BITS: u32 = 42;
/// The largest counter value.
const COUNTER_MAX: u64 = (1 << COUNTER_BITS) - 1;
/// The millisecond field's width.
const MS_MASK: u64 = (1 << 48) - 1;

/// A thread's generator.
#[derive(Clone, Copy)]
struct State {
    /// The millisecond of the thread's last id.
    ms: u64,
    /// The counter of the thread's last id.
    counter: u64,
    /// The wyrand state; 0 until seeded.
    rng: u64,
}

thread_local! {
    // A `Cell` of plain data with a const initializer: no lazy registration
    // and no destructor, so each access is a load from the thread block.
    static STATE: Cell<State> = const { Cell::new(State { ms: 0, counter: 0, rng: 0 }) };
}

/// A fresh UUIDv7 for an event made at `unix_ms` milliseconds after the
/// Unix epoch (see the module docs for when the id's millisecond is later).
#[inline]
pub(super) fn next(unix_ms: u64) -> uuid::Uuid {
    let unix_ms = unix_ms & MS_MASK;
    // The closure returns a `u128`, which travels in two registers.
    let bits = STATE.with(|cell| {
        let mut s = cell.get();
        if s.rng == 0 {
            s.rng = seed();
        }
        let random = wyrand(&mut s.rng);
        if unix_ms > s.ms {
            s.ms = unix_ms;
            s.counter = wyrand(&mut s.rng) >> (64 - (COUNTER_BITS - 1));
        } else if s.counter < COUNTER_MAX {
            s.counter += 1;
        } else {
            s.ms = (s.ms + 1) & MS_MASK;
            s.counter = wyrand(&mut s.rng) >> (64 - (COUNTER_BITS - 1));
        }
        cell.set(s);
        layout(s.ms, s.counter, random)
    });
    uuid::Uuid::from_u128(bits)
}

/// The id's bits: time, version, counter, variant, randomness.
#[inline]
fn layout(ms: u64, counter: u64, random: u64) -> u128 {
    (u128::from(ms) << 80)
        | (0x7 << 76)
        | (u128::from(counter >> 30) << 64)
        | (0b10 << 62)
        | (u128::from(counter & ((1 << 30) - 1)) << 32)
        | u128::from(random >> 32)
}

/// A non-zero wyrand state from the operating system's randomness.
fn seed() -> u64 {
    // Truncation keeps 64 of the v4 id's random bits.
    #[allow(clippy::cast_possible_truncation, reason = "the low 64 bits")]
    let bits = uuid::Uuid::new_v4().as_u128() as u64;
    bits | 1
}

/// wyrand: one step of a 64-bit generator that passes BigCrush and PractRand.
#[inline]
fn wyrand(state: &mut u64) -> u64 {
    *state = state.wrapping_add(0xa076_1d64_78bd_642f);
    let t = u128::from(*state) * u128::from(*state ^ 0xe703_7ed1_a0b4_28db);
    #[allow(clippy::cast_possible_truncation, reason = "folds the halves")]
    let folded = (t >> 64) as u64 ^ t as u64;
    folded
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms_of(id: uuid::Uuid) -> u64 {
        u64::try_from(id.as_u128() >> 80).unwrap()
    }

    #[test]
    fn version_and_variant() {
        for ms in [0, 1, 1_700_000_000_123, MS_MASK] {
            let id = next(ms);
            assert_eq!(id.get_version_num(), 7, "{id}");
            assert_eq!(id.get_variant(), uuid::Variant::RFC4122, "{id}");
        }
    }

    #[test]
    fn strictly_increasing_within_and_across_milliseconds() {
        let start = 1_800_000_000_000;
        let mut last = next(start);
        for i in 0..100_000_u64 {
            // Long runs in one millisecond, then the next one.
            let id = next(start + i / 10_000);
            assert!(id > last, "{last} then {id}");
            assert_eq!(ms_of(id), start + i / 10_000);
            last = id;
        }
    }

    #[test]
    fn a_clock_stepping_back_keeps_the_order() {
        let later = next(1_900_000_000_000);
        let earlier = next(1_899_999_999_000);
        assert!(earlier > later);
        assert_eq!(ms_of(earlier), 1_900_000_000_000);
    }

    #[test]
    fn an_exhausted_counter_advances_the_millisecond() {
        STATE.with(|cell| {
            let mut s = cell.get();
            s.ms = 1_950_000_000_000;
            s.counter = COUNTER_MAX;
            if s.rng == 0 {
                s.rng = seed();
            }
            cell.set(s);
        });
        let id = next(1_950_000_000_000);
        assert_eq!(ms_of(id), 1_950_000_000_001);
    }

    #[test]
    fn layout_places_each_field() {
        let id = layout(0x0123_4567_89ab, COUNTER_MAX, u64::MAX);
        assert_eq!(id >> 80, 0x0123_4567_89ab);
        assert_eq!((id >> 76) & 0xf, 7);
        assert_eq!((id >> 62) & 0b11, 0b10);
        assert_eq!(u64::try_from(id & 0xffff_ffff).unwrap(), 0xffff_ffff);
        let id = layout(0, 0, 0);
        assert_eq!(id, (0x7 << 76) | (0b10 << 62));
    }
}
