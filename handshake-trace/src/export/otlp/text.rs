//! The agent's own /metrics text (OpenMetrics, as prometheus-client writes it) read back
//! into families and series, so that OTLP exports exactly what /metrics serves.
//! Only what that encoder writes is understood: counters, gauges and histograms.

/// A metric family's kind, from its `# TYPE` line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// A sample's value as written: integers stay integers.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Value {
    Int(i64),
    Double(f64),
}

impl Value {
    fn parse(s: &str) -> Option<Value> {
        if let Ok(i) = s.parse::<i64>() {
            return Some(Value::Int(i));
        }
        match s {
            "+Inf" => Some(Value::Double(f64::INFINITY)),
            "-Inf" => Some(Value::Double(f64::NEG_INFINITY)),
            "NaN" => Some(Value::Double(f64::NAN)),
            _ => s.parse::<f64>().ok().map(Value::Double),
        }
    }

    pub fn as_f64(self) -> f64 {
        match self {
            Value::Int(i) => i as f64,
            Value::Double(d) => d,
        }
    }
}

/// One series of a counter or gauge.
#[derive(Debug, Clone, PartialEq)]
pub struct Point {
    pub labels: Vec<(String, String)>,
    pub value: Value,
}

/// One series of a histogram: cumulative bucket counts by upper bound, as written.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct HistogramPoint {
    pub labels: Vec<(String, String)>,
    /// (upper bound, cumulative count), in the order written (ascending, +Inf last).
    pub buckets: Vec<(f64, u64)>,
    pub sum: f64,
    pub count: u64,
}

/// A metric family.
#[derive(Debug, Clone, PartialEq)]
pub struct Family {
    pub name: String,
    pub help: String,
    pub unit: String,
    pub kind: Kind,
    pub points: Vec<Point>,
    pub histograms: Vec<HistogramPoint>,
}

/// Parse the exposition text; lines it does not understand are an error (the text is our own).
pub fn parse(text: &str) -> Result<Vec<Family>, String> {
    let mut families: Vec<Family> = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let bad = |what: &str| format!("metrics text line {}: {what}: {line:?}", n + 1);
        if line.is_empty() || line == "# EOF" {
            continue;
        }
        if let Some(rest) = line.strip_prefix("# ") {
            let (keyword, rest) = rest.split_once(' ').ok_or_else(|| bad("comment"))?;
            let (name, arg) = rest.split_once(' ').unwrap_or((rest, ""));
            match keyword {
                "TYPE" => {
                    let kind = match arg {
                        "counter" => Kind::Counter,
                        "gauge" => Kind::Gauge,
                        "histogram" => Kind::Histogram,
                        _ => return Err(bad("metric type")),
                    };
                    match families.iter_mut().find(|f| f.name == name) {
                        Some(f) => f.kind = kind,
                        None => families.push(Family::new(name, kind)),
                    }
                }
                "HELP" | "UNIT" => {
                    if families.last().is_none_or(|f| f.name != name) {
                        families.push(Family::new(name, Kind::Gauge));
                    }
                    let f = families.last_mut().expect("pushed above");
                    if keyword == "HELP" {
                        f.help = unescape(arg);
                    } else {
                        f.unit = arg.to_string();
                    }
                }
                _ => return Err(bad("comment keyword")),
            }
            continue;
        }
        let (name, labels, value) = sample(line).ok_or_else(|| bad("sample"))?;
        let family = families.iter_mut().rev().find(|f| belongs(&f.name, f.kind, name)).ok_or_else(|| bad("sample before its # TYPE"))?;
        family.add(name, labels, value).ok_or_else(|| bad("sample of its family"))?;
    }
    Ok(families)
}

impl Family {
    fn new(name: &str, kind: Kind) -> Family {
        Family { name: name.to_string(), help: String::new(), unit: String::new(), kind, points: Vec::new(), histograms: Vec::new() }
    }

    fn add(&mut self, sample_name: &str, mut labels: Vec<(String, String)>, value: Value) -> Option<()> {
        if self.kind != Kind::Histogram {
            self.points.push(Point { labels, value });
            return Some(());
        }
        let suffix = &sample_name[self.name.len()..];
        let le = match suffix {
            "_bucket" => {
                let i = labels.iter().position(|(k, _)| k == "le")?;
                let (_, le) = labels.remove(i);
                Some(Value::parse(&le)?.as_f64())
            }
            "_sum" | "_count" => None,
            _ => return None,
        };
        let h = match self.histograms.iter().position(|h| h.labels == labels) {
            Some(i) => &mut self.histograms[i],
            None => {
                self.histograms.push(HistogramPoint { labels, ..Default::default() });
                self.histograms.last_mut().expect("pushed")
            }
        };
        match (suffix, le) {
            ("_bucket", Some(le)) => h.buckets.push((le, value.as_f64() as u64)),
            ("_sum", _) => h.sum = value.as_f64(),
            _ => h.count = value.as_f64() as u64,
        }
        Some(())
    }
}

// A counter's samples end in _total; a histogram's in _bucket, _sum, _count.
fn belongs(family: &str, kind: Kind, sample: &str) -> bool {
    let Some(suffix) = sample.strip_prefix(family) else { return false };
    match kind {
        Kind::Counter => suffix == "_total",
        Kind::Gauge => suffix.is_empty(),
        Kind::Histogram => matches!(suffix, "_bucket" | "_sum" | "_count"),
    }
}

