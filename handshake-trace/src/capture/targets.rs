//! Finding the MySQL/MariaDB servers to trace, and what /proc says about their sockets.
use std::{
    collections::HashMap,
    fs,
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr},
    path::PathBuf,
};

use anyhow::{bail, Result};

/// Process names (`comm`) traced by default.
pub const SERVER_NAMES: &[&str] = &["mysqld", "mariadbd"];

/// A server process seen in /proc.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerProcess {
    pub pid: u32,
    pub comm: String,
    pub exe: Option<PathBuf>,
    pub listening: Vec<SocketAddr>,
    /// When it started (clock ticks after boot, /proc/PID/stat field 22): with the pid,
    /// tells a process from a later one that reuses its pid.
    pub start_time: Option<u64>,
}

/// The `comm` of a process, None if it is gone.
pub fn comm(pid: u32) -> Option<String> {
    fs::read_to_string(format!("/proc/{pid}/comm")).ok().map(|s| s.trim_end().to_string())
}

/// Alive: present in /proc and not a zombie (an exited process not yet reaped).
pub fn process_exists(pid: u32) -> bool {
    presence(pid) == Presence::Alive
}

/// What /proc says of a process: only ENOENT/ESRCH (or a zombie) mean it is gone; any
/// other failure to read (EMFILE, ENFILE, EACCES, ENOMEM …) says nothing about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Presence {
    Alive,
    Gone,
    /// /proc could not be read (the errno): ask again later, never take it for gone.
    Unknown(i32),
}

/// The presence of `pid` from /proc/PID/stat.
pub fn presence(pid: u32) -> Presence {
    presence_of(fs::read_to_string(format!("/proc/{pid}/stat")))
}

/// The presence a read of /proc/PID/stat gives.
pub fn presence_of(read: std::io::Result<String>) -> Presence {
    match read {
        Ok(stat) => match proc_state(&stat) {
            Some('Z' | 'X') => Presence::Gone,
            Some(_) => Presence::Alive,
            // A stat line without a state: not a verdict on the process.
            None => Presence::Unknown(0),
        },
        Err(e) => match e.raw_os_error() {
            Some(libc::ENOENT | libc::ESRCH) => Presence::Gone,
            Some(errno) => Presence::Unknown(errno),
            None if e.kind() == std::io::ErrorKind::NotFound => Presence::Gone,
            None => Presence::Unknown(0),
        },
    }
}

// "1234 (mariadbd) S 1 ...": the state follows the last ')' (the name may contain one).
fn proc_state(stat: &str) -> Option<char> {
    stat[stat.rfind(')')? + 1..].trim_start().chars().next()
}

// The start time is field 22; the state after the ')' is field 3.
fn proc_start_time(stat: &str) -> Option<u64> {
    stat[stat.rfind(')')? + 1..].split_whitespace().nth(19)?.parse().ok()
}

/// When a process started, None if it is gone.
pub fn start_time(pid: u32) -> Option<u64> {
    proc_start_time(&fs::read_to_string(format!("/proc/{pid}/stat")).ok()?)
}

/// Every running process named like a MySQL server (a zombie, exited but not reaped,
/// still has its name in /proc: it is not one).
pub fn find_servers() -> Vec<ServerProcess> {
    let Ok(dir) = fs::read_dir("/proc") else { return Vec::new() };
    let mut found: Vec<ServerProcess> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let comm = comm(pid)?;
            (SERVER_NAMES.contains(&comm.as_str()) && process_exists(pid)).then(|| describe(pid, comm))
        })
        .collect();
    found.sort_by_key(|s| s.pid);
    found
}

/// What /proc tells about one process.
pub fn describe(pid: u32, comm: String) -> ServerProcess {
    ServerProcess {
        pid,
        comm,
        exe: fs::read_link(format!("/proc/{pid}/exe")).ok(),
        listening: listening_sockets(pid).into_values().collect(),
        start_time: start_time(pid),
    }
}

