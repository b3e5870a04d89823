//! The message policy: which messages are compressed, at which budget, with which parts kept.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;
use serde_json::Value;

use super::cache::{CacheKey, CompressionCache, MokaCache, NoCache};
use super::compressor::{Budget, CompressError, CompressOutput, Compressor};
use super::config::{
    CompressionConfig, CompressionConfigError, InstructionsMode, RoleConfig, check_rate,
};
use super::content::Kind;
use super::conversation::{Conversation, PathElem, rewrite};
use super::spans::{
    ContentRules, Piece, Region, SPAN_MARKER, SpanDetector, Transform, has_tags, strip_tags,
};
use super::tokens::TokenizerKind;
use crate::model::WorkCtx;

/// Smallest rate the policy ever asks for (a `target_tokens` below the protected text).
const MIN_RATE: f64 = 0.01;

/// Per-request settings decided outside the policy (headers, route).
#[derive(Debug, Clone, Default)]
pub struct RequestOptions {
    /// Replaces every role's rate (and `target_tokens`) for this request (`x-lingua-rate`).
    pub rate_override: Option<f64>,
    /// The route's tokenizer; `None` picks it from the request's `model`.
    pub tokenizer: Option<TokenizerKind>,
    /// Deadline and cancellation: the policy gives up with [`CompressError::Deadline`] or
    /// [`CompressError::Cancelled`] as soon as it says so (checked between messages and regions,
    /// and passed down to the compressor and its scorer).
    pub work: WorkCtx,
    /// Compress texts whatever their size (background compression: the result goes to the
    /// cache, where the next identical message finds it).
    pub ignore_size_limits: bool,
    /// Replaces `protect_recent` for this request (`/v1/compress` `config.protect_recent`).
    pub protect_recent: Option<usize>,
    /// Replaces whether user messages are compressed (`/v1/compress`
    /// `config.compress_user_messages`).
    pub compress_user: Option<bool>,
    /// Leave the first N messages alone (`/v1/compress` `config.frozen_message_count`).
    pub frozen_messages: usize,
    /// Report every piece of every message: its kind, the transform applied and its tokens
    /// before and after (`compress --explain`, `/v1/compress` `explain`).
    pub explain: bool,
}

/// One piece of a message as `--explain` reports it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PieceReport {
    /// The message's text segment (content part, system block, tool result part).
    pub segment: usize,
    pub kind: Kind,
    pub transform: Transform,
    pub tokens_before: usize,
    pub tokens_after: usize,
    /// The piece's text before and after.
    pub before: String,
    pub after: String,
}

/// Why a message was forwarded unchanged.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SkipReason {
    NoText,
    UnknownRole,
    RoleDisabled,
    ProtectedLastUser,
    ProtectedRecent,
    /// At or before the provider cache breakpoint (`freeze_cached_prefix`), or among the
    /// frozen messages of a `/v1/compress` call.
    Frozen,
    BelowMinTokens,
    WithinTarget,
    Unprofitable,
    /// Nothing in the message may be compressed: instructions its role keeps, code, diffs,
    /// traces, logs, data (and no lossless transform applied).
    NothingCompressible,
    /// The text contains characters the selection reserves (U+E000, U+2581, `[NEWk]`).
    ReservedCharacters,
    /// More tokens than `max_message_tokens` (or the request more than `max_request_tokens`):
    /// not scored. `tokens_before` is then a lower bound (counting stops past the limit).
    TooLarge,
}

/// What happened to one message.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MessageReport {
    pub index: usize,
    pub role: String,
    pub tokens_before: usize,
    pub tokens_after: usize,
    /// `None` when the message was compressed.
    pub skipped: Option<SkipReason>,
    pub cache_hits: usize,
    pub cache_misses: usize,
    /// Honouring the semantic units (numbers with their units, negations with what they
    /// govern, must-keep words) kept more than the role's budget.
    pub budget_exceeded_by_units: bool,
    /// With [`RequestOptions::explain`]: what each piece is and what was done to it.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pieces: Vec<PieceReport>,
}

/// Totals of one role.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RoleReport {
    pub messages: usize,
    pub compressed: usize,
    pub tokens_before: usize,
    pub tokens_after: usize,
}

/// Whether compressed texts came from the cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CacheStatus {
    /// Every compressed text came from the cache.
    Hit,
    /// None did, or nothing needed compressing.
    Miss,
    /// Some did.
    Partial,
}

