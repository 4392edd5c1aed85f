//! Tests of the redactor: records as the kernel writes them, replayed through the
//! decoder and the correlator before and after redaction.
mod fail_safe;
mod proxy;
mod layouts;
mod secrets;

use std::mem::{offset_of, size_of};
use std::ops::Range;

use handshake_trace_common::{
    end, kind, sys, AcceptEvent, EventHeader, IoEvent, SysEvent, PAYLOAD_MAX, SYS_TRACKING_END,
};

use super::{Redactor, FILLER, MAX_CONNECTIONS, MSG_PEEK};
use crate::correlate::Correlator;
use crate::events::{as_bytes, decode, Event};
use crate::protocol::samples::*;
use crate::protocol::*;

type Ranges = Vec<Range<usize>>;

const PID: u32 = 812;
const FD: i32 = 43;
const GEN: u64 = 1_000_000;
const HANDLER: u32 = 830;

/// Deterministic "random" secret bytes (no NUL, so any window is distinctive).
fn secret(n: usize, seed: u8) -> Vec<u8> {
    let mut x = 0x9e37_79b9u32 ^ u32::from(seed).wrapping_mul(0x0101_0101);
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x % 255 + 1) as u8
        })
        .collect()
}

fn ed25519_nonce() -> Vec<u8> {
    secret(32, 1)
}

fn ed25519_signature() -> Vec<u8> {
    secret(64, 2)
}

fn find(hay: &[u8], needle: &[u8]) -> usize {
    hay.windows(needle.len()).position(|w| w == needle).expect("test data holds the secret")
}

/// A MariaDB 10.11.14 (Debian 12) greeting, connection id 31. Returns the body and
/// the body ranges of its secrets.
fn greeting() -> (Vec<u8>, Ranges) {
    let g = mariadb_greeting();
    let (p1, p2) = (find(&g, &SCRAMBLE1), find(&g, &SCRAMBLE2));
    (g, vec![p1..p1 + 8, p2..p2 + 12])
}

/// HandshakeResponse41 as libmariadb sends it, with `extra_attr` bytes of padding
/// in one more attribute. Returns the body and the auth response's body range.
fn login(caps: u32, auth: &[u8], extra_attr: usize) -> (Vec<u8>, Range<usize>) {
    let l = mariadb_login(caps, auth, extra_attr);
    let at = find(&l, auth);
    (l, at..at + auth.len())
}

fn auth_switch_ed25519() -> Vec<u8> {
    builders::auth_switch("client_ed25519", &ed25519_nonce())
}

fn ok_body() -> Vec<u8> {
    ok_payload()
}

fn ssl_request() -> Vec<u8> {
    mariadb_ssl_request()
}

fn hdr(kind: u32, ts: u64) -> EventHeader {
    EventHeader { kind, pid: PID, tid: HANDLER, _pad: 0, ts_ns: ts }
}

fn accept_rec(ts: u64) -> Vec<u8> {
    as_bytes(&AcceptEvent {
        header: hdr(kind::ACCEPT, ts),
        listen_fd: 20,
        ret: FD,
        family: 2,
        port: 51234,
        by_family: 0,
        addr: [127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0],
        conn_gen: GEN,
    })
}

fn sys_rec(ts: u64, syscall: u32, ret: i64, args: [u64; 4]) -> Vec<u8> {
    as_bytes(&SysEvent { header: hdr(kind::SYSCALL, ts), conn_gen: GEN, ret, duration_ns: 1000, args, fd: FD, syscall })
}

/// An IO record; the payload past `captured` holds stale bytes, as the ring buffer may.
fn io_rec(ts: u64, syscall: u32, ret: i64, bytes: &[u8]) -> Vec<u8> {
    let captured = bytes.len().min(PAYLOAD_MAX);
    let mut payload = [0xA5u8; PAYLOAD_MAX];
    payload[..captured].copy_from_slice(&bytes[..captured]);
    let mut sys = SysEvent {
        header: hdr(kind::IO, ts),
        conn_gen: GEN,
        ret,
        duration_ns: 1000,
        // Readers ask for a buffer at least as large as what they get.
        args: [if ret > 0 { 16384 } else { 4 }, 0, 0, 0],
        fd: FD,
        syscall,
    };
    if syscall == sys::RECVMSG {
        sys.args = [0, 0, 0, 0];
    }
    as_bytes(&IoEvent { sys, captured: captured as u32, tracking_end: 0, payload })
}

fn read(ts: u64, bytes: &[u8]) -> Vec<u8> {
    io_rec(ts, sys::RECVFROM, bytes.len() as i64, bytes)
}

fn write(ts: u64, bytes: &[u8]) -> Vec<u8> {
    io_rec(ts, sys::SENDTO, bytes.len() as i64, bytes)
}

fn redact_all(records: &[Vec<u8>]) -> Vec<Vec<u8>> {
    let mut r = Redactor::new();
    records
        .iter()
        .map(|rec| {
            let mut rec = rec.clone();
            r.redact(&mut rec);
            rec
        })
        .collect()
}

fn payload_of(rec: &[u8]) -> &[u8] {
    let p0 = offset_of!(IoEvent, payload);
    &rec[p0..p0 + PAYLOAD_MAX]
}

