//! Brief output (`--brief`): one line per handshake, failures included; timelines only
//! for the verdicts `--timeline` names; repeated identical failures folded into one line
//! with a count ("lab@10.1.2.3 auth_failed ERR 1045 ×64") at the end of a short window.
use std::{collections::HashMap, io::Write, net::IpAddr};

use anyhow::Result;

use super::{
    columns::{self, Row, Terminal},
    names,
    text::{self, handshake_timeline_on},
};
use crate::{
    correlate::Handshake,
    pipeline::groups::error_code as err_code,
    protocol,
    support::clock::Clock,
    verdict::{Blame, Cause, Probe, Verdict},
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

/// Why in a few words (and in fewer, for a narrow terminal), and whose side a failure is
/// on (None for `ok`): the start of DETAIL.
pub fn lead_words(h: &Handshake) -> (String, String, Option<&'static str>) {
    let blame = match &h.judgement {
        Some(j) if j.verdict != Verdict::Ok => Some(names::blame(j.blame.party())),
        _ => None,
    };
    (short_reason(h), terse_reason(h), blame)
}

/// Why in a word or two, for a narrow terminal: at most 9 columns, so that with the
/// blame ("[client]") it fits the 18 columns DETAIL has at 80.
fn terse_reason(h: &Handshake) -> String {
    if let Some(code) = err_code(h) {
        return format!("ERR {code}");
    }
    let Some(j) = &h.judgement else { return "?".into() };
    match (j.probe, &j.cause) {
        (Some(Probe::PortCheck), _) => "port chk".into(),
        (Some(Probe::HealthCheck), _) => "health".into(),
        (None, Cause::ServerTimedOut { greeting_retransmits: 1.., .. }) => "pkt loss".into(),
        (None, Cause::ServerTimedOut { .. }) => "timeout".into(),
        (None, Cause::ClientReset { late_greeting: Some(_) } | Cause::ClientClosed { late_greeting: Some(_) }) => "late grtg".into(),
        (None, Cause::ClientReset { .. }) => "RST".into(),
        (None, Cause::ClientClosed { .. }) => "FIN".into(),
        (None, Cause::EventsLost) => "lost evts".into(),
        (None, Cause::ServerShutDown { .. }) => "shutdown".into(),
        (None, Cause::ServerClosedUnexplained) => "closed".into(),
        (None, Cause::ServerExited) => "exited".into(),
        (None, Cause::StillOpen | Cause::NotSeenToEnd) => "unended".into(),
        (None, Cause::PacketsUnseen) => "unseen".into(),
        (None, Cause::TlsClosedAfterReply) => "TLS ERR?".into(),
        (None, _) => "TLS".into(),
    }
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
        Cause::ClientReset { late_greeting: Some(_) } => "client reset after a late greeting".into(),
        Cause::ClientClosed { late_greeting: Some(_) } => "client closed after a late greeting".into(),
        Cause::ClientReset { .. } if j.probe.is_some() => "port check (RST)".into(),
        Cause::ClientClosed { .. } if j.probe.is_some() => "port check (FIN)".into(),
        Cause::ClientReset { .. } => "client reset (RST)".into(),
        Cause::ClientClosed { .. } => "client closed".into(),
        Cause::ServerClosedUnexplained => "server closed without a reply".into(),
    }
}

fn client_host(h: &Handshake) -> String {
    if h.unix {
        "unix-socket".into()
    } else {
        h.client.map(|c| c.ip().to_string()).unwrap_or_else(|| "?".into())
    }
}

/// One line in the columns (time, verdict, client, user, duration), the detail saying
/// why in a few words and whose side a failure is on, then where; whole (no terminal
/// to fit).
pub fn brief_line(h: &Handshake, clock: &Clock) -> String {
    brief_line_on(h, clock, &Terminal::default())
}

/// One brief line fitted to `term`: DETAIL leads with why and whose side (kept whole at
/// any width), then who, then where.
pub fn brief_line_on(h: &Handshake, clock: &Clock, term: &Terminal) -> String {
    let (long, terse, blame) = lead_words(h);
    let long = match h.probe() {
        // A health check: "health check" and its phases.
        Some(p) if blame.is_none() => format!("{} {long}", names::probe_words(p)),
        _ => long,
    };
    let detail = columns::lead(long.trim(), &terse, blame, &text::place(h), term.detail_room());
    columns::row(&text::row(h, clock, term, detail), term)
}

