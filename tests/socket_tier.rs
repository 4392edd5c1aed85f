//! The socket capture tier (`--capture socket`) against a real MariaDB
//! (connect_timeout=2), beside the syscall tier on the very same connections: both
//! tracers watch at once, so every handshake is judged twice, and the verdicts must
//! agree: a login, a wrong password (1045), a client silent until connect_timeout, a
//! client that connects and closes, a TLS login, a client reset, garbage and HTTP on
//! the port, max_connections (1040 and the held connections timing out). Also: what
//! the socket tier says it cannot see, its recording replayed by `analyze`, and no
//! program left attached to the cgroup. MariaDB runs in a cgroup of its own (as a
//! systemd service does), its clients outside: the packet programs attach to the
//! server's cgroup, not the root. A server moved to another cgroup after it listened:
//! its first connection ends `incomplete` (its packets are unseen), never misjudged.
use std::{collections::BTreeMap, io::Read, process::Command, thread, time::Duration};

use handshake_trace_tests::*;
use serde_json::Value;

/// A lab login and a wrong password at `addr`, then `tracer` stopped: its output and
/// handshakes, which must be judged `ok` then `auth_failed`.
fn ok_then_auth_failed(addr: std::net::SocketAddr, tracer: Tracer) -> (TracerOutput, Vec<Value>) {
    assert!(lab_login(addr, true).unwrap(), "the lab login failed");
    assert!(!lab_login(addr, false).unwrap(), "a wrong password logged in");
    judged(tracer, &["ok", "auth_failed"])
}

/// `tracer` stopped once its last handshake had time to end: its output and handshakes,
/// whose verdicts must be `expected`, in order.
fn judged(tracer: Tracer, expected: &[&str]) -> (TracerOutput, Vec<Value>) {
    thread::sleep(Duration::from_millis(300));
    let out = tracer.stop();
    let all = out.json();
    let verdicts: Vec<&str> = all.iter().filter_map(|h| h["verdict"].as_str()).collect();
    assert_eq!(verdicts, expected, "{all:#?}\n{}", out.stderr_text());
    (out, all)
}

/// Client address → the handshake's JSON, one tier's.
fn by_client(all: Vec<Value>) -> BTreeMap<String, Value> {
    all.into_iter().map(|h| (h["client"].as_str().unwrap_or("?").to_string(), h)).collect()
}

/// The ids of the programs attached to cgroup directory `dir` (bpftool).
fn cgroup_skb_programs(dir: &std::path::Path) -> std::collections::HashSet<u64> {
    let out = Command::new("bpftool").args(["cgroup", "show"]).arg(dir).output().expect("bpftool (cargo xtask setup installs it)");
    assert!(out.status.success(), "bpftool cgroup show: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| l.split_whitespace().next()?.parse().ok()).collect()
}

#[test]
fn both_capture_tiers_give_every_scenario_the_same_verdict() {
    let Some(bin) = ready("both_capture_tiers_give_every_scenario_the_same_verdict") else { return };
    let cgroup = Cgroup::create("socket-tier").expect("a cgroup for MariaDB");
    let db = mariadb_with_tls_account(Some(cgroup.dir()));
    let (pid, port) = (db.pid().to_string(), db.port().to_string());
    let root = handshake_trace::capture::cgroup::cgroup2_root().unwrap();
    let syscalls = Tracer::start(&bin, &["watch", "-p", &pid, "-j", "--port", &port, "--capture", "syscalls"]);
    // The socket tier also records (secrets zeroed), for `analyze` to replay below.
    let trace = std::env::temp_dir().join(format!("handshake-trace-socket-tier-{}.htrace", std::process::id()));
    // `record` refuses an existing file: one left by an earlier run with this pid goes first.
    let _ = std::fs::remove_file(&trace);
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

    // This tracer's own programs (other tests, other tracers may attach theirs meanwhile).
    let ours: std::collections::HashSet<u64> = [&socket, &socket_text].iter().flat_map(|t| program_ids_of(t.pid())).collect();
    let on_server = cgroup_skb_programs(cgroup.dir()).intersection(&ours).count();
    assert!(on_server >= 4, "the socket tiers' cgroup_skb programs are not attached to MariaDB's cgroup");
    let on_root: Vec<u64> = cgroup_skb_programs(&root).intersection(&ours).copied().collect();
    assert!(on_root.is_empty(), "cgroup_skb programs {on_root:?} attached to the cgroup v2 root: every process's packets run them");
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
    let place = format!("the packet programs are on cgroup {} (the servers')", cgroup.path());
    assert!(text.stderr_text().contains(&place), "{}", text.stderr_text());
    assert!(!timeline.contains(LAB_PASSWORD) && !sock_out.stdout.join("").contains(LAB_PASSWORD));
    // Detached with the tracers.
    let left: Vec<u64> = cgroup_skb_programs(cgroup.dir()).intersection(&ours).copied().collect();
    assert!(left.is_empty(), "cgroup_skb programs {left:?} stayed attached to MariaDB's cgroup");
}

/// `lab-server --port PORT ARGS...`, killed on drop.
struct LabServer(std::process::Child);

impl LabServer {
    fn start(bin: &std::path::Path, port: u16, args: &[&str]) -> LabServer {
        Self::start_in(bin, port, args, None)
    }

    /// In cgroup `cgroup` (joined before exec), when given.
    fn start_in(bin: &std::path::Path, port: u16, args: &[&str], cgroup: Option<&Cgroup>) -> LabServer {
        let mut cmd = Command::new(bin);
        cmd.args(["lab-server", "--wait", "poll", "--port", &port.to_string()])
            .args(args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::null());
        if let Some(c) = cgroup {
            handshake_trace_lab::cgroup::spawn_into(&mut cmd, c.dir()).unwrap();
        }
        LabServer(cmd.spawn().expect("start lab-server"))
    }

    fn pid(&self) -> u32 {
        self.0.id()
    }
}

impl Drop for LabServer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Is something listening on loopback port `port` (/proc/net/tcp, state 0A)?
fn listening(port: u16) -> bool {
    let tcp = std::fs::read_to_string("/proc/net/tcp").unwrap_or_default();
    let local = format!("0100007F:{port:04X}");
    tcp.lines().any(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        f.len() > 3 && f[1] == local && f[3] == "0A"
    })
}

