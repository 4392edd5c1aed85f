//! `watch` against a real MariaDB with real clients and real kernel probes.
use std::{net::TcpStream, time::Duration};

use handshake_trace_tests::*;
use serde_json::Value;

/// The handshake of the client at `port`, if the tracer printed one.
fn handshake_for(events: &[Value], port: u16) -> Option<&Value> {
    events.iter().find(|e| e["client"] == format!("127.0.0.1:{port}"))
}

#[test]
fn watch_shows_each_accepted_connection_with_its_client_port() {
    let Some(bin) = ready("watch_shows_each_accepted_connection_with_its_client_port") else { return };
    let db = MariaDb::start(&MariaDbOptions::default()).expect("start MariaDB");
    let listen_fd = *handshake_trace::capture::targets::listening_sockets(db.pid())
        .iter()
        .find(|(_, a)| a.port() == db.port())
        .expect("the server's listening socket")
        .0;
    let tracer = Tracer::start(&bin, &["watch", "--capture", "syscalls", "-p", &db.pid().to_string(), "-j"]);

    // A raw client: we know its port because we own the socket. Read the greeting, leave.
    let mut raw = TcpStream::connect(db.addr()).unwrap();
    let raw_port = raw.local_addr().unwrap().port();
    read_greeting(&mut raw);
    // All of it read, so the close is a FIN (unread data would make the kernel send RST).
    drop(raw);

    // The real CLI: the server tells us the client port it saw.
    let out = db
        .client(
            LAB_USER,
            LAB_PASSWORD,
            &["-e", "SELECT SUBSTRING_INDEX(HOST, ':', -1) FROM information_schema.PROCESSLIST WHERE ID = CONNECTION_ID()"],
        )
        .unwrap();
    assert!(out.status.success(), "mariadb client failed: {}", String::from_utf8_lossy(&out.stderr));
    let cli_port: u16 = String::from_utf8_lossy(&out.stdout).trim().parse().expect("client port");

    std::thread::sleep(Duration::from_millis(300));
    let output = tracer.stop();
    assert_eq!(output.code, Some(0), "tracer failed: {}", output.stderr_text());
    let events = output.json();
    for (port, verdict) in [(raw_port, "client_closed"), (cli_port, "ok")] {
        let e = handshake_for(&events, port)
            .unwrap_or_else(|| panic!("no handshake for client port {port} in {events:#?}"));
        assert_eq!(e["pid"], db.pid());
        assert_eq!(e["listen_fd"], listen_fd);
        assert_eq!(e["server"], db.addr().to_string());
        assert!(e["fd"].as_i64().unwrap() > listen_fd as i64, "{e}");
        assert_eq!(e["verdict"], verdict, "{e:#}");
        // Timed from the TCP handshake (the listener is known), then the accept.
        assert_eq!((&e["events"][0]["event"], &e["events"][0]["text"]), (&Value::from("tcp"), &Value::from("TCP SYN_RECV → ESTABLISHED")), "{e:#}");
        assert_eq!(e["events"][1]["event"], "accept", "{e:#}");
    }
    // The raw client's FIN reaches the server's socket (sock:inet_sock_set_state, found
    // by the client's address in kernel context).
    let closed = handshake_for(&events, raw_port).unwrap();
    let steps = closed["events"].as_array().unwrap();
    assert!(
        steps.iter().any(|s| s["event"] == "tcp" && s["text"] == "TCP ESTABLISHED → CLOSE_WAIT" && s["tid"] == 0),
        "{closed:#}"
    );
    // MariaDB accepts until EAGAIN: those are filtered in the kernel, never shown.
    assert_eq!(events.len(), 2, "{events:#?}");
    let err = output.stderr_text();
    // The raw client connected, read the greeting and left without a byte: a port check.
    assert!(err.contains("Summary: 2 handshakes (ok 1, client_closed 1 (1 port check))"), "{err}");
    assert!(err.contains(" 0 lost "), "{err}");
}

