//! The flight recorder: the last `--flight-seconds` of raw kernel records, redacted as
//! they arrive (secrets zeroed, as `record` does), kept compactly in a bounded in-memory
//! ring (one byte buffer; a read or write keeps only the payload bytes it captured, and
//! a file says how many zeros each record had past that);
//! when a handshake ends abnormally the ring is written to a trace file in
//! `--flight-dir` that `analyze` replays in full detail. Rate-limited (a file a second
//! at most, the rest counted as dropped), and capped: past `--flight-max-files` files or
//! `--flight-max-bytes` bytes the oldest files are removed — counting the files earlier
//! runs left in the folder. Port checks (handshakes judged probes) write no file unless
//! asked (`--flight-probes`). A file is written under a hidden partial name and renamed
//! when whole: a write that fails (a full disk) removes its partial file, so the folder
//! holds only whole traces. Files are 0600 in a 0700 folder, never through a link.
use std::{
    collections::VecDeque,
    io::BufWriter,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

use super::{
    abnormal_log::TokenBucket,
    files,
    metrics::{Metrics, Outcome},
};
use crate::{
    correlate::Handshake,
    events::{AcceptAddrs, Counters, Event},
    recording::{
        format::{TargetInfo, TraceHeader, TraceWriter, Window},
        recorder::{header, trailer},
        redact::Redactor,
    },
    support::clock::Clock,
    verdict::Verdict,
};

/// Bytes of (compact) records kept by default (`--flight-ring-kb`).
pub const DEFAULT_RING_BYTES: usize = 4 << 20;
/// The most `--flight-ring-kb` may ask for: the ring is resident memory.
pub const MAX_RING_BYTES: usize = 64 << 20;
/// Records kept at most per byte of ring: one per 64 bytes (a compact record is rarely
/// smaller), so the index stays a fixed fraction of the ring.
const BYTES_PER_RECORD: usize = 64;
/// Room past `MAX_RING_BYTES` for the record that crosses it (before eviction).
const RECORD_SLACK: usize = 4096;
/// Trace files written a second at most.
const FILES_PER_SECOND: f64 = 1.0;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlightOptions {
    pub dir: PathBuf,
    pub seconds: u64,
    pub max_files: usize,
    pub max_bytes: u64,
    /// Bytes of compact records kept in memory (at most [`MAX_RING_BYTES`]).
    pub ring_bytes: usize,
    /// Write files for port checks too (`--flight-probes`).
    pub probes: bool,
}

/// The files this recorder writes are named `abnormal-….htrace`; while being written,
/// `.abnormal-….htrace.partial`.
const PREFIX: &str = "abnormal-";
const SUFFIX: &str = ".htrace";
const PARTIAL_PREFIX: &str = ".abnormal-";
const PARTIAL_SUFFIX: &str = ".htrace.partial";

/// A trace file's name: the server's pid, the connection's fd when the tier knows it
/// (the socket tier does not: no fd part), the accept's time.
pub fn file_name(pid: u32, fd: i32, accept_ns: u64) -> String {
    if fd >= 0 {
        format!("{PREFIX}{pid}-{fd}-{accept_ns}{SUFFIX}")
    } else {
        format!("{PREFIX}{pid}-{accept_ns}{SUFFIX}")
    }
}

/// The recorder's files already in `dir` (from earlier runs), oldest first, with their
/// sizes; partial files and empty traces left by a crash or a full disk are removed.
fn files_on_disk(dir: &Path) -> Result<VecDeque<(PathBuf, u64)>> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("read {}", dir.display()))? {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        // Not followed: a link is nobody's trace.
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.file_type().is_file() {
            continue;
        }
        if name.starts_with(PARTIAL_PREFIX) && name.ends_with(PARTIAL_SUFFIX) {
            std::fs::remove_file(entry.path()).ok();
        } else if name.starts_with(PREFIX) && name.ends_with(SUFFIX) {
            if meta.len() == 0 {
                std::fs::remove_file(entry.path()).ok();
                continue;
            }
            let modified = meta.modified().unwrap_or(std::time::UNIX_EPOCH);
            found.push((modified, entry.path(), meta.len()));
        }
    }
    found.sort();
    Ok(found.into_iter().map(|(_, p, n)| (p, n)).collect())
}

impl FlightOptions {
    /// The ring's byte bound, capped.
    pub fn ring_bytes(&self) -> usize {
        self.ring_bytes.clamp(BYTES_PER_RECORD, MAX_RING_BYTES)
    }

    /// The ring's record bound.
    pub fn max_records(&self) -> usize {
        self.ring_bytes() / BYTES_PER_RECORD
    }
}

