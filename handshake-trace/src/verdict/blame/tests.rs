//! Each blame rule on synthetic handshakes shaped like real MariaDB traces.
use super::*;
use crate::{
    correlate::Handshake,
    events::{Event, SyscallKind, Tcp},
    testing::*,
    verdict::{ClientReport, LostAt, Verdict},
};

fn tcp(ts_ns: u64, what: TcpWhat) -> Event {
    Event::Tcp(Tcp { ts_ns, pid: PID, conn_gen: GEN, fd: FD, what })
}

fn judged(events: &[Event]) -> Handshake {
    let mut all = handshakes_of(events);
    assert_eq!(all.len(), 1, "{all:#?}");
    all.remove(0)
}

fn attribution(h: &Handshake) -> &Attribution {
    &h.judgement.as_ref().expect("judged").blame
}

/// `events` with `extra` merged in by time.
fn with(mut events: Vec<Event>, extra: impl IntoIterator<Item = Event>) -> Vec<Event> {
    events.extend(extra);
    events.sort_by_key(|e| e.ts_ns());
    events
}

/// The client's address in the accept.
fn from_client(mut events: Vec<Event>, client: &str) -> Vec<Event> {
    if let Event::Accept(a) = &mut events[0] {
        a.peer = Some(client.parse().unwrap());
    }
    events
}

const SILENT_NS: u64 = 2_002_222_000 - 219_000;

fn silent_for_login() -> Evidence {
    Evidence::ClientSilent { ns: SILENT_NS, awaited: Awaited::Login }
}

#[test]
fn a_local_client_that_sent_nothing_stalled() {
    let h = judged(&poll_timeout_events());
    let a = attribution(&h);
    assert_eq!(a.finding, Finding::ClientStalled);
    assert_eq!(a.party(), Blame::Client);
    assert_eq!(a.evidence, vec![Evidence::GreetingDelivered { at_ns: 219_000 }, Evidence::LocalClient, silent_for_login()]);
}

#[test]
fn a_remote_client_that_sent_nothing_may_have_stalled_or_lost_its_packets() {
    let h = judged(&from_client(poll_timeout_events(), "10.1.2.3:40000"));
    let a = attribution(&h);
    assert_eq!((a.finding, a.party()), (Finding::ClientOrNetwork, Blame::Unknown));
    assert_eq!(a.evidence, vec![Evidence::GreetingDelivered { at_ns: 219_000 }, Evidence::RemoteClient, silent_for_login()]);
}

#[test]
fn a_client_on_the_servers_own_address_is_local() {
    let server = Some("[::ffff:192.0.2.7]:3306".parse().unwrap());
    assert!(same_host("192.0.2.7:40000".parse().unwrap(), server));
    assert!(same_host("[::1]:40000".parse().unwrap(), server));
    assert!(!same_host("192.0.2.8:40000".parse().unwrap(), server));
    assert!(!same_host("192.0.2.8:40000".parse().unwrap(), None));
}

#[test]
fn a_greeting_retransmitted_and_never_answered_is_loss_toward_the_client() {
    let ev = with(poll_timeout_events(), [203, 407, 835, 1663].map(|ms| tcp(GEN + ms * MS, TcpWhat::Retransmit)));
    let h = judged(&ev);
    let a = attribution(&h);
    assert_eq!((a.finding, a.party()), (Finding::LossTowardClient, Blame::Network));
    assert_eq!(a.evidence, vec![Evidence::GreetingRetransmitted { times: 4 }, silent_for_login()]);
}

/// The login lost on loopback: the client's own socket retransmits it, and the server
/// retransmits the greeting whose ACK rode on the lost login. The client had the
/// greeting (it was sending its login): loss toward the server, and the client was
/// waiting for the reply to its login when the reset came.
#[test]
fn a_clients_own_retransmits_are_loss_toward_the_server() {
    let mut extra: Vec<Event> = [201, 405, 821].map(|ms| tcp(GEN + ms * MS, TcpWhat::ClientRetransmit)).into();
    extra.push(tcp(GEN + 210 * MS, TcpWhat::Retransmit));
    let h = judged(&with(poll_timeout_events(), extra));
    let j = h.judgement.as_ref().unwrap();
    assert!(matches!(j.cause, Cause::ServerTimedOut { greeting_retransmits: 0, .. }), "the greeting got through: {:?}", j.cause);
    assert_eq!((j.blame.finding, j.blame.party()), (Finding::LossTowardServer, Blame::Network));
    assert_eq!(
        j.blame.evidence,
        vec![Evidence::ClientRetransmitted { times: 3 }, Evidence::ServerRetransmitted { times: 1 }, silent_for_login()]
    );
    assert_eq!(j.client_report, Some(ClientReport::LostConnection { at: LostAt::AuthorizationPacket, errno: 104 }));
}

