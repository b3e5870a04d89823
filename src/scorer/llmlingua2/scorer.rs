//! The LLMLingua-2 [`Scorer`]: the tokenizer glue in front of the candle encoder, which runs on
//! the dedicated threads of an [`InferencePool`] behind a bounded queue.

use std::sync::Arc;

use super::encoder::{Precision, TokenClassifier};
use super::load::ModelFiles;
use super::pool::{InferencePool, PoolConfig};
use super::tokenizer::{InputScorer, Lingua2Tokenizer, ModelInput};
use crate::scorer::{Scorer, ScorerError};

/// A loaded LLMLingua-2 checkpoint, ready to score.
pub struct LoadedModel {
    pub scorer: Arc<dyn Scorer>,
    pub pool: Arc<InferencePool>,
    pub files: ModelFiles,
}

impl std::fmt::Debug for LoadedModel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoadedModel")
            .field("dir", &self.files.dir)
            .field("scorer", &self.scorer.id())
            .finish()
    }
}

/// Resolves `model` (a local directory or a Hugging Face repo id), loads the tokenizer and the
/// encoder for `device` at `precision`, and starts its inference pool. Errors name the file
/// and the problem.
pub fn load(
    model: &str,
    device: &str,
    precision: Precision,
    pool: PoolConfig,
) -> Result<LoadedModel, String> {
    let files = ModelFiles::resolve(model).map_err(|e| e.to_string())?;
    let tokenizer = Lingua2Tokenizer::from_dir(&files.dir)
        .map_err(|e| format!("{}: {e}", files.tokenizer_json.display()))?;
    let classifier = TokenClassifier::load(&files, device, precision).map_err(|e| e.to_string())?;
    // The tokenizer's ids (placeholders included) must all exist in the embedding table.
    let vocab = classifier.config().vocab_size;
    if tokenizer.len_with_added() > vocab {
        return Err(format!(
            "{}: the tokenizer has {} ids (with the 100 [NEWi] placeholders) but the model's \
             embedding table has {vocab} rows; tokenizer and weights do not belong together",
            files.config.display(),
            tokenizer.len_with_added()
        ));
    }
    let id = format!("llmlingua2:{}", classifier.digest());
    let pool = Arc::new(InferencePool::new(Arc::new(classifier), pool).map_err(|e| e.to_string())?);
    let worker = pool.clone();
    let infer = move |inputs: &[ModelInput]| -> Result<Vec<Vec<f32>>, ScorerError> {
        let batch = inputs.iter().map(|i| i.input_ids.clone()).collect();
        // Blocks this compression thread (never the async runtime) until the pool answers.
        worker.try_submit(batch)?.wait()
    };
    Ok(LoadedModel {
        scorer: Arc::new(InputScorer::new(tokenizer, id, infer)),
        pool,
        files,
    })
}
