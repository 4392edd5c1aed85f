//! `cargo xtask bench`: what tracing costs the server, its clients and everyone else,
//! next to what the tools people use instead (tcpdump, strace) cost in the same run.
//! A benchmark, not a test: it alternates untraced and observed rounds of Debian's
//! `sysbench` (libmariadb clients, the Lua scripts in tests/sysbench) against a real
//! MariaDB, measures throughput and CPU per operation (server + clients + tracer or
//! peer), reports the per-round comparisons as medians with their spread, then writes
//! docs/performance.md and a JSON file (`BENCH_QUICK=1`: a short smoke run that writes
//! them under target/bench instead).
use std::{
    io::Read,
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use anyhow::{bail, Context, Result};
use handshake_trace_tests::{program_ids_of, Cgroup, MariaDb, MariaDbOptions, LAB_PASSWORD, LAB_USER};
use serde_json::{json, Value};

/// The targets, with the default attachment (`watch -j`): CPU per operation traced over
/// untraced for handshakes and for established `SELECT 1`, ns added per syscall of an
/// unrelated process, and the tracer's peak RSS.
const TARGET_HANDSHAKE_CPU: f64 = 0.03;
const TARGET_ESTABLISHED_CPU: f64 = 0.01;
const TARGET_UNRELATED_NS: f64 = 100.0;
const TARGET_RSS_MB: f64 = 50.0;
/// Issue 14's targets for the socket tier (`watch -j --capture socket`): CPU per
/// operation over untraced, program time per operation as a share of an untraced
/// operation's CPU, and ns added per socket call of an unrelated process (per
/// non-socket syscall: nothing beyond the untraced rounds' own spread).
const TARGET_SOCKET_QUERY_CPU: f64 = 0.005;
const TARGET_SOCKET_HANDSHAKE_CPU: f64 = 0.01;
const TARGET_SOCKET_SOCKET_CALL_NS: f64 = 20.0;

struct Config {
    bin: PathBuf,
    rounds: usize,
    round: Duration,
    /// Write and read pairs per round of section 3.
    unrelated_iterations: u64,
    out_dir: PathBuf,
}

/// What watches the server in a round.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Observer {
    None,
    /// `handshake-trace SUBCOMMAND -p SERVERPID ARGS...` (the subcommand first in the
    /// list), output to a file.
    Tracer(&'static [&'static str]),
    /// `tcpdump -w FILE` on the server's port.
    Tcpdump,
    /// `strace -f -p SERVERPID -o FILE`.
    Strace,
}

/// A way to run a round.
#[derive(Clone, Copy, Debug)]
struct Mode {
    /// Its key in performance.json.
    key: &'static str,
    name: &'static str,
    observer: Observer,
    /// A kernel attachment of its own: also measured on an unrelated process (section 3)
    /// and with per-program statistics (section 4).
    attachment: bool,
}

/// Every mode of a run, in this order; the first is the untraced baseline, the second
/// the syscall tier's figures the old targets are about, the socket tier's (key
/// "socket") those issue 14 set. Adding a mode is one line here.
const MODES: &[Mode] = &[
    Mode { key: "untraced", name: "untraced", observer: Observer::None, attachment: false },
    Mode {
        key: "json",
        name: "watch -j --capture syscalls",
        observer: Observer::Tracer(&["watch", "-j", "--capture", "syscalls"]),
        attachment: true,
    },
    Mode {
        key: "socket",
        name: "watch -j --capture socket",
        observer: Observer::Tracer(&["watch", "-j", "--capture", "socket"]),
        attachment: true,
    },
    Mode {
        key: "agent",
        name: "agent --capture socket",
        observer: Observer::Tracer(&["agent", "--capture", "socket", "--listen", "127.0.0.1:0"]),
        attachment: false,
    },
    Mode { key: "text", name: "watch --capture syscalls", observer: Observer::Tracer(&["watch", "--capture", "syscalls"]), attachment: false },
    Mode {
        key: "json_tracepoints",
        name: "watch -j --capture syscalls --attach tracepoints",
        observer: Observer::Tracer(&["watch", "-j", "--capture", "syscalls", "--attach", "tracepoints"]),
        attachment: true,
    },
    Mode { key: "tcpdump", name: "tcpdump -w", observer: Observer::Tcpdump, attachment: false },
    Mode { key: "strace", name: "strace -f -p", observer: Observer::Strace, attachment: false },
];

/// The untraced mode and those with an attachment of their own (sections 3 and 4).
fn attachment_modes() -> impl Iterator<Item = &'static Mode> {
    MODES.iter().filter(|m| m.observer == Observer::None || m.attachment)
}

/// A load: sysbench running one of tests/sysbench's scripts.
#[derive(Clone, Copy, Debug)]
struct Workload {
    key: &'static str,
    script: &'static str,
    threads: usize,
    /// What one sysbench event does.
    event: &'static str,
    /// One event, in the report's words.
    op: &'static str,
}

const WORKLOADS: &[Workload] = &[
    Workload {
        key: "connect", script: "connect.lua", threads: 4, event: "connect → login → `SELECT 1` → disconnect", op: "handshake"
    },
    // One connection per core of the 2-core machines this was tuned on (more threads
    // than cores only measures the scheduler).
    Workload {
        key: "select1",
        script: "select1.lua",
        threads: 2,
        event: "`SELECT 1` on the thread's connection, opened at the round's start",
        op: "query",
    },
];

fn workload(key: &str) -> Result<&'static Workload> {
    WORKLOADS.iter().find(|w| w.key == key).with_context(|| format!("no workload {key:?}"))
}

/// What an observer cost and counted, read when it stopped.
#[derive(Debug, Default, Clone)]
struct Cost {
    /// Per program: (name, run time ns, runs) while this tracer ran (only filled while
    /// kernel.bpf_stats_enabled is on).
    programs: Vec<(String, u64, u64)>,
    /// Tracepoint programs of other tracers loaded when this one stopped (a shared machine).
    others: usize,
    peak_rss_kb: u64,
    /// The tracer's events emitted and lost; tcpdump's packets captured and dropped.
    emitted: u64,
    lost: u64,
    handshakes: u64,
}

/// A running observer (tracer or peer); killed and its output file removed on drop.
struct Running {
    child: Child,
    observer: Observer,
    out: PathBuf,
}

impl Running {
    /// Start `mode`'s observer on the server (None when the mode is untraced) and wait
    /// until it watches.
    fn start(mode: &Mode, bin: &Path, server: &MariaDb, out: PathBuf) -> Result<Option<Running>> {
        let pid = server.pid().to_string();
        let (mut cmd, ready) = match mode.observer {
            Observer::None => return Ok(None),
            Observer::Tracer(args) => {
                let mut cmd = Command::new(bin);
                cmd.arg(args[0]).args(["-p", &pid]).args(&args[1..]).stdout(std::fs::File::create(&out)?);
                (cmd, "Ctrl-C")
            }
            Observer::Tcpdump => {
                let mut cmd = Command::new("tcpdump");
                // -Z root: Debian's tcpdump drops to its own user, which may not write here.
                cmd.args(["-i", "lo", "-n", "-Z", "root", "-w"])
                    .arg(&out)
                    .arg(format!("tcp port {}", server.addr().port()))
                    .stdout(Stdio::null());
                (cmd, "listening on")
            }
            Observer::Strace => {
                let mut cmd = Command::new("strace");
                cmd.args(["-f", "-p", &pid, "-o"]).arg(&out).stdout(Stdio::null());
                (cmd, "attached")
            }
        };
        let child = cmd.stderr(Stdio::piped()).stdin(Stdio::null()).spawn().with_context(|| format!("start {}", mode.name))?;
        let mut running = Running { child, observer: mode.observer, out };
        // Wait for its word on stderr that it watches.
        let mut err = running.child.stderr.take().unwrap();
        let mut seen = Vec::new();
        let mut byte = [0u8; 1];
        while !String::from_utf8_lossy(&seen).contains(ready) {
            if err.read(&mut byte)? == 0 {
                bail!("{} exited: {}", mode.name, String::from_utf8_lossy(&seen));
            }
            seen.push(byte[0]);
        }
        running.child.stderr = Some(err);
        Ok(Some(running))
    }

    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Stop it (Ctrl-C) and read what it cost and counted; its output file goes.
    fn stop(mut self) -> Result<Cost> {
        let pid = self.pid();
        // Read the programs' counters while they are still loaded (they go with the tracer).
        let (programs, others) = if matches!(self.observer, Observer::Tracer(_)) { bpf_prog_stats(pid) } else { (Vec::new(), 0) };
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
        let peak_rss_kb =
            status.lines().find(|l| l.starts_with("VmHWM:")).and_then(|l| l.split_whitespace().nth(1)?.parse().ok()).unwrap_or(0);
        // SAFETY: signalling our own child.
        unsafe { libc::kill(pid as i32, libc::SIGINT) };
        let mut err = String::new();
        self.child.stderr.take().unwrap().read_to_string(&mut err)?;
        self.child.wait()?;
        // The number just before or after `key` on stderr.
        let after = |key: &str| -> u64 {
            err.split(key).nth(1).and_then(|r| r.split_whitespace().next()).and_then(|n| n.trim_end_matches(',').parse().ok()).unwrap_or(0)
        };
        let before = |key: &str| -> u64 {
            err.split(key).next().filter(|b| b.len() < err.len()).and_then(|b| b.split_whitespace().last()?.parse().ok()).unwrap_or(0)
        };
        let (emitted, lost, handshakes) = match self.observer {
            // "Events: N emitted by the kernel, M lost (...)" and "Summary: H handshakes"
            Observer::Tracer(_) => (after("Events: "), after("emitted by the kernel, "), after("Summary: ")),
            // "N packets captured", "N packets dropped by kernel"
            Observer::Tcpdump => (before(" packets captured"), before(" packets dropped by kernel"), 0),
            Observer::Strace | Observer::None => (0, 0, 0),
        };
        Ok(Cost { programs, others, peak_rss_kb, emitted, lost, handshakes })
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
        // A round of -j writes ~150 MB, strace more: gone, and flushed now rather than
        // during the next rounds.
        let _ = std::fs::remove_file(&self.out);
        sync();
    }
}

