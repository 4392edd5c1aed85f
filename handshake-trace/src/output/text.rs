//! A handshake for people: one line, or its timeline in words.
use std::fmt::Write as _;

use super::{blame, names, reason, step::StepText};
use crate::support::escape::Escaped;
use crate::{
    correlate::{Handshake, StepKind},
    support::clock::{format_time_of_day, Clock},
};

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// The client's address, or that it came over a Unix socket.
fn client_addr(h: &Handshake) -> String {
    if h.unix { "unix-socket".into() } else { names::addr(h.client) }
}

/// "user@database" style identity, as far as the login showed it.
fn who(h: &Handshake) -> String {
    match &h.login {
        Some(l) => format!(
            "user '{}'{}",
            Escaped(&l.user),
            l.database.as_deref().map(|d| format!(" db '{}'", Escaped(d))).unwrap_or_default()
        ),
        None if h.tls => "TLS".into(),
        None => "no login".into(),
    }
}

/// Said at start when a trace cannot show everything (`--capture socket`).
pub fn capture_notice(tier: crate::capture::probes::CaptureTier) -> Option<&'static str> {
    match tier {
        crate::capture::probes::CaptureTier::Syscalls => None,
        crate::capture::probes::CaptureTier::Socket => Some(
            "handshake-trace: socket capture tier: nothing on the syscall path; fds, waits and their \
             timeouts, fcntl, socket options and timers are not seen",
        ),
    }
}

/// " (port check)" after the verdict of a probe.
fn probe_note(h: &Handshake) -> &'static str {
    if h.judgement.as_ref().is_some_and(|j| j.probe) { " (port check)" } else { "" }
}

/// One line for a handshake that needs no timeline.
pub fn handshake_line(h: &Handshake, clock: &Clock) -> String {
    let p = h.phases();
    let part = |name: &str, v: Option<u64>| v.map(|v| format!(" {name} {:.1}", ms(v))).unwrap_or_default();
    format!(
        "{} {:<14} {} -> {} pid {} {} {} {:.1} ms (ms:{}{}{}{})",
        format_time_of_day(clock.wall(h.accept_ns)),
        format!("{}{}", names::verdict_or_unknown(h.verdict()), probe_note(h)),
        client_addr(h),
        names::addr(h.server),
        h.pid,
        names::conn_place(h),
        who(h),
        ms(p.total_ns),
        part("greeting", p.to_greeting_ns),
        part("login", p.to_login_ns),
        part("auth", p.to_reply_ns),
        part("tls", p.tls_ns),
    )
}

/// Gaps longer than this between steps are pointed out in the text timeline.
const GAP_NS: u64 = 100_000_000;

/// The full timeline of a handshake, in words.
pub fn handshake_timeline(h: &Handshake, clock: &Clock) -> String {
    let mut out = String::new();
    let conn_id = h.greeting.as_ref().map(|g| format!(" connection id {}", g.connection_id)).unwrap_or_default();
    out.push_str(&format!(
        "{} {}{} {} -> {} pid {} {}{} {} ({:.1} ms)\n",
        format_time_of_day(clock.wall(h.accept_ns)),
        names::verdict_or_unknown(h.verdict()).to_uppercase(),
        probe_note(h),
        client_addr(h),
        names::addr(h.server),
        h.pid,
        names::conn_place(h),
        conn_id,
        who(h),
        ms(h.total_ns()),
    ));
    if let Some(j) = &h.judgement {
        let _ = writeln!(out, "  why: {}", reason::reason(&j.cause));
        if let Some(r) = &j.client_report {
            let _ = writeln!(out, "  the client most likely reported: {}", reason::client_report(r));
        }
        if let Some(line) = blame::blame_line(j) {
            let _ = writeln!(out, "  {line}");
        }
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
        let own_syscall = !matches!(s.what, StepKind::Signal { .. } | StepKind::Kill { .. } | StepKind::Tcp(_) | StepKind::Dropped | StepKind::ProcessExited { .. });
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

