//! Intrinsic evaluation of scorers against LLM labels (spec §5 [REC] (a)): every scorer the
//! proxy can serve (an LLMLingua-2 checkpoint, the heuristic) scores held-out chunks through its
//! own serving path, its token probabilities are averaged per labelled word, and at the LLM's
//! own rate (as many words kept as the LLM kept) keep/drop F1 and accuracy are counted, plus the
//! rate-free ROC AUC of the word probabilities.
//!
//! Words that are only whitespace (line breaks) are left out: the serving selection keeps them
//! by force token, whatever the scorer says.

use crate::distill::train::word_spans;
use crate::model::WorkCtx;
use crate::scorer::{Scorer, ScorerError};

/// Words per scoring piece: far below the encoder's 512-token window even at several tokens per
/// word.
const WORDS_PER_PIECE: usize = 128;

/// Each word's mean token probability (`None`: no token of the scorer started in the word).
pub fn word_probs(scorer: &dyn Scorer, text: &str) -> Result<Vec<Option<f32>>, ScorerError> {
    let spans = word_spans(text);
    let mut out = vec![None; spans.len()];
    for (g, group) in spans.chunks(WORDS_PER_PIECE).enumerate() {
        let (Some(first), Some(last)) = (group.first(), group.last()) else {
            continue;
        };
        let piece = &text[first.0..last.1];
        let scored = scorer.score_chunks(&[piece.to_string()], &WorkCtx::none())?;
        let Some(chunk) = scored.first() else {
            continue;
        };
        let mut sums = vec![(0f32, 0u32); group.len()];
        let mut cursor = 0;
        for (token, p) in chunk.tokens.iter().zip(&chunk.probs) {
            if scorer.is_special(token) {
                continue;
            }
            let bare = token
                .trim_start_matches('\u{2581}')
                .trim_start_matches("##");
            if bare.is_empty() {
                continue;
            }
            let Some(i) = piece[cursor..].find(bare) else {
                continue; // an unknown-token id: its text is not in the piece
            };
            let at = first.0 + cursor + i;
            cursor += i + bare.len();
            if let Some(w) = group.iter().position(|&(s, e)| s <= at && at < e) {
                sums[w].0 += p;
                sums[w].1 += 1;
            }
        }
        for (w, (sum, n)) in sums.into_iter().enumerate() {
            if n > 0 {
                out[g * WORDS_PER_PIECE + w] = Some(sum / n as f32);
            }
        }
    }
    Ok(out)
}

/// `text` with only the `k` most probable words kept (as [`Scores::add`] keeps them), joined
/// by spaces; line-break words are always kept, as the serving selection keeps them.
pub fn kept_text(text: &str, probs: &[Option<f32>], k: usize) -> String {
    let spans = word_spans(text);
    let is_break = |i: usize| text[spans[i].0..spans[i].1].trim().is_empty();
    let mut ranked: Vec<usize> = (0..spans.len().min(probs.len()))
        .filter(|&i| !is_break(i))
        .collect();
    let p = |i: usize| probs[i].unwrap_or(f32::NEG_INFINITY);
    ranked.sort_by(|&a, &b| p(b).total_cmp(&p(a)).then(a.cmp(&b)));
    let mut keep = vec![false; spans.len()];
    for &i in ranked.iter().take(k) {
        keep[i] = true;
    }
    let mut out = String::new();
    for (i, &(s, e)) in spans.iter().enumerate() {
        if keep[i] || is_break(i) {
            let w = &text[s..e];
            if !out.is_empty() && !w.starts_with('\n') && !out.ends_with('\n') {
                out.push(' ');
            }
            out.push_str(w);
        }
    }
    out
}

/// Counts over every evaluated word.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct Scores {
    pub words: usize,
    pub true_keep: usize,
    pub false_keep: usize,
    pub false_drop: usize,
    pub true_drop: usize,
    /// (probability, LLM kept) of every word, for the AUC.
    #[serde(skip)]
    pairs: Vec<(f32, bool)>,
}

