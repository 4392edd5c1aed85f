//! `cargo xtask soak`: the agent under a long handshake load, its memory sampled
//! throughout. A real MariaDB; clients that log in (one in ten with a wrong password,
//! so ~10 % of handshakes are abnormal) as fast as this machine allows, for a million
//! handshakes (SOAK_HANDSHAKES to change it); the agent with its log and flight recorder
//! on. Writes docs/soak.md and docs/soak.json: RSS over time, whether it stayed flat
//! after warm-up and under the 30 MB target, and the agent's counts against the load's.
use std::{
    net::SocketAddr,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        atomic::{AtomicBool, AtomicU64, Ordering},
        Arc, Mutex,
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{bail, Context, Result};
use handshake_trace_tests::{free_addr, http_get, lab_login, MariaDb, MariaDbOptions};
use serde_json::{json, Value};

/// The target of issue 15: RSS flat after warm-up and below this.
const RSS_TARGET_MB: f64 = 30.0;
/// One handshake in this many logs in with a wrong password.
const ABNORMAL_EVERY: u64 = 10;
const CLIENT_THREADS: usize = 4;
/// The first part of the run, where tables and buffers fill up, is not held against flatness.
const WARM_UP_FRACTION: f64 = 0.1;
/// Runs kept in docs/soak.md's history table.
const HISTORY_KEPT: usize = 12;

/// One sample a second: seconds since the start, handshakes done, agent RSS in KiB, the
/// machine's one-minute load average.
type Sample = (f64, u64, u64, f64);

/// The agent's resident memory in KiB.
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// The machine's load average over the last minute.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg").ok()?.split_whitespace().next()?.parse().ok()
}

/// The median of some values (0 for none).
fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(0.0)
}

/// The agent's CPU time (utime + stime) in seconds.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: u64 = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no memory preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    Some(ticks as f64 / hz)
}

/// Sum of a counter's samples by one label, from a Prometheus text exposition.
fn counter_by(body: &str, metric: &str, label: &str) -> std::collections::BTreeMap<String, f64> {
    let mut sums = std::collections::BTreeMap::new();
    for line in body.lines().filter(|l| l.starts_with(metric) && l[metric.len()..].starts_with('{')) {
        let Some((series, value)) = line.rsplit_once(' ') else { continue };
        let Ok(v) = value.parse::<f64>() else { continue };
        let key = series
            .split(&format!("{label}=\""))
            .nth(1)
            .and_then(|r| r.split('"').next())
            .unwrap_or("")
            .to_string();
        *sums.entry(key).or_default() += v;
    }
    sums
}

struct Agent {
    child: Child,
    listen: SocketAddr,
}

impl Agent {
    fn start(bin: &Path, target: u32, dir: &Path, capture: &str) -> Result<Agent> {
        let listen = free_addr();
        let child = Command::new(bin)
            .args(["agent", "-p", &target.to_string(), "--listen", &listen.to_string(), "--capture", capture])
            .arg("--log")
            .arg(dir.join("abnormal.jsonl"))
            .arg("--flight-dir")
            .arg(dir.join("flight"))
            // Experiments: more agent flags (e.g. SOAK_AGENT_ARGS="--nice 0").
            .args(std::env::var("SOAK_AGENT_ARGS").unwrap_or_default().split_whitespace())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(dir.join("agent.stderr"))?)
            .spawn()
            .context("start the agent")?;
        let started = Instant::now();
        while http_get(listen, "/readyz").map(|(s, _)| s) != Some(200) {
            if started.elapsed() > Duration::from_secs(30) {
                bail!("the agent did not become ready in 30 s");
            }
            thread::sleep(Duration::from_millis(100));
        }
        Ok(Agent { child, listen })
    }
}

