//! The options a pipeline applies (`--port`, `--slow`, `--rollup`, `--brief`), on synthetic
//! handshakes: each test fails when its option is ignored or broken.
use std::{cell::RefCell, io::Write, rc::Rc};

use super::*;
use crate::{
    events::{SyscallKind, SyscallResult},
    commands::WatchOptions,
    output::printer::Printer,
    support::clock::Clock,
    testing::*,
    verdict::Verdict,
};

/// A writer the test can read while the pipeline still holds it.
#[derive(Clone, Default)]
struct Shared(Rc<RefCell<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.borrow_mut().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Shared {
    fn text(&self) -> String {
        String::from_utf8(self.0.borrow().clone()).unwrap()
    }
}

const KEPT_PORT: u16 = 3306;
const OTHER_PORT: u16 = 3399;

fn addrs(port: u16) -> AcceptAddrs {
    AcceptAddrs { server: Some(([127, 0, 0, 1], port).into()), client: None }
}

/// A successful handshake on `fd` taking `total_ms`, its end riding on the OK's record
/// as the kernel sends it (no close, no tracking-end record of its own).
fn ok_handshake(t0: u64, fd: i32, total_ms: u64) -> Vec<Event> {
    let at = |e: Event| -> Event {
        match e {
            Event::Accept(mut a) => {
                a.result = SyscallResult::Ok(fd as i64);
                Event::Accept(a)
            }
            Event::Io(mut io) => {
                io.sys.fd = fd;
                Event::Io(io)
            }
            other => other,
        }
    };
    let g = greeting();
    let l = packet(1, &login_body(None));
    let ok = ok_packet();
    let reply_ts = t0 + total_ms * MS;
    let mut reply = io_gen(reply_ts, t0, SyscallKind::Sendto, ok.len() as i64, ok.len() as u64, &ok);
    if let Event::Io(io) = &mut reply {
        io.tracking_end = Some(handshake_trace_common::end::REPLY);
    }
    vec![
        at(accept_at(t0, t0)),
        at(io_gen(t0 + 100_000, t0, SyscallKind::Sendto, g.len() as i64, g.len() as u64, &g)),
        at(io_gen(t0 + 200_000, t0, SyscallKind::Recvfrom, l.len() as i64, l.len() as u64, &l)),
        at(reply),
    ]
}

/// A client that reads the greeting and closes: `client_closed`, printed as a timeline.
fn failed_handshake(t0: u64) -> Vec<Event> {
    let mut ev = vec![accept_at(t0, t0)];
    let g = greeting();
    ev.push(io_gen(t0 + 100_000, t0, SyscallKind::Sendto, g.len() as i64, g.len() as u64, &g));
    ev.push(io_gen(t0 + 200_000, t0, SyscallKind::Recvfrom, 0, 4, &[]));
    ev.push(sys_gen(t0 + 300_000, t0, SyscallKind::Close, 0, 1000, [0; 4]));
    ev
}

fn run(opts: &WatchOptions, events: &[(Event, AcceptAddrs)]) -> (Summary, String, usize) {
    let out = Shared::default();
    let mut p = Pipeline::new(opts.pipeline()).with_sink(Printer::new(opts.print(), Clock::with_offset(0), out.clone()));
    for (e, a) in events {
        p.push(e, *a).unwrap();
    }
    let remembered = p.filtered_open();
    let last = events.last().map(|(e, _)| e.ts_ns()).unwrap_or(0);
    let summary = p.finish(last + MS, Counters::default()).unwrap();
    (summary, without_header(out.text(), opts), remembered)
}

/// Text output starts with the columns' header row: checked, then left out.
fn without_header(text: String, opts: &WatchOptions) -> String {
    if opts.json || text.is_empty() || (opts.rollup_secs.is_some() && !text.starts_with("TIME ")) {
        return text;
    }
    let (first, rest) = text.split_once('\n').unwrap_or((&text, ""));
    assert!(first.starts_with("TIME ") && first.ends_with("  DETAIL"), "no header row: {text}");
    assert!(!rest.contains("TIME "), "one header row: {text}");
    rest.to_string()
}

fn on_port(events: Vec<Event>, port: u16) -> Vec<(Event, AcceptAddrs)> {
    events.into_iter().map(|e| {
        let a = if matches!(e, Event::Accept(_)) { addrs(port) } else { AcceptAddrs::default() };
        (e, a)
    }).collect()
}

#[test]
fn port_keeps_only_connections_accepted_on_that_port() {
    let opts = WatchOptions { port: Some(KEPT_PORT), ..Default::default() };
    let mut ev = on_port(ok_handshake(GEN, 40, 3), OTHER_PORT);
    ev.extend(on_port(ok_handshake(GEN + 10 * MS, 41, 3), KEPT_PORT));
    let (summary, out, _) = run(&opts, &ev);
    assert_eq!(summary.handshakes(), 1, "{out}");
    assert_eq!(summary.filtered_out, 1);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains(&format!("→ 127.0.0.1:{KEPT_PORT}")), "{out}");
    assert!(!out.contains(&format!(":{OTHER_PORT}")), "{out}");
}

