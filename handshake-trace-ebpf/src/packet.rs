//! Socket tier: the bytes of connections in their handshake, from each packet's first
//! bytes (`cgroup_skb/ingress` and `egress` on the cgroup v2 root). Any packet of a
//! socket not followed costs one array load (`sock_conn`'s slot filter), rarely a
//! hash lookup; the headers (IPv4 options, IPv6 extension headers) are parsed only
//! for followed sockets (`handshake_trace_common::packet`). A packet before the sequence number expected
//! is a retransmitted copy and sends nothing; the server's OK or ERR ends the
//! handshake exactly as in the syscall tier (`handshake_trace_common::handshake_end`).
use core::ffi::c_void;

use aya_ebpf::{helpers::generated, macros::cgroup_skb, programs::SkBuffContext};
use handshake_trace_common::{
    counter, kind,
    packet::{tcp_payload, tcp_source, PacketBytes, TcpPayload},
    sock_slot, sys, IoEvent, PeerKey, SysEvent, NO_FD, PAYLOAD_MAX,
};

use crate::{
    emit::{count, header, now, submit_flags},
    maps::{EARLY_DATA, EARLY_SCRATCH, EVENTS, LISTEN_PORTS},
    sock::{forget_sock, owner, sock_conn},
    target::current,
};

// The copy length is masked to 1..=PAYLOAD_MAX.
const _: () = assert!(PAYLOAD_MAX.is_power_of_two());

/// cgroup_skb verdict: let the packet through (these programs only look).
const PASS: i32 = 1;
/// 1 when this kernel lets cgroup_skb programs call `bpf_get_current_pid_tgid` (not
/// 6.1's; probed by userspace before load): the verifier then never sees the call.
// SAFETY (no_mangle): the loader finds it by this name; no other symbol has it.
#[unsafe(no_mangle)]
static SKB_CURRENT_TASK: u32 = 1;

#[inline(always)]
fn skb_knows_current() -> bool {
    // SAFETY: a reference to a static; volatile so the loader's value is read.
    unsafe { core::ptr::read_volatile(&SKB_CURRENT_TASK) != 0 }
}

/// The packet's bytes for the pure parser (`bpf_skb_load_bytes`, bounds-checked).
struct Skb<'a>(&'a SkBuffContext);

impl PacketBytes for Skb<'_> {
    #[inline(always)]
    fn u8_at(&self, off: u32) -> Option<u8> {
        self.0.load::<u8>(off as usize).ok()
    }
    #[inline(always)]
    fn u16_at(&self, off: u32) -> Option<u16> {
        self.0.load::<u16>(off as usize).ok().map(u16::from_be)
    }
    #[inline(always)]
    fn u32_at(&self, off: u32) -> Option<u32> {
        self.0.load::<u32>(off as usize).ok().map(u32::from_be)
    }
}

#[cgroup_skb(ingress)]
pub fn cgroup_skb_ingress(ctx: SkBuffContext) -> i32 {
    on_packet(&ctx, false);
    PASS
}

#[cgroup_skb(egress)]
pub fn cgroup_skb_egress(ctx: SkBuffContext) -> i32 {
    on_packet(&ctx, true);
    PASS
}

