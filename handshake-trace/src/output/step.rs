//! Each timeline step in words a MySQL engineer knows, written where it goes (a JSON
//! string, a timeline line) without a string of its own: a busy tracer writes a dozen
//! per handshake.
use std::fmt;

use handshake_trace_common::{
    end,
    sockopt::{SOL_SOCKET, SO_LINGER, SO_RCVTIMEO_NEW, SO_RCVTIMEO_OLD, SO_SNDTIMEO_NEW, SO_SNDTIMEO_OLD},
};

use super::names;
use crate::support::escape::Escaped;
use crate::{
    correlate::{Handshake, PacketSeen, Step, StepKind},
    events::{signal_name, tcp_state_name, Errno, SyscallKind, SyscallResult, TcpWhat},
    protocol,
};

fn ms(ns: u64) -> f64 {
    ns as f64 / 1e6
}

fn result_text(r: SyscallResult) -> String {
    match r {
        SyscallResult::Ok(n) => n.to_string(),
        SyscallResult::Err(e) => names::errno_described(e),
    }
}

fn sockopt_name(level: u64, name: u64) -> String {
    match (level, name) {
        (SOL_SOCKET, SO_LINGER) => "SO_LINGER".into(),
        (SOL_SOCKET, SO_RCVTIMEO_OLD | SO_RCVTIMEO_NEW) => "SO_RCVTIMEO".into(),
        (SOL_SOCKET, SO_SNDTIMEO_OLD | SO_SNDTIMEO_NEW) => "SO_SNDTIMEO".into(),
        // Not followed since the kernel's filter; older recordings may hold them.
        (1, 9) => "SO_KEEPALIVE".into(),
        (1, 7) => "SO_SNDBUF".into(),
        (1, 8) => "SO_RCVBUF".into(),
        (6, 1) => "TCP_NODELAY".into(),
        (0, 1) => "IP_TOS".into(),
        (41, 67) => "IPV6_TCLASS".into(),
        _ => format!("level {level} option {name}"),
    }
}

/// A step in words a MySQL engineer knows.
pub fn describe_step(h: &Handshake, s: &Step) -> String {
    let mut text = String::new();
    let _ = write_step(h, s, &mut text);
    text
}

