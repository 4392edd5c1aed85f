//! `lab`: reproducible `connect_timeout` scenarios, traced live and explained. The
//! server is the built-in one (`lab-server`, both wait styles) or, with `--server
//! mariadb`, a throwaway MariaDB; clients are the `mariadb` CLI, PyMySQL (a real
//! driver) when installed, and the lab's own scripted client (`lab-client`).

use std::{
    io::{BufRead, BufReader, Write},
    net::SocketAddr,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use anyhow::{bail, Context, Result};

use handshake_trace::{
    capture::probes::CaptureTier,
    commands::watch::{self, Outcome, WatchOptions},
    output::{blame, names, reason},
    support::{escape::escaped, pipe},
    verdict::{Cause, LateGreeting, Verdict, WaitMechanism},
};

use crate::{
    mariadb::{MariaDb, MariaDbOptions, LAB_PASSWORD, LAB_USER},
    dns, mariadb,
    server::WaitStyle,
};

/// The lab's connect_timeout, in seconds (the server's; clients wait longer or shorter on purpose).
pub const CONNECT_TIMEOUT_S: u64 = 2;

/// Which server a scenario runs against.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ServerKind {
    /// The lab's own server, both wait styles.
    #[default]
    Builtin,
    /// A throwaway MariaDB (needs mariadb-server installed).
    Mariadb,
}

pub struct Scenario {
    pub name: &'static str,
    pub what: &'static str,
}

pub const SCENARIOS: &[Scenario] = &[
    Scenario { name: "connect-timeout", what: "a client that answers 3 s after the greeting, against the old alarm/EINTR server and the modern poll server side by side (connect_timeout = 2 s)" },
    Scenario { name: "timeout-alarm", what: "the same late client against the old-style server only: SIGALRM interrupts a blocking read" },
    Scenario { name: "timeout-poll", what: "the same late client against the modern-style server only: poll times out, SO_LINGER 0, RST" },
    Scenario { name: "starved-client", what: "a client frozen with SIGSTOP right after the greeting and resumed 3 s later" },
    Scenario { name: "slow-dns", what: "the server's reverse name lookup stalls 3 s before the greeting; the client gives up first" },
    Scenario { name: "normal", what: "a normal login and SELECT 1" },
    Scenario { name: "wrong-password", what: "a login with a wrong password" },
];

pub fn list(out: &mut dyn Write) -> Result<()> {
    for s in SCENARIOS {
        writeln!(out, "{:<16} {}", s.name, s.what)?;
    }
    writeln!(out, "\nAll run on the built-in server by default; --server mariadb runs connect-timeout, timeout-poll,")?;
    writeln!(out, "starved-client, normal and wrong-password on a throwaway MariaDB instead.")?;
    Ok(())
}

/// A server the lab started.
struct LabServer {
    label: String,
    pid: u32,
    addr: SocketAddr,
    kind: Running,
    /// The built-in server's own log lines.
    log: Arc<Mutex<Vec<String>>>,
}

enum Running {
    Builtin(Child),
    Mariadb(Box<MariaDb>, u64),
}

