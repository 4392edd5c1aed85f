//! The handshake scenarios against a real MariaDB (connect_timeout=2) with real
//! clients (the `mariadb` CLI, PyMySQL, TLS) and raw-socket clients for the faults.
//! One server and one tracer for all of them; each scenario's handshake is found in
//! the JSON by its client port, user, database, driver attribute or connection id.
use std::{
    io::{Read, Write},
    net::TcpStream,
    process::Command,
    thread,
    time::Duration,
};

use handshake_trace_tests::*;
use serde_json::Value;

fn by_port(all: &[Value], port: u16) -> &Value {
    all.iter()
        .find(|h| h["client"] == format!("127.0.0.1:{port}"))
        .unwrap_or_else(|| panic!("no handshake from port {port}"))
}

fn one<'a>(all: &'a [Value], what: &str, f: impl Fn(&Value) -> bool) -> &'a Value {
    let found: Vec<&Value> = all.iter().filter(|h| f(h)).collect();
    assert_eq!(found.len(), 1, "expected one handshake: {what}; found {}: {found:#?}", found.len());
    found[0]
}

fn assert_verdict(h: &Value, verdict: &str) {
    assert_eq!(h["verdict"], verdict, "{h:#}");
}

/// After the server gave up: the client's next read fails the way users see it.
fn read_after_server_gave_up(s: &mut TcpStream) -> std::io::ErrorKind {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 64];
    match s.read(&mut buf) {
        Ok(0) => std::io::ErrorKind::UnexpectedEof,
        Ok(_) => panic!("the server answered a client it should have dropped"),
        Err(e) => e.kind(),
    }
}