impl CacheStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Hit => "hit",
            Self::Miss => "miss",
            Self::Partial => "partial",
        }
    }

    fn from_counts(hits: usize, misses: usize) -> Self {
        match (hits, misses) {
            (_, 0) if hits > 0 => Self::Hit,
            (0, _) => Self::Miss,
            _ => Self::Partial,
        }
    }
}

/// The report of one request.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    pub tokenizer: &'static str,
    /// Text tokens of all messages before and after (target tokenizer).
    pub tokens_before: usize,
    pub tokens_after: usize,
    pub messages: Vec<MessageReport>,
    pub roles: BTreeMap<String, RoleReport>,
    pub cache: CacheStatus,
    pub cache_hits: usize,
    pub cache_misses: usize,
    /// Some message kept more than its budget to keep its units whole.
    pub budget_exceeded_by_units: bool,
    pub elapsed: Duration,
    /// The whole request went out unchanged because of its size: more than
    /// `max_request_tokens` in total, or every message that would have been compressed is
    /// larger than `max_message_tokens`.
    pub too_large: bool,
}

/// The policy's result: the body to forward (`None`: the original bytes) and the report.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub body: Option<Vec<u8>>,
    pub report: Report,
}

/// The compressed form of one message's text segments.
#[derive(Debug, Clone, PartialEq)]
pub struct MessageResult {
    /// New text per segment (`None`: unchanged).
    pub texts: Vec<Option<String>>,
    pub tokens_before: usize,
    pub tokens_after: usize,
    pub skipped: Option<SkipReason>,
    pub cache_hits: usize,
    pub cache_misses: usize,
    /// See [`MessageReport::budget_exceeded_by_units`].
    pub budget_exceeded_by_units: bool,
    /// See [`MessageReport::pieces`].
    pub pieces: Vec<PieceReport>,
}

/// The compression policy over a [`Compressor`].
pub struct Policy {
    config: CompressionConfig,
    compressor: Arc<dyn Compressor>,
    /// Roles whose `method` differs from `[compression] method`.
    role_compressors: BTreeMap<String, Arc<dyn Compressor>>,
    cache: Arc<dyn CompressionCache>,
    spans: SpanDetector,
    force_tokens: Vec<String>,
}

impl std::fmt::Debug for Policy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policy")
            .field("compressor", &self.compressor.id())
            .finish_non_exhaustive()
    }
}

struct Counters {
    hits: AtomicUsize,
    misses: AtomicUsize,
    /// Only serve regions from the cache (a too-large message with `background` on).
    lookup_only: bool,
}

impl Policy {
    /// Validates `config` and builds the policy with the in-process cache it asks for.
    pub fn new(
        config: CompressionConfig,
        compressor: Arc<dyn Compressor>,
    ) -> Result<Self, CompressionConfigError> {
        config.validate()?;
        let cache: Arc<dyn CompressionCache> = if config.cache_bytes == 0 {
            Arc::new(NoCache)
        } else {
            Arc::new(MokaCache::new(config.cache_bytes))
        };
        let spans =
            SpanDetector::new(&config.keep_patterns).map_err(|e| CompressionConfigError {
                key: "keep_patterns".into(),
                reason: e.to_string(),
            })?;
        let mut force_tokens = config.force_tokens.clone();
        for extra in ["\n", SPAN_MARKER] {
            if !force_tokens.iter().any(|t| t == extra) {
                force_tokens.push(extra.to_string());
            }
        }
        Ok(Self {
            config,
            compressor,
            role_compressors: BTreeMap::new(),
            cache,
            spans,
            force_tokens,
        })
    }

    /// Uses `compressor` for the messages of `role` (a role-level `method`).
    pub fn with_role_compressor(mut self, role: &str, compressor: Arc<dyn Compressor>) -> Self {
        self.role_compressors.insert(role.to_string(), compressor);
        self
    }

    /// Whether any role's compressor reads [`Budget::question`].
    fn uses_question(&self) -> bool {
        self.compressor.uses_question() || self.role_compressors.values().any(|c| c.uses_question())
    }

    /// The compressor of `role`.
    pub fn compressor_for(&self, role: &str) -> &Arc<dyn Compressor> {
        self.role_compressors.get(role).unwrap_or(&self.compressor)
    }

    /// Replaces the cache (e.g. a shared one).
    pub fn with_cache(mut self, cache: Arc<dyn CompressionCache>) -> Self {
        self.cache = cache;
        self
    }

    /// Puts `shared` behind the policy's own cache (see [`super::cache::TieredCache`]).
    pub fn with_shared_cache(self, shared: Arc<dyn CompressionCache>) -> Self {
        let local = self.cache.clone();
        self.with_cache(Arc::new(super::cache::TieredCache::new(local, shared)))
    }

