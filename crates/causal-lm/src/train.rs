//! Distribution alignment (LLMLingua §3.3): fine-tuning the small causal LM on text the target
//! LLM produced, so that its perplexities follow what the target finds predictable. Loss is the
//! next-token cross-entropy on the answer tokens only.
//!
//! The model is the Llama / Qwen2 forward pass written with differentiable candle ops (RMSNorm,
//! RoPE "rotate_half", grouped-query attention with a causal mask, SiLU-gated MLP), one
//! sequence at a time with the per-sequence losses summed into one backward pass (no padding).
//! Either every weight trains (full fine-tuning, for small models) or only low-rank adapters on
//! the query and value projections do (LoRA, `W + (alpha / r) · B · A`, B starting at zero);
//! [`Aligner::save`] merges the adapters, so the saved checkpoint has the original tensor names
//! and shapes and [`crate::CausalLm::load`] reads it unchanged. GPT-2 is not supported here.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use candle_core::{D, DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW};

use crate::LmError;
use crate::config::{Family, LmConfig};
use crate::weights::{Weights, weight_files};

/// Low-rank adapter settings.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lora {
    pub rank: usize,
    pub alpha: f64,
}

/// Optimiser settings.
#[derive(Debug, Clone, PartialEq)]
pub struct AlignSettings {
    pub lr: f64,
    pub weight_decay: f64,
    /// Global gradient-norm clip; `None` does not clip.
    pub max_grad_norm: Option<f64>,
    /// `None`: full fine-tuning.
    pub lora: Option<Lora>,
    /// Seeds the adapters' initialisation.
    pub seed: u64,
}

impl Default for AlignSettings {
    fn default() -> Self {
        Self {
            lr: 2e-5,
            weight_decay: 0.0,
            max_grad_norm: Some(1.0),
            lora: None,
            seed: 42,
        }
    }
}

/// One prompt + answer sequence: the loss covers `ids[answer_from..]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Example {
    pub ids: Vec<u32>,
    pub answer_from: usize,
}

/// Summed negative log-likelihood over answer tokens.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct NllSums {
    pub nll: f64,
    pub tokens: usize,
}

impl NllSums {
    pub fn add(&mut self, o: NllSums) {
        self.nll += o.nll;
        self.tokens += o.tokens;
    }
    pub fn mean(&self) -> f64 {
        self.nll / self.tokens.max(1) as f64
    }
    pub fn perplexity(&self) -> f64 {
        self.mean().exp()
    }
}

/// What one step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AlignStep {
    pub loss: f32,
    pub tokens: usize,
    pub grad_norm: f32,
}

/// A weight: trained (a variable) or frozen.
#[derive(Clone)]
enum W {
    Train(Var),
    Frozen(Tensor),
}

impl W {
    fn t(&self) -> &Tensor {
        match self {
            W::Train(v) => v.as_tensor(),
            W::Frozen(t) => t,
        }
    }
}

/// A trainable Llama-family causal LM and its optimiser.
pub struct Aligner {
    cfg: LmConfig,
    device: Device,
    /// Every tensor of the checkpoint under its own name.
    weights: BTreeMap<String, W>,
    /// LoRA adapters `(A: r × in, B: out × r)` per adapted weight name.
    adapters: BTreeMap<String, (Var, Var)>,
    prefix: String,
    opt: AdamW,
    vars: Vec<Var>,
    settings: AlignSettings,
    inv_freq: Vec<f32>,
}

fn compute(e: candle_core::Error) -> LmError {
    LmError::Compute(e.to_string())
}

fn normal(rng: &mut fastrand::Rng, n: usize, std: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let (u1, u2) = (rng.f32().max(f32::MIN_POSITIVE), rng.f32());
            std * (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
        })
        .collect()
}

