//! Decoding ring-buffer records into rich userspace events. Pure: no aya, no I/O.
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use handshake_trace_common::{kind, AcceptEvent, EventHeader};

/// The result of a syscall: a value, or an errno (kernel restart codes included).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyscallResult {
    Ok(i64),
    Err(Errno),
}

impl From<i64> for SyscallResult {
    fn from(ret: i64) -> Self {
        if (-4095..0).contains(&ret) {
            SyscallResult::Err(Errno(-ret as i32))
        } else {
            SyscallResult::Ok(ret)
        }
    }
}

/// An errno as the kernel returned it (positive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    /// The symbolic name ("EAGAIN"), including the kernel-internal restart codes
    /// that `sys_exit` tracepoints can see before the signal code rewrites them.
    pub fn name(self) -> String {
        let known = match self.0 {
            1 => "EPERM",
            2 => "ENOENT",
            4 => "EINTR",
            9 => "EBADF",
            11 => "EAGAIN",
            12 => "ENOMEM",
            14 => "EFAULT",
            22 => "EINVAL",
            23 => "ENFILE",
            24 => "EMFILE",
            32 => "EPIPE",
            38 => "ENOSYS",
            103 => "ECONNABORTED",
            104 => "ECONNRESET",
            107 => "ENOTCONN",
            110 => "ETIMEDOUT",
            512 => "ERESTARTSYS",
            513 => "ERESTARTNOINTR",
            514 => "ERESTARTNOHAND",
            516 => "ERESTART_RESTARTBLOCK",
            _ => "",
        };
        if known.is_empty() {
            format!("errno {}", self.0)
        } else {
            known.to_string()
        }
    }

    /// The kernel's restart codes (512..=516): the syscall was interrupted by a
    /// signal and will be restarted or turned into EINTR on the way out.
    pub fn is_restart(self) -> bool {
        (512..=516).contains(&self.0)
    }

    /// In words, for people: restart codes are not unknown errors.
    pub fn describe(self) -> String {
        if self.is_restart() {
            format!("interrupted by signal, restarted ({})", self.name())
        } else {
            self.name()
        }
    }
}

/// A client connection accepted (or an accept that failed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accept {
    pub ts_ns: u64,
    pub pid: u32,
    pub tid: u32,
    pub listen_fd: i32,
    pub result: SyscallResult,
    /// None when the server passed no address buffer (resolve it another way).
    pub peer: Option<SocketAddr>,
}

impl From<AcceptEvent> for Accept {
    fn from(e: AcceptEvent) -> Self {
        let ip = match e.family {
            2 => Some(IpAddr::V4(Ipv4Addr::new(e.addr[0], e.addr[1], e.addr[2], e.addr[3]))),
            10 => {
                let v6 = Ipv6Addr::from(e.addr);
                // Show v4-mapped peers (::ffff:127.0.0.1) as plain IPv4.
                Some(v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(IpAddr::V6(v6)))
            }
            _ => None,
        };
        Accept {
            ts_ns: e.header.ts_ns,
            pid: e.header.pid,
            tid: e.header.tid,
            listen_fd: e.listen_fd,
            result: SyscallResult::from(e.ret as i64),
            peer: ip.map(|ip| SocketAddr::new(ip, e.port)),
        }
    }
}

impl Accept {
    /// The new connection's fd, when the accept succeeded.
    pub fn fd(&self) -> Option<i32> {
        match self.result {
            SyscallResult::Ok(fd) => Some(fd as i32),
            SyscallResult::Err(_) => None,
        }
    }
}

/// Every event the kernel programs send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Accept(Accept),
}

impl Event {
    pub fn ts_ns(&self) -> u64 {
        match self {
            Event::Accept(a) => a.ts_ns,
        }
    }
}

/// Why a record could not be decoded (a version mismatch between the embedded
/// object and the collector, or a truncated record): reported, never dropped silently.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    TooShort { kind: Option<u32>, len: usize, need: usize },
    UnknownKind(u32),
}

impl std::fmt::Display for DecodeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DecodeError::TooShort { kind, len, need } => {
                write!(f, "record of kind {kind:?} is {len} bytes, needs {need}")
            }
            DecodeError::UnknownKind(k) => write!(f, "unknown record kind {k}"),
        }
    }
}

impl std::error::Error for DecodeError {}

