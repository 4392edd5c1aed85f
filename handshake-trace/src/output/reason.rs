//! A verdict's cause and the client's likely report, in sentences.
use std::fmt::{self, Write};

use super::names;
use crate::support::escape::Escaped;
use crate::{
    config,
    pipeline::{
        host_errors::{Counts, WARN_PERCENT},
        HostNote, HostWarning,
    },
    protocol,
    verdict::{Cause, ClientReport, LateGreeting, LostAt, ProxyRefusal, TimeoutWait, Verdict, WaitMechanism},
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
            "kernel events were lost while this handshake was open (the ring buffer or a map was full): not judged from what is left",
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

/// Where a setting came from: "the server's command line", "/etc/mysql/my.cnf:12",
/// "MariaDB's default", "--connect-timeout" (`flag`: the tracer's own flag for it).
pub fn source(s: &config::Source, flag: &str) -> String {
    match s {
        config::Source::Default => "MariaDB 10.11's default: set nowhere".into(),
        config::Source::CommandLine => "the server's command line".into(),
        config::Source::File { path, line } => format!("{}:{line}", Escaped(path)),
        config::Source::Flag => format!("this tracer's {flag}"),
    }
}

/// "2 s (the server's command line{more})", noting when the server adjusted the value.
fn setting_s(s: &config::Setting<u64>, flag: &str, more: &str) -> String {
    let adjusted = if s.adjusted { ", adjusted into its range by the server" } else { "" };
    format!("{} s ({}{adjusted}{more})", s.value, source(&s.source, flag))
}

/// The server's connect_timeout beside the wait that ran out: what it is, where it was
/// set, and whether the wait the syscalls showed agrees with it.
pub fn connect_timeout(cfg: &config::ServerConfig, wait: &TimeoutWait) -> String {
    let ct = &cfg.connect_timeout_s;
    let flag = "--connect-timeout";
    match wait.timeout_ms {
        Some(ms) if ms == ct.value * 1000 => {
            format!("the server's connect_timeout is {}: the timeout it waited with", setting_s(ct, flag, ""))
        }
        Some(ms) => format!(
            "the server waited with a {ms} ms timeout, not its connect_timeout of {}: \
             changed since (SET GLOBAL connect_timeout), or another wait",
            setting_s(ct, flag, ", as read at its start")
        ),
        None => format!(
            "the server's connect_timeout is {}: it waits that long for each packet of the handshake",
            setting_s(ct, flag, "; as read at its start, SET GLOBAL may have changed it")
        ),
    }
}

/// What keeps a server from a connection between its syscalls, without the causes
/// the facts rule out: "(name resolution, a lock, CPU)".
pub fn busy_elsewhere(lookup: config::NameLookup) -> &'static str {
    match lookup {
        config::NameLookup::Possible => "(name resolution, a lock, CPU)",
        config::NameLookup::SkippedByConfig => "(a lock, CPU; not name resolution: the server runs with skip-name-resolve)",
        config::NameLookup::Loopback => "(a lock, CPU; not name resolution: the server looks up no name for 127.0.0.1 or ::1)",
        config::NameLookup::UnixSocket => "(a lock, CPU; not name resolution: a Unix-socket client has no address)",
    }
}

fn verdict_note(verdict: Verdict, probe: bool, code: Option<u16>) -> String {
    let mut s = names::verdict(verdict).to_string();
    if probe {
        s.push_str(" (port check)");
    }
    if let Some(code) = code {
        let _ = write!(s, " (ERR {code} {})", protocol::error_name(code).unwrap_or("?"));
    }
    s
}

/// "4 server_timeout, 3 client_reset (port check)".
pub fn verdict_counts(by: &[(Verdict, bool, u64)]) -> String {
    by.iter().map(|(v, probe, n)| format!("{n} {}", verdict_note(*v, *probe, None))).collect::<Vec<_>>().join(", ")
}

/// How to unblock a host, and how not to be blocked again.
pub const HOST_REMEDY: &str = "FLUSH HOSTS (or mariadb-admin flush-hosts) unblocks it now; a successful login from it resets its count; \
     fix what fails (port checks and health checks that connect and close count too) or raise max_connect_errors";

/// The lines that explain a counted handshake's host standing (`time` writes a trace
/// time as the output shows times). Nothing for a count below [`WARN_PERCENT`] of the limit.
pub fn host_note(note: &HostNote, host: Option<std::net::IpAddr>, time: &dyn Fn(u64) -> String) -> Vec<String> {
    let host = host.map(|h| h.to_string()).unwrap_or_else(|| "this host".into());
    let limit = format!("max_connect_errors {} ({})", note.limit.value, source(&note.limit.source, "--max-connect-errors"));
    let since = match note.last_login_ns {
        Some(t) => format!("since its last successful login at {}", time(t)),
        None => "since its last successful login (none seen by this trace)".into(),
    };
    match note.counts {
        Counts::Blocked => {
            let mut lines = Vec::new();
            if note.errors == 0 {
                lines.push(format!(
                    "blocked: the server refused {host} for reaching {limit}; this trace saw none of its errors \
                     (they came before it started, or on another port)"
                ));
            } else {
                let seen = if note.errors < note.limit.value {
                    format!(", {} fewer than the limit: the rest came before this trace started, or on another port", note.limit.value - note.errors)
                } else {
                    String::new()
                };
                lines.push(format!("blocked: {host} reached {limit}: {} handshake error{} {since}{seen}:", note.errors, plural(note.errors)));
                if note.older > 0 {
                    lines.push(format!("  … {} earlier", note.older));
                }
                lines.extend(note.history.iter().map(|p| format!("  {} {}", time(p.at_ns), verdict_note(p.verdict, p.probe, p.code))));
            }
            lines.push(format!("remedy: {HOST_REMEDY}"));
            lines
        }
        Counts::Error if note.errors * 100 >= note.limit.value * WARN_PERCENT => {
            let next = if note.at_limit() {
                "the server refuses its next connection with ERR 1129 (host blocked)".to_string()
            } else {
                let left = note.limit.value - note.errors;
                format!("{left} more and the server blocks it (ERR 1129)")
            };
            let who = if host == "this host" { host } else { format!("host {host}") };
            vec![format!("{who}: {} of {limit} handshake errors {since}: {next}", note.errors)]
        }
        _ => Vec::new(),
    }
}