impl Aligner {
    /// Loads `dir` (a Llama or Qwen2 checkpoint) for training on the CPU.
    pub fn from_dir(dir: &Path, settings: AlignSettings) -> Result<Self, LmError> {
        let cfg_path = dir.join("config.json");
        let cfg_bytes = std::fs::read(&cfg_path).map_err(|source| LmError::Io {
            path: cfg_path.clone(),
            source,
        })?;
        let cfg = LmConfig::from_json(&cfg_bytes, &cfg_path)?;
        if cfg.family == Family::Gpt2 {
            return Err(LmError::Config {
                path: cfg_path,
                msg: "alignment trains Llama and Qwen2 models; GPT-2 is scored but not trained"
                    .into(),
            });
        }
        let files = weight_files(dir)?;
        let tensors = Weights::read(&files)?.into_tensors()?;
        let prefix = if tensors.contains_key("model.embed_tokens.weight") {
            "model."
        } else {
            ""
        }
        .to_string();
        let device = Device::Cpu;
        let mut rng = fastrand::Rng::with_seed(settings.seed);
        let mut weights = BTreeMap::new();
        let mut adapters = BTreeMap::new();
        let mut vars = Vec::new();
        let adapted = |name: &str| {
            name.ends_with("self_attn.q_proj.weight") || name.ends_with("self_attn.v_proj.weight")
        };
        for (name, t) in tensors {
            let t = t.to_dtype(DType::F32).map_err(compute)?;
            let w = match settings.lora {
                None => {
                    let v = Var::from_tensor(&t).map_err(compute)?;
                    vars.push(v.clone());
                    W::Train(v)
                }
                Some(lora) => {
                    if adapted(&name)
                        && let [out, inp] = t.dims()
                    {
                        let (out, inp) = (*out, *inp);
                        let a = Tensor::from_vec(
                            normal(&mut rng, lora.rank * inp, 1.0 / (inp as f32).sqrt()),
                            (lora.rank, inp),
                            &device,
                        )
                        .and_then(|a| Var::from_tensor(&a))
                        .map_err(compute)?;
                        let b =
                            Var::zeros((out, lora.rank), DType::F32, &device).map_err(compute)?;
                        vars.push(a.clone());
                        vars.push(b.clone());
                        adapters.insert(name.clone(), (a, b));
                    }
                    W::Frozen(t)
                }
            };
            weights.insert(name, w);
        }
        let opt = AdamW::new(
            vars.clone(),
            ParamsAdamW {
                lr: settings.lr,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: settings.weight_decay,
            },
        )
        .map_err(compute)?;
        let inv_freq = crate::model::inv_freq(&cfg);
        let me = Self {
            cfg,
            device,
            weights,
            adapters,
            prefix,
            opt,
            vars,
            settings,
            inv_freq,
        };
        // every tensor the forward pass reads must be there
        me.w("embed_tokens.weight")?;
        me.w("norm.weight")?;
        Ok(me)
    }

    pub fn config(&self) -> &LmConfig {
        &self.cfg
    }

    /// Parameters that train.
    pub fn trainable(&self) -> usize {
        self.vars.iter().map(|v| v.elem_count()).sum()
    }

    fn w(&self, name: &str) -> Result<&Tensor, LmError> {
        self.weights
            .get(&format!("{}{name}", self.prefix))
            .or_else(|| self.weights.get(name))
            .map(W::t)
            .ok_or_else(|| LmError::MissingTensor {
                path: Path::new("model").to_path_buf(),
                name: name.to_string(),
            })
    }

    fn opt_w(&self, name: &str) -> Option<&Tensor> {
        self.w(name).ok()
    }

    /// `x · Wᵀ (+ b)`, with the adapter of `name` when there is one.
    fn linear(&self, x: &Tensor, name: &str) -> Result<Tensor, LmError> {
        let wname = format!("{name}.weight");
        let w = self.w(&wname)?;
        let mut y = x.matmul(&w.t().map_err(compute)?).map_err(compute)?;
        let full = format!("{}{wname}", self.prefix);
        if let (Some((a, b)), Some(lora)) = (self.adapters.get(&full), self.settings.lora) {
            let scale = lora.alpha / lora.rank as f64;
            let delta = x
                .matmul(&a.as_tensor().t().map_err(compute)?)
                .and_then(|h| h.matmul(&b.as_tensor().t()?))
                .and_then(|d| d * scale)
                .map_err(compute)?;
            y = (y + delta).map_err(compute)?;
        }
        if let Some(bias) = self.opt_w(&format!("{name}.bias")) {
            y = y.broadcast_add(bias).map_err(compute)?;
        }
        Ok(y)
    }

    fn rms(&self, x: &Tensor, name: &str) -> Result<Tensor, LmError> {
        let w = self.w(&format!("{name}.weight"))?;
        let eps = f64::from(self.cfg.norm_eps);
        x.sqr()
            .and_then(|s| s.mean_keepdim(D::Minus1))
            .and_then(|m| (m + eps)?.sqrt())
            .and_then(|r| x.broadcast_div(&r))
            .and_then(|n| n.broadcast_mul(w))
            .map_err(compute)
    }