#[test]
fn port_filter_forgets_connections_whose_end_rides_on_an_io_record() {
    // The leak this guards against: the filter forgot a connection only on a close or
    // tracking-end record, but the kernel ends tracking inside the reply's I/O record.
    let opts = WatchOptions { port: Some(KEPT_PORT), ..Default::default() };
    let mut ev = Vec::new();
    for i in 0..1000u64 {
        // A fresh fd each time, so a reused fd cannot hide the leak.
        ev.extend(on_port(ok_handshake(GEN + i * 10 * MS, 100 + i as i32, 1), OTHER_PORT));
    }
    let (summary, _, remembered) = run(&opts, &ev);
    assert_eq!(summary.filtered_out, 1000);
    assert_eq!(summary.handshakes(), 0);
    assert_eq!(remembered, 0, "the --port filter still holds {remembered} ended connections");
}

#[test]
fn port_filter_holds_one_entry_per_fd_when_no_end_is_seen() {
    let opts = WatchOptions { port: Some(KEPT_PORT), ..Default::default() };
    let mut ev = Vec::new();
    for i in 0..500u64 {
        // Accepts only (their ends lost): the same 5 fds over and over.
        let mut a = ok_handshake(GEN + i * MS, 200 + (i % 5) as i32, 1);
        a.truncate(1);
        ev.extend(on_port(a, OTHER_PORT));
    }
    let (_, _, remembered) = run(&opts, &ev);
    assert_eq!(remembered, 5);
}

#[test]
fn slow_shows_the_timeline_of_successes_slower_than_the_threshold() {
    let mut ev = on_port(ok_handshake(GEN, 40, 3), KEPT_PORT);
    ev.extend(on_port(ok_handshake(GEN + 10 * MS, 41, 300), KEPT_PORT));
    let (_, plain, _) = run(&WatchOptions::default(), &ev);
    assert!(!plain.contains("why:"), "{plain}");
    assert_eq!(plain.lines().count(), 2, "{plain}");

    let (_, slow, _) = run(&WatchOptions { slow_ms: Some(100.0), ..Default::default() }, &ev);
    // The fast one stays a line; the slow one gets its timeline, with the reason.
    assert_eq!(slow.matches("why: the server sent OK to the login").count(), 1, "{slow}");
    assert!(slow.lines().any(|l| l.contains(" ok ") && l.contains("fd 40")), "{slow}");
    assert!(slow.lines().any(|l| l.contains(" OK ") && l.contains("fd 41")), "{slow}");
}

