//! A verdict's cause and the client's likely report, in sentences.
use std::fmt::{self, Write};

use super::names;
use crate::support::escape::Escaped;
use crate::{
    protocol,
    verdict::{Cause, ClientReport, LateGreeting, LostAt, ProxyRefusal, TimeoutWait, WaitMechanism},
};

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// Why the verdict, in one sentence ("the server waited 2002.1 ms for the login packet ...").
pub fn reason(cause: &Cause) -> String {
    let mut s = String::new();
    let _ = write_reason(cause, &mut s);
    s
}

fn write_reason(cause: &Cause, f: &mut String) -> fmt::Result {
    match cause {
        Cause::LoggedIn => f.write_str("the server sent OK to the login"),
        Cause::ErrSent { code } => {
            let name = protocol::error_name(*code).unwrap_or("unknown error");
            if protocol::is_auth_error(*code) {
                write!(f, "the server refused the login: ERR {code} {name}")
            } else {
                write!(f, "the server sent ERR {code} {name}")
            }
        }
        Cause::ProxyRefused { code, why } => {
            let name = protocol::error_name(*code).unwrap_or("unknown error");
            match why {
                ProxyRefusal::UntrustedProxy => write!(
                    f,
                    "the server refused the PROXY protocol header: ERR {code} {name}; it accepts one only from the addresses in its proxy_protocol_networks, and the proxy's is not among them"
                ),
                ProxyRefusal::Malformed => {
                    write!(f, "the server could not parse the PROXY protocol header the connection opened with: ERR {code} {name}")
                }
            }
        }
        Cause::TlsPastHandshake => f.write_str("TLS: the reply is encrypted; the connection went on past the handshake"),
        Cause::TlsCommandPhase { handshake_wait_ms, command_wait_ms } => write!(
            f,
            "TLS: the server moved on to waiting for commands (wait timeout {command_wait_ms} ms instead of the handshake's {handshake_wait_ms} ms): logged in; the OK itself is encrypted"
        ),
        Cause::TlsClientQuit => f.write_str(
            "TLS: the client logged in and quit (inferred: the reply is encrypted; the server read the client's last request and closed)",
        ),
        Cause::TlsClosedAfterReply => f.write_str(
            "TLS (inferred): the server answered the login with an encrypted reply and closed at once, as it does after an ERR (most often 1045 Access denied); after an OK it would wait for a command",
        ),
        Cause::StillOpen => f.write_str("still open when tracing stopped"),
        Cause::NotSeenToEnd => f.write_str("not seen to end"),
        Cause::ServerExited => f.write_str("the server process exited mid-handshake"),
        Cause::EventsLost => f.write_str(
            "kernel events were lost while this handshake was open (the ring buffer was full): not judged from what is left",
        ),
        Cause::PacketsUnseen => f.write_str(
            "its socket was outside the cgroup the packet programs watched (the server was moved to another cgroup after \
             it opened its listening socket): none of its bytes were seen, so it is not judged; the packet programs \
             moved to the cgroup v2 root for the connections after it",
        ),
        Cause::ServerShutDown { how } => write!(
            f,
            "the server shut the connection down ({}) before the client closed it: the server was stopping or dropped the connection itself",
            names::shutdown_how(*how)
        ),
        Cause::ServerTimedOut { wait, reset, then_err, greeting_retransmits: 0 } => write_timeout(wait, *reset, *then_err, f),
        Cause::ServerTimedOut { wait, reset, then_err, greeting_retransmits: n } => {
            write!(f, "greeting retransmitted {n} time{}, never acknowledged: packet loss toward the client; ", if *n == 1 { "" } else { "s" })?;
            write_timeout(wait, *reset, *then_err, f)
        }
        Cause::ClientReset { late_greeting } => {
            f.write_str("the client reset the connection (RST) before the handshake ended")?;
            write_late_greeting(*late_greeting, f)
        }
        Cause::ClientClosed { late_greeting } => {
            f.write_str("the client closed the connection (read returned 0) before the handshake ended")?;
            write_late_greeting(*late_greeting, f)
        }
        Cause::ServerClosedUnexplained => {
            f.write_str("the server closed the connection without a reply, for a reason not seen in its syscalls")
        }
    }
}

fn write_timeout(t: &TimeoutWait, reset: bool, then_err: Option<u16>, f: &mut String) -> fmt::Result {
    let waiting_for = names::awaited(t.waiting_for);
    match t.mechanism {
        WaitMechanism::Poll => write!(
            f,
            "the server waited {:.1} ms for {waiting_for} (poll, timeout {}), gave up{}",
            ms(t.waited_ns),
            t.timeout_ms.map(|m| format!("{m} ms")).unwrap_or_else(|| "none".into()),
            match (then_err, reset) {
                (Some(code), true) => format!(
                    ", sent ERR {code} {} and reset the connection (SO_LINGER 0)",
                    protocol::error_name(code).unwrap_or("?")
                ),
                (Some(code), false) => format!(", sent ERR {code} {} and closed", protocol::error_name(code).unwrap_or("?")),
                (None, true) => " and closed with a reset (SO_LINGER 0), sending no error".to_string(),
                (None, false) => " and closed without sending an error".to_string(),
            }
        ),
        WaitMechanism::AlarmEintr => write!(
            f,
            "the server's blocking read for {waiting_for} was interrupted by SIGALRM after {:.1} ms; it closed without sending an error",
            ms(t.waited_ns)
        ),
        WaitMechanism::SocketTimeout => write!(
            f,
            "the server's read for {waiting_for} timed out after {:.1} ms (SO_RCVTIMEO); it closed without sending an error",
            ms(t.waited_ns)
        ),
        WaitMechanism::NotSeen { read_error } => write!(
            f,
            "the server's read for {waiting_for} found nothing ({}), nothing came from the client, and {:.1} ms later \
             the server closed{}; how it waited and its timeout are not seen by the socket capture tier (no poll or timer)",
            names::errno_described(read_error),
            ms(t.waited_ns),
            if reset { " with a reset, sending no error" } else { " without sending an error" }
        ),
    }
}

fn write_late_greeting(late: Option<LateGreeting>, f: &mut String) -> fmt::Result {
    match late {
        Some(LateGreeting::SentAfter { ns }) => write!(
            f,
            "; the server took {:.1} ms to send its greeting, so the client most likely gave up waiting for it",
            ms(ns)
        ),
        Some(LateGreeting::NotSent) => {
            f.write_str("; the server had not sent its greeting yet, so the client most likely gave up waiting for it")
        }
        None => Ok(()),
    }
}

/// What the client most likely printed, as the MySQL client prints it.
pub fn client_report(r: &ClientReport) -> String {
    match r {
        ClientReport::ServerError(e) => {
            format!("ERROR {} ({}): {}", e.code, Escaped(e.sqlstate.as_deref().unwrap_or("HY000")), Escaped(&e.message))
        }
        ClientReport::EncryptedError => {
            "an ERROR from the server (its code and message are encrypted: most often 1045 Access denied)".to_string()
        }
        ClientReport::LostConnection { at, errno } => {
            let stage = match at {
                LostAt::InitialPacket => "handshake: reading initial communication packet",
                LostAt::AuthorizationPacket => "reading authorization packet",
            };
            format!("ERROR 2013 (HY000): Lost connection to server at '{stage}', system error: {errno}")
        }
    }
}
