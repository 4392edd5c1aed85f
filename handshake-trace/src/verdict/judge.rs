//! The judge: from a handshake's timeline and evidence to its verdict and cause.
use handshake_trace_common::end;

use super::{
    blame, tls, Awaited, Cause, ClientReport, Judgement, LateGreeting, LostAt, Probe, ProxyRefusal, TimeoutWait, Verdict, WaitMechanism,
};
use crate::{
    correlate::{Handshake, LastRead, LastWait, PacketSeen, Reply, StepKind},
    events::{Errno, SyscallResult, TcpWhat},
    protocol::{self, ProxyFound},
};

/// A greeting later than this most likely outlasted the client's patience.
const SLOW_GREETING_NS: u64 = 500_000_000;

/// The least `connect_timeout` MariaDB and MySQL accept is 2 s (10 ms spared for the
/// clocks): an ERR sooner than this after a read that found nothing is no timeout's.
const LEAST_CONNECT_TIMEOUT_NS: u64 = 1_990_000_000;

/// Judge a handshake. `open_at_end` = tracing stopped (or the process exited) before it ended.
pub fn judge(h: &Handshake, open_at_end: bool) -> Judgement {
    let cause = cause(h, open_at_end);
    let verdict = verdict_of(&cause);
    let probe = probe_kind(h, &cause);
    let blame = blame::attribute(h, &cause, probe == Some(Probe::PortCheck));
    Judgement { verdict, client_report: client_report(h, verdict, &cause), cause, probe, blame }
}

/// Client programs whose logins are health checks (`mysqladmin ping`): named by the
/// login's `program_name` attribute. A name only moves a successful login from the
/// applications' count to the probes': it never hides a failure.
const HEALTH_CHECK_PROGRAMS: [&str; 2] = ["mysqladmin", "mariadb-admin"];

/// Is it a probe, and which? A port check: the client closed or reset without sending
/// a byte, and not because a late greeting made it give up (that one is a real
/// failure, on the server's side). A health check: a login that succeeded and did
/// nothing but a one-byte command (COM_QUIT, COM_PING) sent with it, or a login by
/// mysqladmin. A failed login is never a probe.
fn probe_kind(h: &Handshake, cause: &Cause) -> Option<Probe> {
    match cause {
        Cause::ClientClosed { late_greeting: None } | Cause::ClientReset { late_greeting: None } if !client_sent_bytes(h) => {
            Some(Probe::PortCheck)
        }
        Cause::LoggedIn if quit_with_login(h) || health_check_program(h) || bare_login(h) => Some(Probe::HealthCheck),
        _ => None,
    }
}

/// Commands the client sent behind its login before the reply (the command phase's
/// packets, sequence 0): at least one, each one byte (no argument: COM_QUIT, COM_PING).
fn quit_with_login(h: &Handshake) -> bool {
    let mut commands = h.steps.iter().flat_map(|s| match &s.what {
        StepKind::Read { packets, .. } => packets.as_slice(),
        _ => &[],
    });
    let mut any = false;
    let all_bare = commands.all(|p| match p {
        PacketSeen::Command { len, .. } => {
            any = true;
            *len == 1
        }
        _ => true,
    });
    any && all_bare
}

/// A login as a load balancer's check sends it (HAProxy `mysql-check user X [post-41]`):
/// no auth plugin named, no connect attributes, no database, an empty auth response.
/// Every current client library names its plugin and sends attributes; the check's
/// COM_QUIT, sent in the same segment, is read only after the OK, where the syscall
/// tier no longer follows the connection.
fn bare_login(h: &Handshake) -> bool {
    h.login.as_ref().is_some_and(|l| l.auth_plugin.is_none() && l.attrs.is_empty() && l.database.is_none() && l.auth_response_len == 0)
}

fn health_check_program(h: &Handshake) -> bool {
    h.login.as_ref().and_then(|l| l.attrs.get("program_name")).is_some_and(|p| HEALTH_CHECK_PROGRAMS.contains(&p))
}

/// The server read at least one byte from the client.
fn client_sent_bytes(h: &Handshake) -> bool {
    h.login.is_some()
        || h.tls
        || h.steps.iter().any(|s| matches!(s.what, StepKind::Read { result: SyscallResult::Ok(n), .. } if n > 0))
        || h.omitted().is_some_and(|o| o.read_bytes > 0)
}

