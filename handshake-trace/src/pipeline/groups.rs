//! The grouped summary: finished handshakes counted by who and how — user, client
//! host, verdict, ERR code, blame — in a bounded table (groups past the bound are
//! counted in one "other" row), for the summary at exit and each `--rollup`.
//! Words: `output::summary`.
use std::{
    collections::{BTreeMap, HashMap},
    net::IpAddr,
};

use crate::{
    correlate::{Handshake, Reply},
    verdict::{
        blame::Blame,
        Cause, Probe, Verdict,
    },
};

/// Groups kept at most; handshakes of further groups count in `other`.
pub const MAX_GROUPS: usize = 1024;

/// The ERR code the server sent, if it sent one.
pub fn error_code(h: &Handshake) -> Option<u16> {
    match (&h.reply, h.judgement.as_ref().map(|j| &j.cause)) {
        (Some(Reply::Err(e)), _) => Some(e.code),
        (_, Some(Cause::ErrSent { code } | Cause::ProxyRefused { code, .. })) => Some(*code),
        _ => None,
    }
}

/// Where a client connected from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum ClientHost {
    Ip(IpAddr),
    /// Over the server's Unix socket.
    Unix,
    Unknown,
}

impl ClientHost {
    pub fn of(h: &Handshake) -> ClientHost {
        match (h.unix, h.client) {
            (true, _) => ClientHost::Unix,
            // An IPv4 client of a dual-stack listener shows as ::ffff:a.b.c.d: the same host.
            (false, Some(c)) => ClientHost::Ip(c.ip().to_canonical()),
            (false, None) => ClientHost::Unknown,
        }
    }
}

/// What makes handshakes one group.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct GroupKey {
    pub verdict: Verdict,
    /// From the login packet (none when there was none, or it was inside TLS).
    pub user: Option<String>,
    pub host: ClientHost,
    pub error_code: Option<u16>,
    pub blame: Blame,
    /// Port checks and health checks group apart from the applications' handshakes.
    pub probe: Option<Probe>,
}

impl GroupKey {
    /// The group of a judged handshake.
    pub fn of(h: &Handshake) -> Option<GroupKey> {
        let j = h.judgement.as_ref()?;
        Some(GroupKey {
            verdict: j.verdict,
            user: h.login.as_ref().map(|l| l.user.clone()),
            host: ClientHost::of(h),
            error_code: error_code(h),
            blame: j.blame.party(),
            probe: j.probe,
        })
    }
}

/// Handshakes counted by group and by verdict (the verdict counts are exact, whatever
/// the bound did to the groups).
#[derive(Debug, Clone, Default)]
pub struct Groups {
    rows: HashMap<GroupKey, u64>,
    /// Handshakes of groups that found the table full.
    pub other: u64,
    pub by_verdict: BTreeMap<Verdict, u64>,
}

impl Groups {
    pub fn record(&mut self, h: &Handshake) {
        if let Some(key) = GroupKey::of(h) {
            self.add(key, 1);
        }
    }

    /// Count `n` handshakes of group `key`.
    pub fn add(&mut self, key: GroupKey, n: u64) {
        *self.by_verdict.entry(key.verdict).or_default() += n;
        if let Some(count) = self.rows.get_mut(&key) {
            *count += n;
        } else if self.rows.len() < MAX_GROUPS {
            self.rows.insert(key, n);
        } else {
            self.other += n;
        }
    }

    pub fn handshakes(&self) -> u64 {
        self.by_verdict.values().sum()
    }

    pub fn is_empty(&self) -> bool {
        self.rows.is_empty() && self.other == 0
    }