/// Which of `pids` holds the server's end of the loopback connection from client
/// port `client` to `port` (its inode in /proc/net/tcp, then the pids' fds).
fn owner_of(pids: &[u32], port: u16, client: u16) -> Option<u32> {
    let tcp = std::fs::read_to_string("/proc/net/tcp").ok()?;
    let (local, remote) = (format!("0100007F:{port:04X}"), format!("0100007F:{client:04X}"));
    let inode = tcp.lines().find_map(|l| {
        let f: Vec<&str> = l.split_whitespace().collect();
        (f.len() > 9 && f[1] == local && f[2] == remote).then(|| f[9].to_string())
    })?;
    let link = format!("socket:[{inode}]");
    pids.iter().copied().find(|pid| {
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .map(|d| d.flatten().any(|e| std::fs::read_link(e.path()).is_ok_and(|l| l.to_string_lossy() == link)))
            .unwrap_or(false)
    })
}

#[test]
fn a_port_the_target_listens_on_after_tracing_began_is_followed() {
    let Some(bin) = ready("a_port_the_target_listens_on_after_tracing_began_is_followed") else { return };
    let addr = free_addr();
    // Listens 3 s after it starts: the tracer attaches (and reads the target's ports
    // from /proc, none yet) well before.
    let server = LabServer::start(&bin, addr.port(), &["--listen-after-ms", "3000"]);
    let pid = server.pid().to_string();
    // The default tier of watch is the socket tier.
    let tracer = Tracer::start(&bin, &["watch", "-p", &pid, "-j"]);
    assert!(!listening(addr.port()), "the lab server listened before the tracer attached: the test proves nothing");
    assert!(eventually(Duration::from_secs(10), || listening(addr.port())), "the lab server never listened");
    let (_, all) = ok_then_auth_failed(addr, tracer);
    assert!(all.iter().all(|h| h["pid"] == server.pid() && h["capture"] == "socket"), "{all:#?}");
}

#[test]
fn connections_on_a_port_shared_with_so_reuseport_belong_to_the_process_that_accepted_them() {
    let Some(bin) = ready("connections_on_a_port_shared_with_so_reuseport_belong_to_the_process_that_accepted_them") else { return };
    let addr = free_addr();
    let servers: Vec<LabServer> = (0..2).map(|_| LabServer::start(&bin, addr.port(), &["--reuse-port"])).collect();
    assert!(eventually(Duration::from_secs(10), || listening(addr.port())), "the lab servers never listened");
    // Both listening (each has its own listening socket on the port).
    thread::sleep(Duration::from_millis(300));
    let pids: Vec<u32> = servers.iter().map(LabServer::pid).collect();
    let list = format!("{},{}", pids[0], pids[1]);
    let tracer = Tracer::start(&bin, &["watch", "-p", &list, "-j", "--capture", "socket"]);
    // Each client reads the greeting (its server has accepted), notes which process
    // holds the server's end, and closes.
    let mut owners = BTreeMap::new();
    for _ in 0..16 {
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        read_greeting(&mut s);
        let client = s.local_addr().unwrap().port();
        let owner = owner_of(&pids, addr.port(), client).expect("the server's end of the connection");
        owners.insert(format!("127.0.0.1:{client}"), owner);
    }
    let spread: std::collections::BTreeSet<u32> = owners.values().copied().collect();
    assert_eq!(spread.len(), 2, "the kernel gave every connection to one server: {owners:?}");
    thread::sleep(Duration::from_millis(500));
    let out = tracer.stop();
    let seen = by_client(out.json());
    assert_eq!(seen.len(), owners.len(), "{seen:#?}\n{}", out.stderr_text());
    for (client, owner) in &owners {
        let h = &seen[client];
        assert_eq!(h["pid"], *owner, "{client} was accepted by pid {owner}: {h:#}");
        assert_eq!(h["verdict"], "client_closed", "{h:#}");
    }
}