/// Resolve the `-p` arguments: each must be a live process (not one of its threads,
/// not a zombie).
pub fn check_pids(pids: &[u32]) -> Result<Vec<ServerProcess>> {
    let mut out = Vec::new();
    for &pid in pids {
        let Some(c) = comm(pid) else { bail!("no process with pid {pid}") };
        if let Some(tgid) = thread_group(pid).filter(|t| *t != pid) {
            bail!("pid {pid} is a thread of process {tgid}: trace the process, -p {tgid}");
        }
        match presence(pid) {
            Presence::Alive => {}
            Presence::Gone => bail!("pid {pid} ({c}) has exited (a zombie its parent has not reaped)"),
            Presence::Unknown(errno) => {
                bail!("cannot read /proc/{pid}/stat ({}): is pid {pid} alive?", std::io::Error::from_raw_os_error(errno))
            }
        }
        out.push(describe(pid, c));
    }
    Ok(out)
}

/// The process a thread belongs to (its thread group), from /proc/PID/status.
fn thread_group(pid: u32) -> Option<u32> {
    let status = fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status.lines().find_map(|l| l.strip_prefix("Tgid:")?.trim().parse().ok())
}

impl ServerProcess {
    /// Named like a MySQL server (mysqld, mariadbd).
    pub fn named_like_a_server(&self) -> bool {
        SERVER_NAMES.contains(&self.comm.as_str())
    }
}

/// The fds of a process that are sockets: fd → socket inode.
pub fn socket_fds(pid: u32) -> HashMap<i32, u64> {
    let Ok(dir) = fs::read_dir(format!("/proc/{pid}/fd")) else { return HashMap::new() };
    dir.filter_map(|e| {
        let e = e.ok()?;
        let fd: i32 = e.file_name().to_str()?.parse().ok()?;
        let link = fs::read_link(e.path()).ok()?;
        let inode = link.to_str()?.strip_prefix("socket:[")?.strip_suffix(']')?.parse().ok()?;
        Some((fd, inode))
    })
    .collect()
}

/// One row of /proc/net/tcp or tcp6.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TcpRow {
    pub local: SocketAddr,
    pub remote: SocketAddr,
    /// Kernel TCP state (0x0A = LISTEN, 0x01 = ESTABLISHED).
    pub state: u8,
    pub inode: u64,
}

pub const TCP_LISTEN: u8 = 0x0A;

/// Parse the text of /proc/net/tcp or /proc/net/tcp6.
pub fn parse_proc_net_tcp(text: &str) -> Vec<TcpRow> {
    text.lines().skip(1).filter_map(parse_tcp_line).collect()
}

// "  0: 0100007F:0CEA 00000000:0000 0A 00000000:00000000 00:00000000 00000000   107  0 23456 1 ..."
fn parse_tcp_line(line: &str) -> Option<TcpRow> {
    let cols: Vec<&str> = line.split_whitespace().collect();
    if cols.len() < 10 {
        return None;
    }
    Some(TcpRow {
        local: parse_hex_addr(cols[1])?,
        remote: parse_hex_addr(cols[2])?,
        state: u8::from_str_radix(cols[3], 16).ok()?,
        inode: cols[9].parse().ok()?,
    })
}

// The address is in the kernel's byte order, printed 32 bits at a time.
fn parse_hex_addr(s: &str) -> Option<SocketAddr> {
    let (ip, port) = s.split_once(':')?;
    let port = u16::from_str_radix(port, 16).ok()?;
    let words: Vec<u32> = (0..ip.len() / 8)
        .map(|i| u32::from_str_radix(&ip[i * 8..i * 8 + 8], 16).map(u32::from_be))
        .collect::<Result<_, _>>()
        .ok()?;
    let ip = match words.len() {
        1 => IpAddr::V4(Ipv4Addr::from(words[0].to_be_bytes())),
        4 => {
            let mut b = [0u8; 16];
            for (i, w) in words.iter().enumerate() {
                b[i * 4..i * 4 + 4].copy_from_slice(&w.to_be_bytes());
            }
            let v6 = Ipv6Addr::from(b);
            v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6))
        }
        _ => return None,
    };
    Some(SocketAddr::new(ip, port))
}

/// TCP sockets of the process's network namespace, by inode.
fn tcp_table(pid: u32) -> HashMap<u64, TcpRow> {
    ["tcp", "tcp6"]
        .iter()
        .filter_map(|f| fs::read_to_string(format!("/proc/{pid}/net/{f}")).ok())
        .flat_map(|t| parse_proc_net_tcp(&t))
        .map(|r| (r.inode, r))
        .collect()
}

