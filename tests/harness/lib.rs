//! Shared harness of the root integration tests: skip loudly when they cannot run,
//! run the real binary as a tracer, collect what it printed.
use std::{
    collections::HashSet,
    io::{BufRead, BufReader, Write},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::mpsc,
    thread,
    time::{Duration, Instant},
};

pub use handshake_trace_lab::cgroup::Cgroup;
pub use handshake_trace_lab::mariadb::{self, MariaDb, MariaDbOptions, LAB_PASSWORD, LAB_USER};

/// The verdicts of a lab scenario's handshakes on the built-in server, in either
/// capture tier and on any kernel (tests/lab.rs on this host, tests/kernel_matrix.rs on
/// other kernels). Empty for a scenario without a fixed verdict.
pub fn lab_verdicts(scenario: &str) -> &'static [&'static str] {
    match scenario {
        "connect-timeout" => &["server_timeout", "server_timeout"],
        "timeout-alarm" | "timeout-poll" => &["server_timeout"],
        "normal" => &["ok"],
        "wrong-password" => &["auth_failed"],
        "starved-client" => &["server_timeout"],
        "slow-dns" => &["client_reset"],
        _ => &[],
    }
}

/// Set to `1` by `cargo xtask test` and `.ci/run`: a root test that cannot run fails
/// instead of skipping, so a run that tested nothing cannot pass.
pub const REQUIRE_ROOT: &str = "HANDSHAKE_TRACE_REQUIRE_ROOT";

/// Print a skip notice that libtest's output capture cannot swallow; with
/// `HANDSHAKE_TRACE_REQUIRE_ROOT=1`, fail with the same reason instead.
pub fn skip(test: &str, why: &str) {
    if std::env::var_os(REQUIRE_ROOT).is_some_and(|v| v == "1") {
        panic!("{test} cannot run ({REQUIRE_ROOT}=1 requires it): {why}");
    }
    let _ = std::io::stderr().write_all(format!("SKIPPED {test}: {why}\n").as_bytes());
}

/// The binary under test, when this test can run: root, a binary with real
/// kernel programs (built by `cargo xtask build`) and MariaDB installed.
pub fn ready(test: &str) -> Option<PathBuf> {
    // SAFETY: no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        skip(test, "not root (run `cargo xtask test` as root)");
        return None;
    }
    let bin = std::env::var_os("HANDSHAKE_TRACE_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../target/release/handshake-trace"));
    if !bin.is_file() {
        skip(test, &format!("{} not built (run `cargo xtask test`)", bin.display()));
        return None;
    }
    if !mariadb::installed() {
        skip(test, "MariaDB is not installed (`cargo xtask setup` installs it)");
        return None;
    }
    Some(bin)
}

/// A failing test must not leave a tracer attached: kill it if it is still running.
impl Drop for Tracer {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// What a finished tracer printed.
#[derive(Debug, Default)]
pub struct TracerOutput {
    pub stdout: Vec<String>,
    pub stderr: Vec<String>,
    pub code: Option<i32>,
}

impl TracerOutput {
    /// stdout parsed as JSON Lines (panics on a line that is not JSON).
    pub fn json(&self) -> Vec<serde_json::Value> {
        self.stdout
            .iter()
            .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not JSON ({e}): {l}")))
            .collect()
    }

