//! The traced server's own configuration (connect_timeout, max_connect_errors,
//! skip-name-resolve) read from its command line and option files, shown where the
//! verdicts depend on it; and a host driven into ERR 1129 by a real MariaDB, warned of
//! before and explained after. Default capture tier (socket), real clients.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpStream},
    os::fd::FromRawFd,
    time::Duration,
};

use handshake_trace_tests::*;
use serde_json::Value;

/// A TCP connection to `to` from the loopback address `from` (the server counts errors
/// per client address; 127.0.0.1 it never counts).
fn connect_from(from: [u8; 4], to: SocketAddr) -> TcpStream {
    let SocketAddr::V4(to) = to else { panic!("IPv4 only") };
    // SAFETY: plain socket calls on a fresh fd, owned by the TcpStream at the end.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0);
        let sa = |ip: [u8; 4], port: u16| libc::sockaddr_in {
            sin_family: libc::AF_INET as u16,
            sin_port: port.to_be(),
            sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes(ip) },
            sin_zero: [0; 8],
        };
        let local = sa(from, 0);
        let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
        assert_eq!(libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len), 0, "bind {from:?}");
        let remote = sa(to.ip().octets(), to.port());
        assert_eq!(libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len), 0, "connect {to}");
        TcpStream::from_raw_fd(fd)
    }
}

/// The first packet the server sends: (its first payload byte, the ERR code if it is an ERR).
fn first_packet(s: &mut TcpStream) -> (u8, Option<u16>) {
    let body = read_greeting(s);
    let code = (body[0] == 0xff).then(|| u16::from_le_bytes([body[1], body[2]]));
    (body[0], code)
}

#[test]
fn a_host_driven_into_err_1129_is_warned_of_at_80_percent_and_its_block_explained() {
    let Some(bin) = ready("a_host_driven_into_err_1129_is_warned_of_at_80_percent_and_its_block_explained") else { return };
    // Name resolution on (the default): 127.0.0.2 has no name, its errors are counted.
    let db = MariaDb::start(&MariaDbOptions { connect_timeout: 2, extra_args: vec!["--max-connect-errors=5".into()], ..Default::default() })
        .expect("start MariaDB");
    let mut tracer = Tracer::start(&bin, &["watch", "-p", &db.pid().to_string()]);
    assert!(
        tracer.wait_for_stderr("connect_timeout 2 s (the server's command line), max_connect_errors 5 (the server's command line)", Duration::from_secs(5)),
        "the configuration was not said"
    );
    let host = [127, 0, 0, 2];
    // Four port checks: connect and close. 4 of 5: the warning.
    for _ in 0..4 {
        drop(connect_from(host, db.addr()));
        std::thread::sleep(Duration::from_millis(150));
    }
    let warned = tracer.wait_for_stderr("host 127.0.0.2 has 4 handshake errors since its last successful login", Duration::from_secs(10));
    assert!(warned, "no 80 % warning before the block");
    // The fifth: a malformed login (ERR 1043), which the server counts too.
    let mut s = connect_from(host, db.addr());
    assert_eq!(first_packet(&mut s).0, 10, "a greeting");
    s.write_all(&[1, 0, 0, 1, 0]).unwrap();
    let mut reply = [0u8; 64];
    let n = s.read(&mut reply).unwrap();
    assert_eq!((reply[4], u16::from_le_bytes([reply[5], reply[6]])), (0xff, 1043), "{:?}", &reply[..n]);
    drop(s);
    assert!(tracer.wait_for_stderr("the server will refuse its next connection", Duration::from_secs(10)), "no warning at the limit");
    // The sixth is refused: ERR 1129 instead of a greeting, from the server itself.
    let mut s = connect_from(host, db.addr());
    assert_eq!(first_packet(&mut s).1, Some(1129), "the server did not block the host");
    drop(s);
    // A login from 127.0.0.3 with a wrong password: counted apart, never toward the block.
    let other = connect_from([127, 0, 0, 3], db.addr());
    assert!(!lab_login_on(other, false).expect("login"), "a wrong password logged in");
    std::thread::sleep(Duration::from_millis(400));
    let out = tracer.stop();
    assert_eq!(out.code, Some(0), "{}", out.stderr_text());
    let text = out.stdout.join("\n");
    eprintln!("--- watch's output ---\n{text}\n--- stderr ---\n{}", out.stderr_text());

    let blocked = text.find("ER_HOST_IS_BLOCKED").expect("the ERR 1129 handshake");
    let explained = &text[blocked..];
    let head = "blocked: 127.0.0.2 reached max_connect_errors 5 (the server's command line): 5 handshake errors since its last successful login (none seen by this trace):";
    let at = explained.find(head).unwrap_or_else(|| panic!("no explanation:\n{explained}"));
    let lines: Vec<&str> = explained[at..].lines().skip(1).take_while(|l| !l.trim_start().starts_with("remedy:")).collect();
    assert_eq!(lines.len(), 5, "{lines:#?}");
    assert_eq!(lines.iter().filter(|l| l.contains("(port check)")).count(), 4, "{lines:#?}");
    assert!(lines[4].ends_with("server_error (ERR 1043 ER_HANDSHAKE_ERROR)"), "{lines:#?}");
    assert!(explained.contains("remedy: FLUSH HOSTS (or mariadb-admin flush-hosts) unblocks it now"), "{explained}");
    // The wrong password from another host counted nothing: no line for it.
    let stderr = out.stderr_text();
    assert!(!stderr.contains("host 127.0.0.3"), "{stderr}");
    assert!(text.contains("AUTH_FAILED"), "{text}");
    assert!(!text.contains("host 127.0.0.3:"), "{text}");
}

