//! The exporters on synthetic handshakes: metric counts and labels, the exposition in
//! both formats, the top-K's bound and window, the log's rate limit and rotation.
use super::{
    abnormal_log::{AbnormalLog, RotatingFile, TokenBucket},
    http::exposition,
    metrics::{HealthExport, Metrics, MetricsSink, MAX_SERVERS},
    top_clients::TopClients,
};
use crate::{
    commands::watch::Health,
    correlate::Handshake,
    events::Counters,
    pipeline::Sink,
    testing::*,
};

const S: u64 = 1_000_000_000;

fn one(events: &[crate::events::Event]) -> Handshake {
    let mut hs = handshakes_of(events);
    assert_eq!(hs.len(), 1, "{hs:#?}");
    hs.remove(0)
}

/// The same handshake `by_ns` later.
fn later(mut h: Handshake, by_ns: u64) -> Handshake {
    h.accept_ns += by_ns;
    h.end_ns = h.end_ns.map(|t| t + by_ns);
    for t in [&mut h.greeting_ns, &mut h.login_ns, &mut h.reply_ns] {
        *t = t.map(|t| t + by_ns);
    }
    h.steps.iter_mut().for_each(|s| s.ts_ns += by_ns);
    h
}

fn from(mut h: Handshake, client: &str) -> Handshake {
    h.client = Some(client.parse().unwrap());
    h
}

