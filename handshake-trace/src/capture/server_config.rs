//! A traced server's configuration, read from /proc as the server read it at start
//! (the rules are in `config/`): its command line and environment, and its option
//! files through its own root (`/proc/PID/root`, so a containerised server's files are
//! its own, symbolic links resolved inside that root with `openat2(RESOLVE_IN_ROOT)`).
//!
//! The tracer runs as root and the paths come from the server's command line, its
//! environment and its files: a local user must not be able to make it read what that
//! user could not. So a file is read only when it is a regular file of at most
//! [`MAX_FILE_BYTES`], and the server's own user could read it (its mode bits), or root
//! named it (a fixed default place, or an `!include` in a file only root can write),
//! or the server runs as root. Nothing of a file is ever printed but the values of
//! the four options and where they were (path and line, escaped by the printer).
use std::{
    ffi::CString,
    fs::File,
    io::Read,
    os::{fd::FromRawFd, unix::fs::MetadataExt},
};

use crate::config::{self, FileText, OptionSource, Overrides, Process, Refusal, ServerConfig};

/// An option file larger than this is not read.
pub const MAX_FILE_BYTES: u64 = 1 << 20;
/// Bytes of /proc/PID/cmdline and /proc/PID/environ read at most.
const MAX_PROC_BYTES: u64 = 256 << 10;
/// Bytes of the server's binary searched for its version, at most.
const MAX_EXE_BYTES: u64 = 512 << 20;

/// The server's configuration, read now; the flags on top. Never fails: what cannot be
/// read is the default (and the file's refusal is in `files`).
pub fn read(pid: u32, overrides: Overrides) -> ServerConfig {
    let creds = Creds::of(pid);
    let process = process(pid, creds.as_ref());
    let mut files = ProcFiles { pid, creds, root: open_root(pid) };
    config::resolve(&process, &mut files, overrides)
}

/// The server's major and minor version, from the option-group names compiled into
/// its binary (`mariadbd-10.11`): read, never executed (a process named mariadbd may be
/// anyone's program).
pub fn binary_version(pid: u32) -> Option<BinaryVersion> {
    let exe = File::open(format!("/proc/{pid}/exe")).ok()?;
    version_in(exe.take(MAX_EXE_BYTES))
}

/// Who the server runs as (its filesystem uid and gids).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Creds {
    uid: u32,
    gid: u32,
    groups: Vec<u32>,
}

impl Creds {
    fn of(pid: u32) -> Option<Creds> {
        parse_status(&std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?)
    }

    /// Could this user read a file with this owner and mode (its own permission bits)?
    fn may_read(&self, uid: u32, gid: u32, mode: u32) -> bool {
        if self.uid == 0 {
            return true;
        }
        if uid == self.uid {
            return mode & 0o400 != 0;
        }
        if gid == self.gid || self.groups.contains(&gid) {
            return mode & 0o040 != 0;
        }
        mode & 0o004 != 0
    }
}

/// The fs uid and gid (the fourth of each line) and the supplementary groups.
fn parse_status(status: &str) -> Option<Creds> {
    let field = |key: &str| status.lines().find_map(|l| l.strip_prefix(key)).map(|v| v.split_whitespace().collect::<Vec<_>>());
    let uid = field("Uid:")?.get(3)?.parse().ok()?;
    let gid = field("Gid:")?.get(3)?.parse().ok()?;
    let groups = field("Groups:").unwrap_or_default().iter().filter_map(|g| g.parse().ok()).collect();
    Some(Creds { uid, gid, groups })
}

/// argv and the few environment variables that move option files.
fn process(pid: u32, creds: Option<&Creds>) -> Process {
    let args = read_proc(&format!("/proc/{pid}/cmdline")).map(|b| nul_separated(&b)).unwrap_or_default();
    let env = read_proc(&format!("/proc/{pid}/environ")).map(|b| nul_separated(&b)).unwrap_or_default();
    let var = |name: &str| env.iter().find_map(|kv| kv.strip_prefix(name)?.strip_prefix('=')).filter(|v| !v.is_empty()).map(String::from);
    Process {
        args,
        home: var("HOME"),
        mariadb_home: var("MARIADB_HOME").or_else(|| var("MYSQL_HOME")),
        group_suffix: var("MYSQL_GROUP_SUFFIX"),
        runs_as_root: creds.is_some_and(|c| c.uid == 0),
    }
}

fn read_proc(path: &str) -> Option<Vec<u8>> {
    let mut buf = Vec::new();
    File::open(path).ok()?.take(MAX_PROC_BYTES).read_to_end(&mut buf).ok()?;
    Some(buf)
}

