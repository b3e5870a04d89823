//! The LLMLingua-2 token classifier: a BERT or XLM-RoBERTa encoder plus
//! `Linear(hidden, num_labels)` on every token, softmax, class-1 probability.
//!
//! Weights are read one tensor at a time (`tensors`: `model.safetensors` by positioned reads,
//! `pytorch_model.bin` through candle) and converted layer by layer.
//! On the CPU the forward pass runs over packed (unpadded) sequences: fused QKV projection,
//! attention per sequence and head straight out of the QKV buffer (no copies, no padding),
//! bias/activation/residual/layer-norm fused into single vectorised passes (AVX-512 selected at
//! run time), and either the `gemm` crate's f32 GEMM (AVX-512 kernels at run time, parity with
//! PyTorch), our int8 GEMM with dynamically quantized activations (`Precision::Q8`, AVX-512
//! VNNI or AMX with a portable fallback) or bf16 weights and activations with f32 sums
//! (`Precision::Bf16`, AVX512_BF16 or widened FMAs, bit-identical on every tier).
#![allow(
    unsafe_code,
    reason = "memory-mapped checkpoints (the file is not changed while mapped) and strided GEMM calls"
)]

use std::io::Read;
use std::path::Path;

use candle_core::{DType, Device};
use candle_nn::VarBuilder;
use rayon::prelude::*;
use sha2::{Digest, Sha256};

use crate::EncoderError;
use crate::candle_ops::{RawLayer, RawWeights, TensorEncoder, position_ids};
use crate::config::{Activation, EncoderConfig};
use crate::load::{LoadError, ModelFiles};
use crate::tensors::{SafetensorsFile, Tensors};
use lingua_kernels::{SendPtr, bf16, math, products, q8};

/// Numeric precision of the encoder's linear layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// Full f32 (parity with the PyTorch reference).
    #[default]
    F32,
    /// int8 weights (per output channel) × int8 activations (per token, quantized on the fly).
    Q8,
    /// bf16 weights × bf16 activations (rounded on the fly), f32 sums; the word table in bf16.
    Bf16,
}

impl Precision {
    pub fn as_str(self) -> &'static str {
        match self {
            Precision::F32 => "f32",
            Precision::Q8 => "q8",
            Precision::Bf16 => "bf16",
        }
    }
}

impl std::str::FromStr for Precision {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "f32" => Ok(Precision::F32),
            "q8" => Ok(Precision::Q8),
            "bf16" => Ok(Precision::Bf16),
            other => Err(format!(
                "unknown precision {other:?} (expected \"f32\", \"q8\" or \"bf16\")"
            )),
        }
    }
}

/// Version of the numerics; part of the digest so caches do not mix outputs across changes.
const ENCODER_VERSION: &str = "lingua-proxy-encoder-2";

/// Inputs per int8 scale in `q8` (0: one scale per row of weights and of activations).
const Q8_BLOCK: usize = 0;

enum LinearW {
    F32(Vec<f32>),
    Q8(q8::PackedQ8),
    Bf16(bf16::PackedBf16),
}

struct Linear {
    n: usize,
    k: usize,
    w: LinearW,
    bias: Vec<f32>,
}

impl Linear {
    fn new(w: Vec<f32>, bias: Vec<f32>, n: usize, k: usize, precision: Precision) -> Self {
        let w = match precision {
            Precision::F32 => LinearW::F32(w),
            Precision::Q8 => LinearW::Q8(q8::PackedQ8::quantize(&w, n, k, Q8_BLOCK)),
            Precision::Bf16 => LinearW::Bf16(bf16::PackedBf16::pack(&w, n, k)),
        };
        Self { n, k, w, bias }
    }

