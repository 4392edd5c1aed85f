use std::{
    io::Write,
    sync::{atomic::AtomicBool, Arc},
    time::Duration,
};

use anyhow::Result;
use clap::{CommandFactory, Parser, Subcommand};
use handshake_trace::{
    capture::probes::{AttachMode, CaptureTier},
    commands::{agent, analyze, doctor, watch},
    export::abnormal_log::LogTarget,
    output, pipeline,
    support::{pipe, terminal},
    verdict::Verdict,
};
use handshake_trace_lab as lab;

const EXAMPLES: &str = "\
EXAMPLES:
    handshake-trace doctor               # can this machine trace? which servers are there?
    handshake-trace watch                # every mysqld/mariadbd, including ones started later
    handshake-trace watch -p 1234        # only pid 1234
    handshake-trace watch --port 3306    # only connections accepted on port 3306 (filtered in the kernel)
    handshake-trace watch --slow 100     # also timelines of successful handshakes slower than 100 ms
    handshake-trace watch --rollup 10    # successes as a roll-up every 10 s, with a table of who failed and how
    handshake-trace watch --brief        # one line per handshake; repeated failures folded with a count
    handshake-trace watch --brief --timeline server_timeout   # ... and the timeline of each server_timeout
    handshake-trace watch --failed --user app --client 10.0.0.0/8   # only app's failed logins from 10/8
    handshake-trace watch --date --color never   # full dates, no colour (NO_COLOR=1 does the same for colour)
    COLUMNS=100 handshake-trace watch 2>&1 | less -R   # fit lines to 100 columns even through a pipe
    handshake-trace watch -j -d 60 > handshakes.jsonl   # JSON Lines for one minute
    handshake-trace watch -j --timeline none --rollup 60 --json-summary   # compact JSON: no timelines, rollup and summary records
    handshake-trace record -o monday.htrace -d 3600     # save an hour; secrets are zeroed
    handshake-trace analyze monday.htrace               # replay it anywhere, no root
    handshake-trace lab                  # connect_timeout explained: old alarm server vs modern poll server
    handshake-trace agent                # long-running: Prometheus metrics on 127.0.0.1:9464, abnormal log on stdout
    handshake-trace completions bash > /etc/bash_completion.d/handshake-trace

EXIT STATUS:
    0   success; also when the reader of stdout went away (`watch | head -2`): the trace
        stops and the summary still goes to stderr
    1   runtime error (no privileges, no server found, a file that cannot be read); doctor: a check failed
    2   usage error (an unknown option, a value that does not parse)
";

const AGENT_EXAMPLES: &str = "\
EXAMPLES:
    handshake-trace agent                                   # every server; metrics on http://127.0.0.1:9464/metrics
    handshake-trace agent --listen 0.0.0.0:9464 --port 3306 # scraped from other hosts; port 3306 only
    handshake-trace agent --log /var/log/handshake-trace/abnormal.jsonl --log-max-bytes 16777216 --log-keep 3
    handshake-trace agent --top-k 10 --top-window 600       # curl http://127.0.0.1:9464/top: who failed most in 10 min
    handshake-trace agent --top-users                       # /top names the users too (what clients typed)
    handshake-trace agent --listen 0.0.0.0:9464 --web-config /etc/handshake-trace/web.yml   # TLS + basic auth
    handshake-trace agent --flight-dir /var/lib/handshake-trace/flight   # then: handshake-trace analyze FILE
    kill -HUP $(pidof handshake-trace)                      # reopen the log file (after logrotate moved it)
";

const LAB_EXAMPLES: &str = "\
EXAMPLES:
    handshake-trace lab --list
    handshake-trace lab                          # connect-timeout: both server styles side by side
    handshake-trace lab starved-client           # a client paused with SIGSTOP after the greeting
    handshake-trace lab slow-dns                 # the server's name lookup stalls before the greeting
    handshake-trace lab --capture socket timeout-poll   # as the socket capture tier sees it
    handshake-trace lab --server mariadb timeout-poll   # the same on a real MariaDB (needs it installed)
    handshake-trace lab --server mariadb --port 3399 wrong-password   # ... listening on port 3399
    handshake-trace lab --port 3399 normal       # the built-in server on port 3399
";

#[derive(Parser)]
#[command(
    name = "handshake-trace",
    version,
    about = "Trace MySQL/MariaDB connection handshakes from kernel tracepoints",
    long_about = "Trace MySQL/MariaDB connection handshakes on a running server, from kernel \
                  tracepoints: no debug build, no restart, no packet capture. Needs root \
                  (or CAP_BPF + CAP_PERFMON).",
    after_help = EXAMPLES
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

/// The ring buffer's bounds in KiB: a page, and 1 GiB.
const RINGBUF_KB: std::ops::RangeInclusive<i64> = 4..=1_048_576;

/// A number of milliseconds or a rate: finite, not negative.
fn non_negative(s: &str) -> Result<f64, String> {
    let v: f64 = s.parse().map_err(|_| format!("`{s}` is not a number"))?;
    if !v.is_finite() || v < 0.0 {
        return Err(format!("`{s}` is not a finite number of 0 or more"));
    }
    Ok(v)
}