/// utime + stime of process `pid`, all its threads (live and exited), in seconds.
fn proc_cpu_s(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
    let ticks: f64 = fields[11..13].iter().filter_map(|v| v.parse::<f64>().ok()).sum();
    // SAFETY: no preconditions.
    ticks / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// utime + stime of this process's exited and waited-for children, in seconds.
fn children_cpu_s() -> f64 {
    // SAFETY: getrusage fills the struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut u) };
    let s = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    s(u.ru_utime) + s(u.ru_stime)
}

/// sysbench running `w` against the server for `d`: (events, seconds).
fn sysbench(w: &Workload, addr: SocketAddr, d: Duration) -> Result<(u64, f64)> {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("sysbench").join(w.script);
    let out = Command::new("sysbench")
        .arg(&script)
        .args(["--db-driver=mysql", "--mysql-host=127.0.0.1", "--mysql-db=mysql", "--events=0", "--report-interval=0"])
        .arg(format!("--mysql-port={}", addr.port()))
        .arg(format!("--mysql-user={LAB_USER}"))
        .arg(format!("--mysql-password={LAB_PASSWORD}"))
        .arg(format!("--threads={}", w.threads))
        .arg(format!("--time={}", d.as_secs().max(1)))
        .arg("run")
        .stdin(Stdio::null())
        .output()
        .context("run sysbench (cargo xtask setup installs it)")?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "    total time:                          5.0012s" and "    total number of events:   1234"
    let field = |key: &str| text.lines().find_map(|l| l.trim().strip_prefix(key)).map(|v| v.trim().trim_end_matches('s').to_string());
    let events = field("total number of events:").and_then(|v| v.parse().ok());
    let secs = field("total time:").and_then(|v| v.parse().ok());
    match (out.status.success(), events, secs) {
        (true, Some(events), Some(secs)) => Ok((events, secs)),
        _ => bail!("sysbench {} failed ({}):\n{text}\n{}", w.script, out.status, String::from_utf8_lossy(&out.stderr)),
    }
}

/// One round of a workload: its throughput and what each operation cost.
#[derive(Debug, Clone, Copy)]
struct Round {
    per_s: f64,
    ops: u64,
    /// Server + sysbench + observer, per operation.
    cpu_us_per_op: f64,
    /// The observer's own CPU.
    observer_cpu_s: f64,
    secs: f64,
}

/// Run `w` for `d` while `observer` (if any) watches the server: CPU from /proc for the
/// live server and observer, from getrusage(RUSAGE_CHILDREN) for sysbench once it exited,
/// all over the same window.
fn measure(w: &Workload, server: &MariaDb, observer: Option<&Running>, d: Duration) -> Result<Round> {
    let observer_cpu = || observer.map_or(0.0, |o| proc_cpu_s(o.pid()));
    let (server0, observer0, clients0) = (proc_cpu_s(server.pid()), observer_cpu(), children_cpu_s());
    let (ops, secs) = sysbench(w, server.addr(), d)?;
    let (server1, observer1, clients1) = (proc_cpu_s(server.pid()), observer_cpu(), children_cpu_s());
    let cpu_s = (server1 - server0) + (observer1 - observer0) + (clients1 - clients0);
    Ok(Round { per_s: ops as f64 / secs, ops, cpu_us_per_op: 1e6 * cpu_s / ops.max(1) as f64, observer_cpu_s: observer1 - observer0, secs })
}

/// This thread's CPU time in ns: a loop's cost without the time other processes of a
/// loaded machine take the core away (wall time counted those too).
fn thread_cpu_ns() -> f64 {
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime fills the timespec it is given.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut t) };
    t.tv_sec as f64 * 1e9 + t.tv_nsec as f64
}

/// Chunks a loop of section 3 is cut into: the cheapest chunk's CPU per call is taken,
/// as the figure least disturbed by what else runs on the machine (cache and core
/// sharing raise a chunk's CPU time; nothing lowers it below the cost of the calls).
const CHUNKS: u64 = 20;

/// The least CPU ns per call over `CHUNKS` chunks of `iterations` runs of `f`, which
/// makes `calls` calls each run.
fn cheapest_chunk(iterations: u64, calls: u64, mut f: impl FnMut()) -> f64 {
    let per_chunk = (iterations / CHUNKS).max(1);
    (0..CHUNKS)
        .map(|_| {
            let started = thread_cpu_ns();
            for _ in 0..per_chunk {
                f();
            }
            (thread_cpu_ns() - started) / (per_chunk * calls) as f64
        })
        .fold(f64::INFINITY, f64::min)
}

/// MariaDB in a cgroup v2 directory of its own, as a service manager runs it (the
/// socket tier's packet programs attach there); the clients and the unrelated process
/// (this one) stay outside. The cgroup goes with the server.
fn server(max_connections: Option<u32>) -> Result<MariaDb> {
    MariaDb::start_in(&MariaDbOptions { max_connections, ..Default::default() }, Cgroup::create("bench-mariadb")?)
}

/// CPU ns per `getppid()` in a process the tracer does not target: a syscall that
/// touches no socket (what every process pays for an attachment on the syscall path).
fn unrelated_syscall_ns(iterations: u64) -> f64 {
    // SAFETY: no preconditions.
    cheapest_chunk(iterations, 1, || unsafe {
        libc::getppid();
    })
}

/// ns per socket call (a `send` of 8 bytes or the `recv` that takes them) on a loopback
/// TCP connection of a process the tracer does not target: each send is also one packet
/// through the cgroup_skb programs, egress and ingress.
fn unrelated_socket_ns(iterations: u64) -> Result<f64> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    let a = std::net::TcpStream::connect(listener.local_addr()?)?;
    let (b, _) = listener.accept()?;
    a.set_nodelay(true)?;
    let (fa, fb) = (std::os::fd::AsRawFd::as_raw_fd(&a), std::os::fd::AsRawFd::as_raw_fd(&b));
    let buf = [0u8; 8];
    let mut rbuf = [0u8; 8];
    // SAFETY: valid fds and buffers; loopback delivers the 8 bytes before send returns.
    Ok(cheapest_chunk(iterations, 2, || unsafe {
        libc::send(fa, buf.as_ptr().cast(), 8, 0);
        libc::recv(fb, rbuf.as_mut_ptr().cast(), 8, 0);
    }))
}

fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        return f64::NAN;
    }
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

fn spread(v: &[f64]) -> (f64, f64) {
    let min = v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    (min, max)
}

/// {median, min, max} of per-round figures.
fn stat(v: &[f64]) -> Value {
    let (min, max) = spread(v);
    json!({ "median": median(&mut v.to_vec()), "min": min, "max": max })
}

/// Per round, observed relative to untraced: `t / u` (throughput) or `t / u - 1` (CPU).
fn per_round(untraced: &[f64], observed: &[f64], f: fn(f64, f64) -> f64) -> Vec<f64> {
    untraced.iter().zip(observed).map(|(u, t)| f(*u, *t)).collect()
}

/// Per-program run time from the kernel's BPF statistics (ns per run) of the programs
/// tracer `pid` loaded (any program type), and how many tracing programs other tracers
/// have loaded (another tracer on the machine would otherwise be counted as ours).
fn bpf_prog_stats(pid: u32) -> (Vec<(String, u64, u64)>, usize) {
    let ours = program_ids_of(pid);
    let out = Command::new("bpftool").args(["prog", "show", "-j"]).output();
    let Ok(out) = out else { return (Vec::new(), 0) };
    let Ok(Value::Array(progs)) = serde_json::from_slice::<Value>(&out.stdout) else {
        return (Vec::new(), 0);
    };
    let (mine, others): (Vec<&Value>, Vec<&Value>) = progs.iter().partition(|p| p["id"].as_u64().is_some_and(|id| ours.contains(&id)));
    let mine = mine
        .iter()
        .filter_map(|p| Some((p["name"].as_str()?.to_string(), p["run_time_ns"].as_u64().unwrap_or(0), p["run_cnt"].as_u64().unwrap_or(0))))
        .collect();
    let others = others.iter().filter(|p| ["tracepoint", "raw_tracepoint", "tracing"].iter().any(|t| p["type"] == *t)).count();
    (mine, others)
}

/// The time now, UTC, to the minute (`date -u`).
fn utc_now() -> String {
    Command::new("date").args(["-u", "+%Y-%m-%d %H:%M UTC"]).output().map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string()).unwrap_or_default()
}

/// /proc/loadavg's 1, 5 and 15 minute averages.
fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" ")
}

/// Write dirty pages back now, so that writeback does not land in a later round.
fn sync() {
    let _ = Command::new("sync").status();
}

fn sysctl(key: &str, value: &str) {
    let _ = Command::new("sysctl").arg("-q").arg(format!("{key}={value}")).status();
}

fn version_of(cmd: &str, arg: &str) -> String {
    Command::new(cmd)
        .arg(arg)
        .output()
        .map(|o| {
            let text = if o.stdout.is_empty() { &o.stderr } else { &o.stdout };
            String::from_utf8_lossy(text).lines().next().unwrap_or("").trim().to_string()
        })
        .unwrap_or_default()
}

fn machine_facts() -> Value {
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .unwrap_or("?")
        .trim()
        .to_string();
    json!({
        "cores": cores,
        "kernel": kernel,
        "cpu": cpu,
        "mariadb": version_of("/usr/sbin/mariadbd", "--version"),
        "sysbench": version_of("sysbench", "--version"),
        "tcpdump": version_of("tcpdump", "--version"),
        "strace": version_of("strace", "-V"),
    })
}

fn main() -> Result<()> {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("the benchmark loads BPF programs: run it as root (cargo xtask bench)");
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    // A short smoke run: its results go under target/bench, docs/ keeps the last full run's.
    let quick = std::env::var_os("BENCH_QUICK").is_some_and(|v| v != "0");
    let docs = if quick { root.join("target/bench") } else { root.join("docs") };
    // Re-render performance.md from the last results (no measuring).
    if std::env::var_os("BENCH_REPORT_ONLY").is_some() {
        let results: Value = serde_json::from_str(&std::fs::read_to_string(docs.join("performance.json"))?)?;
        write_performance_md(&docs, &report(&results))?;
        return Ok(());
    }
    let env_num = |key: &str, default: u64| std::env::var(key).ok().and_then(|v| v.parse().ok()).unwrap_or(default);
    let cfg = Config {
        bin: std::env::var_os("HANDSHAKE_TRACE_BIN").map(PathBuf::from).unwrap_or_else(|| root.join("target/release/handshake-trace")),
        rounds: env_num("BENCH_ROUNDS", if quick { 2 } else { 5 }) as usize,
        round: Duration::from_secs(env_num("BENCH_ROUND_SECS", if quick { 2 } else { 5 })),
        unrelated_iterations: if quick { 200_000 } else { 2_000_000 },
        out_dir: root.join("target/bench"),
    };
    std::fs::create_dir_all(&cfg.out_dir)?;
    // Compare tracer builds: `BENCH_AB="name=/path/to/handshake-trace,..."` runs interleaved
    // rounds (untraced, then `watch -j` of each build) and prints the comparisons only.
    if let Ok(spec) = std::env::var("BENCH_AB") {
        return compare_builds(&spec, &cfg);
    }
    // Re-measure section 3 only, into the last results (its method changed after a run).
    if std::env::var_os("BENCH_UNRELATED_ONLY").is_some() {
        let path = docs.join("performance.json");
        let mut results: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
        let db = server(None)?;
        let (un, seen) = unrelated(&cfg, &db)?;
        results["unrelated_syscalls"] = un;
        let max = results["conditions"]["other_tracepoint_programs_max"].as_u64().unwrap_or(0).max(seen as u64);
        results["conditions"]["other_tracepoint_programs_max"] = json!(max);
        results["conditions"]["load_average_unrelated"] = json!(load_average());
        results["conditions"]["unrelated_utc"] = json!(utc_now());
        std::fs::write(&path, serde_json::to_string_pretty(&results)? + "\n")?;
        write_performance_md(&docs, &report(&results))?;
        return Ok(());
    }
    let load_before = load_average();
    let started_utc = utc_now();
    eprintln!("bench: starting MariaDB");
    let db = server(Some(1000))?;
    // Per-program statistics cost two clock reads per program run: off while measuring
    // (as in production), on only for the statistics rounds of section 4.
    sysctl("kernel.bpf_stats_enabled", "0");
    // Warm up the server (thread cache, buffers) before anything is measured.
    for w in WORKLOADS {
        sysbench(w, db.addr(), Duration::from_secs(2))?;
    }
    // The most tracing programs of other tracers seen loaded when one of ours stopped.
    let mut others = 0;

    // 1 and 2. Each workload in alternated rounds of every mode, the modes' order
    // reversed every other round so that drift within a round does not always favour
    // the same mode.
    let mut workloads = serde_json::Map::new();
    let mut tracer = Value::Null;
    for (wi, w) in WORKLOADS.iter().enumerate() {
        let mut rounds: Vec<Vec<Round>> = vec![Vec::new(); MODES.len()];
        let mut costs: Vec<Vec<Cost>> = vec![Vec::new(); MODES.len()];
        for r in 0..cfg.rounds {
            let order: Vec<usize> = if r % 2 == 0 { (0..MODES.len()).collect() } else { (0..MODES.len()).rev().collect() };
            for mi in order {
                let m = &MODES[mi];
                let observer = Running::start(m, &cfg.bin, &db, cfg.out_dir.join(format!("{}-{}.out", w.key, m.key)))?;
                let round = measure(w, &db, observer.as_ref(), cfg.round)?;
                if let Some(o) = observer {
                    let cost = o.stop()?;
                    others = others.max(cost.others);
                    costs[mi].push(cost);
                }
                eprintln!(
                    "bench: {} round {r} {:<30} {:>8.0}/s {:>7.1} µs CPU per {}",
                    w.key, m.name, round.per_s, round.cpu_us_per_op, w.op
                );
                rounds[mi].push(round);
            }
        }
        if wi == 0 {
            tracer = tracer_summary(&rounds[1], &costs, &costs[1]);
        }
        workloads.insert(w.key.into(), workload_results(w, &cfg, &rounds, &costs));
    }

    // 3. Everyone else: getppid() and loopback socket calls in this (untargeted) process.
    let (unrelated_results, seen) = unrelated(&cfg, &db)?;
    others = others.max(seen);

    // 4. Inside the kernel: one round per attachment and workload with statistics on.
    sysctl("kernel.bpf_stats_enabled", "1");
    let mut stats_rounds = serde_json::Map::new();
    for m in attachment_modes().skip(1) {
        let mut per_workload = serde_json::Map::new();
        for w in WORKLOADS {
            let o = Running::start(m, &cfg.bin, &db, cfg.out_dir.join("stats.out"))?.context("an attachment mode runs a tracer")?;
            let round = measure(w, &db, Some(&o), cfg.round)?;
            let cost = o.stop()?;
            others = others.max(cost.others);
            eprintln!("bench: statistics round {} {:<30} {:>8.0}/s", w.key, m.name, round.per_s);
            per_workload.insert(w.key.into(), statistics(&round, &cost));
        }
        stats_rounds.insert(m.key.into(), Value::Object(per_workload));
    }
    let empty = empty_programs(&cfg, &db)?;
    sysctl("kernel.bpf_stats_enabled", "0");

    let results = json!({
        "machine": machine_facts(),
        "conditions": {
            "started_utc": started_utc,
            "load_average_before": load_before,
            "load_average_after": load_average(),
            "other_tracepoint_programs_max": others,
        },
        "quick": quick,
        "default_attach": handshake_trace::capture::probes::AttachMode::default().name(),
        "rounds": cfg.rounds,
        "round_secs": cfg.round.as_secs_f64(),
        "modes": MODES.iter().map(|m| json!({ "key": m.key, "name": m.name })).collect::<Vec<_>>(),
        "workloads": workloads,
        "unrelated_syscalls": unrelated_results,
        "kernel": { "statistics_rounds": stats_rounds, "empty_programs": empty },
        "tracer": tracer,
    });
    let json_path = docs.join("performance.json");
    std::fs::write(&json_path, serde_json::to_string_pretty(&results)? + "\n")?;
    write_performance_md(&docs, &report(&results))?;
    eprintln!("bench: wrote {} and performance.md beside it", json_path.display());
    drop(db);
    Ok(())
}

