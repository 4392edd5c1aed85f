//! The correlator and the judge on synthetic event sequences shaped like real MariaDB traces.
use super::*;
use crate::{
    events::{Errno, Signal, SyscallKind, SyscallResult, Tcp, TcpWhat},
    output::reason,
    testing::*,
    verdict::{Awaited, Cause, Verdict, WaitMechanism},
};

/// Why the verdict, in the words the output gives it.
fn reason_of(h: &Handshake) -> String {
    reason::reason(&h.judgement.as_ref().expect("judged").cause)
}

/// What the client most likely reported, in words.
fn client_error_of(h: &Handshake) -> Option<String> {
    h.judgement.as_ref().expect("judged").client_report.as_ref().map(reason::client_report)
}

/// SIGALRM for the handler thread, as signal_generate (in `tid`, the sender) or
/// signal_deliver (in the handler) reports it.
fn sigalrm(ts_ns: u64, tid: u32, delivered: bool) -> Event {
    let si_tkill = -6;
    Event::Signal(Signal {
        ts_ns,
        pid: PID,
        tid,
        conn_gen: GEN,
        fd: FD,
        signal: libc::SIGALRM as u32,
        target_tid: HANDLER,
        code: si_tkill,
        result: 0,
        delivered,
    })
}

fn run(events: &[Event]) -> (Vec<Handshake>, Correlator) {
    let mut c = Correlator::new(100);
    let mut done = Vec::new();
    for e in events {
        done.extend(c.push(e, Some("127.0.0.1:3399".parse().unwrap())));
    }
    (done, c)
}

fn only(events: &[Event]) -> Handshake {
    let (mut done, c) = run(events);
    assert_eq!(done.len(), 1, "{done:#?}");
    assert_eq!(c.open_count(), 0);
    done.remove(0)
}

#[test]
fn successful_login_split_across_header_and_body_reads() {
    let mut ev = prelude(GEN);
    let body = login_body(Some("shop"));
    let full = packet(1, &body);
    ev.push(io(GEN + 300_000, SyscallKind::Recvfrom, 4, 4, &full[..4]));
    // The body arrives in two reads.
    ev.push(io(GEN + 310_000, SyscallKind::Recvfrom, 10, body.len() as u64, &body[..10]));
    ev.push(io(GEN + 320_000, SyscallKind::Recvfrom, (body.len() - 10) as i64, (body.len() - 10) as u64, &body[10..]));
    let ok = ok_packet();
    ev.push(io(GEN + 900_000, SyscallKind::Sendto, ok.len() as i64, ok.len() as u64, &ok));
    ev.push(sys(GEN + 910_000, SyscallKind::TrackingEnd, 0, 0, [1, 0, 0, 0]));
    let h = only(&ev);
    assert_eq!(h.verdict(), Some(Verdict::Ok));
    let login = h.login.as_ref().expect("login decoded");
    assert_eq!(login.user, "lab");
    assert_eq!(login.database.as_deref(), Some("shop"));
    assert_eq!(h.greeting.as_ref().unwrap().connection_id, 9);
    assert_eq!(h.handler_tid, Some(HANDLER));
    let p = h.phases();
    assert_eq!(p.to_greeting_ns, Some(219_000));
    assert_eq!(p.to_login_ns, Some(320_000 - 219_000));
    assert_eq!(p.to_reply_ns, Some(900_000 - 320_000));
    assert_eq!(client_error_of(&h), None);
}

/// The real MariaDB 10.11 sequence with connect_timeout=2 and a silent client.
#[test]
fn poll_timeout_then_linger0_close_is_a_server_timeout() {
    let h = only(&poll_timeout_events());
    assert_eq!(h.verdict(), Some(Verdict::ServerTimeout), "{}", reason_of(&h));
    let t = h.judgement.as_ref().unwrap().timeout().unwrap();
    assert_eq!(t.mechanism, WaitMechanism::Poll);
    assert_eq!(t.timeout_ms, Some(2000));
    assert_eq!(t.waited_ns, 2_001_700_000);
    assert_eq!(t.waiting_for, crate::verdict::Awaited::Login);
    assert!(reason_of(&h).contains("poll, timeout 2000 ms"), "{}", reason_of(&h));
    assert!(reason_of(&h).contains("SO_LINGER 0"), "{}", reason_of(&h));
    let e = client_error_of(&h).unwrap();
    assert!(e.contains("2013") && e.contains("reading authorization packet") && e.ends_with("104"), "{e}");
}

/// The MySQL 5.0 way: EAGAIN, alarm, blocking read, SIGALRM from the alarm thread, EINTR.
#[test]
fn blocking_read_interrupted_by_sigalrm_is_an_alarm_eintr_timeout() {
    const ALARM_THREAD: u32 = 20760;
    let mut ev = prelude(GEN);
    ev.push(io(GEN + 231_000, SyscallKind::Read, -11, 4, &[]));
    ev.push(sys(GEN + 240_000, SyscallKind::Alarm, 0, 500, [5000, 0, 0, 0]));
    ev.push(sys(GEN + 250_000, SyscallKind::Fcntl, 0, 800, [4, 0o2, 0, 0]));
    // signal_generate runs in the sender (the alarm thread), signal_deliver in the handler.
    ev.push(sigalrm(GEN + 5_000_250_000, ALARM_THREAD, false));
    // The kernel first returns the restart code, the signal is handled, then EINTR.
    let mut restart = io(GEN + 5_000_260_000, SyscallKind::Read, -512, 4, &[]);
    if let Event::Io(i) = &mut restart {
        i.sys.duration_ns = 4_999_990_000;
    }
    ev.push(restart);
    ev.push(sigalrm(GEN + 5_000_270_000, HANDLER, true));
    let mut eintr = io(GEN + 5_000_280_000, SyscallKind::Read, -4, 4, &[]);
    if let Event::Io(i) = &mut eintr {
        i.sys.duration_ns = 10_000;
    }
    ev.push(eintr);
    ev.push(sys(GEN + 5_000_300_000, SyscallKind::Close, 0, 5000, [0; 4]));
    let h = only(&ev);
    assert_eq!(h.verdict(), Some(Verdict::ServerTimeout), "{}", reason_of(&h));
    let t = h.judgement.as_ref().unwrap().timeout().unwrap();
    assert_eq!(t.mechanism, WaitMechanism::AlarmEintr);
    assert_eq!(t.timeout_ms, Some(5000));
    assert_eq!(t.signal_from, Some(ALARM_THREAD));
    // No RST: a plain close, the client sees EOF.
    assert!(client_error_of(&h).as_deref().unwrap().ends_with("system error: 0"));
    // The restart code is a signal interruption in words, not an unknown error.
    let text: Vec<String> = h.steps.iter().map(|s| crate::output::describe_step(&h, s)).collect();
    assert!(text.iter().any(|t| t.contains("interrupted by signal, restarted (ERESTARTSYS)")), "{text:#?}");
    assert!(text.iter().any(|t| t.contains("SIGALRM sent by thread 20760 to thread 20766")), "{text:#?}");
    assert!(text.iter().any(|t| t.contains("blocking read of the login header (4 bytes) → EINTR")), "{text:#?}");
}

/// A login with a wrong password, answered with ERR 1045.
fn wrong_password_handshake() -> Handshake {
    only(&wrong_password_events())
}

#[test]
fn wrong_password_is_auth_failed_and_the_auth_response_never_shows() {
    let h = wrong_password_handshake();
    assert_eq!(h.verdict(), Some(Verdict::AuthFailed));
    assert_eq!(client_error_of(&h).as_deref(), Some("ERROR 1045 (28000): Access denied for user 'lab'@'localhost' (using password: YES)"));
    let clock = crate::support::clock::Clock::with_offset(0);
    let json = crate::output::handshake_json(&h, &clock).to_string();
    let text = crate::output::handshake_timeline(&h, &clock);
    assert!(json.contains("\"auth_response_len\":20"), "{json}");
    for shown in [&json, &text] {
        assert!(!shown.contains("a5a5") && !shown.contains("A5A5") && !shown.contains("165, 165"), "{shown}");
    }
}

