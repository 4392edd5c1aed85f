//! What /hosts serves: the client hosts nearest their server's `max_connect_errors`
//! (the handshake errors MariaDB counts per host before it refuses it with ERR 1129),
//! most at risk first, at most K of them. A JSON document, never metric labels: one
//! label value per client address would grow without bound.
use std::collections::BTreeMap;

use serde::Serialize;

use crate::{
    output::names,
    pipeline::{host_errors::WARN_PERCENT, HostStanding},
    support::clock::{format_rfc3339, Clock},
};

/// One host, as /hosts serves it.
#[derive(Debug, Serialize, PartialEq, Eq)]
pub struct HostJson {
    pub host: String,
    /// The server (its pid) whose host cache counts these errors.
    pub server_pid: u32,
    /// Handshake errors since the host's last successful login, as the tracer saw them.
    pub errors: u64,
    pub max_connect_errors: u64,
    /// errors as a share of max_connect_errors, in percent (100: refused until FLUSH HOSTS).
    pub percent: u64,
    /// Refused with ERR 1129 since its last login.
    pub blocked: bool,
    pub last_error: String,
    /// The errors by verdict.
    pub verdicts: BTreeMap<&'static str, u64>,
    /// Of them, port checks (connect and close, nothing sent).
    pub port_checks: u64,
}

/// The document /hosts serves.
#[derive(Debug, Default, Serialize, PartialEq, Eq)]
pub struct HostsReport {
    /// `watch` warns of a host at this percent of its server's max_connect_errors.
    pub warn_percent: u64,
    /// Hosts with errors since their last login (counted up to 100).
    pub hosts_with_errors: usize,
    pub hosts: Vec<HostJson>,
}

/// The `k` hosts nearest their limit, of `standing` (already in that order).
pub fn report(standing: &[HostStanding], k: usize, clock: &Clock) -> HostsReport {
    let hosts = standing
        .iter()
        .take(k)
        .map(|s| {
            let mut verdicts = BTreeMap::new();
            let mut port_checks = 0;
            for (v, probe, n) in &s.by_verdict {
                *verdicts.entry(names::verdict(*v)).or_default() += n;
                if *probe {
                    port_checks += n;
                }
            }
            HostJson {
                host: s.host.to_string(),
                server_pid: s.pid,
                errors: s.errors,
                max_connect_errors: s.limit,
                percent: s.errors.saturating_mul(100) / s.limit.max(1),
                blocked: s.blocked,
                last_error: format_rfc3339(clock.wall(s.last_error_ns)),
                verdicts,
                port_checks,
            }
        })
        .collect();
    HostsReport { warn_percent: WARN_PERCENT, hosts_with_errors: standing.len(), hosts }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::verdict::Verdict;

    #[test]
    fn hosts_are_served_with_their_share_of_the_limit_bounded_to_k() {
        let s = |host: &str, errors| HostStanding {
            pid: 7,
            host: host.parse().unwrap(),
            errors,
            limit: 10,
            last_error_ns: 0,
            blocked: errors >= 10,
            by_verdict: vec![(Verdict::ClientReset, true, errors - 1), (Verdict::ServerTimeout, false, 1)],
        };
        let r = report(&[s("127.0.0.2", 10), s("127.0.0.3", 8), s("127.0.0.4", 2)], 2, &Clock::with_offset(0));
        assert_eq!(r.hosts.len(), 2);
        assert_eq!((r.hosts[0].host.as_str(), r.hosts[0].percent, r.hosts[0].blocked), ("127.0.0.2", 100, true));
        assert_eq!(r.hosts[1].verdicts.get("client_reset"), Some(&7));
        assert_eq!(r.hosts[1].port_checks, 7);
        assert_eq!(r.hosts_with_errors, 3);
        let json = serde_json::to_string(&r).unwrap();
        assert!(json.contains("\"max_connect_errors\":10") && json.contains("\"warn_percent\":80"), "{json}");
    }
}
