//! `config.json` of a token-classification checkpoint: which encoder, which sizes.
//!
//! The architecture comes from `model_type` and `architectures`, never from the model's name.

use std::path::Path;

use serde_json::Value;

use crate::load::LoadError;

/// Encoder families this crate runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// BERT (`bert`): absolute positions from 0, token-type embeddings, LN eps usually 1e-12.
    Bert,
    /// XLM-RoBERTa / RoBERTa: positions are `cumsum(id != pad) + pad` (they start at `pad + 1`).
    XlmRoberta,
}

impl Arch {
    /// Prefix of the encoder's tensors inside a `*ForTokenClassification` checkpoint.
    pub fn prefix(self) -> &'static str {
        match self {
            Arch::Bert => "bert",
            Arch::XlmRoberta => "roberta",
        }
    }
}

/// Feed-forward activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Activation {
    /// Exact GELU, `x * Φ(x)` (`"gelu"`, PyTorch's default).
    Gelu,
    /// Tanh approximation (`"gelu_new"`, `"gelu_pytorch_tanh"`, `"gelu_fast"`).
    GeluTanh,
    Relu,
}

/// The encoder hyper-parameters this crate needs.
#[derive(Debug, Clone, PartialEq)]
pub struct EncoderConfig {
    pub arch: Arch,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub type_vocab_size: usize,
    pub pad_token_id: u32,
    pub layer_norm_eps: f32,
    pub activation: Activation,
    pub num_labels: usize,
}

impl EncoderConfig {
    /// Parses `config.json`; every error names the file.
    pub fn from_file(path: &Path) -> Result<Self, LoadError> {
        let text = std::fs::read_to_string(path).map_err(|e| LoadError::io(path, e))?;
        Self::from_json(&text).map_err(|problem| LoadError::Invalid {
            file: path.to_path_buf(),
            problem,
        })
    }

    /// Parses the text of `config.json`. The error is a human-readable problem description.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let v: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
        let model_type = v.get("model_type").and_then(Value::as_str);
        let archs: Vec<&str> = v
            .get("architectures")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let from_type = match model_type {
            Some("bert") => Some(Arch::Bert),
            Some("xlm-roberta" | "roberta" | "camembert") => Some(Arch::XlmRoberta),
            Some(other) => {
                return Err(format!(
                    "unsupported model_type {other:?} (supported: \"bert\", \"xlm-roberta\", \"roberta\")"
                ));
            }
            None => None,
        };
        let from_archs = archs.iter().find_map(|a| match *a {
            "BertForTokenClassification" => Some(Arch::Bert),
            "XLMRobertaForTokenClassification"
            | "RobertaForTokenClassification"
            | "CamembertForTokenClassification" => Some(Arch::XlmRoberta),
            _ => None,
        });
        if !archs.is_empty() && !archs.iter().any(|a| a.ends_with("ForTokenClassification")) {
            return Err(format!(
                "architectures {archs:?} has no *ForTokenClassification head; \
                 an LLMLingua-2 scorer needs a token-classification checkpoint"
            ));
        }
        let arch = match (from_type, from_archs) {
            (Some(a), Some(b)) if a != b => {
                return Err(format!(
                    "model_type {model_type:?} contradicts architectures {archs:?}"
                ));
            }
            (Some(a), _) | (None, Some(a)) => a,
            (None, None) => {
                return Err(
                    "neither model_type nor architectures names a supported encoder".into(),
                );
            }
        };
        let usize_field = |name: &str, default: Option<usize>| -> Result<usize, String> {
            match v.get(name) {
                Some(x) => x
                    .as_u64()
                    .map(|n| n as usize)
                    .ok_or_else(|| format!("field {name:?} is not a non-negative integer")),
                None => default.ok_or_else(|| format!("missing field {name:?}")),
            }
        };
        let hidden_size = usize_field("hidden_size", None)?;
        let num_heads = usize_field("num_attention_heads", None)?;
        let num_layers = usize_field("num_hidden_layers", None)?;
        let intermediate_size = usize_field("intermediate_size", None)?;
        let vocab_size = usize_field("vocab_size", None)?;
        let max_position_embeddings = usize_field("max_position_embeddings", Some(512))?;
        let type_vocab_size = usize_field("type_vocab_size", Some(2))?;
        let default_pad = match arch {
            Arch::Bert => 0,
            Arch::XlmRoberta => 1,
        };
        let pad_token_id = usize_field("pad_token_id", Some(default_pad))? as u32;
        let layer_norm_eps = match v.get("layer_norm_eps") {
            Some(x) => x
                .as_f64()
                .ok_or_else(|| "field \"layer_norm_eps\" is not a number".to_string())?
                as f32,
            None => 1e-12,
        };
        let act = v
            .get("hidden_act")
            .and_then(Value::as_str)
            .unwrap_or("gelu");
        let activation = match act {
            "gelu" => Activation::Gelu,
            "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" => Activation::GeluTanh,
            "relu" => Activation::Relu,
            other => return Err(format!("unsupported hidden_act {other:?}")),
        };
        let num_labels = match v.get("id2label").and_then(Value::as_object) {
            Some(m) if !m.is_empty() => m.len(),
            _ => usize_field("num_labels", Some(2))?,
        };
        if let Some(pe) = v.get("position_embedding_type").and_then(Value::as_str)
            && pe != "absolute"
        {
            return Err(format!("unsupported position_embedding_type {pe:?}"));
        }
        if hidden_size == 0 || num_heads == 0 || hidden_size % num_heads != 0 {
            return Err(format!(
                "hidden_size {hidden_size} is not a positive multiple of num_attention_heads {num_heads}"
            ));
        }
        if num_layers == 0 || intermediate_size == 0 || vocab_size == 0 || type_vocab_size == 0 {
            return Err("num_hidden_layers, intermediate_size, vocab_size and type_vocab_size must be positive".into());
        }
        if num_labels < 2 {
            return Err(format!(
                "num_labels is {num_labels}; a keep/drop classifier needs at least 2"
            ));
        }
        Ok(Self {
            arch,
            vocab_size,
            hidden_size,
            num_layers,
            num_heads,
            intermediate_size,
            max_position_embeddings,
            type_vocab_size,
            pad_token_id,
            layer_norm_eps,
            activation,
            num_labels,
        })
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_heads
    }

    /// Longest input the position table allows (512 for both LLMLingua-2 checkpoints).
    pub fn max_input_len(&self) -> usize {
        match self.arch {
            Arch::Bert => self.max_position_embeddings,
            Arch::XlmRoberta => self
                .max_position_embeddings
                .saturating_sub(self.pad_token_id as usize + 1),
        }
    }
}
