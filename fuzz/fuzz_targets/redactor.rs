//! The redactor (recording/redact). Two runs per input:
//! - the input's records redacted as they come: no panic, and every pass only zeroes or
//!   masks (a byte stays, becomes 0 or FILLER), a second pass over the redacted records
//!   too. (Idempotence does not hold: a desynced stream's zeros re-read as zero-length
//!   packets, and the second pass may zero more; see
//!   `recording::redact::tests::fail_safe::a_second_pass_only_zeroes_or_masks`.)
//! - a login of a layout drawn from the input (4.1 or 3.20, with or without
//!   SECURE_CONNECTION, LENENC client data, a database, a plugin, attributes), its auth
//!   response bytes drawn from the input (zeros included), split into reads anyhow
//!   after a greeting: no auth byte survives (each is zeroed, or FILLER where only its
//!   NUL-ness is kept).
#![no_main]
use std::mem::offset_of;

use handshake_trace::{
    events::as_bytes,
    protocol::{self, builders, SERVER_STATUS_AUTOCOMMIT},
    recording::redact::{Redactor, FILLER},
};
use handshake_trace_common::{kind, sys, AcceptEvent, EventHeader, IoEvent, SysEvent, PAYLOAD_MAX};
use handshake_trace_fuzz::{records, Choices};
use libfuzzer_sys::fuzz_target;

const FD: i32 = 43;
const GEN: u64 = 1_000_000;

fuzz_target!(|data: &[u8]| {
    redact_records(data);
    login_layouts(data);
});

fn redact_records(data: &[u8]) {
    let (mut once, mut twice) = (Redactor::new(), Redactor::new());
    for rec in records(data) {
        let mut first = rec.to_vec();
        once.redact(&mut first);
        let mut second = first.clone();
        twice.redact(&mut second);
        for ((&r, &a), &b) in rec.iter().zip(&first).zip(&second) {
            assert!(a == r || a == 0 || a == FILLER, "{r:#04x} became {a:#04x}");
            assert!(b == a || b == 0 || b == FILLER, "{a:#04x} became {b:#04x} on a second pass");
        }
    }
}

fn hdr(kind: u32, ts: u64) -> EventHeader {
    EventHeader { kind, pid: 812, tid: 830, _pad: 0, ts_ns: ts }
}

fn accept() -> Vec<u8> {
    let mut addr = [0; 16];
    addr[..4].copy_from_slice(&[127, 0, 0, 1]);
    let header = hdr(kind::ACCEPT, GEN);
    as_bytes(&AcceptEvent { header, listen_fd: 20, ret: FD, family: 2, port: 51234, by_family: 0, addr, conn_gen: GEN })
}

fn io(ts: u64, syscall: u32, bytes: &[u8]) -> Vec<u8> {
    let captured = bytes.len().min(PAYLOAD_MAX);
    let mut payload = [0u8; PAYLOAD_MAX];
    payload[..captured].copy_from_slice(&bytes[..captured]);
    let ret = bytes.len() as i64;
    let sys = SysEvent { header: hdr(kind::IO, ts), conn_gen: GEN, ret, duration_ns: 1000, args: [16384, 0, 0, 0], fd: FD, syscall };
    as_bytes(&IoEvent { sys, captured: captured as u32, tracking_end: 0, payload })
}

fn login_layouts(data: &[u8]) {
    let mut c = Choices::new(data);
    let protocol41 = c.byte() & 3 != 0;
    let pick = c.byte();
    let optional = builders::LOGIN_LAYOUT_FLAGS.iter().enumerate().filter(|(i, _)| pick >> i & 1 != 0).fold(0, |a, (_, f)| a | f);
    // Up to 250 bytes: a SECURE_CONNECTION length byte holds 255 at most.
    let n = c.below(251);
    let auth = c.take(n).to_vec();
    let (body, range) = builders::login_of_layout(protocol41, optional, &auth);
    let lf = protocol::frame(1, &body);
    let g = builders::greeting(&builders::GreetingSpec {
        server_version: "5.5.5-10.11.14-MariaDB",
        connection_id: 31,
        scramble: b"q;V&1Z^x7Lk]Pw@3e|Nr",
        capabilities: 0x81ff_f7fe,
        charset: 45,
        status: SERVER_STATUS_AUTOCOMMIT,
        extended_capabilities: 0x1d,
        auth_plugin: "mysql_native_password",
    });
    let mut r = Redactor::new();
    r.redact(&mut accept());
    r.redact(&mut io(GEN + 1, sys::SENDTO, &protocol::frame(0, &g)));
    // Reads of up to PAYLOAD_MAX bytes (all captured), split where the input says.
    let mut at = 0;
    let mut stream = Vec::new();
    while at < lf.len() {
        let n = (1 + c.below(PAYLOAD_MAX)).min(lf.len() - at);
        let mut rec = io(GEN + 2 + at as u64, sys::RECVFROM, &lf[at..at + n]);
        r.redact(&mut rec);
        let p0 = offset_of!(IoEvent, payload);
        stream.extend_from_slice(&rec[p0..p0 + n]);
        at += n;
    }
    for i in range.clone() {
        let b = stream[4 + i];
        assert!(
            b == 0 || b == FILLER,
            "4.1 {protocol41}, flags {optional:#x}: auth byte {} of {auth:02x?} kept as {b:#04x}",
            i - range.start
        );
    }
}
