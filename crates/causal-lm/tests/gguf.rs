//! GGUF checkpoints loaded directly: a small random Llama written as llama.cpp would (Q4_0,
//! Q4_1, Q8_0, Q4_K and Q6_K tensors, query and key rows permuted for its RoPE layout) must
//! score exactly as the Hugging Face checkpoint of the same dequantised weights does, in f32
//! and in q8; broken files are refused with the file named.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use lingua_causal::{CausalLm, LmError, LoadOptions, Precision};
use serde_json::json;

const V: usize = 300;
const D: usize = 256;
const HEADS: usize = 4;
const KV: usize = 2;
const HD: usize = D / HEADS;
const I: usize = 512;
const LAYERS: usize = 2;

struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        ((self.0 >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
    }
    fn vec(&mut self, n: usize, scale: f32, offset: f32) -> Vec<f32> {
        (0..n).map(|_| offset + scale * self.next()).collect()
    }
}

/// llama.cpp's `permute` of query/key rows: `reshape(heads, 2, half, cols).swapaxes(1, 2)`.
fn permute(w: &[f32], rows: usize, cols: usize, heads: usize) -> Vec<f32> {
    let hd = rows / heads;
    let half = hd / 2;
    let mut out = vec![0.0; w.len()];
    for h in 0..heads {
        for j in 0..2 {
            for i in 0..half {
                let (src, dst) = (h * hd + j * half + i, h * hd + i * 2 + j);
                out[dst * cols..(dst + 1) * cols].copy_from_slice(&w[src * cols..(src + 1) * cols]);
            }
        }
    }
    out
}

/// Writes `dir/model.gguf` and, beside it, `dir/hf/` with the same weights as llama.cpp would
/// hand them back (quantised, dequantised, rows in Hugging Face order).
fn write(dir: &Path) {
    let mut r = Rng(5);
    let mut gguf: Vec<(String, QTensor)> = Vec::new();
    let mut hf: HashMap<String, Tensor> = HashMap::new();
    let mut put = |gname: String, hname: String, shape: &[usize], dtype: GgmlDType, w: Vec<f32>| {
        let heads = match gname.split('.').nth(2) {
            Some("attn_q") => Some(HEADS),
            Some("attn_k") => Some(KV),
            _ => None,
        };
        let stored = match heads {
            Some(h) => permute(&w, shape[0], shape[1], h),
            None => w,
        };
        let t = Tensor::from_vec(stored, shape, &Device::Cpu).unwrap();
        let q = QTensor::quantize(&t, dtype).unwrap();
        // what the file holds, back in f32 and in Hugging Face's row order
        let back: Vec<f32> = q
            .dequantize(&Device::Cpu)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1()
            .unwrap();
        let back = match heads {
            Some(h) => {
                // undo the permutation: permute is a bijection on rows, so invert it by lookup
                let (rows, cols) = (shape[0], shape[1]);
                let idx: Vec<f32> = (0..rows).map(|x| x as f32).collect();
                let perm = permute(&idx, rows, 1, h);
                let mut out = vec![0.0; back.len()];
                for (dst_in_file, src_row) in perm.iter().enumerate() {
                    let src_row = *src_row as usize;
                    out[src_row * cols..(src_row + 1) * cols]
                        .copy_from_slice(&back[dst_in_file * cols..(dst_in_file + 1) * cols]);
                }
                out
            }
            None => back,
        };
        hf.insert(hname, Tensor::from_vec(back, shape, &Device::Cpu).unwrap());
        gguf.push((gname, q));
    };
    put(
        "token_embd.weight".into(),
        "model.embed_tokens.weight".into(),
        &[V, D],
        GgmlDType::Q8_0,
        r.vec(V * D, 0.5, 0.0),
    );
    for l in 0..LAYERS {
        let g = |k: &str| format!("blk.{l}.{k}.weight");
        let h = |k: &str| format!("model.layers.{l}.{k}.weight");
        put(
            g("attn_norm"),
            h("input_layernorm"),
            &[D],
            GgmlDType::F32,
            r.vec(D, 0.1, 1.0),
        );
        put(
            g("ffn_norm"),
            h("post_attention_layernorm"),
            &[D],
            GgmlDType::F32,
            r.vec(D, 0.1, 1.0),
        );
        put(
            g("attn_q"),
            h("self_attn.q_proj"),
            &[D, D],
            GgmlDType::Q4K,
            r.vec(D * D, 0.2, 0.0),
        );
        put(
            g("attn_k"),
            h("self_attn.k_proj"),
            &[KV * HD, D],
            GgmlDType::Q6K,
            r.vec(KV * HD * D, 0.2, 0.0),
        );
        put(
            g("attn_v"),
            h("self_attn.v_proj"),
            &[KV * HD, D],
            GgmlDType::Q8_0,
            r.vec(KV * HD * D, 0.2, 0.0),
        );
        put(
            g("attn_output"),
            h("self_attn.o_proj"),
            &[D, D],
            GgmlDType::Q4_0,
            r.vec(D * D, 0.1, 0.0),
        );
        put(
            g("ffn_gate"),
            h("mlp.gate_proj"),
            &[I, D],
            GgmlDType::Q4_1,
            r.vec(I * D, 0.2, 0.0),
        );
        put(
            g("ffn_up"),
            h("mlp.up_proj"),
            &[I, D],
            GgmlDType::Q4K,
            r.vec(I * D, 0.2, 0.0),
        );
        put(
            g("ffn_down"),
            h("mlp.down_proj"),
            &[D, I],
            GgmlDType::Q6K,
            r.vec(D * I, 0.1, 0.0),
        );
    }
    put(
        "output_norm.weight".into(),
        "model.norm.weight".into(),
        &[D],
        GgmlDType::F32,
        r.vec(D, 0.1, 1.0),
    );

    let tokens: Vec<Value> = (0..V).map(|i| Value::String(format!("t{i}"))).collect();
    let meta: Vec<(&str, Value)> = vec![
        ("general.architecture", Value::String("llama".into())),
        ("llama.attention.head_count", Value::U32(HEADS as u32)),
        ("llama.attention.head_count_kv", Value::U32(KV as u32)),
        ("llama.embedding_length", Value::U32(D as u32)),
        ("llama.feed_forward_length", Value::U32(I as u32)),
        ("llama.block_count", Value::U32(LAYERS as u32)),
        ("llama.context_length", Value::U32(128)),
        ("llama.rope.dimension_count", Value::U32(HD as u32)),
        ("llama.rope.freq_base", Value::F32(10000.0)),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(1e-5)),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.tokens", Value::Array(tokens)),
        ("tokenizer.ggml.merges", Value::Array(vec![])),
        ("tokenizer.ggml.bos_token_id", Value::U32(1)),
        ("tokenizer.ggml.eos_token_id", Value::U32(2)),
    ];
    let meta_refs: Vec<(&str, &Value)> = meta.iter().map(|(k, v)| (*k, v)).collect();
    let tensor_refs: Vec<(&str, &QTensor)> = gguf.iter().map(|(k, v)| (k.as_str(), v)).collect();
    let mut f = std::fs::File::create(dir.join("model.gguf")).unwrap();
    gguf_file::write(&mut f, &meta_refs, &tensor_refs).unwrap();

    let hf_dir = dir.join("hf");
    std::fs::create_dir_all(&hf_dir).unwrap();
    let config = json!({
        "model_type": "llama", "vocab_size": V, "hidden_size": D, "intermediate_size": I,
        "num_hidden_layers": LAYERS, "num_attention_heads": HEADS, "num_key_value_heads": KV,
        "head_dim": HD, "rms_norm_eps": 1e-5f32 as f64, "rope_theta": 10000.0,
        "max_position_embeddings": 128, "tie_word_embeddings": true, "hidden_act": "silu",
    });
    std::fs::write(hf_dir.join("config.json"), config.to_string()).unwrap();
    candle_core::safetensors::save(&hf, hf_dir.join("model.safetensors")).unwrap();
}

