//! LLMLingua-2's data distillation, the steps that need no model (spec
//! `llmlingua2-distillation.md` §2 and §3, from the MIT-licensed microsoft/LLMLingua
//! `experiments/llmlingua2/data_collection`): the paper's instruction and the chunking of the
//! originals ([`chunk`]), asking an OpenAI-compatible model for the compressions ([`collect`]),
//! splitting texts into words ([`words`]), aligning a compression back to its original's words
//! and measuring the alignment ([`label`]), the two-stage quality filter ([`filter`]), and
//! the training windows and split of the token classifier ([`train`]; the optimiser is
//! `lingua_encoder::train`), scorers measured against the labels ([`eval`]), and the
//! prompt and answer sequences that align the causal LM to the target LLM ([`align`]; the
//! optimiser is `lingua_causal::train`).

pub mod align;
pub mod chunk;
pub mod collect;
pub mod eval;
pub mod filter;
pub mod label;
pub mod train;
pub mod words;