/// A step in words, written where it goes (the JSON record, a timeline) without a
/// string of its own: a busy tracer writes a dozen per handshake.
pub fn write_step(h: &Handshake, s: &Step, f: &mut dyn fmt::Write) -> fmt::Result {
    match &s.what {
        StepKind::Accepted { listen_fd, client } => write_accept(h, *listen_fd, *client, f),
        StepKind::Handoff { from_tid } => write!(f, "handler thread {} takes the connection from thread {from_tid}", s.tid),
        StepKind::Blocking { nonblocking } => f.write_str(if *nonblocking {
            "fcntl(F_SETFL, O_NONBLOCK): socket non-blocking"
        } else {
            "fcntl(F_SETFL): socket switched to blocking"
        }),
        StepKind::SocketOption { level, name, value, value2 } => write_socket_option(*level, *name, *value, *value2, f),
        StepKind::Read { syscall: SyscallKind::PacketIn, result, packets, .. } => {
            write!(f, "packet from the client: {} bytes", result.bytes())?;
            write_packets(packets, f)
        }
        StepKind::Read { syscall: SyscallKind::SockRecv, result, nonblocking, packets, .. } => {
            write!(f, "{} socket read → ", if *nonblocking { "non-blocking" } else { "blocking" })?;
            write_read_result(*result, f)?;
            // A Unix-socket connection's bytes come with the server's own reads.
            write_packets(packets, f)
        }
        StepKind::Read { .. } => write_read(h, s, f),
        StepKind::Write { syscall: SyscallKind::PacketOut, result, packets } => {
            write!(f, "packet to the client: {} bytes", result.bytes())?;
            write_packets(packets, f)
        }
        StepKind::Write { syscall: SyscallKind::SockSend, result, packets } => {
            write!(f, "socket write → {}", result_text(*result))?;
            write_packets(packets, f)
        }
        StepKind::Write { syscall, result, packets } => {
            write!(f, "{} → ", syscall.name())?;
            match result {
                SyscallResult::Ok(n) => write!(f, "{n} bytes")?,
                SyscallResult::Err(e) => f.write_str(&names::errno_described(*e))?,
            }
            write_packets(packets, f)
        }
        StepKind::Wait { syscall, timeout_ms, result, duration_ns } => {
            write!(f, "{}(fd {}, ", syscall.name(), h.fd)?;
            match timeout_ms {
                Some(t) => write!(f, "{t} ms) → ")?,
                None => f.write_str("no timeout) → ")?,
            }
            match result {
                SyscallResult::Ok(0) => write!(f, "timed out after {:.1} ms", ms(*duration_ns)),
                SyscallResult::Ok(_) => write!(f, "readable after {:.1} ms", ms(*duration_ns)),
                SyscallResult::Err(e) => write!(f, "{} after {:.1} ms", names::errno_described(*e), ms(*duration_ns)),
            }
        }
        StepKind::Timer { syscall, ms: t, result } => {
            write!(f, "{}({t} ms) → {}: a timer armed", syscall.name(), result_text(*result))
        }
        StepKind::Kill { syscall, target, signal } => {
            write!(f, "{}({target}, {}) by thread {}", syscall.name(), signal_name(*signal), s.tid)
        }
        StepKind::Signal { signal, from_tid, to_tid, delivered } => {
            if *delivered {
                write!(f, "{} delivered to thread {to_tid}", signal_name(*signal))
            } else {
                write!(f, "{} sent by thread {from_tid} to thread {to_tid}", signal_name(*signal))
            }
        }
        StepKind::Tcp(w) => write_tcp(*w, f),
        StepKind::Shutdown { how } => {
            write!(f, "shutdown({})", names::shutdown_how(*how))
        }
        StepKind::Close { result, linger0 } => {
            // Inside TLS an ERR is encrypted: whether one was sent is not seen.
            let reply = if h.reply.is_some() || h.tls_hello_ns.is_some() { "" } else { ", no error packet sent" };
            if *linger0 {
                write!(f, "SO_LINGER 0 + close → RST{reply}")
            } else {
                write!(f, "close → {}{reply}", result_text(*result))
            }
        }
        StepKind::TrackingEnd { reason } => match *reason {
            end::REPLY => f.write_str("handshake over: no longer traced"),
            end::TLS_BUDGET => f.write_str("TLS connection past its handshake: no longer traced"),
            r => write!(f, "no longer traced (reason {r})"),
        },
        StepKind::Dropped => f.write_str("dropped: too many handshakes open at once"),
        StepKind::ProcessExited { pid } => write!(f, "process {pid} exited"),
        StepKind::Omitted(o) => write!(
            f,
            "… {} steps left out up to +{:.3} ms (the timeline keeps its first and its last ones): {} reads ({} bytes), {} writes ({} bytes), {} waits, {} packets, {} other",
            o.steps,
            h.ms_since_accept(o.last_ns),
            o.reads,
            o.read_bytes,
            o.writes,
            o.write_bytes,
            o.waits,
            o.packets,
            o.other
        ),
    }
}

/// How the connection began: an accept (on which listening fd, for which client), or in
/// the socket tier the connection established with no accept seen.
fn write_accept(h: &Handshake, listen_fd: i32, client: Option<std::net::SocketAddr>, f: &mut dyn fmt::Write) -> fmt::Result {
    let who = h.client_process.as_ref().map(|p| format!(" {}[{}]", Escaped(&p.program), p.pid)).unwrap_or_default();
    if h.socket_tier && h.unix {
        return write!(f, "Unix-socket connection from{who} (socket capture tier: its connect seen, no accept or fd)");
    }
    if h.socket_tier {
        return write!(
            f,
            "connection from {} established on {} (socket capture tier: no accept or fd seen)",
            names::addr(client),
            names::addr(h.server)
        );
    }
    if listen_fd < 0 {
        return write!(f, "accept (already waiting when tracing began) → fd {} from {}", h.fd, names::addr(client));
    }
    if h.unix {
        return write!(f, "accept on listening fd {listen_fd} → fd {} from a Unix-socket client{who}", h.fd);
    }
    write!(f, "accept on listening fd {listen_fd} → fd {} from {}", h.fd, names::addr(client))
}

