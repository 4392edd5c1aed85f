//! Correlation: kernel events → one [`Handshake`] per accepted connection, from
//! accept to OK/ERR/close, with its timeline and verdict. Pure: no aya, no tokio,
//! no I/O, so it is tested on recorded and synthetic event sequences.
use std::{
    collections::VecDeque,
    net::SocketAddr,
};

use handshake_trace_common::sockopt::{SOL_SOCKET, SO_LINGER, SO_RCVTIMEO_NEW, SO_RCVTIMEO_OLD};

use crate::{
    events::{Accept, Errno, Event, Io, Signal, Syscall, SyscallKind, SyscallResult, Tcp, TcpWhat},
    support::int_hash::IntMap,
    protocol::{self, ClientPacket, ErrPacket, Greeting, Login, PacketStream, ServerPacket},
};

const EAGAIN: i32 = 11;
const EINTR: i32 = 4;
const ECONNRESET: i32 = 104;
const ETIMEDOUT: i32 = 110;
const SIGALRM: u32 = 14;
const O_NONBLOCK: u64 = 0o4000;

/// How a handshake ended, as JSON strings (docs/verdicts.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    AuthFailed,
    ServerError,
    ServerTimeout,
    ClientClosed,
    ClientReset,
    ServerClosed,
    Incomplete,
}

impl Verdict {
    pub fn as_str(self) -> &'static str {
        match self {
            Verdict::Ok => "ok",
            Verdict::AuthFailed => "auth_failed",
            Verdict::ServerError => "server_error",
            Verdict::ServerTimeout => "server_timeout",
            Verdict::ClientClosed => "client_closed",
            Verdict::ClientReset => "client_reset",
            Verdict::ServerClosed => "server_closed",
            Verdict::Incomplete => "incomplete",
        }
    }

    pub const ALL: [Verdict; 8] = [
        Verdict::Ok,
        Verdict::AuthFailed,
        Verdict::ServerError,
        Verdict::ServerTimeout,
        Verdict::ClientClosed,
        Verdict::ClientReset,
        Verdict::ServerClosed,
        Verdict::Incomplete,
    ];
}

/// How the server waited for the client when it timed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitMechanism {
    /// poll/ppoll/select with a timeout that expired.
    Poll,
    /// A blocking read interrupted by a signal (SIGALRM) from the server's alarm.
    AlarmEintr,
    /// A blocking read with SO_RCVTIMEO that expired (EAGAIN/ETIMEDOUT).
    SocketTimeout,
}

impl WaitMechanism {
    pub fn as_str(self) -> &'static str {
        match self {
            WaitMechanism::Poll => "poll",
            WaitMechanism::AlarmEintr => "alarm_eintr",
            WaitMechanism::SocketTimeout => "socket_timeout",
        }
    }
}

/// The wait that ended a `server_timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeoutWait {
    pub mechanism: WaitMechanism,
    /// The timeout the server asked for, when a syscall showed it.
    pub timeout_ms: Option<u64>,
    /// How long it actually waited.
    pub waited_ns: u64,
    /// What the server was waiting for ("the login packet", "more auth data").
    pub waiting_for: &'static str,
    /// Thread that sent the interrupting signal (alarm_eintr).
    pub signal_from: Option<u32>,
}

/// The server's reply to the login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ok,
    Err(ErrPacket),
}

/// One step of a timeline. Times are absolute (kernel monotonic ns).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    pub ts_ns: u64,
    pub tid: u32,
    pub what: StepKind,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepKind {
    Accepted { listen_fd: i32, client: Option<SocketAddr> },
    /// First syscall of a thread other than the accepting one on this connection.
    Handoff { from_tid: u32 },
    Read { syscall: SyscallKind, result: SyscallResult, requested: u64, nonblocking: bool, duration_ns: u64, packets: Vec<String> },
    Write { syscall: SyscallKind, result: SyscallResult, packets: Vec<String> },
    Wait { syscall: SyscallKind, timeout_ms: Option<u64>, result: SyscallResult, duration_ns: u64 },
    Blocking { nonblocking: bool },
    SocketOption { level: u64, name: u64, value: u64, value2: u64 },
    Timer { syscall: SyscallKind, ms: u64, result: SyscallResult },
    Kill { syscall: SyscallKind, target: u64, signal: u32 },
    Signal { signal: u32, from_tid: u32, to_tid: u32, delivered: bool },
    Tcp(TcpWhat),
    Shutdown { how: u64 },
    Close { result: SyscallResult, linger0: bool },
    TrackingEnd { reason: u64 },
    Note(String),
}

/// One connection's handshake.
#[derive(Debug)]
pub struct Handshake {
    pub pid: u32,
    pub fd: i32,
    pub gen: u64,
    pub accept_ns: u64,
    pub accept_tid: u32,
    pub listen_fd: i32,
    pub client: Option<SocketAddr>,
    pub server: Option<SocketAddr>,
    /// The client came over a Unix socket.
    pub unix: bool,
    pub handler_tid: Option<u32>,
    pub steps: Vec<Step>,
    pub greeting: Option<Greeting>,
    /// When the greeting (or an ERR instead of it) was written.
    pub greeting_ns: Option<u64>,
    pub login: Option<Login>,
    pub login_ns: Option<u64>,
    pub tls: bool,
    pub auth_switch: Option<String>,
    pub auth_rounds: u32,
    pub reply: Option<Reply>,
    pub reply_ns: Option<u64>,
    pub end_ns: Option<u64>,
    pub verdict: Option<Verdict>,
    pub timeout: Option<TimeoutWait>,
    /// Why the verdict, in words.
    pub reason: String,
    /// What the client most likely reported, for failures.
    pub client_error: Option<String>,
    // State used while following the connection.
    nonblocking: bool,
    rcvtimeo_ms: Option<u64>,
    linger0: bool,
    from_client: PacketStream,
    from_server: PacketStream,
    closed: bool,
    client_fin: bool,
    client_rst: bool,
    rst_sent: bool,
    last_wait: Option<(SyscallKind, Option<u64>, SyscallResult, u64)>,
    last_read: Option<(SyscallResult, bool, u64, u64)>,
    last_signal: Option<(u32, u32, u64)>,
    /// The last SIGALRM generated for the handler: (sender tid, ts).
    sigalrm: Option<(u32, u64)>,
    tracking_ended: Option<u64>,
    /// Timers armed in the process by threads with no connection: (ts, tid, ms).
    process_timers: Vec<(u64, u32, u64)>,
}

impl Handshake {
    fn new(a: &Accept, server: Option<SocketAddr>) -> Self {
        let fd = a.fd().unwrap_or(-1);
        Handshake {
            pid: a.pid,
            fd,
            gen: a.conn_gen,
            accept_ns: a.ts_ns,
            accept_tid: a.tid,
            listen_fd: a.listen_fd,
            client: a.peer,
            server,
            unix: a.unix,
            handler_tid: None,
            steps: vec![Step { ts_ns: a.ts_ns, tid: a.tid, what: StepKind::Accepted { listen_fd: a.listen_fd, client: a.peer } }],
            greeting: None,
            greeting_ns: None,
            login: None,
            login_ns: None,
            tls: false,
            auth_switch: None,
            auth_rounds: 0,
            reply: None,
            reply_ns: None,
            end_ns: None,
            verdict: None,
            timeout: None,
            reason: String::new(),
            client_error: None,
            nonblocking: false,
            rcvtimeo_ms: None,
            linger0: false,
            from_client: PacketStream::new(),
            from_server: PacketStream::new(),
            closed: false,
            client_fin: false,
            client_rst: false,
            rst_sent: false,
            last_wait: None,
            last_read: None,
            last_signal: None,
            sigalrm: None,
            tracking_ended: None,
            process_timers: Vec::new(),
        }
    }