    /// The first `n` groups — failures before successes, probes (port and health
    /// checks) last (on a busy server the `ok` groups and the checks would crowd out
    /// what one looks for), each largest first, ties in key order (a stable table) —
    /// and how many handshakes the rest hold (the "other" row).
    pub fn top(&self, n: usize) -> (Vec<(&GroupKey, u64)>, u64) {
        let mut rows: Vec<(&GroupKey, u64)> = self.rows.iter().map(|(k, c)| (k, *c)).collect();
        let rank = |k: &GroupKey| (k.probe.is_some(), k.verdict == Verdict::Ok);
        rows.sort_by(|a, b| rank(a.0).cmp(&rank(b.0)).then(b.1.cmp(&a.1)).then_with(|| a.0.cmp(b.0)));
        let rest: u64 = rows.iter().skip(n).map(|(_, c)| c).sum::<u64>() + self.other;
        rows.truncate(n);
        (rows, rest)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(verdict: Verdict, user: &str, host: [u8; 4], code: Option<u16>) -> GroupKey {
        GroupKey { verdict, user: Some(user.into()), host: ClientHost::Ip(IpAddr::from(host)), error_code: code, blame: Blame::Client, probe: None }
    }

    #[test]
    fn groups_count_failures_and_successes_by_who_and_how() {
        let mut g = Groups::default();
        let app_bad = key(Verdict::AuthFailed, "app", [10, 1, 2, 3], Some(1045));
        let app_ok = key(Verdict::Ok, "app", [10, 1, 2, 3], None);
        let other_host = key(Verdict::AuthFailed, "app", [10, 1, 2, 4], Some(1045));
        let other_user = key(Verdict::AuthFailed, "web", [10, 1, 2, 3], Some(1045));
        for (k, n) in [(&app_bad, 64), (&app_ok, 5), (&other_host, 2), (&other_user, 1), (&app_bad, 1)] {
            g.add(k.clone(), n);
        }
        let (top, rest) = g.top(2);
        assert_eq!(top, vec![(&app_bad, 65), (&other_host, 2)]);
        assert_eq!(rest, 6, "the 5 + 1 of the groups not shown");
        assert_eq!(g.by_verdict[&Verdict::AuthFailed], 68);
        assert_eq!(g.handshakes(), 73);
        let (all, rest) = g.top(10);
        assert_eq!(all.len(), 4);
        assert_eq!(rest, 0);
    }

    #[test]
    fn a_full_table_counts_new_groups_as_other_and_keeps_verdicts_exact() {
        let mut g = Groups::default();
        for i in 0..MAX_GROUPS + 10 {
            g.add(key(Verdict::ClientClosed, &format!("u{i}"), [10, 0, 0, 1], None), 1);
        }
        // A group already in the table still counts in its row.
        g.add(key(Verdict::ClientClosed, "u0", [10, 0, 0, 1], None), 4);
        assert_eq!(g.other, 10);
        assert_eq!(g.by_verdict[&Verdict::ClientClosed], MAX_GROUPS as u64 + 14);
        let (top, rest) = g.top(1);
        assert_eq!(top[0].1, 5);
        assert_eq!(rest, MAX_GROUPS as u64 - 1 + 10);
    }

    #[test]
    fn failures_rank_before_successes_whatever_their_counts() {
        let mut g = Groups::default();
        let busy_ok = key(Verdict::Ok, "app", [10, 0, 0, 1], None);
        let rare_bad = key(Verdict::ServerTimeout, "?", [10, 0, 0, 9], None);
        g.add(busy_ok.clone(), 100_000);
        g.add(rare_bad.clone(), 1);
        assert_eq!(g.top(1), (vec![(&rare_bad, 1)], 100_000));
        assert_eq!(g.top(2).0, vec![(&rare_bad, 1), (&busy_ok, 100_000)]);
    }

    #[test]
    fn probes_rank_after_failures_and_successes_whatever_their_counts() {
        let mut g = Groups::default();
        let checks = GroupKey { probe: Some(Probe::PortCheck), user: None, ..key(Verdict::ClientReset, "-", [10, 0, 0, 7], None) };
        let busy_ok = key(Verdict::Ok, "app", [10, 0, 0, 1], None);
        let rare_bad = key(Verdict::ClientReset, "app", [10, 0, 0, 7], None);
        g.add(checks.clone(), 5_000);
        g.add(busy_ok.clone(), 100);
        g.add(rare_bad.clone(), 2);
        assert_eq!(g.top(3).0, vec![(&rare_bad, 2), (&busy_ok, 100), (&checks, 5_000)]);
    }

    #[test]
    fn equal_counts_sort_in_key_order() {
        let mut g = Groups::default();
        let b = key(Verdict::AuthFailed, "b", [10, 0, 0, 1], Some(1045));
        let a = key(Verdict::AuthFailed, "a", [10, 0, 0, 1], Some(1045));
        g.add(b.clone(), 3);
        g.add(a.clone(), 3);
        assert_eq!(g.top(2).0, vec![(&a, 3), (&b, 3)]);
    }

    #[test]
    fn a_handshake_groups_by_its_login_error_and_blame() {
        use crate::testing::{handshakes_of, ok_login_events, wrong_password_events};
        let mut bad = handshakes_of(&wrong_password_events()).remove(0);
        bad.client = Some("[::ffff:10.1.2.3]:5000".parse().unwrap());
        let k = GroupKey::of(&bad).unwrap();
        assert_eq!(
            k,
            GroupKey {
                verdict: Verdict::AuthFailed,
                user: Some("lab".into()),
                host: ClientHost::Ip(IpAddr::from([10, 1, 2, 3])),
                error_code: Some(1045),
                blame: Blame::Client,
                probe: None
            }
        );
        let mut ok = handshakes_of(&ok_login_events()).remove(0);
        ok.unix = true;
        let k = GroupKey::of(&ok).unwrap();
        assert_eq!((k.verdict, k.host, k.error_code, k.blame), (Verdict::Ok, ClientHost::Unix, None, Blame::None));
    }

    #[test]
    fn a_v4_mapped_client_is_the_same_host_as_its_ipv4() {
        let mapped: IpAddr = "::ffff:10.1.2.3".parse().unwrap();
        assert_eq!(mapped.to_canonical(), IpAddr::from([10, 1, 2, 3]));
    }
}
