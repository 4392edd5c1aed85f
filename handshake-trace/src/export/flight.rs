//! The flight recorder: the last `--flight-seconds` of raw kernel records, redacted as
//! they arrive (secrets zeroed, as `record` does), kept in a bounded in-memory ring;
//! when a handshake ends abnormally the ring is written to a trace file in
//! `--flight-dir` that `analyze` replays in full detail. Rate-limited (a file a second
//! at most, the rest counted as dropped), and capped: past `--flight-max-files` files or
//! `--flight-max-bytes` bytes the oldest files are removed.
use std::{
    collections::VecDeque,
    io::BufWriter,
    net::SocketAddr,
    path::{Path, PathBuf},
};

use anyhow::{Context, Result};

use super::{
    abnormal_log::TokenBucket,
    metrics::{Metrics, Outcome},
};
use crate::{
    correlate::Handshake,
    events::{AcceptAddrs, Counters, Event},
    recording::{
        format::{TargetInfo, TraceWriter},
        recorder::{header, trailer},
        redact::Redactor,
    },
    support::clock::Clock,
    verdict::Verdict,
};

/// Records kept at most, whatever their age.
pub const MAX_RECORDS: usize = 65_536;
/// Bytes of records kept at most.
pub const MAX_RING_BYTES: usize = 16 << 20;
/// Trace files written a second at most.
const FILES_PER_SECOND: f64 = 1.0;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FlightOptions {
    pub dir: PathBuf,
    pub seconds: u64,
    pub max_files: usize,
    pub max_bytes: u64,
}

#[derive(Debug)]
struct Record {
    ts_ns: u64,
    raw: Vec<u8>,
    /// The addresses the live session used, for an accept.
    addrs: Option<(Option<SocketAddr>, Option<SocketAddr>)>,
}

pub struct FlightRecorder {
    opts: FlightOptions,
    clock: Clock,
    ringbuf_bytes: u32,
    redactor: Redactor,
    ring: VecDeque<Record>,
    ring_bytes: usize,
    /// Records pushed out by the size bounds (not by age).
    pub evictions: u64,
    bucket: TokenBucket,
    /// Files written, oldest first, with their sizes.
    files: VecDeque<(PathBuf, u64)>,
    metrics: Metrics,
}

impl FlightRecorder {
    pub fn new(opts: FlightOptions, clock: Clock, ringbuf_bytes: u32, metrics: Metrics) -> Result<Self> {
        std::fs::create_dir_all(&opts.dir).with_context(|| format!("create {}", opts.dir.display()))?;
        Ok(FlightRecorder {
            opts,
            clock,
            ringbuf_bytes,
            redactor: Redactor::new(),
            ring: VecDeque::new(),
            ring_bytes: 0,
            evictions: 0,
            bucket: TokenBucket::new(FILES_PER_SECOND),
            files: VecDeque::new(),
            metrics,
        })
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
        let mut raw = raw.to_vec();
        self.redactor.redact(&mut raw);
        let ts_ns = ev.map(Event::ts_ns).or_else(|| self.ring.back().map(|r| r.ts_ns)).unwrap_or(0);
        let addrs = matches!(ev, Some(Event::Accept(_))).then_some((addrs.server, addrs.client));
        self.ring_bytes += raw.len();
        self.ring.push_back(Record { ts_ns, raw, addrs });
        let oldest_kept = ts_ns.saturating_sub(self.opts.seconds.saturating_mul(1_000_000_000));
        while let Some(front) = self.ring.front() {
            let too_many = self.ring.len() > MAX_RECORDS || self.ring_bytes > MAX_RING_BYTES;
            if !too_many && front.ts_ns >= oldest_kept {
                break;
            }
            self.evictions += u64::from(too_many);
            self.ring_bytes -= front.raw.len();
            self.ring.pop_front();
        }
    }

    /// A handshake ended: an abnormal one gets the ring written to a trace file.
    pub fn handshake(&mut self, h: &Handshake) {
        if h.verdict() == Some(Verdict::Ok) {
            return;
        }
        let end_ns = h.accept_ns + h.total_ns();
        let outcome = if !self.bucket.take(end_ns) {
            Outcome::Dropped
        } else {
            let path = self.opts.dir.join(format!("abnormal-{}-{}-{}.htrace", h.pid, h.fd, h.accept_ns));
            match self.write(&path, end_ns) {
                Ok(()) => Outcome::Written,
                Err(e) => {
                    eprintln!("WARNING: flight recorder: {e:#}");
                    Outcome::Dropped
                }
            }
        };
        Metrics::record_outcome(&self.metrics.flight_recordings, outcome);
    }

    fn write(&mut self, path: &Path, end_ns: u64) -> Result<()> {
        let file = std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
        let targets: Vec<TargetInfo> = Vec::new();
        let mut w = TraceWriter::new(BufWriter::new(file), &header(&self.clock, targets, self.ringbuf_bytes))?;
        for r in &self.ring {
            w.event(&r.raw)?;
            if let Some((server, client)) = r.addrs {
                w.addrs(server, client)?;
            }
        }
        // The trace ends with the handshake: what was still open then ends `incomplete`.
        w.end(&trailer(&Counters::default(), 0, end_ns))?;
        let size = std::fs::metadata(path).map(|m| m.len()).unwrap_or(0);
        self.files.push_back((path.to_path_buf(), size));
        while self.files.len() > self.opts.max_files.max(1) || self.files.iter().map(|(_, s)| s).sum::<u64>() > self.opts.max_bytes {
            let Some((old, _)) = self.files.pop_front() else { break };
            std::fs::remove_file(&old).ok();
            if old == path {
                break;
            }
        }
        Ok(())
    }
}
