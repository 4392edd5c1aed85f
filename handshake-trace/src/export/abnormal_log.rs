//! The log of abnormal handshakes: one `-j` JSON object (docs/json.md) per handshake
//! that did not end `ok`, to stdout (for journald) or to a file rotated by size with a
//! cap on the files kept. A flood is rate-limited by a token bucket: what it drops is
//! counted in `handshake_trace_abnormal_log_records_total{outcome="dropped"}` and noted
//! in the log once records flow again. Write errors never stop the agent: the record
//! counts as dropped and the error is reported once on stderr.
use std::{
    fs::{File, OpenOptions},
    io::Write,
    path::{Path, PathBuf},
    sync::{
        atomic::{AtomicBool, Ordering},
        Arc, Mutex,
    },
};

use anyhow::{Context, Result};
use serde::Serialize;

use super::{
    metrics::{Metrics, Outcome},
    top_clients::{TopClients, TopReport},
};
use crate::{
    correlate::Handshake,
    output::handshake_json,
    pipeline::Sink,
    support::{
        clock::{format_rfc3339, monotonic_ns, Clock},
        escape::json_to_writer,
    },
    verdict::Verdict,
};

/// A record longer than this is written without its timeline (`events`), saying so:
/// a log line stays within what a log shipper takes whole, whatever a client sent.
pub const RECORD_MAX_BYTES: usize = 64 * 1024;

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
#[derive(Debug, Clone)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last_ns: Option<u64>,
}

impl TokenBucket {
    /// `rate` per second; the bucket holds a second's worth (at least one).
    pub fn new(rate: f64) -> Self {
        let burst = rate.max(1.0);
        TokenBucket { rate: rate.max(0.0), burst, tokens: burst, last_ns: None }
    }

    /// Take a token at `now_ns`, if there is one.
    pub fn take(&mut self, now_ns: u64) -> bool {
        if let Some(last) = self.last_ns {
            let elapsed = now_ns.saturating_sub(last) as f64 / 1e9;
            self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        }
        self.last_ns = Some(self.last_ns.map_or(now_ns, |l| l.max(now_ns)));
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Where the log goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LogTarget {
    Stdout,
    /// A file, rotated past `max_bytes` into FILE.1 … FILE.`keep`.
    File { path: PathBuf, max_bytes: u64, keep: usize },
}

/// A file that rotates by size: FILE → FILE.1 → … → FILE.keep (the oldest removed).
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    file: File,
    size: u64,
}

fn open_append(path: &Path) -> Result<File> {
    OpenOptions::new().create(true).append(true).open(path).with_context(|| format!("open {}", path.display()))
}

fn numbered(path: &Path, n: usize) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

impl RotatingFile {
    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> Result<Self> {
        let file = open_append(path)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(RotatingFile { path: path.to_path_buf(), max_bytes: max_bytes.max(1), keep, file, size })
    }

    /// Open the file again by its name (after SIGHUP: logrotate moved it).
    pub fn reopen(&mut self) -> Result<()> {
        self.file = open_append(&self.path)?;
        self.size = self.file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(())
    }

    fn rotate(&mut self) -> Result<()> {
        if self.keep == 0 {
            std::fs::remove_file(&self.path).ok();
        } else {
            std::fs::remove_file(numbered(&self.path, self.keep)).ok();
            for n in (1..self.keep).rev() {
                std::fs::rename(numbered(&self.path, n), numbered(&self.path, n + 1)).ok();
            }
            std::fs::rename(&self.path, numbered(&self.path, 1)).with_context(|| format!("rotate {}", self.path.display()))?;
        }
        self.reopen()
    }

    /// Write one whole record, rotating first when it would pass the size bound.
    pub fn write_record(&mut self, record: &[u8]) -> Result<()> {
        if self.size > 0 && self.size + record.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        self.file.write_all(record)?;
        self.size += record.len() as u64;
        Ok(())
    }
}

enum Out {
    Stdout(std::io::BufWriter<std::io::Stdout>),
    File(RotatingFile),
    /// For tests: records kept in memory.
    #[cfg(test)]
    Memory(std::rc::Rc<std::cell::RefCell<Vec<u8>>>),
}

/// The note written when records flow again after the rate limit dropped some.
#[derive(Serialize)]
struct DroppedNote {
    note: &'static str,
    dropped: u64,
    time: String,
}

/// The top-K, summarised in the log once a window (`--top-window`).
#[derive(Serialize)]
struct TopNote<'a> {
    note: &'static str,
    time: String,
    #[serde(flatten)]
    report: &'a TopReport,
}

/// The sink.
pub struct AbnormalLog {
    /// The top-K to summarise at each roll-up, when there is one.
    top: Option<Arc<Mutex<TopClients>>>,
    out: Out,
    clock: Clock,
    bucket: TokenBucket,
    metrics: Metrics,
    /// Set by SIGHUP: reopen the file before the next write.
    reopen: Arc<AtomicBool>,
    /// Dropped since the last note.
    dropped: u64,
    /// A write error was reported (once, until a write succeeds again).
    failing: bool,
    buf: Vec<u8>,
}

