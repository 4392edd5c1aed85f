//! One connection's handshake as a state machine: each event adds a step to the
//! timeline and updates what is known (packets, TLS, socket options, the last wait
//! and read). The evidence the verdict is judged on is kept here as data.
use std::net::SocketAddr;

use handshake_trace_common::{
    sockopt::{SOL_SOCKET, SO_LINGER, SO_RCVTIMEO_NEW, SO_RCVTIMEO_OLD},
    tcp_state,
};

use super::step::{Omitted, PacketSeen, Step, StepKind};
use crate::{
    events::{Accept, Args, ClientProcess, Errno, Family, Io, Signal, Syscall, SyscallResult, Tcp, TcpWhat},
    protocol::{self, ClientPacket, ErrPacket, Greeting, Login, PacketStream, ProxyFound, ProxySniffer, ServerPacket},
    verdict::{self, Judgement, Verdict},
};

const SIGALRM: u32 = libc::SIGALRM as u32;
const O_NONBLOCK: u64 = libc::O_NONBLOCK as u64;
const MSG_DONTWAIT: u64 = libc::MSG_DONTWAIT as u64;
/// Steps a handshake has room for from its accept: a usual successful login has about this many.
const STEPS_ROOM: usize = 8;
/// Steps kept from a timeline's start (the accept, the greeting, the usual login's
/// all) and at its end (how it ended: between `TAIL_STEPS` and twice as many).
const HEAD_STEPS: usize = 64;
const TAIL_STEPS: usize = 32;
/// Steps a handshake keeps at most: past it, its middle is summed up in one
/// [`StepKind::Omitted`] right after the head (what a client dribbling its login a
/// byte per write, or any other flood of steps, cannot grow).
pub const MAX_STEPS: usize = HEAD_STEPS + 1 + 2 * TAIL_STEPS;


/// The server's reply to the login.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    Ok,
    Err(ErrPacket),
}

/// The connection's last read: how it ended and whether it could block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastRead {
    pub result: SyscallResult,
    pub nonblocking: bool,
    pub duration_ns: u64,
    pub ts_ns: u64,
}

/// The connection's last poll/select.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LastWait {
    pub timeout_ms: Option<u64>,
    pub result: SyscallResult,
    pub duration_ns: u64,
}

/// A timer armed in the server process by a thread with no connection (an alarm thread).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ArmedTimer {
    pub ts_ns: u64,
    pub tid: u32,
    pub ms: u64,
}

/// A SIGALRM generated for the handler thread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alarm {
    pub from_tid: u32,
    pub ts_ns: u64,
}

/// What the state machine noted for the verdict, beyond the timeline itself.
#[derive(Debug, Clone, Default)]
pub struct Evidence {
    pub nonblocking: bool,
    pub rcvtimeo_ms: Option<u64>,
    /// SO_LINGER {on, 0}: close resets the connection.
    pub linger0: bool,
    pub closed: bool,
    /// A read returned 0: the client sent FIN.
    pub client_fin: bool,
    pub client_rst: bool,
    pub rst_sent: bool,
    pub last_wait: Option<LastWait>,
    pub last_read: Option<LastRead>,
    /// Sender of the last signal generated for the connection's thread.
    pub last_signal_from: Option<u32>,
    pub sigalrm: Option<Alarm>,
    /// Why the kernel stopped tracing the connection (`handshake_trace_common::end`).
    pub tracking_ended: Option<u64>,
    /// Timers armed in the process by threads with no connection, oldest first.
    pub process_timers: Vec<ArmedTimer>,
    /// The kernel lost records while this handshake was open: any of them may have
    /// been its own, so only what was seen for sure (an OK or ERR) may be judged.
    pub events_may_be_lost: bool,
    /// Socket tier: the connection's packets were outside the cgroup the packet
    /// programs watched (its server moved after it listened): no byte was seen.
    pub packets_unseen: bool,
}

