//! Fine-tuning the token classifier with candle's autograd (LLMLingua-2's step 4, spec
//! `llmlingua2-distillation.md` §4, with the fixes its §4.6 recommends).
//!
//! The model is the same BERT / XLM-RoBERTa encoder as [`crate::TokenClassifier`], written with
//! differentiable candle ops over padded batches: the padding is masked out of attention and,
//! by label `-100`, out of the loss. Layer norm, softmax and cross-entropy are composed from
//! primitive ops so that every one has a backward pass. Dropout (the checkpoint's
//! `hidden_dropout_prob`) draws its masks from a seeded generator, so one seed gives one run.
//! Attention-probability dropout is left out: it costs a mask per head and position pair.
//!
//! The optimiser is candle's AdamW. Gradients are clipped to a global norm *after* the backward
//! pass (the reference calls `clip_grad_norm_` before it, which does nothing). Weights keep the
//! Hugging Face names (Q, K and V separate), so [`Trainer::save`] writes a checkpoint that
//! [`crate::TokenClassifier::load`] reads unchanged.

use std::collections::HashMap;
use std::path::Path;

use candle_core::{D, DType, Device, Tensor, Var};
use candle_nn::{AdamW, Optimizer, ParamsAdamW, VarMap};
use serde_json::Value;

use crate::EncoderError;
use crate::config::{Activation, Arch, EncoderConfig};
use crate::load::{LoadError, ModelFiles};

/// The label that takes no part in the loss (padding, `[CLS]`, `[SEP]`).
pub const IGNORE: i64 = -100;

/// Optimiser and regularisation settings.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSettings {
    /// AdamW learning rate (the paper: 1e-5, constant).
    pub lr: f64,
    /// AdamW decoupled weight decay (the paper: 0).
    pub weight_decay: f64,
    /// Global gradient-norm clip; `None` does not clip.
    pub max_grad_norm: Option<f64>,
    /// Dropout probability; `None` takes the checkpoint's `hidden_dropout_prob` (else 0.1).
    pub dropout: Option<f32>,
    /// Seeds the fresh classifier head and the dropout masks.
    pub seed: u64,
}

impl Default for TrainSettings {
    fn default() -> Self {
        Self {
            lr: 1e-5,
            weight_decay: 0.0,
            max_grad_norm: Some(10.0),
            dropout: None,
            seed: 42,
        }
    }
}

/// One padded batch: token ids and per-token labels (`1` keep, `0` drop, [`IGNORE`]).
#[derive(Debug, Clone, Default)]
pub struct Batch {
    pub ids: Vec<Vec<u32>>,
    pub labels: Vec<Vec<i64>>,
}

/// What one optimiser step did.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StepStats {
    /// Mean cross-entropy over the labelled tokens.
    pub loss: f32,
    /// Labelled tokens in the batch.
    pub tokens: usize,
    /// Global gradient norm before clipping.
    pub grad_norm: f32,
}

/// Loss and accuracy sums over a batch, without a step.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct EvalSums {
    pub loss_sum: f64,
    pub correct: usize,
    pub tokens: usize,
}

impl EvalSums {
    pub fn add(&mut self, o: EvalSums) {
        self.loss_sum += o.loss_sum;
        self.correct += o.correct;
        self.tokens += o.tokens;
    }
    pub fn loss(&self) -> f64 {
        self.loss_sum / self.tokens.max(1) as f64
    }
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.tokens.max(1) as f64
    }
}

struct Layer {
    q: (Var, Var),
    k: (Var, Var),
    v: (Var, Var),
    attn_out: (Var, Var),
    ln1: (Var, Var),
    ffn_in: (Var, Var),
    ffn_out: (Var, Var),
    ln2: (Var, Var),
}

