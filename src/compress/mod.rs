//! The compression library: message policy, protected spans, selection and caching. No HTTP here.

pub mod cache;
pub mod compressor;
pub mod config;
pub mod conversation;
pub mod lingua2;
pub mod lingua2_compressor;
pub mod policy;
pub mod spans;
pub mod tokens;

pub use cache::{CacheKey, CompressionCache, MokaCache, NoCache};
pub use compressor::{Budget, CompressError, CompressOutput, Compressor};
pub use config::{
    CompressionConfig, ConfigError, ModelUnavailable, OnError, PrecisionSetting, RoleConfig,
    ScorerKind,
};
pub use conversation::{Conversation, Message, PathElem, Segment};
pub use lingua2_compressor::{
    ActiveScorer, Built, Lingua2Compressor, build, build_compressor, build_with,
};
pub use policy::{
    CacheStatus, MessageReport, Outcome, Policy, Report, RequestOptions, RoleReport, SkipReason,
};
pub use tokens::TokenizerKind;