#[test]
fn rollup_folds_successes_into_a_line_and_counts_every_handshake_in_its_table() {
    let opts = WatchOptions { rollup_secs: Some(10), top: 10, ..Default::default() };
    let out = Shared::default();
    let mut p = Pipeline::new(opts.pipeline()).with_sink(Printer::new(opts.print(), Clock::with_offset(0), out.clone()));
    let mut ev = on_port(ok_handshake(GEN, 40, 3), KEPT_PORT);
    ev.extend(on_port(ok_handshake(GEN + 10 * MS, 41, 5), KEPT_PORT));
    ev.extend(on_port(failed_handshake(GEN + 20 * MS), KEPT_PORT));
    for (e, a) in &ev {
        p.push(e, *a).unwrap();
    }
    let before = out.text();
    assert!(!before.contains("fd 40") && !before.contains("fd 41"), "successes printed despite --rollup:\n{before}");
    // The failure here is a port check: a line, no timeline.
    assert!(before.lines().any(|l| l.contains(" client_closed ") && l.contains("port check")), "{before}");
    assert!(!before.contains("CLIENT_CLOSED"), "{before}");
    p.rollup().unwrap();
    let rolled = out.text();
    let table = &rolled[before.len()..];
    assert!(table.contains(": 3 handshakes (ok 2, client_closed 1)\n  ok: p50 "), "{table}");
    // The failure counts in the table too, in its own row beside the successes'.
    let rows: Vec<&str> = table.lines().skip(3).collect();
    assert_eq!(rows.len(), 2, "{table}");
    // Probes (here a port check) come last, named by their kind.
    assert!(rows[0].trim_start().starts_with("2  ok ") && rows[0].ends_with("lab@127.0.0.1"), "{table}");
    assert!(rows[1].trim_start().starts_with("1  port_check ") && rows[1].ends_with("?@127.0.0.1"), "{table}");
    // Nothing pending: a second roll-up writes nothing; one more success is rolled up at the end.
    p.rollup().unwrap();
    assert_eq!(out.text(), rolled);
    for (e, a) in on_port(ok_handshake(GEN + 30 * MS, 42, 4), KEPT_PORT) {
        p.push(&e, a).unwrap();
    }
    p.finish(GEN + 40 * MS, Counters::default()).unwrap();
    assert!(out.text()[rolled.len()..].contains(": 1 handshakes (ok 1)"), "{}", out.text());
}

#[test]
fn json_writes_one_object_per_handshake_whatever_the_verdict() {
    let opts = WatchOptions { json: true, ..Default::default() };
    let mut ev = on_port(ok_handshake(GEN, 40, 3), KEPT_PORT);
    ev.extend(on_port(failed_handshake(GEN + 20 * MS), KEPT_PORT));
    let (_, out, _) = run(&opts, &ev);
    let verdicts: Vec<String> = out
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["verdict"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(verdicts, ["ok", "client_closed"]);
    for line in out.lines() {
        assert!(line.starts_with("{\"verdict\":"), "verdict is not the first key: {line}");
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["schema"], crate::output::json::SCHEMA);
        assert!(v["events"].as_array().is_some_and(|e| !e.is_empty()), "{v}");
    }
}

#[test]
fn json_timeline_keeps_the_events_of_the_verdicts_named_only() {
    let timeline = Some([Verdict::ClientClosed].into_iter().collect());
    let opts = WatchOptions { json: true, timeline, ..Default::default() };
    let mut ev = on_port(ok_handshake(GEN, 40, 3), KEPT_PORT);
    ev.extend(on_port(failed_handshake(GEN + 20 * MS), KEPT_PORT));
    let (_, out, _) = run(&opts, &ev);
    let records: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records.len(), 2, "{out}");
    assert!(records[0].get("events").is_none(), "ok kept its timeline: {}", records[0]);
    assert!(records[1]["events"].as_array().is_some_and(|e| !e.is_empty()), "{}", records[1]);
    let none = WatchOptions { json: true, timeline: Some(Default::default()), ..Default::default() };
    let (_, out, _) = run(&none, &ev);
    assert!(!out.contains("\"events\""), "{out}");
}