    pub fn config(&self) -> &CompressionConfig {
        &self.config
    }

    pub fn compressor(&self) -> &Arc<dyn Compressor> {
        &self.compressor
    }

    /// The tokenizer used to count a request's tokens.
    pub fn tokenizer_for(&self, json: &Value, opts: &RequestOptions) -> TokenizerKind {
        opts.tokenizer.unwrap_or_else(|| {
            let model = json
                .get("model")
                .and_then(Value::as_str)
                .unwrap_or_default();
            TokenizerKind::for_model(model, self.config.default_tokenizer)
        })
    }

    /// Whether no message of `conv` can reach a scorer: each is shorter in bytes than its
    /// role's `min_tokens` (a token is at least one byte, so it is skipped as below
    /// `min_tokens`) or has a role without a budget. Lets a caller run [`Policy::apply`] on
    /// such a request where it is, instead of handing it to a worker thread.
    pub fn scores_nothing(&self, conv: &Conversation) -> bool {
        conv.messages.iter().all(|m| {
            let bytes: usize = m.segments.iter().map(|s| s.text.len()).sum();
            self.config
                .roles
                .get(&m.role)
                .is_none_or(|r| (bytes as u64) < r.min_tokens)
        })
    }

    /// Compresses a request whose compressible texts `conv` describes (built by its API
    /// surface, `crate::api`). `raw` are the client's bytes, `json` their parse; the edits are
    /// spliced into `raw` at the segments' paths.
    pub fn apply(
        &self,
        raw: &[u8],
        json: &Value,
        conv: &Conversation,
        opts: &RequestOptions,
    ) -> Result<Outcome, CompressError> {
        let start = Instant::now();
        let tokenizer = self.tokenizer_for(json, opts);
        if !opts.ignore_size_limits
            && let Some(lower) = self.request_too_large(conv, tokenizer, &opts.work)?
        {
            return Ok(Outcome {
                body: None,
                report: Report {
                    tokenizer: tokenizer.name(),
                    tokens_before: lower,
                    tokens_after: lower,
                    messages: Vec::new(),
                    roles: BTreeMap::new(),
                    cache: CacheStatus::Miss,
                    cache_hits: 0,
                    cache_misses: 0,
                    budget_exceeded_by_units: false,
                    elapsed: start.elapsed(),
                    too_large: true,
                },
            });
        }
        let n = conv.messages.len();
        let last_user = conv
            .messages
            .iter()
            .rev()
            .find(|m| m.role == "user")
            .map(|m| m.index);
        let protect_recent = opts.protect_recent.unwrap_or(self.config.protect_recent);
        let frozen = opts
            .frozen_messages
            .max(if self.config.freeze_cached_prefix {
                conv.cache_prefix
            } else {
                0
            });
        let mut edits: Vec<(Vec<PathElem>, String)> = Vec::new();
        let mut messages = Vec::with_capacity(n);
        let mut roles: BTreeMap<String, RoleReport> = BTreeMap::new();
        // Only LongLLMLingua reads a question: other policies skip the lookup.
        let questions = if self.uses_question() {
            question_positions(conv)
        } else {
            Vec::new()
        };
        // Tool results seen so far (text -> where), for `dedupe_tool_results`.
        let mut seen_tool: std::collections::HashMap<&str, &[PathElem]> =
            std::collections::HashMap::new();
        for (pos, m) in conv.messages.iter().enumerate() {
            opts.work.check()?;
            let positional = if m.index < frozen {
                Some(SkipReason::Frozen)
            } else if self.config.protect_last_user && Some(m.index) == last_user {
                Some(SkipReason::ProtectedLastUser)
            } else if m.index + protect_recent >= n {
                Some(SkipReason::ProtectedRecent)
            } else if m.role == "user" && opts.compress_user == Some(false) {
                Some(SkipReason::RoleDisabled)
            } else {
                None
            };
            let texts: Vec<&str> = m.segments.iter().map(|s| s.text.as_str()).collect();
            let question = if self.compressor_for(&m.role).uses_question() {
                questions
                    .get(pos)
                    .copied()
                    .flatten()
                    .map(|q| message_text(&conv.messages[q]))
            } else {
                None
            };
            let mut result = self.compress_message_for(
                &m.role,
                &texts,
                tokenizer,
                opts,
                positional,
                question.as_deref(),
            )?;
            if self.config.transforms.dedupe_tool_results
                && matches!(m.role.as_str(), "tool" | "function")
            {
                self.dedupe(m, positional, tokenizer, opts, &mut seen_tool, &mut result);
            }
            for (seg, new) in m.segments.iter().zip(&result.texts) {
                if let Some(new) = new {
                    edits.push((seg.path.clone(), new.clone()));
                }
            }
            let r = roles.entry(m.role.clone()).or_default();
            r.messages += 1;
            r.compressed += usize::from(result.skipped.is_none());
            r.tokens_before += result.tokens_before;
            r.tokens_after += result.tokens_after;
            messages.push(MessageReport {
                index: m.index,
                role: m.role.clone(),
                tokens_before: result.tokens_before,
                tokens_after: result.tokens_after,
                skipped: result.skipped,
                cache_hits: result.cache_hits,
                cache_misses: result.cache_misses,
                budget_exceeded_by_units: result.budget_exceeded_by_units,
                pieces: result.pieces,
            });
        }
        let body = (!edits.is_empty()).then(|| rewrite(raw, json, &edits));
        let hits = messages.iter().map(|m| m.cache_hits).sum();
        let misses = messages.iter().map(|m| m.cache_misses).sum();
        let too_large = edits.is_empty()
            && messages
                .iter()
                .any(|m| m.skipped == Some(SkipReason::TooLarge));
        let report = Report {
            too_large,
            tokenizer: tokenizer.name(),
            tokens_before: messages.iter().map(|m| m.tokens_before).sum(),
            tokens_after: messages.iter().map(|m| m.tokens_after).sum(),
            roles,
            cache: CacheStatus::from_counts(hits, misses),
            cache_hits: hits,
            cache_misses: misses,
            budget_exceeded_by_units: messages.iter().any(|m| m.budget_exceeded_by_units),
            messages,
            elapsed: start.elapsed(),
        };
        Ok(Outcome { body, report })
    }

