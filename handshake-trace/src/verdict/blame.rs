//! Whose side a handshake's failure is on — the client, the network between, the
//! server — decided from its [`Judgement`] and evidence (rule: docs/verdicts.md,
//! "Blame"). Data only: the words are in `output::names`.
use super::{Cause, Judgement, Verdict};
use crate::{
    correlate::{Handshake, StepKind},
    events::TcpWhat,
    protocol::errors::*,
};

/// Whose side a handshake's end is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Blame {
    /// It went well.
    None,
    /// The client sent something the server refused, or gave up, or stayed silent.
    Client,
    /// TCP retransmitted during a handshake the client or the server abandoned.
    Network,
    /// The server refused for want of resources, or closed for a reason of its own.
    Server,
    /// Not seen to its end.
    Unknown,
}

impl Blame {
    pub const ALL: [Blame; 5] = [Blame::None, Blame::Client, Blame::Network, Blame::Server, Blame::Unknown];
}

/// TCP retransmits seen during the handshake.
pub fn retransmits(h: &Handshake) -> u64 {
    h.steps.iter().filter(|s| matches!(s.what, StepKind::Tcp(TcpWhat::Retransmit))).count() as u64
}

/// Whose side a judged handshake's end is on; `retransmits` as [`retransmits`] counts them.
pub fn blame(j: &Judgement, retransmits: u64) -> Blame {
    let lost_packets = retransmits > 0;
    match (&j.verdict, &j.cause) {
        (Verdict::Ok, _) => Blame::None,
        (Verdict::Incomplete, _) => Blame::Unknown,
        (_, Cause::ErrSent { code }) => error_blame(*code),
        // Inside TLS: an ERR to the login whose code is encrypted, most often refused credentials.
        (_, Cause::TlsClosedAfterReply) => Blame::Client,
        // The client never sent what the server waited for: lost on the way, or never sent.
        (_, Cause::ServerTimedOut { .. }) if lost_packets => Blame::Network,
        (_, Cause::ServerTimedOut { .. }) => Blame::Client,
        // The client gave up: on a greeting that came late (or never), the server made it wait.
        (_, Cause::ClientClosed { late_greeting: Some(_) } | Cause::ClientReset { late_greeting: Some(_) }) => Blame::Server,
        (_, Cause::ClientClosed { .. } | Cause::ClientReset { .. }) if lost_packets => Blame::Network,
        (_, Cause::ClientClosed { .. } | Cause::ClientReset { .. }) => Blame::Client,
        _ => Blame::Server,
    }
}

/// Whose side an ERR to the login is on.
fn error_blame(code: u16) -> Blame {
    match code {
        // Out of connections or resources, shutting down: the server could not serve.
        ER_CON_COUNT_ERROR | ER_OUT_OF_RESOURCES | ER_SERVER_SHUTDOWN | ER_TOO_MANY_USER_CONNECTIONS => Blame::Server,
        // Damaged or lost packets on the way in.
        ER_NET_PACKETS_OUT_OF_ORDER | ER_NET_READ_ERROR | ER_NET_READ_INTERRUPTED | ER_NET_UNCOMPRESS_ERROR => Blame::Network,
        // Credentials, account, database, host not allowed or blocked after the client's
        // own errors, a bad handshake, an auth method the client insists on.
        _ => Blame::Client,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::{Awaited, LateGreeting, TimeoutWait, WaitMechanism};

    fn j(verdict: Verdict, cause: Cause) -> Judgement {
        Judgement { verdict, cause, client_report: None, probe: false }
    }

    fn timed_out() -> Cause {
        let wait = TimeoutWait { mechanism: WaitMechanism::Poll, timeout_ms: Some(2000), waited_ns: 2_000_000_000, waiting_for: Awaited::Login, signal_from: None };
        Cause::ServerTimedOut { wait, reset: true, then_err: None, greeting_retransmits: 0 }
    }

    #[test]
    fn each_end_is_on_one_side() {
        let cases = [
            (j(Verdict::Ok, Cause::LoggedIn), 0, Blame::None),
            (j(Verdict::Ok, Cause::LoggedIn), 3, Blame::None),
            (j(Verdict::AuthFailed, Cause::ErrSent { code: ER_ACCESS_DENIED_ERROR }), 0, Blame::Client),
            (j(Verdict::ServerError, Cause::ErrSent { code: ER_CON_COUNT_ERROR }), 0, Blame::Server),
            (j(Verdict::ServerError, Cause::ErrSent { code: ER_HOST_IS_BLOCKED }), 0, Blame::Client),
            (j(Verdict::ServerError, Cause::ErrSent { code: ER_NET_PACKETS_OUT_OF_ORDER }), 0, Blame::Network),
            (j(Verdict::ServerTimeout, timed_out()), 0, Blame::Client),
            (j(Verdict::ServerTimeout, timed_out()), 2, Blame::Network),
            (j(Verdict::ClientClosed, Cause::ClientClosed { late_greeting: None }), 0, Blame::Client),
            (j(Verdict::ClientClosed, Cause::ClientClosed { late_greeting: None }), 1, Blame::Network),
            (j(Verdict::ClientReset, Cause::ClientReset { late_greeting: Some(LateGreeting::NotSent) }), 0, Blame::Server),
            (j(Verdict::ServerClosed, Cause::ServerClosedUnexplained), 0, Blame::Server),
            (j(Verdict::Incomplete, Cause::StillOpen), 0, Blame::Unknown),
        ];
        for (judgement, retransmits, want) in cases {
            assert_eq!(blame(&judgement, retransmits), want, "{judgement:?} with {retransmits} retransmits");
        }
    }
}
