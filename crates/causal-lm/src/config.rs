//! `config.json` of a Hugging Face causal LM: family dispatch (`model_type`, else
//! `architectures`) and the hyper-parameters the forward pass needs, with transformers' defaults.

use std::path::Path;

use serde_json::Value;

use crate::LmError;

/// Model family (architecture) of a checkpoint.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// GPT-2: learned absolute positions, LayerNorm, Conv1D projections, GELU MLP.
    Gpt2,
    /// Llama: RoPE, RMSNorm, grouped-query attention, SiLU-gated MLP.
    Llama,
    /// Qwen2: Llama with biases on the q/k/v projections.
    Qwen2,
}

/// MLP activation of a GPT-2 checkpoint (`activation_function`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// `gelu_new`, `gelu_pytorch_tanh`, `gelu_fast`-like tanh approximation.
    GeluTanh,
    /// Exact erf GELU (`gelu`).
    GeluErf,
    /// `relu`.
    Relu,
    /// `silu` / `swish` (Llama's gate).
    Silu,
}

/// RoPE frequency scaling (`rope_scaling`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum RopeScaling {
    /// No scaling (`null` or `rope_type: "default"`).
    None,
    /// `rope_type: "linear"`: positions divided by `factor`.
    Linear(f32),
    /// `rope_type: "llama3"`.
    Llama3 {
        factor: f32,
        low_freq_factor: f32,
        high_freq_factor: f32,
        original_max_position_embeddings: f32,
    },
}

/// The hyper-parameters of a loaded model.
#[derive(Debug, Clone, PartialEq)]
pub struct LmConfig {
    pub family: Family,
    pub vocab_size: usize,
    pub max_position_embeddings: usize,
    pub hidden: usize,
    pub layers: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub bos_token_id: Option<u32>,
    pub eos_token_id: Option<u32>,
    /// Per-head width (`hidden / heads` unless `head_dim` is given).
    pub head_dim: usize,
    /// MLP width.
    pub intermediate: usize,
    /// LayerNorm / RMSNorm epsilon.
    pub norm_eps: f32,
    /// Whether the output projection is the token embedding.
    pub tie_word_embeddings: bool,
    pub(crate) activation: Activation,
    pub(crate) rope_theta: f32,
    pub(crate) rope_scaling: RopeScaling,
    pub(crate) attention_bias: bool,
    pub(crate) o_bias: bool,
    pub(crate) mlp_bias: bool,
    /// GPT-2's `scale_attn_weights` (divide scores by sqrt(head_dim)).
    pub(crate) scale_attn_weights: bool,
    /// GPT-2's `scale_attn_by_inverse_layer_idx`.
    pub(crate) scale_by_layer: bool,
}

struct Reader<'a> {
    v: &'a Value,
    path: &'a Path,
}

impl Reader<'_> {
    fn err(&self, msg: String) -> LmError {
        LmError::Config {
            path: self.path.to_path_buf(),
            msg,
        }
    }

    fn get(&self, keys: &[&str]) -> Option<&Value> {
        keys.iter()
            .filter_map(|k| self.v.get(*k))
            .find(|v| !v.is_null())
    }

    fn usize_opt(&self, keys: &[&str]) -> Result<Option<usize>, LmError> {
        match self.get(keys) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .map(|x| Some(x as usize))
                .ok_or_else(|| self.err(format!("`{}` is not a non-negative integer", keys[0]))),
        }
    }

    fn usize_req(&self, keys: &[&str]) -> Result<usize, LmError> {
        self.usize_opt(keys)?
            .ok_or_else(|| self.err(format!("missing `{}`", keys[0])))
    }

    fn f32_or(&self, keys: &[&str], default: f32) -> Result<f32, LmError> {
        match self.get(keys) {
            None => Ok(default),
            Some(v) => v
                .as_f64()
                .map(|x| x as f32)
                .ok_or_else(|| self.err(format!("`{}` is not a number", keys[0]))),
        }
    }

    fn bool_or(&self, key: &str, default: bool) -> Result<bool, LmError> {
        match self.get(&[key]) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| self.err(format!("`{key}` is not a boolean"))),
        }
    }

    /// A token id, or the first of a list of them (`eos_token_id: [1, 2]`).
    fn token_id(&self, key: &str) -> Result<Option<u32>, LmError> {
        let v = match self.get(&[key]) {
            None => return Ok(None),
            Some(Value::Array(a)) => match a.first() {
                None => return Ok(None),
                Some(v) => v,
            },
            Some(v) => v,
        };
        v.as_u64()
            .and_then(|x| u32::try_from(x).ok())
            .map(Some)
            .ok_or_else(|| self.err(format!("`{key}` is not a token id")))
    }
}

