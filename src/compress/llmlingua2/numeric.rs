//! The reference's NumPy/Python arithmetic, reproduced bit for bit (spec §2.10).
//!
//! The reference mixes NumPy `float32` scalars (model probabilities) with Python floats (forced
//! `1.0`, drop-consecutive `0.0`). Which one a value is decides the dtype of the array handed to
//! `np.percentile`, and that dtype decides the precision of its interpolation. [`Prob`] keeps that
//! distinction; [`percentile`] implements NumPy's "linear" method for both NumPy 1.x and 2.x.

use std::cmp::Ordering;

/// A probability as the reference holds it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Prob {
    /// A NumPy `float32` scalar.
    F32(f32),
    /// A Python `float` (or a NumPy `float64`): anything that makes a list's array float64.
    F64(f64),
}

impl Prob {
    /// The exact value, widened to f64 (widening an f32 is exact).
    pub fn value(self) -> f64 {
        match self {
            Prob::F32(v) => f64::from(v),
            Prob::F64(v) => v,
        }
    }

    pub fn is_f32(self) -> bool {
        matches!(self, Prob::F32(_))
    }
}

/// Python's `sum(values) / len(values)` over a word's token probabilities.
///
/// `sum` starts from the Python int `0`. Under NumPy 2 (NEP 50) `0 + f32`, `float + f32` and
/// `f32 / int` all stay float32, so the mean is accumulated left to right and divided in f32
/// unless every element is a Python float. Under NumPy 1 (value-based casting of scalars)
/// `0 + f32` is already float64, so everything is accumulated and divided in f64.
/// Returns `None` for an empty list (Python raises `ZeroDivisionError`).
pub fn python_mean(values: &[Prob], numpy1: bool) -> Option<Prob> {
    if values.is_empty() {
        return None;
    }
    let n = values.len();
    if numpy1 {
        let sum = values.iter().fold(0.0_f64, |acc, p| acc + p.value());
        return Some(Prob::F64(sum / n as f64));
    }
    if values.iter().any(|p| p.is_f32()) {
        // Python floats here are forced 1.0 / 0.0: exactly representable in f32, and once the
        // accumulator is float32 every addition happens in f32. Before the first f32 element the
        // accumulator holds small exact integers, so starting in f32 is equivalent.
        let sum = values.iter().fold(0.0_f32, |acc, p| acc + p.value() as f32);
        Some(Prob::F32(sum / n as f32))
    } else {
        let sum = values.iter().fold(0.0_f64, |acc, p| acc + p.value());
        Some(Prob::F64(sum / n as f64))
    }
}

/// `np.percentile(values, q)` (method "linear") on the array NumPy builds from `values`: float32
/// when every element is an f32 scalar, float64 otherwise. `q` must be in `0..=100`.
/// Returns `None` for an empty list (NumPy raises `IndexError`).
pub fn percentile(values: &[Prob], q: u32, numpy1: bool) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let all_f32 = values.iter().all(|p| p.is_f32());
    let mut sorted: Vec<f64> = values.iter().map(|p| p.value()).collect();
    sorted.sort_by(|a, b| a.partial_cmp(b).unwrap_or(Ordering::Equal));
    let n = sorted.len();
    let g = f64::from(q.min(100)) / 100.0;
    let v = (n as f64 - 1.0) * g;
    if v >= (n - 1) as f64 {
        return Some(sorted[n - 1]);
    }
    let lo = v.floor();
    let t = v - lo;
    let lo = lo as usize;
    let (a, b) = (sorted[lo], sorted[lo + 1]);
    Some(if all_f32 {
        let (a32, b32) = (a as f32, b as f32);
        let d = b32 - a32;
        if numpy1 {
            // NumPy 1.x: the difference in f32, then promoted by the f64 gamma array.
            let d = f64::from(d);
            if t >= 0.5 {
                b - d * (1.0 - t)
            } else {
                a + d * t
            }
        } else {
            // NumPy 2.x: gamma (f64) is used as a weak scalar-like float32 operand: `t` and
            // `1 - t` are computed in f64 and rounded to f32; the lerp happens in f32.
            if t >= 0.5 {
                f64::from(b32 - d * ((1.0 - t) as f32))
            } else {
                f64::from(a32 + d * (t as f32))
            }
        }
    } else {
        let d = b - a;
        if t >= 0.5 {
            b - d * (1.0 - t)
        } else {
            a + d * t
        }
    })
}