/// A finite number above 0.
fn positive(s: &str) -> Result<f64, String> {
    match non_negative(s)? {
        v if v > 0.0 => Ok(v),
        _ => Err(format!("`{s}` is not above 0")),
    }
}

/// Process ids as one `-p` value gives them: "1234", "1234 5678" or "1234,5678".
#[derive(Clone, Debug)]
struct PidList(Vec<u32>);

impl std::str::FromStr for PidList {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let pids: Vec<u32> = s
            .split(|c: char| c.is_whitespace() || c == ',')
            .filter(|p| !p.is_empty())
            .map(|p| p.parse().map_err(|_| format!("`{p}` is not a process id")))
            .collect::<Result<_, _>>()?;
        if pids.is_empty() {
            return Err("no process id given".into());
        }
        Ok(PidList(pids))
    }
}

impl PidList {
    /// Every pid given, at most as many as the kernel's target map holds.
    fn flatten(lists: &[PidList]) -> Result<Vec<u32>> {
        let pids: Vec<u32> = lists.iter().flat_map(|l| l.0.iter().copied()).collect();
        let max = handshake_trace_common::MAX_TARGETS as usize;
        if pids.len() > max {
            anyhow::bail!("-p gave {} processes: at most {max} can be traced at once", pids.len());
        }
        Ok(pids)
    }
}

/// A `--timeline` value: a verdict, or all, or none.
#[derive(Clone, Copy, Debug)]
enum TimelineChoice {
    All,
    None,
    Verdict(Verdict),
}

fn parse_timeline(s: &str) -> Result<TimelineChoice, String> {
    match s {
        "all" => Ok(TimelineChoice::All),
        "none" => Ok(TimelineChoice::None),
        v => output::brief::parse_verdict(v).map(TimelineChoice::Verdict).map_err(|e| format!("{e}, all or none")),
    }
}

/// How handshakes are printed (watch, record, analyze).
#[derive(clap::Args, Clone)]
#[command(group = clap::ArgGroup::new("shape").args(["json", "brief"]).multiple(false))]
struct OutputArgs {
    /// JSON Lines output, one object per handshake (fields: docs/json.md).
    #[arg(short = 'j', long)]
    json: bool,
    /// Show the full timeline of successful handshakes slower than this.
    #[arg(long, value_name = "MS", value_parser = non_negative)]
    slow: Option<f64>,
    /// Every SECS, a roll-up of the handshakes since the last one: counts by verdict, the
    /// successes' p50/p99/max and the grouped table (--top); successful handshakes are
    /// shown only there, failures (and --slow ones) still each. With -j: a JSON record
    /// `{"type":"rollup",...}` each time (docs/json.md).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    rollup: Option<u64>,
    /// One line per handshake, failures included (verdict, user@client, server, duration,
    /// the ERR code or the reason in a few words, and whose side a failure is on);
    /// identical failures (user, client host, verdict, ERR code) within 10 s are folded
    /// into one line with a count. Text output.
    #[arg(long)]
    brief: bool,
    /// Which handshakes carry their timeline, by verdict: `all`, `none` or a list, e.g.
    /// `--timeline server_timeout,client_reset`. With --brief the timeline is printed
    /// under the line (default: none; a folded repeat prints none); with -j it is the
    /// `events` array (default: all; with `--timeline none` an `ok` record is ~0.8 KB instead of
    /// ~2.5 KB).
    #[arg(long, value_name = "VERDICT[,VERDICT]|all|none", value_delimiter = ',', value_parser = parse_timeline, requires = "shape")]
    timeline: Vec<TimelineChoice>,
    /// Rows of the grouped table (by user, client host, verdict, ERR code and blame) in
    /// the summary and each roll-up; 0: no table.
    #[arg(long, value_name = "N", default_value_t = output::summary::DEFAULT_TOP)]
    top: usize,
    /// With -j: also write the summary to stdout as a last JSON record,
    /// `{"type":"summary",...}` (docs/json.md). The text summary goes to stderr either way.
    #[arg(long, requires = "json")]
    json_summary: bool,
    #[command(flatten)]
    select: SelectArgs,
    /// Colour the verdicts: `auto` (when stdout is a terminal and NO_COLOR is not set),
    /// `always` or `never`.
    #[arg(long, value_name = "WHEN", value_enum, default_value_t = terminal::ColorChoice::Auto)]
    color: terminal::ColorChoice,
    /// Times with the date, "2026-11-30 22:33:22.820" (local time), in lines and notices.
    #[arg(long)]
    date: bool,
    /// Probes — port checks (`nc -z`, a TCP check) and health checks (HAProxy
    /// `mysql-check user X`, `mysqladmin ping`) — are counted apart in the summary
    /// whatever this says: `fold` (one line for the first of a client's, then a count
    /// every 10 s), `show` (one line each), `hide` (not printed; -j: no record). Never a
    /// timeline unless --timeline names its verdict.
    #[arg(long, value_name = "show|fold|hide", value_enum, default_value_t = output::brief::ProbeView::Fold)]
    probes: output::brief::ProbeView,
    /// Also print every raw kernel event (for debugging the tracer).
    #[arg(long, hide = true)]
    events: bool,
}