/// Listening TCP sockets of a process: fd → local address.
pub fn listening_sockets(pid: u32) -> HashMap<i32, SocketAddr> {
    let table = tcp_table(pid);
    socket_fds(pid)
        .into_iter()
        .filter_map(|(fd, inode)| {
            let row = table.get(&inode)?;
            (row.state == TCP_LISTEN).then_some((fd, row.local))
        })
        .collect()
}

/// Listening Unix sockets in the text of /proc/net/unix: inode → path. A listening
/// socket has __SO_ACCEPTCON (0x10000) in its flags; abstract names start with '@'.
pub fn parse_proc_net_unix(text: &str) -> HashMap<u64, String> {
    const ACCEPTCON: u32 = 0x10000;
    text.lines()
        .skip(1)
        .filter_map(|line| {
            // "0000000000000000: 00000002 00000000 00010000 0001 01 23456 /run/mysqld/mysqld.sock"
            let cols: Vec<&str> = line.split_whitespace().collect();
            let flags = u32::from_str_radix(cols.get(3)?, 16).ok()?;
            let inode: u64 = cols.get(6)?.parse().ok()?;
            // The path is the rest of the line after the inode (it may hold spaces).
            let after_inode = line.find(&format!(" {} ", cols[6]))? + cols[6].len() + 2;
            let path = line[after_inode..].trim();
            (flags & ACCEPTCON != 0 && !path.is_empty()).then(|| (inode, path.to_string()))
        })
        .collect()
}

/// Listening Unix sockets of a process: fd → path.
pub fn unix_listeners(pid: u32) -> HashMap<i32, String> {
    let Ok(text) = fs::read_to_string(format!("/proc/{pid}/net/unix")) else { return HashMap::new() };
    let paths = parse_proc_net_unix(&text);
    socket_fds(pid).into_iter().filter_map(|(fd, inode)| Some((fd, paths.get(&inode)?.clone()))).collect()
}

/// Local and remote address of a connected socket fd (fallback when accept gave no address).
pub fn socket_addrs(pid: u32, fd: i32) -> Option<(SocketAddr, SocketAddr)> {
    let inode = *socket_fds(pid).get(&fd)?;
    let row = tcp_table(pid).remove(&inode)?;
    Some((row.local, row.remote))
}

/// Why a process is not traced, or a target was dropped: a fixed set (the agent's
/// `handshake_trace_targets_refused_total{reason}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RefuseReason {
    /// Found by its name alone: its executable is not a root-installed file named
    /// mysqld or mariadbd (discovery mode; `-p` names a process explicitly).
    Unverified,
    /// It listens on more TCP ports than one server does ([`MAX_PORTS_PER_TARGET`]).
    TooManyPorts,
    /// A kernel map had no room for it (targets, listening ports) or refused an entry.
    MapFull,
}

impl RefuseReason {
    pub const ALL: [RefuseReason; 3] = [RefuseReason::Unverified, RefuseReason::TooManyPorts, RefuseReason::MapFull];

    /// The metric label value.
    pub fn name(self) -> &'static str {
        match self {
            RefuseReason::Unverified => "unverified",
            RefuseReason::TooManyPorts => "too_many_ports",
            RefuseReason::MapFull => "map_full",
        }
    }
}

/// A target refused: why, and the details for the log line (already escaped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub reason: RefuseReason,
    pub detail: String,
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.detail)
    }
}

impl Refusal {
    pub fn new(reason: RefuseReason, detail: impl Into<String>) -> Self {
        Refusal { reason, detail: detail.into() }
    }
}

/// TCP ports one target may put in the socket tier's port map: a MariaDB/MySQL server
/// listens on its port and maybe an extra (admin) port; a process holding more is no
/// server to trust with a shared map of [`handshake_trace_common::MAX_LISTEN_PORTS`].
pub const MAX_PORTS_PER_TARGET: usize = 16;

