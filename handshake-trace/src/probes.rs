//! Loading the embedded kernel programs, attaching them, and the maps userspace
//! talks to. Everything aya-specific lives here.
use std::path::Path;

use anyhow::{anyhow, bail, Context, Result};
use aya::{
    maps::{HashMap, MapData, PerCpuArray, RingBuf},
    programs::TracePoint,
    Ebpf, EbpfLoader,
};
use handshake_trace_common::{counter, TracepointOffsets, DEFAULT_RINGBUF_BYTES};

use crate::tracefs;

/// The kernel programs, built by `cargo xtask build` (empty in a plain `cargo build`).
pub static EBPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/handshake-trace.bpf.o"));

/// True when this binary carries real kernel programs rather than the build stub.
pub fn has_kernel_programs() -> bool {
    !EBPF_OBJECT.is_empty()
}

/// Every tracepoint the tool attaches to, as (category, name); each program is named after it.
pub const ATTACH_POINTS: &[(&str, &str)] = &[
    ("syscalls", "sys_enter_accept4"),
    ("syscalls", "sys_exit_accept4"),
    ("syscalls", "sys_enter_accept"),
    ("syscalls", "sys_exit_accept"),
];

/// Read the field offsets the programs need from the format files of this kernel.
pub fn read_offsets(tracefs: &Path) -> Result<TracepointOffsets> {
    let mut offsets = TracepointOffsets::default();
    let mut seen_enter = false;
    let mut exit_ret = None;
    for (category, name) in ATTACH_POINTS {
        let fields = tracefs::fields(tracefs, category, name)?;
        let ctx = || format!("tracepoint {category}:{name}");
        if name.starts_with("sys_enter_accept") {
            let fd = tracefs::offset_of(&fields, "fd", 8).with_context(ctx)?;
            let addr = tracefs::offset_of(&fields, "upeer_sockaddr", 8).with_context(ctx)?;
            if seen_enter && (fd, addr) != (offsets.accept_fd, offsets.accept_addr) {
                bail!("accept and accept4 lay out their arguments differently on this kernel");
            }
            (offsets.accept_fd, offsets.accept_addr, seen_enter) = (fd, addr, true);
        } else if name.starts_with("sys_exit_") {
            let ret = tracefs::offset_of(&fields, "ret", 8).with_context(ctx)?;
            if exit_ret.is_some_and(|r| r != ret) {
                bail!("syscall exit tracepoints place `ret` differently on this kernel");
            }
            exit_ret = Some(ret);
        }
    }
    offsets.exit_ret = exit_ret.ok_or_else(|| anyhow!("no exit tracepoint in the attach list"))?;
    Ok(offsets)
}

/// Loaded and attached programs plus the maps userspace uses. Dropping it detaches
/// everything (the links are file descriptors; the kernel also releases them if
/// the process is killed).
pub struct Probes {
    _ebpf: Ebpf,
    _logger: Option<aya_log::EbpfLogger<&'static dyn log::Log>>,
    targets: HashMap<MapData, u32, u32>,
    counters: PerCpuArray<MapData, u64>,
    events: Option<RingBuf<MapData>>,
}

/// Options for loading.
#[derive(Debug, Clone)]
pub struct LoadOptions {
    /// Ring buffer size in bytes (rounded up to a power of two of at least one page).
    pub ringbuf_bytes: u32,
}

impl Default for LoadOptions {
    fn default() -> Self {
        Self { ringbuf_bytes: DEFAULT_RINGBUF_BYTES }
    }
}

/// Loss and emission counters summed over CPUs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counters {
    pub emitted: u64,
    pub lost_ringbuf: u64,
    pub lost_mapfull: u64,
}

