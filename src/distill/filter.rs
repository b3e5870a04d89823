//! The two-stage quality filter (spec §3, `filter.py`): drop the chunks whose variation rate
//! reaches the 90th percentile of all chunks, then, among the rest, those whose alignment gap
//! reaches the 90th percentile of theirs. Percentiles are NumPy's default (linear).
//!
//! The reference drops ties at the threshold (`>=`), which drops *every* chunk of a stage when at
//! least 90% of them share the minimum value (clean LLM output: most gaps are 0). The default
//! here drops only values above the threshold (`>`), which can never drop every chunk; `Ties::Drop`
//! reproduces the reference.

/// What happens to a chunk exactly at a stage's threshold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ties {
    /// Kept (the default: a stage never drops every chunk).
    Keep,
    /// Dropped, as the reference does.
    Drop,
}

/// `numpy.percentile(xs, p)` with the default linear method; `None` for no values.
pub fn percentile(xs: &[f64], p: f64) -> Option<f64> {
    if xs.is_empty() {
        return None;
    }
    let mut sorted = xs.to_vec();
    sorted.sort_by(f64::total_cmp);
    let h = (p / 100.0) * (sorted.len() - 1) as f64;
    let lo = h.floor() as usize;
    let hi = (lo + 1).min(sorted.len() - 1);
    Some(sorted[lo] + (h - lo as f64) * (sorted[hi] - sorted[lo]))
}

/// What the filter decided.
#[derive(Debug, Clone, PartialEq)]
pub struct Filtered {
    /// Indices of the chunks kept, in input order.
    pub kept: Vec<usize>,
    /// The stage thresholds (variation rate, alignment gap).
    pub thresholds: (Option<f64>, Option<f64>),
}

/// Filters chunks given as `(variation_rate, alignment_gap)`.
pub fn filter(chunks: &[(f64, f64)], percentile_p: f64, ties: Ties) -> Filtered {
    let drops = |v: f64, t: f64| match ties {
        Ties::Keep => v > t,
        Ties::Drop => v >= t,
    };
    let vr: Vec<f64> = chunks.iter().map(|c| c.0).collect();
    let t1 = percentile(&vr, percentile_p);
    let stage1: Vec<usize> = (0..chunks.len())
        .filter(|&i| t1.is_none_or(|t| !drops(chunks[i].0, t)))
        .collect();
    let ag: Vec<f64> = stage1.iter().map(|&i| chunks[i].1).collect();
    let t2 = percentile(&ag, percentile_p);
    let kept = stage1
        .into_iter()
        .filter(|&i| t2.is_none_or(|t| !drops(chunks[i].1, t)))
        .collect();
    Filtered {
        kept,
        thresholds: (t1, t2),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numpy_linear_percentile() {
        assert_eq!(percentile(&[1.0, 2.0, 3.0, 4.0], 90.0), Some(3.7));
        assert_eq!(percentile(&[5.0], 90.0), Some(5.0));
        assert_eq!(percentile(&[], 90.0), None);
    }

    #[test]
    fn reference_ties_drop_everything_the_default_does_not() {
        // The spec's tie example: 95 chunks with AG = 0 and 5 above; VR all distinct and low.
        let chunks: Vec<(f64, f64)> = (0..100)
            .map(|i| (i as f64 / 1000.0, if i < 95 { 0.0 } else { 0.2 }))
            .collect();
        let upstream = filter(&chunks, 90.0, Ties::Drop);
        assert_eq!(upstream.thresholds.1, Some(0.0));
        assert!(upstream.kept.is_empty(), "the reference keeps 0 of 100");
        let safe = filter(&chunks, 90.0, Ties::Keep);
        assert!(!safe.kept.is_empty());
        assert!(
            safe.kept
                .iter()
                .all(|&i| chunks[i].1 == 0.0 && chunks[i].0 <= 0.0891)
        );
    }

    #[test]
    fn two_stages_keep_about_81_percent_of_distinct_values() {
        let chunks: Vec<(f64, f64)> = (0..100)
            .map(|i| ((i * 37 % 100) as f64, (i * 53 % 100) as f64))
            .collect();
        let f = filter(&chunks, 90.0, Ties::Keep);
        assert!(
            f.kept
                .iter()
                .all(|&i| chunks[i].0 <= f.thresholds.0.unwrap())
        );
        assert!((80..=82).contains(&f.kept.len()), "{}", f.kept.len());
    }
}
