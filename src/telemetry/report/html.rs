//! Self-contained HTML rendering of the report: inline CSS and inline SVG charts, no scripts and
//! no external resources. Every piece of text from the log (model names, roles, notes) is escaped.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use super::bootstrap::Estimate;
use super::text::{UNKNOWN_PRICE, estimate, ms, num, opt, pct, usd};
use super::{Diff, GroupStats, NO_RAW_ARM, Report, TokenSaving};
use crate::ab::Arm;

/// Escapes `&`, `<`, `>`, `"` and `'` for HTML text and attribute values.
pub fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

const STYLE: &str = r#"
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem auto;
       max-width: 90rem; padding: 0 1rem; color: #1d2330; background: #fafbfc; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; }
h2 { font-size: 1.15rem; margin-top: 2rem; border-bottom: 1px solid #dde1e7; padding-bottom: .2rem; }
.meta { color: #5a6473; }
.notes { background: #fff7e6; border: 1px solid #f0d9a8; border-radius: 6px; padding: .5rem 1rem; }
.cards { display: grid; grid-template-columns: repeat(auto-fill, minmax(14rem, 1fr)); gap: .8rem; }
.card { background: #fff; border: 1px solid #dde1e7; border-radius: 8px; padding: .7rem .9rem; }
.card .label { color: #5a6473; font-size: .8rem; text-transform: uppercase; letter-spacing: .03em; }
.card .value { font-size: 1.6rem; font-weight: 600; margin: .15rem 0; }
.card .ci { color: #5a6473; font-size: .85rem; }
.charts { display: grid; grid-template-columns: repeat(auto-fill, minmax(30rem, 1fr)); gap: .8rem; }
.chart { background: #fff; border: 1px solid #dde1e7; border-radius: 8px; padding: .5rem; }
table { border-collapse: collapse; background: #fff; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #dde1e7; padding: .25rem .5rem; text-align: right; white-space: nowrap; }
th:first-child, td:first-child { text-align: left; }
th { background: #f0f2f5; }
tr.arm td { font-weight: 600; background: #f6f8fa; }
.unknown { color: #b54708; }
.scroll { overflow-x: auto; }
svg text { font: 12px system-ui, sans-serif; fill: #1d2330; }
svg .compressed { fill: #2f7ed8; } svg .raw { fill: #9aa5b1; }
svg .before { fill: #9aa5b1; } svg .after { fill: #2f7ed8; }
svg .p50 { fill: #2f7ed8; } svg .p95 { fill: #1b4f8a; }
"#;

/// One bar of a horizontal bar chart.
struct Bar {
    label: String,
    value: Option<f64>,
    text: String,
    class: &'static str,
}

impl Bar {
    fn new(
        label: impl Into<String>,
        value: Option<f64>,
        text: String,
        class: &'static str,
    ) -> Self {
        Self {
            label: label.into(),
            value,
            text,
            class,
        }
    }
}

/// A horizontal bar chart as inline SVG; bars scale to the largest value.
fn bar_chart(title: &str, bars: &[Bar]) -> String {
    const LABEL_W: f64 = 170.0;
    const BAR_W: f64 = 260.0;
    const ROW_H: f64 = 24.0;
    const TOP: f64 = 26.0;
    let width = LABEL_W + BAR_W + 130.0;
    let height = TOP + ROW_H * bars.len() as f64 + 6.0;
    let max = bars
        .iter()
        .filter_map(|b| b.value)
        .filter(|v| v.is_finite())
        .fold(0.0_f64, f64::max);
    let mut svg = format!(
        r#"<svg role="img" width="{width}" height="{height}" viewBox="0 0 {width} {height}"><title>{t}</title><text x="4" y="16" font-weight="600">{t}</text>"#,
        t = escape(title)
    );
    for (i, b) in bars.iter().enumerate() {
        let y = TOP + ROW_H * i as f64;
        let _ = write!(
            svg,
            r#"<text x="{x}" y="{ty}" text-anchor="end">{label}</text>"#,
            x = LABEL_W - 8.0,
            ty = y + 15.0,
            label = escape(&b.label)
        );
        let w = match b.value {
            Some(v) if v.is_finite() && v > 0.0 && max > 0.0 => (v / max * BAR_W).max(1.0),
            _ => 0.0,
        };
        if w > 0.0 {
            let _ = write!(
                svg,
                r#"<rect class="{c}" x="{LABEL_W}" y="{ry}" width="{w:.1}" height="{h}" rx="2"/>"#,
                c = b.class,
                ry = y + 3.0,
                h = ROW_H - 6.0
            );
        }
        let _ = write!(
            svg,
            r#"<text x="{x:.1}" y="{ty}">{text}</text>"#,
            x = LABEL_W + w + 6.0,
            ty = y + 15.0,
            text = escape(&b.text)
        );
    }
    svg.push_str("</svg>");
    format!(r#"<div class="chart">{svg}</div>"#)
}

fn card(out: &mut String, label: &str, value: &str, detail: &str) {
    let _ = write!(
        out,
        r#"<div class="card"><div class="label">{}</div><div class="value">{}</div><div class="ci">{}</div></div>"#,
        escape(label),
        escape(value),
        escape(detail)
    );
}

fn ci_text(e: &Estimate, f: impl Fn(f64) -> String) -> String {
    format!("95% CI {} to {}", f(e.ci_low), f(e.ci_high))
}

fn relative_card(out: &mut String, label: &str, d: &Diff, f: &dyn Fn(f64) -> String) {
    match &d.relative {
        Some(r) => card(
            out,
            label,
            &pct(r.value),
            &format!(
                "{}; {} saved per call ({} → {})",
                ci_text(r, pct),
                f(d.saved.value),
                f(d.raw_mean),
                f(d.compressed_mean)
            ),
        ),
        None => card(out, label, "-", "raw mean is zero"),
    }
}

fn td(out: &mut String, text: &str) {
    let _ = write!(out, "<td>{}</td>", escape(text));
}

fn money_td(out: &mut String, value: Option<f64>, price_known: bool) {
    if price_known {
        td(out, &opt(value, usd));
    } else {
        let _ = write!(out, r#"<td class="unknown">{UNKNOWN_PRICE}</td>"#);
    }
}

fn group_tr(out: &mut String, class: &str, label: &str, s: &GroupStats, price_known: bool) {
    let _ = write!(out, r#"<tr class="{class}">"#);
    td(out, label);
    for v in [s.requests, s.mirror_copies, s.with_usage] {
        td(out, &v.to_string());
    }
    td(out, &opt(s.mean_prompt_tokens, num));
    td(out, &opt(s.cached_share, pct));
    td(out, &opt(s.mean_completion_tokens, num));
    money_td(out, s.cost_usd, price_known);
    money_td(out, s.mean_cost_usd, price_known);
    td(
        out,
        &format!(
            "{} / {}",
            ms(s.latency_total_ms.p50),
            ms(s.latency_total_ms.p95)
        ),
    );
    td(
        out,
        &format!("{} / {}", ms(s.overhead_ms.p50), ms(s.overhead_ms.p95)),
    );
    td(out, &format!("{} ({})", s.errors, opt(s.error_rate, pct)));
    out.push_str("</tr>");
}

fn diff_tds(out: &mut String, d: Option<&Diff>, f: &dyn Fn(f64) -> String) {
    match d {
        Some(d) => {
            td(out, &f(d.compressed_mean));
            td(out, &f(d.raw_mean));
            td(out, &estimate(&d.saved, f));
            td(out, &opt(d.relative.as_ref(), |r| estimate(r, pct)));
        }
        None => {
            let _ = write!(
                out,
                r#"<td class="unknown" colspan="4">{UNKNOWN_PRICE}</td>"#
            );
        }
    }
}

fn role_bars(title: &str, roles: &BTreeMap<String, TokenSaving>) -> String {
    let mut bars = Vec::new();
    for (role, t) in roles {
        bars.push(Bar::new(
            format!("{role} before"),
            Some(t.before as f64),
            t.before.to_string(),
            "before",
        ));
        bars.push(Bar::new(
            format!("{role} after"),
            Some(t.after as f64),
            format!("{} (−{})", t.after, opt(t.saved_share(), pct)),
            "after",
        ));
    }
    bar_chart(title, &bars)
}

impl Report {
    /// The report as one self-contained HTML page.
    pub fn render_html(&self) -> String {
        let mut out = String::from(
            r#"<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width, initial-scale=1"><title>lingua-proxy A/B report</title><style>"#,
        );
        out.push_str(STYLE);
        out.push_str("</style></head><body><h1>lingua-proxy A/B report</h1>");
        let mut meta = format!("{} events", self.events);
        if self.malformed_lines > 0 {
            let _ = write!(meta, ", {} malformed line(s) skipped", self.malformed_lines);
        }
        if let Some(t) = &self.time_range {
            let _ = write!(meta, " · {} to {}", t.first, t.last);
        }
        let modes: Vec<String> = self.modes.iter().map(|(m, n)| format!("{m} {n}")).collect();
        if !modes.is_empty() {
            let _ = write!(meta, " · modes: {}", modes.join(", "));
        }
        let _ = write!(out, r#"<p class="meta">{}</p>"#, escape(&meta));
        if !self.notes.is_empty() {
            out.push_str(r#"<div class="notes"><ul>"#);
            for n in &self.notes {
                let _ = write!(out, "<li>{}</li>", escape(n));
            }
            out.push_str("</ul></div>");
        }
        self.html_cards(&mut out);
        self.html_charts(&mut out);
        self.html_tables(&mut out);
        let _ = write!(
            out,
            r#"<p class="meta">Intervals: 95% percentile bootstrap, {} resamples, seed {:#x}; each (model, arm) cell resampled independently. The overall saving and the arm charts weight each model's mean by its share of calls with usage (both arms), so the arms' model mix does not bias them; the table shows the plain arm means.</p></body></html>"#,
            self.bootstrap.resamples, self.bootstrap.seed
        );
        out.push('\n');
        out
    }

    fn html_cards(&self, out: &mut String) {
        out.push_str(r#"<h2>Summary</h2><div class="cards">"#);
        let s = &self.saving;
        match &s.overall {
            Some(o) => {
                relative_card(out, "Prompt tokens saved", &o.prompt_tokens, &num);
                match &o.cost_usd {
                    Some(c) => relative_card(out, "Cost saved per call", c, &usd),
                    None => card(out, "Cost saved per call", UNKNOWN_PRICE, "no priced model"),
                }
                if let Some(t) = &o.usd_saved_total {
                    card(
                        out,
                        "Money saved",
                        &usd(t.value),
                        &format!(
                            "{} over {} compressed calls",
                            ci_text(t, usd),
                            o.compressed_priced_calls
                        ),
                    );
                }
            }
            None => {
                let why = if self
                    .arms
                    .get(Arm::Raw.as_str())
                    .is_none_or(|a| a.calls == 0)
                {
                    NO_RAW_ARM
                } else {
                    "no model has calls with usage in both arms"
                };
                card(out, "Prompt tokens saved", "-", why);
            }
        }
        if let Some(p) = &s.paired
            && let Some(r) = &p.prompt_tokens.relative
        {
            card(
                out,
                "Mirror pairs: tokens saved",
                &pct(r.value),
                &format!("{} over {} pairs", ci_text(r, pct), p.pairs),
            );
        }
        let a = &self.agreement;
        if let Some(rate) = a.exact_match_rate {
            card(
                out,
                "Answer agreement",
                &pct(rate),
                &format!(
                    "exact match over {} pairs; F1 {}, ROUGE-L {}",
                    a.from_field + a.from_answers,
                    opt(a.mean_f1, |v| format!("{v:.3}")),
                    opt(a.mean_rouge_l, |v| format!("{v:.3}"))
                ),
            );
        }
        let sh = &self.shadow;
        if sh.requests > 0 {
            card(
                out,
                "Shadow: would save",
                &opt(sh.tokens.saved_share(), pct),
                &format!(
                    "{} tokens, about {} over {} requests",
                    sh.tokens.saved,
                    usd(sh.usd_saved_estimate),
                    sh.requests
                ),
            );
        }
        out.push_str("</div>");
    }

    fn html_charts(&self, out: &mut String) {
        out.push_str(r#"<h2>Arms</h2><div class="charts">"#);
        let arms: Vec<(&str, Option<&GroupStats>)> = [Arm::Compressed, Arm::Raw]
            .iter()
            .map(|a| {
                (
                    a.as_str(),
                    self.arms.get(a.as_str()).filter(|s| s.calls > 0),
                )
            })
            .collect();
        let bars = |f: &dyn Fn(&GroupStats) -> Option<f64>, fmt: &dyn Fn(f64) -> String| {
            arms.iter()
                .map(|(name, s)| {
                    let v = s.and_then(f);
                    Bar::new(*name, v, opt(v, fmt), name_class(name))
                })
                .collect::<Vec<_>>()
        };
        // With a measurable saving, chart the model-mix-adjusted means (the ones the saving
        // compares); the plain arm means mix different models in different proportions.
        let adjusted = |d: Option<&Diff>, f: &dyn Fn(f64) -> String| {
            d.map(|d| {
                vec![
                    Bar::new(
                        "compressed",
                        Some(d.compressed_mean),
                        f(d.compressed_mean),
                        "compressed",
                    ),
                    Bar::new("raw", Some(d.raw_mean), f(d.raw_mean), "raw"),
                ]
            })
        };
        let overall = self.saving.overall.as_ref();
        match adjusted(overall.map(|o| &o.prompt_tokens), &num) {
            Some(b) => out.push_str(&bar_chart(
                "Mean billed prompt tokens per call (same model mix)",
                &b,
            )),
            None => out.push_str(&bar_chart(
                "Mean billed prompt tokens per call",
                &bars(&|s| s.mean_prompt_tokens, &num),
            )),
        }
        match adjusted(overall.and_then(|o| o.cost_usd.as_ref()), &usd) {
            Some(b) => out.push_str(&bar_chart(
                "Mean cost per call (priced models, same model mix)",
                &b,
            )),
            None => out.push_str(&bar_chart(
                "Mean cost per call (priced calls)",
                &bars(&|s| s.mean_cost_usd, &usd),
            )),
        }
        let mut overhead = Vec::new();
        for (name, s) in &arms {
            let p = s.map(|s| s.overhead_ms).unwrap_or_default();
            overhead.push(Bar::new(
                format!("{name} p50"),
                p.p50,
                format!("{} ms", ms(p.p50)),
                "p50",
            ));
            overhead.push(Bar::new(
                format!("{name} p95"),
                p.p95,
                format!("{} ms", ms(p.p95)),
                "p95",
            ));
        }
        out.push_str(&bar_chart("Proxy overhead (served calls)", &overhead));
        if !self.compressed_roles.roles.is_empty() {
            out.push_str(&role_bars(
                "Compressed arm: prompt tokens per role, before / after",
                &self.compressed_roles.roles,
            ));
        }
        if !self.shadow.roles.is_empty() {
            out.push_str(&role_bars(
                "Shadow mode: prompt tokens per role, before / after",
                &self.shadow.roles,
            ));
        }
        out.push_str("</div>");
    }

    fn html_tables(&self, out: &mut String) {
        out.push_str(
            r#"<h2>Per arm and model</h2><div class="scroll"><table><tr><th>arm / model</th><th>requests</th><th>mirror copies</th><th>calls with usage</th><th>prompt tokens / call</th><th>cached</th><th>completion tokens / call</th><th>cost</th><th>cost / call</th><th>total p50 / p95 ms</th><th>overhead p50 / p95 ms</th><th>errors</th></tr>"#,
        );
        for arm in [Arm::Compressed, Arm::Raw] {
            let name = arm.as_str();
            match self.arms.get(name).filter(|s| s.calls > 0) {
                Some(s) => group_tr(out, "arm", name, s, true),
                None => {
                    let _ = write!(
                        out,
                        r#"<tr class="arm"><td>{name}</td><td colspan="11">no traffic</td></tr>"#
                    );
                }
            }
            for m in self.models.iter().filter(|m| m.arm == arm) {
                group_tr(
                    out,
                    "model",
                    &format!("\u{a0}\u{a0}{}", m.model),
                    &m.stats,
                    m.price_known,
                );
            }
        }
        out.push_str("</table></div>");
        let unpriced: u64 = self.arms.values().map(|s| s.unpriced_calls).sum();
        if unpriced > 0 {
            let _ = write!(
                out,
                r#"<p class="meta">Arm money figures leave out {unpriced} call(s) whose model has an unknown price.</p>"#
            );
        }

        let s = &self.saving;
        if s.per_model.is_empty() && s.paired.is_none() {
            return;
        }
        out.push_str(
            r#"<h2>Saving per model (95% CI)</h2><div class="scroll"><table><tr><th>model</th><th>calls c / r</th><th>measure</th><th>compressed</th><th>raw</th><th>saved per call</th><th>relative</th></tr>"#,
        );
        let row = |out: &mut String,
                   label: &str,
                   n: &str,
                   what: &str,
                   d: Option<&Diff>,
                   f: &dyn Fn(f64) -> String| {
            out.push_str("<tr>");
            td(out, label);
            td(out, n);
            td(out, what);
            diff_tds(out, d, f);
            out.push_str("</tr>");
        };
        for m in &s.per_model {
            let n = format!("{} / {}", m.compressed_calls, m.raw_calls);
            row(
                out,
                &m.model,
                &n,
                "prompt tokens",
                Some(&m.prompt_tokens),
                &num,
            );
            row(out, &m.model, &n, "cost", m.cost_usd.as_ref(), &usd);
        }
        if let Some(o) = &s.overall {
            let label = format!("overall ({} models)", o.models);
            row(
                out,
                &label,
                "",
                "prompt tokens",
                Some(&o.prompt_tokens),
                &num,
            );
            if let Some(c) = &o.cost_usd {
                row(out, "overall (priced models)", "", "cost", Some(c), &usd);
            }
        }
        if let Some(p) = &s.paired {
            let n = format!("{} pairs", p.pairs);
            row(
                out,
                "mirror pairs",
                &n,
                "prompt tokens",
                Some(&p.prompt_tokens),
                &num,
            );
            if let Some(c) = &p.cost_usd {
                let n = format!("{} pairs", p.priced_pairs);
                row(out, "mirror pairs", &n, "cost", Some(c), &usd);
            }
        }
        out.push_str("</table></div>");
    }
}

fn name_class(arm: &str) -> &'static str {
    if arm == Arm::Raw.as_str() {
        "raw"
    } else {
        "compressed"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_markup() {
        assert_eq!(
            escape(r#"<img src="x" onerror='y'>&"#),
            "&lt;img src=&quot;x&quot; onerror=&#39;y&#39;&gt;&amp;"
        );
    }

    #[test]
    fn chart_scales_to_the_largest_bar() {
        let svg = bar_chart(
            "t",
            &[
                Bar::new("a", Some(50.0), "50".into(), "raw"),
                Bar::new("b", Some(100.0), "100".into(), "raw"),
                Bar::new("c", None, "-".into(), "raw"),
            ],
        );
        assert!(svg.contains(r#"width="130.0""#), "{svg}");
        assert!(svg.contains(r#"width="260.0""#), "{svg}");
        assert_eq!(svg.matches("<rect").count(), 2);
    }
}