#[test]
fn json_and_timeline_carry_each_step_in_words_escaped() {
    let mut h = wrong_password_handshake();
    // Words from the wire the JSON writer must escape as it streams them.
    let user = "a \"quoted\" user\\ on\ttwo\nlines";
    let login = PacketSeen::Login { user: user.into(), database: None, plugin: None, auth_response_len: 20 };
    h.step(GEN + 950_000, HANDLER, StepKind::Read {
        syscall: SyscallKind::Read,
        result: SyscallResult::Ok(90),
        requested: 90,
        nonblocking: true,
        duration_ns: 1000,
        packets: vec![login],
    });
    let clock = crate::support::clock::Clock::with_offset(0);
    let json: serde_json::Value = serde_json::from_str(&crate::output::handshake_json(&h, &clock).to_string()).unwrap();
    let timeline = crate::output::handshake_timeline(&h, &clock);
    let in_json: Vec<&str> = json["events"].as_array().unwrap().iter().map(|e| e["text"].as_str().unwrap()).collect();
    let words: Vec<String> = h.steps.iter().map(|s| crate::output::describe_step(&h, s)).collect();
    assert_eq!(in_json, words);
    assert!(words.iter().any(|w| w.contains("recvfrom of the login (83 bytes) → 83 bytes; login: user")), "{words:#?}");
    // Shown escaped, in the words and in the JSON text alike.
    let shown = r#"a "quoted" user\\ on\ttwo\nlines"#;
    assert!(words.last().unwrap().ends_with(&format!("login: user '{shown}', auth response 20 bytes")), "{words:#?}");
    for w in &words {
        assert!(timeline.contains(w.as_str()), "{w} missing from\n{timeline}");
    }
}

#[test]
fn err_instead_of_greeting_is_a_server_error() {
    let err = err_packet(0, 1040, "08004", "Too many connections");
    let ev = vec![
        accept_at(GEN, GEN),
        io(GEN + 100_000, SyscallKind::Write, err.len() as i64, err.len() as u64, &err),
        sys(GEN + 110_000, SyscallKind::TrackingEnd, 0, 0, [1, 0, 0, 0]),
    ];
    let h = only(&ev);
    assert_eq!(h.verdict(), Some(Verdict::ServerError));
    assert!(reason_of(&h).contains("1040 ER_CON_COUNT_ERROR"), "{}", reason_of(&h));
    assert!(h.greeting.is_none());
}

#[test]
fn client_fin_and_client_rst_are_told_apart() {
    let mut fin = prelude(GEN);
    fin.push(io(GEN + 300_000, SyscallKind::Recvfrom, 0, 4, &[]));
    fin.push(sys(GEN + 310_000, SyscallKind::Close, 0, 1000, [0; 4]));
    assert_eq!(only(&fin).verdict(), Some(Verdict::ClientClosed));

    let mut rst = prelude(GEN);
    rst.push(io(GEN + 300_000, SyscallKind::Recvfrom, -(Errno::ECONNRESET.0 as i64), 4, &[]));
    rst.push(sys(GEN + 310_000, SyscallKind::Close, 0, 1000, [0; 4]));
    assert_eq!(only(&rst).verdict(), Some(Verdict::ClientReset));

    let mut unknown = prelude(GEN);
    unknown.push(sys(GEN + 310_000, SyscallKind::Close, 0, 1000, [0; 4]));
    let h = only(&unknown);
    assert_eq!(h.verdict(), Some(Verdict::ServerClosed));
    assert!(client_error_of(&h).as_deref().unwrap().contains("reading authorization packet"));
}

/// The second connection on FD (generation `g2`) through to OK, its end riding on the OK's record.
fn ok_on_reused_fd(g2: u64) -> Vec<Event> {
    let g = greeting();
    let l = packet(1, &login_body(None));
    let mut ok = io_gen(g2 + 300_000, g2, SyscallKind::Sendto, 11, 11, &ok_packet());
    if let Event::Io(io) = &mut ok {
        io.tracking_end = Some(handshake_trace_common::end::REPLY);
    }
    vec![
        accept_at(g2, g2),
        io_gen(g2 + 100_000, g2, SyscallKind::Sendto, g.len() as i64, g.len() as u64, &g),
        io_gen(g2 + 200_000, g2, SyscallKind::Recvfrom, l.len() as i64, l.len() as u64, &l),
        ok,
    ]
}

#[test]
fn a_close_that_comes_after_the_fd_was_reused_still_ends_its_connection() {
    // close() frees the number before its own record is written: the next accept's
    // record on the same fd can come first.
    let g2 = GEN + MS;
    let mut ev = prelude(GEN);
    ev.push(io(GEN + 300_000, SyscallKind::Recvfrom, 0, 4, &[]));
    let mut second = ok_on_reused_fd(g2);
    ev.push(second.remove(0));
    ev.push(sys(g2 + 5_000, SyscallKind::Close, 0, 1000, [0; 4]));
    ev.extend(second);
    let (done, c) = run(&ev);
    assert_eq!(c.open_count(), 0);
    assert_eq!(done.len(), 2, "{done:#?}");
    assert_eq!((done[0].gen, done[0].verdict()), (GEN, Some(Verdict::ClientClosed)));
    assert!(done[0].steps.iter().any(|s| matches!(s.what, StepKind::Close { .. })));
    assert_eq!((done[1].gen, done[1].verdict()), (g2, Some(Verdict::Ok)));
    // The end that rode on the OK's record is a step of its own.
    assert!(matches!(done[1].steps.last().map(|s| &s.what), Some(StepKind::TrackingEnd { reason: 1 })));
}

#[test]
fn a_connection_whose_fd_was_reused_and_never_closed_ends_after_a_grace() {
    let g2 = GEN + MS;
    let mut ev = prelude(GEN);
    ev.extend(ok_on_reused_fd(g2));
    let (done, mut c) = run(&ev);
    // Within the grace it waits for its close.
    assert_eq!(done.iter().map(|h| h.gen).collect::<Vec<_>>(), vec![g2]);
    assert_eq!(c.open_count(), 1);
    // Any later event past the grace concludes it, as of the reuse.
    let later = g2 + FD_REUSE_GRACE_NS + 1;
    let done = c.push(&accept_at(later, later), None);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].gen, GEN);
    assert_eq!(done[0].verdict(), Some(Verdict::Incomplete));
    assert!(reason_of(&done[0]).contains("not seen to end"), "{}", reason_of(&done[0]));
    assert_eq!(done[0].end_ns, Some(g2));
}

#[test]
fn a_reused_fd_keeps_connections_apart_by_generation() {
    let g2 = GEN + 50 * MS;
    let mut ev = prelude(GEN);
    ev.push(sys(GEN + MS, SyscallKind::Close, 0, 1000, [0; 4]));
    ev.push(accept_at(g2, g2));
    // A late event of the first connection must not land on the second.
    ev.push(io_gen(g2 + 1000, GEN, SyscallKind::Recvfrom, 0, 4, &[]));
    let g = greeting();
    ev.push(io_gen(g2 + 100_000, g2, SyscallKind::Sendto, g.len() as i64, g.len() as u64, &g));
    let ok = {
        let l = packet(1, &login_body(None));
        vec![
            io_gen(g2 + 200_000, g2, SyscallKind::Recvfrom, l.len() as i64, l.len() as u64, &l),
            io_gen(g2 + 300_000, g2, SyscallKind::Sendto, 11, 11, &ok_packet()),
            sys_gen(g2 + 310_000, g2, SyscallKind::TrackingEnd, 0, 0, [1, 0, 0, 0]),
        ]
    };
    ev.extend(ok);
    let (done, c) = run(&ev);
    assert_eq!(done.len(), 2);
    assert_eq!(done[0].verdict(), Some(Verdict::ServerClosed));
    assert_eq!(done[1].verdict(), Some(Verdict::Ok));
    assert_eq!(done[1].gen, g2);
    assert_eq!(c.unmatched, 1);
}

#[test]
fn open_handshakes_end_incomplete_when_tracing_stops_or_the_process_exits() {
    let (done, mut c) = run(&prelude(GEN));
    assert!(done.is_empty());
    let rest = c.finish_all(GEN + 5 * MS);
    assert_eq!(rest.len(), 1);
    assert_eq!(rest[0].verdict(), Some(Verdict::Incomplete));
    assert!(reason_of(&rest[0]).contains("still open"));

    let mut ev = prelude(GEN);
    ev.push(Event::ProcessExit { ts_ns: GEN + MS, pid: PID });
    let h = only(&ev);
    assert_eq!(h.verdict(), Some(Verdict::Incomplete));
    assert!(h.steps.iter().any(|s| s.what == StepKind::ProcessExited { pid: PID }));
}

#[test]
fn tls_connection_is_timed_not_decoded() {
    let mut ev = prelude(GEN);
    let ssl = ssl_request();
    ev.push(io(GEN + 300_000, SyscallKind::Recvfrom, ssl.len() as i64, ssl.len() as u64, &ssl));
    let hello = [0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0xAA, 0xBB];
    ev.push(io(GEN + 400_000, SyscallKind::Read, 517, 517, &hello));
    ev.push(sys(GEN + 2 * MS, SyscallKind::TrackingEnd, 0, 0, [2, 0, 0, 0]));
    let h = only(&ev);
    assert!(h.tls);
    assert_eq!(h.verdict(), Some(Verdict::Ok));
    assert!(h.login.is_none());
    assert!(reason_of(&h).contains("past the handshake"), "{}", reason_of(&h));
    let text = crate::output::handshake_timeline(&h, &crate::support::clock::Clock::with_offset(0));
    assert!(text.contains("SSLRequest") && text.contains("517 bytes of TLS"), "{text}");
}

