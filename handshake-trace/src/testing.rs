//! Synthetic events shaped like a real MariaDB 10.11 handshake, for the unit tests of
//! the stages after capture (correlate, verdict, pipeline, output).
/// A framed packet: header (length, sequence number) and payload.
pub(crate) use crate::protocol::frame as packet;
use crate::{
    events::{Accept, Args, Event, Io, Syscall, SyscallKind, SyscallResult, Tcp, TcpWhat},
    protocol::{
        builders::{self, GreetingSpec, LoginSpec},
        CLIENT_CONNECT_WITH_DB, CLIENT_PLUGIN_AUTH, CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA, CLIENT_PROTOCOL_41,
        CLIENT_SECURE_CONNECTION,
    },
};

pub(crate) const PID: u32 = 20752;
pub(crate) const MAIN: u32 = 20752;
pub(crate) const HANDLER: u32 = 20766;
pub(crate) const FD: i32 = 43;
pub(crate) const GEN: u64 = 1_000_000;
pub(crate) const MS: u64 = 1_000_000;

pub(crate) fn accept_at(ts: u64, gen: u64) -> Event {
    Event::Accept(Accept {
        ts_ns: ts,
        conn_gen: gen,
        pid: PID,
        tid: MAIN,
        listen_fd: 20,
        result: SyscallResult::Ok(FD as i64),
        peer: Some("127.0.0.1:47460".parse().unwrap()),
        unix: false,
        established: false,
        local: None,
        packets_unseen: false,
        queued_ns: None,
        client_process: None,
    })
}

pub(crate) fn sys_gen(ts: u64, gen: u64, kind: SyscallKind, ret: i64, dur: u64, args: [u64; 4]) -> Event {
    Event::Syscall(Syscall { ts_ns: ts, pid: PID, tid: HANDLER, conn_gen: gen, fd: FD, kind, result: ret.into(), duration_ns: dur, args: Args::decode(kind, args) })
}

pub(crate) fn sys(ts: u64, kind: SyscallKind, ret: i64, dur: u64, args: [u64; 4]) -> Event {
    sys_gen(ts, GEN, kind, ret, dur, args)
}

pub(crate) fn io_gen(ts: u64, gen: u64, kind: SyscallKind, ret: i64, requested: u64, payload: &[u8]) -> Event {
    match sys_gen(ts, gen, kind, ret, 1000, [requested, 64, 0, 0]) {
        Event::Syscall(s) => Event::Io(Io { sys: s, payload: crate::events::Payload::new(payload), tracking_end: None }),
        _ => unreachable!(),
    }
}

pub(crate) fn io(ts: u64, kind: SyscallKind, ret: i64, requested: u64, payload: &[u8]) -> Event {
    io_gen(ts, GEN, kind, ret, requested, payload)
}

/// A MariaDB 10.11 greeting (protocol 10), scramble filled with 'x'.
pub(crate) fn greeting() -> Vec<u8> {
    packet(
        0,
        &builders::greeting(&GreetingSpec {
            server_version: "5.5.5-10.11.19-MariaDB-0+deb12u1",
            connection_id: 9,
            scramble: &[b'x'; 20],
            capabilities: 0x81bf_f7fe,
            charset: 45,
            status: 2,
            extended_capabilities: 0x1d,
            auth_plugin: "mysql_native_password",
        }),
    )
}

/// The auth response every synthetic login carries: it must never be shown.
pub(crate) const SECRET: [u8; 20] = [0xA5; 20];

/// HandshakeResponse41 body for user 'lab' with a 20-byte auth response.
pub(crate) fn login_body(db: Option<&str>) -> Vec<u8> {
    let mut caps = CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA;
    if db.is_some() {
        caps |= CLIENT_CONNECT_WITH_DB;
    }
    builders::login(&LoginSpec {
        capabilities: caps,
        max_packet: 1 << 24,
        charset: 33,
        extended_capabilities: 0,
        user: "lab",
        auth_response: &SECRET,
        database: db.unwrap_or(""),
        auth_plugin: "mysql_native_password",
        attrs: &[],
    })
}

/// OK to the login (SERVER_STATUS_AUTOCOMMIT).
pub(crate) fn ok_packet() -> Vec<u8> {
    packet(2, &builders::ok(2))
}

pub(crate) fn err_packet(seq: u8, code: u16, state: &str, msg: &str) -> Vec<u8> {
    packet(seq, &builders::err(code, state, msg))
}

/// accept, handoff, O_NONBLOCK, greeting: what MariaDB does before waiting.
pub(crate) fn prelude(t0: u64) -> Vec<Event> {
    let g = greeting();
    vec![
        accept_at(t0, GEN),
        sys(t0 + 124_000, SyscallKind::Fcntl, 0, 1500, [4, 0o4000, 0, 0]),
        sys(t0 + 158_000, SyscallKind::Setsockopt, 0, 500, [0, 1 | (4 << 32), 8, 0]),
        io(t0 + 219_000, SyscallKind::Sendto, g.len() as i64, g.len() as u64, &g),
    ]
}

