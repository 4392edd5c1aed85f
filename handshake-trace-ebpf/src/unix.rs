//! Socket tier: clients of the targets' Unix sockets. No packet carries their bytes and
//! no state-change tracepoint fires for them, so:
//! - the start: `sk_data_ready` (a BTF tracepoint) on a target's *listening* Unix
//!   socket runs inside the client's `connect`, after the kernel made the server's new
//!   socket: the connecting socket (from the connect's fd) names it as its peer. Any
//!   other socket leaves after two loads (family, state).
//! - the bytes: the server's own reads and writes on that socket (`sock_recv_length` /
//!   `sock_send_length`, already filtered by `sock.rs`), copied from the user buffer
//!   of the syscall the server is in (its registers: `bpf_task_pt_regs`).
//! - the end: the server's OK or ERR (as for TCP), or its socket found closed by the
//!   sweep program, which userspace runs every few tens of milliseconds
//!   (`BPF_PROG_TEST_RUN`) on the connections still followed.
use core::ffi::c_void;

use aya_ebpf::{
    helpers::{bpf_get_current_comm, bpf_get_current_task_btf, generated},
    macros::{btf_tracepoint, raw_tracepoint},
    programs::{BtfTracePointContext, RawTracePointContext},
    EbpfContext,
};
use handshake_trace_common::{
    counter, kind, sys, tcp, unix_slot, IoEvent, PeerKey, SockConn, SysEvent, TcpEvent, UnixConnectEvent, UnixOffsets, CONN_UNIX,
    NO_FD, PAYLOAD_MAX, UNIX_SWEEP_BATCH,
};

use crate::{
    emit::{count, emit, header, map_full, now, submit_flags},
    maps::{BPF_NOEXIST, EVENTS, SOCK_CONNS, UNIX_LISTENERS, UNIX_SOCKS},
    net::AF_UNIX,
    read,
    sock::{sk_family, sk_load, slot_add},
    target::current,
};

/// `sk_state` of a listening socket, and of a closed one (`include/net/tcp_states.h`).
const TCP_LISTEN: u8 = 10;
const TCP_CLOSE: u8 = 7;
/// `MSG_PEEK`: the bytes stay queued and are read again.
const MSG_PEEK: u32 = 2;

/// x86-64 `struct pt_regs`: dx, si, di, orig_ax are consecutive from byte 96.
const REGS_DX: u64 = 96;
/// x86-64 syscall numbers of the calls a socket read or write comes from.
const NR_READ: u64 = 0;
const NR_WRITE: u64 = 1;
const NR_READV: u64 = 19;
const NR_WRITEV: u64 = 20;
const NR_CONNECT: u64 = 42;
const NR_SENDTO: u64 = 44;
const NR_RECVFROM: u64 = 45;
const NR_SENDMSG: u64 = 46;
const NR_RECVMSG: u64 = 47;
/// `struct user_msghdr`: msg_iov at byte 16.
const MSGHDR_IOV: u64 = 16;

/// Offsets in this kernel's structs (written by userspace before load).
// SAFETY (no_mangle): the loader finds it by this name; no other symbol has it.
#[unsafe(no_mangle)]
static UNIX_OFFSETS: UnixOffsets = UnixOffsets {
    ok: 0,
    sk_hash: 0,
    sk_state: 0,
    sk_socket: 0,
    socket_inode: 0,
    inode_ino: 0,
    task_files: 0,
    files_fdt: 0,
    fdt_fd: 0,
    file_private_data: 0,
    socket_sk: 0,
    unix_peer: 0,
    task_group_leader: 0,
    task_comm: 0,
    sk_peer_pid: 0,
    pid_numbers: 0,
    pid_tasks: 0,
    task_pid_links: 0,
};

#[inline(always)]
fn off(pick: impl FnOnce(&UnixOffsets) -> &u32) -> u64 {
    // SAFETY: a reference into a static; volatile so the loader's value is read.
    u64::from(unsafe { core::ptr::read_volatile(pick(&UNIX_OFFSETS)) })
}