/// Section 3: an unrelated process's `getppid()` and loopback socket calls, CPU ns per
/// call, in alternated rounds of the untraced and attachment modes; and the most
/// tracing programs of other tracers seen.
fn unrelated(cfg: &Config, db: &MariaDb) -> Result<(Value, usize)> {
    let mut others = 0;
    let mut unrelated: Vec<(&Mode, Vec<f64>, Vec<f64>)> = attachment_modes().map(|m| (m, Vec::new(), Vec::new())).collect();
    for r in 0..cfg.rounds {
        // The modes' order reversed every other round, as in sections 1 and 2.
        let order: Vec<usize> = if r % 2 == 0 { (0..unrelated.len()).collect() } else { (0..unrelated.len()).rev().collect() };
        for i in order {
            let (m, ns, sock_ns) = &mut unrelated[i];
            let observer = Running::start(m, &cfg.bin, db, cfg.out_dir.join("unrelated.out"))?;
            let x = unrelated_syscall_ns(cfg.unrelated_iterations);
            let y = unrelated_socket_ns(cfg.unrelated_iterations / 4)?;
            if let Some(o) = observer {
                others = others.max(o.stop()?.others);
            }
            eprintln!("bench: unrelated round {r} {:<30} {x:>8.1} ns/getppid {y:>8.1} ns/socket call", m.name);
            ns.push(x);
            sock_ns.push(y);
        }
    }
    // Per mode: each round's figures (`added`: minus the same round's untraced one).
    let by_mode = |pick: fn(&(&Mode, Vec<f64>, Vec<f64>)) -> Vec<f64>, added: bool| -> Value {
        let base = pick(&unrelated[0]);
        Value::Object(
            unrelated
                .iter()
                .skip(added as usize)
                .map(|row| (row.0.key.to_string(), if added { stat(&per_round(&base, &pick(row), |u, t| t - u)) } else { json!(pick(row)) }))
                .collect(),
        )
    };
    Ok((
        json!({
            "iterations": cfg.unrelated_iterations,
            "clock": "thread CPU time",
            "ns": by_mode(|r| r.1.clone(), false),
            "added_ns": by_mode(|r| r.1.clone(), true),
            "socket_ns": by_mode(|r| r.2.clone(), false),
            "socket_added_ns": by_mode(|r| r.2.clone(), true),
        }),
        others,
    ))
}

/// One workload's rounds and comparisons, by mode, for performance.json.
fn workload_results(w: &Workload, cfg: &Config, rounds: &[Vec<Round>], costs: &[Vec<Cost>]) -> Value {
    let by_mode = |skip: usize, f: &dyn Fn(usize) -> Value| -> Value {
        Value::Object(MODES.iter().enumerate().skip(skip).map(|(i, m)| (m.key.to_string(), f(i))).collect())
    };
    let figures = |i: usize, f: fn(&Round) -> f64| -> Vec<f64> { rounds[i].iter().map(f).collect() };
    let sum = |i: usize, f: fn(&Cost) -> u64| -> u64 { costs[i].iter().map(f).sum() };
    json!({
        "script": format!("tests/sysbench/{}", w.script),
        "threads": w.threads,
        "rounds": cfg.rounds,
        "round_secs": cfg.round.as_secs_f64(),
        "per_s": by_mode(0, &|i| json!(figures(i, |r| r.per_s))),
        "cpu_us_per_op": by_mode(0, &|i| json!(figures(i, |r| r.cpu_us_per_op))),
        "throughput_ratio": by_mode(1, &|i| stat(&per_round(&figures(0, |r| r.per_s), &figures(i, |r| r.per_s), |u, t| t / u))),
        "cpu_per_op_delta": by_mode(1, &|i| stat(&per_round(&figures(0, |r| r.cpu_us_per_op), &figures(i, |r| r.cpu_us_per_op), |u, t| t / u - 1.0))),
        "observer_cpu_us_per_op": by_mode(1, &|i| {
            let ops: u64 = rounds[i].iter().map(|r| r.ops).sum();
            json!(1e6 * rounds[i].iter().map(|r| r.observer_cpu_s).sum::<f64>() / ops.max(1) as f64)
        }),
        "emitted": by_mode(1, &|i| json!(sum(i, |c| c.emitted))),
        "lost": by_mode(1, &|i| json!(sum(i, |c| c.lost))),
        "handshakes_seen": by_mode(1, &|i| json!(sum(i, |c| c.handshakes))),
    })
}

/// The default tracer (`watch -j`) over the handshake rounds; peak RSS over every
/// tracer mode.
fn tracer_summary(rounds: &[Round], costs: &[Vec<Cost>], default: &[Cost]) -> Value {
    let cpu_s: f64 = rounds.iter().map(|r| r.observer_cpu_s).sum();
    let secs: f64 = rounds.iter().map(|r| r.secs).sum();
    let emitted: u64 = default.iter().map(|c| c.emitted).sum();
    let handshakes: u64 = default.iter().map(|c| c.handshakes).sum();
    let tracers = MODES.iter().zip(costs).filter(|(m, _)| matches!(m.observer, Observer::Tracer(_)));
    json!({
        "cpu_seconds": cpu_s,
        "cpu_percent_of_one_core": 100.0 * cpu_s / secs,
        "peak_rss_kb": tracers.flat_map(|(_, c)| c).map(|c| c.peak_rss_kb).max().unwrap_or(0),
        "events_emitted": emitted,
        "events_lost": default.iter().map(|c| c.lost).sum::<u64>(),
        "handshakes": handshakes,
        "events_per_handshake": emitted as f64 / handshakes.max(1) as f64,
    })
}

/// A statistics round: program time and runs per operation, and each program's runs.
fn statistics(round: &Round, cost: &Cost) -> Value {
    let mut progs: Vec<Value> = cost
        .programs
        .iter()
        .filter(|(_, _, runs)| *runs > 0)
        .map(|(name, t, runs)| json!({ "program": name, "runs": runs, "ns_per_run": *t as f64 / *runs as f64 }))
        .collect();
    progs.sort_by(|a, b| f(&b["runs"]).total_cmp(&f(&a["runs"])));
    let per_op = |x: u64| x as f64 / round.ops.max(1) as f64;
    json!({
        "per_s": round.per_s,
        "ops": round.ops,
        "cpu_us_per_op": round.cpu_us_per_op,
        "program_us_per_op": per_op(cost.programs.iter().map(|p| p.1).sum::<u64>()) / 1e3,
        "program_runs_per_op": per_op(cost.programs.iter().map(|p| p.2).sum::<u64>()),
        "programs": progs,
    })
}

/// Section 4's floor: programs that do nothing (`handshake-trace-ebpf/src/calibrate.rs`)
/// on the socket tier's hooks, attached by this process alone (`cgroup_skb` where the
/// tool attaches its own), one round per workload with statistics on. What any program
/// on these hooks costs per run, however little it does.
fn empty_programs(cfg: &Config, db: &MariaDb) -> Result<Value> {
    use aya::programs::{BtfTracePoint, CgroupAttachMode, CgroupSkb, CgroupSkbAttachType, TracePoint};
    if !handshake_trace::capture::probes::has_kernel_programs() {
        bail!("the bench was built without the eBPF object: run it with `cargo xtask bench`");
    }
    let mut ebpf = aya::Ebpf::load(handshake_trace::capture::probes::EBPF_OBJECT).context("load the embedded object")?;
    let btf = aya::Btf::from_sys_fs().context("read /sys/kernel/btf/vmlinux")?;
    for (name, hook) in [("noop_sock_recv", "sock_recv_length"), ("noop_sock_send", "sock_send_length"), ("noop_btf_state", "inet_sock_set_state")] {
        let p: &mut BtfTracePoint = ebpf.program_mut(name).context(name)?.try_into()?;
        p.load(hook, &btf).with_context(|| format!("load {name}"))?;
        p.attach().with_context(|| format!("attach {name} to tp_btf/{hook}"))?;
    }
    let p: &mut TracePoint = ebpf.program_mut("noop_set_state").context("noop_set_state")?.try_into()?;
    p.load()?;
    p.attach("sock", "inet_sock_set_state")?;
    let cgroup_dir = empty_programs_cgroup(db)?;
    let cgroup = std::fs::File::open(&cgroup_dir).with_context(|| format!("open {}", cgroup_dir.display()))?;
    for (name, kind) in [("noop_skb_in", CgroupSkbAttachType::Ingress), ("noop_skb_out", CgroupSkbAttachType::Egress)] {
        let p: &mut CgroupSkb = ebpf.program_mut(name).context(name)?.try_into()?;
        p.load()?;
        p.attach(&cgroup, kind, CgroupAttachMode::Single).with_context(|| format!("attach {name} to {}", cgroup_dir.display()))?;
    }
    let mut per_workload = serde_json::Map::new();
    for w in WORKLOADS {
        // Statistics are cumulative: this round's are the difference.
        let before = bpf_prog_stats(std::process::id()).0;
        let round = measure(w, db, None, cfg.round)?;
        let after = bpf_prog_stats(std::process::id()).0;
        let programs = after
            .iter()
            .map(|(name, t, runs)| {
                let (t0, r0) = before.iter().find(|b| &b.0 == name).map_or((0, 0), |b| (b.1, b.2));
                (name.clone(), t - t0, runs - r0)
            })
            .collect();
        eprintln!("bench: empty programs round {} {:>8.0}/s", w.key, round.per_s);
        per_workload.insert(w.key.into(), statistics(&round, &Cost { programs, ..Cost::default() }));
    }
    Ok(json!({ "cgroup": cgroup_dir.display().to_string(), "workloads": per_workload }))
}

