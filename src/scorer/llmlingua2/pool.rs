//! The LLMLingua-2 token classifier as a [`Backend`] of the model scheduler
//! ([`crate::model::Scheduler`]): a window is the input ids of one ≤ 512-token chunk, its
//! output one keep probability per position. Batching, deadlines, cancellation and admission
//! are the scheduler's; this file only forwards batches.

use std::sync::Arc;

use crate::model::{Backend, Scheduler, SchedulerConfig};
use crate::scorer::ScorerError;
use lingua_encoder::encoder::TokenClassifier;

/// The classifier, forwarded by the scheduler's model thread.
#[derive(Debug, Clone)]
pub struct ClassifierBackend {
    model: Arc<TokenClassifier>,
}

impl ClassifierBackend {
    pub fn new(model: Arc<TokenClassifier>) -> Self {
        Self { model }
    }
}

impl Backend for ClassifierBackend {
    type Window = Vec<u32>;
    type Output = Vec<f32>;
    type Error = ScorerError;

    fn tokens(window: &Vec<u32>) -> usize {
        window.len()
    }

    fn forward(&mut self, batch: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, ScorerError> {
        Ok(self.model.keep_probs(batch)?)
    }
}

/// The scheduler of a loaded classifier.
pub type ClassifierScheduler = Scheduler<ClassifierBackend>;

/// Starts the model thread for `model`.
pub fn start(
    model: Arc<TokenClassifier>,
    cfg: SchedulerConfig,
) -> Result<ClassifierScheduler, ScorerError> {
    Scheduler::new(ClassifierBackend::new(model), cfg)
        .map_err(|e| ScorerError::Unavailable(format!("cannot start the model thread: {e}")))
}
