//! Whose side a handshake's failure is on — the client, the network between, the
//! server, or not to be told — and the facts that decided it (rules:
//! docs/verdicts.md, "Blame"). Data only: the words are in `output::blame`.
use std::net::SocketAddr;

use super::{Awaited, Cause, LateGreeting, TimeoutWait};
use crate::{
    correlate::{Handshake, StepKind},
    events::{SyscallResult, TcpWhat},
    protocol::errors::*,
};

/// Whose side a handshake's end is on (the agent's `blame` label).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Blame {
    /// It went well.
    None,
    Client,
    Network,
    Server,
    /// The server cannot tell (a remote client that went silent: stalled, or its
    /// packets lost), or the handshake was not seen whole.
    Unknown,
}

impl Blame {
    pub const ALL: [Blame; 5] = [Blame::None, Blame::Client, Blame::Network, Blame::Server, Blame::Unknown];
}

/// The rule that decided the blame: what the evidence adds up to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Finding {
    LoggedIn,
    /// An ERR for what the client sent (credentials, account, database, a bad handshake).
    ClientRefused,
    /// An ERR for want of resources (1040, 1041, 1053, 1203).
    ServerCouldNotServe,
    /// An ERR for a read the network broke (1158 read error, 1159 read timeout).
    DamagedPackets,
    /// The greeting was retransmitted and never answered.
    LossTowardClient,
    /// The client's own socket retransmitted (a local client): its packets did not arrive.
    LossTowardServer,
    /// The server's socket retransmitted during a handshake that failed.
    LossSeen,
    /// The greeting got through, nothing was lost, and the client sent nothing: a
    /// local client, whose lost packets would have been seen.
    ClientStalled,
    /// As `ClientStalled` for a remote client: its lost packets are not seen from the
    /// server, so stalled and lost cannot be told apart.
    ClientOrNetwork,
    /// The client closed or reset on its own, having sent part of a handshake.
    ClientLeft,
    /// The client left without sending a byte: a port check.
    PortCheck,
    /// The greeting came late or never and the client gave up waiting for it.
    SlowGreeting,
    /// The server closed (or shut the connection down) with no reply, or timed out
    /// before it had greeted the client.
    ServerClosed,
    ServerExited,
    /// Not seen whole: records lost, still open, or its end not seen.
    NotWhole,
}

impl Finding {
    pub fn party(self) -> Blame {
        match self {
            Finding::LoggedIn => Blame::None,
            Finding::ClientRefused | Finding::ClientStalled | Finding::ClientLeft | Finding::PortCheck => Blame::Client,
            Finding::DamagedPackets | Finding::LossTowardClient | Finding::LossTowardServer | Finding::LossSeen => Blame::Network,
            Finding::ServerCouldNotServe | Finding::SlowGreeting | Finding::ServerClosed | Finding::ServerExited => Blame::Server,
            Finding::ClientOrNetwork | Finding::NotWhole => Blame::Unknown,
        }
    }
}

/// One fact a blame rests on. Times are ns since the accept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Evidence {
    ErrSent { code: u16 },
    /// TLS: an encrypted reply to the login and a close at once, as after an ERR.
    EncryptedRefusal,
    GreetingRetransmitted { times: u64 },
    /// The client's socket retransmitted (seen for local clients only).
    ClientRetransmitted { times: u64 },
    ServerRetransmitted { times: u64 },
    /// The greeting was written then and never retransmitted (so it was acknowledged).
    GreetingDelivered { at_ns: u64 },
    /// Nothing came from the client for this long (to the end) while the server waited.
    ClientSilent { ns: u64, awaited: Awaited },
    /// Loopback, the server's own address or a Unix socket: the client's lost packets
    /// would show as its own retransmits.
    LocalClient,
    /// The client's retransmits are not seen from the server.
    RemoteClient,
    /// The greeting was written this late; `idle_ns` of it with no syscall on the
    /// connection (the server busy elsewhere: name resolution, a lock).
    GreetingLate { at_ns: u64, idle_ns: u64 },
    GreetingNotSent { within_ns: u64 },
    /// When the client's FIN or RST arrived, if a TCP event or a read showed it.
    ClientLeftAt { ns: u64, reset: bool },
    NoByteSent,
    ServerShutDown { how: u64 },
    ServerClosedWithoutReply,
    ServerExited,
    EventsLost,
    PacketsUnseen,
    NotSeenToEnd,
}

/// Whose side, why, and on what facts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attribution {
    pub finding: Finding,
    pub evidence: Vec<Evidence>,
}

impl Attribution {
    pub fn party(&self) -> Blame {
        self.finding.party()
    }
}

/// TCP retransmits by the server's socket during the handshake.
pub fn retransmits(h: &Handshake) -> u64 {
    count_tcp(h, TcpWhat::Retransmit)
}

