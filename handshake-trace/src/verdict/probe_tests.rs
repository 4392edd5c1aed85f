//! Probes decided by the judge: port checks and health checks, from synthetic
//! handshakes shaped like MariaDB 10.11's (HAProxy's check, mysqladmin, applications).
use super::{Probe, Verdict};
use crate::{
    correlate::Handshake,
    events::SyscallKind,
    output::step::StepText,
    protocol::{
        builders::{self, LoginSpec},
        CLIENT_CONNECT_ATTRS, CLIENT_PLUGIN_AUTH, CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA, CLIENT_PROTOCOL_41, CLIENT_SECURE_CONNECTION,
    },
    testing::*,
};

const COM_QUIT: u8 = 0x01;
const COM_PING: u8 = 0x0e;
const COM_QUERY: u8 = 0x03;

fn login_with(attrs: &[(&str, &str)]) -> Vec<u8> {
    let caps = CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION | CLIENT_PLUGIN_AUTH | CLIENT_PLUGIN_AUTH_LENENC_CLIENT_DATA | CLIENT_CONNECT_ATTRS;
    packet(1, &builders::login(&LoginSpec {
        capabilities: caps,
        max_packet: 1 << 24,
        charset: 33,
        extended_capabilities: 0,
        user: "hapcheck",
        auth_response: &[],
        database: "",
        auth_plugin: "mysql_native_password",
        attrs,
    }))
}

/// A login read with `after` in the same read (pipelined), then `reply` to it.
fn login_then(login: Vec<u8>, after: &[u8], reply: Vec<u8>) -> Handshake {
    let mut ev = prelude(GEN);
    let mut bytes = login;
    bytes.extend_from_slice(after);
    ev.push(io(GEN + 300_000, SyscallKind::Recvfrom, bytes.len() as i64, 16384, &bytes));
    ev.push(io(GEN + 900_000, SyscallKind::Sendto, reply.len() as i64, reply.len() as u64, &reply));
    ev.push(sys(GEN + 910_000, SyscallKind::TrackingEnd, 0, 0, [1, 0, 0, 0]));
    let mut done = handshakes_of(&ev);
    assert_eq!(done.len(), 1);
    done.remove(0)
}

fn command(code: u8, arg: &[u8]) -> Vec<u8> {
    let mut body = vec![code];
    body.extend_from_slice(arg);
    packet(0, &body)
}

fn refused() -> Vec<u8> {
    err_packet(2, 1045, "28000", "Access denied for user 'hapcheck'@'localhost' (using password: NO)")
}

#[test]
fn a_login_sent_with_com_quit_is_a_health_check() {
    // HAProxy `option mysql-check user hapcheck post-41`: login and COM_QUIT in one segment.
    let h = login_then(login_with(&[]), &command(COM_QUIT, &[]), ok_packet());
    assert_eq!(h.verdict(), Some(Verdict::Ok));
    assert_eq!(h.probe(), Some(Probe::HealthCheck));
    let words: Vec<String> = h.steps.iter().map(|s| StepText { h: &h, s }.to_string()).collect();
    assert!(words.iter().any(|w| w.contains("COM_QUIT sent with the login")), "{words:#?}");
    // The quit is no auth data.
    assert_eq!(h.auth_rounds, 0);
}

#[test]
fn a_login_sent_with_com_ping_is_a_health_check() {
    let h = login_then(login_with(&[]), &command(COM_PING, &[]), ok_packet());
    assert_eq!(h.probe(), Some(Probe::HealthCheck));
}

/// HAProxy's check login as MariaDB reads it (the header, then exactly the body): the
/// COM_QUIT behind it is read after the OK, unseen. Its shape tells it: no plugin, no
/// attributes, no database, an empty auth response.
#[test]
fn a_bare_login_is_a_health_check() {
    let bare = packet(1, &builders::login(&LoginSpec {
        capabilities: CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION,
        max_packet: 1 << 24,
        charset: 8,
        extended_capabilities: 0,
        user: "hapcheck",
        auth_response: &[],
        database: "",
        auth_plugin: "",
        attrs: &[],
    }));
    let h = login_then(bare, &[], ok_packet());
    assert_eq!(h.login.as_ref().unwrap().auth_plugin, None);
    assert_eq!(h.probe(), Some(Probe::HealthCheck));
    // The same user with a password (an auth response) is an application.
    let with_password = packet(1, &builders::login(&LoginSpec {
        capabilities: CLIENT_PROTOCOL_41 | CLIENT_SECURE_CONNECTION,
        max_packet: 1 << 24,
        charset: 8,
        extended_capabilities: 0,
        user: "hapcheck",
        auth_response: &[7; 20],
        database: "",
        auth_plugin: "",
        attrs: &[],
    }));
    assert_eq!(login_then(with_password, &[], ok_packet()).probe(), None);
}

