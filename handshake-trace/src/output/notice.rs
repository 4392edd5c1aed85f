//! Notices and warnings on stderr while tracing, each with the time it was said:
//! "22:35:01.123 notice: pid 5624 exited; still tracing".
use std::{io::Write, time::SystemTime};

use super::columns::Terminal;
use crate::{
    capture::cgroup::{Place, RootWhy},
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
