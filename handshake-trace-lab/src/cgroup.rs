//! A throwaway cgroup v2 directory, as a service manager gives each service: the tests
//! and the benchmark run MariaDB in one (as production does) with its clients outside,
//! so the socket tier's packet programs attach there and not on the root.
use std::{
    ffi::CString,
    io::Write,
    os::unix::process::CommandExt,
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use anyhow::{Context, Result};

/// A cgroup directory under the cgroup2 mount, removed on drop (once its processes are
/// gone: stop them first).
#[derive(Debug)]
pub struct Cgroup {
    dir: PathBuf,
}

impl Cgroup {
    /// Make `<cgroup2 mount>/handshake-trace-<name>-<pid>-<nanos>`.
    pub fn create(name: &str) -> Result<Self> {
        let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?.subsec_nanos();
        let mount = handshake_trace::capture::cgroup::cgroup2_root()?;
        Self::make(mount.join(format!("handshake-trace-{name}-{}-{nanos}", std::process::id())))
    }

    /// Make `name` inside this one (drop it first).
    pub fn child(&self, name: &str) -> Result<Self> {
        Self::make(self.dir.join(name))
    }

    fn make(dir: PathBuf) -> Result<Self> {
        std::fs::create_dir(&dir).with_context(|| format!("create cgroup {}", dir.display()))?;
        Ok(Self { dir })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Its path as /proc/PID/cgroup shows it ("/handshake-trace-…").
    pub fn path(&self) -> String {
        let mount = handshake_trace::capture::cgroup::cgroup2_root().unwrap_or_default();
        format!("/{}", self.dir.strip_prefix(&mount).unwrap_or(&self.dir).display())
    }

    /// Move process `pid` (all its threads) into this cgroup.
    pub fn add(&self, pid: u32) -> Result<()> {
        let procs = self.dir.join("cgroup.procs");
        let mut f = std::fs::OpenOptions::new().write(true).open(&procs).with_context(|| format!("open {}", procs.display()))?;
        f.write_all(pid.to_string().as_bytes()).with_context(|| format!("move pid {pid} into {}", self.dir.display()))
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        // A process that just exited may still count for a moment.
        let deadline = Instant::now() + Duration::from_secs(5);
        while std::fs::remove_dir(&self.dir).is_err() && self.dir.exists() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Make `cmd`'s child join cgroup directory `dir` before it execs (as a service
/// manager starts a service): every socket it opens belongs to that cgroup.
pub fn spawn_into(cmd: &mut Command, dir: &Path) -> Result<()> {
    let procs = CString::new(dir.join("cgroup.procs").into_os_string().into_encoded_bytes()).context("cgroup path with a NUL")?;
    // SAFETY: the closure runs in the child between fork and exec and calls only
    // async-signal-safe functions (open, write, close) on memory prepared before fork.
    unsafe {
        cmd.pre_exec(move || {
            let fd = libc::open(procs.as_ptr(), libc::O_WRONLY | libc::O_CLOEXEC);
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // "0": the writing process itself.
            let ok = libc::write(fd, b"0".as_ptr().cast(), 1) == 1;
            let err = std::io::Error::last_os_error();
            libc::close(fd);
            if ok {
                Ok(())
            } else {
                Err(err)
            }
        })
    };
    Ok(())
}