#[test]
fn a_login_sent_with_a_query_is_an_application() {
    let mut after = command(COM_QUERY, b"SELECT 1");
    after.extend(command(COM_QUIT, &[]));
    let h = login_then(login_with(&[]), &after, ok_packet());
    assert_eq!(h.verdict(), Some(Verdict::Ok));
    assert_eq!(h.probe(), None);
}

#[test]
fn a_plain_login_is_no_probe() {
    let h = login_then(login_with(&[("program_name", "php-fpm")]), &[], ok_packet());
    assert_eq!(h.verdict(), Some(Verdict::Ok));
    assert_eq!(h.probe(), None);
}

#[test]
fn a_login_by_mysqladmin_is_a_health_check() {
    for program in ["mysqladmin", "mariadb-admin"] {
        let h = login_then(login_with(&[("_client_name", "libmariadb"), ("program_name", program)]), &[], ok_packet());
        assert_eq!(h.probe(), Some(Probe::HealthCheck), "{program}");
    }
}

#[test]
fn a_failed_health_check_is_a_failure_not_a_probe() {
    let h = login_then(login_with(&[]), &command(COM_QUIT, &[]), refused());
    assert_eq!(h.verdict(), Some(Verdict::AuthFailed));
    assert_eq!(h.probe(), None);
    let h = login_then(login_with(&[("program_name", "mysqladmin")]), &[], refused());
    assert_eq!(h.verdict(), Some(Verdict::AuthFailed));
    assert_eq!(h.probe(), None);
}

#[test]
fn an_auth_switch_answer_is_not_taken_for_a_command() {
    // The client's answer to an auth switch goes on counting (sequence 3): auth data.
    let mut ev = prelude(GEN);
    let login = login_with(&[]);
    ev.push(io(GEN + 300_000, SyscallKind::Recvfrom, login.len() as i64, 16384, &login));
    let switch = packet(2, &[0xfe, b'm', b'y', b's', b'q', b'l', b'_', b'n', b'a', b't', b'i', b'v', b'e', b'_', b'p', b'a', b's', b's', b'w', b'o', b'r', b'd', 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 0]);
    ev.push(io(GEN + 400_000, SyscallKind::Sendto, switch.len() as i64, switch.len() as u64, &switch));
    let answer = packet(3, &[0x01]);
    ev.push(io(GEN + 500_000, SyscallKind::Recvfrom, answer.len() as i64, 16384, &answer));
    let ok = packet(4, &builders::ok(2));
    ev.push(io(GEN + 900_000, SyscallKind::Sendto, ok.len() as i64, ok.len() as u64, &ok));
    ev.push(sys(GEN + 910_000, SyscallKind::TrackingEnd, 0, 0, [1, 0, 0, 0]));
    let h = handshakes_of(&ev).remove(0);
    assert_eq!(h.verdict(), Some(Verdict::Ok));
    assert_eq!(h.auth_rounds, 1);
    assert_eq!(h.probe(), None);
}

#[test]
fn a_port_check_is_one_and_a_health_check_is_the_other() {
    let mut fin = prelude(GEN);
    fin.push(io(GEN + 300_000, SyscallKind::Recvfrom, 0, 4, &[]));
    fin.push(sys(GEN + 310_000, SyscallKind::Close, 0, 1000, [0; 4]));
    let h = handshakes_of(&fin).remove(0);
    assert_eq!((h.verdict(), h.probe()), (Some(Verdict::ClientClosed), Some(Probe::PortCheck)));
    assert_eq!(h.judgement.as_ref().unwrap().blame.finding, super::Finding::PortCheck);
}
