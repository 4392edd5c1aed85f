//! The log of abnormal handshakes: one `-j` JSON object (docs/json.md) per handshake
//! that did not end `ok`, to stdout (for journald) or to a file rotated by size with a
//! cap on the files kept. A flood is rate-limited by a token bucket: what it drops is
//! counted in `handshake_trace_abnormal_log_records_total{outcome="dropped"}` and noted
//! in the log once records flow again. Write errors never stop the agent: the record
//! counts as dropped and the error is reported once on stderr.
use std::{
    fs::File,
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
    files,
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
/// Opened by [`files::open_append`] (0600, never through a symbolic link) at start, on
/// SIGHUP and after each rotation. A record is written whole or not at all: a write cut
/// short (a full disk) is cut off the file again.
#[derive(Debug)]
pub struct RotatingFile {
    path: PathBuf,
    max_bytes: u64,
    keep: usize,
    /// None while the file by its name could not be opened (records are dropped, and
    /// the open is tried again at most once a second).
    file: Option<File>,
    size: u64,
    /// When to try the open again, on the monotonic clock.
    retry_ns: u64,
    /// A cut-short record could not be cut off: the next record starts on a new line.
    torn: bool,
}

/// How often a file that could not be opened is tried again.
const REOPEN_RETRY_NS: u64 = 1_000_000_000;

fn numbered(path: &Path, n: usize) -> PathBuf {
    let mut s = path.as_os_str().to_owned();
    s.push(format!(".{n}"));
    PathBuf::from(s)
}

impl RotatingFile {
    pub fn open(path: &Path, max_bytes: u64, keep: usize) -> Result<Self> {
        let file = files::open_append(path)?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(RotatingFile { path: path.to_path_buf(), max_bytes: max_bytes.max(1), keep, file: Some(file), size, retry_ns: 0, torn: false })
    }

    /// Not open yet (refused at start): tried again in a second.
    pub fn closed(path: &Path, max_bytes: u64, keep: usize) -> Self {
        let retry_ns = monotonic_ns().saturating_add(REOPEN_RETRY_NS);
        RotatingFile { path: path.to_path_buf(), max_bytes: max_bytes.max(1), keep, file: None, size: 0, retry_ns, torn: false }
    }

    /// Open the file again by its name (after SIGHUP: logrotate moved it). On failure
    /// (a symbolic link put in its place, say) nothing is written until an open works.
    pub fn reopen(&mut self) -> Result<()> {
        self.file = None;
        self.retry_ns = monotonic_ns().saturating_add(REOPEN_RETRY_NS);
        let file = files::open_append(&self.path)?;
        self.size = file.metadata().map(|m| m.len()).unwrap_or(0);
        self.file = Some(file);
        Ok(())
    }

    /// Whether the file is closed and it is time to try the open again.
    fn retry_due(&self) -> bool {
        self.file.is_none() && monotonic_ns() >= self.retry_ns
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
        if self.file.is_some() && self.size > 0 && self.size + record.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        let Some(file) = self.file.as_mut() else {
            anyhow::bail!("{} is not open (the last open failed)", self.path.display());
        };
        if self.torn {
            file.write_all(b"\n")?;
            self.size += 1;
            self.torn = false;
        }
        if let Err(e) = file.write_all(record) {
            // Part of the record may be in the file: cut it off, or at least end the line.
            let cut = file.set_len(self.size).is_ok();
            self.torn = !cut;
            if !cut {
                self.size = file.metadata().map(|m| m.len()).unwrap_or(self.size);
            }
            return Err(e).with_context(|| format!("write {}", self.path.display()));
        }
        self.size += record.len() as u64;
        Ok(())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.file.as_mut().map_or(Ok(()), |f| f.flush())
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
        let mut refused = false;
        let out = match target {
            LogTarget::Stdout => Out::Stdout(std::io::BufWriter::with_capacity(1 << 16, std::io::stdout())),
            LogTarget::File { path, max_bytes, keep } => match RotatingFile::open(path, *max_bytes, *keep) {
                Ok(f) => Out::File(f),
                // A link or someone else's file in its place: said and counted, and the
                // agent goes on (tried again each second); any other error stops it here.
                Err(e) if files::is_refusal(&e) => {
                    eprintln!("WARNING: abnormal log: {e:#}; records are dropped until it can be opened safely");
                    metrics.file_refused("abnormal_log");
                    refused = true;
                    Out::File(RotatingFile::closed(path, *max_bytes, *keep))
                }
                Err(e) => return Err(e),
            },
        };
        let mut log = Self::with_out(out, rate_per_s, clock, metrics, reopen);
        log.failing = refused;
        Ok(log)
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
        let asked = self.reopen.swap(false, Ordering::Relaxed);
        if let Out::File(f) = &mut self.out {
            if asked || f.retry_due() {
                if let Err(e) = f.reopen() {
                    if files::is_refusal(&e) {
                        // Each refusal is counted (at most once a second, the retry's
                        // pace, or at each SIGHUP); said once until a write works again.
                        self.metrics.file_refused("abnormal_log");
                        if !self.failing {
                            eprintln!("WARNING: abnormal log: {e:#}; records are dropped until it can be opened safely");
                        }
                        self.failing = true;
                    }
                    return Err(e);
                }
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
        // A probe (`--probes show`) is a line, not a story: its timeline is left out.
        let record = handshake_json(h, &self.clock);
        json_to_writer(&mut self.buf, &if h.probe().is_some() { record.without_events() } else { record })?;
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
            Out::File(f) => f.flush(),
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