#[test]
fn port_filter_keeps_only_connections_on_that_port() {
    let Some(bin) = ready("port_filter_keeps_only_connections_on_that_port") else { return };
    let db = MariaDb::start(&MariaDbOptions::default()).expect("start MariaDB");
    let tracer = Tracer::start(&bin, &["watch", "--capture", "syscalls", "-p", &db.pid().to_string(), "-j", "--port", "1"]);
    let c = TcpStream::connect(db.addr()).unwrap();
    let port = c.local_addr().unwrap().port();
    drop(c);
    std::thread::sleep(Duration::from_millis(300));
    let output = tracer.stop();
    assert!(handshake_for(&output.json(), port).is_none(), "{:?}", output.stdout);
    assert!(output.stderr_text().contains("1 on other ports"), "{}", output.stderr_text());
}

#[test]
fn a_target_that_exits_mid_trace_leaves_the_tracer_running() {
    let Some(bin) = ready("a_target_that_exits_mid_trace_leaves_the_tracer_running") else { return };
    let db = MariaDb::start(&MariaDbOptions::default()).expect("start MariaDB");
    let pid = db.pid();
    let tracer = Tracer::start(&bin, &["watch", "--capture", "syscalls", "-p", &pid.to_string(), "-j"]);
    // A client in the middle of its handshake when the server dies.
    let mut c = TcpStream::connect(db.addr()).unwrap();
    let port = c.local_addr().unwrap().port();
    read_greeting(&mut c);
    // SIGKILL: no close() of its sockets, the connection just ends with the process.
    // SAFETY: kill has no memory preconditions; pid is the test's own MariaDB.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    let tracer_pid = tracer.pid();
    // The tracer notices within its 1 s refresh and keeps going.
    std::thread::sleep(Duration::from_millis(2500));
    assert!(handshake_trace::capture::targets::process_exists(tracer_pid), "tracer died with its target");
    let output = tracer.stop();
    assert_eq!(output.code, Some(0), "{}", output.stderr_text());
    assert!(output.stderr_text().contains(&format!("pid {pid} exited; still tracing")), "{}", output.stderr_text());
    let h = handshake_for(&output.json(), port).unwrap_or_else(|| panic!("{:?}", output.stdout)).clone();
    assert_eq!(h["verdict"], "incomplete", "{h:#}");
    assert_eq!(h["reason"], "the server process exited mid-handshake", "{h:#}");
    drop(c);
    drop(db);
}

#[test]
fn programs_are_detached_on_exit_and_on_kill() {
    let Some(bin) = ready("programs_are_detached_on_exit_and_on_kill") else { return };
    let db = MariaDb::start(&MariaDbOptions::default()).expect("start MariaDB");
    for signal in [libc::SIGTERM, libc::SIGKILL] {
        let tracer = Tracer::start(&bin, &["watch", "--capture", "syscalls", "-p", &db.pid().to_string()]);
        let programs = handshake_trace::capture::probes::program_count(handshake_trace::capture::probes::AttachMode::default());
        // This tracer's programs by id: other tracers on the machine may come and go meanwhile.
        let ours = program_ids_of(tracer.pid());
        assert_eq!(ours.len(), programs, "every program attached while tracing");
        assert!(ours.is_subset(&loaded_program_ids()), "{ours:?} not all loaded in the kernel");
        tracer.stop_with(signal);
        assert!(
            eventually(Duration::from_secs(5), || loaded_program_ids().is_disjoint(&ours)),
            "programs still loaded after signal {signal}"
        );
    }
}

#[test]
fn a_restarted_server_is_picked_up_without_ending_the_trace() {
    let Some(bin) = ready("a_restarted_server_is_picked_up_without_ending_the_trace") else { return };
    let first = MariaDb::start(&MariaDbOptions::default()).expect("start MariaDB");
    let port = first.port();
    // No -p: every mysqld/mariadbd, including ones started later; --port keeps it to ours.
    let mut tracer = Tracer::start(&bin, &["watch", "--capture", "syscalls", "-j", "--port", &port.to_string()]);
    drop(first);
    let second = MariaDb::start(&MariaDbOptions { port, ..Default::default() }).expect("restart MariaDB");
    // The tracer rescans for servers every second: wait until it says it has the new one
    // (a fixed 2.5 s was too short on a loaded machine: the login came before the attach).
    let attached = format!("now tracing mariadbd (pid {})", second.pid());
    assert!(tracer.wait_for_stderr(&attached, Duration::from_secs(20)), "the restarted server was not picked up");
    let out = second.client(LAB_USER, LAB_PASSWORD, &["-e", "SELECT 1"]).unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    std::thread::sleep(Duration::from_millis(300));
    let output = tracer.stop();
    let err = output.stderr_text();
    assert!(err.contains(&format!("now tracing mariadbd (pid {})", second.pid())), "{err}");
    let events = output.json();
    assert!(
        events.iter().any(|h| h["pid"] == second.pid() && h["verdict"] == "ok" && h["user"] == LAB_USER),
        "no login traced on the restarted server: {events:#?}"
    );
}