impl Drop for Agent {
    fn drop(&mut self) {
        // SAFETY: signalling our own child.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// A one-line plot of the samples, scaled between their minimum and maximum.
fn sparkline(values: &[f64]) -> String {
    const BARS: [char; 8] = ['▁', '▂', '▃', '▄', '▅', '▆', '▇', '█'];
    let (lo, hi) = values.iter().fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    let span = (hi - lo).max(f64::EPSILON);
    values.iter().map(|v| BARS[(((v - lo) / span) * 7.0).round() as usize]).collect()
}

fn main() -> Result<()> {
    let bin = PathBuf::from(std::env::var_os("HANDSHAKE_TRACE_BIN").context("HANDSHAKE_TRACE_BIN (cargo xtask soak sets it)")?);
    let total: u64 = std::env::var("SOAK_HANDSHAKES").ok().and_then(|v| v.parse().ok()).unwrap_or(1_000_000);
    // The agent's default tier unless told (SOAK_CAPTURE=syscalls).
    let capture = std::env::var("SOAK_CAPTURE").unwrap_or_else(|_| "socket".into());
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let work = std::env::temp_dir().join(format!("handshake-trace-soak-{}", std::process::id()));
    std::fs::create_dir_all(&work)?;

    eprintln!("soak: starting MariaDB");
    let db = MariaDb::start(&MariaDbOptions::default()).context("start MariaDB")?;
    let aborted_before = db.status("Aborted_connects")?;
    let agent = Agent::start(&bin, db.pid(), &work, &capture)?;
    let agent_pid = agent.child.id();
    let cpu_before = cpu_seconds(agent_pid).unwrap_or(0.0);
    eprintln!("soak: agent pid {agent_pid} on {}; {total} handshakes, 1 in {ABNORMAL_EVERY} with a wrong password", agent.listen);

    let started_wall = std::time::SystemTime::now();
    let next = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicU64::new(0));
    let ok = Arc::new(AtomicU64::new(0));
    let refused = Arc::new(AtomicU64::new(0));
    let failures = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let samples: Arc<Mutex<Vec<Sample>>> = Arc::default();
    let start = Instant::now();
    let sampler = {
        let (done, stop, samples) = (done.clone(), stop.clone(), samples.clone());
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(rss) = rss_kib(agent_pid) {
                    let load = load_average().unwrap_or(f64::NAN);
                    samples.lock().unwrap().push((start.elapsed().as_secs_f64(), done.load(Ordering::Relaxed), rss, load));
                }
                thread::sleep(Duration::from_secs(1));
            }
        })
    };
    let addr = db.addr();
    let clients: Vec<_> = (0..CLIENT_THREADS)
        .map(|_| {
            let (next, done, ok, refused, failures) = (next.clone(), done.clone(), ok.clone(), refused.clone(), failures.clone());
            thread::spawn(move || loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    break;
                }
                match lab_login(addr, i % ABNORMAL_EVERY != 0) {
                    Ok(true) => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(false) => refused.fetch_add(1, Ordering::Relaxed),
                    Err(_) => failures.fetch_add(1, Ordering::Relaxed),
                };
                let n = done.fetch_add(1, Ordering::Relaxed) + 1;
                if n % 100_000 == 0 {
                    eprintln!("soak: {n} handshakes, {:.0} s", start.elapsed().as_secs_f64());
                }
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client thread");
    }
    let elapsed = start.elapsed().as_secs_f64();
    // Let the agent drain and Prometheus-count the last ones.
    thread::sleep(Duration::from_secs(3));
    stop.store(true, Ordering::Relaxed);
    sampler.join().expect("sampler");
    let cpu = cpu_seconds(agent_pid).unwrap_or(0.0) - cpu_before;
    let (_, metrics) = http_get(agent.listen, "/metrics").context("GET /metrics")?;
    let by_verdict = counter_by(&metrics, "handshake_trace_handshakes_total", "verdict");
    let lost = counter_by(&metrics, "handshake_trace_events_lost_total", "reason");
    let sample = |name: &str| metrics.lines().find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<f64>().ok()).unwrap_or(0.0);
    let emitted = sample("handshake_trace_events_emitted_total");
    // The flight ring's span as the load ended (nothing has aged out since): what it keeps at this rate.
    let flight_window = sample("handshake_trace_flight_window_seconds");
    let log_records = counter_by(&metrics, "handshake_trace_abnormal_log_records_total", "outcome");
    let flights = counter_by(&metrics, "handshake_trace_flight_recordings_total", "outcome");
    drop(agent);
    let aborted = db.status("Aborted_connects")? - aborted_before;
    drop(db);
    // The flight files kept (the newest, within --flight-max-files/--flight-max-bytes): their mean size.
    let flight_sizes: Vec<u64> = std::fs::read_dir(work.join("flight")).map(|d| d.filter_map(|e| e.ok()?.metadata().ok()).map(|m| m.len()).collect()).unwrap_or_default();
    let flight_file_mb = flight_sizes.iter().sum::<u64>() as f64 / flight_sizes.len().max(1) as f64 / 1e6;
    let _ = std::fs::remove_dir_all(&work);

    let samples = samples.lock().unwrap().clone();
    let (ok, refused, failures) = (ok.load(Ordering::Relaxed), refused.load(Ordering::Relaxed), failures.load(Ordering::Relaxed));
    let warm = samples.iter().position(|s| s.1 as f64 >= total as f64 * WARM_UP_FRACTION).unwrap_or(0);
    let after: Vec<f64> = samples[warm..].iter().map(|s| s.2 as f64 / 1024.0).collect();
    let (min_after, max_after) = after.iter().fold((f64::MAX, f64::MIN), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    let median_after = median(&after);
    let loads: Vec<f64> = samples.iter().map(|s| s.3).filter(|l| l.is_finite()).collect();
    let (load_min, load_max) = loads.iter().fold((f64::MAX, 0.0f64), |(lo, hi), v| (lo.min(*v), hi.max(*v)));
    let peak = samples.iter().map(|s| s.2 as f64 / 1024.0).fold(0.0, f64::max);
    let growth = max_after - min_after;
    // Flat: after warm-up the RSS moves by less than 10 % of the target.
    let flat = growth <= RSS_TARGET_MB * 0.1;
    let under = peak <= RSS_TARGET_MB;
    let result = json!({
        "started": handshake_trace::support::clock::format_rfc3339(started_wall),
        "handshakes": total, "ok": ok, "refused": refused, "client_failures": failures,
        "seconds": elapsed, "per_second": total as f64 / elapsed,
        "agent_cpu_seconds": cpu, "agent_cpu_us_per_handshake": cpu * 1e6 / total as f64,
        "capture": capture, "agent_args": std::env::var("SOAK_AGENT_ARGS").unwrap_or_default(),
        "load_average": {"min": load_min, "median": median(&loads), "max": load_max},
        "events_emitted": emitted, "events_per_handshake": emitted / total as f64, "flight_window_seconds": flight_window, "flight_file_mb": flight_file_mb,
        "rss_mb": {"peak": peak, "after_warm_up_min": min_after, "after_warm_up_median": median_after, "after_warm_up_max": max_after, "growth_after_warm_up": growth},
        "rss_target_mb": RSS_TARGET_MB, "flat": flat, "under_target": under,
        "agent_counts": by_verdict, "events_lost": lost, "abnormal_log_records": log_records, "flight_recordings": flights,
        "aborted_connects_delta": aborted,
        "samples": samples.iter().map(|s| json!([s.0, s.1, s.2, s.3])).collect::<Vec<Value>>(),
    });
    std::fs::write(root.join("docs/soak.json"), serde_json::to_string_pretty(&result)? + "\n")?;
    let previous = std::fs::read_to_string(root.join("docs/soak.md")).unwrap_or_default();
    std::fs::write(root.join("docs/soak.md"), report(&result, &samples) + &history(&previous, &result))?;
    eprintln!("soak: wrote docs/soak.md and docs/soak.json");
    Ok(())
}

