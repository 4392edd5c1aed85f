//! The words of each finding and fact, and where blame shows (text line, JSON).
use super::*;
use crate::verdict::{Awaited, Blame, Cause, Verdict};

fn judgement(verdict: Verdict, finding: Finding, evidence: Vec<Evidence>) -> Judgement {
    Judgement { verdict, cause: Cause::StillOpen, client_report: None, probe: None, blame: Attribution { finding, evidence } }
}

#[test]
fn the_issues_examples_read_as_asked() {
    let lost = Attribution {
        finding: Finding::LossTowardClient,
        evidence: vec![Evidence::GreetingRetransmitted { times: 4 }, Evidence::ClientSilent { ns: 2_002_000_000, awaited: Awaited::Login }],
    };
    assert_eq!(
        sentence(&lost),
        "greeting retransmitted 4 times, never acknowledged; the client sent nothing for 2002.0 ms while the server waited for the login packet: packet loss toward the client"
    );
    let stalled = Attribution {
        finding: Finding::ClientStalled,
        evidence: vec![Evidence::GreetingDelivered { at_ns: 100_000 }, Evidence::LocalClient],
    };
    assert_eq!(
        sentence(&stalled),
        "greeting sent at +0.1 ms and never retransmitted (acknowledged); a client on this host, none of whose own packets were retransmitted: the client stalled"
    );
    let dns = Attribution {
        finding: Finding::SlowGreeting,
        evidence: vec![
            Evidence::GreetingLate { at_ns: 2_900_000_000, idle_ns: 2_899_000_000 },
            Evidence::ClientLeftAt { ns: 2_000_000_000, reset: false },
        ],
    };
    assert_eq!(
        sentence(&dns),
        "greeting sent only at +2900.0 ms, 2899.0 ms of it with no syscall on the connection (name resolution, a lock, CPU); the client closed at +2000.0 ms: the server was too slow for the client"
    );
}

#[test]
fn each_fact_in_words() {
    for (e, words) in [
        (Evidence::ErrSent { code: 1040 }, "the server sent ERR 1040 ER_CON_COUNT_ERROR"),
        (Evidence::ClientRetransmitted { times: 1 }, "the client's socket retransmitted once and none of it reached the server"),
        (Evidence::ServerRetransmitted { times: 2 }, "the server's socket retransmitted 2 times"),
        (Evidence::RemoteClient, "a remote client, whose own retransmits the server cannot see"),
        (Evidence::GreetingLate { at_ns: 600_000_000, idle_ns: 1_000_000 }, "greeting sent only at +600.0 ms"),
        (Evidence::GreetingNotSent { within_ns: 700_000_000 }, "no greeting in 700.0 ms"),
        (Evidence::ClientLeftAt { ns: 5_000_000, reset: true }, "the client reset the connection at +5.0 ms"),
        (Evidence::ServerShutDown { how: 2 }, "the server called shutdown(SHUT_RDWR) first"),
        (Evidence::ServerExited, "the server process exited mid-handshake"),
    ] {
        assert_eq!(evidence(&e), words, "{e:?}");
    }
}

#[test]
fn the_remote_silent_client_says_the_server_cannot_tell() {
    let a = Attribution { finding: Finding::ClientOrNetwork, evidence: vec![Evidence::RemoteClient] };
    assert!(sentence(&a).ends_with(": the client stalled, or its packets were lost on the way: the server cannot tell which"));
    assert_eq!(names::blame(a.party()), "unknown");
}

#[test]
fn failures_get_a_blame_line_and_object_and_logins_none() {
    let j = judgement(Verdict::ClientClosed, Finding::PortCheck, vec![Evidence::ClientLeftAt { ns: 1_000_000, reset: false }, Evidence::NoByteSent]);
    assert_eq!(blame_line(&j).unwrap(), "blame: client — the client closed at +1.0 ms; it had sent not a byte: a port check");
    let json = serde_json::to_value(blame_json(&j).unwrap()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"party": "client", "finding": "port_check", "evidence": ["the client closed at +1.0 ms", "it had sent not a byte"]})
    );
    let ok = judgement(Verdict::Ok, Finding::LoggedIn, vec![]);
    assert_eq!(blame_line(&ok), None);
    assert!(blame_json(&ok).is_none());
}

#[test]
fn finding_identifiers_are_distinct_and_name_their_party() {
    let all = [
        Finding::LoggedIn, Finding::ClientRefused, Finding::ServerCouldNotServe, Finding::DamagedPackets,
        Finding::LossTowardClient, Finding::LossTowardServer, Finding::LossSeen, Finding::ClientStalled,
        Finding::ClientOrNetwork, Finding::ClientLeft, Finding::PortCheck, Finding::SlowGreeting,
        Finding::ServerClosed, Finding::ServerExited, Finding::NotWhole,
    ];
    let names: std::collections::HashSet<&str> = all.iter().map(|f| finding(*f)).collect();
    assert_eq!(names.len(), all.len());
    let parties: Vec<Blame> = all.iter().map(|f| f.party()).collect();
    for b in Blame::ALL {
        assert!(parties.contains(&b), "no finding for {b:?}");
    }
}