/// One connection's handshake.
#[derive(Debug)]
pub struct Handshake {
    pub pid: u32,
    pub fd: i32,
    pub gen: u64,
    /// Where the handshake's times start: its TCP handshake when that was seen (the
    /// socket tier; the syscall tier on a listener it knows), else its accept.
    pub accept_ns: u64,
    pub accept_tid: u32,
    pub listen_fd: i32,
    /// The client: the connection's peer, or the one a PROXY header named.
    pub client: Option<SocketAddr>,
    /// The proxy the client came through (the connection's peer), when a PROXY header
    /// named another client.
    pub via: Option<SocketAddr>,
    /// The PROXY header the connection started with, if any.
    pub proxy: Option<ProxyFound>,
    pub server: Option<SocketAddr>,
    /// The client came over a Unix socket.
    pub unix: bool,
    /// The path of the server's listening Unix socket, when the caller knew it (live: /proc).
    pub server_path: Option<std::sync::Arc<str>>,
    /// A Unix-socket client's process (pid and program), when the tier saw it.
    pub client_process: Option<ClientProcess>,
    /// Seen by the socket tier (`--capture socket`): no accept, fd, waits, fcntl,
    /// socket options or timers; the connection starts when it is established and
    /// ends when the server's socket closes.
    pub socket_tier: bool,
    pub handler_tid: Option<u32>,
    pub steps: Vec<Step>,
    pub greeting: Option<Greeting>,
    /// When the greeting (or an ERR instead of it) was written.
    pub greeting_ns: Option<u64>,
    pub login: Option<Login>,
    pub login_ns: Option<u64>,
    /// The client asked for TLS (an SSLRequest) or started it (a ClientHello).
    pub tls: bool,
    /// When the first TLS record (the ClientHello) was read: from here on, lengths only.
    /// Until then, bytes after an SSLRequest are still MySQL packets (a server that gives
    /// up waiting for the ClientHello sends a plaintext ERR 1043).
    pub tls_hello_ns: Option<u64>,
    /// When the first TLS application-data record went by (the handshake of TLS was over).
    pub tls_data_ns: Option<u64>,
    /// TLS was announced by an SSLRequest, so the server speaks it too. A ClientHello
    /// without one is the client's alone: the server never agreed, and answers in MySQL
    /// packets (MariaDB: a plaintext ERR 1156, the hello read as a packet header).
    pub tls_requested: bool,
    pub auth_switch: Option<String>,
    pub auth_rounds: u32,
    pub reply: Option<Reply>,
    pub reply_ns: Option<u64>,
    pub end_ns: Option<u64>,
    pub evidence: Evidence,
    /// Set when the handshake is concluded.
    pub judgement: Option<Judgement>,
    /// Its server's configuration (connect_timeout, max_connect_errors, ...), when the
    /// caller knew it: set by the pipeline as the handshake goes out.
    pub server_config: Option<std::sync::Arc<crate::config::ServerConfig>>,
    /// How the server's host cache counted it toward `max_connect_errors`, and the host's
    /// errors so far: set by the pipeline as the handshake goes out (None: not counted).
    pub host_errors: Option<Box<crate::pipeline::HostNote>>,
    from_client: PacketStream,
    from_server: PacketStream,
    /// Takes a PROXY header out of the client's first bytes.
    proxy_sniffer: ProxySniffer,
}

/// Phase durations in ns (None when a phase did not happen).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Phases {
    pub handoff_ns: Option<u64>,
    pub to_greeting_ns: Option<u64>,
    pub to_login_ns: Option<u64>,
    pub to_reply_ns: Option<u64>,
    /// TLS: ClientHello to the first application data.
    pub tls_ns: Option<u64>,
    pub total_ns: u64,
}

impl Handshake {
    /// Steps room for a usual handshake's timeline from the start (not grown by doubling
    /// from one, a reallocation each time), holding the accept.
    fn first_steps(a: &Accept) -> Vec<Step> {
        let mut steps = Vec::with_capacity(STEPS_ROOM);
        if let Some(queued) = a.queued_ns {
            // Syscall tier: the TCP handshake the accept came after (no thread ran it).
            let what = StepKind::Tcp(TcpWhat::State { old: tcp_state::SYN_RECV, new: tcp_state::ESTABLISHED });
            steps.push(Step { ts_ns: a.ts_ns.saturating_sub(queued), tid: 0, what });
        }
        steps.push(Step { ts_ns: a.ts_ns, tid: a.tid, what: StepKind::Accepted { listen_fd: a.listen_fd, client: a.peer } });
        steps
    }

