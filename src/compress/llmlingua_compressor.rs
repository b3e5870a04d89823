//! LLMLingua and LongLLMLingua as the policy's [`Compressor`]: a compressible region is split
//! into documents (blank-line-separated blocks by default), the faithful `compress_prompt`
//! ([`crate::compress::llmlingua`]) ranks, drops and reorders documents and prunes tokens
//! under the region's rate, conditioned on the message's question for LongLLMLingua, and the
//! token-level choice is then widened to whole words and whole semantic units — the proxy's
//! guarantee that compression deletes whole words only and keeps a number with its unit, a
//! negation with what it negates — before the kept words are rebuilt with their original
//! separators. Documents holding a protected span are always kept (`force_context_ids`).

use std::sync::Arc;

use super::compressor::{Budget, CompressError, CompressOutput, Compressor};
use super::llmlingua::{self, LlmlinguaError, Method, Params};
use super::llmlingua2::cl100k_count;
use super::select::rebuild;
use super::units::{units, words};
use crate::model::WorkCtx;
use crate::scorer::causal::CausalScorer;
use crate::tokens::SPAN_MARKER;

/// The perplexity-based compressor over a causal LM `L`.
pub struct LlmlinguaCompressor<L: CausalScorer> {
    lm: Arc<L>,
    method: Method,
    separator: String,
    id: String,
}

impl<L: CausalScorer> LlmlinguaCompressor<L> {
    /// `separator` splits a region into the documents the coarse filter ranks.
    pub fn new(lm: Arc<L>, method: Method, separator: &str) -> Self {
        let id = format!(
            "{}:{}:sep={:?}",
            match method {
                Method::Llmlingua => "llmlingua",
                Method::Longllmlingua => "longllmlingua",
            },
            lm.id(),
            separator
        );
        Self {
            lm,
            method,
            separator: separator.to_string(),
            id,
        }
    }
}

impl From<LlmlinguaError> for CompressError {
    fn from(e: LlmlinguaError) -> Self {
        match e {
            LlmlinguaError::Scorer(s) => CompressError::Scorer(s),
            other => CompressError::Internal(other.to_string()),
        }
    }
}

impl<L: CausalScorer> Compressor for LlmlinguaCompressor<L> {
    fn id(&self) -> &str {
        &self.id
    }

    fn uses_question(&self) -> bool {
        self.method == Method::Longllmlingua
    }

    fn compress(
        &self,
        text: &str,
        budget: &Budget,
        ctx: &WorkCtx,
    ) -> Result<CompressOutput, CompressError> {
        let origin_tokens = cl100k_count(text);
        let docs: Vec<String> = text
            .split(self.separator.as_str())
            .filter(|d| !d.trim().is_empty())
            .map(str::to_string)
            .collect();
        if docs.is_empty() {
            return Ok(CompressOutput {
                text: text.to_string(),
                origin_tokens,
                compressed_tokens: origin_tokens,
                budget_exceeded_by_units: false,
            });
        }
        let question = budget.question.clone().unwrap_or_default();
        // LongLLMLingua needs a question; without one the plain LLMLingua ranking runs.
        let method = if self.method == Method::Longllmlingua && !question.trim().is_empty() {
            Method::Longllmlingua
        } else {
            Method::Llmlingua
        };
        let mut p = Params::defaults(method);
        p.rate = budget.rate;
        if method == Method::Longllmlingua {
            p.question = question;
        }
        // The question is the caller's message: it is never added to the output.
        p.concate_question = false;
        let forced: Vec<i64> = docs
            .iter()
            .enumerate()
            .filter(|(_, d)| d.contains(SPAN_MARKER))
            .map(|(i, _)| i as i64)
            .collect();
        p.force_context_ids = (!forced.is_empty()).then_some(forced);
        p.context = docs;
        let out = llmlingua::compress_prompt(self.lm.as_ref(), &p, ctx)?;

        // Which bytes of which document survived the token-level filter.
        let tok = self.lm.tokenizer();
        let joined = out.token_contexts.join("\n\n");
        let (_, offsets) = tok.encode_offsets(&joined)?;
        let mut kept_bytes = vec![false; joined.len()];
        for &i in out.origin.as_deref().unwrap_or_default() {
            if let Some(&(a, b)) = offsets.get(i) {
                for k in kept_bytes.iter_mut().take(b.min(joined.len())).skip(a) {
                    *k = true;
                }
            }
        }
        let first_doc = usize::from(out.start > 0);
        let mut base = 0usize;
        let mut pieces = Vec::new();
        let mut exceeded = false;
        for (k, doc) in out.token_contexts.iter().enumerate() {
            let at = base;
            base += doc.len() + 2;
            if k < first_doc {
                continue;
            }
            ctx.check().map_err(CompressError::from)?;
            let ws = words(doc);
            let forced: Vec<bool> = ws
                .iter()
                .map(|w| {
                    let s = &doc[w.range.clone()];
                    s.contains(SPAN_MARKER)
                        || budget.force_tokens.iter().any(|t| t != "\n" && s == t)
                        || (budget.force_reserve_digit && s.chars().any(|c| c.is_ascii_digit()))
                })
                .collect();
            let mut kept: Vec<bool> = ws
                .iter()
                .map(|w| kept_bytes[at + w.range.start..at + w.range.end].contains(&true))
                .collect();
            for u in units(doc, &ws, &budget.keep, &forced) {
                let any = u.words.clone().any(|i| kept[i]);
                if u.forced || any {
                    exceeded |= u.forced && !any;
                    for i in u.words.clone() {
                        kept[i] = true;
                    }
                }
            }
            let rebuilt = rebuild(doc, &ws, &kept);
            if !rebuilt.trim().is_empty() {
                pieces.push(rebuilt);
            }
        }
        let text_out = pieces.join(&self.separator);
        let compressed_tokens = cl100k_count(&text_out);
        Ok(CompressOutput {
            text: text_out,
            origin_tokens,
            compressed_tokens,
            budget_exceeded_by_units: exceeded,
        })
    }
}
