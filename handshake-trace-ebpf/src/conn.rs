//! Connections in their handshake (maps CONNS and PEERS): start and stop following
//! one, find the caller's at a syscall's entry, note the caller as its handler.
use aya_ebpf::EbpfContext;
use handshake_trace_common::{Conn, ConnKey, InFlight, PeerKey, ThreadConn};

use crate::{
    emit::now,
    live::{any_live, counted_insert, counted_remove},
    maps::{live, CONNS, PEERS},
    target::current_target,
    task::task_enter,
};

/// Start following a connection in its handshake.
#[inline(always)]
pub fn conn_insert(key: &ConnKey, conn: &Conn) -> Result<(), i64> {
    counted_insert(&CONNS, live::CONNS, key, conn)
}

#[inline(always)]
pub fn conn_remove(key: &ConnKey) {
    counted_remove(&CONNS, live::CONNS, key)
}

/// The connection in its handshake on (tgid, fd), if any.
#[inline(always)]
pub fn conn(tgid: u32, fd: i32) -> Option<*mut Conn> {
    CONNS.get_ptr_mut(&ConnKey { tgid, fd })
}

/// At a syscall's entry on `fd`: if it is a connection in its handshake, note this
/// thread as its handler and save the syscall for its exit. The lookup is also the
/// target filter (only targets' accepts insert connections).
#[inline(always)]
pub fn enter_on_conn<C: EbpfContext>(ctx: &C, fd: i32, syscall: u32, ptr: u64, args: [u64; 4]) -> bool {
    let Some(tc) = conn_at_enter(fd) else { return false };
    enter_on(ctx, &tc, syscall, ptr, args);
    true
}

/// At a syscall's entry: the connection in its handshake on `fd` of the calling
/// target, as (tgid, fd, generation), with the caller's tid.
#[inline(always)]
pub fn conn_at_enter(fd: i32) -> Option<(ThreadConn, u32)> {
    let (key, c, tid) = conn_entry_at_enter(fd)?;
    // SAFETY: `c` comes from a successful lookup: a valid, aligned `Conn` for the rest
    // of this run (map elements are freed only after running programs finish).
    let gen = unsafe { (*c).gen };
    Some((ThreadConn { tgid: key.tgid, fd, gen }, tid))
}

/// At a syscall's entry on `fd`: the calling target's connection in its handshake
/// there (key and entry), with the caller's tid.
#[inline(always)]
pub fn conn_entry_at_enter(fd: i32) -> Option<(ConnKey, *mut Conn, u32)> {
    let (tgid, tid) = current_target()?;
    if !any_live(live::CONNS) {
        return None;
    }
    Some((ConnKey { tgid, fd }, conn(tgid, fd)?, tid))
}

/// Note the caller as the connection's handler and save the syscall for its exit.
#[inline(always)]
pub fn enter_on<C: EbpfContext>(ctx: &C, at: &(ThreadConn, u32), syscall: u32, ptr: u64, args: [u64; 4]) {
    let (tc, tid) = *at;
    let saved = InFlight { fd: tc.fd, syscall, ptr, enter_ns: now(), conn_gen: tc.gen, args };
    task_enter(ctx, tid, Some(tc), &saved);
}

/// Stop tracing a connection: its handshake is over (or it is closed).
#[inline(always)]
pub fn forget_conn(tgid: u32, fd: i32) {
    let key = ConnKey { tgid, fd };
    // SAFETY: the peer is copied out of the entry before it is removed below.
    if let Some(c) = unsafe { CONNS.get(&key) } {
        forget_peer(&PeerKey { addr: c.peer_addr, port: c.peer_port, server_port: c.server_port, _pad2: 0 });
    }
    conn_remove(&key);
}

/// Remove a syscall-tier connection's PEERS entry (counted when it lacks the server's port).
#[inline(always)]
pub fn forget_peer(peer: &PeerKey) {
    if peer.server_port == 0 {
        counted_remove(&PEERS, live::UNKEYED_PEERS, peer);
    } else {
        let _ = PEERS.remove(peer);
    }
}
