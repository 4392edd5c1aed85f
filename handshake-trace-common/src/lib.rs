//! Wire types shared by the kernel programs (`handshake-trace-ebpf`) and the
//! collector (`handshake-trace`).
//!
//! Every struct is `#[repr(C)]` with explicit padding fields so both sides agree
//! byte for byte; flags are `u32`, never `bool`. The collector converts these into
//! rich types with `From` (see `handshake-trace/src/events.rs`).
#![no_std]

/// Event kinds, the first field of every record in the `EVENTS` ring buffer.
pub mod kind {
    /// An `accept`/`accept4` by a target process returned (successfully or not).
    pub const ACCEPT: u32 = 1;
}

/// Indexes of the per-CPU counters in the `COUNTERS` map.
/// `EMITTED + LOST_RINGBUF` is every event the programs tried to send.
pub mod counter {
    /// Records committed to the ring buffer.
    pub const EMITTED: u32 = 0;
    /// Records dropped because the ring buffer was full.
    pub const LOST_RINGBUF: u32 = 1;
    /// Records dropped because a bounded map (pending syscalls, connections) was full.
    pub const LOST_MAPFULL: u32 = 2;
    /// Number of counters.
    pub const COUNT: u32 = 3;
}

/// Capacity of the map of target processes (keyed by tgid).
pub const MAX_TARGETS: u32 = 256;
/// Capacity of the map of syscalls in flight between their enter and exit tracepoints
/// (keyed by thread id): one per thread of the targets that is inside a traced syscall.
pub const MAX_IN_FLIGHT: u32 = 16384;
/// Default ring buffer size in bytes (a power of two, a multiple of the page size).
pub const DEFAULT_RINGBUF_BYTES: u32 = 4 << 20;

/// Byte offsets of the tracepoint fields the programs read. The collector fills
/// this from each tracepoint's `format` file at load time and writes it into the
/// object's read-only global `TP_OFFSETS` before loading, so a kernel that lays
/// syscall arguments out differently is still read correctly.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TracepointOffsets {
    /// `sys_enter_accept{,4}`: the listening fd.
    pub accept_fd: u32,
    /// `sys_enter_accept{,4}`: the user pointer to the peer's `struct sockaddr`.
    pub accept_addr: u32,
    /// `sys_exit_*`: the return value.
    pub exit_ret: u32,
    pub _pad: u32,
}

/// Fields common to every record.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct EventHeader {
    /// One of [`kind`].
    pub kind: u32,
    /// Process (tgid) of the thread that made the syscall.
    pub pid: u32,
    /// Thread (kernel tid) that made the syscall.
    pub tid: u32,
    pub _pad: u32,
    /// `bpf_ktime_get_ns()` (CLOCK_MONOTONIC) at the syscall's exit.
    pub ts_ns: u64,
}

/// An accept by a target process: which listening fd, which new fd, and the peer.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct AcceptEvent {
    pub header: EventHeader,
    /// The listening socket passed to accept.
    pub listen_fd: i32,
    /// The syscall's return: the new fd, or a negative errno.
    pub ret: i32,
    /// `sa_family` of the peer address (AF_INET = 2, AF_INET6 = 10), 0 when the
    /// caller passed no address buffer or it could not be read.
    pub family: u16,
    /// Peer port in host byte order.
    pub port: u16,
    pub _pad: u32,
    /// Peer address: 4 bytes for AF_INET, 16 for AF_INET6, network order.
    pub addr: [u8; 16],
}

/// What the enter program of a traced syscall keeps for its exit program.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct InFlight {
    /// The fd argument.
    pub fd: i32,
    pub _pad: u32,
    /// A user pointer argument (accept: the sockaddr buffer).
    pub ptr: u64,
}

#[cfg(feature = "user")]
mod pod {
    // SAFETY: plain old data, `#[repr(C)]`, no implicit padding, every bit pattern valid.
    unsafe impl aya::Pod for super::TracepointOffsets {}
    unsafe impl aya::Pod for super::EventHeader {}
    unsafe impl aya::Pod for super::AcceptEvent {}
    unsafe impl aya::Pod for super::InFlight {}
}

#[cfg(test)]
mod tests {
    use super::*;
    use core::mem::size_of;

    // The sum of the field sizes equals the struct size: no implicit padding.
    #[test]
    fn wire_structs_have_no_implicit_padding() {
        assert_eq!(size_of::<EventHeader>(), 4 * 4 + 8);
        assert_eq!(size_of::<AcceptEvent>(), size_of::<EventHeader>() + 4 + 4 + 2 + 2 + 4 + 16);
        assert_eq!(size_of::<InFlight>(), 4 + 4 + 8);
        assert_eq!(size_of::<TracepointOffsets>(), 4 * 4);
    }
}
