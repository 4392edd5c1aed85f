//! The socket capture tier (`--capture socket`) against a real MariaDB
//! (connect_timeout=2), beside the syscall tier on the very same connections: both
//! tracers watch at once, so every handshake is judged twice, and the verdicts must
//! agree: a login, a wrong password (1045), a client silent until connect_timeout, a
//! client that connects and closes, a TLS login, a client reset, garbage and HTTP on
//! the port, max_connections (1040 and the held connections timing out). Also: what
//! the socket tier says it cannot see, its recording replayed by `analyze`, and no
//! program left attached to the cgroup.
use std::{collections::BTreeMap, io::Read, process::Command, thread, time::Duration};

use handshake_trace_tests::*;
use serde_json::Value;

/// Client address → the handshake's JSON, one tier's.
fn by_client(all: Vec<Value>) -> BTreeMap<String, Value> {
    all.into_iter().map(|h| (h["client"].as_str().unwrap_or("?").to_string(), h)).collect()
}

/// The cgroup_skb programs attached to the cgroup v2 root, by id (bpftool, when present).
/// Ids of the programs attached to the cgroup v2 root (any tracer's: other tracers on
/// the machine, a socket-tier agent of another test run, come and go meanwhile).
fn cgroup_skb_programs() -> std::collections::HashSet<u64> {
    let Ok(root) = handshake_trace::capture::probes::cgroup2_root() else { return Default::default() };
    let out = Command::new("bpftool").args(["cgroup", "show"]).arg(&root).output().expect("bpftool cgroup show");
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.split_whitespace().next()?.parse().ok()).collect()
}