#[inline(always)]
fn on_packet(ctx: &SkBuffContext, egress: bool) {
    // SAFETY: `skb` is the program's context; `sk` is a field the verifier lets
    // cgroup_skb programs read (the packet's socket, or NULL). Its address is used as a
    // number, a map key, never dereferenced.
    let sk = unsafe { (*ctx.skb.skb).__bindgen_anon_2.sk } as u64;
    if sk == 0 {
        return;
    }
    // The socket's ports, as numbers (the kernel reads them from the socket): remote
    // in network order in the upper half, local in host order.
    // SAFETY: fields of the program's context.
    let (remote, local) = unsafe { ((*ctx.skb.skb).remote_port, (*ctx.skb.skb).local_port) };
    let Some(c) = sock_conn(sk, sock_slot(local as u16, u16::from_be((remote >> 16) as u16))) else {
        // A listening socket's packet (no remote port): SYNs and the handshakes' last
        // ACKs, one of which may carry the client's first bytes.
        if !egress && remote == 0 {
            early_data(ctx, local as u16);
        }
        return;
    };
    let Some(TcpPayload { offset: off, len, seq, .. }) = tcp_payload(&Skb(ctx)) else { return };
    if len == 0 {
        return;
    }
    // Egress of a payload runs in the sending thread: the owner of a connection on a
    // shared port may be learnt here (its greeting). Ingress (softirq) waits for it, and
    // so does egress where the kernel has no current task for cgroup_skb (6.1): the
    // socket calls learn it there.
    if owner(ctx, c, egress && skb_knows_current()).is_none() {
        return;
    }
    // SAFETY: valid and aligned (a successful lookup) during this run; the entry is
    // changed only by these two programs, for this socket's packets.
    let c = unsafe { &mut *c };
    let expected = if egress { &mut c.next_seq_out } else { &mut c.next_seq_in };
    if *expected != 0 && (seq.wrapping_sub(*expected) as i32) < 0 {
        return;
    }
    *expected = seq.wrapping_add(len);
    let Some(mut entry) = EVENTS.reserve::<IoEvent>(0) else {
        count(counter::LOST_RINGBUF);
        return;
    };
    let e = entry.as_mut_ptr();
    // Ingress runs in softirq, in no thread of the server; egress in the sender's.
    let tid = if egress && skb_knows_current() { current().1 } else { 0 };
    let mut captured: u32 = 0;
    // SAFETY: `e` points to the reserved record, ours alone and writable until it is
    // submitted; the copy is at most PAYLOAD_MAX bytes (checked just before, as the
    // verifier also requires) into the record's payload, and the helper reads the
    // packet with bounds checks of its own.
    unsafe {
        (*e).sys = SysEvent {
            header: header(kind::IO, c.tgid, tid),
            conn_gen: c.gen,
            ret: len as i64,
            duration_ns: 0,
            args: [0; 4],
            fd: NO_FD,
            syscall: if egress { sys::PACKET_OUT } else { sys::PACKET_IN },
        };
        let mut n = len;
        if n > PAYLOAD_MAX as u32 {
            n = PAYLOAD_MAX as u32;
        }
        // 1..=PAYLOAD_MAX (len > 0 above) in a form the verifier sees: it rejects a
        // copy that might be empty.
        let n = ((n.wrapping_sub(1)) & (PAYLOAD_MAX as u32 - 1)) + 1;
        let dst = (*e).payload.as_mut_ptr() as *mut c_void;
        if generated::bpf_skb_load_bytes(ctx.skb.skb as *const c_void, off, dst, n) == 0 {
            captured = n;
        }
        (*e).captured = captured;
    }
    // SAFETY: the reserved record; `handshake_end` looks only at bytes `captured` covers.
    let p = unsafe { &(*e).payload };
    let first = [p[0], p[1], p[2], p[3], p[4], p[5]];
    let end = handshake_trace_common::handshake_end(&mut c.flags, &mut c.tls_budget, egress, captured, first);
    let (peer, local_port) = (c.peer, c.local_port);
    // SAFETY: the reserved record, not yet submitted.
    unsafe { (*e).tracking_end = end as u32 };
    entry.submit(submit_flags());
    count(counter::EMITTED);
    if end != 0 {
        forget_sock(sk, &peer, local_port);
    }
}

/// A segment with data on a target's listening socket: the client sent its first bytes
/// with the ACK that completes the TCP handshake (HAProxy's checks and `send-proxy`
/// connections do, before the greeting). This program ran for the listener, and the
/// connection the segment establishes does not exist yet: its bytes are kept by the
/// client's address until `sock::on_established` follows that connection.
#[inline(always)]
fn early_data(ctx: &SkBuffContext, port: u16) {
    // SAFETY: only whether the key exists.
    if unsafe { LISTEN_PORTS.get(&port) }.is_none() {
        return;
    }
    let skb = Skb(ctx);
    let Some(TcpPayload { tcp, offset, len, seq }) = tcp_payload(&skb) else { return };
    if len == 0 {
        return;
    }
    let Some(src) = tcp_source(&skb, tcp) else { return };
    let Some(d) = EARLY_SCRATCH.get_ptr_mut(0) else { return };
    let key = PeerKey { addr: src.addr, port: src.port, server_port: port, _pad2: 0 };
    let mut n = len;
    if n > PAYLOAD_MAX as u32 {
        n = PAYLOAD_MAX as u32;
    }
    // 1..=PAYLOAD_MAX, in a form the verifier sees (as in `on_packet`).
    let n = ((n.wrapping_sub(1)) & (PAYLOAD_MAX as u32 - 1)) + 1;
    // SAFETY: `d` is this CPU's scratch value (valid, aligned, ours during this run);
    // the copy is at most PAYLOAD_MAX bytes into its payload, and the helper reads the
    // packet with bounds checks of its own.
    unsafe {
        (*d).ts_ns = now();
        (*d).seq = seq;
        (*d).len = len;
        (*d)._pad = 0;
        let dst = (*d).payload.as_mut_ptr() as *mut c_void;
        (*d).captured = if generated::bpf_skb_load_bytes(ctx.skb.skb as *const c_void, offset, dst, n) == 0 { n } else { 0 };
        if EARLY_DATA.insert(&key, &*d, 0).is_err() {
            count(counter::LOST_MAPFULL);
        }
    }
}