/// Discovery: is the executable of `pid` a server installed by root? Its file name
/// (what `/proc/PID/exe` points to) must be mysqld or mariadbd, and the file itself (the
/// inode the process runs, even if deleted since) a regular file owned by root and not
/// writable by group or others. A name set with `prctl(PR_SET_NAME)` or a copy of any
/// binary renamed by a local user fails. Nothing is executed or loaded.
pub fn verify_executable(pid: u32) -> Result<PathBuf, String> {
    let link = fs::read_link(format!("/proc/{pid}/exe")).map_err(|e| format!("its executable cannot be read ({e})"))?;
    let shown = link.display().to_string();
    let name = link.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let name = name.strip_suffix(" (deleted)").unwrap_or(&name);
    if !SERVER_NAMES.contains(&name) {
        return Err(format!("its executable {} is not named mysqld or mariadbd", crate::support::escape::Escaped(&shown)));
    }
    // stat through the magic link: the inode the process runs.
    let meta = fs::metadata(format!("/proc/{pid}/exe")).map_err(|e| format!("its executable cannot be examined ({e})"))?;
    use std::os::unix::fs::MetadataExt;
    if !meta.is_file() {
        return Err("its executable is not a regular file".into());
    }
    if meta.uid() != 0 {
        return Err(format!(
            "its executable {} is owned by uid {}, not root",
            crate::support::escape::Escaped(&shown),
            meta.uid()
        ));
    }
    if meta.mode() & 0o022 != 0 {
        return Err(format!("its executable {} is writable by group or others", crate::support::escape::Escaped(&shown)));
    }
    Ok(link)
}

/// Bytes of a greeting read at most: a real one is about 100.
const GREETING_MAX: usize = 1024;

