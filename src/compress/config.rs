//! The `[compression]` configuration table.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use thiserror::Error;

use super::tokens::TokenizerKind;

/// Which scorer turns text into keep probabilities.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ScorerKind {
    /// The embedded, download-free self-information scorer.
    #[default]
    Heuristic,
    /// The LLMLingua-2 token classifier (needs a model).
    Llmlingua2,
}

impl std::str::FromStr for ScorerKind {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "heuristic" => Ok(Self::Heuristic),
            "llmlingua2" => Ok(Self::Llmlingua2),
            other => Err(format!(
                "unknown scorer {other:?} (expected \"heuristic\" or \"llmlingua2\")"
            )),
        }
    }
}

/// Which compression method a role's messages go through.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default, PartialOrd, Ord)]
#[serde(rename_all = "lowercase")]
pub enum MethodKind {
    /// The `scorer`'s keep probabilities through the meaning-keeping selection (LLMLingua-2).
    #[default]
    Llmlingua2,
    /// LLMLingua: a causal LM's perplexity (`[model] causal_model`), coarse and token-level.
    Llmlingua,
    /// LongLLMLingua: LLMLingua with question-aware ranking of a message's documents.
    Longllmlingua,
}

impl MethodKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Llmlingua2 => "llmlingua2",
            Self::Llmlingua => "llmlingua",
            Self::Longllmlingua => "longllmlingua",
        }
    }

    /// Whether the method needs the causal LM.
    pub fn is_causal(self) -> bool {
        self != Self::Llmlingua2
    }
}

/// The default LLMLingua-2 checkpoint (BERT base multilingual, 12 layers).
pub const DEFAULT_MODEL: &str = "microsoft/llmlingua-2-bert-base-multilingual-cased-meetingbank";

/// What to do when the LLMLingua-2 model cannot be loaded (offline, missing or corrupt files).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ModelUnavailable {
    /// Start with the embedded heuristic scorer, loudly.
    #[default]
    Heuristic,
    /// Start without compression: every request is forwarded unchanged.
    Passthrough,
    /// Refuse to start.
    Fail,
}

pub use crate::model::config::PrecisionSetting;

/// What to do when compression fails or misses its deadline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum OnError {
    /// Forward the original request (fail-open).
    #[default]
    Passthrough,
    /// Answer the client with an error instead of forwarding.
    Reject,
}

pub use super::content::Prose;

/// `[compression] instructions`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum InstructionsMode {
    /// Instructions are forwarded byte for byte.
    #[default]
    Keep,
    /// Instructions are compressed between their skeleton (headings, list markers, tags,
    /// labels and identifiers stay).
    Compress,
}

/// `[compression] honor_tags`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum HonorTags {
    /// System and developer messages (the operator's).
    #[default]
    System,
    All,
    None,
}

impl HonorTags {
    /// Whether tags steer compression in messages of `role`.
    pub fn honors(self, role: &str) -> bool {
        match self {
            Self::All => true,
            Self::None => false,
            Self::System => matches!(role, "system" | "developer"),
        }
    }
}

/// `[compression.transforms]`: lossless rewrites of text that is never scored. Each keeps the
/// output deterministic per text, so provider prompt caches keep hitting.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Transforms {
    /// A block that is one JSON value loses its insignificant whitespace (strings, escapes,
    /// key order and number spellings stay). Off by default: agents edit files by exact string
    /// match, and a minified `cat config.json` no longer matches the file.
    pub minify_json: bool,
    /// Runs of three or more identical log or terminal lines become the line and an explicit
    /// count marker.
    pub collapse_repeats: bool,
    /// A tool result that repeats an earlier tool result of the same request byte for byte is
    /// replaced by an explicit reference to it.
    pub dedupe_tool_results: bool,
}

impl Default for Transforms {
    fn default() -> Self {
        Self {
            minify_json: false,
            collapse_repeats: true,
            dedupe_tool_results: true,
        }
    }
}