/// Inside TLS the OK is encrypted, but the server's wait timeout changes from
/// connect_timeout to wait_timeout once the login succeeded.
#[test]
fn tls_login_is_judged_by_the_servers_next_wait() {
    let tls_start = |ev: &mut Vec<Event>| {
        let ssl = ssl_request();
        ev.push(io(GEN + 300_000, SyscallKind::Recvfrom, ssl.len() as i64, ssl.len() as u64, &ssl));
        ev.push(io(GEN + 400_000, SyscallKind::Read, 5, 5, &[0x16, 0x03, 0x01, 0x02, 0x00]));
        ev.push(io(GEN + 410_000, SyscallKind::Read, 512, 512, &[1; 16]));
        ev.push(io(GEN + 500_000, SyscallKind::Write, 1404, 1404, &[0x16, 0x03, 0x03]));
        ev.push(sys(GEN + 600_000, SyscallKind::Poll, 1, 100_000, [1, 2000, 1, 1]));
        ev.push(io(GEN + 610_000, SyscallKind::Read, 5, 5, &[0x17, 0x03, 0x03, 0, 40]));
        ev.push(io(GEN + 620_000, SyscallKind::Read, 40, 40, &[2; 40]));
        ev.push(io(GEN + 700_000, SyscallKind::Write, 33, 33, &[0x17, 0x03, 0x03]));
    };
    let mut logged_in = prelude(GEN);
    tls_start(&mut logged_in);
    logged_in.push(sys(GEN + 800_000, SyscallKind::Poll, 1, 100_000, [1, 28_800_000, 1, 1]));
    logged_in.push(io(GEN + 810_000, SyscallKind::Read, 5, 5, &[0x17, 0x03, 0x03, 0, 20]));
    logged_in.push(sys(GEN + 900_000, SyscallKind::Close, 0, 1000, [0; 4]));
    let h = only(&logged_in);
    assert_eq!(h.verdict(), Some(Verdict::Ok), "{}", reason_of(&h));
    assert!(reason_of(&h).contains("wait timeout 28800000 ms instead of the handshake's 2000 ms"), "{}", reason_of(&h));

    // Refused inside TLS: the server writes (its ERR) and closes, no command-phase wait.
    let mut refused = prelude(GEN);
    tls_start(&mut refused);
    refused.push(sys(GEN + 900_000, SyscallKind::Close, 0, 1000, [0; 4]));
    let h = only(&refused);
    // Inferred, and the predicted client error agrees: an ERR, never a 2013.
    assert_eq!(h.verdict(), Some(Verdict::AuthFailed), "{}", reason_of(&h));
    assert!(reason_of(&h).starts_with("TLS (inferred)") && reason_of(&h).contains("encrypted reply"), "{}", reason_of(&h));
    let said = client_error_of(&h).unwrap();
    assert!(said.starts_with("an ERROR from the server") && !said.contains("2013"), "{said}");
    // The TLS phase: ClientHello to the first application data.
    assert_eq!(h.phases().tls_ns, Some(210_000));
}

/// A 32-byte SSLRequest (PROTOCOL_41 | SSL | SECURE_CONNECTION).
fn ssl_request() -> Vec<u8> {
    use crate::protocol::{CLIENT_PROTOCOL_41, CLIENT_SECURE_CONNECTION, CLIENT_SSL};
    packet(1, &crate::protocol::builders::ssl_request(CLIENT_PROTOCOL_41 | CLIENT_SSL | CLIENT_SECURE_CONNECTION, 1 << 24, 33, 0))
}

/// MariaDB 10.11 when a client sends an SSLRequest and then nothing: it polls for the
/// ClientHello, gives up, and sends a plaintext ERR 1043 before resetting.
#[test]
fn a_stalled_tls_start_is_a_timeout_waiting_for_the_client_hello_and_the_client_gets_err_1043() {
    let mut ev = prelude(GEN);
    let ssl = ssl_request();
    ev.push(io(GEN + 300_000, SyscallKind::Recvfrom, ssl.len() as i64, ssl.len() as u64, &ssl));
    ev.push(io(GEN + 310_000, SyscallKind::Recvfrom, -(Errno::EAGAIN.0 as i64), 5, &[]));
    ev.push(sys(GEN + 2_010_000_000, SyscallKind::Poll, 0, 2_000_000_000, [1, 2000, 1, 0]));
    ev.push(sys(GEN + 2_010_100_000, SyscallKind::Setsockopt, 0, 500, [1, 13 | (8 << 32), 1, 0]));
    let err = err_packet(2, 1043, "08S01", "Bad handshake");
    let mut reply = io(GEN + 2_010_200_000, SyscallKind::Write, err.len() as i64, err.len() as u64, &err);
    if let Event::Io(i) = &mut reply {
        i.tracking_end = Some(handshake_trace_common::end::REPLY);
    }
    ev.push(reply);
    let h = only(&ev);
    assert_eq!(h.verdict(), Some(Verdict::ServerTimeout), "{}", reason_of(&h));
    let wait = h.judgement.as_ref().unwrap().timeout().unwrap();
    assert_eq!(wait.waiting_for, crate::verdict::Awaited::TlsClientHello);
    assert_eq!(wait.timeout_ms, Some(2000));
    assert!(reason_of(&h).contains("for the TLS ClientHello"), "{}", reason_of(&h));
    assert!(reason_of(&h).ends_with("gave up, sent ERR 1043 ER_HANDSHAKE_ERROR and reset the connection (SO_LINGER 0)"), "{}", reason_of(&h));
    // What the client printed: the ERR it received, not a lost connection.
    assert_eq!(client_error_of(&h).as_deref(), Some("ERROR 1043 (08S01): Bad handshake"));
    let text = crate::output::handshake_timeline(&h, &crate::support::clock::Clock::with_offset(0));
    assert!(text.contains("ERR 1043 (ER_HANDSHAKE_ERROR) [08S01]: Bad handshake"), "{text}");
    // Blame's evidence: silent from the SSLRequest to the server's ERR (the handshake ends
    // at that ERR: the silence runs to it, not to a missing end).
    let silent = h.judgement.as_ref().unwrap().blame.evidence.iter().find_map(|e| match e {
        crate::verdict::Evidence::ClientSilent { ns, .. } => Some(*ns),
        _ => None,
    });
    assert_eq!(silent, Some(2_010_200_000 - 300_000), "{text}");
}

/// A TLS ClientHello with no SSLRequest before it: MariaDB 10.11 reads its first bytes as
/// a packet header, answers a plaintext ERR 1156 with seq 1 and closes (seen on a real
/// server, 2026-11-30: `21 00 00 01 ff 84 04 #08S01 Got packets out of order`).
#[test]
fn a_client_hello_without_ssl_request_gets_the_servers_plaintext_err_1156() {
    let mut ev = prelude(GEN);
    let mut hello = vec![0x16, 0x03, 0x01, 0x00, 0x2e, 0x01, 0x00, 0x00, 0x2a, 0x03, 0x03];
    hello.extend([7u8; 40]);
    ev.push(io(GEN + 300_000, SyscallKind::Recvfrom, hello.len() as i64, 16384, &hello));
    let err = err_packet(1, 1156, "08S01", "Got packets out of order");
    let mut reply = io(GEN + 400_000, SyscallKind::Write, err.len() as i64, err.len() as u64, &err);
    if let Event::Io(i) = &mut reply {
        i.tracking_end = Some(handshake_trace_common::end::REPLY);
    }
    ev.push(reply);
    let h = only(&ev);
    assert_eq!(h.verdict(), Some(Verdict::ServerError), "{}", reason_of(&h));
    assert!(reason_of(&h).contains("ERR 1156"), "{}", reason_of(&h));
    assert_eq!(client_error_of(&h).as_deref(), Some("ERROR 1156 (08S01): Got packets out of order"));
    let text = crate::output::handshake_timeline(&h, &crate::support::clock::Clock::with_offset(0));
    assert!(text.contains("Got packets out of order"), "{text}");
}

/// Bytes after an SSLRequest that are not TLS: the server answers ERR 1043 in plaintext.
#[test]
fn non_tls_bytes_after_an_ssl_request_get_the_servers_plaintext_err() {
    let mut ev = prelude(GEN);
    let ssl = ssl_request();
    ev.push(io(GEN + 300_000, SyscallKind::Recvfrom, ssl.len() as i64, ssl.len() as u64, &ssl));
    let junk = packet(2, b"hello");
    ev.push(io(GEN + 400_000, SyscallKind::Recvfrom, junk.len() as i64, junk.len() as u64, &junk));
    let err = err_packet(3, 1043, "08S01", "Bad handshake");
    ev.push(io(GEN + 500_000, SyscallKind::Write, err.len() as i64, err.len() as u64, &err));
    ev.push(sys(GEN + 510_000, SyscallKind::TrackingEnd, 0, 0, [1, 0, 0, 0]));
    let h = only(&ev);
    assert_eq!(h.verdict(), Some(Verdict::ServerError), "{}", reason_of(&h));
    assert!(reason_of(&h).contains("ERR 1043"), "{}", reason_of(&h));
    assert_eq!(h.phases().tls_ns, None);
}

