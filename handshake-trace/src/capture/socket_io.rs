//! How the socket capture tier sees reads and writes on this kernel: the BTF
//! tracepoints `sock_recv_length`/`sock_send_length` (Linux 6.3+), else fexit programs
//! on `sock_recvmsg`/`sock_sendmsg` (trampolines: refused under kernel lockdown), else
//! nothing — and then the tier falls back to the syscall tier. Both variants feed the
//! same records; each program is named after its attach point.
use std::path::Path;

use anyhow::{anyhow, Context, Result};
use aya::{programs::FExit, Btf, Ebpf};
use handshake_trace_common::SockFnOffsets;

use crate::capture::{btf, tracefs};

/// The socket tier's read/write hooks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SocketIo {
    /// `tp_btf/sock_recv_length`, `tp_btf/sock_send_length`.
    TpBtf,
    /// `fexit/sock_recvmsg`, `fexit/sock_sendmsg`.
    Fexit,
}

impl SocketIo {
    /// The word `doctor` and the notices use: "socket (tp_btf)".
    pub fn name(self) -> &'static str {
        match self {
            SocketIo::TpBtf => "tp_btf",
            SocketIo::Fexit => "fexit",
        }
    }

    /// The programs, each named after its attach point (tracepoint or function).
    pub fn programs(self) -> [&'static str; 2] {
        match self {
            SocketIo::TpBtf => TP_BTF_POINTS,
            SocketIo::Fexit => FEXIT_FUNCTIONS,
        }
    }
}

/// The BTF tracepoints (Linux 6.3+).
pub const TP_BTF_POINTS: [&str; 2] = ["sock_recv_length", "sock_send_length"];
/// The functions every socket read and write goes through, on kernels before 6.3
/// (the tracepoints fire in their inlined `_nosec` helpers).
pub const FEXIT_FUNCTIONS: [&str; 2] = ["sock_recvmsg", "sock_sendmsg"];

/// Does this kernel have the BTF tracepoints (their tracefs events)?
pub fn has_tp_btf(tracefs_dir: &Path) -> bool {
    TP_BTF_POINTS.iter().all(|p| tracefs::format_path(tracefs_dir, "sock", p).exists())
}

/// `HANDSHAKE_TRACE_SOCKET_HOOKS=fexit`: ignore the BTF tracepoints, as on a kernel
/// before 6.3 (to check the fexit variant, or its fallback, on a newer kernel).
pub const FORCE_ENV: &str = "HANDSHAKE_TRACE_SOCKET_HOOKS";

/// Use the BTF tracepoints when this kernel has them and they are not overridden.
pub fn use_tp_btf(tracefs_dir: &Path) -> bool {
    has_tp_btf(tracefs_dir) && std::env::var_os(FORCE_ENV).is_none_or(|v| v != "fexit")
}

/// Where `struct socket` keeps `sk` and `struct msghdr` its `msg_flags`, from this
/// kernel's BTF (for the fexit programs).
pub fn fexit_offsets() -> Result<SockFnOffsets> {
    let raw = std::fs::read("/sys/kernel/btf/vmlinux").context("read the kernel's BTF (/sys/kernel/btf/vmlinux)")?;
    Ok(SockFnOffsets {
        socket_sk: btf::member_offset(&raw, "socket", "sk")?,
        msghdr_flags: btf::member_offset(&raw, "msghdr", "msg_flags")?,
    })
}

/// The kernel's lockdown mode when it is not `none` ("integrity", "confidentiality").
pub fn lockdown() -> Option<String> {
    let text = std::fs::read_to_string("/sys/kernel/security/lockdown").ok()?;
    lockdown_mode(&text).filter(|m| m != "none")
}

/// The bracketed mode of a `/sys/kernel/security/lockdown` text.
fn lockdown_mode(text: &str) -> Option<String> {
    let (_, rest) = text.split_once('[')?;
    Some(rest.split_once(']')?.0.to_string())
}

/// Verify (load) the fexit programs: Err says why this kernel refuses them.
pub fn load_fexit(ebpf: &mut Ebpf, btf: &Btf) -> Result<()> {
    for name in FEXIT_FUNCTIONS {
        let program: &mut FExit = ebpf.program_mut(name).ok_or_else(|| anyhow!("program {name} missing from the embedded object"))?.try_into()?;
        if let Err(e) = program.load(name, btf) {
            let e = anyhow!(e).context(format!("verify program {name} (fexit/{name})"));
            // A fact next to the error, not a diagnosis: 6.1 loads fexit under "integrity".
            return Err(match lockdown() {
                Some(mode) => e.context(format!("refused (kernel lockdown \"{mode}\")")),
                None => e.context("refused"),
            });
        }
    }
    Ok(())
}

/// Attach the loaded fexit programs (links: dropped with the object).
pub fn attach_fexit(ebpf: &mut Ebpf) -> Result<()> {
    for name in FEXIT_FUNCTIONS {
        let program: &mut FExit = ebpf.program_mut(name).ok_or_else(|| anyhow!("program {name} missing"))?.try_into()?;
        program.attach().with_context(|| format!("attach to fexit/{name}"))?;
    }
    Ok(())
}

/// Unload what `load_fexit` loaded before the tier fell back.
pub fn unload_fexit(ebpf: &mut Ebpf) {
    for name in FEXIT_FUNCTIONS {
        if let Some(Ok(p)) = ebpf.program_mut(name).map(<&mut FExit>::try_from) {
            let _ = p.unload();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_lockdown_mode_is_the_bracketed_word() {
        assert_eq!(lockdown_mode("none [integrity] confidentiality\n").as_deref(), Some("integrity"));
        assert_eq!(lockdown_mode("[none] integrity confidentiality\n").as_deref(), Some("none"));
        assert_eq!(lockdown_mode("garbage"), None);
    }

    #[test]
    fn each_variant_names_its_programs_after_their_attach_points() {
        assert_eq!(SocketIo::TpBtf.programs(), ["sock_recv_length", "sock_send_length"]);
        assert_eq!(SocketIo::Fexit.programs(), ["sock_recvmsg", "sock_sendmsg"]);
        assert_eq!(SocketIo::Fexit.name(), "fexit");
    }
}