fn nll(m: &CausalLm, ids: &[u32]) -> Vec<f32> {
    let mut cache = m.new_cache();
    m.nll(&mut cache, ids).unwrap()
}

#[test]
fn gguf_scores_as_the_dequantised_checkpoint_does() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path());
    let ids: Vec<u32> = (0..60).map(|i| (i * 37 % V) as u32).collect();
    for precision in [Precision::F32, Precision::Q8, Precision::Bf16] {
        let opts = LoadOptions {
            precision,
            threads: 1,
        };
        let g = CausalLm::load(&dir.path().join("model.gguf"), &opts).unwrap();
        let h = CausalLm::load(&dir.path().join("hf"), &opts).unwrap();
        assert_eq!(g.config().vocab_size, V);
        assert_eq!(g.config().kv_heads, KV);
        let (a, b) = (nll(&g, &ids), nll(&h, &ids));
        assert_eq!(a.len(), ids.len() - 1);
        assert!(
            a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()),
            "{precision:?}: GGUF {:?} vs Hugging Face {:?}",
            &a[..4],
            &b[..4]
        );
    }
}

#[test]
fn gguf_tokenizer_is_rebuilt_from_the_vocabulary() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path());
    let g = lingua_causal::gguf::Gguf::open(&dir.path().join("model.gguf")).unwrap();
    let (tokenizer, config) = g.tokenizer().unwrap();
    let t: serde_json::Value = serde_json::from_str(&tokenizer).unwrap();
    assert_eq!(t["model"]["type"], "BPE");
    assert_eq!(t["model"]["vocab"]["t7"], 7);
    assert_eq!(t["model"]["vocab"].as_object().unwrap().len(), V);
    let c: serde_json::Value = serde_json::from_str(&config).unwrap();
    assert_eq!(c["bos_token"], "t1");
    assert_eq!(c["add_bos_token"], false);
}

#[test]
fn broken_gguf_files_are_refused_with_the_file_named() {
    let dir = tempfile::tempdir().unwrap();
    write(dir.path());
    let path = dir.path().join("model.gguf");
    let full = std::fs::read(&path).unwrap();
    let opts = LoadOptions {
        precision: Precision::Q8,
        threads: 1,
    };
    // cut inside the tensor data
    std::fs::write(&path, &full[..full.len() - 4096]).unwrap();
    let e = CausalLm::load(&path, &opts).unwrap_err();
    assert!(matches!(e, LmError::Weights { .. }), "{e}");
    assert!(e.to_string().contains("model.gguf"), "{e}");
    // not a GGUF file at all
    std::fs::write(&path, b"not a gguf file, just some bytes").unwrap();
    let e = CausalLm::load(&path, &opts).unwrap_err();
    assert!(e.to_string().contains("model.gguf"), "{e}");
    // one line, whatever RUST_BACKTRACE says (candle attaches a backtrace when it is set)
    assert!(!e.to_string().contains('\n'), "{e}");
}