    /// Applies a role's policy to the text segments of one message. `positional` is a skip
    /// reason decided by the message's place in the conversation. Tags are removed from every
    /// message, compressed or not.
    pub fn compress_message(
        &self,
        role: &str,
        texts: &[&str],
        tokenizer: TokenizerKind,
        opts: &RequestOptions,
        positional: Option<SkipReason>,
    ) -> Result<MessageResult, CompressError> {
        self.compress_message_for(role, texts, tokenizer, opts, positional, None)
    }

    /// [`Policy::compress_message`] for a message asked about `question` (LongLLMLingua ranks
    /// a message's documents against it).
    pub fn compress_message_for(
        &self,
        role: &str,
        texts: &[&str],
        tokenizer: TokenizerKind,
        opts: &RequestOptions,
        positional: Option<SkipReason>,
        question: Option<&str>,
    ) -> Result<MessageResult, CompressError> {
        let compressor = self.compressor_for(role);
        let question = compressor
            .uses_question()
            .then(|| question.unwrap_or_default().to_string());
        let role_cfg = self.config.roles.get(role);
        let limit = if opts.ignore_size_limits {
            0
        } else {
            self.config.max_message_tokens
        };
        let too_large = |lower: usize| MessageResult {
            texts: vec![None; texts.len()],
            tokens_before: lower,
            tokens_after: lower,
            skipped: Some(positional.unwrap_or(SkipReason::TooLarge)),
            cache_hits: 0,
            cache_misses: 0,
            budget_exceeded_by_units: false,
            pieces: Vec::new(),
        };
        // Tags steer only in the roles the operator allows, and never in a protected message.
        let protected = matches!(
            positional,
            Some(SkipReason::ProtectedLastUser | SkipReason::ProtectedRecent | SkipReason::Frozen)
        );
        let tags = self.config.honor_tags.honors(role) && !protected;
        let mut lookup_only = false;
        // Each part's tokens (each part is gated on its own size); empty when not counted to
        // the end.
        let mut part_tokens = Vec::new();
        let tokens_before = match count_each_within(tokenizer, texts, limit) {
            Ok(counts) => {
                part_tokens = counts;
                part_tokens.iter().sum()
            }
            // Background compression may have stored this message's regions: serve them from
            // the cache, never score.
            Err(lower) if self.config.background && positional.is_none() => {
                lookup_only = true;
                lower
            }
            // Not scored, not even counted to the end.
            Err(lower) => return Ok(too_large(lower)),
        };
        let reason = if texts.iter().all(|t| t.trim().is_empty()) {
            Some(SkipReason::NoText)
        } else if let Some(p) = positional {
            Some(p)
        } else {
            match role_cfg {
                None => Some(SkipReason::UnknownRole),
                Some(c) if !(c.enabled || role == "user" && opts.compress_user == Some(true)) => {
                    Some(SkipReason::RoleDisabled)
                }
                Some(c) if (tokens_before as u64) < c.min_tokens => {
                    Some(SkipReason::BelowMinTokens)
                }
                Some(_) if texts.iter().any(|t| has_reserved(t)) => {
                    Some(SkipReason::ReservedCharacters)
                }
                Some(_) => None,
            }
        };
        let unchanged = |reason: SkipReason| {
            let texts: Vec<Option<String>> = texts
                .iter()
                .map(|t| {
                    (tags && has_tags(t))
                        .then(|| strip_tags(t))
                        .filter(|s| s != t)
                })
                .collect();
            MessageResult {
                tokens_after: 0,
                texts,
                tokens_before,
                skipped: Some(reason),
                cache_hits: 0,
                cache_misses: 0,
                budget_exceeded_by_units: false,
                pieces: Vec::new(),
            }
        };
        // An unchanged part keeps the count taken above; only rewritten ones are counted again.
        let finish = |mut r: MessageResult, originals: &[&str]| {
            r.tokens_after = r
                .texts
                .iter()
                .zip(originals)
                .enumerate()
                .map(|(i, (new, old))| match (new, part_tokens.get(i)) {
                    (None, Some(&n)) => n,
                    _ => tokenizer.count(new.as_deref().unwrap_or(old)),
                })
                .sum();
            r
        };
        let (Some(role_cfg), None) = (role_cfg, reason) else {
            let reason = reason.unwrap_or(SkipReason::UnknownRole);
            return Ok(finish(unchanged(reason), texts));
        };

        // Pieces of every segment (each part judged on its own size) and the message's
        // effective rate.
        let rules = ContentRules {
            tags,
            prose: role_cfg.prose,
            compress_instructions: self.config.instructions == InstructionsMode::Compress,
            minify_json: self.config.transforms.minify_json,
            collapse_repeats: self.config.transforms.collapse_repeats,
        };
        let pieces: Vec<Vec<Piece>> = texts
            .iter()
            .enumerate()
            .map(|(i, t)| {
                // (A too-large message served from the cache was not counted to the end.)
                let small = texts.len() > 1 && {
                    let n = part_tokens
                        .get(i)
                        .copied()
                        .unwrap_or_else(|| tokenizer.count(t));
                    (n as u64) < role_cfg.min_tokens
                };
                if small {
                    let kept = if tags { strip_tags(t) } else { t.to_string() };
                    return Ok(vec![Piece {
                        region: Region::Verbatim(kept),
                        kind: match role_cfg.prose {
                            super::content::Prose::Instructions => Kind::Instructions,
                            super::content::Prose::Documents => Kind::Document,
                        },
                        transform: Transform::BelowMinTokens,
                        original: t.to_string(),
                    }]);
                }
                self.spans.classified(t, rules, &opts.work)
            })
            .collect::<Result<_, _>>()?;
        let untouched = |p: &Piece| {
            matches!(p.region, Region::Verbatim(_))
                && matches!(
                    p.transform,
                    Transform::Kept | Transform::BelowMinTokens | Transform::TagKept
                )
        };
        if pieces.iter().flatten().all(untouched) {
            let mut r = finish(unchanged(SkipReason::NothingCompressible), texts);
            if opts.explain {
                r.pieces = pieces
                    .iter()
                    .enumerate()
                    .flat_map(|(segment, ps)| {
                        ps.iter().map(move |p| {
                            let n = tokenizer.count(&p.original);
                            PieceReport {
                                segment,
                                kind: p.kind,
                                transform: p.transform,
                                tokens_before: n,
                                tokens_after: n,
                                before: p.original.clone(),
                                after: p.original.clone(),
                            }
                        })
                    })
                    .collect();
            }
            return Ok(r);
        }
        let regions: Vec<Vec<Region>> = pieces
            .iter()
            .map(|p| p.iter().map(|p| p.region.clone()).collect())
            .collect();
        let rate = match self.message_rate(role_cfg, &regions, tokenizer, opts) {
            Some(r) => r,
            None => return Ok(finish(unchanged(SkipReason::WithinTarget), texts)),
        };
        let keep = self.config.keep_rules(role);
        let budget_for = |rate: f64| Budget {
            rate,
            target_tokens: None,
            force_tokens: self.force_tokens.clone(),
            force_reserve_digit: self.config.force_reserve_digit,
            keep: keep.clone(),
            question: question.clone(),
        };
        let mut exceeded = false;
        let counters = Counters {
            hits: AtomicUsize::new(0),
            misses: AtomicUsize::new(0),
            lookup_only,
        };
        let mut new_texts = Vec::with_capacity(texts.len());
        let mut reports = Vec::new();
        for (segment, (text, pieces)) in texts.iter().zip(&pieces).enumerate() {
            let mut out = String::with_capacity(text.len());
            for piece in pieces {
                let start = out.len();
                match &piece.region {
                    Region::Verbatim(s) => out.push_str(s),
                    Region::Compress {
                        text: marked,
                        protected,
                        rate: tag_rate,
                    } => {
                        opts.work.check()?;
                        let r = tag_rate.unwrap_or(rate);
                        match self.compress_region(
                            compressor,
                            marked,
                            protected,
                            &budget_for(r),
                            &counters,
                            &opts.work,
                        )? {
                            // Instructions never lose a line.
                            Some((text, _))
                                if piece.kind == Kind::Instructions
                                    && !lines_intact(&piece.original, &text) =>
                            {
                                out.push_str(&piece.original);
                            }
                            Some((text, over)) => {
                                exceeded |= over;
                                out.push_str(&text);
                            }
                            None => return Ok(too_large(tokens_before)),
                        }
                    }
                }
                if opts.explain {
                    reports.push(PieceReport {
                        segment,
                        kind: piece.kind,
                        transform: piece.transform,
                        tokens_before: tokenizer.count(&piece.original),
                        tokens_after: tokenizer.count(&out[start..]),
                        before: piece.original.clone(),
                        after: out[start..].to_string(),
                    });
                }
            }
            new_texts.push(out);
        }
        let tokens_after: usize = new_texts.iter().map(|t| tokenizer.count(t)).sum();
        // Served from the cache: count the original exactly (the bound above is a lower one).
        let tokens_before = if lookup_only {
            texts.iter().map(|t| tokenizer.count(t)).sum()
        } else {
            tokens_before
        };
        let hits = counters.hits.load(Ordering::Relaxed);
        let misses = counters.misses.load(Ordering::Relaxed);
        if (tokens_after as f64) > (tokens_before as f64) * (1.0 - self.config.min_savings) {
            let mut r = finish(unchanged(SkipReason::Unprofitable), texts);
            r.cache_hits = hits;
            r.cache_misses = misses;
            r.budget_exceeded_by_units = exceeded;
            r.pieces = reports
                .into_iter()
                .map(|p| PieceReport {
                    tokens_after: p.tokens_before,
                    after: p.before.clone(),
                    ..p
                })
                .collect();
            return Ok(r);
        }
        Ok(MessageResult {
            texts: new_texts
                .into_iter()
                .zip(texts)
                .map(|(new, old)| (new != *old).then_some(new))
                .collect(),
            tokens_before,
            tokens_after,
            skipped: None,
            cache_hits: hits,
            cache_misses: misses,
            budget_exceeded_by_units: exceeded,
            pieces: reports,
        })
    }

