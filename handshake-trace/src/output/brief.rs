//! Brief output (`--brief`): one line per handshake, failures included; timelines only
//! for the verdicts `--timeline` names; repeated identical failures folded into one line
//! with a count ("lab@10.1.2.3 auth_failed ERR 1045 ×64") at the end of a short window.
use std::{collections::HashMap, io::Write, net::IpAddr};

use anyhow::Result;

use super::{
    columns::{self, Terminal},
    names,
    text::{self, handshake_timeline_on},
};
use crate::{
    correlate::Handshake,
    pipeline::groups::error_code as err_code,
    protocol,
    support::{clock::Clock, escape::Escaped},
    verdict::{Cause, Verdict},
};

/// Identical failures within this long of the first are folded into one count.
pub const FOLD_WINDOW_NS: u64 = 10_000_000_000;

/// A set of verdicts (`--timeline auth_failed,server_timeout`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct VerdictSet(u16);

impl VerdictSet {
    pub fn insert(&mut self, v: Verdict) {
        self.0 |= 1 << v as u16;
    }
    pub fn contains(self, v: Verdict) -> bool {
        self.0 & (1 << v as u16) != 0
    }
}

impl FromIterator<Verdict> for VerdictSet {
    fn from_iter<I: IntoIterator<Item = Verdict>>(iter: I) -> Self {
        let mut s = VerdictSet::default();
        iter.into_iter().for_each(|v| s.insert(v));
        s
    }
}

/// A verdict from its name (as `names::verdict` writes it), for option values.
pub fn parse_verdict(name: &str) -> Result<Verdict, String> {
    Verdict::ALL.iter().copied().find(|v| names::verdict(*v) == name).ok_or_else(|| {
        let known: Vec<&str> = Verdict::ALL.iter().map(|v| names::verdict(*v)).collect();
        format!("`{name}` is not a verdict (one of: {})", known.join(", "))
    })
}

/// Why, in a few words: the ERR code and name, or the cause's gist.
fn short_reason(h: &Handshake) -> String {
    if let Some(Cause::ProxyRefused { code, why }) = h.judgement.as_ref().map(|j| &j.cause) {
        return format!("PROXY header refused ({}): ERR {code}", names::proxy_refusal(*why));
    }
    if let Some(code) = err_code(h) {
        return format!("ERR {code} {}", protocol::error_name(code).unwrap_or("unknown error"));
    }
    let Some(j) = &h.judgement else { return "not judged".into() };
    match &j.cause {
        Cause::LoggedIn => String::new(),
        Cause::ErrSent { .. } | Cause::ProxyRefused { .. } => unreachable!("handled above"),
        Cause::TlsPastHandshake | Cause::TlsCommandPhase { .. } | Cause::TlsClientQuit => "TLS, logged in (inferred)".into(),
        Cause::TlsClosedAfterReply => "TLS, closed after an encrypted reply (inferred refusal)".into(),
        Cause::StillOpen => "still open at the end of the trace".into(),
        Cause::NotSeenToEnd => "not seen to end".into(),
        Cause::ServerExited => "the server exited".into(),
        Cause::EventsLost => "kernel events lost".into(),
        Cause::PacketsUnseen => "packets not seen (server moved to another cgroup)".into(),
        Cause::ServerShutDown { how } => format!("server shutdown({})", names::shutdown_how(*how)),
        Cause::ServerTimedOut { greeting_retransmits: n, .. } if *n > 0 => {
            format!("greeting lost on the way (retransmitted {n} times)")
        }
        Cause::ServerTimedOut { wait, reset, .. } => format!(
            "server waited {:.0} ms for {}{}",
            wait.waited_ns as f64 / 1e6,
            names::awaited(wait.waiting_for),
            if *reset { ", then reset" } else { "" }
        ),
        Cause::ClientReset { .. } => "client reset (RST)".into(),
        Cause::ClientClosed { .. } => "client closed".into(),
        Cause::ServerClosedUnexplained => "server closed without a reply".into(),
    }
}

fn user(h: &Handshake) -> String {
    h.login.as_ref().map(|l| Escaped(&l.user).to_string()).unwrap_or_else(|| "?".into())
}

fn client_host(h: &Handshake) -> String {
    if h.unix {
        "unix-socket".into()
    } else {
        h.client.map(|c| c.ip().to_string()).unwrap_or_else(|| "?".into())
    }
}

/// "  (blame: network)" after a failure's reason; nothing for `ok`.
fn brief_blame(h: &Handshake) -> String {
    match &h.judgement {
        Some(j) if j.verdict != Verdict::Ok => format!("  (blame: {})", names::blame(j.blame.party())),
        _ => String::new(),
    }
}

