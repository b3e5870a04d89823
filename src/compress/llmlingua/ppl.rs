//! The reference's perplexity helpers over the causal LM: `get_ppl` on a whole text (fresh cache,
//! special tokens added, silently cut at `max_position_embeddings`) and `get_condition_ppl`
//! (the mean NLL of a text alone, of the text after the question, or of the question after the
//! text).

use super::{Condition, LlmlinguaError, py};
use crate::model::WorkCtx;
use crate::scorer::causal::CausalScorer;

/// Per-token NLL of `ids` from an empty cache (`get_ppl(..., granularity="token")`), cut at
/// `max_position_embeddings` tokens as the reference does.
pub fn losses<L: CausalScorer>(
    lm: &L,
    ids: &[u32],
    ctx: &WorkCtx,
) -> Result<Vec<f32>, LlmlinguaError> {
    let end = ids.len().min(lm.max_positions());
    if end == 0 {
        return Ok(Vec::new());
    }
    let mut cache = lm.new_cache();
    Ok(lm.nll(&mut cache, &ids[..end], ctx)?)
}

/// `loss.mean()` of a float32 tensor (NaN when empty).
pub fn mean(v: &[f32]) -> f32 {
    if v.is_empty() {
        return f32::NAN;
    }
    (v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64) as f32
}

/// `get_condition_ppl(text, question, condition)` (granularity "sentence": the mean).
pub fn condition_ppl<L: CausalScorer>(
    lm: &L,
    text: &str,
    question: &str,
    condition: Condition,
    ctx: &WorkCtx,
) -> Result<f32, LlmlinguaError> {
    let tok = lm.tokenizer();
    let (joined, pos) = match condition {
        Condition::None => {
            let ids = tok.encode(text, true)?;
            return Ok(mean(&losses(lm, &ids, ctx)?));
        }
        Condition::Before => (
            format!("{question}{text}"),
            tok.len(question, true)? as i64 - 1,
        ),
        Condition::After => (format!("{text}{question}"), tok.len(text, true)? as i64 - 1),
    };
    let ids = tok.encode(&joined, true)?;
    let loss = losses(lm, &ids, ctx)?;
    let r = py::range(Some(pos), None, loss.len());
    Ok(mean(&loss[r]))
}