    pub(super) fn new(a: &Accept, server: Option<SocketAddr>) -> Self {
        Handshake {
            pid: a.pid,
            fd: a.fd().unwrap_or(-1),
            gen: a.conn_gen,
            // From the TCP handshake when it was seen: an accept-queue wait is the server's.
            accept_ns: a.ts_ns.saturating_sub(a.queued_ns.unwrap_or(0)),
            accept_tid: a.tid,
            listen_fd: a.listen_fd,
            client: a.peer,
            via: None,
            proxy: None,
            server,
            unix: a.unix,
            server_path: None,
            client_process: a.client_process.clone(),
            socket_tier: a.established,
            handler_tid: None,
            steps: Self::first_steps(a),
            greeting: None,
            greeting_ns: None,
            login: None,
            login_ns: None,
            tls: false,
            tls_hello_ns: None,
            tls_data_ns: None,
            tls_requested: false,
            auth_switch: None,
            auth_rounds: 0,
            reply: None,
            reply_ns: None,
            end_ns: None,
            evidence: Evidence { packets_unseen: a.packets_unseen, ..Evidence::default() },
            judgement: None,
            server_config: None,
            host_errors: None,
            from_client: PacketStream::new(),
            from_server: PacketStream::new(),
            proxy_sniffer: ProxySniffer::new(),
        }
    }

    pub(crate) fn step(&mut self, ts_ns: u64, tid: u32, what: StepKind) {
        self.steps.push(Step { ts_ns, tid, what });
        if self.steps.len() > MAX_STEPS {
            self.fold_middle();
        }
    }

    /// Sum the oldest `TAIL_STEPS` steps after the head up into the [`Omitted`] step
    /// (made the first time): the timeline stays within [`MAX_STEPS`], a fold every
    /// `TAIL_STEPS` steps.
    fn fold_middle(&mut self) {
        if self.omitted().is_none() {
            let ts_ns = self.steps[HEAD_STEPS].ts_ns;
            self.steps.insert(HEAD_STEPS, Step { ts_ns, tid: 0, what: StepKind::Omitted(Box::default()) });
        }
        let from = HEAD_STEPS + 1;
        let (head, rest) = self.steps.split_at_mut(from);
        let StepKind::Omitted(o) = &mut head[HEAD_STEPS].what else { unreachable!("made above") };
        for s in &rest[..TAIL_STEPS] {
            o.add(s, self.greeting_ns);
        }
        self.steps.drain(from..from + TAIL_STEPS);
    }

    /// The steps left out of the timeline's middle, when it was too long.
    pub fn omitted(&self) -> Option<&Omitted> {
        match self.steps.get(HEAD_STEPS).map(|s| &s.what) {
            Some(StepKind::Omitted(o)) => Some(o),
            _ => None,
        }
    }

    /// The verdict, once concluded.
    pub fn verdict(&self) -> Option<Verdict> {
        self.judgement.as_ref().map(|j| j.verdict)
    }