/// The installed server's major and minor version, from `mariadbd --version`.
fn server_version() -> (u32, u32) {
    let bin = ["/usr/sbin/mariadbd", "/usr/bin/mariadbd", "/usr/sbin/mysqld"].into_iter().find(|p| std::path::Path::new(p).is_file()).expect("mariadbd");
    let out = std::process::Command::new(bin).arg("--version").output().expect("mariadbd --version");
    let text = String::from_utf8_lossy(&out.stdout);
    let v = text.split_whitespace().skip_while(|w| *w != "Ver").nth(1).unwrap_or_else(|| panic!("{text}"));
    let mut parts = v.split(['.', '-']);
    (parts.next().unwrap().parse().unwrap(), parts.next().unwrap().parse().unwrap())
}

#[test]
fn option_files_give_the_settings_and_rule_out_name_resolution() {
    let Some(bin) = ready("option_files_give_the_settings_and_rule_out_name_resolution") else { return };
    let dir = std::env::temp_dir().join(format!("ht-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let included = dir.join("server.cnf");
    std::fs::write(dir.join("my.cnf"), format!("[client-server]\n!include {}\n[client]\nmax_connect_errors=1\n", included.display())).unwrap();
    // A group of the server's own version counts, another version's does not.
    let (major, minor) = server_version();
    std::fs::write(
        &included,
        format!("[mariadb]\nskip-name-resolve\n[mariadb-{major}.{minor}]\nmax_connect_errors = 7  # a comment\n[mariadb-1.0]\nmax_connect_errors = 9\n"),
    )
    .unwrap();
    let db = MariaDb::start(&MariaDbOptions { connect_timeout: 2, defaults_file: Some(dir.join("my.cnf")), ..Default::default() }).expect("start MariaDB");
    assert_eq!(db.sql("SELECT @@max_connect_errors, @@skip_name_resolve").unwrap().trim(), "7\t1", "the server read the files so");
    let mut tracer = Tracer::start(&bin, &["watch", "-p", &db.pid().to_string(), "-j"]);
    let said = format!(
        "connect_timeout 2 s (the server's command line), max_connect_errors 7 ({0}:4), skip-name-resolve on ({0}:2)",
        included.display()
    );
    assert!(tracer.wait_for_stderr(&said, Duration::from_secs(5)), "not said: {said}");

    // A silent client: the server waits connect_timeout for its login.
    let silent = raw_client(&db, |_| std::thread::sleep(Duration::from_millis(2600)));
    let silent_port = silent.join().unwrap();
    // A frozen server: the client gives up waiting for the greeting.
    // SAFETY: stopping and resuming our own server.
    unsafe { libc::kill(db.pid() as i32, libc::SIGSTOP) };
    let mut c = TcpStream::connect(db.addr()).unwrap();
    let frozen_port = c.local_addr().unwrap().port();
    c.set_read_timeout(Some(Duration::from_millis(800))).unwrap();
    assert!(c.read(&mut [0u8; 4]).is_err(), "a greeting from a stopped server");
    drop(c);
    std::thread::sleep(Duration::from_millis(400));
    // SAFETY: as above.
    unsafe { libc::kill(db.pid() as i32, libc::SIGCONT) };
    std::thread::sleep(Duration::from_millis(600));
    let out = tracer.stop();
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(out.code, Some(0), "{}", out.stderr_text());
    let events = out.json();
    let by_port = |port: u16| -> &Value {
        events.iter().find(|e| e["client"] == format!("127.0.0.1:{port}")).unwrap_or_else(|| panic!("no handshake for port {port}: {events:#?}"))
    };
    let timeout = by_port(silent_port);
    assert_eq!(timeout["verdict"], "server_timeout", "{timeout:#}");
    assert_eq!(timeout["wait"]["connect_timeout"], serde_json::json!({"source": "command_line", "value": 2}), "{timeout:#}");
    let frozen = by_port(frozen_port);
    let evidence: Vec<&str> = frozen["blame"]["evidence"].as_array().unwrap().iter().filter_map(Value::as_str).collect();
    let late = evidence.iter().find(|e| e.starts_with("greeting sent only at")).unwrap_or_else(|| panic!("{frozen:#}"));
    assert!(late.ends_with("(a lock, CPU; not name resolution: the server runs with skip-name-resolve)"), "{late}");
}

#[test]
fn the_agent_serves_the_hosts_nearest_max_connect_errors_on_hosts() {
    let Some(bin) = ready("the_agent_serves_the_hosts_nearest_max_connect_errors_on_hosts") else { return };
    let db = MariaDb::start(&MariaDbOptions { connect_timeout: 2, extra_args: vec!["--max-connect-errors=10".into()], ..Default::default() })
        .expect("start MariaDB");
    let listen = free_addr();
    let log = std::env::temp_dir().join(format!("ht-hosts-{}.log", std::process::id()));
    let tracer = Tracer::start(&bin, &["agent", "-p", &db.pid().to_string(), "--listen", &listen.to_string(), "--log", log.to_str().unwrap(), "--top-k", "2"]);
    // 127.0.0.2: three port checks; 127.0.0.3: one, then a login that resets it; 127.0.0.4: one.
    for (host, n) in [([127, 0, 0, 2], 3), ([127, 0, 0, 3], 1), ([127, 0, 0, 4], 1)] {
        for _ in 0..n {
            drop(connect_from(host, db.addr()));
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    assert!(lab_login_on(connect_from([127, 0, 0, 3], db.addr()), true).expect("login"), "the right password was refused");
    let mut body = String::new();
    let listed = eventually(Duration::from_secs(10), || {
        body = http_get(listen, "/hosts").map(|(_, b)| b).unwrap_or_default();
        let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
        v["hosts"].as_array().is_some_and(|h| h.len() == 2)
    });
    let metrics = http_get(listen, "/metrics").map(|(_, m)| m).expect("/metrics");
    let out = tracer.stop();
    let _ = std::fs::remove_file(&log);
    assert!(listed, "/hosts never listed two hosts: {body}\n{}", out.stderr_text());
    let v: Value = serde_json::from_str(&body).unwrap();
    let hosts = v["hosts"].as_array().unwrap();
    assert_eq!((hosts[0]["host"].as_str(), hosts[0]["errors"].as_u64(), hosts[0]["percent"].as_u64()), (Some("127.0.0.2"), Some(3), Some(30)), "{body}");
    assert_eq!((hosts[0]["max_connect_errors"].as_u64(), hosts[0]["port_checks"].as_u64()), (Some(10), Some(3)), "{body}");
    assert_eq!(hosts[1]["host"], "127.0.0.4", "the login reset 127.0.0.3: {body}");
    assert_eq!(v["hosts_with_errors"], 2, "{body}");
    // Never a metric label per client address.
    assert!(metrics.contains("handshake_trace_") && !metrics.contains("127.0.0.2"), "{metrics}");
}