/// Heads the history table; rows below it are kept from run to run.
const HISTORY_HEADING: &str = "## Runs so far (newest first)";

/// This run as one row of the history table.
fn history_row(r: &Value) -> String {
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    let lost: f64 = r["events_lost"].as_object().map(|m| m.values().map(f).sum()).unwrap_or(0.0);
    format!(
        "| {} | {} | {} | {:.0} | {:.1} / {:.1} / {:.1} | {:.1} | {:.2} | {:.0} | {:.1}-{:.1} |",
        r["started"].as_str().unwrap_or("?"),
        format!("{} {}", r["capture"].as_str().unwrap_or("?"), r["agent_args"].as_str().unwrap_or("")).trim_end(),
        r["handshakes"],
        f(&r["per_second"]),
        f(&r["rss_mb"]["after_warm_up_min"]),
        f(&r["rss_mb"]["after_warm_up_median"]),
        f(&r["rss_mb"]["after_warm_up_max"]),
        f(&r["rss_mb"]["peak"]),
        f(&r["agent_cpu_us_per_handshake"]),
        lost,
        f(&r["load_average"]["min"]),
        f(&r["load_average"]["max"]),
    )
}

/// The history section: this run's row, then the rows `previous` (the last docs/soak.md) had.
fn history(previous: &str, r: &Value) -> String {
    let kept = previous
        .split_once(HISTORY_HEADING)
        .map(|(_, rest)| rest.lines().filter(|l| l.starts_with("| 20")).map(str::to_string).collect::<Vec<_>>())
        .unwrap_or_default();
    let mut out = format!(
        "\n{HISTORY_HEADING}\n\nEach `cargo xtask soak` adds its row here. RSS in MB after warm-up (min / median / max) \
         and its peak over the whole run; CPU in µs per handshake; the machine's one-minute load average during the run.\n\n\
         | started | capture (and SOAK_AGENT_ARGS) | handshakes | per second | RSS after warm-up | peak | CPU µs | events lost | load average |\n\
         |---|---|---|---|---|---|---|---|---|\n"
    );
    for row in std::iter::once(history_row(r)).chain(kept).take(HISTORY_KEPT) {
        out.push_str(&row);
        out.push('\n');
    }
    out
}

