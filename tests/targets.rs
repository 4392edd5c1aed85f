//! Which processes the tracer trusts, run as root beside a hostile local user: fake
//! `mysqld`s (C programs compiled here, run as `nobody`) that `doctor` must never run
//! and that must never stop `watch` or `agent`; and a real MariaDB restarted under a
//! login load, whose every login the client saw succeed must be in `watch -j`'s output.
use std::{
    collections::BTreeSet,
    io::{BufRead, BufReader},
    os::unix::{fs::PermissionsExt, process::CommandExt},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use handshake_trace_tests::*;
use serde_json::Value;

const NOBODY: u32 = 65534;

/// A fake server: named mysqld (by its file name or `prctl(PR_SET_NAME)`), listening on
/// `argv[1]` loopback ports at once and `argv[2]` more after `argv[3]` ms. Run with
/// `--version`, it writes its uid to RAN_FILE (proof that someone ran it) and, if
/// SLEEPS, sleeps for an hour.
const FAKE_C: &str = r#"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <netinet/in.h>
#include <arpa/inet.h>

static void listen_on(int n) {
    for (int i = 0; i < n; i++) {
        int s = socket(AF_INET, SOCK_STREAM, 0);
        struct sockaddr_in a;
        memset(&a, 0, sizeof a);
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (s < 0 || bind(s, (struct sockaddr *)&a, sizeof a) != 0 || listen(s, 8) != 0) {
            perror("fake mysqld: listen");
            exit(1);
        }
    }
}

int main(int argc, char **argv) {
    if (argc > 1 && strcmp(argv[1], "--version") == 0) {
        FILE *f = fopen(RAN_FILE, "w");
        if (f) {
            fprintf(f, "uid=%d\n", (int)getuid());
            fclose(f);
        }
        if (SLEEPS) sleep(3600);
        printf("mysqld  Ver 99.0.0-fake\n");
        return 0;
    }
    prctl(PR_SET_NAME, "mysqld");
    int now = argc > 1 ? atoi(argv[1]) : 0;
    int later = argc > 2 ? atoi(argv[2]) : 0;
    int delay = argc > 3 ? atoi(argv[3]) : 0;
    listen_on(now);
    printf("ready\n");
    fflush(stdout);
    if (later > 0) {
        usleep(delay * 1000);
        listen_on(later);
        printf("more\n");
        fflush(stdout);
    }
    for (;;) pause();
}
"#;

/// The fakes of one test: a directory (removed on drop) with the compiled programs.
struct Fakes {
    dir: PathBuf,
}

impl Fakes {
    /// Compile `mysqld` (named so by its file) and `sleeper` (named by prctl; its
    /// `--version` sleeps), both owned by nobody, as a local user would have built them.
    fn build(test: &str) -> Fakes {
        let dir = std::env::temp_dir().join(format!("handshake-trace-fakes-{test}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        // Whoever runs a fake can leave its proof here.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let src = dir.join("fake.c");
        std::fs::write(&src, FAKE_C).unwrap();
        let f = Fakes { dir };
        for (name, sleeps) in [("mysqld", 0), ("sleeper", 1)] {
            let out = f.dir.join(name);
            let ran = f.ran_file(name);
            let status = Command::new("cc")
                .arg("-O")
                .arg(format!("-DRAN_FILE=\"{}\"", ran.display()))
                .arg(format!("-DSLEEPS={sleeps}"))
                .arg("-o")
                .arg(&out)
                .arg(&src)
                .status()
                .expect("cc (build-essential)");
            assert!(status.success(), "cc failed");
            // SAFETY: chown of a file we just made.
            let path = std::ffi::CString::new(out.to_str().unwrap()).unwrap();
            assert_eq!(unsafe { libc::chown(path.as_ptr(), NOBODY, NOBODY) }, 0);
            std::fs::set_permissions(&out, std::fs::Permissions::from_mode(0o755)).unwrap();
        }
        f
    }

    fn ran_file(&self, name: &str) -> PathBuf {
        self.dir.join(format!("{name}.ran"))
    }

    /// Run fake `name` as nobody, listening on `now` ports (and `later` more after
    /// `delay_ms`); returns once its first listeners are open.
    fn run(&self, name: &str, now: usize, later: usize, delay_ms: u64) -> FakeProcess {
        let mut child = Command::new(self.dir.join(name))
            .args([now.to_string(), later.to_string(), delay_ms.to_string()])
            .uid(NOBODY)
            .gid(NOBODY)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run a fake as nobody");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        assert_eq!(lines.next().and_then(Result::ok).as_deref(), Some("ready"), "the fake did not start");
        FakeProcess { child, lines: Some(lines) }
    }
}

impl Drop for Fakes {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

struct FakeProcess {
    child: Child,
    lines: Option<std::io::Lines<BufReader<std::process::ChildStdout>>>,
}

impl FakeProcess {
    fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Wait until its later listeners are open.
    fn wait_more(&mut self) {
        let line = self.lines.as_mut().and_then(|l| l.next()).and_then(Result::ok);
        assert_eq!(line.as_deref(), Some("more"), "the fake did not open its later listeners");
    }
}

impl Drop for FakeProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The handshakes in `all` to the server on `port`.
fn to_port(all: &[Value], port: u16) -> Vec<&Value> {
    let suffix = format!(":{port}");
    all.iter().filter(|h| h["server"].as_str().is_some_and(|s| s.ends_with(&suffix))).collect()
}

#[test]
fn doctor_never_runs_a_binary_named_like_a_server() {
    let test = "doctor_never_runs_a_binary_named_like_a_server";
    let Some(bin) = ready(test) else { return };
    let fakes = Fakes::build("doctor");
    // One named mysqld by its file, one by prctl whose --version would hang doctor.
    let named = fakes.run("mysqld", 1, 0, 0);
    let sleeper = fakes.run("sleeper", 1, 0, 0);
    let db = MariaDb::start(&MariaDbOptions::default()).expect("start MariaDB");
    let started = Instant::now();
    let mut doctor = Command::new(&bin).arg("doctor").stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let finished = eventually(Duration::from_secs(60), || doctor.try_wait().unwrap().is_some());
    if !finished {
        let _ = doctor.kill();
    }
    let out = doctor.wait_with_output().unwrap();
    let elapsed = started.elapsed();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(finished, "doctor still ran after 60 s (a fake's --version hangs it?):\n{text}");
    for name in ["mysqld", "sleeper"] {
        let ran = fakes.ran_file(name);
        assert!(!ran.exists(), "doctor ran the fake {name}: {}", std::fs::read_to_string(&ran).unwrap_or_default());
    }
    // Both fakes are listed, as processes discovery would not adopt; the real server
    // with its version, read without running it.
    let why_named = format!("owned by uid {NOBODY}, not root");
    for (fake, why) in [(&named, why_named.as_str()), (&sleeper, "sleeper is not named mysqld or mariadbd")] {
        let line = text.lines().find(|l| l.contains(&format!("pid {} mysqld", fake.pid()))).unwrap_or_else(|| panic!("{text}"));
        assert!(line.contains("not traced without -p") && line.contains(why), "{line}");
        assert!(line.contains("version unknown"), "{line}");
    }
    let real = text.lines().find(|l| l.contains(&format!("pid {} mariadbd", db.pid()))).unwrap_or_else(|| panic!("{text}"));
    assert!(real.contains("-MariaDB") && real.contains("traced without -p"), "{real}");
    eprintln!("doctor took {elapsed:?} beside two fake mysqlds");
}

#[test]
fn fake_mysqlds_with_300_listeners_stop_neither_watch_nor_agent() {
    let test = "fake_mysqlds_with_300_listeners_stop_neither_watch_nor_agent";
    let Some(bin) = ready(test) else { return };
    let fakes = Fakes::build("listeners");
    let db = MariaDb::start(&MariaDbOptions::default()).expect("start MariaDB");
    let before = fakes.run("sleeper", 300, 0, 0);
    let listen = free_addr();
    let watch = Tracer::start(&bin, &["watch", "-j"]);
    let agent = Tracer::start(&bin, &["agent", "--listen", &listen.to_string()]);
    // A second fake starts while both run (a running agent died within 2 s of one).
    let after = fakes.run("mysqld", 300, 0, 0);
    thread::sleep(Duration::from_secs(3));
    assert!(lab_login(db.addr(), true).unwrap(), "the lab login failed");
    assert!(eventually(Duration::from_secs(5), || http_get(listen, "/metrics").is_some_and(|(_, body)| {
        body.contains(&format!("handshake_trace_handshakes_total{{server=\"{}\",verdict=\"ok\"", db.addr()))
    })));
    let (_, metrics) = http_get(listen, "/metrics").expect("GET /metrics");
    let watch_out = watch.stop();
    let agent_out = agent.stop_with(libc::SIGTERM);
    for (what, out) in [("watch", &watch_out), ("agent", &agent_out)] {
        let err = out.stderr_text();
        assert_eq!(out.code, Some(0), "{what} did not end cleanly:\n{err}");
        for fake in [&before, &after] {
            let refused = format!("not tracing mysqld (pid {})", fake.pid());
            assert!(err.contains(&refused) && err.contains("[unverified]"), "{what} did not say it refused {}:\n{err}", fake.pid());
        }
    }
    let all = watch_out.json();
    let mine = to_port(&all, db.port());
    assert_eq!(mine.iter().filter(|h| h["verdict"] == "ok").count(), 1, "{mine:#?}");
    assert!(all.iter().all(|h| h["pid"] != before.pid() && h["pid"] != after.pid()));
    let refused: f64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("handshake_trace_targets_refused_total{reason=\"unverified\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("{metrics}"));
    assert!(refused >= 2.0, "{metrics}");
}

#[test]
fn a_target_with_too_many_ports_is_dropped_and_the_others_go_on() {
    let test = "a_target_with_too_many_ports_is_dropped_and_the_others_go_on";
    let Some(bin) = ready(test) else { return };
    let fakes = Fakes::build("ports");
    let db = MariaDb::start(&MariaDbOptions::default()).expect("start MariaDB");
    // Named explicitly (-p): 300 ports from the start; 1 port, then 300 more while traced.
    let wide = fakes.run("sleeper", 300, 0, 0);
    let mut late = fakes.run("mysqld", 1, 300, 2000);
    let (w, l, d) = (wide.pid().to_string(), late.pid().to_string(), db.pid().to_string());
    let mut watch = Tracer::start(&bin, &["watch", "-j", "-p", &w, "-p", &l, "-p", &d]);
    late.wait_more();
    assert!(
        watch.wait_for_stderr(&format!("not tracing mysqld (pid {l})"), Duration::from_secs(5)),
        "the target that opened 300 more listeners was not dropped"
    );
    assert!(lab_login(db.addr(), true).unwrap(), "the lab login failed");
    thread::sleep(Duration::from_millis(300));
    let out = watch.stop();
    let err = out.stderr_text();
    assert_eq!(out.code, Some(0), "{err}");
    assert!(err.contains(&format!("not tracing mysqld (pid {w}): it listens on 300 TCP ports")), "{err}");
    assert!(err.contains("[too_many_ports]"), "{err}");
    let all = out.json();
    assert_eq!(to_port(&all, db.port()).iter().filter(|h| h["verdict"] == "ok").count(), 1, "{all:#?}\n{err}");
}

/// One real login with the `mariadb` CLI: the client's own port as the server saw it
/// (PROCESSLIST's "localhost:PORT") and its connection id, when it succeeded.
fn cli_login(port: u16) -> Option<(u16, u64)> {
    let out = Command::new("mariadb")
        .args(["--no-defaults", "-h", "127.0.0.1", "-P", &port.to_string(), "-u", LAB_USER])
        .arg(format!("--password={LAB_PASSWORD}"))
        .args(["-N", "-B", "--connect-timeout=2", "-e", "SELECT HOST, ID FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()"])
        .stdin(Stdio::null())
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let (host, id) = text.trim().split_once('\t')?;
    Some((host.rsplit_once(':')?.1.parse().ok()?, id.trim().parse().ok()?))
}

/// UTC time of day, for the report.
fn utc_now() -> String {
    let s = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap();
    let (secs, ms) = (s.as_secs() % 86400, s.subsec_millis());
    format!("{:02}:{:02}:{:02}.{ms:03} UTC", secs / 3600, secs / 60 % 60, secs % 60)
}

#[test]
fn a_restarted_server_is_traced_from_its_first_login() {
    restarted_server_traced_from_its_first_login("a_restarted_server_is_traced_from_its_first_login", "socket");
}

#[test]
fn a_restarted_server_is_traced_from_its_first_login_in_the_syscall_tier() {
    restarted_server_traced_from_its_first_login("a_restarted_server_is_traced_from_its_first_login_in_the_syscall_tier", "syscalls");
}

/// Logins every ~10 ms from two `mariadb` CLI clients while a real MariaDB is stopped
/// (SIGTERM) and started again on the same port and datadir, traced by `watch -j`
/// without -p on capture tier `tier`: every login the client saw succeed is in the output.
fn restarted_server_traced_from_its_first_login(test: &str, tier: &str) {
    let Some(bin) = ready(test) else { return };
    let cgroup = Cgroup::create("restart").expect("a cgroup for MariaDB");
    let mut db = MariaDb::start_in(&MariaDbOptions::default(), cgroup).expect("start MariaDB");
    let port = db.port();
    // No -p: discovery, as a DBA runs it (--port keeps other servers on this host out).
    let watch = Tracer::start(&bin, &["watch", "-j", "--port", &port.to_string(), "--capture", tier]);
    let stop = Arc::new(AtomicBool::new(false));
    // (client port, connection id, ms after the clients began) of each successful login.
    let seen: Arc<Mutex<Vec<(u16, u64, u128)>>> = Arc::default();
    let began = Instant::now();
    // Two clients, each a login about every 10 ms.
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let (stop, seen) = (Arc::clone(&stop), Arc::clone(&seen));
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    if let Some((client, id)) = cli_login(port) {
                        seen.lock().unwrap().push((client, id, began.elapsed().as_millis()));
                    }
                    thread::sleep(Duration::from_millis(10));
                }
            })
        })
        .collect();
    thread::sleep(Duration::from_secs(2));
    let old_pid = db.pid();
    let restart_at = utc_now();
    let stopping_ms = began.elapsed().as_millis();
    db.restart().expect("restart MariaDB");
    let ready_ms = began.elapsed().as_millis();
    let new_pid = db.pid();
    // Logins against the new server for a while.
    thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    thread::sleep(Duration::from_millis(500));
    let out = watch.stop();
    let all = out.json();
    // (client port, connection id): ports repeat and ids start again with the new
    // server, the pair does not within this test.
    let traced: BTreeSet<(u16, u64)> = to_port(&all, port)
        .iter()
        .filter_map(|h| {
            let client: std::net::SocketAddr = h["client"].as_str()?.parse().ok()?;
            Some((client.port(), h["connection_id"].as_u64()?))
        })
        .collect();
    let seen = seen.lock().unwrap().clone();
    let missed: Vec<&(u16, u64, u128)> = seen.iter().filter(|(c, id, _)| !traced.contains(&(*c, *id))).collect();
    let not_ok: Vec<String> = to_port(&all, port)
        .into_iter()
        .filter(|h| h["verdict"] != "ok")
        .map(|h| format!("{} {} {}", h["client"], h["verdict"], h["pid"]))
        .collect();
    eprintln!(
        "{tier} tier: restart at {restart_at} (pid {old_pid} → {new_pid}): {} logins the client saw succeed, {} traced, {} missed; \
         {} not ok: {not_ok:?}",
        seen.len(),
        traced.len(),
        missed.len(),
        not_ok.len()
    );
    assert!(seen.len() > 100, "too few logins to say anything: {}", seen.len());
    assert!(
        missed.is_empty(),
        "{} successful logins (client port, connection id, ms) missing from the trace: {missed:?}; SIGTERM at {stopping_ms} ms, \
         the new server ready at {ready_ms} ms\n{}",
        missed.len(),
        out.stderr_text()
    );
    assert!(all.iter().any(|h| h["pid"] == new_pid), "nothing traced of the new server");
}
