//! `doctor`: can tracing work on this machine, and what would it trace.
use std::{fmt, io::Write, path::Path};

use anyhow::Result;

use crate::{
    capture::{cgroup, privileges, probes, set_state, socket_io, targets, tracefs},
    output::notice,
    support::escape::Escaped,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Pass,
    Fail,
    Info,
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Status::Pass => "[ ok ]",
            Status::Fail => "[FAIL]",
            Status::Info => "[info]",
        })
    }
}

#[derive(Debug, Clone)]
pub struct Check {
    pub status: Status,
    pub what: String,
    pub detail: String,
    /// How to fix a failure.
    pub fix: Option<String>,
}

fn check(status: Status, what: &str, detail: impl Into<String>, fix: Option<&str>) -> Check {
    Check { status, what: what.into(), detail: detail.into(), fix: fix.map(Into::into) }
}

/// Ring buffers arrived in Linux 5.8.
const MIN_KERNEL: (u32, u32) = (5, 8);

pub fn parse_kernel_release(release: &str) -> Option<(u32, u32)> {
    let mut it = release.split(|c: char| !c.is_ascii_digit());
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}

fn kernel_release() -> String {
    std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string()
}

/// Create (and close) a BPF ring buffer map: the real test of support.
fn ringbuf_supported() -> Result<(), String> {
    const BPF_MAP_CREATE: libc::c_long = 0;
    const BPF_MAP_TYPE_RINGBUF: u32 = 27;
    let mut attr = [0u32; 32];
    attr[0] = BPF_MAP_TYPE_RINGBUF;
    attr[3] = 4096; // max_entries = size in bytes
    // SAFETY: attr is a zeroed bpf_attr large enough for BPF_MAP_CREATE.
    let fd = unsafe {
        libc::syscall(libc::SYS_bpf, BPF_MAP_CREATE, attr.as_mut_ptr(), std::mem::size_of_val(&attr))
    };
    if fd < 0 {
        return Err(std::io::Error::last_os_error().to_string());
    }
    // SAFETY: fd was just returned by the kernel.
    unsafe { libc::close(fd as i32) };
    Ok(())
}

/// Run every check.
pub fn run_checks() -> Vec<Check> {
    let mut out = Vec::new();
    let privileged = privileges::caps_allow_bpf(privileges::effective_caps());
    check_system(privileged, &mut out);
    let tracefs_dir = check_tracefs(privileged, &mut out);
    if let Some(dir) = &tracefs_dir {
        check_tracepoints(dir, &mut out);
    }
    check_bpf(privileged, tracefs_dir.is_some(), &mut out);
    check_servers(&mut out);
    out
}

/// Privileges, kernel version, BTF.
fn check_system(privileged: bool, out: &mut Vec<Check>) {
    out.push(if privileged {
        check(Status::Pass, "privileges", privileges::describe(), None)
    } else {
        check(Status::Fail, "privileges", privileges::describe(), Some("run as root (sudo handshake-trace ...)"))
    });

    let release = kernel_release();
    out.push(match parse_kernel_release(&release) {
        Some(v) if v >= MIN_KERNEL => check(Status::Pass, "kernel", format!("{release} (≥ 5.8)"), None),
        _ => check(Status::Fail, "kernel", format!("{release} (< 5.8: no BPF ring buffer)"), Some("use Linux 5.8 or newer")),
    });

    out.push(if Path::new("/sys/kernel/btf/vmlinux").exists() {
        check(Status::Pass, "BTF", "/sys/kernel/btf/vmlinux", None)
    } else {
        check(Status::Info, "BTF", "absent (not needed: syscall tracepoint offsets come from tracefs)", None)
    });
}