/// NUL-separated strings (argv, environ); bytes that are not UTF-8 replaced.
fn nul_separated(b: &[u8]) -> Vec<String> {
    b.split(|&c| c == 0).filter(|s| !s.is_empty()).map(|s| String::from_utf8_lossy(s).into_owned()).collect()
}

/// The server's root directory, to resolve its paths in.
fn open_root(pid: u32) -> Option<File> {
    File::open(format!("/proc/{pid}/root")).ok()
}

/// The server's files, through its root.
struct ProcFiles {
    pid: u32,
    creds: Option<Creds>,
    root: Option<File>,
}

impl ProcFiles {
    /// Open `path` inside the server's root: symbolic links resolve there (an absolute
    /// link cannot point out of a container), no magic /proc links.
    fn open(&self, path: &str, flags: i32) -> Result<Option<File>, Refusal> {
        let Some(root) = &self.root else { return Err(Refusal::Io(libc::ESRCH)) };
        let c = CString::new(path).map_err(|_| Refusal::Io(libc::EINVAL))?;
        // SAFETY: open_how is plain integers: all zeroes is a valid value.
        let mut how: libc::open_how = unsafe { std::mem::zeroed() };
        how.flags = (flags | libc::O_RDONLY | libc::O_CLOEXEC | libc::O_NOCTTY | libc::O_NONBLOCK) as u64;
        how.resolve = libc::RESOLVE_IN_ROOT | libc::RESOLVE_NO_MAGICLINKS;
        use std::os::fd::AsRawFd;
        // SAFETY: openat2 with a valid directory fd, a NUL-terminated path and an
        // open_how of the size passed; the fd it returns is ours alone.
        let fd = unsafe {
            libc::syscall(libc::SYS_openat2, root.as_raw_fd(), c.as_ptr(), &how as *const libc::open_how, std::mem::size_of::<libc::open_how>())
        };
        if fd < 0 {
            let errno = std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EIO);
            return match errno {
                libc::ENOENT | libc::ENOTDIR => Ok(None),
                e => Err(Refusal::Io(e)),
            };
        }
        // SAFETY: a fresh fd from the kernel, owned by nothing else.
        Ok(Some(unsafe { File::from_raw_fd(fd as i32) }))
    }

    /// May the tracer read what it opened, on these grounds?
    fn trusted(&self, meta: &std::fs::Metadata, root_named: bool) -> bool {
        root_named || self.creds.as_ref().is_some_and(|c| c.may_read(meta.uid(), meta.gid(), meta.mode()))
    }
}

impl OptionSource for ProcFiles {
    fn read(&mut self, path: &str, root_named: bool) -> Result<Option<FileText>, Refusal> {
        let Some(file) = self.open(path, 0)? else { return Ok(None) };
        let meta = file.metadata().map_err(|e| Refusal::Io(e.raw_os_error().unwrap_or(libc::EIO)))?;
        if !meta.is_file() {
            return Err(Refusal::NotRegular);
        }
        if !self.trusted(&meta, root_named) {
            return Err(Refusal::NotTrusted);
        }
        if meta.len() > MAX_FILE_BYTES {
            return Err(Refusal::TooLarge);
        }
        let mut buf = Vec::new();
        file.take(MAX_FILE_BYTES + 1).read_to_end(&mut buf).map_err(|e| Refusal::Io(e.raw_os_error().unwrap_or(libc::EIO)))?;
        if buf.len() as u64 > MAX_FILE_BYTES {
            return Err(Refusal::TooLarge);
        }
        let text = String::from_utf8(buf).map_err(|_| Refusal::NotText)?;
        let root_written = meta.uid() == 0 && meta.mode() & 0o022 == 0;
        Ok(Some(FileText { text, root_written: root_written || self.creds.as_ref().is_some_and(|c| c.uid == 0) }))
    }

    fn list(&mut self, dir: &str, root_named: bool) -> Result<Option<Vec<String>>, Refusal> {
        let Some(d) = self.open(dir, libc::O_DIRECTORY)? else { return Ok(None) };
        let meta = d.metadata().map_err(|e| Refusal::Io(e.raw_os_error().unwrap_or(libc::EIO)))?;
        if !self.trusted(&meta, root_named) {
            return Err(Refusal::NotTrusted);
        }
        use std::os::fd::AsRawFd;
        // Our own fd's directory: the link is to the directory just opened.
        let entries = std::fs::read_dir(format!("/proc/self/fd/{}", d.as_raw_fd())).map_err(|e| Refusal::Io(e.raw_os_error().unwrap_or(libc::EIO)))?;
        let mut names = Vec::new();
        for e in entries.flatten().take(4 * config::MAX_DIR_ENTRIES) {
            if let Some(n) = e.file_name().to_str() {
                names.push(n.to_string());
            }
        }
        Ok(Some(names))
    }

