//! Handshakes for people (a line, or a timeline in words) and for machines (JSON). Pure.
use std::{
    collections::BTreeMap,
    fmt::{self, Write as _},
};

use handshake_trace_common::sockopt::{
    SOL_SOCKET, SO_LINGER, SO_RCVTIMEO_NEW, SO_RCVTIMEO_OLD, SO_SNDTIMEO_NEW, SO_SNDTIMEO_OLD,
};
use serde::Serialize;

use crate::{
    support::clock::{format_rfc3339, format_time_of_day, Clock},
    correlate::{Handshake, Reply, Step, StepKind, Verdict},
    events::{signal_name, tcp_state_name, SyscallKind, SyscallResult, TcpWhat},
    protocol,
};

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn addr(a: Option<std::net::SocketAddr>) -> String {
    a.map(|a| a.to_string()).unwrap_or_else(|| "?".into())
}

/// The client's address, or that it came over a Unix socket.
fn client_addr(h: &Handshake) -> String {
    if h.unix { "unix-socket".into() } else { addr(h.client) }
}

/// "user@database" style identity, as far as the login showed it.
fn who(h: &Handshake) -> String {
    match &h.login {
        Some(l) => format!(
            "user '{}'{}",
            l.user,
            l.database.as_deref().map(|d| format!(" db '{d}'")).unwrap_or_default()
        ),
        None if h.tls => "TLS".into(),
        None => "no login".into(),
    }
}

/// One line for a handshake that needs no timeline.
pub fn handshake_line(h: &Handshake, clock: &Clock) -> String {
    let p = h.phases();
    let part = |name: &str, v: Option<u64>| v.map(|v| format!(" {name} {:.1}", ms(v))).unwrap_or_default();
    format!(
        "{} {:<14} {} -> {} pid {} fd {} {} {:.1} ms (ms:{}{}{})",
        format_time_of_day(clock.wall(h.accept_ns)),
        h.verdict.map(Verdict::as_str).unwrap_or("?"),
        client_addr(h),
        addr(h.server),
        h.pid,
        h.fd,
        who(h),
        ms(p.total_ns),
        part("greeting", p.to_greeting_ns),
        part("login", p.to_login_ns),
        part("auth", p.to_reply_ns),
    )
}

fn result_text(r: SyscallResult) -> String {
    match r {
        SyscallResult::Ok(n) => n.to_string(),
        SyscallResult::Err(e) => e.describe(),
    }
}

fn sockopt_name(level: u64, name: u64) -> String {
    match (level, name) {
        (SOL_SOCKET, SO_LINGER) => "SO_LINGER".into(),
        (SOL_SOCKET, SO_RCVTIMEO_OLD | SO_RCVTIMEO_NEW) => "SO_RCVTIMEO".into(),
        (SOL_SOCKET, SO_SNDTIMEO_OLD | SO_SNDTIMEO_NEW) => "SO_SNDTIMEO".into(),
        // Not followed since the kernel's filter; older recordings may hold them.
        (1, 9) => "SO_KEEPALIVE".into(),
        (1, 7) => "SO_SNDBUF".into(),
        (1, 8) => "SO_RCVBUF".into(),
        (6, 1) => "TCP_NODELAY".into(),
        (0, 1) => "IP_TOS".into(),
        (41, 67) => "IPV6_TCLASS".into(),
        _ => format!("level {level} option {name}"),
    }
}

/// A step in words a MySQL engineer knows.
pub fn describe_step(h: &Handshake, s: &Step) -> String {
    let mut text = String::new();
    let _ = write_step(h, s, &mut text);
    text
}

