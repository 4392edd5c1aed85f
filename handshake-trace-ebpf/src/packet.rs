//! Socket tier: the bytes of connections in their handshake, from each packet's first
//! bytes (`cgroup_skb/ingress` and `egress` on the cgroup v2 root). Any packet of a
//! socket not followed costs one lookup. A packet before the sequence number expected
//! is a retransmitted copy and sends nothing; the server's OK or ERR ends the
//! handshake exactly as in the syscall tier (`io::handshake_end`).
use core::ffi::c_void;

use aya_ebpf::{helpers::generated, macros::cgroup_skb, programs::SkBuffContext};
use handshake_trace_common::{counter, kind, sys, IoEvent, SysEvent, NO_FD, PAYLOAD_MAX};

use crate::{
    emit::{count, header, submit_flags},
    io::{handshake_end, MYSQL_FIRST, MYSQL_SEQ},
    maps::EVENTS,
    sock::{forget_sock, sock_conn},
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

/// IPv4 / IPv6 header facts: version nibble, header length, protocol, lengths.
const IP_V4: u8 = 4;
const IP_V6: u8 = 6;
const IPV4_PROTOCOL: usize = 9;
const IPV4_TOTAL_LEN: usize = 2;
const IPV6_NEXT_HEADER: usize = 6;
const IPV6_PAYLOAD_LEN: usize = 4;
const IPV6_HEADER: u32 = 40;
const IPPROTO_TCP: u8 = 6;
/// TCP: the sequence number, and the data offset (header length in words, high nibble).
const TCP_SEQ: u32 = 4;
const TCP_DATA_OFFSET: u32 = 12;

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

/// The TCP payload's offset in the packet, its length, and its sequence number.
#[inline(always)]
fn tcp_payload(ctx: &SkBuffContext) -> Option<(u32, u32, u32)> {
    let first: u8 = ctx.load(0).ok()?;
    let (ip_len, total) = match first >> 4 {
        IP_V4 => {
            if ctx.load::<u8>(IPV4_PROTOCOL).ok()? != IPPROTO_TCP {
                return None;
            }
            ((first as u32 & 0x0f) * 4, u16::from_be(ctx.load::<u16>(IPV4_TOTAL_LEN).ok()?) as u32)
        }
        IP_V6 => {
            if ctx.load::<u8>(IPV6_NEXT_HEADER).ok()? != IPPROTO_TCP {
                return None;
            }
            (IPV6_HEADER, IPV6_HEADER + u16::from_be(ctx.load::<u16>(IPV6_PAYLOAD_LEN).ok()?) as u32)
        }
        _ => return None,
    };
    let seq = u32::from_be(ctx.load::<u32>((ip_len + TCP_SEQ) as usize).ok()?);
    let tcp_len = (ctx.load::<u8>((ip_len + TCP_DATA_OFFSET) as usize).ok()? as u32 >> 4) * 4;
    let off = ip_len + tcp_len;
    Some((off, total.saturating_sub(off), seq))
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
    let Some(c) = sock_conn(sk) else { return };
    let Some((off, len, seq)) = tcp_payload(ctx) else { return };
    if len == 0 {
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
    let first = [p[0], p[1], p[MYSQL_SEQ], p[MYSQL_FIRST]];
    let end = handshake_end(&mut c.flags, &mut c.tls_budget, egress, captured, first);
    let peer = c.peer;
    // SAFETY: the reserved record, not yet submitted.
    unsafe { (*e).tracking_end = end as u32 };
    entry.submit(submit_flags());
    count(counter::EMITTED);
    if end != 0 {
        forget_sock(sk, &peer);
    }
}
