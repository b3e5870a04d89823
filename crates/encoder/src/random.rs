//! Random-weight checkpoints written from Rust, in the Hugging Face layout, for tests and
//! benchmarks that must not depend on Python or the network.

use std::path::Path;

use safetensors::tensor::{Dtype, TensorView};

use crate::config::Arch;

/// Sizes of a random checkpoint.
#[derive(Debug, Clone, PartialEq)]
pub struct RandomSpec {
    pub arch: Arch,
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub num_layers: usize,
    pub num_heads: usize,
    pub intermediate_size: usize,
    pub max_position_embeddings: usize,
    pub num_labels: usize,
    /// Standard deviation-ish scale of the weights (uniform in ±scale·√3).
    pub scale: f32,
    pub seed: u64,
}

impl RandomSpec {
    /// A small model (hidden 64, 2 layers) with spread-out probabilities.
    pub fn tiny(arch: Arch, seed: u64) -> Self {
        Self {
            arch,
            vocab_size: 300,
            hidden_size: 64,
            num_layers: 2,
            num_heads: 4,
            intermediate_size: 128,
            max_position_embeddings: match arch {
                Arch::Bert => 128,
                Arch::XlmRoberta => 130,
            },
            num_labels: 2,
            scale: 0.08,
            seed,
        }
    }

    /// bert-base-multilingual-cased sizes (12 layers, hidden 768, vocab 119,647).
    pub fn bert_base(seed: u64) -> Self {
        Self {
            arch: Arch::Bert,
            vocab_size: 119_647,
            hidden_size: 768,
            num_layers: 12,
            num_heads: 12,
            intermediate_size: 3072,
            max_position_embeddings: 512,
            num_labels: 2,
            scale: 0.02,
            seed,
        }
    }

    /// xlm-roberta-large sizes (24 layers, hidden 1024, vocab 250,002; 2.24 GB in f32).
    pub fn xlm_roberta_large(seed: u64) -> Self {
        Self {
            arch: Arch::XlmRoberta,
            vocab_size: 250_002,
            hidden_size: 1024,
            num_layers: 24,
            num_heads: 16,
            intermediate_size: 4096,
            max_position_embeddings: 514,
            num_labels: 2,
            scale: 0.02,
            seed,
        }
    }

    /// The `config.json` text for these sizes.
    pub fn config_json(&self) -> String {
        let (model_type, arch, pad, eps, types) = match self.arch {
            Arch::Bert => ("bert", "BertForTokenClassification", 0, 1e-12, 2),
            Arch::XlmRoberta => (
                "xlm-roberta",
                "XLMRobertaForTokenClassification",
                1,
                1e-5,
                1,
            ),
        };
        let labels: Vec<String> = (0..self.num_labels)
            .map(|i| format!("\"{i}\": \"LABEL_{i}\""))
            .collect();
        format!(
            "{{\n  \"architectures\": [\"{arch}\"],\n  \"model_type\": \"{model_type}\",\n  \
             \"vocab_size\": {},\n  \"hidden_size\": {},\n  \"num_hidden_layers\": {},\n  \
             \"num_attention_heads\": {},\n  \"intermediate_size\": {},\n  \
             \"max_position_embeddings\": {},\n  \"type_vocab_size\": {types},\n  \
             \"pad_token_id\": {pad},\n  \"layer_norm_eps\": {eps:e},\n  \"hidden_act\": \"gelu\",\n  \
             \"id2label\": {{{}}}\n}}\n",
            self.vocab_size,
            self.hidden_size,
            self.num_layers,
            self.num_heads,
            self.intermediate_size,
            self.max_position_embeddings,
            labels.join(", ")
        )
    }

    /// `(name, shape)` of every tensor, in the HF naming of `*ForTokenClassification`.
    pub fn tensor_shapes(&self) -> Vec<(String, Vec<usize>)> {
        let p = self.arch.prefix();
        let (h, i) = (self.hidden_size, self.intermediate_size);
        let types = match self.arch {
            Arch::Bert => 2,
            Arch::XlmRoberta => 1,
        };
        let mut v = vec![
            (
                format!("{p}.embeddings.word_embeddings.weight"),
                vec![self.vocab_size, h],
            ),
            (
                format!("{p}.embeddings.position_embeddings.weight"),
                vec![self.max_position_embeddings, h],
            ),
            (
                format!("{p}.embeddings.token_type_embeddings.weight"),
                vec![types, h],
            ),
            (format!("{p}.embeddings.LayerNorm.weight"), vec![h]),
            (format!("{p}.embeddings.LayerNorm.bias"), vec![h]),
        ];
        for l in 0..self.num_layers {
            let n = |s: &str| format!("{p}.encoder.layer.{l}.{s}");
            for (name, shape) in [
                ("attention.self.query.weight", vec![h, h]),
                ("attention.self.query.bias", vec![h]),
                ("attention.self.key.weight", vec![h, h]),
                ("attention.self.key.bias", vec![h]),
                ("attention.self.value.weight", vec![h, h]),
                ("attention.self.value.bias", vec![h]),
                ("attention.output.dense.weight", vec![h, h]),
                ("attention.output.dense.bias", vec![h]),
                ("attention.output.LayerNorm.weight", vec![h]),
                ("attention.output.LayerNorm.bias", vec![h]),
                ("intermediate.dense.weight", vec![i, h]),
                ("intermediate.dense.bias", vec![i]),
                ("output.dense.weight", vec![h, i]),
                ("output.dense.bias", vec![h]),
                ("output.LayerNorm.weight", vec![h]),
                ("output.LayerNorm.bias", vec![h]),
            ] {
                v.push((n(name), shape));
            }
        }
        v.push(("classifier.weight".into(), vec![self.num_labels, h]));
        v.push(("classifier.bias".into(), vec![self.num_labels]));
        v
    }

    /// Writes `config.json` and `model.safetensors` into `dir` (created if needed).
    /// `override_shape` replaces the shape of one tensor (to build mismatched checkpoints).
    pub fn write(
        &self,
        dir: &Path,
        override_shape: Option<(&str, Vec<usize>)>,
    ) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        std::fs::write(dir.join("config.json"), self.config_json())?;
        let mut state = self.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        };
        let amp = self.scale * 3f32.sqrt();
        let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
        for (name, mut shape) in self.tensor_shapes() {
            if let Some((o, s)) = &override_shape
                && *o == name
            {
                shape = s.clone();
            }
            let count: usize = shape.iter().product();
            let is_ln = name.contains("LayerNorm");
            let mut bytes = Vec::with_capacity(count * 4);
            for _ in 0..count {
                let x = if is_ln && name.ends_with("weight") {
                    1.0 + 0.1 * next()
                } else if is_ln {
                    0.1 * next()
                } else {
                    amp * next()
                };
                bytes.extend_from_slice(&x.to_le_bytes());
            }
            tensors.push((name, shape, bytes));
        }
        let views = tensors
            .iter()
            .map(|(n, s, b)| {
                TensorView::new(Dtype::F32, s.clone(), b)
                    .map(|v| (n.clone(), v))
                    .map_err(std::io::Error::other)
            })
            .collect::<Result<Vec<_>, _>>()?;
        safetensors::serialize_to_file(views, None, &dir.join("model.safetensors"))
            .map_err(std::io::Error::other)
    }
}
