//! The summary printed at exit: counts by verdict, phase latencies, events lost.
use std::io::Write;

use anyhow::Result;

use super::names;
use crate::{pipeline::Summary, verdict::Verdict};

/// The summary printed at exit.
pub fn print_summary(s: &Summary, log: &mut dyn Write) -> Result<()> {
    writeln!(log)?;
    let verdicts: Vec<String> = Verdict::ALL
        .iter()
        .filter_map(|v| {
            let n = s.count(*v);
            let probes = match s.probes(*v) {
                0 => String::new(),
                1 => " (1 port check)".to_string(),
                p => format!(" ({p} port checks)"),
            };
            (n > 0).then(|| format!("{} {n}{probes}", names::verdict(*v)))
        })
        .collect();
    writeln!(
        log,
        "Summary: {} handshakes{}{}{}",
        s.handshakes(),
        if verdicts.is_empty() { String::new() } else { format!(" ({})", verdicts.join(", ")) },
        if s.accept_errors > 0 { format!(", {} failed accepts", s.accept_errors) } else { String::new() },
        if s.filtered_out > 0 { format!(", {} on other ports", s.filtered_out) } else { String::new() },
    )?;
    for (name, h) in [
        ("accept → greeting", &s.to_greeting),
        ("greeting → login", &s.to_login),
        ("login → reply", &s.to_reply),
        ("TLS hello → data", &s.tls),
        ("total", &s.total),
    ] {
        if h.count() > 0 {
            writeln!(
                log,
                "  {name:<18} p50 {:>9.3} ms  p90 {:>9.3} ms  p99 {:>9.3} ms  max {:>9.3} ms  (n={})",
                h.quantile_ms(0.5).unwrap_or(0.0),
                h.quantile_ms(0.9).unwrap_or(0.0),
                h.quantile_ms(0.99).unwrap_or(0.0),
                h.max_ms().unwrap_or(0.0),
                h.count()
            )?;
        }
    }
    let c = &s.counters;
    if s.counters_unknown {
        writeln!(log, "Events: emitted and lost unknown (the trace has no trailer: it was cut short), {} undecodable", s.undecodable)?;
        writeln!(log, "WARNING: events may have been lost; the output above may be incomplete")?;
        return Ok(());
    }
    writeln!(
        log,
        "Events: {} emitted by the kernel, {} lost (ring buffer full: {}, map full: {}), {} undecodable",
        c.emitted,
        c.lost(),
        c.lost_ringbuf,
        c.lost_mapfull,
        s.undecodable
    )?;
    if c.lost() > 0 {
        writeln!(log, "WARNING: {} events were lost; the output above is incomplete", c.lost())?;
    }
    Ok(())
}