    fn step(&mut self, ts_ns: u64, tid: u32, what: StepKind) {
        self.steps.push(Step { ts_ns, tid, what });
    }

    /// Milliseconds from accept to `ts`.
    pub fn ms_since_accept(&self, ts_ns: u64) -> f64 {
        ts_ns.saturating_sub(self.accept_ns) as f64 / 1e6
    }

    /// Total duration, accept to end (or to the last step when still open).
    pub fn total_ns(&self) -> u64 {
        let end = self.end_ns.or_else(|| self.steps.last().map(|s| s.ts_ns)).unwrap_or(self.accept_ns);
        end.saturating_sub(self.accept_ns)
    }

    /// The phases, in ns: accept→greeting, greeting→login, login→reply, accept→end.
    pub fn phases(&self) -> Phases {
        let d = |a: Option<u64>, b: Option<u64>| match (a, b) {
            (Some(a), Some(b)) if b >= a => Some(b - a),
            _ => None,
        };
        Phases {
            handoff_ns: self.steps.iter().find(|s| matches!(s.what, StepKind::Handoff { .. })).map(|s| s.ts_ns - self.accept_ns),
            to_greeting_ns: d(Some(self.accept_ns), self.greeting_ns),
            to_login_ns: d(self.greeting_ns, self.login_ns),
            to_reply_ns: d(self.login_ns, self.reply_ns),
            total_ns: self.total_ns(),
        }
    }

    fn on_syscall(&mut self, s: &Syscall) {
        if s.tid != self.accept_tid && self.handler_tid.is_none() {
            self.handler_tid = Some(s.tid);
            self.step(s.ts_ns, s.tid, StepKind::Handoff { from_tid: self.accept_tid });
        }
        match s.kind {
            SyscallKind::Fcntl => {
                let nb = s.args[1] & O_NONBLOCK != 0;
                self.nonblocking = nb;
                self.step(s.ts_ns, s.tid, StepKind::Blocking { nonblocking: nb });
            }
            SyscallKind::Setsockopt => {
                let (level, name) = (s.args[0], s.args[1] & 0xffff_ffff);
                let (value, value2) = (s.args[2], s.args[3]);
                if level == SOL_SOCKET && name == SO_LINGER {
                    // struct linger { int l_onoff; int l_linger; }
                    self.linger0 = value & 0xffff_ffff != 0 && value >> 32 == 0;
                }
                if level == SOL_SOCKET && matches!(name, SO_RCVTIMEO_OLD | SO_RCVTIMEO_NEW) {
                    let ms = value * 1000 + value2 / 1000;
                    self.rcvtimeo_ms = (ms > 0).then_some(ms);
                }
                self.step(s.ts_ns, s.tid, StepKind::SocketOption { level, name, value, value2 });
            }
            k if k.is_wait() => {
                let timeout = (s.args[1] != u64::MAX).then_some(s.args[1]);
                self.last_wait = Some((k, timeout, s.result, s.duration_ns));
                self.step(s.ts_ns, s.tid, StepKind::Wait { syscall: k, timeout_ms: timeout, result: s.result, duration_ns: s.duration_ns });
            }
            k if k.is_timer() => {
                self.step(s.ts_ns, s.tid, StepKind::Timer { syscall: k, ms: s.args[0], result: s.result });
            }
            SyscallKind::Kill | SyscallKind::Tkill | SyscallKind::Tgkill => {
                self.step(s.ts_ns, s.tid, StepKind::Kill { syscall: s.kind, target: s.args[0], signal: s.args[1] as u32 });
            }
            SyscallKind::Shutdown => self.step(s.ts_ns, s.tid, StepKind::Shutdown { how: s.args[0] }),
            SyscallKind::Close => {
                self.closed = true;
                self.end_ns = Some(s.ts_ns);
                let linger0 = self.linger0;
                self.step(s.ts_ns, s.tid, StepKind::Close { result: s.result, linger0 });
            }
            SyscallKind::TrackingEnd => self.end_tracking(s.ts_ns, s.tid, s.args[0]),
            _ => {}
        }
    }

    fn on_io(&mut self, io: &Io) {
        let s = &io.sys;
        if s.tid != self.accept_tid && self.handler_tid.is_none() {
            self.handler_tid = Some(s.tid);
            self.step(s.ts_ns, s.tid, StepKind::Handoff { from_tid: self.accept_tid });
        }
        let total = match s.result {
            SyscallResult::Ok(n) if n > 0 => n as usize,
            _ => 0,
        };
        let mut described = Vec::new();
        if s.kind.is_read() {
            self.last_read = Some((s.result, self.nonblocking, s.duration_ns, s.ts_ns));
            if total > 0 && !self.tls {
                for p in self.from_client.feed(&io.payload, total) {
                    described.push(self.on_client_packet(&p, s.ts_ns));
                }
            } else if total > 0 && self.tls {
                described.push(format!("{total} bytes of TLS"));
            }
            if s.result == SyscallResult::Ok(0) {
                self.client_fin = true;
            }
            if s.result == SyscallResult::Err(Errno(ECONNRESET)) {
                self.client_rst = true;
            }
            if total > 0 && self.tls_start(&io.payload) {
                described.push("TLS ClientHello".into());
            }
            self.step(s.ts_ns, s.tid, StepKind::Read {
                syscall: s.kind,
                result: s.result,
                requested: s.args[0],
                nonblocking: self.nonblocking,
                duration_ns: s.duration_ns,
                packets: described,
            });
        } else {
            if total > 0 && !self.tls {
                for p in self.from_server.feed(&io.payload, total) {
                    described.push(self.on_server_packet(&p, s.ts_ns));
                }
            } else if total > 0 {
                described.push(format!("{total} bytes of TLS"));
            }
            self.step(s.ts_ns, s.tid, StepKind::Write { syscall: s.kind, result: s.result, packets: described });
        }
        if let Some(reason) = io.tracking_end {
            self.end_tracking(s.ts_ns, s.tid, reason);
        }
    }

    /// The kernel stopped tracing the connection (its own record, or riding on the I/O that ended it).
    fn end_tracking(&mut self, ts_ns: u64, tid: u32, reason: u64) {
        self.tracking_ended = Some(reason);
        self.step(ts_ns, tid, StepKind::TrackingEnd { reason });
    }

    /// A TLS handshake record where a MySQL packet would be: from here on, lengths only.
    fn tls_start(&mut self, payload: &[u8]) -> bool {
        if !self.tls && payload.len() >= 2 && payload[0] == 0x16 && payload[1] == 0x03 {
            self.tls = true;
            return true;
        }
        false
    }

    fn on_client_packet(&mut self, p: &protocol::Packet, ts: u64) -> String {
        let expecting_login = self.login.is_none() && !self.tls;
        match protocol::decode_client(p, expecting_login) {
            ClientPacket::SslRequest(_) => {
                self.tls = true;
                self.login_ns.get_or_insert(ts);
                "SSLRequest (the client switches to TLS)".into()
            }
            ClientPacket::Login(l) => {
                let text = format!(
                    "login: user '{}'{}{}, auth response {} bytes",
                    l.user,
                    l.database.as_deref().map(|d| format!(", database '{d}'")).unwrap_or_default(),
                    l.auth_plugin.as_deref().map(|a| format!(", plugin {a}")).unwrap_or_default(),
                    l.auth_response_len
                );
                self.login = Some(l);
                self.login_ns = Some(ts);
                text
            }
            ClientPacket::AuthData { len } => {
                self.auth_rounds += 1;
                format!("auth data, {len} bytes")
            }
            ClientPacket::Other { len } => format!("client packet of {len} bytes"),
        }
    }

