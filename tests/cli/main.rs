//! The command line: configuration loading and validation, `compress`, `eval facts` and `distill`.
//!
//! One test binary per group (linking is most of a test build); each file is one module.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

#[path = "../common/mod.rs"]
mod common;

mod cli_config;
mod compress_cli;
mod distill_cli;
mod eval_facts;