/// Which finished handshakes are shown and counted (watch, record, analyze). Given
/// several options, a handshake must match each; given one several values, any of them.
/// The summary says how many were left out.
#[derive(clap::Args, Clone)]
struct SelectArgs {
    /// Only handshakes that did not end `ok`.
    #[arg(long)]
    failed: bool,
    /// Only these verdicts, e.g. `--verdict auth_failed,server_timeout`.
    #[arg(long, value_name = "VERDICT[,VERDICT]", value_delimiter = ',', value_parser = output::brief::parse_verdict)]
    verdict: Vec<Verdict>,
    /// Only logins as this user (exact; repeatable). A handshake without a login (a port
    /// check, a timeout before it, TLS) matches no user.
    #[arg(long, value_name = "NAME", value_parser = parse_user)]
    user: Vec<String>,
    /// Only clients at this address or in this network (repeatable, or comma-separated):
    /// `10.1.2.3`, `10.0.0.0/8`, `fd00::/8`, or `unix` for the server's Unix socket.
    #[arg(long, value_name = "ADDR|CIDR|unix", value_delimiter = ',')]
    client: Vec<pipeline::ClientMatch>,
}

fn parse_user(s: &str) -> Result<String, String> {
    if s.is_empty() {
        return Err("an empty user name matches no login".into());
    }
    Ok(s.to_string())
}

impl SelectArgs {
    fn selection(&self) -> pipeline::Selection {
        pipeline::Selection { failed: self.failed, verdicts: self.verdict.clone(), users: self.user.clone(), clients: self.client.clone() }
    }
}

/// What to trace (watch, record).
#[derive(clap::Args, Clone)]
struct WatchArgs {
    /// Trace these processes (repeatable; one value may list several, as `-p "$(pidof
    /// mariadbd)"` gives them). Default: every process named mysqld or mariadbd whose
    /// executable is a root-owned file of that name, including ones started later
    /// (others are refused with a warning; docs/usage.md "Which processes are traced").
    #[arg(short = 'p', long = "pid", value_name = "PID")]
    pids: Vec<PidList>,
    /// Keep only connections accepted on this local port. Filtered in the kernel: another
    /// port's connections are counted there and cost no events.
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    port: Option<u16>,
    /// Stop after this many seconds (default: until Ctrl-C).
    #[arg(short = 'd', long = "duration", value_name = "SECS")]
    duration: Option<u64>,
    #[command(flatten)]
    capture: CaptureArgs,
    #[command(flatten)]
    server: ServerArgs,
    #[command(flatten)]
    output: OutputArgs,
}

/// The servers' own settings the verdicts depend on, when they should not be read from
/// their command line and option files (watch, record, agent, analyze).
#[derive(clap::Args, Clone)]
struct ServerArgs {
    /// The servers' connect_timeout in seconds, over what their command line and option
    /// files say (the tracer reads those itself; SET GLOBAL changes it without either).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(2..=31_536_000))]
    connect_timeout: Option<u64>,
    /// The servers' max_connect_errors, over what their command line and option files say:
    /// the handshake errors from one client host before the server blocks it (ERR 1129).
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u64).range(1..=4_294_967_295))]
    max_connect_errors: Option<u64>,
}

impl ServerArgs {
    fn overrides(&self) -> handshake_trace::config::Overrides {
        handshake_trace::config::Overrides { connect_timeout_s: self.connect_timeout, max_connect_errors: self.max_connect_errors }
    }
}

impl WatchArgs {
    fn options(&self, record: Option<std::path::PathBuf>) -> Result<watch::WatchOptions> {
        Ok(watch::WatchOptions {
            pids: PidList::flatten(&self.pids)?,
            port: self.port,
            server: self.server.overrides(),
            record,
            ..self.capture.options(self.output.options())?
        })
    }
}

/// How the kernel side captures, shared by watch, record and the agent.
#[derive(clap::Args, Clone)]
struct CaptureArgs {
    /// Kernel-to-userspace ring buffer size in KiB (rounded up to a power of two), 4 to 1048576.
    #[arg(long, value_name = "KIB", default_value_t = 4096, value_parser = clap::value_parser!(u32).range(RINGBUF_KB))]
    ringbuf_kb: u32,
    /// How the syscall programs attach: `raw` (raw_syscalls, the default on x86-64: measured
    /// cheaper) or `tracepoints` (one per syscall); see docs/performance.md.
    #[arg(long, value_name = "MODE", value_enum)]
    attach: Option<AttachMode>,
    /// Which hooks capture the handshakes: `socket` (the default, measured cheapest:
    /// socket and packet hooks only, nothing on the syscall path, so other processes pay
    /// nothing; TCP and Unix-socket clients (Linux 6.6+); fds, waits, fcntl, socket options
    /// and timers are not seen)
    /// or `syscalls` (the full story, at the cost of every task of the host taking the slow
    /// syscall path while attached); docs/performance.md. `doctor` says which this kernel
    /// supports.
    #[arg(long, value_name = "TIER", value_enum, default_value_t = CaptureTier::Socket)]
    capture: CaptureTier,
}

