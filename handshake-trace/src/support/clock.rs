//! Converting the kernel's monotonic timestamps into wall-clock time for display.
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Wall clock = monotonic + offset, measured once at start.
#[derive(Debug, Clone, Copy)]
pub struct Clock {
    offset_ns: i128,
}

impl Clock {
    pub fn now() -> Self {
        let mono = monotonic_ns() as i128;
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_nanos() as i128;
        Self { offset_ns: wall - mono }
    }

    /// A clock whose wall time equals the monotonic time plus `offset_ns` (tests, recorded traces).
    pub fn with_offset(offset_ns: i128) -> Self {
        Self { offset_ns }
    }

    /// Wall clock minus monotonic clock, in ns (recorded in trace files).
    pub fn offset_ns(&self) -> i128 {
        self.offset_ns
    }

    /// The wall time of a monotonic timestamp, clamped to what a SystemTime from
    /// `u64` nanoseconds holds (a crafted trace file's offset wraps nothing).
    pub fn wall(&self, mono_ns: u64) -> SystemTime {
        let ns = (mono_ns as i128).saturating_add(self.offset_ns).clamp(0, i128::from(u64::MAX));
        UNIX_EPOCH + Duration::from_nanos(ns as u64)
    }
}

/// CLOCK_MONOTONIC in ns, the clock of `bpf_ktime_get_ns()`.
pub fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: valid pointer to a timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Local time of `t` and its milliseconds.
fn local(t: SystemTime) -> (libc::tm, u32) {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as libc::time_t;
    // SAFETY: libc::tm is plain old data: all zeroes is a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers; localtime_r is thread-safe.
    unsafe { libc::localtime_r(&secs, &mut tm) };
    (tm, d.subsec_millis())
}

/// "HH:MM:SS.mmm" in local time.
pub fn format_time_of_day(t: SystemTime) -> String {
    let (tm, ms) = local(t);
    format!("{:02}:{:02}:{:02}.{ms:03}", tm.tm_hour, tm.tm_min, tm.tm_sec)
}

/// "YYYY-MM-DD HH:MM:SS.mmm" in local time (`--date`).
pub fn format_date_time(t: SystemTime) -> String {
    let (tm, ms) = local(t);
    format!("{:04}-{:02}-{:02} {:02}:{:02}:{:02}.{ms:03}", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec)
}

/// RFC 3339 in UTC with microseconds, for JSON.
pub fn format_rfc3339(t: SystemTime) -> String {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    let secs = d.as_secs() as libc::time_t;
    // SAFETY: libc::tm is plain old data: all zeroes is a valid value.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    // SAFETY: valid pointers; gmtime_r is thread-safe.
    unsafe { libc::gmtime_r(&secs, &mut tm) };
    format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z",
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        d.subsec_micros()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_of_a_known_instant() {
        let c = Clock::with_offset(1_700_000_000_000_000_000);
        assert_eq!(format_rfc3339(c.wall(123_456_000)), "2023-11-14T22:13:20.123456Z");
    }

    #[test]
    fn an_offset_out_of_range_clamps_instead_of_wrapping() {
        let past_the_end = Clock::with_offset(i128::MAX);
        assert_eq!(past_the_end.wall(u64::MAX), UNIX_EPOCH + Duration::from_nanos(u64::MAX));
        let before_the_epoch = Clock::with_offset(i128::MIN);
        assert_eq!(before_the_epoch.wall(5), UNIX_EPOCH);
        // Just past u64::MAX ns: not wrapped to a time near 1970.
        let just_past = Clock::with_offset(1);
        assert_eq!(just_past.wall(u64::MAX), UNIX_EPOCH + Duration::from_nanos(u64::MAX));
    }

    #[test]
    fn monotonic_moves_forward() {
        let a = monotonic_ns();
        let b = monotonic_ns();
        assert!(b >= a && a > 0);
    }
}