#[test]
fn too_many_open_handshakes_are_bounded() {
    let mut c = Correlator::new(2);
    let mut done = Vec::new();
    for i in 0..3u64 {
        let mut a = match accept_at(GEN + i, GEN + i) {
            Event::Accept(a) => a,
            _ => unreachable!(),
        };
        a.result = SyscallResult::Ok(50 + i as i64);
        done.extend(c.push(&Event::Accept(a), None));
    }
    assert_eq!(c.open_count(), 2);
    assert_eq!(done.len(), 1);
    assert_eq!(done[0].verdict(), Some(Verdict::Incomplete));
    // Given up while open: not "still open when tracing stopped".
    assert_eq!(done[0].judgement.as_ref().unwrap().cause, Cause::NotSeenToEnd);
    let _ = Errno(0);
}


/// Issue 22 item 10: the socket tier announcing one connection twice (or two
/// connections of one generation) is not "too many handshakes open at once": the
/// open handshake goes on, with nothing dropped, and ends as its events say.
#[test]
fn a_connection_announced_twice_is_not_dropped_for_a_full_table() {
    let mut ev = vec![established_at(GEN), established_at(GEN)];
    let g = greeting();
    ev.push(sock_io(GEN + 200_000, GEN, SyscallKind::PacketOut, g.len() as i64, 0, &g, None));
    let login = packet(1, &login_body(None));
    ev.push(sock_io(GEN + 300_000, GEN, SyscallKind::PacketIn, login.len() as i64, 0, &login, None));
    let ok = ok_packet();
    ev.push(sock_io(GEN + 400_000, GEN, SyscallKind::PacketOut, ok.len() as i64, 0, &ok, Some(handshake_trace_common::end::REPLY)));
    let (done, c) = run(&ev);
    assert_eq!(done.len(), 1, "{done:#?}");
    let h = &done[0];
    assert!(!h.steps.iter().any(|s| s.what == StepKind::Dropped), "{:#?}", h.steps);
    assert_eq!(h.verdict(), Some(Verdict::Ok), "{}", reason_of(h));
    assert_eq!((c.evicted, c.duplicate_accepts, c.open_count()), (0, 1, 0));
}

/// Two connections with one key from different clients: their events cannot be told
/// apart, so the handshake may judge only what was seen for sure.
#[test]
fn two_clients_with_one_key_make_the_handshake_uncertain() {
    let mut other = established_at(GEN);
    if let Event::Accept(a) = &mut other {
        a.peer = Some("127.0.0.1:50000".parse().unwrap());
    }
    let ev = vec![established_at(GEN), other, sock_state(GEN + MS, GEN, 1, 7)];
    let (done, c) = run(&ev);
    assert_eq!(done.len(), 1, "{done:#?}");
    assert!(done[0].evidence.events_may_be_lost);
    assert_eq!(done[0].verdict(), Some(Verdict::Incomplete), "{}", reason_of(&done[0]));
    assert_eq!(c.evicted, 0);
}

#[test]
fn a_hostile_user_name_reaches_the_terminal_escaped() {
    use crate::protocol::{builders, CLIENT_PLUGIN_AUTH, CLIENT_PROTOCOL_41, CLIENT_SECURE_CONNECTION};
    // What an unauthenticated client can send as its user name.
    let user = "\x1b]0;PWNED\x07\x1b[1;31mEVIL\x1b[0m\rroot";
    let body = builders::login(&builders::LoginSpec {
        capabilities: CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH,
        max_packet: 1 << 24,
        charset: 33,
        extended_capabilities: 0,
        user,
        auth_response: &SECRET,
        database: "",
        auth_plugin: "mysql_native_password",
        attrs: &[],
    });
    let login = packet(1, &body);
    let mut ev = prelude(GEN);
    ev.push(io(GEN + 300_000, SyscallKind::Recvfrom, login.len() as i64, login.len() as u64, &login));
    let err = err_packet(2, 1045, "28000", "Access denied for user '\x1b[2J'@'localhost'");
    ev.push(io(GEN + 900_000, SyscallKind::Sendto, err.len() as i64, err.len() as u64, &err));
    ev.push(sys(GEN + 910_000, SyscallKind::TrackingEnd, 0, 0, [1, 0, 0, 0]));
    let h = only(&ev);
    let clock = crate::support::clock::Clock::with_offset(0);
    for shown in [crate::output::handshake_timeline(&h, &clock), crate::output::handshake_line(&h, &clock)] {
        assert!(!shown.chars().any(|c| c.is_control() && c != '\n'), "{shown:?}");
        assert!(shown.contains("\\x1b]0;PWNED\\x07"), "{shown}");
    }
    // JSON keeps the exact name (serde escapes it for JSON).
    let json: serde_json::Value = serde_json::from_str(&crate::output::handshake_json(&h, &clock).to_string()).unwrap();
    assert_eq!(json["user"], user);
}

/// SIGTERM to MariaDB: it shuts every connection down; the silent client's FIN comes after.
#[test]
fn a_server_shutting_connections_down_is_not_blamed_on_the_client() {
    let mut ev = prelude(GEN);
    ev.push(io(GEN + 300_000, SyscallKind::Recvfrom, -(Errno::EAGAIN.0 as i64), 4, &[]));
    ev.push(sys(GEN + 500 * MS, SyscallKind::Shutdown, 0, 1000, [2, 0, 0, 0]));
    ev.push(io(GEN + 501 * MS, SyscallKind::Recvfrom, 0, 4, &[]));
    ev.push(sys(GEN + 502 * MS, SyscallKind::Close, 0, 1000, [0; 4]));
    let h = only(&ev);
    assert_eq!(h.verdict(), Some(Verdict::ServerClosed), "{}", reason_of(&h));
    assert!(reason_of(&h).contains("shut the connection down (SHUT_RDWR)"), "{}", reason_of(&h));

    // A client that closed first, and a server that then shut down: the client's.
    let mut ev = prelude(GEN);
    ev.push(io(GEN + 300_000, SyscallKind::Recvfrom, 0, 4, &[]));
    ev.push(sys(GEN + 400_000, SyscallKind::Shutdown, 0, 1000, [2, 0, 0, 0]));
    ev.push(sys(GEN + 500_000, SyscallKind::Close, 0, 1000, [0; 4]));
    assert_eq!(only(&ev).verdict(), Some(Verdict::ClientClosed));
}

#[test]
fn a_server_that_exits_mid_handshake_is_said_so() {
    let mut ev = prelude(GEN);
    ev.push(Event::ProcessExit { ts_ns: GEN + MS, pid: PID });
    let h = only(&ev);
    assert_eq!(h.verdict(), Some(Verdict::Incomplete));
    assert_eq!(reason_of(&h), "the server process exited mid-handshake");
}

// The socket tier: the same pipeline fed packets, socket reads that moved nothing and
// TCP state changes, keyed by no fd.
mod socket_tier {
    use handshake_trace_common::{end, tcp_state};

    use super::*;

    const MSG_DONTWAIT: u64 = libc::MSG_DONTWAIT as u64;

    /// Established, greeting out, a non-blocking read that finds nothing.
    fn prelude(t0: u64) -> Vec<Event> {
        let g = greeting();
        vec![
            established_at(t0),
            sock_io(t0 + 50_000, t0, SyscallKind::PacketOut, g.len() as i64, 0, &g, None),
            sock_io(t0 + 60_000, t0, SyscallKind::SockRecv, -(Errno::EAGAIN.0 as i64), MSG_DONTWAIT, &[], None),
        ]
    }

    #[test]
    fn a_silent_client_is_a_server_timeout_without_an_invented_poll() {
        let mut ev = prelude(GEN);
        ev.push(sock_state(GEN + 2_002_060_000, GEN, tcp_state::ESTABLISHED, tcp_state::CLOSE));
        let h = only(&ev);
        assert!(h.socket_tier);
        assert_eq!(h.verdict(), Some(Verdict::ServerTimeout));
        let t = h.judgement.as_ref().unwrap().timeout().unwrap().clone();
        assert_eq!(t.mechanism, WaitMechanism::NotSeen { read_error: Errno::EAGAIN });
        assert_eq!(t.timeout_ms, None, "the socket tier sees no timeout: none may be shown");
        assert_eq!(t.waited_ns, 2_002_000_000);
        let why = reason_of(&h);
        assert!(why.contains("found nothing (EAGAIN)") && why.contains("2002.0 ms later the server closed with a reset"), "{why}");
        assert!(why.contains("not seen by the socket capture tier"), "{why}");
        assert!(client_error_of(&h).unwrap().ends_with("'reading authorization packet', system error: 104"));
        // No accepting thread seen: the handler, but no handoff step.
        assert_eq!(h.handler_tid, Some(HANDLER));
        assert!(!h.steps.iter().any(|s| matches!(s.what, StepKind::Handoff { .. })), "{:#?}", h.steps);
    }

