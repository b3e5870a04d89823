//! The offline A/B report (`lingua-proxy report`): reads event logs and measures what
//! compression saved, with confidence intervals, per arm and per model.
//!
//! Everything here is pure: [`load`] reads JSONL files, [`Report::compute`] aggregates events,
//! and [`Report::render_text`] / [`Report::render_html`] format the result.
//!
//! How the figures are defined:
//! - An *arm* row counts every upstream call of that arm (`arm` field); events without an arm
//!   are counted in [`Report::events_without_arm`] only. *Requests* are served events, *mirror
//!   copies* are the others.
//! - Token and cost means are per call with usage. Cost needs a known price for the model;
//!   calls whose model has no price are left out of every money figure and counted as
//!   `unpriced_calls`.
//! - Latency percentiles (nearest rank) are over served calls only.
//! - A call is an error when `error` is set, the status is 400 or more, or the status is 0.
//! - The saving is `raw − compressed` per call with usage, per model that has usage in both arms.
//!   The overall saving standardises the two arms to one model mix, so that an arm that happens
//!   to carry more traffic of an expensive model does not bias it: each model's mean is weighted
//!   by its share of calls with usage (both arms together), and the overall means are
//!   `Σ wₘ · meanₘ`. The relative saving is `1 − compressed/raw` of those means. Intervals come
//!   from a stratified percentile bootstrap: every (model, arm) cell is resampled independently,
//!   with replacement, [`bootstrap::RESAMPLES`] times, with a fixed seed.
//! - Mirror pairs (two events sharing `pair_id`, one per arm, both with usage) also give a
//!   paired saving: the mean within-pair difference, bootstrapped over pairs.

pub mod bootstrap;
mod html;
mod text;

use std::collections::{BTreeMap, BTreeSet};
use std::io::BufRead;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use self::bootstrap::{Estimate, relative_saving, resample_means, stream_seed};
use super::agreement::agreement;
use super::event::{Event, RoleTokens};
use super::live::quantile;
use super::prices::{Price, PriceTable};
use crate::ab::{Arm, Mode};

/// The model name used for events that carry none.
pub const NO_MODEL: &str = "(no model)";

/// What the report prints when there is no raw-arm traffic to compare against.
pub const NO_RAW_ARM: &str =
    "no raw-arm traffic: enable [ab] raw_percent or mirror mode to measure the saving";
/// What the report prints when there is no compressed-arm traffic.
pub const NO_COMPRESSED_ARM: &str =
    "no compressed-arm traffic: nothing was forwarded compressed, so there is no saving to measure";

/// What the report prints when shadow mode forwarded everything raw.
pub const SHADOW_ONLY: &str = "no compressed-arm traffic (shadow mode forwards every request raw): \
     the shadow section estimates the saving from proxy-counted tokens";

/// Errors of [`load`].
#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("cannot read event log {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("no event log given")]
    NoInput,
}

/// The events of one or more logs.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Loaded {
    pub events: Vec<Event>,
    /// Non-blank lines that were not a valid event (skipped).
    pub malformed_lines: u64,
    /// Where the first few malformed lines are (`path:line: reason`).
    pub malformed_examples: Vec<String>,
}

/// Malformed lines described in [`Loaded::malformed_examples`].
const MAX_MALFORMED_EXAMPLES: usize = 5;

/// Reads JSONL event logs in order. Blank lines are skipped; lines that do not parse as an
/// [`Event`] are counted, not fatal. A file that cannot be opened or read is an error naming it.
pub fn load<P: AsRef<Path>>(paths: &[P]) -> Result<Loaded, ReadError> {
    if paths.is_empty() {
        return Err(ReadError::NoInput);
    }
    let mut out = Loaded::default();
    for path in paths {
        let path = path.as_ref();
        let err = |source| ReadError::Read {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(err)?;
        let mut reader = std::io::BufReader::new(file);
        let mut line = Vec::new();
        let mut number = 0u64;
        loop {
            line.clear();
            if reader.read_until(b'\n', &mut line).map_err(err)? == 0 {
                break;
            }
            number += 1;
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            match serde_json::from_slice::<Event>(&line) {
                Ok(e) => out.events.push(e),
                Err(e) => {
                    out.malformed_lines += 1;
                    if out.malformed_examples.len() < MAX_MALFORMED_EXAMPLES {
                        out.malformed_examples
                            .push(format!("{}:{number}: {e}", path.display()));
                    }
                }
            }
        }
    }
    Ok(out)
}

/// Nearest-rank percentiles of a latency, in milliseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Percentiles {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
}

