//! Loading the embedded kernel programs, attaching them, and the maps userspace
//! talks to. Everything aya-specific lives here.
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use aya::{
    maps::{Array, HashMap, MapData, PerCpuArray, RingBuf},
    programs::TracePoint,
    Ebpf, EbpfLoader,
};
use handshake_trace_common::{
    counter, CgroupOffsets, Conn, ConnKey, SockConn, SockFields, SockFnOffsets, TargetFilter, UnixOffsets, DEFAULT_RINGBUF_BYTES,
    LISTEN_SHARED,
};

use crate::{
    capture::{
        cgroup::{self, Place, RootWhy, SkbAttach},
        offsets::read_offsets,
        set_state::{self, SetStateHook},
        socket_io::{self, SocketIo},
        targets::{Refusal, RefuseReason, MAX_PORTS_PER_TARGET},
        tracefs, unix,
    },
    events::Counters,
};

/// The kernel programs, built by `cargo xtask build` (empty in a plain `cargo build`).
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/handshake-trace.bpf.o"));

/// True when this binary carries real kernel programs rather than the build stub.
pub fn has_kernel_programs() -> bool {
    !EBPF_OBJECT.is_empty()
}

/// A tracepoint the tool attaches to; its program has the tracepoint's name.
#[derive(Debug, Clone, Copy)]
pub struct AttachPoint {
    pub category: &'static str,
    pub name: &'static str,
    /// Without a required one tracing cannot work; a missing optional one is a warning.
    pub required: bool,
    /// What is not shown without it.
    pub shows: &'static str,
}

const fn ap(category: &'static str, name: &'static str, required: bool, shows: &'static str) -> AttachPoint {
    AttachPoint { category, name, required, shows }
}

macro_rules! syscalls {
    ($($name:literal),+ ; $required:expr, $shows:literal) => {
        [$(
            ap("syscalls", concat!("sys_enter_", $name), $required, $shows),
            ap("syscalls", concat!("sys_exit_", $name), $required, $shows),
        )+]
    };
}

const ACCEPTS: [AttachPoint; 4] = syscalls!("accept4", "accept"; true, "accepted connections");
const READS: [AttachPoint; 8] = syscalls!("read", "readv", "recvfrom", "recvmsg"; true, "what the server read");
const WRITES: [AttachPoint; 8] = syscalls!("write", "writev", "sendto", "sendmsg"; true, "what the server wrote");
const WAITS: [AttachPoint; 8] = syscalls!("poll", "ppoll", "select", "pselect6"; true, "the server's waits");
const SOCKET_OPS: [AttachPoint; 8] =
    syscalls!("fcntl", "setsockopt", "close", "shutdown"; true, "socket modes, options and closes");
const TIMERS: [AttachPoint; 12] = syscalls!("alarm", "setitimer", "timer_settime", "kill", "tkill", "tgkill";
    false, "timers armed and signals sent by the server");
const OTHERS: [AttachPoint; 7] = [
    ap("signal", "signal_generate", false, "signals sent to handler threads"),
    ap("signal", "signal_deliver", false, "signals delivered to handler threads"),
    ap("tcp", "tcp_retransmit_skb", false, "TCP retransmits"),
    ap("tcp", "tcp_send_reset", false, "TCP resets sent"),
    ap("tcp", "tcp_receive_reset", false, "TCP resets received"),
    ap("sock", "inet_sock_set_state", false, "TCP state changes"),
    ap("sched", "sched_process_exit", false, "a server exiting mid-trace (noticed within a second without it)"),
];

/// Every tracepoint the tool attaches to (in the default, per-syscall mode).
pub fn attach_points() -> impl Iterator<Item = &'static AttachPoint> {
    ACCEPTS.iter().chain(&READS).chain(&WRITES).chain(&WAITS).chain(&SOCKET_OPS).chain(&TIMERS).chain(&OTHERS)
}

/// How the syscall programs attach. The default is the one measured cheaper
/// (docs/performance.md): raw on x86-64, per-syscall tracepoints elsewhere.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AttachMode {
    /// One `syscalls:sys_enter_*`/`sys_exit_*` tracepoint per syscall (offsets from tracefs).
    Tracepoints,
    /// `raw_syscalls:sys_enter`/`sys_exit` raw tracepoints dispatching on the syscall
    /// number: cheaper per call, x86-64 only.
    Raw,
}

impl AttachMode {
    /// The modes this build can use (raw knows only x86-64).
    pub fn available() -> impl Iterator<Item = AttachMode> {
        [AttachMode::Raw, AttachMode::Tracepoints]
            .into_iter()
            .filter(|m| cfg!(target_arch = "x86_64") || *m == AttachMode::Tracepoints)
    }

