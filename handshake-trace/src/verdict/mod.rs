//! How a handshake ended and why, as data: a [`Verdict`], the [`Cause`] with its
//! evidence, and what the client most likely reported. No words here: `output`
//! says each of these in English (docs/verdicts.md).
pub mod blame;
mod judge;
mod tls;

pub use blame::{Attribution, Blame, Evidence, Finding};
pub use judge::judge;

use crate::protocol::ErrPacket;

/// How a handshake ended (docs/verdicts.md).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verdict {
    Ok,
    AuthFailed,
    ServerError,
    ServerTimeout,
    ClientClosed,
    ClientReset,
    ServerClosed,
    Incomplete,
}

impl Verdict {
    pub const ALL: [Verdict; 8] = [
        Verdict::Ok,
        Verdict::AuthFailed,
        Verdict::ServerError,
        Verdict::ServerTimeout,
        Verdict::ClientClosed,
        Verdict::ClientReset,
        Verdict::ServerClosed,
        Verdict::Incomplete,
    ];
}

/// A connection that only checks the server is there: counted, never alarmed
/// (docs/verdicts.md, "Probes"). Its verdict stays what the server counts it as.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Probe {
    /// The client closed or reset without sending a byte (`nc -z`, a TCP check, HAProxy
    /// `mysql-check` without a user), and not because a late greeting made it give up.
    PortCheck,
    /// A login that did nothing: the client pipelined a one-byte command (COM_QUIT,
    /// COM_PING) behind it, or sent a bare login (HAProxy `mysql-check user X`: no
    /// plugin, attributes, database or auth response), or the client program was
    /// mysqladmin / mariadb-admin (`mysqladmin ping`). Only ever `ok`: a health check
    /// that fails is a failure like any other.
    HealthCheck,
}

impl Probe {
    pub const ALL: [Probe; 2] = [Probe::PortCheck, Probe::HealthCheck];
}

/// How the server waited for the client when it timed out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitMechanism {
    /// poll/ppoll/select with a timeout that expired.
    Poll,
    /// A blocking read interrupted by a signal (SIGALRM) from the server's alarm.
    AlarmEintr,
    /// A blocking read with SO_RCVTIMEO that expired (EAGAIN/ETIMEDOUT).
    SocketTimeout,
    /// The socket tier: the server's read found nothing (`read_error`: EAGAIN, or a
    /// blocking read interrupted), nothing came in, and then it closed. How it waited
    /// (poll, a timer, a signal) and with what timeout is not seen.
    NotSeen { read_error: crate::events::Errno },
}

/// What the server was waiting for from the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Awaited {
    /// Nothing yet: it had not sent its greeting.
    BeforeGreeting,
    Login,
    /// The TLS ClientHello an SSLRequest announced.
    TlsClientHello,
    TlsData,
    MoreAuthData,
}

/// The wait that ended a `server_timeout`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TimeoutWait {
    pub mechanism: WaitMechanism,
    /// The timeout the server asked for, when a syscall showed it.
    pub timeout_ms: Option<u64>,
    /// How long it actually waited.
    pub waited_ns: u64,
    pub waiting_for: Awaited,
    /// Thread that sent the interrupting signal (alarm_eintr).
    pub signal_from: Option<u32>,
}

/// The greeting came late or not at all: the client most likely gave up waiting for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LateGreeting {
    SentAfter { ns: u64 },
    NotSent,
}

