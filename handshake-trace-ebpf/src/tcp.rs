//! TCP events of connections in their handshake: retransmits, resets sent and
//! received, state changes. These run in whatever context the stack is in, so the
//! connection is found by its client address (daddr/dport on the server's socket).
use aya_ebpf::{macros::tracepoint, programs::TracePointContext, EbpfContext};
use handshake_trace_common::{kind, tcp, PeerKey, TcpEvent, TcpOffsets, ThreadConn, SET_STATE_LAYOUT};

use crate::{
    emit::{emit, header},
    maps::{PEERS, offsets},
    net::{v4_mapped, AF_INET, IPPROTO_TCP, SA_PORT, SIN6_ADDR, SIN_ADDR},
    target::current,
};

#[inline(always)]
fn read<T>(ctx: &TracePointContext, off: u32) -> Option<T> {
    unsafe { ctx.read_at::<T>(off as usize) }.ok()
}

/// The client's address as this tracepoint shows it.
#[inline(always)]
fn peer(ctx: &TracePointContext, o: &TcpOffsets) -> Option<PeerKey> {
    let mut key = PeerKey::default();
    if o.daddr_is_sockaddr != 0 {
        // struct sockaddr_in / sockaddr_in6 in a 28-byte field.
        let family: u16 = read(ctx, o.daddr)?;
        key.port = u16::from_be(read::<u16>(ctx, o.daddr + SA_PORT)?);
        if family == AF_INET {
            key.addr = v4_mapped(read(ctx, o.daddr + SIN_ADDR)?);
        } else {
            key.addr = read(ctx, o.daddr + SIN6_ADDR)?;
        }
    } else {
        key.port = read(ctx, o.dport)?;
        key.addr = read(ctx, o.daddr)?;
    }
    Some(key)
}

#[inline(always)]
fn on_tcp(ctx: &TracePointContext, o: &TcpOffsets, what: u32) {
    let Some(key) = peer(ctx, o) else { return };
    let Some(tc) = (unsafe { PEERS.get(&key) }).copied() else { return };
    let (oldstate, newstate) = if what == tcp::STATE {
        (read::<i32>(ctx, o.oldstate).unwrap_or(0) as u32, read::<i32>(ctx, o.newstate).unwrap_or(0) as u32)
    } else {
        (0, 0)
    };
    send(&tc, what, oldstate, newstate);
}

#[inline(always)]
fn send(tc: &ThreadConn, what: u32, oldstate: u32, newstate: u32) {
    let (_, tid) = current();
    emit(TcpEvent { header: header(kind::TCP, tc.tgid, tid), conn_gen: tc.gen, fd: tc.fd, what, oldstate, newstate });
}

#[tracepoint]
pub fn tcp_retransmit_skb(ctx: TracePointContext) -> u32 {
    on_tcp(&ctx, &offsets().retransmit, tcp::RETRANSMIT);
    0
}

#[tracepoint]
pub fn tcp_send_reset(ctx: TracePointContext) -> u32 {
    on_tcp(&ctx, &offsets().send_reset, tcp::SEND_RESET);
    0
}

#[tracepoint]
pub fn tcp_receive_reset(ctx: TracePointContext) -> u32 {
    on_tcp(&ctx, &offsets().receive_reset, tcp::RECEIVE_RESET);
    0
}

#[tracepoint]
pub fn inet_sock_set_state(ctx: TracePointContext) -> u32 {
    let all = offsets();
    if all.set_state_fixed != 0 {
        set_state_fixed(&ctx);
        return 0;
    }
    let o = all.set_state;
    if read::<u16>(&ctx, o.protocol) != Some(IPPROTO_TCP) {
        return 0;
    }
    on_tcp(&ctx, &o, tcp::STATE);
    0
}

/// A field of this tracepoint's record at a constant offset: a plain load the verifier
/// checks (tracepoint contexts are readable), where `read` calls `bpf_probe_read`.
#[inline(always)]
fn field<T: Copy>(ctx: &TracePointContext, off: usize) -> T {
    unsafe { *((ctx.as_ptr() as *const u8).add(off) as *const T) }
}

/// inet_sock_set_state at `SET_STATE_LAYOUT`: most runs are for sockets nobody follows
/// (the clients' ends, other services), turned away after three loads and one lookup.
#[inline(always)]
fn set_state_fixed(ctx: &TracePointContext) {
    const L: TcpOffsets = SET_STATE_LAYOUT;
    if field::<u16>(ctx, L.protocol as usize) != IPPROTO_TCP {
        return;
    }
    // daddr_v6 (IPv4 peers v4-mapped) in two aligned loads.
    let first: u64 = field(ctx, L.daddr as usize);
    let second: u64 = field(ctx, L.daddr as usize + 8);
    let mut key = PeerKey { port: field(ctx, L.dport as usize), ..PeerKey::default() };
    key.addr[..8].copy_from_slice(&first.to_ne_bytes());
    key.addr[8..].copy_from_slice(&second.to_ne_bytes());
    let Some(tc) = (unsafe { PEERS.get(&key) }).copied() else { return };
    send(&tc, tcp::STATE, field::<i32>(ctx, L.oldstate as usize) as u32, field::<i32>(ctx, L.newstate as usize) as u32);
}