    /// The name `--attach` takes.
    pub fn name(self) -> &'static str {
        match self {
            AttachMode::Tracepoints => "tracepoints",
            AttachMode::Raw => "raw",
        }
    }

    pub fn describe(self) -> &'static str {
        match self {
            AttachMode::Tracepoints => "per-syscall tracepoints",
            AttachMode::Raw => "raw syscall tracepoints",
        }
    }

    /// This mode, if this build can use it.
    pub fn usable(self) -> Result<Self> {
        if AttachMode::available().any(|m| m == self) {
            Ok(self)
        } else {
            bail!("--attach {} knows only the x86-64 syscall ABI", self.name())
        }
    }
}

impl Default for AttachMode {
    fn default() -> Self {
        if cfg!(target_arch = "x86_64") { AttachMode::Raw } else { AttachMode::Tracepoints }
    }
}

/// Which hooks capture the handshakes (`--capture`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum CaptureTier {
    /// The syscalls of the server's threads: the full story (fds, waits and their
    /// timeouts, fcntl, socket options, timers), at the cost of putting every task of
    /// the host on the slow syscall path while attached.
    #[default]
    Syscalls,
    /// Socket and packet hooks only (`sock_recv_length`/`sock_send_length`,
    /// `inet_sock_set_state`, `cgroup_skb`): nothing on the syscall path; no fds,
    /// waits, fcntl, socket options or timers.
    Socket,
}

impl CaptureTier {
    pub const ALL: [CaptureTier; 2] = [CaptureTier::Syscalls, CaptureTier::Socket];
}

/// The socket tier's own programs on signal tracepoints the syscall tier also uses: a
/// signal's handler thread is the one that last read or wrote the connection.
/// (tracepoint, program). Its state changes: [`set_state`].
pub const SOCKET_TRACEPOINT_PROGRAMS: [(&str, &str); 2] =
    [("signal_generate", "socket_signal_generate"), ("signal_deliver", "socket_signal_deliver")];

/// How many programs a mode attaches (when the kernel has every tracepoint).
pub fn program_count(mode: AttachMode) -> usize {
    match mode {
        AttachMode::Tracepoints => attach_points().count(),
        AttachMode::Raw => attach_points().filter(|p| p.category != "syscalls").count() + RAW_POINTS.len(),
    }
}

/// The raw tracepoints and their programs (AttachMode::Raw).
const RAW_POINTS: [(&str, &str); 2] = [("sys_enter", "raw_sys_enter"), ("sys_exit", "raw_sys_exit")];

/// Loaded and attached programs plus the maps userspace uses. Dropping it detaches
/// everything (the links are file descriptors; the kernel also releases them if
/// the process is killed).
pub struct Probes {
    _ebpf: Ebpf,
    _logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    targets: HashMap<MapData, u32, u32>,
    target_filter: Array<MapData, TargetFilter>,
    /// What both target maps hold.
    target_pids: std::collections::BTreeSet<u32>,
    counters: PerCpuArray<MapData, u64>,
    events: Option<RingBuf<MapData>>,
    conns: HashMap<MapData, ConnKey, Conn>,
    /// The targets' listening ports (the syscall tier notes TCP handshakes on them),
    /// and the socket tier's connections.
    listen_ports: HashMap<MapData, u16, u32>,
    sock_conns: HashMap<MapData, u64, SockConn>,
    /// Syscall tier: the targets' listening sockets and their ports.
    listeners: HashMap<MapData, ConnKey, u32>,
    /// `--port`: the one port whose connections are followed (in the kernel).
    port: Option<u16>,
    /// Discovery, socket tier: ports a process named like a server began to listen on
    /// before it was adopted (written by the kernel), and processes refused.
    candidate_ports: Option<HashMap<MapData, u16, u32>>,
    refused: Option<HashMap<MapData, u32, u32>>,
    /// The tier attached: `Syscalls` when `--capture socket` fell back.
    pub capture: CaptureTier,
    /// The socket tier's read/write hooks on this kernel.
    pub socket_io: Option<SocketIo>,
    /// Socket tier: the packet programs, attached where the targets are.
    skb: Option<SkbAttach>,
    /// The socket tier's state-change hook on this kernel, and why it is not the BTF
    /// tracepoint (when it is not).
    pub set_state: Option<(SetStateHook, Option<String>)>,
    /// Why `--capture socket` fell back to the syscall tier ([`fallback_notice`] says it).
    pub fallback: Option<String>,
    /// Socket tier: whether the clients of the targets' Unix sockets are followed, or
    /// why not on this kernel (in words).
    pub unix_clients: std::result::Result<(), String>,
    /// Socket tier: the targets' listening Unix sockets (inode → process), and the Unix
    /// connections followed (for the sweep).
    unix_listeners: Option<HashMap<MapData, u64, u32>>,
    unix_socks: Option<HashMap<MapData, u64, u64>>,
    /// Targets whose listening Unix socket was found (the others are looked at again
    /// each second: a server adopted before it listens).
    unix_found: std::collections::BTreeSet<u32>,
    /// Programs attached.
    pub attached: usize,
    /// Optional tracepoints this kernel lacks, in words.
    pub warnings: Vec<String>,
}

