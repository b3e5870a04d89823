//! GGUF checkpoints (llama.cpp's format) of Llama-architecture models, loaded directly: the
//! config comes from the metadata, each tensor is read and dequantised on its own when the
//! model asks for it (Q4_0, Q4_1, Q8_0, Q4_K, Q6_K and every other type candle reads), under
//! its Hugging Face name, with the query and key rows put back in Hugging Face's RoPE order
//! (llama.cpp's converter interleaves them), and the tokenizer is rebuilt from the vocabulary
//! and merges as a byte-level BPE (`tokenizer_json`). Only one tensor is ever held in f32, so
//! a q8 model loads without an f32 copy of its weights.

use std::collections::HashMap;
use std::fs::File;
use std::io::BufReader;
use std::path::{Path, PathBuf};

use candle_core::Device;
use candle_core::quantized::gguf_file::{Content, Value};
use serde_json::json;

use crate::LmError;
use crate::weights::Raw;

fn err(path: &Path, msg: impl std::fmt::Display) -> LmError {
    LmError::Weights {
        path: path.to_path_buf(),
        msg: msg.to_string(),
    }
}

/// Whether `path` names a GGUF file (by its extension).
pub fn is_gguf(path: &Path) -> bool {
    path.is_file()
        && path
            .extension()
            .is_some_and(|e| e.eq_ignore_ascii_case("gguf"))
}

/// An open GGUF file: its metadata and where each tensor lies.
pub struct Gguf {
    pub(crate) path: PathBuf,
    content: Content,
    /// Hugging Face name → GGUF name.
    names: HashMap<String, String>,
    heads: usize,
    kv_heads: usize,
}