    /// `dedupe_tool_results`: a tool result segment equal to an earlier one (at least
    /// `min_tokens` long, outside protected positions) becomes a reference to it.
    fn dedupe<'a>(
        &self,
        m: &'a crate::compress::Message,
        positional: Option<SkipReason>,
        tokenizer: TokenizerKind,
        opts: &RequestOptions,
        seen: &mut std::collections::HashMap<&'a str, &'a [PathElem]>,
        result: &mut MessageResult,
    ) {
        let min = self.config.roles.get(&m.role).map_or(0, |r| r.min_tokens);
        let mut changed = false;
        for (i, seg) in m.segments.iter().enumerate() {
            let Some(earlier) = seen.get(seg.text.as_str()) else {
                seen.insert(seg.text.as_str(), &seg.path);
                continue;
            };
            if positional.is_some() || (tokenizer.count(&seg.text) as u64) < min.max(1) {
                continue;
            }
            let marker = dedupe_marker(&json_path(earlier));
            if opts.explain {
                result.pieces.retain(|p| p.segment != i);
                result.pieces.push(PieceReport {
                    segment: i,
                    kind: Kind::Document,
                    transform: Transform::Deduplicated,
                    tokens_before: tokenizer.count(&seg.text),
                    tokens_after: tokenizer.count(&marker),
                    before: seg.text.clone(),
                    after: marker.clone(),
                });
            }
            if let Some(t) = result.texts.get_mut(i) {
                *t = Some(marker);
                changed = true;
            }
        }
        if changed {
            result.skipped = None;
            result.tokens_after = m
                .segments
                .iter()
                .zip(&result.texts)
                .map(|(s, new)| tokenizer.count(new.as_deref().unwrap_or(&s.text)))
                .sum();
        }
    }

    /// The rate for a message, `None` when its target is already met.
    fn message_rate(
        &self,
        role: &RoleConfig,
        regions: &[Vec<Region>],
        tokenizer: TokenizerKind,
        opts: &RequestOptions,
    ) -> Option<f64> {
        if let Some(r) = opts.rate_override {
            return (r < 1.0).then_some(r);
        }
        let Some(target) = role.target_tokens else {
            return (role.rate < 1.0).then_some(role.rate);
        };
        let (mut fixed, mut free) = (0usize, 0usize);
        for region in regions.iter().flatten() {
            match region {
                Region::Verbatim(s) => fixed += tokenizer.count(s),
                Region::Compress {
                    text, protected, ..
                } => {
                    fixed += protected.iter().map(|p| tokenizer.count(p)).sum::<usize>();
                    free += tokenizer.count(&text.replace(SPAN_MARKER, " "));
                }
            }
        }
        if free == 0 || (fixed + free) as u64 <= target {
            return None;
        }
        let rate = (target as f64 - fixed as f64) / free as f64;
        Some(rate.clamp(MIN_RATE, 1.0)).filter(|r| *r < 1.0)
    }

    /// Compresses one region: keeps its outer whitespace, restores protected spans. The flag
    /// says whether the compressor kept more than the budget to keep units whole.
    fn compress_region(
        &self,
        compressor: &Arc<dyn Compressor>,
        marked: &str,
        protected: &[String],
        budget: &Budget,
        counters: &Counters,
        work: &WorkCtx,
    ) -> Result<Option<(String, bool)>, CompressError> {
        let restore = |s: &str| -> Option<String> {
            let mut parts = s.split(SPAN_MARKER);
            let mut out = String::with_capacity(s.len());
            out.push_str(parts.next().unwrap_or_default());
            let mut n = 0;
            for part in parts {
                out.push_str(protected.get(n)?);
                out.push_str(part);
                n += 1;
            }
            (n == protected.len()).then_some(out)
        };
        let core = marked.trim();
        let lead = &marked[..marked.len() - marked.trim_start().len()];
        let trail = &marked[marked.trim_end().len()..];
        let has_words = core
            .split(SPAN_MARKER)
            .any(|p| p.chars().any(char::is_alphanumeric));
        if budget.rate >= 1.0 || !has_words {
            return restore(marked)
                .map(|s| Some((s, false)))
                .ok_or_else(|| CompressError::Internal("span markers".into()));
        }
        let key = CacheKey::new(compressor.id(), budget, core);
        let out: Arc<CompressOutput> = match self.cache.get(&key) {
            Some(hit) => {
                counters.hits.fetch_add(1, Ordering::Relaxed);
                hit
            }
            None if counters.lookup_only => return Ok(None),
            None => {
                counters.misses.fetch_add(1, Ordering::Relaxed);
                let fresh = Arc::new(compressor.compress(core, budget, work)?);
                self.cache.insert(key, fresh.clone());
                fresh
            }
        };
        let compressed = format!("{lead}{}{trail}", out.text.trim());
        // A compressor that lost or invented a span marker cannot be trusted with this region.
        Ok(Some(match restore(&compressed) {
            Some(s) => (s, out.budget_exceeded_by_units),
            None => (restore(marked).unwrap_or_default(), false),
        }))
    }

    /// The rate for a role, validated (CLI and tests).
    pub fn role_rate(&self, role: &str) -> Option<f64> {
        self.config.roles.get(role).map(|r| r.rate)
    }
}