/// Options for loading.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Ring buffer size in bytes (rounded up to a power of two of at least one page).
    pub ringbuf_bytes: u32,
    pub attach: AttachMode,
    pub capture: CaptureTier,
    /// `--port`: follow only connections accepted on this local port, filtered in the kernel.
    pub port: Option<u16>,
    /// Discovery mode (no `-p`): the kernel follows a process named like a server from
    /// its first `listen`, before userspace adopts (or refuses) it.
    pub discover: bool,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { ringbuf_bytes: DEFAULT_RINGBUF_BYTES, attach: AttachMode::default(), capture: CaptureTier::default(), port: None, discover: false }
    }
}

fn raise_memlock_rlimit() {
    // Kernels before 5.11 charge BPF memory to RLIMIT_MEMLOCK; harmless after.
    let rlim = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
    // SAFETY: valid pointer to an rlimit.
    unsafe { libc::setrlimit(libc::RLIMIT_MEMLOCK, &rlim) };
}

impl Probes {
    /// Load the embedded object, patch in this kernel's tracepoint offsets and attach every program.
    pub fn load(opts: &LoadOptions) -> Result<Self> {
        if !has_kernel_programs() {
            bail!(
                "this binary was built without its kernel programs (plain `cargo build`); \
                 build it with `cargo xtask build`"
            );
        }
        crate::capture::privileges::require_bpf()?;
        raise_memlock_rlimit();
        let tracefs = tracefs::find_or_mount()?;
        let (offsets, missing) = read_offsets(&tracefs)?;
        let ringbuf = opts.ringbuf_bytes.max(4096).next_power_of_two();
        let plan = (opts.capture == CaptureTier::Socket).then(|| plan_socket_io(&tracefs));
        let cgroup_offsets = cgroup::offsets();
        // The socket tier's state-change program reads the socket at this kernel's offsets.
        let mut sock_fields = (opts.capture == CaptureTier::Socket).then(set_state::sock_fields);
        // Both tiers: the socket tier follows Unix clients, the syscall tier names them.
        let unix_offsets = Some(unix::offsets());
        let fn_offsets = match &plan {
            Some(Ok((SocketIo::Fexit, o))) => *o,
            _ => SockFnOffsets::default(),
        };
        let mut ebpf = EbpfLoader::new()
            .override_global("TP_OFFSETS", &offsets, true)
            .override_global("SOCK_FN_OFFSETS", &fn_offsets, true)
            .override_global("CGROUP_OFFSETS", cgroup_offsets.as_ref().unwrap_or(&CgroupOffsets::default()), true)
            .override_global("SOCK_FIELDS", sock_fields.as_ref().and_then(|f| f.as_ref().ok()).unwrap_or(&SockFields::default()), true)
            .override_global("UNIX_OFFSETS", unix_offsets.as_ref().and_then(|o| o.as_ref().ok()).unwrap_or(&UnixOffsets::default()), true)
            .override_global("SKB_CURRENT_TASK", &skb_current_task(), true)
            .override_global("RING_BYTES", &u64::from(ringbuf), true)
            .override_global("PORT_FILTER", &u32::from(opts.port.unwrap_or(0)), true)
            .override_global("DISCOVER", &u32::from(opts.discover), true)
            .map_max_entries("EVENTS", ringbuf)
            .load(EBPF_OBJECT)
            .context("load the kernel programs")?;
        // The programs log only in rare failure paths; keep the logger alive or its map closes.
        let logger = aya_log::EbpfLogger::init(&mut ebpf).ok();
        let mut attached = 0;
        let mut warnings = Vec::new();
        let (socket_io, fallback) = match plan {
            Some(plan) => resolve_socket_io(&mut ebpf, plan)?,
            None => (None, None),
        };
        let socket = socket_io.is_some();
        let mut skb = None;
        let per_syscall = opts.attach == AttachMode::Tracepoints && !socket;
        let mut set_state = None;
        let mut unix_clients = Err("the syscall tier follows them".to_string());
        for p in attach_points()
            .filter(|p| !missing.iter().any(|m| m.name == p.name))
            .filter(|p| per_syscall || p.category != "syscalls")
        {
            if socket && p.name == "inet_sock_set_state" {
                let fields = sock_fields.take().unwrap_or_else(|| Err(anyhow!("no socket fields")));
                let (hook, why) = set_state::attach(&mut ebpf, &tracefs, fields)?;
                warnings.extend(why.as_deref().map(set_state::fallback_warning));
                set_state = Some((hook, why));
                attached += 1;
                continue;
            }
            let program = match SOCKET_TRACEPOINT_PROGRAMS.iter().find(|(tp, _)| socket && *tp == p.name) {
                Some((_, own)) => own,
                None => p.name,
            };
            attach_tracepoint(&mut ebpf, program, p.category, p.name)?;
            attached += 1;
        }
        warnings.extend(
            missing.iter().map(|m| format!("this kernel lacks tracepoint {}:{}: {} will not be shown", m.category, m.name, m.shows)),
        );
        if socket {
            if missing.iter().any(|m| m.name == "inet_sock_set_state") {
                bail!("the socket capture tier needs tracepoint sock:inet_sock_set_state, which this kernel lacks");
            }
            let (n, attach) = attach_socket_tier(&mut ebpf, socket_io.unwrap_or(SocketIo::TpBtf), &cgroup_offsets)?;
            attached += n;
            skb = Some(attach);
            // Unix-socket clients: their bytes come from the tp_btf read/write hooks.
            let unix = match (socket_io, unix_offsets) {
                // `--port` keeps one TCP port: no hook for Unix sockets (and no cost).
                _ if opts.port.is_some() => Err("--port follows one TCP port".to_string()),
                (Some(SocketIo::TpBtf), Some(Ok(_))) => unix::attach(&mut ebpf, &tracefs).map_err(|e| first_line(&format!("{e:#}"))),
                (Some(SocketIo::TpBtf), Some(Err(e))) => Err(format!("{e:#}")),
                _ => Err("its read and write hooks on this kernel are not the tp_btf ones (Linux 6.3+)".to_string()),
            };
            if unix.is_ok() {
                attached += 1;
            }
            unix_clients = unix;
        } else if opts.attach == AttachMode::Raw {
            for (tp, name) in RAW_POINTS {
                let program: &mut aya::programs::RawTracePoint = ebpf
                    .program_mut(name)
                    .ok_or_else(|| anyhow!("program {name} missing from the embedded object"))?
                    .try_into()?;
                program.load().with_context(|| format!("verify program {name}"))?;
                program.attach(tp).with_context(|| format!("attach to raw tracepoint {tp}"))?;
                attached += 1;
            }
        }
        let targets = HashMap::try_from(take_map(&mut ebpf, "TARGETS")?)?;
        let counters = PerCpuArray::try_from(take_map(&mut ebpf, "COUNTERS")?)?;
        let events = Some(RingBuf::try_from(take_map(&mut ebpf, "EVENTS")?)?);
        let conns = HashMap::try_from(take_map(&mut ebpf, "CONNS")?)?;
        let target_filter = Array::try_from(take_map(&mut ebpf, "TARGET_FILTER")?)?;
        let listen_ports = HashMap::try_from(take_map(&mut ebpf, "LISTEN_PORTS")?)?;
        let sock_conns = HashMap::try_from(take_map(&mut ebpf, "SOCK_CONNS")?)?;
        let listeners = HashMap::try_from(take_map(&mut ebpf, "LISTENERS")?)?;
        let (candidate_ports, refused) = if opts.discover {
            (Some(HashMap::try_from(take_map(&mut ebpf, "CANDIDATE_PORTS")?)?), Some(HashMap::try_from(take_map(&mut ebpf, "REFUSED")?)?))
        } else {
            (None, None)
        };
        let (unix_listeners, unix_socks) = if unix_clients.is_ok() {
            (Some(HashMap::try_from(take_map(&mut ebpf, "UNIX_LISTENERS")?)?), Some(HashMap::try_from(take_map(&mut ebpf, "UNIX_SOCKS")?)?))
        } else {
            (None, None)
        };
        Ok(Self {
            candidate_ports,
            refused,
            unix_clients,
            unix_listeners,
            unix_socks,
            unix_found: Default::default(),
            listen_ports,
            sock_conns,
            listeners,
            port: opts.port,
            capture: if socket { CaptureTier::Socket } else { CaptureTier::Syscalls },
            socket_io,
            set_state,
            fallback,
            skb,
            _ebpf: ebpf,
            _logger: logger,
            targets,
            target_filter,
            target_pids: Default::default(),
            counters,
            events,
            conns,
            attached,
            warnings,
        })
    }