/// The filter slot of a socket without ports (a Unix socket): its `sk_hash`, loaded
/// directly from the BTF-typed socket.
#[inline(always)]
pub(crate) fn btf_unix_slot(sk: u64) -> u32 {
    // SAFETY (offset): a constant the verifier checks against `struct sock`.
    unix_slot(sk_load::<u32>(sk, unsafe { core::ptr::read_volatile(&UNIX_OFFSETS.sk_hash) }))
}

/// `tp_btf/sk_data_ready` (`const struct sock *sk`): runs for every socket that gets
/// data (every Unix send, every TCP segment with data) and for a listening Unix socket
/// inside each `connect` to it. Two direct loads send away all but the listeners.
#[btf_tracepoint(function = "sk_data_ready")]
pub fn sk_data_ready(ctx: BtfTracePointContext) -> i32 {
    let sk: u64 = ctx.arg(0);
    if sk_family(sk) != AF_UNIX {
        return 0;
    }
    // SAFETY (offset): as in `btf_unix_slot`.
    if sk_load::<u8>(sk, unsafe { core::ptr::read_volatile(&UNIX_OFFSETS.sk_state) }) != TCP_LISTEN {
        return 0;
    }
    on_connect(&ctx, sk);
    0
}

/// A `connect` to listening Unix socket `listener`, in the client's thread: if the
/// listener is a target's, follow the server's new socket and tell userspace who
/// connected (this thread's process and name).
#[inline(always)]
fn on_connect<C: EbpfContext>(ctx: &C, listener: u64) {
    let Ok(socket) = read::kernel::<u64>(listener + off(|o| &o.sk_socket)) else { return };
    let Ok(ino) = read::kernel::<u64>(socket + off(|o| &o.socket_inode) + off(|o| &o.inode_ino)) else { return };
    // SAFETY: copied at once.
    let Some(owner) = (unsafe { UNIX_LISTENERS.get(&ino) }).copied() else { return };
    let Some(sk) = connecting_peer() else {
        // Not a connect(2) (io_uring, a kernel socket) or unreadable: not seen.
        count(counter::LOST_MAPFULL);
        return;
    };
    let gen = now();
    let (tgid, _) = current();
    // A new socket at the address of one still followed: that one is gone (its memory
    // was reused) without the sweep having seen it yet.
    if let Some(old) = SOCK_CONNS.get_ptr_mut(&sk) {
        // SAFETY: copied at once from a successful lookup.
        let old = unsafe { *old };
        if old.flags & CONN_UNIX != 0 {
            closed(&old, sk);
        }
    }
    let hash = read::kernel::<u32>(sk + off(|o| &o.sk_hash)).unwrap_or(0);
    // The slot's hash rides in `peer.port` (a Unix connection has no port).
    let c = SockConn { gen, tgid: owner, flags: CONN_UNIX, peer: PeerKey { port: hash as u16, ..PeerKey::default() }, ..SockConn::default() };
    if SOCK_CONNS.insert(&sk, &c, BPF_NOEXIST).is_ok() {
        slot_add(unix_slot(hash), 1);
    } else if SOCK_CONNS.insert(&sk, &c, 0).is_err() {
        map_full(ctx, "socket connections");
        return;
    }
    if UNIX_SOCKS.insert(&sk, &gen, 0).is_err() {
        map_full(ctx, "unix sockets");
    }
    let mut h = header(kind::UNIX_CONNECTED, owner, 0);
    h.ts_ns = gen;
    // The process's name (its main thread's), else this thread's.
    let leader = read::kernel::<u64>(current_task() + off(|o| &o.task_group_leader)).unwrap_or(0);
    let comm = match read::kernel::<[u8; 16]>(leader + off(|o| &o.task_comm)) {
        Ok(c) if leader != 0 => c,
        _ => bpf_get_current_comm().unwrap_or([0; 16]),
    };
    emit(UnixConnectEvent { header: h, conn_gen: gen, peer_pid: tgid, flags: 0, comm, listener_ino: ino });
}

