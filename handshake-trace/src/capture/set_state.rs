//! How the socket capture tier sees TCP state changes (connections starting and
//! ending, listeners opening and closing). `inet_sock_set_state` fires for every state
//! change of every TCP socket of the host, so the hook matters: as a BTF tracepoint
//! (`tp_btf`) the kernel hands the program the socket and builds nothing; as a classic
//! tracepoint it first builds the whole trace record (addresses, ports) for each
//! change. The BTF one reads the socket at offsets from this kernel's BTF; the classic
//! one is the fallback where that cannot load.
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use aya::{
    programs::{BtfTracePoint, TracePoint},
    Btf, Ebpf,
};
use handshake_trace_common::{SockFields, SET_STATE_LAYOUT, SET_STATE_SADDR_V6, SET_STATE_SKADDR, SET_STATE_SPORT};

use crate::capture::{btf, offsets::tcp_offsets, tracefs};

/// The hook the socket tier's state-change program is attached to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SetStateHook {
    /// `tp_btf/inet_sock_set_state`, program `btf_set_state`.
    TpBtf,
    /// `sock:inet_sock_set_state`, program `socket_inet_sock_set_state`.
    Tracepoint,
}

impl SetStateHook {
    /// The hook in the words `doctor` uses.
    pub fn name(self) -> &'static str {
        match self {
            SetStateHook::TpBtf => "tp_btf inet_sock_set_state",
            SetStateHook::Tracepoint => "tracepoint sock:inet_sock_set_state",
        }
    }

    /// The program, named after its attach point (`btf_` for the BTF tracepoint).
    pub fn program(self) -> &'static str {
        match self {
            SetStateHook::TpBtf => "btf_set_state",
            SetStateHook::Tracepoint => "socket_inet_sock_set_state",
        }
    }
}

/// `HANDSHAKE_TRACE_SET_STATE=tracepoint`: use the classic tracepoint, as where the BTF
/// one cannot load (to check that fallback on a kernel that has both).
pub const FORCE_ENV: &str = "HANDSHAKE_TRACE_SET_STATE";

fn forced_tracepoint() -> bool {
    std::env::var_os(FORCE_ENV).is_some_and(|v| v == "tracepoint")
}

/// Where this kernel keeps the socket fields the BTF program reads (its BTF), or why
/// the classic tracepoint is used instead.
pub fn sock_fields() -> Result<SockFields> {
    if forced_tracepoint() {
        bail!("{FORCE_ENV}=tracepoint");
    }
    let raw = std::fs::read("/sys/kernel/btf/vmlinux").context("read the kernel's BTF (/sys/kernel/btf/vmlinux)")?;
    sock_fields_in(&raw)
}

/// The offsets in a BTF blob. `struct sock` begins with its `struct sock_common`, and
/// `struct inet_sock` with its `struct sock`, so all are offsets from the socket.
fn sock_fields_in(raw: &[u8]) -> Result<SockFields> {
    let common = |m: &str| btf::member_offset(raw, "sock_common", m);
    Ok(SockFields {
        // A bitfield before Linux 5.6: an error, and the classic tracepoint then.
        protocol: btf::member_offset(raw, "sock", "sk_protocol")?,
        family: common("skc_family")?,
        daddr: common("skc_daddr")?,
        rcv_saddr: common("skc_rcv_saddr")?,
        // Only with IPv6 built in.
        v6_daddr: common("skc_v6_daddr")?,
        v6_rcv_saddr: common("skc_v6_rcv_saddr")?,
        inet_sport: btf::member_offset(raw, "inet_sock", "inet_sport")?,
    })
}

/// Is `sock:inet_sock_set_state` laid out as the classic program reads it?
pub fn layout_ok(tracefs: &Path) -> Result<()> {
    let fields = tracefs::fields(tracefs, "sock", "inet_sock_set_state")?;
    let o = tcp_offsets(&fields, true)?;
    if o != SET_STATE_LAYOUT
        || tracefs::offset_of(&fields, "skaddr", 8)? != SET_STATE_SKADDR
        || tracefs::offset_of(&fields, "sport", 2)? != SET_STATE_SPORT
        || tracefs::offset_of(&fields, "saddr_v6", 16)? != SET_STATE_SADDR_V6
    {
        bail!("sock:inet_sock_set_state is laid out differently on this kernel");
    }
    Ok(())
}

/// Attach the state-change program: the BTF tracepoint when `fields` were found and it
/// verifies and attaches, else the classic one. The hook used, and why the BTF one
/// was not (to warn about).
pub fn attach(ebpf: &mut Ebpf, tracefs: &Path, fields: Result<SockFields>) -> Result<(SetStateHook, Option<String>)> {
    let why = match fields.and_then(|_| attach_btf(ebpf)) {
        Ok(()) => return Ok((SetStateHook::TpBtf, None)),
        Err(e) => format!("{e:#}"),
    };
    layout_ok(tracefs).context("the socket capture tier")?;
    let name = SetStateHook::Tracepoint.program();
    let program: &mut TracePoint =
        ebpf.program_mut(name).ok_or_else(|| anyhow!("program {name} missing from the embedded object"))?.try_into()?;
    program.load().with_context(|| format!("verify program {name}"))?;
    program.attach("sock", "inet_sock_set_state").context("attach to tracepoint sock:inet_sock_set_state")?;
    Ok((SetStateHook::Tracepoint, Some(why)))
}

fn attach_btf(ebpf: &mut Ebpf) -> Result<()> {
    let btf = Btf::from_sys_fs().context("read the kernel's BTF (/sys/kernel/btf/vmlinux)")?;
    let name = SetStateHook::TpBtf.program();
    let program: &mut BtfTracePoint =
        ebpf.program_mut(name).ok_or_else(|| anyhow!("program {name} missing from the embedded object"))?.try_into()?;
    program.load("inet_sock_set_state", &btf).with_context(|| format!("verify program {name} (tp_btf/inet_sock_set_state)"))?;
    program.attach().context("attach to tp_btf/inet_sock_set_state")?;
    Ok(())
}

/// The warning when the classic tracepoint stands in for the BTF one.
pub fn fallback_warning(why: &str) -> String {
    format!("inet_sock_set_state: the BTF tracepoint is not available ({why}); the socket tier uses the classic tracepoint, which costs more per TCP state change")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_hook_names_its_program_after_its_attach_point() {
        assert_eq!(SetStateHook::TpBtf.program(), "btf_set_state");
        assert_eq!(SetStateHook::Tracepoint.program(), "socket_inet_sock_set_state");
        assert!(SetStateHook::TpBtf.name().starts_with("tp_btf"));
    }

    #[test]
    fn this_kernels_socket_fields_lie_inside_struct_sock() {
        let Ok(raw) = std::fs::read("/sys/kernel/btf/vmlinux") else { return };
        let f = sock_fields_in(&raw).unwrap();
        // sock_common: the address pair first, the port pair at 12, then the family.
        assert_eq!((f.daddr, f.rcv_saddr, f.family), (0, 4, 16));
        assert!(f.v6_rcv_saddr == f.v6_daddr + 16, "{f:?}");
        // sk_protocol lies past sock_common; inet_sport past struct sock.
        assert!(f.protocol > f.v6_rcv_saddr && f.inet_sport > f.protocol, "{f:?}");
    }

    #[test]
    fn a_kernel_without_the_members_is_an_error() {
        assert!(sock_fields_in(b"not btf").is_err());
    }
}