/// tracefs, mounted if it is not.
fn check_tracefs(privileged: bool, out: &mut Vec<Check>) -> Option<std::path::PathBuf> {
    match tracefs::find() {
        Some(p) => {
            out.push(check(Status::Pass, "tracefs", format!("mounted at {}", p.display()), None));
            Some(p)
        }
        None if privileged => match tracefs::withheld(socket_io::lockdown().as_deref()) {
            Some(why) => {
                out.push(check(Status::Fail, "tracefs", format!("not usable: {why}"), Some(tracefs::WITHHELD_FIX)));
                None
            }
            None => mount_tracefs(out),
        },
        None => {
            out.push(match tracefs::mounted_at() {
                Some(p) => check(Status::Fail, "tracefs", format!("mounted at {} but not readable here", p.display()), Some("run as root")),
                None => check(Status::Fail, "tracefs", "not mounted", Some("as root: mount -t tracefs nodev /sys/kernel/tracing")),
            });
            None
        }
    }
}

/// Mount the missing tracefs (root).
fn mount_tracefs(out: &mut Vec<Check>) -> Option<std::path::PathBuf> {
    match tracefs::mount() {
        Ok(p) => {
            out.push(check(Status::Pass, "tracefs", format!("was not mounted; mounted it at {}", p.display()), None));
            Some(p)
        }
        Err(e) => {
            out.push(check(Status::Fail, "tracefs", format!("not mounted: {e:#}"), Some("mount -t tracefs nodev /sys/kernel/tracing")));
            None
        }
    }
}

/// Every tracepoint the programs attach to, and kprobes (not needed).
fn check_tracepoints(dir: &Path, out: &mut Vec<Check>) {
    let mut present = 0;
    for p in probes::attach_points() {
        if tracefs::format_path(dir, p.category, p.name).exists() {
            present += 1;
            continue;
        }
        let what = format!("tracepoint {}:{}", p.category, p.name);
        out.push(if p.required {
            check(Status::Fail, &what, format!("missing ({} cannot be traced)", p.shows), Some("a kernel built with CONFIG_FTRACE_SYSCALLS"))
        } else {
            check(Status::Info, &what, format!("missing: {} will not be shown", p.shows), None)
        });
    }
    let total = probes::attach_points().count();
    if present == total {
        out.push(check(Status::Pass, "tracepoints", format!("all {total} present (syscalls, signal, tcp, sock, sched)"), None));
    }
    out.push(if dir.join("kprobe_events").exists() {
        check(Status::Info, "kprobes", "available (not used: handshake-trace attaches to tracepoints only)", None)
    } else {
        check(Status::Info, "kprobes", "absent (CONFIG_KPROBES off) — not needed: handshake-trace attaches to tracepoints only", None)
    });
}

/// The ring buffer, and loading, verifying and attaching the programs in every attach mode.
fn check_bpf(privileged: bool, have_tracefs: bool, out: &mut Vec<Check>) {
    out.push(if !privileged {
        check(Status::Fail, "BPF ring buffer", "not checked (needs privileges)", Some("run as root"))
    } else {
        match ringbuf_supported() {
            Ok(()) => check(Status::Pass, "BPF ring buffer", "supported", None),
            Err(e) => check(Status::Fail, "BPF ring buffer", format!("cannot create one: {e}"), Some("use Linux 5.8 or newer with CONFIG_BPF_SYSCALL")),
        }
    });

    out.push(if !probes::has_kernel_programs() {
        check(Status::Fail, "kernel programs", "not embedded in this binary (plain cargo build)", Some("build with `cargo xtask build`"))
    } else if !privileged || !have_tracefs {
        check(Status::Info, "kernel programs", format!("embedded ({} bytes); load not tried", probes::EBPF_OBJECT.len()), None)
    } else {
        match probes::Probes::load(&probes::LoadOptions::default()) {
            Ok(p) => check(Status::Pass, "kernel programs", format!("{} programs verified, attached and detached", p.attached), None),
            Err(e) => check(Status::Fail, "kernel programs", format!("{e:#}"), Some("see the error; `bpftool prog` and dmesg may say more")),
        }
    });
    // The other attachment modes, for --attach.
    if privileged && probes::has_kernel_programs() && have_tracefs {
        for mode in probes::AttachMode::available().filter(|m| *m != probes::AttachMode::default()) {
            let what = format!("{} (--attach {})", mode.describe(), mode.name());
            let opts = probes::LoadOptions { attach: mode, ..Default::default() };
            out.push(match probes::Probes::load(&opts) {
                Ok(p) => check(Status::Pass, &what, format!("{} programs verified, attached and detached", p.attached), None),
                Err(e) => check(Status::Info, &what, format!("unavailable: {e:#}"), None),
            });
        }
        check_socket_tier(out);
    }
}

