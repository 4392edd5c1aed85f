//! The lab's built-in MySQL-protocol server (`handshake-trace lab-server`): real
//! threads, real signals, real syscalls, so the tracer sees it exactly as it would
//! see such a server. Its connection threads wait for the login in one of two ways:
//!
//! - `alarm`, the MySQL 5.0 way: non-blocking read → EAGAIN → register an alarm for
//!   `connect_timeout` with the alarm thread → socket switched to blocking → blocking
//!   read → the alarm thread sends SIGALRM to the handler (`pthread_kill`) → the read
//!   fails with EINTR → close **without sending any error**.
//! - `poll`, the modern way: EAGAIN → `poll(fd, connect_timeout)` → timeout →
//!   SO_LINGER 0 → close (the client gets a reset).
//!
//! Accounts: `lab` / `lab-password` (mysql_native_password). Queries: `SELECT <expr>`
//! returns the expression's text (`SELECT 1` → 1, `SELECT CONNECTION_ID()` → the id),
//! anything else gets OK.
use std::{
    io::Write,
    net::{IpAddr, SocketAddr, TcpListener, UdpSocket},
    os::fd::{IntoRawFd, RawFd},
    sync::{
        atomic::{AtomicU32, Ordering},
        Mutex, OnceLock,
    },
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use handshake_trace::protocol::Header;

use crate::{
    mariadb::{LAB_PASSWORD, LAB_USER},
    wire::{self, COM_INIT_DB, COM_PING, COM_QUERY, COM_QUIT, ER_ACCESS_DENIED_ERROR, ER_HANDSHAKE_ERROR, ER_UNKNOWN_COM_ERROR},
};

/// How a connection thread waits for the login.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum WaitStyle {
    /// MySQL 5.0: an alarm thread's SIGALRM interrupts a blocking read (EINTR).
    Alarm,
    /// Modern servers: poll with a timeout, then SO_LINGER 0 and close (RST).
    Poll,
}

impl WaitStyle {
    pub fn as_str(self) -> &'static str {
        match self {
            WaitStyle::Alarm => "alarm",
            WaitStyle::Poll => "poll",
        }
    }

    /// The version string in the greeting: an old server for `alarm`, a modern one for `poll`.
    pub fn version(self) -> &'static str {
        match self {
            WaitStyle::Alarm => "5.0.96-handshake-trace-lab-alarm",
            WaitStyle::Poll => "10.11.99-handshake-trace-lab-poll",
        }
    }
}

#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub style: WaitStyle,
    /// Address to listen on (loopback by default; port 0 = any free port).
    pub listen: SocketAddr,
    pub connect_timeout: Duration,
    /// Resolve each client's address with this DNS server before the greeting, as
    /// MySQL does (`skip-name-resolve` off). None = no name resolution.
    pub resolver: Option<SocketAddr>,
    /// Listen with SO_REUSEPORT, so several servers can share the port (the kernel
    /// spreads the connections among them).
    pub reuse_port: bool,
    /// Wait this long before listening (a server that starts listening late).
    pub listen_after: Duration,
}

static CONNECTION_IDS: AtomicU32 = AtomicU32::new(1);
/// Handshakes that did not end in a login, counted as MySQL's `Aborted_connects`.
static ABORTED_CONNECTS: AtomicU32 = AtomicU32::new(0);

/// Serve until the process is killed. `ready` gets the bound address.
pub fn serve(cfg: &ServerConfig, ready: impl FnOnce(SocketAddr)) -> Result<std::convert::Infallible> {
    std::thread::sleep(cfg.listen_after);
    let listener = listen(cfg.listen, cfg.reuse_port).with_context(|| format!("listen on {}", cfg.listen))?;
    if !cfg.listen.ip().is_loopback() {
        log(&format!("warning: listening on {}, not loopback", cfg.listen));
    }
    if cfg.style == WaitStyle::Alarm {
        install_alarm_handling()?;
    }
    // A server-like process name (comm), for ps and the tracer's output.
    // SAFETY: PR_SET_NAME with a NUL-terminated name of at most 16 bytes.
    unsafe { libc::prctl(libc::PR_SET_NAME, c"lab-mysqld".as_ptr()) };
    ready(listener.local_addr()?);
    // Like the real servers: wait for the listener to be readable (select in MySQL 5.0,
    // poll in modern ones), then accept from a non-blocking socket.
    listener.set_nonblocking(true)?;
    let lfd = std::os::fd::AsRawFd::as_raw_fd(&listener);
    loop {
        wait_listener(lfd, cfg.style);
        let stream = match listener.accept() {
            Ok((s, _)) => s,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
            Err(e) => {
                log(&format!("accept failed: {e}"));
                continue;
            }
        };
        let peer = stream.peer_addr().ok();
        let fd = stream.into_raw_fd();
        let cfg = cfg.clone();
        std::thread::Builder::new()
            .name("lab-conn".into())
            .spawn(move || handle(fd, peer, &cfg))
            .context("spawn a connection thread")?;
    }
}