    #[test]
    fn a_connection_whose_packets_are_unseen_is_incomplete_whatever_else_is_seen() {
        // Its socket was outside the packet programs' cgroup: no packet, then what looks
        // like a silent client given up on (EAGAIN, 2 s, reset).
        let mut ev = vec![established_at(GEN)];
        if let Event::Accept(a) = &mut ev[0] {
            a.packets_unseen = true;
        }
        ev.push(sock_io(GEN + 60_000, GEN, SyscallKind::SockRecv, -(Errno::EAGAIN.0 as i64), MSG_DONTWAIT, &[], None));
        ev.push(sock_state(GEN + 2_002_060_000, GEN, tcp_state::ESTABLISHED, tcp_state::CLOSE));
        let h = only(&ev);
        assert_eq!(h.verdict(), Some(Verdict::Incomplete));
        assert_eq!(h.judgement.as_ref().unwrap().cause, Cause::PacketsUnseen);
        assert!(reason_of(&h).contains("outside the cgroup the packet programs watched"), "{}", reason_of(&h));
    }

    #[test]
    fn a_blocking_read_interrupted_then_a_fin_is_a_timeout_without_reset() {
        let g = greeting();
        let ev = [
            established_at(GEN),
            sock_io(GEN + 50_000, GEN, SyscallKind::PacketOut, g.len() as i64, 0, &g, None),
            // The alarm thread's SIGALRM, seen for the thread that last read the socket.
            Event::Signal(Signal {
                ts_ns: GEN + 9_999_990_000,
                pid: PID,
                tid: MAIN,
                conn_gen: GEN,
                fd: handshake_trace_common::NO_FD,
                signal: libc::SIGALRM as u32,
                target_tid: HANDLER,
                code: -6,
                result: 0,
                delivered: false,
            }),
            sock_io(GEN + 10_000_000_000, GEN, SyscallKind::SockRecv, -512, 0, &[], None),
            sock_state(GEN + 10_000_100_000, GEN, tcp_state::ESTABLISHED, tcp_state::FIN_WAIT1),
        ];
        let h = only(&ev);
        assert_eq!(h.verdict(), Some(Verdict::ServerTimeout));
        assert!(matches!(h.judgement.as_ref().unwrap().cause, Cause::ServerTimedOut { reset: false, .. }));
        assert_eq!(h.judgement.as_ref().unwrap().timeout().unwrap().signal_from, Some(MAIN));
    }

    #[test]
    fn wrong_password_is_auth_failed_from_the_packets() {
        let mut ev = prelude(GEN);
        let login = packet(1, &login_body(None));
        let err = err_packet(2, 1045, "28000", "Access denied for user 'lab'@'localhost' (using password: YES)");
        ev.push(sock_io(GEN + 300_000, GEN, SyscallKind::PacketIn, login.len() as i64, 0, &login, None));
        ev.push(sock_io(GEN + 400_000, GEN, SyscallKind::PacketOut, err.len() as i64, 0, &err, Some(end::REPLY)));
        let h = only(&ev);
        assert_eq!(h.verdict(), Some(Verdict::AuthFailed));
        assert_eq!(h.login.as_ref().map(|l| l.user.as_str()), Some("lab"));
        assert_eq!(h.phases().to_reply_ns, Some(100_000));
    }

    #[test]
    fn a_login_that_came_with_the_tcp_handshake_is_decoded_with_a_zero_login_phase() {
        // HAProxy's mysql-check: its login (and COM_QUIT) completes the TCP handshake, so
        // the kernel sends it with the connection's start, before the greeting.
        let (g, login) = (greeting(), packet(1, &login_body(None)));
        let ev = [
            established_at(GEN),
            sock_io(GEN, GEN, SyscallKind::PacketIn, login.len() as i64, 0, &login, None),
            sock_io(GEN + 50_000, GEN, SyscallKind::PacketOut, g.len() as i64, 0, &g, None),
            sock_io(GEN + 90_000, GEN, SyscallKind::PacketOut, 11, 0, &ok_packet(), Some(end::REPLY)),
        ];
        let h = only(&ev);
        assert_eq!(h.verdict(), Some(Verdict::Ok));
        assert_eq!(h.login.as_ref().map(|l| l.user.as_str()), Some("lab"));
        let p = h.phases();
        assert_eq!((p.to_greeting_ns, p.to_login_ns), (Some(50_000), Some(0)), "the login waited for nothing");
    }

    #[test]
    fn a_login_is_ok_and_a_client_fin_is_client_closed() {
        let mut ev = prelude(GEN);
        let login = packet(1, &login_body(Some("shop")));
        ev.push(sock_io(GEN + 300_000, GEN, SyscallKind::PacketIn, login.len() as i64, 0, &login, None));
        ev.push(sock_io(GEN + 400_000, GEN, SyscallKind::PacketOut, 11, 0, &ok_packet(), Some(end::REPLY)));
        let second = GEN + 1_000_000;
        ev.extend(prelude(second));
        ev.push(sock_state(second + 70_000, second, tcp_state::ESTABLISHED, tcp_state::CLOSE_WAIT));
        ev.push(sock_io(second + 80_000, second, SyscallKind::SockRecv, 0, MSG_DONTWAIT, &[], None));
        ev.push(sock_state(second + 90_000, second, tcp_state::CLOSE_WAIT, tcp_state::LAST_ACK));
        let (done, c) = run(&ev);
        assert_eq!(c.open_count(), 0);
        let verdicts: Vec<_> = done.iter().map(|h| h.verdict()).collect();
        assert_eq!(verdicts, [Some(Verdict::Ok), Some(Verdict::ClientClosed)], "{done:#?}");
        // Two connections with no fd never count as one fd reused.
        assert!(!done.iter().any(|h| matches!(h.judgement.as_ref().unwrap().cause, Cause::NotSeenToEnd)));
    }

    /// An SSLRequest, then nothing: the server reads nothing more, and 2 s later sends a
    /// plaintext ERR 1043 as it gives up. As the syscall tier says it: a timeout.
    fn tls_stall(err_after_ns: u64) -> Handshake {
        let mut ev = prelude(GEN);
        let ssl = ssl_request();
        ev.push(sock_io(GEN + 100_000, GEN, SyscallKind::PacketIn, ssl.len() as i64, 0, &ssl, None));
        ev.push(sock_io(GEN + 200_000, GEN, SyscallKind::SockRecv, -(Errno::EAGAIN.0 as i64), MSG_DONTWAIT, &[], None));
        let err = err_packet(2, 1043, "08S01", "Bad handshake");
        ev.push(sock_io(GEN + 200_000 + err_after_ns, GEN, SyscallKind::PacketOut, err.len() as i64, 0, &err, Some(end::REPLY)));
        only(&ev)
    }

    #[test]
    fn a_tls_stall_given_up_with_err_1043_is_a_server_timeout() {
        let h = tls_stall(2_001_500_000);
        assert_eq!(h.verdict(), Some(Verdict::ServerTimeout), "{}", reason_of(&h));
        let cause = &h.judgement.as_ref().unwrap().cause;
        assert!(matches!(cause, Cause::ServerTimedOut { then_err: Some(1043), .. }), "{cause:?}");
        let t = h.judgement.as_ref().unwrap().timeout().unwrap().clone();
        assert_eq!((t.waiting_for, t.waited_ns, t.timeout_ms), (Awaited::TlsClientHello, 2_001_500_000, None));
        assert_eq!(client_error_of(&h).as_deref(), Some("ERROR 1043 (08S01): Bad handshake"));
    }

    #[test]
    fn an_err_sooner_than_any_connect_timeout_after_a_read_that_found_nothing_is_the_servers_error() {
        let h = tls_stall(5_000_000);
        assert_eq!(h.verdict(), Some(Verdict::ServerError), "{}", reason_of(&h));
        // Just under MariaDB's least connect_timeout (2 s): no timeout either.
        let h = tls_stall(1_900_000_000);
        assert_eq!(h.verdict(), Some(Verdict::ServerError), "{}", reason_of(&h));
    }