/// A step in words, written where it goes (the JSON record, a timeline) without a
/// string of its own: a busy tracer writes a dozen per handshake.
pub fn write_step(h: &Handshake, s: &Step, f: &mut dyn fmt::Write) -> fmt::Result {
    match &s.what {
        StepKind::Accepted { listen_fd, client } if *listen_fd < 0 => {
            write!(f, "accept (already waiting when tracing began) → fd {} from {}", h.fd, addr(*client))
        }
        StepKind::Accepted { listen_fd, .. } if h.unix => {
            write!(f, "accept on listening fd {listen_fd} → fd {} from a Unix-socket client", h.fd)
        }
        StepKind::Accepted { listen_fd, client } => {
            write!(f, "accept on listening fd {listen_fd} → fd {} from {}", h.fd, addr(*client))
        }
        StepKind::Handoff { from_tid } => write!(f, "handler thread {} takes the connection from thread {from_tid}", s.tid),
        StepKind::Blocking { nonblocking } => f.write_str(if *nonblocking {
            "fcntl(F_SETFL, O_NONBLOCK): socket non-blocking"
        } else {
            "fcntl(F_SETFL): socket switched to blocking"
        }),
        StepKind::SocketOption { level, name, value, value2 } => match (level, name) {
            (&SOL_SOCKET, &SO_LINGER) => {
                let (on, secs) = (value & 0xffff_ffff, value >> 32);
                if on != 0 && secs == 0 {
                    f.write_str("setsockopt(SO_LINGER {on, 0 s}): close will reset the connection (RST)")
                } else {
                    write!(f, "setsockopt(SO_LINGER {{{}, {secs} s}})", if on != 0 { "on" } else { "off" })
                }
            }
            (&SOL_SOCKET, &(SO_RCVTIMEO_OLD | SO_SNDTIMEO_OLD | SO_RCVTIMEO_NEW | SO_SNDTIMEO_NEW)) => {
                write!(f, "setsockopt({} = {} ms)", sockopt_name(*level, *name), value * 1000 + value2 / 1000)
            }
            _ => write!(f, "setsockopt({} = {})", sockopt_name(*level, *name), value & 0xffff_ffff),
        },
        StepKind::Read { syscall, result, requested, nonblocking, duration_ns, packets } => {
            let mode = if *nonblocking { "non-blocking" } else { "blocking" };
            let what = if h.login_ns.map(|t| t < s.ts_ns).unwrap_or(false) || h.tls {
                "from the client"
            } else if *requested == 4 {
                "of the login header"
            } else {
                "of the login"
            };
            write!(f, "{mode} {} {what} ({requested} bytes) → ", syscall.name())?;
            match result {
                SyscallResult::Ok(0) => f.write_str("0: the client closed the connection")?,
                SyscallResult::Ok(n) => write!(f, "{n} bytes")?,
                SyscallResult::Err(e) if e.0 == 11 => f.write_str("EAGAIN (nothing to read yet)")?,
                SyscallResult::Err(e) if e.0 == 4 => f.write_str("EINTR (interrupted by a signal)")?,
                SyscallResult::Err(e) => f.write_str(&e.describe())?,
            }
            if !*nonblocking && *duration_ns > 1_000_000 {
                write!(f, " after {:.1} ms", ms(*duration_ns))?;
            }
            packets.iter().try_for_each(|p| write!(f, "; {p}"))
        }
        StepKind::Write { syscall, result, packets } => {
            write!(f, "{} → ", syscall.name())?;
            match result {
                SyscallResult::Ok(n) => write!(f, "{n} bytes")?,
                SyscallResult::Err(e) => f.write_str(&e.describe())?,
            }
            packets.iter().try_for_each(|p| write!(f, "; {p}"))
        }
        StepKind::Wait { syscall, timeout_ms, result, duration_ns } => {
            write!(f, "{}(fd {}, ", syscall.name(), h.fd)?;
            match timeout_ms {
                Some(t) => write!(f, "{t} ms) → ")?,
                None => f.write_str("no timeout) → ")?,
            }
            match result {
                SyscallResult::Ok(0) => write!(f, "timed out after {:.1} ms", ms(*duration_ns)),
                SyscallResult::Ok(_) => write!(f, "readable after {:.1} ms", ms(*duration_ns)),
                SyscallResult::Err(e) => write!(f, "{} after {:.1} ms", e.describe(), ms(*duration_ns)),
            }
        }
        StepKind::Timer { syscall, ms: t, result } => {
            write!(f, "{}({t} ms) → {}: a timer armed", syscall.name(), result_text(*result))
        }
        StepKind::Kill { syscall, target, signal } => {
            write!(f, "{}({target}, {}) by thread {}", syscall.name(), signal_name(*signal), s.tid)
        }
        StepKind::Signal { signal, from_tid, to_tid, delivered } => {
            if *delivered {
                write!(f, "{} delivered to thread {to_tid}", signal_name(*signal))
            } else {
                write!(f, "{} sent by thread {from_tid} to thread {to_tid}", signal_name(*signal))
            }
        }
        StepKind::Tcp(w) => match w {
            TcpWhat::Retransmit => f.write_str("TCP retransmit"),
            TcpWhat::SendReset => f.write_str("TCP RST sent to the client"),
            TcpWhat::ReceiveReset => f.write_str("TCP RST received from the client"),
            TcpWhat::State { old, new } => write!(f, "TCP {} → {}", tcp_state_name(*old), tcp_state_name(*new)),
        },
        StepKind::Shutdown { how } => {
            write!(f, "shutdown({})", ["SHUT_RD", "SHUT_WR", "SHUT_RDWR"].get(*how as usize).unwrap_or(&"?"))
        }
        StepKind::Close { result, linger0 } => {
            let reply = if h.reply.is_some() { "" } else { ", no error packet sent" };
            if *linger0 {
                write!(f, "SO_LINGER 0 + close → RST{reply}")
            } else {
                write!(f, "close → {}{reply}", result_text(*result))
            }
        }
        StepKind::TrackingEnd { reason } => match *reason {
            1 => f.write_str("handshake over: no longer traced"),
            2 => f.write_str("TLS connection past its handshake: no longer traced"),
            r => write!(f, "no longer traced (reason {r})"),
        },
        StepKind::Note(n) => f.write_str(n),
    }
}

