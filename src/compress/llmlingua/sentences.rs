//! The sentence-level filter (`control_sentence_budget`, off by default): contexts split into
//! sentences with NLTK-compatible Punkt ([`crate::compress::punkt`]), re-aligned to the original
//! text so whitespace survives, ranked (question-conditioned perplexity with the reference's
//! bonuses for `longllmlingua`, [`rank`](super::rank) otherwise) and kept greedily under
//! `target_token × token_budget_ratio`.

use std::collections::BTreeSet;

use super::{Condition, LlmlinguaError, Params, RankMethod, ppl, rank};
use crate::compress::punkt;
use crate::model::WorkCtx;
use crate::scorer::causal::CausalScorer;

/// `sync_sentence`: each sentence runs from its start to the start of the next one (found by
/// the next sentence's first 5 characters after the end of this one); the last runs to the end.
pub fn sync_sentences(sentences: &[String], text: &str) -> Result<Vec<String>, LlmlinguaError> {
    let fail = || LlmlinguaError::Reference("AssertionError: sentences do not re-align".into());
    let mut seen = 0usize; // byte offset
    let n = sentences.len();
    let mut out = Vec::with_capacity(n);
    for (i, s) in sentences.iter().enumerate() {
        if !text[seen..].starts_with(s.as_str()) {
            return Err(fail());
        }
        if i == n - 1 {
            out.push(text[seen..].to_string());
            break;
        }
        let probe: String = sentences[i + 1].chars().take(5).collect();
        let from = seen + s.len();
        let next = match text[from..].find(&probe) {
            Some(p) => from + p,
            None => return Err(fail()),
        };
        out.push(text[seen..next].to_string());
        seen = next;
    }
    if out.concat() != text {
        return Err(fail());
    }
    Ok(out)
}

/// `control_sentence_budget(context, target_token, ...)` without structured segments.
pub fn control_sentence_budget<L: CausalScorer>(
    lm: &L,
    context: &[String],
    target_token: f64,
    p: &Params,
    method: RankMethod,
    condition: Condition,
    ctx: &WorkCtx,
) -> Result<Vec<String>, LlmlinguaError> {
    let tok = lm.tokenizer();
    let mut per_ctx: Vec<Vec<String>> = Vec::with_capacity(context.len());
    for c in context {
        let raw = punkt::sent_tokenize(c).map_err(LlmlinguaError::Unsupported)?;
        per_ctx.push(if raw.is_empty() {
            Vec::new()
        } else {
            sync_sentences(&raw, c)?
        });
    }
    let flat: Vec<&String> = per_ctx.iter().flatten().collect();
    let n = flat.len();
    if n == 1 {
        return Ok(context.to_vec());
    }
    let mut lens = Vec::with_capacity(n);
    for s in &flat {
        lens.push(tok.len(s, true)? as f64);
    }
    let order: Vec<usize> = if method == RankMethod::Longllmlingua {
        let mut scores = Vec::with_capacity(n);
        for s in &flat {
            scores.push(ppl::condition_ppl(lm, s, &p.question, condition, ctx)? as f64);
        }
        let bonus = p.high_priority_bonus;
        if p.keep_first_sentence != 0 {
            let r = super::py::range(None, Some(p.keep_first_sentence), n);
            for x in &mut scores[r] {
                *x += bonus;
            }
        }
        if p.keep_last_sentence != 0 {
            let r = super::py::range(Some(-p.keep_last_sentence), None, n);
            for x in &mut scores[r] {
                *x += bonus;
            }
        }
        if p.keep_sentence_number != 0 {
            let mut base = 0usize;
            for sents in &per_ctx {
                // sorted(set_of_indices, key=ppl)[:k]; a set of small ints iterates in
                // hash-slot order, which for these ranges is ascending.
                let set: BTreeSet<usize> = (base..base + sents.len()).collect();
                let members: Vec<usize> = set.into_iter().collect();
                let keys: Vec<f64> = members.iter().map(|&i| scores[i]).collect();
                let k = usize::try_from(p.keep_sentence_number.max(0)).unwrap_or(0);
                let picked: Vec<usize> = super::py::sorted_indices(&keys)
                    .into_iter()
                    .take(k)
                    .map(|j| members[j])
                    .collect();
                for i in picked {
                    scores[i] += bonus;
                }
                base += sents.len();
            }
        }
        rank::sort_by_direction(&scores, condition)
            .into_iter()
            .map(|(i, _)| i)
            .collect()
    } else {
        let owned: Vec<String> = flat.iter().map(|s| (*s).clone()).collect();
        rank::rank(lm, &owned, &p.question, method, condition, ctx)?
            .into_iter()
            .map(|(i, _)| i)
            .collect()
    };
    let mut budget = if target_token < 0.0 {
        100.0
    } else {
        target_token
    };
    budget *= p.token_budget_ratio;
    let mut keep = vec![false; n];
    for i in order {
        if i >= n {
            continue;
        }
        budget -= lens[i];
        keep[i] = true;
        if budget < 0.0 {
            break;
        }
    }
    let mut out = Vec::with_capacity(per_ctx.len());
    let mut base = 0;
    for sents in &per_ctx {
        let mut s = String::new();
        for (j, sent) in sents.iter().enumerate() {
            if keep[base + j] {
                s.push_str(sent);
            }
        }
        out.push(s);
        base += sents.len();
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::sync_sentences;

    #[test]
    fn sentences_keep_their_whitespace() {
        let text = "First one.  Second one.\nThird.";
        let raw: Vec<String> = ["First one.", "Second one.", "Third."]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let s = sync_sentences(&raw, text).unwrap();
        assert_eq!(s, vec!["First one.  ", "Second one.\n", "Third."]);
        assert!(sync_sentences(&["nope".to_string()], text).is_err());
    }
}
