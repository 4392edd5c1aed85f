//! `record`: the live trace written to a file as it happens, secrets zeroed first.
use anyhow::{Context, Result};

use super::{
    format::{TargetInfo, TraceEnd, TraceHeader, TraceWriter},
    redact::Redactor,
};
use crate::{
    events::{AcceptAddrs, Counters, Event},
    support::clock::{format_rfc3339, Clock},
};

/// Writes what the pipeline saw to a trace file: events with their secrets zeroed,
/// the addresses used for each accept, exits, and the trailer.
pub struct Recorder {
    pub writer: TraceWriter<std::io::BufWriter<std::fs::File>>,
    redactor: Redactor,
}

impl Recorder {
    pub fn create(path: &std::path::Path, clock: &Clock, targets: Vec<TargetInfo>, ringbuf_bytes: u32) -> Result<Self> {
        let file = std::fs::File::create(path).with_context(|| format!("create {}", path.display()))?;
        let header = header(clock, targets, ringbuf_bytes);
        Ok(Recorder { writer: TraceWriter::new(std::io::BufWriter::new(file), &header)?, redactor: Redactor::new() })
    }

    pub fn event(&mut self, raw: &[u8], ev: Option<&Event>, addrs: AcceptAddrs) -> Result<()> {
        let mut raw = raw.to_vec();
        self.redactor.redact(&mut raw);
        self.writer.event(&raw)?;
        if let Some(Event::Accept(_)) = ev {
            self.writer.addrs(addrs.server, addrs.client)?;
        }
        Ok(())
    }

    pub fn finish(self, counters: &Counters, undecodable: u64, stop_ns: u64) -> Result<()> {
        self.writer.end(&trailer(counters, undecodable, stop_ns))?;
        Ok(())
    }
}

/// The header of a trace file written now (records redacted).
pub fn header(clock: &Clock, targets: Vec<TargetInfo>, ringbuf_bytes: u32) -> TraceHeader {
    TraceHeader {
        tool_version: env!("CARGO_PKG_VERSION").to_string(),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string(),
        started: format_rfc3339(std::time::SystemTime::now()),
        clock_offset_ns: clock.offset_ns(),
        targets,
        ringbuf_bytes,
        redacted: true,
        covers: None,
    }
}

/// The trailer of a trace file ending now.
pub fn trailer(counters: &Counters, undecodable: u64, stop_ns: u64) -> TraceEnd {
    TraceEnd {
        ended: format_rfc3339(std::time::SystemTime::now()),
        emitted: counters.emitted,
        lost_ringbuf: counters.lost_ringbuf,
        lost_mapfull: counters.lost_mapfull,
        undecodable,
        stop_ns,
    }
}
