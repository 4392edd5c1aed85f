//! The sink that prints finished handshakes as the options ask: JSON Lines, or a line
//! per success and a timeline per failure (and per success slower than `--slow`), or
//! successes folded into a periodic roll-up (`--rollup`: text, or a JSON record, with
//! every handshake of the period in a grouped table), or brief lines (`--brief`,
//! output/brief.rs). Text lines are in columns under a header row printed before the
//! first, fitted to the terminal (output/columns.rs), in the order handshakes end.
use std::{io::Write, time::SystemTime};

use anyhow::Result;

use super::{
    brief::{Brief, ProbeView, VerdictSet},
    columns::{self, Terminal},
    handshake_json, records, summary,
    text::{handshake_line_on, handshake_timeline_on},
};
use crate::{
    correlate::Handshake,
    pipeline::{Groups, Sink},
    support::{clock::Clock, histogram::Histogram},
    verdict::Verdict,
};

/// How handshakes are printed.
#[derive(Debug, Clone, Copy, Default)]
pub struct PrintOptions {
    pub json: bool,
    /// Show the full timeline of successful handshakes slower than this.
    pub slow_ms: Option<f64>,
    /// Fold successful handshakes into a roll-up line instead of a line each.
    pub rollup: bool,
    /// One line per handshake, identical failures folded (`--brief`).
    pub brief: bool,
    /// The verdicts whose timelines are printed (brief) or kept in the JSON records
    /// (`--timeline`); None: the mode's default (brief: none, JSON: all).
    pub timeline: Option<VerdictSet>,
    /// Rows of each roll-up's grouped table.
    pub top: usize,
    /// Width, colour and dates of the text output.
    pub term: Terminal,
    /// Probes: one line each, folded (default), or not printed.
    pub probes: ProbeView,
}

pub struct Printer<W: Write> {
    opts: PrintOptions,
    clock: Clock,
    out: W,
    /// Since the last roll-up: every handshake by group, and the successes' durations.
    period: Groups,
    period_since: SystemTime,
    rollup_hist: Histogram,
    /// One JSON record is built here, then written whole: serde's many small writes
    /// stay in a Vec instead of each going through `dyn Write`.
    json_buf: Vec<u8>,
    brief: Brief,
    /// The trace's clock now, for closing brief folds between handshakes (live only; a
    /// replay closes them as its handshakes' times pass).
    now: Option<fn() -> u64>,
    /// The header row is printed before the first line.
    header_done: bool,
}

impl<W: Write> Printer<W> {
    pub fn new(opts: PrintOptions, clock: Clock, out: W) -> Self {
        let brief = Brief::new(opts.timeline.unwrap_or_default(), opts.term, opts.probes);
        Printer {
            opts,
            clock,
            out,
            period: Groups::default(),
            period_since: SystemTime::now(),
            rollup_hist: Histogram::default(),
            json_buf: Vec::new(),
            brief,
            now: None,
            header_done: false,
        }
    }

    /// Live: `now` reads the clock the handshakes' times are on.
    pub fn with_now(mut self, now: fn() -> u64) -> Self {
        self.now = Some(now);
        self
    }
}

impl<W: Write> Printer<W> {
    /// One JSON line; its timeline only for the verdicts `--timeline` keeps (default: all).
    fn write_json(&mut self, h: &Handshake) -> Result<()> {
        let keep_events = self.opts.timeline.is_none_or(|t| h.verdict().is_some_and(|v| t.contains(v)));
        let record = handshake_json(h, &self.clock);
        let record = if keep_events { record } else { record.without_events() };
        self.json_buf.clear();
        crate::support::escape::json_to_writer(&mut self.json_buf, &record)?;
        self.json_buf.push(b'\n');
        self.out.write_all(&self.json_buf)?;
        Ok(())
    }
}

impl<W: Write> Sink for Printer<W> {
    fn handshake(&mut self, h: &Handshake) -> Result<()> {
        let ok = h.verdict() == Some(Verdict::Ok);
        let slow = self.opts.slow_ms.is_some_and(|s| h.total_ns() as f64 / 1e6 >= s);
        // With --rollup every handshake counts in the period's table; successes (not
        // slow) are shown only there.
        if self.opts.rollup {
            self.period.record(h);
            if ok && !slow {
                self.rollup_hist.record(h.total_ns());
                return Ok(());
            }
        }
        let probe = h.probe().is_some();
        if probe && self.opts.probes == ProbeView::Hide {
            return Ok(());
        }
        if self.opts.json {
            return self.write_json(h);
        }
        if !self.header_done {
            writeln!(self.out, "{}", columns::header(&self.opts.term))?;
            self.header_done = true;
        }
        // A probe is a line (or a fold), never a timeline unless --timeline asks.
        if self.opts.brief || probe {
            return self.brief.handshake(h, &self.clock, slow, &mut self.out);
        }
        if !ok || slow {
            writeln!(self.out, "{}", handshake_timeline_on(h, &self.clock, &self.opts.term))?;
        } else {
            writeln!(self.out, "{}", handshake_line_on(h, &self.clock, &self.opts.term))?;
        }
        Ok(())
    }

    fn rollup(&mut self) -> Result<()> {
        if !self.period.is_empty() {
            if self.opts.json {
                let now = SystemTime::now();
                writeln!(self.out, "{}", records::rollup_json(&self.period, &self.rollup_hist, self.opts.top, self.period_since, now))?;
            } else {
                summary::write_rollup(&self.period, &self.rollup_hist, self.opts.top, self.period_since, &self.opts.term, &mut self.out)?;
            }
        }
        self.period = Groups::default();
        self.period_since = SystemTime::now();
        self.rollup_hist = Histogram::default();
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        if self.opts.rollup {
            self.rollup()?;
        }
        self.brief.finish(&self.clock, &mut self.out)?;
        self.flush()
    }

    fn flush(&mut self) -> Result<()> {
        if let Some(now) = self.now {
            self.brief.expire(now(), &self.clock, &mut self.out)?;
        }
        self.out.flush()?;
        Ok(())
    }
}
