//! Percentile bootstrap with a fixed-seed PRNG, so that the same log always gives the same
//! confidence intervals.

use serde::{Deserialize, Serialize};

use crate::telemetry::live::quantile;

/// Resamples drawn for every interval.
pub const RESAMPLES: usize = 2000;
/// Seed of the report's PRNG (each statistic derives its own stream from it).
pub const SEED: u64 = 0x5EED_1A6E_2026_0001;
/// Two-sided coverage of the intervals.
pub const CONFIDENCE: f64 = 0.95;

/// SplitMix64 (Steele, Lea and Flood 2014): tiny, fast and good enough for resampling indices.
#[derive(Debug, Clone)]
pub struct SplitMix64 {
    state: u64,
}

impl SplitMix64 {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n` without modulo bias (Lemire's multiply-shift with rejection).
    /// `n` must be positive; `below(0)` returns 0.
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        let threshold = n.wrapping_neg() % n;
        loop {
            let m = u128::from(self.next_u64()) * u128::from(n);
            if (m as u64) >= threshold {
                return (m >> 64) as u64;
            }
        }
    }
}

/// A stream seed for the statistic called `label`: `seed` mixed with the FNV-1a hash of the label,
/// so that adding a statistic does not shift the others' streams.
pub fn stream_seed(seed: u64, label: &str) -> u64 {
    let mut h: u64 = 0xCBF2_9CE4_8422_2325;
    for b in label.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0100_0000_01B3);
    }
    seed ^ h
}

/// Resamples drawn from one PRNG stream; chunks run in parallel.
const CHUNK: usize = 250;

/// The column means of `resamples` bootstrap resamples of `rows` (drawn with replacement, the
/// same row indices for every column). Empty when `rows` is empty.
///
/// Resamples are drawn in chunks of [`CHUNK`], chunk `k` from its own stream seeded with
/// `seed + k`, and run in parallel; the result depends on `seed` alone, not on the thread count.
pub fn resample_means<const N: usize>(
    rows: &[[f64; N]],
    resamples: usize,
    seed: u64,
) -> Vec<[f64; N]> {
    use rayon::prelude::*;
    if rows.is_empty() {
        return Vec::new();
    }
    let n = rows.len() as u64;
    let chunks = resamples.div_ceil(CHUNK);
    let per_chunk: Vec<Vec<[f64; N]>> = (0..chunks)
        .into_par_iter()
        .map(|k| {
            let mut rng = SplitMix64::new(seed.wrapping_add(k as u64));
            let len = CHUNK.min(resamples - k * CHUNK);
            (0..len)
                .map(|_| {
                    let mut sum = [0.0; N];
                    for _ in 0..n {
                        let row = &rows[rng.below(n) as usize];
                        for (s, v) in sum.iter_mut().zip(row) {
                            *s += v;
                        }
                    }
                    sum.map(|s| s / n as f64)
                })
                .collect()
        })
        .collect();
    per_chunk.into_iter().flatten().collect()
}

/// Column means of `rows`.
pub fn means<const N: usize>(rows: &[[f64; N]]) -> Option<[f64; N]> {
    if rows.is_empty() {
        return None;
    }
    let mut sum = [0.0; N];
    for row in rows {
        for (s, v) in sum.iter_mut().zip(row) {
            *s += v;
        }
    }
    Some(sum.map(|s| s / rows.len() as f64))
}

/// A point estimate with its 95% percentile-bootstrap interval.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Estimate {
    pub value: f64,
    pub ci_low: f64,
    pub ci_high: f64,
}

impl Estimate {
    /// `value` with the percentile interval of the bootstrap replicates (non-finite replicates
    /// are dropped); `None` when no finite replicate is left.
    pub fn from_replicates(value: f64, replicates: &[f64]) -> Option<Self> {
        let finite: Vec<f64> = replicates
            .iter()
            .copied()
            .filter(|v| v.is_finite())
            .collect();
        let alpha = (1.0 - CONFIDENCE) / 2.0;
        Some(Self {
            value,
            ci_low: quantile(&finite, alpha)?,
            ci_high: quantile(&finite, 1.0 - alpha)?,
        })
    }

    /// Whether `x` lies inside the interval.
    pub fn covers(&self, x: f64) -> bool {
        self.ci_low <= x && x <= self.ci_high
    }

    /// `ci_high - ci_low`.
    pub fn width(&self) -> f64 {
        self.ci_high - self.ci_low
    }

    /// Every figure multiplied by `k` (a non-negative `k` keeps the interval's order).
    pub fn scaled(&self, k: f64) -> Self {
        Self {
            value: self.value * k,
            ci_low: self.ci_low * k,
            ci_high: self.ci_high * k,
        }
    }
}

/// `1 - compressed / raw`, or NaN when `raw` is zero.
pub fn relative_saving(compressed: f64, raw: f64) -> f64 {
    if raw == 0.0 {
        f64::NAN
    } else {
        1.0 - compressed / raw
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splitmix_reference_values() {
        // First outputs of SplitMix64 seeded with 1234567 (the reference C implementation).
        let mut r = SplitMix64::new(1_234_567);
        assert_eq!(r.next_u64(), 6_457_827_717_110_365_317);
        assert_eq!(r.next_u64(), 3_203_168_211_198_807_973);
        assert_eq!(r.next_u64(), 9_817_491_932_198_370_423);
    }

    #[test]
    fn below_is_in_range_and_roughly_uniform() {
        let mut r = SplitMix64::new(7);
        let mut counts = [0u32; 6];
        for _ in 0..60_000 {
            let i = r.below(6);
            assert!(i < 6);
            counts[i as usize] += 1;
        }
        // Each bucket expects 10 000; 5 sigma is about 456.
        for c in counts {
            assert!((9_500..=10_500).contains(&c), "{counts:?}");
        }
        assert_eq!(r.below(1), 0);
        assert_eq!(r.below(0), 0);
    }

    #[test]
    fn same_seed_same_stream_and_labels_differ() {
        let a: Vec<u64> = {
            let mut r = SplitMix64::new(stream_seed(SEED, "x"));
            (0..5).map(|_| r.next_u64()).collect()
        };
        let b: Vec<u64> = {
            let mut r = SplitMix64::new(stream_seed(SEED, "x"));
            (0..5).map(|_| r.next_u64()).collect()
        };
        let c: Vec<u64> = {
            let mut r = SplitMix64::new(stream_seed(SEED, "y"));
            (0..5).map(|_| r.next_u64()).collect()
        };
        assert_eq!(a, b);
        assert_ne!(a, c);
    }

    #[test]
    fn resampling_is_reproducible_and_uses_every_chunk_stream() {
        let rows: Vec<[f64; 1]> = (0..50).map(|i| [f64::from(i)]).collect();
        let a = resample_means(&rows, 777, 9);
        assert_eq!(a, resample_means(&rows, 777, 9));
        assert_ne!(a, resample_means(&rows, 777, 10));
        // The first chunk is the first CHUNK resamples of a longer run.
        assert_eq!(a[..CHUNK], resample_means(&rows, CHUNK, 9)[..]);
        // No two chunks repeat each other.
        assert_ne!(a[..CHUNK], a[CHUNK..2 * CHUNK]);
    }

    #[test]
    fn bootstrap_of_a_constant_is_degenerate() {
        let rows = vec![[3.0, 5.0]; 10];
        let reps = resample_means(&rows, 1001, 1);
        assert_eq!(reps.len(), 1001);
        assert!(reps.iter().all(|m| *m == [3.0, 5.0]));
        assert!(resample_means::<1>(&[], 100, 1).is_empty());
    }

    #[test]
    fn bootstrap_interval_covers_the_mean_and_matches_the_standard_error() {
        // 0, 1, ..., 99: mean 49.5, population sd 28.87, standard error of the mean 2.887,
        // so a 95% interval is about 49.5 ± 5.66.
        let rows: Vec<[f64; 1]> = (0..100).map(|i| [f64::from(i)]).collect();
        let reps: Vec<f64> = resample_means(&rows, RESAMPLES, stream_seed(SEED, "t"))
            .iter()
            .map(|m| m[0])
            .collect();
        let mean = means(&rows).map(|m| m[0]).unwrap_or(f64::NAN);
        assert_eq!(mean, 49.5);
        let e = Estimate::from_replicates(mean, &reps).unwrap();
        assert!(e.covers(49.5));
        assert!((e.width() - 2.0 * 5.66).abs() < 1.5, "{e:?}");
        // The replicates' own mean is close to the sample mean.
        let rep_mean = reps.iter().sum::<f64>() / reps.len() as f64;
        assert!((rep_mean - 49.5).abs() < 0.3, "{rep_mean}");
    }

    #[test]
    fn interval_narrows_with_more_data() {
        let small: Vec<[f64; 1]> = (0..20).map(|i| [f64::from(i % 10)]).collect();
        let large: Vec<[f64; 1]> = (0..2000).map(|i| [f64::from(i % 10)]).collect();
        let width = |rows: &[[f64; 1]]| {
            let reps: Vec<f64> = resample_means(rows, RESAMPLES, SEED)
                .iter()
                .map(|m| m[0])
                .collect();
            Estimate::from_replicates(4.5, &reps).unwrap().width()
        };
        // Width shrinks like 1/sqrt(n): 100x the data, about a tenth of the width.
        let (ws, wl) = (width(&small), width(&large));
        assert!(wl < ws / 5.0 && wl > ws / 20.0, "{ws} {wl}");
    }

    #[test]
    fn estimates_drop_non_finite_replicates() {
        let e = Estimate::from_replicates(0.5, &[f64::NAN, 0.1, 0.9, f64::INFINITY]).unwrap();
        assert_eq!((e.ci_low, e.ci_high), (0.1, 0.9));
        assert!(Estimate::from_replicates(0.5, &[f64::NAN]).is_none());
        assert!(relative_saving(1.0, 0.0).is_nan());
        assert_eq!(relative_saving(1.0, 4.0), 0.75);
    }
}
