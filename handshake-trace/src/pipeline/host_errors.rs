//! The server's host cache, as far as the tracer can follow it: per server and client
//! host, the handshake errors the server counts toward `max_connect_errors` since the
//! host's last successful login, so a host nearing the block (ERR 1129, "Host … is
//! blocked because of many connection errors") is told before it happens, and a
//! blocked one is explained by what was seen.
//!
//! How MariaDB 10.11 counts (sql/hostname.cc, sql/sql_connect.cc, sql/sql_acl.cc;
//! checked on the real server, docs/verdicts.md "Blocked hosts"): only TCP clients
//! from addresses other than 127.0.0.1 and ::1, and only with name resolution on
//! (`skip-name-resolve` turns the host cache off), have an entry. Of the errors it
//! keeps per host only the *handshake* errors count toward the block: a client that
//! goes away or stays silent during the handshake once its greeting was written (the
//! login never read whole: port checks, client_closed, client_reset, server_timeout)
//! and a malformed login (ERR 1043); not a client whose reset made the greeting's write
//! fail, nor ERR 1130 (host not allowed, sent instead of a greeting). A refused password (ERR 1045) is counted apart and does not count; a
//! successful login sets the count back to 0. A host whose count has reached
//! `max_connect_errors` gets ERR 1129 instead of a greeting, until `FLUSH HOSTS`.
//!
//! What the tracer cannot know: errors from before it started, `FLUSH HOSTS`, and
//! whether the server's reverse lookup of the host failed transiently (it then does
//! not count). The count is what was seen; the words say so.
use std::{
    collections::{HashMap, VecDeque},
    net::IpAddr,
};

use crate::{
    config::{self, NameLookup, ServerConfig},
    correlate::{Handshake, Reply},
    protocol::errors::{ER_HANDSHAKE_ERROR, ER_HOST_IS_BLOCKED},
    verdict::Verdict,
};

/// Hosts followed at most (only hosts with errors since their last login are kept).
pub const MAX_HOSTS: usize = 4096;
/// Past errors kept per host (the most recent), for the explanation of a block.
pub const HISTORY: usize = 16;
/// Warnings waiting to be said at most.
const MAX_WARNINGS: usize = 64;
/// A host is warned of at this share of `max_connect_errors`, in percent.
pub const WARN_PERCENT: u64 = 80;

/// What a handshake does to its host's count.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Counts {
    /// A handshake error: one more toward the block.
    Error,
    /// A successful login: the count goes back to 0.
    Reset,
    /// Refused with ERR 1129: the host was blocked already.
    Blocked,
    /// Neither (a refused password, another ERR, or not known: incomplete).
    Neither,
}

/// How the server counts this handshake for its host, or None when the host cache
/// does not apply (loopback, a Unix socket, `skip-name-resolve`, no address).
pub fn counts(h: &Handshake, cfg: &ServerConfig) -> Option<Counts> {
    if config::name_lookup(h.client, h.unix, Some(cfg)) != NameLookup::Possible || h.client.is_none() {
        return None;
    }
    let j = h.judgement.as_ref()?;
    let code = match &h.reply {
        Some(Reply::Err(e)) => Some(e.code),
        _ => None,
    };
    Some(match (j.verdict, code) {
        (_, Some(ER_HOST_IS_BLOCKED)) => Counts::Blocked,
        (Verdict::Ok, _) => Counts::Reset,
        (Verdict::ServerTimeout, _) => Counts::Error,
        // Gone before the greeting could be written (a reset to a frozen server): the
        // server's write fails first, which it does not count (checked on 10.11). Gone
        // after it (a FIN even before it was written, the write then succeeds): counted.
        (Verdict::ClientClosed | Verdict::ClientReset, _) if h.greeting_ns.is_some() => Counts::Error,
        (Verdict::ServerError, Some(ER_HANDSHAKE_ERROR)) => Counts::Error,
        _ => Counts::Neither,
    })
}

/// One counted error, as the explanation of a block lists it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PastError {
    pub at_ns: u64,
    pub verdict: Verdict,
    /// The ERR the server sent, if any.
    pub code: Option<u16>,
    /// A port check (nothing sent by the client).
    pub probe: bool,
}

/// What the pipeline attaches to a counted handshake.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostNote {
    pub counts: Counts,
    /// Errors of this host since its last successful login, as seen (this one included).
    pub errors: u64,
    /// The server's max_connect_errors (and its source).
    pub limit: config::Setting<u64>,
    /// Blocked: the errors seen since the last login, oldest first (the last [`HISTORY`]).
    pub history: Vec<PastError>,
    /// Blocked: errors seen before those kept.
    pub older: u64,
    /// When the tracer saw this host's last successful login, if it did.
    pub last_login_ns: Option<u64>,
}

