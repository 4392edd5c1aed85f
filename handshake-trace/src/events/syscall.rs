//! The syscalls the kernel programs follow: one table names each (number, kind,
//! name, family), and each family's arguments are decoded into a typed [`Args`].
use handshake_trace_common::{sys, SysEvent, SYS_TRACKING_END};

use super::errno::SyscallResult;

/// What a syscall does for the handshake; its [`Args`] follow from it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Read,
    Write,
    Wait,
    Fcntl,
    SetSockOpt,
    Close,
    Shutdown,
    Timer,
    Kill,
    /// Not a syscall: the kernel stopped tracing the connection.
    TrackingEnd,
    Unknown,
}

/// Declares [`SyscallKind`] from one table: adding a syscall is one line here (and
/// its number in `handshake_trace_common::sys`, and the kernel program).
macro_rules! syscall_table {
    ($($kind:ident = $number:path, $name:literal, $family:ident;)*) => {
        /// Which syscall a [`Syscall`] reports.
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub enum SyscallKind {
            $($kind,)*
            /// Not a syscall: the kernel stopped tracing the connection.
            TrackingEnd,
            Unknown(u32),
        }

        impl From<u32> for SyscallKind {
            fn from(number: u32) -> Self {
                match number {
                    $($number => SyscallKind::$kind,)*
                    SYS_TRACKING_END => SyscallKind::TrackingEnd,
                    other => SyscallKind::Unknown(other),
                }
            }
        }

        impl SyscallKind {
            pub fn name(self) -> &'static str {
                match self {
                    $(SyscallKind::$kind => $name,)*
                    SyscallKind::TrackingEnd => "tracking_end",
                    SyscallKind::Unknown(_) => "unknown",
                }
            }

            pub fn family(self) -> Family {
                match self {
                    $(SyscallKind::$kind => Family::$family,)*
                    SyscallKind::TrackingEnd => Family::TrackingEnd,
                    SyscallKind::Unknown(_) => Family::Unknown,
                }
            }
        }
    };
}

syscall_table! {
    Read = sys::READ, "read", Read;
    Readv = sys::READV, "readv", Read;
    Recvfrom = sys::RECVFROM, "recvfrom", Read;
    Recvmsg = sys::RECVMSG, "recvmsg", Read;
    Write = sys::WRITE, "write", Write;
    Writev = sys::WRITEV, "writev", Write;
    Sendto = sys::SENDTO, "sendto", Write;
    Sendmsg = sys::SENDMSG, "sendmsg", Write;
    Poll = sys::POLL, "poll", Wait;
    Ppoll = sys::PPOLL, "ppoll", Wait;
    Select = sys::SELECT, "select", Wait;
    Pselect6 = sys::PSELECT6, "pselect6", Wait;
    Fcntl = sys::FCNTL, "fcntl", Fcntl;
    Setsockopt = sys::SETSOCKOPT, "setsockopt", SetSockOpt;
    Close = sys::CLOSE, "close", Close;
    Shutdown = sys::SHUTDOWN, "shutdown", Shutdown;
    Alarm = sys::ALARM, "alarm", Timer;
    Setitimer = sys::SETITIMER, "setitimer", Timer;
    TimerSettime = sys::TIMER_SETTIME, "timer_settime", Timer;
    Kill = sys::KILL, "kill", Kill;
    Tkill = sys::TKILL, "tkill", Kill;
    Tgkill = sys::TGKILL, "tgkill", Kill;
    // The socket tier: no syscall seen, the socket's own hooks.
    PacketIn = sys::PACKET_IN, "packet_in", Read;
    PacketOut = sys::PACKET_OUT, "packet_out", Write;
    SockRecv = sys::SOCK_RECV, "sock_recv", Read;
    SockSend = sys::SOCK_SEND, "sock_send", Write;
}

impl SyscallKind {
    pub fn is_read(self) -> bool {
        self.family() == Family::Read
    }

    pub fn is_write(self) -> bool {
        self.family() == Family::Write
    }

    pub fn is_wait(self) -> bool {
        self.family() == Family::Wait
    }

    pub fn is_timer(self) -> bool {
        self.family() == Family::Timer
    }

    /// Seen by the socket tier's hooks (a packet, or a socket read/write that moved
    /// nothing), not as a syscall.
    pub fn is_socket_tier(self) -> bool {
        matches!(self, SyscallKind::PacketIn | SyscallKind::PacketOut | SyscallKind::SockRecv | SyscallKind::SockSend)
    }
}