/// TCP retransmits after the greeting was written, when the client then sent nothing:
/// the greeting (or its retransmits) never reached the client. Not so when the client's
/// own socket retransmitted: it was sending its login, so it had the greeting (the
/// server retransmits a greeting whose ACK rode on a lost login).
fn greeting_retransmits(h: &Handshake) -> u64 {
    let Some(greeting) = h.greeting_ns else { return 0 };
    if client_sent_bytes(h) || blame::client_retransmits(h) > 0 {
        return 0;
    }
    let omitted = h.omitted().map_or(0, |o| o.retransmits_after_greeting);
    h.steps.iter().filter(|s| s.ts_ns >= greeting && matches!(s.what, StepKind::Tcp(TcpWhat::Retransmit))).count() as u64 + omitted
}

fn cause(h: &Handshake, open_at_end: bool) -> Cause {
    let ev = &h.evidence;
    // No byte of it was seen: nothing below may be inferred from their absence.
    if ev.packets_unseen {
        return Cause::PacketsUnseen;
    }
    match &h.reply {
        Some(Reply::Ok) => return Cause::LoggedIn,
        Some(Reply::Err(e)) => {
            if let Some(why) = proxy_refusal(h, e) {
                return Cause::ProxyRefused { code: e.code, why };
            }
            // A server that gave up waiting may say so before it closes (a plaintext ERR
            // 1043 after waiting in vain for the TLS ClientHello): still a timeout, when
            // the waits before it are known to be whole.
            if ev.events_may_be_lost {
                return Cause::ErrSent { code: e.code };
            }
            return match timeout_wait(h) {
                Some(wait) => {
                    Cause::ServerTimedOut { wait, reset: ev.linger0, then_err: Some(e.code), greeting_retransmits: greeting_retransmits(h) }
                }
                None => Cause::ErrSent { code: e.code },
            };
        }
        None => {}
    }
    // Everything below is inferred from what was (not) seen: not with records missing.
    if ev.events_may_be_lost {
        return Cause::EventsLost;
    }
    if ev.tracking_ended == Some(end::TLS_BUDGET) {
        return tls::command_phase(h).unwrap_or(Cause::TlsPastHandshake);
    }
    if !ev.closed {
        if h.steps.iter().any(|s| matches!(s.what, StepKind::ProcessExited { .. })) {
            return Cause::ServerExited;
        }
        // Given up while open (too many open at once): not "still open when tracing stopped".
        if h.steps.iter().any(|s| s.what == StepKind::Dropped) {
            return Cause::NotSeenToEnd;
        }
        return if open_at_end { Cause::StillOpen } else { Cause::NotSeenToEnd };
    }
    let timeout = timeout_wait(h);
    if h.tls && timeout.is_none() {
        if let Some(c) = tls::closed(h) {
            return c;
        }
    }
    if let Some(wait) = timeout {
        // The socket tier sees no SO_LINGER: the reset itself (or the abort that sends it).
        let reset = if h.socket_tier { ev.rst_sent } else { ev.linger0 };
        return Cause::ServerTimedOut { wait, reset, then_err: None, greeting_retransmits: greeting_retransmits(h) };
    }
    if ev.client_rst {
        return Cause::ClientReset { late_greeting: late_greeting(h) };
    }
    if let Some(how) = shut_down_first(h) {
        return Cause::ServerShutDown { how };
    }
    if ev.client_fin {
        return Cause::ClientClosed { late_greeting: late_greeting(h) };
    }
    Cause::ServerClosedUnexplained
}

/// MariaDB's words when it refuses a PROXY header (10.11, seen on a real server; the
/// same in every language setting, unlike its translated messages): from an address outside `proxy_protocol_networks`
/// (ERR 1130), and a header it cannot parse (ERR 1105).
const PROXY_NOT_ACCEPTED: &str = "Proxy header is not accepted from ";
const PROXY_NOT_PARSED: &str = "Failed to parse proxy header";

/// An ERR that refuses the PROXY header the connection opened with. ERR 1130 also
/// refuses a client host the accounts do not allow, after a header that named it:
/// only MariaDB's own words about the header tell the two apart.
fn proxy_refusal(h: &Handshake, e: &crate::protocol::ErrPacket) -> Option<ProxyRefusal> {
    let header = h.proxy.as_ref()?;
    if e.code == protocol::errors::ER_HOST_NOT_PRIVILEGED && e.message.starts_with(PROXY_NOT_ACCEPTED) {
        return Some(ProxyRefusal::UntrustedProxy);
    }
    let malformed = matches!(header, ProxyFound::Malformed { .. });
    (e.code == protocol::errors::ER_UNKNOWN_ERROR && (malformed || e.message.starts_with(PROXY_NOT_PARSED)))
        .then_some(ProxyRefusal::Malformed)
}