/// The decoder's view, as the correlator builds it: every packet decoded.
#[derive(Debug, Default, PartialEq)]
struct View {
    server: Vec<ServerPacket>,
    client: Vec<ClientPacket>,
    tls: bool,
    tls_bytes: usize,
}

fn replay(records: &[Vec<u8>]) -> View {
    let (mut from_client, mut from_server) = (PacketStream::new(), PacketStream::new());
    let mut v = View::default();
    let (mut greeting, mut login, mut requested) = (false, false, false);
    for rec in records {
        let Ok(Event::Io(io)) = decode(rec) else { continue };
        let total = match io.sys.result {
            crate::events::SyscallResult::Ok(n) if n > 0 => n as usize,
            _ => 0,
        };
        if total == 0 {
            continue;
        }
        // After a ClientHello with no SSLRequest the server still speaks MySQL.
        if v.tls && (requested || io.sys.kind.is_read()) {
            v.tls_bytes += total;
            continue;
        }
        if io.sys.kind.is_read() {
            let at_boundary = !from_client.mid_packet();
            for p in from_client.feed(&io.payload, total) {
                let c = decode_client(&p, !login && !v.tls);
                match &c {
                    ClientPacket::Login(_) => login = true,
                    ClientPacket::SslRequest(_) => (v.tls, requested) = (true, true),
                    _ => {}
                }
                v.client.push(c);
            }
            // A ClientHello unasked (an announced one switched above): the one rule.
            if starts_client_hello(&io.payload, at_boundary, false, !login && !v.tls) {
                v.tls = true;
            }
        } else {
            for p in from_server.feed(&io.payload, total) {
                let s = decode_server(&p, greeting);
                greeting |= matches!(s, ServerPacket::Greeting(_));
                v.server.push(s);
            }
        }
    }
    v
}

/// What the correlator (watch / analyze) makes of the records.
fn correlate(records: &[Vec<u8>]) -> String {
    let mut c = Correlator::new(100);
    let mut out = Vec::new();
    for rec in records {
        if let Ok(ev) = decode(rec) {
            out.extend(c.push(&ev, None));
        }
    }
    out.extend(c.finish_all(u64::MAX / 2));
    // What a user sees: the timeline in words and the JSON record.
    let clock = crate::support::clock::Clock::with_offset(0);
    out.iter()
        .map(|h| format!("{}\n{}\n", crate::output::handshake_timeline(h, &clock), crate::output::handshake_json(h, &clock)))
        .collect()
}

/// Asserts that exactly the bytes at `secret` positions of `stream` changed (to
/// zero, or to zero-or-FILLER where `masked`), then that the decoder's view is
/// unchanged.
fn assert_only_secrets_changed(before: &[u8], after: &[u8], secret: &[Range<usize>], masked: &[usize]) {
    assert_eq!(before.len(), after.len());
    for (i, (b, a)) in before.iter().zip(after).enumerate() {
        let is_secret = secret.iter().any(|r| r.contains(&i));
        if masked.contains(&i) {
            assert_eq!(*a, if *b == 0 { 0 } else { FILLER }, "byte {i}");
        } else if is_secret {
            assert_eq!(*a, 0, "secret byte {i} ({b:#04x}) not zeroed");
        } else {
            assert_eq!(a, b, "public byte {i} changed");
        }
    }
}

/// The captured payload bytes of one direction, in stream order.
fn stream(records: &[Vec<u8>], client: bool) -> Vec<u8> {
    let mut out = Vec::new();
    for rec in records {
        if let Ok(Event::Io(io)) = decode(rec) {
            if io.sys.kind.is_read() == client {
                out.extend_from_slice(&io.payload);
            }
        }
    }
    out
}

fn shift(ranges: &[Range<usize>], by: usize) -> Vec<Range<usize>> {
    ranges.iter().map(|r| r.start + by..r.end + by).collect()
}

/// A MariaDB login with ed25519: the server reads headers and bodies separately.
fn ed25519_session() -> (Vec<Vec<u8>>, Ranges, Ranges) {
    let (g, g_secret) = greeting();
    let (l, auth) = login(LOGIN_CAPS, &AUTH_RESPONSE, 0);
    let gf = frame(0, &g);
    let lf = frame(1, &l);
    let sw = frame(2, &auth_switch_ed25519());
    let reply = frame(3, &ed25519_signature());
    let ok = frame(4, &ok_body());
    let records = vec![
        accept_rec(GEN),
        write(GEN + 10, &gf),
        read(GEN + 20, &lf[..4]),
        read(GEN + 30, &lf[4..]),
        write(GEN + 40, &sw),
        read(GEN + 50, &reply[..4]),
        read(GEN + 60, &reply[4..]),
        write(GEN + 70, &ok),
        sys_rec(GEN + 80, SYS_TRACKING_END, 0, [end::REPLY, 0, 0, 0]),
    ];
    // Secrets in each direction's stream.
    let mut server_secret = shift(&g_secret, 4);
    let sw_data = gf.len() + 4 + 1 + b"client_ed25519\0".len();
    server_secret.push(sw_data..sw_data + 32);
    let client_secret = vec![4 + auth.start..4 + auth.end, lf.len() + 4..lf.len() + 4 + 64];
    (records, server_secret, client_secret)
}
