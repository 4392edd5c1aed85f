//! Turning events into text for people and JSON Lines for machines. Pure.
use std::net::SocketAddr;

use serde_json::{json, Value};

use crate::{
    clock::{format_rfc3339, format_time_of_day, Clock},
    events::{Accept, SyscallResult},
};

/// An accept with what userspace learned about it (the listening address).
#[derive(Debug, Clone)]
pub struct AcceptView<'a> {
    pub accept: &'a Accept,
    /// Local address of the listening socket, when /proc told us.
    pub server: Option<SocketAddr>,
    /// Peer address: from the kernel event, or /proc when the server passed no buffer.
    pub client: Option<SocketAddr>,
}

pub const ACCEPT_HEADER: &str = "TIME         PID     TID     LISTEN                 LFD   FD    CLIENT";

fn addr_or_dash(a: Option<SocketAddr>) -> String {
    a.map(|a| a.to_string()).unwrap_or_else(|| "-".into())
}

pub fn accept_line(v: &AcceptView, clock: &Clock) -> String {
    let a = v.accept;
    let (fd, client) = match a.result {
        SyscallResult::Ok(fd) => (fd.to_string(), addr_or_dash(v.client)),
        SyscallResult::Err(e) => ("-".into(), format!("accept failed: {}", e.describe())),
    };
    format!(
        "{:<12} {:<7} {:<7} {:<22} {:<5} {:<5} {}",
        format_time_of_day(clock.wall(a.ts_ns)),
        a.pid,
        a.tid,
        addr_or_dash(v.server),
        a.listen_fd,
        fd,
        client
    )
}

pub fn accept_json(v: &AcceptView, clock: &Clock) -> Value {
    let a = v.accept;
    let (fd, error) = match a.result {
        SyscallResult::Ok(fd) => (Value::from(fd), Value::Null),
        SyscallResult::Err(e) => (Value::Null, Value::from(e.describe())),
    };
    json!({
        "event": "accept",
        "time": format_rfc3339(clock.wall(a.ts_ns)),
        "ts_ns": a.ts_ns,
        "pid": a.pid,
        "tid": a.tid,
        "listen_fd": a.listen_fd,
        "server": v.server.map(|s| s.to_string()),
        "fd": fd,
        "client": v.client.map(|c| c.to_string()),
        "client_ip": v.client.map(|c| c.ip().to_string()),
        "client_port": v.client.map(|c| c.port()),
        "error": error,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::events::Errno;

    fn accept(result: SyscallResult) -> Accept {
        Accept {
            ts_ns: 1_000_000,
            conn_gen: 1_000_000,
            pid: 42,
            tid: 43,
            listen_fd: 18,
            result,
            peer: Some("127.0.0.1:51234".parse().unwrap()),
        }
    }

    #[test]
    fn json_has_every_documented_field() {
        let a = accept(SyscallResult::Ok(35));
        let v = AcceptView {
            accept: &a,
            server: Some("127.0.0.1:3306".parse().unwrap()),
            client: a.peer,
        };
        let j = accept_json(&v, &Clock::with_offset(0));
        assert_eq!(j["event"], "accept");
        assert_eq!(j["time"], "1970-01-01T00:00:00.001000Z");
        assert_eq!(j["fd"], 35);
        assert_eq!(j["listen_fd"], 18);
        assert_eq!(j["server"], "127.0.0.1:3306");
        assert_eq!(j["client"], "127.0.0.1:51234");
        assert_eq!(j["client_port"], 51234);
        assert_eq!(j["error"], Value::Null);
    }

    #[test]
    fn failed_accept_shows_the_error() {
        let a = accept(SyscallResult::Err(Errno(24)));
        let v = AcceptView { accept: &a, server: None, client: None };
        let line = accept_line(&v, &Clock::with_offset(0));
        assert!(line.ends_with("accept failed: EMFILE"), "{line}");
        let j = accept_json(&v, &Clock::with_offset(0));
        assert_eq!(j["error"], "EMFILE");
        assert_eq!(j["fd"], Value::Null);
    }

    #[test]
    fn text_line_columns() {
        let a = accept(SyscallResult::Ok(35));
        let v = AcceptView { accept: &a, server: None, client: a.peer };
        let line = accept_line(&v, &Clock::with_offset(0));
        let cols: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(&cols[1..], ["42", "43", "-", "18", "35", "127.0.0.1:51234"]);
    }
}
