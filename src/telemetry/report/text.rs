//! Plain-text rendering of the report, and the number formats the HTML page shares.

use std::fmt::Write as _;

use super::bootstrap::Estimate;
use super::{Diff, GroupStats, NO_RAW_ARM, Percentiles, Report, TokenSaving};
use crate::ab::Arm;

/// What money columns show for a model without a price.
pub const UNKNOWN_PRICE: &str = "unknown price";

/// US dollars with three significant digits below one cent (`$0.0000450`), cents above.
pub fn usd(x: f64) -> String {
    let sign = if x < 0.0 { "-" } else { "" };
    let a = x.abs();
    if a == 0.0 {
        return "$0".to_string();
    }
    let decimals = if a >= 1.0 {
        2
    } else {
        (2 - a.log10().floor() as i64).clamp(2, 12) as usize
    };
    format!("{sign}${a:.decimals$}")
}

/// A share as a percentage with one decimal.
pub fn pct(x: f64) -> String {
    format!("{:.1}%", x * 100.0)
}

/// A token count or mean with one decimal.
pub fn num(x: f64) -> String {
    format!("{x:.1}")
}

/// Milliseconds with one decimal, or `-`.
pub fn ms(x: Option<f64>) -> String {
    x.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"))
}

/// `f(x)` or `-`.
pub fn opt<T>(x: Option<T>, f: impl Fn(T) -> String) -> String {
    x.map_or_else(|| "-".to_string(), f)
}

/// `value [low, high]` with `f` applied to each figure.
pub fn estimate(e: &Estimate, f: impl Fn(f64) -> String) -> String {
    format!("{} [{}, {}]", f(e.value), f(e.ci_low), f(e.ci_high))
}

fn percentiles(p: &Percentiles) -> String {
    if p.p50.is_none() {
        return "-".to_string();
    }
    format!("{} / {}", ms(p.p50), ms(p.p95))
}

/// Columns: the first left-aligned, the others right-aligned, two spaces apart.
fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: &mut dyn Iterator<Item = &str>| {
        let mut out = String::new();
        for (i, (cell, w)) in cells.zip(&widths).enumerate() {
            if i == 0 {
                let _ = write!(out, "{cell:<w$}");
            } else {
                let _ = write!(out, "  {cell:>w$}");
            }
        }
        out.trim_end().to_string() + "\n"
    };
    let mut out = line(&mut header.iter().copied());
    let total: usize = widths.iter().sum::<usize>() + 2 * widths.len().saturating_sub(1);
    out.push_str(&"-".repeat(total));
    out.push('\n');
    for row in rows {
        out.push_str(&line(&mut row.iter().map(String::as_str)));
    }
    out
}

fn section(out: &mut String, title: &str) {
    let _ = write!(out, "\n{title}\n{}\n", "=".repeat(title.chars().count()));
}

/// One row of the per-arm / per-model table.
fn group_row(label: String, s: &GroupStats, price_known: bool) -> Vec<String> {
    let money = |v: Option<f64>| {
        if !price_known {
            return UNKNOWN_PRICE.to_string();
        }
        let mut text = opt(v, usd);
        if s.unpriced_calls > 0 && v.is_some() {
            text.push('*');
        }
        text
    };
    vec![
        label,
        s.requests.to_string(),
        s.mirror_copies.to_string(),
        s.with_usage.to_string(),
        opt(s.mean_prompt_tokens, num),
        opt(s.cached_share, pct),
        opt(s.mean_completion_tokens, num),
        money(s.cost_usd),
        money(s.mean_cost_usd),
        percentiles(&s.latency_total_ms),
        percentiles(&s.overhead_ms),
        format!("{} ({})", s.errors, opt(s.error_rate, pct)),
    ]
}

/// A saving row: label, sample count, then the diff's columns (or "unknown price").
fn diff_row(
    label: String,
    count: String,
    d: Option<&Diff>,
    f: &dyn Fn(f64) -> String,
) -> Vec<String> {
    let mut row = vec![label, count];
    match d {
        Some(d) => row.extend([
            f(d.compressed_mean),
            f(d.raw_mean),
            estimate(&d.saved, f),
            opt(d.relative.as_ref(), |r| estimate(r, pct)),
        ]),
        None => row.push(UNKNOWN_PRICE.to_string()),
    }
    row
}

fn saving_table(count_header: &str, rows: &[Vec<String>]) -> String {
    table(
        &[
            "",
            count_header,
            "compressed",
            "raw",
            "saved per call [95% CI]",
            "relative [95% CI]",
        ],
        rows,
    )
}

