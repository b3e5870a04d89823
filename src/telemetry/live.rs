//! Live statistics for `GET /stats` and the dashboard, aggregated in memory from the events.

use std::collections::{BTreeMap, VecDeque};
use std::sync::Mutex;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use super::event::{Event, RoleTokens};
use super::prices::{Price, PriceTable};
use crate::ab::{Arm, Mode};

/// Width of one time-series bucket, in seconds.
pub const BUCKET_S: u64 = 10;
/// Buckets kept (one hour).
const MAX_BUCKETS: usize = 360;
/// Latency samples kept per arm for the percentiles.
const MAX_SAMPLES: usize = 4096;
/// Overhead samples kept per time bucket.
const MAX_BUCKET_SAMPLES: usize = 512;

/// The JSON answer of `GET /stats`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    pub uptime_s: f64,
    /// Unix milliseconds when the snapshot was taken.
    pub now_ms: u64,
    pub ab: AbSummary,
    pub totals: Totals,
    /// Always has both `compressed` and `raw`.
    pub arms: BTreeMap<String, ArmStats>,
    /// Prompt tokens before/after compression per role (compressed arm and shadow mode): the
    /// configured roles, every other role name under `other`.
    pub roles: BTreeMap<String, RoleTokens>,
    /// Width of a [`Bucket`] in seconds.
    pub bucket_s: u64,
    /// Oldest first; buckets without traffic are left out.
    pub series: Vec<Bucket>,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AbSummary {
    pub enabled: bool,
    pub mode: Mode,
    pub raw_percent: f64,
    pub mirror_percent: f64,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Totals {
    /// Upstream calls recorded (mirror copies included).
    pub events: u64,
    /// Client requests (mirror copies excluded).
    pub requests: u64,
    /// Calls with an error or an HTTP status of 400 or more.
    pub errors: u64,
    /// Compression failed open (deadline, error, panic).
    pub fail_open: u64,
    pub cache_hits: u64,
    /// Requests whose compression consulted the cache (hit, miss or partial).
    pub cache_lookups: u64,
    /// `cache_hits / cache_lookups`; `None` before the first lookup.
    pub cache_hit_ratio: Option<f64>,
    /// Prompt tokens the proxy counted before and after compression (target tokenizer), over
    /// requests where the policy ran. In shadow mode `after` is what would have been sent.
    pub tokens_before: u64,
    pub tokens_after: u64,
    pub tokens_saved: u64,
    /// `tokens_saved` priced as uncached input of each request's model.
    pub usd_saved_estimate: f64,
    /// Requests whose model has no known price (left out of every money figure).
    pub unknown_price: u64,
}

impl Totals {
    /// `cache_hits / cache_lookups`; `None` before the first lookup.
    fn hit_ratio(&self) -> Option<f64> {
        (self.cache_lookups > 0).then(|| self.cache_hits as f64 / self.cache_lookups as f64)
    }
}

/// Per-arm figures over all upstream calls of that arm.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ArmStats {
    pub requests: u64,
    pub errors: u64,
    /// Calls that were mirror copies (not served to the client).
    pub mirror_copies: u64,
    /// Calls that reported usage.
    pub with_usage: u64,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub cached_tokens: u64,
    pub cost_usd: f64,
    /// Per call with usage.
    pub mean_prompt_tokens: Option<f64>,
    pub mean_completion_tokens: Option<f64>,
    /// Per call with usage and a known price.
    pub mean_cost_usd: Option<f64>,
    pub overhead_ms: Quantiles,
    pub compression_ms: Quantiles,
    pub upstream_ms: Quantiles,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize, Deserialize)]
pub struct Quantiles {
    pub p50: Option<f64>,
    pub p95: Option<f64>,
    pub p99: Option<f64>,
}

/// Traffic in one time bucket.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Bucket {
    /// Bucket start, Unix milliseconds.
    pub t_ms: u64,
    /// Client requests per arm.
    pub requests: BTreeMap<String, u64>,
    /// Billed prompt tokens per arm.
    pub prompt_tokens: BTreeMap<String, u64>,
    pub tokens_saved: u64,
    pub usd_saved: f64,
    /// Median proxy overhead of the bucket's requests.
    pub overhead_p50_ms: Option<f64>,
}

#[derive(Default)]
struct ArmAcc {
    stats: ArmStats,
    priced_with_usage: u64,
    overhead: VecDeque<f64>,
    compression: VecDeque<f64>,
    upstream: VecDeque<f64>,
}

struct BucketAcc {
    bucket: Bucket,
    overheads: Vec<f64>,
    /// Served requests of the bucket (the reservoir's denominator).
    seen: u64,
}

