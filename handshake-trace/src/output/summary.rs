//! The summary printed at exit: counts by verdict, phase latencies, events lost, and
//! the grouped table (who failed and how) that each `--rollup` prints too.
use std::{collections::BTreeMap, io::Write, time::SystemTime};

use anyhow::Result;

use super::{columns::Terminal, names};
use crate::{
    pipeline::{groups::ClientHost, Groups, Summary},
    support::{escape::Escaped, histogram::Histogram},
    verdict::{Blame, Probe, Verdict},
};

/// "Blame: client 3, network 1" over the failures; None when all went well.
pub fn blame_line(s: &Summary) -> Option<String> {
    let counts: Vec<String> =
        Blame::ALL.iter().filter(|b| s.blamed(**b) > 0).map(|b| format!("{} {}", names::blame(*b), s.blamed(*b))).collect();
    (!counts.is_empty()).then(|| format!("  blame of the failures: {}", counts.join(", ")))
}

/// Rows of the grouped table unless `--top` says otherwise.
pub const DEFAULT_TOP: usize = 10;

/// The summary printed at exit, whole, its grouped table `top` rows long.
pub fn print_summary(s: &Summary, top: usize, log: &mut dyn Write) -> Result<()> {
    print_summary_on(s, top, log, &Terminal::default())
}

/// The summary printed at exit, its grouped table `top` rows long, its long lines
/// folded to `term`; the percentile table fits 80 columns.
pub fn print_summary_on(s: &Summary, top: usize, log: &mut dyn Write, term: &Terminal) -> Result<()> {
    writeln!(log)?;
    let verdicts: Vec<String> = Verdict::ALL
        .iter()
        .filter_map(|v| {
            let n = s.count(*v);
            let probes: Vec<String> = Probe::ALL
                .iter()
                .filter_map(|k| match s.probes(*k, *v) {
                    0 => None,
                    1 => Some(format!("1 {}", names::probe_words(*k))),
                    p => Some(format!("{p} {}s", names::probe_words(*k))),
                })
                .collect();
            let probes = if probes.is_empty() { String::new() } else { format!(" ({})", probes.join(", ")) };
            (n > 0).then(|| format!("{} {n}{probes}", names::verdict(*v)))
        })
        .collect();
    let line = format!(
        "Summary: {} handshakes{}{}{}",
        s.handshakes(),
        if verdicts.is_empty() { String::new() } else { format!(" ({})", verdicts.join(", ")) },
        if s.accept_errors > 0 { format!(", {} failed accepts", s.accept_errors) } else { String::new() },
        other_ports(s),
    );
    writeln!(log, "{}", term.fold(&line, 4))?;
    if let Some(line) = blame_line(s) {
        writeln!(log, "{line}")?;
    }
    if s.not_selected > 0 {
        writeln!(log, "  {} more left out by --failed/--verdict/--user/--client", s.not_selected)?;
    }
    write_groups(&s.groups, top, log)?;
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
    if s.counters_unknown {
        let line = format!("Events: emitted and lost unknown (the trace has no trailer: it was cut short), {} undecodable", s.undecodable);
        writeln!(log, "{}", term.fold(&line, 4))?;
        writeln!(log, "WARNING: events may have been lost; the output above may be incomplete")?;
        return Ok(());
    }
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
        let line = format!(
            "WARNING: {} events were lost; the output above is incomplete: {}",
            c.lost(),
            super::notice::loss_advice(c.lost_ringbuf, c.lost_mapfull)
        );
        writeln!(log, "{}", term.fold(&line, 4))?;
    }
    Ok(())
}

/// ", N on other ports (M dropped in the kernel)", or nothing.
fn other_ports(s: &Summary) -> String {
    match (s.other_ports(), s.counters.filtered_port) {
        (0, _) => String::new(),
        (n, 0) => format!(", {n} on other ports"),
        (n, k) => format!(", {n} on other ports ({k} dropped in the kernel)"),
    }
}

/// "ok 2, client_closed 1" in the verdicts' order.
fn verdict_counts(counts: &BTreeMap<Verdict, u64>) -> String {
    counts.iter().filter(|(_, n)| **n > 0).map(|(v, n)| format!("{} {n}", names::verdict(*v))).collect::<Vec<_>>().join(", ")
}

