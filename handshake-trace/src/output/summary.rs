//! The summary printed at exit: counts by verdict, phase latencies, events lost.
use std::io::Write;

use anyhow::Result;

use super::{columns::Terminal, names};
use crate::{pipeline::Summary, verdict::Verdict};

/// The summary printed at exit, whole.
pub fn print_summary(s: &Summary, log: &mut dyn Write) -> Result<()> {
    print_summary_on(s, log, &Terminal::default())
}

/// The summary printed at exit, its long lines folded to `term`; the percentile table
/// fits 80 columns.
pub fn print_summary_on(s: &Summary, log: &mut dyn Write, term: &Terminal) -> Result<()> {
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
    let line = format!(
        "Summary: {} handshakes{}{}{}",
        s.handshakes(),
        if verdicts.is_empty() { String::new() } else { format!(" ({})", verdicts.join(", ")) },
        if s.accept_errors > 0 { format!(", {} failed accepts", s.accept_errors) } else { String::new() },
        if s.filtered_out > 0 { format!(", {} on other ports", s.filtered_out) } else { String::new() },
    );
    writeln!(log, "{}", term.fold(&line, 4))?;
    let phases = [&s.to_greeting, &s.to_login, &s.to_reply, &s.tls, &s.total];
    if phases.iter().any(|h| h.count() > 0) {
        writeln!(log, "  {:<18} {:>10} {:>10} {:>10} {:>10} {:>7}", "latency (ms)", "p50", "p90", "p99", "max", "n")?;
    }
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
                "  {name:<18} {:>10.3} {:>10.3} {:>10.3} {:>10.3} {:>7}",
                h.quantile_ms(0.5).unwrap_or(0.0),
                h.quantile_ms(0.9).unwrap_or(0.0),
                h.quantile_ms(0.99).unwrap_or(0.0),
                h.max_ms().unwrap_or(0.0),
                h.count()
            )?;
        }
    }
    let c = &s.counters;
    let line = format!(
        "Events: {} emitted by the kernel, {} lost (ring buffer full: {}, map full: {}), {} undecodable",
        c.emitted,
        c.lost(),
        c.lost_ringbuf,
        c.lost_mapfull,
        s.undecodable
    );
    writeln!(log, "{}", term.fold(&line, 4))?;
    if c.lost() > 0 {
        writeln!(log, "WARNING: {} events were lost; the output above is incomplete", c.lost())?;
    }
    Ok(())
}