impl Counters {
    pub fn lost(&self) -> u64 {
        self.lost_ringbuf + self.lost_mapfull
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
        crate::privileges::require_bpf()?;
        raise_memlock_rlimit();
        let tracefs = tracefs::find_or_mount()?;
        let offsets = read_offsets(&tracefs)?;
        let ringbuf = opts.ringbuf_bytes.max(4096).next_power_of_two();
        let mut ebpf = EbpfLoader::new()
            .override_global("TP_OFFSETS", &offsets, true)
            .map_max_entries("EVENTS", ringbuf)
            .load(EBPF_OBJECT)
            .context("load the kernel programs")?;
        // The programs log only in rare failure paths; keep the logger alive or its map closes.
        let logger = aya_log::EbpfLogger::init(&mut ebpf).ok();
        for (category, name) in ATTACH_POINTS {
            let program: &mut TracePoint = ebpf
                .program_mut(name)
                .ok_or_else(|| anyhow!("program {name} missing from the embedded object"))?
                .try_into()?;
            program.load().with_context(|| format!("verify program {name}"))?;
            program
                .attach(category, name)
                .with_context(|| format!("attach to tracepoint {category}:{name}"))?;
        }
        let targets = HashMap::try_from(take_map(&mut ebpf, "TARGETS")?)?;
        let counters = PerCpuArray::try_from(take_map(&mut ebpf, "COUNTERS")?)?;
        let events = Some(RingBuf::try_from(take_map(&mut ebpf, "EVENTS")?)?);
        Ok(Self { _ebpf: ebpf, _logger: logger, targets, counters, events })
    }

    /// Start tracing a process.
    pub fn add_target(&mut self, pid: u32) -> Result<()> {
        self.targets
            .insert(pid, 1, 0)
            .with_context(|| format!("add pid {pid} to the target map (full?)"))
    }

    /// Stop tracing a process (it exited).
    pub fn remove_target(&mut self, pid: u32) {
        let _ = self.targets.remove(&pid);
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
        })
    }

    /// Forward log lines the programs wrote (rare failure paths).
    pub fn flush_logs(&mut self) {
        if let Some(l) = self._logger.as_mut() {
            l.flush();
        }
    }
}

fn take_map(ebpf: &mut Ebpf, name: &str) -> Result<aya::maps::Map> {
    ebpf.take_map(name).ok_or_else(|| anyhow!("map {name} missing from the embedded object"))
}

#[cfg(test)]
mod tests {
    use std::io::Write;

    use super::*;

    // libtest captures print macros, not direct writes: the skip stays visible.
    fn skip(test: &str, why: &str) {
        let _ = std::io::stderr().write_all(format!("SKIPPED probes::{test}: {why}\n").as_bytes());
    }

    #[test]
    fn offsets_of_this_kernel_are_read_from_tracefs() {
        let Some(dir) = tracefs::find() else {
            return skip("offsets_of_this_kernel_are_read_from_tracefs", "tracefs not mounted or not readable");
        };
        if !tracefs::format_path(&dir, "syscalls", "sys_enter_accept4").exists() {
            return skip("offsets_of_this_kernel_are_read_from_tracefs", "no syscall tracepoints readable here");
        }
        let o = read_offsets(&dir).unwrap();
        // Syscall tracepoints: 8 bytes of common fields, the syscall number, then 8-byte args.
        assert!(o.accept_fd >= 8 && o.accept_addr == o.accept_fd + 8, "{o:?}");
        assert!(o.exit_ret >= 8, "{o:?}");
    }

    #[test]
    fn the_kernel_programs_load_attach_and_count() {
        if !has_kernel_programs() {
            return skip(
                "the_kernel_programs_load_attach_and_count",
                "no eBPF object embedded (plain cargo build; `cargo xtask test` runs it)",
            );
        }
        if !crate::privileges::caps_allow_bpf(crate::privileges::effective_caps()) {
            return skip("the_kernel_programs_load_attach_and_count", "not root");
        }
        let mut probes = Probes::load(&LoadOptions { ringbuf_bytes: 5000 }).unwrap();
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
        }
        drop(item);
        assert_eq!(probes.counters().unwrap().emitted, 1);
        probes.remove_target(std::process::id());
    }
}