    fn on_server_packet(&mut self, p: &protocol::Packet, ts: u64) -> String {
        match protocol::decode_server(p, self.greeting.is_some()) {
            ServerPacket::Greeting(g) => {
                let text = format!(
                    "greeting: protocol {}, server {}, connection id {}, plugin {}",
                    g.protocol,
                    g.server_version,
                    g.connection_id,
                    g.auth_plugin.as_deref().unwrap_or("-")
                );
                self.greeting = Some(g);
                self.greeting_ns = Some(ts);
                text
            }
            ServerPacket::Ok(_) => {
                self.reply = Some(Reply::Ok);
                self.reply_ns = Some(ts);
                "OK: logged in".into()
            }
            ServerPacket::Err(e) => {
                let text = format!(
                    "ERR {} ({}){}: {}",
                    e.code,
                    protocol::error_name(e.code).unwrap_or("?"),
                    e.sqlstate.as_deref().map(|s| format!(" [{s}]")).unwrap_or_default(),
                    e.message
                );
                if self.greeting_ns.is_none() {
                    self.greeting_ns = Some(ts);
                }
                self.reply = Some(Reply::Err(e));
                self.reply_ns = Some(ts);
                text
            }
            ServerPacket::AuthSwitch(a) => {
                let text = format!("auth switch to {} ({} bytes of plugin data)", a.plugin, a.data_len);
                self.auth_switch = Some(a.plugin);
                text
            }
            ServerPacket::AuthMoreData { len } => format!("auth more data, {len} bytes"),
            ServerPacket::Other { first_byte, len } => format!("server packet 0x{first_byte:02x} of {len} bytes"),
        }
    }

    fn on_signal(&mut self, s: &Signal) {
        // signal_generate names the sender; signal_deliver runs in the receiver.
        let from = if s.delivered { self.last_signal.map(|l| l.1).unwrap_or(0) } else { s.tid };
        self.last_signal = Some((s.signal, from, s.ts_ns));
        if s.signal == SIGALRM && !s.delivered {
            self.sigalrm = Some((s.tid, s.ts_ns));
        }
        self.step(s.ts_ns, s.tid, StepKind::Signal { signal: s.signal, from_tid: from, to_tid: s.target_tid, delivered: s.delivered });
    }

    fn on_tcp(&mut self, t: &Tcp) {
        match t.what {
            TcpWhat::ReceiveReset => self.client_rst = true,
            TcpWhat::SendReset => self.rst_sent = true,
            _ => {}
        }
        self.step(t.ts_ns, 0, StepKind::Tcp(t.what));
    }

    /// Is the handshake over (reply seen, closed, or no longer traced)?
    fn finished(&self) -> bool {
        self.closed || self.tracking_ended.is_some()
    }

    /// Decide the verdict. `open_at_end` = tracing stopped (or the process exited) first.
    fn conclude(&mut self, open_at_end: bool, end_ns: u64) {
        let (verdict, reason) = self.judge(open_at_end);
        self.verdict = Some(verdict);
        self.reason = reason;
        self.end_ns.get_or_insert(end_ns);
        self.client_error = self.likely_client_error(verdict);
    }

    fn judge(&mut self, open_at_end: bool) -> (Verdict, String) {
        match &self.reply {
            Some(Reply::Ok) => return (Verdict::Ok, "the server sent OK to the login".into()),
            Some(Reply::Err(e)) => {
                let name = protocol::error_name(e.code).unwrap_or("unknown error");
                return if protocol::is_auth_error(e.code) {
                    (Verdict::AuthFailed, format!("the server refused the login: ERR {} {name}", e.code))
                } else {
                    (Verdict::ServerError, format!("the server sent ERR {} {name}", e.code))
                };
            }
            None => {}
        }
        if self.tracking_ended == Some(handshake_trace_common::end::TLS_BUDGET) {
            return self.tls_command_phase().unwrap_or((
                Verdict::Ok,
                "TLS: the reply is encrypted; the connection went on past the handshake".into(),
            ));
        }
        if !self.closed {
            return (Verdict::Incomplete, if open_at_end { "still open when tracing stopped".into() } else { "not seen to end".into() });
        }
        let timeout = self.timeout_wait();
        if self.tls && timeout.is_none() {
            if let Some(v) = self.tls_close() {
                return v;
            }
        }
        if let Some(t) = timeout {
            let why = match t.mechanism {
                WaitMechanism::Poll => format!(
                    "the server waited {:.1} ms for {} (poll, timeout {}), gave up and closed{}",
                    t.waited_ns as f64 / 1e6,
                    t.waiting_for,
                    t.timeout_ms.map(|m| format!("{m} ms")).unwrap_or_else(|| "none".into()),
                    if self.linger0 { " with a reset (SO_LINGER 0), sending no error" } else { " without sending an error" }
                ),
                WaitMechanism::AlarmEintr => format!(
                    "the server's blocking read for {} was interrupted by SIGALRM after {:.1} ms; it closed without sending an error",
                    t.waiting_for,
                    t.waited_ns as f64 / 1e6
                ),
                WaitMechanism::SocketTimeout => format!(
                    "the server's read for {} timed out after {:.1} ms (SO_RCVTIMEO); it closed without sending an error",
                    t.waiting_for,
                    t.waited_ns as f64 / 1e6
                ),
            };
            self.timeout = Some(t);
            return (Verdict::ServerTimeout, why);
        }
        let slow_greeting = self.slow_greeting_note();
        if self.client_rst {
            return (Verdict::ClientReset, format!("the client reset the connection (RST) before the handshake ended{slow_greeting}"));
        }
        if self.client_fin {
            return (Verdict::ClientClosed, format!("the client closed the connection (read returned 0) before the handshake ended{slow_greeting}"));
        }
        (Verdict::ServerClosed, "the server closed the connection without a reply, for a reason not seen in its syscalls".into())
    }

    /// A TLS connection closed within its traced budget: the reply is encrypted, so
    /// judge by who acted last. A client that logged in and quit leaves the server
    /// reading (its COM_QUIT); a refused login ends with the server writing and closing.
    fn tls_close(&self) -> Option<(Verdict, String)> {
        if let Some(v) = self.tls_command_phase() {
            return Some(v);
        }
        let tls_reads = self.steps.iter().filter(|s| matches!(&s.what, StepKind::Read { result: SyscallResult::Ok(n), .. } if *n > 0)).count();
        let writes = self.steps.iter().filter(|s| matches!(&s.what, StepKind::Write { .. })).count();
        // Greeting + TLS server flight at least, and the client's hello, finish and login.
        if writes < 3 || tls_reads < 4 {
            return None;
        }
        let last = self.steps.iter().rev().find_map(|s| match &s.what {
            StepKind::Read { result: SyscallResult::Ok(n), .. } if *n > 0 => Some(true),
            StepKind::Write { .. } => Some(false),
            _ => None,
        })?;
        Some(if last {
            (Verdict::Ok, "TLS: the client logged in and quit (inferred: the reply is encrypted; the server read the client's last request and closed)".into())
        } else {
            (Verdict::ServerClosed, "TLS: the server closed right after an encrypted reply, most likely an ERR (OK and ERR cannot be told apart inside TLS)".into())
        })
    }

    /// After a login the server waits for commands with `wait_timeout` instead of
    /// `connect_timeout`: a change of wait timeout inside TLS means the login succeeded.
    fn tls_command_phase(&self) -> Option<(Verdict, String)> {
        let mut waits = self.steps.iter().filter_map(|s| match &s.what {
            StepKind::Wait { timeout_ms: Some(t), .. } => Some(*t),
            _ => None,
        });
        let first = waits.next()?;
        let later = waits.find(|t| *t != first)?;
        Some((
            Verdict::Ok,
            format!(
                "TLS: the server moved on to waiting for commands (wait timeout {later} ms instead of the handshake's {first} ms): logged in; the OK itself is encrypted"
            ),
        ))
    }