/// A TCP connection to `[::1]:port` whose every packet carries an IPv6 hop-by-hop
/// extension header (IPV6_HOPOPTS: one PadN option, 8 bytes) before the TCP header.
fn ipv6_with_hop_by_hop(port: u16) -> std::net::TcpStream {
    // SAFETY: plain socket calls on an fd this function owns, with buffers of the sizes
    // given; on success the fd moves into the TcpStream.
    unsafe {
        let fd = libc::socket(libc::AF_INET6, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        // Next header (the kernel fills it), length 0 (8 bytes), PadN of 4 zero bytes.
        let hop: [u8; 8] = [0, 0, 1, 4, 0, 0, 0, 0];
        let set = libc::setsockopt(fd, libc::IPPROTO_IPV6, libc::IPV6_HOPOPTS, hop.as_ptr().cast(), hop.len() as u32);
        assert_eq!(set, 0, "IPV6_HOPOPTS: {}", std::io::Error::last_os_error());
        let mut sa: libc::sockaddr_in6 = std::mem::zeroed();
        sa.sin6_family = libc::AF_INET6 as libc::sa_family_t;
        sa.sin6_port = port.to_be();
        sa.sin6_addr.s6_addr = std::net::Ipv6Addr::LOCALHOST.octets();
        let connected = libc::connect(fd, (&sa as *const libc::sockaddr_in6).cast(), std::mem::size_of::<libc::sockaddr_in6>() as u32);
        assert_eq!(connected, 0, "connect to [::1]:{port}: {}", std::io::Error::last_os_error());
        <std::net::TcpStream as std::os::fd::FromRawFd>::from_raw_fd(fd)
    }
}

#[test]
fn ipv6_packets_with_extension_headers_are_read_past_them() {
    let Some(bin) = ready("ipv6_packets_with_extension_headers_are_read_past_them") else { return };
    let port = std::net::TcpListener::bind("[::1]:0").unwrap().local_addr().unwrap().port();
    let server = LabServer::start(&bin, port, &["--address", "::1"]);
    let ipv6_listening = || std::fs::read_to_string("/proc/net/tcp6").unwrap_or_default().contains(&format!(":{port:04X} 00000000000000000000000000000000:0000 0A"));
    assert!(eventually(Duration::from_secs(10), ipv6_listening), "the lab server never listened on [::1]:{port}");
    let pid = server.pid().to_string();
    let tracer = Tracer::start(&bin, &["watch", "-p", &pid, "-j", "--capture", "socket"]);
    // The login (with its hop-by-hop header) and the wrong password's: the verdicts
    // need the login packet's bytes, past the extension header.
    assert!(lab_login_on(ipv6_with_hop_by_hop(port), true).unwrap(), "the IPv6 lab login failed");
    assert!(!lab_login_on(ipv6_with_hop_by_hop(port), false).unwrap(), "a wrong password logged in");
    thread::sleep(Duration::from_millis(300));
    let out = tracer.stop();
    let all = out.json();
    let verdicts: Vec<&str> = all.iter().filter_map(|h| h["verdict"].as_str()).collect();
    assert_eq!(verdicts, ["ok", "auth_failed"], "{all:#?}\n{}", out.stderr_text());
    for h in &all {
        assert!(h["client"].as_str().is_some_and(|c| c.starts_with("[::1]:")), "{h:#}");
        assert_eq!(h["user"], LAB_USER, "the login's user name, read past the extension header: {h:#}");
    }
}

#[test]
fn a_server_moved_to_another_cgroup_after_it_listened_is_never_judged_on_unseen_packets() {
    let Some(bin) = ready("a_server_moved_to_another_cgroup_after_it_listened_is_never_judged_on_unseen_packets") else { return };
    let addr = free_addr();
    let (first, second) = (Cgroup::create("listened-here").unwrap(), Cgroup::create("moved-here").unwrap());
    let server = LabServer::start_in(&bin, addr.port(), &[], Some(&first));
    assert!(eventually(Duration::from_secs(10), || listening(addr.port())), "the lab server never listened");
    // Its listening socket (and every socket it accepts) stays in `first`.
    second.add(server.pid()).unwrap();
    let pid = server.pid().to_string();
    let cgroup_line = std::fs::read_to_string(format!("/proc/{pid}/cgroup")).unwrap();
    assert!(cgroup_line.contains(&format!("0::{}", second.path())), "{cgroup_line}");
    let mut tracer = Tracer::start(&bin, &["watch", "-p", &pid, "-j", "--capture", "socket"]);
    let place = format!("the packet programs are on cgroup {} (the servers')", second.path());
    assert!(tracer.wait_for_stderr(&place, Duration::from_secs(1)), "the tracer did not attach to the server's cgroup");
    // Unseen: its bytes never reach the programs on `second`.
    assert!(lab_login(addr, true).unwrap(), "the lab login failed");
    assert!(
        tracer.wait_for_stderr("every process's packets run them from now on", Duration::from_secs(5)),
        "the tracer did not move its packet programs to the root"
    );
    assert!(cgroup_skb_programs(second.dir()).is_disjoint(&program_ids_of(tracer.pid())), "still on the server's cgroup");
    // Seen from the root on.
    assert!(!lab_login(addr, false).unwrap(), "a wrong password logged in");
    let (_, all) = judged(tracer, &["incomplete", "auth_failed"]);
    assert!(all[0].to_string().contains("outside the cgroup the packet programs watched"), "{:#}", all[0]);
    drop(server);
}

/// Program id and attach type ("ingress", "egress") of what is attached to cgroup `dir`.
fn attached_to(dir: &std::path::Path) -> Vec<(u64, &'static str)> {
    let out = Command::new("bpftool").args(["cgroup", "show"]).arg(dir).output().expect("bpftool (cargo xtask setup installs it)");
    let kind = |l: &str| if l.contains("ingress") { "ingress" } else { "egress" };
    String::from_utf8_lossy(&out.stdout).lines().filter_map(|l| Some((l.split_whitespace().next()?.parse().ok()?, kind(l)))).collect()
}

#[test]
fn a_packet_that_runs_the_programs_twice_while_they_move_is_sent_once() {
    let Some(bin) = ready("a_packet_that_runs_the_programs_twice_while_they_move_is_sent_once") else { return };
    let addr = free_addr();
    let outer = Cgroup::create("outer").unwrap();
    let inner = outer.child("server").unwrap();
    let server = LabServer::start_in(&bin, addr.port(), &[], Some(&inner));
    assert!(eventually(Duration::from_secs(10), || listening(addr.port())), "the lab server never listened");
    let pid = server.pid().to_string();
    let tracer = Tracer::start(&bin, &["watch", "-p", &pid, "-j", "--capture", "socket", "--events"]);
    // As during a move (new links before the old go): the same programs on the server's
    // cgroup and on its parent, so each packet runs each of them twice. Removed with `outer`.
    let ours = program_ids_of(tracer.pid());
    let skb: Vec<(u64, &str)> = attached_to(inner.dir()).into_iter().filter(|(id, _)| ours.contains(id)).collect();
    assert_eq!(skb.len(), 2, "the tracer's packet programs on the server's cgroup: {skb:?}");
    for (id, kind) in &skb {
        let attach = Command::new("bpftool").args(["cgroup", "attach"]).arg(outer.dir()).args([kind, "id", &id.to_string(), "multi"]).status().unwrap();
        assert!(attach.success(), "bpftool cgroup attach {kind} id {id}");
    }
    let effective = Command::new("bpftool").args(["cgroup", "show"]).arg(inner.dir()).arg("effective").output().unwrap();
    let runs: usize = String::from_utf8_lossy(&effective.stdout).lines().filter(|l| skb.iter().any(|(id, _)| l.starts_with(&id.to_string()))).count();
    assert_eq!(runs, 4, "each packet should run each program twice:\n{}", String::from_utf8_lossy(&effective.stdout));
    let (out, _) = ok_then_auth_failed(addr, tracer);
    // Greeting out, login in, OK or ERR out: each once (a copy would follow its original).
    let packets: Vec<String> = out.stderr.iter().filter(|l| l.contains("kind: PacketIn") || l.contains("kind: PacketOut")).cloned().collect();
    assert_eq!(packets.len(), 6, "{packets:#?}");
    drop(server);
}

/// A TCP socket on 127.0.0.1 with SO_REUSEADDR, bound to `local_port` (0: any), connected
/// to `to`: Ok(stream) or the connect's error.
fn reusable_connect(local_port: u16, to: std::net::SocketAddr) -> std::io::Result<std::net::TcpStream> {
    use std::os::fd::FromRawFd;
    let v4 = |port: u16| libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr { s_addr: u32::from_ne_bytes([127, 0, 0, 1]) },
        sin_zero: [0; 8],
    };
    let len = std::mem::size_of::<libc::sockaddr_in>() as u32;
    // SAFETY: plain socket calls on a new fd, owned by the TcpStream or closed here.
    unsafe {
        let fd = libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0);
        assert!(fd >= 0, "socket: {}", std::io::Error::last_os_error());
        let one: libc::c_int = 1;
        libc::setsockopt(fd, libc::SOL_SOCKET, libc::SO_REUSEADDR, (&one as *const libc::c_int).cast(), 4);
        let (local, remote) = (v4(local_port), v4(to.port()));
        assert_eq!(libc::bind(fd, (&local as *const libc::sockaddr_in).cast(), len), 0, "bind: {}", std::io::Error::last_os_error());
        if libc::connect(fd, (&remote as *const libc::sockaddr_in).cast(), len) != 0 {
            let e = std::io::Error::last_os_error();
            libc::close(fd);
            return Err(e);
        }
        Ok(std::net::TcpStream::from_raw_fd(fd))
    }
}

