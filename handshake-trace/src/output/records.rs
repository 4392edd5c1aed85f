//! The JSON records beside the handshakes (docs/json.md): a roll-up every `--rollup`
//! seconds and the summary at the end (`--json-summary`), each one line with a `type`.
use std::{collections::BTreeMap, time::SystemTime};

use serde::Serialize;

use super::{json::SCHEMA, names};
use crate::{
    pipeline::{
        groups::{ClientHost, GroupKey},
        Groups, Summary,
    },
    support::{clock::format_rfc3339, histogram::Histogram},
    verdict::{Probe, Verdict},
};

/// One row of the grouped table.
#[derive(Serialize)]
struct GroupJson<'a> {
    count: u64,
    verdict: &'static str,
    user: Option<&'a str>,
    /// The client's address, `unix` for the server's Unix socket, null when unknown.
    client: Option<String>,
    error_code: Option<u16>,
    blame: &'static str,
    probe: Option<&'static str>,
}

fn group_json(key: &GroupKey, count: u64) -> GroupJson<'_> {
    GroupJson {
        count,
        verdict: names::verdict(key.verdict),
        user: key.user.as_deref(),
        client: match key.host {
            ClientHost::Ip(ip) => Some(ip.to_string()),
            ClientHost::Unix => Some("unix".into()),
            ClientHost::Unknown => None,
        },
        error_code: key.error_code,
        blame: names::blame(key.blame),
        probe: key.probe.map(|p| names::probe(Some(p))),
    }
}

fn verdicts(counts: &BTreeMap<Verdict, u64>) -> BTreeMap<&'static str, u64> {
    counts.iter().map(|(v, n)| (names::verdict(*v), *n)).collect()
}

#[derive(Serialize)]
struct Quantiles {
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    n: u64,
}

fn quantiles(h: &Histogram) -> Option<Quantiles> {
    let round = |ms: Option<f64>| (ms.unwrap_or(0.0) * 1000.0).round() / 1000.0;
    let q = |p: f64| round(h.quantile_ms(p));
    (h.count() > 0).then(|| Quantiles { p50: q(0.5), p90: q(0.9), p99: q(0.99), max: round(h.max_ms()), n: h.count() })
}

/// `"type":"rollup"`: the handshakes finished since the last roll-up.
#[derive(Serialize)]
struct RollupJson<'a> {
    r#type: &'static str,
    schema: u32,
    since: String,
    time: String,
    handshakes: u64,
    verdicts: BTreeMap<&'static str, u64>,
    /// Durations of the successful ones (absent when there were none).
    #[serde(skip_serializing_if = "Option::is_none")]
    ok_ms: Option<Quantiles>,
    groups: Vec<GroupJson<'a>>,
    /// Handshakes of the groups past `--top` (and past the table's bound).
    other_groups: u64,
}

/// The roll-up of `groups` (finished between `since` and `now`) as one JSON line.
pub fn rollup_json(groups: &Groups, ok: &Histogram, top: usize, since: SystemTime, now: SystemTime) -> String {
    let (rows, other) = groups.top(top);
    let r = RollupJson {
        r#type: "rollup",
        schema: SCHEMA,
        since: format_rfc3339(since),
        time: format_rfc3339(now),
        handshakes: groups.handshakes(),
        verdicts: verdicts(&groups.by_verdict),
        ok_ms: quantiles(ok),
        groups: rows.into_iter().map(|(k, n)| group_json(k, n)).collect(),
        other_groups: other,
    };
    crate::support::escape::json_to_string(&r).expect("plain data serializes")
}

#[derive(Serialize)]
struct EventsJson {
    emitted: u64,
    lost_ringbuf: u64,
    lost_mapfull: u64,
    undecodable: u64,
}

/// `"type":"summary"`: the whole trace.
#[derive(Serialize)]
struct SummaryJson<'a> {
    r#type: &'static str,
    schema: u32,
    handshakes: u64,
    verdicts: BTreeMap<&'static str, u64>,
    port_checks: BTreeMap<&'static str, u64>,
    health_checks: BTreeMap<&'static str, u64>,
    groups: Vec<GroupJson<'a>>,
    other_groups: u64,
    accept_errors: u64,
    /// Connections on other ports than `--port`'s: all of them, and those the kernel dropped.
    other_ports: u64,
    other_ports_in_kernel: u64,
    /// Handshakes `--failed`, `--verdict`, `--user`, `--client` left out.
    not_selected: u64,
    phases_ms: BTreeMap<&'static str, Quantiles>,
    events: EventsJson,
}

/// The summary as one JSON line.
pub fn summary_json(s: &Summary, top: usize) -> String {
    let (rows, other) = s.groups.top(top);
    let phases = [
        ("to_greeting", &s.to_greeting),
        ("to_login", &s.to_login),
        ("to_reply", &s.to_reply),
        ("tls", &s.tls),
        ("total", &s.total),
    ];
    let r = SummaryJson {
        r#type: "summary",
        schema: SCHEMA,
        handshakes: s.handshakes(),
        verdicts: verdicts(&s.by_verdict),
        port_checks: verdicts(&s.probes_by_verdict(Probe::PortCheck)),
        health_checks: verdicts(&s.probes_by_verdict(Probe::HealthCheck)),
        groups: rows.into_iter().map(|(k, n)| group_json(k, n)).collect(),
        other_groups: other,
        accept_errors: s.accept_errors,
        other_ports: s.other_ports(),
        other_ports_in_kernel: s.counters.filtered_port,
        not_selected: s.not_selected,
        phases_ms: phases.into_iter().filter_map(|(name, h)| Some((name, quantiles(h)?))).collect(),
        events: EventsJson {
            emitted: s.counters.emitted,
            lost_ringbuf: s.counters.lost_ringbuf,
            lost_mapfull: s.counters.lost_mapfull,
            undecodable: s.undecodable,
        },
    };
    crate::support::escape::json_to_string(&r).expect("plain data serializes")
}