/// A trainable token classifier and its optimiser.
pub struct Trainer {
    cfg: EncoderConfig,
    base_config: Value,
    device: Device,
    varmap: VarMap,
    word: Var,
    pos: Var,
    token_type: Var,
    emb_ln: (Var, Var),
    layers: Vec<Layer>,
    cls: (Var, Var),
    opt: AdamW,
    settings: TrainSettings,
    dropout: f32,
    rng: fastrand::Rng,
    /// Names of the tensors that did not come from the checkpoint (a fresh head).
    fresh: Vec<String>,
}

fn model_err(e: candle_core::Error) -> EncoderError {
    EncoderError::Model(e.to_string())
}

/// A checkpoint's `config.json` read as a token classifier with two labels, whatever head the
/// checkpoint had (a bare `BertModel` from a sentence-embedding package trains a fresh head).
fn classifier_config(path: &Path) -> Result<(EncoderConfig, Value), LoadError> {
    let text = std::fs::read_to_string(path).map_err(|e| LoadError::io(path, e))?;
    let mut v: Value = serde_json::from_str(&text)
        .map_err(|e| LoadError::invalid(path, format!("not valid JSON: {e}")))?;
    let Some(obj) = v.as_object_mut() else {
        return Err(LoadError::invalid(path, "not a JSON object"));
    };
    let arch = match obj.get("model_type").and_then(Value::as_str) {
        Some("bert") => Arch::Bert,
        Some("xlm-roberta" | "roberta" | "camembert") => Arch::XlmRoberta,
        other => {
            return Err(LoadError::invalid(
                path,
                format!("model_type {other:?}: expected \"bert\" or \"xlm-roberta\""),
            ));
        }
    };
    let name = match arch {
        Arch::Bert => "BertForTokenClassification",
        Arch::XlmRoberta => "XLMRobertaForTokenClassification",
    };
    obj.insert("architectures".into(), serde_json::json!([name]));
    obj.insert(
        "id2label".into(),
        serde_json::json!({"0": "drop", "1": "keep"}),
    );
    obj.insert("label2id".into(), serde_json::json!({"drop": 0, "keep": 1}));
    obj.remove("num_labels");
    let cfg = EncoderConfig::from_json(&v.to_string()).map_err(|p| LoadError::invalid(path, p))?;
    Ok((cfg, v))
}

/// Normal(0, std) values from the seeded generator (Box–Muller).
fn normal(rng: &mut fastrand::Rng, n: usize, std: f32) -> Vec<f32> {
    (0..n)
        .map(|_| {
            let (u1, u2) = (rng.f32().max(f32::MIN_POSITIVE), rng.f32());
            std * (-2.0 * u1.ln()).sqrt() * (std::f32::consts::TAU * u2).cos()
        })
        .collect()
}

/// A checkpoint's `name.weight` of shape `w` and `name.bias` of `w[0]` values.
fn pair(
    var: &mut impl FnMut(&str, &[usize], Option<f32>) -> Result<Var, LoadError>,
    name: &str,
    w: &[usize],
) -> Result<(Var, Var), LoadError> {
    Ok((
        var(&format!("{name}.weight"), w, None)?,
        var(&format!("{name}.bias"), &w[..1], None)?,
    ))
}