impl CaptureArgs {
    /// `base` with the ring size, the attachment and the tier asked for.
    fn options(&self, base: watch::WatchOptions) -> Result<watch::WatchOptions> {
        Ok(watch::WatchOptions {
            ringbuf_bytes: Some(self.ringbuf_kb.saturating_mul(1024)),
            attach: self.attach.unwrap_or_default().usable()?,
            capture: self.capture,
            ..base
        })
    }
}

impl OutputArgs {
    fn options(&self) -> watch::WatchOptions {
        watch::WatchOptions {
            json: self.json,
            raw_events: self.events,
            slow_ms: self.slow,
            rollup_secs: self.rollup,
            brief: self.brief,
            timeline: self.timeline_set(),
            top: self.top,
            select: self.select.selection(),
            term: self.terminal(1, self.color),
            notices: self.terminal(2, terminal::ColorChoice::Never),
            probes: self.probes,
            ..Default::default()
        }
    }

    /// The verdicts `--timeline` names, or None when it was not given (the mode's default).
    fn timeline_set(&self) -> Option<output::brief::VerdictSet> {
        if self.timeline.is_empty() {
            return None;
        }
        let mut set = output::brief::VerdictSet::default();
        for choice in &self.timeline {
            match choice {
                TimelineChoice::All => Verdict::ALL.iter().for_each(|v| set.insert(*v)),
                TimelineChoice::None => {}
                TimelineChoice::Verdict(v) => set.insert(*v),
            }
        }
        Some(set)
    }

    /// The summary: text to stderr (fitted to `notices`), and with --json-summary a JSON
    /// record to stdout.
    fn summary(&self, summary: &watch::Summary, notices: &output::columns::Terminal, stdout: &mut dyn Write, stderr: &mut dyn Write) -> Result<()> {
        if self.json_summary {
            writeln!(stdout, "{}", output::records::summary_json(summary, self.top))?;
            stdout.flush()?;
        }
        watch::print_summary_on(summary, self.top, stderr, notices)
    }

    /// How text written to `fd` (1 stdout, 2 stderr) looks: fitted to its terminal (or `COLUMNS`), coloured as asked.
    fn terminal(&self, fd: i32, color: terminal::ColorChoice) -> output::columns::Terminal {
        let (width, color) = terminal::detect(fd, color);
        output::columns::Terminal { width, color, date: self.date }
    }
}

