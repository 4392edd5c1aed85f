//! Synthetic events shaped like a real MariaDB 10.11 handshake, for the unit tests of
//! the stages after capture (correlate, verdict, pipeline, output).
use crate::events::{Accept, Args, Event, Io, Syscall, SyscallKind, SyscallResult};

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
        Event::Syscall(s) => Event::Io(Io { sys: s, payload: payload.to_vec(), tracking_end: None }),
        _ => unreachable!(),
    }
}

pub(crate) fn io(ts: u64, kind: SyscallKind, ret: i64, requested: u64, payload: &[u8]) -> Event {
    io_gen(ts, GEN, kind, ret, requested, payload)
}

pub(crate) fn packet(seq: u8, body: &[u8]) -> Vec<u8> {
    let n = body.len();
    let mut p = vec![n as u8, (n >> 8) as u8, (n >> 16) as u8, seq];
    p.extend_from_slice(body);
    p
}

/// A MariaDB 10.11 greeting (protocol 10), scramble filled with 'x'.
pub(crate) fn greeting() -> Vec<u8> {
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

pub(crate) const SECRET: [u8; 20] = [0xA5; 20];

/// HandshakeResponse41 body for user 'lab' with a 20-byte auth response.
pub(crate) fn login_body(db: Option<&str>) -> Vec<u8> {
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

pub(crate) fn ok_packet() -> Vec<u8> {
    packet(2, &[0, 0, 0, 2, 0, 0, 0])
}

pub(crate) fn err_packet(seq: u8, code: u16, state: &str, msg: &str) -> Vec<u8> {
    let mut b = vec![0xff];
    b.extend_from_slice(&code.to_le_bytes());
    b.push(b'#');
    b.extend_from_slice(state.as_bytes());
    b.extend_from_slice(msg.as_bytes());
    packet(seq, &b)
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
