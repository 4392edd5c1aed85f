//! Notices and warnings on stderr while tracing, each with the time it was said:
//! "22:35:01.123 notice: pid 5624 exited; still tracing".
use std::{io::Write, time::SystemTime};

use super::{columns::Terminal, reason};
use crate::{
    capture::cgroup::{Place, RootWhy},
    config::{Refusal, ServerConfig},
    events::Counters,
    support::escape::Escaped,
};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Notice,
    Warning,
}

/// The notice as printed at `at`, folded to the width of `term`.
pub fn line(term: &Terminal, at: SystemTime, level: Level, text: &str) -> String {
    let word = match level {
        Level::Notice => "notice",
        Level::Warning => "WARNING",
    };
    term.fold(&format!("{} {word}: {text}", term.time(at)), 4)
}

/// Write a notice stamped now.
pub fn say(log: &mut dyn Write, term: &Terminal, level: Level, text: &str) -> std::io::Result<()> {
    writeln!(log, "{}", line(term, SystemTime::now(), level, text))
}

/// A traced server exited.
pub fn exited(pid: u32) -> String {
    format!("pid {pid} exited; still tracing (its open handshakes end incomplete)")
}

/// A server was adopted (discovery mode).
pub fn adopted(pid: u32, name: &str) -> String {
    format!("now tracing {name} (pid {pid})")
}

/// Kernel records lost (`now`, and `before`: the counts already reported), with the
/// advice that fits what lost them: a full ring buffer is helped by a larger one, a
/// full map (connections in their handshake, threads in a traced syscall) is not.
pub fn events_lost(now: &Counters, before: &Counters) -> String {
    let ring = now.lost_ringbuf.saturating_sub(before.lost_ringbuf);
    let map = now.lost_mapfull.saturating_sub(before.lost_mapfull);
    let head = format!("{} events lost so far ({} ring buffer full, {} map full)", now.lost(), now.lost_ringbuf, now.lost_mapfull);
    let new = if before.lost() > 0 { "the new ones " } else { "" };
    format!("{head}; {new}{}", loss_advice(ring, map))
}

/// What to do about `ring` records lost to a full ring buffer and `map` to a full map.
pub fn loss_advice(ring: u64, map: u64) -> String {
    let ring_advice = "the reader fell behind: raise --ringbuf-kb (or give the tracer more CPU)";
    let map_advice = format!(
        "more connections in their handshake (or server threads in a traced call) at once than the tracer follows          ({} connections, {} threads): a larger --ringbuf-kb does not help; fewer targets or --port does",
        handshake_trace_common::MAX_CONNS,
        handshake_trace_common::MAX_TASKS
    );
    match (ring > 0, map > 0) {
        (true, false) => ring_advice.to_string(),
        (false, true) => format!("all map full: {map_advice}"),
        (true, true) => format!("ring buffer: {ring_advice}; maps: {map_advice}"),
        (false, false) => "none new".to_string(),
    }
}

/// A server's configuration as the tracer read it: the values its verdicts depend on.
pub fn server_config(pid: u32, cfg: &ServerConfig) -> String {
    format!("pid {pid}: {}", server_config_values(cfg))
}

/// "connect_timeout 2 s (the server's command line), max_connect_errors …".
pub fn server_config_values(cfg: &ServerConfig) -> String {
    let skip = &cfg.skip_name_resolve;
    let mut s = format!(
        "connect_timeout {} s ({}), max_connect_errors {} ({}), skip-name-resolve {} ({})",
        cfg.connect_timeout_s.value,
        reason::source(&cfg.connect_timeout_s.source, "--connect-timeout"),
        cfg.max_connect_errors.value,
        reason::source(&cfg.max_connect_errors.source, "--max-connect-errors"),
        if skip.value { "on" } else { "off" },
        reason::source(&skip.source, ""),
    );
    if let Some(p) = &cfg.proxy_protocol_networks.value {
        s.push_str(&format!(", proxy-protocol-networks {} ({})", Escaped(p), reason::source(&cfg.proxy_protocol_networks.source, "")));
    }
    if cfg.no_defaults {
        s.push_str("; --no-defaults: no option file read");
    }
    s
}

/// The option files a server reads that the tracer did not: their values may differ.
pub fn config_refused(pid: u32, cfg: &ServerConfig) -> Option<String> {
    let refused: Vec<String> = cfg
        .refused()
        .map(|(path, why)| {
            let why = match why {
                Refusal::NotRegular => "not a regular file".to_string(),
                Refusal::TooLarge => "too large".to_string(),
                Refusal::NotTrusted => "the server's user cannot read it and root did not name it".to_string(),
                Refusal::Relative => "a relative path".to_string(),
                Refusal::TooDeep => "includes too deep".to_string(),
                Refusal::TooMany => "too many files".to_string(),
                Refusal::NotText => "not text".to_string(),
                Refusal::Io(e) => std::io::Error::from_raw_os_error(e).to_string(),
            };
            format!("{} ({why})", Escaped(path))
        })
        .take(8)
        .collect();
    (!refused.is_empty()).then(|| format!("pid {pid}: option files not read, the values above may differ: {}", refused.join(", ")))
}