/// Budget of one role (`[compression.roles.<role>]`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoleConfig {
    /// Whether messages of this role are compressed at all.
    pub enabled: bool,
    /// Fraction of tokens to keep, in (0, 1].
    pub rate: f64,
    /// Per-message token target; overrides `rate` when set.
    pub target_tokens: Option<u64>,
    /// Messages with fewer target-tokenizer tokens than this are left alone.
    pub min_tokens: u64,
    /// Extra words or regexes always kept in this role's messages (added to
    /// `[compression] must_keep`).
    pub must_keep: Vec<String>,
    /// This role's method, when it differs from `[compression] method`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub method: Option<MethodKind>,
    /// How this role's plain prose reads: `"instructions"` (the operator's rules: kept unless
    /// `[compression] instructions = "compress"`) or `"documents"` (compressed). System and
    /// developer messages hold instructions by default, every other role documents.
    pub prose: Prose,
}

impl Default for RoleConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            rate: 0.5,
            target_tokens: None,
            min_tokens: 200,
            must_keep: Vec::new(),
            method: None,
            prose: Prose::Documents,
        }
    }
}

impl RoleConfig {
    fn with_rate(rate: f64) -> Self {
        Self {
            rate,
            ..Self::default()
        }
    }

    fn instructions(rate: f64) -> Self {
        Self {
            prose: Prose::Instructions,
            ..Self::with_rate(rate)
        }
    }
}

/// Per-role budgets. Unknown role names are rejected.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RolesConfig {
    pub system: RoleConfig,
    pub developer: RoleConfig,
    pub user: RoleConfig,
    pub assistant: RoleConfig,
    pub tool: RoleConfig,
    /// Legacy `function` role results.
    pub function: RoleConfig,
    /// Legacy completions' `prompt` strings (off by default).
    pub prompt: RoleConfig,
}

impl Default for RolesConfig {
    fn default() -> Self {
        Self {
            // Derived from the fact-retention suite (docs/compression.md, "Keeping the meaning"): the lowest
            // rates that keep >= 95% of facts with the embedded scorer. Tool results are
            // classified first (code, data, logs and traces are never scored), so their rate
            // applies to the documents inside them. System and developer prose is read as
            // instructions, kept unless `instructions = "compress"`; the rate applies then.
            system: RoleConfig::instructions(0.65),
            developer: RoleConfig::instructions(0.65),
            user: RoleConfig::with_rate(0.7),
            assistant: RoleConfig {
                enabled: false,
                ..RoleConfig::with_rate(1.0)
            },
            tool: RoleConfig::with_rate(0.74),
            function: RoleConfig::with_rate(0.74),
            prompt: RoleConfig {
                enabled: false,
                ..RoleConfig::with_rate(0.7)
            },
        }
    }
}