/// `int(x)` for a float in the range NumPy accepts as a percentile: truncation toward zero,
/// clamped to `0..=100` (out-of-range values raise `ValueError` in the reference).
pub fn percentile_q(x: f64) -> u32 {
    let q = x.trunc();
    if q.is_nan() || q <= 0.0 {
        0
    } else if q >= 100.0 {
        100
    } else {
        q as u32
    }
}

/// Python's `f"{x:.1f}"`: correctly rounded, ties to even on the exact binary value (Rust's
/// formatter does the same).
pub fn fmt1(x: f64) -> String {
    format!("{x:.1}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn q_arithmetic_matches_python_int_truncation() {
        // Spec §2.10.3 examples.
        let tok = |rate: f64| percentile_q(100.0 * f64::max(0.0, 1.0 - rate) + 1.0);
        assert_eq!(tok(0.33), 68);
        assert_eq!(tok(0.8), 20);
        assert_eq!(tok(0.9), 10);
        assert_eq!(tok(0.7), 31);
        assert_eq!(tok(0.55), 45);
        assert_eq!(tok(0.5), 51);
        assert_eq!(percentile_q(100.0 * (1.0 - 0.816_326_530_612_244_9)), 18);
        assert_eq!(percentile_q(101.0), 100);
        assert_eq!(percentile_q(-3.5), 0);
    }

    #[test]
    fn spec_toy_percentile_float64_and_float32() {
        // §2.8: weighted 0.2,0.2,0.6,0.6,0.9,0.9 (f32) + forced 1.0 (Python float), q = 51.
        let mut vals = vec![
            Prob::F32(0.2),
            Prob::F32(0.2),
            Prob::F32(0.9),
            Prob::F32(0.9),
            Prob::F32(0.6),
            Prob::F32(0.6),
        ];
        vals.push(Prob::F64(1.0));
        let thr = percentile(&vals, 51, false).unwrap();
        assert_eq!(thr, 0.618000020980835);
        // With an f32 0.95 instead of the Python 1.0 the array is float32.
        vals.pop();
        vals.push(Prob::F32(0.95));
        let thr = percentile(&vals, 51, false).unwrap();
        assert_eq!(thr as f32, 0.618_000_03_f32);
        assert_eq!(thr, f64::from(thr as f32));
    }

    #[test]
    fn percentile_extremes_and_empty() {
        let vals = [Prob::F32(0.5), Prob::F32(0.25), Prob::F64(1.0)];
        assert_eq!(percentile(&vals, 100, false), Some(1.0));
        assert_eq!(percentile(&vals, 0, false), Some(0.25));
        assert_eq!(percentile(&vals, 50, true), Some(0.5));
        assert_eq!(percentile(&[], 50, false), None);
    }

    #[test]
    fn mean_types_follow_numpy_promotion() {
        let p = [Prob::F64(1.0), Prob::F32(0.3)];
        let m = python_mean(&p, false).unwrap();
        assert_eq!(m, Prob::F32((1.0_f32 + 0.3_f32) / 2.0));
        let m1 = python_mean(&p, true).unwrap();
        assert_eq!(m1, Prob::F64((1.0 + f64::from(0.3_f32)) / 2.0));
        assert_eq!(
            python_mean(&[Prob::F64(1.0), Prob::F64(1.0)], false),
            Some(Prob::F64(1.0))
        );
        assert_eq!(python_mean(&[], false), None);
    }

    #[test]
    fn python_style_one_decimal_formatting() {
        assert_eq!(fmt1(3.25), "3.2");
        assert_eq!(fmt1(3.35), "3.4"); // 3.35 is slightly above in binary
        assert_eq!(fmt1(30.612_244_897_959_18), "30.6");
        assert_eq!(fmt1(-0.00006), "-0.0");
        assert_eq!(fmt1(0.0), "0.0");
    }
}
