//! A real HAProxy (Debian's 2.6) in front of a real MariaDB 10.11 started with
//! `--proxy-protocol-networks=127.0.0.21`, both capture tiers watching the same
//! connections:
//! - `send-proxy` and `send-proxy-v2` from 127.0.0.21, PyMySQL clients bound to
//!   127.0.0.31 / 127.0.0.32: the client is the one the header names (the server's own
//!   `USER()` says so too), `via` the proxy, the login decoded, `ok`;
//! - `send-proxy` from 127.0.0.22 (not in the networks): the server refuses the header
//!   (ERR 1130), judged `server_error` with the PROXY cause;
//! - `option mysql-check user hapcheck post-41` from 127.0.0.23: HAProxy sends its login
//!   and COM_QUIT in the segment that completes the TCP handshake (no bare ACK), before
//!   the greeting: `ok`, user `hapcheck`, a login phase, in both tiers; the same with
//!   `send-proxy-v2 check-send-proxy` from 127.0.0.24 (a v2 LOCAL header, sent with the
//!   TCP handshake's last ACK, then the login after the greeting).
//! Each tier records too: `analyze` of the (redacted) recording gives the same. And
//! `--client 127.0.0.31` keeps the proxied login from there, and nothing else.
use std::{
    io::Write,
    path::Path,
    process::{Child, Command, Stdio},
    thread,
    time::Duration,
};

use handshake_trace_tests::*;
use serde_json::Value;

/// HAProxy, killed when dropped (a failing test leaves none behind).
struct Haproxy(Child);

impl Drop for Haproxy {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn haproxy(config: &Path) -> Haproxy {
    let child = Command::new("haproxy")
        .arg("-db")
        .arg("-f")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("haproxy (cargo xtask setup installs it)");
    Haproxy(child)
}

/// A PyMySQL login through `port` from source address `bind` (the `mariadb` CLI cannot
/// bind its source address), then `sql`: (ok, first column of the first row, error).
fn client_via(port: u16, bind: &str, sql: &str) -> (bool, String, String) {
    let out = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(format!(
            "import pymysql\n\
             c = pymysql.connect(host='127.0.0.1', port={port}, bind_address='{bind}', user='{LAB_USER}', password='{LAB_PASSWORD}', connect_timeout=10)\n\
             cur = c.cursor(); cur.execute('{sql}'); print(cur.fetchone()[0]); c.close()"
        ))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).trim().to_string(), String::from_utf8_lossy(&out.stderr).to_string())
}

fn ip_of(v: &Value) -> &str {
    v.as_str().and_then(|s| s.rsplit_once(':')).map(|(ip, _)| ip).unwrap_or("?")
}

/// One tier's handshakes whose client is `ip`.
fn from<'a>(all: &'a [Value], ip: &str) -> Vec<&'a Value> {
    all.iter().filter(|h| ip_of(&h["client"]) == ip).collect()
}