impl Scores {
    /// Adds one chunk: keeps the `k` most probable words, `k` the LLM's kept count.
    pub fn add(&mut self, text: &str, labels: &[bool], probs: &[Option<f32>]) {
        let spans = word_spans(text);
        let idx: Vec<usize> = (0..labels.len().min(probs.len()).min(spans.len()))
            .filter(|&i| !text[spans[i].0..spans[i].1].trim().is_empty())
            .collect();
        let k = idx.iter().filter(|&&i| labels[i]).count();
        let mut ranked = idx.clone();
        let p = |i: usize| probs[i].unwrap_or(f32::NEG_INFINITY);
        ranked.sort_by(|&a, &b| p(b).total_cmp(&p(a)).then(a.cmp(&b)));
        let mut keep = vec![false; labels.len()];
        for &i in ranked.iter().take(k) {
            keep[i] = true;
        }
        for &i in &idx {
            self.words += 1;
            match (keep[i], labels[i]) {
                (true, true) => self.true_keep += 1,
                (true, false) => self.false_keep += 1,
                (false, true) => self.false_drop += 1,
                (false, false) => self.true_drop += 1,
            }
            self.pairs.push((probs[i].unwrap_or(0.0), labels[i]));
        }
    }

    /// F1 of the keep class.
    pub fn f1(&self) -> f64 {
        let tp = self.true_keep as f64;
        2.0 * tp / (2.0 * tp + self.false_keep as f64 + self.false_drop as f64).max(1.0)
    }

    pub fn accuracy(&self) -> f64 {
        (self.true_keep + self.true_drop) as f64 / self.words.max(1) as f64
    }

    /// Probability that a kept word outscores a dropped one (ties count half); `None` without
    /// both classes.
    pub fn auc(&self) -> Option<f64> {
        let mut pairs = self.pairs.clone();
        pairs.sort_by(|a, b| a.0.total_cmp(&b.0));
        let pos = pairs.iter().filter(|p| p.1).count() as f64;
        let neg = pairs.len() as f64 - pos;
        if pos == 0.0 || neg == 0.0 {
            return None;
        }
        // rank sum of the positives, average ranks for ties
        let mut rank_sum = 0.0;
        let mut i = 0;
        while i < pairs.len() {
            let mut j = i;
            while j < pairs.len() && pairs[j].0 == pairs[i].0 {
                j += 1;
            }
            let avg = (i + j + 1) as f64 / 2.0;
            rank_sum += avg * pairs[i..j].iter().filter(|p| p.1).count() as f64;
            i = j;
        }
        Some((rank_sum - pos * (pos + 1.0) / 2.0) / (pos * neg))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::scorer::heuristic::HeuristicScorer;

    #[test]
    fn a_perfect_ranking_scores_one_and_a_reversed_one_zero() {
        let text = "alpha beta gamma delta";
        let labels = [true, false, true, false];
        let mut good = Scores::default();
        good.add(text, &labels, &[Some(0.9), Some(0.1), Some(0.8), Some(0.2)]);
        assert_eq!(
            (good.f1(), good.accuracy(), good.auc()),
            (1.0, 1.0, Some(1.0))
        );
        let mut bad = Scores::default();
        bad.add(text, &labels, &[Some(0.1), Some(0.9), Some(0.2), Some(0.8)]);
        assert_eq!((bad.f1(), bad.accuracy(), bad.auc()), (0.0, 0.0, Some(0.0)));
        let mut flat = Scores::default();
        flat.add(text, &labels, &[Some(0.5); 4]);
        assert_eq!(flat.auc(), Some(0.5), "ties count half");
    }

    #[test]
    fn kept_text_keeps_the_most_probable_words_in_order_and_every_line_break() {
        let text = "alpha beta\ngamma delta";
        let probs = [Some(0.9), Some(0.1), None, Some(0.8), Some(0.2)];
        assert_eq!(kept_text(text, &probs, 2), "alpha\ngamma");
        assert_eq!(kept_text(text, &probs, 4), "alpha beta\ngamma delta");
    }

    #[test]
    fn line_breaks_are_not_evaluated() {
        let text = "alpha\nbeta";
        let mut s = Scores::default();
        s.add(text, &[true, true, false], &[Some(0.9), None, Some(0.1)]);
        assert_eq!(s.words, 2);
    }

    #[test]
    fn every_word_of_a_long_text_gets_a_probability_from_the_heuristic() {
        let text = (0..300)
            .map(|i| format!("Shipment {i} left Hamburg, not Rotterdam."))
            .collect::<Vec<_>>()
            .join("\n");
        let probs = word_probs(&HeuristicScorer::new(), &text).unwrap();
        assert_eq!(probs.len(), word_spans(&text).len());
        let spans = word_spans(&text);
        for (p, &(s, e)) in probs.iter().zip(&spans) {
            if !text[s..e].trim().is_empty() {
                assert!(p.is_some(), "{:?} has no probability", &text[s..e]);
            }
        }
    }
}