fn family_of(v: &Value, path: &Path) -> Result<Family, LmError> {
    if let Some(mt) = v.get("model_type").and_then(Value::as_str) {
        return match mt {
            "gpt2" => Ok(Family::Gpt2),
            "llama" => Ok(Family::Llama),
            "qwen2" => Ok(Family::Qwen2),
            other => Err(LmError::Unsupported {
                path: path.to_path_buf(),
                what: format!("model_type {other:?}"),
            }),
        };
    }
    let archs: Vec<&str> = v
        .get("architectures")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    for a in &archs {
        if a.starts_with("GPT2") {
            return Ok(Family::Gpt2);
        }
        if a.starts_with("Llama") {
            return Ok(Family::Llama);
        }
        if a.starts_with("Qwen2") && !a.starts_with("Qwen2Moe") && !a.starts_with("Qwen2VL") {
            return Ok(Family::Qwen2);
        }
    }
    Err(LmError::Unsupported {
        path: path.to_path_buf(),
        what: if archs.is_empty() {
            "config without `model_type` or `architectures`".to_string()
        } else {
            format!("architectures {archs:?}")
        },
    })
}

impl LmConfig {
    /// Parses `config.json` at `path`.
    pub fn from_file(path: &Path) -> Result<Self, LmError> {
        let bytes = std::fs::read(path).map_err(|source| LmError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Self::from_json(&bytes, path)
    }

    /// Parses config.json contents; `path` only names the file in errors.
    pub fn from_json(bytes: &[u8], path: &Path) -> Result<Self, LmError> {
        let v: Value = serde_json::from_slice(bytes).map_err(|e| LmError::Config {
            path: path.to_path_buf(),
            msg: format!("not valid JSON: {e}"),
        })?;
        if !v.is_object() {
            return Err(LmError::Config {
                path: path.to_path_buf(),
                msg: "not a JSON object".to_string(),
            });
        }
        let family = family_of(&v, path)?;
        let r = Reader { v: &v, path };
        let cfg = match family {
            Family::Gpt2 => Self::gpt2(&r)?,
            Family::Llama | Family::Qwen2 => Self::llama(&r, family)?,
        };
        cfg.validate(&r)?;
        Ok(cfg)
    }

    fn gpt2(r: &Reader<'_>) -> Result<Self, LmError> {
        let hidden = r.usize_req(&["n_embd", "hidden_size"])?;
        let heads = r.usize_req(&["n_head", "num_attention_heads"])?;
        let activation = match r
            .get(&["activation_function"])
            .and_then(Value::as_str)
            .unwrap_or("gelu_new")
        {
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" | "gelu_python_tanh" => {
                Activation::GeluTanh
            }
            "gelu" | "gelu_python" => Activation::GeluErf,
            "relu" => Activation::Relu,
            "silu" | "swish" => Activation::Silu,
            other => {
                return Err(r.err(format!("unsupported activation_function {other:?}")));
            }
        };
        Ok(Self {
            family: Family::Gpt2,
            vocab_size: r.usize_req(&["vocab_size"])?,
            max_position_embeddings: r.usize_req(&["n_positions", "max_position_embeddings"])?,
            hidden,
            layers: r.usize_req(&["n_layer", "num_hidden_layers"])?,
            heads,
            kv_heads: heads,
            bos_token_id: r.token_id("bos_token_id")?,
            eos_token_id: r.token_id("eos_token_id")?,
            head_dim: hidden.checked_div(heads).unwrap_or(0),
            intermediate: r.usize_opt(&["n_inner"])?.unwrap_or(4 * hidden),
            norm_eps: r.f32_or(&["layer_norm_epsilon"], 1e-5)?,
            tie_word_embeddings: r.bool_or("tie_word_embeddings", true)?,
            activation,
            rope_theta: 0.0,
            rope_scaling: RopeScaling::None,
            attention_bias: true,
            o_bias: true,
            mlp_bias: true,
            scale_attn_weights: r.bool_or("scale_attn_weights", true)?,
            scale_by_layer: r.bool_or("scale_attn_by_inverse_layer_idx", false)?,
        })
    }