#[test]
fn every_handshake_scenario_gets_its_verdict_and_aborted_connects_agrees() {
    let Some(bin) = ready("every_handshake_scenario_gets_its_verdict_and_aborted_connects_agrees") else { return };
    let db = mariadb_with_tls_account(None);
    // An account whose plugin differs from the greeting's: the server sends an AuthSwitchRequest.
    db.sql("INSTALL SONAME 'auth_ed25519'; CREATE USER 'ed'@'%' IDENTIFIED VIA ed25519 USING PASSWORD('ed-pw'); CREATE USER 'ed'@'localhost' IDENTIFIED VIA ed25519 USING PASSWORD('ed-pw')")
        .unwrap();
    let aborted_before = db.status("Aborted_connects").unwrap();
    let port = db.port().to_string();
    // --port keeps the harness's own Unix-socket logins out.
    let tracer = Tracer::start(&bin, &["watch", "--capture", "syscalls", "-p", &db.pid().to_string(), "-j", "--port", &port]);
    // The same trace for people, from a second tracer.
    let text_tracer = Tracer::start(&bin, &["watch", "--capture", "syscalls", "-p", &db.pid().to_string(), "--port", &port]);

    // Real clients. The MariaDB CLI uses TLS whenever the server offers it: --skip-ssl
    // keeps the plain scenarios readable.
    let ok = db.client(LAB_USER, LAB_PASSWORD, &["--skip-ssl", "-e", "SELECT CONNECTION_ID()"]).unwrap();
    assert!(ok.status.success(), "{}", String::from_utf8_lossy(&ok.stderr));
    let cli_conn_id: u64 = String::from_utf8_lossy(&ok.stdout).trim().parse().unwrap();
    let denied = db.client(LAB_USER, "wrong-password", &["--skip-ssl", "-e", "SELECT 1"]).unwrap();
    assert!(String::from_utf8_lossy(&denied.stderr).contains("ERROR 1045"));
    let nodb = db.client(LAB_USER, LAB_PASSWORD, &["--skip-ssl", "-D", "no_such_db", "-e", "SELECT 1"]).unwrap();
    assert!(String::from_utf8_lossy(&nodb.stderr).contains("ERROR 1049"));
    let ed = db.client("ed", "ed-pw", &["--skip-ssl", "-e", "SELECT 1"]).unwrap();
    assert!(ed.status.success(), "ed25519 login: {}", String::from_utf8_lossy(&ed.stderr));
    let driver = Command::new("/usr/bin/python3")
        .arg("-c")
        .arg(format!(
            "import pymysql; c = pymysql.connect(host='127.0.0.1', port={port}, user='{LAB_USER}', password='{LAB_PASSWORD}', program_name='ht-driver'); print(c.thread_id()); c.close()"
        ))
        .output()
        .unwrap();
    assert!(driver.status.success(), "PyMySQL: {}", String::from_utf8_lossy(&driver.stderr));
    let driver_conn_id: u64 = String::from_utf8_lossy(&driver.stdout).trim().parse().unwrap();
    let tls = db.client("tls_lab", "tls-pw", &["--ssl", "-e", "SELECT 1"]).unwrap();
    assert!(tls.status.success(), "TLS login: {}", String::from_utf8_lossy(&tls.stderr));
    let tls_denied = db.client("tls_lab", "wrong-password", &["--ssl", "-e", "SELECT 1"]).unwrap();
    let tls_denied_said = String::from_utf8_lossy(&tls_denied.stderr).trim().to_string();
    assert!(tls_denied_said.starts_with("ERROR 1045"), "TLS wrong password: {tls_denied_said}");

    // Raw clients for the faults, at once (the slow ones overlap).
    let silent = raw_client(&db, |s| {
        thread::sleep(Duration::from_millis(2600));
        let kind = read_after_server_gave_up(s);
        assert_eq!(kind, std::io::ErrorKind::ConnectionReset, "the client should see the server's RST");
    });
    let late = raw_client(&db, |s| {
        // 2 s past the server's timeout: at 1 s past it, a loaded machine (load average
        // 17 on 2 cores) once let the login in before the server gave up.
        thread::sleep(Duration::from_secs(4));
        // The RST already arrived: the write reports it (or, if the write got through, the read does).
        let kind = match s.write_all(&login_packet()) {
            Err(e) => e.kind(),
            Ok(()) => read_after_server_gave_up(s),
        };
        assert!(matches!(kind, std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::BrokenPipe), "{kind:?}");
    });
    // Port checks: connect, read the greeting, leave without a byte.
    let closes = raw_client(&db, |_| {});
    let resets = raw_client(&db, |s| set_linger0(s));
    // Half a login, then a close: a real failure, no port check.
    let half_login = raw_client(&db, |s| s.write_all(&login_packet()[..20]).unwrap());
    let garbage = raw_client(&db, |s| {
        s.write_all(&[5, 0, 0, 1, 1, 2, 3, 4, 5]).unwrap();
        let mut buf = [0u8; 128];
        let n = s.read(&mut buf).unwrap();
        assert!(String::from_utf8_lossy(&buf[..n]).contains("Bad handshake"));
    });
    let http = raw_client(&db, |s| {
        s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut buf = [0u8; 128];
        let _ = s.read(&mut buf);
    });
    // An SSLRequest, then nothing: the server waits for the ClientHello in vain.
    let tls_stall = raw_client(&db, |s| {
        s.write_all(&ssl_request_packet()).unwrap();
        thread::sleep(Duration::from_millis(2600));
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 128];
        let n = s.read(&mut buf).unwrap_or(0);
        assert!(String::from_utf8_lossy(&buf[..n]).contains("Bad handshake"), "{:?}", &buf[..n]);
    });
    let ports: Vec<u16> =
        [silent, late, closes, resets, half_login, garbage, http, tls_stall].into_iter().map(|t| t.join().unwrap()).collect();
    let [silent, late, closes, resets, half_login, garbage, http, tls_stall] = ports[..] else { unreachable!() };

    // The held ones time out.
    let refused = max_connections_refusal(&db, Duration::from_millis(2600));
    // Compare with Aborted_connects only once the server has finished every handshake
    // (the only connection left is the status query's own).
    assert!(
        eventually(Duration::from_secs(15), || db.status("Threads_connected").is_ok_and(|n| n <= 1)),
        "the server still has connections in progress"
    );
    thread::sleep(Duration::from_millis(300));

    let out = tracer.stop();
    assert_eq!(out.code, Some(0), "{}", out.stderr_text());
    let all = out.json();
    let text = text_tracer.stop();
    let timeline = text.stdout.join("\n");
    // The whole text trace, for `--nocapture` readers (a failure prints it anyway).
    eprintln!("{timeline}");
    for words in [
        "SERVER_TIMEOUT",
        "why: the server waited",
        "for the login packet (poll, timeout 2000 ms), gave up and closed with a reset (SO_LINGER 0), sending no error",
        "non-blocking recvfrom of the login header (4 bytes) → EAGAIN (nothing to read yet)",
        "poll(fd ",
        ", 2000 ms) → timed out after 20",
        "setsockopt(SO_LINGER {on, 0 s}): close will reset the connection (RST)",
        "SO_LINGER 0 + close → RST, no error packet sent",
        "the client most likely reported: ERROR 2013 (HY000): Lost connection to server at 'reading authorization packet', system error: 104",
        "AUTH_FAILED",
        "ERR 1045 (ER_ACCESS_DENIED_ERROR) [28000]",
        "greeting: protocol 10, server 5.5.5-10.11",
    ] {
        assert!(timeline.contains(words), "text output lacks {words:?}:\n{timeline}");
    }
    let summary = text.stderr_text();
    assert!(summary.contains("Summary: ") && summary.contains("server_timeout 14"), "{summary}");
    assert!(summary.contains("client_closed 2 (1 port check)") && summary.contains("client_reset 1 (1 port check)"), "{summary}");
    // A port check is one line (folded by default), never a timeline.
    let port_check = |v: &str| timeline.lines().any(|l| l.split_whitespace().nth(1) == Some(v) && l.contains("  port check ("));
    assert!(port_check("client_closed") && port_check("client_reset"), "{timeline}");
    assert!(summary.contains("accept → greeting") && summary.contains("p99"), "{summary}");
    // Secrets never shown: the lab password in no form.
    assert!(!timeline.contains(LAB_PASSWORD) && !out.stdout.join("").contains(LAB_PASSWORD));

    let h = one(&all, "CLI login", |h| h["connection_id"] == cli_conn_id);
    assert_verdict(h, "ok");
    assert!(h["blame"].is_null(), "no blame for a login: {h:#}");
    assert_eq!(h["user"], LAB_USER, "{h:#}");
    assert!(h["server_version"].as_str().unwrap().contains("MariaDB"), "{h:#}");
    assert!(h["phases_ms"]["total"].as_f64().unwrap() > 0.0);

    let h = one(&all, "wrong password", |h| h["verdict"] == "auth_failed" && h["tls"] == false);
    assert_eq!(h["error"]["code"], 1045);
    assert_eq!(h["client_error"], String::from_utf8_lossy(&denied.stderr).trim());
    assert_blame(h, "client", "client_refused");

    let h = one(&all, "unknown database", |h| h["database"] == "no_such_db");
    assert_verdict(h, "server_error");
    assert_eq!(h["error"]["code"], 1049);
    assert_eq!(h["error"]["name"], "ER_BAD_DB_ERROR");
    assert_blame(h, "client", "client_refused");

    let h = one(&all, "ed25519 login", |h| h["user"] == "ed");
    assert_verdict(h, "ok");
    assert_eq!(h["auth_switch"], "client_ed25519", "{h:#}");
    let texts: Vec<&str> = h["events"].as_array().unwrap().iter().map(|e| e["text"].as_str().unwrap()).collect();
    assert!(texts.iter().any(|t| t.contains("auth switch to client_ed25519")), "{texts:#?}");
    assert!(texts.iter().any(|t| t.contains("auth data, 64 bytes")), "{texts:#?}");

    let h = one(&all, "PyMySQL", |h| h["client_attrs"]["_client_name"] == "pymysql");
    assert_verdict(h, "ok");
    assert_eq!(h["connection_id"], driver_conn_id);
    assert_eq!(h["client_attrs"]["program_name"], "ht-driver");

    let h = one(&all, "TLS login", |h| h["tls"] == true && h["verdict"] == "ok");
    assert!(h["reason"].as_str().unwrap().contains("wait timeout"), "{h:#}");
    assert!(h["user"].is_null(), "the login is encrypted: {h:#}");
    assert!(h["phases_ms"]["tls"].as_f64().is_some_and(|t| t > 0.0), "ClientHello to application data: {h:#}");

    // A wrong password inside TLS: the ERR is encrypted; inferred, and never predicted as a 2013.
    let h = one(&all, "TLS wrong password", |h| h["tls"] == true && h["verdict"] == "auth_failed");
    assert!(h["reason"].as_str().unwrap().starts_with("TLS (inferred)"), "{h:#}");
    let predicted = h["client_error"].as_str().unwrap();
    assert!(predicted.starts_with("an ERROR from the server") && !predicted.contains("2013"), "{predicted} vs {tls_denied_said}");
    assert_blame(h, "client", "client_refused");

    // The TLS stall: a timeout waiting for the ClientHello; the client got the plaintext ERR 1043.
    let h = by_port(&all, tls_stall);
    assert_verdict(h, "server_timeout");
    assert_eq!(h["wait"]["waiting_for"], "the TLS ClientHello (after the client's SSLRequest)", "{h:#}");
    assert_eq!(h["wait"]["timeout_ms"], 2000, "{h:#}");
    assert_eq!(h["client_error"], "ERROR 1043 (08S01): Bad handshake", "{h:#}");
    // A client on this host whose socket retransmitted nothing: it sent no ClientHello.
    assert_blame(h, "client", "client_stalled");

    for p in [silent, late] {
        let h = by_port(&all, p);
        assert_verdict(h, "server_timeout");
        assert_eq!(h["wait"]["mechanism"], "poll");
        assert_eq!(h["wait"]["timeout_ms"], 2000);
        let waited = h["wait"]["waited_ms"].as_f64().unwrap();
        assert!((1990.0..2200.0).contains(&waited), "waited {waited} ms for a 2000 ms timeout");
        assert!(h["client_error"].as_str().unwrap().contains("2013"), "{h:#}");
        assert_blame(h, "client", "client_stalled");
        let evidence: Vec<&str> = h["blame"]["evidence"].as_array().unwrap().iter().map(|e| e.as_str().unwrap()).collect();
        assert!(evidence[0].starts_with("greeting sent at +") && evidence[0].ends_with("never retransmitted (acknowledged)"), "{evidence:?}");
        assert!(evidence[2].starts_with("the client sent nothing for 20"), "{evidence:?}");
    }
    for (p, verdict) in [(closes, "client_closed"), (resets, "client_reset")] {
        let h = by_port(&all, p);
        assert_verdict(h, verdict);
        assert_eq!(h["probe"], "port_check", "a port check: {h:#}");
        assert_blame(h, "client", "port_check");
    }
    let h = by_port(&all, half_login);
    assert_verdict(h, "client_closed");
    assert!(h["probe"].is_null(), "half a login is no port check: {h:#}");
    assert_blame(h, "client", "client_left");
    let h = by_port(&all, garbage);
    assert_verdict(h, "server_error");
    assert_eq!(h["error"]["code"], 1043);
    assert_blame(h, "client", "client_refused");
    let h = by_port(&all, http);
    assert_verdict(h, "server_error");
    assert_blame(h, "client", "client_refused");
    let h = by_port(&all, refused);
    assert_verdict(h, "server_error");
    assert_eq!(h["error"]["code"], 1040);
    // Past max_connections + 1 (the extra connection MariaDB keeps for SUPER), the
    // server refuses before greeting (the test below shows the one before it).
    assert!(h["connection_id"].is_null(), "ERR 1040 comes instead of the greeting: {h:#}");
    assert_blame(h, "server", "server_could_not_serve");
    // The summary counts every failure by whose side it is on (probes apart: not failures).
    let blamed = |party: &str| all.iter().filter(|h| h["blame"]["party"] == party && h["probe"].is_null()).count();
    let counts: Vec<String> = ["client", "network", "server", "unknown"].iter().filter(|p| blamed(p) > 0).map(|p| format!("{p} {}", blamed(p))).collect();
    assert!(summary.contains(&format!("blame of the failures: {}", counts.join(", "))), "{counts:?} vs {summary}");

    // The server's own count of failed handshakes agrees with ours. Asked until it does
    // (a few seconds at most): a handler thread the machine's load delayed may count its
    // failure after the tracer has shown it.
    let not_ok = all.iter().filter(|h| h["verdict"] != "ok").count() as u64;
    let mut aborted = 0;
    eventually(Duration::from_secs(5), || {
        aborted = db.status("Aborted_connects").unwrap() - aborted_before;
        aborted == not_ok
    });
    let listing: Vec<String> = all.iter().map(|h| format!("{} {} {} {}", h["client"], h["connection_id"], h["verdict"], h["reason"])).collect();
    let errors = db.sql("SHOW GLOBAL STATUS LIKE 'Connection_errors%'").unwrap_or_default();
    assert_eq!(
        not_ok,
        aborted,
        "non-ok verdicts vs Aborted_connects delta:\n{}\nserver's connection errors:\n{errors}",
        listing.join("\n")
    );
    let err = out.stderr_text();
    assert!(err.contains(" 0 lost "), "{err}");
}