/// The server's new socket of the `connect` this thread is in: its connecting socket
/// (`current->files->fdt->fd[fd]->private_data->sk`, fd from the syscall's registers)
/// names it as its peer, set before the listener is told.
#[inline(always)]
fn connecting_peer() -> Option<u64> {
    let [_, _, fd, nr] = syscall_regs()?;
    if nr != NR_CONNECT {
        return None;
    }
    let client = sock_of_fd(fd)?;
    let peer = read::kernel::<u64>(client + off(|o| &o.unix_peer)).ok()?;
    (peer != 0).then_some(peer)
}

/// The socket (`struct sock`) of the current task's fd `fd`:
/// `current->files->fdt->fd[fd]->private_data->sk`.
#[inline(always)]
fn sock_of_fd(fd: u64) -> Option<u64> {
    let task = current_task();
    let files = read::kernel::<u64>(task + off(|o| &o.task_files)).ok()?;
    let fdt = read::kernel::<u64>(files + off(|o| &o.files_fdt)).ok()?;
    let fds = read::kernel::<u64>(fdt + off(|o| &o.fdt_fd)).ok()?;
    let file = read::kernel::<u64>(fds + (fd & 0xffff_ffff) * 8).ok()?;
    let socket = read::kernel::<u64>(file + off(|o| &o.file_private_data)).ok()?;
    let sk = read::kernel::<u64>(socket + off(|o| &o.socket_sk)).ok()?;
    (sk != 0).then_some(sk)
}

/// Syscall tier: who is at the other end of the Unix socket the current (server) task
/// just accepted as `fd`: the process that connected (the socket's `sk_peer_pid`) and
/// its name (its thread group leader's `comm`). None where this kernel's offsets are
/// unknown or a read fails.
#[inline(always)]
pub(crate) fn accepted_peer(fd: i32) -> Option<(u32, [u8; 16])> {
    if off(|o| &o.ok) == 0 || fd < 0 {
        return None;
    }
    let sk = sock_of_fd(fd as u64)?;
    let pid = read::kernel::<u64>(sk + off(|o| &o.sk_peer_pid)).ok()?;
    if pid == 0 {
        return None;
    }
    let nr = read::kernel::<u32>(pid + off(|o| &o.pid_numbers)).ok()?;
    // tasks[PIDTYPE_TGID] (an hlist_head, 8 bytes each) holds the leader's
    // pid_links[PIDTYPE_TGID] (an hlist_node, 16 bytes each).
    let link = read::kernel::<u64>(pid + off(|o| &o.pid_tasks) + 8).unwrap_or(0);
    let comm = if link != 0 {
        read::kernel::<[u8; 16]>(link - off(|o| &o.task_pid_links) - 16 + off(|o| &o.task_comm)).unwrap_or([0; 16])
    } else {
        [0; 16]
    };
    Some((nr, comm))
}

/// The current task's address as a number.
#[inline(always)]
fn current_task() -> u64 {
    // SAFETY: a helper without preconditions; its pointer is only used as a number.
    unsafe { bpf_get_current_task_btf() as u64 }
}

/// The user registers of the syscall the current task is in: [dx, si, di, orig_ax].
#[inline(always)]
fn syscall_regs() -> Option<[u64; 4]> {
    // SAFETY: the helper takes the current task (BTF-typed, from the helper above) and
    // returns its user registers, read here with a probe read only.
    let regs = unsafe { generated::bpf_task_pt_regs(bpf_get_current_task_btf() as *mut _) } as u64;
    if regs == 0 {
        return None;
    }
    read::kernel::<[u64; 4]>(regs + REGS_DX).ok()
}