impl Gguf {
    pub fn open(path: &Path) -> Result<Self, LmError> {
        let f = File::open(path).map_err(|source| LmError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        let content = Content::read(&mut BufReader::new(f)).map_err(|e| err(path, plain(e)))?;
        let mut g = Self {
            path: path.to_path_buf(),
            content,
            names: HashMap::new(),
            heads: 0,
            kv_heads: 0,
        };
        let arch = g.string("general.architecture")?;
        if arch != "llama" {
            return Err(err(
                path,
                format!("architecture {arch:?}: only llama-architecture GGUF files are read"),
            ));
        }
        g.heads = g.int("llama.attention.head_count")?;
        g.kv_heads = g.int("llama.attention.head_count_kv")?;
        if g.heads == 0 || g.kv_heads == 0 {
            return Err(err(path, "zero attention heads in the metadata"));
        }
        for name in g.content.tensor_infos.keys() {
            if let Some(hf) = hf_name(name) {
                g.names.insert(hf, name.clone());
            }
        }
        Ok(g)
    }

    fn get(&self, key: &str) -> Result<&Value, LmError> {
        self.content
            .metadata
            .get(key)
            .ok_or_else(|| err(&self.path, format!("metadata key {key} is missing")))
    }

    fn string(&self, key: &str) -> Result<String, LmError> {
        match self.get(key)? {
            Value::String(s) => Ok(s.clone()),
            v => Err(err(
                &self.path,
                format!("{key}: a string expected, got {v:?}"),
            )),
        }
    }

    fn int(&self, key: &str) -> Result<usize, LmError> {
        as_int(self.get(key)?).ok_or_else(|| err(&self.path, format!("{key}: not an integer")))
    }

    fn float(&self, key: &str) -> Result<f64, LmError> {
        match self.get(key)? {
            Value::F32(v) => Ok(*v as f64),
            Value::F64(v) => Ok(*v),
            v => as_int(v)
                .map(|i| i as f64)
                .ok_or_else(|| err(&self.path, format!("{key}: not a number"))),
        }
    }

    fn strings(&self, key: &str) -> Result<Vec<String>, LmError> {
        match self.get(key)? {
            Value::Array(a) => a
                .iter()
                .map(|v| match v {
                    Value::String(s) => Ok(s.clone()),
                    _ => Err(err(&self.path, format!("{key}: not all strings"))),
                })
                .collect(),
            _ => Err(err(&self.path, format!("{key}: not an array"))),
        }
    }

    /// `config.json` as the Hugging Face converter would write it.
    pub(crate) fn config_json(&self) -> Result<Vec<u8>, LmError> {
        let hidden = self.int("llama.embedding_length")?;
        let vocab = self.strings("tokenizer.ggml.tokens")?.len();
        let opt_int = |k: &str| self.int(k).ok();
        let cfg = json!({
            "architectures": ["LlamaForCausalLM"],
            "model_type": "llama",
            "hidden_size": hidden,
            "intermediate_size": self.int("llama.feed_forward_length")?,
            "num_hidden_layers": self.int("llama.block_count")?,
            "num_attention_heads": self.heads,
            "num_key_value_heads": self.kv_heads,
            "head_dim": opt_int("llama.rope.dimension_count").unwrap_or(hidden / self.heads),
            "rms_norm_eps": self.float("llama.attention.layer_norm_rms_epsilon")?,
            "rope_theta": self.float("llama.rope.freq_base").unwrap_or(10000.0),
            "max_position_embeddings": self.int("llama.context_length")?,
            "vocab_size": vocab,
            "tie_word_embeddings": !self.content.tensor_infos.contains_key("output.weight"),
            "bos_token_id": opt_int("tokenizer.ggml.bos_token_id"),
            "eos_token_id": opt_int("tokenizer.ggml.eos_token_id"),
            "hidden_act": "silu",
            "attention_bias": false,
            "mlp_bias": false,
        });
        Ok(cfg.to_string().into_bytes())
    }

    /// The shape (`[out, in]`) of the tensor of Hugging Face name `hf`, when the file has it.
    pub(crate) fn shape(&self, hf: &str) -> Option<&[usize]> {
        let name = self.names.get(hf)?;
        self.content.tensor_infos.get(name).map(|t| t.shape.dims())
    }

    /// Every Hugging Face tensor name the file has.
    pub(crate) fn hf_names(&self) -> impl Iterator<Item = &str> {
        self.names.keys().map(String::as_str)
    }

    /// The tensor of Hugging Face name `hf`: its shape (`[out, in]`) and f32 values.
    pub(crate) fn read(&self, hf: &str) -> Result<Option<Raw>, LmError> {
        let Some(name) = self.names.get(hf) else {
            return Ok(None);
        };
        let f = File::open(&self.path).map_err(|source| LmError::Io {
            path: self.path.clone(),
            source,
        })?;
        let what = |e: candle_core::Error| err(&self.path, format!("tensor {name}: {}", plain(e)));
        let q = self
            .content
            .tensor(&mut BufReader::new(f), name, &Device::Cpu)
            .map_err(what)?;
        let t = q.dequantize(&Device::Cpu).map_err(what)?;
        let shape = t.dims().to_vec();
        let mut data = t
            .flatten_all()
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(what)?;
        let heads = match name.split('.').nth(2) {
            Some("attn_q") => Some(self.heads),
            Some("attn_k") => Some(self.kv_heads),
            _ => None,
        };
        if let (Some(heads), &[rows, cols]) = (heads, shape.as_slice()) {
            data = unpermute(&data, rows, cols, heads).ok_or_else(|| {
                err(
                    &self.path,
                    format!("tensor {name}: {rows} rows do not split into {heads} heads"),
                )
            })?;
        }
        Ok(Some(Raw { shape, data }))
    }

    /// `tokenizer.json` and `tokenizer_config.json` rebuilt from the vocabulary and merges:
    /// a byte-level BPE with single digits split (SmolLM2's and Llama 3's pre-tokenizer
    /// family), control tokens as special added tokens, no BOS added (lingua-proxy feeds
    /// plain text, as the reference does).
    pub fn tokenizer(&self) -> Result<(String, String), LmError> {
        let model = self.string("tokenizer.ggml.model")?;
        if model != "gpt2" {
            return Err(err(
                &self.path,
                format!("tokenizer model {model:?}: only byte-level BPE (\"gpt2\") is rebuilt"),
            ));
        }
        let tokens = self.strings("tokenizer.ggml.tokens")?;
        let merges = self.strings("tokenizer.ggml.merges")?;
        let types: Vec<usize> = match self.get("tokenizer.ggml.token_type") {
            Ok(Value::Array(a)) => a.iter().map(|v| as_int(v).unwrap_or(1)).collect(),
            _ => vec![1; tokens.len()],
        };
        let added: Vec<_> = tokens
            .iter()
            .zip(&types)
            .enumerate()
            .filter(|(_, (_, ty))| **ty == 3)
            .map(|(i, (t, _))| {
                json!({"id": i, "content": t, "single_word": false, "lstrip": false,
                       "rstrip": false, "normalized": false, "special": true})
            })
            .collect();
        let vocab: serde_json::Map<String, serde_json::Value> = tokens
            .iter()
            .enumerate()
            .map(|(i, t)| (t.clone(), json!(i)))
            .collect();
        let byte_level = json!({"type": "ByteLevel", "add_prefix_space": false,
                                "trim_offsets": true, "use_regex": true});
        let tokenizer = json!({
            "version": "1.0",
            "truncation": null,
            "padding": null,
            "added_tokens": added,
            "normalizer": null,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
                {"type": "Digits", "individual_digits": true}, byte_level]},
            "post_processor": null,
            "decoder": byte_level,
            "model": {"type": "BPE", "dropout": null, "unk_token": null,
                      "continuing_subword_prefix": null, "end_of_word_suffix": null,
                      "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
                      "vocab": vocab, "merges": merges},
        });
        let token = |k: &str| {
            self.int(k)
                .ok()
                .and_then(|i| tokens.get(i))
                .map(|t| json!(t))
                .unwrap_or(serde_json::Value::Null)
        };
        let config = json!({
            "add_bos_token": false,
            "bos_token": token("tokenizer.ggml.bos_token_id"),
            "eos_token": token("tokenizer.ggml.eos_token_id"),
            "clean_up_tokenization_spaces": false,
        });
        Ok((tokenizer.to_string(), config.to_string()))
    }
}