/// A step's words as a JSON string, escaped as they are written.
struct StepText<'a> {
    h: &'a Handshake,
    s: &'a Step,
}

impl fmt::Display for StepText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_step(self.h, self.s, f)
    }
}

impl Serialize for StepText<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Gaps longer than this between steps are pointed out in the text timeline.
const GAP_NS: u64 = 100_000_000;

/// The full timeline of a handshake, in words.
pub fn handshake_timeline(h: &Handshake, clock: &Clock) -> String {
    let mut out = String::new();
    let conn_id = h.greeting.as_ref().map(|g| format!(" connection id {}", g.connection_id)).unwrap_or_default();
    out.push_str(&format!(
        "{} {} {} -> {} pid {} fd {}{} {} ({:.1} ms)\n",
        format_time_of_day(clock.wall(h.accept_ns)),
        h.verdict.map(Verdict::as_str).unwrap_or("?").to_uppercase(),
        client_addr(h),
        addr(h.server),
        h.pid,
        h.fd,
        conn_id,
        who(h),
        ms(h.total_ns()),
    ));
    out.push_str(&format!("  why: {}\n", h.reason));
    if let Some(e) = &h.client_error {
        out.push_str(&format!("  the client most likely reported: {e}\n"));
    }
    let mut prev = h.accept_ns;
    for s in &h.steps {
        // A long stretch with no syscall on this connection that the step itself does not
        // account for (a wait or a blocking read does): the handler was busy elsewhere.
        let own = match &s.what {
            StepKind::Read { duration_ns, .. } | StepKind::Wait { duration_ns, .. } => *duration_ns,
            _ => 0,
        };
        // Signals, kills and TCP events happen while the handler is blocked: no gap there.
        let own_syscall = !matches!(s.what, StepKind::Signal { .. } | StepKind::Kill { .. } | StepKind::Tcp(_) | StepKind::Note(_));
        let gap = s.ts_ns.saturating_sub(prev).saturating_sub(own);
        if own_syscall && gap >= GAP_NS {
            out.push_str(&format!(
                "  {:>14}  … {:.1} ms with no syscall on this connection: the server was busy elsewhere (name resolution, a lock, CPU)\n",
                "",
                ms(gap)
            ));
        }
        prev = s.ts_ns;
        let _ = writeln!(
            out,
            "  {:>+11.3} ms  [{}] {}",
            h.ms_since_accept(s.ts_ns),
            if s.tid == 0 { "kernel".to_string() } else { s.tid.to_string() },
            StepText { h, s }
        );
    }
    out
}

fn step_event_name(k: &StepKind) -> &'static str {
    match k {
        StepKind::Accepted { .. } => "accept",
        StepKind::Handoff { .. } => "handoff",
        StepKind::Read { .. } => "read",
        StepKind::Write { .. } => "write",
        StepKind::Wait { .. } => "wait",
        StepKind::Blocking { .. } => "fcntl",
        StepKind::SocketOption { .. } => "setsockopt",
        StepKind::Timer { .. } => "timer",
        StepKind::Kill { .. } => "kill",
        StepKind::Signal { delivered: true, .. } => "signal_deliver",
        StepKind::Signal { .. } => "signal_generate",
        StepKind::Tcp(_) => "tcp",
        StepKind::Shutdown { .. } => "shutdown",
        StepKind::Close { .. } => "close",
        StepKind::TrackingEnd { .. } => "tracking_end",
        StepKind::Note(_) => "note",
    }
}

fn syscall_of(k: &StepKind) -> Option<SyscallKind> {
    match k {
        StepKind::Read { syscall, .. } | StepKind::Write { syscall, .. } | StepKind::Wait { syscall, .. } => Some(*syscall),
        StepKind::Timer { syscall, .. } | StepKind::Kill { syscall, .. } => Some(*syscall),
        StepKind::Blocking { .. } => Some(SyscallKind::Fcntl),
        StepKind::SocketOption { .. } => Some(SyscallKind::Setsockopt),
        StepKind::Close { .. } => Some(SyscallKind::Close),
        StepKind::Shutdown { .. } => Some(SyscallKind::Shutdown),
        _ => None,
    }
}

fn opt_ms(v: Option<u64>) -> Option<f64> {
    v.map(|v| (ms(v) * 1000.0).round() / 1000.0)
}

// The JSON record as typed structs: one per handshake, so no map of boxed values
// is built and torn down each time. Fields are declared in alphabetical order, the
// order the output has always had (docs/json.md).