#[derive(Default)]
struct State {
    totals: Totals,
    arms: BTreeMap<Arm, ArmAcc>,
    roles: BTreeMap<String, RoleTokens>,
    series: VecDeque<BucketAcc>,
}

/// In-memory aggregate of the events since start.
pub struct LiveStats {
    started: Instant,
    ab: AbSummary,
    prices: PriceTable,
    state: Mutex<State>,
}

impl std::fmt::Debug for LiveStats {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LiveStats").finish_non_exhaustive()
    }
}

fn push_sample(q: &mut VecDeque<f64>, v: f64) {
    if q.len() == MAX_SAMPLES {
        q.pop_front();
    }
    q.push_back(v);
}

/// Nearest-rank quantile of unsorted samples.
pub fn quantile(samples: &[f64], q: f64) -> Option<f64> {
    if samples.is_empty() {
        return None;
    }
    let mut v = samples.to_vec();
    v.sort_by(f64::total_cmp);
    let rank = (q * v.len() as f64).ceil().max(1.0) as usize;
    v.get(rank.min(v.len()) - 1).copied()
}

fn quantiles(q: &VecDeque<f64>) -> Quantiles {
    let v: Vec<f64> = q.iter().copied().collect();
    Quantiles {
        p50: quantile(&v, 0.50),
        p95: quantile(&v, 0.95),
        p99: quantile(&v, 0.99),
    }
}

fn is_error(e: &Event) -> bool {
    e.error.is_some() || e.status >= 400 || e.status == 0
}

impl LiveStats {
    pub fn new(ab: AbSummary, prices: PriceTable) -> Self {
        Self {
            started: Instant::now(),
            ab,
            prices,
            state: Mutex::new(State::default()),
        }
    }

    /// Share of cache lookups that hit, `None` before the first lookup.
    pub fn cache_hit_ratio(&self) -> Option<f64> {
        let guard = match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        guard.totals.hit_ratio()
    }

    pub fn prices(&self) -> &PriceTable {
        &self.prices
    }

    /// Adds one finished upstream call.
    pub fn record(&self, e: &Event) {
        let price = e.model.as_deref().and_then(|m| self.prices.lookup(m));
        self.record_priced(e, price);
    }

    /// [`Self::record`] with the event's price already looked up; returns the cache hit ratio
    /// after this event (for the metrics gauge), so callers need not lock again.
    pub fn record_priced(&self, e: &Event, price: Option<&Price>) -> Option<f64> {
        let mut guard = match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let st = &mut *guard;
        let error = is_error(e);
        st.totals.events += 1;
        if e.served {
            st.totals.requests += 1;
        }
        if error {
            st.totals.errors += 1;
        }
        if e.compression.as_deref() == Some("fail_open") {
            st.totals.fail_open += 1;
        }
        match e.cache.as_deref() {
            Some("hit") => {
                st.totals.cache_hits += 1;
                st.totals.cache_lookups += 1;
            }
            Some(_) => st.totals.cache_lookups += 1,
            None => {}
        }
        if price.is_none() && e.served {
            st.totals.unknown_price += 1;
        }
        // Savings count once per client request: the compressed arm, or shadow mode.
        let mut saved = 0;
        let mut usd_saved = 0.0;
        let counts_saving = e.arm == Some(Arm::Compressed) || (e.mode == Mode::Shadow && e.served);
        if let (Some(t), true) = (&e.tokens, counts_saving) {
            st.totals.tokens_before += t.before;
            st.totals.tokens_after += t.after;
            saved = t.before.saturating_sub(t.after);
            st.totals.tokens_saved += saved;
            if let Some(p) = price {
                usd_saved = p.prompt_cost(saved);
                st.totals.usd_saved_estimate += usd_saved;
            }
            for (role, r) in &t.roles {
                // Bounded keys: a client inventing role names cannot grow this map.
                let label = super::labels::role_label(role);
                let acc = match st.roles.get_mut(label) {
                    Some(acc) => acc,
                    None => st.roles.entry(label.to_owned()).or_default(),
                };
                acc.before += r.before;
                acc.after += r.after;
            }
        }
        if let Some(arm) = e.arm {
            let acc = st.arms.entry(arm).or_default();
            let s = &mut acc.stats;
            s.requests += 1;
            if error {
                s.errors += 1;
            }
            if !e.served {
                s.mirror_copies += 1;
            }
            if let Some(u) = &e.usage {
                s.with_usage += 1;
                s.prompt_tokens += u.prompt_tokens;
                s.completion_tokens += u.completion_tokens;
                s.cached_tokens += u.cached_tokens.unwrap_or(0);
                if let Some(p) = price {
                    s.cost_usd += p.cost(u);
                    acc.priced_with_usage += 1;
                }
            }
            if e.served {
                push_sample(&mut acc.overhead, e.latency_ms.overhead);
            }
            push_sample(&mut acc.upstream, e.latency_ms.upstream);
            if e.tokens.is_some() {
                push_sample(&mut acc.compression, e.latency_ms.compression);
            }
        }
        // time series
        let t_ms = e.ts_ms - e.ts_ms % (BUCKET_S * 1000);
        if st.series.back().is_none_or(|b| b.bucket.t_ms < t_ms) {
            if st.series.len() == MAX_BUCKETS {
                st.series.pop_front();
            }
            st.series.push_back(BucketAcc {
                bucket: Bucket {
                    t_ms,
                    ..Bucket::default()
                },
                overheads: Vec::new(),
                seen: 0,
            });
        }
        let slot = st.series.iter_mut().rev().find(|b| b.bucket.t_ms <= t_ms);
        if let Some(b) = slot {
            if let Some(arm) = e.arm {
                if e.served {
                    *b.bucket.requests.entry(arm.as_str().into()).or_default() += 1;
                    // A uniform sample of the bucket's overheads (reservoir), so recording
                    // stays O(1) however busy the bucket; the median is taken at snapshot time.
                    b.seen += 1;
                    if b.overheads.len() < MAX_BUCKET_SAMPLES {
                        b.overheads.push(e.latency_ms.overhead);
                    } else {
                        let k = fastrand::u64(..b.seen) as usize;
                        if let Some(slot) = b.overheads.get_mut(k) {
                            *slot = e.latency_ms.overhead;
                        }
                    }
                }
                if let Some(u) = &e.usage {
                    *b.bucket
                        .prompt_tokens
                        .entry(arm.as_str().into())
                        .or_default() += u.prompt_tokens;
                }
            }
            b.bucket.tokens_saved += saved;
            b.bucket.usd_saved += usd_saved;
        }
        st.totals.hit_ratio()
    }