/// The non-default attachment (`--attach tracepoints`, one program per syscall; the
/// default is raw_syscalls on x86-64) sees the same handshakes: a login, a wrong
/// password and a silent client's timeout.
#[test]
fn per_syscall_tracepoints_give_the_same_verdicts() {
    let Some(bin) = ready("per_syscall_tracepoints_give_the_same_verdicts") else { return };
    let db = MariaDb::start(&MariaDbOptions { connect_timeout: 2, ..Default::default() }).expect("start MariaDB");
    let tracer = Tracer::start(&bin, &["watch", "--capture", "syscalls", "-p", &db.pid().to_string(), "-j", "--attach", "tracepoints"]);
    let ok = db.client(LAB_USER, LAB_PASSWORD, &["-e", "SELECT 1"]).unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let denied = db.client(LAB_USER, "wrong", &["-e", "SELECT 1"]).unwrap();
    assert!(!denied.status.success());
    let mut silent = TcpStream::connect(db.addr()).unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    read_greeting(&mut silent);
    std::thread::sleep(Duration::from_millis(2500));
    drop(silent);
    let output = tracer.stop();
    let events = output.json();
    let verdicts: Vec<&str> = events.iter().map(|h| h["verdict"].as_str().unwrap()).collect();
    assert!(verdicts.contains(&"ok") && verdicts.contains(&"auth_failed"), "{verdicts:?}");
    let h = handshake_for(&events, silent_port).unwrap_or_else(|| panic!("{events:#?}"));
    assert_eq!(h["verdict"], "server_timeout", "{h:#}");
    assert_eq!(h["wait"]["mechanism"], "poll");
    assert_eq!(h["wait"]["timeout_ms"], 2000);
    assert!(output.stderr_text().contains(" 0 lost "), "{}", output.stderr_text());
}