fn verdict_of(cause: &Cause) -> Verdict {
    match cause {
        Cause::LoggedIn | Cause::TlsPastHandshake | Cause::TlsCommandPhase { .. } | Cause::TlsClientQuit => Verdict::Ok,
        Cause::ErrSent { code } if protocol::is_auth_error(*code) => Verdict::AuthFailed,
        Cause::ErrSent { .. } | Cause::ProxyRefused { .. } => Verdict::ServerError,
        Cause::StillOpen | Cause::NotSeenToEnd | Cause::ServerExited | Cause::EventsLost | Cause::PacketsUnseen => Verdict::Incomplete,
        Cause::ServerShutDown { .. } => Verdict::ServerClosed,
        Cause::ServerTimedOut { .. } => Verdict::ServerTimeout,
        Cause::ClientReset { .. } => Verdict::ClientReset,
        Cause::ClientClosed { .. } => Verdict::ClientClosed,
        // Inferred: an encrypted ERR to the login, most often a refused password.
        Cause::TlsClosedAfterReply => Verdict::AuthFailed,
        Cause::ServerClosedUnexplained => Verdict::ServerClosed,
    }
}

/// The server called shutdown() on the connection before the client's FIN was read
/// (a server stopping shuts its connections down): the read's 0 answers the server.
fn shut_down_first(h: &Handshake) -> Option<u64> {
    let (at, how) = h.steps.iter().find_map(|s| match &s.what {
        StepKind::Shutdown { how } => Some((s.ts_ns, *how)),
        StepKind::Omitted(o) => o.first_shutdown,
        _ => None,
    })?;
    let fin_read = h.steps.iter().find_map(|s| match &s.what {
        StepKind::Read { result: SyscallResult::Ok(0), .. } => Some(s.ts_ns),
        StepKind::Omitted(o) => o.first_fin_read_ns,
        _ => None,
    });
    fin_read.is_none_or(|fin| at <= fin).then_some(how)
}

/// When the greeting came late (or never), the client probably gave up waiting for it.
fn late_greeting(h: &Handshake) -> Option<LateGreeting> {
    match h.greeting_ns {
        Some(g) if g - h.accept_ns >= SLOW_GREETING_NS && h.login.is_none() => Some(LateGreeting::SentAfter { ns: g - h.accept_ns }),
        None if h.end_ns.unwrap_or(0).saturating_sub(h.accept_ns) >= SLOW_GREETING_NS => Some(LateGreeting::NotSent),
        _ => None,
    }
}

fn awaited(h: &Handshake) -> Awaited {
    if h.greeting_ns.is_none() {
        Awaited::BeforeGreeting
    } else if h.tls && h.tls_hello_ns.is_none() {
        Awaited::TlsClientHello
    } else if h.tls {
        Awaited::TlsData
    } else if h.login.is_none() {
        Awaited::Login
    } else {
        Awaited::MoreAuthData
    }
}

/// The last wait before the close, if it timed out.
fn timeout_wait(h: &Handshake) -> Option<TimeoutWait> {
    let ev = &h.evidence;
    let waiting_for = awaited(h);
    let read = ev.last_read.unwrap_or(LastRead { result: SyscallResult::Ok(1), nonblocking: true, duration_ns: 0, ts_ns: 0 });
    if h.socket_tier {
        return socket_tier_timeout(h, read, waiting_for);
    }
    if let (SyscallResult::Err(e), false) = (read.result, read.nonblocking) {
        // A blocking read interrupted by a signal: EINTR or a restart code, with a
        // SIGALRM generated for the handler during the handshake, before the read returned.
        if e.is_interrupt() {
            let alarm = ev.sigalrm.filter(|a| a.ts_ns <= read.ts_ns && a.ts_ns >= h.accept_ns);
            if alarm.is_some() || e == Errno::EINTR {
                return Some(TimeoutWait {
                    mechanism: WaitMechanism::AlarmEintr,
                    timeout_ms: armed_timer_ms(h),
                    waited_ns: read.duration_ns,
                    waiting_for,
                    signal_from: alarm.map(|a| a.from_tid).filter(|t| *t != 0),
                });
            }
        }
        if (e == Errno::EAGAIN || e == Errno::ETIMEDOUT) && ev.rcvtimeo_ms.is_some() {
            return Some(TimeoutWait {
                mechanism: WaitMechanism::SocketTimeout,
                timeout_ms: ev.rcvtimeo_ms,
                waited_ns: read.duration_ns,
                waiting_for,
                signal_from: None,
            });
        }
    }
    // The last wait returned 0 ready descriptors, after the last read: its timeout expired.
    let Some(LastWait { timeout_ms, result: SyscallResult::Ok(0), duration_ns }) = ev.last_wait else { return None };
    let wait_after_last_read = h.steps.iter().rev().find_map(|s| match &s.what {
        StepKind::Wait { .. } => Some(true),
        StepKind::Read { .. } => Some(false),
        StepKind::Omitted(o) => o.wait_after_read,
        _ => None,
    });
    (wait_after_last_read == Some(true)).then_some(TimeoutWait {
        mechanism: WaitMechanism::Poll,
        timeout_ms,
        waited_ns: duration_ns,
        waiting_for,
        signal_from: None,
    })
}

