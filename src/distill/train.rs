//! Training data for the token classifier, and the training loop (spec §4 with the fixes of
//! §4.6): labelled chunks become model windows exactly as the scorer frames them at serving
//! time, the split is seeded and by source text, and training stops early on validation loss.
//!
//! - The model sees the chunk's **surface text** through the scorer's own framing
//!   (`[CLS]` + `tokenize(chunk)` + `[SEP]`, the reference's inference markers), not the
//!   reference trainer's lemma sequence.
//! - Each token takes the label of the word its first character falls in; a token between words
//!   (a dropped comma, a bare `▁`) takes the label of the word before it. `[CLS]`, `[SEP]` and
//!   padding are left out of the loss.
//! - A chunk longer than the model's window is cut into several windows (no tail is lost).

use std::collections::HashMap;

use lingua_encoder::train::{Batch, IGNORE};
use sha2::{Digest, Sha256};

use crate::distill::words::split;
use crate::scorer::llmlingua2::tokenizer::{CLS_MARKER, Llmlingua2Tokenizer, SEP_MARKER};

/// One labelled chunk as `distill label` wrote it.
#[derive(Debug, Clone, PartialEq)]
pub struct Labelled {
    /// The source text the chunk came from (the split unit).
    pub source: String,
    pub origin: String,
    /// One per word of `words::split(origin)`.
    pub labels: Vec<bool>,
}

/// One model window: ids with their per-token labels.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    pub ids: Vec<u32>,
    pub labels: Vec<i64>,
}

/// Byte spans of `split(text)`'s words: each surface is a slice of `text`, in order.
pub fn word_spans(text: &str) -> Vec<(usize, usize)> {
    let mut spans = Vec::new();
    let mut at = 0;
    for w in split(text, false) {
        let start = text[at..].find(&w.surface).map_or(at, |i| at + i);
        let end = start + w.surface.len();
        spans.push((start, end));
        at = end;
    }
    spans
}

/// The label index of the word a byte offset belongs to: the word containing it, else the word
/// before it, else the first word.
fn word_at(spans: &[(usize, usize)], offset: usize) -> Option<usize> {
    if spans.is_empty() {
        return None;
    }
    let after = spans.partition_point(|&(s, _)| s <= offset);
    Some(after.saturating_sub(1))
}

/// The windows of one chunk: `[CLS] pieces [SEP]`, at most `max_len` ids each.
pub fn windows(
    tok: &Llmlingua2Tokenizer,
    chunk: &Labelled,
    max_len: usize,
) -> Result<Vec<Window>, String> {
    let spans = word_spans(&chunk.origin);
    if spans.len() != chunk.labels.len() {
        return Err(format!(
            "{} words but {} labels: the labels were made with another word splitter",
            spans.len(),
            chunk.labels.len()
        ));
    }
    let enc = tok
        .inner()
        .encode(chunk.origin.as_str(), false)
        .map_err(|e| e.to_string())?;
    let pieces: Vec<(u32, i64)> = enc
        .get_tokens()
        .iter()
        .zip(enc.get_offsets())
        .map(|(t, &(start, _))| {
            let label = word_at(&spans, start).map_or(0, |w| i64::from(chunk.labels[w]));
            (tok.token_to_id(t), label)
        })
        .collect();
    let (cls, sep) = (tok.token_to_id(CLS_MARKER), tok.token_to_id(SEP_MARKER));
    let room = max_len.saturating_sub(2).max(1);
    Ok(pieces
        .chunks(room)
        .map(|part| {
            let mut ids = Vec::with_capacity(part.len() + 2);
            let mut labels = Vec::with_capacity(part.len() + 2);
            ids.push(cls);
            labels.push(IGNORE);
            for &(id, l) in part {
                ids.push(id);
                labels.push(l);
            }
            ids.push(sep);
            labels.push(IGNORE);
            Window { ids, labels }
        })
        .collect())
}