/// What one real client's login through a drop rule came to: the tracers' JSON
/// handshakes, the text timeline and summary, the client's own error and the rise of
/// Aborted_connects. None when the test cannot run (`ready`/`skip` said why).
struct LossyLogin {
    all: Vec<Value>,
    timeline: String,
    summary: String,
    said: String,
    aborted: u64,
}

fn lossy_login(name: &str, drop_rule: fn(u16) -> DropData) -> Option<LossyLogin> {
    let bin = ready(name)?;
    if !Command::new("iptables-legacy").arg("-S").output().is_ok_and(|o| o.status.success()) {
        skip(name, "no iptables-legacy (`cargo xtask setup` installs iptables)");
        return None;
    }
    let db = MariaDb::start(&MariaDbOptions { connect_timeout: 2, ..Default::default() }).expect("start MariaDB");
    let aborted_before = db.status("Aborted_connects").unwrap();
    let port = db.port().to_string();
    let tracer = Tracer::start(&bin, &["watch", "--capture", "syscalls", "-p", &db.pid().to_string(), "-j", "--port", &port]);
    let text_tracer = Tracer::start(&bin, &["watch", "--capture", "syscalls", "-p", &db.pid().to_string(), "--port", &port]);
    let said = {
        let _drop = drop_rule(db.port());
        let client = db.client(LAB_USER, LAB_PASSWORD, &["--skip-ssl", "-e", "SELECT 1"]).unwrap();
        assert!(!client.status.success(), "the login went through the drop rule");
        String::from_utf8_lossy(&client.stderr).trim().to_string()
    };
    assert!(eventually(Duration::from_secs(10), || db.status("Threads_connected").is_ok_and(|n| n <= 1)));
    thread::sleep(Duration::from_millis(300));
    let all = tracer.stop().json();
    let aborted = db.status("Aborted_connects").unwrap() - aborted_before;
    let text = text_tracer.stop();
    eprintln!("{}", text.stdout.join("\n"));
    Some(LossyLogin { all, timeline: text.stdout.join("\n"), summary: text.stderr_text(), said, aborted })
}