impl Percentiles {
    fn of(samples: &[f64]) -> Self {
        Self {
            p50: quantile(samples, 0.50),
            p95: quantile(samples, 0.95),
        }
    }
}

/// Figures of one arm, or of one model within an arm.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct GroupStats {
    /// Upstream calls (requests plus mirror copies).
    pub calls: u64,
    /// Client requests: calls whose answer was served.
    pub requests: u64,
    /// Mirror copies: calls whose answer was not served.
    pub mirror_copies: u64,
    /// Calls that reported usage.
    pub with_usage: u64,
    pub prompt_tokens: u64,
    pub cached_tokens: u64,
    pub completion_tokens: u64,
    /// Billed prompt tokens per call with usage.
    pub mean_prompt_tokens: Option<f64>,
    /// `cached_tokens / prompt_tokens`.
    pub cached_share: Option<f64>,
    pub mean_completion_tokens: Option<f64>,
    /// Calls with usage and a known price (the money figures are over these).
    pub priced_calls: u64,
    /// Calls with usage whose model has no known price (left out of the money figures).
    pub unpriced_calls: u64,
    /// Total cost of the priced calls, US dollars; `None` without any.
    pub cost_usd: Option<f64>,
    /// Cost per priced call, US dollars.
    pub mean_cost_usd: Option<f64>,
    /// `latency_ms.total` of served calls.
    pub latency_total_ms: Percentiles,
    /// `latency_ms.overhead` (what the proxy added) of served calls.
    pub overhead_ms: Percentiles,
    /// Calls with an error, a status of 400 or more, or status 0.
    pub errors: u64,
    /// `errors / calls`.
    pub error_rate: Option<f64>,
}

/// One (arm, model) row.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelRow {
    pub arm: Arm,
    pub model: String,
    /// Whether the price table knows the model (else its money figures are `None`).
    pub price_known: bool,
    pub stats: GroupStats,
}

/// A difference of per-call means between the arms.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Diff {
    pub compressed_mean: f64,
    pub raw_mean: f64,
    /// `raw_mean − compressed_mean` per call (positive = compression saved).
    pub saved: Estimate,
    /// `1 − compressed_mean / raw_mean`; `None` when the raw mean is zero.
    pub relative: Option<Estimate>,
}

/// The saving for one model with usage in both arms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSaving {
    pub model: String,
    /// Calls with usage per arm.
    pub compressed_calls: u64,
    pub raw_calls: u64,
    /// The model's weight in the overall saving (share of calls with usage).
    pub weight: f64,
    pub prompt_tokens: Diff,
    /// `None` when the model has no known price.
    pub cost_usd: Option<Diff>,
}

/// The saving over all models with usage in both arms, standardised to one model mix.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OverallSaving {
    /// Models included (usage in both arms).
    pub models: u64,
    /// Per call, means weighted by each model's share of calls with usage.
    pub prompt_tokens: Diff,
    /// Like `prompt_tokens` over the priced models only (weights renormalised).
    pub cost_usd: Option<Diff>,
    /// Compressed-arm calls with usage of the priced included models.
    pub compressed_priced_calls: u64,
    /// Money the compressed arm saved over its own traffic: `Σ compressed callsₘ × savedₘ`.
    pub usd_saved_total: Option<Estimate>,
    /// Prompt tokens the compressed arm saved over its own traffic: `Σ compressed callsₘ × savedₘ`.
    pub prompt_tokens_saved_total: Estimate,
}

/// The within-pair saving of mirror pairs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PairedSaving {
    /// Pairs where both calls reported usage.
    pub pairs: u64,
    pub prompt_tokens: Diff,
    /// Over pairs with a known price.
    pub priced_pairs: u64,
    pub cost_usd: Option<Diff>,
}

/// Compressed vs raw.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Saving {
    pub per_model: Vec<ModelSaving>,
    /// `None` when no model has usage in both arms.
    pub overall: Option<OverallSaving>,
    /// Models with usage in only one arm (not comparable, left out of `overall`).
    pub one_arm_models: Vec<String>,
    pub paired: Option<PairedSaving>,
}