fn role_table(
    total: &TokenSaving,
    roles: &std::collections::BTreeMap<String, TokenSaving>,
) -> String {
    let row = |name: &str, t: &TokenSaving| {
        vec![
            name.to_string(),
            t.before.to_string(),
            t.after.to_string(),
            t.saved.to_string(),
            opt(t.saved_share(), pct),
        ]
    };
    let mut rows: Vec<Vec<String>> = roles.iter().map(|(r, t)| row(r, t)).collect();
    rows.push(row("all roles", total));
    table(&["role", "before", "after", "saved", "saved %"], &rows)
}

impl Report {
    /// The report as aligned plain-text tables.
    pub fn render_text(&self) -> String {
        let mut out = String::from("lingua-proxy A/B report\n");
        let _ = write!(out, "events: {}", self.events);
        if self.malformed_lines > 0 {
            let _ = write!(out, " ({} malformed line(s) skipped)", self.malformed_lines);
        }
        out.push('\n');
        if let Some(t) = &self.time_range {
            let _ = writeln!(out, "time: {} .. {}", t.first, t.last);
        }
        if !self.modes.is_empty() {
            let modes: Vec<String> = self.modes.iter().map(|(m, n)| format!("{m} {n}")).collect();
            let _ = writeln!(out, "modes: {}", modes.join(", "));
        }
        if !self.notes.is_empty() {
            out.push('\n');
            for n in &self.notes {
                let _ = writeln!(out, "note: {n}");
            }
        }

        self.text_arms(&mut out);
        self.text_saving(&mut out);
        self.text_agreement(&mut out);
        self.text_shadow(&mut out);

        let r = &self.compressed_roles;
        if r.calls > 0 {
            section(
                &mut out,
                "Compressed arm: proxy-counted prompt tokens per role",
            );
            let _ = writeln!(out, "{} calls with token counts", r.calls);
            out.push_str(&role_table(&r.total, &r.roles));
        }
        out
    }

    fn text_arms(&self, out: &mut String) {
        section(out, "Per arm and model");
        let mut rows = Vec::new();
        for arm in [Arm::Compressed, Arm::Raw] {
            let name = arm.as_str();
            match self.arms.get(name) {
                Some(s) if s.calls > 0 => rows.push(group_row(name.to_string(), s, true)),
                _ => {
                    let mut row = vec![format!("{name} (no traffic)")];
                    row.resize(12, String::new());
                    rows.push(row);
                    continue;
                }
            }
            for m in self.models.iter().filter(|m| m.arm == arm) {
                rows.push(group_row(format!("  {}", m.model), &m.stats, m.price_known));
            }
        }
        out.push_str(&table(
            &[
                "arm / model",
                "requests",
                "mirror",
                "usage",
                "prompt/call",
                "cached",
                "compl./call",
                "cost",
                "cost/call",
                "total p50/p95 ms",
                "overhead p50/p95 ms",
                "errors",
            ],
            &rows,
        ));
        let unpriced: u64 = self.arms.values().map(|s| s.unpriced_calls).sum();
        if unpriced > 0 {
            let _ = writeln!(
                out,
                "* money figures leave out {unpriced} call(s) whose model has an unknown price"
            );
        }
        out.push_str(
            "usage = calls that reported usage (token and cost means are per such call); \
             latencies over served calls\n",
        );
    }

