//! The agent against hostile neighbours (issue 22): unauthenticated clients of its HTTP
//! port (an idle-connection flood, slow request heads), a local user who can write to
//! its log folder (a symbolic link swapped in before SIGHUP), a full disk under its
//! flight recorder and log, and who may read /metrics and /top (basic auth, TLS, no
//! user names by default). Real MariaDB, real clients, the release binary.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::{Path, PathBuf},
    process::Command,
    time::{Duration, Instant},
};

use handshake_trace_tests::*;

/// The value of the first sample line starting with `series` (name and labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.trim().parse().ok())
}

fn metrics(listen: SocketAddr) -> String {
    http_get(listen, "/metrics").filter(|(s, _)| *s == 200).map(|(_, b)| b).unwrap_or_default()
}

/// The sum of handshake_trace_handshakes_total over the series with this verdict.
fn handshakes(text: &str, verdict: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with("handshake_trace_handshakes_total{") && l.contains(&format!("verdict=\"{verdict}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

fn set_nofile(soft: u64) {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: plain rlimit calls on structs we own.
    unsafe {
        assert_eq!(libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim), 0);
        lim.rlim_cur = soft.min(lim.rlim_max);
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0);
    }
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count()).unwrap_or(0)
}

fn temp_dir(what: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("handshake-trace-security-{what}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn wrong_login(db: &MariaDb) {
    let out = db.client(LAB_USER, "wrong", &["--skip-ssl", "-e", "SELECT 1"]).unwrap();
    assert!(!out.status.success());
}

fn right_login(db: &MariaDb) {
    let out = db.client(LAB_USER, LAB_PASSWORD, &["--skip-ssl", "-e", "SELECT 1"]).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// GET /metrics, timed; None when it did not answer 200.
fn timed_metrics(listen: SocketAddr) -> (Option<String>, Duration) {
    let started = Instant::now();
    let body = http_get(listen, "/metrics").filter(|(s, _)| *s == 200).map(|(_, b)| b);
    (body, started.elapsed())
}

#[test]
fn an_idle_connection_flood_neither_blinds_the_agent_nor_stops_its_counting() {
    let test = "an_idle_connection_flood_neither_blinds_the_agent_nor_stops_its_counting";
    let Some(bin) = ready(test) else { return };
    let db = MariaDb::start(&MariaDbOptions::default()).expect("start MariaDB");
    let listen = free_addr();
    // The agent starts with the common default soft limit of 1024 open files (today's
    // binary then runs out at ~1000 idle connections); the test itself needs more.
    set_nofile(1024);
    let agent = Tracer::start(
        &bin,
        &["agent", "-p", &db.pid().to_string(), "--port", &db.port().to_string(), "--listen", &listen.to_string(), "--web-header-timeout", "2"],
    );
    set_nofile(8192);
    assert!(eventually(Duration::from_secs(10), || http_get(listen, "/readyz").is_some_and(|(s, _)| s == 200)), "/readyz never said ready");
    let before = metrics(listen);
    let targets = sample(&before, "handshake_trace_targets").expect("handshake_trace_targets");
    assert_eq!(targets, 1.0, "{before}");

    // 1100 idle connections that never send a byte.
    let mut flood = Vec::new();
    for _ in 0..1100 {
        flood.push(TcpStream::connect_timeout(&listen, Duration::from_secs(2)).expect("connect"));
    }
    std::thread::sleep(Duration::from_millis(500));
    let fds = open_fds(agent.pid());
    // During the flood: /metrics answers at once, the target is still traced, the
    // agent's descriptors stay far below its limit (at most 64 connections open).
    let mut slowest = Duration::ZERO;
    for _ in 0..5 {
        let (body, took) = timed_metrics(listen);
        let body = body.unwrap_or_else(|| panic!("/metrics did not answer during the flood ({took:?})"));
        assert_eq!(sample(&body, "handshake_trace_targets"), Some(targets), "{body}");
        slowest = slowest.max(took);
    }
    eprintln!("during 1100 idle connections: the slowest of 5 /metrics took {slowest:?}; the agent held {fds} fds");
    assert!(slowest < Duration::from_secs(2), "/metrics took {slowest:?} during the flood");
    assert!(fds < 64 + 200, "{fds} fds open in the agent during the flood");
    let evicted = || sample(&metrics(listen), "handshake_trace_http_connections_closed_total{reason=\"evicted_idle\"}").unwrap_or(0.0);
    assert!(eventually(Duration::from_secs(10), || evicted() >= 1000.0), "{} idle connections evicted", evicted());
    let during = metrics(listen);
    assert!(sample(&during, "handshake_trace_http_connections").unwrap_or(f64::NAN) <= 64.0, "{during}");
    // A real login during the flood is counted.
    let ok_before = handshakes(&during, "ok");
    right_login(&db);
    assert!(eventually(Duration::from_secs(5), || handshakes(&metrics(listen), "ok") == ok_before + 1.0), "a login during the flood was not counted");
    drop(flood);

    // Slow request heads: a byte every 300 ms never completes a head; each connection
    // is closed at the header timeout (2 s), and meanwhile /metrics answers.
    let slow: Vec<std::thread::JoinHandle<Duration>> = (0..20)
        .map(|_| {
            std::thread::spawn(move || {
                let started = Instant::now();
                let mut s = TcpStream::connect(listen).unwrap();
                s.set_read_timeout(Some(Duration::from_millis(300))).unwrap();
                let head = b"GET /metrics HTTP/1.1\r\nX-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
                // A byte every 300 ms (the read's timeout paces it) until the agent closes.
                for b in head.iter().cycle() {
                    if started.elapsed() > Duration::from_secs(30) || s.write_all(&[*b]).is_err() {
                        break;
                    }
                    let mut buf = [0u8; 256];
                    match s.read(&mut buf) {
                        Ok(0) => break,
                        // An error response (408): the close follows.
                        Ok(_) => {}
                        Err(e) if matches!(e.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut) => {}
                        Err(_) => break,
                    }
                }
                started.elapsed()
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let (body, took) = timed_metrics(listen);
    assert!(body.is_some() && took < Duration::from_secs(2), "/metrics with slow clients: {took:?}");
    for t in slow {
        let held = t.join().unwrap();
        assert!(held < Duration::from_secs(6), "a slow head held its connection {held:?} (header timeout 2 s)");
    }

    // After: the target is still traced and a new login is counted.
    let after = metrics(listen);
    assert_eq!(sample(&after, "handshake_trace_targets"), Some(targets), "{after}");
    let ok_before = handshakes(&after, "ok");
    right_login(&db);
    assert!(eventually(Duration::from_secs(5), || handshakes(&metrics(listen), "ok") == ok_before + 1.0), "a login after the flood was not counted");
    assert_eq!(http_get(listen, "/readyz").map(|(s, _)| s), Some(200));
    let limits = std::fs::read_to_string(format!("/proc/{}/limits", agent.pid())).unwrap();
    let soft: u64 = limits.lines().find(|l| l.starts_with("Max open files")).and_then(|l| l.split_whitespace().nth(3)?.parse().ok()).unwrap();
    assert!(soft > 1024, "the agent raises its soft limit of open files: {limits}");
    let out = agent.stop_with(libc::SIGTERM);
    assert_eq!(out.code, Some(0), "{}", out.stderr_text());
}

const NOBODY: u32 = 65534;

/// `sh -c script` as the user nobody.
fn as_nobody(script: &str) {
    let out = Command::new("sh").args(["-c", script]).uid(NOBODY).gid(NOBODY).output().unwrap();
    assert!(out.status.success(), "as nobody: {script}: {}", String::from_utf8_lossy(&out.stderr));
}

#[test]
fn a_symbolic_link_swapped_in_for_the_log_is_refused_on_sighup_and_its_target_untouched() {
    let test = "a_symbolic_link_swapped_in_for_the_log_is_refused_on_sighup_and_its_target_untouched";
    let Some(bin) = ready(test) else { return };
    let db = MariaDb::start(&MariaDbOptions::default()).expect("start MariaDB");
    let root = temp_dir("symlink");
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    // The log's folder belongs to another user (nobody): it may rename and link there.
    let logs = root.join("logs");
    std::fs::create_dir(&logs).unwrap();
    std::os::unix::fs::chown(&logs, Some(NOBODY), Some(NOBODY)).unwrap();
    let log = logs.join("abnormal.jsonl");
    // A root-owned file only root may write: a stand-in for /etc/passwd.
    let victim = root.join("passwd");
    let victim_text = "root:x:0:0:root:/root:/bin/bash\n";
    std::fs::write(&victim, victim_text).unwrap();
    let flight = root.join("flight");
    let listen = free_addr();
    let mut agent = Tracer::start(
        &bin,
        &[
            "agent", "-p", &db.pid().to_string(), "--port", &db.port().to_string(), "--listen", &listen.to_string(),
            "--log", log.to_str().unwrap(), "--flight-dir", flight.to_str().unwrap(),
        ],
    );
    assert!(eventually(Duration::from_secs(10), || http_get(listen, "/readyz").is_some_and(|(s, _)| s == 200)), "/readyz never said ready");
    wrong_login(&db);
    let lines = |p: &Path| std::fs::read_to_string(p).unwrap_or_default().lines().count();
    assert!(eventually(Duration::from_secs(5), || lines(&log) == 1), "{} lines in the log", lines(&log));
    // Created private: the log 0600, the flight folder 0700 and its files 0600.
    assert_eq!(std::fs::metadata(&log).unwrap().permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::metadata(&flight).unwrap().permissions().mode() & 0o777, 0o700);
    assert!(eventually(Duration::from_secs(5), || std::fs::read_dir(&flight).is_ok_and(|d| d.count() == 1)));
    for f in std::fs::read_dir(&flight).unwrap() {
        assert_eq!(f.unwrap().metadata().unwrap().permissions().mode() & 0o777, 0o600);
    }

    // nobody moves the log away and puts a link to the root-owned file in its place.
    as_nobody(&format!("cd {} && mv abnormal.jsonl moved.jsonl && ln -s {} abnormal.jsonl", logs.display(), victim.display()));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(agent.pid() as i32, libc::SIGHUP) };
    std::thread::sleep(Duration::from_millis(300));
    wrong_login(&db);
    assert!(agent.wait_for_stderr("symbolic link: refused", Duration::from_secs(5)), "the refusal is said on stderr");
    let text = metrics(listen);
    assert!(sample(&text, "handshake_trace_file_open_refusals_total{file=\"abnormal_log\"}").unwrap_or(0.0) >= 1.0, "{text}");
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), victim_text, "the link's target was written to");
    // The agent goes on counting.
    assert!(eventually(Duration::from_secs(5), || handshakes(&metrics(listen), "auth_failed") == 2.0), "{}", metrics(listen));

    // The link removed: the next SIGHUP opens a new file of the agent's own.
    as_nobody(&format!("rm {}", log.display()));
    // SAFETY: signalling our own child.
    unsafe { libc::kill(agent.pid() as i32, libc::SIGHUP) };
    std::thread::sleep(Duration::from_millis(300));
    wrong_login(&db);
    assert!(eventually(Duration::from_secs(5), || lines(&log) == 1), "{} lines in the new log", lines(&log));
    let meta = std::fs::symlink_metadata(&log).unwrap();
    assert!(meta.file_type().is_file());
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert_eq!(std::fs::read_to_string(&victim).unwrap(), victim_text);
    let out = agent.stop_with(libc::SIGTERM);
    assert_eq!(out.code, Some(0), "{}", out.stderr_text());
    std::fs::remove_dir_all(&root).unwrap();
}

/// A small tmpfs mounted on a folder of its own, unmounted when dropped.
struct Tmpfs(PathBuf);

impl Tmpfs {
    fn mount(dir: PathBuf, size: &str) -> Tmpfs {
        let out = Command::new("mount").args(["-t", "tmpfs", "-o", &format!("size={size},mode=0700"), "tmpfs"]).arg(&dir).output().unwrap();
        assert!(out.status.success(), "mount tmpfs: {}", String::from_utf8_lossy(&out.stderr));
        Tmpfs(dir)
    }

    fn free_bytes(&self) -> u64 {
        let c = std::ffi::CString::new(self.0.as_os_str().as_encoded_bytes()).unwrap();
        // SAFETY: statvfs writes into the struct we own.
        let mut s: libc::statvfs = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::statvfs(c.as_ptr(), &mut s) }, 0);
        s.f_bavail * s.f_bsize
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(&self.0).status();
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn trace_files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir).into_iter().flatten().flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

/// A port check: connect, then reset without a byte.
fn port_check(db: &MariaDb) {
    let s = TcpStream::connect(("127.0.0.1", db.port())).unwrap();
    set_linger0(&s);
    drop(s);
}

#[test]
fn a_full_disk_leaves_no_partial_flight_file_and_no_torn_log_line_and_probes_write_no_file() {
    let test = "a_full_disk_leaves_no_partial_flight_file_and_no_torn_log_line_and_probes_write_no_file";
    let Some(bin) = ready(test) else { return };
    let db = MariaDb::start(&MariaDbOptions::default()).expect("start MariaDB");
    let fs = Tmpfs::mount(temp_dir("tmpfs"), "4m");
    let flight = fs.0.join("flight");
    let log = fs.0.join("abnormal.jsonl");
    let listen = free_addr();
    let start = |max_files: &str| {
        Tracer::start(
            &bin,
            &[
                "agent", "-p", &db.pid().to_string(), "--port", &db.port().to_string(), "--listen", &listen.to_string(),
                "--log", log.to_str().unwrap(), "--flight-dir", flight.to_str().unwrap(), "--flight-max-files", max_files,
            ],
        )
    };
    let agent = start("3");
    assert!(eventually(Duration::from_secs(10), || http_get(listen, "/readyz").is_some_and(|(s, _)| s == 200)), "/readyz never said ready");
    let written = || sample(&metrics(listen), "handshake_trace_flight_recordings_total{outcome=\"written\"}").unwrap_or(0.0);
    // Port checks write no flight file (they are counted as usual).
    for _ in 0..3 {
        port_check(&db);
        std::thread::sleep(Duration::from_millis(1100));
    }
    assert!(eventually(Duration::from_secs(5), || handshakes(&metrics(listen), "client_reset") == 3.0), "port checks not counted: {}", metrics(listen));
    assert!(trace_files(&flight).is_empty(), "port checks made flight files: {:?}", trace_files(&flight));
    // Two failures a second apart: two files.
    for _ in 0..2 {
        wrong_login(&db);
        std::thread::sleep(Duration::from_millis(1100));
    }
    assert!(eventually(Duration::from_secs(5), || written() == 2.0), "{:?}", trace_files(&flight));
    let whole = trace_files(&flight);
    assert_eq!(whole.len(), 2, "{whole:?}");

    // Fill the disk but for a little: a flight file no longer fits, a log record barely.
    let filler = fs.0.join("filler");
    let free = fs.free_bytes();
    let mut f = std::fs::File::create(&filler).unwrap();
    let chunk = vec![0x55u8; 4096];
    let mut left = free.saturating_sub(6 * 1024);
    while left > 0 {
        let n = left.min(chunk.len() as u64) as usize;
        if f.write_all(&chunk[..n]).is_err() {
            break;
        }
        left -= n as u64;
    }
    drop(f);
    for _ in 0..4 {
        wrong_login(&db);
        std::thread::sleep(Duration::from_millis(1100));
    }
    let text = metrics(listen);
    assert!(sample(&text, "handshake_trace_flight_recordings_total{outcome=\"dropped\"}").unwrap_or(0.0) >= 1.0, "{text}");
    assert!(sample(&text, "handshake_trace_abnormal_log_records_total{outcome=\"dropped\"}").unwrap_or(0.0) >= 1.0, "{text}");
    // Only whole traces in the folder: no partial file, no empty one.
    let names = trace_files(&flight);
    assert!(names.iter().all(|n| n.starts_with("abnormal-") && n.ends_with(".htrace")), "{names:?}");
    for n in &names {
        assert!(std::fs::metadata(flight.join(n)).unwrap().len() > 0, "{n} is empty");
        let out = Command::new(&bin).arg("analyze").arg(flight.join(n)).output().unwrap();
        assert!(out.status.success(), "analyze {n}: {}", String::from_utf8_lossy(&out.stderr));
    }
    // Space again: the log goes on with whole lines, none glued to a torn one.
    std::fs::remove_file(&filler).unwrap();
    wrong_login(&db);
    std::thread::sleep(Duration::from_millis(1100));
    let lines = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    assert!(eventually(Duration::from_secs(5), || lines(&log).lines().last().is_some_and(|l| l.contains("auth_failed"))));
    for line in lines(&log).lines() {
        assert!(serde_json::from_str::<serde_json::Value>(line).is_ok(), "a torn line in the log: {line:?}");
    }
    let out = agent.stop_with(libc::SIGTERM);
    assert_eq!(out.code, Some(0), "{}", out.stderr_text());
    let before = trace_files(&flight);
    assert!(before.len() >= 3, "{before:?}");

    // A restart with --flight-max-files 2 counts the files already there: the oldest go.
    let agent = start("2");
    let after = trace_files(&flight);
    assert_eq!(after.len(), 2, "{after:?}");
    assert!(before.ends_with(&after), "the newest kept: {before:?} → {after:?}");
    let out = agent.stop_with(libc::SIGTERM);
    assert_eq!(out.code, Some(0), "{}", out.stderr_text());
    drop(fs);
}

/// A self-signed certificate for 127.0.0.1 with openssl: (cert, key).
fn self_signed(dir: &Path) -> (PathBuf, PathBuf) {
    let (cert, key) = (dir.join("tls.crt"), dir.join("tls.key"));
    let out = Command::new("openssl")
        .args(["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .unwrap();
    assert!(out.status.success(), "openssl: {}", String::from_utf8_lossy(&out.stderr));
    (cert, key)
}

/// curl over TLS: (status, body).
fn curl(cert: &Path, url: &str, user: Option<&str>) -> (u16, String) {
    let mut cmd = Command::new("curl");
    cmd.args(["-sS", "--max-time", "10", "--cacert"]).arg(cert).args(["-w", "\n%{http_code}"]);
    if let Some(u) = user {
        cmd.args(["-u", u]);
    }
    let out = cmd.arg(url).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[test]
fn with_a_web_config_the_endpoints_need_credentials_over_tls_and_top_names_no_user() {
    let test = "with_a_web_config_the_endpoints_need_credentials_over_tls_and_top_names_no_user";
    let Some(bin) = ready(test) else { return };
    let db = MariaDb::start(&MariaDbOptions::default()).expect("start MariaDB");
    let dir = temp_dir("web");
    let (cert, key) = self_signed(&dir);
    let hash = bcrypt::hash("scrape-Pa55", 6).unwrap();
    let config = dir.join("web.yml");
    std::fs::write(
        &config,
        format!("tls_server_config:\n  cert_file: {}\n  key_file: {}\nbasic_auth_users:\n  prometheus: '{hash}'\n", cert.display(), key.display()),
    )
    .unwrap();
    let listen = free_addr();
    let agent = Tracer::start(
        &bin,
        &["agent", "-p", &db.pid().to_string(), "--port", &db.port().to_string(), "--listen", &listen.to_string(), "--web-config", config.to_str().unwrap()],
    );
    let base = format!("https://{listen}");
    assert!(eventually(Duration::from_secs(10), || curl(&cert, &format!("{base}/readyz"), None).0 == 200), "/readyz (open, over TLS) never said ready");
    assert_eq!(curl(&cert, &format!("{base}/healthz"), None).0, 200, "/healthz needs no credentials");
    assert_eq!(curl(&cert, &format!("{base}/metrics"), None).0, 401);
    assert_eq!(curl(&cert, &format!("{base}/metrics"), Some("prometheus:wrong")).0, 401);
    assert_eq!(curl(&cert, &format!("{base}/top"), None).0, 401);
    let (status, body) = curl(&cert, &format!("{base}/metrics"), Some("prometheus:scrape-Pa55"));
    assert_eq!(status, 200);
    assert!(body.contains("handshake_trace_targets 1"), "{body}");
    assert!(sample(&body, "handshake_trace_http_auth_failures_total").unwrap_or(0.0) >= 3.0, "{body}");
    // Plain HTTP on the TLS port gets no metrics.
    assert!(http_get(listen, "/metrics").is_none_or(|(s, _)| s != 200));

    // A password typed into the user field does not show on /top.
    let secret_user = "Hunter2-Pa55word";
    let out = db.client(secret_user, "x", &["--skip-ssl", "-e", "SELECT 1"]).unwrap();
    assert!(!out.status.success());
    let top = || curl(&cert, &format!("{base}/top"), Some("prometheus:scrape-Pa55"));
    assert!(eventually(Duration::from_secs(5), || top().1.contains("127.0.0.1")), "{}", top().1);
    let (status, body) = top();
    assert_eq!(status, 200);
    assert!(!body.contains(secret_user) && !body.contains("\"user\""), "{body}");
    let out = agent.stop_with(libc::SIGTERM);
    assert_eq!(out.code, Some(0), "{}", out.stderr_text());
    std::fs::remove_dir_all(&dir).unwrap();
}
