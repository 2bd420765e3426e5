//! Latency histograms: microseconds in an HdrHistogram, sent from the workers to
//! the coordinator in the V2 format (base64), merged there and summarised.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use hdrhistogram::Histogram;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde::Serialize;

/// Highest latency recorded exactly: 5 minutes, in microseconds; anything longer
/// counts as this.
const HIGHEST_US: u64 = 300_000_000;

/// An empty histogram of latencies in microseconds (3 significant digits).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, HIGHEST_US, 3).expect("valid histogram bounds")
}

/// The histogram in the V2 format, base64.
pub fn encode(histogram: &Histogram<u64>) -> Result<String, String> {
    let mut bytes = Vec::new();
    V2Serializer::new()
        .serialize(histogram, &mut bytes)
        .map_err(|e| format!("histogram: {e:?}"))?;
    Ok(BASE64.encode(bytes))
}

/// The histogram of [`encode`]'s text.
pub fn decode(text: &str) -> Result<Histogram<u64>, String> {
    let bytes = BASE64.decode(text).map_err(|e| format!("histogram: {e}"))?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("histogram: {e:?}"))
}

/// Percentiles of a histogram, in milliseconds.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct Summary {
    /// Median.
    pub p50: f64,
    /// 90th percentile.
    pub p90: f64,
    /// 99th percentile.
    pub p99: f64,
    /// 99.9th percentile.
    pub p999: f64,
    /// Largest.
    pub max: f64,
    /// Mean.
    pub mean: f64,
}

impl Summary {
    /// Summarises `histogram` (all zeros when it is empty).
    pub fn of(histogram: &Histogram<u64>) -> Summary {
        if histogram.is_empty() {
            return Summary::default();
        }
        let ms = |us: u64| us as f64 / 1000.0;
        Summary {
            p50: ms(histogram.value_at_quantile(0.50)),
            p90: ms(histogram.value_at_quantile(0.90)),
            p99: ms(histogram.value_at_quantile(0.99)),
            p999: ms(histogram.value_at_quantile(0.999)),
            max: ms(histogram.max()),
            mean: histogram.mean() / 1000.0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_summarises() {
        let mut h = histogram();
        for us in 1..=1000 {
            h.record(us).unwrap();
        }
        h.saturating_record(u64::MAX);
        let back = decode(&encode(&h).unwrap()).unwrap();
        assert_eq!(back, h);
        let summary = Summary::of(&back);
        assert!((summary.p50 - 0.5).abs() < 0.01, "{summary:?}");
        assert!((summary.p99 - 0.99).abs() < 0.01, "{summary:?}");
        assert!(summary.max >= 300_000.0, "{summary:?}");
        assert_eq!(Summary::of(&histogram()).p99, 0.0);
        assert!(decode("not base64!").is_err());
    }
}
