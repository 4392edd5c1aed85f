//! The words for the tool's enums: verdict and mechanism identifiers (as in JSON
//! and the summary) and the phrases used inside sentences.
use crate::{
    events::Errno,
    protocol::errors::*,
    verdict::{Awaited, Blame, Probe, ProxyRefusal, Verdict, WaitMechanism},
};

/// A verdict as JSON and the summary name it (docs/verdicts.md).
pub fn verdict(v: Verdict) -> &'static str {
    match v {
        Verdict::Ok => "ok",
        Verdict::AuthFailed => "auth_failed",
        Verdict::ServerError => "server_error",
        Verdict::ServerTimeout => "server_timeout",
        Verdict::ClientClosed => "client_closed",
        Verdict::ClientReset => "client_reset",
        Verdict::ServerClosed => "server_closed",
        Verdict::Incomplete => "incomplete",
    }
}

/// A probe kind as JSON and the metrics' `probe` label name it ("none" for the rest).
pub fn probe(p: Option<Probe>) -> &'static str {
    match p {
        Some(Probe::PortCheck) => "port_check",
        Some(Probe::HealthCheck) => "health_check",
        None => "none",
    }
}

/// A probe kind inside a sentence ("3 port checks").
pub fn probe_words(p: Probe) -> &'static str {
    match p {
        Probe::PortCheck => "port check",
        Probe::HealthCheck => "health check",
    }
}

/// The error codes `error_code_label` gives a series of their own, and "other".
pub const ERROR_CODE_LABELS: [&str; 9] = ["1040", "1043", "1045", "1049", "1129", "1130", "1156", "1251", "other"];

/// A verdict, or "?" for a handshake not yet judged.
pub fn verdict_or_unknown(v: Option<Verdict>) -> &'static str {
    v.map(verdict).unwrap_or("?")
}

pub fn mechanism(m: WaitMechanism) -> &'static str {
    match m {
        WaitMechanism::Poll => "poll",
        WaitMechanism::AlarmEintr => "alarm_eintr",
        WaitMechanism::SocketTimeout => "socket_timeout",
        WaitMechanism::NotSeen { .. } => "not_seen",
    }
}

/// Whose side a handshake's end is on, as a metric label (docs/verdicts.md, "Blame").
pub fn blame(b: Blame) -> &'static str {
    match b {
        Blame::None => "none",
        Blame::Client => "client",
        Blame::Network => "network",
        Blame::Server => "server",
        Blame::Unknown => "unknown",
    }
}

/// An ERR code as a metric label: the codes of connection setup worth a series of
/// their own, every other one "other" (a fixed set).
pub fn error_code_label(code: u16) -> &'static str {
    match code {
        ER_CON_COUNT_ERROR => "1040",
        ER_HANDSHAKE_ERROR => "1043",
        ER_ACCESS_DENIED_ERROR => "1045",
        ER_BAD_DB_ERROR => "1049",
        ER_HOST_IS_BLOCKED => "1129",
        ER_HOST_NOT_PRIVILEGED => "1130",
        ER_NET_PACKETS_OUT_OF_ORDER => "1156",
        ER_NOT_SUPPORTED_AUTH_MODE => "1251",
        _ => "other",
    }
}

/// The capture tier that saw a handshake, as `--capture` names it.
pub fn capture(socket_tier: bool) -> &'static str {
    if socket_tier { "socket" } else { "syscalls" }
}

/// Where a handshake's connection is in the server: its fd, or (socket tier) no fd.
pub fn conn_place(h: &crate::correlate::Handshake) -> String {
    if h.socket_tier { "socket tier".to_string() } else { format!("fd {}", h.fd) }
}

/// What the server waited for, as a phrase ("the login packet").
pub fn awaited(a: Awaited) -> &'static str {
    match a {
        Awaited::BeforeGreeting => "nothing (before the greeting)",
        Awaited::Login => "the login packet",
        Awaited::TlsClientHello => "the TLS ClientHello (after the client's SSLRequest)",
        Awaited::TlsData => "TLS data",
        Awaited::MoreAuthData => "more auth data",
    }
}

/// An errno's symbol, or its number.
pub fn errno(e: Errno) -> String {
    match e.symbol() {
        Some(s) => s.to_string(),
        None => format!("errno {}", e.0),
    }
}

/// An errno for people: restart codes are signal interruptions, not unknown errors.
pub fn errno_described(e: Errno) -> String {
    if e.is_restart() {
        format!("interrupted by signal, restarted ({})", errno(e))
    } else {
        errno(e)
    }
}

/// An address, or "?" when it is not known.
pub fn addr(a: Option<std::net::SocketAddr>) -> super::addr::Addr {
    super::addr::Addr(a)
}

/// Why a server refused a PROXY header, as a short identifier.
pub fn proxy_refusal(why: ProxyRefusal) -> &'static str {
    match why {
        ProxyRefusal::UntrustedProxy => "untrusted_proxy",
        ProxyRefusal::Malformed => "malformed_header",
    }
}

/// shutdown(2)'s `how`, as the constant's name.
pub fn shutdown_how(how: u64) -> &'static str {
    ["SHUT_RD", "SHUT_WR", "SHUT_RDWR"].get(how as usize).copied().unwrap_or("?")
}