    /// When the greeting came late (or never), the client probably gave up waiting for it.
    fn slow_greeting_note(&self) -> String {
        const SLOW_NS: u64 = 500_000_000;
        match self.greeting_ns {
            Some(g) if g - self.accept_ns >= SLOW_NS && self.login.is_none() => format!(
                "; the server took {:.1} ms to send its greeting, so the client most likely gave up waiting for it",
                (g - self.accept_ns) as f64 / 1e6
            ),
            None if self.end_ns.unwrap_or(0).saturating_sub(self.accept_ns) >= SLOW_NS => {
                "; the server had not sent its greeting yet, so the client most likely gave up waiting for it".into()
            }
            _ => String::new(),
        }
    }

    fn waiting_for(&self) -> &'static str {
        if self.greeting_ns.is_none() {
            "nothing (before the greeting)"
        } else if self.login.is_none() && !self.tls {
            "the login packet"
        } else if self.tls {
            "TLS data"
        } else {
            "more auth data"
        }
    }

    /// The last wait before the close, if it timed out.
    fn timeout_wait(&self) -> Option<TimeoutWait> {
        let waiting_for = self.waiting_for();
        let (read_result, read_nonblocking, read_dur, read_ts) = self.last_read.unwrap_or((SyscallResult::Ok(1), true, 0, 0));
        // Blocking read interrupted by a signal: EINTR or a restart code, with SIGALRM seen.
        if let SyscallResult::Err(e) = read_result {
            if !read_nonblocking && (e.0 == EINTR || e.is_restart()) {
                // A SIGALRM generated for the handler during the handshake, before the read returned.
                let sig = self.sigalrm.filter(|(_, ts)| *ts <= read_ts && *ts >= self.accept_ns);
                if sig.is_some() || e.0 == EINTR {
                    return Some(TimeoutWait {
                        mechanism: WaitMechanism::AlarmEintr,
                        timeout_ms: self.armed_timer_ms(),
                        waited_ns: read_dur,
                        waiting_for,
                        signal_from: sig.map(|s| s.0).filter(|t| *t != 0),
                    });
                }
            }
            if !read_nonblocking && (e.0 == EAGAIN || e.0 == ETIMEDOUT) && self.rcvtimeo_ms.is_some() {
                return Some(TimeoutWait {
                    mechanism: WaitMechanism::SocketTimeout,
                    timeout_ms: self.rcvtimeo_ms,
                    waited_ns: read_dur,
                    waiting_for,
                    signal_from: None,
                });
            }
        }
        // The last wait returned 0 ready descriptors: its timeout expired.
        if let Some((_, timeout, SyscallResult::Ok(0), dur)) = self.last_wait {
            let after_last_read = self.steps.iter().rev().find_map(|s| match &s.what {
                StepKind::Wait { .. } => Some(true),
                StepKind::Read { .. } => Some(false),
                _ => None,
            });
            if after_last_read == Some(true) {
                return Some(TimeoutWait { mechanism: WaitMechanism::Poll, timeout_ms: timeout, waited_ns: dur, waiting_for, signal_from: None });
            }
        }
        None
    }

    /// The timer armed most recently for this connection: by its own thread, else
    /// by another thread of the process (an alarm thread) during the handshake.
    fn armed_timer_ms(&self) -> Option<u64> {
        let own = self.steps.iter().rev().find_map(|s| match s.what {
            StepKind::Timer { ms, .. } if ms > 0 => Some(ms),
            _ => None,
        });
        let until = self.sigalrm.map(|s| s.1).unwrap_or(u64::MAX);
        own.or_else(|| {
            self.process_timers.iter().rev().find(|(ts, _, _)| *ts >= self.accept_ns && *ts <= until).map(|t| t.2)
        })
    }

    fn likely_client_error(&self, v: Verdict) -> Option<String> {
        let stage = if self.greeting_ns.is_none() {
            "handshake: reading initial communication packet"
        } else {
            "reading authorization packet"
        };
        match v {
            Verdict::Ok | Verdict::ClientClosed | Verdict::ClientReset | Verdict::Incomplete => None,
            Verdict::AuthFailed | Verdict::ServerError => match &self.reply {
                Some(Reply::Err(e)) => Some(format!(
                    "ERROR {} ({}): {}",
                    e.code,
                    e.sqlstate.as_deref().unwrap_or("HY000"),
                    e.message
                )),
                _ => None,
            },
            Verdict::ServerTimeout | Verdict::ServerClosed => {
                let errno = if self.linger0 || self.rst_sent { 104 } else { 0 };
                Some(format!("ERROR 2013 (HY000): Lost connection to server at '{stage}', system error: {errno}"))
            }
        }
    }
}

/// Phase durations in ns (None when a phase did not happen).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Phases {
    pub handoff_ns: Option<u64>,
    pub to_greeting_ns: Option<u64>,
    pub to_login_ns: Option<u64>,
    pub to_reply_ns: Option<u64>,
    pub total_ns: u64,
}

/// Key of a connection: process, fd, generation.
type Key = (u32, i32, u64);

/// Follows every connection; hands back finished handshakes.
#[derive(Debug, Default)]
pub struct Correlator {
    open: IntMap<Key, Handshake>,
    /// Open connections in accept order, for evicting the oldest past `max_open`. Keys of
    /// handshakes that already ended stay until eviction or compaction skips them.
    order: VecDeque<Key>,
    /// Events for connections accepted before tracing started (counted, not timed).
    pub unmatched: u64,
    /// Bound on open handshakes kept in memory; the oldest is concluded `incomplete` past it.
    pub max_open: usize,
    /// Timers armed by threads with no connection (an alarm thread), per process: (ts, tid, ms).
    process_timers: IntMap<u32, VecDeque<(u64, u32, u64)>>,
    /// Generation of the newest connection accepted on each (process, fd).
    newest_on_fd: IntMap<(u32, i32), u64>,
    /// Open connections whose fd number a newer accept reused, oldest first: (when, key).
    /// The kernel frees the number inside close(), before close's record is written, so
    /// the new accept's record can come first; each waits `FD_REUSE_GRACE_NS` for its close.
    fd_reused: VecDeque<(u64, Key)>,
}

/// How long a connection whose fd was reused may still get its close (trace time).
const FD_REUSE_GRACE_NS: u64 = 200_000_000;

/// Timers remembered per process for `alarm_eintr` (the last few are enough).
const TIMERS_KEPT: usize = 16;

impl Correlator {
    pub fn new(max_open: usize) -> Self {
        Correlator { max_open, ..Default::default() }
    }

    pub fn open_count(&self) -> usize {
        self.open.len()
    }