    fn forward(&self, x: &[f32], m: usize, out: &mut [f32], ctx: &mut Ctx) {
        match &self.w {
            LinearW::F32(w) => {
                products::linear_f32(x, m, self.k, w, self.n, &self.bias, out, ctx.threads)
            }
            LinearW::Q8(p) => {
                ctx.qrows
                    .quantize(x, m, self.k, p.block_size(), ctx.threads);
                q8::linear_q8(
                    &ctx.qrows,
                    p,
                    Some(&self.bias),
                    out,
                    ctx.q8_kernel,
                    ctx.threads,
                );
            }
            LinearW::Bf16(p) => {
                ctx.bf16_rows
                    .convert(x, m, self.k, ctx.bf16_kernel, ctx.threads);
                bf16::linear_bf16(
                    &ctx.bf16_rows,
                    p,
                    Some(&self.bias),
                    out,
                    ctx.bf16_kernel,
                    ctx.threads,
                );
            }
        }
    }
}

struct Ctx {
    threads: usize,
    q8_kernel: q8::Q8Kernel,
    qrows: q8::QuantRows,
    bf16_kernel: bf16::Bf16Kernel,
    bf16_rows: bf16::Bf16Rows,
}

struct Layer {
    qkv: Linear,
    attn_out: Linear,
    ln1: (Vec<f32>, Vec<f32>),
    ffn_in: Linear,
    ffn_out: Linear,
    ln2: (Vec<f32>, Vec<f32>),
}

struct CpuEncoder {
    cfg: EncoderConfig,
    word: WordTable,
    pos: Vec<f32>,
    type0: Vec<f32>,
    emb_ln: (Vec<f32>, Vec<f32>),
    layers: Vec<Layer>,
    cls_w: Vec<f32>,
    cls_b: Vec<f32>,
    pool: rayon::ThreadPool,
    threads: usize,
    q8_kernel: q8::Q8Kernel,
    bf16_kernel: bf16::Bf16Kernel,
}

/// A loaded token classifier. Cheap to share behind an `Arc`; `keep_probs` takes `&self`.
pub struct TokenClassifier {
    cfg: EncoderConfig,
    precision: Precision,
    digest: String,
    backend: Backend,
}

enum Backend {
    Cpu(CpuEncoder),
    Candle(TensorEncoder),
}

impl std::fmt::Debug for TokenClassifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenClassifier")
            .field("arch", &self.cfg.arch)
            .field("layers", &self.cfg.num_layers)
            .field("hidden", &self.cfg.hidden_size)
            .field("precision", &self.precision)
            .field("digest", &self.digest)
            .finish()
    }
}

/// Reads tensors out of a checkpoint, naming the file in every error.
struct Reader<'a> {
    tensors: Tensors<'a>,
    file: &'a Path,
    prefix: String,
}

impl Reader<'_> {
    fn full_name(&self, name: &str) -> String {
        if name.starts_with("classifier.") {
            name.to_string()
        } else {
            format!("{}{name}", self.prefix)
        }
    }

    fn get(&self, shape: &[usize], name: &str) -> Result<Vec<f32>, LoadError> {
        self.tensors.get(self.file, shape, &self.full_name(name))
    }

    fn each_piece(
        &self,
        shape: &[usize],
        name: &str,
        take: impl FnMut(usize, &[f32]),
    ) -> Result<(), LoadError> {
        self.tensors
            .each_piece(self.file, shape, &self.full_name(name), take)
    }
}

enum Target {
    /// Our CPU kernels.
    Cpu,
    /// candle tensor ops on a candle device (CUDA, or the CPU as a cross-check).
    Candle(Device),
}