impl Trainer {
    /// Loads every weight of `files` as a trainable variable. A missing classifier head (or one
    /// with another number of labels) is initialised fresh, N(0, 0.02) weights and zero bias.
    pub fn from_checkpoint(
        files: &ModelFiles,
        device_name: &str,
        settings: TrainSettings,
    ) -> Result<Self, LoadError> {
        let dev = crate::encoder::candle_device(device_name)?;
        let (cfg, base_config) = classifier_config(&files.config)?;
        let path = files.weights.as_path();
        let is_pth = path
            .extension()
            .is_some_and(|e| e == "bin" || e == "pt" || e == "pth");
        let tensors: HashMap<String, Tensor> = if is_pth {
            candle_core::pickle::read_all(path)
                .map_err(|e| LoadError::invalid(path, format!("not a PyTorch checkpoint: {e}")))?
                .into_iter()
                .collect()
        } else {
            candle_core::safetensors::load(path, &Device::Cpu)
                .map_err(|e| LoadError::invalid(path, format!("not a safetensors file: {e}")))?
        };
        let p = cfg.arch.prefix();
        let prefix = if tensors.contains_key(&format!("{p}.embeddings.word_embeddings.weight")) {
            format!("{p}.")
        } else {
            String::new()
        };
        let mut rng = fastrand::Rng::with_seed(settings.seed);
        let varmap = VarMap::new();
        let mut fresh = Vec::new();
        let dev_err = |e: candle_core::Error| LoadError::Device {
            device: device_name.to_string(),
            problem: e.to_string(),
        };
        // every variable is stored under the Hugging Face name the loader reads back
        let mut var = |name: &str, shape: &[usize], init: Option<f32>| -> Result<Var, LoadError> {
            let (stored, key) = if name.starts_with("classifier.") {
                (name.to_string(), name.to_string())
            } else {
                (format!("{p}.{name}"), format!("{prefix}{name}"))
            };
            let t = match tensors.get(&key) {
                Some(t) if t.dims() == shape => t
                    .to_dtype(DType::F32)
                    .and_then(|t| t.to_device(&dev))
                    .map_err(dev_err)?,
                Some(t) if init.is_none() => {
                    return Err(LoadError::invalid(
                        path,
                        format!("tensor {key}: shape {:?}, expected {shape:?}", t.dims()),
                    ));
                }
                None if init.is_none() => {
                    return Err(LoadError::invalid(path, format!("missing tensor {key}")));
                }
                _ => {
                    fresh.push(stored.clone());
                    let n = shape.iter().product();
                    let values = match init {
                        Some(std) if std > 0.0 => normal(&mut rng, n, std),
                        _ => vec![0.0; n],
                    };
                    Tensor::from_vec(values, shape, &dev).map_err(dev_err)?
                }
            };
            let v = Var::from_tensor(&t).map_err(dev_err)?;
            varmap
                .data()
                .lock()
                .map_err(|_| LoadError::invalid(path, "variable map poisoned"))?
                .insert(stored, v.clone());
            Ok(v)
        };
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let word = var(
            "embeddings.word_embeddings.weight",
            &[cfg.vocab_size, h],
            None,
        )?;
        let pos = var(
            "embeddings.position_embeddings.weight",
            &[cfg.max_position_embeddings, h],
            None,
        )?;
        let token_type = var(
            "embeddings.token_type_embeddings.weight",
            &[cfg.type_vocab_size, h],
            None,
        )?;
        let emb_ln = pair(&mut var, "embeddings.LayerNorm", &[h])?;
        let mut layers = Vec::with_capacity(cfg.num_layers);
        for l in 0..cfg.num_layers {
            let n = |s: &str| format!("encoder.layer.{l}.{s}");
            layers.push(Layer {
                q: pair(&mut var, &n("attention.self.query"), &[h, h])?,
                k: pair(&mut var, &n("attention.self.key"), &[h, h])?,
                v: pair(&mut var, &n("attention.self.value"), &[h, h])?,
                attn_out: pair(&mut var, &n("attention.output.dense"), &[h, h])?,
                ln1: pair(&mut var, &n("attention.output.LayerNorm"), &[h])?,
                ffn_in: pair(&mut var, &n("intermediate.dense"), &[i, h])?,
                ffn_out: pair(&mut var, &n("output.dense"), &[h, i])?,
                ln2: pair(&mut var, &n("output.LayerNorm"), &[h])?,
            });
        }
        let cls = (
            var("classifier.weight", &[2, h], Some(0.02))?,
            var("classifier.bias", &[2], Some(0.0))?,
        );
        let opt = AdamW::new(
            varmap.all_vars(),
            ParamsAdamW {
                lr: settings.lr,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: settings.weight_decay,
            },
        )
        .map_err(dev_err)?;
        let dropout = settings.dropout.unwrap_or_else(|| {
            base_config
                .get("hidden_dropout_prob")
                .and_then(Value::as_f64)
                .map_or(0.1, |p| p as f32)
        });
        Ok(Self {
            cfg,
            base_config,
            device: dev,
            varmap,
            word,
            pos,
            token_type,
            emb_ln,
            layers,
            cls,
            opt,
            dropout: dropout.clamp(0.0, 0.9),
            rng: fastrand::Rng::with_seed(settings.seed ^ 0x9E37_79B9_7F4A_7C15),
            settings,
            fresh,
        })
    }