/// The agent's own options (docs/agent.md).
#[derive(clap::Args, Clone)]
struct AgentArgs {
    /// Trace these processes (repeatable; one value may list several). Default: every
    /// mysqld/mariadbd whose executable is a root-owned file of that name, including ones
    /// started later (others are refused, counted in handshake_trace_targets_refused_total).
    #[arg(short = 'p', long = "pid", value_name = "PID")]
    pids: Vec<PidList>,
    /// Keep only connections accepted on this local port.
    #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    port: Option<u16>,
    /// Serve /metrics, /healthz, /readyz and /top on this address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:9464")]
    listen: std::net::SocketAddr,
    /// Basic authentication and TLS for the endpoints, from a file like node_exporter's
    /// web config (basic_auth_users with bcrypt hashes; tls_server_config with cert_file
    /// and key_file). /healthz and /readyz stay open.
    #[arg(long, value_name = "FILE")]
    web_config: Option<std::path::PathBuf>,
    /// HTTP connections open at once at most (also at most a quarter of the open-files
    /// limit). At the cap, the oldest connection that never sent a request (else the one
    /// idle longest) is closed for the new one; when all had a request within the last
    /// second, the new one is closed.
    #[arg(long, value_name = "N", default_value_t = 64, value_parser = clap::value_parser!(u64).range(1..=16384))]
    web_max_connections: u64,
    /// Seconds a client has to send a request's head (and to finish TLS).
    #[arg(long, value_name = "SECS", default_value_t = 10, value_parser = clap::value_parser!(u64).range(1..=3600))]
    web_header_timeout: u64,
    /// Seconds a connection may stay without a request before it is closed.
    #[arg(long, value_name = "SECS", default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..=86400))]
    web_idle_timeout: u64,
    /// /metrics and /top requests answered a second at most (429 past it): encoding them
    /// takes the agent's thread, which must keep reading the kernel's events.
    #[arg(long, value_name = "PER_SEC", default_value_t = 50.0, value_parser = positive)]
    web_rate: f64,
    /// The log of abnormal handshakes (one JSON object each): a file, or - for stdout (journald).
    #[arg(long, value_name = "FILE|-", default_value = "-")]
    log: String,
    /// Rotate the log file past this size (FILE.1, FILE.2, ...).
    #[arg(long, value_name = "N", default_value_t = 67_108_864)]
    log_max_bytes: u64,
    /// Rotated log files kept.
    #[arg(long, value_name = "N", default_value_t = 5)]
    log_keep: usize,
    /// Log records a second at most; the rest are counted as dropped.
    #[arg(long, value_name = "PER_SEC", default_value_t = 100.0, value_parser = positive)]
    log_rate: f64,
    /// Flight recorder: keep the last seconds of raw events and write them to a trace file
    /// here when a handshake ends abnormally (replay it with `analyze`). Off by default.
    #[arg(long, value_name = "DIR")]
    flight_dir: Option<std::path::PathBuf>,
    /// Flight recorder: seconds of raw events kept in memory.
    #[arg(long, value_name = "S", default_value_t = 10)]
    flight_seconds: u64,
    /// Flight recorder: memory for its ring of events, in KiB (at most 65536). At high
    /// rates this, not --flight-seconds, bounds how far back it reaches:
    /// handshake_trace_flight_window_seconds says how far.
    #[arg(long, value_name = "KIB", default_value_t = 4096, value_parser = clap::value_parser!(u64).range(1..=65536))]
    flight_ring_kb: u64,
    /// Flight recorder: trace files kept at most.
    #[arg(long, value_name = "N", default_value_t = 50)]
    flight_max_files: usize,
    /// Flight recorder: bytes of trace files kept at most.
    #[arg(long, value_name = "N", default_value_t = 268_435_456)]
    flight_max_bytes: u64,
    /// Flight recorder: write files for port checks too (a client that connected and
    /// left without a byte). Off by default: a port-check flood would fill the folder.
    #[arg(long)]
    flight_probes: bool,
    /// Clients served on /top.
    #[arg(long, value_name = "K", default_value_t = 20, value_parser = clap::value_parser!(u64).range(1..=1000))]
    top_k: u64,
    /// The sliding window of /top, in seconds (1 to 31536000, a year).
    #[arg(long, value_name = "SECS", default_value_t = 300, value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
    top_window: u64,
    /// /top (and the log's top-clients note) tells clients apart by user name too and
    /// shows the names. Off by default: a user name is what the client typed (a password
    /// typed into the user field, too), served to anyone who can reach the port.
    #[arg(long)]
    top_users: bool,
    /// Also export to an OpenTelemetry Collector over OTLP/HTTP (protobuf): the metrics of
    /// /metrics every OTEL_METRIC_EXPORT_INTERVAL ms (default 60000) and each abnormal
    /// handshake as a log record. A base URL such as http://127.0.0.1:4318 (/v1/metrics
    /// and /v1/logs are appended). Without it, OTEL_EXPORTER_OTLP_ENDPOINT (and the
    /// _METRICS_/_LOGS_ ones, _HEADERS, _TIMEOUT, OTEL_RESOURCE_ATTRIBUTES,
    /// OTEL_SERVICE_NAME) turn the export on. http only: https and gRPC are refused.
    #[arg(long, value_name = "URL")]
    otlp_endpoint: Option<String>,
    #[command(flatten)]
    capture: CaptureArgs,
    #[command(flatten)]
    server: ServerArgs,
    /// The agent's scheduling niceness (-20..19; 0 leaves it as started): a little above
    /// the host's other work by default, so a busy machine does not starve the reader of
    /// the ring buffer (events lost). Needs CAP_SYS_NICE to go below the inherited value;
    /// without it the agent warns and runs as started.
    #[arg(long, value_name = "N", default_value_t = -10, allow_negative_numbers = true, value_parser = clap::value_parser!(i32).range(-20..=19))]
    nice: i32,
    /// Probes (port checks, health checks): `hide` keeps them out of /top, the flight
    /// recorder and the abnormal log (they are counted, never alarmed: the metrics count
    /// them with a `probe` label, which the shipped failure-rate alert leaves out);
    /// `show` treats them as any handshake there.
    #[arg(long, value_name = "hide|show", value_enum, default_value_t = handshake_trace::export::AgentProbes::Hide)]
    probes: handshake_trace::export::AgentProbes,
}

impl AgentArgs {
    fn options(&self) -> Result<agent::AgentOptions> {
        let log = match self.log.as_str() {
            "-" => LogTarget::Stdout,
            path => LogTarget::File { path: path.into(), max_bytes: self.log_max_bytes, keep: self.log_keep },
        };
        Ok(agent::AgentOptions {
            watch: watch::WatchOptions {
                pids: PidList::flatten(&self.pids)?,
                port: self.port,
                server: self.server.overrides(),
                ..self.capture.options(watch::WatchOptions::default())?
            },
            nice: self.nice,
            probes: self.probes,
            listen: self.listen,
            http: agent::HttpOptions {
                max_connections: self.web_max_connections as usize,
                header_timeout: std::time::Duration::from_secs(self.web_header_timeout),
                idle_timeout: std::time::Duration::from_secs(self.web_idle_timeout),
                web: self.web_config.as_deref().map(agent::WebConfig::load).transpose()?,
            },
            top_users: self.top_users,
            web_rate: self.web_rate,
            log,
            log_rate: self.log_rate,
            top_k: self.top_k as usize,
            top_window_s: self.top_window,
            otlp: agent::OtlpOptions::resolve(self.otlp_endpoint.as_deref(), |k| std::env::var(k).ok())?,
            flight: self.flight_dir.as_ref().map(|dir| agent::FlightOptions {
                dir: dir.clone(),
                seconds: self.flight_seconds,
                max_files: self.flight_max_files,
                max_bytes: self.flight_max_bytes,
                ring_bytes: (self.flight_ring_kb * 1024) as usize,
                probes: self.flight_probes,
            }),
        })
    }
}