impl Policy {
    /// `Some(lower bound)` when the request's texts hold more than `max_request_tokens`.
    fn request_too_large(
        &self,
        conv: &Conversation,
        tokenizer: TokenizerKind,
        work: &WorkCtx,
    ) -> Result<Option<usize>, CompressError> {
        let limit = self.config.max_request_tokens;
        let texts: Vec<&str> = conv
            .messages
            .iter()
            .flat_map(|m| m.segments.iter().map(|s| s.text.as_str()))
            .collect();
        // A token is at least one byte: a request of at most `limit` bytes is within it.
        if limit == 0 || texts.iter().map(|t| t.len() as u64).sum::<u64>() <= limit {
            return Ok(None);
        }
        work.check()?;
        Ok(count_within(tokenizer, &texts, limit).err())
    }
}

/// For each message of `conv`, the position of the message its question comes from: the latest
/// user message before it, else the first one after it (a system prompt's documents are asked
/// about by the user message that follows; a tool result's by the user message that led to the
/// call). Later turns never change it, so a message compresses to the same bytes on every turn.
/// One pass each way: linear in the number of messages.
fn question_positions(conv: &Conversation) -> Vec<Option<usize>> {
    let n = conv.messages.len();
    let mut out = vec![None; n];
    // Messages of one API message share an index: a user message counts for the messages of
    // the next indices only.
    let sweep = |order: &mut dyn Iterator<Item = usize>, out: &mut Vec<Option<usize>>| {
        let (mut done, mut group, mut group_index) = (None, None, None);
        for pos in order {
            let m = &conv.messages[pos];
            if group_index != Some(m.index) {
                done = group.or(done);
                group = None;
                group_index = Some(m.index);
            }
            if out[pos].is_none() {
                out[pos] = done;
            }
            if m.role == "user" {
                group = Some(pos);
            }
        }
    };
    sweep(&mut (0..n), &mut out);
    sweep(&mut (0..n).rev(), &mut out);
    out
}