/// Answer agreement of mirror pairs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AgreementReport {
    /// Distinct `pair_id`s.
    pub pairs: u64,
    /// Pairs missing one arm's event.
    pub incomplete_pairs: u64,
    /// Pairs scored from a logged `agreement`.
    pub from_field: u64,
    /// Pairs scored by comparing both logged answers (raw answer as the reference).
    pub from_answers: u64,
    /// Pairs with neither (content logging off, or an arm failed).
    pub no_answers: u64,
    /// Over scored pairs.
    pub exact_match_rate: Option<f64>,
    pub mean_f1: Option<f64>,
    pub mean_rouge_l: Option<f64>,
}

/// Prompt tokens before and after compression, with what was saved.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct TokenSaving {
    pub before: u64,
    pub after: u64,
    /// `Σ max(before − after, 0)` per call.
    pub saved: u64,
}

impl TokenSaving {
    fn add(&mut self, before: u64, after: u64) {
        self.before += before;
        self.after += after;
        self.saved += before.saturating_sub(after);
    }

    /// `saved / before`.
    pub fn saved_share(&self) -> Option<f64> {
        (self.before > 0).then(|| self.saved as f64 / self.before as f64)
    }
}

/// Shadow mode: compression computed and counted, every request forwarded raw.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ShadowReport {
    /// Served shadow-mode events.
    pub requests: u64,
    /// Requests where the policy ran (`tokens` present).
    pub with_tokens: u64,
    /// Proxy-counted tokens (target tokenizer).
    pub tokens: TokenSaving,
    pub roles: BTreeMap<String, TokenSaving>,
    /// Saved tokens priced as uncached input of each request's model.
    pub usd_saved_estimate: f64,
    /// Requests with tokens whose model has no price (left out of `usd_saved_estimate`).
    pub unpriced_requests: u64,
}

/// The compressed arm's proxy-counted prompt tokens (all compressed calls with `tokens`).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RoleTotals {
    pub calls: u64,
    pub total: TokenSaving,
    pub roles: BTreeMap<String, TokenSaving>,
}

/// First and last event time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TimeRange {
    pub first: String,
    pub last: String,
}

/// How the intervals were computed.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct BootstrapInfo {
    pub resamples: usize,
    pub seed: u64,
    pub confidence: f64,
}

/// Options of [`Report::compute_with`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Options {
    /// Bootstrap resamples per interval.
    pub resamples: usize,
    /// PRNG seed.
    pub seed: u64,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            resamples: bootstrap::RESAMPLES,
            seed: bootstrap::SEED,
        }
    }
}

/// The offline A/B report.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Report {
    /// Events read.
    pub events: u64,
    /// Lines skipped because they were not valid events (set by the caller from [`Loaded`]).
    pub malformed_lines: u64,
    pub events_without_arm: u64,
    /// Events per mode (`normal`, `shadow`, `mirror`).
    pub modes: BTreeMap<String, u64>,
    pub time_range: Option<TimeRange>,
    /// Always has `compressed` and `raw`.
    pub arms: BTreeMap<String, GroupStats>,
    /// Per (arm, model), compressed arm first, then by model name.
    pub models: Vec<ModelRow>,
    /// Models with traffic but no known price.
    pub unknown_price_models: Vec<String>,
    pub saving: Saving,
    pub agreement: AgreementReport,
    pub shadow: ShadowReport,
    pub compressed_roles: RoleTotals,
    pub bootstrap: BootstrapInfo,
    /// Arms by compressor (`[ab.control]`): the compressors each arm's events name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub arm_compressors: BTreeMap<String, BTreeSet<String>>,
    /// Plain-language caveats (missing arm, unknown prices, malformed lines).
    pub notes: Vec<String>,
}

fn is_error(e: &Event) -> bool {
    e.error.is_some() || e.status >= 400 || e.status == 0
}

fn model_of(e: &Event) -> &str {
    e.model.as_deref().unwrap_or(NO_MODEL)
}

/// Accumulates one [`GroupStats`] plus the per-call samples the bootstrap needs.
#[derive(Default)]
struct Acc {
    stats: GroupStats,
    cost: f64,
    totals: Vec<f64>,
    overheads: Vec<f64>,
    /// `[prompt_tokens, cost]` per call with usage (cost 0 when unpriced).
    samples: Vec<[f64; 2]>,
}