/// Parses `"cpu"`, `"cuda"`, `"cuda:N"`; `"candle-cpu"` runs the candle-ops path on the CPU
/// (a diagnostic cross-check of the CPU kernels, much slower).
fn parse_device(device: &str) -> Result<Target, LoadError> {
    let bad = |problem: String| LoadError::Device {
        device: device.to_string(),
        problem,
    };
    match device {
        "cpu" => Ok(Target::Cpu),
        "candle-cpu" => Ok(Target::Candle(Device::Cpu)),
        d if d == "cuda" || d.starts_with("cuda:") => {
            let ordinal = match d.strip_prefix("cuda:") {
                Some(n) => n
                    .parse::<usize>()
                    .map_err(|_| bad("expected cuda:N with N a GPU ordinal".into()))?,
                None => 0,
            };
            if !cfg!(feature = "cuda") {
                return Err(bad(
                    "this binary was built without the `cuda` feature; rebuild with \
                     `--features cuda` or use \"cpu\""
                        .into(),
                ));
            }
            Device::new_cuda(ordinal)
                .map(Target::Candle)
                .map_err(|e| bad(format!("cannot open the GPU: {e}")))
        }
        _ => Err(bad("expected \"cpu\" or \"cuda:N\"".into())),
    }
}

/// The candle device `device` names (`"cpu"` and `"candle-cpu"` are both the CPU): where
/// training runs.
pub(crate) fn candle_device(device: &str) -> Result<Device, LoadError> {
    Ok(match parse_device(device)? {
        Target::Cpu => Device::Cpu,
        Target::Candle(d) => d,
    })
}

fn default_threads() -> usize {
    if let Some(n) = std::env::var("LINGUA_ENCODER_THREADS")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .filter(|n| *n > 0)
    {
        return n;
    }
    std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1)
}