#[derive(Subcommand)]
enum Command {
    /// Attach to running servers and show each connection's handshake: a line when it
    /// went well, a timeline with a verdict when it did not.
    ///
    /// Lines are fixed columns (TIME VERDICT CLIENT USER MS DETAIL) under a header row,
    /// fitted to the terminal's width (else COLUMNS; a pipe gets whole lines). They print
    /// when each handshake ends (completion order), with the time of its accept.
    #[command(after_help = EXAMPLES)]
    Watch(WatchArgs),
    /// Like watch, and also save the raw events (secrets zeroed) to a trace file for `analyze`.
    Record {
        /// The trace file to write.
        /// An existing file is refused unless --force; a symbolic link is never followed.
        #[arg(short = 'o', long = "output", value_name = "FILE")]
        output: std::path::PathBuf,
        /// Replace FILE if it exists.
        #[arg(long)]
        force: bool,
        #[command(flatten)]
        watch: WatchArgs,
    },
    /// Replay a trace file from `record`: prints what watch printed live. No root needed.
    Analyze {
        /// The trace file.
        file: std::path::PathBuf,
        #[command(flatten)]
        output: OutputArgs,
        /// Keep only connections accepted on this local port.
        #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
        port: Option<u16>,
        /// A trace file does not hold the server's configuration: give what matters here.
        #[command(flatten)]
        server: ServerArgs,
    },
    /// Check that tracing can work here; list the MySQL servers found.
    Doctor,
    /// Run continuously: Prometheus metrics of every handshake, the top failing clients,
    /// a log of abnormal handshakes (docs/agent.md). Stops on SIGTERM/SIGINT; SIGHUP
    /// reopens the log file.
    #[command(after_help = AGENT_EXAMPLES)]
    Agent(AgentArgs),
    /// Teaching lab: start a server, run scripted clients, trace and explain (needs root).
    #[command(after_help = LAB_EXAMPLES)]
    Lab {
        /// Scenario to run (see --list).
        #[arg(default_value = "connect-timeout")]
        scenario: String,
        /// List the scenarios.
        #[arg(long)]
        list: bool,
        /// `builtin` (the lab's own server, both wait styles) or `mariadb` (a throwaway MariaDB).
        #[arg(long, value_enum, default_value_t = lab::ServerKind::Builtin)]
        server: lab::ServerKind,
        /// The port the lab's server listens on (default: a free one); a scenario with two
        /// built-in servers (connect-timeout) gives the second PORT+1.
        #[arg(long, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
        port: Option<u16>,
        /// JSON Lines output.
        #[arg(short = 'j', long)]
        json: bool,
        /// Also save the trace to FILE (replay with `analyze`).
        #[arg(long, value_name = "FILE")]
        record: Option<std::path::PathBuf>,
        /// Which hooks trace the scenario: `syscalls` (the default: the full story the lab
        /// teaches) or `socket` (what `--capture socket` sees; the verdicts are the same).
        #[arg(long, value_name = "TIER", value_enum, default_value_t = CaptureTier::Syscalls)]
        capture: CaptureTier,
    },
    /// The lab's built-in MySQL-protocol server (account lab / lab-password), loopback only.
    LabServer {
        /// How a connection thread waits for the login: `alarm` (MySQL 5.0: SIGALRM + EINTR) or `poll` (modern).
        #[arg(long, value_enum, default_value_t = lab::server::WaitStyle::Poll)]
        wait: lab::server::WaitStyle,
        /// TCP port on 127.0.0.1 (0 = any free port; the chosen one is printed).
        #[arg(long, default_value_t = 3307)]
        port: u16,
        /// Seconds to wait for the client's login (the server's connect_timeout), 1 to
        /// 31536000 (MariaDB's own bound).
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=31_536_000))]
        connect_timeout: u64,
        /// Reverse-resolve clients with this DNS server before the greeting.
        #[arg(long, value_name = "ADDR")]
        resolver: Option<std::net::SocketAddr>,
        /// The loopback address to listen on (127.0.0.1, or ::1 for IPv6).
        #[arg(long, default_value = "127.0.0.1", value_parser = loopback)]
        address: std::net::IpAddr,
        /// Listen with SO_REUSEPORT (several lab servers on one port).
        #[arg(long)]
        reuse_port: bool,
        /// Start listening only after this many milliseconds.
        #[arg(long, value_name = "MS", default_value_t = 0)]
        listen_after_ms: u64,
    },
    /// Print a shell completion script (bash, zsh, fish, elvish, powershell) to stdout.
    #[command(after_help = "EXAMPLES:\n    handshake-trace completions bash > /etc/bash_completion.d/handshake-trace\n    handshake-trace completions zsh > \"${fpath[1]}/_handshake-trace\"\n    handshake-trace completions fish > ~/.config/fish/completions/handshake-trace.fish")]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Write the man pages (handshake-trace.1 and one per command) into DIR (`cargo xtask man`).
    #[command(hide = true)]
    ManPages {
        dir: std::path::PathBuf,
    },
    /// The lab's scripted client (a real protocol client that can be delayed or frozen).
    #[command(hide = true)]
    LabClient {
        #[arg(long)]
        addr: std::net::SocketAddr,
        #[arg(long, default_value = "lab")]
        user: String,
        #[arg(long, default_value = "lab-password")]
        password: String,
        #[arg(long, default_value_t = 0)]
        delay_ms: u64,
        #[arg(long)]
        stop_after_greeting: bool,
    },
}