    fn text_saving(&self, out: &mut String) {
        let s = &self.saving;
        section(
            out,
            &format!(
                "Saving: compressed vs raw (95% bootstrap CI, {} resamples, seed {:#x})",
                self.bootstrap.resamples, self.bootstrap.seed
            ),
        );
        let raw_calls = self.arms.get(Arm::Raw.as_str()).map_or(0, |a| a.calls);
        if raw_calls == 0 {
            let _ = writeln!(out, "{NO_RAW_ARM}");
        }
        if let Some(o) = &s.overall {
            let calls = |c: u64, r: u64| format!("{c}/{r}");
            out.push_str("\nbilled prompt tokens per call\n");
            let mut rows: Vec<Vec<String>> = s
                .per_model
                .iter()
                .map(|m| {
                    let n = calls(m.compressed_calls, m.raw_calls);
                    diff_row(m.model.clone(), n, Some(&m.prompt_tokens), &num)
                })
                .collect();
            let label = format!("overall ({} models)", o.models);
            rows.push(diff_row(label, String::new(), Some(&o.prompt_tokens), &num));
            out.push_str(&saving_table("calls c/r", &rows));

            out.push_str("\ncost per call (US dollars)\n");
            let mut rows: Vec<Vec<String>> = s
                .per_model
                .iter()
                .map(|m| {
                    let n = calls(m.compressed_calls, m.raw_calls);
                    diff_row(m.model.clone(), n, m.cost_usd.as_ref(), &usd)
                })
                .collect();
            if let Some(d) = &o.cost_usd {
                let label = "overall (priced models)".to_string();
                rows.push(diff_row(label, String::new(), Some(d), &usd));
            }
            out.push_str(&saving_table("calls c/r", &rows));
            out.push_str(
                "overall = per-model means weighted by each model's share of calls with usage \
                 (both arms), so the arms' model mix does not bias it\n",
            );
            let _ = writeln!(
                out,
                "\nsaved over the compressed arm's traffic: {} prompt tokens",
                estimate(&o.prompt_tokens_saved_total, |v| format!("{v:.0}"))
            );
            if let Some(t) = &o.usd_saved_total {
                let _ = writeln!(
                    out,
                    "estimated money saved: {} over {} priced compressed calls",
                    estimate(t, usd),
                    o.compressed_priced_calls
                );
            }
        } else if raw_calls > 0 {
            out.push_str("not measurable: no model has calls with usage in both arms\n");
        }
        if !s.one_arm_models.is_empty() && raw_calls > 0 {
            let _ = writeln!(
                out,
                "left out (usage in one arm only): {}",
                s.one_arm_models.join(", ")
            );
        }
        if let Some(p) = &s.paired {
            let _ = writeln!(
                out,
                "\nmirror pairs ({} with usage in both arms; within-pair raw - compressed)",
                p.pairs
            );
            let mut rows = vec![diff_row(
                "prompt tokens".to_string(),
                p.pairs.to_string(),
                Some(&p.prompt_tokens),
                &num,
            )];
            if let Some(c) = &p.cost_usd {
                let n = p.priced_pairs.to_string();
                rows.push(diff_row("cost (USD)".to_string(), n, Some(c), &usd));
            }
            out.push_str(&saving_table("pairs", &rows));
        }
    }

    fn text_agreement(&self, out: &mut String) {
        let a = &self.agreement;
        if a.pairs == 0 {
            return;
        }
        section(out, "Mirror answer agreement (raw answer as reference)");
        let _ = writeln!(
            out,
            "pairs: {} ({} incomplete); scored: {} ({} from logged agreement, {} from answers); \
             no answers: {}",
            a.pairs,
            a.incomplete_pairs,
            a.from_field + a.from_answers,
            a.from_field,
            a.from_answers,
            a.no_answers
        );
        if a.exact_match_rate.is_some() {
            let _ = writeln!(
                out,
                "exact match: {}   mean token F1: {}   mean ROUGE-L: {}",
                opt(a.exact_match_rate, pct),
                opt(a.mean_f1, |v| format!("{v:.3}")),
                opt(a.mean_rouge_l, |v| format!("{v:.3}"))
            );
        } else {
            out.push_str("no pair could be scored: turn on log_content to record answers\n");
        }
    }

    fn text_shadow(&self, out: &mut String) {
        let s = &self.shadow;
        if s.requests == 0 {
            return;
        }
        section(
            out,
            "Shadow mode (compression counted, requests forwarded raw)",
        );
        let _ = writeln!(
            out,
            "requests: {} ({} with token counts)",
            s.requests, s.with_tokens
        );
        let _ = writeln!(
            out,
            "proxy-counted prompt tokens: before {}, after {}, saved {} ({})",
            s.tokens.before,
            s.tokens.after,
            s.tokens.saved,
            opt(s.tokens.saved_share(), pct)
        );
        let _ = write!(
            out,
            "estimated money saved: {} (saved tokens priced as uncached input)",
            usd(s.usd_saved_estimate)
        );
        if s.unpriced_requests > 0 {
            let _ = write!(
                out,
                "; {} request(s) with {UNKNOWN_PRICE} left out",
                s.unpriced_requests
            );
        }
        out.push('\n');
        if !s.roles.is_empty() {
            out.push_str(&role_table(&s.tokens, &s.roles));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats() {
        assert_eq!(usd(0.0), "$0");
        assert_eq!(usd(12.345), "$12.35");
        assert_eq!(usd(0.5), "$0.500");
        assert_eq!(usd(0.000_045), "$0.0000450");
        assert_eq!(usd(-0.0123), "-$0.0123");
        assert_eq!(pct(0.4321), "43.2%");
        assert_eq!(ms(None), "-");
    }

    #[test]
    fn table_aligns_columns() {
        let t = table(
            &["name", "n"],
            &[
                vec!["a".into(), "1".into()],
                vec!["long".into(), "100".into()],
            ],
        );
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines[0], "name    n");
        assert_eq!(lines[2], "a       1");
        assert_eq!(lines[3], "long  100");
    }
}