/// The text that replaces a tool result identical to the one at `earlier` (a JSON path).
pub fn dedupe_marker(earlier: &str) -> String {
    format!(
        "[lingua-proxy: identical to the earlier tool result at {earlier}; not repeated to save tokens]"
    )
}

/// A path as `messages[3].content[0].text`.
pub fn json_path(path: &[PathElem]) -> String {
    let mut out = String::new();
    for p in path {
        match p {
            PathElem::Key(k) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(k);
            }
            PathElem::Index(i) => {
                out.push('[');
                out.push_str(&i.to_string());
                out.push(']');
            }
        }
    }
    out
}

/// Every line of `original` is still there in `compressed` (same line count, and a line with
/// words keeps at least one).
fn lines_intact(original: &str, compressed: &str) -> bool {
    let words = |l: &str| l.chars().any(char::is_alphanumeric);
    original.lines().count() == compressed.lines().count()
        && original
            .lines()
            .zip(compressed.lines())
            .all(|(o, c)| !words(o) || words(c))
}

/// A message's text segments, one per line.
fn message_text(m: &crate::compress::Message) -> String {
    m.segments
        .iter()
        .map(|s| s.text.as_str())
        .collect::<Vec<_>>()
        .join("\n")
}

/// The texts' token count when it is at most `limit` (0: no limit), else `Err` with a lower
/// bound above the limit. Counting stops soon after the limit is passed, so a 4 MB text costs
/// about as much as `limit` tokens of it.
pub fn count_within(tokenizer: TokenizerKind, texts: &[&str], limit: u64) -> Result<usize, usize> {
    count_each_within(tokenizer, texts, limit).map(|counts| counts.iter().sum())
}