/// Stable hash of the weights: the hub blob name when the file is a cache symlink (it is the
/// file's sha256), otherwise the sha256 of the file's bytes.
fn weights_hash(path: &Path) -> Result<String, LoadError> {
    if let Ok(target) = std::fs::read_link(path)
        && let Some(name) = target.file_name().and_then(|n| n.to_str())
        && name.len() == 64
        && name.bytes().all(|b| b.is_ascii_hexdigit())
    {
        return Ok(name.to_ascii_lowercase());
    }
    let mut f = std::fs::File::open(path).map_err(|e| LoadError::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = f.read(&mut buf).map_err(|e| LoadError::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex::encode(h.finalize()))
}

impl TokenClassifier {
    /// Loads a checkpoint for `device` (`"cpu"`, or `"cuda:N"` with the `cuda` feature).
    pub fn load(files: &ModelFiles, device: &str, precision: Precision) -> Result<Self, LoadError> {
        Self::load_with_threads(files, device, precision, default_threads())
    }

    /// As [`TokenClassifier::load`] with an explicit number of compute threads.
    pub fn load_with_threads(
        files: &ModelFiles,
        device: &str,
        precision: Precision,
        threads: usize,
    ) -> Result<Self, LoadError> {
        let target = parse_device(device)?;
        let cfg = EncoderConfig::from_file(&files.config)?;
        let path = files.weights.as_path();
        let is_pth = path
            .extension()
            .is_some_and(|e| e == "bin" || e == "pt" || e == "pth");
        let tensors = if is_pth {
            Tensors::Candle(
                VarBuilder::from_pth(path, DType::F32, &Device::Cpu).map_err(|e| {
                    LoadError::invalid(path, format!("not a readable PyTorch checkpoint: {e}"))
                })?,
            )
        } else {
            Tensors::Safetensors(SafetensorsFile::open(path)?)
        };
        let p = cfg.arch.prefix();
        let prefix = if tensors.contains(&format!("{p}.embeddings.word_embeddings.weight")) {
            format!("{p}.")
        } else if tensors.contains("embeddings.word_embeddings.weight") {
            String::new()
        } else {
            return Err(LoadError::invalid(
                path,
                format!(
                    "no {p}.embeddings.word_embeddings.weight: not a {:?} token-classification checkpoint",
                    cfg.arch
                ),
            ));
        };
        let r = Reader {
            tensors,
            file: path,
            prefix,
        };
        let threads = threads.max(1);
        let backend = match target {
            Target::Cpu => Backend::Cpu(CpuEncoder::load(&cfg, &r, precision, threads)?),
            Target::Candle(dev) => {
                let raw = read_raw(&cfg, &r)?;
                if precision != Precision::F32 {
                    return Err(LoadError::Device {
                        device: device.to_string(),
                        problem: format!(
                            "precision {:?} runs on the CPU kernels only; use \"f32\"",
                            precision.as_str()
                        ),
                    });
                }
                Backend::Candle(TensorEncoder::new(&cfg, &raw, dev)?)
            }
        };
        let cfg_bytes =
            std::fs::read(&files.config).map_err(|e| LoadError::io(&files.config, e))?;
        let mut h = Sha256::new();
        h.update(ENCODER_VERSION.as_bytes());
        h.update(b"\0");
        h.update(&cfg_bytes);
        h.update(b"\0");
        h.update(weights_hash(path)?.as_bytes());
        h.update(b"\0");
        h.update(precision.as_str().as_bytes());
        let digest = format!(
            "{}-{}",
            precision.as_str(),
            &hex::encode(h.finalize())[..32]
        );
        Ok(Self {
            cfg,
            precision,
            digest,
            backend,
        })
    }

    pub fn config(&self) -> &EncoderConfig {
        &self.cfg
    }

    pub fn precision(&self) -> Precision {
        self.precision
    }

    /// Stable id of weights + config + precision + numerics version, for cache keys.
    pub fn digest(&self) -> &str {
        &self.digest
    }

    /// Longest sequence [`TokenClassifier::keep_probs`] accepts.
    pub fn max_len(&self) -> usize {
        self.cfg.max_input_len()
    }

    /// Softmax class-1 probability for every position of every sequence.
    ///
    /// Each sequence is the full model input (special/marker ids included, no padding,
    /// `1 <= len <= max_len()`); sequences are packed together, never padded.
    pub fn keep_probs(&self, batch: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, EncoderError> {
        self.validate(batch)?;
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        match &self.backend {
            Backend::Cpu(cpu) => Ok(cpu.pool.install(|| cpu.forward(batch))),
            Backend::Candle(enc) => {
                let mut pos = Vec::new();
                batch
                    .iter()
                    .map(|ids| {
                        position_ids(self.cfg.arch, self.cfg.pad_token_id, ids, &mut pos);
                        enc.forward(ids, &pos)
                            .map_err(|e| EncoderError::Model(format!("candle forward: {e}")))
                    })
                    .collect()
            }
        }
    }

    /// Checks lengths and ids of a batch without running it.
    pub fn validate(&self, batch: &[Vec<u32>]) -> Result<(), EncoderError> {
        let max = self.max_len();
        for (i, s) in batch.iter().enumerate() {
            if s.is_empty() || s.len() > max {
                return Err(EncoderError::Model(format!(
                    "sequence {i} has {} ids; the encoder takes 1 to {max}",
                    s.len()
                )));
            }
            if let Some(bad) = s.iter().find(|&&id| id as usize >= self.cfg.vocab_size) {
                return Err(EncoderError::Model(format!(
                    "sequence {i} holds id {bad}, outside the vocabulary of {}",
                    self.cfg.vocab_size
                )));
            }
        }
        Ok(())
    }
}

/// The embedding tensors: word, position, token type 0 and their layer-norm.
type Embeddings = (Vec<f32>, Vec<f32>, Vec<f32>, (Vec<f32>, Vec<f32>));

const WORD_EMBEDDINGS: &str = "embeddings.word_embeddings.weight";

fn read_embeddings(cfg: &EncoderConfig, r: &Reader<'_>) -> Result<Embeddings, LoadError> {
    let word = r.get(&[cfg.vocab_size, cfg.hidden_size], WORD_EMBEDDINGS)?;
    let (pos, type0, emb_ln) = read_other_embeddings(cfg, r)?;
    Ok((word, pos, type0, emb_ln))
}

/// Position, token type 0 and the embeddings' layer-norm.
type OtherEmbeddings = (Vec<f32>, Vec<f32>, (Vec<f32>, Vec<f32>));

fn read_other_embeddings(
    cfg: &EncoderConfig,
    r: &Reader<'_>,
) -> Result<OtherEmbeddings, LoadError> {
    let h = cfg.hidden_size;
    let pos = r.get(
        &[cfg.max_position_embeddings, h],
        "embeddings.position_embeddings.weight",
    )?;
    let mut type0 = r.get(
        &[cfg.type_vocab_size, h],
        "embeddings.token_type_embeddings.weight",
    )?;
    type0.truncate(h);
    let emb_ln = (
        r.get(&[h], "embeddings.LayerNorm.weight")?,
        r.get(&[h], "embeddings.LayerNorm.bias")?,
    );
    Ok((pos, type0, emb_ln))
}

fn read_layer(cfg: &EncoderConfig, r: &Reader<'_>, l: usize) -> Result<RawLayer, LoadError> {
    let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
    let n = |s: &str| format!("encoder.layer.{l}.{s}");
    let mut qkv_w = Vec::new();
    for m in ["query", "key", "value"] {
        r.each_piece(
            &[h, h],
            &n(&format!("attention.self.{m}.weight")),
            |total, p| {
                if qkv_w.capacity() == 0 {
                    qkv_w.reserve_exact(3 * total);
                }
                qkv_w.extend_from_slice(p)
            },
        )?;
    }
    let mut qkv_b = r.get(&[h], &n("attention.self.query.bias"))?;
    qkv_b.extend(r.get(&[h], &n("attention.self.key.bias"))?);
    qkv_b.extend(r.get(&[h], &n("attention.self.value.bias"))?);
    // `name.weight` of `shape` and `name.bias` of its first dimension
    let pair = |name: &str, shape: &[usize]| -> Result<(Vec<f32>, Vec<f32>), LoadError> {
        Ok((
            r.get(shape, &n(&format!("{name}.weight")))?,
            r.get(&shape[..1], &n(&format!("{name}.bias")))?,
        ))
    };
    Ok(RawLayer {
        qkv: (qkv_w, qkv_b),
        attn_out: pair("attention.output.dense", &[h, h])?,
        ln1: pair("attention.output.LayerNorm", &[h])?,
        ffn_in: pair("intermediate.dense", &[i, h])?,
        ffn_out: pair("output.dense", &[h, i])?,
        ln2: pair("output.LayerNorm", &[h])?,
    })
}

fn read_cls(cfg: &EncoderConfig, r: &Reader<'_>) -> Result<(Vec<f32>, Vec<f32>), LoadError> {
    let h = cfg.hidden_size;
    Ok((
        r.get(&[cfg.num_labels, h], "classifier.weight")?,
        r.get(&[cfg.num_labels], "classifier.bias")?,
    ))
}

/// Every tensor at once, for the candle backend.
fn read_raw(cfg: &EncoderConfig, r: &Reader<'_>) -> Result<RawWeights, LoadError> {
    let (word, pos, type0, emb_ln) = read_embeddings(cfg, r)?;
    let layers = (0..cfg.num_layers)
        .map(|l| read_layer(cfg, r, l))
        .collect::<Result<_, _>>()?;
    Ok(RawWeights {
        word,
        pos,
        type0,
        emb_ln,
        layers,
        cls: read_cls(cfg, r)?,
    })
}

/// The word-embedding table: f32 rows, or (in `q8`) int8 rows with one scale each, a quarter
/// of the memory, or (in `bf16`) bf16 rows, half (the table is the largest tensor of a
/// multilingual encoder: 367 MB in f32 for bert-base-multilingual-cased's 119,547 words).
enum WordTable {
    F32(Vec<f32>),
    Q8 { rows: Vec<i8>, scales: Vec<f32> },
    Bf16(Vec<u16>),
}

impl WordTable {
    /// Reads the table; in `q8` each piece is quantized as it arrives.
    fn read(cfg: &EncoderConfig, r: &Reader<'_>, precision: Precision) -> Result<Self, LoadError> {
        let (v, h) = (cfg.vocab_size, cfg.hidden_size);
        if precision == Precision::F32 {
            return Ok(WordTable::F32(r.get(&[v, h], WORD_EMBEDDINGS)?));
        }
        if precision == Precision::Bf16 {
            let mut rows = Vec::new();
            r.each_piece(&[v, h], WORD_EMBEDDINGS, |total, piece| {
                rows.reserve_exact(total.saturating_sub(rows.len()));
                rows.extend(piece.iter().map(|x| bf16::to_bf16(*x)));
            })?;
            return Ok(WordTable::Bf16(rows));
        }
        let (mut rows, mut scales) = (Vec::new(), Vec::new());
        r.each_piece(&[v, h], WORD_EMBEDDINGS, |total, piece| {
            if rows.capacity() == 0 {
                rows.reserve_exact(total);
                scales.reserve_exact(total / h.max(1));
            }
            for w in piece.chunks_exact(h) {
                let amax = w.iter().fold(0.0f32, |m, x| m.max(x.abs()));
                let scale = if amax > 0.0 { amax / 127.0 } else { 1.0 };
                rows.extend(
                    w.iter()
                        .map(|x| (x / scale).round().clamp(-127.0, 127.0) as i8),
                );
                scales.push(scale);
            }
        })?;
        Ok(WordTable::Q8 { rows, scales })
    }

    /// `dst[j] = word[id][j] + pe[j] + t0[j]`.
    fn embed(&self, id: usize, pe: &[f32], t0: &[f32], dst: &mut [f32]) {
        let h = dst.len();
        match self {
            WordTable::F32(w) => {
                let w = &w[id * h..(id + 1) * h];
                for j in 0..h {
                    dst[j] = w[j] + pe[j] + t0[j];
                }
            }
            WordTable::Q8 { rows, scales } => {
                let (q, s) = (&rows[id * h..(id + 1) * h], scales[id]);
                for j in 0..h {
                    dst[j] = q[j] as f32 * s + pe[j] + t0[j];
                }
            }
            WordTable::Bf16(rows) => {
                let w = &rows[id * h..(id + 1) * h];
                for j in 0..h {
                    dst[j] = bf16::from_bf16(w[j]) + pe[j] + t0[j];
                }
            }
        }
    }
}

impl CpuEncoder {
    /// Reads and converts one layer at a time, so that loading never holds more than the
    /// weights in their final form plus one layer in f32.
    fn load(
        cfg: &EncoderConfig,
        r: &Reader<'_>,
        precision: Precision,
        threads: usize,
    ) -> Result<Self, LoadError> {
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let word = WordTable::read(cfg, r, precision)?;
        let (pos, type0, emb_ln) = read_other_embeddings(cfg, r)?;
        let layers = (0..cfg.num_layers)
            .map(|l| {
                let l = read_layer(cfg, r, l)?;
                Ok(Layer {
                    qkv: Linear::new(l.qkv.0, l.qkv.1, 3 * h, h, precision),
                    attn_out: Linear::new(l.attn_out.0, l.attn_out.1, h, h, precision),
                    ln1: l.ln1,
                    ffn_in: Linear::new(l.ffn_in.0, l.ffn_in.1, i, h, precision),
                    ffn_out: Linear::new(l.ffn_out.0, l.ffn_out.1, h, i, precision),
                    ln2: l.ln2,
                })
            })
            .collect::<Result<_, LoadError>>()?;
        let (cls_w, cls_b) = read_cls(cfg, r)?;
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .thread_name(|i| format!("lingua-encoder-{i}"))
            .build()
            .map_err(|e| LoadError::Device {
                device: "cpu".into(),
                problem: format!("cannot start {threads} compute threads: {e}"),
            })?;
        Ok(Self {
            cfg: cfg.clone(),
            word,
            pos,
            type0,
            emb_ln,
            layers,
            cls_w,
            cls_b,
            pool,
            threads,
            q8_kernel: q8::Q8Kernel::detect(),
            bf16_kernel: bf16::Bf16Kernel::detect(),
        })
    }

    fn forward(&self, batch: &[Vec<u32>]) -> Vec<Vec<f32>> {
        let cfg = &self.cfg;
        let h = cfg.hidden_size;
        let total: usize = batch.iter().map(Vec::len).sum();
        let mut ctx = Ctx {
            threads: self.threads,
            q8_kernel: self.q8_kernel,
            qrows: q8::QuantRows::default(),
            bf16_kernel: self.bf16_kernel,
            bf16_rows: bf16::Bf16Rows::default(),
        };

        // Embeddings + layer-norm.
        let mut hs = vec![0.0f32; total * h];
        let mut pos = Vec::new();
        let mut row = 0;
        for ids in batch {
            position_ids(cfg.arch, cfg.pad_token_id, ids, &mut pos);
            for (&id, &p) in ids.iter().zip(&pos) {
                let p = p as usize;
                let dst = &mut hs[row * h..(row + 1) * h];
                let pe = &self.pos[p * h..(p + 1) * h];
                self.word.embed(id as usize, pe, &self.type0, dst);
                math::layer_norm_row(dst, &self.emb_ln.0, &self.emb_ln.1, cfg.layer_norm_eps);
                row += 1;
            }
        }

        let mut qkv = vec![0.0f32; total * 3 * h];
        let mut attn = vec![0.0f32; total * h];
        let mut tmp = vec![0.0f32; total * h];
        let mut inter = vec![0.0f32; total * cfg.intermediate_size];
        let offsets: Vec<(usize, usize)> = batch
            .iter()
            .scan(0usize, |o, s| {
                let r = (*o, s.len());
                *o += s.len();
                Some(r)
            })
            .collect();
        let profile = std::env::var_os("LINGUA_ENCODER_PROFILE").is_some();
        let mut spent = [0.0f64; 7];
        let mut clock = std::time::Instant::now();
        let mut lap = |i: usize| {
            if profile {
                let now = std::time::Instant::now();
                spent[i] += (now - clock).as_secs_f64();
                clock = now;
            }
        };
        for layer in &self.layers {
            layer.qkv.forward(&hs, total, &mut qkv, &mut ctx);
            lap(0);
            self.attention(&qkv, &offsets, &mut attn);
            lap(1);
            layer.attn_out.forward(&attn, total, &mut tmp, &mut ctx);
            lap(2);
            math::residual_layer_norm(
                &mut hs,
                &tmp,
                h,
                &layer.ln1.0,
                &layer.ln1.1,
                cfg.layer_norm_eps,
            );
            lap(3);
            layer.ffn_in.forward(&hs, total, &mut inter, &mut ctx);
            lap(4);
            self.activate(&mut inter);
            lap(5);
            layer.ffn_out.forward(&inter, total, &mut tmp, &mut ctx);
            lap(6);
            math::residual_layer_norm(
                &mut hs,
                &tmp,
                h,
                &layer.ln2.0,
                &layer.ln2.1,
                cfg.layer_norm_eps,
            );
            lap(3);
        }
        if profile {
            tracing::info!(
                qkv = spent[0],
                attention = spent[1],
                attn_out = spent[2],
                layer_norm = spent[3],
                ffn_in = spent[4],
                gelu = spent[5],
                ffn_out = spent[6],
                "encoder forward profile (s)"
            );
        }

        // Head: logits, softmax over labels, class 1.
        let labels = cfg.num_labels;
        let mut probs = Vec::with_capacity(batch.len());
        let mut logits = vec![0.0f32; labels];
        for &(o, len) in &offsets {
            let mut p = Vec::with_capacity(len);
            for t in o..o + len {
                let x = &hs[t * h..(t + 1) * h];
                for (c, l) in logits.iter_mut().enumerate() {
                    let w = &self.cls_w[c * h..(c + 1) * h];
                    *l = self.cls_b[c] + dot(x, w);
                }
                math::softmax_row(&mut logits);
                p.push(logits[1]);
            }
            probs.push(p);
        }
        probs
    }

    fn activate(&self, xs: &mut [f32]) {
        let chunk = 1 << 14;
        let f = match self.cfg.activation {
            Activation::Gelu => math::gelu_erf,
            Activation::GeluTanh => math::gelu_tanh,
            Activation::Relu => math::relu,
        };
        if self.threads > 1 && xs.len() > chunk {
            xs.par_chunks_mut(chunk).for_each(f);
        } else {
            f(xs);
        }
    }

    /// Scaled dot-product attention per sequence and head, read straight out of the fused
    /// QKV buffer (`[tokens, 3·hidden]`) and written into `out` (`[tokens, hidden]`).
    fn attention(&self, qkv: &[f32], offsets: &[(usize, usize)], out: &mut [f32]) {
        let h = self.cfg.hidden_size;
        let heads = self.cfg.num_heads;
        let d = self.cfg.head_dim();
        let scale = 1.0 / (d as f32).sqrt();
        let tasks: Vec<(usize, usize, usize)> = offsets
            .iter()
            .flat_map(|&(o, len)| (0..heads).map(move |hd| (o, len, hd)))
            .collect();
        let out_ptr = SendPtr(out.as_mut_ptr());
        let qkv_ptr = qkv.as_ptr() as usize;
        let run = |s: &mut AttnScratch, &(o, len, hd): &(usize, usize, usize)| {
            s.scores.clear();
            s.scores.resize(len * len, 0.0);
            let base = qkv_ptr as *const f32;
            let s3 = 3 * h;
            // SAFETY: q/k/v views cover rows o..o+len and columns hd*d..hd*d+d of their third of
            // the QKV buffer; the output view covers the same rows/columns of `out`, distinct
            // for every (sequence, head) task.
            unsafe {
                let q = base.add(o * s3 + hd * d);
                let k = base.add(o * s3 + h + hd * d);
                let v = base.add(o * s3 + 2 * h + hd * d);
                let dst = out_ptr.get().add(o * h + hd * d);
                products::gemm_strided(
                    len,
                    len,
                    d,
                    s.scores.as_mut_ptr(),
                    len as isize,
                    q,
                    s3 as isize,
                    1,
                    k,
                    1,
                    s3 as isize,
                    1.0,
                );
                for r in s.scores.chunks_exact_mut(len) {
                    math::softmax_row_scaled(r, scale);
                }
                products::gemm_strided(
                    len,
                    d,
                    len,
                    dst,
                    h as isize,
                    s.scores.as_ptr(),
                    len as isize,
                    1,
                    v,
                    s3 as isize,
                    1,
                    1.0,
                );
            }
        };
        if self.threads > 1 {
            tasks.par_iter().for_each_init(AttnScratch::default, run);
        } else {
            let mut scratch = AttnScratch::default();
            tasks.iter().for_each(|t| run(&mut scratch, t));
        }
    }
}

#[derive(Default)]
struct AttnScratch {
    scores: Vec<f32>,
}

#[inline]
fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let ca = a.chunks_exact(8);
    let cb = b.chunks_exact(8);
    let tail: f32 = ca
        .remainder()
        .iter()
        .zip(cb.remainder())
        .map(|(x, y)| x * y)
        .sum();
    for (x, y) in ca.zip(cb) {
        for j in 0..8 {
            acc[j] = x[j].mul_add(y[j], acc[j]);
        }
    }
    acc.iter().sum::<f32>() + tail
}