/// A listening TCP socket on `addr`, with SO_REUSEPORT if asked.
fn listen(addr: SocketAddr, reuse_port: bool) -> std::io::Result<TcpListener> {
    if !reuse_port {
        return TcpListener::bind(addr);
    }
    let SocketAddr::V4(v4) = addr else { return Err(std::io::Error::other("--reuse-port: IPv4 only")) };
    // SAFETY: plain socket calls on an fd this function owns; the sockaddr is a valid
    // sockaddr_in of the size given; on success the fd moves into the TcpListener.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        if fd < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let one: libc::c_int = 1;
        let sa = libc::sockaddr_in {
            sin_family: libc::AF_INET as libc::sa_family_t,
            sin_port: v4.port().to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from(*v4.ip()).to_be() },
            sin_zero: [0; 8],
        };
        let ok = libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEPORT, (&one as *const libc::c_int).cast(), 4) == 0
            && libc::bind(fd, (&sa as *const libc::sockaddr_in).cast(), std::mem::size_of::<libc::sockaddr_in>() as u32) == 0
            && libc::listen(fd, 128) == 0;
        if !ok {
            let e = std::io::Error::last_os_error();
            libc::close(fd);
            return Err(e);
        }
        Ok(<TcpListener as std::os::fd::FromRawFd>::from_raw_fd(fd))
    }
}

/// Block until the listening socket is readable.
fn wait_listener(lfd: RawFd, style: WaitStyle) {
    match style {
        WaitStyle::Poll => {
            poll_fd(lfd, libc::POLLIN, -1);
        }
        WaitStyle::Alarm => {
            // SAFETY: an fd_set holding one valid fd below FD_SETSIZE.
            unsafe {
                let mut set: libc::fd_set = std::mem::zeroed();
                libc::FD_ZERO(&mut set);
                libc::FD_SET(lfd, &mut set);
                libc::select(lfd + 1, &mut set, std::ptr::null_mut(), std::ptr::null_mut(), std::ptr::null_mut());
            }
        }
    }
}

fn log(msg: &str) {
    let _ = writeln!(std::io::stderr(), "[lab-server] {msg}");
}