#[test]
fn refused_credentials_are_the_clients() {
    let h = judged(&wrong_password_events());
    let a = attribution(&h);
    assert_eq!((a.finding, a.party()), (Finding::ClientRefused, Blame::Client));
    assert_eq!(a.evidence, vec![Evidence::ErrSent { code: 1045 }]);
}

#[test]
fn each_error_is_on_one_side() {
    for (code, finding) in [
        (ER_CON_COUNT_ERROR, Finding::ServerCouldNotServe),
        (ER_OUT_OF_RESOURCES, Finding::ServerCouldNotServe),
        (ER_SERVER_SHUTDOWN, Finding::ServerCouldNotServe),
        (ER_TOO_MANY_USER_CONNECTIONS, Finding::ServerCouldNotServe),
        (ER_NET_READ_ERROR, Finding::DamagedPackets),
        (ER_NET_READ_INTERRUPTED, Finding::DamagedPackets),
        // Garbage (HTTP, TLS without an SSLRequest) on the port: the client's.
        (ER_NET_PACKETS_OUT_OF_ORDER, Finding::ClientRefused),
        (ER_HANDSHAKE_ERROR, Finding::ClientRefused),
        (ER_HOST_IS_BLOCKED, Finding::ClientRefused),
        (ER_BAD_DB_ERROR, Finding::ClientRefused),
    ] {
        assert_eq!(error_finding(code), finding, "ERR {code}");
    }
}

/// Connect, read the greeting, close: a port check.
#[test]
fn leaving_without_a_byte_is_a_port_check() {
    let mut ev = prelude(GEN);
    ev.push(tcp(GEN + 5 * MS, TcpWhat::State { old: 1, new: 8 }));
    ev.push(io(GEN + 5 * MS + 10_000, SyscallKind::Recvfrom, 0, 4, &[]));
    ev.push(sys(GEN + 5 * MS + 20_000, SyscallKind::Close, 0, 1000, [0; 4]));
    let h = judged(&ev);
    let a = attribution(&h);
    assert_eq!((a.finding, a.party()), (Finding::PortCheck, Blame::Client));
    assert_eq!(a.evidence, vec![Evidence::ClientLeftAt { ns: 5 * MS, reset: false }, Evidence::NoByteSent]);
}

/// Half a login, then the client's FIN: it left of its own accord.
#[test]
fn leaving_mid_login_is_the_clients() {
    let mut ev = prelude(GEN);
    let login = packet(1, &login_body(None));
    ev.push(io(GEN + MS, SyscallKind::Recvfrom, 4, 4, &login[..4]));
    ev.push(io(GEN + 3 * MS, SyscallKind::Recvfrom, 0, 60, &[]));
    ev.push(sys(GEN + 3 * MS + 10_000, SyscallKind::Close, 0, 1000, [0; 4]));
    let h = judged(&ev);
    let a = attribution(&h);
    assert_eq!((a.finding, a.party()), (Finding::ClientLeft, Blame::Client));
    assert_eq!(a.evidence, vec![Evidence::ClientLeftAt { ns: 3 * MS, reset: false }]);
    assert_eq!(h.judgement.as_ref().unwrap().client_report, None, "the client chose to leave");
}

/// A client that left after retransmits: the network, whatever it sent.
#[test]
fn leaving_after_retransmits_is_the_networks() {
    let mut ev = prelude(GEN);
    ev.push(tcp(GEN + 200 * MS, TcpWhat::Retransmit));
    ev.push(io(GEN + 900 * MS, SyscallKind::Recvfrom, 0, 4, &[]));
    ev.push(sys(GEN + 900 * MS + 10_000, SyscallKind::Close, 0, 1000, [0; 4]));
    let a = attribution(&judged(&ev)).clone();
    assert_eq!((a.finding, a.party()), (Finding::LossSeen, Blame::Network));
    assert_eq!(a.evidence, vec![Evidence::ServerRetransmitted { times: 1 }, Evidence::ClientLeftAt { ns: 900 * MS, reset: false }]);
}

/// The lab's slow DNS with the real client: 3 s with no syscall before the greeting,
/// the client's FIN at 2 s (its connect timeout), then its RST to the late greeting.
#[test]
fn a_greeting_too_late_for_the_client_is_the_servers() {
    let g = greeting();
    let ev = vec![
        accept_at(GEN, GEN),
        sys(GEN + 239_000, SyscallKind::Fcntl, 0, 1500, [4, 0o4000, 0, 0]),
        tcp(GEN + 2001 * MS, TcpWhat::State { old: 1, new: 8 }),
        tcp(GEN + 3001 * MS, TcpWhat::ReceiveReset),
        io(GEN + 3001 * MS + 7_000, SyscallKind::Write, g.len() as i64, g.len() as u64, &g),
        io(GEN + 3001 * MS + 11_000, SyscallKind::Recvfrom, 0, 4, &[]),
        sys(GEN + 3001 * MS + 29_000, SyscallKind::Close, 0, 1000, [0; 4]),
    ];
    let h = judged(&ev);
    let j = h.judgement.as_ref().unwrap();
    assert_eq!(j.verdict, Verdict::ClientReset);
    assert_eq!((j.blame.finding, j.blame.party()), (Finding::SlowGreeting, Blame::Server));
    assert_eq!(
        j.blame.evidence,
        vec![
            Evidence::GreetingLate { at_ns: 3001 * MS + 7_000, idle_ns: 3001 * MS + 7_000 - 239_000 },
            Evidence::ClientLeftAt { ns: 2001 * MS, reset: false },
        ]
    );
    // The client's own timeout fired while it read the greeting.
    assert_eq!(j.client_report, Some(ClientReport::LostConnection { at: LostAt::InitialPacket, errno: 110 }));
}