/// The greeting dropped on its way to the client (loopback INPUT drops the server's
/// data segments): TCP retransmits it, the client never answers, the server times out.
/// The cause names packet loss toward the client with the retransmit count, and the
/// prediction is what the real client printed: it was still reading the greeting.
#[test]
fn a_greeting_lost_on_the_way_is_named_packet_loss_and_the_client_error_follows() {
    let Some(run) = lossy_login("a_greeting_lost_on_the_way_is_named_packet_loss_and_the_client_error_follows", DropData::from_server) else { return };
    let said = &run.said;
    assert!(said.contains("reading initial communication packet"), "the real client said: {said}");
    let h = one(&run.all, "the lost greeting", |h| h["verdict"] != "ok");
    assert_verdict(h, "server_timeout");
    let reason = h["reason"].as_str().unwrap();
    let retransmits = h["events"].as_array().unwrap().iter().filter(|e| e["text"] == "TCP retransmit").count();
    assert!(retransmits >= 2, "{h:#}");
    assert!(
        reason.starts_with(&format!("greeting retransmitted {retransmits} times, never acknowledged: packet loss toward the client")),
        "{reason}"
    );
    assert_eq!(h["client_error"], *said, "{h:#}");
    assert_blame(h, "network", "loss_toward_client");
    assert!(h["blame"]["evidence"][0] == format!("greeting retransmitted {retransmits} times, never acknowledged"), "{h:#}");
    assert_eq!(run.aborted, 1, "Aborted_connects agrees: one failed handshake");
    let timeline = &run.timeline;
    assert!(timeline.contains("why: greeting retransmitted") && timeline.contains("TCP retransmit"), "{timeline}");
    assert!(timeline.contains("blame: network — greeting retransmitted"), "{timeline}");
}

