//! How close two answers are: exact match, token-overlap F1 and ROUGE-L.
//!
//! Both answers are normalised the SQuAD way before comparing: lower-cased, punctuation removed,
//! the articles `a`, `an`, `the` dropped and whitespace collapsed. Exact match compares the
//! normalised strings.

use std::collections::HashMap;

use super::event::Agreement;

/// The normalised tokens of `text`.
pub fn normalize(text: &str) -> Vec<String> {
    let lowered: String = text
        .chars()
        .map(|c| {
            if c.is_alphanumeric() || c.is_whitespace() {
                c.to_lowercase().next().unwrap_or(c)
            } else {
                ' '
            }
        })
        .collect();
    lowered
        .split_whitespace()
        .filter(|w| !matches!(*w, "a" | "an" | "the"))
        .map(str::to_owned)
        .collect()
}

/// Token-overlap F1 of two token lists (multiset intersection). Two empty lists agree fully.
pub fn f1(a: &[String], b: &[String]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return if a.is_empty() && b.is_empty() {
            1.0
        } else {
            0.0
        };
    }
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for t in a {
        *counts.entry(t.as_str()).or_default() += 1;
    }
    let mut common = 0usize;
    for t in b {
        if let Some(c) = counts.get_mut(t.as_str())
            && *c > 0
        {
            *c -= 1;
            common += 1;
        }
    }
    if common == 0 {
        return 0.0;
    }
    let precision = common as f64 / b.len() as f64;
    let recall = common as f64 / a.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// ROUGE-L F-measure (β = 1): the longest common subsequence of tokens.
pub fn rouge_l(a: &[String], b: &[String]) -> f64 {
    if a.is_empty() || b.is_empty() {
        return if a.is_empty() && b.is_empty() {
            1.0
        } else {
            0.0
        };
    }
    let mut prev = vec![0usize; b.len() + 1];
    let mut cur = vec![0usize; b.len() + 1];
    for x in a {
        for (j, y) in b.iter().enumerate() {
            cur[j + 1] = if x == y {
                prev[j] + 1
            } else {
                cur[j].max(prev[j + 1])
            };
        }
        std::mem::swap(&mut prev, &mut cur);
    }
    let lcs = prev[b.len()];
    if lcs == 0 {
        return 0.0;
    }
    let precision = lcs as f64 / b.len() as f64;
    let recall = lcs as f64 / a.len() as f64;
    2.0 * precision * recall / (precision + recall)
}

/// Agreement of `reference` (e.g. the raw arm's answer) and `candidate`.
pub fn agreement(reference: &str, candidate: &str) -> Agreement {
    let a = normalize(reference);
    let b = normalize(candidate);
    Agreement {
        exact: a == b,
        f1: f1(&a, &b),
        rouge_l: rouge_l(&a, &b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identical_answers_agree() {
        let g = agreement("The answer is 42.", "the answer is 42");
        assert!(g.exact);
        assert_eq!(g.f1, 1.0);
        assert_eq!(g.rouge_l, 1.0);
    }

    #[test]
    fn known_values() {
        // a: [paris, is, capital, of, france]  b: [capital, of, france, is, paris]
        let g = agreement(
            "Paris is the capital of France",
            "capital of France is Paris",
        );
        assert!(!g.exact);
        assert!((g.f1 - 1.0).abs() < 1e-12);
        // LCS = [capital, of, france] = 3 → P = R = 3/5
        assert!((g.rouge_l - 0.6).abs() < 1e-12);
        // a: [cat, sat] b: [cat, ran, away] → common 1, P = 1/3, R = 1/2, F1 = 0.4
        let g = agreement("a cat sat", "cat ran away");
        assert!((g.f1 - 0.4).abs() < 1e-12);
        assert!((g.rouge_l - 0.4).abs() < 1e-12);
        assert_eq!(agreement("", "x").f1, 0.0);
        assert!(agreement("", "...").exact);
    }
}