/// Where the empty `cgroup_skb` programs go: where the tool attaches its own, the
/// server's cgroup v2 directory (the root when the server runs there).
fn empty_programs_cgroup(db: &MariaDb) -> Result<PathBuf> {
    use handshake_trace::capture::cgroup;
    let root = cgroup::cgroup2_root()?;
    let path = cgroup::cgroup_of(db.pid()).context("the server's cgroup v2 path")?;
    Ok(root.join(path.trim_start_matches('/')))
}

/// Several tracer builds against untraced rounds, interleaved, printed to stderr (docs
/// are not touched): for judging a change before it goes into the bench.
/// `BENCH_AB_WORKLOAD=select1` (or `established`) runs `SELECT 1` rounds instead of
/// handshakes; `BENCH_STATS=1` turns the per-program statistics on and prints them.
fn compare_builds(spec: &str, cfg: &Config) -> Result<()> {
    let builds: Vec<(String, PathBuf)> = spec
        .split(',')
        .map(|b| b.split_once('=').map(|(n, p)| (n.to_string(), PathBuf::from(p))).context("BENCH_AB wants name=path,..."))
        .collect::<Result<_>>()?;
    let w = match std::env::var("BENCH_AB_WORKLOAD").as_deref() {
        Ok("established") => workload("select1")?,
        Ok(key) => workload(key)?,
        Err(_) => workload("connect")?,
    };
    let db = server(Some(1000))?;
    let stats = std::env::var_os("BENCH_STATS").is_some();
    sysctl("kernel.bpf_stats_enabled", if stats { "1" } else { "0" });
    sysbench(w, db.addr(), Duration::from_secs(2))?;
    let mut untraced = Vec::new();
    let mut traced: Vec<Vec<Round>> = vec![Vec::new(); builds.len()];
    let mut prog_ns: Vec<u64> = vec![0; builds.len()];
    // `BENCH_AB_MODE=socket` (a key of MODES): the builds run in that mode instead.
    let key = std::env::var("BENCH_AB_MODE").unwrap_or_else(|_| "json".into());
    let json_mode = *MODES
        .iter()
        .find(|m| m.key == key && matches!(m.observer, Observer::Tracer(_)))
        .with_context(|| format!("no tracer mode {key:?}"))?;
    for r in 0..cfg.rounds {
        let round = measure(w, &db, None, cfg.round)?;
        eprintln!("ab: round {r} untraced {:>8.0}/s {:>7.1} µs CPU per {}", round.per_s, round.cpu_us_per_op, w.op);
        untraced.push(round);
        for (i, (name, bin)) in builds.iter().enumerate() {
            let o = Running::start(&json_mode, bin, &db, cfg.out_dir.join("ab.out"))?.context("watch -j runs a tracer")?;
            let round = measure(w, &db, Some(&o), cfg.round)?;
            let cost = o.stop()?;
            prog_ns[i] += cost.programs.iter().map(|p| p.1).sum::<u64>();
            if stats {
                for (prog, t, runs) in cost.programs.iter().filter(|p| p.2 > 0) {
                    eprintln!(
                        "ab:   {prog:<16} {runs:>9} runs {:>6.0} ns/run {:>6.2} per {}",
                        *t as f64 / *runs as f64,
                        *runs as f64 / round.ops.max(1) as f64,
                        w.op
                    );
                }
            }
            eprintln!(
                "ab: round {r} {name:<12} {:>8.0}/s {:>7.1} µs CPU per {}, lost {}",
                round.per_s, round.cpu_us_per_op, w.op, cost.lost
            );
            traced[i].push(round);
        }
    }
    let figures = |rs: &[Round], f: fn(&Round) -> f64| -> Vec<f64> { rs.iter().map(f).collect() };
    for (i, (name, _)) in builds.iter().enumerate() {
        let ratio = stat(&per_round(&figures(&untraced, |r| r.per_s), &figures(&traced[i], |r| r.per_s), |u, t| t / u));
        let cpu = stat(&per_round(&figures(&untraced, |r| r.cpu_us_per_op), &figures(&traced[i], |r| r.cpu_us_per_op), |u, t| t / u - 1.0));
        let ops: u64 = traced[i].iter().map(|r| r.ops).sum();
        let tracer_us = 1e6 * traced[i].iter().map(|r| r.observer_cpu_s).sum::<f64>() / ops.max(1) as f64;
        eprintln!("ab: {name:<12} CPU per {} {}, throughput {}, tracer {tracer_us:.1} µs per {}", w.op, delta(&cpu), pct(&ratio), w.op);
        if stats {
            eprintln!("ab: {name:<12} program time {:.2} µs per {}", prog_ns[i] as f64 / 1e3 / ops.max(1) as f64, w.op);
        }
    }
    sysctl("kernel.bpf_stats_enabled", "0");
    Ok(())
}

fn f(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

fn verdict(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**missed**"
    }
}

/// `x` with `digits` decimals, or "n/a" when the run did not record it.
fn num(x: f64, digits: usize) -> String {
    if x.is_finite() {
        format!("{x:.digits$}")
    } else {
        "n/a".to_string()
    }
}

/// "<median> % (spread <min>–<max> %)" from a {median, min, max} ratio.
fn pct(v: &Value) -> String {
    format!("{:.1} % (spread {:.1}–{:.1} %)", 100.0 * f(&v["median"]), 100.0 * f(&v["min"]), 100.0 * f(&v["max"]))
}

/// "+<median> % (spread <min> to <max> %)" from a {median, min, max} relative change.
fn delta(v: &Value) -> String {
    format!("{:+.1} % (spread {:+.1} to {:+.1} %)", 100.0 * f(&v["median"]), 100.0 * f(&v["min"]), 100.0 * f(&v["max"]))
}

/// "<median> ns (spread <min> to <max>)" from a {median, min, max} difference.
fn ns(v: &Value) -> String {
    format!("{:.0} ns (spread {:.0} to {:.0})", f(&v["median"]), f(&v["min"]), f(&v["max"]))
}

/// The median of a list of numbers in the results.
fn median_of(v: &Value) -> f64 {
    median(&mut v.as_array().into_iter().flatten().map(f).collect::<Vec<_>>())
}

/// The programs of a statistics round whose (kernel-truncated) name starts with `prefix`.
fn program<'a>(round: &'a Value, prefix: &str) -> Option<&'a Value> {
    round["programs"].as_array()?.iter().find(|p| p["program"].as_str().is_some_and(|n| n.starts_with(prefix)))
}

fn fmt_list(v: &Value) -> String {
    v.as_array().map(|a| a.iter().map(|x| format!("{:.0}", f(x))).collect::<Vec<_>>().join(", ")).unwrap_or_default()
}

/// The modes a result has figures for (a mode added later is absent from older results).
fn modes_in(figures: &Value) -> impl Iterator<Item = &'static Mode> + '_ {
    MODES.iter().filter(move |m| !figures[m.key].is_null())
}

/// Write performance.md, keeping the soak's section (`## Agent soak`, written by
/// `cargo xtask soak`) that follows the bench's report.
fn write_performance_md(docs: &std::path::Path, report: &str) -> Result<()> {
    let path = docs.join("performance.md");
    let old = std::fs::read_to_string(&path).unwrap_or_default();
    let soak = old.find("\n## Agent soak").map(|i| &old[i..]).unwrap_or("");
    std::fs::write(&path, format!("{}\n{soak}", report.trim_end_matches('\n')))?;
    Ok(())
}