/// Which sources are held out: the `fraction` of distinct sources with the smallest seeded
/// hash (at least one when there are two or more sources, none when there is one). Every chunk
/// of a source lands on the same side.
pub fn held_out_sources(sources: &[&str], fraction: f64, seed: u64) -> Vec<String> {
    let mut distinct: Vec<(String, String)> = sources
        .iter()
        .map(|s| s.to_string())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .map(|s| {
            let mut h = Sha256::new();
            h.update(seed.to_le_bytes());
            h.update(s.as_bytes());
            (hex::encode(h.finalize()), s)
        })
        .collect();
    distinct.sort();
    let n = distinct.len();
    let k = if n < 2 {
        0
    } else {
        ((n as f64 * fraction).round() as usize).clamp(1, n - 1)
    };
    distinct.into_iter().take(k).map(|(_, s)| s).collect()
}

/// Batches of at most `batch_size` windows, in the given order.
pub fn batches<'a>(windows: impl IntoIterator<Item = &'a Window>, batch_size: usize) -> Vec<Batch> {
    let mut out: Vec<Batch> = Vec::new();
    for w in windows {
        match out.last_mut() {
            Some(b) if b.ids.len() < batch_size.max(1) => {
                b.ids.push(w.ids.clone());
                b.labels.push(w.labels.clone());
            }
            _ => out.push(Batch {
                ids: vec![w.ids.clone()],
                labels: vec![w.labels.clone()],
            }),
        }
    }
    out
}

/// Counts of what a split holds.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct SplitCounts {
    pub sources: usize,
    pub chunks: usize,
    pub windows: usize,
    pub labelled_tokens: usize,
    pub keep_share: f64,
}

pub fn counts(chunks: &[&Labelled], windows: &[Window]) -> SplitCounts {
    let sources = chunks
        .iter()
        .map(|c| c.source.as_str())
        .collect::<std::collections::HashSet<_>>()
        .len();
    let mut per: HashMap<bool, usize> = HashMap::new();
    for w in windows {
        for &l in &w.labels {
            if l != IGNORE {
                *per.entry(l == 1).or_default() += 1;
            }
        }
    }
    let total = per.values().sum::<usize>();
    SplitCounts {
        sources,
        chunks: chunks.len(),
        windows: windows.len(),
        labelled_tokens: total,
        keep_share: per.get(&true).copied().unwrap_or(0) as f64 / total.max(1) as f64,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_point_at_each_surface_in_order() {
        let text = "Item 12-345, the plan isn't approved.\n\nNext.";
        let spans = word_spans(text);
        let surfaces: Vec<&str> = spans.iter().map(|&(s, e)| &text[s..e]).collect();
        let want: Vec<String> = split(text, false).into_iter().map(|w| w.surface).collect();
        assert_eq!(surfaces, want);
    }

    #[test]
    fn offsets_between_words_take_the_word_before() {
        let spans = [(0, 4), (6, 9), (10, 12)];
        assert_eq!(word_at(&spans, 0), Some(0));
        assert_eq!(word_at(&spans, 3), Some(0));
        assert_eq!(word_at(&spans, 4), Some(0)); // the comma after word 0
        assert_eq!(word_at(&spans, 7), Some(1));
        assert_eq!(word_at(&spans, 11), Some(2));
        assert_eq!(word_at(&[], 3), None);
    }

    #[test]
    fn held_out_sources_are_seeded_and_never_everything() {
        let sources = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j", "a", "a"];
        let one = held_out_sources(&sources, 0.2, 7);
        assert_eq!(one, held_out_sources(&sources, 0.2, 7));
        assert_eq!(one.len(), 2);
        let other = held_out_sources(&sources, 0.2, 8);
        assert_ne!(one, other, "another seed, another split");
        assert!(held_out_sources(&["x", "x"], 0.5, 1).is_empty());
        assert_eq!(held_out_sources(&["x", "y"], 0.99, 1).len(), 1);
    }

    #[test]
    fn batches_hold_at_most_the_batch_size() {
        let w = Window {
            ids: vec![1, 2],
            labels: vec![IGNORE, 1],
        };
        let ws = vec![w.clone(), w.clone(), w.clone(), w];
        let b = batches(&ws, 3);
        assert_eq!(b.iter().map(|b| b.ids.len()).collect::<Vec<_>>(), [3, 1]);
    }
}
