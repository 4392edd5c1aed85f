//! Bounded latency statistics for the exit summary: a log-bucket histogram
//! (5 % resolution from 1 µs to ~19 h) whose memory does not grow with traffic.
const BUCKETS: usize = 512;
const RATIO: f64 = 1.05;
const MIN_NS: f64 = 1_000.0;

#[derive(Debug, Clone)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max_ns: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram { counts: vec![0; BUCKETS], total: 0, max_ns: 0 }
    }
}

fn bucket(ns: u64) -> usize {
    if (ns as f64) <= MIN_NS {
        return 0;
    }
    (((ns as f64) / MIN_NS).ln() / RATIO.ln()).ceil().min((BUCKETS - 1) as f64) as usize
}

/// The upper bound of a bucket, in ns.
fn upper(b: usize) -> f64 {
    MIN_NS * RATIO.powi(b as i32)
}

impl Histogram {
    pub fn record(&mut self, ns: u64) {
        self.counts[bucket(ns)] += 1;
        self.total += 1;
        self.max_ns = self.max_ns.max(ns);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    /// The q-quantile (0..=1) in ms, within 5 %; None when empty.
    pub fn quantile_ms(&self, q: f64) -> Option<f64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (b, c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(upper(b).min(self.max_ns as f64) / 1e6);
            }
        }
        Some(self.max_ns as f64 / 1e6)
    }

    pub fn max_ms(&self) -> Option<f64> {
        (self.total > 0).then(|| self.max_ns as f64 / 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_are_within_five_percent() {
        let mut h = Histogram::default();
        for ms in 1..=1000u64 {
            h.record(ms * 1_000_000);
        }
        let p50 = h.quantile_ms(0.5).unwrap();
        let p99 = h.quantile_ms(0.99).unwrap();
        assert!((p50 - 500.0).abs() / 500.0 <= 0.05, "{p50}");
        assert!((p99 - 990.0).abs() / 990.0 <= 0.05, "{p99}");
        assert_eq!(h.max_ms(), Some(1000.0));
        assert_eq!(h.count(), 1000);
    }

    #[test]
    fn empty_and_tiny_values() {
        let mut h = Histogram::default();
        assert_eq!(h.quantile_ms(0.5), None);
        h.record(0);
        h.record(10);
        assert!(h.quantile_ms(1.0).unwrap() <= 0.001);
        // A huge value lands in the last bucket without overflow; max stays exact.
        h.record(u64::MAX / 2);
        assert_eq!(h.max_ms(), Some((u64::MAX / 2) as f64 / 1e6));
    }
}