fn report(r: &Value, samples: &[Sample]) -> String {
    let f = |v: &Value| v.as_f64().unwrap_or(0.0);
    let counts = |v: &Value| {
        v.as_object()
            .map(|m| m.iter().map(|(k, n)| format!("{k} {}", f(n) as u64)).collect::<Vec<_>>().join(", "))
            .unwrap_or_default()
    };
    let rss: Vec<f64> = samples.iter().map(|s| s.2 as f64 / 1024.0).collect();
    let mut out = String::new();
    out.push_str("# Agent soak run\n\n");
    out.push_str("Written by `cargo xtask soak` (tests/soak.rs); every figure is this run's.\n\n");
    out.push_str(&format!(
        "Run started {}: {} handshakes against a real MariaDB from {CLIENT_THREADS} client threads, one in {ABNORMAL_EVERY} with a wrong \
         password (ERR 1045), as fast as the machine allowed: {:.0} s, {:.0} handshakes/s. The agent ran on the {} capture \
         tier with its log and its flight recorder on (`--capture {} --log FILE --flight-dir DIR{}`). The machine's one-minute \
         load average during the run: {:.1} to {:.1} (median {:.1}; 2 cores).\n\n",
        r["started"].as_str().unwrap_or("?"),
        r["handshakes"],
        f(&r["seconds"]),
        f(&r["per_second"]),
        r["capture"].as_str().unwrap_or("?"),
        r["capture"].as_str().unwrap_or("?"),
        r["agent_args"].as_str().filter(|a| !a.is_empty()).map(|a| format!(" {a}")).unwrap_or_default(),
        f(&r["load_average"]["min"]),
        f(&r["load_average"]["max"]),
        f(&r["load_average"]["median"]),
    ));
    out.push_str("| target | result | |\n|---|---|---|\n");
    out.push_str(&format!(
        "| RSS flat after warm-up (the first {:.0} % of handshakes) | min {:.1} / median {:.1} / max {:.1} MB (moved {:.1} MB) | {} |\n",
        WARM_UP_FRACTION * 100.0,
        f(&r["rss_mb"]["after_warm_up_min"]),
        f(&r["rss_mb"]["after_warm_up_median"]),
        f(&r["rss_mb"]["after_warm_up_max"]),
        f(&r["rss_mb"]["growth_after_warm_up"]),
        if r["flat"] == true { "met" } else { "**missed**" }
    ));
    out.push_str(&format!(
        "| RSS under {RSS_TARGET_MB:.0} MB | peak {:.1} MB | {} |\n\n",
        f(&r["rss_mb"]["peak"]),
        if r["under_target"] == true { "met" } else { "**missed**" }
    ));
    out.push_str(&format!("RSS over the run, one sample a second ({:.1} to {:.1} MB):\n\n```\n{}\n```\n\n", rss.iter().cloned().fold(f64::MAX, f64::min), rss.iter().cloned().fold(0.0, f64::max), sparkline(&rss)));
    out.push_str("| seconds | handshakes done | agent RSS (MB) | load average |\n|---|---|---|---|\n");
    let step = (samples.len() / 12).max(1);
    for s in samples.iter().step_by(step) {
        out.push_str(&format!("| {:.0} | {} | {:.1} | {:.1} |\n", s.0, s.1, s.2 as f64 / 1024.0, s.3));
    }
    out.push_str(&format!(
        "\nThe load's own count: {} OK, {} refused, {} client failures; MariaDB's `Aborted_connects` rose by {}.\n\
         The agent's `handshake_trace_handshakes_total` by verdict: {}. Events emitted: {:.0} ({:.1} per handshake); lost: {}. \
         The abnormal log: {} (rate-limited). Flight recordings: {} ({:.1} MB a file); the flight ring covered {:.2} s at this rate. \
         Agent CPU: {:.1} s, {:.2} µs per handshake.\n",
        r["ok"],
        r["refused"],
        r["client_failures"],
        r["aborted_connects_delta"],
        counts(&r["agent_counts"]),
        f(&r["events_emitted"]),
        f(&r["events_per_handshake"]),
        { let l = counts(&r["events_lost"]); if l.is_empty() { "none".into() } else { l } },
        counts(&r["abnormal_log_records"]),
        counts(&r["flight_recordings"]),
        f(&r["flight_file_mb"]),
        f(&r["flight_window_seconds"]),
        f(&r["agent_cpu_seconds"]),
        f(&r["agent_cpu_us_per_handshake"]),
    ));
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_summed_by_label_from_an_exposition() {
        let body = "# TYPE handshake_trace_handshakes_total counter\n\
            handshake_trace_handshakes_total{server=\"a\",verdict=\"ok\",blame=\"none\",mechanism=\"none\"} 7\n\
            handshake_trace_handshakes_total{server=\"b\",verdict=\"ok\",blame=\"none\",mechanism=\"none\"} 3\n\
            handshake_trace_handshakes_total{server=\"a\",verdict=\"auth_failed\",blame=\"client\",mechanism=\"none\"} 2\n";
        let sums = counter_by(body, "handshake_trace_handshakes_total", "verdict");
        assert_eq!(sums.get("ok"), Some(&10.0));
        assert_eq!(sums.get("auth_failed"), Some(&2.0));
    }

    #[test]
    fn the_report_shows_this_runs_figures() {
        let samples = vec![(1.0, 100, 20_480, 1.5), (2.0, 60_000, 21_504, 2.0), (3.0, 120_000, 21_606, 2.5)];
        let r = json!({
            "started": "then", "handshakes": 120_000, "ok": 108_000, "refused": 12_000, "client_failures": 0,
            "seconds": 9.5, "per_second": 12_631.6, "agent_cpu_seconds": 1.25, "agent_cpu_us_per_handshake": 10.42,
            "rss_mb": {"peak": 21.1, "after_warm_up_min": 21.0, "after_warm_up_median": 21.05, "after_warm_up_max": 21.1, "growth_after_warm_up": 0.1},
            "capture": "socket", "load_average": {"min": 1.5, "median": 2.0, "max": 2.5},
            "events_emitted": 960_000.0, "events_per_handshake": 8.0, "flight_window_seconds": 0.31,
            "flat": true, "under_target": true,
            "agent_counts": {"ok": 108_000.0, "auth_failed": 12_000.0}, "events_lost": {},
            "abnormal_log_records": {"written": 950.0, "dropped": 11_050.0}, "flight_recordings": {"written": 9.0},
            "aborted_connects_delta": 12_000,
        });
        let text = report(&r, &samples);
        for shown in ["120000 handshakes", "12632 handshakes/s", "peak 21.1 MB", "auth_failed 12000", "dropped 11050", "10.42 µs per handshake", "--capture socket", "load average during the run: 1.5 to 2.5", "median 21.1", "8.0 per handshake", "covered 0.31 s"] {
            assert!(text.contains(shown), "{shown} missing from\n{text}");
        }
        // The history keeps earlier runs' rows under this one's.
        let earlier = format!("{text}{}", history("", &json!({"started": "2026-01-01T00:00:00Z", "capture": "syscalls", "events_lost": {"ringbuf_full": 5.0}})));
        let both = history(&earlier, &r);
        let rows: Vec<&str> = both.lines().filter(|l| l.starts_with("| ")).collect();
        assert!(rows[1].starts_with("| then |") && rows[2].starts_with("| 2026-01-01T00:00:00Z | syscalls |") && rows[2].contains("| 5 |"), "{both}");
    }
}
