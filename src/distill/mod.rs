//! LLMLingua-2's data distillation, the steps that need no model (spec
//! `llmlingua2-distillation.md` §2 and §3, from the MIT-licensed microsoft/LLMLingua
//! `experiments/llmlingua2/data_collection`): splitting texts into words ([`words`]), aligning a
//! compression back to its original's words and measuring the alignment ([`label`]), and the
//! two-stage quality filter ([`filter`]). Pure functions over strings: no HTTP, no model.
//!
//! Collecting compressions from an LLM and training a classifier on the labels are not here
//! yet.

pub mod filter;
pub mod label;
pub mod words;