/// A syscall's arguments as the kernel program saved them, by family.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Args {
    /// Reads and writes: bytes asked for, and the MSG_* flags (recv/send family).
    Transfer { requested: u64, flags: u64 },
    /// poll/ppoll/select/pselect6 on the connection; `timeout_ms` None = no timeout.
    Wait { nfds: u64, timeout_ms: Option<u64>, events: u64, revents: u64 },
    /// fcntl: the command and its argument (F_SETFL flags).
    Fcntl { cmd: u64, arg: u64 },
    /// setsockopt: level, option, and the first two 64-bit words of the value
    /// (`struct linger`, or a `struct timeval` for the timeouts).
    SetSockOpt { level: u64, name: u64, len: u64, value: u64, value2: u64 },
    Shutdown { how: u64 },
    /// alarm/setitimer/timer_settime: the time armed, in ms, and which timer / flags.
    Timer { ms: u64, which: u64 },
    Kill { target: u64, signal: u32, tgid: u64 },
    /// Why the kernel stopped tracing (`handshake_trace_common::end`).
    TrackingEnd { reason: u64 },
    None,
}

/// The wait programs send "no timeout" as this.
const NO_TIMEOUT: u64 = u64::MAX;

impl Args {
    /// The kernel's four words, read by the syscall's family (the layout the kernel
    /// programs write: `handshake-trace-ebpf`, one file per family).
    pub fn decode(kind: SyscallKind, a: [u64; 4]) -> Args {
        match kind.family() {
            Family::Read | Family::Write => Args::Transfer { requested: a[0], flags: a[1] },
            Family::Wait => Args::Wait { nfds: a[0], timeout_ms: (a[1] != NO_TIMEOUT).then_some(a[1]), events: a[2], revents: a[3] },
            Family::Fcntl => Args::Fcntl { cmd: a[0], arg: a[1] },
            Family::SetSockOpt => {
                Args::SetSockOpt { level: a[0], name: a[1] & 0xffff_ffff, len: a[1] >> 32, value: a[2], value2: a[3] }
            }
            Family::Shutdown => Args::Shutdown { how: a[0] },
            Family::Timer => Args::Timer { ms: a[0], which: a[1] },
            Family::Kill => Args::Kill { target: a[0], signal: a[1] as u32, tgid: a[2] },
            Family::TrackingEnd => Args::TrackingEnd { reason: a[0] },
            Family::Close | Family::Unknown => Args::None,
        }
    }

    /// Bytes asked for by a read or write (0 for other syscalls).
    pub fn requested(&self) -> u64 {
        match self {
            Args::Transfer { requested, .. } => *requested,
            _ => 0,
        }
    }
}

/// A syscall on a connection in its handshake (or a timer/kill in a target).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Syscall {
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub conn_gen: u64,
    pub fd: i32,
    pub kind: SyscallKind,
    pub result: SyscallResult,
    pub duration_ns: u64,
    pub args: Args,
}

impl From<SysEvent> for Syscall {
    fn from(e: SysEvent) -> Self {
        let kind = SyscallKind::from(e.syscall);
        Syscall {
            ts_ns: e.header.ts_ns,
            pid: e.header.pid,
            tid: e.header.tid,
            conn_gen: e.conn_gen,
            fd: e.fd,
            kind,
            result: e.ret.into(),
            duration_ns: e.duration_ns,
            args: Args::decode(kind, e.args),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_number_round_trips_through_the_table() {
        for n in (1..=sys::TGKILL).chain(sys::PACKET_IN..=sys::SOCK_SEND) {
            let k = SyscallKind::from(n);
            assert!(!matches!(k, SyscallKind::Unknown(_)), "{n}");
            assert_ne!(k.family(), Family::Unknown, "{k:?}");
            assert_ne!(k.name(), "unknown");
        }
        assert_eq!(SyscallKind::from(SYS_TRACKING_END), SyscallKind::TrackingEnd);
        assert_eq!(SyscallKind::from(999), SyscallKind::Unknown(999));
    }

    #[test]
    fn arguments_are_read_by_family() {
        assert_eq!(
            Args::decode(SyscallKind::Poll, [1, u64::MAX, 1, 0]),
            Args::Wait { nfds: 1, timeout_ms: None, events: 1, revents: 0 }
        );
        assert_eq!(
            Args::decode(SyscallKind::Setsockopt, [1, 13 | (8 << 32), 1, 0]),
            Args::SetSockOpt { level: 1, name: 13, len: 8, value: 1, value2: 0 }
        );
        assert_eq!(Args::decode(SyscallKind::Recvfrom, [4, 64, 9, 9]).requested(), 4);
        assert_eq!(Args::decode(SyscallKind::Close, [7, 7, 7, 7]), Args::None);
        assert_eq!(Args::decode(SyscallKind::Tgkill, [5, 14, 3, 0]), Args::Kill { target: 5, signal: 14, tgid: 3 });
    }
}
