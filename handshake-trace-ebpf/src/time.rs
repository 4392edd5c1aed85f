//! Times syscalls take (`struct timespec`, `timeval`, `itimerval`, `itimerspec`), in
//! milliseconds, as the records carry them.
use crate::read;

/// A wait without a timeout.
pub const NO_TIMEOUT: u64 = u64::MAX;
pub const MS_PER_S: u64 = 1000;
pub const US_PER_MS: u64 = 1000;
pub const NS_PER_MS: u64 = 1_000_000;

/// Seconds and a sub-second part (`per_ms` of them to a millisecond) in milliseconds.
#[inline(always)]
fn ms(sec: i64, sub: i64, per_ms: u64) -> u64 {
    (sec as u64) * MS_PER_S + (sub as u64) / per_ms
}

/// A wait's timeout: a `{ seconds, sub-second }` pair at `ptr` (a timespec: `per_ms`
/// NS_PER_MS; a timeval: US_PER_MS) in milliseconds; NULL waits forever.
#[inline(always)]
pub fn timeout_ms(ptr: u64, per_ms: u64) -> u64 {
    if ptr == 0 {
        return NO_TIMEOUT;
    }
    match read::user::<[i64; 2]>(ptr) {
        Ok([s, sub]) => ms(s, sub, per_ms),
        Err(_) => NO_TIMEOUT,
    }
}

/// A timer's `{ {interval}, {value} }` at `ptr` (an itimerval: `per_ms` US_PER_MS; an
/// itimerspec: NS_PER_MS): `it_value` in milliseconds, 0 for NULL.
#[inline(always)]
pub fn it_value_ms(ptr: u64, per_ms: u64) -> u64 {
    match read::user::<[i64; 4]>(ptr) {
        Ok(v) if ptr != 0 => ms(v[2], v[3], per_ms),
        _ => 0,
    }
}