/// Every stop of a trace: Ctrl-C, SIGTERM or SIGHUP (`stopping`, set by the handlers
/// [`pipe::stop_on_signals`] installed before anything was attached), `duration`, or the
/// reader of stdout gone. All go through the same clean detach; from then on a stdout
/// nobody reads is given up rather than waited for.
async fn stop_or_closed(duration: Option<u64>, closed: Arc<AtomicBool>, stopping: Arc<AtomicBool>) {
    let timer = async {
        match duration {
            Some(d) => tokio::time::sleep(Duration::from_secs(d)).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = pipe::closed(stopping.clone()) => {}
        _ = timer => {}
        _ = pipe::closed(closed) => {}
    }
    stopping.store(true, std::sync::atomic::Ordering::SeqCst);
}

/// The man pages: (file name, roff) for the command and each visible subcommand.
fn man_pages() -> Result<Vec<(String, Vec<u8>)>> {
    let mut cmd = Cli::command().disable_help_subcommand(true);
    cmd.build();
    let mut pages = Vec::new();
    for c in std::iter::once(cmd.clone()).chain(cmd.get_subcommands().filter(|s| !s.is_hide_set()).cloned()) {
        let man = clap_mangen::Man::new(c).manual("handshake-trace manual");
        let mut page = Vec::new();
        man.render(&mut page)?;
        pages.push((man.get_filename(), page));
    }
    Ok(pages)
}

async fn run(cli: Cli) -> Result<i32> {
    // Signals stop a trace from the start: before the first read, before attaching.
    let stopping = Arc::new(AtomicBool::new(false));
    if matches!(cli.command, Command::Watch(_) | Command::Record { .. } | Command::Lab { list: false, .. }) {
        pipe::stop_on_signals(&stopping)?;
    }
    // A closed stdout ends a trace quietly (exit 0, summary on stderr), not as an error.
    // Line-buffered as std's stdout is; watch, record and analyze buffer more (below).
    let mut stdout = std::io::LineWriter::new(pipe::PipeWriter::new(pipe::Stdout::new(stopping.clone())));
    let closed = stdout.get_ref().closed();
    let mut stderr = std::io::stderr();
    match cli.command {
        Command::Watch(args) => {
            // One write per drain of the ring buffer, not one per line (stdout is line-buffered).
            let mut stdout = std::io::BufWriter::with_capacity(1 << 16, stdout);
            let opts = args.options(None)?;
            let summary = watch::run(&opts, &mut stdout, &mut stderr, stop_or_closed(args.duration, closed, stopping)).await?;
            stdout.flush()?;
            args.output.summary(&summary, &opts.notices, &mut stdout, &mut stderr)?;
            Ok(0)
        }
        Command::Record { output, force, watch: args } => {
            let mut stdout = std::io::BufWriter::with_capacity(1 << 16, stdout);
            // Refused before anything is attached (and again, atomically, when opened).
            handshake_trace::recording::recorder::check_new(&output, force)?;
            let opts = watch::WatchOptions { overwrite: force, ..args.options(Some(output.clone()))? };
            let summary = watch::run(&opts, &mut stdout, &mut stderr, stop_or_closed(args.duration, closed, stopping)).await?;
            stdout.flush()?;
            args.output.summary(&summary, &opts.notices, &mut stdout, &mut stderr)?;
            writeln!(stderr, "Trace written to {} (secrets zeroed); replay it with: handshake-trace analyze {}", output.display(), output.display())?;
            Ok(0)
        }
        Command::Analyze { file, output, port, server } => {
            let trace = analyze::read(&file)?;
            let opts = watch::WatchOptions { port, server: server.overrides(), ..output.options() };
            let mut stdout = std::io::BufWriter::with_capacity(1 << 16, stdout);
            let summary = analyze::analyze(&trace, &opts, &mut stdout, &mut stderr)?;
            stdout.flush()?;
            output.summary(&summary, &opts.notices, &mut stdout, &mut stderr)?;
            Ok(0)
        }
        Command::Agent(args) => {
            let summary = agent::run(&args.options()?, &mut stderr).await?;
            watch::print_summary(&summary, output::summary::DEFAULT_TOP, &mut stderr)?;
            Ok(0)
        }
        Command::Doctor => {
            let ok = doctor::report(&doctor::run_checks(), &mut stdout)?;
            Ok(if ok { 0 } else { 1 })
        }
        Command::Lab { scenario, list, server, port, json, record, capture } => {
            if list {
                lab::list(&mut stdout)?;
            } else {
                let (width, color) = terminal::detect(1, terminal::ColorChoice::Auto);
                let (notices, _) = terminal::detect(2, terminal::ColorChoice::Never);
                let term = output::columns::Terminal { width, color, date: false };
                let notices = output::columns::Terminal { width: notices, ..Default::default() };
                let lab = lab::LabOptions { server, port, capture, json, record, term, notices, stopping };
                lab::run(&scenario, lab, &mut stdout, &mut stderr).await?;
            }
            Ok(0)
        }
        Command::Completions { shell } => {
            clap_complete::generate(shell, &mut Cli::command(), "handshake-trace", &mut stdout);
            Ok(0)
        }
        Command::ManPages { dir } => {
            std::fs::create_dir_all(&dir)?;
            for (name, page) in man_pages()? {
                std::fs::write(dir.join(name), page)?;
            }
            Ok(0)
        }
        Command::LabServer { wait, port, connect_timeout, resolver, address, reuse_port, listen_after_ms } => {
            let cfg = lab::server::ServerConfig {
                style: wait,
                listen: std::net::SocketAddr::new(address, port),
                connect_timeout: Duration::from_secs(connect_timeout),
                resolver,
                reuse_port,
                listen_after: Duration::from_millis(listen_after_ms),
            };
            match lab::server::serve(&cfg, |addr| {
                println!("listening on {addr}");
                let _ = std::io::stdout().flush();
            })? {}
        }
        Command::LabClient { addr, user, password, delay_ms, stop_after_greeting } => {
            let plan = lab::client::ClientPlan { addr, user, password, delay: Duration::from_millis(delay_ms), stop_after_greeting };
            match lab::client::run(&plan) {
                Ok(msg) => {
                    println!("{msg}");
                    Ok(0)
                }
                Err(msg) => {
                    println!("{msg}");
                    Ok(1)
                }
            }
        }
    }
}

/// A loopback address (the lab server listens nowhere else).
fn loopback(s: &str) -> Result<std::net::IpAddr, String> {
    let ip: std::net::IpAddr = s.parse().map_err(|e| format!("{e}"))?;
    if ip.is_loopback() {
        Ok(ip)
    } else {
        Err(format!("{ip} is not a loopback address"))
    }
}

fn main() {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("tokio runtime");
    let code = match rt.block_on(run(cli)) {
        Ok(code) => code,
        Err(e) => {
            let _ = std::io::stdout().flush();
            eprintln!("handshake-trace: error: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// docs/man/ is what the CLI generates now: a changed option without `cargo xtask man` fails.
    #[test]
    fn committed_man_pages_match_the_cli() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../docs/man");
        let pages = man_pages().unwrap();
        let names: Vec<&str> = pages.iter().map(|(n, _)| n.as_str()).collect();
        for want in ["handshake-trace.1", "handshake-trace-watch.1", "handshake-trace-record.1", "handshake-trace-analyze.1", "handshake-trace-doctor.1", "handshake-trace-agent.1", "handshake-trace-lab.1"] {
            assert!(names.contains(&want), "{want} not generated: {names:?}");
        }
        for (name, page) in &pages {
            let committed = std::fs::read(dir.join(name)).unwrap_or_default();
            assert!(committed == *page, "docs/man/{name} differs from what the CLI generates: run `cargo xtask man`");
        }
        let mut on_disk: Vec<String> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        on_disk.sort();
        let mut generated: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        generated.sort();
        assert_eq!(on_disk, generated, "docs/man/ holds pages the CLI no longer has");
        let top = String::from_utf8_lossy(&pages[0].1);
        assert!(top.contains("EXIT STATUS") && top.contains("usage error"), "exit codes are documented");
    }

    #[test]
    fn bash_completion_names_the_subcommands() {
        let mut out = Vec::new();
        clap_complete::generate(clap_complete::Shell::Bash, &mut Cli::command(), "handshake-trace", &mut out);
        let script = String::from_utf8(out).unwrap();
        assert!(script.contains("complete -F _handshake__trace"), "{script}");
        for sub in ["watch", "record", "analyze", "doctor", "agent", "lab", "completions"] {
            assert!(script.contains(sub), "{sub} missing from the bash completion");
        }
        assert!(script.contains("--slow") && script.contains("--rollup"), "options are completed too");
    }

    #[test]
    fn the_cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }
}
