//! Syscall results and errno values, named (the ones the kernel programs also
//! test come from `handshake_trace_common::errno`).
use handshake_trace_common::errno;

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

impl SyscallResult {
    /// Bytes transferred by a read or write that moved any.
    pub fn bytes(self) -> usize {
        match self {
            SyscallResult::Ok(n) if n > 0 => n as usize,
            _ => 0,
        }
    }

    pub fn is_err(self, errno: Errno) -> bool {
        self == SyscallResult::Err(errno)
    }
}

/// An errno as the kernel returned it (positive).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Errno(pub i32);

impl Errno {
    pub const EPERM: Errno = Errno(1);
    pub const ENOENT: Errno = Errno(2);
    pub const EINTR: Errno = Errno(errno::EINTR);
    pub const EBADF: Errno = Errno(9);
    pub const EAGAIN: Errno = Errno(errno::EAGAIN);
    pub const ENOMEM: Errno = Errno(12);
    pub const EFAULT: Errno = Errno(14);
    pub const EINVAL: Errno = Errno(22);
    pub const ENFILE: Errno = Errno(23);
    pub const EMFILE: Errno = Errno(24);
    pub const EPIPE: Errno = Errno(32);
    pub const ENOSYS: Errno = Errno(38);
    pub const ECONNABORTED: Errno = Errno(103);
    pub const ECONNRESET: Errno = Errno(errno::ECONNRESET);
    pub const ENOTCONN: Errno = Errno(107);
    pub const ETIMEDOUT: Errno = Errno(errno::ETIMEDOUT);
    /// Kernel-internal restart codes, seen by `sys_exit` before the signal code rewrites them.
    pub const ERESTARTSYS: Errno = Errno(errno::ERESTARTSYS);
    pub const ERESTARTNOINTR: Errno = Errno(errno::ERESTARTNOINTR);
    pub const ERESTARTNOHAND: Errno = Errno(errno::ERESTARTNOHAND);
    pub const ERESTART_RESTARTBLOCK: Errno = Errno(errno::ERESTART_RESTARTBLOCK);

    const NAMES: [(Errno, &'static str); 20] = [
        (Self::EPERM, "EPERM"),
        (Self::ENOENT, "ENOENT"),
        (Self::EINTR, "EINTR"),
        (Self::EBADF, "EBADF"),
        (Self::EAGAIN, "EAGAIN"),
        (Self::ENOMEM, "ENOMEM"),
        (Self::EFAULT, "EFAULT"),
        (Self::EINVAL, "EINVAL"),
        (Self::ENFILE, "ENFILE"),
        (Self::EMFILE, "EMFILE"),
        (Self::EPIPE, "EPIPE"),
        (Self::ENOSYS, "ENOSYS"),
        (Self::ECONNABORTED, "ECONNABORTED"),
        (Self::ECONNRESET, "ECONNRESET"),
        (Self::ENOTCONN, "ENOTCONN"),
        (Self::ETIMEDOUT, "ETIMEDOUT"),
        (Self::ERESTARTSYS, "ERESTARTSYS"),
        (Self::ERESTARTNOINTR, "ERESTARTNOINTR"),
        (Self::ERESTARTNOHAND, "ERESTARTNOHAND"),
        (Self::ERESTART_RESTARTBLOCK, "ERESTART_RESTARTBLOCK"),
    ];

    /// The symbolic name ("EAGAIN"), when known.
    pub fn symbol(self) -> Option<&'static str> {
        Self::NAMES.iter().find(|(e, _)| *e == self).map(|(_, n)| *n)
    }

    /// The kernel's restart codes (512..=516): the syscall was interrupted by a
    /// signal and will be restarted or turned into EINTR on the way out.
    pub fn is_restart(self) -> bool {
        errno::is_restart(self.0)
    }

    /// Interrupted by a signal: EINTR or a restart code.
    pub fn is_interrupt(self) -> bool {
        self == Self::EINTR || self.is_restart()
    }
}
