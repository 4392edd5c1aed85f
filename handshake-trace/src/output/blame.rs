//! Whose side a failure is on, in words: the party, the facts, and what they add up
//! to ("greeting retransmitted 4 times, never acknowledged; …: packet loss toward
//! the client"). Rules: verdict/blame.rs, docs/verdicts.md "Blame".
use super::names;
use crate::{
    config::NameLookup,
    protocol,
    verdict::{Attribution, Evidence, Finding, Judgement},
};

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn times(n: u64) -> String {
    if n == 1 { "once".into() } else { format!("{n} times") }
}

/// A finding's identifier, as JSON names it.
pub fn finding(f: Finding) -> &'static str {
    match f {
        Finding::LoggedIn => "logged_in",
        Finding::ClientRefused => "client_refused",
        Finding::ServerCouldNotServe => "server_could_not_serve",
        Finding::DamagedPackets => "damaged_packets",
        Finding::LossTowardClient => "loss_toward_client",
        Finding::LossTowardServer => "loss_toward_server",
        Finding::LossSeen => "loss_seen",
        Finding::ClientStalled => "client_stalled",
        Finding::ClientOrNetwork => "client_or_network",
        Finding::ClientLeft => "client_left",
        Finding::PortCheck => "port_check",
        Finding::SlowGreeting => "slow_greeting",
        Finding::ServerClosed => "server_closed",
        Finding::ServerExited => "server_exited",
        Finding::NotWhole => "not_whole",
    }
}

/// What the facts add up to, as the end of the blame sentence.
fn conclusion(f: Finding) -> &'static str {
    match f {
        Finding::LoggedIn => "logged in",
        Finding::ClientRefused => "the server refused what the client sent",
        Finding::ServerCouldNotServe => "the server could not serve the connection",
        Finding::DamagedPackets => "packets damaged or lost on the way to the server",
        Finding::LossTowardClient => "packet loss toward the client",
        Finding::LossTowardServer => "packet loss toward the server",
        Finding::LossSeen => "packet loss between the two",
        Finding::ClientStalled => "the client stalled",
        Finding::ClientOrNetwork => "the client stalled, or its packets were lost on the way: the server cannot tell which",
        Finding::ClientLeft => "the client left of its own accord",
        Finding::PortCheck => "a port check",
        Finding::SlowGreeting => "the server was too slow for the client",
        Finding::ServerClosed => "the server ended the connection",
        Finding::ServerExited => "the server went away",
        Finding::NotWhole => "not seen whole, nothing to blame",
    }
}

/// One fact, in words.
pub fn evidence(e: &Evidence) -> String {
    evidence_for(e, NameLookup::Possible)
}

/// One fact, in words, naming no cause `lookup` rules out.
pub fn evidence_for(e: &Evidence, lookup: NameLookup) -> String {
    match *e {
        Evidence::ErrSent { code } => format!("the server sent ERR {code} {}", protocol::error_name(code).unwrap_or("unknown error")),
        Evidence::EncryptedRefusal => {
            "an encrypted reply to the login, then a close at once, as after an ERR (inferred: TLS)".into()
        }
        Evidence::GreetingRetransmitted { times: n } => format!("greeting retransmitted {}, never acknowledged", times(n)),
        Evidence::ClientRetransmitted { times: n } => {
            format!("the client's socket retransmitted {} and none of it reached the server", times(n))
        }
        Evidence::ServerRetransmitted { times: n } => format!("the server's socket retransmitted {}", times(n)),
        Evidence::GreetingDelivered { at_ns } => format!("greeting sent at +{:.1} ms and never retransmitted (acknowledged)", ms(at_ns)),
        Evidence::ClientSilent { ns, awaited } => {
            format!("the client sent nothing for {:.1} ms while the server waited for {}", ms(ns), names::awaited(awaited))
        }
        Evidence::LocalClient => "a client on this host, none of whose own packets were retransmitted".into(),
        Evidence::RemoteClient => "a remote client, whose own retransmits the server cannot see".into(),
        Evidence::GreetingLate { at_ns, idle_ns } if idle_ns >= 100_000_000 => format!(
            "greeting sent only at +{:.1} ms, {:.1} ms of it with no syscall on the connection {}",
            ms(at_ns),
            ms(idle_ns),
            super::reason::busy_elsewhere(lookup)
        ),
        Evidence::GreetingLate { at_ns, .. } => format!("greeting sent only at +{:.1} ms", ms(at_ns)),
        Evidence::GreetingNotSent { within_ns } => format!("no greeting in {:.1} ms", ms(within_ns)),
        Evidence::ClientLeftAt { ns, reset } => {
            format!("the client {} at +{:.1} ms", if reset { "reset the connection" } else { "closed" }, ms(ns))
        }
        Evidence::NoByteSent => "it had sent not a byte".into(),
        Evidence::ServerShutDown { how } => format!("the server called shutdown({}) first", names::shutdown_how(how)),
        Evidence::ServerClosedWithoutReply => "the server closed with no reply, for a reason its syscalls do not show".into(),
        Evidence::ServerExited => "the server process exited mid-handshake".into(),
        Evidence::EventsLost => "kernel events were lost while it was open".into(),
        Evidence::PacketsUnseen => "its packets were outside the cgroup the packet programs watched".into(),
        Evidence::NotSeenToEnd => "its end was not seen".into(),
    }
}

/// The facts and what they add up to: "greeting retransmitted 4 times, …: packet loss toward the client".
pub fn sentence(a: &Attribution) -> String {
    sentence_for(a, NameLookup::Possible)
}

/// [`sentence`], naming no cause `lookup` rules out.
pub fn sentence_for(a: &Attribution, lookup: NameLookup) -> String {
    let facts: Vec<String> = a.evidence.iter().map(|e| evidence_for(e, lookup)).collect();
    if facts.is_empty() {
        return conclusion(a.finding).to_string();
    }
    format!("{}: {}", facts.join("; "), conclusion(a.finding))
}

/// The text output's line for a failure: "blame: network — …"; None for `ok`.
pub fn blame_line(j: &Judgement) -> Option<String> {
    blame_line_for(j, NameLookup::Possible)
}

/// [`blame_line`], naming no cause `lookup` rules out.
pub fn blame_line_for(j: &Judgement, lookup: NameLookup) -> Option<String> {
    (j.blame.finding != Finding::LoggedIn).then(|| format!("blame: {} — {}", names::blame(j.blame.party()), sentence_for(&j.blame, lookup)))
}

/// The JSON `blame` object (docs/json.md).
#[derive(serde::Serialize)]
pub struct BlameJson {
    party: &'static str,
    finding: &'static str,
    evidence: Vec<String>,
}

/// The JSON `blame` object of a failure; None for `ok`.
pub fn blame_json(j: &Judgement) -> Option<BlameJson> {
    blame_json_for(j, NameLookup::Possible)
}

/// [`blame_json`], naming no cause `lookup` rules out.
pub fn blame_json_for(j: &Judgement, lookup: NameLookup) -> Option<BlameJson> {
    (j.blame.finding != Finding::LoggedIn).then(|| BlameJson {
        party: names::blame(j.blame.party()),
        finding: finding(j.blame.finding),
        evidence: j.blame.evidence.iter().map(|e| evidence_for(e, lookup)).collect(),
    })
}

#[cfg(test)]
mod tests;
