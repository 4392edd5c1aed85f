//! The filters on real traffic: `--port` drops another server's connections in the
//! kernel (they cost no events), `--failed`, `--user` and `--client` select real
//! handshakes, and the `-j --json-summary` record counts what was left out.
use std::{net::TcpStream, time::Duration};

use handshake_trace_tests::*;
use serde_json::Value;

/// Connect to `db` `n` times, read the greeting, leave: port checks.
fn port_checks(db: &MariaDb, n: usize) {
    for _ in 0..n {
        let mut c = TcpStream::connect(db.addr()).unwrap();
        read_greeting(&mut c);
    }
}

/// A TCP connection to `to` from the local address `from` (another loopback address).
fn connect_from(from: std::net::Ipv4Addr, to: std::net::SocketAddr) -> TcpStream {
    use std::os::fd::FromRawFd;
    let sin = |ip: std::net::Ipv4Addr, port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as u16,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from(ip).to_be() },
        sin_zero: [0; 8],
    };
    let std::net::SocketAddr::V4(to) = to else { panic!("{to} is not IPv4") };
    let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
    // SAFETY: plain socket calls on a new fd with valid address buffers; the fd is owned
    // by the TcpStream from here on.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM, 0);
        assert!(fd >= 0);
        let local = sin(from, 0);
        assert_eq!(libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len), 0, "bind {from}");
        let remote = sin(*to.ip(), to.port());
        assert_eq!(libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len), 0, "connect {to}");
        TcpStream::from_raw_fd(fd)
    }
}

/// The handshake records and the summary record of a `-j --json-summary` run.
fn records(out: &TracerOutput) -> (Vec<Value>, Value) {
    let mut all = out.json();
    let summary = all.pop().unwrap_or_default();
    assert_eq!(summary["type"], "summary", "the last record is the summary: {summary}");
    assert!(all.iter().all(|r| r.get("type").is_none()), "{all:?}");
    (all, summary)
}

/// Trace both servers in capture tier `tier`, with `port` asked for or not, while
/// `other` gets `n` port checks.
fn trace_other_server(bin: &std::path::PathBuf, tier: &str, kept: &MariaDb, other: &MariaDb, port: Option<u16>, n: usize) -> (Vec<Value>, Value) {
    let pids = format!("{} {}", kept.pid(), other.pid());
    let mut args = vec!["watch", "--capture", tier, "-p", &pids, "-j", "--json-summary"];
    let port_arg = port.map(|p| p.to_string());
    if let Some(p) = &port_arg {
        args.extend(["--port", p]);
    }
    let tracer = Tracer::start(bin, &args);
    port_checks(other, n);
    assert!(lab_login(kept.addr(), true).unwrap(), "the kept server's login failed");
    std::thread::sleep(Duration::from_millis(500));
    let out = tracer.stop();
    assert_eq!(out.code, Some(0), "{}", out.stderr_text());
    records(&out)
}

/// One tier's run: `--port` keeps the kept server's login and lets fewer events out of
/// the kernel than one per connection to the other server; `exact` when the tier counts
/// each accept it stops (the syscall tier's accept program does; the socket tier never
/// follows a port it was not given, so it has nothing to count).
fn port_filters_in_the_kernel(bin: &std::path::PathBuf, tier: &str, exact: bool) {
    let kept = MariaDb::start(&MariaDbOptions::default()).expect("start MariaDB");
    let other = MariaDb::start(&MariaDbOptions::default()).expect("start a second MariaDB");
    const N: usize = 40;

    // Without --port: each of the other server's connections costs events.
    let (handshakes, all) = trace_other_server(bin, tier, &kept, &other, None, N);
    assert_eq!(handshakes.len(), N + 1, "{tier}: {handshakes:?}");
    let emitted_all = all["events"]["emitted"].as_u64().unwrap();
    assert!(emitted_all >= 3 * (N as u64 + 1), "{tier}: {all}");

    let (handshakes, filtered) = trace_other_server(bin, tier, &kept, &other, Some(kept.port()), N);
    assert_eq!(handshakes.len(), 1, "{tier}: {handshakes:?}");
    assert_eq!(handshakes[0]["server"], kept.addr().to_string());
    assert_eq!(handshakes[0]["verdict"], "ok");
    if exact {
        // Every one of the other server's accepts stopped in the kernel: counted, not emitted.
        assert_eq!(filtered["other_ports_in_kernel"], N as u64, "{filtered}");
        assert_eq!(filtered["other_ports"], N as u64, "{filtered}");
    }
    let emitted = filtered["events"]["emitted"].as_u64().unwrap();
    // What is left is the kept server's one login (a handful of events): fewer than one
    // event per connection to the other server.
    assert!(emitted < N as u64, "{tier}: the other server's connections still emit: {emitted} events for {N} connections ({filtered})");
    eprintln!("--port in the kernel, {tier} tier: {emitted} events emitted with --port vs {emitted_all} without, for {N} connections to the other server and 1 login to the kept one");
}

