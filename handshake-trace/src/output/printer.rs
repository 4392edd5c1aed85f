//! The sink that prints finished handshakes as the options ask: JSON Lines, or a line
//! per success and a timeline per failure (and per success slower than `--slow`), or
//! successes folded into a periodic roll-up (`--rollup`), or brief lines (`--brief`,
//! output/brief.rs).
use std::io::Write;

use anyhow::Result;

use super::{
    brief::{Brief, VerdictSet},
    handshake_json, handshake_line, handshake_timeline,
};
use crate::{
    correlate::Handshake,
    pipeline::Sink,
    support::{
        clock::{format_time_of_day, Clock},
        histogram::Histogram,
    },
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
}

impl<W: Write> Printer<W> {
    pub fn new(opts: PrintOptions, clock: Clock, out: W) -> Self {
        let brief = Brief::new(opts.timeline);
        Printer { opts, clock, out, rollup_ok: 0, rollup_hist: Histogram::default(), json_buf: Vec::new(), brief, now: None }
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
        // Brief: every handshake as a line, but successes still roll up when asked to.
        if self.opts.brief && !(ok && !slow && self.opts.rollup) {
            return self.brief.handshake(h, &self.clock, slow, &mut self.out);
        }
        if !ok || slow {
            writeln!(self.out, "{}", handshake_timeline(h, &self.clock))?;
        } else if self.opts.rollup {
            self.rollup_ok += 1;
            self.rollup_hist.record(h.total_ns());
        } else {
            writeln!(self.out, "{}", handshake_line(h, &self.clock))?;
        }
        Ok(())
    }

    fn rollup(&mut self) -> Result<()> {
        if self.rollup_ok > 0 {
            writeln!(
                self.out,
                "{} {} successful handshakes (p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms)",
                format_time_of_day(std::time::SystemTime::now()),
                self.rollup_ok,
                self.rollup_hist.quantile_ms(0.5).unwrap_or(0.0),
                self.rollup_hist.quantile_ms(0.99).unwrap_or(0.0),
                self.rollup_hist.max_ms().unwrap_or(0.0),
            )?;
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