/// One line in the columns (time, verdict, client, user, duration), the detail saying
/// why in a few words and whose side a failure is on, then where; whole (no terminal
/// to fit).
pub fn brief_line(h: &Handshake, clock: &Clock) -> String {
    brief_line_on(h, clock, &Terminal::default())
}

/// One brief line fitted to `term`.
pub fn brief_line_on(h: &Handshake, clock: &Clock, term: &Terminal) -> String {
    let why = short_reason(h);
    let why = format!("{why}{}", brief_blame(h));
    let why = why.trim_start();
    let detail = if why.is_empty() { text::place(h) } else { format!("{why}  {}", text::place(h)) };
    columns::row(&text::row(h, clock, term, detail), term)
}

/// What makes two failures the same.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FoldKey {
    user: Option<String>,
    host: Option<IpAddr>,
    unix: bool,
    verdict: Option<Verdict>,
    code: Option<u16>,
}

struct Fold {
    first_ns: u64,
    count: u64,
    /// "lab@10.1.2.3 auth_failed ERR 1045", kept from the first.
    label: String,
}

/// The brief printer's state: the open folds.
#[derive(Default)]
pub struct Brief {
    pub timeline: VerdictSet,
    pub term: Terminal,
    folds: HashMap<FoldKey, Fold>,
}

impl Brief {
    pub fn new(timeline: VerdictSet, term: Terminal) -> Self {
        Brief { timeline, term, folds: HashMap::new() }
    }

    /// Print `h` as a line (and its timeline when asked for), or count it into the
    /// fold of the identical failures before it. `timeline` forces the timeline (`--slow`).
    pub fn handshake(&mut self, h: &Handshake, clock: &Clock, timeline: bool, out: &mut dyn Write) -> Result<()> {
        self.expire(h.accept_ns, clock, out)?;
        let verdict = h.verdict();
        if verdict != Some(Verdict::Ok) {
            let key = FoldKey {
                user: h.login.as_ref().map(|l| l.user.clone()),
                host: h.client.map(|c| c.ip()),
                unix: h.unix,
                verdict,
                code: err_code(h),
            };
            if let Some(f) = self.folds.get_mut(&key) {
                f.count += 1;
                return Ok(());
            }
            let label = format!(
                "{}@{} {}{}",
                user(h),
                client_host(h),
                names::verdict_or_unknown(verdict),
                key.code.map(|c| format!(" ERR {c}")).unwrap_or_default()
            );
            self.folds.insert(key, Fold { first_ns: h.accept_ns, count: 1, label });
        }
        writeln!(out, "{}", brief_line_on(h, clock, &self.term))?;
        if timeline || verdict.is_some_and(|v| self.timeline.contains(v)) {
            writeln!(out, "{}", handshake_timeline_on(h, clock, &self.term))?;
        }
        Ok(())
    }

    /// Close the folds whose window ended by `now_ns` (on the trace's clock): each that
    /// folded more than its first line says how many.
    pub fn expire(&mut self, now_ns: u64, clock: &Clock, out: &mut dyn Write) -> Result<()> {
        let mut ended: Vec<(FoldKey, u64)> =
            self.folds.iter().filter(|(_, f)| now_ns.saturating_sub(f.first_ns) >= FOLD_WINDOW_NS).map(|(k, f)| (k.clone(), f.first_ns)).collect();
        ended.sort_by_key(|(_, first)| *first);
        for (key, _) in ended {
            if let Some(f) = self.folds.remove(&key) {
                write_fold(&f, clock, &self.term, out)?;
            }
        }
        Ok(())
    }

    /// The trace ended: every open fold's count.
    pub fn finish(&mut self, clock: &Clock, out: &mut dyn Write) -> Result<()> {
        let mut all: Vec<Fold> = self.folds.drain().map(|(_, f)| f).collect();
        all.sort_by_key(|f| f.first_ns);
        for f in &all {
            write_fold(f, clock, &self.term, out)?;
        }
        Ok(())
    }
}

fn write_fold(f: &Fold, clock: &Clock, term: &Terminal, out: &mut dyn Write) -> Result<()> {
    if f.count > 1 {
        let line = format!(
            "{} {} ×{} (folded: identical failures within {} s of the first)",
            term.time(clock.wall(f.first_ns)),
            f.label,
            f.count,
            FOLD_WINDOW_NS / 1_000_000_000
        );
        writeln!(out, "{}", term.fold(&line, 4))?;
    }
    Ok(())
}
