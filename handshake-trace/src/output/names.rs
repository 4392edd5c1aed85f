//! The words for the tool's enums: verdict and mechanism identifiers (as in JSON
//! and the summary) and the phrases used inside sentences.
use crate::{
    events::Errno,
    verdict::{Awaited, Verdict, WaitMechanism},
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
pub fn addr(a: Option<std::net::SocketAddr>) -> String {
    a.map(|a| a.to_string()).unwrap_or_else(|| "?".into())
}