    /// Start tracing a process. A process the maps have no room for (or that listens on
    /// more ports than a server does) is refused, and nothing of it stays in them: the
    /// other targets go on.
    pub fn add_target(&mut self, pid: u32) -> std::result::Result<(), Refusal> {
        if self.target_pids.contains(&pid) {
            return Ok(());
        }
        let ports = if self.capture == CaptureTier::Socket { self.listen_ports_of(pid) } else { Vec::new() };
        if ports.len() > MAX_PORTS_PER_TARGET {
            return Err(Refusal::new(
                RefuseReason::TooManyPorts,
                format!("it listens on {} TCP ports (a server listens on a few; {MAX_PORTS_PER_TARGET} at most)", ports.len()),
            ));
        }
        if self.target_pids.len() >= handshake_trace_common::MAX_TARGETS as usize {
            return Err(Refusal::new(RefuseReason::MapFull, format!("the target map holds {} processes at most", handshake_trace_common::MAX_TARGETS)));
        }
        self.targets
            .insert(pid, 1, 0)
            .map_err(|e| Refusal::new(RefuseReason::MapFull, format!("the target map refused it: {e}")))?;
        self.target_pids.insert(pid);
        let added = if self.capture == CaptureTier::Socket {
            self.add_listen_ports(pid, &ports)
                .and_then(|()| self.add_unix_listeners(pid).map_err(|e| Refusal::new(RefuseReason::MapFull, format!("{e:#}"))))
                .and_then(|()| self.follow_targets().map_err(|e| Refusal::new(RefuseReason::MapFull, format!("{e:#}"))))
        } else {
            self.add_listeners(pid, &crate::capture::targets::listening_sockets(pid));
            Ok(())
        };
        let added = added.and_then(|()| self.write_target_filter().map_err(|e| Refusal::new(RefuseReason::MapFull, format!("{e:#}"))));
        if added.is_err() {
            // Undo whatever went in (its ports, its place in the filter).
            self.remove_target(pid);
        }
        self.forget_candidate(pid);
        added
    }

