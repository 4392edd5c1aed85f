//! A handshake for machines: one JSON object (fields: docs/json.md).
use std::collections::BTreeMap;

use serde::Serialize;

use super::{addr::Addr, blame, names, reason, step::StepText};
use crate::{
    correlate::{Handshake, Reply, StepKind},
    events::SyscallKind,
    protocol,
    support::clock::{format_rfc3339, Clock},
};

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
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
        StepKind::Dropped | StepKind::ProcessExited { .. } => "note",
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

/// The version of the JSON records' layout (docs/json.md, "Schema"): raised when a
/// field is removed or renamed or changes meaning, not when one is added.
pub const SCHEMA: u32 = 2;

// The JSON record as typed structs: one per handshake, so no map of boxed values
// is built and torn down each time. `verdict` and `schema` come first (what a reader
// filters on), the other fields in alphabetical order (docs/json.md).

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
    /// TLS connections only: ClientHello to the first application data.
    #[serde(skip_serializing_if = "Option::is_none")]
    tls: Option<f64>,
    total: Option<f64>,
}

/// One finished handshake (fields: docs/json.md).
#[derive(Serialize)]
pub struct HandshakeJson<'a> {
    verdict: Option<&'static str>,
    schema: u32,
    accept_tid: u32,
    auth_plugin: Option<&'a str>,
    auth_response_len: Option<usize>,
    auth_switch: Option<&'a str>,
    /// Whose side a failure is on, and the facts (null for `ok`).
    blame: Option<blame::BlameJson>,
    /// Which tier captured it (`--capture`): the socket tier fills no fd, listen_fd
    /// or handoff, and its timeouts have no timeout_ms.
    capture: &'static str,
    client: Option<Addr>,
    client_attrs: BTreeMap<&'a str, &'a str>,
    client_error: Option<String>,
    connection_id: Option<u32>,
    database: Option<&'a str>,
    error: Option<ErrorJson<'a>>,
    /// The timeline; absent when `--timeline` leaves this verdict's out.
    #[serde(skip_serializing_if = "Option::is_none")]
    events: Option<Vec<StepJson<'a>>>,
    fd: Option<i32>,
    handler_tid: Option<u32>,
    listen_fd: Option<i32>,
    phases_ms: PhasesJson,
    pid: u32,
    /// `port_check`, `health_check`, or null (docs/verdicts.md "Probes").
    probe: Option<&'static str>,
    reason: String,
    server: Option<Addr>,
    server_version: Option<&'a str>,
    time: String,
    tls: bool,
    unix_socket: bool,
    user: Option<&'a str>,
    wait: Option<WaitJson>,
}

impl HandshakeJson<'_> {
    /// The record without its timeline (`-j --timeline`).
    pub fn without_events(mut self) -> Self {
        self.events = None;
        self
    }
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
    let judgement = h.judgement.as_ref();
    let wait = judgement.and_then(|j| j.timeout()).map(|t| WaitJson {
        mechanism: names::mechanism(t.mechanism),
        signal_from_tid: t.signal_from,
        timeout_ms: t.timeout_ms,
        waited_ms: (ms(t.waited_ns) * 1000.0).round() / 1000.0,
        waiting_for: names::awaited(t.waiting_for),
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
        verdict: h.verdict().map(names::verdict),
        schema: SCHEMA,
        accept_tid: h.accept_tid,
        auth_plugin: login
            .and_then(|l| l.auth_plugin.as_deref())
            .or_else(|| h.greeting.as_ref().and_then(|g| g.auth_plugin.as_deref())),
        auth_response_len: login.map(|l| l.auth_response_len),
        auth_switch: h.auth_switch.as_deref(),
        blame: judgement.and_then(blame::blame_json),
        capture: names::capture(h.socket_tier),
        client: h.client.map(|a| Addr(Some(a))),
        client_attrs: login.map(|l| l.attrs.iter().collect()).unwrap_or_default(),
        client_error: judgement.and_then(|j| j.client_report.as_ref()).map(reason::client_report),
        connection_id: h.greeting.as_ref().map(|g| g.connection_id),
        database: login.and_then(|l| l.database.as_deref()),
        error,
        events: Some(events),
        fd: (!h.socket_tier).then_some(h.fd),
        handler_tid: h.handler_tid,
        listen_fd: (!h.socket_tier).then_some(h.listen_fd),
        phases_ms: PhasesJson {
            handoff: opt_ms(p.handoff_ns),
            to_greeting: opt_ms(p.to_greeting_ns),
            to_login: opt_ms(p.to_login_ns),
            to_reply: opt_ms(p.to_reply_ns),
            tls: opt_ms(p.tls_ns),
            total: opt_ms(Some(p.total_ns)),
        },
        pid: h.pid,
        probe: h.probe().map(|p| names::probe(Some(p))),
        reason: judgement.map(|j| reason::reason(&j.cause)).unwrap_or_default(),
        server: h.server.map(|a| Addr(Some(a))),
        server_version: h.greeting.as_ref().map(|g| g.server_version.as_str()),
        time: format_rfc3339(clock.wall(h.accept_ns)),
        tls: h.tls,
        unix_socket: h.unix,
        user: login.map(|l| l.user.as_str()),
        wait,
    }
}