impl Acc {
    fn add(&mut self, e: &Event, price: Option<&Price>, keep_samples: bool) {
        let s = &mut self.stats;
        s.calls += 1;
        if e.served {
            s.requests += 1;
            self.totals.push(e.latency_ms.total);
            self.overheads.push(e.latency_ms.overhead);
        } else {
            s.mirror_copies += 1;
        }
        if is_error(e) {
            s.errors += 1;
        }
        if let Some(u) = &e.usage {
            s.with_usage += 1;
            s.prompt_tokens += u.prompt_tokens;
            s.cached_tokens += u.cached_tokens.unwrap_or(0);
            s.completion_tokens += u.completion_tokens;
            let cost = price.map(|p| p.cost(u));
            match cost {
                Some(c) => {
                    s.priced_calls += 1;
                    self.cost += c;
                }
                None => s.unpriced_calls += 1,
            }
            if keep_samples {
                self.samples
                    .push([u.prompt_tokens as f64, cost.unwrap_or(0.0)]);
            }
        }
    }

    fn finish(&self) -> GroupStats {
        let mut s = self.stats.clone();
        let per = |x: u64, n: u64| (n > 0).then(|| x as f64 / n as f64);
        s.mean_prompt_tokens = per(s.prompt_tokens, s.with_usage);
        s.mean_completion_tokens = per(s.completion_tokens, s.with_usage);
        s.cached_share = per(s.cached_tokens, s.prompt_tokens);
        if s.priced_calls > 0 {
            s.cost_usd = Some(self.cost);
            s.mean_cost_usd = Some(self.cost / s.priced_calls as f64);
        }
        s.error_rate = per(s.errors, s.calls);
        s.latency_total_ms = Percentiles::of(&self.totals);
        s.overhead_ms = Percentiles::of(&self.overheads);
        s
    }
}

/// Bootstrap replicates of one (model, arm) cell's means: `[prompt_tokens, cost]`.
struct Cell {
    n: u64,
    mean: [f64; 2],
    reps: Vec<[f64; 2]>,
}

impl Cell {
    fn new(samples: &[[f64; 2]], label: &str, opts: &Options) -> Option<Self> {
        let mean = bootstrap::means(samples)?;
        Some(Self {
            n: samples.len() as u64,
            mean,
            reps: resample_means(samples, opts.resamples, stream_seed(opts.seed, label)),
        })
    }
}

/// One model's two cells.
struct Stratum<'a> {
    compressed: &'a Cell,
    raw: &'a Cell,
    weight: f64,
}

