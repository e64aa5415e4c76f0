//! Latency samples and their summary: medians and percentiles by the nearest-rank method, in
//! milliseconds, as the report prints them.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Serialize;

/// Latencies of one kind of request, and the failures met on the way, by kind.
#[derive(Clone, Debug, Default)]
pub struct Samples {
    times: Vec<Duration>,
    errors: BTreeMap<String, u64>,
    first_error: Option<String>,
}

impl Samples {
    /// Records a successful request that took `took`.
    pub fn push(&mut self, took: Duration) {
        self.times.push(took);
    }

    /// Records a failed request: counted under `kind`; the first message is kept as an example.
    pub fn fail(&mut self, kind: String, message: String) {
        *self.errors.entry(kind).or_default() += 1;
        self.first_error.get_or_insert(message);
    }

    /// Adds another set of samples to this one.
    pub fn merge(&mut self, other: Samples) {
        self.times.extend(other.times);
        for (kind, n) in other.errors {
            *self.errors.entry(kind).or_default() += n;
        }
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
    }

    /// How many requests succeeded.
    pub fn len(&self) -> usize {
        self.times.len()
    }

    /// The summary.
    pub fn summary(&self) -> Summary {
        let mut ms: Vec<f64> = self.times.iter().map(|d| d.as_secs_f64() * 1e3).collect();
        ms.sort_by(f64::total_cmp);
        let n = ms.len();
        let mean = if n == 0 {
            0.0
        } else {
            ms.iter().sum::<f64>() / n as f64
        };
        let sd = if n < 2 {
            0.0
        } else {
            (ms.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64).sqrt()
        };
        Summary {
            n,
            errors: self.errors.values().sum(),
            errors_by_kind: self.errors.clone(),
            first_error: self.first_error.clone(),
            min_ms: ms.first().copied().unwrap_or(0.0),
            p25_ms: rank(&ms, 0.25),
            median_ms: rank(&ms, 0.50),
            p75_ms: rank(&ms, 0.75),
            p90_ms: rank(&ms, 0.90),
            p99_ms: rank(&ms, 0.99),
            max_ms: ms.last().copied().unwrap_or(0.0),
            mean_ms: mean,
            sd_ms: sd,
        }
    }

    /// The raw times in seconds (hyperfine's `times`).
    pub fn seconds(&self) -> Vec<f64> {
        self.times.iter().map(Duration::as_secs_f64).collect()
    }
}

/// The nearest-rank percentile `p` (0..=1) of sorted `xs`; 0 when empty.
fn rank(xs: &[f64], p: f64) -> f64 {
    if xs.is_empty() {
        return 0.0;
    }
    let index = ((p * xs.len() as f64).ceil() as usize).clamp(1, xs.len()) - 1;
    xs[index]
}

/// A summary of [`Samples`], in milliseconds.
#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    /// Successful requests.
    pub n: usize,
    /// Failed requests.
    pub errors: u64,
    /// Failed requests by kind (the Varlink error's name, or `transport`).
    pub errors_by_kind: BTreeMap<String, u64>,
    /// The first failure's message, as an example.
    pub first_error: Option<String>,
    /// Fastest.
    pub min_ms: f64,
    /// 25th percentile.
    pub p25_ms: f64,
    /// Median.
    pub median_ms: f64,
    /// 75th percentile.
    pub p75_ms: f64,
    /// 90th percentile.
    pub p90_ms: f64,
    /// 99th percentile.
    pub p99_ms: f64,
    /// Slowest.
    pub max_ms: f64,
    /// Mean.
    pub mean_ms: f64,
    /// Sample standard deviation.
    pub sd_ms: f64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank() {
        let mut s = Samples::default();
        for ms in 1..=100 {
            s.push(Duration::from_millis(ms));
        }
        let sum = s.summary();
        assert_eq!(sum.n, 100);
        assert!((sum.median_ms - 50.0).abs() < 1e-9);
        assert!((sum.p99_ms - 99.0).abs() < 1e-9);
        assert!((sum.max_ms - 100.0).abs() < 1e-9);
        assert_eq!(Samples::default().summary().median_ms, 0.0);
    }
}