fn assert_blame(h: &Value, party: &str, finding: &str) {
    assert_eq!((h["blame"]["party"].as_str(), h["blame"]["finding"].as_str()), (Some(party), Some(finding)), "{h:#}");
}

/// The client's login dropped on its way to the server (loopback INPUT drops the
/// clients' data segments): the client's own socket retransmits it, the server waits
/// in vain and times out. The client is on this host, so its retransmits are seen:
/// packet loss toward the server, not a silent client; and the prediction is what the
/// real client printed: it had the greeting and was waiting for the reply to its login.
#[test]
fn a_login_lost_on_the_way_is_packet_loss_toward_the_server() {
    let Some(run) = lossy_login("a_login_lost_on_the_way_is_packet_loss_toward_the_server", DropData::to_server) else { return };
    let said = &run.said;
    assert!(said.contains("ERROR 2013") && said.contains("reading authorization packet"), "the real client said: {said}");
    let h = one(&run.all, "the lost login", |h| h["verdict"] != "ok");
    assert_verdict(h, "server_timeout");
    assert_eq!(h["wait"]["waiting_for"], "the login packet", "{h:#}");
    let client_retransmits = h["events"].as_array().unwrap().iter().filter(|e| e["text"].as_str().unwrap().starts_with("TCP retransmit by the client")).count();
    assert!(client_retransmits >= 2, "the client's own retransmits are seen: {h:#}");
    assert!(!h["reason"].as_str().unwrap().starts_with("greeting retransmitted"), "the greeting got through: {h:#}");
    assert_blame(h, "network", "loss_toward_server");
    let evidence = h["blame"]["evidence"][0].as_str().unwrap();
    assert_eq!(evidence, format!("the client's socket retransmitted {client_retransmits} times and none of it reached the server"), "{h:#}");
    assert_eq!(h["client_error"], *said, "{h:#}");
    assert_eq!(run.aborted, 1, "Aborted_connects agrees: one failed handshake");
    let timeline = &run.timeline;
    assert!(timeline.contains("blame: network — the client's socket retransmitted") && timeline.contains("packet loss toward the server"), "{timeline}");
    assert!(run.summary.contains("blame of the failures: network 1"), "{}", run.summary);
}