    /// Syscall tier: tell the kernel which listening sockets (fd → local address) `pid`
    /// has, and their ports. An accept learns its server's port from its listener (its
    /// TCP events are then found by both ends, and its TCP handshake, noted on a target's
    /// port, starts its times); with `--port`, accepts on other ports are dropped there.
    /// Best effort: a listener missing from the full maps is filtered in userspace, and
    /// its connections' TCP events are found by their client alone, timed from the accept.
    pub fn add_listeners(&mut self, pid: u32, listening: &std::collections::HashMap<i32, std::net::SocketAddr>) {
        if self.capture == CaptureTier::Socket {
            return;
        }
        for (&fd, addr) in listening {
            let port = addr.port();
            let _ = self.listeners.insert(ConnKey { tgid: pid, fd }, u32::from(port), 0);
            if self.port.is_none_or(|p| p == port) {
                let owner = port_owner(self.listen_ports.get(&port, 0).ok(), pid);
                let _ = self.listen_ports.insert(port, owner, 0);
            }
        }
    }

    /// Socket tier: the target's listening TCP ports (only `--port`'s, if given), from
    /// /proc; a port another target listens on too (SO_REUSEPORT) is marked shared.
    /// Ports it listens on later are added by the kernel programs (`listen` is seen as
    /// a state change).
    fn add_listen_ports(&mut self, pid: u32, ports: &[u16]) -> std::result::Result<(), Refusal> {
        for &port in ports {
            let owner = port_owner(self.listen_ports.get(&port, 0).ok(), pid);
            self.listen_ports.insert(port, owner, 0).map_err(|e| {
                Refusal::new(
                    RefuseReason::MapFull,
                    format!("port {port} does not fit the listening-port map ({} ports at most): {e}", handshake_trace_common::MAX_LISTEN_PORTS),
                )
            })?;
        }
        Ok(())
    }

    /// The distinct TCP ports `pid` listens on (only `--port`'s, if given), from /proc,
    /// and those the kernel saw it start listening on as a candidate (so a port is kept
    /// when /proc cannot be read, EMFILE…).
    fn listen_ports_of(&self, pid: u32) -> Vec<u16> {
        let listening = crate::capture::targets::listening_sockets(pid);
        let mut ports: std::collections::BTreeSet<u16> = listening.values().map(|a| a.port()).collect();
        if let Some(c) = self.candidate_ports.as_ref() {
            ports.extend(c.iter().filter_map(Result::ok).filter(|(_, p)| *p == pid).map(|(port, _)| port));
        }
        ports.into_iter().filter(|p| self.port.is_none_or(|only| only == *p)).collect()
    }

    /// Socket tier: how many entries of the listening-port map each process owns (its
    /// own `listen`s after it was adopted go in from the kernel side).
    pub fn ports_by_owner(&self) -> std::collections::BTreeMap<u32, usize> {
        let mut by = std::collections::BTreeMap::new();
        for (_, owner) in self.listen_ports.iter().filter_map(Result::ok) {
            *by.entry(owner).or_insert(0) += 1;
        }
        by
    }

    /// Discovery: a process named like a server was refused; the kernel stops following
    /// its listeners (until `forget_refused`).
    pub fn refuse_candidate(&mut self, pid: u32) {
        if let Some(r) = self.refused.as_mut() {
            let _ = r.insert(pid, 1, 0);
        }
        self.forget_candidate(pid);
        // Syscall tier: an admission whose port entry was pushed out goes too.
        if self.capture == CaptureTier::Syscalls && self.refused.is_some() && !self.target_pids.contains(&pid) {
            let _ = self.write_target_filter();
        }
    }

    /// A refused process is gone: a later process with its pid may be a candidate again.
    pub fn forget_refused(&mut self, pid: u32) {
        if let Some(r) = self.refused.as_mut() {
            let _ = r.remove(&pid);
        }
        self.forget_candidate(pid);
    }

