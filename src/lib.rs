//! lingua-proxy: a reverse proxy for the OpenAI and Anthropic APIs that compresses prompts with
//! LLMLingua-2.
//!
//! Data flows one way: request → API surface ([`api`]) → policy ([`compress`]) → scorer
//! ([`scorer`]) → selection → rewritten request → upstream → streamed response ([`server`]). The
//! server knows nothing about scoring; it only calls the [`hook::RequestHook`] seam.

pub mod ab;
pub mod api;
pub mod cli;
pub mod compress;
pub mod config;
pub mod distill;
pub mod engine;
pub mod eval;
#[doc(hidden)]
pub mod fuzzing;
pub mod headers;
pub mod hook;
pub mod lexicon;
pub mod model;
pub mod scorer;
pub mod server;
pub mod telemetry;
pub mod tokens;