impl HostNote {
    /// The errors reached the limit: the server refuses the host's next connection.
    pub fn at_limit(&self) -> bool {
        self.errors >= self.limit.value
    }
}

/// A host crossed a threshold: to be said once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostWarning {
    pub pid: u32,
    pub host: IpAddr,
    pub errors: u64,
    pub limit: config::Setting<u64>,
    /// Reached the limit (the next connection is refused), else [`WARN_PERCENT`] of it.
    pub at_limit: bool,
    /// The errors since the last login by verdict (port checks apart), in [`Verdict::ALL`] order.
    pub by_verdict: Vec<(Verdict, bool, u64)>,
}

/// A host of the table, for the agent's /hosts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HostStanding {
    pub pid: u32,
    pub host: IpAddr,
    pub errors: u64,
    pub limit: u64,
    pub last_error_ns: u64,
    /// Refused with ERR 1129 since its last login.
    pub blocked: bool,
    pub by_verdict: Vec<(Verdict, bool, u64)>,
}

#[derive(Debug, Default)]
struct Entry {
    errors: u64,
    history: VecDeque<PastError>,
    /// Counts since the last login by (verdict index, probe).
    by_verdict: [[u64; 2]; Verdict::ALL.len()],
    last_login_ns: Option<u64>,
    last_ns: u64,
    warned_near: bool,
    warned_limit: bool,
    blocked: bool,
}

impl Entry {
    fn by_verdict(&self) -> Vec<(Verdict, bool, u64)> {
        let mut v = Vec::new();
        for (i, verdict) in Verdict::ALL.iter().enumerate() {
            for (probe, n) in [(false, self.by_verdict[i][0]), (true, self.by_verdict[i][1])] {
                if n > 0 {
                    v.push((*verdict, probe, n));
                }
            }
        }
        v
    }
}

/// The bounded table of hosts with errors since their last login, per server.
#[derive(Debug, Default)]
pub struct HostErrors {
    hosts: HashMap<(u32, IpAddr), Entry>,
    /// Last logins of hosts with no errors since (so a block can say when the last one was).
    logins: HashMap<(u32, IpAddr), u64>,
    warnings: VecDeque<HostWarning>,
    /// Hosts pushed out by the bound.
    pub evictions: u64,
}

impl HostErrors {
    pub fn len(&self) -> usize {
        self.hosts.len()
    }

    pub fn is_empty(&self) -> bool {
        self.hosts.is_empty()
    }

    /// Count a finished handshake; what it did to its host, for the output.
    pub fn record(&mut self, h: &Handshake, cfg: &ServerConfig) -> Option<HostNote> {
        let counts = counts(h, cfg)?;
        let host = h.client?.ip();
        let key = (h.pid, host);
        let at_ns = h.end_ns.unwrap_or(h.accept_ns);
        let limit = cfg.max_connect_errors.clone();
        match counts {
            Counts::Reset => {
                let e = self.hosts.remove(&key);
                if self.logins.len() >= MAX_HOSTS && !self.logins.contains_key(&key) {
                    self.logins.clear();
                }
                self.logins.insert(key, at_ns);
                let errors = e.map_or(0, |e| e.errors);
                // Only a reset of a count worth telling is attached.
                (errors > 0).then(|| HostNote { counts, errors: 0, limit, history: Vec::new(), older: errors, last_login_ns: Some(at_ns) })
            }
            Counts::Neither => None,
            Counts::Error | Counts::Blocked => {
                if !self.hosts.contains_key(&key) && self.hosts.len() >= MAX_HOSTS {
                    self.evict();
                }
                let last_login = self.logins.get(&key).copied();
                let e = self.hosts.entry(key).or_default();
                e.last_ns = at_ns;
                e.last_login_ns = last_login;
                if counts == Counts::Blocked {
                    e.blocked = true;
                    let older = e.errors.saturating_sub(e.history.len() as u64);
                    return Some(HostNote { counts, errors: e.errors, limit, history: e.history.iter().copied().collect(), older, last_login_ns: last_login });
                }
                let j = h.judgement.as_ref()?;
                let code = match &h.reply {
                    Some(Reply::Err(e)) => Some(e.code),
                    _ => None,
                };
                e.errors += 1;
                if e.history.len() >= HISTORY {
                    e.history.pop_front();
                }
                e.history.push_back(PastError { at_ns, verdict: j.verdict, code, probe: j.probe.is_some() });
                if let Some(i) = Verdict::ALL.iter().position(|v| *v == j.verdict) {
                    e.by_verdict[i][usize::from(j.probe.is_some())] += 1;
                }
                let near = e.errors * 100 >= limit.value * WARN_PERCENT;
                let at_limit = e.errors >= limit.value;
                let warn = (at_limit && !e.warned_limit) || (near && !e.warned_near);
                e.warned_near |= near;
                e.warned_limit |= at_limit;
                let note = HostNote { counts, errors: e.errors, limit: limit.clone(), history: Vec::new(), older: 0, last_login_ns: last_login };
                if warn {
                    let w = HostWarning { pid: h.pid, host, errors: e.errors, limit, at_limit, by_verdict: e.by_verdict() };
                    if self.warnings.len() >= MAX_WARNINGS {
                        self.warnings.pop_front();
                    }
                    self.warnings.push_back(w);
                }
                Some(note)
            }
        }
    }

