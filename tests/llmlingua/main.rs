//! The LLMLingua family on real model-loading code: the LLMLingua-2 goldens, tokenizer, robustness,
//! NumPy percentile, CLI and proxy; the encoder runtime (loading, parity, pool); LLMLingua through
//! the proxy.
//!
//! One test binary per group (linking is most of a test build); each file is one module.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

#[path = "../common/mod.rs"]
mod common;
#[path = "../lingua2_common/mod.rs"]
mod lingua2_common;

mod encoder_load;
mod encoder_parity;
mod encoder_pool;
mod gguf_tokenizer;
mod lingua2_cli;
mod lingua2_goldens;
mod lingua2_numpy;
mod lingua2_proxy;
mod lingua2_robustness;
mod lingua2_tokenizer;
mod llmlingua_proxy;
