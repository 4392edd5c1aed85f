//! Socket tier: the clients of the targets' Unix sockets (kernel side:
//! `handshake-trace-ebpf/src/unix.rs`). The struct offsets its programs read, from
//! this kernel's BTF; the targets' listening Unix sockets by inode; attaching the
//! connect hook; and the sweep that finds the connections whose server closed them
//! (no tracepoint fires when a Unix socket closes).
use std::{collections::BTreeSet, path::Path};

use anyhow::{anyhow, bail, Context, Result};
use aya::{
    maps::{HashMap, MapData},
    programs::{BtfTracePoint, RawTracePoint, RawTracePointRunOptions, TestRun},
    Ebpf,
};
use handshake_trace_common::{UnixOffsets, UNIX_SWEEP_BATCH};

use crate::capture::{btf, targets, tracefs};

/// The connect hook's BTF tracepoint (Linux 6.6+) and the sweep program.
pub const CONNECT_PROGRAM: &str = "sk_data_ready";
pub const SWEEP_PROGRAM: &str = "unix_sweep";

/// `HANDSHAKE_TRACE_UNIX_CLIENTS=off`: the socket tier does not follow Unix-socket
/// clients, as on a kernel without its hooks (to check what it then says).
pub const FORCE_ENV: &str = "HANDSHAKE_TRACE_UNIX_CLIENTS";

/// Where this kernel keeps what the Unix-socket programs read, or why they cannot run
/// here (the programs read the x86-64 syscall registers).
pub fn offsets() -> Result<UnixOffsets> {
    if std::env::var_os(FORCE_ENV).is_some_and(|v| v == "off") {
        bail!("{FORCE_ENV}=off");
    }
    if !cfg!(target_arch = "x86_64") {
        bail!("Unix-socket clients are read from x86-64 syscall registers only");
    }
    let raw = std::fs::read("/sys/kernel/btf/vmlinux").context("read the kernel's BTF (/sys/kernel/btf/vmlinux)")?;
    offsets_in(&raw)
}

/// The offsets in a BTF blob (`struct sock` begins with its `struct sock_common`).
fn offsets_in(raw: &[u8]) -> Result<UnixOffsets> {
    let m = |s: &str, f: &str| btf::member_offset(raw, s, f);
    Ok(UnixOffsets {
        ok: 1,
        sk_hash: m("sock_common", "skc_hash")?,
        sk_state: m("sock_common", "skc_state")?,
        sk_socket: m("sock", "sk_socket")?,
        socket_inode: m("socket_alloc", "vfs_inode")?,
        inode_ino: m("inode", "i_ino")?,
        task_files: m("task_struct", "files")?,
        files_fdt: m("files_struct", "fdt")?,
        fdt_fd: m("fdtable", "fd")?,
        file_private_data: m("file", "private_data")?,
        socket_sk: m("socket", "sk")?,
        unix_peer: m("unix_sock", "peer")?,
        task_group_leader: m("task_struct", "group_leader")?,
        task_comm: m("task_struct", "comm")?,
        sk_peer_pid: m("sock", "sk_peer_pid")?,
        pid_numbers: m("pid", "numbers")?,
        pid_tasks: m("pid", "tasks")?,
        task_pid_links: m("task_struct", "pid_links")?,
    })
}

/// Load and attach the connect hook and load the sweep program (never attached: run on
/// demand). The reason in words when this kernel cannot.
pub fn attach(ebpf: &mut Ebpf, tracefs_dir: &Path) -> Result<()> {
    if !tracefs::format_path(tracefs_dir, "sock", "sk_data_ready").exists() {
        bail!("this kernel has no tracepoint sock:sk_data_ready (Linux 6.6+)");
    }
    let btf = aya::Btf::from_sys_fs().context("read the kernel's BTF (/sys/kernel/btf/vmlinux)")?;
    let connect: &mut BtfTracePoint = ebpf
        .program_mut(CONNECT_PROGRAM)
        .ok_or_else(|| anyhow!("program {CONNECT_PROGRAM} missing from the embedded object"))?
        .try_into()?;
    connect.load(CONNECT_PROGRAM, &btf).context("verify program sk_data_ready (tp_btf/sk_data_ready)")?;
    let sweep: &mut RawTracePoint = ebpf
        .program_mut(SWEEP_PROGRAM)
        .ok_or_else(|| anyhow!("program {SWEEP_PROGRAM} missing from the embedded object"))?
        .try_into()?;
    sweep.load().context("verify program unix_sweep")?;
    let connect: &mut BtfTracePoint = ebpf.program_mut(CONNECT_PROGRAM).expect("loaded above").try_into()?;
    connect.attach().context("attach to tp_btf/sk_data_ready")?;
    Ok(())
}

/// The inode numbers of the listening Unix sockets `pid` holds.
pub fn listener_inodes(pid: u32) -> BTreeSet<u64> {
    let Ok(text) = std::fs::read_to_string(format!("/proc/{pid}/net/unix")) else { return BTreeSet::new() };
    let listening = targets::parse_proc_net_unix(&text);
    targets::socket_fds(pid).into_values().filter(|ino| listening.contains_key(ino)).collect()
}

/// Run the sweep program on every Unix-socket connection still followed, in batches of
/// [`UNIX_SWEEP_BATCH`]: those whose server closed its socket are reported closed (a
/// record each) and forgotten. Nothing to do (one map lookup) while none is followed.
pub fn sweep(ebpf: &mut Ebpf, socks: &HashMap<MapData, u64, u64>) -> Result<()> {
    let mut keys = socks.keys().filter_map(Result::ok).peekable();
    if keys.peek().is_none() {
        return Ok(());
    }
    let all: Vec<u64> = keys.collect();
    let program: &mut RawTracePoint =
        ebpf.program_mut(SWEEP_PROGRAM).ok_or_else(|| anyhow!("program {SWEEP_PROGRAM} missing"))?.try_into()?;
    for batch in all.chunks(UNIX_SWEEP_BATCH) {
        let mut opts = RawTracePointRunOptions::new();
        opts.args[..batch.len()].copy_from_slice(batch);
        program.test_run(opts).context("run the Unix-socket sweep")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn this_kernels_offsets_are_found_where_btf_is_readable() {
        let Ok(raw) = std::fs::read("/sys/kernel/btf/vmlinux") else {
            let _ = std::io::Write::write_all(&mut std::io::stderr(), b"SKIPPED unix offsets: no readable BTF\n");
            return;
        };
        let o = offsets_in(&raw).unwrap();
        // sock_common: skc_hash after the address pair, skc_state after the family.
        assert_eq!(o.sk_hash, 8, "{o:?}");
        assert_eq!(o.sk_state, 18, "{o:?}");
        // `socket` first in `socket_alloc`: the inode follows it.
        assert!(o.socket_inode > o.socket_sk, "{o:?}");
        assert!(o.unix_peer > o.sk_socket, "{o:?}");
    }
}