/// The server version a MySQL server sends in its greeting, from a connection to
/// `listen` (a listening address of the server): only on loopback, where the server
/// skips its host cache (127.0.0.1 or ::1; a wildcard listener is reached there), with
/// `timeout` for the whole exchange and at most [`GREETING_MAX`] bytes read. The
/// connection is closed after the greeting (the server counts it in `Aborted_connects`).
pub fn greeting_version(listen: SocketAddr, timeout: std::time::Duration) -> Option<String> {
    use std::io::Read;
    let ip = match listen.ip() {
        IpAddr::V4(a) if a.is_unspecified() || a == Ipv4Addr::LOCALHOST => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(a) if a.is_unspecified() || a == Ipv6Addr::LOCALHOST => IpAddr::V6(Ipv6Addr::LOCALHOST),
        _ => return None,
    };
    let deadline = std::time::Instant::now() + timeout;
    let mut s = std::net::TcpStream::connect_timeout(&SocketAddr::new(ip, listen.port()), timeout).ok()?;
    let mut buf = Vec::with_capacity(128);
    let mut chunk = [0u8; 256];
    loop {
        if let Some(v) = greeting_in(&buf) {
            return v;
        }
        let left = deadline.checked_duration_since(std::time::Instant::now()).filter(|d| !d.is_zero())?;
        s.set_read_timeout(Some(left)).ok()?;
        let room = GREETING_MAX - buf.len();
        let want = room.min(chunk.len());
        let n = s.read(&mut chunk[..want]).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// A whole greeting packet at the start of `buf`: Some(its version, or None when it is
/// no greeting); None while more bytes are needed (and may come within the bound).
fn greeting_in(buf: &[u8]) -> Option<Option<String>> {
    use crate::protocol::{framing::Payload, packets::{decode_server, ServerPacket}};
    if buf.len() < 4 {
        return None;
    }
    let len = usize::from(buf[0]) | usize::from(buf[1]) << 8 | usize::from(buf[2]) << 16;
    if 4 + len > GREETING_MAX {
        return Some(None);
    }
    let payload = buf.get(4..4 + len)?;
    Some(match decode_server(Payload::whole(payload), false) {
        ServerPacket::Greeting(g) if !g.server_version.is_empty() => {
            Some(g.server_version.strip_prefix("5.5.5-").unwrap_or(&g.server_version).to_string())
        }
        _ => None,
    })
}

/// Bytes of an executable read at most when looking for its version.
const EXE_SCAN_MAX: u64 = 256 << 20;

/// MariaDB's version as its executable carries it ("10.11.19-MariaDB"), from the bytes
/// of `/proc/PID/exe` (read, never run; at most [`EXE_SCAN_MAX`] bytes).
pub fn executable_version(pid: u32) -> Option<String> {
    use std::io::Read;
    let f = fs::File::open(format!("/proc/{pid}/exe")).ok()?;
    if !f.metadata().ok()?.is_file() {
        return None;
    }
    let mut r = std::io::BufReader::new(f.take(EXE_SCAN_MAX));
    let mut chunk = vec![0u8; 1 << 20];
    // Keep a tail across chunk boundaries: a version is far shorter than 64 bytes.
    let mut tail: Vec<u8> = Vec::new();
    loop {
        let n = r.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        tail.extend_from_slice(&chunk[..n]);
        if let Some(v) = mariadb_version_in(&tail) {
            return Some(v);
        }
        let keep = tail.len().min(64);
        tail.drain(..tail.len() - keep);
    }
}

/// The first "D.D.D-MariaDB" in `bytes` (digits before the dots), as text.
fn mariadb_version_in(bytes: &[u8]) -> Option<String> {
    const MARK: &[u8] = b"-MariaDB";
    let mut from = 0;
    while let Some(i) = bytes[from..].windows(MARK.len()).position(|w| w == MARK) {
        let end = from + i;
        let start = bytes[..end].iter().rposition(|b| !(b.is_ascii_digit() || *b == b'.')).map_or(0, |p| p + 1);
        let num = &bytes[start..end];
        let parts: Vec<&[u8]> = num.split(|b| *b == b'.').collect();
        if parts.len() == 3 && parts.iter().all(|p| !p.is_empty() && p.len() <= 4) {
            return Some(format!("{}-MariaDB", String::from_utf8_lossy(num)));
        }
        from = end + 1;
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const TCP: &str = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode
   0: 0100007F:0CEA 00000000:0000 0A 00000000:00000000 00:00000000 00000000   107        0 23456 1 0000000000000000 100 0 0 10 0
   1: 0100007F:0CEA 0100007F:C822 01 00000000:00000000 00:00000000 00000000   107        0 23999 1 0000000000000000 20 4 30 10 -1
";

    #[test]
    fn parses_ipv4_rows() {
        let rows = parse_proc_net_tcp(TCP);
        assert_eq!(rows.len(), 2);
        assert_eq!(rows[0].local, "127.0.0.1:3306".parse().unwrap());
        assert_eq!(rows[0].state, TCP_LISTEN);
        assert_eq!(rows[0].inode, 23456);
        assert_eq!(rows[1].remote, "127.0.0.1:51234".parse().unwrap());
        assert_eq!(rows[1].state, 1);
    }

    #[test]
    fn parses_ipv6_rows() {
        let text = "header\n   0: 00000000000000000000000001000000:0CEA 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 777 1 0 100 0 0 10 0\n   1: 0000000000000000FFFF00000100007F:0CEA 0000000000000000FFFF00000100007F:D431 01 00000000:00000000 00:00000000 00000000     0        0 778 1 0 100 0 0 10 0\n";
        let rows = parse_proc_net_tcp(text);
        assert_eq!(rows[0].local, "[::1]:3306".parse().unwrap());
        assert_eq!(rows[1].remote, "127.0.0.1:54321".parse().unwrap());
    }

    #[test]
    fn this_process_is_found_and_a_missing_pid_is_an_error() {
        let me = std::process::id();
        assert!(process_exists(me));
        assert_eq!(check_pids(&[me]).unwrap()[0].pid, me);
        // pid_max is at most 2^22: this pid cannot exist.
        let err = check_pids(&[u32::MAX - 1]).unwrap_err().to_string();
        assert!(err.contains("no process with pid"), "{err}");
    }

    #[test]
    fn a_thread_id_is_refused_with_its_process() {
        let (tx, rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        let t = std::thread::spawn(move || {
            // SAFETY: gettid has no preconditions.
            tx.send(unsafe { libc::gettid() } as u32).unwrap();
            let _ = done_rx.recv();
        });
        let tid = rx.recv().unwrap();
        let err = check_pids(&[tid]).unwrap_err().to_string();
        assert!(err.contains(&format!("is a thread of process {}", std::process::id())), "{err}");
        done_tx.send(()).unwrap();
        t.join().unwrap();
    }

    #[test]
    fn a_zombie_is_refused() {
        // A child that exits and is not waited for stays a zombie.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let zombie = (0..100).any(|_| {
            std::thread::sleep(std::time::Duration::from_millis(10));
            !process_exists(pid)
        });
        assert!(zombie);
        let err = check_pids(&[pid]).unwrap_err().to_string();
        assert!(err.contains("has exited"), "{err}");
        child.wait().unwrap();
    }

    #[test]
    fn zombies_are_not_alive() {
        assert_eq!(proc_state("1234 (mariadbd) S 1 1234"), Some('S'));
        assert_eq!(proc_state("1234 (a) b) Z 1 1234"), Some('Z'));
        assert_eq!(proc_state("garbage"), None);
        // A child that exited but is not reaped yet.
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while process_exists(pid) && std::time::Instant::now() < deadline {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        let stat = fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        assert!(!process_exists(pid), "zombie {pid} counted as alive: {stat}");
        assert!(stat.contains(") Z"), "not reaped yet, so still in /proc as a zombie: {stat}");
        child.wait().unwrap();
    }

    #[test]
    fn start_time_tells_a_reused_pid_apart() {
        let stat = "1234 (my sql) d) S 1 1234 1234 0 -1 4194560 500 0 0 0 10 5 0 0 20 0 30 0 987654 123456789 4000";
        assert_eq!(proc_start_time(stat), Some(987654));
        assert_eq!(proc_start_time("1234 (x) S 1"), None);
        assert!(start_time(std::process::id()).is_some_and(|t| t > 0));
    }

    #[test]
    fn unix_listeners_from_proc_net_unix() {
        let text = "Num       RefCount Protocol Flags    Type St Inode Path
0000000000000000: 00000002 00000000 00010000 0001 01 23456 /run/mysqld/mysqld.sock
0000000000000000: 00000003 00000000 00000000 0001 03 23457 /run/mysqld/mysqld.sock
0000000000000000: 00000002 00000000 00010000 0001 01 23458 /tmp/with space.sock
0000000000000000: 00000002 00000000 00000000 0002 01 23459
";
        let got = parse_proc_net_unix(text);
        assert_eq!(got.get(&23456).map(String::as_str), Some("/run/mysqld/mysqld.sock"));
        assert_eq!(got.get(&23458).map(String::as_str), Some("/tmp/with space.sock"));
        assert!(!got.contains_key(&23457), "a connected socket is not a listener");
        assert_eq!(got.len(), 2);
        // And our own listener, for real.
        let dir = std::env::temp_dir().join(format!("ht-unix-{}", std::process::id()));
        let _ = fs::remove_file(&dir);
        let l = std::os::unix::net::UnixListener::bind(&dir).unwrap();
        let mine = unix_listeners(std::process::id());
        assert!(mine.values().any(|p| std::path::Path::new(p) == dir), "{mine:?}");
        drop(l);
        let _ = fs::remove_file(&dir);
    }

    #[test]
    fn only_enoent_and_esrch_mean_gone() {
        let err = |errno| presence_of(Err(std::io::Error::from_raw_os_error(errno)));
        assert_eq!(err(libc::ENOENT), Presence::Gone);
        assert_eq!(err(libc::ESRCH), Presence::Gone);
        // The tracer out of fds, or /proc refusing: nothing is known of the process.
        assert_eq!(err(libc::EMFILE), Presence::Unknown(libc::EMFILE));
        assert_eq!(err(libc::ENFILE), Presence::Unknown(libc::ENFILE));
        assert_eq!(err(libc::EACCES), Presence::Unknown(libc::EACCES));
        assert_eq!(presence_of(Ok("12 (mysqld) S 1".into())), Presence::Alive);
        assert_eq!(presence_of(Ok("12 (mysqld) Z 1".into())), Presence::Gone);
        assert_eq!(presence_of(Ok("garbage".into())), Presence::Unknown(0));
    }

    #[test]
    fn a_real_emfile_leaves_a_process_unknown_not_gone() {
        const CHILD: &str = "HANDSHAKE_TRACE_EMFILE_CHILD";
        if std::env::var_os(CHILD).is_some() {
            // The re-run below: out of fds for real, then ask about pid 1.
            let rl = libc::rlimit { rlim_cur: 16, rlim_max: 16 };
            // SAFETY: a valid rlimit; then every free fd taken (this process only).
            unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) };
            let mut held = Vec::new();
            while let Ok(f) = fs::File::open("/dev/null") {
                held.push(f);
            }
            let p = presence(1);
            drop(held);
            assert_eq!(p, Presence::Unknown(libc::EMFILE), "EMFILE taken for an answer");
            return;
        }
        // Lowering the fd limit would hurt the tests running beside this one: a process
        // of its own runs this test alone.
        let out = std::process::Command::new(std::env::current_exe().unwrap())
            .args(["--exact", "capture::targets::tests::a_real_emfile_leaves_a_process_unknown_not_gone", "--test-threads=1"])
            .env(CHILD, "1")
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success() && text.contains("1 passed"), "{text}{}", String::from_utf8_lossy(&out.stderr));
    }

    #[test]
    fn a_greeting_gives_the_version_and_a_bound_ends_the_read() {
        let g = crate::protocol::samples::mariadb_greeting();
        let mut packet = vec![g.len() as u8, (g.len() >> 8) as u8, 0, 0];
        packet.extend_from_slice(&g);
        let v = greeting_in(&packet).expect("whole").expect("a greeting");
        assert!(!v.starts_with("5.5.5-") && v.contains("MariaDB"), "{v}");
        assert_eq!(greeting_in(&packet[..10]), None, "more bytes needed");
        // A declared length past the bound is no greeting (not waited for).
        assert_eq!(greeting_in(&[0xff, 0xff, 0x0f, 0]), Some(None));
        // An ERR packet first (host blocked…): no version.
        let err = [9, 0, 0, 0, 0xff, 0x69, 0x04, b'#', b'H', b'Y', b'0', b'0', b'0'];
        assert_eq!(greeting_in(&err), Some(None));
    }

    #[test]
    fn a_greeting_is_read_from_a_loopback_listener_within_the_timeout() {
        use std::io::Write;
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let t = std::thread::spawn(move || {
            let (mut s, _) = l.accept().unwrap();
            let g = crate::protocol::samples::mariadb_greeting();
            let mut p = vec![g.len() as u8, 0, 0, 0];
            p.extend_from_slice(&g);
            // In two pieces: the reader must put them together.
            s.write_all(&p[..7]).unwrap();
            std::thread::sleep(std::time::Duration::from_millis(20));
            s.write_all(&p[7..]).unwrap();
            // A silent one next: the read gives up at the timeout.
            let (_silent, _) = l.accept().unwrap();
            std::thread::sleep(std::time::Duration::from_millis(800));
        });
        let wild = SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), addr.port());
        assert!(greeting_version(wild, std::time::Duration::from_secs(2)).is_some_and(|v| v.contains("MariaDB")));
        let started = std::time::Instant::now();
        assert_eq!(greeting_version(addr, std::time::Duration::from_millis(200)), None);
        assert!(started.elapsed() < std::time::Duration::from_millis(600), "{:?}", started.elapsed());
        // Never a non-loopback address (the server would count it in its host cache).
        assert_eq!(greeting_version("10.1.2.3:3306".parse().unwrap(), std::time::Duration::from_millis(50)), None);
        t.join().unwrap();
    }

    #[test]
    fn mariadb_versions_are_found_in_bytes() {
        assert_eq!(mariadb_version_in(b"\0xx10.11.19-MariaDB\0"), Some("10.11.19-MariaDB".into()));
        assert_eq!(mariadb_version_in(b"-MariaDB 1.2-MariaDB 11.4.2-MariaDB-log"), Some("11.4.2-MariaDB".into()));
        assert_eq!(mariadb_version_in(b"no version here, -MariaDB"), None);
    }

    #[test]
    fn this_test_binary_is_no_verified_server() {
        let err = verify_executable(std::process::id()).unwrap_err();
        assert!(err.contains("not named mysqld or mariadbd"), "{err}");
        assert!(verify_executable(u32::MAX - 1).is_err());
    }

    #[test]
    fn finds_our_own_listening_socket() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let socks = listening_sockets(std::process::id());
        assert!(socks.values().any(|a| *a == addr), "{socks:?} lacks {addr}");
    }
}