#[test]
fn port_drops_the_other_servers_connections_in_the_kernel_syscall_tier() {
    let Some(bin) = ready("port_drops_the_other_servers_connections_in_the_kernel_syscall_tier") else { return };
    port_filters_in_the_kernel(&bin, "syscalls", true);
}

#[test]
fn port_drops_the_other_servers_connections_in_the_kernel_socket_tier() {
    let Some(bin) = ready("port_drops_the_other_servers_connections_in_the_kernel_socket_tier") else { return };
    port_filters_in_the_kernel(&bin, "socket", false);
}

#[test]
fn failed_user_and_client_select_real_handshakes() {
    let Some(bin) = ready("failed_user_and_client_select_real_handshakes") else { return };
    let db = MariaDb::start(&MariaDbOptions::default()).expect("start MariaDB");
    let pid = db.pid().to_string();
    let start = |select: &[&str]| {
        let mut args = vec!["watch", "-p", &pid, "-j", "--json-summary"];
        args.extend_from_slice(select);
        Tracer::start(&bin, &args)
    };
    let failed = start(&["--failed", "--timeline", "none"]);
    let user = start(&["--user", "nobody"]);
    let client = start(&["--client", "127.0.0.2/32"]);

    // ok as lab, a wrong password as lab, an unknown user, a port check from 127.0.0.2.
    let ok = db.client(LAB_USER, LAB_PASSWORD, &["-e", "SELECT 1"]).unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    assert!(!lab_login(db.addr(), false).unwrap());
    assert!(!db.client("nobody", "x", &["-e", "SELECT 1"]).unwrap().status.success());
    let mut from_2 = connect_from([127, 0, 0, 2].into(), db.addr());
    read_greeting(&mut from_2);
    drop(from_2);
    std::thread::sleep(Duration::from_millis(500));

    let (shown, summary) = records(&failed.stop());
    let verdicts: Vec<&str> = shown.iter().map(|h| h["verdict"].as_str().unwrap()).collect();
    assert_eq!(verdicts.len(), 3, "{shown:?}");
    assert!(!verdicts.contains(&"ok"), "{verdicts:?}");
    assert!(shown.iter().all(|h| h.get("events").is_none()), "--timeline none kept a timeline");
    assert_eq!((summary["handshakes"].as_u64(), summary["not_selected"].as_u64()), (Some(3), Some(1)), "{summary}");
    // The grouped table: the three failures, one group each (user or client differ).
    let groups = summary["groups"].as_array().unwrap();
    assert_eq!(groups.len(), 3, "{summary}");
    assert!(groups.iter().any(|g| g["user"] == "nobody" && g["error_code"] == 1045 && g["blame"] == "client"), "{summary}");
    assert!(groups.iter().any(|g| g["client"] == "127.0.0.2" && g["verdict"] == "client_closed" && g["user"].is_null()), "{summary}");

    let (shown, summary) = records(&user.stop());
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert_eq!((shown[0]["user"].as_str(), shown[0]["verdict"].as_str()), (Some("nobody"), Some("auth_failed")));
    assert_eq!(summary["not_selected"], 3, "{summary}");

    let (shown, summary) = records(&client.stop());
    assert_eq!(shown.len(), 1, "{shown:?}");
    assert!(shown[0]["client"].as_str().unwrap().starts_with("127.0.0.2:"), "{}", shown[0]);
    assert_eq!(shown[0]["verdict"], "client_closed");
    assert_eq!(summary["not_selected"], 3, "{summary}");
}
