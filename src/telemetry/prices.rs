//! Prices per model, in US dollars per million tokens, for cost estimates.
//!
//! The built-in table holds OpenAI and Anthropic list prices for common models (standard tier,
//! as published in 2025). `[prices."<model>"]` in the configuration or a `--prices` file adds or replaces
//! entries. A model matches the entry whose name is its longest prefix (`gpt-4o-2024-08-06`
//! → `gpt-4o`, `gpt-4o-mini-2024-07-18` → `gpt-4o-mini`); anything else has an unknown price.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::event::Usage;

/// One model's price, US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    /// Uncached prompt tokens.
    pub input: f64,
    /// Cached prompt tokens (`prompt_tokens_details.cached_tokens`); defaults to `input`.
    #[serde(default)]
    pub cached_input: Option<f64>,
    /// Completion tokens.
    pub output: f64,
    /// Prompt tokens written to the provider's cache (Anthropic's
    /// `cache_creation_input_tokens`); defaults to `input`.
    #[serde(default)]
    pub cache_write_input: Option<f64>,
}

impl Price {
    const fn new(input: f64, cached_input: f64, output: f64) -> Self {
        Self {
            input,
            cached_input: Some(cached_input),
            output,
            cache_write_input: None,
        }
    }

    /// Anthropic's price shape: cache reads and 5-minute cache writes priced apart.
    const fn with_cache_write(input: f64, read: f64, write: f64, output: f64) -> Self {
        Self {
            input,
            cached_input: Some(read),
            output,
            cache_write_input: Some(write),
        }
    }

    /// Cost of one call's billed usage, in US dollars.
    pub fn cost(&self, usage: &Usage) -> f64 {
        let cached = usage.cached_tokens.unwrap_or(0).min(usage.prompt_tokens);
        let written = usage
            .cache_creation_tokens
            .unwrap_or(0)
            .min(usage.prompt_tokens - cached);
        let uncached = usage.prompt_tokens - cached - written;
        (uncached as f64 * self.input
            + cached as f64 * self.cached_input.unwrap_or(self.input)
            + written as f64 * self.cache_write_input.unwrap_or(self.input)
            + usage.completion_tokens as f64 * self.output)
            / 1e6
    }

    /// Cost of `tokens` uncached prompt tokens, in US dollars.
    pub fn prompt_cost(&self, tokens: u64) -> f64 {
        tokens as f64 * self.input / 1e6
    }
}

/// The built-in list prices (USD per 1M tokens: input, cached input, output).
const DEFAULTS: &[(&str, Price)] = &[
    ("gpt-5", Price::new(1.25, 0.125, 10.0)),
    ("gpt-5-mini", Price::new(0.25, 0.025, 2.0)),
    ("gpt-5-nano", Price::new(0.05, 0.005, 0.40)),
    ("gpt-4.1", Price::new(2.0, 0.50, 8.0)),
    ("gpt-4.1-mini", Price::new(0.40, 0.10, 1.60)),
    ("gpt-4.1-nano", Price::new(0.10, 0.025, 0.40)),
    ("gpt-4o", Price::new(2.50, 1.25, 10.0)),
    ("gpt-4o-mini", Price::new(0.15, 0.075, 0.60)),
    ("o1", Price::new(15.0, 7.50, 60.0)),
    ("o3", Price::new(2.0, 0.50, 8.0)),
    ("o3-mini", Price::new(1.10, 0.55, 4.40)),
    ("o4-mini", Price::new(1.10, 0.275, 4.40)),
    ("gpt-4-turbo", Price::new(10.0, 10.0, 30.0)),
    ("gpt-3.5-turbo", Price::new(0.50, 0.50, 1.50)),
    // Anthropic (input, cache read, 5-minute cache write, output).
    (
        "claude-opus-4",
        Price::with_cache_write(15.0, 1.50, 18.75, 75.0),
    ),
    (
        "claude-opus-4-5",
        Price::with_cache_write(5.0, 0.50, 6.25, 25.0),
    ),
    (
        "claude-sonnet-4",
        Price::with_cache_write(3.0, 0.30, 3.75, 15.0),
    ),
    (
        "claude-haiku-4-5",
        Price::with_cache_write(1.0, 0.10, 1.25, 5.0),
    ),
    (
        "claude-3-5-haiku",
        Price::with_cache_write(0.80, 0.08, 1.0, 4.0),
    ),
];

