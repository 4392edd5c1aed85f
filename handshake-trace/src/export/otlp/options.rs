//! Where and how to export: `--otlp-endpoint` and the standard `OTEL_*` variables
//! (OTLP/HTTP with protobuf bodies; https and gRPC are refused with what to do instead).
use std::time::Duration;

use anyhow::{bail, Context, Result};

use super::attrs::percent_decode;

/// Headers taken from OTEL_EXPORTER_OTLP_HEADERS at most.
const MAX_HEADERS: usize = 32;
/// The timeout and interval are clamped to these (an export never holds the agent's
/// shutdown longer than the timeout; an interval below a second would only cost CPU).
const MAX_TIMEOUT: Duration = Duration::from_secs(60);
const MIN_INTERVAL: Duration = Duration::from_millis(200);

/// An http:// URL, split for the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    /// host[:port] as the Host header says it.
    pub authority: String,
    pub path: String,
}

impl Endpoint {
    pub fn parse(url: &str) -> Result<Endpoint> {
        if url.starts_with("https://") {
            bail!("{url}: https is not supported; export to a local OpenTelemetry Collector over http (e.g. http://127.0.0.1:4318) and let it forward over TLS");
        }
        let Some(rest) = url.strip_prefix("http://") else { bail!("{url}: an OTLP endpoint is an http:// URL") };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if authority.is_empty() || authority.contains('@') || path.bytes().any(|b| b.is_ascii_control() || b == b' ') {
            bail!("{url}: not a usable endpoint (host, no user info, a path without spaces or controls)");
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (h, after) = v6.split_once(']').context("an IPv6 address needs its closing ]")?;
            (h, after.strip_prefix(':'))
        } else {
            match authority.rsplit_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        let port = match port {
            Some(p) => p.parse().with_context(|| format!("{url}: port {p:?}"))?,
            None => 80,
        };
        Ok(Endpoint { host: host.to_string(), port, authority: authority.to_string(), path: path.to_string() })
    }

    /// The base endpoint's URL for one signal: `/v1/metrics` or `/v1/logs` appended.
    fn for_signal(base: &str, signal: &str) -> Result<Endpoint> {
        Endpoint::parse(&format!("{}/v1/{signal}", base.trim_end_matches('/')))
    }
}

/// What the exporter needs.
#[derive(Debug, Clone, PartialEq)]
pub struct OtlpOptions {
    pub metrics: Option<Endpoint>,
    pub logs: Option<Endpoint>,
    pub headers: Vec<(String, String)>,
    pub timeout: Duration,
    pub interval: Duration,
}

fn millis(env: &impl Fn(&str) -> Option<String>, key: &str, default: Duration) -> Result<Duration> {
    match env(key) {
        Some(v) if !v.trim().is_empty() => Ok(Duration::from_millis(v.trim().parse().with_context(|| format!("{key}={v:?}: milliseconds"))?)),
        _ => Ok(default),
    }
}

fn headers(list: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    for pair in list.split(',').filter(|p| !p.trim().is_empty()).take(MAX_HEADERS) {
        let (k, v) = pair.split_once('=').with_context(|| format!("OTEL_EXPORTER_OTLP_HEADERS: {pair:?} is not key=value"))?;
        let (k, v) = (percent_decode(k.trim()), percent_decode(v.trim()));
        let token = !k.is_empty() && k.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b));
        if !token || v.bytes().any(|b| b.is_ascii_control()) {
            bail!("OTEL_EXPORTER_OTLP_HEADERS: header {k:?} is not a header name with a value free of control characters");
        }
        out.push((k, v));
    }
    Ok(out)
}

