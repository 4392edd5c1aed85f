//! What a trace saw, for the summary at exit (words: `output::summary`).
use std::{collections::BTreeMap, net::SocketAddr};

use super::groups::Groups;
use crate::{
    correlate::Handshake,
    events::Counters,
    support::histogram::Histogram,
    verdict::{Blame, Judgement, Probe, Verdict},
};

/// The gist of a finished handshake (kept for the lab, which explains each).
#[derive(Debug, Clone)]
pub struct Outcome {
    pub pid: u32,
    pub client: Option<SocketAddr>,
    pub judgement: Judgement,
    pub total_ns: u64,
}

/// Counts, latencies and losses of one trace.
#[derive(Debug, Clone, Default)]
pub struct Summary {
    pub by_verdict: BTreeMap<Verdict, u64>,
    /// Of those, the probes by kind and verdict: port checks (client_closed/client_reset
    /// without a byte from the client) and health checks (`ok`).
    pub probes: BTreeMap<(Probe, Verdict), u64>,
    /// Failures (not `ok`, not probes) by whose side they are on.
    pub by_blame: BTreeMap<Blame, u64>,
    pub accept_errors: u64,
    /// Connections on other ports than `--port`'s dropped in userspace (the kernel's
    /// count is in `counters.filtered_port`).
    pub filtered_out: u64,
    /// Handshakes `--failed`, `--verdict`, `--user` or `--client` left out.
    pub not_selected: u64,
    /// By user, client host, verdict, ERR code and blame (bounded).
    pub groups: Groups,
    pub undecodable: u64,
    pub unmatched: u64,
    pub counters: Counters,
    /// The counters were never written (a trace cut short has no trailer): loss unknown.
    pub counters_unknown: bool,
    pub to_greeting: Histogram,
    pub to_login: Histogram,
    pub to_reply: Histogram,
    pub tls: Histogram,
    pub total: Histogram,
    pub targets_seen: Vec<u32>,
    pub outcomes: Vec<Outcome>,
}

impl Summary {
    pub(super) fn record(&mut self, h: &Handshake, keep: bool) {
        let judgement = h.judgement.as_ref().expect("a finished handshake is judged");
        *self.by_verdict.entry(judgement.verdict).or_default() += 1;
        self.groups.record(h);
        if let Some(kind) = judgement.probe {
            *self.probes.entry((kind, judgement.verdict)).or_default() += 1;
        } else if judgement.verdict != Verdict::Ok {
            *self.by_blame.entry(judgement.blame.party()).or_default() += 1;
        }
        if keep {
            self.outcomes.push(Outcome { pid: h.pid, client: h.client, judgement: judgement.clone(), total_ns: h.total_ns() });
        }
        let p = h.phases();
        for (hist, v) in [(&mut self.to_greeting, p.to_greeting_ns), (&mut self.to_login, p.to_login_ns), (&mut self.to_reply, p.to_reply_ns), (&mut self.tls, p.tls_ns)] {
            if let Some(v) = v {
                hist.record(v);
            }
        }
        self.total.record(p.total_ns);
    }

    pub fn handshakes(&self) -> u64 {
        self.by_verdict.values().sum()
    }

    pub fn count(&self, v: Verdict) -> u64 {
        self.by_verdict.get(&v).copied().unwrap_or(0)
    }

    /// Failures whose blame is `b`.
    pub fn blamed(&self, b: Blame) -> u64 {
        self.by_blame.get(&b).copied().unwrap_or(0)
    }

    /// Probes of `kind` among the handshakes with verdict `v`.
    pub fn probes(&self, kind: Probe, v: Verdict) -> u64 {
        self.probes.get(&(kind, v)).copied().unwrap_or(0)
    }

    /// Probes of `kind`, by verdict.
    pub fn probes_by_verdict(&self, kind: Probe) -> BTreeMap<Verdict, u64> {
        self.probes.iter().filter(|((k, _), _)| *k == kind).map(|((_, v), n)| (*v, *n)).collect()
    }

    /// Connections on other ports than `--port`'s, dropped in the kernel or here.
    pub fn other_ports(&self) -> u64 {
        self.filtered_out + self.counters.filtered_port
    }
}