/// The difference of `Σ w·mean` between the arms for column `col`, with its bootstrap interval.
fn stratified_diff(strata: &[Stratum<'_>], col: usize, resamples: usize) -> Option<Diff> {
    let total: f64 = strata.iter().map(|s| s.weight).sum();
    if strata.is_empty() || total <= 0.0 {
        return None;
    }
    let combine = |pick: &dyn Fn(&Stratum<'_>) -> (f64, f64)| {
        strata.iter().fold((0.0, 0.0), |(c, r), s| {
            let (sc, sr) = pick(s);
            let w = s.weight / total;
            (c + w * sc, r + w * sr)
        })
    };
    let (c, r) = combine(&|s| (s.compressed.mean[col], s.raw.mean[col]));
    let mut saved = Vec::with_capacity(resamples);
    let mut rel = Vec::with_capacity(resamples);
    for i in 0..resamples {
        let (ci, ri) = combine(&|s| (s.compressed.reps[i][col], s.raw.reps[i][col]));
        saved.push(ri - ci);
        rel.push(relative_saving(ci, ri));
    }
    Some(Diff {
        compressed_mean: c,
        raw_mean: r,
        saved: Estimate::from_replicates(r - c, &saved)?,
        relative: if r == 0.0 {
            None
        } else {
            Estimate::from_replicates(relative_saving(c, r), &rel)
        },
    })
}

/// `Σ nₘ (rawₘ − compressedₘ)` for column `col` with its bootstrap interval.
fn stratified_total(strata: &[Stratum<'_>], col: usize, resamples: usize) -> Option<Estimate> {
    let total = |pick: &dyn Fn(&Cell) -> f64| {
        strata
            .iter()
            .map(|s| s.compressed.n as f64 * (pick(s.raw) - pick(s.compressed)))
            .sum::<f64>()
    };
    let value = total(&|c| c.mean[col]);
    let reps: Vec<f64> = (0..resamples).map(|i| total(&|c| c.reps[i][col])).collect();
    Estimate::from_replicates(value, &reps)
}

/// The paired difference `raw − compressed` of rows `[raw, compressed]`, bootstrapped over rows.
fn paired_diff(rows: &[[f64; 2]], label: &str, opts: &Options) -> Option<Diff> {
    let [r, c] = bootstrap::means(rows)?;
    let reps = resample_means(rows, opts.resamples, stream_seed(opts.seed, label));
    let saved: Vec<f64> = reps.iter().map(|[rr, cc]| rr - cc).collect();
    let rel: Vec<f64> = reps
        .iter()
        .map(|[rr, cc]| relative_saving(*cc, *rr))
        .collect();
    Some(Diff {
        compressed_mean: c,
        raw_mean: r,
        saved: Estimate::from_replicates(r - c, &saved)?,
        relative: if r == 0.0 {
            None
        } else {
            Estimate::from_replicates(relative_saving(c, r), &rel)
        },
    })
}

fn paired_saving(
    pairs: &BTreeMap<&str, [Option<&Event>; 2]>,
    prices: &PriceTable,
    opts: &Options,
) -> Option<PairedSaving> {
    // [raw, compressed] per pair with usage in both arms
    let mut tokens: Vec<[f64; 2]> = Vec::new();
    let mut money: Vec<[f64; 2]> = Vec::new();
    for [comp, raw] in pairs.values() {
        let (Some(comp), Some(raw)) = (comp, raw) else {
            continue;
        };
        let (Some(cu), Some(ru)) = (&comp.usage, &raw.usage) else {
            continue;
        };
        tokens.push([ru.prompt_tokens as f64, cu.prompt_tokens as f64]);
        let cost = |e: &Event, u| prices.cost(model_of(e), u);
        if let (Some(rc), Some(cc)) = (cost(raw, ru), cost(comp, cu)) {
            money.push([rc, cc]);
        }
    }
    Some(PairedSaving {
        pairs: tokens.len() as u64,
        prompt_tokens: paired_diff(&tokens, "paired/tokens", opts)?,
        priced_pairs: money.len() as u64,
        cost_usd: paired_diff(&money, "paired/cost", opts),
    })
}

fn agreement_report(pairs: &BTreeMap<&str, [Option<&Event>; 2]>) -> AgreementReport {
    let mut out = AgreementReport {
        pairs: pairs.len() as u64,
        ..AgreementReport::default()
    };
    let (mut exact, mut f1, mut rouge) = (0u64, 0.0, 0.0);
    for [comp, raw] in pairs.values() {
        if comp.is_none() || raw.is_none() {
            out.incomplete_pairs += 1;
        }
        let field = comp
            .and_then(|e| e.agreement)
            .or_else(|| raw.and_then(|e| e.agreement));
        let scored = match field {
            Some(a) => {
                out.from_field += 1;
                a
            }
            None => match (
                raw.and_then(|e| e.answer.as_deref()),
                comp.and_then(|e| e.answer.as_deref()),
            ) {
                (Some(r), Some(c)) => {
                    out.from_answers += 1;
                    agreement(r, c)
                }
                _ => {
                    out.no_answers += 1;
                    continue;
                }
            },
        };
        exact += u64::from(scored.exact);
        f1 += scored.f1;
        rouge += scored.rouge_l;
    }
    let n = out.from_field + out.from_answers;
    if n > 0 {
        out.exact_match_rate = Some(exact as f64 / n as f64);
        out.mean_f1 = Some(f1 / n as f64);
        out.mean_rouge_l = Some(rouge / n as f64);
    }
    out
}

impl Report {
    /// The report over `events`, with the default bootstrap options.
    pub fn compute(events: &[Event], prices: &PriceTable) -> Self {
        Self::compute_with(events, prices, &Options::default())
    }

    /// The report over `events`.
    pub fn compute_with(events: &[Event], prices: &PriceTable, opts: &Options) -> Self {
        let mut arms: BTreeMap<Arm, Acc> = BTreeMap::new();
        let mut arm_compressors: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        let mut models: BTreeMap<(Arm, &str), Acc> = BTreeMap::new();
        let mut modes: BTreeMap<String, u64> = BTreeMap::new();
        let mut events_without_arm = 0;
        let mut first: Option<&str> = None;
        let mut last: Option<&str> = None;
        // pair_id → [compressed, raw] (the first event of each arm)
        let mut pairs: BTreeMap<&str, [Option<&Event>; 2]> = BTreeMap::new();
        let mut shadow = ShadowReport::default();
        let mut roles = RoleTotals::default();
        let mut unknown_price: BTreeSet<&str> = BTreeSet::new();

        for e in events {
            *modes.entry(e.mode.as_str().to_string()).or_default() += 1;
            if !e.time.is_empty() {
                first = Some(first.map_or(e.time.as_str(), |f| f.min(e.time.as_str())));
                last = Some(last.map_or(e.time.as_str(), |l| l.max(e.time.as_str())));
            }
            let model = model_of(e);
            let price = prices.lookup(model);
            if price.is_none() {
                unknown_price.insert(model);
            }
            if e.mode == Mode::Shadow && e.served {
                shadow.requests += 1;
                if let Some(t) = &e.tokens {
                    shadow.with_tokens += 1;
                    shadow.tokens.add(t.before, t.after);
                    for (role, r) in &t.roles {
                        shadow
                            .roles
                            .entry(role.clone())
                            .or_default()
                            .add(r.before, r.after);
                    }
                    let saved = t.before.saturating_sub(t.after);
                    match price {
                        Some(p) => shadow.usd_saved_estimate += p.prompt_cost(saved),
                        None => shadow.unpriced_requests += 1,
                    }
                }
            }
            let Some(arm) = e.arm else {
                events_without_arm += 1;
                continue;
            };
            arms.entry(arm).or_default().add(e, price, false);
            models.entry((arm, model)).or_default().add(e, price, true);
            if let Some(c) = &e.compressor {
                arm_compressors
                    .entry(arm.as_str().to_string())
                    .or_default()
                    .insert(c.clone());
            }
            if arm == Arm::Compressed
                && let Some(t) = &e.tokens
            {
                roles.calls += 1;
                roles.total.add(t.before, t.after);
                for (role, r) in &t.roles {
                    let RoleTokens { before, after } = *r;
                    roles
                        .roles
                        .entry(role.clone())
                        .or_default()
                        .add(before, after);
                }
            }
            if let Some(id) = e.pair_id.as_deref() {
                let slot = pairs.entry(id).or_default();
                let i = usize::from(arm == Arm::Raw);
                if slot[i].is_none() {
                    slot[i] = Some(e);
                }
            }
        }

        let saving = Self::saving(&models, prices, &pairs, opts);
        let mut report = Self {
            events: events.len() as u64,
            malformed_lines: 0,
            events_without_arm,
            modes,
            time_range: first.zip(last).map(|(f, l)| TimeRange {
                first: f.to_string(),
                last: l.to_string(),
            }),
            arms: [Arm::Compressed, Arm::Raw]
                .into_iter()
                .map(|a| {
                    let stats = arms.get(&a).map(Acc::finish).unwrap_or_default();
                    (a.as_str().to_string(), stats)
                })
                .collect(),
            models: models
                .iter()
                .map(|((arm, model), acc)| ModelRow {
                    arm: *arm,
                    model: (*model).to_string(),
                    price_known: prices.lookup(model).is_some(),
                    stats: acc.finish(),
                })
                .collect(),
            unknown_price_models: unknown_price.iter().map(|m| (*m).to_string()).collect(),
            saving,
            agreement: agreement_report(&pairs),
            shadow,
            compressed_roles: roles,
            bootstrap: BootstrapInfo {
                resamples: opts.resamples,
                seed: opts.seed,
                confidence: bootstrap::CONFIDENCE,
            },
            arm_compressors,
            notes: Vec::new(),
        };
        // Arm order: compressed first (Arm's Ord puts raw first).
        report
            .models
            .sort_by(|a, b| (a.arm == Arm::Raw, &a.model).cmp(&(b.arm == Arm::Raw, &b.model)));
        report.refresh_notes();
        report
    }

    /// Sets the malformed-line count (from [`Loaded`]) and updates the notes.
    pub fn with_malformed_lines(mut self, malformed_lines: u64) -> Self {
        self.malformed_lines = malformed_lines;
        self.refresh_notes();
        self
    }

    fn refresh_notes(&mut self) {
        let mut notes = Vec::new();
        if !self.arm_compressors.is_empty() {
            let names = |arm: Arm| {
                self.arm_compressors
                    .get(arm.as_str())
                    .map_or("-".to_string(), |c| {
                        c.iter().cloned().collect::<Vec<_>>().join(", ")
                    })
            };
            notes.push(format!(
                "arms by compressor: the compressed arm ran {}, the raw arm {}; the saving and \
                 agreement compare these two compressors, not compression against raw",
                names(Arm::Compressed),
                names(Arm::Raw)
            ));
        }
        let usage = |arm: Arm| self.arms.get(arm.as_str()).map_or(0, |s| s.with_usage);
        let calls = |arm: Arm| self.arms.get(arm.as_str()).map_or(0, |s| s.calls);
        if self.events > 0 && calls(Arm::Raw) == 0 {
            notes.push(NO_RAW_ARM.to_string());
        } else if self.events > 0 && calls(Arm::Compressed) == 0 {
            if self.shadow.requests > 0 {
                notes.push(SHADOW_ONLY.to_string());
            } else {
                notes.push(NO_COMPRESSED_ARM.to_string());
            }
        } else if self.events > 0 && self.saving.overall.is_none() {
            if usage(Arm::Raw) == 0 || usage(Arm::Compressed) == 0 {
                notes.push(
                    "an arm has no calls with usage: ask the upstream for usage (streams need \
                     stream_options.include_usage) to measure the saving"
                        .to_string(),
                );
            } else {
                notes.push(
                    "no model has usage in both arms, so the arms cannot be compared".to_string(),
                );
            }
        }
        for m in &self.unknown_price_models {
            notes.push(format!(
                "unknown price for model {m:?}: its calls are left out of every money figure \
                 (add it with --prices)"
            ));
        }
        if self.malformed_lines > 0 {
            notes.push(format!(
                "{} malformed line(s) skipped",
                self.malformed_lines
            ));
        }
        if self.events_without_arm > 0 {
            notes.push(format!(
                "{} event(s) without an arm are left out of the per-arm figures",
                self.events_without_arm
            ));
        }
        self.notes = notes;
    }

    fn saving(
        models: &BTreeMap<(Arm, &str), Acc>,
        prices: &PriceTable,
        pairs: &BTreeMap<&str, [Option<&Event>; 2]>,
        opts: &Options,
    ) -> Saving {
        let mut names: Vec<&str> = models.keys().map(|(_, m)| *m).collect();
        names.sort_unstable();
        names.dedup();
        let mut cells: Vec<(&str, bool, Cell, Cell)> = Vec::new();
        let mut one_arm_models = Vec::new();
        for model in names {
            let cell = |arm: Arm| {
                let samples = models.get(&(arm, model)).map(|a| a.samples.as_slice())?;
                Cell::new(samples, &format!("{}/{model}", arm.as_str()), opts)
            };
            match (cell(Arm::Compressed), cell(Arm::Raw)) {
                (Some(c), Some(r)) => {
                    cells.push((model, prices.lookup(model).is_some(), c, r));
                }
                (None, None) => {}
                _ => one_arm_models.push(model.to_string()),
            }
        }
        let weight_total: f64 = cells.iter().map(|(_, _, c, r)| (c.n + r.n) as f64).sum();
        fn stratum<'a>((_, _, c, r): &'a (&str, bool, Cell, Cell)) -> Stratum<'a> {
            Stratum {
                compressed: c,
                raw: r,
                weight: (c.n + r.n) as f64,
            }
        }
        let per_model = cells
            .iter()
            .filter_map(|cell| {
                let (model, priced, c, r) = cell;
                let one = [stratum(cell)];
                Some(ModelSaving {
                    model: (*model).to_string(),
                    compressed_calls: c.n,
                    raw_calls: r.n,
                    weight: (c.n + r.n) as f64 / weight_total,
                    prompt_tokens: stratified_diff(&one, 0, opts.resamples)?,
                    cost_usd: if *priced {
                        stratified_diff(&one, 1, opts.resamples)
                    } else {
                        None
                    },
                })
            })
            .collect();
        let all: Vec<Stratum<'_>> = cells.iter().map(stratum).collect();
        let priced: Vec<Stratum<'_>> = cells
            .iter()
            .filter(|(_, p, _, _)| *p)
            .map(stratum)
            .collect();
        let overall = stratified_diff(&all, 0, opts.resamples).and_then(|tokens| {
            Some(OverallSaving {
                models: all.len() as u64,
                prompt_tokens: tokens,
                cost_usd: stratified_diff(&priced, 1, opts.resamples),
                compressed_priced_calls: priced.iter().map(|s| s.compressed.n).sum(),
                usd_saved_total: if priced.is_empty() {
                    None
                } else {
                    stratified_total(&priced, 1, opts.resamples)
                },
                prompt_tokens_saved_total: stratified_total(&all, 0, opts.resamples)?,
            })
        });
        Saving {
            per_model,
            overall,
            one_arm_models,
            paired: paired_saving(pairs, prices, opts),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::event::{Latency, Usage};

    fn call(arm: Arm, model: &str, prompt: u64, served: bool) -> Event {
        Event {
            arm: Some(arm),
            model: Some(model.into()),
            served,
            status: 200,
            usage: Some(Usage {
                prompt_tokens: prompt,
                completion_tokens: 10,
                total_tokens: prompt + 10,
                cached_tokens: None,
                cache_creation_tokens: None,
            }),
            latency_ms: Latency {
                total: 100.0,
                overhead: 2.0,
                ..Latency::default()
            },
            ..Event::default()
        }
    }

    #[test]
    fn mixing_models_does_not_bias_the_overall_saving() {
        // Model "big" (1000 → 800 tokens) and "small" (100 → 90). The compressed arm carries
        // mostly "big" traffic, the raw arm mostly "small": a pooled comparison of means would
        // report compression as *costing* tokens (mean 782 vs 190), the standardised one
        // reports the true per-model saving.
        let mut events = Vec::new();
        for _ in 0..90 {
            events.push(call(Arm::Compressed, "big", 800, true));
            events.push(call(Arm::Raw, "small", 100, true));
        }
        for _ in 0..10 {
            events.push(call(Arm::Compressed, "small", 90, true));
            events.push(call(Arm::Raw, "big", 1000, true));
        }
        let r = Report::compute_with(
            &events,
            &PriceTable::default(),
            &Options {
                resamples: 200,
                ..Options::default()
            },
        );
        let o = r.saving.overall.unwrap();
        // Each model has 100 calls with usage: weights 1/2, 1/2.
        // compressed = (800 + 90) / 2 = 445, raw = (1000 + 100) / 2 = 550.
        assert!((o.prompt_tokens.compressed_mean - 445.0).abs() < 1e-9);
        assert!((o.prompt_tokens.raw_mean - 550.0).abs() < 1e-9);
        assert!((o.prompt_tokens.saved.value - 105.0).abs() < 1e-9);
        // Constant cells: the bootstrap is degenerate at the true value.
        assert!((o.prompt_tokens.saved.width()).abs() < 1e-9);
        // Totals over the compressed arm's own traffic: 90 × 200 + 10 × 10.
        assert!((o.prompt_tokens_saved_total.value - 18_100.0).abs() < 1e-9);
        // No price for either model.
        assert!(o.cost_usd.is_none() && o.usd_saved_total.is_none());
        assert_eq!(r.unknown_price_models, vec!["big", "small"]);
    }

    #[test]
    fn pairs_take_the_first_event_of_each_arm() {
        let mut a = call(Arm::Compressed, "gpt-4o-mini", 80, true);
        a.pair_id = Some("p".into());
        let mut b = call(Arm::Raw, "gpt-4o-mini", 100, false);
        b.pair_id = Some("p".into());
        let mut c = b.clone();
        c.usage = None;
        let r = Report::compute(&[a, b, c], &PriceTable::default());
        let p = r.saving.paired.unwrap();
        assert_eq!(p.pairs, 1);
        assert_eq!(p.prompt_tokens.saved.value, 20.0);
        assert_eq!(p.priced_pairs, 1);
        assert_eq!(r.agreement.pairs, 1);
        assert_eq!(r.agreement.no_answers, 1);
    }

    #[test]
    fn shadow_only_log_points_at_the_shadow_section() {
        let mut e = call(Arm::Raw, "gpt-4o", 1000, true);
        e.mode = Mode::Shadow;
        e.tokens = Some(crate::telemetry::Tokens {
            before: 1000,
            after: 700,
            ..Default::default()
        });
        let r = Report::compute(&[e], &PriceTable::default());
        assert_eq!(r.notes, vec![SHADOW_ONLY.to_string()]);
        assert_eq!(r.shadow.tokens.saved, 300);
        // 300 tokens at gpt-4o's $2.50 per million input tokens.
        assert!((r.shadow.usd_saved_estimate - 0.00075).abs() < 1e-15);
        assert!(r.render_text().contains("saved 300 (30.0%)"));
    }

    #[test]
    fn empty_log() {
        let r = Report::compute(&[], &PriceTable::default());
        assert_eq!(r.events, 0);
        assert!(r.saving.overall.is_none() && r.saving.paired.is_none());
        assert!(r.time_range.is_none());
        assert_eq!(r.arms.len(), 2);
        assert!(r.notes.is_empty());
    }
}