/// One record of the ring: its bytes are the next `len` of the byte ring.
#[derive(Debug, Clone, Copy)]
struct Record {
    ts_ns: u64,
    /// Bytes kept (a read or write without the payload bytes it did not capture).
    len: u32,
    /// The record's size as it arrived (the zeros past `len` are written as a count).
    full_len: u32,
}

/// An accept's addresses as the live session used them, by the record's sequence number.
type Addrs = (u64, Option<SocketAddr>, Option<SocketAddr>);

/// The bytes of a raw record worth keeping: a read or write's fixed-size payload past
/// what it captured is zeros (or, redacted, still zeros).
fn kept_len(raw: &[u8]) -> usize {
    use handshake_trace_common::{kind, EventHeader, IoEvent, PAYLOAD_MAX};
    use std::mem::{offset_of, size_of};
    let word = |at: usize| raw.get(at..at + 4).map(|b| u32::from_ne_bytes([b[0], b[1], b[2], b[3]]));
    if raw.len() != size_of::<IoEvent>() || word(offset_of!(EventHeader, kind)) != Some(kind::IO) {
        return raw.len();
    }
    let captured = word(offset_of!(IoEvent, captured)).map_or(PAYLOAD_MAX, |c| (c as usize).min(PAYLOAD_MAX));
    offset_of!(IoEvent, payload) + captured
}

pub struct FlightRecorder {
    opts: FlightOptions,
    clock: Clock,
    ringbuf_bytes: u32,
    redactor: Redactor,
    /// The records, oldest first; their bytes, in the same order, in `bytes`.
    ring: VecDeque<Record>,
    bytes: VecDeque<u8>,
    /// The sequence number of the ring's first record.
    first_seq: u64,
    /// Accepts' addresses, oldest first (only for records still in the ring).
    addrs: VecDeque<Addrs>,
    /// A scratch buffer: the redacted record, then a record copied out for a file.
    scratch: Vec<u8>,
    /// Records pushed out by the size bounds (not by age).
    pub evictions: u64,
    bucket: TokenBucket,
    /// Files written, oldest first, with their sizes.
    files: VecDeque<(PathBuf, u64)>,
    metrics: Metrics,
    /// The traced servers now, for a file's header (`analyze` names them).
    targets: Vec<TargetInfo>,
}

impl FlightRecorder {
    pub fn new(opts: FlightOptions, clock: Clock, ringbuf_bytes: u32, metrics: Metrics) -> Result<Self> {
        files::private_dir(&opts.dir)?;
        let (max_records, ring_bytes) = (opts.max_records(), opts.ring_bytes());
        let on_disk = files_on_disk(&opts.dir)?;
        let mut recorder = FlightRecorder {
            opts,
            clock,
            ringbuf_bytes,
            redactor: Redactor::new(),
            // Allocated once at their bounds (pages are touched only as they fill), so
            // they never grow by doubling past them.
            ring: VecDeque::with_capacity(max_records + 1),
            bytes: VecDeque::with_capacity(ring_bytes + RECORD_SLACK),
            first_seq: 0,
            addrs: VecDeque::new(),
            scratch: Vec::new(),
            evictions: 0,
            bucket: TokenBucket::new(FILES_PER_SECOND),
            files: on_disk,
            metrics,
            targets: Vec::new(),
        };
        recorder.enforce_caps();
        Ok(recorder)
    }

    /// The traced servers, at start and whenever they change: a file's header names them.
    pub fn set_targets(&mut self, targets: Vec<TargetInfo>) {
        self.targets = targets;
    }

    /// Files kept now (this run's and earlier runs').
    pub fn files(&self) -> usize {
        self.files.len()
    }

    /// Remove the oldest files past `--flight-max-files` or `--flight-max-bytes`.
    fn enforce_caps(&mut self) {
        while self.files.len() > self.opts.max_files.max(1) || self.files.iter().map(|(_, s)| s).sum::<u64>() > self.opts.max_bytes {
            let Some((old, _)) = self.files.pop_front() else { break };
            std::fs::remove_file(&old).ok();
        }
    }

