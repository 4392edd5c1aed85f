//! Which finished handshakes go on to the summary and the sinks: `--failed`,
//! `--verdict`, `--user`, `--client` (each given one must match; several values of one
//! option: any of them). Applied after judging, so the verdict is known.
use std::net::IpAddr;

use super::groups::ClientHost;
use crate::{correlate::Handshake, verdict::Verdict};

/// A client address or network (`--client`): an address, `ADDR/PREFIX`, or `unix`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientMatch {
    Net { addr: IpAddr, prefix: u8 },
    /// Clients of the server's Unix socket.
    Unix,
}

impl std::str::FromStr for ClientMatch {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s == "unix" {
            return Ok(ClientMatch::Unix);
        }
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let addr: IpAddr = addr
            .parse()
            .map_err(|_| format!("`{s}` is not an address or network (e.g. 10.1.2.3, 10.0.0.0/8, fd00::/8, unix)"))?;
        let addr = addr.to_canonical();
        let max = if addr.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("`{s}`: the prefix length must be a number from 0 to {max}"))?,
        };
        if masked(addr, prefix) != addr {
            return Err(format!("`{s}` has host bits set past /{prefix} (did you mean {}/{prefix}?)", masked(addr, prefix)));
        }
        Ok(ClientMatch::Net { addr, prefix })
    }
}

/// `addr` with only its first `prefix` bits kept.
fn masked(addr: IpAddr, prefix: u8) -> IpAddr {
    match addr {
        IpAddr::V4(a) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            IpAddr::from((u32::from(a) & mask).to_be_bytes())
        }
        IpAddr::V6(a) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            IpAddr::from((u128::from(a) & mask).to_be_bytes())
        }
    }
}

impl ClientMatch {
    pub fn matches(&self, host: ClientHost) -> bool {
        match (self, host) {
            (ClientMatch::Unix, ClientHost::Unix) => true,
            (ClientMatch::Net { addr, prefix }, ClientHost::Ip(ip)) => {
                addr.is_ipv4() == ip.is_ipv4() && masked(ip, *prefix) == *addr
            }
            _ => false,
        }
    }
}

/// The handshakes to keep; the default keeps all.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Only handshakes that did not end `ok`.
    pub failed: bool,
    /// Only these verdicts (empty: any).
    pub verdicts: Vec<Verdict>,
    /// Only logins as these users (empty: any; a handshake without a login matches none).
    pub users: Vec<String>,
    /// Only clients in these networks (empty: any).
    pub clients: Vec<ClientMatch>,
}

impl Selection {
    pub fn is_all(&self) -> bool {
        *self == Selection::default()
    }