    /// Syscall tier, discovery: the processes the kernel admitted as candidates.
    fn syscall_candidates(&self) -> Vec<u32> {
        match (&self.candidate_ports, self.capture) {
            (Some(c), CaptureTier::Syscalls) => c.iter().filter_map(Result::ok).map(|(_, pid)| pid).collect(),
            _ => Vec::new(),
        }
    }

    /// Drop the ports the kernel noted for candidate `pid` (it is now a target, refused
    /// or gone) and, on the syscall tier, its admission (unless it is a target now).
    fn forget_candidate(&mut self, pid: u32) {
        let Some(c) = self.candidate_ports.as_mut() else { return };
        let ports: Vec<u16> = c.iter().filter_map(Result::ok).filter(|(_, p)| *p == pid).map(|(k, _)| k).collect();
        let was = !ports.is_empty();
        for port in ports {
            let _ = c.remove(&port);
        }
        if was && self.capture == CaptureTier::Syscalls && !self.target_pids.contains(&pid) {
            let _ = self.write_target_filter();
        }
    }

    /// Socket tier: the target's listening Unix sockets (by inode, from /proc), unless
    /// `--port` keeps one TCP port only.
    fn add_unix_listeners(&mut self, pid: u32) -> Result<()> {
        let (Some(map), None) = (self.unix_listeners.as_mut(), self.port) else { return Ok(()) };
        for ino in unix::listener_inodes(pid) {
            map.insert(ino, pid, 0).with_context(|| format!("add Unix socket inode {ino} to the listener map (full?)"))?;
            self.unix_found.insert(pid);
        }
        Ok(())
    }

    /// Socket tier, once a second: the targets with no listening Unix socket found yet
    /// are looked at again (a server adopted before it opened its socket).
    pub fn rescan_unix_listeners(&mut self) -> Result<()> {
        let pending: Vec<u32> = self.target_pids.iter().copied().filter(|p| !self.unix_found.contains(p)).collect();
        for pid in pending {
            self.add_unix_listeners(pid)?;
        }
        Ok(())
    }

    /// Socket tier: find the Unix-socket connections whose server closed its socket
    /// (each becomes a record). Called every few tens of milliseconds by the live loop.
    pub fn sweep_unix(&mut self) -> Result<()> {
        match self.unix_socks.as_ref() {
            Some(socks) => unix::sweep(&mut self._ebpf, socks),
            None => Ok(()),
        }
    }

    /// Socket tier: the packet programs go where the targets are now.
    fn follow_targets(&mut self) -> Result<()> {
        match self.skb.as_mut() {
            Some(skb) => skb.follow(&mut self._ebpf, self.target_pids.iter().copied()),
            None => Ok(()),
        }
    }

    /// Socket tier: where the packet programs are attached (None before any target).
    pub fn packets_at(&self) -> Option<&Place> {
        self.skb.as_ref().and_then(SkbAttach::place)
    }

    /// Socket tier: a connection's socket was outside the cgroup the packet programs
    /// are attached to: move them to the root (for good). True when they moved now.
    pub fn packets_to_root(&mut self) -> Result<bool> {
        let Some(skb) = self.skb.as_mut() else { return Ok(false) };
        if matches!(skb.place(), Some(Place::Root(RootWhy::Moved))) {
            return Ok(false);
        }
        skb.widen(&mut self._ebpf)?;
        Ok(true)
    }

    /// Mirror the target set into the short list the programs ask first. Syscall tier,
    /// discovery: with the candidates the kernel admitted (it wrote them in itself at
    /// their `listen`) while userspace decides on them.
    fn write_target_filter(&mut self) -> Result<()> {
        let mut pids = self.target_pids.clone();
        // Candidates only into free slots: they never make the list overflow.
        let room = handshake_trace_common::FAST_TARGETS.saturating_sub(pids.len());
        pids.extend(self.syscall_candidates().into_iter().filter(|p| !self.target_pids.contains(p)).take(room));
        let pids: Vec<u32> = pids.into_iter().collect();
        self.target_filter.set(0, TargetFilter::of(&pids), 0).context("write the target filter map")
    }