impl RolesConfig {
    /// The budget for a role name, `None` for roles the policy does not know.
    pub fn get(&self, role: &str) -> Option<&RoleConfig> {
        match role {
            "system" => Some(&self.system),
            "developer" => Some(&self.developer),
            "user" => Some(&self.user),
            "assistant" => Some(&self.assistant),
            "tool" => Some(&self.tool),
            "function" => Some(&self.function),
            "prompt" => Some(&self.prompt),
            _ => None,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&'static str, &RoleConfig)> {
        [
            ("system", &self.system),
            ("developer", &self.developer),
            ("user", &self.user),
            ("assistant", &self.assistant),
            ("tool", &self.tool),
            ("function", &self.function),
            ("prompt", &self.prompt),
        ]
        .into_iter()
    }
}

/// The `[compression]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct CompressionConfig {
    /// Master switch; `x-lingua-compress: on` can still force compression per request
    /// when `allow_request_overrides` is true.
    pub enabled: bool,
    /// `"llmlingua2"` (the `scorer` through the meaning-keeping selection), `"llmlingua"` or
    /// `"longllmlingua"` (the causal LM of `[model] causal_model`); roles may override it.
    pub method: MethodKind,
    /// Separator of the documents inside one message that the LLMLingua coarse filter ranks,
    /// drops and reorders (blank lines by default).
    pub document_separator: String,
    /// `"heuristic"` (embedded, no download) or `"llmlingua2"`.
    pub scorer: ScorerKind,
    /// LLMLingua-2 model: a local directory or a Hugging Face id (used by `scorer = "llmlingua2"`).
    pub model: Option<String>,
    /// What to do when the LLMLingua-2 model cannot be loaded.
    pub on_model_unavailable: ModelUnavailable,
    /// Deprecated: `[model] precision`. Read when `[model]` leaves it unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub precision: Option<PrecisionSetting>,
    /// Deprecated: `[model] device`. Read when `[model]` leaves it unset.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub device: Option<String>,
    /// Per-role budgets.
    pub roles: RolesConfig,
    /// Never compress the final user message.
    pub protect_last_user: bool,
    /// Leave the last N messages alone.
    pub protect_recent: usize,
    /// Leave every message at or before the request's last provider cache breakpoint alone
    /// (Anthropic `cache_control`, Responses `prompt_cache_breakpoint`). Off by default:
    /// compression is deterministic, so a compressed cached prefix is the same bytes each turn.
    pub freeze_cached_prefix: bool,
    /// A message shrinking by less than this fraction is forwarded unchanged.
    pub min_savings: f64,
    /// User regexes whose matches are kept verbatim and never scored.
    pub keep_patterns: Vec<String>,
    /// Strings the selection always keeps (LLMLingua-2 `force_tokens`, at most 98).
    /// `"\n"` is always added so message structure survives.
    pub force_tokens: Vec<String>,
    /// Words containing a digit are always kept (LLMLingua-2 `force_reserve_digit`).
    pub force_reserve_digit: bool,
    /// A number is kept with its unit, currency, percent or counted noun (and the comparator
    /// before it), always; capitalised multi-word names are kept or dropped together.
    pub keep_units: bool,
    /// A negation or limiting word (`not`, `never`, `only`, `unless`, `at most`, `must`, ...)
    /// is kept with what it governs, always.
    pub keep_negations: bool,
    /// What happens to prose read as instructions (system and developer messages by default):
    /// `"keep"` forwards it byte for byte, `"compress"` compresses it between its skeleton.
    pub instructions: InstructionsMode,
    /// Roles whose in-band `<llmlingua …>` tags steer compression: `"system"` (system and
    /// developer messages, the operator's), `"all"` or `"none"`. Elsewhere tags are plain text.
    pub honor_tags: HonorTags,
    /// Lossless transforms of what is never scored.
    pub transforms: Transforms,
    /// Regexes always kept in every role's messages: a match that starts and ends on word
    /// boundaries keeps the words it covers (plain words match themselves, case-sensitively).
    pub must_keep: Vec<String>,
    /// Time budget for compressing one request; past it the original is forwarded.
    pub deadline_ms: u64,
    /// `"passthrough"` (fail-open) or `"reject"`.
    pub on_error: OnError,
    /// Honour `x-lingua-compress` and `x-lingua-rate` request headers.
    pub allow_request_overrides: bool,
    /// Bound of the in-process cache of compressed texts, in bytes (0 disables it).
    pub cache_bytes: u64,
    /// Tokenizer for models the built-in table does not know.
    pub default_tokenizer: TokenizerKind,
    /// Requests compressed concurrently (0 = number of CPUs).
    pub workers: usize,
    /// Requests allowed to wait for a worker; beyond that requests skip compression.
    pub queue: usize,
    /// A message with more target-tokenizer tokens than this is not scored (skipped as
    /// `too_large`); 0 disables the limit.
    pub max_message_tokens: u64,
    /// A request whose messages hold more tokens than this in total is forwarded unchanged
    /// (`x-lingua-skipped: too_large`); 0 disables the limit.
    pub max_request_tokens: u64,
    /// Compress too-large and deadline-missed messages off the request path (lowest priority)
    /// and store the result in the cache, so the next identical message is a hit.
    pub background: bool,
    /// Requests waiting for background compression; more are not queued.
    pub background_queue: usize,
    /// Time budget of one background compression.
    pub background_deadline_ms: u64,
}