    pub fn config(&self) -> &EncoderConfig {
        &self.cfg
    }

    /// The weights that did not come from the checkpoint.
    pub fn fresh(&self) -> &[String] {
        &self.fresh
    }

    /// Trainable parameters.
    pub fn parameters(&self) -> usize {
        self.varmap.all_vars().iter().map(|v| v.elem_count()).sum()
    }

    /// The longest sequence the position table allows (XLM-R reserves `pad + 1` slots).
    pub fn max_len(&self) -> usize {
        match self.cfg.arch {
            Arch::Bert => self.cfg.max_position_embeddings,
            Arch::XlmRoberta => self
                .cfg
                .max_position_embeddings
                .saturating_sub(self.cfg.pad_token_id as usize + 1),
        }
    }

    /// Ids, positions, additive attention mask, labels and label weights of a padded batch.
    fn tensors(&self, batch: &Batch) -> candle_core::Result<[Tensor; 5]> {
        let b = batch.ids.len();
        let len = batch.ids.iter().map(Vec::len).max().unwrap_or(0).max(1);
        let pad = self.cfg.pad_token_id;
        let (mut ids, mut pos, mut mask) = (
            Vec::with_capacity(b * len),
            Vec::with_capacity(b * len),
            Vec::with_capacity(b * len),
        );
        let (mut labels, mut weights) = (Vec::with_capacity(b * len), Vec::with_capacity(b * len));
        for (seq, lab) in batch.ids.iter().zip(&batch.labels) {
            for j in 0..len {
                let real = j < seq.len();
                ids.push(if real { seq[j] } else { pad });
                pos.push(match (self.cfg.arch, real) {
                    (Arch::Bert, _) => j as u32,
                    (Arch::XlmRoberta, true) => pad + 1 + j as u32,
                    (Arch::XlmRoberta, false) => pad,
                });
                mask.push(if real { 0.0f32 } else { -1e9 });
                let l = lab.get(j).copied().filter(|_| real).unwrap_or(IGNORE);
                labels.push(if l == IGNORE { 0u32 } else { l as u32 });
                weights.push(if l == IGNORE { 0.0f32 } else { 1.0 });
            }
        }
        let d = &self.device;
        Ok([
            Tensor::from_vec(ids, (b, len), d)?,
            Tensor::from_vec(pos, (b, len), d)?,
            Tensor::from_vec(mask, (b, 1, 1, len), d)?,
            Tensor::from_vec(labels, (b * len, 1), d)?,
            Tensor::from_vec(weights, b * len, d)?,
        ])
    }

    fn dropout(&mut self, x: Tensor, train: bool) -> candle_core::Result<Tensor> {
        if !train || self.dropout <= 0.0 {
            return Ok(x);
        }
        let p = self.dropout;
        let keep = 1.0 / (1.0 - p);
        let m: Vec<f32> = (0..x.elem_count())
            .map(|_| if self.rng.f32() < p { 0.0 } else { keep })
            .collect();
        let mask = Tensor::from_vec(m, x.shape(), &self.device)?;
        x * mask
    }

