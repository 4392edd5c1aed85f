//! OTLP attributes: key-value helpers, the instrumentation scope, and the resource
//! (this host, the agent, and OTEL_RESOURCE_ATTRIBUTES / OTEL_SERVICE_NAME).
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, InstrumentationScope, KeyValue};

/// Resource attributes taken from the environment at most (a bound on what a stray
/// variable can make the agent send with every export).
const MAX_ENV_ATTRIBUTES: usize = 64;

fn attr(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue { key: key.to_string(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

pub fn string_attr(key: &str, value: &str) -> KeyValue {
    attr(key, any_value::Value::StringValue(value.to_string()))
}

pub fn int_attr(key: &str, value: i64) -> KeyValue {
    attr(key, any_value::Value::IntValue(value))
}

pub fn double_attr(key: &str, value: f64) -> KeyValue {
    attr(key, any_value::Value::DoubleValue(value))
}

/// Who made the data: this tool.
pub fn scope() -> InstrumentationScope {
    InstrumentationScope { name: "handshake-trace".into(), version: env!("CARGO_PKG_VERSION").into(), ..Default::default() }
}

/// The resource of every export: service.name (OTEL_SERVICE_NAME, else
/// "handshake-trace"), service.version, host.name, then OTEL_RESOURCE_ATTRIBUTES'
/// `key=value` pairs (percent-encoded values, as the specification says) for keys not
/// set already.
pub fn resource(env: impl Fn(&str) -> Option<String>, host_name: Option<String>) -> Vec<KeyValue> {
    let service = env("OTEL_SERVICE_NAME").filter(|s| !s.is_empty());
    let mut attrs = vec![
        string_attr("service.name", service.as_deref().unwrap_or("handshake-trace")),
        string_attr("service.version", env!("CARGO_PKG_VERSION")),
    ];
    if let Some(h) = host_name {
        attrs.push(string_attr("host.name", &h));
    }
    if let Some(list) = env("OTEL_RESOURCE_ATTRIBUTES") {
        for pair in list.split(',').take(MAX_ENV_ATTRIBUTES) {
            let Some((k, v)) = pair.split_once('=') else { continue };
            let (k, v) = (k.trim(), percent_decode(v.trim()));
            if k.is_empty() || attrs.iter().any(|a| a.key == k) {
                continue;
            }
            attrs.push(string_attr(k, &v));
        }
    }
    attrs
}

/// `%XX` escapes decoded; a malformed escape is kept as written.
pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// This host's name, from the kernel.
pub fn host_name() -> Option<String> {
    let name = std::fs::read_to_string("/proc/sys/kernel/hostname").ok()?;
    let name = name.trim();
    (!name.is_empty() && name.len() <= 255).then(|| name.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn value(attrs: &[KeyValue], key: &str) -> Option<String> {
        attrs.iter().find(|a| a.key == key).and_then(|a| match a.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.clone()),
            _ => None,
        })
    }

    #[test]
    fn the_resource_names_the_service_and_host_and_takes_the_environment() {
        let env = |k: &str| match k {
            "OTEL_SERVICE_NAME" => Some("db-handshakes".to_string()),
            "OTEL_RESOURCE_ATTRIBUTES" => Some("deployment.environment=prod,team=db%20ops,service.name=ignored,broken".to_string()),
            _ => None,
        };
        let r = resource(env, Some("db1".into()));
        assert_eq!(value(&r, "service.name").as_deref(), Some("db-handshakes"));
        assert_eq!(value(&r, "host.name").as_deref(), Some("db1"));
        assert_eq!(value(&r, "deployment.environment").as_deref(), Some("prod"));
        assert_eq!(value(&r, "team").as_deref(), Some("db ops"));
        assert_eq!(r.iter().filter(|a| a.key == "service.name").count(), 1);
        assert!(value(&r, "broken").is_none());
    }

    #[test]
    fn without_environment_the_service_is_handshake_trace() {
        let r = resource(|_| None, None);
        assert_eq!(value(&r, "service.name").as_deref(), Some("handshake-trace"));
        assert!(value(&r, "host.name").is_none());
    }

    #[test]
    fn percent_decoding_keeps_what_is_malformed() {
        assert_eq!(percent_decode("a%2Cb"), "a,b");
        assert_eq!(percent_decode("100%"), "100%");
        assert_eq!(percent_decode("%zz%4"), "%zz%4");
    }
}