    /// Stop tracing a process (it exited) and forget its connections.
    pub fn remove_target(&mut self, pid: u32) {
        self.target_pids.remove(&pid);
        self.unix_found.remove(&pid);
        // Narrow the short list first: the map is only asked after an overflow.
        let _ = self.write_target_filter();
        let _ = self.targets.remove(&pid);
        let keys: Vec<ConnKey> = self.conns.keys().filter_map(Result::ok).filter(|k| k.tgid == pid).collect();
        for k in keys {
            let _ = self.conns.remove(&k);
        }
        let ports: Vec<u16> =
            self.listen_ports.iter().filter_map(Result::ok).filter(|(_, p)| *p == pid || *p == LISTEN_SHARED).map(|(k, _)| k).collect();
        for port in ports {
            let _ = self.listen_ports.remove(&port);
        }
        let listeners: Vec<ConnKey> = self.listeners.keys().filter_map(Result::ok).filter(|k| k.tgid == pid).collect();
        for k in listeners {
            let _ = self.listeners.remove(&k);
        }
        // A shared port goes to the targets still listening on it.
        if self.capture == CaptureTier::Socket {
            for other in self.target_pids.clone() {
                let ports = self.listen_ports_of(other);
                let _ = self.add_listen_ports(other, &ports);
            }
        }
        let _ = self.follow_targets();
        let socks: Vec<u64> = self.sock_conns.iter().filter_map(Result::ok).filter(|(_, c)| c.tgid == pid).map(|(k, _)| k).collect();
        for sk in socks {
            let _ = self.sock_conns.remove(&sk);
            if let Some(u) = self.unix_socks.as_mut() {
                let _ = u.remove(&sk);
            }
        }
        if let Some(map) = self.unix_listeners.as_mut() {
            let inodes: Vec<u64> = map.iter().filter_map(Result::ok).filter(|(_, p)| *p == pid).map(|(k, _)| k).collect();
            for ino in inodes {
                let _ = map.remove(&ino);
            }
        }
    }

    /// The event ring buffer; taken once by the reader.
    pub fn take_events(&mut self) -> Option<RingBuf<MapData>> {
        self.events.take()
    }

    pub fn counters(&self) -> Result<Counters> {
        let sum = |i: u32| -> Result<u64> { Ok(self.counters.get(&i, 0)?.iter().sum()) };
        Ok(Counters {
            emitted: sum(counter::EMITTED)?,
            lost_ringbuf: sum(counter::LOST_RINGBUF)?,
            lost_mapfull: sum(counter::LOST_MAPFULL)?,
            filtered_port: sum(counter::FILTERED_PORT)?,
        })
    }

    /// Forward log lines the programs wrote (rare failure paths).
    pub fn flush_logs(&mut self) {
        if let Some(l) = self._logger.as_mut() {
            l.flush();
        }
    }
}

/// The first line of an error (a verifier's log follows it).
fn first_line(text: &str) -> String {
    let line = text.lines().next().unwrap_or_default();
    line.split(". Verifier output").next().unwrap_or(line).to_string()
}

/// The LISTEN_PORTS value for a port `pid` listens on, given the current one.
fn port_owner(current: Option<u32>, pid: u32) -> u32 {
    match current {
        Some(p) if p != pid => LISTEN_SHARED,
        _ => pid,
    }
}

/// Load program `name` and attach it to tracepoint `category:tracepoint`.
fn attach_tracepoint(ebpf: &mut Ebpf, name: &str, category: &str, tracepoint: &str) -> Result<()> {
    let program: &mut TracePoint = ebpf
        .program_mut(name)
        .ok_or_else(|| anyhow!("program {name} missing from the embedded object"))?
        .try_into()?;
    program.load().with_context(|| format!("verify program {name}"))?;
    program.attach(category, tracepoint).with_context(|| format!("attach to tracepoint {category}:{tracepoint}"))?;
    Ok(())
}

/// 1 when cgroup_skb programs may ask which task runs them (not on 6.1 nor 5.15): the egress
/// program then records the sending thread.
fn skb_current_task() -> u32 {
    use aya::{programs::ProgramType, sys::{is_helper_supported, BpfHelper}};
    u32::from(is_helper_supported(ProgramType::CgroupSkb, BpfHelper::BPF_FUNC_get_current_pid_tgid).unwrap_or(false))
}

/// Which read/write hooks the socket tier can use here, before anything loads: the
/// BTF tracepoints if tracefs has them, else fexit (with this kernel's struct offsets).
fn plan_socket_io(tracefs: &Path) -> Result<(SocketIo, SockFnOffsets)> {
    if socket_io::use_tp_btf(tracefs) {
        return Ok((SocketIo::TpBtf, SockFnOffsets::default()));
    }
    let offsets = socket_io::fexit_offsets()?;
    Ok((SocketIo::Fexit, offsets))
}

/// The socket tier's read/write hooks, or the one-line reason it falls back to the
/// syscall tier (no tp_btf hooks, and fexit refused or impossible).
fn resolve_socket_io(ebpf: &mut Ebpf, plan: Result<(SocketIo, SockFnOffsets)>) -> Result<(Option<SocketIo>, Option<String>)> {
    let why = match plan {
        Ok((SocketIo::TpBtf, _)) => return Ok((Some(SocketIo::TpBtf), None)),
        Ok((SocketIo::Fexit, _)) => {
            let btf = aya::Btf::from_sys_fs().context("read the kernel's BTF (/sys/kernel/btf/vmlinux)")?;
            match socket_io::load_fexit(ebpf, &btf) {
                Ok(()) => return Ok((Some(SocketIo::Fexit), None)),
                Err(e) => {
                    socket_io::unload_fexit(ebpf);
                    e
                }
            }
        }
        Err(e) => e,
    };
    Ok((None, Some(format!("{why:#}"))))
}