#[test]
fn json_rollup_writes_failures_and_a_rollup_record_instead_of_each_success() {
    let opts = WatchOptions { json: true, rollup_secs: Some(10), top: 5, ..Default::default() };
    let mut ev = on_port(ok_handshake(GEN, 40, 3), KEPT_PORT);
    ev.extend(on_port(ok_handshake(GEN + 10 * MS, 41, 5), KEPT_PORT));
    ev.extend(on_port(failed_handshake(GEN + 20 * MS), KEPT_PORT));
    let (_, out, _) = run(&opts, &ev);
    let records: Vec<serde_json::Value> = out.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records.len(), 2, "{out}");
    assert_eq!(records[0]["verdict"], "client_closed");
    let r = &records[1];
    assert_eq!((r["type"].as_str(), r["handshakes"].as_u64()), (Some("rollup"), Some(3)), "{r}");
    assert_eq!(r["verdicts"], serde_json::json!({"ok": 2, "client_closed": 1}));
    assert_eq!(r["ok_ms"]["n"], 2);
    assert_eq!(r["groups"][0], serde_json::json!({"count": 2, "verdict": "ok", "user": "lab", "client": "127.0.0.1", "error_code": null, "blame": "none", "probe": null}));
    assert_eq!((r["groups"][1]["verdict"].as_str(), r["groups"][1]["probe"].as_str()), (Some("client_closed"), Some("port_check")), "probes last: {r}");
    assert_eq!(r["other_groups"], 0);
}

