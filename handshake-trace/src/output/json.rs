//! A handshake for machines: one JSON object (fields: docs/json.md).
use std::collections::BTreeMap;

use serde::Serialize;

use super::{addr::Addr, blame, names, reason, step::StepText};
use crate::{
    config,
    correlate::{Handshake, Reply, StepKind},
    pipeline::{host_errors::Counts, HostNote},
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
        StepKind::Omitted(_) => "omitted",
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
    /// The server's connect_timeout and where it came from, when its configuration was read.
    #[serde(skip_serializing_if = "Option::is_none")]
    connect_timeout: Option<SettingJson>,
    mechanism: &'static str,
    signal_from_tid: Option<u32>,
    timeout_ms: Option<u64>,
    waited_ms: f64,
    waiting_for: &'static str,
}

/// A server setting and its source (docs/json.md).
#[derive(Serialize)]
pub struct SettingJson {
    /// True when the server took another value than the one written (out of range).
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    adjusted: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    file: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    line: Option<u32>,
    /// `default`, `command_line`, `file` (with `file` and `line`) or `flag`.
    source: &'static str,
    value: u64,
}

impl SettingJson {
    pub fn of(s: &config::Setting<u64>) -> Self {
        let (source, file, line) = match &s.source {
            config::Source::Default => ("default", None, None),
            config::Source::CommandLine => ("command_line", None, None),
            config::Source::File { path, line } => ("file", Some(path.clone()), Some(*line)),
            config::Source::Flag => ("flag", None, None),
        };
        SettingJson { adjusted: s.adjusted, file, line, source, value: s.value }
    }
}

/// One counted error of a host, in a blocked handshake's `host_errors.history`.
#[derive(Serialize)]
struct PastErrorJson {
    #[serde(skip_serializing_if = "Option::is_none")]
    code: Option<u16>,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    probe: bool,
    time: String,
    verdict: &'static str,
}

/// How the server's host cache counted this handshake (docs/json.md).
#[derive(Serialize)]
struct HostErrorsJson {
    /// `error` (one more toward max_connect_errors), `reset` (a login: back to 0) or
    /// `blocked` (refused with ERR 1129).
    counted: &'static str,
    /// Handshake errors of this host since its last successful login, as seen.
    errors: u64,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    history: Vec<PastErrorJson>,
    last_login: Option<String>,
    max_connect_errors: SettingJson,
    /// `reset`: the errors the login cleared; `blocked`: errors before those in `history`.
    #[serde(skip_serializing_if = "is_zero")]
    older: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

fn host_errors_json(n: &HostNote, clock: &Clock) -> HostErrorsJson {
    HostErrorsJson {
        counted: match n.counts {
            Counts::Error => "error",
            Counts::Reset => "reset",
            Counts::Blocked => "blocked",
            Counts::Neither => "neither",
        },
        errors: n.errors,
        history: n
            .history
            .iter()
            .map(|p| PastErrorJson { code: p.code, probe: p.probe, time: format_rfc3339(clock.wall(p.at_ns)), verdict: names::verdict(p.verdict) })
            .collect(),
        last_login: n.last_login_ns.map(|t| format_rfc3339(clock.wall(t))),
        max_connect_errors: SettingJson::of(&n.limit),
        older: n.older,
    }
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

/// A timeline too long to keep whole: what its middle held (docs/json.md).
#[derive(Serialize)]
struct TruncatedJson {
    steps_omitted: u64,
    reads: u64,
    read_bytes: u64,
    writes: u64,
    write_bytes: u64,
    waits: u64,
    packets: u64,
    other: u64,
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
    /// A Unix-socket client's process id and program (`comm`), when the tier saw who
    /// connected; absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    client_pid: Option<u32>,
    #[serde(skip_serializing_if = "Option::is_none")]
    client_program: Option<&'a str>,
    connection_id: Option<u32>,
    database: Option<&'a str>,
    error: Option<ErrorJson<'a>>,
    /// The timeline; absent when `--timeline` leaves this verdict's out.
    #[serde(skip_serializing_if = "Option::is_none")]
    events: Option<Vec<StepJson<'a>>>,
    /// The record with its timeline was over this many bytes (a bound of the sink, e.g.
    /// the abnormal log's): written without `events`.
    #[serde(skip_serializing_if = "Option::is_none")]
    events_left_out_over_bytes: Option<usize>,
    fd: Option<i32>,
    handler_tid: Option<u32>,
    /// How the server's host cache counted it toward max_connect_errors; absent when
    /// it does not apply or counted nothing.
    #[serde(skip_serializing_if = "Option::is_none")]
    host_errors: Option<HostErrorsJson>,
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
    /// The timeline was too long to keep whole (`events` holds its start and its end).
    #[serde(skip_serializing_if = "Option::is_none")]
    truncated: Option<TruncatedJson>,
    unix_socket: bool,
    user: Option<&'a str>,
    /// The proxy the client came through, when a PROXY protocol header named the
    /// client (`client`); absent otherwise.
    #[serde(skip_serializing_if = "Option::is_none")]
    via: Option<Addr>,
    wait: Option<WaitJson>,
}

impl HandshakeJson<'_> {
    /// The record without its timeline (`-j --timeline`).
    pub fn without_events(mut self) -> Self {
        self.events = None;
        self
    }

    /// The record without its timeline, saying that with it the record was over `limit` bytes.
    pub fn without_events_over(mut self, limit: usize) -> Self {
        self.events = None;
        self.events_left_out_over_bytes = Some(limit);
        self
    }
}

impl std::fmt::Display for HandshakeJson<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&crate::support::escape::json_to_string(self).map_err(|_| std::fmt::Error)?)
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
        connect_timeout: h.server_config.as_ref().map(|c| SettingJson::of(&c.connect_timeout_s)),
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
        blame: judgement.and_then(|j| blame::blame_json_for(j, super::text::name_lookup(h))),
        capture: names::capture(h.socket_tier),
        client: h.client.map(|a| Addr(Some(a))),
        client_attrs: login.map(|l| l.attrs.iter().collect()).unwrap_or_default(),
        client_pid: h.client_process.as_ref().map(|p| p.pid),
        client_program: h.client_process.as_ref().map(|p| p.program.as_str()),
        client_error: judgement.and_then(|j| j.client_report.as_ref()).map(reason::client_report),
        connection_id: h.greeting.as_ref().map(|g| g.connection_id),
        database: login.and_then(|l| l.database.as_deref()),
        error,
        events: Some(events),
        events_left_out_over_bytes: None,
        fd: (!h.socket_tier).then_some(h.fd),
        handler_tid: h.handler_tid,
        host_errors: h.host_errors.as_deref().map(|n| host_errors_json(n, clock)),
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
        truncated: h.omitted().map(|o| TruncatedJson {
            steps_omitted: o.steps,
            reads: o.reads,
            read_bytes: o.read_bytes,
            writes: o.writes,
            write_bytes: o.write_bytes,
            waits: o.waits,
            packets: o.packets,
            other: o.other,
        }),
        unix_socket: h.unix,
        user: login.map(|l| l.user.as_str()),
        via: h.via.map(|a| Addr(Some(a))),
        wait,
    }
}