/// The programs turn non-targets away with a short list of target pids; with more
/// targets than it holds they fall back to the hash map. Both must still trace.
#[test]
fn more_targets_than_the_short_list_holds_are_still_traced() {
    let Some(bin) = ready("more_targets_than_the_short_list_holds_are_still_traced") else { return };
    let db = MariaDb::start(&MariaDbOptions::default()).expect("start MariaDB");
    let mut others: Vec<std::process::Child> = (0..handshake_trace_common::FAST_TARGETS)
        .map(|_| std::process::Command::new("sleep").arg("60").spawn().expect("spawn sleep"))
        .collect();
    let mut args: Vec<String> = vec!["watch".into(), "--capture".into(), "syscalls".into(), "-j".into(), "-p".into(), db.pid().to_string()];
    for c in &others {
        args.extend(["-p".to_string(), c.id().to_string()]);
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let tracer = Tracer::start(&bin, &args);
    let ok = db.client(LAB_USER, LAB_PASSWORD, &["-e", "SELECT 1"]).unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    std::thread::sleep(Duration::from_millis(300));
    let output = tracer.stop();
    for c in &mut others {
        let _ = c.kill();
        let _ = c.wait();
    }
    let events = output.json();
    assert!(events.iter().any(|h| h["verdict"] == "ok" && h["user"] == LAB_USER), "{:?}\n{}", output.stdout, output.stderr_text());
}

/// The id of the LIVE map of tracer `pid` (other tracers on the machine have one too).
fn live_map_of(pid: u32) -> u64 {
    map_ids_of(pid)
        .into_iter()
        .find(|id| {
            let out = std::process::Command::new("bpftool").args(["-j", "map", "show", "id", &id.to_string()]).output().expect("bpftool");
            serde_json::from_slice::<Value>(&out.stdout).is_ok_and(|m| m["name"] == "LIVE")
        })
        .expect("the tracer's LIVE map")
}

/// The kernel's counts of connections in their handshake, of syscalls in flight and
/// of connections keyed without their server's port (the LIVE map `id`), as `bpftool`
/// reads them.
fn live_counts(id: u64) -> Vec<u64> {
    let out = std::process::Command::new("bpftool").args(["-j", "map", "dump", "id", &id.to_string()]).output().expect("bpftool");
    let dump: Value = serde_json::from_slice(&out.stdout).unwrap_or(Value::Null);
    dump.as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| {
                    let bytes: Vec<u8> = e["value"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|b| u8::from_str_radix(b.as_str().unwrap().trim_start_matches("0x"), 16).unwrap())
                        .collect();
                    u64::from_le_bytes(bytes.try_into().unwrap())
                })
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn the_kernel_counts_of_open_handshakes_return_to_zero_and_reopen() {
    let Some(bin) = ready("the_kernel_counts_of_open_handshakes_return_to_zero_and_reopen") else { return };
    let db = MariaDb::start(&MariaDbOptions::default()).expect("start MariaDB");
    let tracer = Tracer::start(&bin, &["watch", "--capture", "syscalls", "-p", &db.pid().to_string(), "-j"]);
    let live = live_map_of(tracer.pid());
    let login = || {
        let out = db.client(LAB_USER, LAB_PASSWORD, &["-e", "SELECT 1"]).unwrap();
        assert!(out.status.success(), "mariadb client failed: {}", String::from_utf8_lossy(&out.stderr));
    };
    for _ in 0..5 {
        login();
    }
    let mut raw = TcpStream::connect(db.addr()).unwrap();
    read_greeting(&mut raw);
    drop(raw);
    // Every handshake over: the programs stop looking connections up (the counts gate them).
    assert!(eventually(Duration::from_secs(5), || live_counts(live) == [0, 0, 0]), "counts stay {:?}", live_counts(live));
    // The gate reopens for the next connection: its whole handshake is still traced.
    login();
    std::thread::sleep(Duration::from_millis(300));
    let output = tracer.stop();
    assert_eq!(output.code, Some(0), "tracer failed: {}", output.stderr_text());
    let events = output.json();
    assert_eq!(events.len(), 7, "{events:#?}");
    let last = events.last().unwrap();
    assert_eq!(last["verdict"], "ok", "{last:#}");
    let kinds: Vec<&str> = last["events"].as_array().unwrap().iter().map(|e| e["event"].as_str().unwrap()).collect();
    for kind in ["accept", "write", "read"] {
        assert!(kinds.contains(&kind), "{kind} missing from {kinds:?}");
    }
}

#[test]
fn a_server_stopping_mid_handshake_is_not_blamed_on_its_clients() {
    let Some(bin) = ready("a_server_stopping_mid_handshake_is_not_blamed_on_its_clients") else { return };
    let mut db = MariaDb::start(&MariaDbOptions { connect_timeout: 10, ..Default::default() }).expect("start MariaDB");
    let tracer = Tracer::start(&bin, &["watch", "--capture", "syscalls", "-p", &db.pid().to_string(), "-j"]);
    // Three clients that read the greeting and say nothing.
    let clients: Vec<TcpStream> = (0..3)
        .map(|_| {
            let mut c = TcpStream::connect(db.addr()).unwrap();
            read_greeting(&mut c);
            c
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    // SIGTERM: MariaDB shuts its connections down and exits.
    db.stop();
    std::thread::sleep(Duration::from_millis(1500));
    let output = tracer.stop();
    for c in &clients {
        let port = c.local_addr().unwrap().port();
        let h = handshake_for(&output.json(), port).unwrap_or_else(|| panic!("{:?}", output.stdout)).clone();
        assert_ne!(h["verdict"], "client_closed", "a stopping server blamed on its client: {h:#}");
        assert_eq!(h["verdict"], "server_closed", "{h:#}");
        assert!(h["reason"].as_str().unwrap().contains("shut the connection down"), "{h:#}");
    }
}

#[test]
fn lost_events_never_give_a_wrong_verdict() {
    let Some(bin) = ready("lost_events_never_give_a_wrong_verdict") else { return };
    let db = MariaDb::start(&MariaDbOptions::default()).expect("start MariaDB");
    // A ring buffer of 4 KiB (a handful of records) under a login storm: records are lost.
    let tracer = Tracer::start(&bin, &["watch", "--capture", "syscalls", "-p", &db.pid().to_string(), "-j", "--ringbuf-kb", "4", "--port", &db.port().to_string()]);
    let addr = db.addr();
    let logins: Vec<_> = (0..4)
        .map(|_| {
            std::thread::spawn(move || {
                let until = std::time::Instant::now() + Duration::from_secs(4);
                let mut ok = 0u64;
                while std::time::Instant::now() < until {
                    ok += u64::from(lab_login(addr, true).unwrap_or(false));
                }
                ok
            })
        })
        .collect();
    let logged_in: u64 = logins.into_iter().map(|t| t.join().unwrap()).sum();
    std::thread::sleep(Duration::from_millis(500));
    let output = tracer.stop();
    let stderr = output.stderr_text();
    let lost: u64 = stderr
        .lines()
        .find_map(|l| l.strip_prefix("Events: ")?.split(", ").nth(1)?.split_whitespace().next()?.parse().ok())
        .unwrap_or_else(|| panic!("no Events line:\n{stderr}"));
    assert!(lost > 0, "the test must lose events to test anything:\n{stderr}");
    // Every client logged in: a verdict other than ok is wrong, unless it says it is not one.
    let all = output.json();
    let wrong: Vec<&Value> = all.iter().filter(|h| h["verdict"] != "ok" && h["verdict"] != "incomplete").collect();
    assert!(wrong.is_empty(), "{} of {} handshakes judged wrongly from lossy data ({lost} events lost, {logged_in} logins), e.g. {:#}", wrong.len(), all.len(), wrong[0]);
    let incomplete = all.iter().filter(|h| h["verdict"] == "incomplete").count();
    assert!(incomplete > 0, "losses and not one handshake left unjudged? {lost} lost");
}

#[test]
fn a_killed_server_is_not_traced_again_while_its_zombie_lingers() {
    let Some(bin) = ready("a_killed_server_is_not_traced_again_while_its_zombie_lingers") else { return };
    let db = MariaDb::start(&MariaDbOptions::default()).expect("start MariaDB");
    let pid = db.pid();
    // No -p: discovery mode, which rescans /proc every second; --port keeps it to ours.
    let tracer = Tracer::start(&bin, &["watch", "-j", "--port", &db.port().to_string()]);
    // SIGKILL, and no wait: the process stays a zombie, still named mariadbd in /proc,
    // until `db` is dropped and reaps it.
    // SAFETY: kill has no memory preconditions; pid is the test's own MariaDB.
    unsafe { libc::kill(pid as i32, libc::SIGKILL) };
    assert!(eventually(Duration::from_secs(10), || !handshake_trace::capture::targets::process_exists(pid)));
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    assert!(stat.contains(") Z"), "a zombie while the tracer rescans: {stat}");
    std::thread::sleep(Duration::from_millis(3500));
    let output = tracer.stop();
    let err = output.stderr_text();
    assert_eq!(err.matches(&format!("pid {pid} exited; still tracing")).count(), 1, "{err}");
    assert!(!err.contains(&format!("now tracing mariadbd (pid {pid})")), "the dead server came back: {err}");
    // Each notice says when.
    let notice = err.lines().find(|l| l.contains(&format!("pid {pid} exited"))).unwrap();
    let time = notice.split(' ').next().unwrap();
    assert!(time.len() == 12 && time.as_bytes()[2] == b':' && time.as_bytes()[8] == b'.', "{notice}");
    assert!(notice[13..].starts_with("notice: "), "{notice}");
    drop(db);
}

/// Bytes waiting in the pipe whose read end is `fd`.
fn queued(fd: &impl std::os::fd::AsRawFd) -> i32 {
    let mut n: libc::c_int = 0;
    // SAFETY: FIONREAD writes one int.
    assert_eq!(unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONREAD, &mut n) }, 0);
    n
}

#[test]
fn sigterm_ends_watch_whose_stdout_nobody_reads() {
    let Some(bin) = ready("sigterm_ends_watch_whose_stdout_nobody_reads") else { return };
    use std::io::BufRead;
    let db = MariaDb::start(&MariaDbOptions::default()).expect("start MariaDB");
    // stdout: a pipe this test never reads; stderr read until the tracer says it traces.
    let mut child = std::process::Command::new(&bin)
        .args(["watch", "-j", "-p", &db.pid().to_string()])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let unread = child.stdout.take().unwrap();
    let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("Tracing") {
        line.clear();
        assert!(stderr.read_line(&mut line).unwrap() > 0, "tracer ended before tracing");
    }
    let ours = program_ids_of(child.id());
    assert!(!ours.is_empty());
    // Handshakes (a greeting read, then a close) until the pipe is full: its bytes stop
    // growing while handshakes go on. (Full is not 64 KiB: each write that does not fit
    // the last page takes a page of its own, and there are 16.)
    let mut last = -1;
    let full = eventually(Duration::from_secs(60), || {
        for _ in 0..50 {
            let mut c = TcpStream::connect(db.addr()).unwrap();
            read_greeting(&mut c);
        }
        std::thread::sleep(Duration::from_millis(500));
        let now = queued(&unread);
        let stuck = now == last && now > 16_384;
        last = now;
        stuck
    });
    assert!(full, "stdout pipe never filled: {} bytes", queued(&unread));
    // The tracer is now stuck on its output; a few more handshakes pile up behind it.
    for _ in 0..50 {
        let mut c = TcpStream::connect(db.addr()).unwrap();
        read_greeting(&mut c);
    }
    std::thread::sleep(Duration::from_secs(1));
    let start = std::time::Instant::now();
    // SAFETY: signalling our own child.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let exited = eventually(Duration::from_secs(5), || child.try_wait().unwrap().is_some());
    if !exited {
        let _ = child.kill();
    }
    let status = child.wait().unwrap();
    assert!(exited, "watch ignored SIGTERM while its stdout was not read ({:?})", start.elapsed());
    assert_eq!(status.code(), Some(0), "{status}");
    let mut rest = String::new();
    let _ = std::io::Read::read_to_string(&mut stderr, &mut rest);
    assert!(rest.contains("Summary:"), "the summary still goes to stderr: {rest}");
    assert!(
        eventually(Duration::from_secs(5), || loaded_program_ids().is_disjoint(&ours)),
        "programs still loaded after SIGTERM"
    );
    drop(unread);
}

/// `mysqladmin ping` (Debian's mariadb-admin: it names itself `mysqladmin` in its
/// connect attributes) is a health check in both tiers: `ok`, `"probe": "health_check"`,
/// counted apart in the summary; its wrong-password form is a failure, no probe; an
/// application's login is no probe.
#[test]
fn mysqladmin_ping_is_a_health_check_in_both_tiers() {
    let test = "mysqladmin_ping_is_a_health_check_in_both_tiers";
    let Some(bin) = ready(test) else { return };
    let db = MariaDb::start(&MariaDbOptions::default()).expect("start MariaDB");
    for tier in ["socket", "syscalls"] {
        let tracer = Tracer::start(&bin, &["watch", "--capture", tier, "-p", &db.pid().to_string(), "--port", &db.port().to_string(), "-j"]);
        let ping = |password: &str| {
            std::process::Command::new("mariadb-admin")
                .args(["--no-defaults", "--skip-ssl", "-h", "127.0.0.1", "-P", &db.port().to_string(), "-u", LAB_USER])
                .arg(format!("--password={password}"))
                .arg("ping")
                .output()
                .unwrap()
        };
        let out = ping(LAB_PASSWORD);
        assert!(out.status.success() && String::from_utf8_lossy(&out.stdout).contains("alive"), "{out:?}");
        std::thread::sleep(Duration::from_millis(100));
        let _ = ping("not-the-password");
        std::thread::sleep(Duration::from_millis(100));
        let app = db.client(LAB_USER, LAB_PASSWORD, &["--skip-ssl", "-e", "SELECT 1"]).unwrap();
        assert!(app.status.success(), "{app:?}");
        std::thread::sleep(Duration::from_millis(300));
        let out = tracer.stop();
        assert_eq!(out.code, Some(0), "{}", out.stderr_text());
        let seen: Vec<(String, Value)> = out.json().iter().map(|h| (h["verdict"].as_str().unwrap_or("").to_string(), h["probe"].clone())).collect();
        assert_eq!(
            seen,
            [("ok".to_string(), Value::from("health_check")), ("auth_failed".to_string(), Value::Null), ("ok".to_string(), Value::Null)],
            "{tier}: {:#?}",
            out.json()
        );
        assert!(out.stderr_text().contains("ok 2 (1 health check)"), "{tier}: {}", out.stderr_text());
    }
}

/// Debian's HAProxy checking a real MariaDB: `option mysql-check user hapcheck post-41`
/// (login and COM_QUIT in one segment) is a health check, `option mysql-check` without a
/// user (greeting, then close) a port check; each told apart by its source address.
/// The syscall tier: the socket tier loses that login (issue 23: HAProxy's segment
/// completes the TCP handshake, before the socket is established).
#[test]
fn haproxy_mysql_checks_are_health_checks_and_port_checks() {
    let test = "haproxy_mysql_checks_are_health_checks_and_port_checks";
    let Some(bin) = ready(test) else { return };
    if !std::process::Command::new("haproxy").arg("-v").output().is_ok_and(|o| o.status.success()) {
        return skip(test, "haproxy is not installed (`cargo xtask setup` installs it)");
    }
    let db = MariaDb::start(&MariaDbOptions::default()).expect("start MariaDB");
    db.sql("CREATE USER 'hapcheck'@'%'").unwrap();
    let dir = std::env::temp_dir().join(format!("handshake-trace-haproxy-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (with_user, without) = (free_addr(), free_addr());
    let config = format!(
        "defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 5s\n  timeout server 5s\n\
         listen withuser\n  bind {with_user}\n  option mysql-check user hapcheck post-41\n  server db {} check inter 300ms source 127.0.0.11\n\
         listen nouser\n  bind {without}\n  option mysql-check\n  server db {} check inter 300ms source 127.0.0.12\n",
        db.addr(),
        db.addr()
    );
    std::fs::write(dir.join("haproxy.cfg"), config).unwrap();
    // Both tiers at once: the socket tier sees HAProxy's login in the segment that
    // completes the TCP handshake, before the connection is established.
    let (pid, port) = (db.pid().to_string(), db.port().to_string());
    let tracers: Vec<(&str, Tracer)> = ["syscalls", "socket"]
        .into_iter()
        .map(|tier| (tier, Tracer::start(&bin, &["watch", "--capture", tier, "-p", &pid, "--port", &port, "-j"])))
        .collect();
    let mut haproxy = std::process::Command::new("haproxy")
        .arg("-f")
        .arg(dir.join("haproxy.cfg"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("start haproxy");
    std::thread::sleep(Duration::from_secs(2));
    let _ = haproxy.kill();
    let _ = haproxy.wait();
    std::thread::sleep(Duration::from_millis(300));
    let _ = std::fs::remove_dir_all(&dir);
    for (tier, tracer) in tracers {
        let out = tracer.stop();
        assert_eq!(out.code, Some(0), "{tier}: {}", out.stderr_text());
        let all = out.json();
        let from = |ip: &str| all.iter().filter(move |h| h["client"].as_str().is_some_and(|c| c.starts_with(&format!("{ip}:")))).collect::<Vec<_>>();
        let checks = from("127.0.0.11");
        assert!(checks.len() >= 3, "{tier}: {all:#?}");
        for h in &checks {
            assert_eq!((h["verdict"].as_str(), h["user"].as_str(), h["probe"].as_str()), (Some("ok"), Some("hapcheck"), Some("health_check")), "{tier}: {h:#}");
        }
        let bare = from("127.0.0.12");
        assert!(bare.len() >= 3, "{tier}: {all:#?}");
        for h in &bare {
            assert_eq!(h["probe"], "port_check", "{tier}: {h:#}");
        }
        let summary = out.stderr_text();
        assert!(summary.contains(&format!("({} health checks)", checks.len())), "{tier}: {summary}");
    }
}
