//! `agent --otlp-endpoint` against a real MariaDB and an OTLP/HTTP receiver built on the
//! official protobuf messages (opentelemetry-proto): the metrics it receives are the
//! ones /metrics serves, each abnormal handshake arrives as a log record with the
//! semantic conventions' attributes, and a collector that never answers holds nothing.
use std::{
    io::{Read, Write},
    net::{SocketAddr, TcpListener, TcpStream},
    sync::{Arc, Mutex},
    time::Duration,
};

use handshake_trace_tests::*;
use opentelemetry_proto::tonic::{
    collector::{logs::v1::ExportLogsServiceRequest, metrics::v1::ExportMetricsServiceRequest},
    common::v1::{any_value, KeyValue},
    metrics::v1::{metric::Data, number_data_point},
};
use prost::Message;

/// What the receiver got, decoded.
#[derive(Default)]
struct Received {
    metrics: Vec<ExportMetricsServiceRequest>,
    logs: Vec<ExportLogsServiceRequest>,
    content_types: Vec<String>,
}

/// An OTLP/HTTP receiver on a free loopback port: decodes each POST with the official
/// messages and answers 200 with an empty (valid) response message.
fn receiver() -> (SocketAddr, Arc<Mutex<Received>>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    let got = Arc::new(Mutex::new(Received::default()));
    let store = Arc::clone(&got);
    std::thread::spawn(move || {
        for c in l.incoming() {
            let Ok(mut c) = c else { continue };
            c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
            if let Some((path, content_type, body)) = read_request(&mut c) {
                let mut r = store.lock().unwrap();
                r.content_types.push(content_type);
                match path.as_str() {
                    "/v1/metrics" => r.metrics.push(ExportMetricsServiceRequest::decode(body.as_slice()).expect("a metrics request")),
                    "/v1/logs" => r.logs.push(ExportLogsServiceRequest::decode(body.as_slice()).expect("a logs request")),
                    other => panic!("POST to {other}"),
                }
            }
            let _ = c.write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n");
        }
    });
    (addr, got)
}

fn read_request(c: &mut TcpStream) -> Option<(String, String, Vec<u8>)> {
    let mut data = Vec::new();
    let mut buf = [0u8; 8192];
    let head_end = loop {
        if let Some(i) = data.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = c.read(&mut buf).ok()?;
        if n == 0 || data.len() > 1 << 16 {
            return None;
        }
        data.extend_from_slice(&buf[..n]);
    };
    let head = String::from_utf8_lossy(&data[..head_end]).to_string();
    let path = head.split(' ').nth(1)?.to_string();
    let header = |name: &str| {
        head.lines().find_map(|l| l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim().to_string()))
    };
    let len: usize = header("content-length")?.parse().ok()?;
    let mut body = data[head_end..].to_vec();
    while body.len() < len {
        let n = c.read(&mut buf).ok()?;
        if n == 0 {
            return None;
        }
        body.extend_from_slice(&buf[..n]);
    }
    Some((path, header("content-type").unwrap_or_default(), body))
}

fn string(attrs: &[KeyValue], key: &str) -> Option<String> {
    attrs.iter().find(|a| a.key == key).and_then(|a| match a.value.as_ref()?.value.as_ref()? {
        any_value::Value::StringValue(s) => Some(s.clone()),
        any_value::Value::IntValue(i) => Some(i.to_string()),
        any_value::Value::BoolValue(b) => Some(b.to_string()),
        any_value::Value::DoubleValue(d) => Some(d.to_string()),
        _ => None,
    })
}

/// handshake_trace_handshakes by verdict, summed over the other labels, in one export.
fn handshakes_by_verdict(req: &ExportMetricsServiceRequest) -> std::collections::BTreeMap<String, i64> {
    let mut out = std::collections::BTreeMap::new();
    for m in req.resource_metrics.iter().flat_map(|r| &r.scope_metrics).flat_map(|s| &s.metrics) {
        if m.name != "handshake_trace_handshakes" {
            continue;
        }
        let Some(Data::Sum(sum)) = &m.data else { panic!("handshakes is not a sum: {m:?}") };
        assert!(sum.is_monotonic);
        for p in &sum.data_points {
            let Some(number_data_point::Value::AsInt(v)) = p.value else { panic!("{p:?}") };
            *out.entry(string(&p.attributes, "verdict").unwrap()).or_insert(0) += v;
        }
    }
    out.retain(|_, v| *v > 0);
    out
}