    #[test]
    fn a_client_reset_after_the_eagain_is_not_a_server_timeout() {
        let mut ev = prelude(GEN);
        ev.push(Event::Tcp(Tcp { ts_ns: GEN + 900_000, pid: PID, conn_gen: GEN, fd: handshake_trace_common::NO_FD, what: TcpWhat::ReceiveReset }));
        ev.push(sock_state(GEN + 900_100, GEN, tcp_state::ESTABLISHED, tcp_state::CLOSE));
        let h = only(&ev);
        assert_eq!(h.verdict(), Some(Verdict::ClientReset));
        assert!(!h.evidence.rst_sent, "a close after the client's reset is not the server's abort");
    }
}

fn is_probe(h: &Handshake) -> bool {
    h.judgement.as_ref().expect("judged").probe == Some(crate::verdict::Probe::PortCheck)
}

/// Port checks: connect, then close or reset before sending a byte (after the greeting,
/// or before it): client_closed/client_reset as the server counts them, marked as probes.
#[test]
fn a_client_that_leaves_without_sending_a_byte_is_a_port_check() {
    let mut fin = prelude(GEN);
    fin.push(io(GEN + 300_000, SyscallKind::Recvfrom, 0, 4, &[]));
    fin.push(sys(GEN + 310_000, SyscallKind::Close, 0, 1000, [0; 4]));
    let h = only(&fin);
    assert_eq!(h.verdict(), Some(Verdict::ClientClosed));
    assert!(is_probe(&h));

    let mut rst = prelude(GEN);
    rst.push(io(GEN + 300_000, SyscallKind::Recvfrom, -(Errno::ECONNRESET.0 as i64), 4, &[]));
    rst.push(sys(GEN + 310_000, SyscallKind::Close, 0, 1000, [0; 4]));
    let h = only(&rst);
    assert_eq!(h.verdict(), Some(Verdict::ClientReset));
    assert!(is_probe(&h));

    // Before the greeting: the client reset at once.
    let before = vec![
        accept_at(GEN, GEN),
        Event::Tcp(Tcp { ts_ns: GEN + 50_000, pid: PID, conn_gen: GEN, fd: FD, what: TcpWhat::ReceiveReset }),
        sys(GEN + 100_000, SyscallKind::Close, 0, 1000, [0; 4]),
    ];
    let h = only(&before);
    assert_eq!(h.verdict(), Some(Verdict::ClientReset));
    assert!(is_probe(&h));
}

#[test]
fn a_client_that_sent_half_a_login_or_waited_for_a_late_greeting_is_no_port_check() {
    let login = packet(1, &login_body(None));
    let mut half = prelude(GEN);
    half.push(io(GEN + 300_000, SyscallKind::Recvfrom, 20, 64, &login[..20]));
    half.push(io(GEN + 400_000, SyscallKind::Recvfrom, 0, 64, &[]));
    half.push(sys(GEN + 410_000, SyscallKind::Close, 0, 1000, [0; 4]));
    let h = only(&half);
    assert_eq!(h.verdict(), Some(Verdict::ClientClosed));
    assert!(!is_probe(&h));

    // Gave up on a greeting 3 s late: the server's failure, not monitoring noise.
    let g = greeting();
    let late = vec![
        accept_at(GEN, GEN),
        io(GEN + 3_000 * MS, SyscallKind::Sendto, g.len() as i64, g.len() as u64, &g),
        io(GEN + 3_001 * MS, SyscallKind::Recvfrom, -(Errno::ECONNRESET.0 as i64), 4, &[]),
        sys(GEN + 3_002 * MS, SyscallKind::Close, 0, 1000, [0; 4]),
    ];
    let h = only(&late);
    assert_eq!(h.verdict(), Some(Verdict::ClientReset));
    assert!(!is_probe(&h));
}

/// A server frozen (SIGSTOP) while the kernel completed a client's TCP handshake: the
/// accept came 2 s after it, once the client had given up; the greeting at once after
/// the accept reached a closed socket. Timed from the TCP handshake (the accept-queue
/// wait is the server's): a slow greeting, no port check. Timed from the accept, the
/// same events would be a port check.
#[test]
fn an_accept_queue_wait_counts_toward_the_greeting_and_is_the_servers() {
    let t0 = 5_000 * MS;
    let frozen = |queued_ns: Option<u64>| {
        let mut ev = prelude(t0);
        if let Event::Accept(a) = &mut ev[0] {
            a.queued_ns = queued_ns;
        }
        ev.push(io(t0 + 300_000, SyscallKind::Recvfrom, -(Errno::ECONNRESET.0 as i64), 4, &[]));
        ev.push(sys(t0 + 310_000, SyscallKind::Close, 0, 1000, [0; 4]));
        only(&ev)
    };
    let h = frozen(Some(2_000 * MS));
    assert_eq!(h.verdict(), Some(Verdict::ClientReset));
    assert!(!is_probe(&h));
    let blame = &h.judgement.as_ref().unwrap().blame;
    assert_eq!((blame.finding, blame.party()), (crate::verdict::Finding::SlowGreeting, crate::verdict::Blame::Server));
    assert_eq!(h.accept_ns, t0 - 2_000 * MS);
    assert_eq!(h.phases().to_greeting_ns, Some(2_000 * MS + 219_000));
    // The timeline starts with the TCP handshake, the accept 2 s later.
    assert_eq!(h.steps[0].what, StepKind::Tcp(TcpWhat::State { old: 3, new: 1 }));
    assert_eq!((h.steps[1].ts_ns, matches!(h.steps[1].what, StepKind::Accepted { .. })), (t0, true));

    let h = frozen(None);
    assert!(is_probe(&h), "from the accept, nothing showed the wait");
}

/// The client's FIN that came while its connection waited for the accept is sent after
/// the accept, stamped when it came: the timeline keeps time order, and the blame says
/// when the client left.
#[test]
fn a_fin_before_the_accept_takes_its_place_in_the_timeline() {
    let t0 = 5_000 * MS;
    let mut ev = prelude(t0);
    if let Event::Accept(a) = &mut ev[0] {
        a.queued_ns = Some(2_000 * MS);
    }
    ev.insert(1, Event::Tcp(Tcp { ts_ns: t0 - 1_000 * MS, pid: PID, conn_gen: GEN, fd: FD, what: TcpWhat::State { old: 1, new: 8 } }));
    ev.push(io(t0 + 300_000, SyscallKind::Recvfrom, 0, 4, &[]));
    ev.push(sys(t0 + 310_000, SyscallKind::Close, 0, 1000, [0; 4]));
    let h = only(&ev);
    assert!(h.steps.windows(2).all(|w| w[0].ts_ns <= w[1].ts_ns), "{:#?}", h.steps);
    assert_eq!(h.steps[1].what, StepKind::Tcp(TcpWhat::State { old: 1, new: 8 }));
    assert_eq!(h.verdict(), Some(Verdict::ClientClosed));
    let blame = &h.judgement.as_ref().unwrap().blame;
    assert_eq!(blame.finding, crate::verdict::Finding::SlowGreeting);
    assert!(blame.evidence.contains(&crate::verdict::Evidence::ClientLeftAt { ns: 1_000 * MS, reset: false }), "{blame:?}");
}

fn retransmit(ts_ns: u64) -> Event {
    Event::Tcp(Tcp { ts_ns, pid: PID, conn_gen: GEN, fd: FD, what: TcpWhat::Retransmit })
}

/// The greeting dropped on its way to the client: four retransmits, then the server's
/// poll expires. Packet loss toward the client, and the client was still reading the greeting.
#[test]
fn a_greeting_retransmitted_and_never_answered_is_packet_loss_toward_the_client() {
    let mut ev = poll_timeout_events();
    let close = ev.len() - 4;
    for (i, at) in [203, 407, 835, 1663].into_iter().enumerate() {
        ev.insert(close + i, retransmit(GEN + at * MS));
    }
    ev.sort_by_key(|e| e.ts_ns());
    let h = only(&ev);
    let j = h.judgement.as_ref().unwrap();
    assert_eq!(j.verdict, Verdict::ServerTimeout);
    assert!(matches!(j.cause, Cause::ServerTimedOut { greeting_retransmits: 4, .. }), "{:?}", j.cause);
    assert_eq!(j.probe, None);
    let why = reason_of(&h);
    assert!(why.starts_with("greeting retransmitted 4 times, never acknowledged: packet loss toward the client; the server waited"), "{why}");
    let e = client_error_of(&h).unwrap();
    assert_eq!(e, "ERROR 2013 (HY000): Lost connection to server at 'handshake: reading initial communication packet', system error: 104");
    assert_eq!(j.blame.party(), crate::verdict::Blame::Network);
}