/// A read of the connection: which part of the handshake it was after, how it ended, what it carried.
fn write_read(h: &Handshake, s: &Step, f: &mut dyn fmt::Write) -> fmt::Result {
    let StepKind::Read { syscall, result, requested, nonblocking, duration_ns, packets } = &s.what else { return Ok(()) };
    let header = packets.first().is_some_and(|p| matches!(p, PacketSeen::ProxyHeader { .. } | PacketSeen::ProxyHeaderPart { .. }));
    let what = if header && packets.len() == 1 {
        "of the PROXY protocol header"
    } else if h.login_ns.is_some_and(|t| t < s.ts_ns) || h.tls {
        "from the client"
    } else if *requested == 4 {
        "of the login header"
    } else {
        "of the login"
    };
    let mode = if *nonblocking { "non-blocking" } else { "blocking" };
    write!(f, "{mode} {} {what} ({requested} bytes) → ", syscall.name())?;
    write_read_result(*result, f)?;
    if !*nonblocking && *duration_ns > 1_000_000 {
        write!(f, " after {:.1} ms", ms(*duration_ns))?;
    }
    write_packets(packets, f)
}

fn write_socket_option(level: u64, name: u64, value: u64, value2: u64, f: &mut dyn fmt::Write) -> fmt::Result {
    match (level, name) {
        (SOL_SOCKET, SO_LINGER) => {
            // struct linger { int l_onoff; int l_linger; }
            let (on, secs) = (value & 0xffff_ffff, value >> 32);
            if on != 0 && secs == 0 {
                f.write_str("setsockopt(SO_LINGER {on, 0 s}): close will reset the connection (RST)")
            } else {
                write!(f, "setsockopt(SO_LINGER {{{}, {secs} s}})", if on != 0 { "on" } else { "off" })
            }
        }
        (SOL_SOCKET, SO_RCVTIMEO_OLD | SO_SNDTIMEO_OLD | SO_RCVTIMEO_NEW | SO_SNDTIMEO_NEW) => {
            // struct timeval { tv_sec; tv_usec; }
            write!(f, "setsockopt({} = {} ms)", sockopt_name(level, name), value * 1000 + value2 / 1000)
        }
        _ => write!(f, "setsockopt({} = {})", sockopt_name(level, name), value & 0xffff_ffff),
    }
}

fn write_read_result(result: SyscallResult, f: &mut dyn fmt::Write) -> fmt::Result {
    match result {
        SyscallResult::Ok(0) => f.write_str("0: the client closed the connection"),
        SyscallResult::Ok(n) => write!(f, "{n} bytes"),
        SyscallResult::Err(Errno::EAGAIN) => f.write_str("EAGAIN (nothing to read yet)"),
        SyscallResult::Err(Errno::EINTR) => f.write_str("EINTR (interrupted by a signal)"),
        SyscallResult::Err(e) => f.write_str(&names::errno_described(e)),
    }
}

fn write_packets(packets: &[PacketSeen], f: &mut dyn fmt::Write) -> fmt::Result {
    packets.iter().try_for_each(|p| {
        f.write_str("; ")?;
        write_packet(p, f)
    })
}

fn write_tcp(w: TcpWhat, f: &mut dyn fmt::Write) -> fmt::Result {
    match w {
        TcpWhat::Retransmit => f.write_str("TCP retransmit"),
        TcpWhat::ClientRetransmit => f.write_str("TCP retransmit by the client (its packet did not reach the server)"),
        TcpWhat::SendReset => f.write_str("TCP RST sent to the client"),
        TcpWhat::ReceiveReset => f.write_str("TCP RST received from the client"),
        TcpWhat::State { old, new } => write!(f, "TCP {} → {}", tcp_state_name(old), tcp_state_name(new)),
        TcpWhat::UnixClosed => f.write_str("the server's Unix socket found closed (noticed within 50 ms of the close)"),
    }
}

