//! Scorers turn chunks of text into per-token keep probabilities.
//!
//! The policy's meaning-keeping selection ([`crate::compress::select::MeaningCompressor`]) reads
//! them from any [`Scorer`] (the LLMLingua-2 token classifier of the `lingua-encoder` crate, wrapped in `llmlingua2/`; the embedded
//! heuristic scorer in `heuristic.rs`), so a budget means the same whichever scorer runs; the
//! reference-parity LLMLingua-2 selection (`crate::compress::llmlingua2`) is generic over them
//! too. `causal/` is the causal LM's glue for LLMLingua (v1), which reads per-token losses
//! instead.

pub mod causal;
pub mod llmlingua2;

use thiserror::Error;

pub mod heuristic;

use crate::model::SchedError;
use crate::model::{Interrupted, WorkCtx};

/// How sub-word tokens mark word boundaries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WordStyle {
    /// BERT WordPiece: continuation pieces start with `##`.
    WordPiece,
    /// SentencePiece/Metaspace (XLM-R): word-initial pieces start with `▁`.
    Metaspace,
}

/// One chunk as the model saw it: token strings (special tokens included, in order) and the
/// probability that each token is worth keeping (softmax class 1).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScoredChunk {
    pub tokens: Vec<String>,
    pub probs: Vec<f32>,
}

#[derive(Debug, Error)]
pub enum ScorerError {
    #[error("tokenizer error: {0}")]
    Tokenizer(String),
    #[error("model error: {0}")]
    Model(String),
    #[error("scorer queue is full")]
    Overloaded,
    #[error("scorer is unavailable: {0}")]
    Unavailable(String),
    #[error("scoring deadline exceeded")]
    Deadline,
    #[error("scoring cancelled")]
    Cancelled,
}

impl From<Interrupted> for ScorerError {
    fn from(i: Interrupted) -> Self {
        match i {
            Interrupted::Deadline => Self::Deadline,
            Interrupted::Cancelled => Self::Cancelled,
        }
    }
}

impl From<lingua_encoder::EncoderError> for ScorerError {
    fn from(e: lingua_encoder::EncoderError) -> Self {
        match e {
            lingua_encoder::EncoderError::Model(m) => Self::Model(m),
        }
    }
}

impl From<SchedError> for ScorerError {
    fn from(e: SchedError) -> Self {
        match e {
            SchedError::Overloaded => Self::Overloaded,
            SchedError::Deadline => Self::Deadline,
            SchedError::Cancelled => Self::Cancelled,
            SchedError::Closed => Self::Unavailable("the model is shutting down".into()),
            SchedError::Backend(m) => Self::Model(m),
        }
    }
}

/// A token-level keep-probability model plus the tokenizer glue the selection needs.
pub trait Scorer: Send + Sync {
    /// Stable identifier of everything that changes the output (model weights digest,
    /// precision, scorer version). Used in cache keys.
    fn id(&self) -> &str;
    fn word_style(&self) -> WordStyle;
    /// `tokenizer.tokenize(text)`: token strings, no special tokens; `[NEW0]`…`[NEW99]` are atomic.
    fn tokenize(&self, text: &str) -> Result<Vec<String>, ScorerError>;
    /// `convert_tokens_to_string`: the tokenizer's decoder applied to token strings.
    fn tokens_to_string(&self, tokens: &[String]) -> String;
    /// Whether `token` is one of the tokenizer's special tokens (dropped before word merging).
    fn is_special(&self, token: &str) -> bool;
    /// Scores every chunk string (re-tokenised as the reference does). Gives up with
    /// [`ScorerError::Deadline`]/[`ScorerError::Cancelled`] as soon as `ctx` says so.
    fn score_chunks(
        &self,
        chunks: &[String],
        ctx: &WorkCtx,
    ) -> Result<Vec<ScoredChunk>, ScorerError>;
}

/// Which scorer the proxy ended up with, for `/readyz`, logs and reports.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "scorer", rename_all = "lowercase")]
pub enum ActiveScorer {
    /// The LLMLingua-2 classifier loaded from `dir`.
    Llmlingua2 {
        model: String,
        dir: String,
        precision: String,
        id: String,
    },
    /// The embedded heuristic scorer; `fallback_reason` says why when LLMLingua-2 was asked for.
    Heuristic { fallback_reason: Option<String> },
    /// No scorer: compression is off (`on_model_unavailable = "passthrough"`).
    None { reason: String },
}

impl ActiveScorer {
    /// A short name for events and reports: `llmlingua2:<checkpoint directory's name>`,
    /// `heuristic` or `none`.
    pub fn label(&self) -> String {
        match self {
            ActiveScorer::Llmlingua2 { dir, .. } => {
                let dir = dir.trim_end_matches('/');
                let base = std::path::Path::new(dir)
                    .file_name()
                    .map_or(dir.into(), |n| n.to_string_lossy());
                format!("llmlingua2:{base}")
            }
            ActiveScorer::Heuristic { .. } => "heuristic".into(),
            ActiveScorer::None { .. } => "none".into(),
        }
    }
}

/// The CPU tier and the kernels both model runtimes run on it, for `/readyz` and the log.
pub fn cpu_report() -> serde_json::Value {
    lingua_kernels::tier::report()
}