    /// Feed one event; returns the handshakes it finished. `server` is the listening
    /// address of an accept, when the caller knows it.
    pub fn push(&mut self, event: &Event, server: Option<SocketAddr>) -> Vec<Handshake> {
        let mut done = Vec::new();
        self.expire_reused(event.ts_ns(), &mut done);
        match event {
            Event::Accept(a) => {
                let Some(fd) = a.fd() else { return done };
                let key = (a.pid, fd, a.conn_gen);
                // The fd number is reused: the connection that had it is closing (its
                // close record may still come) or ended unseen.
                if let Some(old) = self.newest_on_fd.insert((a.pid, fd), a.conn_gen) {
                    if old != a.conn_gen && self.open.contains_key(&(a.pid, fd, old)) {
                        self.fd_reused.push_back((a.ts_ns, (a.pid, fd, old)));
                    }
                }
                self.open.insert(key, Handshake::new(a, server));
                self.order.push_back(key);
                // Drop the keys of ended handshakes now and then, not once per handshake.
                if self.order.len() > 2 * self.max_open.max(1) {
                    let open = &self.open;
                    self.order.retain(|k| open.contains_key(k));
                }
                while self.open.len() > self.max_open.max(1) {
                    let Some(oldest) = self.order.pop_front() else { break };
                    if let Some(mut h) = self.open.remove(&oldest) {
                        h.step(a.ts_ns, 0, StepKind::Note("dropped: too many handshakes open at once".into()));
                        h.conclude(true, a.ts_ns);
                        done.push(h);
                    }
                }
            }
            Event::Syscall(s) if s.fd < 0 => {
                // A timer or kill by a thread with no connection of its own.
                if s.kind.is_timer() && s.args[0] > 0 {
                    let q = self.process_timers.entry(s.pid).or_default();
                    q.push_back((s.ts_ns, s.tid, s.args[0]));
                    if q.len() > TIMERS_KEPT {
                        q.pop_front();
                    }
                }
            }
            Event::Syscall(s) => {
                if let Some(h) = self.get(s.pid, s.fd, s.conn_gen) {
                    h.on_syscall(s);
                }
                self.collect_finished(s.pid, s.fd, s.conn_gen, &mut done);
            }
            Event::Io(io) => {
                let s = &io.sys;
                if let Some(h) = self.get(s.pid, s.fd, s.conn_gen) {
                    h.on_io(io);
                }
                self.collect_finished(s.pid, s.fd, s.conn_gen, &mut done);
            }
            Event::Signal(sig) => {
                if let Some(h) = self.get(sig.pid, sig.fd, sig.conn_gen) {
                    h.on_signal(sig);
                }
            }
            Event::Tcp(t) => {
                if let Some(h) = self.get(t.pid, t.fd, t.conn_gen) {
                    h.on_tcp(t);
                }
            }
            Event::ProcessExit { ts_ns, pid } => {
                self.process_timers.remove(pid);
                self.newest_on_fd.retain(|k, _| k.0 != *pid);
                let keys: Vec<Key> = self.open.keys().filter(|k| k.0 == *pid).copied().collect();
                for k in keys {
                    if let Some(mut h) = self.open.remove(&k) {
                        h.step(*ts_ns, 0, StepKind::Note(format!("process {pid} exited")));
                        h.conclude(true, *ts_ns);
                        done.push(h);
                    }
                }
            }
        }
        done
    }

    fn get(&mut self, pid: u32, fd: i32, gen: u64) -> Option<&mut Handshake> {
        let h = self.open.get_mut(&(pid, fd, gen));
        if h.is_none() {
            self.unmatched += 1;
        }
        h
    }

    /// Conclude the connections whose fd was reused and whose close did not come in time.
    fn expire_reused(&mut self, now_ns: u64, done: &mut Vec<Handshake>) {
        while let Some(&(at, key)) = self.fd_reused.front() {
            if now_ns.saturating_sub(at) < FD_REUSE_GRACE_NS {
                break;
            }
            self.fd_reused.pop_front();
            if let Some(mut h) = self.open.remove(&key) {
                h.conclude(false, at);
                done.push(h);
            }
        }
    }

    fn collect_finished(&mut self, pid: u32, fd: i32, gen: u64, done: &mut Vec<Handshake>) {
        let key = (pid, fd, gen);
        if self.open.get(&key).is_some_and(|h| h.finished()) {
            let mut h = self.open.remove(&key).expect("present");
            if let Some(t) = self.process_timers.get(&pid) {
                h.process_timers = t.iter().copied().collect();
            }
            let end = h.steps.last().map(|s| s.ts_ns).unwrap_or(h.accept_ns);
            h.conclude(false, end);
            done.push(h);
        }
    }