/// TCP retransmits by the client's own socket (seen for local clients only).
pub fn client_retransmits(h: &Handshake) -> u64 {
    count_tcp(h, TcpWhat::ClientRetransmit)
}

fn count_tcp(h: &Handshake, what: TcpWhat) -> u64 {
    let omitted = h.omitted().map_or(0, |o| match what {
        TcpWhat::Retransmit => o.retransmits,
        TcpWhat::ClientRetransmit => o.client_retransmits,
        _ => 0,
    });
    h.steps.iter().filter(|s| s.what == StepKind::Tcp(what)).count() as u64 + omitted
}

/// Whose side a judged handshake's end is on. `probe` as the judgement says.
pub fn attribute(h: &Handshake, cause: &Cause, probe: bool) -> Attribution {
    let (finding, evidence) = match cause {
        Cause::LoggedIn | Cause::TlsPastHandshake | Cause::TlsCommandPhase { .. } | Cause::TlsClientQuit => (Finding::LoggedIn, vec![]),
        Cause::ErrSent { code } => (error_finding(*code), vec![Evidence::ErrSent { code: *code }]),
        // What the proxy sent is refused (the server's configuration may be what is
        // wrong: the fix is either side's, the proxy is the server's client).
        Cause::ProxyRefused { code, .. } => (Finding::ClientRefused, vec![Evidence::ErrSent { code: *code }]),
        Cause::TlsClosedAfterReply => (Finding::ClientRefused, vec![Evidence::EncryptedRefusal]),
        Cause::ServerTimedOut { wait, greeting_retransmits, .. } => timed_out(h, wait, *greeting_retransmits),
        Cause::ClientClosed { late_greeting } => client_gone(h, *late_greeting, probe, false),
        Cause::ClientReset { late_greeting } => client_gone(h, *late_greeting, probe, true),
        Cause::ServerShutDown { how } => (Finding::ServerClosed, vec![Evidence::ServerShutDown { how: *how }]),
        Cause::ServerClosedUnexplained => (Finding::ServerClosed, vec![Evidence::ServerClosedWithoutReply]),
        Cause::ServerExited => (Finding::ServerExited, vec![Evidence::ServerExited]),
        Cause::EventsLost => (Finding::NotWhole, vec![Evidence::EventsLost]),
        Cause::PacketsUnseen => (Finding::NotWhole, vec![Evidence::PacketsUnseen]),
        Cause::StillOpen | Cause::NotSeenToEnd => (Finding::NotWhole, vec![Evidence::NotSeenToEnd]),
    };
    Attribution { finding, evidence }
}

/// Whose side an ERR is on.
fn error_finding(code: u16) -> Finding {
    match code {
        // Out of connections or resources, shutting down: the server could not serve.
        ER_CON_COUNT_ERROR | ER_OUT_OF_RESOURCES | ER_SERVER_SHUTDOWN | ER_TOO_MANY_USER_CONNECTIONS => Finding::ServerCouldNotServe,
        // A read that failed or timed out mid-packet: the connection broke under it.
        ER_NET_READ_ERROR | ER_NET_READ_INTERRUPTED => Finding::DamagedPackets,
        // Credentials, account, database, host not allowed or blocked after the client's
        // own errors, a bad handshake, an auth method the client insists on; packets out
        // of order or not uncompressable: another protocol on the port (TCP's checksums
        // keep damage by the network out of the stream).
        _ => Finding::ClientRefused,
    }
}

/// The server waited for the client in vain: lost on the way, or never sent. Only
/// retransmits tell the two apart, and only a local client's own are seen.
fn timed_out(h: &Handshake, wait: &TimeoutWait, greeting_retransmits: u64) -> (Finding, Vec<Evidence>) {
    let silent = Evidence::ClientSilent { ns: client_silent_ns(h), awaited: wait.waiting_for };
    if greeting_retransmits > 0 {
        return (Finding::LossTowardClient, vec![Evidence::GreetingRetransmitted { times: greeting_retransmits }, silent]);
    }
    if let Some((finding, mut evidence)) = lost_packets(h) {
        evidence.push(silent);
        return (finding, evidence);
    }
    let Some(greeting) = h.greeting_ns else {
        // It gave up on a client it never greeted (waiting for a proxy header, say).
        return (Finding::ServerClosed, vec![Evidence::GreetingNotSent { within_ns: h.total_ns() }, silent]);
    };
    let mut evidence = vec![Evidence::GreetingDelivered { at_ns: greeting - h.accept_ns }];
    let (finding, whose) =
        if is_local(h) { (Finding::ClientStalled, Evidence::LocalClient) } else { (Finding::ClientOrNetwork, Evidence::RemoteClient) };
    evidence.extend([whose, silent]);
    (finding, evidence)
}