    /// Logits `(b·len, 2)` of a batch.
    fn logits(
        &mut self,
        ids: &Tensor,
        pos: &Tensor,
        mask: &Tensor,
        train: bool,
    ) -> candle_core::Result<Tensor> {
        let cfg = self.cfg.clone();
        let (b, len) = ids.dims2()?;
        let (h, heads, d) = (cfg.hidden_size, cfg.num_heads, cfg.head_dim());
        let eps = f64::from(cfg.layer_norm_eps);
        let lin = |x: &Tensor, (w, bias): &(Var, Var)| x.matmul(&w.t()?)?.broadcast_add(bias);
        let ln = |x: &Tensor, (w, bias): &(Var, Var)| -> candle_core::Result<Tensor> {
            let mean = x.mean_keepdim(D::Minus1)?;
            let xc = x.broadcast_sub(&mean)?;
            let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
            xc.broadcast_div(&(var + eps)?.sqrt()?)?
                .broadcast_mul(w)?
                .broadcast_add(bias)
        };
        let flat_ids = ids.flatten_all()?;
        let flat_pos = pos.flatten_all()?;
        let x = self
            .word
            .index_select(&flat_ids, 0)?
            .add(&self.pos.index_select(&flat_pos, 0)?)?
            .broadcast_add(&self.token_type.narrow(0, 0, 1)?)?;
        let x = ln(&x, &self.emb_ln)?;
        let mut x = self.dropout(x, train)?;
        let scale = 1.0 / (d as f64).sqrt();
        for li in 0..self.layers.len() {
            let heads_of = |t: Tensor| -> candle_core::Result<Tensor> {
                t.reshape((b, len, heads, d))?.transpose(1, 2)?.contiguous()
            };
            let l = &self.layers[li];
            let q = heads_of(lin(&x, &l.q)?)?;
            let k = heads_of(lin(&x, &l.k)?)?;
            let v = heads_of(lin(&x, &l.v)?)?;
            let scores = (q.matmul(&k.t()?.contiguous()?)? * scale)?.broadcast_add(mask)?;
            let p = candle_nn::ops::softmax(&scores, D::Minus1)?;
            let ctx = p
                .matmul(&v)?
                .transpose(1, 2)?
                .contiguous()?
                .reshape((b * len, h))?;
            let a = lin(&ctx, &l.attn_out)?;
            let a = self.dropout(a, train)?;
            let l = &self.layers[li];
            x = ln(&(x + a)?, &l.ln1)?;
            let f = lin(&x, &l.ffn_in)?;
            let f = match cfg.activation {
                Activation::Gelu => f.gelu_erf()?,
                Activation::GeluTanh => f.gelu()?,
                Activation::Relu => f.relu()?,
            };
            let f = lin(&f, &l.ffn_out)?;
            let f = self.dropout(f, train)?;
            x = ln(&(x + f)?, &self.layers[li].ln2)?;
        }
        let x = self.dropout(x, train)?;
        lin(&x, &self.cls)
    }

    /// Per-token negative log-likelihoods `(b·len)` and the logits.
    fn nll(
        &mut self,
        batch: &Batch,
        train: bool,
    ) -> candle_core::Result<(Tensor, Tensor, Tensor, Tensor)> {
        let [ids, pos, mask, labels, weights] = self.tensors(batch)?;
        let logits = self.logits(&ids, &pos, &mask, train)?;
        let logp = candle_nn::ops::log_softmax(&logits, D::Minus1)?;
        let nll = logp.gather(&labels, 1)?.flatten_all()?.neg()?;
        Ok((nll, weights, logits, labels))
    }