    pub fn stderr_text(&self) -> String {
        self.stderr.join("\n")
    }
}

/// A running `handshake-trace` process.
pub struct Tracer {
    child: Child,
    stdout: mpsc::Receiver<String>,
    stderr: mpsc::Receiver<String>,
    early_stderr: Vec<String>,
}

fn lines_of(r: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(r).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

impl Tracer {
    /// Start `bin args...` and wait until it says it is tracing.
    pub fn start(bin: &PathBuf, args: &[&str]) -> Tracer {
        let mut child = Command::new(bin)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start handshake-trace");
        let stdout = lines_of(child.stdout.take().unwrap());
        let stderr = lines_of(child.stderr.take().unwrap());
        let mut t = Tracer { child, stdout, stderr, early_stderr: Vec::new() };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match t.stderr.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    let started = line.starts_with("Tracing");
                    t.early_stderr.push(line);
                    if started {
                        return t;
                    }
                }
                Err(_) if Instant::now() > deadline => panic!("tracer did not start: {:?}", t.early_stderr),
                Err(_) => {
                    if let Ok(Some(status)) = t.child.try_wait() {
                        panic!("tracer exited ({status}) before tracing: {:?}", t.early_stderr);
                    }
                }
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait (up to `timeout`) for a line of stderr containing `needle`; the lines read
    /// stay in the output `stop` returns.
    pub fn wait_for_stderr(&mut self, needle: &str, timeout: Duration) -> bool {
        if self.early_stderr.iter().any(|l| l.contains(needle)) {
            return true;
        }
        let deadline = Instant::now() + timeout;
        while let Some(left) = deadline.checked_duration_since(Instant::now()) {
            match self.stderr.recv_timeout(left.min(Duration::from_millis(100))) {
                Ok(line) => {
                    let found = line.contains(needle);
                    self.early_stderr.push(line);
                    if found {
                        return true;
                    }
                }
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(_) => return false,
            }
        }
        false
    }

    /// Send `signal`, wait for the exit and collect the output.
    pub fn stop_with(mut self, signal: i32) -> TracerOutput {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, signal) };
        let deadline = Instant::now() + Duration::from_secs(20);
        let status = loop {
            if let Ok(Some(s)) = self.child.try_wait() {
                break s;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                break self.child.wait().unwrap();
            }
            thread::sleep(Duration::from_millis(20));
        };
        let mut out = TracerOutput { code: status.code(), ..Default::default() };
        out.stdout = self.stdout.iter().collect();
        out.stderr = std::mem::take(&mut self.early_stderr);
        out.stderr.extend(self.stderr.iter());
        out
    }

    /// Ctrl-C.
    pub fn stop(self) -> TracerOutput {
        self.stop_with(libc::SIGINT)
    }
}

/// Ids of the BPF objects of one kind (`key`: `prog_id` or `map_id`) that process `pid`
/// holds open, from /proc/PID/fdinfo: a tracer's own, whatever other tracers run here.
fn fdinfo_ids(pid: u32, key: &str) -> HashSet<u64> {
    std::fs::read_dir(format!("/proc/{pid}/fdinfo"))
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|info| info.lines().find_map(|l| l.strip_prefix(key)?.strip_prefix(':'))?.trim().parse().ok())
        .collect()
}

/// Ids of the BPF programs process `pid` holds open.
pub fn program_ids_of(pid: u32) -> HashSet<u64> {
    fdinfo_ids(pid, "prog_id")
}

/// Ids of the BPF maps process `pid` holds open.
pub fn map_ids_of(pid: u32) -> HashSet<u64> {
    fdinfo_ids(pid, "map_id")
}

/// Ids of the programs of the kinds handshake-trace loads (tracepoint, raw tracepoint, and
/// the socket tier's tp_btf "tracing" and cgroup_skb) loaded in the kernel (any tracer's).
pub fn loaded_program_ids() -> HashSet<u64> {
    let out = Command::new("bpftool").args(["-j", "prog", "show"]).output().expect("bpftool prog show");
    let progs: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
    progs
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| ["tracepoint", "raw_tracepoint", "tracing", "cgroup_skb"].iter().any(|t| p["type"] == *t))
        .filter_map(|p| p["id"].as_u64())
        .collect()
}

/// Wait until `f` holds, up to `timeout`.
pub fn eventually(timeout: Duration, mut f: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if f() {
            return true;
        }
        thread::sleep(Duration::from_millis(50));
    }
    f()
}

/// Read one whole MySQL packet (the server's greeting) from a raw client socket.
pub fn read_greeting(s: &mut std::net::TcpStream) -> Vec<u8> {
    use std::io::Read;
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut header = [0u8; 4];
    s.read_exact(&mut header).expect("greeting header");
    let len = u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize;
    let mut body = vec![0u8; len];
    s.read_exact(&mut body).expect("greeting body");
    body
}

/// The `handshake_trace_*` metric names in a text (PromQL, an exposition, docs).
pub fn metric_names(text: &str) -> std::collections::BTreeSet<String> {
    let mut names = std::collections::BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("handshake_trace_") {
        let tail = &rest[i..];
        let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
        names.insert(tail[..end].to_string());
        rest = &tail[end..];
    }
    names
}

