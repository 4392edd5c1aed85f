//! A handshake for people: one line in columns, or its timeline in words.
use std::fmt::Write as _;

use super::{
    blame,
    columns::{self, Row, Terminal},
    names, reason,
    step::StepText,
};
use crate::support::escape::Escaped;
use crate::{
    correlate::{Handshake, StepKind},
    support::clock::Clock,
};

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

/// The CLIENT column: the client's address; for a Unix-socket client its process
/// (`PROGRAM[PID]`, as syslog names processes; a narrow column keeps its end, the pid)
/// when the tier saw it, else the server's socket path.
pub fn client_column(h: &Handshake) -> String {
    if let (Some(p), true) = (&h.client_process, h.unix) {
        return format!("{}[{}]", Escaped(&p.program), p.pid);
    }
    match (&h.server_path, h.unix) {
        (Some(p), true) => Escaped(p).to_string(),
        (None, true) => "unix-socket".into(),
        _ => names::addr(h.client).to_string(),
    }
}

/// The USER column: the login's user, or what stands in for it.
pub fn user_column(h: &Handshake) -> String {
    match &h.login {
        Some(l) if l.user.is_empty() => "''".into(),
        Some(l) => Escaped(&l.user).to_string(),
        None if h.tls => "(TLS)".into(),
        None => "-".into(),
    }
}

/// The client program and its pid from the connect attributes: "mariadb[4242]".
pub fn client_program(h: &Handshake) -> Option<String> {
    let attrs = &h.login.as_ref()?.attrs;
    let get = |k: &str| attrs.get(k).map(|v| Escaped(v).to_string());
    match (get("program_name"), get("_pid")) {
        (Some(p), Some(pid)) => Some(format!("{p}[{pid}]")),
        (Some(p), None) => Some(p),
        (None, Some(pid)) => Some(format!("pid {pid}")),
        (None, None) => None,
    }
}

/// Who opened the connection, beyond the CLIENT and USER columns: "db 'x' from
/// mariadb[4242]" (empty when the login said neither).
pub fn who(h: &Handshake) -> String {
    let mut s = String::new();
    if let Some(db) = h.login.as_ref().and_then(|l| l.database.as_deref()) {
        let _ = write!(s, "db '{}'", Escaped(db));
    }
    if let Some(p) = client_program(h) {
        let _ = write!(s, "{}from {p}", if s.is_empty() { "" } else { " " });
    }
    s
}

/// Where the connection ran: "→ 127.0.0.1:3306 pid 20752 fd 43" (the socket path of a
/// Unix-socket client is in the CLIENT column already).
pub fn where_(h: &Handshake) -> String {
    let mut s = String::new();
    if !h.unix {
        let _ = write!(s, "→ {} ", names::addr(h.server));
        if h.via.is_some() {
            let _ = write!(s, "via {} ", names::addr(h.via));
        }
    }
    let _ = write!(s, "pid {} {}", h.pid, names::conn_place(h));
    s
}

/// Who, then where: "db 'x' from mariadb[4242]  → 127.0.0.1:3306 pid 20752 fd 43".
pub fn place(h: &Handshake) -> String {
    join(&[&who(h), &where_(h)])
}

/// Non-empty parts, two spaces apart.
fn join(parts: &[&str]) -> String {
    parts.iter().filter(|p| !p.is_empty()).copied().collect::<Vec<_>>().join("  ")
}