/// The grouped table: the `top` largest groups by user, client host, verdict, ERR code
/// and blame, and a row for the rest. The user and host come last: they vary in length.
pub fn write_groups(g: &Groups, top: usize, out: &mut dyn Write) -> Result<()> {
    if top == 0 || g.is_empty() {
        return Ok(());
    }
    let (rows, rest) = g.top(top);
    writeln!(out, "  {:>7}  {:<14} {:>5}  {:<8} user@client", "count", "verdict", "ERR", "blame")?;
    for (key, count) in rows {
        let user = key.user.as_deref().map(|u| Escaped(u).to_string()).unwrap_or_else(|| "?".into());
        let host = match key.host {
            ClientHost::Ip(ip) => ip.to_string(),
            ClientHost::Unix => "unix-socket".into(),
            ClientHost::Unknown => "?".into(),
        };
        let code = key.error_code.map(|c| c.to_string()).unwrap_or_else(|| "-".into());
        // A probe's group says which kind, not its verdict (port checks are all
        // client_closed/client_reset, health checks ok).
        let verdict = key.probe.map_or(names::verdict(key.verdict), |p| names::probe(Some(p)));
        writeln!(out, "  {count:>7}  {verdict:<14} {code:>5}  {:<8} {user}@{host}", names::blame(key.blame))?;
    }
    if rest > 0 {
        writeln!(out, "  {rest:>7}  (other groups)")?;
    }
    Ok(())
}

/// A roll-up (`--rollup`): what finished since `since`, the successes' durations (a
/// line of their own, so the first stays short), the table.
pub fn write_rollup(g: &Groups, ok: &Histogram, top: usize, since: SystemTime, term: &Terminal, out: &mut dyn Write) -> Result<()> {
    let line = format!(
        "{} roll-up since {}: {} handshakes ({})",
        term.time(SystemTime::now()),
        term.time(since),
        g.handshakes(),
        verdict_counts(&g.by_verdict),
    );
    writeln!(out, "{}", term.fold(&line, 4))?;
    if ok.count() > 0 {
        let [p50, p99] = [0.5, 0.99].map(|q| ok.quantile_ms(q).unwrap_or(0.0));
        let max = ok.max_ms().unwrap_or(0.0);
        writeln!(out, "  ok: p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms")?;
    }
    write_groups(g, top, out)
}

#[cfg(test)]
mod tests {
    use std::net::IpAddr;

    use super::*;
    use crate::{pipeline::groups::GroupKey, verdict::Blame};

    fn key(verdict: Verdict, user: Option<&str>, host: ClientHost, code: Option<u16>, blame: Blame) -> GroupKey {
        GroupKey { verdict, user: user.map(Into::into), host, error_code: code, blame, probe: None }
    }

    fn table(g: &Groups, top: usize) -> String {
        let mut out = Vec::new();
        write_groups(g, top, &mut out).unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn the_table_shows_the_top_rows_then_the_rest_with_escaped_users() {
        let mut g = Groups::default();
        let app = ClientHost::Ip(IpAddr::from([10, 1, 2, 3]));
        g.add(key(Verdict::AuthFailed, Some("app"), app, Some(1045), Blame::Client), 64);
        g.add(key(Verdict::ClientClosed, None, ClientHost::Unix, None, Blame::Client), 3);
        g.add(key(Verdict::AuthFailed, Some("x\x1b[2J"), ClientHost::Unknown, Some(1045), Blame::Client), 2);
        g.add(key(Verdict::Ok, Some("app"), app, None, Blame::None), 900);
        let t = table(&g, 3);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 5, "{t}");
        assert!(lines[0].contains("count") && lines[0].contains("user@client"), "{t}");
        assert_eq!(lines[1], "       64  auth_failed     1045  client   app@10.1.2.3");
        assert_eq!(lines[2], "        3  client_closed      -  client   ?@unix-socket");
        assert_eq!(lines[3], "        2  auth_failed     1045  client   x\\x1b[2J@?");
        assert_eq!(lines[4], "      900  (other groups)");
        assert_eq!(table(&g, 0), "", "--top 0: no table");
        assert_eq!(table(&Groups::default(), 10), "", "no handshakes: no table");
    }
}