/// The same, from the agent's /metrics.
fn scraped_by_verdict(listen: SocketAddr) -> std::collections::BTreeMap<String, i64> {
    let (_, body) = http_get(listen, "/metrics").expect("GET /metrics");
    let mut out = std::collections::BTreeMap::new();
    for line in body.lines().filter(|l| l.starts_with("handshake_trace_handshakes_total{")) {
        let verdict = line.split("verdict=\"").nth(1).and_then(|r| r.split('"').next()).unwrap().to_string();
        let v: f64 = line.rsplit(' ').next().unwrap().parse().unwrap();
        *out.entry(verdict).or_insert(0) += v as i64;
    }
    out.retain(|_, v| *v > 0);
    out
}

#[test]
fn the_agent_exports_its_metrics_and_each_abnormal_handshake_over_otlp() {
    let test = "the_agent_exports_its_metrics_and_each_abnormal_handshake_over_otlp";
    let Some(bin) = ready(test) else { return };
    let db = MariaDb::start(&MariaDbOptions::default()).expect("start MariaDB");
    let (recv, got) = receiver();
    let listen = free_addr();
    std::env::set_var("OTEL_METRIC_EXPORT_INTERVAL", "1000");
    std::env::set_var("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment.name=test");
    let agent = Tracer::start(
        &bin,
        &[
            "agent",
            "-p",
            &db.pid().to_string(),
            "--port",
            &db.port().to_string(),
            "--listen",
            &listen.to_string(),
            "--otlp-endpoint",
            &format!("http://{recv}"),
        ],
    );
    std::env::remove_var("OTEL_METRIC_EXPORT_INTERVAL");
    std::env::remove_var("OTEL_RESOURCE_ATTRIBUTES");
    assert!(eventually(Duration::from_secs(10), || http_get(listen, "/readyz").is_some_and(|(s, _)| s == 200)), "never ready");
    assert!(db.client(LAB_USER, LAB_PASSWORD, &["--skip-ssl", "-e", "SELECT 1"]).unwrap().status.success());
    let mut client_ports = Vec::new();
    for _ in 0..2 {
        let out = db.client(LAB_USER, "wrong", &["--skip-ssl", "-e", "SELECT 1"]).unwrap();
        assert!(String::from_utf8_lossy(&out.stderr).contains("1045"), "{out:?}");
    }
    let expected: std::collections::BTreeMap<String, i64> = [("auth_failed".to_string(), 2), ("ok".to_string(), 1)].into();
    // The metrics the receiver holds are the ones /metrics serves.
    assert!(
        eventually(Duration::from_secs(15), || {
            scraped_by_verdict(listen) == expected && got.lock().unwrap().metrics.last().is_some_and(|m| handshakes_by_verdict(m) == expected)
        }),
        "OTLP {:?}, /metrics {:?}",
        got.lock().unwrap().metrics.last().map(handshakes_by_verdict),
        scraped_by_verdict(listen)
    );
    assert!(eventually(Duration::from_secs(10), || got.lock().unwrap().logs.iter().map(|l| l.resource_logs[0].scope_logs[0].log_records.len()).sum::<usize>() == 2));
    let out = agent.stop_with(libc::SIGTERM);
    assert_eq!(out.code, Some(0), "{}", out.stderr_text());
    assert!(out.stderr_text().contains(&format!("Exporting OTLP/HTTP: metrics to {recv}/v1/metrics")), "{}", out.stderr_text());

    let r = got.lock().unwrap();
    assert!(r.content_types.iter().all(|c| c == "application/x-protobuf"), "{:?}", r.content_types);
    let logs = &r.logs[0].resource_logs[0];
    let resource = &logs.resource.as_ref().unwrap().attributes;
    assert_eq!(string(resource, "service.name").as_deref(), Some("handshake-trace"));
    assert_eq!(string(resource, "deployment.environment.name").as_deref(), Some("test"));
    assert!(string(resource, "host.name").is_some());
    let record = &logs.scope_logs[0].log_records[0];
    eprintln!("one exported log record, as the receiver decoded it:\n{record:#?}");
    let a = &record.attributes;
    assert_eq!(string(a, "db.system.name").as_deref(), Some("mariadb"));
    assert_eq!(string(a, "error.type").as_deref(), Some("auth_failed"));
    assert_eq!(string(a, "db.response.status_code").as_deref(), Some("1045"));
    assert_eq!(string(a, "server.port"), Some(db.port().to_string()));
    assert_eq!(string(a, "client.address").as_deref(), Some("127.0.0.1"));
    assert_eq!(string(a, "handshake_trace.blame").as_deref(), Some("client"));
    client_ports.push(string(a, "client.port").unwrap());
    assert_eq!(record.event_name, "handshake_trace.handshake");
    let Some(any_value::Value::StringValue(body)) = record.body.as_ref().and_then(|b| b.value.clone()) else { panic!("no body") };
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["verdict"], "auth_failed");
    assert_eq!(json["user"], LAB_USER);
    assert_eq!(json["client"].as_str().unwrap().rsplit(':').next().unwrap(), client_ports[0]);
    assert!(record.time_unix_nano > 0 && record.observed_time_unix_nano >= record.time_unix_nano);
}