    /// The probe kind, once concluded: a port check or a health check (counted apart,
    /// never alarmed), or None.
    pub fn probe(&self) -> Option<crate::verdict::Probe> {
        self.judgement.as_ref().and_then(|j| j.probe)
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
            handoff_ns: self.steps.iter().find(|s| matches!(s.what, StepKind::Handoff { .. })).map(|s| s.ts_ns.saturating_sub(self.accept_ns)),
            to_greeting_ns: d(Some(self.accept_ns), self.greeting_ns),
            // A login that came before the greeting (with the TCP handshake's last ACK,
            // as HAProxy's checks send it) waited for nothing.
            to_login_ns: match (self.greeting_ns, self.login_ns) {
                (Some(g), Some(l)) => Some(l.saturating_sub(g)),
                _ => None,
            },
            to_reply_ns: d(self.login_ns, self.reply_ns),
            tls_ns: d(self.tls_hello_ns, self.tls_data_ns),
            total_ns: self.total_ns(),
        }
    }

    /// A thread other than the accepting one touches the connection for the first time.
    fn note_handoff(&mut self, ts_ns: u64, tid: u32) {
        // Tid 0: a packet, in no thread of the server. Accept tid 0: the socket tier,
        // which sees no accepting thread, so no handoff either, only the handler.
        if tid == 0 {
            return;
        }
        if self.accept_tid == 0 {
            self.handler_tid.get_or_insert(tid);
            return;
        }
        if tid != self.accept_tid && self.handler_tid.is_none() {
            self.handler_tid = Some(tid);
            self.step(ts_ns, tid, StepKind::Handoff { from_tid: self.accept_tid });
        }
    }

    pub(super) fn on_syscall(&mut self, s: &Syscall) {
        self.note_handoff(s.ts_ns, s.tid);
        let what = match (s.kind.family(), s.args) {
            (Family::Fcntl, Args::Fcntl { arg, .. }) => {
                let nonblocking = arg & O_NONBLOCK != 0;
                self.evidence.nonblocking = nonblocking;
                StepKind::Blocking { nonblocking }
            }
            (Family::SetSockOpt, Args::SetSockOpt { level, name, value, value2, .. }) => {
                self.on_socket_option(level, name, value, value2);
                StepKind::SocketOption { level, name, value, value2 }
            }
            (Family::Wait, Args::Wait { timeout_ms, .. }) => {
                self.evidence.last_wait = Some(LastWait { timeout_ms, result: s.result, duration_ns: s.duration_ns });
                StepKind::Wait { syscall: s.kind, timeout_ms, result: s.result, duration_ns: s.duration_ns }
            }
            (Family::Timer, Args::Timer { ms, .. }) => StepKind::Timer { syscall: s.kind, ms, result: s.result },
            (Family::Kill, Args::Kill { target, signal, .. }) => StepKind::Kill { syscall: s.kind, target, signal },
            (Family::Shutdown, Args::Shutdown { how }) => StepKind::Shutdown { how },
            (Family::Close, _) => {
                self.evidence.closed = true;
                self.end_ns = Some(s.ts_ns);
                StepKind::Close { result: s.result, linger0: self.evidence.linger0 }
            }
            (Family::TrackingEnd, Args::TrackingEnd { reason }) => return self.end_tracking(s.ts_ns, s.tid, reason),
            _ => return,
        };
        self.step(s.ts_ns, s.tid, what);
    }

    fn on_socket_option(&mut self, level: u64, name: u64, value: u64, value2: u64) {
        if level != SOL_SOCKET {
            return;
        }
        if name == SO_LINGER {
            // struct linger { int l_onoff; int l_linger; }
            self.evidence.linger0 = value & 0xffff_ffff != 0 && value >> 32 == 0;
        }
        if matches!(name, SO_RCVTIMEO_OLD | SO_RCVTIMEO_NEW) {
            // struct timeval { tv_sec; tv_usec; }
            // Wrapping would turn a crafted trace's huge timeout into a small one.
            let ms = value.saturating_mul(1000).saturating_add(value2 / 1000);
            self.evidence.rcvtimeo_ms = (ms > 0).then_some(ms);
        }
    }

    pub(super) fn on_io(&mut self, io: &Io) {
        let s = &io.sys;
        self.note_handoff(s.ts_ns, s.tid);
        let total = s.result.bytes();
        let mut packets = Vec::new();
        // The socket tier sees no fcntl: a read's own MSG_DONTWAIT says it could not block.
        let nonblocking = self.evidence.nonblocking
            || (s.kind.is_socket_tier() && matches!(s.args, Args::Transfer { flags, .. } if flags & MSG_DONTWAIT != 0));
        if s.kind.is_read() {
            self.evidence.last_read = Some(LastRead { result: s.result, nonblocking, duration_ns: s.duration_ns, ts_ns: s.ts_ns });
            // The one rule of where a ClientHello may start, shared with the redactor.
            let hello = total > 0
                && self.tls_hello_ns.is_none()
                && protocol::starts_client_hello(
                    &io.payload,
                    !self.from_client.mid_packet(),
                    self.tls_requested,
                    self.login.is_none() && !self.tls,
                );
            if hello && self.tls_requested {
                // The ClientHello the SSLRequest announced.
                self.tls_hello_ns = Some(s.ts_ns);
            }
            if total > 0 && self.tls_hello_ns.is_some() {
                self.note_tls_data(&io.payload, s.ts_ns);
                packets.push(PacketSeen::Tls { len: total });
            } else if total > 0 {
                // Taken out while its packets update the rest of the handshake.
                let mut stream = std::mem::take(&mut self.from_client);
                let (mut bytes, mut left) = (&io.payload[..], total);
                if !self.proxy_sniffer.decided() {
                    let t = self.proxy_sniffer.take(&io.payload, total);
                    stream.feed_each(t.replay, t.replay.len(), |p| packets.push(self.on_client_packet(p, s.ts_ns)));
                    let header = t.header.min(io.payload.len());
                    (bytes, left) = (&io.payload[header..], total - t.header);
                    if let Some(found) = self.proxy_sniffer.found().cloned() {
                        packets.push(self.on_proxy_header(found, &mut stream));
                    } else if let Some(version) = self.proxy_sniffer.unfinished().filter(|_| t.header > 0) {
                        packets.push(PacketSeen::ProxyHeaderPart { version });
                    }
                }
                stream.feed_each(bytes, left, |p| packets.push(self.on_client_packet(p, s.ts_ns)));
                self.from_client = stream;
            }
            self.evidence.client_fin |= s.result == SyscallResult::Ok(0);
            self.evidence.client_rst |= s.result.is_err(Errno::ECONNRESET);
            if hello && !self.tls_requested {
                // TLS unasked: the server, which never agreed, still reads MySQL packets
                // (the hello's bytes went through the stream above); the client's next
                // bytes are TLS, lengths only.
                self.tls = true;
                self.tls_hello_ns = Some(s.ts_ns);
                packets.push(PacketSeen::TlsClientHello);
            }
            self.step(s.ts_ns, s.tid, StepKind::Read {
                syscall: s.kind,
                result: s.result,
                requested: s.args.requested(),
                nonblocking,
                duration_ns: s.duration_ns,
                packets,
            });
        } else {
            if total > 0 && self.tls_hello_ns.is_some() && self.tls_requested {
                self.note_tls_data(&io.payload, s.ts_ns);
                packets.push(PacketSeen::Tls { len: total });
            } else if total > 0 {
                let mut stream = std::mem::take(&mut self.from_server);
                stream.feed_each(&io.payload, total, |p| packets.push(self.on_server_packet(p, s.ts_ns)));
                self.from_server = stream;
            }
            self.step(s.ts_ns, s.tid, StepKind::Write { syscall: s.kind, result: s.result, packets });
        }
        if let Some(reason) = io.tracking_end {
            self.end_tracking(s.ts_ns, s.tid, reason);
        }
    }

    /// The kernel stopped tracing the connection (its own record, or riding on the I/O that ended it).
    fn end_tracking(&mut self, ts_ns: u64, tid: u32, reason: u64) {
        self.evidence.tracking_ended = Some(reason);
        self.step(ts_ns, tid, StepKind::TrackingEnd { reason });
    }

    /// The first application-data record ends the TLS phase.
    fn note_tls_data(&mut self, payload: &[u8], ts_ns: u64) {
        if self.tls_data_ns.is_none() && protocol::is_tls_application_data(payload) {
            self.tls_data_ns = Some(ts_ns);
        }
    }

    /// A PROXY header opened the client's stream: the client it names is the client,
    /// the connection's peer the proxy. One that is not valid leaves the bytes after it
    /// unframed (the server refuses it and closes).
    fn on_proxy_header(&mut self, found: ProxyFound, stream: &mut PacketStream) -> PacketSeen {
        let seen = match &found {
            ProxyFound::Header(h) => {
                if let Some(source) = h.source {
                    self.via = self.client;
                    self.client = Some(source);
                }
                PacketSeen::ProxyHeader { version: h.version, source: h.source, malformed: false }
            }
            ProxyFound::Malformed { version } | ProxyFound::Unfinished { version } => {
                stream.desync();
                PacketSeen::ProxyHeader { version: *version, source: None, malformed: true }
            }
        };
        self.proxy = Some(found);
        seen
    }

    fn on_client_packet(&mut self, p: &protocol::Packet, ts: u64) -> PacketSeen {
        // After the login, sequence 0 starts the command phase (an auth exchange's
        // packets go on counting): a command sent with the login, before the reply.
        if self.login.is_some() && !self.tls && p.seq == 0 {
            return PacketSeen::Command { code: p.payload.first().copied(), len: p.len };
        }
        let expecting_login = self.login.is_none() && !self.tls;
        match protocol::decode_client(p, expecting_login) {
            ClientPacket::SslRequest(_) => {
                self.tls = true;
                self.tls_requested = true;
                self.login_ns.get_or_insert(ts);
                PacketSeen::SslRequest
            }
            ClientPacket::Login(l) => {
                let seen = PacketSeen::Login {
                    user: l.user.clone(),
                    database: l.database.clone(),
                    plugin: l.auth_plugin.clone(),
                    auth_response_len: l.auth_response_len,
                };
                self.login = Some(l);
                self.login_ns = Some(ts);
                seen
            }
            ClientPacket::AuthData { len } => {
                self.auth_rounds += 1;
                PacketSeen::AuthData { len }
            }
            ClientPacket::Other { len } => PacketSeen::ClientOther { len },
        }
    }

    fn on_server_packet(&mut self, p: &protocol::Packet, ts: u64) -> PacketSeen {
        match protocol::decode_server(p, self.greeting.is_some()) {
            ServerPacket::Greeting(g) => {
                let seen = PacketSeen::Greeting {
                    protocol: g.protocol,
                    server_version: g.server_version.clone(),
                    connection_id: g.connection_id,
                    auth_plugin: g.auth_plugin.clone(),
                };
                self.greeting = Some(g);
                self.greeting_ns = Some(ts);
                seen
            }
            ServerPacket::Ok(_) => {
                self.reply = Some(Reply::Ok);
                self.reply_ns = Some(ts);
                PacketSeen::Ok
            }
            ServerPacket::Err(e) => {
                self.greeting_ns.get_or_insert(ts);
                // A header the server read the start of and refused (from an untrusted
                // address MariaDB reads 4 bytes): which client it names is not known.
                if self.proxy.is_none() {
                    self.proxy = self.proxy_sniffer.unfinished().map(|version| ProxyFound::Unfinished { version });
                }
                self.reply = Some(Reply::Err(e.clone()));
                self.reply_ns = Some(ts);
                PacketSeen::Err(e)
            }
            ServerPacket::AuthSwitch(a) => {
                let seen = PacketSeen::AuthSwitch { plugin: a.plugin.clone(), data_len: a.data_len };
                self.auth_switch = Some(a.plugin);
                seen
            }
            ServerPacket::AuthMoreData { len } => PacketSeen::AuthMoreData { len },
            ServerPacket::Other { first_byte, len } => PacketSeen::ServerOther { first_byte, len },
        }
    }

    pub(super) fn on_signal(&mut self, s: &Signal) {
        // signal_generate names the sender; signal_deliver runs in the receiver.
        let from = if s.delivered { self.evidence.last_signal_from.unwrap_or(0) } else { s.tid };
        self.evidence.last_signal_from = Some(from);
        if s.signal == SIGALRM && !s.delivered {
            self.evidence.sigalrm = Some(Alarm { from_tid: s.tid, ts_ns: s.ts_ns });
        }
        self.step(s.ts_ns, s.tid, StepKind::Signal { signal: s.signal, from_tid: from, to_tid: s.target_tid, delivered: s.delivered });
    }

    pub(super) fn on_tcp(&mut self, t: &Tcp) {
        match t.what {
            TcpWhat::ReceiveReset => self.evidence.client_rst = true,
            TcpWhat::SendReset => self.evidence.rst_sent = true,
            TcpWhat::State { old, new } if self.socket_tier => self.on_socket_state(t.ts_ns, old, new),
            // The Unix socket's end: no reset on a Unix socket, whatever SO_LINGER says.
            TcpWhat::UnixClosed => {
                self.evidence.closed = true;
                self.end_ns = Some(t.ts_ns);
            }
            _ => {}
        }
        // In time order: the syscall tier sends a client's FIN or reset that came while
        // the connection waited for its accept after that accept, stamped when it came.
        let at = self.steps.partition_point(|s| s.ts_ns <= t.ts_ns);
        self.steps.insert(at, Step { ts_ns: t.ts_ns, tid: 0, what: StepKind::Tcp(t.what) });
    }

    /// The socket tier sees no close(): the server's socket leaving the connection
    /// (FIN sent, last ACK awaited, or closed) is its end.
    fn on_socket_state(&mut self, ts_ns: u64, old: u32, new: u32) {
        if !tcp_state::ends(new) {
            return;
        }
        // Straight from an open state to CLOSE with no reset received: the server
        // aborted the connection, which sends a reset (SO_LINGER 0, or an abort).
        if new == tcp_state::CLOSE && matches!(old, tcp_state::ESTABLISHED | tcp_state::CLOSE_WAIT) && !self.evidence.client_rst {
            self.evidence.rst_sent = true;
        }
        self.evidence.closed = true;
        self.end_ns = Some(ts_ns);
    }

    /// Is the handshake over (closed, or no longer traced)?
    pub(super) fn finished(&self) -> bool {
        self.evidence.closed || self.evidence.tracking_ended.is_some()
    }

    /// Decide the verdict. `open_at_end` = tracing stopped (or the process exited) first.
    pub(super) fn conclude(&mut self, open_at_end: bool, end_ns: u64) {
        self.judgement = Some(verdict::judge(self, open_at_end));
        self.end_ns.get_or_insert(end_ns);
    }

    /// The kernel lost records while this concluded handshake was open: judged again,
    /// it keeps only a verdict an OK or ERR seen for sure supports.
    pub fn judge_again_with_losses(&mut self) {
        self.evidence.events_may_be_lost = true;
        let open_at_end = self.judgement.as_ref().is_some_and(|j| j.cause == crate::verdict::Cause::StillOpen);
        self.judgement = Some(verdict::judge(self, open_at_end));
    }
}