    fn version(&mut self) -> Option<(u32, u32)> {
        binary_version(self.pid).map(|v| (v.major, v.minor))
    }
}

/// Which server a binary is, from the option-group names compiled into it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BinaryVersion {
    /// A `mariadbd-X.Y` group: MariaDB; else (`mysqld-X.Y` only) MySQL.
    pub mariadb: bool,
    pub major: u32,
    pub minor: u32,
}

/// The server's version from the group names compiled into its binary
/// (`mariadbd-10.11` or `mysqld-8.0`, each ending in a NUL), read in slices; a
/// `mariadbd-` group wins over a `mysqld-` one wherever it is.
fn version_in(mut r: impl Read) -> Option<BinaryVersion> {
    const SLICE: usize = 1 << 20;
    const KEEP: usize = 32;
    let mut buf = vec![0u8; SLICE + KEEP];
    let mut kept = 0;
    let mut mysql = None;
    let group = |buf: &[u8], prefix: &[u8]| -> Option<(u32, u32)> {
        let mut from = 0;
        while let Some(i) = find(&buf[from..], prefix) {
            let at = from + i + prefix.len();
            let v = buf[at..].iter().position(|&b| b == 0).and_then(|z| std::str::from_utf8(&buf[at..at + z]).ok()).and_then(config::parse_major_minor);
            if v.is_some() {
                return v;
            }
            from += i + 1;
        }
        None
    };
    loop {
        let n = r.read(&mut buf[kept..]).ok()?;
        if n == 0 {
            return mysql.map(|(major, minor)| BinaryVersion { mariadb: false, major, minor });
        }
        let end = kept + n;
        if let Some((major, minor)) = group(&buf[..end], b"mariadbd-") {
            return Some(BinaryVersion { mariadb: true, major, minor });
        }
        mysql = mysql.or_else(|| group(&buf[..end], b"mysqld-"));
        let keep_from = end.saturating_sub(KEEP);
        buf.copy_within(keep_from..end, 0);
        kept = end - keep_from;
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_gives_the_fs_ids_and_groups() {
        let s = "Name:\tmariadbd\nUid:\t104\t104\t104\t104\nGid:\t110\t110\t110\t111\nGroups:\t4 110 \n";
        assert_eq!(parse_status(s), Some(Creds { uid: 104, gid: 111, groups: vec![4, 110] }));
    }

    #[test]
    fn the_servers_user_may_read_by_its_mode_bits() {
        let mysql = Creds { uid: 104, gid: 110, groups: vec![4] };
        assert!(mysql.may_read(104, 0, 0o400));
        assert!(!mysql.may_read(104, 110, 0o044), "the owner's bits are the owner's");
        assert!(mysql.may_read(0, 4, 0o640));
        assert!(!mysql.may_read(0, 0, 0o600), "root's 0600 file");
        assert!(mysql.may_read(0, 0, 0o644));
        assert!(Creds { uid: 0, gid: 0, groups: vec![] }.may_read(1000, 1000, 0o000));
    }

    #[test]
    fn the_version_is_found_across_slices() {
        let mut bin = vec![b'x'; (1 << 20) + 32 - 10];
        bin.extend_from_slice(b"\0mysqld-\0mariadbd-10.11\0");
        assert_eq!(version_in(&bin[..]), Some(BinaryVersion { mariadb: true, major: 10, minor: 11 }));
        assert_eq!(
            version_in(&b"mariadbd-10.11.6-MariaDB\0mysqld-8.0\0"[..]),
            Some(BinaryVersion { mariadb: false, major: 8, minor: 0 }),
            "a version string is not a group"
        );
        // MariaDB's binary has mysqld-10.11 first: its mariadbd- group still says MariaDB.
        let mut maria = b"mysqld-10.11\0".to_vec();
        maria.extend(vec![b'x'; 3 << 20]);
        maria.extend_from_slice(b"mariadbd-10.11\0");
        assert_eq!(version_in(&maria[..]), Some(BinaryVersion { mariadb: true, major: 10, minor: 11 }));
        assert_eq!(version_in(&b"nothing here"[..]), None);
    }

    #[test]
    fn proc_strings_split_on_nul() {
        assert_eq!(nul_separated(b"mariadbd\0--port=3306\0\0"), ["mariadbd", "--port=3306"]);
    }

    /// This process's own configuration: a real read through /proc/self/root.
    #[test]
    fn reading_a_real_process_never_fails() {
        let cfg = read(std::process::id(), Overrides::default());
        assert!(cfg.connect_timeout_s.value >= config::MIN_CONNECT_TIMEOUT_S);
        assert_eq!(cfg.files.first().map(|f| f.path.as_str()), Some("/etc/my.cnf"));
    }
}