#[test]
fn selection_keeps_matching_handshakes_and_the_summary_counts_the_rest() {
    let select = Selection { failed: true, ..Default::default() };
    let opts = WatchOptions { json: true, select, ..Default::default() };
    let mut ev = on_port(ok_handshake(GEN, 40, 3), KEPT_PORT);
    ev.extend(on_port(failed_handshake(GEN + 20 * MS), KEPT_PORT));
    ev.extend(on_port(ok_handshake(GEN + 30 * MS, 41, 3), KEPT_PORT));
    let (summary, out, _) = run(&opts, &ev);
    assert_eq!(out.lines().count(), 1, "{out}");
    assert!(out.contains("client_closed"), "{out}");
    assert_eq!((summary.handshakes(), summary.not_selected), (1, 2));
    assert_eq!(summary.groups.handshakes(), 1);
    let mut text = Vec::new();
    crate::output::summary::print_summary(&summary, 10, &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("2 more left out by --failed/--verdict/--user/--client"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&crate::output::records::summary_json(&summary, 10)).unwrap();
    assert_eq!((json["type"].as_str(), json["not_selected"].as_u64(), json["handshakes"].as_u64()), (Some("summary"), Some(2), Some(1)));
    assert_eq!(json["groups"][0]["verdict"], "client_closed");
}

#[test]
fn a_batch_with_lost_events_leaves_only_what_an_ok_or_err_proves() {
    let opts = WatchOptions::default();
    let out = Shared::default();
    let mut p = Pipeline::new(opts.pipeline()).in_batches().with_sink(Printer::new(opts.print(), Clock::with_offset(0), out.clone()));
    // In one batch: a login that got its OK, a client that closed (judged by absence),
    // and a handshake still open at the batch's end.
    let mut ev = on_port(ok_handshake(GEN, 40, 3), KEPT_PORT);
    ev.extend(on_port(failed_handshake(GEN + 10 * MS), KEPT_PORT));
    let mut still_open = on_port(failed_handshake(GEN + 20 * MS), KEPT_PORT);
    let its_end = still_open.split_off(2);
    ev.extend(still_open);
    for (e, a) in &ev {
        p.push(e, *a).unwrap();
    }
    assert_eq!(out.text(), "", "held until the batch ends");
    p.batch_end(true).unwrap();
    let text = out.text();
    assert!(text.lines().any(|l| l.contains(" ok ") && l.contains("fd 40")), "{text}");
    assert!(!text.contains("CLIENT_CLOSED"), "judged from a batch that lost events:\n{text}");
    assert!(text.contains("INCOMPLETE") && text.contains("kernel events were lost while this handshake was open"), "{text}");
    // The one open during the loss ends in a later, whole batch (the client's FIN, a
    // close): still not judged by absence, its earlier records may be the lost ones.
    for (e, a) in &its_end {
        p.push(e, *a).unwrap();
    }
    p.batch_end(false).unwrap();
    let summary = p.finish(GEN + 40 * MS, Counters::default()).unwrap();
    assert_eq!(summary.count(Verdict::ClientClosed), 0, "{}", out.text());
    assert_eq!(summary.count(Verdict::Incomplete), 2, "{}", out.text());
    assert_eq!(summary.count(Verdict::Ok), 1);
}

#[test]
fn a_batch_without_losses_changes_nothing() {
    let opts = WatchOptions::default();
    let (_, plain, _) = run(&opts, &on_port(failed_handshake(GEN), KEPT_PORT));
    let out = Shared::default();
    let mut p = Pipeline::new(opts.pipeline()).in_batches().with_sink(Printer::new(opts.print(), Clock::with_offset(0), out.clone()));
    for (e, a) in on_port(failed_handshake(GEN), KEPT_PORT) {
        p.push(&e, a).unwrap();
    }
    p.batch_end(false).unwrap();
    p.finish(GEN + MS, Counters::default()).unwrap();
    assert_eq!(without_header(out.text(), &opts), plain);
}

#[test]
fn port_checks_are_counted_apart_in_the_summary_and_marked_in_text() {
    let opts = WatchOptions::default();
    let mut ev = on_port(failed_handshake(GEN), KEPT_PORT);
    ev.extend(on_port(failed_handshake(GEN + 10 * MS), KEPT_PORT));
    ev.extend(on_port(ok_handshake(GEN + 20 * MS, 41, 3), KEPT_PORT));
    let (summary, out, _) = run(&opts, &ev);
    assert_eq!(summary.count(Verdict::ClientClosed), 2);
    assert_eq!(summary.probes(crate::verdict::Probe::PortCheck, Verdict::ClientClosed), 2);
    // One line (no timeline), then the fold's count on one line.
    assert!(out.contains("client_closed  127.0.0.1:47460       -               0.3  port check (FIN) [blame: client]  → 127.0.0.1:"), "{out}");
    assert!(out.contains("client_closed  127.0.0.1             -               0.3  ×2 port check (FIN) [blame: client]  within 10 s"), "{out}");
    assert!(!out.contains("CLIENT_CLOSED"), "no timeline for a probe: {out}");
    let (_, hidden, _) = run(&WatchOptions { probes: crate::output::brief::ProbeView::Hide, ..Default::default() }, &ev);
    assert_eq!(hidden.lines().filter(|l| l.contains("client_closed")).count(), 0, "{hidden}");
    let (_, shown, _) = run(&WatchOptions { probes: crate::output::brief::ProbeView::Show, ..Default::default() }, &ev);
    assert_eq!(shown.lines().filter(|l| l.contains("port check (FIN)")).count(), 2, "one line each: {shown}");
    let mut text = Vec::new();
    crate::output::summary::print_summary(&summary, 10, &mut text).unwrap();
    let text = String::from_utf8(text).unwrap();
    assert!(text.contains("client_closed 2 (2 port checks)"), "{text}");
}

/// A wrong password from `client` on `fd` at `t0`, answered with ERR 1045: `auth_failed`.
fn refused_handshake(t0: u64, fd: i32, client: [u8; 4]) -> Vec<Event> {
    let g = greeting();
    let l = packet(1, &login_body(None));
    let err = err_packet(2, 1045, "28000", "Access denied for user 'lab'@'10.1.2.3' (using password: YES)");
    let mut ev = vec![
        accept_at(t0, t0),
        io_gen(t0 + 100_000, t0, SyscallKind::Sendto, g.len() as i64, g.len() as u64, &g),
        io_gen(t0 + 200_000, t0, SyscallKind::Recvfrom, l.len() as i64, l.len() as u64, &l),
        io_gen(t0 + 900_000, t0, SyscallKind::Sendto, err.len() as i64, err.len() as u64, &err),
    ];
    if let Event::Io(io) = &mut ev[3] {
        io.tracking_end = Some(handshake_trace_common::end::REPLY);
    }
    for e in &mut ev {
        match e {
            Event::Accept(a) => {
                a.result = SyscallResult::Ok(fd as i64);
                a.peer = Some((client, 50_000).into());
            }
            Event::Io(io) => io.sys.fd = fd,
            _ => {}
        }
    }
    ev
}

fn brief(timeline: &[Verdict]) -> WatchOptions {
    WatchOptions { brief: true, timeline: Some(timeline.iter().copied().collect()), ..Default::default() }
}

/// `n` refusals of `client`, one every `every_ms`, from GEN on (fds 100, 101, ...).
fn refusals(n: u64, every_ms: u64, client: [u8; 4]) -> Vec<(Event, AcceptAddrs)> {
    (0..n).flat_map(|i| on_port(refused_handshake(GEN + i * every_ms * MS, 100 + i as i32, client), KEPT_PORT)).collect()
}

const APP: [u8; 4] = [10, 1, 2, 3];
const OTHER: [u8; 4] = [10, 9, 9, 9];

#[test]
fn brief_folds_identical_failures_into_one_count() {
    let mut ev = refusals(64, 10, APP);
    ev.extend(on_port(refused_handshake(GEN + 700 * MS, 300, OTHER), KEPT_PORT));
    ev.extend(on_port(ok_handshake(GEN + 800 * MS, 301, 3), KEPT_PORT));
    let (summary, out, _) = run(&brief(&[]), &ev);
    assert_eq!(summary.handshakes(), 66, "{out}");
    let lines: Vec<&str> = out.lines().collect();
    // The first refusal of each client, the success, and one count for the 64.
    assert_eq!(lines.len(), 4, "{out}");
    assert!(lines[0].contains("auth_failed") && lines[0].contains(" 10.1.2.3:50000        lab ") && lines[0].contains("ERR 1045 ER_ACCESS_DENIED_ERROR"), "{out}");
    assert!(lines[1].contains(" 10.9.9.9:50000        lab "), "{out}");
    assert!(lines[2].contains(" ok ") && !lines[2].contains("ERR"), "{out}");
    // The count on one line in the columns, leading its detail; no line of its own saying so.
    assert!(lines[3].contains(" auth_failed    10.1.2.3              lab ") && lines[3].contains("×64 ERR 1045 ER_ACCESS_DENIED_ERROR [blame: client]  within 10 s"), "{out}");
    assert!(!out.contains("folded"), "{out}");
    assert!(!lines.iter().any(|l| l.contains("10.9.9.9") && l.contains('×')), "a single failure is not a fold: {out}");
    assert!(!out.contains("why:"), "no timelines unless --timeline names the verdict: {out}");
}

#[test]
fn brief_closes_a_fold_when_its_window_has_passed() {
    let mut ev = refusals(3, 1000, APP);
    // 11 s after the first: a new window, so a line of its own, after the count of the three.
    ev.extend(on_port(refused_handshake(GEN + 11_000 * MS, 200, APP), KEPT_PORT));
    let (_, out, _) = run(&brief(&[]), &ev);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 3, "{out}");
    assert!(lines[0].contains("auth_failed") && lines[0].contains(" 10.1.2.3:50000 "), "{out}");
    assert!(lines[1].contains(" 10.1.2.3 ") && lines[1].contains("×3 ERR 1045"), "{out}");
    assert!(lines[2].contains(" 10.1.2.3:50000 "), "{out}");
}