#[derive(Serialize)]
struct ErrorJson<'a> {
    code: u16,
    message: &'a str,
    name: Option<&'static str>,
    sqlstate: Option<&'a str>,
}

#[derive(Serialize)]
struct WaitJson {
    mechanism: &'static str,
    signal_from_tid: Option<u32>,
    timeout_ms: Option<u64>,
    waited_ms: f64,
    waiting_for: &'static str,
}

#[derive(Serialize)]
struct StepJson<'a> {
    event: &'static str,
    syscall: Option<&'static str>,
    t_ms: f64,
    text: StepText<'a>,
    tid: u32,
}

#[derive(Serialize)]
struct PhasesJson {
    handoff: Option<f64>,
    to_greeting: Option<f64>,
    to_login: Option<f64>,
    to_reply: Option<f64>,
    total: Option<f64>,
}

/// One finished handshake (fields: docs/json.md).
#[derive(Serialize)]
pub struct HandshakeJson<'a> {
    accept_tid: u32,
    auth_plugin: Option<&'a str>,
    auth_response_len: Option<usize>,
    auth_switch: Option<&'a str>,
    client: Option<String>,
    client_attrs: BTreeMap<&'a str, &'a str>,
    client_error: Option<&'a str>,
    connection_id: Option<u32>,
    database: Option<&'a str>,
    error: Option<ErrorJson<'a>>,
    events: Vec<StepJson<'a>>,
    fd: i32,
    handler_tid: Option<u32>,
    listen_fd: i32,
    phases_ms: PhasesJson,
    pid: u32,
    reason: &'a str,
    server: Option<String>,
    server_version: Option<&'a str>,
    time: String,
    tls: bool,
    unix_socket: bool,
    user: Option<&'a str>,
    verdict: Option<&'static str>,
    wait: Option<WaitJson>,
}

impl std::fmt::Display for HandshakeJson<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&serde_json::to_string(self).map_err(|_| std::fmt::Error)?)
    }
}

/// One JSON object per finished handshake (fields: docs/json.md).
pub fn handshake_json<'a>(h: &'a Handshake, clock: &Clock) -> HandshakeJson<'a> {
    let p = h.phases();
    let error = match &h.reply {
        Some(Reply::Err(e)) => Some(ErrorJson {
            code: e.code,
            message: &e.message,
            name: protocol::error_name(e.code),
            sqlstate: e.sqlstate.as_deref(),
        }),
        _ => None,
    };
    let wait = h.timeout.as_ref().map(|t| WaitJson {
        mechanism: t.mechanism.as_str(),
        signal_from_tid: t.signal_from,
        timeout_ms: t.timeout_ms,
        waited_ms: (ms(t.waited_ns) * 1000.0).round() / 1000.0,
        waiting_for: t.waiting_for,
    });
    let events = h
        .steps
        .iter()
        .map(|s| StepJson {
            event: step_event_name(&s.what),
            syscall: syscall_of(&s.what).map(|k| k.name()),
            t_ms: (h.ms_since_accept(s.ts_ns) * 1000.0).round() / 1000.0,
            text: StepText { h, s },
            tid: s.tid,
        })
        .collect();
    let login = h.login.as_ref();
    HandshakeJson {
        accept_tid: h.accept_tid,
        auth_plugin: login
            .and_then(|l| l.auth_plugin.as_deref())
            .or_else(|| h.greeting.as_ref().and_then(|g| g.auth_plugin.as_deref())),
        auth_response_len: login.map(|l| l.auth_response_len),
        auth_switch: h.auth_switch.as_deref(),
        client: h.client.map(|a| a.to_string()),
        client_attrs: login.map(|l| l.attrs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect()).unwrap_or_default(),
        client_error: h.client_error.as_deref(),
        connection_id: h.greeting.as_ref().map(|g| g.connection_id),
        database: login.and_then(|l| l.database.as_deref()),
        error,
        events,
        fd: h.fd,
        handler_tid: h.handler_tid,
        listen_fd: h.listen_fd,
        phases_ms: PhasesJson {
            handoff: opt_ms(p.handoff_ns),
            to_greeting: opt_ms(p.to_greeting_ns),
            to_login: opt_ms(p.to_login_ns),
            to_reply: opt_ms(p.to_reply_ns),
            total: opt_ms(Some(p.total_ns)),
        },
        pid: h.pid,
        reason: &h.reason,
        server: h.server.map(|a| a.to_string()),
        server_version: h.greeting.as_ref().map(|g| g.server_version.as_str()),
        time: format_rfc3339(clock.wall(h.accept_ns)),
        tls: h.tls,
        unix_socket: h.unix,
        user: login.map(|l| l.user.as_str()),
        verdict: h.verdict.map(Verdict::as_str),
        wait,
    }
}
