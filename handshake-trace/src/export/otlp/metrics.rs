//! /metrics' families as an OTLP `ExportMetricsServiceRequest`: counters as cumulative
//! monotonic sums, gauges as gauges, histograms as cumulative explicit-bucket histograms
//! (OTLP counts each bucket on its own where Prometheus counts up to each bound).
use opentelemetry_proto::tonic::{
    collector::metrics::v1::ExportMetricsServiceRequest,
    common::v1::KeyValue,
    metrics::v1::{
        metric::Data, number_data_point, AggregationTemporality, Gauge, Histogram, HistogramDataPoint, Metric, NumberDataPoint,
        ResourceMetrics, ScopeMetrics, Sum,
    },
    resource::v1::Resource,
};

use super::{
    attrs::{scope, string_attr},
    text::{Family, Kind, Value},
};

/// Start of the cumulative series (the agent's start) and now, in ns since the epoch.
#[derive(Debug, Clone, Copy)]
pub struct Times {
    pub start_unix_ns: u64,
    pub now_unix_ns: u64,
}

/// The whole request for one export.
pub fn request(families: &[Family], resource: &[KeyValue], t: Times) -> ExportMetricsServiceRequest {
    let metrics = families.iter().filter_map(|f| metric(f, t)).collect();
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource { attributes: resource.to_vec(), ..Default::default() }),
            scope_metrics: vec![ScopeMetrics { scope: Some(scope()), metrics, schema_url: String::new() }],
            schema_url: String::new(),
        }],
    }
}

fn attributes(labels: &[(String, String)]) -> Vec<KeyValue> {
    labels.iter().map(|(k, v)| string_attr(k, v)).collect()
}

fn number(labels: &[(String, String)], value: Value, t: Times) -> NumberDataPoint {
    NumberDataPoint {
        attributes: attributes(labels),
        start_time_unix_nano: t.start_unix_ns,
        time_unix_nano: t.now_unix_ns,
        value: Some(match value {
            Value::Int(i) => number_data_point::Value::AsInt(i),
            Value::Double(d) => number_data_point::Value::AsDouble(d),
        }),
        ..Default::default()
    }
}

// UCUM, as OTLP expects: the units /metrics uses.
fn unit(prometheus: &str) -> String {
    match prometheus {
        "seconds" => "s".into(),
        "bytes" => "By".into(),
        other => other.into(),
    }
}

fn metric(f: &Family, t: Times) -> Option<Metric> {
    let data = match f.kind {
        Kind::Counter => Data::Sum(Sum {
            data_points: f.points.iter().map(|p| number(&p.labels, p.value, t)).collect(),
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
            is_monotonic: true,
        }),
        Kind::Gauge => Data::Gauge(Gauge { data_points: f.points.iter().map(|p| number(&p.labels, p.value, t)).collect() }),
        Kind::Histogram => Data::Histogram(Histogram {
            data_points: f.histograms.iter().map(|h| histogram_point(h, t)).collect(),
            aggregation_temporality: AggregationTemporality::Cumulative as i32,
        }),
    };
    let empty = match &data {
        Data::Sum(s) => s.data_points.is_empty(),
        Data::Gauge(g) => g.data_points.is_empty(),
        Data::Histogram(h) => h.data_points.is_empty(),
        _ => false,
    };
    (!empty).then(|| Metric { name: f.name.clone(), description: f.help.clone(), unit: unit(&f.unit), metadata: Vec::new(), data: Some(data) })
}

fn histogram_point(h: &super::text::HistogramPoint, t: Times) -> HistogramDataPoint {
    let mut bounds = Vec::with_capacity(h.buckets.len());
    let mut counts = Vec::with_capacity(h.buckets.len() + 1);
    let mut below = 0u64;
    for &(le, cumulative) in &h.buckets {
        if le.is_finite() {
            bounds.push(le);
        }
        counts.push(cumulative.saturating_sub(below));
        below = cumulative;
    }
    // Without a +Inf bucket line, what lies above the last bound comes from the count.
    if h.buckets.last().is_none_or(|(le, _)| le.is_finite()) {
        counts.push(h.count.saturating_sub(below));
    }
    HistogramDataPoint {
        attributes: attributes(&h.labels),
        start_time_unix_nano: t.start_unix_ns,
        time_unix_nano: t.now_unix_ns,
        count: h.count,
        sum: Some(h.sum),
        bucket_counts: counts,
        explicit_bounds: bounds,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::export::otlp::text;

    const T: Times = Times { start_unix_ns: 1_000, now_unix_ns: 2_000 };

    fn one(text: &str) -> Metric {
        let req = request(&text::parse(text).unwrap(), &[], T);
        let mut m = req.resource_metrics[0].scope_metrics[0].metrics.clone();
        assert_eq!(m.len(), 1);
        m.remove(0)
    }

    #[test]
    fn a_counter_is_a_cumulative_monotonic_sum() {
        let m = one("# HELP c Help.\n# TYPE c counter\nc_total{verdict=\"ok\"} 7\n");
        assert_eq!((m.name.as_str(), m.description.as_str()), ("c", "Help."));
        let Some(Data::Sum(s)) = m.data else { panic!("{m:?}") };
        assert!(s.is_monotonic);
        assert_eq!(s.aggregation_temporality, AggregationTemporality::Cumulative as i32);
        assert_eq!(s.data_points[0].value, Some(number_data_point::Value::AsInt(7)));
        assert_eq!((s.data_points[0].start_time_unix_nano, s.data_points[0].time_unix_nano), (1_000, 2_000));
        assert_eq!(s.data_points[0].attributes, vec![string_attr("verdict", "ok")]);
    }

    #[test]
    fn a_gauge_keeps_its_unit_in_ucum() {
        let m = one("# TYPE g gauge\n# UNIT g bytes\ng 1.5\n");
        assert_eq!(m.unit, "By");
        let Some(Data::Gauge(g)) = m.data else { panic!("{m:?}") };
        assert_eq!(g.data_points[0].value, Some(number_data_point::Value::AsDouble(1.5)));
    }

    #[test]
    fn histogram_buckets_are_counted_one_by_one() {
        let m = one("# TYPE h histogram\nh_sum 3.5\nh_count 6\nh_bucket{le=\"0.1\"} 1\nh_bucket{le=\"1.0\"} 4\nh_bucket{le=\"+Inf\"} 6\n");
        let Some(Data::Histogram(h)) = m.data else { panic!("{m:?}") };
        let p = &h.data_points[0];
        assert_eq!(p.explicit_bounds, vec![0.1, 1.0]);
        assert_eq!(p.bucket_counts, vec![1, 3, 2]);
        assert_eq!(p.bucket_counts.iter().sum::<u64>(), p.count);
        assert_eq!(p.sum, Some(3.5));
    }

    #[test]
    fn a_family_without_series_is_left_out() {
        let req = request(&text::parse("# TYPE c counter\n# TYPE g gauge\ng 1\n").unwrap(), &[], T);
        let names: Vec<_> = req.resource_metrics[0].scope_metrics[0].metrics.iter().map(|m| m.name.clone()).collect();
        assert_eq!(names, vec!["g"]);
    }
}