#[test]
fn both_capture_tiers_give_every_scenario_the_same_verdict() {
    let Some(bin) = ready("both_capture_tiers_give_every_scenario_the_same_verdict") else { return };
    let db = mariadb_with_tls_account();
    let (pid, port) = (db.pid().to_string(), db.port().to_string());
    let syscalls = Tracer::start(&bin, &["watch", "-p", &pid, "-j", "--port", &port, "--capture", "syscalls"]);
    // The socket tier also records (secrets zeroed), for `analyze` to replay below.
    let trace = std::env::temp_dir().join(format!("handshake-trace-socket-tier-{}.htrace", std::process::id()));
    let trace_arg = trace.to_str().unwrap();
    let socket = Tracer::start(&bin, &["record", "-o", trace_arg, "-p", &pid, "-j", "--port", &port, "--capture", "socket"]);
    let socket_text = Tracer::start(&bin, &["watch", "-p", &pid, "--port", &port, "--capture", "socket"]);

    let ok = db.client(LAB_USER, LAB_PASSWORD, &["--skip-ssl", "-e", "SELECT CONNECTION_ID()"]).unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let ok_id: u64 = String::from_utf8_lossy(&ok.stdout).trim().parse().unwrap();
    let denied = db.client(LAB_USER, "wrong-password", &["--skip-ssl", "-e", "SELECT 1"]).unwrap();
    assert!(String::from_utf8_lossy(&denied.stderr).contains("ERROR 1045"));
    // Reads the greeting, says nothing: the server gives up after connect_timeout.
    let silent = raw_client(&db, |s| {
        thread::sleep(Duration::from_millis(2600));
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        let kind = s.read(&mut buf).map(|_| std::io::ErrorKind::Other).unwrap_or_else(|e| e.kind());
        assert_eq!(kind, std::io::ErrorKind::ConnectionReset, "the client should see the server's RST");
    });
    // Reads the greeting and closes.
    let closes = raw_client(&db, |_| {});
    // Beyond the four: TLS, a client reset, garbage and HTTP on the port.
    let tls = db.client("tls_lab", "tls-pw", &["--ssl", "-e", "SELECT 1"]).unwrap();
    assert!(tls.status.success(), "TLS login: {}", String::from_utf8_lossy(&tls.stderr));
    let resets = raw_client(&db, |s| set_linger0(s));
    let garbage = raw_client(&db, |s| {
        std::io::Write::write_all(s, &[5, 0, 0, 1, 1, 2, 3, 4, 5]).unwrap();
        let _ = s.read(&mut [0u8; 128]);
    });
    let http = raw_client(&db, |s| {
        std::io::Write::write_all(s, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let _ = s.read(&mut [0u8; 128]);
    });
    let (silent, closes) = (silent.join().unwrap(), closes.join().unwrap());
    let (resets, garbage, http) = (resets.join().unwrap(), garbage.join().unwrap(), http.join().unwrap());
    // ERR 1040 instead of a greeting; 11 held connections time out.
    let refused = max_connections_refusal(&db, Duration::from_millis(2600));
    assert!(
        eventually(Duration::from_secs(15), || db.status("Threads_connected").is_ok_and(|n| n <= 1)),
        "the server still has connections in progress"
    );
    thread::sleep(Duration::from_millis(300));

    // The programs the socket-tier tracers attached to the cgroup root, by id.
    let ours: std::collections::HashSet<u64> = program_ids_of(socket.pid()).union(&program_ids_of(socket_text.pid())).copied().collect();
    let attached: Vec<u64> = cgroup_skb_programs().intersection(&ours).copied().collect();
    assert_eq!(attached.len(), 4, "ingress and egress of each socket-tier tracer are attached to the cgroup root: {attached:?}");
    let (sys_out, sock_out, text) = (syscalls.stop(), socket.stop(), socket_text.stop());
    for o in [&sys_out, &sock_out, &text] {
        assert_eq!(o.code, Some(0), "{}", o.stderr_text());
    }
    let (sys_all, sock_all) = (by_client(sys_out.json()), by_client(sock_out.json()));
    let verdicts = |m: &BTreeMap<String, Value>| -> Vec<(String, String)> {
        m.iter().map(|(c, h)| (c.clone(), h["verdict"].as_str().unwrap_or("?").to_string())).collect()
    };
    eprintln!("syscalls tier: {:?}\nsocket tier:   {:?}", verdicts(&sys_all), verdicts(&sock_all));
    assert_eq!(verdicts(&sys_all), verdicts(&sock_all), "the tiers disagree:\nsyscalls {sys_all:#?}\nsocket {sock_all:#?}");

    // The recording replays to the same verdicts, with no root and no kernel.
    let replay = Command::new(&bin).args(["analyze", trace_arg, "-j"]).output().unwrap();
    let _ = std::fs::remove_file(&trace);
    assert!(replay.status.success(), "{}", String::from_utf8_lossy(&replay.stderr));
    let replayed: Vec<Value> =
        String::from_utf8_lossy(&replay.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(verdicts(&by_client(replayed)), verdicts(&sock_all), "analyze of the socket tier's recording");

    // Each scenario's verdict, found in the socket tier's output.
    let find = |what: &str, f: &dyn Fn(&Value) -> bool| -> Value {
        let found: Vec<&Value> = sock_all.values().filter(|h| f(h)).collect();
        assert_eq!(found.len(), 1, "expected one handshake: {what}; found {found:#?}");
        found[0].clone()
    };
    let h = find("CLI login", &|h| h["connection_id"] == ok_id);
    assert_eq!(h["verdict"], "ok", "{h:#}");
    let h = find("wrong password", &|h| h["verdict"] == "auth_failed");
    assert!(h.to_string().contains("1045"), "{h:#}");
    let h = &sock_all[&format!("127.0.0.1:{silent}")];
    assert_eq!(h["verdict"], "server_timeout", "{h:#}");
    let h = &sock_all[&format!("127.0.0.1:{closes}")];
    assert_eq!(h["verdict"], "client_closed", "{h:#}");
    let h = &sock_all[&format!("127.0.0.1:{resets}")];
    assert_eq!(h["verdict"], "client_reset", "{h:#}");
    for port in [garbage, http] {
        let h = &sock_all[&format!("127.0.0.1:{port}")];
        assert_eq!(h["verdict"], "server_error", "{h:#}");
    }
    let h = find("TLS login", &|h| h["tls"] == true);
    assert_eq!(h["verdict"], "ok", "{h:#}");
    let h = &sock_all[&format!("127.0.0.1:{refused}")];
    assert_eq!((&h["verdict"], &h["error"]["code"]), (&Value::from("server_error"), &Value::from(1040)), "{h:#}");
    let timeouts = sock_all.values().filter(|h| h["verdict"] == "server_timeout").count();
    assert_eq!(timeouts, 1 + 11, "the silent client and the held connections");
    assert_eq!(sock_all.len(), 8 + 11 + 1, "{sock_all:#?}");

    // What the socket tier cannot see, it says; it invents no fd, poll or timeout.
    let timeline = text.stdout.join("\n");
    for words in [
        "SERVER_TIMEOUT",
        "socket capture tier: no accept or fd seen",
        "non-blocking socket read → EAGAIN (nothing to read yet)",
        "how it waited and its timeout are not seen by the socket capture tier",
        "AUTH_FAILED",
        "ERR 1045 (ER_ACCESS_DENIED_ERROR) [28000]",
        "greeting: protocol 10, server 5.5.5-10.11",
    ] {
        assert!(timeline.contains(words), "socket-tier text output lacks {words:?}:\n{timeline}");
    }
    for invented in ["poll(", "fd -1", "SO_LINGER", "timeout 2000 ms"] {
        assert!(!timeline.contains(invented), "socket-tier output shows {invented:?}, which it cannot see:\n{timeline}");
    }
    assert!(text.stderr_text().contains("socket capture tier: nothing on the syscall path"), "{}", text.stderr_text());
    assert!(!timeline.contains(LAB_PASSWORD) && !sock_out.stdout.join("").contains(LAB_PASSWORD));
    // Detached with the tracers.
    let left: Vec<u64> = cgroup_skb_programs().intersection(&ours).copied().collect();
    assert!(left.is_empty(), "cgroup_skb programs {left:?} stayed attached to the cgroup v2 root");
}