/// The columns every line of a handshake shares; `detail` is the caller's.
pub fn row(h: &Handshake, clock: &Clock, term: &Terminal, detail: String) -> Row {
    Row {
        time: term.time(clock.wall(h.accept_ns)),
        verdict: h.verdict(),
        shout: false,
        client: client_column(h),
        user: user_column(h),
        ms: ms(h.total_ns()),
        detail,
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

/// Whether the server may have looked up this client's name (its configuration and address).
pub fn name_lookup(h: &Handshake) -> crate::config::NameLookup {
    crate::config::name_lookup(h.client, h.unix, h.server_config.as_deref())
}

/// "port check " or "health check " before the detail of a probe.
fn probe_note(h: &Handshake) -> String {
    h.probe().map(|p| format!("{} ", names::probe_words(p))).unwrap_or_default()
}

/// The phases' durations: "greeting 3.5 login 0.1 auth 0.1".
fn phases(h: &Handshake) -> String {
    let p = h.phases();
    [("greeting", p.to_greeting_ns), ("login", p.to_login_ns), ("auth", p.to_reply_ns), ("tls", p.tls_ns)]
        .iter()
        .filter_map(|(name, v)| v.map(|v| format!("{name} {:.1}", ms(v))))
        .collect::<Vec<_>>()
        .join(" ")
}

/// One line for a handshake that needs no timeline, whole (no terminal to fit).
pub fn handshake_line(h: &Handshake, clock: &Clock) -> String {
    handshake_line_on(h, clock, &Terminal::default())
}

/// One line in the columns, fitted to `term`: a success's phases (a failure's reason
/// and blame), who, then where.
pub fn handshake_line_on(h: &Handshake, clock: &Clock, term: &Terminal) -> String {
    if h.verdict().is_some_and(|v| v != crate::verdict::Verdict::Ok) {
        return super::brief::brief_line_on(h, clock, term);
    }
    let head = format!("{}{}", probe_note(h), phases(h));
    let detail = columns::lead(head.trim(), "", None, &place(h), term.detail_room());
    columns::row(&row(h, clock, term, detail), term)
}

/// Gaps longer than this between steps are pointed out in the text timeline.
const GAP_NS: u64 = 100_000_000;

/// The full timeline of a handshake, in words, whole (no terminal to fit).
pub fn handshake_timeline(h: &Handshake, clock: &Clock) -> String {
    handshake_timeline_on(h, clock, &Terminal::default())
}

/// The full timeline: its first line in the columns (verdict in capitals), the reason
/// and the steps folded to `term`.
pub fn handshake_timeline_on(h: &Handshake, clock: &Clock, term: &Terminal) -> String {
    let mut out = String::new();
    let conn_id = h.greeting.as_ref().map(|g| format!("connection id {} ", g.connection_id)).unwrap_or_default();
    let (long, terse, blame) = super::brief::lead_words(h);
    let rest = join(&[conn_id.trim_end(), &who(h), &where_(h)]);
    let detail = columns::lead(&format!("{}{long}", probe_note(h)), &terse, blame, &rest, term.detail_room());
    let first = Row { shout: true, ..row(h, clock, term, detail) };
    let _ = writeln!(out, "{}", columns::row(&first, term));
    if let Some(j) = &h.judgement {
        let _ = writeln!(out, "{}", term.fold(&format!("  why: {}", reason::reason(&j.cause)), 7));
        if let Some(r) = &j.client_report {
            let _ = writeln!(out, "{}", term.fold(&format!("  the client most likely reported: {}", reason::client_report(r)), 4));
        }
        if let Some(line) = blame::blame_line_for(j, name_lookup(h)) {
            let _ = writeln!(out, "{}", term.fold(&format!("  {line}"), 4));
        }
        if let (Some(wait), Some(cfg)) = (j.timeout(), &h.server_config) {
            let _ = writeln!(out, "{}", term.fold(&format!("  {}", reason::connect_timeout(cfg, wait)), 4));
        }
    }
    if let Some(note) = &h.host_errors {
        let time = |ns: u64| term.time(clock.wall(ns));
        for line in reason::host_note(note, h.client.map(|c| c.ip()), &time) {
            let _ = writeln!(out, "{}", term.fold(&format!("  {line}"), 6));
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
        let own_syscall = !matches!(
            s.what,
            StepKind::Signal { .. } | StepKind::Kill { .. } | StepKind::Tcp(_) | StepKind::Dropped | StepKind::ProcessExited { .. } | StepKind::Omitted(_)
        );
        let gap = s.ts_ns.saturating_sub(prev).saturating_sub(own);
        if own_syscall && gap >= GAP_NS {
            let line = format!(
                "  {:>14}  … {:.1} ms with no syscall on this connection: the server was busy elsewhere {}",
                "",
                ms(gap),
                reason::busy_elsewhere(name_lookup(h))
            );
            let _ = writeln!(out, "{}", term.fold(&line, 20));
        }
        prev = match &s.what {
            StepKind::Omitted(o) => o.last_ns.max(s.ts_ns),
            _ => s.ts_ns,
        };
        let who = if s.tid == 0 { "kernel".to_string() } else { s.tid.to_string() };
        let head = format!("  {:>+11.3} ms  [{who}] ", h.ms_since_accept(s.ts_ns));
        let _ = writeln!(out, "{}", term.fold(&format!("{head}{}", StepText { h, s }), columns::width(&head)));
    }
    out
}