fn report(r: &Value) -> String {
    let tr = &r["tracer"];
    let mach = &r["machine"];
    let hs = &r["workloads"]["connect"];
    let est = &r["workloads"]["select1"];
    let un = &r["unrelated_syscalls"];
    let attach = r["default_attach"].as_str().unwrap_or("?");
    let rss_mb = f(&tr["peak_rss_kb"]) / 1024.0;
    let lost = hs["lost"]["json"].as_u64().unwrap_or(u64::MAX);
    let str_of = |v: &Value| v.as_str().unwrap_or("?").to_string();
    let mut o = String::new();
    o += &format!(
        "# Performance\n\n\
         Written by `cargo xtask bench` (a benchmark, not a test) against a real MariaDB, with Debian's `sysbench`\n\
         ({sysbench}, libmariadb clients) running the Lua scripts in tests/sysbench. Each workload alternates rounds of\n\
         every mode ({rounds} rounds of {secs:.0} s, the modes' order reversed every other round): untraced, this tool in each\n\
         of its modes, and the tools people use instead, `tcpdump -w` on the server's port and `strace -f -p` of the\n\
         server, each measured like a tracer mode (their files removed after each round). Each round is compared with\n\
         the same round's untraced run: throughput as observed / untraced, and **CPU per operation**: utime + stime of\n\
         the server (`/proc/PID/stat`, all its threads), of sysbench (`getrusage(RUSAGE_CHILDREN)` once it exited) and\n\
         of the tracer or peer (`/proc/PID/stat`) over the same window, divided by sysbench's events. Figures are the\n\
         median of the rounds with the min–max spread. Raw numbers: [performance.json](performance.json).\n\
         `kernel.bpf_stats_enabled` is off while measuring (it adds two clock reads to every program run) and on only for\n\
         the rounds of section 4. Every figure below is this run's; the explanations at the end hold across runs.\n\n\
         **CPU per operation is the figure to trust under load.** This machine is shared (see the load average\n\
         below): throughput swings with whatever else runs on its cores, while CPU per operation counts only the work\n\
         of this run's server, clients and tracer. The verdicts use it first, throughput second.\n\n\
         The bench's own Rust clients are gone: sysbench covers both of their loads, with a client nobody here wrote\n\
         (`connect.lua` the handshake, plus the `SELECT 1` a real client sends before it quits; `select1.lua` the\n\
         established traffic), and `BENCH_AB` uses the same scripts.\n\n\
         Machine: {cores} cores, {cpu}, kernel {kernel}, {mariadb}. Default attachment: `--attach {attach}`.\n\
         Peers: {tcpdump}; {strace}.\n\n\
         Conditions: load average (1, 5, 15 min) {load_before} before the run and {load_after} after it; at most\n\
         {others} tracepoint programs of other tracers were loaded when one of this run's tracers stopped (0: the\n\
         kernel's tracepoints were this run's alone; otherwise every round, the untraced ones too, may have paid for\n\
         another tracer's syscall tracepoints, which narrows the differences below).\n\n",
        sysbench = str_of(&mach["sysbench"]),
        rounds = r["rounds"],
        secs = f(&r["round_secs"]),
        cores = mach["cores"],
        cpu = str_of(&mach["cpu"]),
        kernel = str_of(&mach["kernel"]),
        mariadb = str_of(&mach["mariadb"]),
        tcpdump = str_of(&mach["tcpdump"]),
        strace = str_of(&mach["strace"]),
        load_before = str_of(&r["conditions"]["load_average_before"]),
        load_after = str_of(&r["conditions"]["load_average_after"]),
        others = r["conditions"]["other_tracepoint_programs_max"],
    );
    if let Some(at) = r["conditions"]["started_utc"].as_str() {
        o += &format!("Run started {at}");
        if let Some(un) = r["conditions"]["unrelated_utc"].as_str() {
            o += &format!(
                "; section 3 measured again at {un} (load average {}), CPU time per call instead of wall time",
                str_of(&r["conditions"]["load_average_unrelated"])
            );
        }
        o += ".\n\n";
    }
    if r["quick"].as_bool() == Some(true) {
        o += "**A smoke run (`BENCH_QUICK=1`): too few and too short rounds to judge by.**\n\n";
    }
    o += &socket_targets(r);
    o += "With the syscall tier (`watch -j --capture syscalls`, raw syscall tracepoints), the targets it had:\n\n\
          | target | result | throughput traced / untraced | |\n|---|---|---|---|\n";
    for (target, w, what) in [(TARGET_HANDSHAKE_CPU, hs, "handshake"), (TARGET_ESTABLISHED_CPU, est, "established `SELECT 1`")] {
        let cpu = &w["cpu_per_op_delta"]["json"];
        o += &format!(
            "| CPU per {what} traced ≤ {:+.0} % over untraced | {} | {} | {} |\n",
            100.0 * target,
            delta(cpu),
            pct(&w["throughput_ratio"]["json"]),
            verdict(f(&cpu["median"]) <= target)
        );
    }
    o += &format!(
        "| unrelated process: ≤ {TARGET_UNRELATED_NS:.0} ns added per traced syscall | {} | | {} |\n",
        ns(&un["added_ns"]["json"]),
        verdict(f(&un["added_ns"]["json"]["median"]) <= TARGET_UNRELATED_NS)
    );
    o += &format!(
        "| zero lost events at the highest handshake rate | {lost} lost of {} emitted | | {} |\n",
        hs["emitted"]["json"],
        verdict(lost == 0)
    );
    o += &format!("| tracer peak RSS ≤ {TARGET_RSS_MB:.0} MB | {rss_mb:.1} MB | | {} |\n\n", verdict(rss_mb <= TARGET_RSS_MB));

    o += "## Side by side\n\nCPU per operation over untraced (median of the rounds), every mode and peer:\n\n\
          | mode | CPU per handshake | CPU per established `SELECT 1` |\n|---|---|---|\n";
    for m in modes_in(&hs["cpu_per_op_delta"]) {
        o += &format!("| `{}` | {} | {} |\n", m.name, delta(&hs["cpu_per_op_delta"][m.key]), delta(&est["cpu_per_op_delta"][m.key]));
    }
    o += "\n";

    for (n, w) in WORKLOADS.iter().enumerate() {
        o += &workload_section(n + 1, w, &r["workloads"][w.key]);
    }
    let sec = WORKLOADS.len() + 1;
    o += &format!(
        "On an established connection the handshake is over and the kernel has forgotten the connection (after the\n\
         server's OK): each query's syscalls cost the syscall-tracepoint path, the target check and a read of the\n\
         kernel's counts of open handshakes and syscalls in flight, and emit nothing.\n\n\
         ## {sec}. Everyone else (an unrelated process: `getppid()`, and `send`/`recv` of 8 bytes on a loopback TCP connection;\n\
         the calling thread's CPU time per call, the cheapest of 20 chunks of each loop, so that other processes taking\n\
         the core or its caches count as little as they can)\n\n\
         | mode | ns per `getppid`, each round | added per `getppid` | ns per socket call, each round | added per socket call |\n\
         |---|---|---|---|---|\n"
    );
    let added = |key: &str, m: &Mode| {
        if un[key][m.key].is_null() {
            String::new()
        } else {
            ns(&un[key][m.key])
        }
    };
    for m in modes_in(&un["ns"]) {
        o += &format!(
            "| `{}` | {} | {} | {} | {} |\n",
            m.name,
            fmt_list(&un["ns"][m.key]),
            added("added_ns", m),
            fmt_list(&un["socket_ns"][m.key]),
            added("socket_added_ns", m)
        );
    }
    o += "\nSyscall tracepoints run for every process. Non-targets are turned away by a short list of target pids in an\n\
          array map (a few compares, no hash), at entry after the syscall-number check and at exit. The socket tier's\n\
          programs run only for socket calls (the socket's port pair hashed to a slot, one array load, then return)\n\
          and for the packets of sockets in the server's cgroup, which this process's are not. The socket-call\n\
          figures' spread comes from the calls themselves: the untraced rounds alone differ by more than the target.\n\n";
    o += &format!("## {}. Inside the kernel (`kernel.bpf_stats_enabled`, one round per attachment and workload)\n\n", sec + 1);
    o += &format!("Events per handshake (`watch -j`, section 1): {}.\n\n", num(f(&tr["events_per_handshake"]), 1));
    let stats = &r["kernel"]["statistics_rounds"];
    for m in modes_in(stats) {
        let round = &stats[m.key]["connect"];
        let q = &stats[m.key]["select1"];
        o += &format!(
            "`{}`: handshakes, {:.0}/s with statistics on: program time {} µs and {} program runs per handshake, {} % of an\n\
             untraced handshake's CPU (section 1's median, {} µs).\n\
             Established `SELECT 1`, {:.0}/s: program time {} µs and {} program runs per query, {} % of an untraced query's\n\
             CPU (section 2's median, {} µs). Every program's runs, for every process's syscalls, over the operations\n\
             sysbench counted; the handshake round's programs:\n\n\
             | program | runs | ns per run |\n|---|---|---|\n",
            m.name,
            f(&round["per_s"]),
            num(f(&round["program_us_per_op"]), 1),
            num(f(&round["program_runs_per_op"]), 0),
            num(100.0 * f(&round["program_us_per_op"]) / median_of(&hs["cpu_us_per_op"]["untraced"]), 2),
            num(median_of(&hs["cpu_us_per_op"]["untraced"]), 1),
            f(&q["per_s"]),
            num(f(&q["program_us_per_op"]), 2),
            num(f(&q["program_runs_per_op"]), 1),
            num(100.0 * f(&q["program_us_per_op"]) / median_of(&est["cpu_us_per_op"]["untraced"]), 1),
            num(median_of(&est["cpu_us_per_op"]["untraced"]), 1),
        );
        for p in round["programs"].as_array().into_iter().flatten() {
            o += &format!("| `{}` | {} | {:.0} |\n", p["program"].as_str().unwrap_or("?"), p["runs"], f(&p["ns_per_run"]));
        }
        o += "\n";
    }
    o += &empty_programs_text(r);
    o += &format!(
        "## {}. The tracer (`watch -j`, handshake rounds)\n\n\
         CPU {:.2} s over the traced rounds ({:.1} % of one core); peak RSS {rss_mb:.1} MB (all modes); events: {} emitted,\n\
         {} lost (emitted + lost = attempted: the kernel counts both), {} handshakes.\n\n",
        sec + 2,
        f(&tr["cpu_seconds"]),
        f(&tr["cpu_percent_of_one_core"]),
        tr["events_emitted"],
        tr["events_lost"],
        tr["handshakes"],
    );
    o += &socket_tier_notes(r);
    o += "## What stands in the way (the syscall tier)\n\n";
    o += &stands_in_the_way(r);
    o
}

/// The empty programs' hooks: (program, hook, used by the socket tier).
const EMPTY_PROGRAMS: [(&str, &str, bool); 6] = [
    ("noop_sock_recv", "tp_btf/sock_recv_length", true),
    ("noop_sock_send", "tp_btf/sock_send_length", true),
    ("noop_skb_in", "cgroup_skb/ingress", true),
    ("noop_skb_out", "cgroup_skb/egress", true),
    ("noop_btf_state", "tp_btf/inet_sock_set_state", true),
    // The state-change hook's fallback where the BTF tracepoint does not load.
    ("noop_set_state", "tracepoint/sock/inet_sock_set_state", false),
];

/// The empty programs on the hooks the socket tier uses, in workload `w`: their µs per
/// operation, and their mean ns per run (the statistics' own clock reads included).
fn empty_floor(r: &Value, w: &str) -> (f64, f64) {
    let round = &r["kernel"]["empty_programs"]["workloads"][w];
    let (mut ns, mut runs) = (0.0, 0.0);
    for p in round["programs"].as_array().into_iter().flatten() {
        if EMPTY_PROGRAMS.iter().any(|(name, _, used)| *used && p["program"] == *name) {
            ns += f(&p["ns_per_run"]) * f(&p["runs"]);
            runs += f(&p["runs"]);
        }
    }
    (ns / 1e3 / f(&round["ops"]).max(1.0), ns / runs)
}

/// Section 4's floor: what programs that do nothing cost on the socket tier's hooks.
fn empty_programs_text(r: &Value) -> String {
    let e = &r["kernel"]["empty_programs"];
    if e.is_null() {
        return String::new();
    }
    let (hs, est) = (&r["workloads"]["connect"], &r["workloads"]["select1"]);
    let prog = |w: &str, name: &str| -> Value {
        e["workloads"][w]["programs"].as_array().into_iter().flatten().find(|p| p["program"] == name).cloned().unwrap_or(Value::Null)
    };
    let ops = |w: &str| f(&e["workloads"][w]["ops"]).max(1.0);
    let mut o = format!(
        "**The floor.** Programs that do nothing (`handshake-trace-ebpf/src/calibrate.rs`), attached by the bench alone on the\n\
         socket tier's hooks (`cgroup_skb` on {}), one round per workload, statistics on. Their time per run is what\n\
         any program on that hook costs here, as `bpf_stats` counts it (its two clock reads included):\n\n\
         | hook | ns per run, handshakes | ns per run, `SELECT 1` | runs per handshake | runs per query |\n|---|---|---|---|---|\n",
        e["cgroup"].as_str().unwrap_or("?")
    );
    for (name, hook, used) in EMPTY_PROGRAMS {
        let (a, b) = (prog("connect", name), prog("select1", name));
        // A program that never ran is not in the round's list: 0 runs, no time per run.
        let runs = |p: &Value, w: &str| p["runs"].as_f64().unwrap_or(0.0) / ops(w);
        let ns = |p: &Value, w: &str| if runs(p, w) > 0.0 { num(f(&p["ns_per_run"]), 0) } else { "–".to_string() };
        o += &format!(
            "| `{hook}`{} | {} | {} | {} | {} |\n",
            if used { "" } else { " (the fallback; not used here)" },
            ns(&a, "connect"),
            ns(&b, "select1"),
            num(runs(&a, "connect"), 1),
            num(runs(&b, "select1"), 1)
        );
    }
    let ((floor_hs, _), (floor_q, _)) = (empty_floor(r, "connect"), empty_floor(r, "select1"));
    let (u_hs, u_q) = (median_of(&hs["cpu_us_per_op"]["untraced"]), median_of(&est["cpu_us_per_op"]["untraced"]));
    o += &format!(
        "\nOn the hooks the socket tier uses, empty programs alone take {} µs per handshake ({} % of an untraced\n\
         handshake's CPU) and {} µs per query ({} % of an untraced query's): the part of the socket tier's program time\n\
         that no filter inside a program can remove.\n\n",
        num(floor_hs, 2),
        num(100.0 * floor_hs / u_hs, 2),
        num(floor_q, 3),
        num(100.0 * floor_q / u_q, 2)
    );
    o
}

