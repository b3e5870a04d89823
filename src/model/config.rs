//! The `[model]` table: where and how the loaded model runs, and how its scheduler is sized.

use serde::{Deserialize, Serialize};

/// Precision of the LLMLingua-2 encoder's linear layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum PrecisionSetting {
    /// Full f32: parity with the reference.
    #[default]
    F32,
    /// int8 weights and dynamically quantized activations (AVX-512 VNNI when available).
    Q8,
    /// bf16 weights and activations with f32 sums (AVX512_BF16 when available), the same
    /// bits on every CPU tier.
    Bf16,
}

/// The `[model]` table. `device` and `precision` used to live in `[compression]`; the old keys
/// are still read (with a deprecation warning) when `[model]` does not set them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ModelConfig {
    /// `"cpu"`, or `"cuda:N"` in a build with the `cuda` feature (unset: `"cpu"`).
    pub device: Option<String>,
    /// `"f32"`, `"q8"` or `"bf16"` (unset: `"f32"`).
    pub precision: Option<PrecisionSetting>,
    /// Compute threads of the model (0: `LINGUA_ENCODER_THREADS`, else the number of CPUs).
    pub threads: usize,
    /// Token budget of one forward pass: bounds the memory of inference.
    pub max_batch_tokens: usize,
    /// Tokens allowed to wait for the model; beyond that new work is refused (`overloaded`).
    pub max_queued_tokens: usize,
    /// The causal LM of `method = "llmlingua"` / `"longllmlingua"`: a local directory or a
    /// Hugging Face id (GPT-2 or Llama family).
    pub causal_model: Option<String>,
}

impl Default for ModelConfig {
    fn default() -> Self {
        Self {
            device: None,
            precision: None,
            threads: 0,
            max_batch_tokens: 4096,
            max_queued_tokens: 65536,
            causal_model: None,
        }
    }
}

impl ModelConfig {
    pub fn device(&self) -> &str {
        self.device.as_deref().unwrap_or("cpu")
    }

    pub fn precision(&self) -> PrecisionSetting {
        self.precision.unwrap_or_default()
    }

    /// Fills `device`/`precision` from the deprecated `[compression]` keys when this table
    /// leaves them unset (logging a warning for each old key that is used).
    pub fn with_legacy(
        mut self,
        device: Option<&str>,
        precision: Option<PrecisionSetting>,
    ) -> Self {
        if let Some(d) = device {
            tracing::warn!("compression.device is deprecated: set [model] device instead");
            if self.device.is_none() {
                self.device = Some(d.to_string());
            }
        }
        if let Some(p) = precision {
            tracing::warn!("compression.precision is deprecated: set [model] precision instead");
            if self.precision.is_none() {
                self.precision = Some(p);
            }
        }
        self
    }

    /// Checks every value; the error is `(key, reason)`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        check_device(self.device()).map_err(|reason| ("device".to_string(), reason))?;
        if self.max_batch_tokens == 0 {
            return Err(("max_batch_tokens".into(), "must be at least 1".into()));
        }
        if self.max_queued_tokens < self.max_batch_tokens {
            return Err((
                "max_queued_tokens".into(),
                format!(
                    "{} is below max_batch_tokens ({})",
                    self.max_queued_tokens, self.max_batch_tokens
                ),
            ));
        }
        Ok(())
    }
}

/// `"cpu"` or `"cuda:N"`.
pub fn check_device(device: &str) -> Result<(), String> {
    let ok = device == "cpu"
        || device
            .strip_prefix("cuda:")
            .is_some_and(|n| n.parse::<usize>().is_ok());
    if ok {
        Ok(())
    } else {
        Err(format!("{device:?} is not \"cpu\" or \"cuda:N\""))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_keys_fill_unset_values_only() {
        let m = ModelConfig::default().with_legacy(Some("cuda:0"), Some(PrecisionSetting::Q8));
        assert_eq!(m.device(), "cuda:0");
        assert_eq!(m.precision(), PrecisionSetting::Q8);
        let m = ModelConfig {
            device: Some("cpu".into()),
            ..ModelConfig::default()
        }
        .with_legacy(Some("cuda:0"), None);
        assert_eq!(m.device(), "cpu");
        assert_eq!(m.precision(), PrecisionSetting::F32);
        assert_eq!(
            ModelConfig {
                device: Some("gpu".into()),
                ..ModelConfig::default()
            }
            .validate()
            .unwrap_err()
            .0,
            "device"
        );
        assert_eq!(
            ModelConfig {
                max_queued_tokens: 10,
                ..ModelConfig::default()
            }
            .validate()
            .unwrap_err()
            .0,
            "max_queued_tokens"
        );
    }
}