    /// One AdamW step on `batch`: masked mean cross-entropy, backward, clip, update.
    pub fn step(&mut self, batch: &Batch) -> Result<StepStats, EncoderError> {
        let (nll, weights, _, _) = self.nll(batch, true).map_err(model_err)?;
        let tokens = weights
            .sum_all()
            .and_then(|t| t.to_scalar::<f32>())
            .map_err(model_err)?;
        if tokens == 0.0 {
            return Ok(StepStats {
                loss: 0.0,
                tokens: 0,
                grad_norm: 0.0,
            });
        }
        let loss = ((nll * &weights)
            .and_then(|t| t.sum_all())
            .map_err(model_err)?
            / f64::from(tokens))
        .map_err(model_err)?;
        let mut grads = loss.backward().map_err(model_err)?;
        let vars = self.varmap.all_vars();
        let mut sq = 0f64;
        for v in &vars {
            if let Some(g) = grads.get(v) {
                sq += f64::from(
                    g.sqr()
                        .and_then(|s| s.sum_all())
                        .and_then(|s| s.to_scalar::<f32>())
                        .map_err(model_err)?,
                );
            }
        }
        let norm = sq.sqrt();
        if let Some(max) = self.settings.max_grad_norm
            && norm > max
        {
            let f = max / (norm + 1e-6);
            for v in &vars {
                if let Some(g) = grads.remove(v) {
                    grads.insert(v, (g * f).map_err(model_err)?);
                }
            }
        }
        self.opt.step(&grads).map_err(model_err)?;
        Ok(StepStats {
            loss: loss.to_scalar::<f32>().map_err(model_err)?,
            tokens: tokens as usize,
            grad_norm: norm as f32,
        })
    }

    /// Loss and accuracy sums on `batch` without dropout or an update.
    pub fn evaluate(&mut self, batch: &Batch) -> Result<EvalSums, EncoderError> {
        let (nll, weights, logits, labels) = self.nll(batch, false).map_err(model_err)?;
        let loss_sum = (nll * &weights)
            .and_then(|t| t.sum_all())
            .and_then(|t| t.to_scalar::<f32>())
            .map_err(model_err)?;
        let pred = logits
            .argmax(D::Minus1)
            .and_then(|t| t.to_vec1::<u32>())
            .map_err(model_err)?;
        let labels = labels
            .flatten_all()
            .and_then(|t| t.to_vec1::<u32>())
            .map_err(model_err)?;
        let weights = weights.to_vec1::<f32>().map_err(model_err)?;
        let mut sums = EvalSums {
            loss_sum: f64::from(loss_sum),
            ..EvalSums::default()
        };
        for ((p, l), w) in pred.iter().zip(&labels).zip(&weights) {
            if *w > 0.0 {
                sums.tokens += 1;
                sums.correct += usize::from(p == l);
            }
        }
        Ok(sums)
    }

    /// Keep probabilities (label 1) of each sequence, without dropout: what the served model
    /// computes, through the training forward (the sequences are padded into one batch).
    pub fn keep_probs(&mut self, seqs: &[Vec<u32>]) -> Result<Vec<Vec<f32>>, EncoderError> {
        let batch = Batch {
            ids: seqs.to_vec(),
            labels: seqs.iter().map(|s| vec![IGNORE; s.len()]).collect(),
        };
        let [ids, pos, mask, _, _] = self.tensors(&batch).map_err(model_err)?;
        let logits = self.logits(&ids, &pos, &mask, false).map_err(model_err)?;
        let probs = candle_nn::ops::softmax(&logits, D::Minus1)
            .and_then(|p| p.narrow(1, 1, 1))
            .and_then(|p| p.flatten_all())
            .and_then(|p| p.to_vec1::<f32>())
            .map_err(model_err)?;
        let len = probs.len() / seqs.len().max(1);
        Ok(seqs
            .iter()
            .enumerate()
            .map(|(i, s)| probs[i * len..i * len + s.len()].to_vec())
            .collect())
    }

    /// Writes `config.json` (two labels, 1 = keep) and `model.safetensors` into `dir`.
    pub fn save(&self, dir: &Path) -> Result<(), LoadError> {
        std::fs::create_dir_all(dir).map_err(|e| LoadError::io(dir, e))?;
        let config = dir.join("config.json");
        let text = serde_json::to_string_pretty(&self.base_config)
            .map_err(|e| LoadError::invalid(&config, e.to_string()))?;
        std::fs::write(&config, text + "\n").map_err(|e| LoadError::io(&config, e))?;
        let weights = dir.join("model.safetensors");
        self.varmap
            .save(&weights)
            .map_err(|e| LoadError::invalid(&weights, e.to_string()))
    }
}