/// Why the verdict: the evidence it rests on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cause {
    /// The server sent OK to the login.
    LoggedIn,
    /// The server sent ERR `code` (to the login, or instead of the greeting).
    ErrSent { code: u16 },
    /// The connection opened with a PROXY protocol header and the server refused it
    /// with ERR `code` (MariaDB: 1130 from an address outside
    /// `proxy_protocol_networks`, 1105 for a header it could not parse).
    ProxyRefused { code: u16, why: ProxyRefusal },
    /// TLS: the connection went on past the traced part; the reply is encrypted.
    TlsPastHandshake,
    /// TLS: the server's wait timeout changed from the handshake's to the command phase's.
    TlsCommandPhase { handshake_wait_ms: u64, command_wait_ms: u64 },
    /// TLS: the server read the client's last request and closed (a logged-in client quitting).
    TlsClientQuit,
    /// TLS (inferred): the server wrote after the client's last request and closed at
    /// once, as after an ERR to the login; the ERR itself is encrypted.
    TlsClosedAfterReply,
    /// Still open when tracing stopped (or the server exited).
    StillOpen,
    /// Its end was never seen (its fd was reused without a close).
    NotSeenToEnd,
    /// The server process exited (or was killed) mid-handshake.
    ServerExited,
    /// Kernel records were lost while it was open and no OK or ERR was seen: what is
    /// left cannot be judged without risking a wrong verdict.
    EventsLost,
    /// Socket tier: the connection's socket was outside the cgroup the packet programs
    /// watched (its server moved to another cgroup after it listened): no byte seen.
    PacketsUnseen,
    /// The server shut the connection down (`shutdown(how)`) before the client closed
    /// it: a server stopping does this to every connection.
    ServerShutDown { how: u64 },
    /// The server gave up waiting; `reset` = it closed with SO_LINGER 0 (RST).
    /// `then_err`: the ERR it sent as it gave up (MariaDB's 1043 after a TLS stall).
    /// `greeting_retransmits`: TCP retransmitted the greeting this many times and the
    /// client never sent a byte: the greeting was lost on its way to the client (0: not so).
    ServerTimedOut { wait: TimeoutWait, reset: bool, then_err: Option<u16>, greeting_retransmits: u64 },
    ClientReset { late_greeting: Option<LateGreeting> },
    ClientClosed { late_greeting: Option<LateGreeting> },
    /// The server closed without a reply, for a reason not seen in its syscalls.
    ServerClosedUnexplained,
}

/// Why a server refused a PROXY protocol header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyRefusal {
    /// The proxy's address is not one the server accepts headers from
    /// (`proxy_protocol_networks`, empty by default).
    UntrustedProxy,
    /// The header is not a valid one.
    Malformed,
}

/// Where the client was when it lost the connection (its error 2013's text).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LostAt {
    InitialPacket,
    AuthorizationPacket,
}

/// What the client most likely reported.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientReport {
    /// The server's ERR, as the client prints it.
    ServerError(ErrPacket),
    /// An ERR inside TLS: the client printed it, the tool cannot read its code.
    EncryptedError,
    /// Error 2013, with the errno the client saw (104 after a reset, 110 when its own
    /// timeout expired, else 0).
    LostConnection { at: LostAt, errno: i32 },
}

/// A concluded handshake's verdict and its reasons.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Judgement {
    pub verdict: Verdict,
    pub cause: Cause,
    /// For failures the client noticed: what it most likely reported.
    pub client_report: Option<ClientReport>,
    /// A port check or a health check (decided here, once: every sink asks
    /// [`Judgement::is_probe`]). The verdict stays what the server counts it as
    /// (client_closed/client_reset in Aborted_connects for a port check).
    pub probe: Option<Probe>,
    /// Whose side it is on, and the facts that decided it (verdict/blame.rs).
    pub blame: Attribution,
}

impl Judgement {
    /// Counted apart, never alarmed: kept out of failure alerts, /top, flight
    /// recordings and (by default) the abnormal log.
    pub fn is_probe(&self) -> bool {
        self.probe.is_some()
    }

    /// The wait that timed out, for a `server_timeout`.
    pub fn timeout(&self) -> Option<&TimeoutWait> {
        match &self.cause {
            Cause::ServerTimedOut { wait, .. } => Some(wait),
            _ => None,
        }
    }
}

#[cfg(test)]
mod probe_tests;
