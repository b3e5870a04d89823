//! Compression: the hook, the policy rules, content-aware compression, the heuristic scorer, model
//! scheduling and the fuzz corpus, directly and through the proxy.
//!
//! One test binary per group (linking is most of a test build); each file is one module.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

#[path = "../common/mod.rs"]
mod common;

mod compress_heuristic;
mod compress_pipeline;
mod compress_proxy;
mod content_aware;
mod fuzz_corpus;
mod model_scheduling;
mod policy_rules;