/// Retransmits on either side: the client's own first (the packet it could not get through).
fn lost_packets(h: &Handshake) -> Option<(Finding, Vec<Evidence>)> {
    match (client_retransmits(h), retransmits(h)) {
        (0, 0) => None,
        (0, times) => Some((Finding::LossSeen, vec![Evidence::ServerRetransmitted { times }])),
        (times, 0) => Some((Finding::LossTowardServer, vec![Evidence::ClientRetransmitted { times }])),
        (c, s) => Some((Finding::LossTowardServer, vec![Evidence::ClientRetransmitted { times: c }, Evidence::ServerRetransmitted { times: s }])),
    }
}

/// The client closed or reset: because the server kept it waiting for the greeting,
/// because packets were lost, as a port check, or of its own accord.
fn client_gone(h: &Handshake, late: Option<LateGreeting>, probe: bool, reset: bool) -> (Finding, Vec<Evidence>) {
    let (at, reset) = client_left(h).unwrap_or((h.end_ns.unwrap_or(h.accept_ns), reset));
    let left = Evidence::ClientLeftAt { ns: at.saturating_sub(h.accept_ns), reset };
    match late {
        Some(LateGreeting::SentAfter { ns }) => {
            return (Finding::SlowGreeting, vec![Evidence::GreetingLate { at_ns: ns, idle_ns: idle_before_greeting(h) }, left])
        }
        Some(LateGreeting::NotSent) => {
            return (Finding::SlowGreeting, vec![Evidence::GreetingNotSent { within_ns: h.total_ns() }, left]);
        }
        None => {}
    }
    if let Some((finding, mut evidence)) = lost_packets(h) {
        evidence.push(left);
        return (finding, evidence);
    }
    if probe {
        return (Finding::PortCheck, vec![left, Evidence::NoByteSent]);
    }
    (Finding::ClientLeft, vec![left])
}

/// When the client's FIN or RST was first seen (a TCP state change or reset, else the
/// server's read of it), and whether it was a reset (a client may close, then reset
/// when the late greeting reaches its closed socket).
fn client_left(h: &Handshake) -> Option<(u64, bool)> {
    let close_wait = handshake_trace_common::tcp_state::CLOSE_WAIT;
    h.steps.iter().find_map(|s| match &s.what {
        StepKind::Tcp(TcpWhat::ReceiveReset) => Some((s.ts_ns, true)),
        StepKind::Tcp(TcpWhat::State { new, .. }) if *new == close_wait => Some((s.ts_ns, false)),
        StepKind::Read { result: SyscallResult::Ok(0), .. } => Some((s.ts_ns, false)),
        StepKind::Read { result: SyscallResult::Err(e), .. } if *e == crate::events::Errno::ECONNRESET => Some((s.ts_ns, true)),
        StepKind::Omitted(o) => o.client_left,
        _ => None,
    })
}

/// From the client's last byte (or the greeting) to the end.
fn client_silent_ns(h: &Handshake) -> u64 {
    let last_data = h.steps.iter().rev().find_map(|s| match &s.what {
        StepKind::Read { result: SyscallResult::Ok(n), .. } if *n > 0 => Some(s.ts_ns),
        StepKind::Omitted(o) => o.last_data_read_ns,
        _ => None,
    });
    let from = last_data.max(h.greeting_ns).unwrap_or(h.accept_ns);
    // The end as the handshake's duration has it: its end, else its last step (a
    // handshake ended by the server's ERR is judged before its end is stamped).
    (h.accept_ns + h.total_ns()).saturating_sub(from)
}

/// The longest stretch before the greeting with no syscall on the connection (the
/// server busy elsewhere); TCP events and signals come while it is busy and do not count.
fn idle_before_greeting(h: &Handshake) -> u64 {
    let Some(greeting) = h.greeting_ns else { return 0 };
    let mut prev = h.accept_ns;
    let mut longest = 0;
    for s in h.steps.iter().filter(|s| s.ts_ns <= greeting) {
        if matches!(s.what, StepKind::Tcp(_) | StepKind::Signal { .. }) {
            continue;
        }
        // Steps left out: the server was busy from their first to their last.
        if let StepKind::Omitted(o) = &s.what {
            longest = longest.max(o.first_ns.saturating_sub(prev));
            prev = prev.max(o.last_ns);
            continue;
        }
        longest = longest.max(s.ts_ns.saturating_sub(prev));
        prev = s.ts_ns;
    }
    longest
}

/// A client on this host: its socket is in this kernel, so its retransmits are seen.
fn is_local(h: &Handshake) -> bool {
    h.unix || matches!((h.client, h.server), (Some(c), s) if same_host(c, s))
}

fn same_host(client: SocketAddr, server: Option<SocketAddr>) -> bool {
    let ip = client.ip().to_canonical();
    ip.is_loopback() || server.is_some_and(|s| s.ip().to_canonical() == ip)
}

#[cfg(test)]
mod tests;