/// Issue 14's targets for the socket tier, each with this run's figure.
fn socket_targets(r: &Value) -> String {
    let (hs, est, un) = (&r["workloads"]["connect"], &r["workloads"]["select1"], &r["unrelated_syscalls"]);
    let stats = &r["kernel"]["statistics_rounds"]["socket"];
    let mut o = String::from(
        "## Targets\n\nThe socket tier (`watch -j --capture socket`; CPU per operation also with the continuous tracer,\n\
         `agent --capture socket`, which the same kernel side feeds), against issue 14's targets:\n\n\
         | target | result | throughput traced / untraced | |\n|---|---|---|---|\n",
    );
    for (mode, label) in [("socket", ""), ("agent", " (`agent`)")] {
        for (target, w, what) in [(TARGET_SOCKET_QUERY_CPU, est, "established `SELECT 1`"), (TARGET_SOCKET_HANDSHAKE_CPU, hs, "handshake")] {
            let cpu = &w["cpu_per_op_delta"][mode];
            o += &format!(
                "| CPU per {what} ≤ {:+.1} % over untraced{label} | {} | {} | {} |\n",
                100.0 * target,
                delta(cpu),
                pct(&w["throughput_ratio"][mode]),
                missed_by(f(&cpu["median"]) - target, |x| format!("{:.1} points", 100.0 * x))
            );
        }
    }
    for (target, w, key, what) in
        [(TARGET_SOCKET_QUERY_CPU, est, "select1", "query"), (TARGET_SOCKET_HANDSHAKE_CPU, hs, "connect", "handshake")]
    {
        let untraced = median_of(&w["cpu_us_per_op"]["untraced"]);
        let prog = f(&stats[key]["program_us_per_op"]);
        o += &format!(
            "| program time per {what} ≤ {:.1} % of an untraced {what}'s CPU ({} µs) | {} µs = {} % | | {} |\n",
            100.0 * target,
            num(untraced, 1),
            num(prog, 3),
            num(100.0 * prog / untraced, 2),
            missed_by(prog / untraced - target, |x| format!("{:.2} points", 100.0 * x))
        );
    }
    // "+0 ns": nothing beyond what the untraced rounds differ among themselves.
    let (lo, hi) = spread(&un["ns"]["untraced"].as_array().into_iter().flatten().map(f).collect::<Vec<_>>());
    let getppid = &un["added_ns"]["socket"];
    o += &format!(
        "| unrelated process: +0 ns per non-socket syscall (`getppid`; within the untraced rounds' own spread, {:.0} ns) | {} | | {} |\n",
        hi - lo,
        ns(getppid),
        missed_by(f(&getppid["median"]) - (hi - lo), |x| format!("{x:.0} ns"))
    );
    let sock = &un["socket_added_ns"]["socket"];
    o += &format!(
        "| unrelated process: ≤ +{TARGET_SOCKET_SOCKET_CALL_NS:.0} ns per socket call | {} | | {} |\n",
        ns(sock),
        missed_by(f(&sock["median"]) - TARGET_SOCKET_SOCKET_CALL_NS, |x| format!("{x:.0} ns"))
    );
    let lost = hs["lost"]["socket"].as_u64().unwrap_or(u64::MAX);
    o += &format!(
        "| 0 events lost at the highest handshake rate (emitted + lost = attempted, both counted by the kernel) | {lost} lost of {} emitted | | {} |\n\n",
        hs["emitted"]["socket"],
        missed_by(lost as f64, |x| format!("{x:.0} events"))
    );
    o += "A missed target's \"by\" is the median's distance from it; the notes below say what stands in the way.\n\n";
    o
}

/// "met", or "**missed** by X" when `over` (the figure minus the target) is positive.
fn missed_by(over: f64, fmt: impl Fn(f64) -> String) -> String {
    if over <= 0.0 {
        verdict(true).into()
    } else {
        format!("{} by {}", verdict(false), fmt(over))
    }
}

/// A workload's section: every mode's rounds, throughput and CPU per operation next to
/// each other, and what the observer counted.
fn workload_section(n: usize, w: &Workload, r: &Value) -> String {
    let op = w.op;
    let mut o = format!(
        "## {n}. {} (`{}`, {} sysbench threads; one event: {})\n\n\
         | mode | per second, each round | throughput vs untraced | CPU per {op} | CPU per {op} vs untraced | the observer's own CPU per {op} | lost / counted |\n\
         |---|---|---|---|---|---|---|\n",
        if op == "handshake" { "Handshakes" } else { "Established connections" },
        r["script"].as_str().unwrap_or("?"),
        r["threads"],
        w.event,
    );
    for m in modes_in(&r["per_s"]) {
        let cpu = format!("{} µs", num(median_of(&r["cpu_us_per_op"][m.key]), 1));
        let (ratio, cpu_delta, own, counted) = match m.observer {
            Observer::None => Default::default(),
            observer => (
                pct(&r["throughput_ratio"][m.key]),
                delta(&r["cpu_per_op_delta"][m.key]),
                format!("{} µs", num(f(&r["observer_cpu_us_per_op"][m.key]), 1)),
                match observer {
                    Observer::Tracer(_) => {
                        format!("{} / {} events", r["lost"][m.key], r["emitted"][m.key])
                    }
                    Observer::Tcpdump => format!("{} dropped / {} packets", r["lost"][m.key], r["emitted"][m.key]),
                    _ => String::new(),
                },
            ),
        };
        o += &format!("| `{}` | {} | {ratio} | {cpu} | {cpu_delta} | {own} | {counted} |\n", m.name, fmt_list(&r["per_s"][m.key]));
    }
    o + "\n"
}

/// Runs per operation and ns per run of a statistics round's program `prefix`.
fn runs_and_ns(round: &Value, prefix: &str) -> String {
    match program(round, prefix) {
        Some(p) => format!("{} runs per op at {} ns", num(f(&p["runs"]) / f(&round["ops"]), 1), num(f(&p["ns_per_run"]), 0)),
        None => "not run".into(),
    }
}

/// The socket tier: why it is the default for watch and record, and what it costs, in
/// this run's figures.
fn socket_tier_notes(r: &Value) -> String {
    let (hs, est, un) = (&r["workloads"]["connect"], &r["workloads"]["select1"], &r["unrelated_syscalls"]);
    let stats = &r["kernel"]["statistics_rounds"]["socket"];
    let (shs, sq) = (&stats["connect"], &stats["select1"]);
    format!(
        "## The default tier, by measurement\n\n\
         `watch` and `record` capture with the socket tier by default (`--capture socket`); `lab` keeps the syscall tier,\n\
         whose full story (fds, waits and their timeouts, fcntl, socket options, timers) it teaches, and `--capture syscalls`\n\
         gives it to watch and record too. This run, socket tier against syscall tier (`watch -j`):\n\n\
         | | socket tier | syscall tier |\n|---|---|---|\n\
         | CPU per handshake over untraced | {s_hs} | {y_hs} |\n\
         | CPU per established `SELECT 1` over untraced | {s_q} | {y_q} |\n\
         | program time per handshake / per query (statistics rounds) | {s_phs} µs / {s_pq} µs | {y_phs} µs / {y_pq} µs |\n\
         | unrelated process, added per `getppid` | {s_gp} | {y_gp} |\n\
         | unrelated process, added per loopback socket call | {s_sc} | {y_sc} |\n\
         | events lost / emitted, handshake rounds | {s_lost} / {s_em} | {y_lost} / {y_em} |\n\n\
         The deciding figure is the unrelated process: any syscall tracepoint puts every task of the host on the slow\n\
         syscall path while it is attached, which no filter inside the programs can undo; the socket tier's hooks run\n\
         only for socket calls, packets and TCP state changes, but for those of every process (the socket-call row:\n\
         there the socket tier is not free either; see \"What stands in the way\" below). The agent (`agent --capture socket`, sections 1\n\
         and 2: the same kernel side, metrics and a log of abnormal handshakes instead of a record per handshake) cost\n\
         {a_hs} per handshake and {a_q} per query.\n\n\
         ## The socket tier: what its programs do, and cost\n\n\
         Every socket call (`sock_recv_length`, `sock_send_length`) and every TCP state change (`inet_sock_set_state`)\n\
         of the host runs a program; so does every packet of a socket in the server's cgroup (`cgroup_skb` ingress and\n\
         egress, attached to the targets' cgroup v2: MariaDB runs in a cgroup of its own here, as a systemd service\n\
         does, its clients and the unrelated process outside; on the cgroup v2 root only when a server runs there,\n\
         where every packet of the host would run them). For a socket\n\
         that is not in its handshake the program reads the socket's port pair (numbers the hook already has), hashes it\n\
         to one of 4096 slots and loads that slot's count from an array map: 0 (almost always) returns at once, without\n\
         the hash lookup of the connection map that used to come first; only a socket whose slot holds a followed\n\
         connection pays the lookup. Packets are parsed (IPv4 options, IPv6 extension headers) only for followed\n\
         sockets. Statistics rounds (section 4), per handshake: `sock_recv_length` {h_recv}; `sock_send_length`\n\
         {h_send}; `cgroup_skb` ingress {h_in}, egress {h_out}; `inet_sock_set_state` {h_state}. Per established\n\
         query: `sock_recv_length` {q_recv}; `sock_send_length` {q_send}; `cgroup_skb` ingress {q_in}, egress {q_out}.\n\n\
         What is left on an established query is the runs themselves: {q_runs} program runs per query (the client's\n\
         and the server's reads and writes, and the server socket's packets, once each), each a\n\
         dispatch plus a few loads. The handshake's program time is mostly the connection's own records (the\n\
         greeting, the login, the OK or ERR and the reads that found nothing, each reserved, filled and submitted to\n\
         the ring buffer) and its state changes: {ev_hs} records per handshake with the syscall tier, fewer with the\n\
         socket tier, all of which the verdict needs. Statistics rounds read the clock twice per program run, so\n\
         their ns per run are upper bounds.\n\n\
         CPU per handshake counts the tracer too, and the tracer decodes, judges and writes every handshake: {own_hs} µs\n\
         per handshake for `watch -j --capture socket` and {own_agent} µs for the agent in this run, {own_share} % and\n\
         {agent_share} % of an untraced handshake's {hs_us} µs: {own_verdict} the +1 % the handshake target allows;\n\
         the kernel side's share is the program time above.\n\n\
         What stands in the way of the socket tier's missed targets, in this run's figures:\n\n\
         - **Program time per query and per socket call: the runs themselves.** A program that only checks the slot\n\
           filter and returns still costs its dispatch and a few loads, {q_ns} ns per run on average in the query\n\
           round's statistics (the statistics' own clock reads included). Programs that do nothing, on the same\n\
           hooks, cost {floor_ns} ns per run there and {floor_q} µs per query, {floor_pct} % of an untraced query's CPU\n\
           (the floor, section 4): that much of the program time per query is the hooks' and the statistics' own,\n\
           which no filter inside a program removes. A loopback socket call of an unrelated\n\
           process runs one (the call's tracepoint; its packets are outside the server's cgroup, so no `cgroup_skb`\n\
           program runs for them): section 3 measured {s_sc} per call. On loopback the clients' own socket calls\n\
           run the programs too (the socket-call tracepoints have no cgroup to attach to); a server's remote clients\n\
           would not.\n\
         - **Program time per handshake: the handshake's own work.** {hs_runs} program runs per handshake, among them\n\
           the records the verdict is made of (each reserved in the ring, its packet bytes copied, submitted).\n\
         - **CPU per operation on this machine.** The spreads of CPU per operation (section 1 and 2) are wider than\n\
           the targets: the machine is shared and its load moves between rounds (load average above). A median\n\
           of +0.5 % cannot be told from 0 % here; the program-time figures are the steadier measure.\n\n",
        floor_ns = num(empty_floor(r, "select1").1, 0),
        floor_q = num(empty_floor(r, "select1").0, 3),
        floor_pct = num(100.0 * empty_floor(r, "select1").0 / median_of(&est["cpu_us_per_op"]["untraced"]), 2),
        s_hs = delta(&hs["cpu_per_op_delta"]["socket"]),
        y_hs = delta(&hs["cpu_per_op_delta"]["json"]),
        s_q = delta(&est["cpu_per_op_delta"]["socket"]),
        y_q = delta(&est["cpu_per_op_delta"]["json"]),
        s_phs = num(f(&shs["program_us_per_op"]), 2),
        s_pq = num(f(&sq["program_us_per_op"]), 3),
        y_phs = num(f(&r["kernel"]["statistics_rounds"]["json"]["connect"]["program_us_per_op"]), 2),
        y_pq = num(f(&r["kernel"]["statistics_rounds"]["json"]["select1"]["program_us_per_op"]), 3),
        s_gp = ns(&un["added_ns"]["socket"]),
        y_gp = ns(&un["added_ns"]["json"]),
        s_sc = ns(&un["socket_added_ns"]["socket"]),
        y_sc = ns(&un["socket_added_ns"]["json"]),
        s_lost = hs["lost"]["socket"],
        s_em = hs["emitted"]["socket"],
        y_lost = hs["lost"]["json"],
        y_em = hs["emitted"]["json"],
        a_hs = delta(&hs["cpu_per_op_delta"]["agent"]),
        a_q = delta(&est["cpu_per_op_delta"]["agent"]),
        h_recv = runs_and_ns(shs, "sock_recv_lengt"),
        h_send = runs_and_ns(shs, "sock_send_lengt"),
        h_in = runs_and_ns(shs, "cgroup_skb_ingr"),
        h_out = runs_and_ns(shs, "cgroup_skb_egre"),
        h_state = runs_and_ns(shs, "btf_set_state"),
        q_recv = runs_and_ns(sq, "sock_recv_lengt"),
        q_send = runs_and_ns(sq, "sock_send_lengt"),
        q_in = runs_and_ns(sq, "cgroup_skb_ingr"),
        q_out = runs_and_ns(sq, "cgroup_skb_egre"),
        q_runs = num(f(&sq["program_runs_per_op"]), 1),
        ev_hs = num(f(&r["tracer"]["events_per_handshake"]), 1),
        own_hs = num(f(&hs["observer_cpu_us_per_op"]["socket"]), 1),
        own_agent = num(f(&hs["observer_cpu_us_per_op"]["agent"]), 1),
        own_share = num(100.0 * f(&hs["observer_cpu_us_per_op"]["socket"]) / median_of(&hs["cpu_us_per_op"]["untraced"]), 1),
        agent_share = num(100.0 * f(&hs["observer_cpu_us_per_op"]["agent"]) / median_of(&hs["cpu_us_per_op"]["untraced"]), 1),
        hs_us = num(median_of(&hs["cpu_us_per_op"]["untraced"]), 1),
        q_ns = num(1e3 * f(&sq["program_us_per_op"]) / f(&sq["program_runs_per_op"]), 0),
        hs_runs = num(f(&shs["program_runs_per_op"]), 0),
        own_verdict = if f(&hs["observer_cpu_us_per_op"]["socket"]) / median_of(&hs["cpu_us_per_op"]["untraced"]) > TARGET_SOCKET_HANDSHAKE_CPU {
            "that userspace work alone is more than"
        } else {
            "within"
        },
    )
}