/// The TCP tracepoints find a connection by its client's address and port and the
/// server's port: another process's SYN from the same client address and port to a
/// closed port, which the kernel answers with a reset to that address and port, is not
/// the handshake's (it was, before the server's port was part of the key).
#[test]
fn a_reset_to_the_clients_address_and_port_from_another_connection_is_not_the_handshakes() {
    let Some(bin) = ready("a_reset_to_the_clients_address_and_port_from_another_connection_is_not_the_handshakes") else { return };
    let db = MariaDb::start(&MariaDbOptions { connect_timeout: 2, ..Default::default() }).expect("start MariaDB");
    let (pid, port) = (db.pid().to_string(), db.port().to_string());
    let tracer = Tracer::start(&bin, &["watch", "-p", &pid, "-j", "--port", &port, "--capture", "socket"]);
    let mut silent = reusable_connect(0, db.addr()).expect("connect to MariaDB");
    read_greeting(&mut silent);
    let client_port = silent.local_addr().unwrap().port();
    let closed = free_addr();
    for _ in 0..3 {
        let refused = reusable_connect(client_port, closed).expect_err("nothing listens there");
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused, "{refused}");
    }
    // The server gives up after connect_timeout (2 s).
    thread::sleep(Duration::from_millis(3000));
    drop(silent);
    thread::sleep(Duration::from_millis(300));
    let out = tracer.stop();
    let all = out.json();
    let h = all
        .iter()
        .find(|h| h["client"].as_str().is_some_and(|c| c.ends_with(&format!(":{client_port}"))))
        .unwrap_or_else(|| panic!("no handshake from port {client_port}: {all:#?}"));
    let text = h.to_string();
    assert_eq!(h["verdict"], "server_timeout", "{h:#}");
    // The server's own reset (SO_LINGER 0 at its timeout) at most; the three refused SYNs' none.
    let resets = text.matches("TCP RST sent to the client").count();
    assert!(resets <= 1, "{resets} resets sent to the client in {h:#}");
}

// ---- Tier agreement: verdict and blame, both tiers on the very same connections ----

/// What both tiers must agree on for one handshake: verdict, blame party and finding,
/// and whether it is a port check.
fn agreed_part(h: &Value) -> (String, String, String, bool) {
    let s = |v: &Value| v.as_str().unwrap_or("-").to_string();
    (s(&h["verdict"]), s(&h["blame"]["party"]), s(&h["blame"]["finding"]), h["probe"] == true)
}

/// Both tiers' handshakes by client, with the verdict, blame and probe of each; panics
/// (with both tiers' JSON) where they differ.
fn assert_tiers_agree(sys_all: &BTreeMap<String, Value>, sock_all: &BTreeMap<String, Value>) {
    let part = |m: &BTreeMap<String, Value>| -> Vec<(String, (String, String, String, bool))> {
        m.iter().map(|(c, h)| (c.clone(), agreed_part(h))).collect()
    };
    let (sys, sock) = (part(sys_all), part(sock_all));
    eprintln!("syscalls tier: {sys:#?}\nsocket tier:   {sock:#?}");
    assert_eq!(sys, sock, "the tiers disagree:\nsyscalls {sys_all:#?}\nsocket {sock_all:#?}");
}

/// A syscall-tier and a socket-tier tracer on `db`'s TCP port (its harness logins over
/// the Unix socket are not part of the comparison).
fn both_tiers(bin: &std::path::PathBuf, db: &MariaDb) -> (Tracer, Tracer) {
    let (pid, port) = (db.pid().to_string(), db.port().to_string());
    let syscalls = Tracer::start(bin, &["watch", "-p", &pid, "-j", "--port", &port, "--capture", "syscalls"]);
    let socket = Tracer::start(bin, &["watch", "-p", &pid, "-j", "--port", &port, "--capture", "socket"]);
    (syscalls, socket)
}

/// Both tracers stopped once the server has no handshake left: each tier's handshakes by client.
fn stop_both(db: &MariaDb, syscalls: Tracer, socket: Tracer) -> (BTreeMap<String, Value>, BTreeMap<String, Value>) {
    assert!(
        eventually(Duration::from_secs(15), || db.status("Threads_connected").is_ok_and(|n| n <= 1)),
        "the server still has connections in progress"
    );
    thread::sleep(Duration::from_millis(300));
    let (sys_out, sock_out) = (syscalls.stop(), socket.stop());
    for o in [&sys_out, &sock_out] {
        assert_eq!(o.code, Some(0), "{}", o.stderr_text());
    }
    (by_client(sys_out.json()), by_client(sock_out.json()))
}

/// An SSLRequest, then nothing: MariaDB waits connect_timeout for the ClientHello and
/// gives up with a plaintext ERR 1043. Returns the client's port.
fn tls_stall(db: &MariaDb) -> thread::JoinHandle<u16> {
    raw_client(db, |s| {
        std::io::Write::write_all(s, &ssl_request_packet()).unwrap();
        thread::sleep(Duration::from_millis(2600));
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 128];
        let n = s.read(&mut buf).unwrap_or(0);
        assert!(String::from_utf8_lossy(&buf[..n]).contains("Bad handshake"), "{:?}", &buf[..n]);
    })
}