/// The user buffer of the read or write the current task is in (its first iovec for
/// readv/writev/recvmsg/sendmsg) and that buffer's length.
#[inline(always)]
fn user_buffer() -> Option<(u64, u64)> {
    let [len, si, _, nr] = syscall_regs()?;
    let iov = match nr {
        NR_READ | NR_WRITE | NR_RECVFROM | NR_SENDTO => return Some((si, len)),
        NR_READV | NR_WRITEV => si,
        NR_RECVMSG | NR_SENDMSG => read::user::<u64>(si + MSGHDR_IOV).ok()?,
        _ => return None,
    };
    let [base, len] = read::user::<[u64; 2]>(iov).ok()?;
    Some((base, len))
}

/// A read or write that moved `ret` (> 0) bytes on followed Unix connection `c` (on
/// socket `sk`), in the server's thread `tid`: the bytes, as the packet programs send
/// a TCP connection's. The server's OK or ERR ends the handshake here.
#[inline(always)]
pub(crate) fn on_unix_bytes(sk: u64, c: *mut SockConn, tid: u32, call: u32, ret: i32, flags: u32) {
    if flags & MSG_PEEK != 0 {
        return;
    }
    let Some(mut entry) = EVENTS.reserve::<IoEvent>(0) else {
        count(counter::LOST_RINGBUF);
        return;
    };
    // SAFETY: `c` comes from a successful lookup: valid and aligned during this run.
    let c = unsafe { &mut *c };
    let e = entry.as_mut_ptr();
    let write = call == sys::SOCK_SEND;
    let mut captured: u32 = 0;
    // SAFETY: `e` points to the reserved record, ours alone and writable until it is
    // submitted; the copy is 1..=PAYLOAD_MAX bytes into its payload, from user memory
    // through the probe-read helper (which fails rather than faults).
    unsafe {
        (*e).sys = SysEvent {
            header: header(kind::IO, c.tgid, tid),
            conn_gen: c.gen,
            ret: ret as i64,
            duration_ns: 0,
            args: [ret as u64, flags as u64, 0, 0],
            fd: NO_FD,
            syscall: call,
        };
        if let Some((buf, len)) = user_buffer() {
            let mut n = ret as u64;
            if n > len {
                n = len;
            }
            if n > PAYLOAD_MAX as u64 {
                n = PAYLOAD_MAX as u64;
            }
            if n > 0 {
                let n = (((n as u32).wrapping_sub(1)) & (PAYLOAD_MAX as u32 - 1)) + 1;
                let dst = (*e).payload.as_mut_ptr() as *mut c_void;
                if generated::bpf_probe_read_user(dst, n, buf as *const c_void) == 0 {
                    captured = n;
                }
            }
        }
        (*e).captured = captured;
    }
    // SAFETY: the reserved record; `handshake_end` looks only at bytes `captured` covers.
    let p = unsafe { &(*e).payload };
    let first = [p[0], p[1], p[2], p[3], p[4], p[5]];
    let end = handshake_trace_common::handshake_end(&mut c.flags, &mut c.tls_budget, write, captured, first);
    // SAFETY: the reserved record, not yet submitted.
    unsafe { (*e).tracking_end = end as u32 };
    entry.submit(submit_flags());
    count(counter::EMITTED);
    if end != 0 {
        let hash = c.peer.port;
        forget_unix(sk, hash);
    }
}

/// Stop following the Unix connection on `sk` (slot hash `hash`).
#[inline(always)]
fn forget_unix(sk: u64, hash: u16) {
    let _ = UNIX_SOCKS.remove(&sk);
    if SOCK_CONNS.remove(&sk).is_ok() {
        slot_add(unix_slot(u32::from(hash)), u64::MAX);
    }
}

/// The inode number of socket `sk`'s file: 0 when it has none (not accepted yet, or
/// closed: the close orphans it) or it cannot be read.
#[inline(always)]
fn socket_ino(sk: u64) -> u64 {
    match read::kernel::<u64>(sk + off(|o| &o.sk_socket)) {
        Ok(socket) if socket != 0 => read::kernel::<u64>(socket + off(|o| &o.socket_inode) + off(|o| &o.inode_ino)).unwrap_or(0),
        _ => 0,
    }
}

