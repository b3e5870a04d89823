//! LLMLingua-2 scorer: the token-classification encoder and the tokenizer glue.

pub(crate) mod candle_ops;
pub mod config;
pub mod encoder;
pub mod kernels;
pub mod load;
pub mod pool;
#[cfg(feature = "test-support")]
pub mod random;
pub mod scorer;
pub mod tokenizer;

pub use config::{Arch, EncoderConfig};
pub use encoder::{Precision, TokenClassifier};
pub use load::{LoadError, ModelFiles};
pub use pool::{ClassifierBackend, ClassifierScheduler};
