//! Test support: a [`Scorer`] that replays per-chunk token strings and probabilities recorded
//! from the reference, so the selection can be tested bit for bit without running a model.
//!
//! Tokenisation and decoding are delegated to a base scorer (normally the real tokenizer glue,
//! `crate::scorer::llmlingua2::tokenizer`), whose own `score_chunks` is never called.

use std::collections::HashMap;

use crate::model::WorkCtx;
use crate::scorer::{ScoredChunk, Scorer, ScorerError, WordStyle};

/// Replays recorded model outputs, keyed by the exact chunk string.
pub struct ReplayScorer<S> {
    base: S,
    records: HashMap<String, ScoredChunk>,
    id: String,
}

impl<S: Scorer> ReplayScorer<S> {
    pub fn new(base: S) -> Self {
        let id = format!("replay:{}", base.id());
        Self {
            base,
            records: HashMap::new(),
            id,
        }
    }

    /// Records what the model saw for `chunk` (tokens incl. specials) and its probabilities.
    pub fn record(&mut self, chunk: impl Into<String>, scored: ScoredChunk) {
        self.records.insert(chunk.into(), scored);
    }

    pub fn base(&self) -> &S {
        &self.base
    }
}

impl<S: Scorer> Scorer for ReplayScorer<S> {
    fn id(&self) -> &str {
        &self.id
    }
    fn word_style(&self) -> WordStyle {
        self.base.word_style()
    }
    fn tokenize(&self, text: &str) -> Result<Vec<String>, ScorerError> {
        self.base.tokenize(text)
    }
    fn tokens_to_string(&self, tokens: &[String]) -> String {
        self.base.tokens_to_string(tokens)
    }
    fn is_special(&self, token: &str) -> bool {
        self.base.is_special(token)
    }
    fn score_chunks(
        &self,
        chunks: &[String],
        _ctx: &WorkCtx,
    ) -> Result<Vec<ScoredChunk>, ScorerError> {
        chunks
            .iter()
            .map(|c| {
                self.records.get(c).cloned().ok_or_else(|| {
                    ScorerError::Unavailable(format!("no recorded scores for chunk {c:?}"))
                })
            })
            .collect()
    }
}