    /// Records in the ring now.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ring.is_empty()
    }

    /// One raw record as it arrived (before the pipeline sees it).
    pub fn record(&mut self, raw: &[u8], ev: Option<&Event>, addrs: AcceptAddrs) {
        self.scratch.clear();
        self.scratch.extend_from_slice(raw);
        self.redactor.redact(&mut self.scratch);
        let kept = &self.scratch[..kept_len(&self.scratch)];
        let ts_ns = ev.map(Event::ts_ns).or_else(|| self.ring.back().map(|r| r.ts_ns)).unwrap_or(0);
        if matches!(ev, Some(Event::Accept(_))) {
            self.addrs.push_back((self.first_seq + self.ring.len() as u64, addrs.server, addrs.client));
        }
        self.bytes.extend(kept);
        self.ring.push_back(Record { ts_ns, len: kept.len() as u32, full_len: raw.len() as u32 });
        let oldest_kept = ts_ns.saturating_sub(self.opts.seconds.saturating_mul(1_000_000_000));
        let (max_records, max_bytes) = (self.opts.max_records(), self.opts.ring_bytes());
        while let Some(front) = self.ring.front() {
            let too_many = self.ring.len() > max_records || self.bytes.len() > max_bytes;
            if !too_many && front.ts_ns >= oldest_kept {
                break;
            }
            self.evictions += u64::from(too_many);
            self.bytes.drain(..front.len as usize);
            self.ring.pop_front();
            if self.addrs.front().is_some_and(|a| a.0 == self.first_seq) {
                self.addrs.pop_front();
            }
            self.first_seq += 1;
        }
    }

    /// The record bound (the `flight_buffer` table's capacity).
    pub fn capacity(&self) -> usize {
        self.opts.max_records()
    }

    /// The span the ring covers now, oldest record to newest: `--flight-seconds` unless
    /// the size bounds pushed records out sooner (a high rate).
    pub fn window(&self) -> Option<Window> {
        Some(Window { from_ns: self.ring.front()?.ts_ns, to_ns: self.ring.back()?.ts_ns })
    }

    /// Bytes the ring's records take (the byte ring, not its index).
    pub fn bytes(&self) -> usize {
        self.bytes.len()
    }

    /// A handshake ended: an abnormal one gets the ring written to a trace file.
    pub fn handshake(&mut self, h: &Handshake) {
        if h.verdict() == Some(Verdict::Ok) {
            return;
        }
        if !self.opts.probes && h.probe().is_some() {
            return;
        }
        let end_ns = h.accept_ns + h.total_ns();
        let outcome = if !self.bucket.take(end_ns) {
            Outcome::Dropped
        } else {
            let name = file_name(h.pid, h.fd, h.accept_ns);
            match self.write(&name, h.pid, end_ns) {
                Ok(()) => Outcome::Written,
                Err(e) => {
                    if files::is_refusal(&e) {
                        self.metrics.file_refused("flight");
                    }
                    eprintln!("WARNING: flight recorder: {e:#}");
                    Outcome::Dropped
                }
            }
        };
        Metrics::record_outcome(&self.metrics.flight_recordings, outcome);
    }

    /// Write the ring to `name` in the folder: under its partial name first, renamed
    /// when whole; a failure removes the partial file.
    fn write(&mut self, name: &str, pid: u32, end_ns: u64) -> Result<()> {
        let partial = self.opts.dir.join(format!(".{name}.partial"));
        let path = self.opts.dir.join(name);
        let file = files::create_new(&partial)?;
        let written = self.write_to(file, pid, end_ns).and_then(|size| {
            std::fs::rename(&partial, &path).with_context(|| format!("rename {} to {}", partial.display(), path.display()))?;
            Ok(size)
        });
        let size = match written {
            Ok(size) => size,
            Err(e) => {
                std::fs::remove_file(&partial).ok();
                return Err(e).with_context(|| format!("write {} (removed)", path.display()));
            }
        };
        self.files.retain(|(p, _)| *p != path);
        self.files.push_back((path.clone(), size));
        self.enforce_caps();
        if self.files.back().is_none_or(|(p, _)| *p != path) {
            anyhow::bail!("{} ({size} bytes) is larger than --flight-max-bytes alone: removed", path.display());
        }
        Ok(())
    }

    /// The ring as a trace file (its header names the traced servers, the handshake's
    /// server `pid` first); its size in bytes.
    fn write_to(&mut self, file: std::fs::File, pid: u32, end_ns: u64) -> Result<u64> {
        let mut targets = self.targets.clone();
        targets.sort_by_key(|t| (t.pid != pid, t.pid));
        let header = TraceHeader { covers: self.window(), ..header(&self.clock, targets, self.ringbuf_bytes) };
        let mut w = TraceWriter::new(BufWriter::with_capacity(1 << 16, file), &header)?.buffered();
        let mut at = 0;
        let mut addrs = self.addrs.iter().peekable();
        for (seq, r) in (self.first_seq..).zip(&self.ring) {
            self.scratch.clear();
            self.scratch.extend(self.bytes.range(at..at + r.len as usize));
            at += r.len as usize;
            // The payload past what was captured is zeros: the file says how many.
            w.event_then_zeros(&self.scratch, (r.full_len - r.len) as usize)?;
            if let Some((_, server, client)) = addrs.next_if(|a| a.0 == seq) {
                w.addrs(*server, *client)?;
            }
        }
        // The trace ends with the handshake: what was still open then ends `incomplete`.
        let file = w.end(&trailer(&Counters::default(), 0, end_ns))?.into_inner().map_err(|e| e.into_error())?;
        Ok(file.metadata()?.len())
    }
}