#[test]
fn haproxy_send_proxy_v1_v2_untrusted_and_mysql_check_in_both_tiers() {
    let Some(bin) = ready("haproxy_send_proxy_v1_v2_untrusted_and_mysql_check_in_both_tiers") else { return };
    if Command::new("haproxy").arg("-v").output().is_err() {
        skip("haproxy_send_proxy_v1_v2_untrusted_and_mysql_check_in_both_tiers", "haproxy is not installed (cargo xtask setup)");
        return;
    }
    let cgroup = Cgroup::create("proxy-protocol").expect("a cgroup for MariaDB");
    let opts = MariaDbOptions {
        extra_args: vec!["--proxy-protocol-networks=127.0.0.21,127.0.0.24".into(), "--skip-name-resolve".into()],
        cgroup: Some(cgroup.dir().to_path_buf()),
        ..Default::default()
    };
    let db = MariaDb::start_in(&opts, cgroup).expect("start MariaDB");
    db.sql("CREATE USER 'hapcheck'@'%'").unwrap();
    let (pid, port) = (db.pid().to_string(), db.port().to_string());
    // Each tier also records (secrets zeroed, the header kept), for `analyze` to replay below.
    let trace = |tier: &str| std::env::temp_dir().join(format!("handshake-trace-proxy-{tier}-{}.htrace", std::process::id()));
    let (sys_trace, sock_trace) = (trace("syscalls"), trace("socket"));
    for t in [&sys_trace, &sock_trace] {
        // `record` refuses an existing file: one left by an earlier run with this pid goes first.
        let _ = std::fs::remove_file(t);
    }
    let record = |t: &Path, tier: &str| {
        Tracer::start(&bin, &["record", "-o", t.to_str().unwrap(), "-p", &pid, "-j", "--port", &port, "--capture", tier])
    };
    let (syscalls, socket) = (record(&sys_trace, "syscalls"), record(&sock_trace, "socket"));
    // `--client` selects by the client the header named, not by the proxy.
    let filtered = Tracer::start(&bin, &["watch", "-p", &pid, "-j", "--port", &port, "--capture", "socket", "--client", "127.0.0.31"]);
    // The text timelines (every handshake's: --slow 0), for people.
    let text = Tracer::start(&bin, &["watch", "-p", &pid, "--port", &port, "--capture", "socket", "--slow", "0"]);

    let (v1, v2, untrusted, check) = (free_addr().port(), free_addr().port(), free_addr().port(), free_addr().port());
    let proxied_check = free_addr().port();
    let dbp = db.port();
    let config = std::env::temp_dir().join(format!("handshake-trace-haproxy-{}.cfg", std::process::id()));
    let mut f = std::fs::File::create(&config).unwrap();
    write!(
        f,
        "defaults\n  mode tcp\n  timeout connect 5s\n  timeout client 10s\n  timeout server 10s\n\
         listen v1\n  bind 127.0.0.1:{v1}\n  server db 127.0.0.1:{dbp} send-proxy source 127.0.0.21\n\
         listen v2\n  bind 127.0.0.1:{v2}\n  server db 127.0.0.1:{dbp} send-proxy-v2 source 127.0.0.21\n\
         listen untrusted\n  bind 127.0.0.1:{untrusted}\n  server db 127.0.0.1:{dbp} send-proxy source 127.0.0.22\n\
         listen checked\n  bind 127.0.0.1:{check}\n  option mysql-check user hapcheck post-41\n  \
         server db 127.0.0.1:{dbp} check inter 500ms source 127.0.0.23\n\
         listen checked_with_header\n  bind 127.0.0.1:{proxied_check}\n  option mysql-check user hapcheck post-41\n  \
         server db 127.0.0.1:{dbp} send-proxy-v2 check-send-proxy check inter 500ms source 127.0.0.24\n"
    )
    .unwrap();
    drop(f);
    let proxy = haproxy(&config);
    assert!(
        eventually(Duration::from_secs(10), || std::net::TcpStream::connect(("127.0.0.1", v2)).is_ok()),
        "haproxy does not listen"
    );
    // The probe connect above went through to the server: its handshake (no login) is
    // from 127.0.0.1, not among those checked below.
    let (ok1, who1, err1) = client_via(v1, "127.0.0.31", "SELECT USER()");
    assert!(ok1, "through send-proxy: {err1}");
    assert_eq!(who1, "lab@127.0.0.31", "the server names the client the header named");
    let (ok2, who2, err2) = client_via(v2, "127.0.0.32", "SELECT USER()");
    assert!(ok2, "through send-proxy-v2: {err2}");
    assert_eq!(who2, "lab@127.0.0.32");
    let (ok3, _, err3) = client_via(untrusted, "127.0.0.33", "SELECT 1");
    assert!(!ok3, "a header from 127.0.0.22 was accepted");
    eprintln!("untrusted proxy, PyMySQL says: {}", err3.trim().lines().last().unwrap_or(""));
    let cli = Command::new("mariadb")
        .arg("--no-defaults")
        .args(["-h", "127.0.0.1", "-P", &untrusted.to_string(), "-u", LAB_USER])
        .arg(format!("--password={LAB_PASSWORD}"))
        .args(["--skip-ssl", "--connect-timeout=10", "-e", "SELECT 1"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!cli.status.success());
    let cli_said = String::from_utf8_lossy(&cli.stderr).trim().to_string();
    eprintln!("untrusted proxy, the mariadb CLI says: {cli_said}");
    // A few health checks (every 500 ms), then no more.
    thread::sleep(Duration::from_millis(1600));
    drop(proxy);
    let _ = std::fs::remove_file(&config);
    thread::sleep(Duration::from_millis(400));

    let filtered = filtered.stop().json();
    let clients: Vec<&str> = filtered.iter().map(|h| ip_of(&h["client"])).collect();
    assert_eq!(clients, ["127.0.0.31"], "--client 127.0.0.31: {filtered:#?}");
    let text = text.stop();
    eprintln!("--- watch (socket tier, text) ---\n{}\n---", text.stdout.join("\n"));
    for (tier, tracer, trace) in [("syscalls", syscalls, &sys_trace), ("socket", socket, &sock_trace)] {
        let out = tracer.stop();
        assert_eq!(out.code, Some(0), "{tier}: {}", out.stderr_text());
        let all = out.json();
        // The recording replays to the same clients, proxies, users and verdicts.
        let replay = Command::new(&bin).arg("analyze").arg(trace).arg("-j").output().unwrap();
        let _ = std::fs::remove_file(trace);
        assert!(replay.status.success(), "{tier}: analyze: {}", String::from_utf8_lossy(&replay.stderr));
        let replayed: Vec<Value> = String::from_utf8_lossy(&replay.stdout)
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|v| v.get("verdict").is_some())
            .collect();
        let gist = |hs: &[Value]| -> Vec<String> {
            hs.iter().map(|h| format!("{} {} {} {}", h["client"], h["via"], h["user"], h["verdict"])).collect()
        };
        assert_eq!(gist(&replayed), gist(&all), "{tier}: live and replayed differ");
        let one = |ip: &str| -> Value {
            let hs = from(&all, ip);
            assert_eq!(hs.len(), 1, "{tier}: handshakes from {ip}: {all:#?}");
            hs[0].clone()
        };
        for (ip, version) in [("127.0.0.31", "v1"), ("127.0.0.32", "v2")] {
            let h = one(ip);
            assert_eq!(h["verdict"], "ok", "{tier} {version}: {h:#}");
            assert_eq!(h["user"], LAB_USER, "{tier} {version}: {h:#}");
            assert_eq!(ip_of(&h["via"]), "127.0.0.21", "{tier} {version}: {h:#}");
            let events = h["events"].to_string();
            assert!(events.contains(&format!("PROXY protocol {version} header")), "{tier}: {events}");
        }
        // From the untrusted proxy: MariaDB reads 4 bytes of the header and refuses it. The
        // socket tier sees the whole header in its packet (client 127.0.0.33 via the
        // proxy); the syscall tier sees only what the server read, so the proxy stays the client.
        let refused: Vec<&Value> = all.iter().filter(|h| h["error"]["code"] == 1130).collect();
        assert_eq!(refused.len(), 2, "{tier}: PyMySQL's and the CLI's: {all:#?}");
        assert_eq!(refused[1]["client_error"].as_str(), Some(cli_said.as_str()), "{tier}: what the CLI said");
        let refused = &refused[..1];
        let refused = refused[0];
        assert_eq!(refused["verdict"], "server_error", "{tier}: {refused:#}");
        if tier == "socket" {
            assert_eq!((ip_of(&refused["client"]), ip_of(&refused["via"])), ("127.0.0.33", "127.0.0.22"), "{refused:#}");
            assert!(refused["events"].to_string().contains("PROXY protocol v1 header"), "{refused:#}");
        } else {
            assert_eq!(ip_of(&refused["client"]), "127.0.0.22", "{refused:#}");
        }
        assert!(refused["reason"].as_str().unwrap().contains("proxy_protocol_networks"), "{tier}: {refused:#}");
        let checks = from(&all, "127.0.0.23");
        assert!(checks.len() >= 2, "{tier}: {} health checks seen: {all:#?}", checks.len());
        for h in checks {
            assert_eq!(h["verdict"], "ok", "{tier}: {h:#}");
            assert_eq!(h["user"], "hapcheck", "{tier}: {h:#}");
            assert!(h["phases_ms"]["to_login"].is_number(), "{tier}: no login phase: {h:#}");
            assert!(h.get("via").is_none(), "{tier}: {h:#}");
        }
        // Checks with a PROXY v2 header (check-send-proxy): a LOCAL header naming no client,
        // alone in the segment that completes the TCP handshake; the login after the greeting.
        let checks = from(&all, "127.0.0.24");
        assert!(checks.len() >= 2, "{tier}: {} health checks with a header seen: {all:#?}", checks.len());
        for h in checks {
            assert_eq!((&h["verdict"], &h["user"]), (&Value::from("ok"), &Value::from("hapcheck")), "{tier}: {h:#}");
            assert!(h["events"].to_string().contains("PROXY protocol v2 header naming no client"), "{tier}: {h:#}");
            assert!(h.get("via").is_none(), "{tier}: {h:#}");
        }
    }
}