/// candle's message without the backtrace it attaches when `RUST_BACKTRACE` is set.
fn plain(e: candle_core::Error) -> String {
    match e {
        candle_core::Error::WithBacktrace { inner, .. } => plain(*inner),
        e => e.to_string(),
    }
}

fn as_int(v: &Value) -> Option<usize> {
    match *v {
        Value::U8(x) => Some(x as usize),
        Value::U16(x) => Some(x as usize),
        Value::U32(x) => Some(x as usize),
        Value::U64(x) => usize::try_from(x).ok(),
        Value::I8(x) => usize::try_from(x).ok(),
        Value::I16(x) => usize::try_from(x).ok(),
        Value::I32(x) => usize::try_from(x).ok(),
        Value::I64(x) => usize::try_from(x).ok(),
        _ => None,
    }
}

/// The Hugging Face name of a llama.cpp tensor name.
fn hf_name(gguf: &str) -> Option<String> {
    match gguf {
        "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        "output.weight" => return Some("lm_head.weight".into()),
        _ => {}
    }
    let mut parts = gguf.split('.');
    let (Some("blk"), Some(layer), Some(kind), Some(suffix), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    let hf = match kind {
        "attn_norm" => "input_layernorm",
        "ffn_norm" => "post_attention_layernorm",
        "attn_q" => "self_attn.q_proj",
        "attn_k" => "self_attn.k_proj",
        "attn_v" => "self_attn.v_proj",
        "attn_output" => "self_attn.o_proj",
        "ffn_gate" => "mlp.gate_proj",
        "ffn_up" => "mlp.up_proj",
        "ffn_down" => "mlp.down_proj",
        _ => return None,
    };
    layer.parse::<usize>().ok()?;
    Some(format!("model.layers.{layer}.{hf}.{suffix}"))
}

/// Undoes llama.cpp's row order for RoPE: within each head, rows `(i, j)` of shape
/// `[half, 2]` go to `(j, i)` of shape `[2, half]`.
fn unpermute(w: &[f32], rows: usize, cols: usize, heads: usize) -> Option<Vec<f32>> {
    if heads == 0 || !rows.is_multiple_of(heads * 2) || w.len() != rows * cols {
        return None;
    }
    let hd = rows / heads;
    let half = hd / 2;
    let mut out = vec![0.0f32; w.len()];
    for h in 0..heads {
        for i in 0..half {
            for j in 0..2 {
                let src = h * hd + i * 2 + j;
                let dst = h * hd + j * half + i;
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_map_to_hugging_face() {
        assert_eq!(
            hf_name("token_embd.weight").as_deref(),
            Some("model.embed_tokens.weight")
        );
        assert_eq!(
            hf_name("blk.11.attn_q.weight").as_deref(),
            Some("model.layers.11.self_attn.q_proj.weight")
        );
        assert_eq!(hf_name("blk.x.attn_q.weight"), None);
        assert_eq!(hf_name("rope_freqs.weight"), None);
    }

    /// Permuting as llama.cpp's converter does and unpermuting gives the rows back.
    #[test]
    fn unpermute_inverts_the_converters_permutation() {
        let (heads, hd, cols) = (3, 8, 2);
        let rows = heads * hd;
        let hf: Vec<f32> = (0..rows * cols).map(|x| x as f32).collect();
        // llama.cpp: reshape(heads, 2, half, cols).swapaxes(1, 2)
        let half = hd / 2;
        let mut gguf = vec![0.0; hf.len()];
        for h in 0..heads {
            for j in 0..2 {
                for i in 0..half {
                    let src = h * hd + j * half + i;
                    let dst = h * hd + i * 2 + j;
                    gguf[dst * cols..(dst + 1) * cols]
                        .copy_from_slice(&hf[src * cols..(src + 1) * cols]);
                }
            }
        }
        assert_ne!(gguf, hf);
        assert_eq!(unpermute(&gguf, rows, cols, heads).unwrap(), hf);
        assert!(unpermute(&gguf, rows, cols, 5).is_none());
    }
}
