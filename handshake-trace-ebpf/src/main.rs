//! Kernel programs of handshake-trace. Built for `bpfel-unknown-none` by
//! `cargo xtask build` and embedded in the collector binary.
//!
//! One file per event family; each program is named after its attach point.
#![no_std]
#![no_main]
// For the atomic add on shared counters (the BPF target has no CAS, so no `fetch_add`).
#![feature(core_intrinsics)]
#![allow(internal_features)]

// Shared by every program: one job each.
mod conn;
mod dispatch;
mod emit;
mod live;
mod maps;
mod net;
mod read;
mod syscall;
mod target;
mod task;
mod time;

// One file per event family.
mod accept;
mod cgroup;
mod fd;
mod io;
mod packet;
mod process;
mod raw;
mod signal;
mod sock;
mod sock_fexit;
mod tcp;
mod timer;
mod unix;
mod wait;

// Never attached by the tool: the bench's measure of an empty program on each hook.
mod calibrate;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic, so this is never called.
    loop {}
}

/// The kernel wants a license string to allow GPL-only helpers.
// SAFETY (link_section, no_mangle): the loader reads the "license" section; nothing
// else is placed there or named LICENSE.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