#[test]
fn brief_prints_timelines_only_for_the_verdicts_named() {
    let mut ev = on_port(refused_handshake(GEN, 100, APP), KEPT_PORT);
    ev.extend(on_port(failed_handshake(GEN + 20 * MS), KEPT_PORT));
    let (_, out, _) = run(&brief(&[Verdict::AuthFailed]), &ev);
    assert_eq!(out.matches("why:").count(), 1, "{out}");
    assert!(out.contains("why: the server refused the login: ERR 1045"), "{out}");
    assert!(out.lines().any(|l| l.contains("client_closed") && l.contains("port check (FIN) [blame: client]")), "{out}");
    let (_, out, _) = run(&brief(&[Verdict::ClientClosed]), &ev);
    assert_eq!(out.matches("why:").count(), 1, "{out}");
    assert!(!out.contains("why: the server refused"), "{out}");
    let (_, out, _) = run(&brief(&[Verdict::ServerTimeout]), &ev);
    assert_eq!(out.lines().count(), 2, "{out}");
}

#[test]
fn brief_verdict_names_parse_and_unknown_ones_say_which_exist() {
    use crate::output::brief::parse_verdict;
    assert_eq!(parse_verdict("server_timeout"), Ok(Verdict::ServerTimeout));
    let err = parse_verdict("timeout").unwrap_err();
    assert!(err.contains("`timeout` is not a verdict") && err.contains("auth_failed"), "{err}");
}