fn plural(n: u64) -> &'static str {
    if n == 1 { "" } else { "s" }
}

/// A host nearing or at its server's max_connect_errors, as `watch` warns of it.
pub fn host_warning(w: &HostWarning) -> String {
    let limit = format!("max_connect_errors {} ({})", w.limit.value, source(&w.limit.source, "--max-connect-errors"));
    let what = if w.at_limit {
        "the server will refuse its next connection (ERR 1129, host blocked)".to_string()
    } else {
        format!("{} more and the server blocks it (ERR 1129)", w.limit.value.saturating_sub(w.errors))
    };
    format!(
        "host {} has {} handshake error{} since its last successful login on pid {} ({}), {}% of {limit}: {what}; \
         a successful login resets the count, FLUSH HOSTS clears it",
        w.host,
        w.errors,
        plural(w.errors),
        w.pid,
        verdict_counts(&w.by_verdict),
        w.errors * 100 / w.limit.value.max(1),
    )
}

#[cfg(test)]
mod config_words {
    use super::*;
    use crate::{
        config::{NameLookup, ServerConfig, Setting, Source},
        pipeline::host_errors::PastError,
        verdict::Awaited,
    };

    fn wait(timeout_ms: Option<u64>) -> TimeoutWait {
        TimeoutWait { mechanism: WaitMechanism::Poll, timeout_ms, waited_ns: 2_000_000_000, waiting_for: Awaited::Login, signal_from: None }
    }

    #[test]
    fn connect_timeout_is_named_with_its_source_and_checked_against_the_wait() {
        let cfg = ServerConfig { connect_timeout_s: Setting { value: 2, source: Source::CommandLine, adjusted: false }, ..ServerConfig::default() };
        assert_eq!(connect_timeout(&cfg, &wait(Some(2000))), "the server's connect_timeout is 2 s (the server's command line): the timeout it waited with");
        let other = connect_timeout(&cfg, &wait(Some(5000)));
        assert!(other.starts_with("the server waited with a 5000 ms timeout, not its connect_timeout of 2 s"), "{other}");
        let socket = connect_timeout(&ServerConfig::default(), &wait(None));
        assert!(socket.starts_with("the server's connect_timeout is 10 s (MariaDB 10.11's default: set nowhere; as read at its start"), "{socket}");
        let adjusted = ServerConfig { connect_timeout_s: Setting { value: 2, source: Source::Flag, adjusted: true }, ..ServerConfig::default() };
        assert!(connect_timeout(&adjusted, &wait(None)).contains("2 s (this tracer's --connect-timeout, adjusted into its range by the server;"));
    }

    #[test]
    fn busy_elsewhere_names_no_ruled_out_cause() {
        assert!(busy_elsewhere(NameLookup::Possible).contains("name resolution, a lock"));
        for l in [NameLookup::SkippedByConfig, NameLookup::Loopback, NameLookup::UnixSocket] {
            let s = busy_elsewhere(l);
            assert!(s.starts_with("(a lock, CPU; not name resolution"), "{s}");
        }
    }

    #[test]
    fn a_block_lists_what_was_seen_and_says_what_was_not() {
        let limit = Setting { value: 3, source: Source::CommandLine, adjusted: false };
        let e = |at_ns, verdict, probe, code| PastError { at_ns, verdict, probe, code };
        let time = |ns: u64| format!("t{}", ns / 1_000_000);
        let note = HostNote {
            counts: Counts::Blocked,
            errors: 2,
            limit: limit.clone(),
            history: vec![e(1_000_000, Verdict::ClientReset, true, None), e(2_000_000, Verdict::ServerError, false, Some(1043))],
            older: 0,
            last_login_ns: None,
        };
        let lines = host_note(&note, Some("10.0.0.9".parse().unwrap()), &time);
        assert_eq!(
            lines[0],
            "blocked: 10.0.0.9 reached max_connect_errors 3 (the server's command line): 2 handshake errors since its last successful login \
             (none seen by this trace), 1 fewer than the limit: the rest came before this trace started, or on another port:"
        );
        assert_eq!(lines[1..3], ["  t1 client_reset (port check)".to_string(), "  t2 server_error (ERR 1043 ER_HANDSHAKE_ERROR)".to_string()]);
        assert!(lines[3].starts_with("remedy: FLUSH HOSTS"));
        let unseen = host_note(&HostNote { errors: 0, history: vec![], ..note.clone() }, None, &time);
        assert!(unseen[0].contains("this trace saw none of its errors"), "{unseen:?}");
        // Below 80 %: nothing in the timeline (the JSON still has it).
        let low = HostNote { counts: Counts::Error, errors: 1, limit: Setting { value: 10, ..limit }, history: vec![], older: 0, last_login_ns: Some(5_000_000) };
        assert!(host_note(&low, None, &time).is_empty());
        let near = HostNote { errors: 8, ..low };
        assert_eq!(
            host_note(&near, None, &time),
            ["this host: 8 of max_connect_errors 10 (the server's command line) handshake errors since its last successful login at t5: 2 more and the server blocks it (ERR 1129)"]
        );
    }
}