/// Read a greeting's first 5 bytes: 0xff at the fifth is an ERR instead of it.
fn greeted(s: &mut TcpStream) -> bool {
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut head = [0u8; 5];
    s.read_exact(&mut head).unwrap();
    head[4] != 0xff
}

/// ERR 1040 on MariaDB 10.11: with max_connections taken, the next client still gets
/// the greeting (the extra connection kept for SUPER) and is refused after its login;
/// only the one after that is refused instead of a greeting. Both are the server's.
#[test]
fn too_many_connections_is_refused_after_the_login_then_instead_of_the_greeting() {
    let name = "too_many_connections_is_refused_after_the_login_then_instead_of_the_greeting";
    let Some(bin) = ready(name) else { return };
    let db = MariaDb::start(&MariaDbOptions { connect_timeout: 5, ..Default::default() }).expect("start MariaDB");
    // The lab account has ALL (CONNECTION ADMIN among them), which max_connections does not bind.
    db.sql("CREATE USER 'plain'@'%' IDENTIFIED BY 'plain-pw'; CREATE USER 'plain'@'localhost' IDENTIFIED BY 'plain-pw'; SET GLOBAL max_connections = 10").unwrap();
    let port = db.port().to_string();
    let tracer = Tracer::start(&bin, &["watch", "-p", &db.pid().to_string(), "-j", "--port", &port]);
    let mut held = Vec::new();
    // 10 is MariaDB's least max_connections (smaller values are raised to it).
    for _ in 0..10 {
        let mut s = TcpStream::connect(db.addr()).unwrap();
        assert!(greeted(&mut s), "refused below max_connections");
        held.push(s);
    }
    let client = db.client("plain", "plain-pw", &["--skip-ssl", "-e", "SELECT 1"]).unwrap();
    let said = String::from_utf8_lossy(&client.stderr).trim().to_string();
    // MariaDB 10.11 says "ERROR 1040 (08004)" after the login, "(HY000)" instead of the greeting.
    assert!(said.starts_with("ERROR 1040"), "the real client said: {said}");
    // The real client's slot comes free again once the server has closed its connection
    // (after the client saw the ERR): one more takes it, the next is refused at once.
    let took_the_extra = eventually(Duration::from_secs(10), || {
        let mut s = TcpStream::connect(db.addr()).unwrap();
        let ok = greeted(&mut s);
        if ok {
            held.push(s);
        }
        ok
    });
    assert!(took_the_extra, "the extra connection never came free");
    let mut extra = TcpStream::connect(db.addr()).unwrap();
    let extra_port = extra.local_addr().unwrap().port();
    let refused_at_once = !greeted(&mut extra);
    drop(held);
    drop(extra);
    assert!(eventually(Duration::from_secs(10), || db.status("Threads_connected").is_ok_and(|n| n <= 1)));
    db.sql("SET GLOBAL max_connections = 151").unwrap();
    thread::sleep(Duration::from_millis(300));

    let all = tracer.stop().json();
    let h = one(&all, "the real client", |h| h["user"] == "plain");
    assert_verdict(h, "server_error");
    assert_eq!(h["error"]["code"], 1040, "{h:#}");
    assert!(h["connection_id"].is_number(), "greeted, then refused after the login: {h:#}");
    assert_eq!(h["client_error"], said, "{h:#}");
    assert_blame(h, "server", "server_could_not_serve");
    assert!(refused_at_once, "the next connection is refused without a greeting");
    let h = by_port(&all, extra_port);
    assert_verdict(h, "server_error");
    assert!(h["connection_id"].is_null(), "ERR 1040 instead of the greeting: {h:#}");
    assert_blame(h, "server", "server_could_not_serve");
}

