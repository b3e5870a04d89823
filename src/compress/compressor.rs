//! The text-level seam: text + budget in, compressed text + stats out.
//!
//! [`MeaningCompressor`](super::select::MeaningCompressor) runs the policy's meaning-keeping
//! selection over any [`Scorer`](crate::scorer::Scorer);
//! `Llmlingua2Compressor` (tests and benches, `test-support`) the LLMLingua-2 selection itself;
//! [`LlmlinguaCompressor`](super::llmlingua_compressor::LlmlinguaCompressor) the
//! perplexity-based LLMLingua and LongLLMLingua over a causal LM.

use std::sync::Arc;

use thiserror::Error;

use super::units::KeepRules;
use crate::model::Interrupted;
use crate::model::WorkCtx;
use crate::scorer::{Scorer, ScorerError};

/// How much of a text to keep.
#[derive(Debug, Clone, PartialEq)]
pub struct Budget {
    /// Fraction of tokens to keep, in (0, 1].
    pub rate: f64,
    /// Token target for the whole text; overrides `rate` when set (LLMLingua-2 `target_token`).
    pub target_tokens: Option<u64>,
    /// Strings the selection always keeps.
    pub force_tokens: Vec<String>,
    /// Words containing a digit are always kept.
    pub force_reserve_digit: bool,
    /// Semantic units and must-keep words (used by the meaning-keeping selection).
    pub keep: KeepRules,
    /// The question the text is compressed for (LongLLMLingua's question-aware ranking); set
    /// only for compressors whose [`Compressor::uses_question`] is true.
    pub question: Option<String>,
}

impl Budget {
    /// Refuses a rate that is not finite and positive.
    pub fn check_rate(&self) -> Result<(), CompressError> {
        if self.rate.is_finite() && self.rate > 0.0 {
            Ok(())
        } else {
            Err(CompressError::Budget(format!("rate {}", self.rate)))
        }
    }

    pub fn rate(rate: f64) -> Self {
        Self {
            rate,
            target_tokens: None,
            force_tokens: Vec::new(),
            force_reserve_digit: false,
            keep: KeepRules::default(),
            question: None,
        }
    }
}

/// A compressed text and its counts (in the compressor's own counting, cl100k for LLMLingua-2).
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct CompressOutput {
    pub text: String,
    pub origin_tokens: usize,
    pub compressed_tokens: usize,
    /// The units the selection must keep alone exceeded the budget (all were kept).
    pub budget_exceeded_by_units: bool,
}

#[derive(Debug, Error)]
pub enum CompressError {
    #[error(transparent)]
    Scorer(#[from] ScorerError),
    #[error("invalid budget: {0}")]
    Budget(String),
    #[error("compression deadline exceeded")]
    Deadline,
    #[error("compression cancelled")]
    Cancelled,
    #[error("compression failed: {0}")]
    Internal(String),
}

impl From<Interrupted> for CompressError {
    fn from(i: Interrupted) -> Self {
        match i {
            Interrupted::Deadline => Self::Deadline,
            Interrupted::Cancelled => Self::Cancelled,
        }
    }
}

impl CompressError {
    /// Whether the work stopped because of its deadline or cancellation (wherever it noticed).
    pub fn interrupted(&self) -> Option<Interrupted> {
        match self {
            Self::Deadline | Self::Scorer(ScorerError::Deadline) => Some(Interrupted::Deadline),
            Self::Cancelled | Self::Scorer(ScorerError::Cancelled) => Some(Interrupted::Cancelled),
            _ => None,
        }
    }

    /// Whether the scorer refused the work because its queue is full.
    pub fn is_overloaded(&self) -> bool {
        matches!(self, Self::Scorer(ScorerError::Overloaded))
    }
}

/// Compresses one text under a budget. Implementations must be deterministic: the same text,
/// budget and [`Compressor::id`] give byte-identical output.
pub trait Compressor: Send + Sync {
    /// Identifies everything that changes the output (algorithm, scorer id, settings); part of
    /// every cache key.
    fn id(&self) -> &str;
    /// `ctx` carries the request's deadline and cancellation: implementations pass it to their
    /// scorer and stop with [`CompressError::Deadline`]/[`CompressError::Cancelled`] when told.
    fn compress(
        &self,
        text: &str,
        budget: &Budget,
        ctx: &WorkCtx,
    ) -> Result<CompressOutput, CompressError>;
    /// Whether the output depends on [`Budget::question`] (the policy sets it only then, so
    /// that other compressors keep their cache hits across questions).
    fn uses_question(&self) -> bool {
        false
    }
}

/// What a compressor over a [`Scorer`] holds: the scorer and an id naming the selection, its
/// version and the scorer, so that cache keys change with either.
#[derive(Clone)]
pub struct OverScorer {
    scorer: Arc<dyn Scorer>,
    id: String,
}

impl OverScorer {
    pub fn new(selection: &str, scorer: Arc<dyn Scorer>) -> Self {
        let id = format!("{selection}+{}", scorer.id());
        Self { scorer, id }
    }

    pub fn scorer(&self) -> &Arc<dyn Scorer> {
        &self.scorer
    }

    pub fn id(&self) -> &str {
        &self.id
    }
}

impl std::fmt::Debug for OverScorer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("OverScorer").field("id", &self.id).finish()
    }
}