#[test]
fn no_greeting_before_the_client_left_is_the_servers() {
    let ev = vec![
        accept_at(GEN, GEN),
        sys(GEN + 239_000, SyscallKind::Fcntl, 0, 1500, [4, 0o4000, 0, 0]),
        tcp(GEN + 600 * MS, TcpWhat::ReceiveReset),
        io(GEN + 700 * MS, SyscallKind::Recvfrom, -104, 4, &[]),
        sys(GEN + 700 * MS + 10_000, SyscallKind::Close, 0, 1000, [0; 4]),
    ];
    let h = judged(&ev);
    let j = h.judgement.as_ref().unwrap();
    assert_eq!(j.verdict, Verdict::ClientReset);
    assert_eq!(j.blame.finding, Finding::SlowGreeting);
    assert_eq!(
        j.blame.evidence,
        vec![Evidence::GreetingNotSent { within_ns: 700 * MS + 10_000 }, Evidence::ClientLeftAt { ns: 600 * MS, reset: true }]
    );
    assert_eq!(j.client_report, Some(ClientReport::LostConnection { at: LostAt::InitialPacket, errno: 110 }));
}

#[test]
fn a_login_is_no_ones_fault() {
    let h = judged(&ok_login_events());
    assert_eq!(*attribution(&h), Attribution { finding: Finding::LoggedIn, evidence: vec![] });
    assert_eq!(attribution(&h).party(), Blame::None);
}

/// Causes whose blame does not depend on the timeline.
#[test]
fn the_servers_own_ends_and_what_was_not_seen_whole() {
    let h = judged(&ok_login_events());
    for (cause, finding, party) in [
        (Cause::ServerShutDown { how: 2 }, Finding::ServerClosed, Blame::Server),
        (Cause::ServerClosedUnexplained, Finding::ServerClosed, Blame::Server),
        (Cause::ServerExited, Finding::ServerExited, Blame::Server),
        (Cause::EventsLost, Finding::NotWhole, Blame::Unknown),
        (Cause::StillOpen, Finding::NotWhole, Blame::Unknown),
        (Cause::NotSeenToEnd, Finding::NotWhole, Blame::Unknown),
        (Cause::TlsClosedAfterReply, Finding::ClientRefused, Blame::Client),
        (Cause::TlsPastHandshake, Finding::LoggedIn, Blame::None),
    ] {
        let a = attribute(&h, &cause, false);
        assert_eq!((a.finding, a.party()), (finding, party), "{cause:?}");
    }
}

/// A Unix-socket client has no network under it: a silent one stalled.
#[test]
fn a_unix_socket_client_is_local() {
    let mut h = judged(&from_client(poll_timeout_events(), "10.1.2.3:40000"));
    h.unix = true;
    let cause = h.judgement.as_ref().unwrap().cause.clone();
    assert_eq!(attribute(&h, &cause, false).finding, Finding::ClientStalled);
}

/// A server that times out before it greeted: the client had nothing to answer.
#[test]
fn a_timeout_before_the_greeting_is_the_servers() {
    let ev = vec![
        accept_at(GEN, GEN),
        sys(GEN + 124_000, SyscallKind::Fcntl, 0, 1500, [4, 0o4000, 0, 0]),
        io(GEN + 231_000, SyscallKind::Recvfrom, -11, 4, &[]),
        sys(GEN + 2_001_972_000, SyscallKind::Poll, 0, 2_001_700_000, [1, 2000, 3, 0]),
        sys(GEN + 2_002_222_000, SyscallKind::Close, 0, 87_000, [0; 4]),
    ];
    let h = judged(&ev);
    let j = h.judgement.as_ref().unwrap();
    assert_eq!(j.verdict, Verdict::ServerTimeout);
    assert_eq!((j.blame.finding, j.blame.party()), (Finding::ServerClosed, Blame::Server));
    assert_eq!(
        j.blame.evidence,
        vec![
            Evidence::GreetingNotSent { within_ns: 2_002_222_000 },
            Evidence::ClientSilent { ns: 2_002_222_000, awaited: Awaited::BeforeGreeting }
        ]
    );
}
