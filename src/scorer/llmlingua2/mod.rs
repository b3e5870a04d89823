//! The LLMLingua-2 scorer: the encoder runtime (`lingua_encoder`) behind the [`Scorer`]
//! trait, with the tokenizer glue (`tokenizer`), the scheduler backend (`pool`) and loading from
//! the `[model]` table (`scorer`).
//!
//! [`Scorer`]: crate::scorer::Scorer

pub mod pool;
pub mod scorer;
pub mod tokenizer;

pub use pool::{ClassifierBackend, ClassifierScheduler};