#[test]
fn a_loss_counted_after_a_batch_also_covers_the_accepts_the_next_batch_brings() {
    // The race seen live: a connection accepted after the drain's last record, its login
    // and OK lost before the loss was counted, its FIN and close read in the next batch.
    let opts = WatchOptions::default();
    let out = Shared::default();
    let mut p = Pipeline::new(opts.pipeline()).in_batches().with_sink(Printer::new(opts.print(), Clock::with_offset(0), out.clone()));
    p.batch_end(true).unwrap();
    for (e, a) in on_port(failed_handshake(GEN), KEPT_PORT) {
        p.push(&e, a).unwrap();
    }
    p.batch_end(false).unwrap();
    // The batch after that is whole again.
    for (e, a) in on_port(failed_handshake(GEN + 10 * MS), KEPT_PORT) {
        p.push(&e, a).unwrap();
    }
    p.batch_end(false).unwrap();
    let summary = p.finish(GEN + 20 * MS, Counters::default()).unwrap();
    assert_eq!(summary.count(Verdict::Incomplete), 1, "{}", out.text());
    assert_eq!(summary.count(Verdict::ClientClosed), 1, "{}", out.text());
}

#[test]
fn a_loss_counted_after_a_cut_slice_covers_accepts_until_a_batch_empties_the_ring() {
    // The live loop reads the ring in bounded slices: after a loss counted at a slice cut
    // at its bound, records written before the count are still in the ring, possibly for
    // several slices; their accepts may own the lost records.
    let opts = WatchOptions::default();
    let out = Shared::default();
    let mut p = Pipeline::new(opts.pipeline()).in_batches().with_sink(Printer::new(opts.print(), Clock::with_offset(0), out.clone()));
    p.slice_end(true).unwrap();
    for n in 0..2 {
        for (e, a) in on_port(failed_handshake(GEN + n * 10 * MS), KEPT_PORT) {
            p.push(&e, a).unwrap();
        }
        p.slice_end(false).unwrap();
    }
    // The ring is emptied with no new loss: what the next batch accepts stands.
    for (e, a) in on_port(failed_handshake(GEN + 20 * MS), KEPT_PORT) {
        p.push(&e, a).unwrap();
    }
    p.batch_end(false).unwrap();
    for (e, a) in on_port(failed_handshake(GEN + 30 * MS), KEPT_PORT) {
        p.push(&e, a).unwrap();
    }
    p.batch_end(false).unwrap();
    let summary = p.finish(GEN + 40 * MS, Counters::default()).unwrap();
    assert_eq!(summary.count(Verdict::Incomplete), 3, "{}", out.text());
    assert_eq!(summary.count(Verdict::ClientClosed), 1, "{}", out.text());
}