fn read<T: Copy>(bytes: &[u8], kind: Option<u32>) -> Result<T, DecodeError> {
    let need = std::mem::size_of::<T>();
    if bytes.len() < need {
        return Err(DecodeError::TooShort { kind, len: bytes.len(), need });
    }
    // SAFETY: length checked; T is a plain-old-data wire struct; read_unaligned
    // because ring-buffer records are only 8-byte aligned.
    Ok(unsafe { std::ptr::read_unaligned(bytes.as_ptr().cast::<T>()) })
}

/// Decode one ring-buffer record.
pub fn decode(bytes: &[u8]) -> Result<Event, DecodeError> {
    let header: EventHeader = read(bytes, None)?;
    match header.kind {
        kind::ACCEPT => Ok(Event::Accept(read::<AcceptEvent>(bytes, Some(header.kind))?.into())),
        other => Err(DecodeError::UnknownKind(other)),
    }
}

/// The bytes of a wire struct, as the kernel would send them (tests and recorded traces).
pub fn as_bytes<T: Copy>(value: &T) -> Vec<u8> {
    // SAFETY: wire structs have no implicit padding, so every byte is initialised.
    unsafe { std::slice::from_raw_parts((value as *const T).cast::<u8>(), std::mem::size_of::<T>()) }
        .to_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept_record(family: u16, addr: [u8; 16], port: u16, ret: i32) -> AcceptEvent {
        AcceptEvent {
            header: EventHeader { kind: kind::ACCEPT, pid: 100, tid: 101, _pad: 0, ts_ns: 5_000 },
            listen_fd: 7,
            ret,
            family,
            port,
            _pad: 0,
            addr,
        }
    }

    #[test]
    fn decodes_an_ipv4_accept() {
        let mut addr = [0u8; 16];
        addr[..4].copy_from_slice(&[127, 0, 0, 1]);
        let bytes = as_bytes(&accept_record(2, addr, 51234, 35));
        let Event::Accept(a) = decode(&bytes).unwrap();
        assert_eq!(a.peer, Some("127.0.0.1:51234".parse().unwrap()));
        assert_eq!(a.fd(), Some(35));
        assert_eq!((a.pid, a.tid, a.listen_fd, a.ts_ns), (100, 101, 7, 5_000));
    }

    #[test]
    fn v4_mapped_ipv6_peer_shows_as_ipv4() {
        let mut addr = [0u8; 16];
        addr[10] = 0xff;
        addr[11] = 0xff;
        addr[12..].copy_from_slice(&[10, 1, 2, 3]);
        let Event::Accept(a) = decode(&as_bytes(&accept_record(10, addr, 3306, 4))).unwrap();
        assert_eq!(a.peer, Some("10.1.2.3:3306".parse().unwrap()));
    }

    #[test]
    fn ipv6_peer() {
        let addr = Ipv6Addr::LOCALHOST.octets();
        let Event::Accept(a) = decode(&as_bytes(&accept_record(10, addr, 40000, 4))).unwrap();
        assert_eq!(a.peer, Some("[::1]:40000".parse().unwrap()));
    }

    #[test]
    fn failed_accept_has_errno_and_no_fd() {
        let Event::Accept(a) = decode(&as_bytes(&accept_record(0, [0; 16], 0, -24))).unwrap();
        assert_eq!(a.result, SyscallResult::Err(Errno(24)));
        assert_eq!(a.fd(), None);
        assert_eq!(a.peer, None);
    }

    #[test]
    fn restart_codes_are_signal_interruptions() {
        let e = match SyscallResult::from(-512) {
            SyscallResult::Err(e) => e,
            other => panic!("{other:?}"),
        };
        assert!(e.is_restart());
        assert_eq!(e.describe(), "interrupted by signal, restarted (ERESTARTSYS)");
        assert_eq!(Errno(11).describe(), "EAGAIN");
        assert!(!Errno(4).is_restart());
    }

    #[test]
    fn truncated_and_unknown_records_are_errors() {
        let bytes = as_bytes(&accept_record(2, [0; 16], 1, 1));
        assert!(matches!(decode(&bytes[..10]), Err(DecodeError::TooShort { kind: None, .. })));
        assert!(matches!(
            decode(&bytes[..30]),
            Err(DecodeError::TooShort { kind: Some(kind::ACCEPT), .. })
        ));
        let mut unknown = bytes.clone();
        unknown[0] = 99;
        assert_eq!(decode(&unknown), Err(DecodeError::UnknownKind(99)));
    }
}