    /// `rotate_half` RoPE on `(heads, len, head_dim)`.
    fn rope(&self, x: &Tensor, cos: &Tensor, sin: &Tensor) -> candle_core::Result<Tensor> {
        let half = self.cfg.head_dim / 2;
        let x1 = x.narrow(D::Minus1, 0, half)?;
        let x2 = x.narrow(D::Minus1, half, half)?;
        let a = (x1.broadcast_mul(cos)? - x2.broadcast_mul(sin)?)?;
        let b = (x2.broadcast_mul(cos)? + x1.broadcast_mul(sin)?)?;
        Tensor::cat(&[a, b], D::Minus1)
    }

    /// Summed NLL of `ex`'s answer tokens (a graph node when training).
    fn nll(&self, ex: &Example) -> Result<(Tensor, usize), LmError> {
        let c = &self.cfg;
        let len = ex.ids.len();
        let from = ex.answer_from.max(1);
        if len < 2 || from >= len {
            return Err(LmError::Compute("an example without answer tokens".into()));
        }
        if len > c.max_position_embeddings {
            return Err(LmError::TooLong {
                len,
                cached: 0,
                new: len,
                max: c.max_position_embeddings,
            });
        }
        if let Some((index, &id)) = ex
            .ids
            .iter()
            .enumerate()
            .find(|(_, id)| **id as usize >= c.vocab_size)
        {
            return Err(LmError::IdOutOfRange {
                id,
                index,
                vocab: c.vocab_size,
            });
        }
        let dev = &self.device;
        let (hd, heads, kv) = (c.head_dim, c.heads, c.kv_heads);
        let half = hd / 2;
        let mut angles = Vec::with_capacity(len * half);
        for p in 0..len {
            angles.extend(self.inv_freq.iter().map(|f| p as f32 * f));
        }
        let ang = Tensor::from_vec(angles, (1, len, half), dev).map_err(compute)?;
        let (cos, sin) = (ang.cos().map_err(compute)?, ang.sin().map_err(compute)?);
        let mask: Vec<f32> = (0..len)
            .flat_map(|i| (0..len).map(move |j| if j <= i { 0.0 } else { -1e9 }))
            .collect();
        let mask = Tensor::from_vec(mask, (1, len, len), dev).map_err(compute)?;
        let ids = Tensor::from_slice(&ex.ids, len, dev).map_err(compute)?;
        let mut x = self
            .w("embed_tokens.weight")?
            .index_select(&ids, 0)
            .map_err(compute)?;
        let scale = 1.0 / (hd as f64).sqrt();
        for l in 0..c.layers {
            let a = format!("layers.{l}.self_attn");
            let h = self.rms(&x, &format!("layers.{l}.input_layernorm"))?;
            let q = self.linear(&h, &format!("{a}.q_proj"))?;
            let k = self.linear(&h, &format!("{a}.k_proj"))?;
            let v = self.linear(&h, &format!("{a}.v_proj"))?;
            let ctx = (|| -> candle_core::Result<Tensor> {
                let split =
                    |t: Tensor, n: usize| t.reshape((len, n, hd))?.transpose(0, 1)?.contiguous();
                let q = self.rope(&split(q, heads)?, &cos, &sin)?;
                let k = self.rope(&split(k, kv)?, &cos, &sin)?;
                let v = split(v, kv)?;
                let rep = heads / kv;
                let expand = |t: Tensor| -> candle_core::Result<Tensor> {
                    if rep == 1 {
                        return Ok(t);
                    }
                    t.unsqueeze(1)?
                        .expand((kv, rep, len, hd))?
                        .contiguous()?
                        .reshape((heads, len, hd))
                };
                let (k, v) = (expand(k)?, expand(v)?);
                let scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?.broadcast_add(&mask)?;
                let p = candle_nn::ops::softmax(&scores, D::Minus1)?;
                p.matmul(&v)?
                    .transpose(0, 1)?
                    .contiguous()?
                    .reshape((len, heads * hd))
            })()
            .map_err(compute)?;
            let o = self.linear(&ctx, &format!("{a}.o_proj"))?;
            x = (x + o).map_err(compute)?;
            let m = format!("layers.{l}.mlp");
            let h = self.rms(&x, &format!("layers.{l}.post_attention_layernorm"))?;
            let g = self.linear(&h, &format!("{m}.gate_proj"))?;
            let u = self.linear(&h, &format!("{m}.up_proj"))?;
            let act = (g.silu().map_err(compute)? * u).map_err(compute)?;
            let d = self.linear(&act, &format!("{m}.down_proj"))?;
            x = (x + d).map_err(compute)?;
        }
        // only the positions that predict an answer token reach the output projection
        let n = len - from;
        let x = x.narrow(0, from - 1, n).map_err(compute)?;
        let x = self.rms(&x, "norm")?;
        let head = match self.opt_w("lm_head.weight") {
            Some(h) if !c.tie_word_embeddings => h.clone(),
            _ => self.w("embed_tokens.weight")?.clone(),
        };
        let logits = x.matmul(&head.t().map_err(compute)?).map_err(compute)?;
        let targets = Tensor::from_slice(&ex.ids[from..], (n, 1), dev).map_err(compute)?;
        let nll = candle_nn::ops::log_softmax(&logits, D::Minus1)
            .and_then(|lp| lp.gather(&targets, 1))
            .and_then(|g| g.sum_all())
            .and_then(|s| s.neg())
            .map_err(compute)?;
        Ok((nll, n))
    }