impl LabServer {
    /// The built-in server on `port` (0: a free one).
    fn builtin(style: WaitStyle, resolver: Option<SocketAddr>, port: u16) -> Result<Self> {
        let exe = std::env::current_exe().context("find our own binary")?;
        let mut cmd = Command::new(exe);
        cmd.args(["lab-server", "--wait", style.as_str(), "--port", &port.to_string(), "--connect-timeout", &CONNECT_TIMEOUT_S.to_string()]);
        if let Some(r) = resolver {
            cmd.args(["--resolver", &r.to_string()]);
        }
        let mut child = cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().context("start lab-server")?;
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap()).read_line(&mut first)?;
        let Some(addr) = first.trim().rsplit(' ').next().and_then(|a| a.parse::<SocketAddr>().ok()) else {
            // It could not listen (a port in use): its own words.
            let mut said = String::new();
            let _ = std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut said);
            let _ = child.wait();
            let said = said.trim();
            bail!("the built-in {} server did not start: {}", style.as_str(), escaped(said.strip_prefix("handshake-trace: error: ").unwrap_or(said)));
        };
        let log = Arc::new(Mutex::new(Vec::new()));
        let sink = log.clone();
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                sink.lock().unwrap().push(line);
            }
        });
        Ok(LabServer { label: format!("built-in {} server", style.as_str()), pid: child.id(), addr, kind: Running::Builtin(child), log })
    }

    /// A throwaway MariaDB on `port` (0: a free one).
    fn mariadb(port: u16) -> Result<Self> {
        if !mariadb::installed() {
            bail!("--server mariadb needs MariaDB: apt-get install mariadb-server mariadb-client");
        }
        let db = MariaDb::start(&MariaDbOptions { port, connect_timeout: CONNECT_TIMEOUT_S as u32, ..Default::default() })?;
        let before = db.status("Aborted_connects")?;
        Ok(LabServer { label: "MariaDB".into(), pid: db.pid(), addr: db.addr(), kind: Running::Mariadb(Box::new(db), before), log: Default::default() })
    }

    /// How much Aborted_connects rose during the scenario.
    fn aborted_connects(&self) -> Option<u64> {
        match &self.kind {
            Running::Mariadb(db, before) => db.status("Aborted_connects").ok().map(|n| n - before),
            Running::Builtin(_) => self.ended().last().map(|(_, n)| *n).or(Some(0)),
        }
    }

    /// The built-in server's end-of-connection lines: (line, Aborted_connects after it).
    fn ended(&self) -> Vec<(String, u64)> {
        self.log
            .lock()
            .unwrap()
            .iter()
            .filter_map(|l| {
                let n = l.rsplit_once("[Aborted_connects=")?.1.strip_suffix(']')?.parse().ok()?;
                Some((l.clone(), n))
            })
            .collect()
    }

    /// Wait until the server has finished `n` connections (built-in; MariaDB: a short pause).
    async fn wait_finished(&self, n: usize) {
        match self.kind {
            Running::Mariadb(..) => tokio::time::sleep(Duration::from_millis(500)).await,
            Running::Builtin(_) => {
                for _ in 0..100 {
                    if self.ended().len() >= n {
                        break;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                // Its last syscalls (the close) reach the ring buffer.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

impl Drop for LabServer {
    fn drop(&mut self) {
        if let Running::Builtin(child) = &mut self.kind {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// What a scripted client does.
#[derive(Debug, Clone, Copy)]
enum ClientAct {
    /// Send the login this long after the greeting.
    LateLogin(Duration),
    /// Freeze with SIGSTOP after the greeting; resumed this long after.
    Starved(Duration),
    /// The `mariadb` CLI logs in with the password and runs SELECT 1.
    Cli { good_password: bool, connect_timeout_s: Option<u64> },
}

struct ClientReport {
    label: String,
    said: String,
}

fn have_pymysql() -> bool {
    Command::new("/usr/bin/python3").args(["-c", "import pymysql"]).stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}

fn find_cli() -> Option<&'static str> {
    ["/usr/bin/mariadb", "/usr/bin/mysql"].into_iter().find(|p| std::path::Path::new(p).exists())
}

/// PyMySQL, delayed or frozen after the greeting by hooking its authentication step.
fn pymysql(addr: SocketAddr, act: ClientAct) -> Result<Child> {
    let hook = match act {
        ClientAct::LateLogin(d) => format!("time.sleep({})", d.as_secs_f64()),
        ClientAct::Starved(_) => "os.kill(os.getpid(), signal.SIGSTOP)".into(),
        ClientAct::Cli { .. } => String::new(),
    };
    let script = format!(
        "import os, signal, time, pymysql\n\
         orig = pymysql.connections.Connection._request_authentication\n\
         def late(self):\n    {hook}\n    return orig(self)\n\
         pymysql.connections.Connection._request_authentication = late\n\
         try:\n    c = pymysql.connect(host='{}', port={}, user='{LAB_USER}', password='{LAB_PASSWORD}', connect_timeout=10, read_timeout=10)\n    print('logged in'); c.close()\n\
         except Exception as e:\n    print('pymysql.err.%s: %s' % (type(e).__name__, e))\n",
        addr.ip(),
        addr.port()
    );
    Ok(Command::new("/usr/bin/python3").arg("-c").arg(script).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?)
}

fn lab_client(addr: SocketAddr, act: ClientAct) -> Result<Child> {
    let exe = std::env::current_exe()?;
    let mut cmd = Command::new(exe);
    cmd.args(["lab-client", "--addr", &addr.to_string(), "--user", LAB_USER, "--password", LAB_PASSWORD]);
    match act {
        ClientAct::LateLogin(d) => {
            cmd.args(["--delay-ms", &d.as_millis().to_string()]);
        }
        ClientAct::Starved(_) => {
            cmd.arg("--stop-after-greeting");
        }
        ClientAct::Cli { .. } => {}
    }
    Ok(cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?)
}

fn cli(addr: SocketAddr, good_password: bool, connect_timeout_s: Option<u64>) -> Result<Child> {
    let bin = find_cli().context("the `mariadb` client is not installed (apt-get install mariadb-client)")?;
    let mut cmd = Command::new(bin);
    cmd.args(["--no-defaults", "--skip-ssl", "-h", &addr.ip().to_string(), "-P", &addr.port().to_string(), "-u", LAB_USER])
        .arg(format!("--password={}", if good_password { LAB_PASSWORD } else { "wrong-password" }))
        .args(["-N", "-B", "-e", "SELECT 1"]);
    if let Some(t) = connect_timeout_s {
        cmd.arg(format!("--connect-timeout={t}"));
    }
    Ok(cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn()?)
}

/// Run one client to completion (resuming a starved one) and report what it printed.
fn run_client(addr: SocketAddr, act: ClientAct) -> Result<ClientReport> {
    let (label, child) = match act {
        ClientAct::Cli { good_password, connect_timeout_s } => (
            format!(
                "mariadb CLI ({}{})",
                if good_password { "right password" } else { "wrong password" },
                connect_timeout_s.map(|t| format!(", --connect-timeout={t}")).unwrap_or_default()
            ),
            cli(addr, good_password, connect_timeout_s)?,
        ),
        _ if have_pymysql() => ("PyMySQL".to_string(), pymysql(addr, act)?),
        _ => ("lab-client".to_string(), lab_client(addr, act)?),
    };
    let label = match act {
        ClientAct::LateLogin(d) => format!("{label}, login {:.0} s after the greeting", d.as_secs_f64()),
        ClientAct::Starved(d) => format!("{label}, frozen by SIGSTOP after the greeting, SIGCONT {:.0} s later", d.as_secs_f64()),
        ClientAct::Cli { .. } => label,
    };
    let pid = child.id();
    CLIENTS.lock().unwrap().push(pid);
    if let ClientAct::Starved(d) = act {
        wait_stopped(pid);
        std::thread::sleep(d);
        // SAFETY: resuming our own child.
        unsafe { libc::kill(pid as i32, libc::SIGCONT) };
    }
    let out = child.wait_with_output();
    CLIENTS.lock().unwrap().retain(|p| *p != pid);
    let out = out?;
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    // A client prints what the server sent it (error messages): shown escaped.
    let said = text.lines().map(str::trim).filter(|l| !l.is_empty()).map(escaped).collect::<Vec<_>>().join(" / ");
    Ok(ClientReport { label, said })
}

/// Client processes running now: ended when the lab is stopped by a signal (one frozen
/// by SIGSTOP would otherwise stay frozen for ever).
static CLIENTS: Mutex<Vec<u32>> = Mutex::new(Vec::new());

fn kill_clients() {
    for pid in CLIENTS.lock().unwrap().drain(..) {
        // SAFETY: our own child, not yet reaped (its thread takes it off the list after the wait).
        unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    }
}

/// Wait (up to 10 s) until a child has stopped itself.
fn wait_stopped(pid: u32) {
    for _ in 0..500 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        if stat.rsplit(')').next().is_some_and(|r| r.trim_start().starts_with('T')) {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// The servers and clients of a scenario.
struct Plan {
    servers: Vec<(WaitStyle, Option<Duration>)>,
    act: ClientAct,
}

fn plan(scenario: &str, server: ServerKind) -> Result<Plan> {
    let late = ClientAct::LateLogin(Duration::from_secs(CONNECT_TIMEOUT_S + 1));
    let p = match scenario {
        "connect-timeout" => Plan { servers: vec![(WaitStyle::Alarm, None), (WaitStyle::Poll, None)], act: late },
        "timeout-alarm" => Plan { servers: vec![(WaitStyle::Alarm, None)], act: late },
        "timeout-poll" => Plan { servers: vec![(WaitStyle::Poll, None)], act: late },
        "starved-client" => Plan { servers: vec![(WaitStyle::Poll, None)], act: ClientAct::Starved(Duration::from_secs(CONNECT_TIMEOUT_S + 1)) },
        "slow-dns" => Plan {
            servers: vec![(WaitStyle::Poll, Some(Duration::from_secs(3)))],
            act: ClientAct::Cli { good_password: true, connect_timeout_s: Some(CONNECT_TIMEOUT_S) },
        },
        "normal" => Plan { servers: vec![(WaitStyle::Poll, None)], act: ClientAct::Cli { good_password: true, connect_timeout_s: None } },
        "wrong-password" => Plan { servers: vec![(WaitStyle::Poll, None)], act: ClientAct::Cli { good_password: false, connect_timeout_s: None } },
        other => bail!("unknown scenario `{other}` (see `handshake-trace lab --list`)"),
    };
    if server == ServerKind::Mariadb {
        if matches!(scenario, "timeout-alarm" | "slow-dns") {
            bail!("`{scenario}` needs the built-in server (MariaDB waits with poll and resolves names with the system resolver)");
        }
        // MariaDB waits the modern way: one server.
        return Ok(Plan { servers: vec![(WaitStyle::Poll, None)], ..p });
    }
    Ok(p)
}

/// The ports of a scenario's `n` servers: `--port P` gives P, P+1, ... (two built-in
/// servers side by side); none gives 0 (each a free one).
fn server_ports(port: Option<u16>, n: usize) -> Result<Vec<u16>> {
    let Some(first) = port else { return Ok(vec![0; n]) };
    (0..n)
        .map(|i| {
            u16::try_from(i)
                .ok()
                .and_then(|i| first.checked_add(i))
                .with_context(|| format!("--port {first}: this scenario's {n} servers need ports {first} to {}, past 65535", u32::from(first) + n as u32 - 1))
        })
        .collect()
}

/// How a scenario runs.
#[derive(Debug, Clone, Default)]
pub struct LabOptions {
    pub server: ServerKind,
    /// The port of the lab's server (the next ones for a second built-in server);
    /// None: free ones.
    pub port: Option<u16>,
    /// Which hooks trace the scenario (`--capture`; the lab teaches with `syscalls`).
    pub capture: CaptureTier,
    pub json: bool,
    /// Also save the trace here.
    pub record: Option<std::path::PathBuf>,
    /// Width, colour and dates of the handshakes' lines (stdout) and of the notices (stderr).
    pub term: handshake_trace::output::columns::Terminal,
    pub notices: handshake_trace::output::columns::Terminal,
    /// Set by SIGINT, SIGTERM or SIGHUP (handlers installed by the caller).
    pub stopping: Arc<AtomicBool>,
}

/// Run a scenario: start its servers, trace them live, run its clients, explain.
/// `lab.stopping`: set by SIGINT, SIGTERM or SIGHUP (handlers installed by the caller):
/// the lab then ends its clients, explains what it had, stops its servers and removes
/// their files.
pub async fn run(scenario: &str, lab: LabOptions, out: &mut dyn Write, log: &mut dyn Write) -> Result<()> {
    let LabOptions { server, port, capture, json, record, term, notices, stopping } = lab;
    let plan = plan(scenario, server)?;
    let ports = server_ports(port, plan.servers.len())?;
    handshake_trace::capture::privileges::require_bpf()?;
    let mut servers = Vec::new();
    for ((style, dns_delay), port) in plan.servers.iter().zip(ports) {
        if stopping.load(Ordering::SeqCst) {
            // The servers started so far are stopped as `servers` drops.
            bail!("stopped by a signal while starting the lab's servers");
        }
        let s = match server {
            ServerKind::Mariadb => LabServer::mariadb(port)?,
            ServerKind::Builtin => {
                let resolver = match dns_delay {
                    Some(d) => Some(dns::slow_resolver(*d, "client.lab.example")?),
                    None => None,
                };
                LabServer::builtin(*style, resolver, port)?
            }
        };
        writeln!(log, "lab: {} pid {} listening on {} (connect_timeout {} s)", s.label, s.pid, s.addr, CONNECT_TIMEOUT_S)?;
        servers.push(s);
    }
    let opts = WatchOptions {
        pids: servers.iter().map(|s| s.pid).collect(),
        json,
        keep_outcomes: true,
        slow_ms: Some(500.0),
        record,
        capture,
        term,
        notices,
        ..Default::default()
    };
    let addrs: Vec<SocketAddr> = servers.iter().map(|s| s.addr).collect();
    let act = plan.act;
    let (ready_tx, ready_rx) = tokio::sync::oneshot::channel::<()>();
    let clients = async move {
        let _ = ready_rx.await;
        // One client per server, at the same time: side by side.
        let handles: Vec<_> = addrs.into_iter().map(|a| tokio::task::spawn_blocking(move || run_client(a, act))).collect();
        let mut reports = Vec::new();
        for h in handles {
            reports.push(h.await?);
        }
        anyhow::Ok(reports)
    };
    let reports = Mutex::new(None);
    let scenario_done = async {
        let _ = ready_tx.send(());
        *reports.lock().unwrap() = Some(clients.await);
        // Let the servers finish their side (a slow lookup can outlast the client).
        for s in &servers {
            s.wait_finished(1).await;
        }
    };
    let stop = async {
        tokio::select! {
            _ = scenario_done => {}
            _ = pipe::closed(stopping.clone()) => {}
        }
    };
    let summary = watch::run(&opts, out, log, stop).await?;
    let interrupted = stopping.load(Ordering::SeqCst);
    if interrupted {
        kill_clients();
        writeln!(log, "\nlab: stopped by a signal: what it saw so far, then its servers are stopped")?;
    }
    let reports: Vec<Result<ClientReport>> = match reports.into_inner().unwrap() {
        Some(r) => r?,
        None => Vec::new(),
    };
    out.flush()?;
    explain(scenario, &servers, &reports, &summary.outcomes, log)?;
    watch::print_summary_on(&summary, handshake_trace::output::summary::DEFAULT_TOP, log, &notices)?;
    if interrupted {
        for s in servers {
            let what = format!("{} pid {}", s.label, s.pid);
            drop(s);
            writeln!(log, "lab: stopped {what} and removed its files")?;
        }
    }
    Ok(())
}

fn mechanism_words(m: WaitMechanism) -> &'static str {
    match m {
        WaitMechanism::Poll => "poll() on the socket returned 0 (timed out); the server set SO_LINGER 0 and closed, so the kernel sent a reset (RST)",
        WaitMechanism::AlarmEintr => "the alarm thread sent SIGALRM to the handler thread, whose blocking read() failed with EINTR; the server closed the socket (a FIN)",
        WaitMechanism::SocketTimeout => "the socket's SO_RCVTIMEO expired and read() failed",
        // `--capture socket` (or a recording made with it) cannot tell how the server waited.
        WaitMechanism::NotSeen { .. } => "the server's read found nothing, and it later closed; the socket capture tier does not see how it waited",
    }
}

/// The plain-words part: per server, what it waited for, how the timeout fired, what
/// the client said, Aborted_connects, and the remedies.
fn explain(scenario: &str, servers: &[LabServer], reports: &[Result<ClientReport>], outcomes: &[Outcome], log: &mut dyn Write) -> Result<()> {
    writeln!(log, "\n=== What happened ({scenario}) ===")?;
    for (i, s) in servers.iter().enumerate() {
        writeln!(log, "\n{} (pid {}):", s.label, s.pid)?;
        let mine: Vec<&Outcome> = outcomes.iter().filter(|o| o.pid == s.pid).collect();
        for o in &mine {
            let j = &o.judgement;
            writeln!(log, "  verdict: {}", names::verdict(j.verdict))?;
            writeln!(log, "  why: {}", reason::reason(&j.cause))?;
            if let Some(line) = blame::blame_line(j) {
                writeln!(log, "  {line}")?;
            }
            if let Some(t) = j.timeout() {
                writeln!(
                    log,
                    "  the server waited for {} for {:.1} ms (connect_timeout {}); then {}.",
                    names::awaited(t.waiting_for),
                    t.waited_ns as f64 / 1e6,
                    t.timeout_ms.map(|m| format!("{m} ms")).unwrap_or_else(|| "unknown".into()),
                    mechanism_words(t.mechanism)
                )?;
                writeln!(log, "  it sent no error packet: the documented \"Bad handshake\" never reaches the client.")?;
            }
            if let Some(e) = &j.client_report {
                writeln!(log, "  the tool predicts the client reports: {}", reason::client_report(e))?;
            }
        }
        match reports.get(i) {
            Some(Ok(r)) => writeln!(log, "  the client ({}) actually reported: {}", r.label, r.said)?,
            Some(Err(e)) => writeln!(log, "  the client could not run: {e:#}")?,
            None => {}
        }
        if let Some(n) = s.aborted_connects() {
            writeln!(log, "  Aborted_connects rose by {n}{}", if matches!(s.kind, Running::Builtin(_)) { " (the built-in server counts like MySQL)" } else { "" })?;
        }
    }
    let any_timeout = outcomes.iter().any(|o| o.judgement.verdict == Verdict::ServerTimeout);
    let slow_greeting = outcomes.iter().any(|o| {
        matches!(
            o.judgement.cause,
            Cause::ClientClosed { late_greeting: Some(LateGreeting::SentAfter { .. }) }
                | Cause::ClientReset { late_greeting: Some(LateGreeting::SentAfter { .. }) }
        )
    });
    writeln!(log, "\nRemedies:")?;
    if any_timeout {
        writeln!(log, "  - Find the slow side first: the timeline shows the server sent its greeting at once and then waited; the client took")?;
        writeln!(log, "    longer than connect_timeout to answer (a CPU-starved or paused client, a slow auth/TLS library, packet loss).")?;
        writeln!(log, "  - Raising connect_timeout (SET GLOBAL connect_timeout = 10) covers such clients while you fix them; it does not")?;
        writeln!(log, "    make a stuck client faster, and it lets half-open connections hold server threads longer.")?;
        writeln!(log, "  - Confirm on the server: SHOW GLOBAL STATUS LIKE 'Aborted_connects' rises by one per such handshake, and the")?;
        writeln!(log, "    error log (log_warnings >= 2) has \"Aborted connection ... (This connection closed normally without authentication)\".")?;
    } else if outcomes.iter().any(|o| o.judgement.verdict == Verdict::AuthFailed) {
        writeln!(log, "  - The server refused the credentials: the ERR 1045 names the user and the host it matched (user@host).")?;
        writeln!(log, "    Check the password, and which account that host maps to: SELECT user, host, plugin FROM mysql.user.")?;
        writeln!(log, "  - Each refusal counts in Aborted_connects; many from one host lead to ERR 1129 (max_connect_errors).")?;
    } else if slow_greeting {
        writeln!(log, "  - The server was slow to send its greeting: here a reverse DNS lookup of the client's address. Use")?;
        writeln!(log, "    skip_name_resolve (grant by IP), or fix the resolver; the client's own connect timeout fired first.")?;
    } else {
        writeln!(log, "  - Nothing to fix: compare this timeline with the failing ones (lab --list).")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::server_ports;

    #[test]
    fn a_port_asked_for_goes_to_the_first_server_and_the_next_to_the_second() {
        assert_eq!(server_ports(None, 2).unwrap(), [0, 0], "free ones by default");
        assert_eq!(server_ports(Some(3399), 1).unwrap(), [3399]);
        assert_eq!(server_ports(Some(3399), 2).unwrap(), [3399, 3400]);
        assert_eq!(server_ports(Some(65535), 1).unwrap(), [65535]);
        let e = server_ports(Some(65535), 2).unwrap_err().to_string();
        assert!(e.contains("65535 to 65536, past 65535"), "{e}");
    }
}