impl Default for CompressionConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            method: MethodKind::Llmlingua2,
            document_separator: "\n\n".into(),
            scorer: ScorerKind::Llmlingua2,
            model: Some(DEFAULT_MODEL.to_string()),
            on_model_unavailable: ModelUnavailable::Heuristic,
            precision: None,
            device: None,
            roles: RolesConfig::default(),
            protect_last_user: true,
            protect_recent: 0,
            freeze_cached_prefix: false,
            min_savings: 0.05,
            keep_patterns: Vec::new(),
            force_tokens: Vec::new(),
            force_reserve_digit: false,
            keep_units: true,
            keep_negations: true,
            must_keep: Vec::new(),
            instructions: InstructionsMode::Keep,
            honor_tags: HonorTags::System,
            transforms: Transforms::default(),
            deadline_ms: 2000,
            on_error: OnError::Passthrough,
            allow_request_overrides: true,
            cache_bytes: 64 * 1024 * 1024,
            default_tokenizer: TokenizerKind::O200kBase,
            workers: 0,
            queue: 64,
            max_message_tokens: 32768,
            max_request_tokens: 131072,
            background: false,
            background_queue: 16,
            background_deadline_ms: 30_000,
        }
    }
}

/// An invalid `[compression]` value; the message names the key.
#[derive(Debug, Error, PartialEq)]
#[error("invalid compression.{key}: {reason}")]
pub struct CompressionConfigError {
    pub key: String,
    pub reason: String,
}

fn err(key: impl Into<String>, reason: impl Into<String>) -> CompressionConfigError {
    CompressionConfigError {
        key: key.into(),
        reason: reason.into(),
    }
}

/// Checks that a rate lies in (0, 1].
pub fn check_rate(key: &str, rate: f64) -> Result<(), CompressionConfigError> {
    if rate.is_finite() && rate > 0.0 && rate <= 1.0 {
        Ok(())
    } else {
        Err(err(key, format!("{rate} is not in (0, 1]")))
    }
}

/// A `must_keep` entry: a regex that cannot match the empty string.
fn check_must_keep(pattern: &str) -> Result<(), String> {
    let re = regex::Regex::new(pattern).map_err(|e| e.to_string())?;
    if re.is_match("") {
        return Err("matches the empty string".into());
    }
    Ok(())
}

impl CompressionConfig {
    /// The keep rules for messages of `role` (global `must_keep` plus the role's).
    pub fn keep_rules(&self, role: &str) -> crate::compress::units::KeepRules {
        let mut must_keep = self.must_keep.clone();
        if let Some(r) = self.roles.get(role) {
            must_keep.extend(r.must_keep.iter().cloned());
        }
        crate::compress::units::KeepRules {
            units: self.keep_units,
            negations: self.keep_negations,
            must_keep,
        }
    }

    /// Validates every value; errors name the offending key.
    pub fn validate(&self) -> Result<(), CompressionConfigError> {
        for (i, pattern) in self.must_keep.iter().enumerate() {
            check_must_keep(pattern).map_err(|e| err(format!("must_keep[{i}]"), e))?;
        }
        for (name, role) in self.roles.iter() {
            check_rate(&format!("roles.{name}.rate"), role.rate)?;
            for (i, pattern) in role.must_keep.iter().enumerate() {
                check_must_keep(pattern)
                    .map_err(|e| err(format!("roles.{name}.must_keep[{i}]"), e))?;
            }
            if role.target_tokens == Some(0) {
                return Err(err(
                    format!("roles.{name}.target_tokens"),
                    "must be at least 1",
                ));
            }
        }
        if !(self.min_savings.is_finite() && (0.0..1.0).contains(&self.min_savings)) {
            return Err(err(
                "min_savings",
                format!("{} is not in [0, 1)", self.min_savings),
            ));
        }
        for (i, pattern) in self.keep_patterns.iter().enumerate() {
            regex::Regex::new(pattern)
                .map_err(|e| err(format!("keep_patterns[{i}]"), e.to_string()))?;
        }
        // LLMLingua-2 allows 100 force tokens; the policy adds "\n" and its span marker.
        if self.force_tokens.len() > 98 {
            return Err(err(
                "force_tokens",
                format!(
                    "{} entries; at most 98 are allowed",
                    self.force_tokens.len()
                ),
            ));
        }
        if let Some(i) = self.force_tokens.iter().position(String::is_empty) {
            return Err(err(format!("force_tokens[{i}]"), "must not be empty"));
        }
        if self.deadline_ms == 0 {
            return Err(err("deadline_ms", "must be at least 1"));
        }
        if self.document_separator.is_empty() {
            return Err(err("document_separator", "must not be empty"));
        }
        if let Some(model) = &self.model
            && model.trim().is_empty()
        {
            return Err(err("model", "must not be empty"));
        }
        if self.scorer == ScorerKind::Llmlingua2 && self.model.is_none() {
            return Err(err(
                "model",
                "scorer = \"llmlingua2\" needs a model (a local directory or a Hugging Face id)",
            ));
        }
        if let Some(device) = &self.device {
            crate::model::config::check_device(device).map_err(|r| err("device", r))?;
        }
        if self.background && self.background_deadline_ms == 0 {
            return Err(err("background_deadline_ms", "must be at least 1"));
        }
        Ok(())
    }

