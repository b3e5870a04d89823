//! The LLMLingua-2 [`Scorer`]: the tokenizer glue in front of the candle encoder, which runs on
//! the model thread of its [`ClassifierScheduler`] (token-budget batches, deadlines, admission).

use std::sync::Arc;

use super::pool::{ClassifierScheduler, start};
use super::tokenizer::{InputScorer, Llmlingua2Tokenizer, ModelInput};
use crate::model::WorkCtx;
use crate::model::{ModelConfig, PrecisionSetting, SchedulerConfig};
use crate::scorer::{Scorer, ScorerError};
use lingua_encoder::ModelFiles;
use lingua_encoder::encoder::{Precision, TokenClassifier};

/// A loaded LLMLingua-2 checkpoint, ready to score.
pub struct LoadedModel {
    pub scorer: Arc<dyn Scorer>,
    pub scheduler: Arc<ClassifierScheduler>,
    pub files: ModelFiles,
    pub precision: Precision,
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
/// encoder as `[model]` says (device, precision, threads), and starts its scheduler. Errors
/// name the file and the problem.
pub fn load(model: &str, cfg: &ModelConfig) -> Result<LoadedModel, String> {
    let files = ModelFiles::resolve(model).map_err(|e| e.to_string())?;
    let tokenizer = Llmlingua2Tokenizer::from_dir(&files.dir)
        .map_err(|e| format!("{}: {e}", files.tokenizer_json.display()))?;
    let precision = match cfg.precision() {
        PrecisionSetting::F32 => Precision::F32,
        PrecisionSetting::Q8 => Precision::Q8,
        PrecisionSetting::Bf16 => Precision::Bf16,
    };
    let classifier = if cfg.threads == 0 {
        TokenClassifier::load(&files, cfg.device(), precision)
    } else {
        TokenClassifier::load_with_threads(&files, cfg.device(), precision, cfg.threads)
    }
    .map_err(|e| e.to_string())?;
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
    let classifier = Arc::new(classifier);
    let scheduler = Arc::new(
        start(
            classifier.clone(),
            SchedulerConfig {
                max_batch_tokens: cfg.max_batch_tokens,
                max_queued_tokens: cfg.max_queued_tokens,
                thread_name: "lingua-model".into(),
            },
        )
        .map_err(|e| e.to_string())?,
    );
    let worker = scheduler.clone();
    let infer = move |inputs: &[ModelInput], ctx: &WorkCtx| -> Result<Vec<Vec<f32>>, ScorerError> {
        let batch: Vec<Vec<u32>> = inputs.iter().map(|i| i.input_ids.clone()).collect();
        // Invalid input is refused here, never queued.
        classifier.validate(&batch)?;
        // Blocks this compression thread (never the async runtime) until the windows ran, the
        // deadline passed or the request was cancelled.
        Ok(worker.submit(ctx, batch)?.wait()?)
    };
    Ok(LoadedModel {
        scorer: Arc::new(InputScorer::new(tokenizer, id, infer)),
        scheduler,
        files,
        precision,
    })
}