/// The socket tier (`--capture socket`): which read/write hooks this kernel gives it
/// (tp_btf on 6.3+, else fexit where trampolines are allowed), or why it falls back.
fn check_socket_tier(out: &mut Vec<Check>) {
    let have_tp_btf = tracefs::find().is_some_and(|dir| socket_io::has_tp_btf(&dir));
    out.push(if have_tp_btf {
        check(Status::Pass, "tp_btf socket hooks", "sock_recv_length, sock_send_length present", None)
    } else {
        check(Status::Info, "tp_btf socket hooks", "missing: sock_recv_length, sock_send_length (Linux 6.3+)", None)
    });
    const WHAT: &str = "socket capture tier (--capture socket)";
    let socket = probes::LoadOptions { capture: probes::CaptureTier::Socket, ..Default::default() };
    let supported = match probes::Probes::load(&socket) {
        // The packet programs attach with the first target: here, this process's cgroup.
        Ok(mut p) => match (p.socket_io, p.socket_io.map(|_| p.add_target(std::process::id())), &p.fallback) {
            (Some(io), Some(Ok(())), _) => {
                let hooks = io.programs().map(|h| format!("{} {h}", io.name())).join(", ");
                let state = p.set_state.as_ref().map_or("no state-change hook", |(h, _)| h.name());
                out.push(check(
                    Status::Pass,
                    WHAT,
                    format!(
                        "socket ({}): {} programs verified, attached and detached ({hooks}; {state}; \
                         cgroup_skb ingress and egress on the servers' cgroup v2)",
                        io.name(),
                        p.attached
                    ),
                    None,
                ));
                // The classic tracepoint standing in for the BTF one: say why.
                if let Some((_, Some(why))) = &p.set_state {
                    out.push(check(Status::Info, "socket tier state changes", set_state::fallback_warning(why), None));
                }
                format!("syscalls, socket ({})", io.name())
            }
            (Some(_), Some(Err(e)), _) => {
                out.push(check(Status::Info, WHAT, format!("the packet programs did not attach: {e:#}"), None));
                "syscalls".to_string()
            }
            (_, _, why) => {
                let why = why.as_deref().unwrap_or("unknown");
                out.push(check(Status::Info, WHAT, format!("not available: falls back to syscalls ({why})"), None));
                "syscalls (socket: not available, falls back to syscalls)".to_string()
            }
        },
        Err(e) => {
            out.push(check(Status::Info, WHAT, format!("unavailable: {e:#}"), None));
            "syscalls".to_string()
        }
    };
    out.push(check(Status::Info, "capture tiers", format!("this kernel supports: {supported}"), None));
    check_packet_place(out);
}

/// Where the socket tier's packet programs would attach for the servers running here,
/// and whether a connection outside that cgroup can be told.
fn check_packet_place(out: &mut Vec<Check>) {
    out.push(match cgroup::offsets() {
        Ok(_) => check(
            Status::Pass,
            "socket cgroup check",
            "a connection whose socket is outside the servers' cgroup is told (BTF: sock.sk_cgrp_data, cgroup.ancestors)",
            None,
        ),
        Err(e) => check(Status::Info, "socket cgroup check", format!("unavailable ({e:#}): the packet programs go on the cgroup v2 root"), None),
    });
    let servers: Vec<(u32, Option<String>)> = targets::find_servers().iter().map(|s| (s.pid, cgroup::cgroup_of(s.pid))).collect();
    if let Some(place) = cgroup::place_for(&servers) {
        out.push(check(Status::Info, "socket tier packet programs", format!("for the servers here: {}", notice::packets_at(&place)), None));
    }
}