    /// The method of `role`'s messages.
    pub fn method_for(&self, role: &str) -> MethodKind {
        self.roles
            .get(role)
            .and_then(|r| r.method)
            .unwrap_or(self.method)
    }

    /// Whether any role compresses with the causal LM.
    pub fn needs_causal(&self) -> bool {
        self.method.is_causal()
            || self
                .roles
                .iter()
                .any(|(_, r)| r.method.is_some_and(MethodKind::is_causal))
    }

    /// Per-role table as a map (for reports and docs).
    pub fn role_table(&self) -> BTreeMap<&'static str, RoleConfig> {
        self.roles.iter().map(|(k, v)| (k, v.clone())).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_are_valid_and_match_the_issue() {
        let c = CompressionConfig::default();
        c.validate().unwrap();
        assert_eq!(c.roles.system.rate, 0.65);
        assert_eq!(c.roles.developer.rate, 0.65);
        assert_eq!(c.roles.tool.rate, 0.74);
        assert_eq!(c.roles.function.rate, 0.74);
        assert!(c.keep_units && c.keep_negations && c.must_keep.is_empty());
        assert_eq!(c.roles.user.rate, 0.7);
        assert!(!c.roles.assistant.enabled);
        assert_eq!(c.roles.user.min_tokens, 200);
        assert!(c.protect_last_user);
        assert_eq!(c.min_savings, 0.05);
        assert_eq!(c.on_error, OnError::Passthrough);
    }

    #[test]
    fn validation_names_the_key() {
        let mut c = CompressionConfig::default();
        c.roles.tool.rate = 0.0;
        assert_eq!(c.validate().unwrap_err().key, "roles.tool.rate");
        let mut c = CompressionConfig::default();
        c.roles.user.rate = 1.5;
        assert!(
            c.validate()
                .unwrap_err()
                .to_string()
                .contains("roles.user.rate")
        );
        let c = CompressionConfig {
            keep_patterns: vec!["ok".into(), "(".into()],
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "keep_patterns[1]");
        let c = CompressionConfig {
            min_savings: 1.0,
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "min_savings");
        let c = CompressionConfig {
            force_tokens: (0..99).map(|i| format!("t{i}")).collect(),
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "force_tokens");
        let c = CompressionConfig {
            must_keep: vec!["ok".into(), "x*".into()],
            ..Default::default()
        };
        assert_eq!(c.validate().unwrap_err().key, "must_keep[1]");
        let mut c = CompressionConfig::default();
        c.roles.tool.must_keep = vec!["(".into()];
        assert_eq!(c.validate().unwrap_err().key, "roles.tool.must_keep[0]");
    }

    #[test]
    fn keep_rules_join_global_and_role_lists() {
        let mut c = CompressionConfig {
            must_keep: vec!["SKU-\\d+".into()],
            ..Default::default()
        };
        c.roles.system.must_keep = vec!["refund".into()];
        let r = c.keep_rules("system");
        assert!(r.units && r.negations);
        assert_eq!(r.must_keep, ["SKU-\\d+", "refund"]);
        assert_eq!(c.keep_rules("tool").must_keep, ["SKU-\\d+"]);
    }
}