/// A histogram's series names its metric plus _bucket, _sum or _count.
pub fn base_metric_name(series: &str) -> &str {
    ["_bucket", "_sum", "_count"].iter().find_map(|s| series.strip_suffix(s)).unwrap_or(series)
}

/// Every metric the files in deploy/ (Grafana dashboard, alerting rules) use.
pub fn deploy_metric_names() -> std::collections::BTreeSet<String> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy");
    let dashboard = std::fs::read_to_string(root.join("grafana/handshake-trace.json")).unwrap();
    let rules = std::fs::read_to_string(root.join("prometheus/alerts.yml")).unwrap();
    metric_names(&format!("{dashboard}\n{rules}")).iter().map(|m| base_metric_name(m).to_string()).collect()
}

/// A raw client of `db` in its own thread: connect, read the greeting, then do `then`;
/// the thread returns the client's local port (how its handshake is found in the output).
pub fn raw_client(db: &MariaDb, then: impl FnOnce(&mut std::net::TcpStream) + Send + 'static) -> thread::JoinHandle<u16> {
    let addr = db.addr();
    thread::spawn(move || {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        let port = s.local_addr().unwrap().port();
        read_greeting(&mut s);
        then(&mut s);
        port
    })
}

/// Make closing `s` reset the connection (SO_LINGER {on, 0}).
pub fn set_linger0(s: &std::net::TcpStream) {
    use std::os::fd::AsRawFd;
    let l = libc::linger { l_onoff: 1, l_linger: 0 };
    // SAFETY: valid fd and option buffer.
    let rc = unsafe {
        libc::setsockopt(s.as_raw_fd(), libc::SOL_SOCKET, libc::SO_LINGER, (&l as *const libc::linger).cast(), std::mem::size_of::<libc::linger>() as u32)
    };
    assert_eq!(rc, 0);
}

/// max_connections (10 is MariaDB's minimum; one more is kept for admins): hold 11
/// connections, the 12th is refused with ERR 1040 instead of a greeting; the held
/// ones are left to time out (connect_timeout), then closed. Returns the refused
/// client's port.
pub fn max_connections_refusal(db: &MariaDb, held_for: Duration) -> u16 {
    use std::io::Read;
    db.sql("SET GLOBAL max_connections = 10").unwrap();
    let mut held = Vec::new();
    let mut refused = None;
    for _ in 0..13 {
        let mut s = std::net::TcpStream::connect(db.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut head = [0u8; 5];
        s.read_exact(&mut head).unwrap();
        if head[4] == 0xff {
            refused = Some(s.local_addr().unwrap().port());
            break;
        }
        held.push(s);
    }
    let refused = refused.expect("a connection refused with ERR 1040");
    thread::sleep(held_for);
    drop(held);
    db.sql("SET GLOBAL max_connections = 151").unwrap();
    refused
}

/// A MariaDB with connect_timeout=2 and TLS, and the account `tls_lab` / `tls-pw`
/// that must log in over TLS; in cgroup directory `cgroup` when given.
pub fn mariadb_with_tls_account(cgroup: Option<&std::path::Path>) -> MariaDb {
    let opts = MariaDbOptions { connect_timeout: 2, tls: true, cgroup: cgroup.map(Into::into), ..Default::default() };
    let db = MariaDb::start(&opts).expect("start MariaDB");
    db.sql("CREATE USER 'tls_lab'@'%' IDENTIFIED BY 'tls-pw' REQUIRE SSL; CREATE USER 'tls_lab'@'localhost' IDENTIFIED BY 'tls-pw' REQUIRE SSL")
        .unwrap();
    db
}

/// One real login over TCP as the lab account: greeting, HandshakeResponse41 with
/// mysql_native_password (the right password, or a wrong one), the server's reply.
/// Returns whether the server said OK.
pub fn lab_login(addr: std::net::SocketAddr, right_password: bool) -> std::io::Result<bool> {
    lab_login_on(std::net::TcpStream::connect(addr)?, right_password)
}

/// [`lab_login`] on a connection the caller made (with socket options of its own).
pub fn lab_login_on(mut s: std::net::TcpStream, right_password: bool) -> std::io::Result<bool> {
    use std::io::Read;
    fn packet(s: &mut std::net::TcpStream) -> std::io::Result<Vec<u8>> {
        let mut header = [0u8; 4];
        s.read_exact(&mut header)?;
        let mut body = vec![0u8; u32::from_le_bytes([header[0], header[1], header[2], 0]) as usize];
        s.read_exact(&mut body)?;
        Ok(body)
    }
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let greeting = packet(&mut s)?;
    let scramble = handshake_trace_lab::wire::greeting_scramble(&greeting)
        .ok_or_else(|| std::io::Error::other("a greeting without a scramble"))?;
    let password = if right_password { LAB_PASSWORD } else { "not-the-lab-password" };
    s.write_all(&handshake_trace_lab::wire::login_packet(LAB_USER, password, &scramble, None))?;
    Ok(packet(&mut s)?.first() == Some(&0x00))
}

/// A free loopback port (bound, then released for the process that will listen on it).
pub fn free_addr() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

/// A plain HTTP/1.1 GET: (status, body).
pub fn http_get(addr: std::net::SocketAddr, path_and_query: &str) -> Option<(u16, String)> {
    use std::io::Read;
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(s, "GET {path_and_query} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n").ok()?;
    let mut raw = Vec::new();
    s.read_to_end(&mut raw).ok()?;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    let chunked = head.to_ascii_lowercase().contains("transfer-encoding: chunked");
    Some((status, if chunked { dechunk(body) } else { body.to_string() }))
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 || rest.len() < n {
            break;
        }
        out.push_str(&rest[..n]);
        body = rest[n..].trim_start_matches("\r\n");
    }
    out
}