/// Servers whose version is asked at most (each costs up to [`GREETING_TIMEOUT`]).
const SERVERS_ASKED: usize = 8;
/// How long one server's greeting may take.
const GREETING_TIMEOUT: std::time::Duration = std::time::Duration::from_millis(500);

/// The MySQL servers running here. Nothing found on the host is executed: the version
/// comes from the bytes of its executable, else from the server's greeting on a
/// loopback listener; whether `watch`/`agent` would adopt it without `-p` is said too.
fn check_servers(out: &mut Vec<Check>) {
    let servers = targets::find_servers();
    if servers.is_empty() {
        out.push(check(Status::Info, "MySQL servers", "none running (looked for mysqld, mariadbd)", None));
    }
    for (i, s) in servers.into_iter().enumerate() {
        let exe = s.exe.as_ref().map(|e| e.display().to_string()).unwrap_or_else(|| "?".into());
        let version = (i < SERVERS_ASKED).then(|| server_version(&s)).flatten().unwrap_or_else(|| "version unknown".into());
        let mut ports: Vec<String> = s.listening.iter().map(|a| a.to_string()).collect();
        ports.sort();
        let ports = if ports.is_empty() { "no TCP listener".to_string() } else { ports.join(", ") };
        let adopted = match targets::verify_executable(s.pid) {
            Ok(_) => "traced without -p".to_string(),
            Err(why) => format!("not traced without -p: {why}"),
        };
        out.push(check(
            Status::Info,
            "MySQL server",
            format!("pid {} {} ({}, {}) listening on {ports}; {adopted}", s.pid, Escaped(&s.comm), Escaped(&exe), Escaped(&version)),
            None,
        ));
        let cfg = crate::capture::server_config::read(s.pid, crate::config::Overrides::default());
        out.push(check(Status::Info, "its settings", crate::output::notice::server_config(s.pid, &cfg), None));
    }
}

/// A server's version: MariaDB's version string in its executable's bytes (read, which
/// the server does not notice), else its greeting on the first loopback listener that
/// answers (two tried at most; one connection the server counts as aborted).
fn server_version(s: &targets::ServerProcess) -> Option<String> {
    targets::executable_version(s.pid)
        .or_else(|| s.listening.iter().take(2).find_map(|a| targets::greeting_version(*a, GREETING_TIMEOUT)))
}

/// Print the checks; Ok(false) when tracing cannot work.
pub fn report(checks: &[Check], out: &mut dyn Write) -> Result<bool> {
    for c in checks {
        write!(out, "{} {}: {}", c.status, c.what, c.detail)?;
        if let Some(fix) = &c.fix {
            write!(out, " — fix: {fix}")?;
        }
        writeln!(out)?;
    }
    let ok = checks.iter().all(|c| c.status != Status::Fail);
    writeln!(out, "{}", if ok { "handshake-trace can trace on this machine." } else { "handshake-trace cannot trace here until the failures above are fixed." })?;
    Ok(ok)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_release_parsing() {
        assert_eq!(parse_kernel_release("6.18.44-fc-v769"), Some((6, 18)));
        assert_eq!(parse_kernel_release("5.4.0-150-generic"), Some((5, 4)));
        assert!(parse_kernel_release("5.4.0").unwrap() < MIN_KERNEL);
        assert_eq!(parse_kernel_release("garbage"), None);
    }

    #[test]
    fn report_fails_when_any_check_fails() {
        let mut buf = Vec::new();
        let checks = vec![
            check(Status::Pass, "a", "fine", None),
            check(Status::Fail, "b", "broken", Some("do x")),
        ];
        assert!(!report(&checks, &mut buf).unwrap());
        let text = String::from_utf8(buf).unwrap();
        assert!(text.contains("[FAIL] b: broken — fix: do x"), "{text}");
        let mut buf = Vec::new();
        assert!(report(&checks[..1], &mut buf).unwrap());
    }
}