impl OtlpOptions {
    /// From the flag (the base endpoint) and the environment; None when neither asks
    /// for an export (or OTEL_SDK_DISABLED=true).
    pub fn resolve(flag: Option<&str>, env: impl Fn(&str) -> Option<String>) -> Result<Option<OtlpOptions>> {
        if env("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        for key in ["OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL", "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL"] {
            if let Some(p) = env(key).filter(|p| !p.is_empty() && p != "http/protobuf") {
                bail!("{key}={p:?}: the agent exports OTLP over http/protobuf only (the Collector's port 4318)");
            }
        }
        let base = flag.map(str::to_string).or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT")).filter(|b| !b.is_empty());
        let signal = |key: &str, name: &str| -> Result<Option<Endpoint>> {
            match (env(key).filter(|u| !u.is_empty()), &base) {
                (Some(url), _) => Endpoint::parse(&url).map(Some).with_context(|| key.to_string()),
                (None, Some(b)) => Endpoint::for_signal(b, name).map(Some),
                (None, None) => Ok(None),
            }
        };
        let metrics = signal("OTEL_EXPORTER_OTLP_METRICS_ENDPOINT", "metrics")?;
        let logs = signal("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "logs")?;
        if metrics.is_none() && logs.is_none() {
            return Ok(None);
        }
        let timeout = millis(&env, "OTEL_EXPORTER_OTLP_TIMEOUT", Duration::from_secs(10))?.min(MAX_TIMEOUT);
        let interval = millis(&env, "OTEL_METRIC_EXPORT_INTERVAL", Duration::from_secs(60))?.max(MIN_INTERVAL);
        let headers = headers(&env("OTEL_EXPORTER_OTLP_HEADERS").unwrap_or_default())?;
        Ok(Some(OtlpOptions { metrics, logs, headers, timeout: timeout.max(Duration::from_millis(1)), interval }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn nothing_asked_nothing_exported() {
        assert_eq!(OtlpOptions::resolve(None, env(&[])).unwrap(), None);
        assert_eq!(OtlpOptions::resolve(Some("http://c:4318"), env(&[("OTEL_SDK_DISABLED", "true")])).unwrap(), None);
    }

    #[test]
    fn the_flag_is_a_base_endpoint_and_signal_variables_win() {
        let o = OtlpOptions::resolve(Some("http://127.0.0.1:4318/"), env(&[("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "http://logs:9000/ingest")]))
            .unwrap()
            .unwrap();
        assert_eq!(o.metrics.as_ref().unwrap().path, "/v1/metrics");
        assert_eq!(o.metrics.as_ref().unwrap().authority, "127.0.0.1:4318");
        assert_eq!(o.logs.as_ref().unwrap(), &Endpoint { host: "logs".into(), port: 9000, authority: "logs:9000".into(), path: "/ingest".into() });
        assert_eq!((o.timeout, o.interval), (Duration::from_secs(10), Duration::from_secs(60)));
    }

    #[test]
    fn the_environment_alone_is_enough() {
        let o = OtlpOptions::resolve(
            None,
            env(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://[::1]:4318"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "Authorization=Bearer%20abc, x-tenant = db "),
                ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
                ("OTEL_METRIC_EXPORT_INTERVAL", "1"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!(o.logs.as_ref().unwrap().host, "::1");
        assert_eq!(o.headers, vec![("Authorization".into(), "Bearer abc".into()), ("x-tenant".into(), "db".into())]);
        assert_eq!(o.timeout, Duration::from_millis(2500));
        assert_eq!(o.interval, MIN_INTERVAL);
    }

    #[test]
    fn what_cannot_be_done_is_refused_with_what_to_do() {
        let err = |flag: Option<&str>, e: &[(&str, &str)]| format!("{:#}", OtlpOptions::resolve(flag, env(e)).unwrap_err());
        assert!(err(Some("https://c:4318"), &[]).contains("local OpenTelemetry Collector"));
        assert!(err(Some("c:4318"), &[]).contains("http:// URL"));
        assert!(err(Some("http://c:4318"), &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")]).contains("http/protobuf only"));
        assert!(err(Some("http://c:4318"), &[("OTEL_EXPORTER_OTLP_HEADERS", "a=b%0D%0AInjected: 1")]).contains("control characters"));
        assert!(err(Some("http://user@c:4318"), &[]).contains("no user info"));
        assert!(err(Some("http://c:43x"), &[]).contains("port"));
    }
}