/// Retransmits the client answered (its login came): the greeting got through.
#[test]
fn a_retransmitted_greeting_the_client_answered_is_not_lost() {
    let mut ev = prelude(GEN);
    ev.push(retransmit(GEN + 203 * MS));
    let login = packet(1, &login_body(None));
    ev.push(io(GEN + 300 * MS, SyscallKind::Recvfrom, login.len() as i64, login.len() as u64, &login));
    ev.push(io(GEN + 301 * MS, SyscallKind::Recvfrom, -11, 4, &[]));
    ev.push(sys(GEN + 2_301 * MS, SyscallKind::Poll, 0, 2_000 * MS, [1, 2000, 3, 0]));
    ev.push(sys(GEN + 2_302 * MS, SyscallKind::Close, 0, 1000, [0; 4]));
    let h = only(&ev);
    assert_eq!(h.verdict(), Some(Verdict::ServerTimeout), "{}", reason_of(&h));
    assert!(matches!(h.judgement.as_ref().unwrap().cause, Cause::ServerTimedOut { greeting_retransmits: 0, .. }));
    assert!(!reason_of(&h).contains("packet loss"));
}

/// A login of ~60 KB (its connect attributes) for user 'lab'.
fn long_login() -> Vec<u8> {
    use crate::protocol::{builders, CLIENT_CONNECT_ATTRS, CLIENT_PLUGIN_AUTH, CLIENT_PROTOCOL_41, CLIENT_SECURE_CONNECTION};
    let pad = "x".repeat(60_000);
    packet(
        1,
        &builders::login(&builders::LoginSpec {
            capabilities: CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH | CLIENT_CONNECT_ATTRS,
            max_packet: 1 << 24,
            charset: 33,
            extended_capabilities: 0,
            user: "lab",
            auth_response: &crate::testing::SECRET,
            database: "",
            auth_plugin: "mysql_native_password",
            attrs: &[("program_name", "dribbler"), ("pad", &pad)],
        }),
    )
}

/// MariaDB reading a login dribbled one byte per write: per byte, a read that finds
/// nothing, a poll, a read of the byte (from `t0`, 30 µs a byte).
fn dribbled(ev: &mut Vec<Event>, t0: u64, bytes: &[u8]) -> u64 {
    let mut t = t0;
    for b in bytes {
        ev.push(io(t, SyscallKind::Recvfrom, -(Errno::EAGAIN.0 as i64), 4, &[]));
        ev.push(sys(t + 10_000, SyscallKind::Poll, 1, 10_000, [1, 10_000, 1, 0]));
        ev.push(io(t + 20_000, SyscallKind::Recvfrom, 1, 4, std::slice::from_ref(b)));
        t += 30_000;
    }
    t
}

/// Issue 22 item 4: a login dribbled a byte per read makes ~180 000 steps; the
/// handshake keeps at most MAX_STEPS of them, says how many it left out, and is judged
/// and decoded as if it had kept them all.
#[test]
fn a_login_dribbled_a_byte_per_read_keeps_a_bounded_timeline_and_its_verdict() {
    let login = long_login();
    let mut ev = prelude(GEN);
    let t = dribbled(&mut ev, GEN + 300_000, &login);
    let err = err_packet(2, 1045, "28000", "Access denied for user 'lab'@'localhost' (using password: YES)");
    let mut reply = io(t + MS, SyscallKind::Sendto, err.len() as i64, err.len() as u64, &err);
    if let Event::Io(i) = &mut reply {
        i.tracking_end = Some(handshake_trace_common::end::REPLY);
    }
    ev.push(reply);
    let h = only(&ev);
    assert!(h.steps.len() <= MAX_STEPS, "{} steps", h.steps.len());
    assert_eq!(h.verdict(), Some(Verdict::AuthFailed), "{}", reason_of(&h));
    assert_eq!(h.login.as_ref().map(|l| l.user.as_str()), Some("lab"));
    assert_eq!(h.login.as_ref().map(|l| l.auth_response_len), Some(20));
    let o = h.omitted().expect("the middle left out");
    // Nearly every byte came in a step left out; only the head's and the tail's are kept.
    let len = login.len() as u64;
    assert!(o.read_bytes <= len && o.read_bytes > len - MAX_STEPS as u64, "{o:?}");
    // Every step is counted: those kept (the summary aside) plus those left out: the
    // prelude's 4 and the handoff, 3 a byte, the ERR and the end of tracing it brought.
    let kept = h.steps.len() as u64 - 1;
    assert_eq!(kept + o.steps, 5 + 3 * len + 2, "{o:?}");
    // The words say so, and a record stays small.
    let text = crate::output::handshake_timeline(&h, &crate::support::clock::Clock::with_offset(0));
    assert!(text.contains("steps left out"), "{text:.3000}");
    let json = crate::output::handshake_json(&h, &crate::support::clock::Clock::with_offset(0)).to_string();
    assert!(json.len() < 64 * 1024, "{} bytes", json.len());
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["truncated"]["steps_omitted"], o.steps, "{v:#}");
    assert_eq!(v["user"], "lab");
}

/// The verdicts that look at the end of a timeline still see it: a client that
/// dribbles half a login and goes silent is a server timeout waiting for the login.
#[test]
fn a_dribble_that_stops_is_still_judged_by_the_last_wait() {
    let login = long_login();
    let mut ev = prelude(GEN);
    let t = dribbled(&mut ev, GEN + 300_000, &login[..20_000]);
    ev.push(io(t, SyscallKind::Recvfrom, -(Errno::EAGAIN.0 as i64), 4, &[]));
    ev.push(sys(t + 10_000_000_000, SyscallKind::Poll, 0, 10_000_000_000, [1, 10_000, 1, 0]));
    ev.push(sys(t + 10_000_100_000, SyscallKind::Setsockopt, 0, 500, [1, 13 | (8 << 32), 1, 0]));
    ev.push(sys(t + 10_000_200_000, SyscallKind::Close, 0, 1000, [0; 4]));
    let h = only(&ev);
    assert!(h.steps.len() <= MAX_STEPS);
    assert!(h.omitted().is_some());
    assert_eq!(h.verdict(), Some(Verdict::ServerTimeout), "{}", reason_of(&h));
    let wait = h.judgement.as_ref().unwrap().timeout().unwrap();
    assert_eq!(wait.mechanism, WaitMechanism::Poll);
    assert_eq!(wait.timeout_ms, Some(10_000));
    // The client did send bytes: not a port check.
    assert!(h.judgement.as_ref().unwrap().probe.is_none());
}

/// The socket tier's packets, a byte each: the same bounds.
#[test]
fn a_login_dribbled_a_byte_per_packet_keeps_a_bounded_timeline_and_its_verdict() {
    let login = long_login();
    let g = greeting();
    let mut ev = vec![established_at(GEN), sock_io(GEN + 100_000, GEN, SyscallKind::PacketOut, g.len() as i64, 0, &g, None)];
    let mut t = GEN + 200_000;
    for b in &login {
        ev.push(sock_io(t, GEN, SyscallKind::PacketIn, 1, 0, std::slice::from_ref(b), None));
        t += 10_000;
    }
    let ok = ok_packet();
    ev.push(sock_io(t, GEN, SyscallKind::PacketOut, ok.len() as i64, 0, &ok, Some(handshake_trace_common::end::REPLY)));
    let h = only(&ev);
    assert!(h.steps.len() <= MAX_STEPS, "{} steps", h.steps.len());
    assert_eq!(h.verdict(), Some(Verdict::Ok), "{}", reason_of(&h));
    assert_eq!(h.login.as_ref().map(|l| l.user.as_str()), Some("lab"));
    assert_eq!(h.omitted().map(|o| o.read_bytes + o.write_bytes), Some(h.omitted().unwrap().read_bytes));
}

/// A crafted SO_RCVTIMEO of u64::MAX seconds saturates instead of wrapping to a
/// small timeout.
#[test]
fn a_huge_receive_timeout_saturates() {
    let mut ev = prelude(GEN);
    ev.push(sys(GEN + 220_000, SyscallKind::Setsockopt, 0, 500, [1, 20, u64::MAX, 999_999]));
    let (_, mut c) = run(&ev);
    let h = c.finish_all(GEN + MS).remove(0);
    assert_eq!(h.evidence.rcvtimeo_ms, Some(u64::MAX));
}

