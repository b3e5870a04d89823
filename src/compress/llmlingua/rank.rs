//! Ranking of contexts (and sentences) for the coarse filters (`get_rank_results`): the
//! perplexity methods `llmlingua` / `longllmlingua` (through the causal LM), `bm25`
//! (`rank_bm25.BM25Okapi`, whitespace tokens) and `gzip` (normalised compression distance with
//! zlib level 9, as Python's `gzip.compress`). The embedding and reranker methods of the
//! reference (`sentbert`, `bge*`, `jinza`, `openai`, `voyageai`, `cohere`) need other models or
//! network services and are refused with a clear error.

use std::collections::HashMap;
use std::io::Write;

use super::{Condition, LlmlinguaError, ppl};
use crate::model::WorkCtx;
use crate::scorer::causal::CausalScorer;

/// The rank methods this port runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RankMethod {
    Llmlingua,
    Longllmlingua,
    Bm25,
    Gzip,
}

impl RankMethod {
    pub fn parse(s: &str) -> Result<Self, LlmlinguaError> {
        Ok(match s {
            "llmlingua" => Self::Llmlingua,
            "longllmlingua" => Self::Longllmlingua,
            "bm25" => Self::Bm25,
            "gzip" => Self::Gzip,
            "sentbert" | "bge" | "bge_reranker" | "bge_llmembedder" | "jinza" | "openai"
            | "voyageai" | "cohere" => {
                return Err(LlmlinguaError::Unsupported(format!(
                    "rank_method {s:?} needs an embedding or reranker model; this build runs \
                     llmlingua, longllmlingua, bm25 and gzip"
                )));
            }
            other => {
                return Err(LlmlinguaError::Params(format!(
                    "unknown rank_method {other:?}"
                )));
            }
        })
    }
}

/// `get_rank_results(context, question, rank_method, condition, lengths)`: `(index, score)` in
/// preference order (scores are 0 for bm25 and gzip, as in the reference).
pub fn rank<L: CausalScorer>(
    lm: &L,
    docs: &[String],
    question: &str,
    method: RankMethod,
    condition: Condition,
    ctx: &WorkCtx,
) -> Result<Vec<(usize, f64)>, LlmlinguaError> {
    match method {
        RankMethod::Bm25 => Ok(argsort_desc(&bm25_scores(docs, question))
            .into_iter()
            .map(|i| (i, 0.0))
            .collect()),
        RankMethod::Gzip => {
            let q = gz_len(question.as_bytes())?;
            let mut scores = Vec::with_capacity(docs.len());
            for d in docs {
                ctx.check()?;
                scores.push(ncd(d, question, q)?);
            }
            Ok(super::py::sorted_indices(&scores)
                .into_iter()
                .map(|i| (i, 0.0))
                .collect())
        }
        RankMethod::Llmlingua | RankMethod::Longllmlingua => {
            let query = format!(
                "{question} We can get the answer to this question in the given documents."
            );
            let mut scores = Vec::with_capacity(docs.len());
            for d in docs {
                // `get_condition_ppl(...) - dl * 2 / 250 * 0`: a float32 tensor.
                scores.push(ppl::condition_ppl(lm, d, &query, condition, ctx)? as f64);
            }
            Ok(sort_by_direction(&scores, condition))
        }
    }
}

/// `sorted(enumerate(scores), key=lambda x: direct * x[1])` with `direct = -1` for the
/// unconditioned perplexity (high first) and `1` otherwise.
pub fn sort_by_direction(scores: &[f64], condition: Condition) -> Vec<(usize, f64)> {
    let keys: Vec<f64> = if condition == Condition::None {
        scores.iter().map(|s| -s).collect()
    } else {
        scores.to_vec()
    };
    super::py::sorted_indices(&keys)
        .into_iter()
        .map(|i| (i, scores[i]))
        .collect()
}