/// The TLS stall is a timeout in both tiers: the server gave up waiting for the
/// ClientHello, and its ERR 1043 is how it gave up. The socket tier sees no poll: it
/// tells the timeout from the server's read that found nothing, then nothing from the
/// client for at least MariaDB's least connect_timeout (2 s) before the ERR.
#[test]
fn a_tls_stall_is_a_server_timeout_in_both_tiers() {
    let Some(bin) = ready("a_tls_stall_is_a_server_timeout_in_both_tiers") else { return };
    let db = mariadb_with_tls_account(None);
    let (syscalls, socket) = both_tiers(&bin, &db);
    let stalled = tls_stall(&db).join().unwrap();
    let (sys_all, sock_all) = stop_both(&db, syscalls, socket);
    let key = format!("127.0.0.1:{stalled}");
    for (tier, all) in [("syscalls", &sys_all), ("socket", &sock_all)] {
        let h = &all[&key];
        assert_eq!(h["verdict"], "server_timeout", "{tier} tier: {h:#}");
        assert_eq!(h["wait"]["waiting_for"], "the TLS ClientHello (after the client's SSLRequest)", "{tier} tier: {h:#}");
        assert_eq!(h["client_error"], "ERROR 1043 (08S01): Bad handshake", "{tier} tier: {h:#}");
        let waited = h["wait"]["waited_ms"].as_f64().unwrap_or(0.0);
        assert!((1990.0..2600.0).contains(&waited), "{tier} tier waited {waited} ms for a 2000 ms connect_timeout: {h:#}");
    }
    assert_tiers_agree(&sys_all, &sock_all);
}

/// mariadbd stopped (SIGSTOP) while a client with a 1 s connect timeout connects: the
/// kernel completes the TCP handshake, the connection waits in the accept queue, the
/// client gives up after 1 s, and the server accepts and greets it 2 s late. Both
/// tiers time the connection from its TCP handshake (an accept-queue wait is the
/// server's): a slow greeting, the server's side; never a port check.
#[test]
fn a_frozen_server_is_blamed_for_its_late_greeting_in_both_tiers() {
    let Some(bin) = ready("a_frozen_server_is_blamed_for_its_late_greeting_in_both_tiers") else { return };
    let db = MariaDb::start(&MariaDbOptions { connect_timeout: 2, ..Default::default() }).expect("start MariaDB");
    let (syscalls, socket) = both_tiers(&bin, &db);
    let said = frozen_server_login(&db);
    assert!(said.contains("ERROR 2013") && said.contains("reading initial communication packet"), "the client said: {said}");
    let (sys_all, sock_all) = stop_both(&db, syscalls, socket);
    // Both timelines, for `--nocapture` readers.
    eprintln!("{sys_all:#?}\n{sock_all:#?}");
    assert_eq!(sys_all.len(), 1, "{sys_all:#?}");
    for (tier, all) in [("syscalls", &sys_all), ("socket", &sock_all)] {
        let h = all.values().next().unwrap();
        assert!(h["probe"].is_null(), "{tier} tier calls it a port check: {h:#}");
        assert_eq!((h["blame"]["party"].as_str(), h["blame"]["finding"].as_str()), (Some("server"), Some("slow_greeting")), "{tier} tier: {h:#}");
        let greeting = h["phases_ms"]["to_greeting"].as_f64().unwrap_or(0.0);
        assert!(greeting >= 1500.0, "{tier} tier: greeting {greeting} ms after the TCP handshake: {h:#}");
        // The client gave up after its 1 s connect timeout, while the connection still
        // waited for the accept: its FIN, seen by both tiers.
        let left = h["blame"]["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e.as_str()?.strip_prefix("the client closed at +")?.strip_suffix(" ms")?.parse::<f64>().ok())
            .next();
        assert!(left.is_some_and(|ms| (900.0..1500.0).contains(&ms)), "{tier} tier: the client left at {left:?} ms: {h:#}");
    }
    assert_tiers_agree(&sys_all, &sock_all);
}

/// Stop `db` (SIGSTOP) while the `mariadb` CLI connects with a 1 s connect timeout,
/// resume it 2 s later: what the client printed.
fn frozen_server_login(db: &MariaDb) -> String {
    let pid = db.pid() as i32;
    // SAFETY: signalling the test's own server.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    let client = {
        let port = db.port();
        thread::spawn(move || {
            Command::new("mariadb")
                .args(["--no-defaults", "-h", "127.0.0.1", "-P", &port.to_string(), "-u", LAB_USER])
                .arg(format!("--password={LAB_PASSWORD}"))
                .args(["--skip-ssl", "--connect-timeout=1", "-e", "SELECT 1"])
                .stdin(std::process::Stdio::null())
                .output()
        })
    };
    thread::sleep(Duration::from_secs(2));
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    let out = client.join().unwrap().expect("run the mariadb client");
    String::from_utf8_lossy(&out.stderr).trim().to_string()
}