/// Socket tier: where the packet programs are attached, and what that costs others.
pub fn packets_at(place: &Place) -> String {
    let root = "the packet programs are on the cgroup v2 root: every process's packets run them";
    match place {
        Place::Targets(path) => {
            format!("the packet programs are on cgroup {} (the servers'): other processes' packets do not run them", Escaped(path))
        }
        Place::Root(RootWhy::TargetsThere) => format!("{root} (a server runs in the root cgroup, or the servers share no other)"),
        Place::Root(RootWhy::Unknown(pid)) => {
            format!("{root} (pid {pid}'s cgroup v2 is not known: /proc/{pid}/cgroup has none below this cgroup namespace)")
        }
        Place::Root(RootWhy::Moved) => format!(
            "{root} from now on: a connection's socket was outside the servers' cgroup (a server moved to another \
             cgroup after it opened its listening socket); that handshake ends incomplete"
        ),
        Place::Root(RootWhy::Failed(why)) => format!("{root} (the servers' cgroup: {})", Escaped(why)),
        Place::Root(RootWhy::NoCheck(why)) => {
            format!("{root} (this kernel's BTF does not say where a socket's cgroup is kept: {})", Escaped(why))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    #[test]
    fn notices_carry_their_time() {
        let at = UNIX_EPOCH + Duration::from_millis(1_700_000_000_123);
        let term = Terminal::default();
        let l = line(&term, at, Level::Notice, &exited(5624));
        let (time, rest) = l.split_once(' ').unwrap();
        assert_eq!(time.len(), 12, "{l}");
        assert!(time.ends_with(".123") && time.as_bytes()[2] == b':' && time.as_bytes()[5] == b':', "{l}");
        assert_eq!(rest, "notice: pid 5624 exited; still tracing (its open handshakes end incomplete)");
        let w = line(&term, at, Level::Warning, "3 events lost");
        assert!(w.ends_with(" WARNING: 3 events lost") && w.len() == 12 + " WARNING: 3 events lost".len(), "{w}");
        let dated = line(&Terminal { date: true, ..term }, at, Level::Notice, "x");
        assert!(dated.starts_with("2023-11-1") && dated.ends_with(".123 notice: x"), "{dated}");
    }

    #[test]
    fn a_long_notice_is_folded_to_the_terminal() {
        let at = UNIX_EPOCH;
        let term = Terminal { width: Some(40), ..Terminal::default() };
        let l = line(&term, at, Level::Warning, "pid 1 (sleep) is not named mysqld or mariadbd: its connections are decoded anyway");
        assert!(l.lines().count() > 1 && l.lines().all(|x| x.chars().count() < 40), "{l}");
    }

    #[test]
    fn loss_advice_names_what_lost_the_events() {
        let before = Counters::default();
        let map_only = Counters { lost_mapfull: 46, ..Counters::default() };
        let t = events_lost(&map_only, &before);
        assert!(t.starts_with("46 events lost so far (0 ring buffer full, 46 map full)"), "{t}");
        assert!(t.contains("does not help") && !t.contains("raise --ringbuf-kb"), "{t}");
        let ring_only = Counters { lost_ringbuf: 5, ..Counters::default() };
        let t = events_lost(&ring_only, &before);
        assert!(t.contains("raise --ringbuf-kb") && !t.contains("does not help"), "{t}");
        // Old ring losses, new map losses: the advice is about the new ones.
        let later = Counters { lost_ringbuf: 5, lost_mapfull: 2, ..Counters::default() };
        let t = events_lost(&later, &ring_only);
        assert!(t.contains("the new ones all map full") && !t.contains("raise --ringbuf-kb"), "{t}");
        let both = events_lost(&later, &before);
        assert!(both.contains("raise --ringbuf-kb") && both.contains("does not help"), "{both}");
    }

    #[test]
    fn a_servers_configuration_names_each_source() {
        use crate::config::{FileOutcome, FileRead, Setting, Source};
        let cfg = ServerConfig {
            connect_timeout_s: Setting { value: 2, source: Source::CommandLine, adjusted: false },
            max_connect_errors: Setting { value: 5, source: Source::File { path: "/etc/my\x1b.cnf".into(), line: 3 }, adjusted: false },
            files: vec![FileRead { path: "/home/x/.my.cnf".into(), outcome: FileOutcome::Refused(Refusal::NotTrusted) }],
            ..ServerConfig::default()
        };
        let t = server_config(7, &cfg);
        assert_eq!(
            t,
            "pid 7: connect_timeout 2 s (the server's command line), max_connect_errors 5 (/etc/my\\x1b.cnf:3), \
             skip-name-resolve off (MariaDB 10.11's default: set nowhere)"
        );
        let odd = ServerConfig { max_connect_errors: Setting { value: 5, source: Source::File { path: "/e\x1b[2J".into(), line: 1 }, adjusted: false }, ..cfg.clone() };
        assert!(!server_config(7, &odd).contains('\x1b'));
        let r = config_refused(7, &cfg).unwrap();
        assert!(r.contains("/home/x/.my.cnf (the server's user cannot read it and root did not name it)"), "{r}");
        assert_eq!(config_refused(7, &ServerConfig::default()), None);
    }

    #[test]
    fn where_the_packet_programs_are_is_said_with_its_cost() {
        let own = packets_at(&Place::Targets("/system.slice/mariadb.service".into()));
        assert!(own.contains("on cgroup /system.slice/mariadb.service (the servers'): other processes' packets do not run them"), "{own}");
        let odd = packets_at(&Place::Targets("/x\x1b[2Jy".into()));
        assert!(!odd.contains('\x1b'), "{odd}");
        for why in [RootWhy::TargetsThere, RootWhy::Unknown(7), RootWhy::Moved, RootWhy::Failed("gone".into()), RootWhy::NoCheck("no".into())] {
            let root = packets_at(&Place::Root(why.clone()));
            assert!(root.starts_with("the packet programs are on the cgroup v2 root: every process's packets run them"), "{why:?}: {root}");
        }
        assert!(packets_at(&Place::Root(RootWhy::Moved)).contains("that handshake ends incomplete"));
    }
}