/// The poll_timeout events from `client` (the synthetic ones come from 127.0.0.1).
fn poll_timeout_from(client: &str) -> Vec<Event> {
    poll_timeout_events()
        .into_iter()
        .map(|e| match e {
            Event::Accept(mut a) => {
                a.peer = Some(client.parse().unwrap());
                Event::Accept(a)
            }
            other => other,
        })
        .collect()
}

#[test]
fn a_servers_configuration_goes_with_its_handshakes_into_text_and_json() {
    use crate::config::{ServerConfig, Setting, Source};
    let cfg = ServerConfig {
        connect_timeout_s: Setting { value: 2, source: Source::File { path: "/etc/mysql/my.cnf".into(), line: 4 }, adjusted: false },
        max_connect_errors: Setting { value: 1, source: Source::CommandLine, adjusted: false },
        ..ServerConfig::default()
    };
    for json in [false, true] {
        let out = Shared::default();
        let opts = WatchOptions { json, ..WatchOptions::default() };
        let mut p = Pipeline::new(opts.pipeline()).with_sink(Printer::new(opts.print(), Clock::with_offset(0), out.clone()));
        p.server_config(PID, std::sync::Arc::new(cfg.clone()));
        for e in poll_timeout_from("127.0.0.2:40000") {
            p.push(&e, addrs(KEPT_PORT)).unwrap();
        }
        let warnings = p.host_warnings();
        p.finish(0, Default::default()).unwrap();
        let text = out.text();
        if json {
            let v: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
            assert_eq!(v["wait"]["connect_timeout"], serde_json::json!({"file": "/etc/mysql/my.cnf", "line": 4, "source": "file", "value": 2}), "{v:#}");
            assert_eq!(v["host_errors"]["counted"], "error", "{v:#}");
            assert_eq!(v["host_errors"]["max_connect_errors"]["source"], "command_line", "{v:#}");
        } else {
            // The poll timeout the syscalls showed (2000 ms) agrees with the file's value.
            assert!(text.contains("the server's connect_timeout is 2 s (/etc/mysql/my.cnf:4): the timeout it waited with"), "{text}");
            assert!(text.contains("host 127.0.0.2: 1 of max_connect_errors 1 (the server's command line)"), "{text}");
        }
        assert_eq!(warnings.len(), 1, "one warning: at the limit");
        assert!(warnings[0].at_limit);
    }
    // Without the configuration (a server not named mysqld/mariadbd): nothing of it.
    let out = Shared::default();
    let opts = WatchOptions::default();
    let mut p = Pipeline::new(opts.pipeline()).with_sink(Printer::new(opts.print(), Clock::with_offset(0), out.clone()));
    for e in poll_timeout_from("127.0.0.2:40000") {
        p.push(&e, addrs(KEPT_PORT)).unwrap();
    }
    assert!(p.host_warnings().is_empty());
    p.finish(0, Default::default()).unwrap();
    assert!(!out.text().contains("connect_timeout") && !out.text().contains("max_connect_errors"), "{}", out.text());
}

/// At 80 columns DETAIL has 18: the reason gives way, the blame never does.
#[test]
fn brief_lines_at_80_columns_keep_the_blame() {
    use crate::{output::brief::brief_line_on, testing::*};
    let term = crate::output::columns::Terminal { width: Some(80), ..Default::default() };
    let clock = Clock::with_offset(0);
    let mut fin = prelude(GEN);
    fin.push(io(GEN + 300_000, crate::events::SyscallKind::Recvfrom, 0, 4, &[]));
    fin.push(sys(GEN + 310_000, crate::events::SyscallKind::Close, 0, 1000, [0; 4]));
    for (events, lead) in [(wrong_password_events(), "ERR 1045 [client]"), (poll_timeout_events(), "timeout [client]"), (fin, "port chk [client]")] {
        let h = handshakes_of(&events).remove(0);
        let line = brief_line_on(&h, &clock, &term);
        assert!(line.chars().count() < 80, "{line}");
        // DETAIL starts after 61 columns at 80 (all ASCII before it).
        assert!(line[61..].starts_with(lead), "{line}");
    }
}