    pub fn admits(&self, h: &Handshake) -> bool {
        let verdict = h.verdict();
        if self.failed && verdict == Some(Verdict::Ok) {
            return false;
        }
        if !self.verdicts.is_empty() && !verdict.is_some_and(|v| self.verdicts.contains(&v)) {
            return false;
        }
        if !self.users.is_empty() && !h.login.as_ref().is_some_and(|l| self.users.contains(&l.user)) {
            return false;
        }
        let host = ClientHost::of(h);
        self.clients.is_empty() || self.clients.iter().any(|c| c.matches(host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{handshakes_of, ok_login_events, wrong_password_events};

    fn from(addr: &str, events: &[crate::events::Event]) -> Handshake {
        let mut h = handshakes_of(events).remove(0);
        h.client = Some(addr.parse().unwrap());
        h
    }

    fn ok_from(addr: &str) -> Handshake {
        from(addr, &ok_login_events())
    }

    fn bad_from(addr: &str) -> Handshake {
        from(addr, &wrong_password_events())
    }

    #[test]
    fn failed_keeps_everything_but_ok() {
        let s = Selection { failed: true, ..Default::default() };
        assert!(!s.admits(&ok_from("10.0.0.1:5000")));
        assert!(s.admits(&bad_from("10.0.0.1:5000")));
        assert!(Selection::default().admits(&ok_from("10.0.0.1:5000")));
    }

    #[test]
    fn verdict_keeps_the_verdicts_named() {
        let s = Selection { verdicts: vec![Verdict::Ok, Verdict::ServerTimeout], ..Default::default() };
        assert!(s.admits(&ok_from("10.0.0.1:5000")));
        assert!(!s.admits(&bad_from("10.0.0.1:5000")));
        let s = Selection { verdicts: vec![Verdict::AuthFailed], ..Default::default() };
        assert!(s.admits(&bad_from("10.0.0.1:5000")));
    }

    #[test]
    fn user_matches_the_login_exactly_and_never_a_handshake_without_one() {
        let s = Selection { users: vec!["app".into(), "lab".into()], ..Default::default() };
        assert!(s.admits(&bad_from("10.0.0.1:5000")), "the synthetic login is user lab");
        let s = Selection { users: vec!["la".into()], ..Default::default() };
        assert!(!s.admits(&bad_from("10.0.0.1:5000")));
        let mut no_login = bad_from("10.0.0.1:5000");
        no_login.login = None;
        assert!(!Selection { users: vec!["lab".into()], ..Default::default() }.admits(&no_login));
    }

    #[test]
    fn client_matches_addresses_and_networks_of_either_family() {
        let net = |s: &str| Selection { clients: vec![s.parse().unwrap()], ..Default::default() };
        assert!(net("10.1.0.0/16").admits(&ok_from("10.1.2.3:5000")));
        assert!(!net("10.1.0.0/16").admits(&ok_from("10.2.2.3:5000")));
        assert!(net("10.1.2.3").admits(&ok_from("10.1.2.3:5000")));
        assert!(!net("10.1.2.3").admits(&ok_from("10.1.2.4:5000")));
        // An IPv4 client of a dual-stack listener.
        assert!(net("10.1.0.0/16").admits(&ok_from("[::ffff:10.1.2.3]:5000")));
        assert!(net("fd00::/8").admits(&ok_from("[fd12::1]:5000")));
        assert!(!net("fd00::/8").admits(&ok_from("[fe80::1]:5000")));
        assert!(!net("::/0").admits(&ok_from("10.1.2.3:5000")), "an IPv6 network holds no IPv4 client");
        assert!(net("0.0.0.0/0").admits(&ok_from("10.1.2.3:5000")));
        let mut unix = ok_from("10.1.2.3:5000");
        (unix.unix, unix.client) = (true, None);
        assert!(net("unix").admits(&unix));
        assert!(!net("10.0.0.0/8").admits(&unix));
        assert!(!net("unix").admits(&ok_from("10.1.2.3:5000")));
        let either = Selection { clients: vec!["10.9.0.0/16".parse().unwrap(), "10.1.2.3".parse().unwrap()], ..Default::default() };
        assert!(either.admits(&ok_from("10.1.2.3:5000")));
    }

    #[test]
    fn options_combine_as_and() {
        let s = Selection { failed: true, users: vec!["lab".into()], clients: vec!["10.1.0.0/16".parse().unwrap()], ..Default::default() };
        assert!(s.admits(&bad_from("10.1.2.3:5000")));
        assert!(!s.admits(&bad_from("10.2.2.3:5000")));
        assert!(!s.admits(&ok_from("10.1.2.3:5000")));
    }

    #[test]
    fn bad_client_values_say_what_is_wrong() {
        let err = |s: &str| s.parse::<ClientMatch>().unwrap_err();
        assert!(err("10.1.2").contains("is not an address or network"), "{}", err("10.1.2"));
        assert!(err("10.0.0.0/33").contains("from 0 to 32"), "{}", err("10.0.0.0/33"));
        assert!(err("fd00::/129").contains("from 0 to 128"));
        assert!(err("10.0.0.0/x").contains("prefix length"));
        assert!(err("10.1.2.3/8").contains("did you mean 10.0.0.0/8?"), "{}", err("10.1.2.3/8"));
    }
}
