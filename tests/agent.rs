//! `agent` against a real MariaDB, scraped by Debian's real Prometheus: the counts
//! Prometheus holds per verdict agree with the scenarios and with MariaDB's
//! `Aborted_connects`; `promtool check metrics` passes on the exposition; SIGKILL
//! leaves none of the agent's programs loaded.
use std::{
    collections::BTreeMap,
    io::Write,
    net::{SocketAddr, TcpStream},
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    time::Duration,
};

use handshake_trace_tests::*;
use serde_json::Value;

fn percent_encode(q: &str) -> String {
    q.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Debian's Prometheus, scraping `target` every second, with its own storage.
struct Prometheus {
    child: Child,
    addr: SocketAddr,
    dir: PathBuf,
}

impl Prometheus {
    fn start(target: SocketAddr) -> Prometheus {
        let dir = std::env::temp_dir().join(format!("handshake-trace-prometheus-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let config = dir.join("prometheus.yml");
        std::fs::write(
            &config,
            format!("global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\nscrape_configs:\n  - job_name: handshake-trace\n    static_configs:\n      - targets: ['{target}']\n"),
        )
        .unwrap();
        let addr = free_addr();
        let child = Command::new("prometheus")
            .arg(format!("--config.file={}", config.display()))
            .arg(format!("--storage.tsdb.path={}", dir.join("data").display()))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
            .spawn()
            .expect("start prometheus");
        let p = Prometheus { child, addr, dir };
        assert!(
            eventually(Duration::from_secs(30), || http_get(p.addr, "/-/ready").is_some_and(|(s, _)| s == 200)),
            "prometheus did not become ready: {}",
            p.log()
        );
        p
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }

    /// An instant query's vector result: each series' labels and value.
    fn query(&self, q: &str) -> Vec<(BTreeMap<String, String>, f64)> {
        let Some((200, body)) = http_get(self.addr, &format!("/api/v1/query?query={}", percent_encode(q))) else { return Vec::new() };
        let v: Value = serde_json::from_str(&body).unwrap_or_default();
        v["data"]["result"]
            .as_array()
            .into_iter()
            .flatten()
            .map(|r| {
                let labels = r["metric"].as_object().into_iter().flatten().map(|(k, v)| (k.clone(), v.as_str().unwrap_or("").to_string())).collect();
                (labels, r["value"][1].as_str().and_then(|s| s.parse().ok()).unwrap_or(f64::NAN))
            })
            .collect()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn promtool_check(body: &str) -> (bool, String) {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("promtool");
    child.stdin.take().unwrap().write_all(body.as_bytes()).unwrap();
    let out = child.wait_with_output().unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn installed(tool: &str) -> bool {
    std::env::var_os("PATH").is_some_and(|p| std::env::split_paths(&p).any(|d| Path::new(&d).join(tool).is_file()))
}

#[test]
fn prometheus_counts_each_verdict_as_the_scenarios_and_aborted_connects_say() {
    let test = "prometheus_counts_each_verdict_as_the_scenarios_and_aborted_connects_say";
    let Some(bin) = ready(test) else { return };
    if !installed("prometheus") || !installed("promtool") {
        return skip(test, "prometheus is not installed (`cargo xtask setup` installs it)");
    }
    let db = MariaDb::start(&MariaDbOptions { connect_timeout: 2, ..Default::default() }).expect("start MariaDB");
    let listen = free_addr();
    let port = db.port().to_string();
    // --port: the harness's own status queries over the Unix socket are not counted.
    let flight_dir = std::env::temp_dir().join(format!("handshake-trace-flight-{}", std::process::id()));
    let agent = Tracer::start(
        &bin,
        &["agent", "-p", &db.pid().to_string(), "--port", &port, "--listen", &listen.to_string(), "--flight-dir", flight_dir.to_str().unwrap()],
    );
    assert!(
        eventually(Duration::from_secs(10), || http_get(listen, "/readyz").is_some_and(|(s, _)| s == 200)),
        "/readyz never said ready"
    );
    assert_eq!(http_get(listen, "/healthz").map(|(s, _)| s), Some(200));
    let prometheus = Prometheus::start(listen);
    let aborted_before = db.status("Aborted_connects").unwrap();

    // Three logins with the real CLI.
    for _ in 0..3 {
        let out = db.client(LAB_USER, LAB_PASSWORD, &["--skip-ssl", "-e", "SELECT 1"]).unwrap();
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    }
    // A wrong password.
    let out = db.client(LAB_USER, "not-the-password", &["--skip-ssl", "-e", "SELECT 1"]).unwrap();
    assert!(!out.status.success());
    // A client that reads the greeting and stays silent until the server times out (2 s).
    let mut silent = TcpStream::connect(db.addr()).unwrap();
    read_greeting(&mut silent);
    let silent_port = silent.local_addr().unwrap().port();
    let mut client_ports = vec![silent_port];
    // A client that reads the greeting and closes.
    let mut quitter = TcpStream::connect(db.addr()).unwrap();
    read_greeting(&mut quitter);
    client_ports.push(quitter.local_addr().unwrap().port());
    drop(quitter);
    // Close only once the server timed the silent client out (2 s): after a fixed 3 s
    // sleep, a loaded machine (CI, 2026-12-01 01:36 UTC) let the client's close come
    // first, a client_reset.
    silent.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let _ = std::io::Read::read_to_end(&mut silent, &mut Vec::new());
    drop(silent);

    let want: BTreeMap<String, f64> =
        [("ok", 3.0), ("auth_failed", 1.0), ("server_timeout", 1.0), ("client_closed", 1.0)].into_iter().map(|(v, n)| (v.to_string(), n)).collect();
    let mut got = BTreeMap::new();
    let agreed = eventually(Duration::from_secs(30), || {
        got = prometheus
            .query("sum by (verdict) (handshake_trace_handshakes_total)")
            .into_iter()
            .map(|(l, v)| (l.get("verdict").cloned().unwrap_or_default(), v))
            .collect();
        got == want
    });
    assert!(agreed, "Prometheus has {got:?}, the scenarios made {want:?}\nagent: {}\nprometheus: {}", http_get(listen, "/metrics").map(|(_, b)| b).unwrap_or_default(), prometheus.log());
    let abnormal: f64 = got.iter().filter(|(v, _)| *v != "ok").map(|(_, n)| n).sum();
    let aborted = db.status("Aborted_connects").unwrap() - aborted_before;
    eprintln!("agent test: Prometheus per verdict {got:?}; abnormal {abnormal}, Aborted_connects delta {aborted}");
    assert_eq!(abnormal, aborted as f64, "abnormal handshakes in Prometheus vs MariaDB's Aborted_connects delta");

    // Whose side, as Prometheus has it: the silent client and the wrong password are the client's.
    let blame: BTreeMap<String, f64> = prometheus
        .query("sum by (blame) (handshake_trace_handshakes_total)")
        .into_iter()
        .map(|(l, v)| (l.get("blame").cloned().unwrap_or_default(), v))
        .collect();
    assert_eq!(blame.get("client"), Some(&3.0), "{blame:?}");
    assert_eq!(blame.get("none"), Some(&3.0), "{blame:?}");
    // The agent's default tier (socket) does not see the server's wait: its mechanism is not_seen.
    let mechanism = prometheus.query("sum by (mechanism) (handshake_trace_handshakes_total{verdict=\"server_timeout\"})");
    assert_eq!(mechanism.first().map(|(l, _)| l["mechanism"].as_str()), Some("not_seen"), "{mechanism:?}");
    let errors = prometheus.query("handshake_trace_handshake_errors_total{code=\"1045\"}");
    assert_eq!(errors.first().map(|(_, v)| *v), Some(1.0), "{errors:?}");
    let programs = prometheus.query("handshake_trace_programs_attached");
    assert!(programs.first().is_some_and(|(_, v)| *v > 0.0), "{programs:?}");
    // The flight recorder's ring reaches back over the scenarios (seconds apart, a few
    // records: its age bound, not its size, decides).
    let window = prometheus.query("handshake_trace_flight_window_seconds");
    assert!(window.first().is_some_and(|(_, v)| *v > 1.0 && *v <= 10.0), "{window:?}");

    // The exposition as anyone but a scraper asking for OpenMetrics gets it.
    let (status, body) = http_get(listen, "/metrics").expect("GET /metrics");
    assert_eq!(status, 200);
    for port in client_ports {
        assert!(!body.contains(&format!(":{port}\"")), "client port {port} in the metrics' labels:\n{body}");
    }
    let (ok, problems) = promtool_check(&body);
    assert!(ok, "promtool check metrics: {problems}\n{body}");
    // Every metric the Grafana dashboard and the alerting rules in deploy/ use is served.
    let served = metric_names(&body);
    let missing: Vec<String> = deploy_metric_names().into_iter().filter(|m| !served.contains(m)).collect();
    assert!(missing.is_empty(), "deploy/ uses metrics the agent does not serve: {missing:?}\n{body}");

    // /top: the client with its three abnormal handshakes (the silent and closing ones
    // sent no login: they count under no user).
    let (status, top) = http_get(listen, "/top").expect("GET /top");
    assert_eq!(status, 200);
    let top: Value = serde_json::from_str(&top).unwrap();
    let total: u64 = top["top"].as_array().unwrap().iter().filter(|c| c["client"] == "127.0.0.1").map(|c| c["abnormal"].as_u64().unwrap()).sum();
    assert_eq!(total, 3, "{top:#}");

    // The flight recorder wrote the silent client's timeout (files are rate-limited to one
    // a second: the failures close together may share one), and analyze replays it.
    let files: Vec<PathBuf> = std::fs::read_dir(&flight_dir).unwrap().map(|e| e.unwrap().path()).collect();
    assert!(!files.is_empty(), "no flight recording in {}", flight_dir.display());
    let replayed: Vec<Value> = files
        .iter()
        .flat_map(|f| {
            let out = Command::new(&bin).arg("analyze").arg(f).arg("-j").output().unwrap();
            assert!(out.status.success(), "analyze {}: {}", f.display(), String::from_utf8_lossy(&out.stderr));
            String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect::<Vec<Value>>()
        })
        .collect();
    assert!(
        replayed.iter().any(|h| h["client"] == format!("127.0.0.1:{silent_port}") && h["verdict"] == "server_timeout"),
        "the silent client's timeout is not in the flight recordings: {replayed:#?}"
    );
    let written = prometheus.query("handshake_trace_flight_recordings_total{outcome=\"written\"}");
    assert_eq!(written.first().map(|(_, v)| *v), Some(files.len() as f64), "{written:?}");

    // SIGKILL: the kernel unloads the programs with the last fd.
    let ours = program_ids_of(agent.pid());
    assert!(!ours.is_empty() && ours.is_subset(&loaded_program_ids()));
    let out = agent.stop_with(libc::SIGKILL);
    assert!(
        eventually(Duration::from_secs(5), || loaded_program_ids().is_disjoint(&ours)),
        "programs still loaded after SIGKILL"
    );
    // The abnormal log (stdout): one JSON object per non-ok handshake.
    let logged: Vec<String> = out.json().iter().map(|h| h["verdict"].as_str().unwrap_or("").to_string()).collect();
    let mut logged_sorted = logged.clone();
    logged_sorted.sort();
    assert_eq!(logged_sorted, ["auth_failed", "client_closed", "server_timeout"], "{:?}", out.stdout);
    std::fs::remove_dir_all(&flight_dir).unwrap();
}

#[test]
fn sigterm_stops_the_agent_cleanly_and_sighup_reopens_its_log() {
    let test = "sigterm_stops_the_agent_cleanly_and_sighup_reopens_its_log";
    let Some(bin) = ready(test) else { return };
    let db = MariaDb::start(&MariaDbOptions::default()).expect("start MariaDB");
    let dir = std::env::temp_dir().join(format!("handshake-trace-agent-log-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("abnormal.jsonl");
    let listen = free_addr();
    let port = db.port().to_string();
    // systemd's side of Type=notify: a datagram socket named by NOTIFY_SOCKET.
    let notify_path = dir.join("notify.sock");
    let notify = std::os::unix::net::UnixDatagram::bind(&notify_path).unwrap();
    notify.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    std::env::set_var("NOTIFY_SOCKET", &notify_path);
    let agent = Tracer::start(
        &bin,
        &["agent", "-p", &db.pid().to_string(), "--port", &port, "--listen", &listen.to_string(), "--log", log.to_str().unwrap()],
    );
    std::env::remove_var("NOTIFY_SOCKET");
    let mut message = [0u8; 256];
    let n = notify.recv(&mut message).expect("READY=1 from the agent");
    assert_eq!(&message[..n], b"READY=1\n");
    let bad = |n: usize| {
        for _ in 0..n {
            let out = db.client(LAB_USER, "wrong", &["--skip-ssl", "-e", "SELECT 1"]).unwrap();
            assert!(!out.status.success());
        }
    };
    bad(1);
    let lines = |p: &Path| std::fs::read_to_string(p).unwrap_or_default().lines().count();
    assert!(eventually(Duration::from_secs(5), || lines(&log) == 1), "{} lines in the log", lines(&log));
    // logrotate's way: move the file, then SIGHUP.
    let moved = dir.join("abnormal.jsonl.old");
    std::fs::rename(&log, &moved).unwrap();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(agent.pid() as i32, libc::SIGHUP) };
    std::thread::sleep(Duration::from_millis(300));
    bad(2);
    assert!(eventually(Duration::from_secs(5), || lines(&log) == 2), "{} lines in the reopened log", lines(&log));
    assert_eq!(lines(&moved), 1);
    let ours = program_ids_of(agent.pid());
    let out = agent.stop_with(libc::SIGTERM);
    assert_eq!(out.code, Some(0), "{}", out.stderr_text());
    let n = notify.recv(&mut message).expect("STOPPING=1 from the agent");
    assert_eq!(&message[..n], b"STOPPING=1\n");
    assert!(out.stderr_text().contains("Summary: 3 handshakes (auth_failed 3)"), "{}", out.stderr_text());
    assert!(eventually(Duration::from_secs(5), || loaded_program_ids().is_disjoint(&ours)));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// The agent's gauge of the server's Unix-socket listeners, once it is ready.
fn unseen_unix_listeners(bin: &Path, db: &MariaDb, extra: &[&str]) -> (f64, String) {
    let listen = free_addr();
    let mut args = vec!["agent", "-p"];
    let pid = db.pid().to_string();
    let listen_s = listen.to_string();
    args.extend([pid.as_str(), "--listen", listen_s.as_str()]);
    args.extend(extra);
    let agent = Tracer::start(&bin.to_path_buf(), &args);
    assert!(eventually(Duration::from_secs(10), || http_get(listen, "/readyz").is_some_and(|(s, _)| s == 200)), "/readyz never said ready");
    let (_, body) = http_get(listen, "/metrics").expect("GET /metrics");
    let out = agent.stop_with(libc::SIGTERM);
    let value = body
        .lines()
        .find_map(|l| l.strip_prefix("handshake_trace_unseen_unix_listeners "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no handshake_trace_unseen_unix_listeners:\n{body}"));
    (value, out.stderr_text())
}

#[test]
fn the_agent_counts_the_unix_listeners_its_capture_tier_cannot_see() {
    let test = "the_agent_counts_the_unix_listeners_its_capture_tier_cannot_see";
    let Some(bin) = ready(test) else { return };
    // The harness's server listens on TCP and on its own Unix socket.
    let db = MariaDb::start(&MariaDbOptions::default()).expect("start MariaDB");
    let (socket_tier, stderr) = unseen_unix_listeners(&bin, &db, &[]);
    assert_eq!(socket_tier, 0.0, "the socket tier (the default) follows Unix-socket clients on this kernel");
    assert!(!stderr.contains("also listens on"), "{stderr}");
    // Where its hook is missing (forced here), the gauge counts the listener and says why.
    // SAFETY: tests run one at a time (--test-threads=1); the variable is read by the child only.
    unsafe { std::env::set_var("HANDSHAKE_TRACE_UNIX_CLIENTS", "off") };
    let (without_hook, stderr) = unseen_unix_listeners(&bin, &db, &[]);
    unsafe { std::env::remove_var("HANDSHAKE_TRACE_UNIX_CLIENTS") };
    assert_eq!(without_hook, 1.0, "{stderr}");
    assert!(stderr.contains("also listens on") && stderr.contains("HANDSHAKE_TRACE_UNIX_CLIENTS=off"), "{stderr}");
    let (syscall_tier, stderr) = unseen_unix_listeners(&bin, &db, &["--capture", "syscalls"]);
    assert_eq!(syscall_tier, 0.0, "the syscall tier sees them");
    assert!(!stderr.contains("also listens on"), "{stderr}");
}