    fn llama(r: &Reader<'_>, family: Family) -> Result<Self, LmError> {
        let hidden = r.usize_req(&["hidden_size"])?;
        let heads = r.usize_req(&["num_attention_heads"])?;
        let kv_heads = r.usize_opt(&["num_key_value_heads"])?.unwrap_or(heads);
        let act = r
            .get(&["hidden_act"])
            .and_then(Value::as_str)
            .unwrap_or("silu");
        if act != "silu" && act != "swish" {
            return Err(r.err(format!("unsupported hidden_act {act:?} (only silu)")));
        }
        let qwen = family == Family::Qwen2;
        if qwen && r.bool_or("use_sliding_window", false)? {
            return Err(r.err("use_sliding_window=true is not supported".to_string()));
        }
        let rope_scaling = match r.get(&["rope_scaling"]) {
            None => RopeScaling::None,
            Some(s) => {
                let kind = s
                    .get("rope_type")
                    .or_else(|| s.get("type"))
                    .and_then(Value::as_str)
                    .unwrap_or("default");
                let num = |k: &str| -> Result<f32, LmError> {
                    s.get(k)
                        .and_then(Value::as_f64)
                        .map(|x| x as f32)
                        .ok_or_else(|| r.err(format!("rope_scaling.{k} missing or not a number")))
                };
                match kind {
                    "default" => RopeScaling::None,
                    "linear" => RopeScaling::Linear(num("factor")?),
                    "llama3" => RopeScaling::Llama3 {
                        factor: num("factor")?,
                        low_freq_factor: num("low_freq_factor")?,
                        high_freq_factor: num("high_freq_factor")?,
                        original_max_position_embeddings: num("original_max_position_embeddings")?,
                    },
                    other => {
                        return Err(r.err(format!(
                            "unsupported rope_scaling type {other:?} (default, linear, llama3)"
                        )));
                    }
                }
            }
        };
        let attention_bias = r.bool_or("attention_bias", false)?;
        Ok(Self {
            family,
            vocab_size: r.usize_req(&["vocab_size"])?,
            max_position_embeddings: r.usize_req(&["max_position_embeddings"])?,
            hidden,
            layers: r.usize_req(&["num_hidden_layers"])?,
            heads,
            kv_heads,
            bos_token_id: r.token_id("bos_token_id")?,
            eos_token_id: r.token_id("eos_token_id")?,
            head_dim: match r.usize_opt(&["head_dim"])? {
                Some(d) => d,
                None if heads == 0 => 0,
                None => hidden / heads,
            },
            intermediate: r.usize_req(&["intermediate_size"])?,
            norm_eps: r.f32_or(&["rms_norm_eps"], 1e-6)?,
            tie_word_embeddings: r.bool_or("tie_word_embeddings", false)?,
            activation: Activation::Silu,
            rope_theta: r.f32_or(&["rope_theta"], 10_000.0)?,
            rope_scaling,
            attention_bias: qwen || attention_bias,
            o_bias: !qwen && attention_bias,
            mlp_bias: !qwen && r.bool_or("mlp_bias", false)?,
            scale_attn_weights: true,
            scale_by_layer: false,
        })
    }

    fn validate(&self, r: &Reader<'_>) -> Result<(), LmError> {
        let positive = [
            ("vocab_size", self.vocab_size),
            ("max_position_embeddings", self.max_position_embeddings),
            ("hidden size", self.hidden),
            ("layer count", self.layers),
            ("head count", self.heads),
            ("key/value head count", self.kv_heads),
            ("head_dim", self.head_dim),
            ("intermediate size", self.intermediate),
        ];
        for (name, v) in positive {
            if v == 0 {
                return Err(r.err(format!("{name} is 0")));
            }
        }
        if self.family == Family::Gpt2 && !self.hidden.is_multiple_of(self.heads) {
            return Err(r.err(format!(
                "hidden size {} is not a multiple of the head count {}",
                self.hidden, self.heads
            )));
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return Err(r.err(format!(
                "head count {} is not a multiple of the key/value head count {}",
                self.heads, self.kv_heads
            )));
        }
        if self.family != Family::Gpt2 && !self.head_dim.is_multiple_of(2) {
            return Err(r.err(format!("head_dim {} is odd (RoPE)", self.head_dim)));
        }
        if self.vocab_size > u32::MAX as usize {
            return Err(r.err(format!("vocab_size {} too large", self.vocab_size)));
        }
        Ok(())
    }
}
