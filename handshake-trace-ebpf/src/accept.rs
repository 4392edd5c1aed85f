//! accept / accept4: a target process takes a new client connection.
use aya_ebpf::{helpers::bpf_probe_read_user, macros::tracepoint, programs::TracePointContext};
use handshake_trace_common::{kind, AcceptEvent, InFlight};

use crate::common::{current_target, emit, header, offsets, save_in_flight, take_in_flight};

const AF_INET: u16 = 2;
const AF_INET6: u16 = 10;
const EAGAIN: i64 = 11;

#[tracepoint]
pub fn sys_enter_accept4(ctx: TracePointContext) -> u32 {
    on_enter(&ctx);
    0
}

#[tracepoint]
pub fn sys_enter_accept(ctx: TracePointContext) -> u32 {
    on_enter(&ctx);
    0
}

#[tracepoint]
pub fn sys_exit_accept4(ctx: TracePointContext) -> u32 {
    on_exit(&ctx);
    0
}

#[tracepoint]
pub fn sys_exit_accept(ctx: TracePointContext) -> u32 {
    on_exit(&ctx);
    0
}

#[inline(always)]
fn on_enter(ctx: &TracePointContext) {
    let Some((_, tid)) = current_target() else { return };
    let off = offsets();
    let fd: u64 = unsafe { ctx.read_at(off.accept_fd as usize) }.unwrap_or(u64::MAX);
    let ptr: u64 = unsafe { ctx.read_at(off.accept_addr as usize) }.unwrap_or(0);
    save_in_flight(ctx, tid, &InFlight { fd: fd as i32, _pad: 0, ptr });
}

#[inline(always)]
fn on_exit(ctx: &TracePointContext) {
    let Some((tgid, tid)) = current_target() else { return };
    let Some(saved) = take_in_flight(tid) else { return };
    let ret: i64 = unsafe { ctx.read_at(offsets().exit_ret as usize) }.unwrap_or(0);
    // Servers accept from non-blocking listeners until EAGAIN: that is no event.
    if ret == -EAGAIN {
        return;
    }
    let mut event = AcceptEvent {
        header: header(kind::ACCEPT, tgid, tid),
        listen_fd: saved.fd,
        ret: ret as i32,
        ..AcceptEvent::default()
    };
    if ret >= 0 && saved.ptr != 0 {
        read_peer(saved.ptr, &mut event);
    }
    emit(event);
}

/// Copy the peer address the kernel wrote into the caller's buffer.
#[inline(always)]
fn read_peer(ptr: u64, event: &mut AcceptEvent) {
    let family: u16 = unsafe { bpf_probe_read_user(ptr as *const u16) }.unwrap_or(0);
    // sockaddr_in / sockaddr_in6: family(2) port(2, network order) ...
    let port: u16 = unsafe { bpf_probe_read_user((ptr + 2) as *const u16) }.unwrap_or(0);
    match family {
        AF_INET => {
            if let Ok(a) = unsafe { bpf_probe_read_user((ptr + 4) as *const [u8; 4]) } {
                event.addr[..4].copy_from_slice(&a);
                event.family = family;
            }
        }
        AF_INET6 => {
            // sin6_flowinfo (4) sits between the port and the address.
            if let Ok(a) = unsafe { bpf_probe_read_user((ptr + 8) as *const [u8; 16]) } {
                event.addr = a;
                event.family = family;
            }
        }
        _ => return,
    }
    event.port = u16::from_be(port);
}