/// Model name (prefix) → price.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct PriceTable(pub BTreeMap<String, Price>);

impl Default for PriceTable {
    fn default() -> Self {
        Self(
            DEFAULTS
                .iter()
                .map(|(name, price)| ((*name).to_string(), *price))
                .collect(),
        )
    }
}

impl PriceTable {
    /// The built-in table with `overrides` added on top.
    pub fn with_overrides(overrides: &BTreeMap<String, Price>) -> Self {
        let mut table = Self::default();
        table
            .0
            .extend(overrides.iter().map(|(k, v)| (k.clone(), *v)));
        table
    }

    /// The price of `model`: the entry with the longest name that `model` starts with.
    pub fn lookup(&self, model: &str) -> Option<&Price> {
        self.0
            .iter()
            .filter(|(name, _)| model.starts_with(name.as_str()))
            .max_by_key(|(name, _)| name.len())
            .map(|(_, price)| price)
    }

    /// Cost of one call, or `None` for an unknown price.
    pub fn cost(&self, model: &str, usage: &Usage) -> Option<f64> {
        self.lookup(model).map(|p| p.cost(usage))
    }

    /// Loads a TOML file of `[<model>] input = .. cached_input = .. output = ..` tables (a
    /// top-level `[prices]` table is accepted too) on top of the built-in table.
    pub fn from_toml_file(path: &std::path::Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum File {
            Nested { prices: BTreeMap<String, Price> },
            Flat(BTreeMap<String, Price>),
        }
        let parsed: File = toml_from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let overrides = match parsed {
            File::Nested { prices } => prices,
            File::Flat(p) => p,
        };
        Ok(Self::with_overrides(&overrides))
    }
}

fn toml_from_str<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, String> {
    use figment::Figment;
    use figment::providers::{Format, Toml};
    Figment::from(Toml::string(text))
        .extract()
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn longest_prefix_wins() {
        let t = PriceTable::default();
        assert_eq!(
            t.lookup("gpt-4o-mini-2024-07-18").map(|p| p.input),
            Some(0.15)
        );
        assert_eq!(t.lookup("gpt-4o-2024-08-06").map(|p| p.input), Some(2.50));
        assert_eq!(t.lookup("o3-mini").map(|p| p.input), Some(1.10));
        assert!(t.lookup("llama-3").is_none());
        assert_eq!(
            t.lookup("claude-opus-4-5-20251101").map(|p| p.input),
            Some(5.0)
        );
        assert_eq!(t.lookup("claude-opus-4-1").map(|p| p.input), Some(15.0));
    }

    #[test]
    fn cost_splits_cached_tokens() {
        let p = Price::new(2.0, 0.5, 8.0);
        let u = Usage {
            prompt_tokens: 1_000_000,
            completion_tokens: 500_000,
            total_tokens: 1_500_000,
            cached_tokens: Some(400_000),
            cache_creation_tokens: None,
        };
        // 600k * 2 + 400k * 0.5 + 500k * 8, per million
        assert!((p.cost(&u) - (1.2 + 0.2 + 4.0)).abs() < 1e-12);
        let a = Price::with_cache_write(3.0, 0.3, 3.75, 15.0);
        let u = Usage {
            prompt_tokens: 1_000_000,
            completion_tokens: 0,
            total_tokens: 1_000_000,
            cached_tokens: Some(500_000),
            cache_creation_tokens: Some(200_000),
        };
        // 300k * 3 + 500k * 0.3 + 200k * 3.75, per million
        assert!((a.cost(&u) - (0.9 + 0.15 + 0.75)).abs() < 1e-12);
    }
}