/// A packet seen in a read or write, in words (lengths only for secrets and TLS).
fn write_packet(p: &PacketSeen, f: &mut dyn fmt::Write) -> fmt::Result {
    match p {
        PacketSeen::ProxyHeader { version, source: Some(src), malformed: false } => {
            write!(f, "PROXY protocol v{version} header: the proxy relays client {}", super::addr::Addr(Some(*src)))
        }
        PacketSeen::ProxyHeader { version, source: None, malformed: false } => {
            write!(f, "PROXY protocol v{version} header naming no client (UNKNOWN or LOCAL: the proxy speaks for itself)")
        }
        PacketSeen::ProxyHeader { version, malformed: true, .. } => {
            write!(f, "PROXY protocol v{version} header that is not valid (the bytes after it cannot be read as packets)")
        }
        PacketSeen::ProxyHeaderPart { version } => write!(f, "part of a PROXY protocol v{version} header"),
        PacketSeen::SslRequest => f.write_str("SSLRequest (the client switches to TLS)"),
        PacketSeen::Login { user, database, plugin, auth_response_len } => {
            write!(f, "login: user '{}'", Escaped(user))?;
            if let Some(d) = database {
                write!(f, ", database '{}'", Escaped(d))?;
            }
            if let Some(p) = plugin {
                write!(f, ", plugin {}", Escaped(p))?;
            }
            write!(f, ", auth response {auth_response_len} bytes")
        }
        PacketSeen::AuthData { len } => write!(f, "auth data, {len} bytes"),
        PacketSeen::ClientOther { len } => write!(f, "client packet of {len} bytes"),
        PacketSeen::Command { code, len } => match (code, len) {
            (Some(1), 1) => write!(f, "COM_QUIT sent with the login"),
            (Some(14), 1) => write!(f, "COM_PING sent with the login"),
            (Some(c), _) => write!(f, "command 0x{c:02x} ({len} bytes) sent with the login"),
            (None, _) => write!(f, "a command ({len} bytes) sent with the login"),
        },
        PacketSeen::TlsClientHello => f.write_str("TLS ClientHello"),
        PacketSeen::Tls { len } => write!(f, "{len} bytes of TLS"),
        PacketSeen::Greeting { protocol, server_version, connection_id, auth_plugin } => write!(
            f,
            "greeting: protocol {protocol}, server {}, connection id {connection_id}, plugin {}",
            Escaped(server_version),
            Escaped(auth_plugin.as_deref().unwrap_or("-"))
        ),
        PacketSeen::Ok => f.write_str("OK: logged in"),
        PacketSeen::Err(e) => {
            write!(f, "ERR {} ({})", e.code, protocol::error_name(e.code).unwrap_or("?"))?;
            if let Some(s) = &e.sqlstate {
                write!(f, " [{}]", Escaped(s))?;
            }
            write!(f, ": {}", Escaped(&e.message))
        }
        PacketSeen::AuthSwitch { plugin, data_len } => {
            write!(f, "auth switch to {} ({data_len} bytes of plugin data)", Escaped(plugin))
        }
        PacketSeen::AuthMoreData { len } => write!(f, "auth more data, {len} bytes"),
        PacketSeen::ServerOther { first_byte, len } => write!(f, "server packet 0x{first_byte:02x} of {len} bytes"),
    }
}

/// A step's words as a `Display` (and a JSON string, escaped as it is written).
pub struct StepText<'a> {
    pub h: &'a Handshake,
    pub s: &'a Step,
}

impl fmt::Display for StepText<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write_step(self.h, self.s, f)
    }
}

thread_local! {
    /// One step's text is built here, then escaped for JSON in one pass: serde's
    /// `collect_str` escapes each of the many small pieces `write_step` writes.
    static STEP_TEXT: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

impl serde::Serialize for StepText<'_> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        STEP_TEXT.with(|buf| match buf.try_borrow_mut() {
            Ok(mut text) => {
                text.clear();
                fmt::write(&mut *text, format_args!("{self}")).map_err(serde::ser::Error::custom)?;
                serializer.serialize_str(&text)
            }
            Err(_) => serializer.collect_str(self),
        })
    }
}
