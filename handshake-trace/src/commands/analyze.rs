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
    support::escape::Escaped,
    pipeline::{Pipeline, Summary},
};

/// Replay `trace`; handshakes to `out` (as `watch` wrote them), notices to `log`.
pub fn analyze(trace: &Trace, opts: &WatchOptions, out: &mut dyn Write, log: &mut dyn Write) -> Result<Summary> {
    let h = &trace.header;
    // The header is the file's word: shown escaped, like anything from the wire.
    let targets: Vec<String> = h.targets.iter().map(|t| format!("{} (pid {})", Escaped(&t.comm), t.pid)).collect();
    // Older flight recordings name no server.
    let of = if targets.is_empty() { String::new() } else { format!(" of {}", targets.join(", ")) };
    writeln!(
        log,
        "Analyzing a trace{of} recorded {} on kernel {} by handshake-trace {}{}",
        Escaped(&h.started),
        Escaped(&h.kernel),
        Escaped(&h.tool_version),
        if trace.truncated { " (cut short: no trailer)" } else { "" }
    )?;
    if let Some(w) = h.covers {
        writeln!(
            log,
            "A flight recording: its events cover {:.3} s; connections opened before that are seen only from then on",
            w.seconds()
        )?;
    }
    let mut pipeline = Pipeline::new(opts.pipeline()).with_sink(Printer::new(opts.print(), Clock::with_offset(h.clock_offset_ns), &mut *out));
    // A trace file does not hold the server's configuration: the operator's flags, if given.
    if opts.server != crate::config::Overrides::default() {
        let cfg = crate::config::ServerConfig::from_overrides(opts.server);
        writeln!(log, "Assumed for every server of the trace: {}", crate::output::notice::server_config_values(&cfg))?;
        pipeline.assume_config(std::sync::Arc::new(cfg));
    }
    // Recordings made since batches were written replay in the same batches.
    if trace.items.iter().any(|i| matches!(i, TraceItem::Drained { .. })) {
        pipeline = pipeline.in_batches();
    }
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
            // The live session's batches and its losses in them: the same handshakes are
            // spared a verdict as live.
            TraceItem::Drained { lost, cut: false } => pipeline.batch_end(*lost > 0)?,
            TraceItem::Drained { lost, cut: true } => pipeline.slice_end(*lost > 0)?,
            TraceItem::Addrs { .. } | TraceItem::Listener { .. } | TraceItem::End(_) => {}
        }
        for w in pipeline.host_warnings() {
            writeln!(log, "WARNING: {}", crate::output::reason::host_warning(&w))?;
        }
    }
    let end = trace.end();
    let counters = end
        .map(|e| Counters { emitted: e.emitted, lost_ringbuf: e.lost_ringbuf, lost_mapfull: e.lost_mapfull, ..Default::default() })
        .unwrap_or_default();
    let stop_ns = end.map(|e| e.stop_ns).filter(|s| *s > 0).unwrap_or(last_ts);
    let mut summary = pipeline.finish(stop_ns, counters)?;
    summary.counters_unknown = end.is_none();
    summary.undecodable = undecodable + end.map(|e| e.undecodable).unwrap_or(0);
    Ok(summary)
}

/// Read a trace file.
pub fn read(path: &std::path::Path) -> Result<Trace> {
    let f = std::fs::File::open(path).with_context(|| format!("open {}", path.display()))?;
    crate::recording::format::read_trace(std::io::BufReader::new(f)).with_context(|| format!("read trace {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::recording::format::{read_trace, TargetInfo, TraceHeader, TraceWriter};

    #[test]
    fn a_crafted_header_reaches_the_terminal_escaped() {
        let header = TraceHeader {
            tool_version: "0.1.0\x1b[2J".into(),
            kernel: "6.18\r\n".into(),
            started: "2026-11-30T20:00:00Z".into(),
            clock_offset_ns: 0,
            targets: vec![TargetInfo { pid: 7, comm: "\x1b]0;PWNED\x07mariadbd".into(), exe: None }],
            ringbuf_bytes: 4096,
            redacted: true,
            covers: None,
        };
        let mut file = Vec::new();
        TraceWriter::new(&mut file, &header).unwrap();
        let trace = read_trace(&file[..]).unwrap();
        let (mut out, mut log) = (Vec::new(), Vec::new());
        analyze(&trace, &WatchOptions::default(), &mut out, &mut log).unwrap();
        let log = String::from_utf8(log).unwrap();
        assert!(log.contains("\\x1b]0;PWNED\\x07mariadbd (pid 7)"), "{log}");
        assert!(!log.trim_end().chars().any(|c| c.is_control() && c != '\n'), "{log:?}");
    }

    /// A trace header of 2026-11-30 that names no server.
    fn header_naming_no_server() -> TraceHeader {
        TraceHeader {
            tool_version: "0.1.0".into(),
            kernel: "6.18".into(),
            started: "2026-11-30T20:00:00Z".into(),
            clock_offset_ns: 0,
            targets: Vec::new(),
            ringbuf_bytes: 4096,
            redacted: true,
            covers: None,
        }
    }

    #[test]
    fn a_header_naming_no_server_reads_without_a_gap() {
        let header = header_naming_no_server();
        let mut file = Vec::new();
        TraceWriter::new(&mut file, &header).unwrap();
        let mut log = Vec::new();
        analyze(&read_trace(&file[..]).unwrap(), &WatchOptions::default(), &mut Vec::new(), &mut log).unwrap();
        let log = String::from_utf8(log).unwrap();
        let first = log.lines().next().unwrap();
        assert_eq!(first, "Analyzing a trace recorded 2026-11-30T20:00:00Z on kernel 6.18 by handshake-trace 0.1.0 (cut short: no trailer)");
    }

    #[test]
    fn a_trace_cut_short_reports_loss_as_unknown() {
        let header = header_naming_no_server();
        let summary_of = |file: &[u8]| {
            let trace = read_trace(file).unwrap();
            let s = analyze(&trace, &WatchOptions::default(), &mut Vec::new(), &mut Vec::new()).unwrap();
            let mut log = Vec::new();
            crate::output::summary::print_summary(&s, crate::output::summary::DEFAULT_TOP, &mut log).unwrap();
            String::from_utf8(log).unwrap()
        };
        let mut cut = Vec::new();
        TraceWriter::new(&mut cut, &header).unwrap();
        let log = summary_of(&cut);
        assert!(log.contains("emitted and lost unknown") && !log.contains("0 emitted"), "{log}");
        let end = crate::recording::format::TraceEnd { ended: "x".into(), emitted: 7, lost_ringbuf: 2, lost_mapfull: 0, undecodable: 0, stop_ns: 0 };
        let mut whole = Vec::new();
        TraceWriter::new(&mut whole, &header).unwrap().end(&end).unwrap();
        let log = summary_of(&whole);
        assert!(log.contains("7 emitted by the kernel, 2 lost"), "{log}");
    }
}
