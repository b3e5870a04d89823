//! Command-line subcommands other than `serve`.

pub mod compress;
pub mod distill;
pub mod eval;
pub mod llmlingua;
pub mod report;
