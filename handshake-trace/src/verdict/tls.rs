//! Inside TLS the reply to the login is encrypted: what can still be told from
//! who acted last and how the server waits afterwards.
use super::Cause;
use crate::{
    correlate::{Handshake, StepKind},
    events::SyscallResult,
};

/// After a login the server waits for commands with `wait_timeout` instead of
/// `connect_timeout`: a change of wait timeout inside TLS means the login succeeded.
pub(super) fn command_phase(h: &Handshake) -> Option<Cause> {
    let mut waits = h.steps.iter().filter_map(|s| match &s.what {
        StepKind::Wait { timeout_ms: Some(t), .. } => Some(*t),
        _ => None,
    });
    let first = waits.next()?;
    let later = waits.find(|t| *t != first)?;
    Some(Cause::TlsCommandPhase { handshake_wait_ms: first, command_wait_ms: later })
}

/// A TLS connection closed within its traced budget: judge by who acted last. A
/// client that logged in and quit leaves the server reading (its COM_QUIT); a
/// refused login ends with the server writing and closing.
pub(super) fn closed(h: &Handshake) -> Option<Cause> {
    if let Some(c) = command_phase(h) {
        return Some(c);
    }
    let is_data_read = |k: &StepKind| matches!(k, StepKind::Read { result: SyscallResult::Ok(n), .. } if *n > 0);
    let (omitted_reads, omitted_writes) = h.omitted().map_or((0, 0), |o| (o.data_reads as usize, o.writes as usize));
    let reads = h.steps.iter().filter(|s| is_data_read(&s.what)).count() + omitted_reads;
    let writes = h.steps.iter().filter(|s| matches!(&s.what, StepKind::Write { .. })).count() + omitted_writes;
    // Greeting + TLS server flight at least, and the client's hello, finish and login.
    if writes < 3 || reads < 4 {
        return None;
    }
    let read_last = h.steps.iter().rev().find_map(|s| match &s.what {
        k if is_data_read(k) => Some(true),
        StepKind::Write { .. } => Some(false),
        StepKind::Omitted(o) => o.read_after_write,
        _ => None,
    })?;
    Some(if read_last { Cause::TlsClientQuit } else { Cause::TlsClosedAfterReply })
}