/// How `watch` shows probes (port checks, health checks: docs/verdicts.md "Probes").
/// They are counted in the summary whatever this says.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum ProbeView {
    /// One line each (no timeline unless `--timeline` names its verdict).
    Show,
    /// One line for the first of a client host's probes of a kind, then a count every
    /// 10 s on one line.
    #[default]
    Fold,
    /// Not printed (still in the summary, the roll-ups and the JSON summary).
    Hide,
}

/// What makes two failures (or two probes) the same: a fold.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FoldKey {
    user: Option<String>,
    host: Option<IpAddr>,
    unix: bool,
    verdict: Option<Verdict>,
    code: Option<u16>,
    /// Two failures on different sides are two problems.
    blame: Option<Blame>,
    probe: Option<Probe>,
}

impl FoldKey {
    fn of(h: &Handshake) -> FoldKey {
        FoldKey {
            user: h.login.as_ref().map(|l| l.user.clone()),
            host: h.client.map(|c| c.ip().to_canonical()),
            unix: h.unix,
            verdict: h.verdict(),
            code: err_code(h),
            blame: h.judgement.as_ref().map(|j| j.blame.party()),
            probe: h.probe(),
        }
    }
}

/// A fold: the first handshake's columns and words, and how many there were.
struct Fold {
    first_ns: u64,
    count: u64,
    /// The longest of them.
    max_ns: u64,
    verdict: Option<Verdict>,
    client: String,
    user: String,
    words: (String, String, Option<&'static str>),
}

/// The brief printer's state: the open folds.
#[derive(Default)]
pub struct Brief {
    pub timeline: VerdictSet,
    pub term: Terminal,
    pub probes: ProbeView,
    folds: HashMap<FoldKey, Fold>,
}

impl Brief {
    pub fn new(timeline: VerdictSet, term: Terminal, probes: ProbeView) -> Self {
        Brief { timeline, term, probes, folds: HashMap::new() }
    }

    /// Print `h` as a line (and its timeline when asked for), or count it into the
    /// fold of the identical failures (or probes) before it. `timeline` forces the
    /// timeline (`--slow`). A probe is not printed with `--probes hide`.
    pub fn handshake(&mut self, h: &Handshake, clock: &Clock, timeline: bool, out: &mut dyn Write) -> Result<()> {
        self.expire(h.accept_ns, clock, out)?;
        let verdict = h.verdict();
        let fold = match h.probe() {
            Some(_) if self.probes == ProbeView::Hide => return Ok(()),
            Some(_) => self.probes == ProbeView::Fold,
            None => verdict != Some(Verdict::Ok),
        };
        if fold {
            let key = FoldKey::of(h);
            if let Some(f) = self.folds.get_mut(&key) {
                f.count += 1;
                f.max_ns = f.max_ns.max(h.total_ns());
                return Ok(());
            }
            let fold = Fold {
                first_ns: h.accept_ns,
                count: 1,
                max_ns: h.total_ns(),
                verdict,
                client: client_host(h),
                user: text::user_column(h),
                words: lead_words(h),
            };
            self.folds.insert(key, fold);
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
        // On a terminal the tty has just echoed Ctrl-C ("^C"): the counts start on a
        // line of their own, or the first would wrap.
        if self.term.width.is_some() && all.iter().any(|f| f.count > 1) {
            writeln!(out)?;
        }
        for f in &all {
            write_fold(f, clock, &self.term, out)?;
        }
        Ok(())
    }
}

/// A fold that held more than its first: one line in the columns, the count leading
/// its DETAIL: "×64 ERR 1045 ER_ACCESS_DENIED_ERROR [blame: client]  within 10 s".
fn write_fold(f: &Fold, clock: &Clock, term: &Terminal, out: &mut dyn Write) -> Result<()> {
    if f.count <= 1 {
        return Ok(());
    }
    let (long, terse, blame) = &f.words;
    let window = format!("within {} s", FOLD_WINDOW_NS / 1_000_000_000);
    let detail = columns::lead(&format!("×{} {long}", f.count), &format!("×{} {terse}", f.count), *blame, &window, term.detail_room());
    let row = Row {
        time: term.time(clock.wall(f.first_ns)),
        verdict: f.verdict,
        shout: false,
        client: f.client.clone(),
        user: f.user.clone(),
        ms: f.max_ns as f64 / 1e6,
        detail,
    };
    writeln!(out, "{}", columns::row(&row, term))?;
    Ok(())
}
