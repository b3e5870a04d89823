//! The LLMLingua-2-style [`Compressor`]: the faithful selection of [`super::llmlingua2`] over any
//! [`Scorer`] (the embedded heuristic one or the neural LLMLingua-2 classifier). Which scorer a
//! configuration gets is decided in [`crate::engine`].

use std::sync::Arc;

use super::compressor::{Budget, CompressError, CompressOutput, Compressor, OverScorer};
use super::llmlingua2::{Llmlingua2Options, compress_prompt};
use crate::model::WorkCtx;
use crate::scorer::Scorer;

/// Runs LLMLingua-2 token-level selection (one context, no context filter).
#[derive(Debug)]
pub struct Llmlingua2Compressor {
    over: OverScorer,
}

impl Llmlingua2Compressor {
    pub fn new(scorer: Arc<dyn Scorer>) -> Self {
        Self {
            over: OverScorer::new("lingua2-select/v1-pieces", scorer),
        }
    }

    pub fn scorer(&self) -> &Arc<dyn Scorer> {
        self.over.scorer()
    }
}

impl Compressor for Llmlingua2Compressor {
    fn id(&self) -> &str {
        self.over.id()
    }

    fn compress(
        &self,
        text: &str,
        budget: &Budget,
        ctx: &WorkCtx,
    ) -> Result<CompressOutput, CompressError> {
        budget.check_rate()?;
        let opts = Llmlingua2Options {
            rate: budget.rate,
            target_token: budget
                .target_tokens
                .map_or(-1, |t| i64::try_from(t).unwrap_or(i64::MAX)),
            use_context_level_filter: false,
            force_tokens: budget.force_tokens.clone(),
            force_reserve_digit: budget.force_reserve_digit,
            work: ctx.clone(),
            ..Llmlingua2Options::default()
        };
        let pieces = split_pieces(text);
        let cores: Vec<&str> = pieces.iter().map(|p| p.core).collect();
        let out = compress_prompt(self.over.scorer().as_ref(), &cores, &opts)?;
        if out.compressed_prompt_list.len() != pieces.len() {
            return Err(CompressError::Internal(format!(
                "selection returned {} texts for {} pieces",
                out.compressed_prompt_list.len(),
                pieces.len()
            )));
        }
        let mut joined = String::with_capacity(text.len());
        for (p, c) in pieces.iter().zip(&out.compressed_prompt_list) {
            joined.push_str(p.lead);
            joined.push_str(c.trim());
            joined.push_str(p.trail);
        }
        Ok(CompressOutput {
            text: joined,
            origin_tokens: out.origin_tokens,
            compressed_tokens: out.compressed_tokens,
            budget_exceeded_by_units: false,
        })
    }
}

/// Pieces are cut after a newline once they hold this many words.
const SOFT_WORDS: usize = 150;
/// Pieces with no newline are cut after a sentence end once they hold this many words.
const HARD_WORDS: usize = 300;

/// A slice of the text compressed as one LLMLingua-2 context; `lead` and `trail` are the
/// whitespace around it, forwarded verbatim.
#[derive(Debug, PartialEq)]
struct Piece<'a> {
    lead: &'a str,
    core: &'a str,
    trail: &'a str,
}

/// Cuts a long text into pieces of a few hundred words at line (or sentence) ends, so that the
/// selection's own 511-token chunking, which glues chunks without a separator and fuses the
/// words at the seam ("time.Development"), rarely has to cut. Each piece still gets its own
/// percentile threshold, as each chunk does in LLMLingua-2, so budgets keep their meaning.
fn split_pieces(text: &str) -> Vec<Piece<'_>> {
    let mut cuts = vec![0];
    let mut words = 0;
    let mut in_word = false;
    let bytes = text.as_bytes();
    for (i, c) in text.char_indices() {
        let ws = c.is_whitespace();
        if !ws && !in_word {
            words += 1;
        }
        in_word = !ws;
        let next_ws = bytes.get(i + 1).is_none_or(|b| b.is_ascii_whitespace());
        let line_end = c == '\n' && bytes.get(i + 1) != Some(&b'\n');
        let sentence_end = matches!(c, '.' | '?' | '!') && next_ws;
        if (line_end && words >= SOFT_WORDS) || (sentence_end && words >= HARD_WORDS) {
            cuts.push(i + c.len_utf8());
            words = 0;
        }
    }
    cuts.push(text.len());
    cuts.dedup();
    cuts.windows(2)
        .filter_map(|w| {
            let s = &text[w[0]..w[1]];
            let core = s.trim();
            let lead_len = s.len() - s.trim_start().len();
            (!s.is_empty()).then(|| Piece {
                lead: &s[..lead_len],
                core,
                trail: &s[lead_len + core.len()..],
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pieces_cover_the_text_and_cut_at_line_ends() {
        let line = "word ".repeat(60) + "end.\n";
        let text = line.repeat(10);
        let pieces = split_pieces(&text);
        assert!(pieces.len() > 2);
        let rebuilt: String = pieces
            .iter()
            .map(|p| format!("{}{}{}", p.lead, p.core, p.trail))
            .collect();
        assert_eq!(rebuilt, text);
        assert!(pieces[..pieces.len() - 1].iter().all(|p| p.trail == "\n"));
        let prose = "A sentence of words here. ".repeat(200);
        let pieces = split_pieces(&prose);
        assert!(pieces.len() >= 3);
        assert!(pieces.iter().all(|p| p.core.ends_with('.')));
        assert_eq!(split_pieces("short").len(), 1);
    }
}