/// An SSLRequest: the 32-byte start of a login with CLIENT_SSL.
pub fn ssl_request_packet() -> Vec<u8> {
    let mut b = (0x0200u32 | 0x0800 | 0x8000 | 0x0008_0000).to_le_bytes().to_vec();
    b.extend_from_slice(&(1u32 << 24).to_le_bytes());
    b.push(33);
    b.extend_from_slice(&[0; 23]);
    let mut p = vec![b.len() as u8, 0, 0, 1];
    p.extend_from_slice(&b);
    p
}

/// A HandshakeResponse41 for user `lab` with a junk 20-byte auth response.
pub fn login_packet() -> Vec<u8> {
    let mut b = (0x0200u32 | 0x8000 | 0x0008_0000).to_le_bytes().to_vec();
    b.extend_from_slice(&(1u32 << 24).to_le_bytes());
    b.push(33);
    b.extend_from_slice(&[0; 23]);
    b.extend_from_slice(b"lab\0");
    b.push(20);
    b.extend_from_slice(&[7; 20]);
    b.extend_from_slice(b"mysql_native_password\0");
    let mut p = vec![b.len() as u8, 0, 0, 1];
    p.extend_from_slice(&b);
    p
}

/// A DROP rule on loopback's INPUT for the data segments of one direction of the test
/// server's connections, deleted when dropped, even when the test fails.
pub struct DropData {
    rule: Vec<String>,
}

impl DropData {
    /// The server's data segments (the greeting and its retransmits).
    pub fn from_server(server_port: u16) -> DropData {
        DropData::insert("--sport", server_port)
    }

    /// The clients' data segments (the login and its retransmits).
    pub fn to_server(server_port: u16) -> DropData {
        DropData::insert("--dport", server_port)
    }

    fn insert(port_match: &str, server_port: u16) -> DropData {
        // Bigger than a bare IPv4 + TCP header with options (52 bytes): data only, so the
        // handshake, ACKs, FIN and RST still pass.
        let rule: Vec<String> = ["INPUT", "-i", "lo", "-s", "127.0.0.1", "-d", "127.0.0.1", "-p", "tcp", port_match, &server_port.to_string(), "-m", "length", "--length", "61:65535", "-j", "DROP"]
            .iter()
            .map(|a| a.to_string())
            .collect();
        let out = Command::new("iptables-legacy").arg("-I").args(&rule).output().expect("iptables-legacy (Debian package iptables; `cargo xtask setup`)");
        assert!(out.status.success(), "iptables-legacy -I: {}", String::from_utf8_lossy(&out.stderr));
        DropData { rule }
    }
}

impl Drop for DropData {
    fn drop(&mut self) {
        let out = Command::new("iptables-legacy").arg("-D").args(&self.rule).output();
        if !out.as_ref().is_ok_and(|o| o.status.success()) {
            eprintln!("could not delete the iptables-legacy rule {:?}: {out:?}", self.rule);
        }
    }
}
