//! Do we have what it takes to load BPF programs: root, or CAP_BPF + CAP_PERFMON.
use anyhow::{bail, Result};

const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;
const CAP_SYS_ADMIN: u32 = 21;

/// Effective capabilities of this process, from /proc/self/status.
pub fn effective_caps() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| parse_cap_eff(&s))
        .unwrap_or(0)
}

fn parse_cap_eff(status: &str) -> Option<u64> {
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line["CapEff:".len()..].trim(), 16).ok()
}

fn has(caps: u64, cap: u32) -> bool {
    caps & (1u64 << cap) != 0
}

/// Can load and attach tracing programs: CAP_SYS_ADMIN, or CAP_BPF and CAP_PERFMON.
pub fn caps_allow_bpf(caps: u64) -> bool {
    has(caps, CAP_SYS_ADMIN) || (has(caps, CAP_BPF) && has(caps, CAP_PERFMON))
}

pub fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A one-line description of what we run as.
pub fn describe() -> String {
    let caps = effective_caps();
    if is_root() && caps_allow_bpf(caps) {
        "root".into()
    } else if caps_allow_bpf(caps) {
        "CAP_BPF + CAP_PERFMON".into()
    } else {
        // SAFETY: geteuid has no preconditions and cannot fail.
        format!("uid {} without CAP_BPF/CAP_PERFMON", unsafe { libc::geteuid() })
    }
}

/// Fail with a clear message when tracing cannot work.
pub fn require_bpf() -> Result<()> {
    if !caps_allow_bpf(effective_caps()) {
        bail!(
            "handshake-trace needs root (or CAP_BPF and CAP_PERFMON) to load its kernel programs; \
             run it with sudo"
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cap_eff() {
        let s = "Name:\tx\nCapPrm:\t0000000000000000\nCapEff:\t000001ffffffffff\n";
        let caps = parse_cap_eff(s).unwrap();
        assert!(caps_allow_bpf(caps));
        assert!(!caps_allow_bpf(parse_cap_eff("CapEff:\t0000000000000000\n").unwrap()));
        // CAP_BPF + CAP_PERFMON alone are enough.
        assert!(caps_allow_bpf((1 << 38) | (1 << 39)));
        assert!(!caps_allow_bpf(1 << 39));
    }
}