/// [`count_within`], per text.
fn count_each_within(
    tokenizer: TokenizerKind,
    texts: &[&str],
    limit: u64,
) -> Result<Vec<usize>, usize> {
    if limit == 0 || texts.iter().map(|t| t.len() as u64).sum::<u64>() <= limit {
        return Ok(texts.iter().map(|t| tokenizer.count(t)).collect());
    }
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut counts = Vec::with_capacity(texts.len());
    let mut total = 0usize;
    for t in texts {
        match tokenizer.count_up_to(t, limit - total.min(limit)) {
            Ok(n) => {
                total += n;
                counts.push(n);
            }
            Err(n) => return Err(total + n),
        }
    }
    Ok(counts)
}

static PLACEHOLDER_LIKE: std::sync::LazyLock<Option<regex::Regex>> =
    std::sync::LazyLock::new(|| regex::Regex::new(r"\[NEW\d{1,2}\]").ok());

/// Whether a text contains what the selection reserves for itself: the span marker, the
/// Metaspace `▁`, or a `[NEWk]` force-token placeholder.
fn has_reserved(text: &str) -> bool {
    text.contains(SPAN_MARKER)
        || text.contains('\u{2581}')
        || (text.contains("[NEW") && PLACEHOLDER_LIKE.as_ref().is_none_or(|re| re.is_match(text)))
}

/// Validates a per-request rate (`x-lingua-rate`).
pub fn parse_rate(value: &str) -> Option<f64> {
    let r: f64 = value.trim().parse().ok()?;
    check_rate("rate", r).ok().map(|_| r)
}