    /// One AdamW step over `batch`: mean NLL per answer token, backward, clip, update.
    pub fn step(&mut self, batch: &[Example]) -> Result<AlignStep, LmError> {
        let mut total: Option<Tensor> = None;
        let mut tokens = 0;
        for ex in batch {
            let (nll, n) = self.nll(ex)?;
            tokens += n;
            total = Some(match total {
                None => nll,
                Some(t) => (t + nll).map_err(compute)?,
            });
        }
        let Some(total) = total else {
            return Ok(AlignStep {
                loss: 0.0,
                tokens: 0,
                grad_norm: 0.0,
            });
        };
        let loss = (total / tokens as f64).map_err(compute)?;
        let mut grads = loss.backward().map_err(compute)?;
        let mut sq = 0f64;
        for v in &self.vars {
            if let Some(g) = grads.get(v) {
                sq += f64::from(
                    g.sqr()
                        .and_then(|s| s.sum_all())
                        .and_then(|s| s.to_scalar::<f32>())
                        .map_err(compute)?,
                );
            }
        }
        let norm = sq.sqrt();
        if let Some(max) = self.settings.max_grad_norm
            && norm > max
        {
            let f = max / (norm + 1e-6);
            for v in &self.vars {
                if let Some(g) = grads.remove(v) {
                    grads.insert(v, (g * f).map_err(compute)?);
                }
            }
        }
        self.opt.step(&grads).map_err(compute)?;
        Ok(AlignStep {
            loss: loss.to_scalar::<f32>().map_err(compute)?,
            tokens,
            grad_norm: norm as f32,
        })
    }

    /// NLL sums of `examples`' answer tokens, without an update.
    pub fn evaluate(&self, examples: &[Example]) -> Result<NllSums, LmError> {
        let mut sums = NllSums::default();
        for ex in examples {
            let (nll, n) = self.nll(ex)?;
            sums.add(NllSums {
                nll: f64::from(nll.to_scalar::<f32>().map_err(compute)?),
                tokens: n,
            });
        }
        Ok(sums)
    }

    /// Writes `model.safetensors` (adapters merged, original names and shapes) into `dir`;
    /// the caller copies `config.json` and the tokenizer files.
    pub fn save(&self, dir: &Path) -> Result<(), LmError> {
        std::fs::create_dir_all(dir).map_err(|source| LmError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        let mut out: HashMap<String, Tensor> = HashMap::new();
        for (name, w) in &self.weights {
            let mut t = w.t().clone();
            if let (Some((a, b)), Some(lora)) = (self.adapters.get(name), self.settings.lora) {
                let delta = b
                    .as_tensor()
                    .matmul(a.as_tensor())
                    .and_then(|d| d * (lora.alpha / lora.rank as f64))
                    .map_err(compute)?;
                t = (t + delta).map_err(compute)?;
            }
            out.insert(name.clone(), t.detach());
        }
        let path = dir.join("model.safetensors");
        candle_core::safetensors::save(&out, &path).map_err(|e| LmError::Weights {
            path,
            msg: e.to_string(),
        })
    }
}