    /// Tracing stops: every open handshake ends `incomplete`.
    pub fn finish_all(&mut self, now_ns: u64) -> Vec<Handshake> {
        let mut done: Vec<Handshake> = self
            .open
            .drain()
            .map(|(_, mut h)| {
                h.conclude(true, now_ns);
                h
            })
            .collect();
        done.sort_by_key(|h| h.accept_ns);
        self.order.clear();
        self.fd_reused.clear();
        self.newest_on_fd.clear();
        done
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::{Errno, Signal};

    const PID: u32 = 20752;
    const MAIN: u32 = 20752;
    const HANDLER: u32 = 20766;
    const FD: i32 = 43;
    const GEN: u64 = 1_000_000;
    const MS: u64 = 1_000_000;

    fn accept_at(ts: u64, gen: u64) -> Event {
        Event::Accept(Accept {
            ts_ns: ts,
            conn_gen: gen,
            pid: PID,
            tid: MAIN,
            listen_fd: 20,
            result: SyscallResult::Ok(FD as i64),
            peer: Some("127.0.0.1:47460".parse().unwrap()),
            unix: false,
        })
    }

    fn sys_gen(ts: u64, gen: u64, kind: SyscallKind, ret: i64, dur: u64, args: [u64; 4]) -> Event {
        Event::Syscall(Syscall { ts_ns: ts, pid: PID, tid: HANDLER, conn_gen: gen, fd: FD, kind, result: ret.into(), duration_ns: dur, args })
    }

    fn sys(ts: u64, kind: SyscallKind, ret: i64, dur: u64, args: [u64; 4]) -> Event {
        sys_gen(ts, GEN, kind, ret, dur, args)
    }

    fn io_gen(ts: u64, gen: u64, kind: SyscallKind, ret: i64, requested: u64, payload: &[u8]) -> Event {
        match sys_gen(ts, gen, kind, ret, 1000, [requested, 64, 0, 0]) {
            Event::Syscall(s) => Event::Io(Io { sys: s, payload: payload.to_vec(), tracking_end: None }),
            _ => unreachable!(),
        }
    }

    fn io(ts: u64, kind: SyscallKind, ret: i64, requested: u64, payload: &[u8]) -> Event {
        io_gen(ts, GEN, kind, ret, requested, payload)
    }

    fn packet(seq: u8, body: &[u8]) -> Vec<u8> {
        let n = body.len();
        let mut p = vec![n as u8, (n >> 8) as u8, (n >> 16) as u8, seq];
        p.extend_from_slice(body);
        p
    }

    /// A MariaDB 10.11 greeting (protocol 10), scramble filled with 'x'.
    fn greeting() -> Vec<u8> {
        let mut b = vec![10];
        b.extend_from_slice(b"5.5.5-10.11.19-MariaDB-0+deb12u1\0");
        b.extend_from_slice(&9u32.to_le_bytes());
        b.extend_from_slice(b"xxxxxxxx\0");
        b.extend_from_slice(&0xf7feu16.to_le_bytes());
        b.push(45);
        b.extend_from_slice(&2u16.to_le_bytes());
        b.extend_from_slice(&0x81bfu16.to_le_bytes());
        b.push(21);
        b.extend_from_slice(&[0; 6]);
        b.extend_from_slice(&0x1du32.to_le_bytes());
        b.extend_from_slice(b"xxxxxxxxxxxx\0");
        b.extend_from_slice(b"mysql_native_password\0");
        packet(0, &b)
    }

    const SECRET: [u8; 20] = [0xA5; 20];

    /// HandshakeResponse41 body for user 'lab' with a 20-byte auth response.
    fn login_body(db: Option<&str>) -> Vec<u8> {
        let mut caps: u32 = 0x0200 | 0x8000 | 0x0008_0000 | 0x0020_0000;
        if db.is_some() {
            caps |= 0x0008;
        }
        let mut b = caps.to_le_bytes().to_vec();
        b.extend_from_slice(&(1u32 << 24).to_le_bytes());
        b.push(33);
        b.extend_from_slice(&[0; 23]);
        b.extend_from_slice(b"lab\0");
        b.push(20);
        b.extend_from_slice(&SECRET);
        if let Some(d) = db {
            b.extend_from_slice(d.as_bytes());
            b.push(0);
        }
        b.extend_from_slice(b"mysql_native_password\0");
        b
    }

    fn ok_packet() -> Vec<u8> {
        packet(2, &[0, 0, 0, 2, 0, 0, 0])
    }

    fn err_packet(seq: u8, code: u16, state: &str, msg: &str) -> Vec<u8> {
        let mut b = vec![0xff];
        b.extend_from_slice(&code.to_le_bytes());
        b.push(b'#');
        b.extend_from_slice(state.as_bytes());
        b.extend_from_slice(msg.as_bytes());
        packet(seq, &b)
    }

    /// accept, handoff, O_NONBLOCK, greeting: what MariaDB does before waiting.
    fn prelude(t0: u64) -> Vec<Event> {
        let g = greeting();
        vec![
            accept_at(t0, GEN),
            sys(t0 + 124_000, SyscallKind::Fcntl, 0, 1500, [4, 0o4000, 0, 0]),
            sys(t0 + 158_000, SyscallKind::Setsockopt, 0, 500, [0, 1 | (4 << 32), 8, 0]),
            io(t0 + 219_000, SyscallKind::Sendto, g.len() as i64, g.len() as u64, &g),
        ]
    }

    fn run(events: &[Event]) -> (Vec<Handshake>, Correlator) {
        let mut c = Correlator::new(100);
        let mut done = Vec::new();
        for e in events {
            done.extend(c.push(e, Some("127.0.0.1:3399".parse().unwrap())));
        }
        (done, c)
    }

    fn only(events: &[Event]) -> Handshake {
        let (mut done, c) = run(events);
        assert_eq!(done.len(), 1, "{done:#?}");
        assert_eq!(c.open_count(), 0);
        done.remove(0)
    }

    #[test]
    fn successful_login_split_across_header_and_body_reads() {
        let mut ev = prelude(GEN);
        let body = login_body(Some("shop"));
        let full = packet(1, &body);
        ev.push(io(GEN + 300_000, SyscallKind::Recvfrom, 4, 4, &full[..4]));
        // The body arrives in two reads.
        ev.push(io(GEN + 310_000, SyscallKind::Recvfrom, 10, body.len() as u64, &body[..10]));
        ev.push(io(GEN + 320_000, SyscallKind::Recvfrom, (body.len() - 10) as i64, (body.len() - 10) as u64, &body[10..]));
        let ok = ok_packet();
        ev.push(io(GEN + 900_000, SyscallKind::Sendto, ok.len() as i64, ok.len() as u64, &ok));
        ev.push(sys(GEN + 910_000, SyscallKind::TrackingEnd, 0, 0, [1, 0, 0, 0]));
        let h = only(&ev);
        assert_eq!(h.verdict, Some(Verdict::Ok));
        let login = h.login.as_ref().expect("login decoded");
        assert_eq!(login.user, "lab");
        assert_eq!(login.database.as_deref(), Some("shop"));
        assert_eq!(h.greeting.as_ref().unwrap().connection_id, 9);
        assert_eq!(h.handler_tid, Some(HANDLER));
        let p = h.phases();
        assert_eq!(p.to_greeting_ns, Some(219_000));
        assert_eq!(p.to_login_ns, Some(320_000 - 219_000));
        assert_eq!(p.to_reply_ns, Some(900_000 - 320_000));
        assert_eq!(h.client_error, None);
    }

    /// The real MariaDB 10.11 sequence with connect_timeout=2 and a silent client.
    #[test]
    fn poll_timeout_then_linger0_close_is_a_server_timeout() {
        let mut ev = prelude(GEN);
        ev.push(io(GEN + 231_000, SyscallKind::Recvfrom, -11, 4, &[]));
        ev.push(sys(GEN + 2_001_972_000, SyscallKind::Poll, 0, 2_001_700_000, [1, 2000, 3, 0]));
        ev.push(sys(GEN + 2_002_025_000, SyscallKind::Setsockopt, 0, 7850, [1, 13 | (8 << 32), 1, 0]));
        ev.push(Event::Tcp(Tcp { ts_ns: GEN + 2_002_124_000, pid: PID, conn_gen: GEN, fd: FD, what: TcpWhat::State { old: 1, new: 7 } }));
        ev.push(Event::Tcp(Tcp { ts_ns: GEN + 2_002_185_000, pid: PID, conn_gen: GEN, fd: FD, what: TcpWhat::SendReset }));
        ev.push(sys(GEN + 2_002_222_000, SyscallKind::Close, 0, 87_000, [0; 4]));
        let h = only(&ev);
        assert_eq!(h.verdict, Some(Verdict::ServerTimeout), "{}", h.reason);
        let t = h.timeout.as_ref().unwrap();
        assert_eq!(t.mechanism, WaitMechanism::Poll);
        assert_eq!(t.timeout_ms, Some(2000));
        assert_eq!(t.waited_ns, 2_001_700_000);
        assert_eq!(t.waiting_for, "the login packet");
        assert!(h.reason.contains("poll, timeout 2000 ms"), "{}", h.reason);
        assert!(h.reason.contains("SO_LINGER 0"), "{}", h.reason);
        let e = h.client_error.as_deref().unwrap();
        assert!(e.contains("2013") && e.contains("reading authorization packet") && e.ends_with("104"), "{e}");
    }

    /// The MySQL 5.0 way: EAGAIN, alarm, blocking read, SIGALRM from the alarm thread, EINTR.
    #[test]
    fn blocking_read_interrupted_by_sigalrm_is_an_alarm_eintr_timeout() {
        const ALARM_THREAD: u32 = 20760;
        let mut ev = prelude(GEN);
        ev.push(io(GEN + 231_000, SyscallKind::Read, -11, 4, &[]));
        ev.push(sys(GEN + 240_000, SyscallKind::Alarm, 0, 500, [5000, 0, 0, 0]));
        ev.push(sys(GEN + 250_000, SyscallKind::Fcntl, 0, 800, [4, 0o2, 0, 0]));
        ev.push(Event::Signal(Signal {
            ts_ns: GEN + 5_000_250_000,
            pid: PID,
            tid: ALARM_THREAD,
            conn_gen: GEN,
            fd: FD,
            signal: 14,
            target_tid: HANDLER,
            code: -6,
            result: 0,
            delivered: false,
        }));
        // The kernel first returns the restart code, the signal is handled, then EINTR.
        let mut restart = io(GEN + 5_000_260_000, SyscallKind::Read, -512, 4, &[]);
        if let Event::Io(i) = &mut restart {
            i.sys.duration_ns = 4_999_990_000;
        }
        ev.push(restart);
        ev.push(Event::Signal(Signal {
            ts_ns: GEN + 5_000_270_000,
            pid: PID,
            tid: HANDLER,
            conn_gen: GEN,
            fd: FD,
            signal: 14,
            target_tid: HANDLER,
            code: -6,
            result: 0,
            delivered: true,
        }));
        let mut eintr = io(GEN + 5_000_280_000, SyscallKind::Read, -4, 4, &[]);
        if let Event::Io(i) = &mut eintr {
            i.sys.duration_ns = 10_000;
        }
        ev.push(eintr);
        ev.push(sys(GEN + 5_000_300_000, SyscallKind::Close, 0, 5000, [0; 4]));
        let h = only(&ev);
        assert_eq!(h.verdict, Some(Verdict::ServerTimeout), "{}", h.reason);
        let t = h.timeout.as_ref().unwrap();
        assert_eq!(t.mechanism, WaitMechanism::AlarmEintr);
        assert_eq!(t.timeout_ms, Some(5000));
        assert_eq!(t.signal_from, Some(ALARM_THREAD));
        // No RST: a plain close, the client sees EOF.
        assert!(h.client_error.as_deref().unwrap().ends_with("system error: 0"));
        // The restart code is a signal interruption in words, not an unknown error.
        let text: Vec<String> = h.steps.iter().map(|s| crate::output::handshake::describe_step(&h, s)).collect();
        assert!(text.iter().any(|t| t.contains("interrupted by signal, restarted (ERESTARTSYS)")), "{text:#?}");
        assert!(text.iter().any(|t| t.contains("SIGALRM sent by thread 20760 to thread 20766")), "{text:#?}");
        assert!(text.iter().any(|t| t.contains("blocking read of the login header (4 bytes) → EINTR")), "{text:#?}");
    }

    /// A login with a wrong password, answered with ERR 1045.
    fn wrong_password_handshake() -> Handshake {
        let mut ev = prelude(GEN);
        let login = packet(1, &login_body(None));
        ev.push(io(GEN + 300_000, SyscallKind::Recvfrom, login.len() as i64, login.len() as u64, &login));
        let err = err_packet(2, 1045, "28000", "Access denied for user 'lab'@'localhost' (using password: YES)");
        ev.push(io(GEN + 900_000, SyscallKind::Sendto, err.len() as i64, err.len() as u64, &err));
        ev.push(sys(GEN + 910_000, SyscallKind::TrackingEnd, 0, 0, [1, 0, 0, 0]));
        only(&ev)
    }

    #[test]
    fn wrong_password_is_auth_failed_and_the_auth_response_never_shows() {
        let h = wrong_password_handshake();
        assert_eq!(h.verdict, Some(Verdict::AuthFailed));
        assert_eq!(h.client_error.as_deref(), Some("ERROR 1045 (28000): Access denied for user 'lab'@'localhost' (using password: YES)"));
        let clock = crate::support::clock::Clock::with_offset(0);
        let json = crate::output::handshake::handshake_json(&h, &clock).to_string();
        let text = crate::output::handshake::handshake_timeline(&h, &clock);
        assert!(json.contains("\"auth_response_len\":20"), "{json}");
        for shown in [&json, &text] {
            assert!(!shown.contains("a5a5") && !shown.contains("A5A5") && !shown.contains("165, 165"), "{shown}");
        }
    }

    #[test]
    fn json_and_timeline_carry_each_step_in_words_escaped() {
        let mut h = wrong_password_handshake();
        // Words the JSON writer must escape as it streams them.
        h.step(GEN + 950_000, 0, StepKind::Note("a \"quoted\" note\\ on\ttwo\nlines".into()));
        let clock = crate::support::clock::Clock::with_offset(0);
        let json: serde_json::Value = serde_json::from_str(&crate::output::handshake::handshake_json(&h, &clock).to_string()).unwrap();
        let timeline = crate::output::handshake::handshake_timeline(&h, &clock);
        let in_json: Vec<&str> = json["events"].as_array().unwrap().iter().map(|e| e["text"].as_str().unwrap()).collect();
        let words: Vec<String> = h.steps.iter().map(|s| crate::output::handshake::describe_step(&h, s)).collect();
        assert_eq!(in_json, words);
        assert!(words.iter().any(|w| w.contains("recvfrom of the login (83 bytes) → 83 bytes; login: user")), "{words:#?}");
        assert_eq!(words.last().unwrap(), "a \"quoted\" note\\ on\ttwo\nlines");
        for w in &words {
            assert!(timeline.contains(w.as_str()), "{w} missing from\n{timeline}");
        }
    }

    #[test]
    fn err_instead_of_greeting_is_a_server_error() {
        let err = err_packet(0, 1040, "08004", "Too many connections");
        let ev = vec![
            accept_at(GEN, GEN),
            io(GEN + 100_000, SyscallKind::Write, err.len() as i64, err.len() as u64, &err),
            sys(GEN + 110_000, SyscallKind::TrackingEnd, 0, 0, [1, 0, 0, 0]),
        ];
        let h = only(&ev);
        assert_eq!(h.verdict, Some(Verdict::ServerError));
        assert!(h.reason.contains("1040 ER_CON_COUNT_ERROR"), "{}", h.reason);
        assert!(h.greeting.is_none());
    }

    #[test]
    fn client_fin_and_client_rst_are_told_apart() {
        let mut fin = prelude(GEN);
        fin.push(io(GEN + 300_000, SyscallKind::Recvfrom, 0, 4, &[]));
        fin.push(sys(GEN + 310_000, SyscallKind::Close, 0, 1000, [0; 4]));
        assert_eq!(only(&fin).verdict, Some(Verdict::ClientClosed));

        let mut rst = prelude(GEN);
        rst.push(io(GEN + 300_000, SyscallKind::Recvfrom, -(ECONNRESET as i64), 4, &[]));
        rst.push(sys(GEN + 310_000, SyscallKind::Close, 0, 1000, [0; 4]));
        assert_eq!(only(&rst).verdict, Some(Verdict::ClientReset));

        let mut unknown = prelude(GEN);
        unknown.push(sys(GEN + 310_000, SyscallKind::Close, 0, 1000, [0; 4]));
        let h = only(&unknown);
        assert_eq!(h.verdict, Some(Verdict::ServerClosed));
        assert!(h.client_error.as_deref().unwrap().contains("reading authorization packet"));
    }

    /// The second connection on FD (generation `g2`) through to OK, its end riding on the OK's record.
    fn ok_on_reused_fd(g2: u64) -> Vec<Event> {
        let g = greeting();
        let l = packet(1, &login_body(None));
        let mut ok = io_gen(g2 + 300_000, g2, SyscallKind::Sendto, 11, 11, &ok_packet());
        if let Event::Io(io) = &mut ok {
            io.tracking_end = Some(handshake_trace_common::end::REPLY);
        }
        vec![
            accept_at(g2, g2),
            io_gen(g2 + 100_000, g2, SyscallKind::Sendto, g.len() as i64, g.len() as u64, &g),
            io_gen(g2 + 200_000, g2, SyscallKind::Recvfrom, l.len() as i64, l.len() as u64, &l),
            ok,
        ]
    }

    #[test]
    fn a_close_that_comes_after_the_fd_was_reused_still_ends_its_connection() {
        // close() frees the number before its own record is written: the next accept's
        // record on the same fd can come first.
        let g2 = GEN + MS;
        let mut ev = prelude(GEN);
        ev.push(io(GEN + 300_000, SyscallKind::Recvfrom, 0, 4, &[]));
        let mut second = ok_on_reused_fd(g2);
        ev.push(second.remove(0));
        ev.push(sys(g2 + 5_000, SyscallKind::Close, 0, 1000, [0; 4]));
        ev.extend(second);
        let (done, c) = run(&ev);
        assert_eq!(c.open_count(), 0);
        assert_eq!(done.len(), 2, "{done:#?}");
        assert_eq!((done[0].gen, done[0].verdict), (GEN, Some(Verdict::ClientClosed)));
        assert!(done[0].steps.iter().any(|s| matches!(s.what, StepKind::Close { .. })));
        assert_eq!((done[1].gen, done[1].verdict), (g2, Some(Verdict::Ok)));
        // The end that rode on the OK's record is a step of its own.
        assert!(matches!(done[1].steps.last().map(|s| &s.what), Some(StepKind::TrackingEnd { reason: 1 })));
    }

    #[test]
    fn a_connection_whose_fd_was_reused_and_never_closed_ends_after_a_grace() {
        let g2 = GEN + MS;
        let mut ev = prelude(GEN);
        ev.extend(ok_on_reused_fd(g2));
        let (done, mut c) = run(&ev);
        // Within the grace it waits for its close.
        assert_eq!(done.iter().map(|h| h.gen).collect::<Vec<_>>(), vec![g2]);
        assert_eq!(c.open_count(), 1);
        // Any later event past the grace concludes it, as of the reuse.
        let later = g2 + FD_REUSE_GRACE_NS + 1;
        let done = c.push(&accept_at(later, later), None);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].gen, GEN);
        assert_eq!(done[0].verdict, Some(Verdict::Incomplete));
        assert!(done[0].reason.contains("not seen to end"), "{}", done[0].reason);
        assert_eq!(done[0].end_ns, Some(g2));
    }

    #[test]
    fn a_reused_fd_keeps_connections_apart_by_generation() {
        let g2 = GEN + 50 * MS;
        let mut ev = prelude(GEN);
        ev.push(sys(GEN + MS, SyscallKind::Close, 0, 1000, [0; 4]));
        ev.push(accept_at(g2, g2));
        // A late event of the first connection must not land on the second.
        ev.push(io_gen(g2 + 1000, GEN, SyscallKind::Recvfrom, 0, 4, &[]));
        let g = greeting();
        ev.push(io_gen(g2 + 100_000, g2, SyscallKind::Sendto, g.len() as i64, g.len() as u64, &g));
        let ok = {
            let l = packet(1, &login_body(None));
            vec![
                io_gen(g2 + 200_000, g2, SyscallKind::Recvfrom, l.len() as i64, l.len() as u64, &l),
                io_gen(g2 + 300_000, g2, SyscallKind::Sendto, 11, 11, &ok_packet()),
                sys_gen(g2 + 310_000, g2, SyscallKind::TrackingEnd, 0, 0, [1, 0, 0, 0]),
            ]
        };
        ev.extend(ok);
        let (done, c) = run(&ev);
        assert_eq!(done.len(), 2);
        assert_eq!(done[0].verdict, Some(Verdict::ServerClosed));
        assert_eq!(done[1].verdict, Some(Verdict::Ok));
        assert_eq!(done[1].gen, g2);
        assert_eq!(c.unmatched, 1);
    }

    #[test]
    fn open_handshakes_end_incomplete_when_tracing_stops_or_the_process_exits() {
        let (done, mut c) = run(&prelude(GEN));
        assert!(done.is_empty());
        let rest = c.finish_all(GEN + 5 * MS);
        assert_eq!(rest.len(), 1);
        assert_eq!(rest[0].verdict, Some(Verdict::Incomplete));
        assert!(rest[0].reason.contains("still open"));

        let mut ev = prelude(GEN);
        ev.push(Event::ProcessExit { ts_ns: GEN + MS, pid: PID });
        let h = only(&ev);
        assert_eq!(h.verdict, Some(Verdict::Incomplete));
        assert!(h.steps.iter().any(|s| matches!(&s.what, StepKind::Note(n) if n.contains("exited"))));
    }

    #[test]
    fn tls_connection_is_timed_not_decoded() {
        let mut ev = prelude(GEN);
        // SSLRequest: 32 bytes, PROTOCOL_41 | SSL.
        let mut ssl = (0x0200u32 | 0x0800 | 0x8000).to_le_bytes().to_vec();
        ssl.extend_from_slice(&(1u32 << 24).to_le_bytes());
        ssl.push(33);
        ssl.extend_from_slice(&[0; 23]);
        let ssl = packet(1, &ssl);
        ev.push(io(GEN + 300_000, SyscallKind::Recvfrom, ssl.len() as i64, ssl.len() as u64, &ssl));
        let hello = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0xAA, 0xBB];
        ev.push(io(GEN + 400_000, SyscallKind::Read, 517, 517, &hello));
        ev.push(sys(GEN + 2 * MS, SyscallKind::TrackingEnd, 0, 0, [2, 0, 0, 0]));
        let h = only(&ev);
        assert!(h.tls);
        assert_eq!(h.verdict, Some(Verdict::Ok));
        assert!(h.login.is_none());
        assert!(h.reason.contains("past the handshake"), "{}", h.reason);
        let text = crate::output::handshake::handshake_timeline(&h, &crate::support::clock::Clock::with_offset(0));
        assert!(text.contains("SSLRequest") && text.contains("517 bytes of TLS"), "{text}");
    }

    /// Inside TLS the OK is encrypted, but the server's wait timeout changes from
    /// connect_timeout to wait_timeout once the login succeeded.
    #[test]
    fn tls_login_is_judged_by_the_servers_next_wait() {
        let tls_start = |ev: &mut Vec<Event>| {
            let mut ssl = (0x0200u32 | 0x0800 | 0x8000).to_le_bytes().to_vec();
            ssl.extend_from_slice(&(1u32 << 24).to_le_bytes());
            ssl.push(33);
            ssl.extend_from_slice(&[0; 23]);
            let ssl = packet(1, &ssl);
            ev.push(io(GEN + 300_000, SyscallKind::Recvfrom, ssl.len() as i64, ssl.len() as u64, &ssl));
            ev.push(io(GEN + 400_000, SyscallKind::Read, 5, 5, &[0x16, 0x03, 0x01, 0x02, 0x00]));
            ev.push(io(GEN + 410_000, SyscallKind::Read, 512, 512, &[1; 16]));
            ev.push(io(GEN + 500_000, SyscallKind::Write, 1404, 1404, &[0x16, 0x03, 0x03]));
            ev.push(sys(GEN + 600_000, SyscallKind::Poll, 1, 100_000, [1, 2000, 1, 1]));
            ev.push(io(GEN + 610_000, SyscallKind::Read, 5, 5, &[0x17, 0x03, 0x03, 0, 40]));
            ev.push(io(GEN + 620_000, SyscallKind::Read, 40, 40, &[2; 40]));
            ev.push(io(GEN + 700_000, SyscallKind::Write, 33, 33, &[0x17, 0x03, 0x03]));
        };
        let mut logged_in = prelude(GEN);
        tls_start(&mut logged_in);
        logged_in.push(sys(GEN + 800_000, SyscallKind::Poll, 1, 100_000, [1, 28_800_000, 1, 1]));
        logged_in.push(io(GEN + 810_000, SyscallKind::Read, 5, 5, &[0x17, 0x03, 0x03, 0, 20]));
        logged_in.push(sys(GEN + 900_000, SyscallKind::Close, 0, 1000, [0; 4]));
        let h = only(&logged_in);
        assert_eq!(h.verdict, Some(Verdict::Ok), "{}", h.reason);
        assert!(h.reason.contains("wait timeout 28800000 ms instead of the handshake's 2000 ms"), "{}", h.reason);

        // Refused inside TLS: the server writes (its ERR) and closes, no command-phase wait.
        let mut refused = prelude(GEN);
        tls_start(&mut refused);
        refused.push(sys(GEN + 900_000, SyscallKind::Close, 0, 1000, [0; 4]));
        let h = only(&refused);
        assert_eq!(h.verdict, Some(Verdict::ServerClosed), "{}", h.reason);
        assert!(h.reason.contains("encrypted reply"), "{}", h.reason);
    }

    #[test]
    fn the_eviction_queue_stays_bounded_as_handshakes_come_and_go() {
        let mut c = Correlator::new(4);
        for i in 0..1000u64 {
            let gen = GEN + i * MS;
            c.push(&accept_at(gen, gen), None);
            let closed = c.push(&sys_gen(gen + 1000, gen, SyscallKind::Close, 0, 10, [0; 4]), None);
            assert_eq!(closed.len(), 1);
        }
        assert_eq!(c.open_count(), 0);
        assert!(c.order.len() <= 2 * 4 + 1, "{}", c.order.len());
    }

    #[test]
    fn too_many_open_handshakes_are_bounded() {
        let mut c = Correlator::new(2);
        let mut done = Vec::new();
        for i in 0..3u64 {
            let mut a = match accept_at(GEN + i, GEN + i) {
                Event::Accept(a) => a,
                _ => unreachable!(),
            };
            a.result = SyscallResult::Ok(50 + i as i64);
            done.extend(c.push(&Event::Accept(a), None));
        }
        assert_eq!(c.open_count(), 2);
        assert_eq!(done.len(), 1);
        assert_eq!(done[0].verdict, Some(Verdict::Incomplete));
        let _ = Errno(0);
    }
}