/// A TLS ClientHello with no SSLRequest before it: MariaDB reads it as a packet header,
/// answers a plaintext ERR 1156 and resets. Decoded as what the server sent, live and
/// from the recording alike.
#[test]
fn a_client_hello_without_ssl_request_is_the_servers_err_1156() {
    let Some(bin) = ready("a_client_hello_without_ssl_request_is_the_servers_err_1156") else { return };
    let db = MariaDb::start(&MariaDbOptions::default()).expect("start MariaDB");
    let file = std::env::temp_dir().join(format!("ht-raw-hello-{}.htrace", std::process::id()));
    let _ = std::fs::remove_file(&file);
    let tracer = Tracer::start(&bin, &["record", "-o", file.to_str().unwrap(), "-j", "-p", &db.pid().to_string()]);
    let hello = raw_client(&db, |s| {
        // A TLS 1.2 ClientHello record (one cipher suite, no extensions).
        let mut body = vec![0x01, 0x00, 0x00, 0x29, 0x03, 0x03];
        body.extend([0x42; 32]);
        body.extend([0x00, 0x00, 0x02, 0x00, 0x2f, 0x01, 0x00]);
        let mut rec = vec![0x16, 0x03, 0x01, 0x00, body.len() as u8];
        rec.extend(body);
        s.write_all(&rec).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 128];
        let n = s.read(&mut buf).unwrap_or(0);
        assert!(String::from_utf8_lossy(&buf[..n]).contains("Got packets out of order"), "{:?}", &buf[..n]);
    })
    .join()
    .unwrap();
    thread::sleep(Duration::from_millis(500));
    let out = tracer.stop();
    assert_eq!(out.code, Some(0), "{}", out.stderr_text());
    let live = out.json();
    let replayed = Command::new(&bin).args(["analyze", "-j", file.to_str().unwrap()]).output().unwrap();
    let replayed: Vec<Value> = String::from_utf8_lossy(&replayed.stdout).lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    for all in [&live, &replayed] {
        let h = by_port(all, hello);
        assert_verdict(h, "server_error");
        assert_eq!(h["error"]["code"], 1156, "{h:#}");
        assert_eq!(h["client_error"], "ERROR 1156 (08S01): Got packets out of order", "{h:#}");
    }
    let _ = std::fs::remove_file(&file);
}
