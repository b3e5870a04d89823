//! The LLMLingua-2 encoder runtime: a BERT or XLM-RoBERTa token classifier on the CPU (or a
//! candle device), weights in, per-token keep probabilities out. It knows nothing of the proxy,
//! of tokenizers or of scheduling: `lingua-proxy`'s `scorer::llmlingua2` wraps it in the
//! `Scorer` trait and the model scheduler.
//!
//! - `config`: the checkpoint's `config.json` (architecture, sizes, activation, labels);
//! - `load`: where a checkpoint's files are (a directory, or a Hugging Face id in the cache);
//! - `tensors`: reading them one tensor at a time (safetensors by positioned reads);
//! - `encoder`: [`TokenClassifier`], the forward pass (packed sequences, fused passes, f32 or
//!   int8 products) and its precisions;
//! - `candle_ops`: the candle reference forward (non-CPU devices, parity checks);
//! - `train`: [`train::Trainer`], fine-tuning with candle's autograd and AdamW;
//! - `random` (feature `test-support`): random-weight checkpoints for tests and benches.

mod candle_ops;
pub mod config;
pub mod encoder;
pub mod load;
#[cfg(feature = "test-support")]
pub mod random;
mod tensors;
pub mod train;

pub use config::{Activation, Arch, EncoderConfig};
pub use encoder::{Precision, TokenClassifier};
pub use load::{LoadError, ModelFiles};

/// A forward pass that could not run (a malformed batch, a device error).
#[derive(Debug, thiserror::Error)]
pub enum EncoderError {
    #[error("{0}")]
    Model(String),
}