/// The socket tier sees no wait: the server's last read found nothing (EAGAIN: without
/// blocking, or a blocking read whose SO_RCVTIMEO expired; or a blocking read
/// interrupted), nothing came in after it, the client neither closed nor reset, and
/// then the server closed, or sent an ERR no sooner than any server's connect_timeout
/// can expire (a server that gives up waiting for a TLS ClientHello says so with ERR
/// 1043; an ERR for bytes it read comes at once, and no byte came). Waited: from that
/// read to the close, or to the ERR.
fn socket_tier_timeout(h: &Handshake, read: LastRead, waiting_for: Awaited) -> Option<TimeoutWait> {
    let ev = &h.evidence;
    let SyscallResult::Err(e) = read.result else { return None };
    let found_nothing = e == Errno::EAGAIN || (e.is_interrupt() && !read.nonblocking);
    if !found_nothing || ev.client_fin || ev.client_rst {
        return None;
    }
    let waited_ns = match (&h.reply, h.reply_ns) {
        (Some(Reply::Err(_)), Some(err_at)) => {
            let waited = err_at.saturating_sub(read.ts_ns);
            if waited < LEAST_CONNECT_TIMEOUT_NS {
                return None;
            }
            waited
        }
        _ if ev.closed => h.end_ns.unwrap_or(read.ts_ns).saturating_sub(read.ts_ns),
        _ => return None,
    };
    Some(TimeoutWait {
        mechanism: WaitMechanism::NotSeen { read_error: e },
        timeout_ms: None,
        waited_ns,
        waiting_for,
        // A SIGALRM generated for the handler during the handshake, before the read returned.
        signal_from: ev.sigalrm.filter(|a| a.ts_ns <= read.ts_ns && a.ts_ns >= h.accept_ns).map(|a| a.from_tid).filter(|t| *t != 0),
    })
}

/// The timer armed most recently for this connection: by its own thread, else
/// by another thread of the process (an alarm thread) during the handshake.
fn armed_timer_ms(h: &Handshake) -> Option<u64> {
    let own = h.steps.iter().rev().find_map(|s| match &s.what {
        StepKind::Timer { ms, .. } if *ms > 0 => Some(*ms),
        StepKind::Omitted(o) => o.last_timer_ms,
        _ => None,
    });
    let until = h.evidence.sigalrm.map(|a| a.ts_ns).unwrap_or(u64::MAX);
    own.or_else(|| {
        h.evidence.process_timers.iter().rev().find(|t| t.ts_ns >= h.accept_ns && t.ts_ns <= until).map(|t| t.ms)
    })
}

/// What the client most likely reported, for failures it noticed.
fn client_report(h: &Handshake, v: Verdict, cause: &Cause) -> Option<ClientReport> {
    match v {
        // A client that gave up waiting for the greeting: its own timeout (libmysql,
        // libmariadb: ETIMEDOUT) while it read the greeting.
        Verdict::ClientClosed | Verdict::ClientReset
            if matches!(cause, Cause::ClientClosed { late_greeting: Some(_) } | Cause::ClientReset { late_greeting: Some(_) }) =>
        {
            Some(ClientReport::LostConnection { at: LostAt::InitialPacket, errno: Errno::ETIMEDOUT.0 })
        }
        Verdict::Ok | Verdict::ClientClosed | Verdict::ClientReset | Verdict::Incomplete => None,
        Verdict::AuthFailed | Verdict::ServerError => match &h.reply {
            Some(Reply::Err(e)) => Some(ClientReport::ServerError(e.clone())),
            // Inside TLS: an ERR the tool believes was sent, whose code it cannot read.
            _ => Some(ClientReport::EncryptedError),
        },
        // The client read the ERR the server sent before giving up.
        Verdict::ServerTimeout if matches!(h.reply, Some(Reply::Err(_))) => match &h.reply {
            Some(Reply::Err(e)) => Some(ClientReport::ServerError(e.clone())),
            _ => None,
        },
        Verdict::ServerTimeout | Verdict::ServerClosed => {
            // A greeting lost on the way never reached the client: it was still reading it.
            let delivered = h.greeting_ns.is_some() && !matches!(cause, Cause::ServerTimedOut { greeting_retransmits: 1.., .. });
            let at = if delivered { LostAt::AuthorizationPacket } else { LostAt::InitialPacket };
            let reset = h.evidence.linger0 || h.evidence.rst_sent;
            Some(ClientReport::LostConnection { at, errno: if reset { Errno::ECONNRESET.0 } else { 0 } })
        }
    }
}
