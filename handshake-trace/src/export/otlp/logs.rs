//! An abnormal handshake as an OTLP log record: the semantic conventions' attributes
//! where they exist (`db.system.name`, `server.*`, `client.*`, `network.transport`,
//! `error.type`, `db.response.status_code`), ours under `handshake_trace.*`, and the
//! abnormal log's JSON object (docs/json.md) as the body.
use opentelemetry_proto::tonic::{
    collector::logs::v1::ExportLogsServiceRequest,
    common::v1::{any_value, AnyValue, KeyValue},
    logs::v1::{LogRecord, ResourceLogs, ScopeLogs, SeverityNumber},
    resource::v1::Resource,
};

use super::attrs::{double_attr, int_attr, scope, string_attr};
use crate::{
    correlate::{Handshake, Reply},
    output::{handshake_json, names, reason},
    support::clock::Clock,
    verdict::Blame,
};

/// The event name every record carries.
pub const EVENT_NAME: &str = "handshake_trace.handshake";

fn ns_since_epoch(t: std::time::SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
}

/// The record for one finished handshake; `observed` is when the agent saw its end.
pub fn record(h: &Handshake, clock: &Clock, observed: std::time::SystemTime) -> LogRecord {
    let judgement = h.judgement.as_ref();
    let mut attrs = Vec::with_capacity(16);
    if let Some(g) = &h.greeting {
        let system = if g.server_version.contains("MariaDB") { "mariadb" } else { "mysql" };
        attrs.push(string_attr("db.system.name", system));
    }
    match (h.unix, h.server) {
        (true, _) => {
            attrs.push(string_attr("network.transport", "unix"));
            if let Some(p) = &h.server_path {
                attrs.push(string_attr("server.address", p));
            }
        }
        (false, Some(s)) => {
            attrs.push(string_attr("network.transport", "tcp"));
            attrs.push(string_attr("server.address", &s.ip().to_string()));
            attrs.push(int_attr("server.port", s.port().into()));
        }
        (false, None) => attrs.push(string_attr("network.transport", "tcp")),
    }
    if let Some(c) = h.client {
        attrs.push(string_attr("client.address", &c.ip().to_string()));
        attrs.push(int_attr("client.port", c.port().into()));
    }
    let verdict = names::verdict_or_unknown(h.verdict());
    attrs.push(string_attr("error.type", verdict));
    if let Some(Reply::Err(e)) = &h.reply {
        attrs.push(string_attr("db.response.status_code", &e.code.to_string()));
    }
    attrs.push(string_attr("handshake_trace.verdict", verdict));
    attrs.push(string_attr("handshake_trace.capture", names::capture(h.socket_tier)));
    attrs.push(double_attr("handshake_trace.duration_ms", h.total_ns() as f64 / 1e6));
    attrs.push(int_attr("handshake_trace.pid", h.pid.into()));
    if let Some(j) = judgement {
        attrs.push(string_attr("handshake_trace.blame", names::blame(j.blame.party())));
        attrs.push(string_attr("handshake_trace.reason", &reason::reason(&j.cause)));
        if let Some(r) = &j.client_report {
            attrs.push(string_attr("handshake_trace.client_error", &reason::client_report(r)));
        }
        if let Some(p) = j.probe {
            attrs.push(string_attr("handshake_trace.probe", names::probe(Some(p))));
        }
    }
    let server_side = judgement.is_some_and(|j| j.blame.party() == Blame::Server);
    let severity = if server_side { SeverityNumber::Error } else { SeverityNumber::Warn };
    let body = handshake_json(h, clock).to_string();
    LogRecord {
        time_unix_nano: ns_since_epoch(clock.wall(h.accept_ns.saturating_add(h.total_ns()))),
        observed_time_unix_nano: ns_since_epoch(observed),
        severity_number: severity as i32,
        severity_text: if server_side { "ERROR" } else { "WARN" }.into(),
        body: Some(AnyValue { value: Some(any_value::Value::StringValue(body)) }),
        attributes: attrs,
        event_name: EVENT_NAME.into(),
        ..Default::default()
    }
}

/// One request for a batch of records.
pub fn request(records: Vec<LogRecord>, resource: &[KeyValue]) -> ExportLogsServiceRequest {
    ExportLogsServiceRequest {
        resource_logs: vec![ResourceLogs {
            resource: Some(Resource { attributes: resource.to_vec(), ..Default::default() }),
            scope_logs: vec![ScopeLogs { scope: Some(scope()), log_records: records, schema_url: String::new() }],
            schema_url: String::new(),
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing;

    fn attr<'a>(r: &'a LogRecord, key: &str) -> Option<&'a any_value::Value> {
        r.attributes.iter().find(|a| a.key == key).and_then(|a| a.value.as_ref()?.value.as_ref())
    }

    fn string(r: &LogRecord, key: &str) -> Option<String> {
        match attr(r, key)? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            _ => None,
        }
    }

    #[test]
    fn a_wrong_password_carries_the_conventions_attributes_and_the_json_body() {
        let h = testing::handshakes_of(&testing::wrong_password_events()).remove(0);
        let r = record(&h, &Clock::with_offset(0), std::time::UNIX_EPOCH);
        assert_eq!(string(&r, "db.system.name").as_deref(), Some("mariadb"));
        assert_eq!(string(&r, "error.type").as_deref(), Some("auth_failed"));
        assert_eq!(string(&r, "db.response.status_code").as_deref(), Some("1045"));
        assert_eq!(string(&r, "network.transport").as_deref(), Some("tcp"));
        assert_eq!(string(&r, "client.address").as_deref(), Some(h.client.unwrap().ip().to_string().as_str()));
        assert_eq!(attr(&r, "client.port"), Some(&any_value::Value::IntValue(h.client.unwrap().port().into())));
        assert_eq!(string(&r, "handshake_trace.blame").as_deref(), Some("client"));
        assert_eq!(r.severity_number, SeverityNumber::Warn as i32);
        assert_eq!(r.event_name, EVENT_NAME);
        let Some(any_value::Value::StringValue(body)) = r.body.and_then(|b| b.value) else { panic!("no body") };
        let json: serde_json::Value = serde_json::from_str(&body).unwrap();
        assert_eq!(json["verdict"], "auth_failed");
        assert_eq!(json["error"]["code"], 1045);
    }

    #[test]
    fn a_server_side_failure_is_an_error() {
        let h = testing::handshakes_of(&testing::poll_timeout_events()).remove(0);
        let r = record(&h, &Clock::with_offset(0), std::time::UNIX_EPOCH);
        assert_eq!(string(&r, "error.type").as_deref(), Some("server_timeout"));
        assert!(attr(&r, "db.response.status_code").is_none());
        let blame = string(&r, "handshake_trace.blame").unwrap();
        let expected = if blame == "server" { SeverityNumber::Error } else { SeverityNumber::Warn };
        assert_eq!(r.severity_number, expected as i32);
        assert!(r.time_unix_nano >= 2_000_000_000, "ends after the 2 s wait: {}", r.time_unix_nano);
    }
}