/// The syscall tier finds TCP events by both ends' addresses and ports: another
/// connection from the silent client's address and port (three SYNs refused by a
/// closed port, and a connection to another listener that is accepted and closed) puts
/// none of its resets or state changes into the handshake's timeline. Before, its
/// accept did not know the server's port and matched on the client's alone.
#[test]
fn the_syscall_tier_keeps_another_connections_tcp_events_out_of_a_timeline() {
    let Some(bin) = ready("the_syscall_tier_keeps_another_connections_tcp_events_out_of_a_timeline") else { return };
    let db = MariaDb::start(&MariaDbOptions { connect_timeout: 2, ..Default::default() }).expect("start MariaDB");
    let (pid, port) = (db.pid().to_string(), db.port().to_string());
    let tracer = Tracer::start(&bin, &["watch", "-p", &pid, "-j", "--port", &port, "--capture", "syscalls"]);
    let mut silent = reusable_connect(0, db.addr()).expect("connect to MariaDB");
    read_greeting(&mut silent);
    let client_port = silent.local_addr().unwrap().port();
    let closed = free_addr();
    for _ in 0..3 {
        let refused = reusable_connect(client_port, closed).expect_err("nothing listens there");
        assert_eq!(refused.kind(), std::io::ErrorKind::ConnectionRefused, "{refused}");
    }
    let other = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let to_other = reusable_connect(client_port, other.local_addr().unwrap()).expect("connect to the other listener");
    let (accepted, _) = other.accept().unwrap();
    set_linger0(&accepted);
    drop(accepted);
    drop(to_other);
    // The server gives up after connect_timeout (2 s).
    thread::sleep(Duration::from_millis(3000));
    drop(silent);
    thread::sleep(Duration::from_millis(300));
    let out = tracer.stop();
    let all = out.json();
    let h = all
        .iter()
        .find(|h| h["client"].as_str().is_some_and(|c| c.ends_with(&format!(":{client_port}"))))
        .unwrap_or_else(|| panic!("no handshake from port {client_port}: {all:#?}"));
    assert_eq!(h["verdict"], "server_timeout", "{h:#}");
    let texts: Vec<&str> = h["events"].as_array().unwrap().iter().filter_map(|e| e["text"].as_str()).collect();
    // The server's own reset (SO_LINGER 0 at its timeout); the refused SYNs' and the other connection's none.
    let resets = texts.iter().filter(|t| t.contains("RST sent to the client")).count();
    assert_eq!(resets, 1, "{resets} resets sent to the client in {texts:#?}");
    for foreign in ["LISTEN → SYN_RECV", "RST received from the client"] {
        assert!(!texts.iter().any(|t| t.contains(foreign)), "another connection's {foreign:?} in {texts:#?}");
    }
    let closes = texts.iter().filter(|t| t.contains("→ CLOSE")).count();
    assert_eq!(closes, 1, "one close, the server's own: {texts:#?}");
}

/// Every scenario of tests/handshakes.rs that needs no packet loss, the TLS stall and a
/// frozen server included, traced by both tiers at once: the same verdict, blame party,
/// finding and port-check flag for each. The scenarios: a CLI login, a wrong password
/// (1045), an unknown database (1049), an ed25519 login (auth switch), a PyMySQL login,
/// a TLS login and a TLS wrong password, a client silent until connect_timeout, one
/// whose login comes after the server gave up, port checks closing and resetting, half
/// a login, garbage (1043) and HTTP on the port, the TLS stall (1043 after the wait), a
/// ClientHello with no SSLRequest (1156), a login refused after it for max_connections
/// (1040) and one refused instead of a greeting, and a client that gave up on a server
/// stopped with SIGSTOP. (The iptables packet-loss scenarios of tests/handshakes.rs are
/// not run here.)
#[test]
fn both_capture_tiers_agree_on_verdict_and_blame_for_every_handshake_scenario() {
    let Some(bin) = ready("both_capture_tiers_agree_on_verdict_and_blame_for_every_handshake_scenario") else { return };
    let cgroup = Cgroup::create("tier-agreement").expect("a cgroup for MariaDB");
    let db = mariadb_with_tls_account(Some(cgroup.dir()));
    db.sql("INSTALL SONAME 'auth_ed25519'; CREATE USER 'ed'@'%' IDENTIFIED VIA ed25519 USING PASSWORD('ed-pw'); CREATE USER 'ed'@'localhost' IDENTIFIED VIA ed25519 USING PASSWORD('ed-pw')")
        .unwrap();
    db.sql("CREATE USER 'plain'@'%' IDENTIFIED BY 'plain-pw'; CREATE USER 'plain'@'localhost' IDENTIFIED BY 'plain-pw'").unwrap();
    let (syscalls, socket) = both_tiers(&bin, &db);

    // First, alone: the frozen server (no other client may wait on it meanwhile).
    let frozen = frozen_server_login(&db);
    assert!(frozen.contains("ERROR 2013"), "{frozen}");
    let cli = |user: &str, password: &str, args: &[&str]| db.client(user, password, args).unwrap();
    assert!(cli(LAB_USER, LAB_PASSWORD, &["--skip-ssl", "-e", "SELECT 1"]).status.success());
    assert!(String::from_utf8_lossy(&cli(LAB_USER, "wrong-password", &["--skip-ssl", "-e", "SELECT 1"]).stderr).contains("ERROR 1045"));
    assert!(String::from_utf8_lossy(&cli(LAB_USER, LAB_PASSWORD, &["--skip-ssl", "-D", "no_such_db", "-e", "SELECT 1"]).stderr).contains("ERROR 1049"));
    assert!(cli("ed", "ed-pw", &["--skip-ssl", "-e", "SELECT 1"]).status.success());
    let driver = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(format!("import pymysql; c = pymysql.connect(host='127.0.0.1', port={}, user='{LAB_USER}', password='{LAB_PASSWORD}'); c.close()", db.port()))
        .output()
        .unwrap();
    assert!(driver.status.success(), "PyMySQL: {}", String::from_utf8_lossy(&driver.stderr));
    assert!(cli("tls_lab", "tls-pw", &["--ssl", "-e", "SELECT 1"]).status.success());
    assert!(String::from_utf8_lossy(&cli("tls_lab", "wrong-password", &["--ssl", "-e", "SELECT 1"]).stderr).starts_with("ERROR 1045"));

    let silent = raw_client(&db, |s| {
        thread::sleep(Duration::from_millis(2600));
        let _ = s.read(&mut [0u8; 64]);
    });
    let late = raw_client(&db, |s| {
        thread::sleep(Duration::from_secs(4));
        if std::io::Write::write_all(s, &login_packet()).is_ok() {
            let _ = s.read(&mut [0u8; 64]);
        }
    });
    let closes = raw_client(&db, |_| {});
    let resets = raw_client(&db, |s| set_linger0(s));
    let half_login = raw_client(&db, |s| std::io::Write::write_all(s, &login_packet()[..20]).unwrap());
    let garbage = raw_client(&db, |s| {
        std::io::Write::write_all(s, &[5, 0, 0, 1, 1, 2, 3, 4, 5]).unwrap();
        let _ = s.read(&mut [0u8; 128]);
    });
    let http = raw_client(&db, |s| {
        std::io::Write::write_all(s, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let _ = s.read(&mut [0u8; 128]);
    });
    let stalled = tls_stall(&db);
    let hello = {
        let addr = db.addr();
        thread::spawn(move || {
            // A TLS 1.2 ClientHello record with no SSLRequest before it (ERR 1156).
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            read_greeting(&mut s);
            let mut body = vec![0x01, 0x00, 0x00, 0x29, 0x03, 0x03];
            body.extend([0x42; 32]);
            body.extend([0x00, 0x00, 0x02, 0x00, 0x2f, 0x01, 0x00]);
            let mut rec = vec![0x16, 0x03, 0x01, 0x00, body.len() as u8];
            rec.extend(body);
            std::io::Write::write_all(&mut s, &rec).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let _ = s.read(&mut [0u8; 128]);
        })
    };
    for t in [silent, late, closes, resets, half_login, garbage, http, stalled] {
        t.join().unwrap();
    }
    hello.join().unwrap();
    // max_connections: a real client refused after its login (1040), then held
    // connections time out and one more is refused instead of the greeting.
    db.sql("SET GLOBAL max_connections = 10").unwrap();
    let held: Vec<std::net::TcpStream> = (0..10)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(db.addr()).unwrap();
            read_greeting(&mut s);
            s
        })
        .collect();
    let refused_after_login = cli("plain", "plain-pw", &["--skip-ssl", "-e", "SELECT 1"]);
    assert!(String::from_utf8_lossy(&refused_after_login.stderr).starts_with("ERROR 1040"), "{refused_after_login:?}");
    drop(held);
    db.sql("SET GLOBAL max_connections = 151").unwrap();
    let _refused = max_connections_refusal(&db, Duration::from_millis(2600));

    let (sys_all, sock_all) = stop_both(&db, syscalls, socket);
    assert!(sys_all.len() >= 8 + 8 + 1 + 12 + 10, "{}: {sys_all:#?}", sys_all.len());
    assert_tiers_agree(&sys_all, &sock_all);
    let slow = sys_all.values().filter(|h| h["blame"]["finding"] == "slow_greeting").count();
    assert_eq!(slow, 1, "the frozen server's late greeting: {sys_all:#?}");
}

