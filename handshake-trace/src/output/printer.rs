//! The sink that prints finished handshakes as the options ask: JSON Lines, or a line
//! per success and a timeline per failure (and per success slower than `--slow`), or
//! successes folded into a periodic roll-up (`--rollup`), or brief lines (`--brief`,
//! output/brief.rs). Text lines are in columns under a header row printed before the
//! first, fitted to the terminal (output/columns.rs), in the order handshakes end.
use std::io::Write;

use anyhow::Result;

use super::{
    brief::{Brief, VerdictSet},
    columns::{self, Terminal},
    handshake_json,
    text::{handshake_line_on, handshake_timeline_on},
};
use crate::{
    correlate::Handshake,
    pipeline::Sink,
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
    /// In brief mode, the verdicts whose timelines are printed too (`--timeline`).
    pub timeline: VerdictSet,
    /// Width, colour and dates of the text output.
    pub term: Terminal,
}

pub struct Printer<W: Write> {
    opts: PrintOptions,
    clock: Clock,
    out: W,
    rollup_ok: u64,
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
        let brief = Brief::new(opts.timeline, opts.term);
        Printer { opts, clock, out, rollup_ok: 0, rollup_hist: Histogram::default(), json_buf: Vec::new(), brief, now: None, header_done: false }
    }

    /// Live: `now` reads the clock the handshakes' times are on.
    pub fn with_now(mut self, now: fn() -> u64) -> Self {
        self.now = Some(now);
        self
    }
}

impl<W: Write> Sink for Printer<W> {
    fn handshake(&mut self, h: &Handshake) -> Result<()> {
        if self.opts.json {
            self.json_buf.clear();
            serde_json::to_writer(&mut self.json_buf, &handshake_json(h, &self.clock))?;
            self.json_buf.push(b'\n');
            self.out.write_all(&self.json_buf)?;
            return Ok(());
        }
        let ok = h.verdict() == Some(Verdict::Ok);
        let slow = self.opts.slow_ms.is_some_and(|s| h.total_ns() as f64 / 1e6 >= s);
        let rolled_up = ok && !slow && self.opts.rollup;
        if !self.header_done && !rolled_up {
            writeln!(self.out, "{}", columns::header(&self.opts.term))?;
            self.header_done = true;
        }
        // Brief: every handshake as a line, but successes still roll up when asked to.
        if self.opts.brief && !rolled_up {
            return self.brief.handshake(h, &self.clock, slow, &mut self.out);
        }
        if !ok || slow {
            writeln!(self.out, "{}", handshake_timeline_on(h, &self.clock, &self.opts.term))?;
        } else if self.opts.rollup {
            self.rollup_ok += 1;
            self.rollup_hist.record(h.total_ns());
        } else {
            writeln!(self.out, "{}", handshake_line_on(h, &self.clock, &self.opts.term))?;
        }
        Ok(())
    }

    fn rollup(&mut self) -> Result<()> {
        if self.rollup_ok > 0 {
            let line = format!(
                "{} {} successful handshakes (p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms)",
                self.opts.term.time(std::time::SystemTime::now()),
                self.rollup_ok,
                self.rollup_hist.quantile_ms(0.5).unwrap_or(0.0),
                self.rollup_hist.quantile_ms(0.99).unwrap_or(0.0),
                self.rollup_hist.max_ms().unwrap_or(0.0),
            );
            writeln!(self.out, "{}", self.opts.term.fold(&line, 4))?;
        }
        self.rollup_ok = 0;
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