/// Issue 22 item 9: a user name with a bidi override and a C1 control: `-j` and the
/// abnormal log (both `handshake_json`) write them as \u escapes, and a JSON reader
/// gets the exact name back.
#[test]
fn a_bidi_user_name_reaches_json_escaped() {
    use crate::protocol::{builders, CLIENT_PLUGIN_AUTH, CLIENT_PROTOCOL_41, CLIENT_SECURE_CONNECTION};
    let user = "admin\u{202e}nimda\u{9b}31m\u{7f}";
    let body = builders::login(&builders::LoginSpec {
        capabilities: CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH,
        max_packet: 1 << 24,
        charset: 33,
        extended_capabilities: 0,
        user,
        auth_response: &SECRET,
        database: "",
        auth_plugin: "mysql_native_password",
        attrs: &[],
    });
    let login = packet(1, &body);
    let mut ev = prelude(GEN);
    ev.push(io(GEN + 300_000, SyscallKind::Recvfrom, login.len() as i64, login.len() as u64, &login));
    let err = err_packet(2, 1045, "28000", &format!("Access denied for user '{user}'@'localhost'"));
    ev.push(io(GEN + 900_000, SyscallKind::Sendto, err.len() as i64, err.len() as u64, &err));
    ev.push(sys(GEN + 910_000, SyscallKind::TrackingEnd, 0, 0, [1, 0, 0, 0]));
    let h = only(&ev);
    let json = crate::output::handshake_json(&h, &crate::support::clock::Clock::with_offset(0)).to_string();
    for raw in ['\u{202e}', '\u{9b}', '\u{7f}'] {
        assert!(!json.contains(raw), "raw U+{:04X} in {json}", raw as u32);
    }
    assert!(json.contains(r#""user":"admin\u202enimda\u009b31m\u007f""#), "{json}");
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v["user"], user);
    assert_eq!(v["error"]["message"], format!("Access denied for user '{user}'@'localhost'"));
}

/// Issue 22 item 8: a login of exactly 0x0316 bytes (header `16 03 00 01`) is a login,
/// not a ClientHello, read as header and body (the syscall tier) or in one packet (the
/// socket tier, which used to decode the user and then say `tls: true`).
#[test]
fn a_login_of_0x0316_bytes_is_not_tls() {
    use crate::protocol::{builders, CLIENT_CONNECT_ATTRS, CLIENT_PLUGIN_AUTH, CLIENT_PROTOCOL_41, CLIENT_SECURE_CONNECTION};
    let body = |pad: usize| {
        builders::login(&builders::LoginSpec {
            capabilities: CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH | CLIENT_CONNECT_ATTRS,
            max_packet: 1 << 24,
            charset: 33,
            extended_capabilities: 0,
            user: "lab",
            auth_response: &SECRET,
            database: "",
            auth_plugin: "mysql_native_password",
            attrs: &[("pad", &"x".repeat(pad))],
        })
    };
    let pad = (0..1000).find(|&n| body(n).len() == 0x0316).expect("a padding for 0x0316 bytes");
    let login = packet(1, &body(pad));
    assert_eq!(login[..4], [0x16, 0x03, 0x00, 0x01]);
    let check = |h: &Handshake| {
        assert!(!h.tls && h.tls_hello_ns.is_none(), "taken for TLS");
        assert_eq!(h.login.as_ref().map(|l| (l.user.as_str(), l.auth_response_len)), Some(("lab", 20)));
        assert_eq!(h.verdict(), Some(Verdict::Ok), "{}", reason_of(h));
    };
    let mut ev = prelude(GEN);
    ev.push(io(GEN + 300_000, SyscallKind::Recvfrom, 4, 4, &login[..4]));
    ev.push(io(GEN + 310_000, SyscallKind::Recvfrom, (login.len() - 4) as i64, (login.len() - 4) as u64, &login[4..]));
    let ok = ok_packet();
    ev.push(io(GEN + 900_000, SyscallKind::Sendto, ok.len() as i64, ok.len() as u64, &ok));
    ev.push(sys(GEN + 910_000, SyscallKind::TrackingEnd, 0, 0, [1, 0, 0, 0]));
    check(&only(&ev));
    let g = greeting();
    let ev = vec![
        established_at(GEN),
        sock_io(GEN + 100_000, GEN, SyscallKind::PacketOut, g.len() as i64, 0, &g, None),
        sock_io(GEN + 200_000, GEN, SyscallKind::PacketIn, login.len() as i64, 0, &login, None),
        sock_io(GEN + 300_000, GEN, SyscallKind::PacketOut, ok.len() as i64, 0, &ok, Some(handshake_trace_common::end::REPLY)),
    ];
    check(&only(&ev));
}

/// The socket tier's Unix-socket connections: started by the client's connect (no
/// address), their bytes from the server's own reads and writes, ended by the reply or
/// by their socket found closed.
mod unix_socket {
    use handshake_trace_common::NO_FD;

    use super::*;
    use crate::events::{Accept, ClientProcess};

    const MSG_DONTWAIT: u64 = libc::MSG_DONTWAIT as u64;

    fn connected_at(ts: u64) -> Event {
        Event::Accept(Accept {
            ts_ns: ts,
            conn_gen: ts,
            pid: PID,
            tid: 0,
            listen_fd: NO_FD,
            result: SyscallResult::Ok(0),
            peer: None,
            unix: true,
            established: true,
            local: None,
            packets_unseen: false,
            client_process: ClientProcess::new(4242, b"php-fpm\0\0\0\0\0\0\0\0\0"),
            queued_ns: None,
        })
    }

    fn closed_at(ts: u64) -> Event {
        Event::Tcp(Tcp { ts_ns: ts, pid: PID, conn_gen: GEN, fd: NO_FD, what: TcpWhat::UnixClosed })
    }

    #[test]
    fn a_silent_unix_client_given_up_on_is_a_server_timeout_without_reset() {
        let g = greeting();
        let ev = [
            connected_at(GEN),
            sock_io(GEN + 50_000, GEN, SyscallKind::SockSend, g.len() as i64, 0, &g, None),
            sock_io(GEN + 60_000, GEN, SyscallKind::SockRecv, -(Errno::EAGAIN.0 as i64), MSG_DONTWAIT, &[], None),
            closed_at(GEN + 2_010_000_000),
        ];
        let h = only(&ev);
        assert_eq!(h.verdict(), Some(Verdict::ServerTimeout), "{:#?}", h.judgement);
        // A Unix socket has no reset, whatever SO_LINGER says: the client reads an EOF.
        assert!(matches!(h.judgement.as_ref().unwrap().cause, Cause::ServerTimedOut { reset: false, .. }));
        assert!(h.unix && h.client.is_none());
        assert_eq!(h.client_process, Some(ClientProcess { pid: 4242, program: "php-fpm".into() }));
        assert_eq!(h.phases().to_greeting_ns, Some(50_000));
    }

    #[test]
    fn a_unix_login_read_by_the_server_is_decoded_and_its_ok_ends_it() {
        let g = greeting();
        let l = packet(1, &login_body(Some("appdb")));
        let ok = ok_packet();
        let ev = [
            connected_at(GEN),
            sock_io(GEN + 50_000, GEN, SyscallKind::SockSend, g.len() as i64, 0, &g, None),
            sock_io(GEN + 90_000, GEN, SyscallKind::SockRecv, l.len() as i64, 0, &l, None),
            sock_io(GEN + 120_000, GEN, SyscallKind::SockSend, ok.len() as i64, 0, &ok, Some(handshake_trace_common::end::REPLY)),
        ];
        let h = only(&ev);
        assert_eq!(h.verdict(), Some(Verdict::Ok));
        assert_eq!(h.login.as_ref().map(|l| l.user.as_str()), Some("lab"));
    }

    #[test]
    fn a_unix_client_gone_before_the_greeting_was_read_is_a_client_reset() {
        let g = greeting();
        let ev = [
            connected_at(GEN),
            sock_io(GEN + 50_000, GEN, SyscallKind::SockSend, g.len() as i64, 0, &g, None),
            sock_io(GEN + 200_000_000, GEN, SyscallKind::SockRecv, -(Errno::ECONNRESET.0 as i64), MSG_DONTWAIT, &[], None),
            closed_at(GEN + 230_000_000),
        ];
        let h = only(&ev);
        assert_eq!(h.verdict(), Some(Verdict::ClientReset), "{:#?}", h.judgement);
        assert_eq!(h.judgement.as_ref().unwrap().probe, Some(crate::verdict::Probe::PortCheck), "it sent nothing: a port check");
    }

    #[test]
    fn a_unix_timeline_says_who_connected_and_decodes_the_servers_own_writes() {
        let g = greeting();
        let ev = [
            connected_at(GEN),
            sock_io(GEN + 50_000, GEN, SyscallKind::SockSend, g.len() as i64, 0, &g, None),
            closed_at(GEN + 1_000_000),
        ];
        let h = only(&ev);
        let text: Vec<String> = h.steps.iter().map(|s| crate::output::step::describe_step(&h, s)).collect();
        assert!(text[0].starts_with("Unix-socket connection from php-fpm[4242]"), "{text:?}");
        assert!(text[1].contains("socket write → ") && text[1].contains("greeting: protocol 10"), "{text:?}");
        assert!(text[2].contains("Unix socket found closed"), "{text:?}");
    }

    #[test]
    fn the_unix_client_column_names_the_process_escaped() {
        let mut h = only(&[connected_at(GEN), closed_at(GEN + 1_000)]);
        assert_eq!(crate::output::text::client_column(&h), "php-fpm[4242]");
        h.client_process = ClientProcess::new(7, b"evil\x1b[2J\0");
        let shown = crate::output::text::client_column(&h);
        assert!(!shown.contains('\x1b') && shown.ends_with("[7]"), "{shown:?}");
    }
}