/// A login with a wrong password, answered with ERR 1045: `auth_failed`.
pub(crate) fn wrong_password_events() -> Vec<Event> {
    let mut ev = prelude(GEN);
    let login = packet(1, &login_body(None));
    ev.push(io(GEN + 300_000, SyscallKind::Recvfrom, login.len() as i64, login.len() as u64, &login));
    let err = err_packet(2, 1045, "28000", "Access denied for user 'lab'@'localhost' (using password: YES)");
    ev.push(io(GEN + 900_000, SyscallKind::Sendto, err.len() as i64, err.len() as u64, &err));
    ev.push(sys(GEN + 910_000, SyscallKind::TrackingEnd, 0, 0, [1, 0, 0, 0]));
    ev
}

/// MariaDB's wait for a login that never comes: poll with its 2 s timeout, then a
/// close with SO_LINGER 0 (`server_timeout`, mechanism poll).
pub(crate) fn poll_timeout_events() -> Vec<Event> {
    let mut ev = prelude(GEN);
    ev.push(io(GEN + 231_000, SyscallKind::Recvfrom, -11, 4, &[]));
    ev.push(sys(GEN + 2_001_972_000, SyscallKind::Poll, 0, 2_001_700_000, [1, 2000, 3, 0]));
    ev.push(sys(GEN + 2_002_025_000, SyscallKind::Setsockopt, 0, 7850, [1, 13 | (8 << 32), 1, 0]));
    ev.push(Event::Tcp(Tcp { ts_ns: GEN + 2_002_124_000, pid: PID, conn_gen: GEN, fd: FD, what: TcpWhat::State { old: 1, new: 7 } }));
    ev.push(Event::Tcp(Tcp { ts_ns: GEN + 2_002_185_000, pid: PID, conn_gen: GEN, fd: FD, what: TcpWhat::SendReset }));
    ev.push(sys(GEN + 2_002_222_000, SyscallKind::Close, 0, 87_000, [0; 4]));
    ev
}

/// The handshakes a correlator finishes from `events` (accepted on 127.0.0.1:3399).
pub(crate) fn handshakes_of(events: &[Event]) -> Vec<crate::correlate::Handshake> {
    let mut c = crate::correlate::Correlator::new(100);
    events.iter().flat_map(|e| c.push(e, Some("127.0.0.1:3399".parse().unwrap()))).collect()
}

/// A login answered with OK: `ok`.
pub(crate) fn ok_login_events() -> Vec<Event> {
    let mut ev = prelude(GEN);
    let login = packet(1, &login_body(None));
    ev.push(io(GEN + 300_000, SyscallKind::Recvfrom, login.len() as i64, login.len() as u64, &login));
    let ok = ok_packet();
    ev.push(io(GEN + 900_000, SyscallKind::Sendto, ok.len() as i64, ok.len() as u64, &ok));
    ev.push(sys(GEN + 910_000, SyscallKind::TrackingEnd, 0, 0, [1, 0, 0, 0]));
    ev
}

/// The socket tier's start of a connection: established on the server's port, no fd.
pub(crate) fn established_at(ts: u64) -> Event {
    Event::Accept(Accept {
        ts_ns: ts,
        conn_gen: ts,
        pid: PID,
        tid: 0,
        listen_fd: handshake_trace_common::NO_FD,
        result: SyscallResult::Ok(0),
        peer: Some("127.0.0.1:47460".parse().unwrap()),
        unix: false,
        established: true,
        local: Some("127.0.0.1:3399".parse().unwrap()),
        packets_unseen: false,
        queued_ns: None,
        client_process: None,
    })
}

/// A socket-tier record of the connection started at `gen`: a packet (`PacketIn`,
/// `PacketOut`: `ret` its length) or a socket read/write that moved nothing (`ret` its
/// result, `flags` its MSG_* flags). Arriving packets run in no thread of the server.
pub(crate) fn sock_io(ts: u64, gen: u64, kind: SyscallKind, ret: i64, flags: u64, payload: &[u8], end: Option<u64>) -> Event {
    let tid = if kind == SyscallKind::PacketIn { 0 } else { HANDLER };
    Event::Io(Io {
        sys: Syscall {
            ts_ns: ts,
            pid: PID,
            tid,
            conn_gen: gen,
            fd: handshake_trace_common::NO_FD,
            kind,
            result: ret.into(),
            duration_ns: 0,
            args: Args::Transfer { requested: 0, flags },
        },
        payload: crate::events::Payload::new(payload),
        tracking_end: end,
    })
}

/// A TCP state change of the socket-tier connection started at `gen`.
pub(crate) fn sock_state(ts: u64, gen: u64, old: u32, new: u32) -> Event {
    Event::Tcp(crate::events::Tcp { ts_ns: ts, pid: PID, conn_gen: gen, fd: handshake_trace_common::NO_FD, what: crate::events::TcpWhat::State { old, new } })
}
