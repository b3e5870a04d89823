//! The compression library: message policy, protected spans, selection and caching. No HTTP here.

pub mod cache;
pub mod compressor;
pub mod config;
pub mod content;
pub mod conversation;
pub mod llmlingua;
pub mod llmlingua2;
/// The reference-parity LLMLingua-2 selection as a policy compressor, for tests and benches
/// (the proxy compresses with [`MeaningCompressor`]).
#[cfg(any(test, feature = "test-support"))]
pub mod llmlingua2_compressor;
pub mod llmlingua_compressor;
pub mod policy;
pub mod punkt;
pub mod redis_cache;
pub mod select;
pub mod spans;
pub mod units;

/// Token counting lives in the leaf module [`crate::tokens`].
pub use crate::tokens::{self, TokenizerKind};
pub use cache::{CacheKey, CompressionCache, MokaCache, NoCache};
pub use compressor::{Budget, CompressError, CompressOutput, Compressor};
pub use config::{
    CompressionConfig, CompressionConfigError, HonorTags, InstructionsMode, MethodKind,
    ModelUnavailable, OnError, PrecisionSetting, Prose, RoleConfig, ScorerKind, Transforms,
};
pub use conversation::{Conversation, Message, PathElem, Segment};
#[cfg(any(test, feature = "test-support"))]
pub use llmlingua2_compressor::Llmlingua2Compressor;
pub use policy::{
    CacheStatus, MessageReport, Outcome, PieceReport, Policy, Report, RequestOptions, RoleReport,
    SkipReason,
};
pub use select::MeaningCompressor;
pub use spans::Transform;
pub use units::KeepRules;
