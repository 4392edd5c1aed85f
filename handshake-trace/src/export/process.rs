//! The agent's own CPU time and resident memory, from /proc/self.

/// What /proc/self says of the agent.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Usage {
    pub cpu_seconds: f64,
    pub rss_bytes: u64,
}

/// glibc's allocator, for a process that runs for weeks: a fixed mmap threshold (glibc
/// raises its own each time a large block is freed, after which large buffers come from
/// the heap and pin it), so large buffers go back to the system when freed.
pub fn tune_allocator() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator parameters.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 << 10);
    }
}

/// Give the heap's free pages back to the system (glibc keeps them otherwise: after a
/// burst the resident size stays at its high-water mark). Once a second.
pub fn release_free_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only returns free memory to the system.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Take scheduling niceness `nice`. The agent runs on one thread (tokio's current-thread
/// runtime), and on Linux the niceness is the calling thread's: this is the whole agent.
pub fn set_nice(nice: i32) -> std::io::Result<()> {
    // SAFETY: setpriority only changes a scheduling attribute of this thread.
    let r = unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// Read /proc/self/stat and /proc/self/statm; None when either is unreadable.
pub fn read() -> Option<Usage> {
    // SAFETY: sysconf has no memory preconditions.
    let (ticks, page) = unsafe { (libc::sysconf(libc::_SC_CLK_TCK), libc::sysconf(libc::_SC_PAGESIZE)) };
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    parse(&stat, &statm, ticks.max(1) as u64, page.max(1) as u64)
}

/// utime + stime (fields 14 and 15 of stat, after the command name) and resident pages
/// (field 2 of statm).
fn parse(stat: &str, statm: &str, ticks_per_s: u64, page_bytes: u64) -> Option<Usage> {
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state): utime is field 14, stime field 15.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    let resident: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(Usage { cpu_seconds: (utime + stime) as f64 / ticks_per_s as f64, rss_bytes: resident * page_bytes })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_and_rss_from_proc_self() {
        let stat = "4242 (handshake (x) t) S 1 4242 4242 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 3 0 100 0 0";
        let u = parse(stat, "5000 1200 300 10 0 900 0\n", 100, 4096).unwrap();
        assert_eq!(u, Usage { cpu_seconds: 3.0, rss_bytes: 1200 * 4096 });
        assert!(parse("garbage", "1 2", 100, 4096).is_none());
        let live = read().expect("this process's /proc/self");
        assert!(live.rss_bytes > 0);
    }
}

/// Open files the agent asks for at most (its soft limit is raised to the hard limit,
/// but no further than this).
pub const MAX_OPEN_FILES: u64 = 65_536;

/// Raise the soft limit of open files toward the hard limit (bounded by
/// [`MAX_OPEN_FILES`]; never lowered): the default soft 1024 is shared by the kernel
/// programs' maps and links, /proc reads and the HTTP server's connections. The soft
/// limit now.
pub fn raise_open_files_limit() -> std::io::Result<u64> {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we own.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    let want = lim.rlim_max.min(MAX_OPEN_FILES);
    if lim.rlim_cur >= want {
        return Ok(lim.rlim_cur);
    }
    let raised = libc::rlimit { rlim_cur: want, rlim_max: lim.rlim_max };
    // SAFETY: setrlimit reads the struct we own; raising the soft limit up to the hard one needs no privilege.
    if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(want)
}

#[cfg(test)]
mod open_files_tests {
    #[test]
    fn the_soft_limit_of_open_files_is_raised_to_the_hard_one_within_the_bound() {
        let now = super::raise_open_files_limit().unwrap();
        let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        // SAFETY: getrlimit writes into the struct we own.
        assert_eq!(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) }, 0);
        assert_eq!(lim.rlim_cur, now);
        assert!(now >= lim.rlim_max.min(super::MAX_OPEN_FILES), "{now} of {}", lim.rlim_max);
    }
}