/// The inode number connection `c` was first seen with (0: none yet), kept in the
/// first bytes of `local_addr` (a Unix connection has no address).
#[inline(always)]
fn known_ino(c: &SockConn) -> u64 {
    let mut b = [0u8; 8];
    b.copy_from_slice(&c.local_addr[..8]);
    u64::from_ne_bytes(b)
}

/// Is followed Unix connection `c` still on socket `sk`? A socket's memory is reused
/// at once after it is freed (the client closed, then the server): a new socket at the
/// same address has another inode. The first time the server touches it (accepted),
/// its inode is noted; a different one later means `c` is gone: it is reported closed
/// and forgotten.
#[inline(always)]
pub(crate) fn same_socket(sk: u64, c: *mut SockConn) -> bool {
    let ino = socket_ino(sk);
    // SAFETY: `c` comes from a successful lookup: valid and aligned during this run.
    let conn = unsafe { &mut *c };
    let known = known_ino(conn);
    if known == 0 {
        conn.local_addr[..8].copy_from_slice(&ino.to_ne_bytes());
        return true;
    }
    if ino == known {
        return true;
    }
    let copy = *conn;
    closed(&copy, sk);
    false
}

/// Tell userspace that connection `c` (on `sk`) is closed, now, and forget it.
#[inline(always)]
fn closed(c: &SockConn, sk: u64) {
    if c.tgid != 0 {
        emit(TcpEvent { header: header(kind::TCP, c.tgid, 0), conn_gen: c.gen, fd: NO_FD, what: tcp::UNIX_CLOSED, oldstate: 0, newstate: 0 });
    }
    forget_unix(sk, c.peer.port);
}

/// Never attached: userspace runs it (`BPF_PROG_TEST_RUN`) with up to
/// [`UNIX_SWEEP_BATCH`] followed Unix sockets as its arguments. One whose server closed
/// it (`sk_state` CLOSE) is reported closed and forgotten; an address no longer
/// followed leaves the list.
#[raw_tracepoint(tracepoint = "sys_enter")]
pub fn unix_sweep(ctx: RawTracePointContext) -> i32 {
    // Constant offsets into the context (the verifier allows no other).
    sweep_one(ctx.arg::<u64>(0));
    sweep_one(ctx.arg::<u64>(1));
    sweep_one(ctx.arg::<u64>(2));
    sweep_one(ctx.arg::<u64>(3));
    sweep_one(ctx.arg::<u64>(4));
    sweep_one(ctx.arg::<u64>(5));
    sweep_one(ctx.arg::<u64>(6));
    sweep_one(ctx.arg::<u64>(7));
    sweep_one(ctx.arg::<u64>(8));
    sweep_one(ctx.arg::<u64>(9));
    sweep_one(ctx.arg::<u64>(10));
    sweep_one(ctx.arg::<u64>(11));
    0
}

const _: () = assert!(UNIX_SWEEP_BATCH == 12);

/// One socket of the sweep (0: an unused argument).
#[inline(never)]
fn sweep_one(sk: u64) {
    if sk == 0 {
        return;
    }
    let Some(c) = SOCK_CONNS.get_ptr_mut(&sk) else {
        let _ = UNIX_SOCKS.remove(&sk);
        return;
    };
    // SAFETY: copied at once from a successful lookup.
    let c = unsafe { *c };
    if c.flags & CONN_UNIX == 0 {
        let _ = UNIX_SOCKS.remove(&sk);
        return;
    }
    let state = read::kernel::<u16>(sk + off(|o| &o.sk_state)).map(|s| s as u8).unwrap_or(TCP_CLOSE);
    // Closed, or its memory already reused by another socket (another inode).
    let known = known_ino(&c);
    if state == TCP_CLOSE || (known != 0 && socket_ino(sk) != known) {
        closed(&c, sk);
    }
}