/// `BM25Okapi(corpus).get_scores(query)` with `doc.split(" ")` tokens (k1 1.5, b 0.75, epsilon
/// 0.25; the same float operations in the same order as rank_bm25 0.2.2 over NumPy).
pub fn bm25_scores(docs: &[String], query: &str) -> Vec<f64> {
    let (k1, b, epsilon) = (1.5f64, 0.75f64, 0.25f64);
    let mut doc_freqs: Vec<HashMap<&str, usize>> = Vec::with_capacity(docs.len());
    let mut doc_len = Vec::with_capacity(docs.len());
    // word -> number of documents containing it, in first-seen order (Python dict order).
    let mut nd: Vec<(&str, usize)> = Vec::new();
    let mut nd_pos: HashMap<&str, usize> = HashMap::new();
    let mut num_doc = 0usize;
    for doc in docs {
        let words: Vec<&str> = doc.split(' ').collect();
        doc_len.push(words.len());
        num_doc += words.len();
        let mut freq: HashMap<&str, usize> = HashMap::new();
        let mut order: Vec<&str> = Vec::new();
        for w in words {
            let e = freq.entry(w).or_insert(0);
            if *e == 0 {
                order.push(w);
            }
            *e += 1;
        }
        for w in order {
            match nd_pos.get(w) {
                Some(&p) => nd[p].1 += 1,
                None => {
                    nd_pos.insert(w, nd.len());
                    nd.push((w, 1));
                }
            }
        }
        doc_freqs.push(freq);
    }
    let corpus_size = docs.len();
    if corpus_size == 0 {
        return Vec::new();
    }
    let avgdl = num_doc as f64 / corpus_size as f64;
    let mut idf: HashMap<&str, f64> = HashMap::new();
    let mut idf_sum = 0.0f64;
    let mut negative = Vec::new();
    for &(w, f) in &nd {
        let v = (corpus_size as f64 - f as f64 + 0.5).ln() - (f as f64 + 0.5).ln();
        idf.insert(w, v);
        idf_sum += v;
        if v < 0.0 {
            negative.push(w);
        }
    }
    let average_idf = idf_sum / idf.len().max(1) as f64;
    let eps = epsilon * average_idf;
    for w in negative {
        idf.insert(w, eps);
    }
    let mut score = vec![0.0f64; corpus_size];
    for q in query.split(' ') {
        // `(self.idf.get(q) or 0)`
        let w = idf.get(q).copied().unwrap_or(0.0);
        for (i, freqs) in doc_freqs.iter().enumerate() {
            let qf = freqs.get(q).copied().unwrap_or(0) as f64;
            let denom = qf + k1 * ((1.0 - b) + b * doc_len[i] as f64 / avgdl);
            score[i] += w * (qf * (k1 + 1.0) / denom);
        }
    }
    score
}

/// `(-scores).argsort()`; ties keep their index order (NumPy's default sort does not promise an
/// order among equal scores).
fn argsort_desc(scores: &[f64]) -> Vec<usize> {
    let neg: Vec<f64> = scores.iter().map(|s| -s).collect();
    let mut idx: Vec<usize> = (0..scores.len()).collect();
    idx.sort_by(|&a, &b| {
        neg[a]
            .partial_cmp(&neg[b])
            .unwrap_or(std::cmp::Ordering::Equal)
    });
    idx
}

/// `len(gzip.compress(data))` (level 9, no file name: 10-byte header + deflate + 8-byte trailer).
pub fn gz_len(data: &[u8]) -> Result<usize, LlmlinguaError> {
    let mut enc = flate2::write::DeflateEncoder::new(Vec::new(), flate2::Compression::new(9));
    enc.write_all(data)
        .map_err(|e| LlmlinguaError::Internal(e.to_string()))?;
    let raw = enc
        .finish()
        .map_err(|e| LlmlinguaError::Internal(e.to_string()))?;
    Ok(raw.len() + 18)
}

/// `(C(x + " " + y) - min(C(x), C(y))) / max(C(x), C(y))`.
fn ncd(x: &str, y: &str, cy: usize) -> Result<f64, LlmlinguaError> {
    let cx = gz_len(x.as_bytes())?;
    let cxy = gz_len(format!("{x} {y}").as_bytes())?;
    Ok((cxy as f64 - cx.min(cy) as f64) / cx.max(cy) as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gzip_length_matches_python() {
        // Python 3.11 / zlib 1.2.13: len(gzip.compress(b"hello hello hello world")) == 33.
        assert_eq!(gz_len(b"hello hello hello world").unwrap(), 33);
    }

    #[test]
    fn bm25_prefers_matching_documents() {
        let docs: Vec<String> = ["the cat sat", "a dog ran far away", "the cat and the dog"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let s = bm25_scores(&docs, "cat dog");
        // rank_bm25 0.2.2 / NumPy: the same float64 values, bit for bit.
        assert_eq!(
            s,
            vec![
                0.049410216584508025,
                0.03981254861485539,
                0.07962509722971078
            ]
        );
        assert_eq!(argsort_desc(&s)[0], 2);
    }
}