fn errno() -> i32 {
    std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// One connection, from greeting to quit. Owns and closes `fd`.
fn handle(fd: RawFd, peer: Option<SocketAddr>, cfg: &ServerConfig) {
    let id = CONNECTION_IDS.fetch_add(1, Ordering::Relaxed);
    let who = peer.map(|p| p.to_string()).unwrap_or_else(|| "?".into());
    let result = converse(fd, id, peer, cfg);
    let aborted = if matches!(result, Ok(End::Quit)) { ABORTED_CONNECTS.load(Ordering::Relaxed) } else { ABORTED_CONNECTS.fetch_add(1, Ordering::Relaxed) + 1 };
    let what = match result {
        Ok(End::Quit) => "quit".to_string(),
        Ok(End::TimedOut(how)) => format!("no login within connect_timeout ({how}); closed without an error"),
        Ok(End::Refused(why)) => why,
        Err(e) => format!("{e:#}"),
    };
    // The lab reads these end lines: one per connection, with the running count.
    log(&format!("conn {id} from {who}: {what} [Aborted_connects={aborted}]"));
    // SAFETY: we own fd.
    unsafe { libc::close(fd) };
}

enum End {
    Quit,
    TimedOut(&'static str),
    Refused(String),
}

fn set_nonblocking(fd: RawFd, on: bool) {
    // SAFETY: plain fcntl on an fd we own.
    unsafe {
        let flags = libc::fcntl(fd, libc::F_GETFL);
        let flags = if on { flags | libc::O_NONBLOCK } else { flags & !libc::O_NONBLOCK };
        libc::fcntl(fd, libc::F_SETFL, flags);
    }
}

fn setsockopt_int(fd: RawFd, level: i32, name: i32, value: i32) {
    // SAFETY: valid option buffer.
    unsafe {
        libc::setsockopt(fd, level, name, (&value as *const i32).cast(), std::mem::size_of::<i32>() as u32);
    }
}

/// Write all of `buf` (blocking semantics; the socket may be non-blocking: wait with poll).
fn write_all(fd: RawFd, mut buf: &[u8]) -> Result<()> {
    while !buf.is_empty() {
        // SAFETY: valid buffer.
        let n = unsafe { libc::write(fd, buf.as_ptr().cast(), buf.len()) };
        if n < 0 {
            let e = errno();
            if e == libc::EAGAIN || e == libc::EINTR {
                poll_fd(fd, libc::POLLOUT, 1000);
                continue;
            }
            bail!("write: {}", std::io::Error::from_raw_os_error(e));
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// poll one fd; returns poll's result.
fn poll_fd(fd: RawFd, events: i16, timeout_ms: i32) -> i32 {
    let mut p = libc::pollfd { fd, events, revents: 0 };
    // SAFETY: one valid pollfd.
    unsafe { libc::poll(&mut p, 1, timeout_ms) }
}

/// How reading the login ended.
enum Got {
    Bytes(Vec<u8>),
    TimedOut(&'static str),
    Closed,
}

/// Read exactly `n` bytes the poll way: non-blocking reads, each wait a poll with the
/// whole `timeout` (as MariaDB's vio does: connect_timeout per wait, not a deadline).
fn read_exact_poll(fd: RawFd, n: usize, timeout: Duration) -> Result<Got> {
    let timeout_ms = i32::try_from(timeout.as_millis()).unwrap_or(i32::MAX);
    let mut buf = vec![0u8; n];
    let mut have = 0;
    while have < n {
        // SAFETY: valid buffer.
        let r = unsafe { libc::recv(fd, buf[have..].as_mut_ptr().cast(), n - have, 0) };
        if r > 0 {
            have += r as usize;
            continue;
        }
        if r == 0 {
            return Ok(Got::Closed);
        }
        match errno() {
            libc::EAGAIN => {
                if poll_fd(fd, libc::POLLIN, timeout_ms) == 0 {
                    return Ok(Got::TimedOut("poll timed out"));
                }
            }
            libc::EINTR => continue,
            e => bail!("recv: {}", std::io::Error::from_raw_os_error(e)),
        }
    }
    Ok(Got::Bytes(buf))
}

/// Read exactly `n` bytes the MySQL 5.0 way: try non-blocking; on EAGAIN arm the alarm,
/// switch to blocking and read until done or the alarm's SIGALRM makes read fail with EINTR.
fn read_exact_alarm(fd: RawFd, n: usize, timeout: Duration, alarm: &mut Option<AlarmId>) -> Result<Got> {
    let mut buf = vec![0u8; n];
    let mut have = 0;
    while have < n {
        // SAFETY: valid buffer.
        let r = unsafe { libc::read(fd, buf[have..].as_mut_ptr().cast(), n - have) };
        if r > 0 {
            have += r as usize;
            continue;
        }
        if r == 0 {
            return Ok(Got::Closed);
        }
        match errno() {
            libc::EAGAIN if alarm.is_none() => {
                *alarm = Some(thr_alarm(timeout)?);
                set_nonblocking(fd, false);
            }
            libc::EAGAIN => set_nonblocking(fd, false),
            // The alarm thread's SIGALRM: MySQL 5.0 gave up here, without telling the client.
            libc::EINTR => return Ok(Got::TimedOut("SIGALRM interrupted the blocking read (EINTR)")),
            e => bail!("read: {}", std::io::Error::from_raw_os_error(e)),
        }
    }
    Ok(Got::Bytes(buf))
}

/// Read one packet during the handshake, in the configured style: (seq, payload).
fn read_handshake_packet(fd: RawFd, cfg: &ServerConfig, alarm: &mut Option<AlarmId>) -> Result<Result<(u8, Vec<u8>), Got>> {
    let read = |n: usize, alarm: &mut Option<AlarmId>| match cfg.style {
        WaitStyle::Poll => read_exact_poll(fd, n, cfg.connect_timeout),
        WaitStyle::Alarm => read_exact_alarm(fd, n, cfg.connect_timeout, alarm),
    };
    let header = match read(4, alarm)? {
        Got::Bytes(h) => h,
        other => return Ok(Err(other)),
    };
    let head = Header::parse([header[0], header[1], header[2], header[3]]);
    if head.len > 1 << 20 {
        return Ok(Ok((head.seq, Vec::new())));
    }
    match read(head.len as usize, alarm)? {
        Got::Bytes(body) => Ok(Ok((head.seq, body))),
        other => Ok(Err(other)),
    }
}

/// Read one command packet after the login (blocking, no timeout).
fn read_command(fd: RawFd) -> Result<Option<Vec<u8>>> {
    let mut header = [0u8; 4];
    if !read_blocking(fd, &mut header)? {
        return Ok(None);
    }
    let len = Header::parse(header).len as usize;
    let mut body = vec![0u8; len.min(1 << 20)];
    if !read_blocking(fd, &mut body)? {
        return Ok(None);
    }
    Ok(Some(body))
}

fn read_blocking(fd: RawFd, buf: &mut [u8]) -> Result<bool> {
    let mut have = 0;
    while have < buf.len() {
        // SAFETY: valid buffer.
        let r = unsafe { libc::read(fd, buf[have..].as_mut_ptr().cast(), buf.len() - have) };
        if r == 0 {
            return Ok(false);
        }
        if r < 0 {
            match errno() {
                libc::EINTR => continue,
                libc::EAGAIN => {
                    poll_fd(fd, libc::POLLIN, -1);
                    continue;
                }
                e => bail!("read: {}", std::io::Error::from_raw_os_error(e)),
            }
        }
        have += r as usize;
    }
    Ok(true)
}

fn converse(fd: RawFd, id: u32, peer: Option<SocketAddr>, cfg: &ServerConfig) -> Result<End> {
    set_nonblocking(fd, true);
    setsockopt_int(fd, libc::IPPROTO_TCP, libc::TCP_NODELAY, 1);
    if let (Some(resolver), Some(peer)) = (cfg.resolver, peer) {
        let started = Instant::now();
        let name = reverse_lookup(resolver, peer.ip());
        log(&format!("conn {id}: {} resolved to {name:?} in {:.1} ms", peer.ip(), started.elapsed().as_secs_f64() * 1e3));
    }
    let scramble = wire::random_scramble()?;
    let greeting = wire::greeting_packet(&wire::ServerHello { version: cfg.style.version(), connection_id: id, scramble: &scramble });
    write_all(fd, &greeting)?;

    let mut alarm = None;
    let login = read_handshake_packet(fd, cfg, &mut alarm)?;
    if let Some(a) = alarm.take() {
        thr_end_alarm(a);
    }
    let (seq, payload) = match login {
        Ok(p) => p,
        Err(Got::TimedOut(how)) => {
            if cfg.style == WaitStyle::Poll {
                // As MariaDB 10.x: reset the connection rather than linger.
                let l = libc::linger { l_onoff: 1, l_linger: 0 };
                // SAFETY: valid option buffer.
                unsafe { libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_LINGER, (&l as *const libc::linger).cast(), std::mem::size_of::<libc::linger>() as u32) };
            }
            return Ok(End::TimedOut(how));
        }
        Err(Got::Closed) => return Ok(End::Refused("the client closed before its login".into())),
        Err(Got::Bytes(_)) => unreachable!("bytes are Ok"),
    };
    set_nonblocking(fd, false);
    let next = seq.wrapping_add(1);
    if wire::is_ssl_request(&payload) {
        write_all(fd, &wire::err_packet(next, ER_HANDSHAKE_ERROR, "08S01", "The lab server does not speak TLS"))?;
        return Ok(End::Refused("refused TLS".into()));
    }
    let Some(req) = wire::parse_login(&payload) else {
        write_all(fd, &wire::err_packet(next, ER_HANDSHAKE_ERROR, "08S01", "Bad handshake"))?;
        return Ok(End::Refused("bad handshake".into()));
    };
    let host = peer.map(|p| if p.ip().is_loopback() { "localhost".to_string() } else { p.ip().to_string() }).unwrap_or_default();
    if req.login.user != LAB_USER || !wire::native_password_check(LAB_PASSWORD, &scramble, &req.auth_response) {
        let msg = format!(
            "Access denied for user '{}'@'{host}' (using password: {})",
            req.login.user,
            if req.auth_response.is_empty() { "NO" } else { "YES" }
        );
        write_all(fd, &wire::err_packet(next, ER_ACCESS_DENIED_ERROR, "28000", &msg))?;
        return Ok(End::Refused(format!("refused user '{}'", req.login.user)));
    }
    write_all(fd, &wire::ok_packet(next))?;
    log(&format!("conn {id}: user '{}' logged in", req.login.user));
    while let Some(cmd) = read_command(fd)? {
        match cmd.first().copied() {
            Some(COM_QUIT) | None => return Ok(End::Quit),
            Some(COM_QUERY) => {
                let query = String::from_utf8_lossy(&cmd[1..]).trim().to_string();
                write_all(fd, &answer(&query, id))?;
            }
            Some(COM_INIT_DB | COM_PING) => write_all(fd, &wire::ok_packet(1))?,
            Some(_) => write_all(fd, &wire::err_packet(1, ER_UNKNOWN_COM_ERROR, "08S01", "Unknown command"))?,
        }
    }
    Ok(End::Quit)
}

/// `SELECT <expr>` → one column named after the expression; anything else → OK.
fn answer(query: &str, id: u32) -> Vec<u8> {
    let lower = query.to_ascii_lowercase();
    let Some(expr) = lower.strip_prefix("select").map(str::trim) else { return wire::ok_packet(1) };
    let expr_orig = query[query.len() - expr.len()..].trim();
    let value = match expr {
        "connection_id()" => id.to_string(),
        "@@version_comment limit 1" | "@@version_comment" => "handshake-trace lab server".into(),
        "@@version" | "version()" => "handshake-trace lab".into(),
        _ => expr_orig.trim_matches(|c| c == '\'' || c == '"').to_string(),
    };
    wire::result_set(1, expr_orig, &[Some(value)])
}

// ---------- The alarm thread (alarm style) ----------

/// A registered alarm: (deadline, thread to signal, id).
struct AlarmQueue {
    entries: Vec<(Instant, libc::pthread_t, u64)>,
    next_id: u64,
}

pub struct AlarmId(u64);

static ALARMS: Mutex<AlarmQueue> = Mutex::new(AlarmQueue { entries: Vec::new(), next_id: 1 });
/// The POSIX timer (as usize) that wakes the alarm thread.
static TIMER: OnceLock<usize> = OnceLock::new();

extern "C" fn on_sigalrm(_: libc::c_int) {}

/// SIGALRM interrupts handler threads' blocking reads (no SA_RESTART); an alarm thread
/// with a timer aimed at itself decides whom to interrupt.
fn install_alarm_handling() -> Result<()> {
    // SAFETY: installing a no-op async-signal-safe handler.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigalrm as *const () as usize;
        sa.sa_flags = 0; // no SA_RESTART: the read fails with EINTR
        libc::sigemptyset(&mut sa.sa_mask);
        if libc::sigaction(libc::SIGALRM, &sa, std::ptr::null_mut()) != 0 {
            bail!("sigaction(SIGALRM): {}", std::io::Error::last_os_error());
        }
    }
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::Builder::new().name("lab-alarm".into()).spawn(move || alarm_thread(tx))?;
    let timer = rx.recv().context("alarm thread failed to start")??;
    TIMER.set(timer).ok();
    Ok(())
}

fn alarm_thread(ready: std::sync::mpsc::Sender<Result<usize>>) {
    // SAFETY: signal mask and timer setup for this thread only.
    let (set, timer) = unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGALRM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        let mut sev: libc::sigevent = std::mem::zeroed();
        sev.sigev_notify = libc::SIGEV_THREAD_ID;
        sev.sigev_signo = libc::SIGALRM;
        sev.sigev_notify_thread_id = libc::gettid();
        let mut timer: libc::timer_t = std::ptr::null_mut();
        if libc::timer_create(libc::CLOCK_MONOTONIC, &mut sev, &mut timer) != 0 {
            let _ = ready.send(Err(anyhow::anyhow!("timer_create: {}", std::io::Error::last_os_error())));
            return;
        }
        (set, timer as usize)
    };
    let _ = ready.send(Ok(timer));
    loop {
        // SAFETY: siginfo_t is plain old data: all zeroes is a valid value.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: valid set and info.
        if unsafe { libc::sigwaitinfo(&set, &mut info) } < 0 {
            continue;
        }
        let mut q = ALARMS.lock().unwrap();
        let now = Instant::now();
        let (due, rest): (Vec<_>, Vec<_>) = q.entries.drain(..).partition(|(d, _, _)| *d <= now);
        q.entries = rest;
        for (_, thread, _) in due {
            // SAFETY: the handler thread is alive: it unregisters before it ends.
            unsafe { libc::pthread_kill(thread, libc::SIGALRM) };
        }
        if let Some(next) = q.entries.iter().map(|e| e.0).min() {
            arm(next.saturating_duration_since(now));
        }
    }
}

/// Set the alarm thread's timer to fire in `d` (the tracer sees timer_settime).
fn arm(d: Duration) {
    let Some(&timer) = TIMER.get() else { return };
    let d = d.max(Duration::from_millis(1));
    let spec = libc::itimerspec {
        it_interval: libc::timespec { tv_sec: 0, tv_nsec: 0 },
        it_value: libc::timespec { tv_sec: d.as_secs() as i64, tv_nsec: d.subsec_nanos() as i64 },
    };
    // SAFETY: a timer we created.
    unsafe { libc::timer_settime(timer as libc::timer_t, 0, &spec, std::ptr::null_mut()) };
}

/// Register an alarm for the calling thread (MySQL's thr_alarm): arms the timer when
/// this deadline is the earliest.
fn thr_alarm(timeout: Duration) -> Result<AlarmId> {
    let mut q = ALARMS.lock().unwrap();
    let deadline = Instant::now() + timeout;
    let earliest = q.entries.iter().all(|e| e.0 > deadline);
    let id = q.next_id;
    q.next_id += 1;
    // SAFETY: pthread_self has no preconditions.
    q.entries.push((deadline, unsafe { libc::pthread_self() }, id));
    if earliest {
        arm(timeout);
    }
    Ok(AlarmId(id))
}

/// Unregister (MySQL's thr_end_alarm).
fn thr_end_alarm(a: AlarmId) {
    ALARMS.lock().unwrap().entries.retain(|e| e.2 != a.0);
}

// ---------- Name resolution before the greeting ----------

/// Reverse-resolve `ip` with a real DNS query over UDP to `resolver` (PTR), waiting up
/// to 10 s as a resolver library would. The answer's name, or why there is none.
fn reverse_lookup(resolver: SocketAddr, ip: IpAddr) -> Result<String, String> {
    let IpAddr::V4(v4) = ip else { return Err("IPv6 not supported by the lab resolver".into()) };
    let o = v4.octets();
    let qname = format!("{}.{}.{}.{}.in-addr.arpa", o[3], o[2], o[1], o[0]);
    let sock = UdpSocket::bind((std::net::Ipv4Addr::LOCALHOST, 0)).map_err(|e| e.to_string())?;
    sock.set_read_timeout(Some(Duration::from_secs(10))).map_err(|e| e.to_string())?;
    let query = super::dns::query(0x4854, &qname);
    sock.send_to(&query, resolver).map_err(|e| e.to_string())?;
    let mut buf = [0u8; 512];
    let n = sock.recv(&mut buf).map_err(|e| e.to_string())?;
    super::dns::answer_name(&buf[..n]).ok_or_else(|| "no PTR answer".into())
}