    pub fn snapshot(&self) -> StatsSnapshot {
        let guard = match self.state.lock() {
            Ok(g) => g,
            Err(poisoned) => poisoned.into_inner(),
        };
        let mut totals = guard.totals.clone();
        totals.cache_hit_ratio = totals.hit_ratio();
        let mut arms = BTreeMap::new();
        for arm in [Arm::Compressed, Arm::Raw] {
            let mut s = ArmStats::default();
            if let Some(acc) = guard.arms.get(&arm) {
                s = acc.stats.clone();
                if s.with_usage > 0 {
                    s.mean_prompt_tokens = Some(s.prompt_tokens as f64 / s.with_usage as f64);
                    s.mean_completion_tokens =
                        Some(s.completion_tokens as f64 / s.with_usage as f64);
                }
                if acc.priced_with_usage > 0 {
                    s.mean_cost_usd = Some(s.cost_usd / acc.priced_with_usage as f64);
                }
                s.overhead_ms = quantiles(&acc.overhead);
                s.compression_ms = quantiles(&acc.compression);
                s.upstream_ms = quantiles(&acc.upstream);
            }
            arms.insert(arm.as_str().to_string(), s);
        }
        StatsSnapshot {
            uptime_s: self.started.elapsed().as_secs_f64(),
            now_ms: super::now_ms(),
            ab: self.ab.clone(),
            totals,
            arms,
            roles: guard.roles.clone(),
            bucket_s: BUCKET_S,
            series: guard
                .series
                .iter()
                .map(|b| Bucket {
                    overhead_p50_ms: quantile(&b.overheads, 0.5),
                    ..b.bucket.clone()
                })
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::event::Tokens;

    #[test]
    fn invented_role_names_do_not_grow_the_stats() {
        let live = LiveStats::new(
            AbSummary::default(),
            PriceTable::with_overrides(&BTreeMap::new()),
        );
        for i in 0..2000 {
            let roles = [("user".to_string(), 3), (format!("invented-{i}"), 2)]
                .into_iter()
                .map(|(r, n)| {
                    (
                        r,
                        RoleTokens {
                            before: n,
                            after: 1,
                        },
                    )
                })
                .collect();
            live.record(&Event {
                arm: Some(Arm::Compressed),
                served: true,
                status: 200,
                tokens: Some(Tokens {
                    roles,
                    ..Tokens::default()
                }),
                ..Event::default()
            });
        }
        let roles = live.snapshot().roles;
        let keys: Vec<&str> = roles.keys().map(String::as_str).collect();
        assert_eq!(keys, ["other", "user"]);
        assert_eq!(roles["other"].before, 4000);
        assert_eq!(roles["user"].before, 6000);
    }
}