#[test]
fn a_collector_that_never_answers_holds_nothing_and_its_failures_are_counted() {
    let test = "a_collector_that_never_answers_holds_nothing_and_its_failures_are_counted";
    let Some(bin) = ready(test) else { return };
    let db = MariaDb::start(&MariaDbOptions::default()).expect("start MariaDB");
    // Accepts, reads nothing, answers nothing.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_addr = silent.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let keep = Arc::clone(&held);
    std::thread::spawn(move || {
        for c in silent.incoming().flatten() {
            keep.lock().unwrap().push(c);
        }
    });
    let listen = free_addr();
    std::env::set_var("OTEL_EXPORTER_OTLP_ENDPOINT", format!("http://{silent_addr}"));
    std::env::set_var("OTEL_EXPORTER_OTLP_TIMEOUT", "700");
    std::env::set_var("OTEL_METRIC_EXPORT_INTERVAL", "1000");
    let agent = Tracer::start(&bin, &["agent", "-p", &db.pid().to_string(), "--port", &db.port().to_string(), "--listen", &listen.to_string()]);
    for k in ["OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TIMEOUT", "OTEL_METRIC_EXPORT_INTERVAL"] {
        std::env::remove_var(k);
    }
    assert!(eventually(Duration::from_secs(10), || http_get(listen, "/readyz").is_some_and(|(s, _)| s == 200)), "never ready");
    for _ in 0..5 {
        assert!(!db.client(LAB_USER, "wrong", &["--skip-ssl", "-e", "SELECT 1"]).unwrap().status.success());
    }
    let failed = |body: &str, signal: &str| {
        body.lines()
            .find(|l| l.starts_with(&format!("handshake_trace_otlp_exports_total{{signal=\"{signal}\",outcome=\"failed\"}}")))
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    // The live loop goes on: every failure counted, /metrics answers at once.
    assert!(
        eventually(Duration::from_secs(15), || {
            let t = std::time::Instant::now();
            let Some((200, body)) = http_get(listen, "/metrics") else { return false };
            assert!(t.elapsed() < Duration::from_secs(2), "/metrics took {:?}", t.elapsed());
            scraped_by_verdict(listen).get("auth_failed") == Some(&5) && failed(&body, "logs") >= 1.0 && failed(&body, "metrics") >= 1.0
        }),
        "{:?}",
        http_get(listen, "/metrics")
    );
    let t = std::time::Instant::now();
    let out = agent.stop_with(libc::SIGTERM);
    assert_eq!(out.code, Some(0), "{}", out.stderr_text());
    assert!(t.elapsed() < Duration::from_secs(6), "the exit waited {:?} for a dead collector", t.elapsed());
    assert!(out.stderr_text().contains("OTLP logs export failed: timed out"), "{}", out.stderr_text());
    assert!(!held.lock().unwrap().is_empty(), "the exporter connected");
}