    /// At the bound: the host with the fewest errors (the least recently seen among
    /// equals) makes room.
    fn evict(&mut self) {
        if let Some(k) = self.hosts.iter().min_by_key(|(_, e)| (e.errors, e.last_ns)).map(|(k, _)| *k) {
            self.hosts.remove(&k);
            self.evictions += 1;
        }
    }

    /// A server exited: its host cache went with it.
    pub fn forget_server(&mut self, pid: u32) {
        self.hosts.retain(|(p, _), _| *p != pid);
        self.logins.retain(|(p, _), _| *p != pid);
    }

    /// The warnings not yet said, oldest first.
    pub fn take_warnings(&mut self) -> Vec<HostWarning> {
        self.warnings.drain(..).collect()
    }

    /// The `k` hosts nearest their server's limit (by share of it, then by errors).
    pub fn nearest(&self, k: usize, limit_of: impl Fn(u32) -> u64) -> Vec<HostStanding> {
        let mut all: Vec<HostStanding> = self
            .hosts
            .iter()
            .map(|((pid, host), e)| HostStanding {
                pid: *pid,
                host: *host,
                errors: e.errors,
                limit: limit_of(*pid).max(1),
                last_error_ns: e.history.back().map_or(e.last_ns, |p| p.at_ns),
                blocked: e.blocked,
                by_verdict: e.by_verdict(),
            })
            .collect();
        // errors/limit descending, compared without floats.
        all.sort_by(|a, b| {
            ((b.errors as u128) * (a.limit as u128))
                .cmp(&((a.errors as u128) * (b.limit as u128)))
                .then(b.errors.cmp(&a.errors))
                .then(a.host.cmp(&b.host))
        });
        all.truncate(k);
        all
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{
        config::{Setting, Source},
        events::SyscallKind,
        testing::*,
    };

    fn from(events: Vec<crate::events::Event>, client: &str) -> Handshake {
        let mut h = handshakes_of(&events).pop().expect("one handshake");
        h.client = Some(client.parse().unwrap());
        h
    }

    fn blocked_events() -> Vec<crate::events::Event> {
        let err = err_packet(0, 1129, "HY000", "Host '127.0.0.2' is blocked because of many connection errors; unblock with 'mariadb-admin flush-hosts'");
        vec![
            accept_at(GEN, GEN),
            io(GEN + 100_000, SyscallKind::Sendto, err.len() as i64, err.len() as u64, &err),
            sys(GEN + 200_000, SyscallKind::Close, 0, 1000, [0; 4]),
        ]
    }

    fn limit(n: u64) -> ServerConfig {
        ServerConfig { max_connect_errors: Setting { value: n, source: Source::CommandLine, adjusted: false }, ..ServerConfig::default() }
    }

    const HOST: &str = "127.0.0.2:40000";

    #[test]
    fn what_the_server_counts() {
        let cfg = ServerConfig::default();
        assert_eq!(counts(&from(poll_timeout_events(), HOST), &cfg), Some(Counts::Error));
        assert_eq!(counts(&from(ok_login_events(), HOST), &cfg), Some(Counts::Reset));
        assert_eq!(counts(&from(wrong_password_events(), HOST), &cfg), Some(Counts::Neither), "a refused password is counted apart");
        assert_eq!(counts(&from(blocked_events(), HOST), &cfg), Some(Counts::Blocked));
        // Reset before the server could write its greeting: the failed write is not counted.
        let early_reset = vec![
            accept_at(GEN, GEN),
            crate::events::Event::Tcp(crate::events::Tcp { ts_ns: GEN + 1000, pid: PID, conn_gen: GEN, fd: FD, what: crate::events::TcpWhat::ReceiveReset }),
            io(GEN + 2000, SyscallKind::Sendto, -104, 104, &[]),
            sys(GEN + 3000, SyscallKind::Close, 0, 1000, [0; 4]),
        ];
        let h = from(early_reset, HOST);
        assert_eq!(h.verdict(), Some(Verdict::ClientReset));
        assert_eq!(counts(&h, &cfg), Some(Counts::Neither));
    }

    #[test]
    fn hosts_the_cache_does_not_follow_are_not_counted() {
        let skip = ServerConfig { skip_name_resolve: Setting { value: true, source: Source::CommandLine, adjusted: false }, ..ServerConfig::default() };
        assert_eq!(counts(&from(poll_timeout_events(), HOST), &skip), None);
        assert_eq!(counts(&from(poll_timeout_events(), "127.0.0.1:40000"), &ServerConfig::default()), None);
        let mut unix = from(poll_timeout_events(), HOST);
        unix.unix = true;
        assert_eq!(counts(&unix, &ServerConfig::default()), None);
    }

    #[test]
    fn errors_add_up_a_login_resets_and_a_password_does_neither() {
        let mut t = HostErrors::default();
        let cfg = limit(10);
        for i in 1..=3 {
            assert_eq!(t.record(&from(poll_timeout_events(), HOST), &cfg).unwrap().errors, i);
        }
        assert!(t.record(&from(wrong_password_events(), HOST), &cfg).is_none());
        let other = t.record(&from(poll_timeout_events(), "127.0.0.3:1"), &cfg).unwrap();
        assert_eq!(other.errors, 1, "hosts are counted apart");
        let reset = t.record(&from(ok_login_events(), HOST), &cfg).unwrap();
        assert_eq!((reset.counts, reset.errors, reset.older), (Counts::Reset, 0, 3));
        let again = t.record(&from(poll_timeout_events(), HOST), &cfg).unwrap();
        assert_eq!(again.errors, 1);
        assert!(again.last_login_ns.is_some());
        assert!(t.record(&from(ok_login_events(), "127.0.0.4:1"), &cfg).is_none(), "a login with nothing to reset says nothing");
    }

    #[test]
    fn a_warning_at_80_percent_and_one_at_the_limit_each_once() {
        let mut t = HostErrors::default();
        let cfg = limit(10);
        let mut said = Vec::new();
        for i in 1..=12u64 {
            t.record(&from(poll_timeout_events(), HOST), &cfg);
            said.extend(t.take_warnings().into_iter().map(|w| (i, w.errors, w.at_limit)));
        }
        assert_eq!(said, [(8, 8, false), (10, 10, true)]);
        let w = {
            t.record(&from(ok_login_events(), HOST), &cfg);
            for _ in 0..8 {
                t.record(&from(poll_timeout_events(), HOST), &cfg);
            }
            t.take_warnings()
        };
        assert_eq!(w.len(), 1, "warned again after a login reset the count");
        assert_eq!(w[0].by_verdict, [(Verdict::ServerTimeout, false, 8)]);
        assert_eq!(w[0].limit.source, Source::CommandLine);
    }

    #[test]
    fn a_block_carries_the_errors_since_the_last_login() {
        let mut t = HostErrors::default();
        let cfg = limit(3);
        t.record(&from(ok_login_events(), HOST), &cfg);
        for _ in 0..HISTORY + 2 {
            t.record(&from(poll_timeout_events(), HOST), &cfg);
        }
        let n = t.record(&from(blocked_events(), HOST), &cfg).unwrap();
        assert_eq!(n.counts, Counts::Blocked);
        assert_eq!((n.errors, n.history.len(), n.older), (HISTORY as u64 + 2, HISTORY, 2));
        assert!(n.history.iter().all(|p| p.verdict == Verdict::ServerTimeout));
        assert!(n.last_login_ns.is_some());
        let near = t.nearest(5, |_| 3);
        assert_eq!(near.len(), 1);
        assert!(near[0].blocked && near[0].errors == HISTORY as u64 + 2);
    }

    #[test]
    fn the_table_is_bounded_and_the_nearest_come_first() {
        let mut t = HostErrors::default();
        let cfg = limit(100);
        for i in 0..MAX_HOSTS as u32 + 10 {
            let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i);
            t.record(&from(poll_timeout_events(), &format!("{ip}:1")), &cfg);
        }
        assert_eq!(t.len(), MAX_HOSTS);
        assert_eq!(t.evictions, 10);
        for _ in 0..5 {
            t.record(&from(poll_timeout_events(), HOST), &cfg);
        }
        let near = t.nearest(3, |_| 100);
        assert_eq!(near.len(), 3);
        assert_eq!((near[0].host.to_string(), near[0].errors), ("127.0.0.2".to_string(), 5));
        t.forget_server(PID);
        assert!(t.is_empty());
    }
}