/// The value of the sample line that starts with `series` (name and labels).
fn sample(text: &str, series: &str) -> Option<f64> {
    text.lines().find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

#[test]
fn metrics_count_handshakes_by_verdict_blame_mechanism_and_error_code() {
    let (m, registry) = Metrics::new();
    let mut sink = MetricsSink::new(m);
    for events in [ok_login_events(), ok_login_events(), wrong_password_events(), poll_timeout_events()] {
        sink.handshake(&one(&events)).unwrap();
    }
    let text = exposition(&registry, true).unwrap();
    let hs = |verdict: &str, blame: &str, mechanism: &str| {
        sample(&text, &format!("handshake_trace_handshakes_total{{server=\"127.0.0.1:3399\",verdict=\"{verdict}\",blame=\"{blame}\",mechanism=\"{mechanism}\",probe=\"none\"}}"))
    };
    assert_eq!(hs("ok", "none", "none"), Some(2.0), "{text}");
    assert_eq!(hs("auth_failed", "client", "none"), Some(1.0), "{text}");
    assert_eq!(hs("server_timeout", "client", "poll"), Some(1.0), "{text}");
    // Every other label set of the server is there at 0.
    let sets = super::metrics::handshake_label_sets().len();
    assert_eq!(text.matches("handshake_trace_handshakes_total{").count(), sets, "{text}");
    assert_eq!(hs("server_timeout", "server", "alarm_eintr"), Some(0.0), "{text}");
    assert_eq!(sample(&text, "handshake_trace_handshake_errors_total{server=\"127.0.0.1:3399\",code=\"1045\"}"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "handshake_trace_handshake_phase_seconds_count{server=\"127.0.0.1:3399\",phase=\"total\"}"), Some(4.0), "{text}");
    // The timeout's greeting went out, no login came: three greetings and logins' phases.
    assert_eq!(sample(&text, "handshake_trace_handshake_phase_seconds_count{server=\"127.0.0.1:3399\",phase=\"to_reply\"}"), Some(3.0), "{text}");
    assert_eq!(sample(&text, "handshake_trace_handshake_retransmits_total{server=\"127.0.0.1:3399\"}"), Some(0.0), "{text}");
    // Never the client's address.
    assert!(!text.contains("47460"), "{text}");
    assert!(text.ends_with("# EOF\n"));
}

/// Alerts on `increase()` see a first event only if the series was there at 0 before it.
#[test]
fn announced_servers_have_every_fixed_series_at_zero_before_their_first_handshake() {
    let (m, registry) = Metrics::new();
    m.announce_servers(&["127.0.0.1:3399".parse().unwrap()], true);
    let text = exposition(&registry, true).unwrap();
    for server in ["127.0.0.1:3399", "unix"] {
        for code in crate::output::names::ERROR_CODE_LABELS {
            let series = format!("handshake_trace_handshake_errors_total{{server=\"{server}\",code=\"{code}\"}}");
            assert_eq!(sample(&text, &series), Some(0.0), "{series}\n{text}");
        }
        for verdict in ["ok", "auth_failed", "server_error", "client_closed", "client_reset", "server_closed", "incomplete"] {
            let blame = if verdict == "ok" { "none" } else { "server" };
            let series = format!("handshake_trace_handshakes_total{{server=\"{server}\",verdict=\"{verdict}\",blame=\"{blame}\",mechanism=\"none\",probe=\"none\"}}");
            assert_eq!(sample(&text, &series), Some(0.0), "{series}\n{text}");
        }
        let timeouts = format!("handshake_trace_handshakes_total{{server=\"{server}\",verdict=\"server_timeout\",blame=\"client\",mechanism=\"not_seen\",probe=\"none\"}}");
        assert_eq!(sample(&text, &timeouts), Some(0.0), "{text}");
        let checks = format!("handshake_trace_handshakes_total{{server=\"{server}\",verdict=\"client_closed\",blame=\"client\",mechanism=\"none\",probe=\"port_check\"}}");
        assert_eq!(sample(&text, &checks), Some(0.0), "{text}");
    }
    // The first handshake counts on the zero series, and a second announcement adds nothing.
    let mut sink = MetricsSink::new(m.clone());
    sink.handshake(&one(&wrong_password_events())).unwrap();
    m.announce_servers(&["127.0.0.1:3399".parse().unwrap()], false);
    let text = exposition(&registry, true).unwrap();
    assert_eq!(sample(&text, "handshake_trace_handshake_errors_total{server=\"127.0.0.1:3399\",code=\"1045\"}"), Some(1.0), "{text}");
}

#[test]
fn announced_servers_are_bounded() {
    let (m, registry) = Metrics::new();
    let many: Vec<std::net::SocketAddr> = (0..MAX_SERVERS as u16 + 5).map(|p| ([127, 0, 0, 1], 5000 + p).into()).collect();
    m.announce_servers(&many, false);
    let text = exposition(&registry, true).unwrap();
    let servers: std::collections::BTreeSet<&str> =
        text.lines().filter(|l| l.starts_with("handshake_trace_handshake_errors_total{")).filter_map(|l| l.split('"').nth(1)).collect();
    assert_eq!(servers.len(), MAX_SERVERS, "{servers:?}");
}

#[test]
fn probes_carry_their_kind_as_a_label() {
    let (m, registry) = Metrics::new();
    let mut sink = MetricsSink::new(m);
    let mut fin = prelude(GEN);
    fin.push(io(GEN + 300_000, crate::events::SyscallKind::Recvfrom, 0, 4, &[]));
    fin.push(sys(GEN + 310_000, crate::events::SyscallKind::Close, 0, 1000, [0; 4]));
    sink.handshake(&one(&fin)).unwrap();
    let text = exposition(&registry, true).unwrap();
    let series = "handshake_trace_handshakes_total{server=\"127.0.0.1:3399\",verdict=\"client_closed\",blame=\"client\",mechanism=\"none\",probe=\"port_check\"}";
    assert_eq!(sample(&text, series), Some(1.0), "{text}");
    let real = "handshake_trace_handshakes_total{server=\"127.0.0.1:3399\",verdict=\"client_closed\",blame=\"client\",mechanism=\"none\",probe=\"none\"}";
    assert_eq!(sample(&text, real), Some(0.0), "{text}");
}

/// With `--probes hide` (the agent's default) /top, the log and the flight recorder never see a probe.
#[test]
fn without_probes_passes_everything_but_probes() {
    struct Count(std::rc::Rc<std::cell::Cell<u32>>);
    impl Sink for Count {
        fn handshake(&mut self, _: &Handshake) -> anyhow::Result<()> {
            self.0.set(self.0.get() + 1);
            Ok(())
        }
    }
    let seen = std::rc::Rc::default();
    let mut s = super::WithoutProbes(Box::new(Count(std::rc::Rc::clone(&seen))));
    let mut fin = prelude(GEN);
    fin.push(io(GEN + 300_000, crate::events::SyscallKind::Recvfrom, 0, 4, &[]));
    fin.push(sys(GEN + 310_000, crate::events::SyscallKind::Close, 0, 1000, [0; 4]));
    s.handshake(&one(&fin)).unwrap();
    assert_eq!(seen.get(), 0);
    s.handshake(&one(&wrong_password_events())).unwrap();
    s.handshake(&one(&poll_timeout_events())).unwrap();
    assert_eq!(seen.get(), 2);
}

#[test]
fn the_prometheus_text_format_names_counters_with_their_total_and_has_no_openmetrics_lines() {
    let (m, registry) = Metrics::new();
    MetricsSink::new(m).handshake(&one(&ok_login_events())).unwrap();
    let text = exposition(&registry, false).unwrap();
    assert!(text.contains("# TYPE handshake_trace_handshakes_total counter\n"), "{text}");
    assert!(text.contains("# HELP handshake_trace_handshakes_total Finished handshakes"), "{text}");
    assert!(text.contains("# TYPE process_cpu_seconds_total counter\n"), "{text}");
    assert!(text.contains("# TYPE handshake_trace_handshake_phase_seconds histogram\n"), "{text}");
    assert!(!text.contains("# EOF") && !text.contains("# UNIT"), "{text}");
    // Sample lines are the same in both.
    let om = exposition(&registry, true).unwrap();
    let samples = |t: &str| t.lines().filter(|l| !l.starts_with('#')).map(str::to_string).collect::<Vec<_>>();
    assert_eq!(samples(&text), samples(&om));
}

#[test]
fn server_label_values_are_bounded() {
    let (m, registry) = Metrics::new();
    let mut sink = MetricsSink::new(m);
    for port in 0..(MAX_SERVERS as u16 + 10) {
        let mut h = one(&ok_login_events());
        h.server = Some(([127, 0, 0, 1], 4000 + port).into());
        sink.handshake(&h).unwrap();
    }
    let text = exposition(&registry, true).unwrap();
    let servers: std::collections::BTreeSet<&str> =
        text.lines().filter(|l| l.starts_with("handshake_trace_handshakes_total{")).filter_map(|l| l.split('"').nth(1)).collect();
    assert_eq!(servers.len(), MAX_SERVERS + 1, "{text}");
    assert_eq!(sample(&text, "handshake_trace_handshakes_total{server=\"unknown\",verdict=\"ok\",blame=\"none\",mechanism=\"none\",probe=\"none\"}"), Some(10.0));
}

#[test]
fn health_counters_mirror_the_kernels_absolute_counts() {
    let (m, registry) = Metrics::new();
    let mut health = HealthExport::default();
    let mut h = Health { programs: 20, targets: 1, unseen_unix_listeners: 2, ..Default::default() };
    h.counters = Counters { emitted: 100, lost_ringbuf: 2, lost_mapfull: 0, ..Default::default() };
    h.tables.correlator = crate::pipeline::TableFill { entries: 3, capacity: 4096, evictions: 1 };
    health.update(&m, &h, None);
    h.counters.emitted = 250;
    h.tables.correlator.evictions = 5;
    health.update(&m, &h, Some(super::process::Usage { cpu_seconds: 1.5, rss_bytes: 10 << 20 }));
    let text = exposition(&registry, true).unwrap();
    assert_eq!(sample(&text, "handshake_trace_events_emitted_total"), Some(250.0), "{text}");
    assert_eq!(sample(&text, "handshake_trace_events_lost_total{reason=\"ringbuf_full\"}"), Some(2.0), "{text}");
    assert_eq!(sample(&text, "handshake_trace_events_lost_total{reason=\"map_full\"}"), Some(0.0), "{text}");
    assert_eq!(sample(&text, "handshake_trace_programs_attached"), Some(20.0), "{text}");
    assert_eq!(sample(&text, "handshake_trace_targets"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "handshake_trace_unseen_unix_listeners"), Some(2.0), "{text}");
    assert_eq!(sample(&text, "handshake_trace_table_entries{table=\"correlator\"}"), Some(3.0), "{text}");
    assert_eq!(sample(&text, "handshake_trace_table_capacity{table=\"correlator\"}"), Some(4096.0), "{text}");
    assert_eq!(sample(&text, "handshake_trace_table_evictions_total{table=\"correlator\"}"), Some(5.0), "{text}");
    assert_eq!(sample(&text, "process_cpu_seconds_total"), Some(1.5), "{text}");
    assert_eq!(sample(&text, "process_resident_memory_bytes"), Some((10u64 << 20) as f64), "{text}");
}

#[test]
fn top_clients_ranks_abnormal_handshakes_and_ignores_successes() {
    let mut top = TopClients::new(2, 60, true);
    let bad = || one(&wrong_password_events());
    for _ in 0..3 {
        top.record(&from(bad(), "10.0.0.1:5000"), 10 * S);
    }
    top.record(&from(bad(), "10.0.0.2:5000"), 10 * S);
    top.record(&from(one(&poll_timeout_events()), "10.0.0.3:5000"), 10 * S);
    top.record(&from(bad(), "10.0.0.3:5001"), 11 * S);
    top.record(&from(one(&ok_login_events()), "10.0.0.4:5000"), 10 * S);
    let r = top.report(12 * S);
    let got: Vec<(&str, Option<&str>, u64)> = r.top.iter().map(|c| (c.client.as_str(), c.user.as_deref(), c.abnormal)).collect();
    // 10.0.0.3's timeout had no login (no user): a client of its own.
    assert_eq!(got, [("10.0.0.1", Some("lab"), 3), ("10.0.0.2", Some("lab"), 1)]);
    assert_eq!(r.top[0].verdicts.get("auth_failed"), Some(&3));
    assert_eq!(r.clients_followed, 4);
}

#[test]
fn top_clients_forget_what_slid_out_of_the_window() {
    let mut top = TopClients::new(5, 60, true);
    let bad = || one(&wrong_password_events());
    top.record(&from(bad(), "10.0.0.1:5000"), 10 * S);
    top.record(&from(bad(), "10.0.0.2:5000"), 50 * S);
    assert_eq!(top.report(60 * S).top.len(), 2);
    // 10.0.0.1's slot left the window; 10.0.0.2's is still in it.
    let r = top.report(80 * S);
    assert_eq!(r.top.iter().map(|c| c.client.as_str()).collect::<Vec<_>>(), ["10.0.0.2"]);
    assert_eq!(r.clients_followed, 1);
    assert!(top.report(200 * S).top.is_empty());
    assert!(top.is_empty());
}

/// Issue 22 item 10: a window of u64::MAX seconds (the CLI takes at most a year now)
/// is "everything so far", not a window wrapped to a few seconds (or a panic).
#[test]
fn a_huge_top_window_keeps_everything_instead_of_wrapping() {
    let mut top = TopClients::new(5, u64::MAX, true);
    top.record(&from(one(&wrong_password_events()), "10.0.0.1:5000"), 10 * S);
    let r = top.report(1_000_000 * S);
    assert_eq!(r.top.len(), 1);
    assert_eq!(r.window_seconds, u64::MAX);
}

#[test]
fn top_clients_stay_bounded_and_count_evictions() {
    let mut top = TopClients::new(2, 300, true);
    let bad = || one(&wrong_password_events());
    // One loud client, then a flood of distinct ones.
    for _ in 0..5 {
        top.record(&from(bad(), "10.9.9.9:1"), S);
    }
    for i in 0..1000u32 {
        let ip = std::net::Ipv4Addr::from(0x0a00_0000 + i);
        top.record(&from(bad(), &format!("{ip}:1")), 2 * S);
        assert!(top.len() <= top.capacity());
    }
    assert_eq!(top.capacity(), 16);
    assert_eq!(top.evictions, 1000 + 1 - 16);
    // The loud client was never the one evicted.
    assert_eq!(top.report(3 * S).top[0].client, "10.9.9.9");
}

#[test]
fn token_bucket_allows_a_burst_then_the_rate() {
    let mut b = TokenBucket::new(2.0);
    assert!(b.take(0) && b.take(0));
    assert!(!b.take(0));
    assert!(!b.take(S / 4));
    assert!(b.take(S / 2));
    assert!(!b.take(S / 2));
    // Saved up for at most one second's worth.
    assert!(b.take(100 * S) && b.take(100 * S) && !b.take(100 * S));
}

#[test]
fn abnormal_log_writes_failures_only_rate_limited_with_a_note_of_the_dropped() {
    let (m, registry) = Metrics::new();
    let (mut log, out) = AbnormalLog::in_memory(2.0, m);
    log.handshake(&one(&ok_login_events())).unwrap();
    for _ in 0..10 {
        log.handshake(&one(&wrong_password_events())).unwrap();
    }
    log.handshake(&later(one(&wrong_password_events()), 10 * S)).unwrap();
    log.finish().unwrap();
    let text = String::from_utf8(out.borrow().clone()).unwrap();
    let lines: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(lines.len(), 4, "{text}");
    assert!(lines[..2].iter().all(|l| l["verdict"] == "auth_failed"), "{text}");
    assert_eq!(lines[2]["note"], "rate_limited");
    assert_eq!(lines[2]["dropped"], 8);
    assert_eq!(lines[3]["verdict"], "auth_failed");
    // The auth response never shows.
    assert!(!text.to_lowercase().contains("a5a5"), "{text}");
    let metrics = exposition(&registry, true).unwrap();
    assert_eq!(sample(&metrics, "handshake_trace_abnormal_log_records_total{outcome=\"written\"}"), Some(3.0), "{metrics}");
    assert_eq!(sample(&metrics, "handshake_trace_abnormal_log_records_total{outcome=\"dropped\"}"), Some(8.0), "{metrics}");
}

#[test]
fn log_file_rotates_by_size_and_keeps_only_so_many_files() {
    let dir = std::env::temp_dir().join(format!("handshake-trace-rotate-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("abnormal.jsonl");
    let mut f = RotatingFile::open(&path, 100, 2).unwrap();
    let record = [b'x'; 29].iter().copied().chain([b'\n']).collect::<Vec<u8>>();
    for _ in 0..20 {
        f.write_record(&record).unwrap();
    }
    let mut names: Vec<String> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, ["abnormal.jsonl", "abnormal.jsonl.1", "abnormal.jsonl.2"]);
    for n in &names {
        let len = std::fs::metadata(dir.join(n)).unwrap().len();
        assert!(len <= 100, "{n}: {len} bytes");
        assert_eq!(len % 30, 0, "{n}: {len} bytes: a record cut");
    }
    // SIGHUP's reopen after the file was moved away: a new file by the same name.
    std::fs::rename(&path, dir.join("moved")).unwrap();
    f.reopen().unwrap();
    f.write_record(&record).unwrap();
    assert_eq!(std::fs::metadata(&path).unwrap().len(), 30);
    std::fs::remove_dir_all(&dir).unwrap();
}

fn flight_recorder(dir: &std::path::Path, seconds: u64, max_files: usize) -> (super::flight::FlightRecorder, prometheus_client::registry::Registry) {
    let (m, registry) = Metrics::new();
    let opts = super::flight::FlightOptions { dir: dir.to_path_buf(), seconds, max_files, max_bytes: 1 << 20, ring_bytes: super::flight::DEFAULT_RING_BYTES, probes: false };
    (super::flight::FlightRecorder::new(opts, crate::support::clock::Clock::with_offset(0), 1 << 20, m).unwrap(), registry)
}

/// A record at `ts` (its bytes do not matter to the ring; the redactor passes them).
fn push_at(f: &mut super::flight::FlightRecorder, ts: u64) {
    let ev = sys(ts, crate::events::SyscallKind::Close, 0, 0, [0; 4]);
    f.record(&[0u8; 64], Some(&ev), crate::events::AcceptAddrs::default());
}

#[test]
fn flight_ring_keeps_only_the_last_seconds() {
    let dir = std::env::temp_dir().join(format!("handshake-trace-flight-ring-{}", std::process::id()));
    let (mut f, _) = flight_recorder(&dir, 1, 5);
    for i in 0..=10 {
        push_at(&mut f, i * S / 2);
    }
    // At 5 s, a 1 s window: 4.0, 4.5 and 5.0 s.
    assert_eq!(f.len(), 3);
    assert_eq!(f.evictions, 0, "age is not an eviction");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn at_a_high_rate_the_flight_rings_size_not_its_seconds_bounds_the_window_and_files_say_so() {
    let dir = std::env::temp_dir().join(format!("handshake-trace-flight-window-{}", std::process::id()));
    let (m, _) = Metrics::new();
    // 64 KiB: 1024 records of 64 bytes (a ten-second window asked for).
    let opts = super::flight::FlightOptions { dir: dir.clone(), seconds: 10, max_files: 5, max_bytes: 1 << 20, ring_bytes: 64 << 10, probes: false };
    let mut f = super::flight::FlightRecorder::new(opts, crate::support::clock::Clock::with_offset(0), 1 << 20, m).unwrap();
    assert_eq!(f.capacity(), 1024);
    // 1000 records a second for 3 s: the bytes bound keeps about the last second.
    for i in 0..3000 {
        push_at(&mut f, GEN + i * MS);
    }
    assert!(f.bytes() <= 64 << 10 && f.evictions > 0, "{} bytes, {} evictions", f.bytes(), f.evictions);
    let w = f.window().unwrap();
    assert_eq!(w.to_ns, GEN + 2999 * MS);
    assert!((0.9..1.1).contains(&w.seconds()), "{w:?}");
    f.handshake(&later(one(&poll_timeout_events()), 3 * S));
    let file = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
    let trace = crate::recording::format::read_trace(std::io::BufReader::new(std::fs::File::open(&file).unwrap())).unwrap();
    assert_eq!(trace.header.covers, Some(w), "the file says what it covers");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_flight_file_gives_back_each_read_at_full_size_with_its_zeros_counted_not_written() {
    use handshake_trace_common::{kind, sys, EventHeader, IoEvent, SysEvent, PAYLOAD_MAX};
    let dir = std::env::temp_dir().join(format!("handshake-trace-flight-zeros-{}", std::process::id()));
    let (mut f, _) = flight_recorder(&dir, 10, 5);
    let header = EventHeader { kind: kind::IO, pid: 7, tid: 7, _pad: 0, ts_ns: GEN };
    let sys = SysEvent { header, conn_gen: 1, ret: 4, duration_ns: 1, args: [0; 4], fd: 9, syscall: sys::RECVFROM };
    let mut io = IoEvent { sys, captured: 4, tracking_end: 0, payload: [0; PAYLOAD_MAX] };
    io.payload[..4].copy_from_slice(&[7, 0, 0, 1]);
    let raw = crate::events::as_bytes(&io);
    let ev = crate::events::decode(&raw).unwrap();
    f.record(&raw, Some(&ev), crate::events::AcceptAddrs::default());
    f.handshake(&later(one(&poll_timeout_events()), S));
    let file = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
    let text = std::fs::read_to_string(&file).unwrap();
    assert!(text.contains(&format!(r#","z":{}}}"#, PAYLOAD_MAX - 4)), "{text}");
    let trace = crate::recording::format::read_trace(text.as_bytes()).unwrap();
    let events: Vec<&Vec<u8>> = trace.items.iter().filter_map(|i| if let crate::recording::format::TraceItem::Event(b) = i { Some(b) } else { None }).collect();
    assert_eq!(events.len(), 1);
    // Byte for byte the record as redacted on arrival (a fresh redactor does the same).
    let mut redacted = raw.clone();
    crate::recording::redact::Redactor::new().redact(&mut redacted);
    assert_eq!(events[0], &redacted);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn flight_recordings_are_rate_limited_capped_and_replayable() {
    let dir = std::env::temp_dir().join(format!("handshake-trace-flight-files-{}", std::process::id()));
    let (mut f, registry) = flight_recorder(&dir, 10, 2);
    for i in 0..4 {
        push_at(&mut f, GEN + i * MS);
    }
    f.handshake(&one(&ok_login_events()));
    f.handshake(&one(&wrong_password_events()));
    // The same second: over the rate.
    f.handshake(&one(&wrong_password_events()));
    for n in 1..=3 {
        f.handshake(&later(one(&poll_timeout_events()), n * 10 * S));
    }
    let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    files.sort();
    assert_eq!(files.len(), 2, "{files:?}");
    let trace = crate::recording::format::read_trace(std::io::BufReader::new(std::fs::File::open(&files[0]).unwrap())).unwrap();
    assert_eq!(trace.items.iter().filter(|i| matches!(i, crate::recording::format::TraceItem::Event(_))).count(), 4);
    assert!(trace.header.redacted);
    let text = exposition(&registry, true).unwrap();
    assert_eq!(sample(&text, "handshake_trace_flight_recordings_total{outcome=\"written\"}"), Some(4.0), "{text}");
    assert_eq!(sample(&text, "handshake_trace_flight_recordings_total{outcome=\"dropped\"}"), Some(1.0), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn abnormal_log_summarises_the_top_clients_at_each_rollup() {
    let top = std::sync::Arc::new(std::sync::Mutex::new(TopClients::new(3, 60, false)));
    let (log, out) = AbnormalLog::in_memory(10.0, Metrics::new().0);
    let mut log = log.with_top(std::sync::Arc::clone(&top));
    log.rollup().unwrap();
    assert!(out.borrow().is_empty(), "nothing to summarise, nothing written");
    let now = crate::support::clock::monotonic_ns();
    top.lock().unwrap().record(&from(one(&wrong_password_events()), "10.1.2.3:999"), now);
    log.rollup().unwrap();
    let text = String::from_utf8(out.borrow().clone()).unwrap();
    let note: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(note["note"], "top_clients", "{text}");
    assert_eq!(note["top"][0]["client"], "10.1.2.3", "{text}");
    assert_eq!(note["top"][0]["abnormal"], 1, "{text}");
    assert_eq!(note["window_seconds"], 60, "{text}");
}

/// Issue 22 item 4: a client that fills every step with packets (64 empty ones in each
/// 256-byte capture) cannot make a log line of hundreds of KB: past the record bound the
/// timeline is left out, and the record says so.
#[test]
fn an_abnormal_log_record_stays_within_its_bound() {
    use crate::events::SyscallKind;
    let g = greeting();
    let login = packet(1, &login_body(None));
    let mut ev = vec![
        established_at(GEN),
        sock_io(GEN + 1_000, GEN, SyscallKind::PacketOut, g.len() as i64, 0, &g, None),
        sock_io(GEN + 2_000, GEN, SyscallKind::PacketIn, login.len() as i64, 0, &login, None),
    ];
    let empties: Vec<u8> = (0..64).flat_map(|_| [0u8, 0, 0, 2]).collect();
    for i in 0..400 {
        ev.push(sock_io(GEN + 3_000 + i, GEN, SyscallKind::PacketIn, empties.len() as i64, 0, &empties, None));
    }
    let err = err_packet(2, 1045, "28000", "Access denied");
    ev.push(sock_io(GEN + 10_000, GEN, SyscallKind::PacketOut, err.len() as i64, 0, &err, Some(handshake_trace_common::end::REPLY)));
    let h = one(&ev);
    let whole = crate::output::handshake_json(&h, &crate::support::clock::Clock::with_offset(0)).to_string();
    assert!(whole.len() > super::abnormal_log::RECORD_MAX_BYTES, "the test needs a record over the bound: {} bytes", whole.len());
    let (m, _) = Metrics::new();
    let (mut log, out) = AbnormalLog::in_memory(100.0, m);
    log.handshake(&h).unwrap();
    log.finish().unwrap();
    let text = String::from_utf8(out.borrow().clone()).unwrap();
    assert_eq!(text.lines().count(), 1);
    assert!(text.len() <= super::abnormal_log::RECORD_MAX_BYTES, "{} bytes", text.len());
    let r: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(r["verdict"], "auth_failed");
    assert_eq!(r["user"], "lab");
    assert_eq!(r["events_left_out_over_bytes"], super::abnormal_log::RECORD_MAX_BYTES);
    assert!(r.get("events").is_none() && r["truncated"]["steps_omitted"].as_u64().unwrap() > 0, "{r:#}");
}

fn probe(mut h: Handshake) -> Handshake {
    h.judgement.as_mut().expect("judged").probe = Some(crate::verdict::Probe::PortCheck);
    h
}

/// Issue 24 item 7: with `--probes show` a port check reaches the log as one short
/// record, without its timeline; other abnormal handshakes keep theirs.
#[test]
fn the_abnormal_log_writes_probes_without_their_timeline() {
    let (log, out) = AbnormalLog::in_memory(100.0, Metrics::new().0);
    let mut log = log;
    log.handshake(&probe(one(&poll_timeout_events()))).unwrap();
    log.handshake(&later(one(&poll_timeout_events()), S)).unwrap();
    log.finish().unwrap();
    let text = String::from_utf8(out.borrow().clone()).unwrap();
    let records: Vec<serde_json::Value> = text.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(records.len(), 2, "{text}");
    assert_eq!(records[0]["probe"], "port_check", "{text}");
    assert!(records[0].get("events").is_none() && records[0].get("events_left_out_over_bytes").is_none(), "{:#}", records[0]);
    assert!(records[0]["verdict"].is_string() && records[0]["blame"].is_object(), "{:#}", records[0]);
    assert!(records[1]["probe"].is_null(), "{text}");
    assert!(records[1]["events"].as_array().is_some_and(|e| !e.is_empty()), "{:#}", records[1]);
}

fn flight_files(dir: &std::path::Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    names
}

#[test]
fn the_flight_recorder_skips_port_checks_unless_asked() {
    let dir = std::env::temp_dir().join(format!("handshake-trace-flight-probes-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (mut f, registry) = flight_recorder(&dir, 10, 5);
    push_at(&mut f, GEN);
    f.handshake(&probe(one(&poll_timeout_events())));
    assert!(flight_files(&dir).is_empty(), "{:?}", flight_files(&dir));
    let text = exposition(&registry, true).unwrap();
    assert_eq!(sample(&text, "handshake_trace_flight_recordings_total{outcome=\"dropped\"}"), Some(0.0), "a skipped probe is not a drop: {text}");
    std::fs::remove_dir_all(&dir).unwrap();
    let (m, _) = Metrics::new();
    let opts = super::flight::FlightOptions { dir: dir.clone(), seconds: 10, max_files: 5, max_bytes: 1 << 20, ring_bytes: 64 << 10, probes: true };
    let mut f = super::flight::FlightRecorder::new(opts, crate::support::clock::Clock::with_offset(0), 1 << 20, m).unwrap();
    push_at(&mut f, GEN);
    f.handshake(&probe(one(&poll_timeout_events())));
    assert_eq!(flight_files(&dir).len(), 1, "--flight-probes brings them back");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_flight_recorder_counts_the_files_of_earlier_runs_and_removes_partial_and_empty_ones() {
    use std::os::unix::fs::PermissionsExt;
    let dir = std::env::temp_dir().join(format!("handshake-trace-flight-earlier-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    // Four whole files of an earlier run, oldest first; a partial and an empty one; someone else's file.
    for i in 0..4u64 {
        let p = dir.join(format!("abnormal-1-{}.htrace", 100 + i));
        std::fs::write(&p, b"{}\n").unwrap();
        let t = std::time::SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000 + i);
        std::fs::File::options().write(true).open(&p).unwrap().set_modified(t).unwrap();
    }
    std::fs::write(dir.join(".abnormal-1-7-200.htrace.partial"), b"{\"format\"").unwrap();
    std::fs::write(dir.join("abnormal-1-7-300.htrace"), b"").unwrap();
    std::fs::write(dir.join("notes.txt"), b"mine").unwrap();
    let (mut f, _) = flight_recorder(&dir, 10, 3);
    // At start: the oldest of the four removed for --flight-max-files 3, partial and empty gone.
    assert_eq!(flight_files(&dir), ["abnormal-1-101.htrace", "abnormal-1-102.htrace", "abnormal-1-103.htrace", "notes.txt"]);
    assert_eq!(f.files(), 3);
    push_at(&mut f, GEN);
    f.handshake(&later(one(&poll_timeout_events()), S));
    let names = flight_files(&dir);
    assert_eq!(names.len(), 4, "{names:?}");
    assert!(!names.contains(&"abnormal-1-101.htrace".to_string()), "the oldest went for the new one: {names:?}");
    assert!(names.contains(&"notes.txt".to_string()), "{names:?}");
    // Written 0600 in a 0700 folder.
    let new = names.iter().find(|n| !n.starts_with("abnormal-1-10") && *n != "notes.txt").unwrap();
    assert_eq!(std::fs::metadata(dir.join(new)).unwrap().permissions().mode() & 0o777, 0o600);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn flight_files_are_named_without_a_negative_fd() {
    assert_eq!(super::flight::file_name(42, 17, 123), "abnormal-42-17-123.htrace");
    // The socket tier knows no fd (-1).
    assert_eq!(super::flight::file_name(42, -1, 123), "abnormal-42-123.htrace");
}

/// Issue 24 item 7: a flight file names the traced servers (the handshake's first), so
/// its replay says whose trace it is; a crafted program name reaches the terminal escaped.
#[test]
fn a_flight_file_names_the_handshakes_server_first_and_analyze_shows_it_escaped() {
    use crate::recording::format::TargetInfo;
    let dir = std::env::temp_dir().join(format!("handshake-trace-flight-targets-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (mut f, _) = flight_recorder(&dir, 10, 5);
    let other = TargetInfo { pid: 1, comm: "mysqld".into(), exe: None };
    let ours = TargetInfo { pid: PID, comm: "maria\x1b[2Jdb".into(), exe: Some("/usr/sbin/mariadbd".into()) };
    f.set_targets(vec![other.clone(), ours.clone()]);
    push_at(&mut f, GEN);
    f.handshake(&one(&poll_timeout_events()));
    let file = std::fs::read_dir(&dir).unwrap().next().unwrap().unwrap().path();
    let trace = crate::recording::format::read_trace(std::io::BufReader::new(std::fs::File::open(&file).unwrap())).unwrap();
    assert_eq!(trace.header.targets, vec![ours, other], "the handshake's server first");
    let mut log = Vec::new();
    crate::commands::analyze::analyze(&trace, &Default::default(), &mut Vec::new(), &mut log).unwrap();
    let log = String::from_utf8(log).unwrap();
    let first = log.lines().next().unwrap();
    assert!(first.starts_with(&format!("Analyzing a trace of maria\\x1b[2Jdb (pid {PID}), mysqld (pid 1) recorded ")), "{log}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn the_logs_reopen_refuses_a_symbolic_link_says_so_counts_it_and_goes_on() {
    let dir = std::env::temp_dir().join(format!("handshake-trace-log-link-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("abnormal.jsonl");
    let victim = dir.join("passwd");
    std::fs::write(&victim, b"root:x:0:0::/root:/bin/sh\n").unwrap();
    let (m, registry) = Metrics::new();
    let reopen = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let target = super::abnormal_log::LogTarget::File { path: path.clone(), max_bytes: 1 << 20, keep: 2 };
    let mut log = AbnormalLog::new(&target, 100.0, crate::support::clock::Clock::with_offset(0), m, std::sync::Arc::clone(&reopen)).unwrap();
    log.handshake(&one(&wrong_password_events())).unwrap();
    std::fs::remove_file(&path).unwrap();
    std::os::unix::fs::symlink(&victim, &path).unwrap();
    reopen.store(true, std::sync::atomic::Ordering::Relaxed);
    log.handshake(&later(one(&wrong_password_events()), S)).unwrap();
    log.flush().unwrap();
    assert_eq!(std::fs::read(&victim).unwrap(), b"root:x:0:0::/root:/bin/sh\n", "the link's target is untouched");
    let text = exposition(&registry, true).unwrap();
    assert_eq!(sample(&text, "handshake_trace_file_open_refusals_total{file=\"abnormal_log\"}"), Some(1.0), "{text}");
    assert_eq!(sample(&text, "handshake_trace_abnormal_log_records_total{outcome=\"dropped\"}"), Some(1.0), "{text}");
    // The link replaced by a file again: the next reopen (SIGHUP) writes there.
    std::fs::remove_file(&path).unwrap();
    reopen.store(true, std::sync::atomic::Ordering::Relaxed);
    log.handshake(&later(one(&wrong_password_events()), 3 * S)).unwrap();
    log.flush().unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap().lines().count(), 1);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn top_clients_leave_user_names_out_unless_asked() {
    let h = from(one(&wrong_password_events()), "10.1.2.3:999");
    let mut hidden = TopClients::new(3, 60, false);
    hidden.record(&h, GEN);
    let r = hidden.report(GEN);
    assert_eq!(r.top[0].user, None);
    let json = serde_json::to_string(&r).unwrap();
    assert!(!json.contains("\"user\""), "{json}");
    let mut shown = TopClients::new(3, 60, true);
    shown.record(&h, GEN);
    assert!(shown.report(GEN).top[0].user.is_some());
}

#[test]
fn a_flight_file_larger_than_the_byte_cap_alone_is_removed_and_counted_dropped() {
    let dir = std::env::temp_dir().join(format!("handshake-trace-flight-toobig-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (m, registry) = Metrics::new();
    let opts = super::flight::FlightOptions { dir: dir.clone(), seconds: 10, max_files: 5, max_bytes: 10, ring_bytes: 64 << 10, probes: false };
    let mut f = super::flight::FlightRecorder::new(opts, crate::support::clock::Clock::with_offset(0), 1 << 20, m).unwrap();
    push_at(&mut f, GEN);
    f.handshake(&later(one(&poll_timeout_events()), S));
    assert!(flight_files(&dir).is_empty(), "{:?}", flight_files(&dir));
    let text = exposition(&registry, true).unwrap();
    assert_eq!(sample(&text, "handshake_trace_flight_recordings_total{outcome=\"dropped\"}"), Some(1.0), "{text}");
    std::fs::remove_dir_all(&dir).unwrap();
}
