//! `analyze`: replay a recorded trace through the same [`Session`] the live `watch`
//! uses, so it prints exactly what `watch` printed. Pure: no root, no kernel.
use std::io::Write;

use anyhow::{Context, Result};

use crate::{
    support::clock::Clock,
    events::{decode, AcceptAddrs, Event},
    events::Counters,
    recording::format::{Trace, TraceItem},
    output::printer::Printer,
    commands::WatchOptions,
    pipeline::{Pipeline, Summary},
};

/// Replay `trace`; handshakes to `out` (as `watch` wrote them), notices to `log`.
pub fn analyze(trace: &Trace, opts: &WatchOptions, out: &mut dyn Write, log: &mut dyn Write) -> Result<Summary> {
    let h = &trace.header;
    let targets: Vec<String> = h.targets.iter().map(|t| format!("{} (pid {})", t.comm, t.pid)).collect();
    writeln!(
        log,
        "Analyzing a trace of {} recorded {} on kernel {} by handshake-trace {}{}",
        targets.join(", "),
        h.started,
        h.kernel,
        h.tool_version,
        if trace.truncated { " (cut short: no trailer)" } else { "" }
    )?;
    let mut pipeline = Pipeline::new(opts.pipeline()).with_sink(Printer::new(opts.print(), Clock::with_offset(h.clock_offset_ns), &mut *out));
    let mut undecodable = 0;
    let mut last_ts = 0;
    let mut items = trace.items.iter().peekable();
    while let Some(item) = items.next() {
        match item {
            TraceItem::Event(raw) => match decode(raw) {
                Ok(ev) => {
                    last_ts = last_ts.max(ev.ts_ns());
                    if opts.raw_events {
                        writeln!(log, "# {:?}", Ok::<_, ()>(&ev))?;
                    }
                    // The addresses the live session used for an accept follow it.
                    let addrs = match (&ev, items.peek()) {
                        (Event::Accept(_), Some(TraceItem::Addrs { server, client })) => {
                            let a = AcceptAddrs { server: *server, client: *client };
                            items.next();
                            a
                        }
                        _ => AcceptAddrs::default(),
                    };
                    pipeline.push(&ev, addrs)?;
                }
                Err(e) => {
                    undecodable += 1;
                    writeln!(log, "WARNING: undecodable event: {e}")?;
                }
            },
            TraceItem::Exit { pid, ts_ns } => pipeline.push(&Event::ProcessExit { ts_ns: *ts_ns, pid: *pid }, AcceptAddrs::default())?,
            TraceItem::Addrs { .. } | TraceItem::Listener { .. } | TraceItem::End(_) => {}
        }
    }
    let end = trace.end();
    let counters = end
        .map(|e| Counters { emitted: e.emitted, lost_ringbuf: e.lost_ringbuf, lost_mapfull: e.lost_mapfull })
        .unwrap_or_default();
    let stop_ns = end.map(|e| e.stop_ns).filter(|s| *s > 0).unwrap_or(last_ts);
    let mut summary = pipeline.finish(stop_ns, counters)?;
    summary.undecodable = undecodable + end.map(|e| e.undecodable).unwrap_or(0);
    Ok(summary)
}

/// Read a trace file.
pub fn read(path: &std::path::Path) -> Result<Trace> {
    let f = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    crate::recording::format::read_trace(std::io::BufReader::new(f)).with_context(|| format!("read trace {}", path.display()))
}