/// The one line that says `--capture socket` fell back, and why.
pub fn fallback_notice(why: &str) -> String {
    format!(
        "handshake-trace: --capture socket is not available on this kernel (no tp_btf sock_recv_length/sock_send_length \
         before Linux 6.3; fexit on sock_recvmsg/sock_sendmsg: {why}): tracing with the syscall tier instead"
    )
}

/// The socket tier's own hooks: the read/write hooks (`io`), and the packet programs
/// verified (they attach where the targets are: [`cgroup::SkbAttach`]).
fn attach_socket_tier(ebpf: &mut Ebpf, io: SocketIo, offsets: &Result<CgroupOffsets>) -> Result<(usize, SkbAttach)> {
    match io {
        SocketIo::Fexit => socket_io::attach_fexit(ebpf)?,
        SocketIo::TpBtf => {
            let btf = aya::Btf::from_sys_fs().context("read the kernel's BTF (/sys/kernel/btf/vmlinux)")?;
            for name in socket_io::TP_BTF_POINTS {
                let program: &mut aya::programs::BtfTracePoint =
                    ebpf.program_mut(name).ok_or_else(|| anyhow!("program {name} missing from the embedded object"))?.try_into()?;
                program.load(name, &btf).with_context(|| format!("verify program {name} (tp_btf/{name})"))?;
                program.attach().with_context(|| format!("attach to tp_btf/{name}"))?;
            }
        }
    }
    let skb = SkbAttach::load(ebpf, offsets)?;
    Ok((io.programs().len() + cgroup::PROGRAMS.len(), skb))
}

fn take_map(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map> {
    ebpf.take_map(name).ok_or_else(|| anyhow!("map {name} missing from the embedded object"))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    // libtest captures print macros, not direct writes: the skip stays visible.
    // `cargo xtask test` sets HANDSHAKE_TRACE_REQUIRE_ROOT=1: there, not running fails.
    fn skip(test: &str, why: &str) {
        if std::env::var_os("HANDSHAKE_TRACE_REQUIRE_ROOT").is_some_and(|v| v == "1") {
            panic!("probes::{test} cannot run (HANDSHAKE_TRACE_REQUIRE_ROOT=1 requires it): {why}");
        }
        let _ = std::io::stderr().write_all(format!("SKIPPED probes::{test}: {why}\n").as_bytes());
    }

    #[test]
    fn a_port_two_targets_listen_on_is_shared() {
        assert_eq!(port_owner(None, 42), 42);
        assert_eq!(port_owner(Some(42), 42), 42);
        assert_eq!(port_owner(Some(7), 42), LISTEN_SHARED);
        assert_eq!(port_owner(Some(LISTEN_SHARED), 42), LISTEN_SHARED);
    }

    #[test]
    fn offsets_of_this_kernel_are_read_from_tracefs() {
        let Some(dir) = tracefs::find() else {
            return skip("offsets_of_this_kernel_are_read_from_tracefs", "tracefs not mounted or not readable");
        };
        if !tracefs::format_path(&dir, "syscalls", "sys_enter_accept4").exists() {
            return skip("offsets_of_this_kernel_are_read_from_tracefs", "no syscall tracepoints readable here");
        }
        let (o, _) = read_offsets(&dir).unwrap();
        // Syscall tracepoints: 8 bytes of common fields, the syscall number, then 8-byte args.
        assert!(o.syscall_arg0 >= 12, "{o:?}");
        assert!(o.exit_ret >= 12, "{o:?}");
        assert_ne!(o.gen_pid, 0, "{o:?}");
    }

    #[test]
    fn the_kernel_programs_load_attach_and_count() {
        if !has_kernel_programs() {
            return skip(
                "the_kernel_programs_load_attach_and_count",
                "no eBPF object embedded (plain cargo build; `cargo xtask test` runs it)",
            );
        }
        if !crate::capture::privileges::caps_allow_bpf(crate::capture::privileges::effective_caps()) {
            return skip("the_kernel_programs_load_attach_and_count", "not root");
        }
        let mut probes = Probes::load(&LoadOptions { ringbuf_bytes: 5000, ..Default::default() }).unwrap();
        assert_eq!(probes.counters().unwrap(), Counters::default());
        probes.add_target(std::process::id()).unwrap();
        // Our own accept on a listener with a pending connection is a traced event.
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let client = std::net::TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (_conn, peer) = listener.accept().unwrap();
        let mut ring = probes.take_events().unwrap();
        let item = ring.next().expect("an accept event");
        match crate::events::decode(&item).unwrap() {
            crate::events::Event::Accept(a) => {
                assert_eq!(a.peer, Some(peer));
                assert_eq!(a.peer.unwrap().port(), client.local_addr().unwrap().port());
                assert_eq!(a.pid, std::process::id());
            }
            other => panic!("expected the accept first, got {other:?}"),
        }
        drop(item);
        assert_eq!(probes.counters().unwrap().emitted, 1);
        probes.remove_target(std::process::id());
    }
}