/// The analysis behind the numbers (kept with the code that produces them): what was
/// learnt across runs, in words; every figure in it is this run's.
fn stands_in_the_way(r: &Value) -> String {
    let hs = &r["workloads"]["connect"];
    let est = &r["workloads"]["select1"];
    let un = &r["unrelated_syscalls"];
    let cores = f(&r["machine"]["cores"]);
    let stats = &r["kernel"]["statistics_rounds"]["json"]["connect"];
    let floor = f(&un["added_ns"]["json"]["median"]);
    // An untraced SELECT 1's CPU (server + sysbench), measured.
    let query_cpu_us = median_of(&est["cpu_us_per_op"]["untraced"]);
    let set_state = program(stats, "inet_sock_set_s");
    let set_state_ns = set_state.map_or(f64::NAN, |p| f(&p["ns_per_run"]));
    let set_state_runs = set_state.map_or(f64::NAN, |p| f(&p["runs"]) / f(&stats["ops"]));
    let (est_lo, est_hi) = spread(&est["per_s"]["untraced"].as_array().into_iter().flatten().map(f).collect::<Vec<_>>());
    format!(
        "\
- **Every syscall pays for syscall tracepoints of any kind.** Enabling `syscalls:*` or `raw_syscalls:*`
  tracepoints switches every task to the slow syscall entry/exit path. In this run that cost an unrelated process
  {floor_added} per syscall with the default attachment and {tp_added} with the per-syscall tracepoints (section 3).
  Programs that return at once add about as much as the full programs with the short target list (measured by
  hand with a C write+read loop on a pipe; the hash lookup at entry and at exit that the list replaced cost
  visibly more): that floor is the attachment, not the programs, and every process pays it: the server's
  clients, the server's own query traffic, and the tracer itself.
- **The cheaper attachments are closed on this platform.** fentry/fexit (BPF trampolines on `__x64_sys_*`) would
  leave other tasks on the fast path, but they fail to load here with EPERM (`bpftool feature probe`:
  \"program_type tracing is NOT available\"; tracefs refuses `available_filter_functions` to root too):
  ftrace-based attachment is blocked by this VM's kernel, and kprobes are compiled out. BTF tracepoints (`tp_btf`)
  do load here, but on `sys_enter`/`sys_exit` they are syscall tracepoints too and put every task on the same
  slow path. The raw syscall tracepoints are the cheapest attachment available here; on a kernel that allows
  trampolines, fentry on the socket syscalls is the next step.
- **The handshake path: where the loss is, found by taking pieces away.** `BENCH_AB` (see below) runs
  interleaved rounds of several builds of the tracer. Taken apart that way (`watch -j`): programs that return at
  once cost least (the attachment floor); programs that check the target and record accepts but never follow a
  connection cost a little more; the full programs with nothing sent to the ring buffer (so no tracer work
  either) cost about as much as the full programs. The records and the tracer's CPU are not what costs;
  following each connection through its syscalls in the kernel is (map lookups and updates, argument, clock and
  payload reads; {runs_per_hs} program runs per handshake in this run's statistics round, every process's syscalls
  counted). So summarising in the
  kernel (one record per successful handshake) would remove the records but not that work: it is not the step to
  the handshake target it looked like. Program work added per handshake costs throughput whether it goes
  into the accept path or into the handler's reads and writes: the server's accept thread ran close to a full
  core (`top -H`) and was the bottleneck of this benchmark's own clients (before sysbench), and the {cores:.0} cores are shared by server, clients and
  tracer, so every µs of program time per handshake shows.
- **Program time per handshake, reduced** (`BENCH_STATS=1`, statistics on; this run's section 4: {prog_us} µs
  per handshake with the default attachment). Each target thread has one entry (map TASKS: its connection and its
  syscall in flight) written in place, where a hash insert and delete per syscall (IN_FLIGHT) plus an update
  (THREADS) were; the exit looks it up once; the end of tracing rides on the I/O record that caused it;
  setsockopt is followed only for the options that change how a handshake can end (timeouts, SO_LINGER), which
  cut the records per handshake ({events_per_hs} in this run). `sock:inet_sock_set_state` runs for every state
  change of every TCP socket ({set_state_runs} runs per handshake in this run), mostly for sockets nobody follows
  (the clients' ends): when the format file shows the usual layout it reads its fields as plain loads at
  constant offsets instead of through `bpf_probe_read` ({set_state_ns} ns per run in this run), and the ring's size
  is a load-time constant (one ring buffer query per record, not two); each of these measured a small gain in A/B
  rounds. Tried and dropped (A/B rounds, no change beyond noise): dropping the in-flight count's atomic adds,
  and asking the counts before the target check. What remains is spread over many small costs (hash lookups,
  helper calls, the clock), none large on its own; trampolines (`fentry`) would remove the floor and the
  per-syscall dispatch, where the kernel allows them.
- **Throughput against CPU per operation.** Whole runs of the same build differed from one another by more than
  the rounds of one run do: throughput moves with whatever else the shared cores run, while CPU per operation
  counts only this run's processes (a loaded machine still makes each operation dearer through shared caches and
  scheduling, so it is steadier, not immune). This run's `watch -j` rounds: handshakes {hs_ratio} of untraced
  throughput and {hs_cpu} CPU per handshake; established `SELECT 1` {est_ratio} of untraced throughput and
  {est_cpu} CPU per query. Compare the spreads; the verdicts use CPU per operation.
- **The tracer's CPU, reduced.** A profile of `watch -j` at these rates (perf, DWARF call graphs) put most of its
  CPU in writing each record: every small piece serde wrote went through `dyn Write` into the `BufWriter`, and
  each step's words were formatted into a string of their own. Each record is now built in one reused buffer
  with the words streamed into it (escaped as they are written), and the maps keyed by (pid, fd) hash with a
  multiply-rotate hasher instead of SipHash. This run: {cpu_json} µs of tracer CPU per handshake with `-j`,
  {cpu_text} µs with text output ({core_pct} % of one core for `-j`, section 5), of an untraced handshake's
  {hs_cpu_us} µs (server + sysbench).
- **Established connections: the attachment alone stands in the way of the established target.** In this run
  an untraced `SELECT 1` round trip took {query_cpu} µs of CPU (server + sysbench, section 2's median), so the
  floor of {floor_ns} ns per syscall is {floor_share} % of a round trip for each syscall it makes, and a round trip makes several (the client's and the
  server's writes and reads; count them with `perf stat -a -e raw_syscalls:sys_enter` during an untraced round).
  Measured earlier with `BENCH_AB` on established traffic, programs that return at once already fell short of
  the throughput target this report had then (99 %), and the full programs cost little more than they do. The handshake-scope filter does its job (established
  traffic emits nothing and costs the programs a target check and a read of the kernel's counts of open
  handshakes and syscalls in flight, map LIVE), but no program can be cheaper than not running. The way to try
  for the target is an attachment that runs only for the syscalls it watches and leaves every other syscall on
  the fast path (`fentry`/`fexit` on the socket syscalls), which this VM refuses.
- **Per-program statistics are not free.** With `kernel.bpf_stats_enabled=1` every program run reads the clock
  twice, and the programs run on every syscall of every process (compare section 4's handshake rates, statistics
  on, with section 1's). Leave it off in production.
- **The peers.** `tcpdump -w` copies every packet on the server's port to a file: the kernel clones each packet
  for the capture socket and tcpdump writes it out, so its cost grows with packets, not with syscalls, and it
  does not touch the syscall path. `strace -f` stops every syscall of every server thread twice (ptrace, at entry
  and at exit) and waits for strace to format it: the server runs at the pace of the tracer. This run, CPU per
  handshake / per query over untraced: `tcpdump -w` {tcpdump_hs} / {tcpdump_q}; `strace -f` {strace_hs} /
  {strace_q}; `watch -j` {hs_cpu} / {est_cpu}.
- **This machine.** {cores:.0} cores shared by clients, server, tracer and whatever else runs here; the
  established-connection rate swings from round to round even untraced (this run's untraced rounds: {est_lo:.0}
  to {est_hi:.0} queries per second), hence CPU per operation, the medians and the spreads.

Comparing builds: `BENCH_AB=\"name=/path/to/handshake-trace,...\" cargo run --release -p handshake-trace-tests --bin
handshake-trace-bench` runs interleaved untraced and `watch -j` rounds of `connect.lua` with each build and prints
CPU per handshake and throughput against untraced (docs are not touched); `BENCH_AB_WORKLOAD=select1` runs section
2's `SELECT 1` rounds instead; with `BENCH_STATS=1` it also prints each program's runs and ns per run and the
program time per operation. `BENCH_QUICK=1 cargo xtask bench` is a smoke run of everything (2 rounds of 2 s) that
writes its report under target/bench and leaves docs/ alone.
",
        floor_added = ns(&un["added_ns"]["json"]),
        tp_added = ns(&un["added_ns"]["json_tracepoints"]),
        runs_per_hs = num(f(&stats["program_runs_per_op"]), 0),
        prog_us = num(f(&stats["program_us_per_op"]), 1),
        events_per_hs = num(f(&r["tracer"]["events_per_handshake"]), 1),
        set_state_runs = num(set_state_runs, 1),
        set_state_ns = num(set_state_ns, 0),
        hs_ratio = pct(&hs["throughput_ratio"]["json"]),
        hs_cpu = delta(&hs["cpu_per_op_delta"]["json"]),
        est_ratio = pct(&est["throughput_ratio"]["json"]),
        est_cpu = delta(&est["cpu_per_op_delta"]["json"]),
        hs_cpu_us = num(median_of(&hs["cpu_us_per_op"]["untraced"]), 1),
        cpu_json = num(f(&hs["observer_cpu_us_per_op"]["json"]), 1),
        cpu_text = num(f(&hs["observer_cpu_us_per_op"]["text"]), 1),
        core_pct = num(f(&r["tracer"]["cpu_percent_of_one_core"]), 1),
        query_cpu = num(query_cpu_us, 1),
        floor_ns = num(floor, 0),
        floor_share = num(100.0 * floor / 1e3 / query_cpu_us, 2),
        tcpdump_hs = delta(&hs["cpu_per_op_delta"]["tcpdump"]),
        tcpdump_q = delta(&est["cpu_per_op_delta"]["tcpdump"]),
        strace_hs = delta(&hs["cpu_per_op_delta"]["strace"]),
        strace_q = delta(&est["cpu_per_op_delta"]["strace"]),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Results of a made-up run: every figure distinctive, so that the report can be
    /// checked to render this run's values and nothing else.
    fn synthetic() -> Value {
        let stat = |median: f64, min: f64, max: f64| json!({ "median": median, "min": min, "max": max });
        let program = |name: &str, runs: u64, ns: f64| json!({ "program": name, "runs": runs, "ns_per_run": ns });
        // Every mode's figures for one workload: `base` scales the rounds, `k` the modes.
        let workload = |script: &str, threads: u32, base: f64, cpu: f64| {
            let mut per_s = serde_json::Map::new();
            let mut cpu_us = serde_json::Map::new();
            let (mut ratio, mut delta, mut own, mut emitted, mut lost) =
                (serde_json::Map::new(), serde_json::Map::new(), serde_json::Map::new(), serde_json::Map::new(), serde_json::Map::new());
            for (k, m) in MODES.iter().enumerate() {
                let k = k as f64;
                per_s.insert(m.key.into(), json!([base - 1000.0 * k + 1.0, base - 1000.0 * k + 3.0]));
                cpu_us.insert(m.key.into(), json!([cpu + k, cpu + k + 0.2]));
                if k > 0.0 {
                    ratio.insert(m.key.into(), stat(0.9 - 0.01 * k, 0.85 - 0.01 * k, 0.95 - 0.01 * k));
                    delta.insert(m.key.into(), stat(0.011 * k, 0.001 * k, 0.021 * k));
                    own.insert(m.key.into(), json!(0.5 + k));
                    emitted.insert(m.key.into(), json!(4242420 + k as u64));
                    lost.insert(m.key.into(), json!(k as u64 - 1));
                }
            }
            json!({
                "script": script, "threads": threads, "rounds": 7, "round_secs": 4.0,
                "per_s": per_s, "cpu_us_per_op": cpu_us, "throughput_ratio": ratio, "cpu_per_op_delta": delta,
                "observer_cpu_us_per_op": own, "emitted": emitted, "lost": lost, "handshakes_seen": {},
            })
        };
        let stats_round = |per_s: f64, us: f64, runs: f64, programs: Value| json!({ "per_s": per_s, "ops": 1000, "cpu_us_per_op": 1.0, "program_us_per_op": us, "program_runs_per_op": runs, "programs": programs });
        json!({
            "machine": {
                "cores": 3, "kernel": "6.66.6-synthetic", "cpu": "Synthetic CPU", "mariadb": "mariadbd Ver 10.11.99",
                "sysbench": "sysbench 9.9.9", "tcpdump": "tcpdump version 8.8.8", "strace": "strace -- version 7.7",
            },
            "conditions": { "load_average_before": "1.23 4.56 7.89", "load_average_after": "2.34 5.67 8.91", "other_tracepoint_programs_max": 19 },
            "quick": true,
            "default_attach": "raw",
            "rounds": 7,
            "round_secs": 4.0,
            "workloads": {
                "connect": workload("tests/sysbench/connect.lua", 5, 12345.0, 61.0),
                "select1": workload("tests/sysbench/select1.lua", 3, 310000.0, 9.7),
            },
            "unrelated_syscalls": {
                "iterations": 100,
                "ns": { "untraced": [150.0, 151.0], "json": [223.0, 224.0], "json_tracepoints": [290.0, 291.0], "socket": [150.5, 151.5] },
                "added_ns": { "json": stat(73.0, 71.0, 76.0), "json_tracepoints": stat(139.0, 133.0, 144.0), "socket": stat(1.0, -1.0, 2.0) },
                "socket_ns": { "untraced": [1000.0, 1001.0], "json": [1100.0, 1101.0], "json_tracepoints": [1200.0, 1201.0], "socket": [1017.0, 1018.0] },
                "socket_added_ns": {
                    "json": stat(101.0, 99.0, 103.0), "json_tracepoints": stat(201.0, 199.0, 203.0), "socket": stat(17.0, 15.0, 19.0),
                },
            },
            "kernel": {
                "statistics_rounds": {
                    "json": {
                        "connect": stats_round(13579.0, 6.54, 37.0, json!([program("raw_sys_exit", 31000, 163.0), program("inet_sock_set_s", 11000, 77.0)])),
                        "select1": stats_round(97531.0, 0.43, 6.1, json!([])),
                    },
                    "json_tracepoints": {
                        "connect": stats_round(12468.0, 7.65, 43.0, json!([program("sys_exit_accept", 900, 611.0)])),
                        "select1": stats_round(86420.0, 0.87, 8.3, json!([])),
                    },
                    "socket": {
                        "connect": stats_round(11111.0, 0.59, 31.0, json!([program("sock_recv_length", 3210, 55.0), program("cgroup_skb_egress", 4321, 66.0)])),
                        "select1": stats_round(99999.0, 0.041, 9.5, json!([program("cgroup_skb_ingress", 12345, 21.0)])),
                    },
                },
                "empty_programs": {
                    "cgroup": "/synthetic/cgroup",
                    "workloads": {
                        "connect": stats_round(1.0, 0.0, 0.0, json!([
                            program("noop_sock_recv", 2000, 10.0), program("noop_sock_send", 1000, 12.0), program("noop_skb_in", 3000, 4.0),
                            program("noop_skb_out", 3000, 6.0), program("noop_set_state", 9000, 30.0), program("noop_btf_state", 9000, 8.0),
                        ])),
                        "select1": stats_round(1.0, 0.0, 0.0, json!([
                            program("noop_sock_recv", 3000, 10.0), program("noop_sock_send", 2000, 11.0), program("noop_skb_in", 2000, 5.0),
                            program("noop_skb_out", 2000, 5.0),
                        ])),
                    },
                },
            },
            "tracer": {
                "cpu_seconds": 3.25,
                "cpu_percent_of_one_core": 12.3,
                "peak_rss_kb": 27136,
                "events_emitted": 4242421,
                "events_lost": 0,
                "handshakes": 535353,
                "events_per_handshake": 6.7,
            },
        })
    }

    #[test]
    fn the_report_renders_the_run_s_figures_and_no_figures_of_an_earlier_day() {
        let text = report(&synthetic());
        for this_run in [
            // Targets and side by side: CPU per operation first, throughput next to it.
            "+1.1 % (spread +0.1 to +2.1 %)",  // CPU per op vs untraced, watch -j
            "89.0 % (spread 84.0–94.0 %)",     // throughput ratio, watch -j
            "| met |",                         // +1.1 % ≤ +3 % per handshake
            "| **missed** |",                  // +1.1 % > +1 % per query
            "+6.6 % (spread +0.6 to +12.6 %)", // tcpdump (mode 6)
            "+7.7 % (spread +0.7 to +14.7 %)", // strace (mode 7)
            "84.0 % (spread 79.0–89.0 %)",     // tcpdump's throughput ratio
            "73 ns (spread 71 to 76)",         // unrelated, added per syscall
            "139 ns (spread 133 to 144)",      // the same, --attach tracepoints
            // Sections 1 and 2: every mode's rounds and CPU per operation.
            "| `untraced` | 12346, 12348 |", // handshake rounds
            "| `strace -f -p` | 5346, 5348 |",
            "| `tcpdump -w` | 304001, 304003 |", // query rounds
            "61.1 µs",                           // untraced CPU per handshake (median)
            "68.1 µs",                           // strace's
            "9.8 µs",                            // untraced CPU per query
            "1.5 µs",                            // the tracer's own CPU per op (watch -j)
            "6.5 µs",                            // tcpdump's own
            "0 / 4242421 events",                // watch -j, lost / emitted
            "5 dropped / 4242426 packets",       // tcpdump
            "5 sysbench threads",
            "tests/sysbench/select1.lua",
            "sysbench 9.9.9",
            "tcpdump version 8.8.8",
            "strace -- version 7.7",
            "BENCH_QUICK=1", // a smoke run says so
            // Kernel, tracer, machine, conditions.
            "6.5 µs and 37 program runs per handshake",
            "0.43 µs and 6.1 program runs per query, 4.4 % of an untraced query's", // 0.43 / 9.8
            "77 ns per run",                                                        // inet_sock_set_state
            "11.0 runs per handshake",                                              // its runs over the statistics round's ops
            "6.7 in this run",                                                      // events per handshake
            "26.5 MB",                                                              // peak RSS
            "12.3 % of one core",
            "3 cores",
            "1.23 4.56 7.89 before the run",
            "2.34 5.67 8.91 after it",
            "at most\n19 tracepoint programs of other tracers",
            "took 9.8 µs of CPU",           // untraced SELECT 1, measured
            "to 310003 queries per second", // untraced query rounds: 310001 to 310003
            "CPU per operation is the figure to trust under load",
            // The socket tier's targets and notes. Its mode is the 2nd after untraced (k = 2).
            "| CPU per established `SELECT 1` ≤ +0.5 % over untraced | +2.2 % (spread +0.2 to +4.2 %)",
            "0.041 µs = 0.42 % | | met |",            // 0.041 / 9.8 ≤ 0.5 %
            "0.590 µs = 0.97 % | | met |",            // 0.59 / 61.1 ≤ 1 %
            "1 ns (spread -1 to 2) | | met |",          // getppid, within the untraced spread (1 ns)
            "17 ns (spread 15 to 19) | | met |",        // socket call ≤ 20 ns
            "1 lost of 4242422 emitted | | **missed** by 1 events |",
            "| +2.2 % (spread +0.2 to +4.2 %) | 88.0 % (spread 83.0–93.0 %) | **missed** by 1.7 points |", // 2.2 - 0.5
            "101 ns (spread 99 to 103)",                // the syscall tier's socket call
            "3.2 runs per op at 55 ns",                 // sock_recv_length, 3210 runs / 1000 ops
            "12.3 runs per op at 21 ns",                // cgroup_skb_ingress on queries
            "9.5 program runs per query",
            // The floor: empty programs, per 1000 ops. Handshakes: 2×10 + 1×12 + 3×4 + 3×6 + 9×8 = 134 ns;
            // queries: 3×10 + 2×11 + 2×5 + 2×5 = 72 ns (the classic set_state, unused, left out).
            "| `tp_btf/sock_send_length` | 12 | 11 | 1.0 | 2.0 |",
            "| `tracepoint/sock/inet_sock_set_state` (the fallback; not used here) | 30 | – | 9.0 | 0.0 |",
            "`cgroup_skb` on /synthetic/cgroup",
            // Queries: 72 ns over 9 runs of the used hooks (3 + 2 + 2 + 2).
            "hooks, cost 8 ns per run there and 0.072 µs per query, 0.73 % of an untraced query's CPU",
            "empty programs alone take 0.13 µs per handshake (0.22 % of an untraced\nhandshake's CPU) and 0.072 µs per query (0.73 %",
            "+3.3 % (spread +0.3 to +6.3 %)",           // the agent (k = 3)
            "| CPU per handshake ≤ +1.0 % over untraced (`agent`) | +3.3 % (spread +0.3 to +6.3 %) | 87.0 % (spread 82.0–92.0 %) | **missed** by 2.3 points |",
        ] {
            assert!(text.contains(this_run), "missing {this_run:?}:\n{text}");
        }
        // Figures measured on an earlier day, once written into every report.
        for earlier in ["97.2", "95.2", "41 ns", "118 to 91", "62 ns", "70 ns", "11.2 µs", "8.7 µs", "98.5", "95.9", "88 %", "2026-", "n/a"]
        {
            assert!(!text.contains(earlier), "an earlier day's {earlier:?} in the report:\n{text}");
        }
    }
}