impl AbnormalLog {
    pub fn new(target: &LogTarget, rate_per_s: f64, clock: Clock, metrics: Metrics, reopen: Arc<AtomicBool>) -> Result<Self> {
        let out = match target {
            LogTarget::Stdout => Out::Stdout(std::io::BufWriter::with_capacity(1 << 16, std::io::stdout())),
            LogTarget::File { path, max_bytes, keep } => Out::File(RotatingFile::open(path, *max_bytes, *keep)?),
        };
        Ok(Self::with_out(out, rate_per_s, clock, metrics, reopen))
    }

    fn with_out(out: Out, rate_per_s: f64, clock: Clock, metrics: Metrics, reopen: Arc<AtomicBool>) -> Self {
        AbnormalLog { top: None, out, clock, bucket: TokenBucket::new(rate_per_s), metrics, reopen, dropped: 0, failing: false, buf: Vec::new() }
    }

    /// Summarise this top-K in the log at each roll-up.
    pub fn with_top(mut self, top: Arc<Mutex<TopClients>>) -> Self {
        self.top = Some(top);
        self
    }

    #[cfg(test)]
    pub(crate) fn in_memory(rate_per_s: f64, metrics: Metrics) -> (Self, std::rc::Rc<std::cell::RefCell<Vec<u8>>>) {
        let mem = std::rc::Rc::default();
        let log = Self::with_out(Out::Memory(std::rc::Rc::clone(&mem)), rate_per_s, Clock::with_offset(0), metrics, Arc::default());
        (log, mem)
    }

    fn write_buf(&mut self) -> Result<()> {
        if self.reopen.swap(false, Ordering::Relaxed) {
            if let Out::File(f) = &mut self.out {
                f.reopen()?;
            }
        }
        match &mut self.out {
            Out::Stdout(w) => w.write_all(&self.buf)?,
            Out::File(f) => f.write_record(&self.buf)?,
            #[cfg(test)]
            Out::Memory(m) => m.borrow_mut().extend_from_slice(&self.buf),
        }
        Ok(())
    }

    /// Write the buffered record; an error counts it as dropped and is reported once.
    fn emit(&mut self) -> bool {
        match self.write_buf() {
            Ok(()) => {
                self.failing = false;
                true
            }
            Err(e) => {
                if !self.failing {
                    eprintln!("WARNING: abnormal log: {e:#}; records are dropped until writing works again");
                }
                self.failing = true;
                false
            }
        }
    }

    /// Note in the log how many records the rate limit dropped since the last note.
    fn note_dropped(&mut self, now_ns: u64) -> Result<()> {
        if self.dropped == 0 {
            return Ok(());
        }
        self.buf.clear();
        let note = DroppedNote { note: "rate_limited", dropped: self.dropped, time: format_rfc3339(self.clock.wall(now_ns)) };
        json_to_writer(&mut self.buf, &note)?;
        self.buf.push(b'\n');
        if self.emit() {
            self.dropped = 0;
        }
        Ok(())
    }

    fn outcome(&self, o: Outcome) {
        Metrics::record_outcome(&self.metrics.log_records, o);
    }
}

impl Sink for AbnormalLog {
    fn handshake(&mut self, h: &Handshake) -> Result<()> {
        if h.verdict() == Some(Verdict::Ok) {
            return Ok(());
        }
        let end_ns = h.accept_ns + h.total_ns();
        if !self.bucket.take(end_ns) {
            self.dropped += 1;
            self.outcome(Outcome::Dropped);
            return Ok(());
        }
        self.note_dropped(end_ns)?;
        self.buf.clear();
        json_to_writer(&mut self.buf, &handshake_json(h, &self.clock))?;
        if self.buf.len() >= RECORD_MAX_BYTES {
            self.buf.clear();
            json_to_writer(&mut self.buf, &handshake_json(h, &self.clock).without_events_over(RECORD_MAX_BYTES))?;
        }
        self.buf.push(b'\n');
        let written = self.emit();
        self.outcome(if written { Outcome::Written } else { Outcome::Dropped });
        Ok(())
    }

    /// Once a window: the top-K failing clients, when there are any.
    fn rollup(&mut self) -> Result<()> {
        let now_ns = monotonic_ns();
        let Some(report) = self.top.as_ref().and_then(|t| t.lock().ok().map(|mut t| t.report(now_ns))) else { return Ok(()) };
        if report.top.is_empty() {
            return Ok(());
        }
        self.buf.clear();
        json_to_writer(&mut self.buf, &TopNote { note: "top_clients", time: format_rfc3339(self.clock.wall(now_ns)), report: &report })?;
        self.buf.push(b'\n');
        self.emit();
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.note_dropped(monotonic_ns())?;
        self.flush()
    }

    fn flush(&mut self) -> Result<()> {
        let flushed = match &mut self.out {
            Out::Stdout(w) => w.flush(),
            Out::File(f) => f.file.flush(),
            #[cfg(test)]
            Out::Memory(_) => Ok(()),
        };
        if let Err(e) = flushed {
            if !self.failing {
                eprintln!("WARNING: abnormal log: {e}");
            }
            self.failing = true;
        }
        Ok(())
    }
}