// `name{a="x",b="y"} value`, or `name value`.
fn sample(line: &str) -> Option<(&str, Vec<(String, String)>, Value)> {
    let name_end = line.find(['{', ' '])?;
    let name = &line[..name_end];
    let mut rest = &line[name_end..];
    let mut labels = Vec::new();
    if let Some(body) = rest.strip_prefix('{') {
        let mut chars = body.char_indices().peekable();
        loop {
            let (start, c) = chars.next()?;
            if c == '}' {
                rest = &body[start + 1..];
                break;
            }
            if c == ',' {
                continue;
            }
            let eq = body[start..].find("=\"")? + start;
            let key = body[start..eq].to_string();
            while chars.peek().is_some_and(|(i, _)| *i <= eq + 1) {
                chars.next();
            }
            let mut value = String::new();
            loop {
                let (_, c) = chars.next()?;
                match c {
                    '"' => break,
                    '\\' => match chars.next()?.1 {
                        'n' => value.push('\n'),
                        other => value.push(other),
                    },
                    other => value.push(other),
                }
            }
            labels.push((key, value));
        }
    }
    // A value, then perhaps a timestamp or an exemplar (neither is written by the agent).
    let value = rest.split_whitespace().next()?;
    Some((name, labels, Value::parse(value)?))
}

fn unescape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        match (c, c == '\\') {
            (_, true) => match chars.next() {
                Some('n') => out.push('\n'),
                Some(o) => out.push(o),
                None => out.push('\\'),
            },
            (c, false) => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = r#"# HELP handshake_trace_handshakes Finished handshakes "by" verdict.
# TYPE handshake_trace_handshakes counter
handshake_trace_handshakes_total{server="127.0.0.1:3306",verdict="ok",blame="none",mechanism="none"} 5
handshake_trace_handshakes_total{server="127.0.0.1:3306",verdict="auth_failed",blame="client",mechanism="none"} 2
# HELP handshake_trace_targets Server processes traced.
# TYPE handshake_trace_targets gauge
handshake_trace_targets 1
# HELP handshake_trace_handshake_phase_seconds Handshake phase durations.
# TYPE handshake_trace_handshake_phase_seconds histogram
# UNIT handshake_trace_handshake_phase_seconds seconds
handshake_trace_handshake_phase_seconds_sum{server="127.0.0.1:3306",phase="total"} 0.25
handshake_trace_handshake_phase_seconds_count{server="127.0.0.1:3306",phase="total"} 3
handshake_trace_handshake_phase_seconds_bucket{le="0.001",server="127.0.0.1:3306",phase="total"} 1
handshake_trace_handshake_phase_seconds_bucket{le="0.1",server="127.0.0.1:3306",phase="total"} 2
handshake_trace_handshake_phase_seconds_bucket{le="+Inf",server="127.0.0.1:3306",phase="total"} 3
# HELP process_cpu_seconds CPU time of the agent.
# TYPE process_cpu_seconds counter
# UNIT process_cpu_seconds seconds
process_cpu_seconds_total 0.125
# EOF
"#;

    #[test]
    fn counters_gauges_and_histograms_are_read_back() {
        let f = parse(TEXT).unwrap();
        assert_eq!(f.iter().map(|f| (f.name.as_str(), f.kind)).collect::<Vec<_>>(), vec![
            ("handshake_trace_handshakes", Kind::Counter),
            ("handshake_trace_targets", Kind::Gauge),
            ("handshake_trace_handshake_phase_seconds", Kind::Histogram),
            ("process_cpu_seconds", Kind::Counter),
        ]);
        assert_eq!(f[0].help, "Finished handshakes \"by\" verdict.");
        assert_eq!(f[0].points.len(), 2);
        assert_eq!(f[0].points[1].value, Value::Int(2));
        assert_eq!(f[0].points[1].labels[1], ("verdict".to_string(), "auth_failed".to_string()));
        assert_eq!(f[1].points, vec![Point { labels: vec![], value: Value::Int(1) }]);
        let h = &f[2].histograms[0];
        assert_eq!(f[2].unit, "seconds");
        assert_eq!(h.labels, vec![("server".into(), "127.0.0.1:3306".into()), ("phase".into(), "total".into())]);
        assert_eq!(h.buckets, vec![(0.001, 1), (0.1, 2), (f64::INFINITY, 3)]);
        assert_eq!((h.sum, h.count), (0.25, 3));
        assert_eq!(f[3].points[0].value, Value::Double(0.125));
    }

    #[test]
    fn escaped_label_values_are_unescaped() {
        let text = "# TYPE x counter\nx_total{a=\"q\\\"u\\\\o\\nte\",b=\"{,}\"} 1\n";
        let f = parse(text).unwrap();
        assert_eq!(f[0].points[0].labels, vec![("a".into(), "q\"u\\o\nte".into()), ("b".into(), "{,}".into())]);
    }

    #[test]
    fn text_it_does_not_know_is_an_error() {
        assert!(parse("x_total 1\n").unwrap_err().contains("before its # TYPE"));
        assert!(parse("# TYPE x summary\n").unwrap_err().contains("metric type"));
        assert!(parse("# TYPE x counter\nx_total{a=\"1\" 1\n").is_err());
        assert!(parse("# TYPE x counter\nx_total one\n").is_err());
    }
}