/// Every lab scenario on both servers (the built-in one and a throwaway MariaDB), in
/// each tier: the same verdicts, blame and port-check flags, and no other connection's
/// TCP events in a timeline. The lab runs its own server and client per run, so the two
/// tiers see two runs of the same script (about 2.5 minutes in all).
#[test]
fn both_capture_tiers_agree_on_every_lab_scenario() {
    let Some(bin) = ready("both_capture_tiers_agree_on_every_lab_scenario") else { return };
    let mariadb_scenarios = ["connect-timeout", "timeout-poll", "starved-client", "normal", "wrong-password"];
    let builtin = ["connect-timeout", "timeout-alarm", "timeout-poll", "starved-client", "slow-dns", "normal", "wrong-password"];
    let runs = builtin.iter().map(|s| ("builtin", *s)).chain(mariadb_scenarios.iter().map(|s| ("mariadb", *s)));
    let mut disagreements = Vec::new();
    for (server, scenario) in runs {
        let judged = |tier: &str| -> Vec<(String, String, String, bool)> {
            let out = Command::new(&bin).args(["lab", "--server", server, "--capture", tier, scenario, "-j"]).output().unwrap();
            assert!(out.status.success(), "lab --server {server} --capture {tier} {scenario}: {}", String::from_utf8_lossy(&out.stderr));
            let handshakes: Vec<Value> = String::from_utf8_lossy(&out.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
            // Another connection's TCP events (a later client from the same port) in no timeline.
            for h in &handshakes {
                let texts: Vec<&str> = h["events"].as_array().unwrap().iter().filter_map(|e| e["text"].as_str()).collect();
                let handshakes_seen = texts.iter().filter(|t| t.contains("SYN_RECV → ESTABLISHED")).count();
                assert!(!texts.iter().any(|t| t.contains("LISTEN → SYN_RECV")) && handshakes_seen <= 1, "{server} {scenario} {tier}: {texts:#?}");
            }
            let mut all: Vec<(String, String, String, bool)> = handshakes.iter().map(agreed_part).collect();
            all.sort();
            all
        };
        let (sys, sock) = (judged("syscalls"), judged("socket"));
        eprintln!("{server} {scenario}: syscalls {sys:?} socket {sock:?}");
        assert!(!sys.is_empty(), "{server} {scenario}: no handshake traced");
        if sys != sock {
            disagreements.push(format!("{server} {scenario}: syscalls {sys:?} vs socket {sock:?}"));
        }
    }
    assert!(disagreements.is_empty(), "the tiers disagree:\n{}", disagreements.join("\n"));
}

/// The packet-loss scenarios of tests/handshakes.rs, traced by both tiers at once: the
/// greeting dropped on its way to the client (the server's socket retransmits it), then
/// the login dropped on its way to the server (the client's own socket retransmits
/// it). Both tiers see the same retransmits and agree: packet loss toward the client,
/// then toward the server.
#[test]
fn both_capture_tiers_agree_on_lost_packets() {
    let name = "both_capture_tiers_agree_on_lost_packets";
    let Some(bin) = ready(name) else { return };
    if !Command::new("iptables-legacy").arg("-S").output().is_ok_and(|o| o.status.success()) {
        skip(name, "no iptables-legacy (`cargo xtask setup` installs iptables)");
        return;
    }
    let db = MariaDb::start(&MariaDbOptions { connect_timeout: 2, ..Default::default() }).expect("start MariaDB");
    let (syscalls, socket) = both_tiers(&bin, &db);
    for drop_rule in [DropData::from_server, DropData::to_server] {
        let _drop = drop_rule(db.port());
        let client = db.client(LAB_USER, LAB_PASSWORD, &["--skip-ssl", "-e", "SELECT 1"]).unwrap();
        assert!(!client.status.success(), "the login went through the drop rule");
        assert!(eventually(Duration::from_secs(10), || db.status("Threads_connected").is_ok_and(|n| n <= 1)));
    }
    let (sys_all, sock_all) = stop_both(&db, syscalls, socket);
    let mut findings: Vec<&str> = sock_all.values().filter_map(|h| h["blame"]["finding"].as_str()).collect();
    findings.sort();
    assert_eq!(findings, ["loss_toward_client", "loss_toward_server"], "{sock_all:#?}");
    assert_tiers_agree(&sys_all, &sock_all);
}

/// A raw client of `db`'s Unix socket in its own thread: connect, then `then`.
fn raw_unix_client(db: &MariaDb, then: impl FnOnce(&mut std::os::unix::net::UnixStream) + Send + 'static) -> thread::JoinHandle<()> {
    let path = db.socket();
    thread::spawn(move || {
        let mut s = std::os::unix::net::UnixStream::connect(path).unwrap();
        then(&mut s);
    })
}

/// The `mariadb` CLI over `db`'s Unix socket: (its pid, whether it succeeded, stderr).
fn unix_cli(db: &MariaDb, user: &str, password: &str, extra: &[&str]) -> (u32, bool, String) {
    let child = Command::new("mariadb")
        .arg("--no-defaults")
        .arg(format!("--socket={}", db.socket().display()))
        .args(["-u", user, &format!("--password={password}"), "-N", "-B"])
        .args(extra)
        .args(["-e", "SELECT 1"])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("the mariadb CLI");
    let pid = child.id();
    let out = child.wait_with_output().unwrap();
    (pid, out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn unix_socket_clients_get_the_same_verdicts_in_both_tiers() {
    let Some(bin) = ready("unix_socket_clients_get_the_same_verdicts_in_both_tiers") else { return };
    let db = mariadb_with_tls_account(None);
    let pid = db.pid().to_string();
    // No --port: it would keep one TCP port only. Nothing else logs in meanwhile.
    let syscalls = Tracer::start(&bin, &["watch", "-p", &pid, "-j", "--capture", "syscalls"]);
    // The socket tier records too (secrets zeroed), for `analyze` to replay below.
    let trace = std::env::temp_dir().join(format!("handshake-trace-unix-{}.htrace", std::process::id()));
    let _ = std::fs::remove_file(&trace);
    let trace_arg = trace.to_str().unwrap();
    let socket = Tracer::start(&bin, &["record", "-o", trace_arg, "-p", &pid, "-j"]);
    let socket_unix_only = Tracer::start(&bin, &["watch", "-p", &pid, "-j", "--client", "unix"]);
    let pause = || thread::sleep(Duration::from_millis(300));

    // This server speaks TLS: without --skip-ssl the CLI would use it, login unread.
    let (ok_pid, ok, err) = unix_cli(&db, LAB_USER, LAB_PASSWORD, &["--skip-ssl"]);
    assert!(ok, "{err}");
    pause();
    let (denied_pid, ok, err) = unix_cli(&db, LAB_USER, "wrong-password", &["--skip-ssl"]);
    assert!(!ok && err.contains("ERROR 1045"), "{err}");
    pause();
    // --ssl on the Unix socket: the client asks for TLS (an SSLRequest) all the same.
    let (_, ok, err) = unix_cli(&db, "tls_lab", "tls-pw", &["--ssl"]);
    assert!(ok, "TLS login over the Unix socket: {err}");
    pause();
    // Gone before reading the greeting: the server's read gets ECONNRESET.
    raw_unix_client(&db, |_| thread::sleep(Duration::from_millis(100))).join().unwrap();
    pause();
    // Reads the greeting, then closes.
    raw_unix_client(&db, |s| {
        let _ = s.read(&mut [0u8; 256]).unwrap();
    })
    .join()
    .unwrap();
    pause();
    // Reads the greeting, says nothing: the server gives up after connect_timeout (2 s).
    raw_unix_client(&db, |s| {
        let _ = s.read(&mut [0u8; 256]).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(s.read(&mut [0u8; 64]).unwrap(), 0, "the server should close after connect_timeout");
    })
    .join()
    .unwrap();
    pause();

    let expected = ["ok", "auth_failed", "ok", "client_reset", "client_closed", "server_timeout"];
    let (_, sys_all) = judged(syscalls, &expected);
    let (sock_out, sock_all) = judged(socket, &expected);
    let (_, unix_only) = judged(socket_unix_only, &expected);
    assert!(!sock_out.stderr_text().contains("also listens on"), "no warning of unseen Unix clients: {}", sock_out.stderr_text());
    for (s, y) in sock_all.iter().zip(&sys_all) {
        assert_eq!(s["unix_socket"], true, "{s:#}");
        assert_eq!(y["unix_socket"], true, "{y:#}");
        assert_eq!(s["user"], y["user"], "the tiers decode the same user:\n{s:#}\n{y:#}");
        assert_eq!(s["blame"]["party"], y["blame"]["party"], "the tiers blame the same party:\n{s:#}\n{y:#}");
    }
    assert_eq!(sock_all[0]["user"], LAB_USER);
    assert_eq!(sock_all[1]["user"], LAB_USER);
    assert!(sock_all[1].to_string().contains("1045"), "{:#}", sock_all[1]);
    // Named by who connected, in both tiers: the CLI's own pid and program; this test's process.
    for all in [&sock_all, &sys_all] {
        assert_eq!((&all[0]["client_pid"], &all[0]["client_program"]), (&Value::from(ok_pid), &Value::from("mariadb")), "{:#}", all[0]);
        assert_eq!(all[1]["client_pid"], Value::from(denied_pid));
        for h in &all[3..] {
            assert_eq!(h["client_pid"], Value::from(std::process::id()), "{h:#}");
        }
    }
    // The silent client: the server's wait, from its empty read to its close.
    let silent = &sock_all[5];
    let total = silent["phases_ms"]["total"].as_f64().unwrap();
    assert!((1900.0..2600.0).contains(&total), "connect_timeout is 2 s: {silent:#}");
    assert_eq!(unix_only.len(), expected.len(), "--client unix keeps them all");
    // The recording replays to the same verdicts and names, with no root and no kernel.
    let replay = Command::new(&bin).args(["analyze", trace_arg, "-j"]).output().unwrap();
    let _ = std::fs::remove_file(&trace);
    assert!(replay.status.success(), "{}", String::from_utf8_lossy(&replay.stderr));
    let replayed: Vec<Value> =
        String::from_utf8_lossy(&replay.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    let seen = |all: &[Value]| -> Vec<(Value, Value, Value)> {
        all.iter().filter(|h| h["verdict"].is_string()).map(|h| (h["verdict"].clone(), h["user"].clone(), h["client_pid"].clone())).collect()
    };
    assert_eq!(seen(&replayed), seen(&sock_all), "analyze of the socket tier's recording");
}
