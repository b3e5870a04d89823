//! The same encoder written with candle tensor ops, for devices other than our CPU kernels
//! (CUDA with the `cuda` feature) and as an independent cross-check of the CPU kernels.
//!
//! Sequences run one at a time, unpadded; QKV is one fused matmul; weights are stored
//! pre-transposed so every projection is a plain `(L, in) × (in, out)` matmul.

use candle_core::{Device, Tensor};

use crate::config::{Activation, Arch, EncoderConfig};
use crate::load::LoadError;

pub(crate) struct Lin {
    wt: Tensor,
    b: Tensor,
}

impl Lin {
    fn forward(&self, x: &Tensor) -> candle_core::Result<Tensor> {
        x.matmul(&self.wt)?.broadcast_add(&self.b)
    }
}

struct LayerT {
    qkv: Lin,
    attn_out: Lin,
    ln1: (Tensor, Tensor),
    ffn_in: Lin,
    ffn_out: Lin,
    ln2: (Tensor, Tensor),
}

pub(crate) struct TensorEncoder {
    cfg: EncoderConfig,
    device: Device,
    word: Tensor,
    pos: Tensor,
    type0: Tensor,
    emb_ln: (Tensor, Tensor),
    layers: Vec<LayerT>,
    cls: Lin,
}

/// Raw weights as the loader hands them over (PyTorch layouts, QKV already concatenated).
pub(crate) struct RawLayer {
    pub qkv: (Vec<f32>, Vec<f32>),
    pub attn_out: (Vec<f32>, Vec<f32>),
    pub ln1: (Vec<f32>, Vec<f32>),
    pub ffn_in: (Vec<f32>, Vec<f32>),
    pub ffn_out: (Vec<f32>, Vec<f32>),
    pub ln2: (Vec<f32>, Vec<f32>),
}

pub(crate) struct RawWeights {
    pub word: Vec<f32>,
    pub pos: Vec<f32>,
    pub type0: Vec<f32>,
    pub emb_ln: (Vec<f32>, Vec<f32>),
    pub layers: Vec<RawLayer>,
    pub cls: (Vec<f32>, Vec<f32>),
}

impl TensorEncoder {
    pub(crate) fn new(
        cfg: &EncoderConfig,
        raw: &RawWeights,
        device: Device,
    ) -> Result<Self, LoadError> {
        let dev_err = |e: candle_core::Error| LoadError::Device {
            device: format!("{device:?}"),
            problem: e.to_string(),
        };
        let t = |v: &[f32], shape: &[usize]| Tensor::from_slice(v, shape, &device).map_err(dev_err);
        let lin = |w: &[f32], b: &[f32], n: usize, k: usize| -> Result<Lin, LoadError> {
            Ok(Lin {
                wt: t(w, &[n, k])?
                    .t()
                    .and_then(|x| x.contiguous())
                    .map_err(dev_err)?,
                b: t(b, &[n])?,
            })
        };
        let (h, i) = (cfg.hidden_size, cfg.intermediate_size);
        let mut layers = Vec::new();
        for l in &raw.layers {
            layers.push(LayerT {
                qkv: lin(&l.qkv.0, &l.qkv.1, 3 * h, h)?,
                attn_out: lin(&l.attn_out.0, &l.attn_out.1, h, h)?,
                ln1: (t(&l.ln1.0, &[h])?, t(&l.ln1.1, &[h])?),
                ffn_in: lin(&l.ffn_in.0, &l.ffn_in.1, i, h)?,
                ffn_out: lin(&l.ffn_out.0, &l.ffn_out.1, h, i)?,
                ln2: (t(&l.ln2.0, &[h])?, t(&l.ln2.1, &[h])?),
            });
        }
        Ok(Self {
            cfg: cfg.clone(),
            word: t(&raw.word, &[cfg.vocab_size, h])?,
            pos: t(&raw.pos, &[cfg.max_position_embeddings, h])?,
            type0: t(&raw.type0, &[h])?,
            emb_ln: (t(&raw.emb_ln.0, &[h])?, t(&raw.emb_ln.1, &[h])?),
            layers,
            cls: lin(&raw.cls.0, &raw.cls.1, cfg.num_labels, h)?,
            device: device.clone(),
        })
    }

    pub(crate) fn forward(&self, ids: &[u32], positions: &[u32]) -> candle_core::Result<Vec<f32>> {
        let cfg = &self.cfg;
        let (h, heads, d) = (cfg.hidden_size, cfg.num_heads, cfg.head_dim());
        let len = ids.len();
        let eps = cfg.layer_norm_eps;
        let ids_t = Tensor::from_slice(ids, len, &self.device)?;
        let pos_t = Tensor::from_slice(positions, len, &self.device)?;
        let mut x = self
            .word
            .index_select(&ids_t, 0)?
            .add(&self.pos.index_select(&pos_t, 0)?)?
            .broadcast_add(&self.type0)?;
        x = candle_nn::ops::layer_norm(&x, &self.emb_ln.0, &self.emb_ln.1, eps)?;
        let scale = 1.0 / (d as f64).sqrt();
        for l in &self.layers {
            let qkv = l.qkv.forward(&x)?;
            let split = |i: usize| -> candle_core::Result<Tensor> {
                qkv.narrow(1, i * h, h)?
                    .reshape((len, heads, d))?
                    .transpose(0, 1)?
                    .contiguous()
            };
            let (q, k, v) = (split(0)?, split(1)?, split(2)?);
            let scores = (q.matmul(&k.t()?)? * scale)?;
            let p = candle_nn::ops::softmax_last_dim(&scores)?;
            let ctx = p.matmul(&v)?.transpose(0, 1)?.reshape((len, h))?;
            let a = l.attn_out.forward(&ctx)?;
            x = candle_nn::ops::layer_norm(&(x + a)?, &l.ln1.0, &l.ln1.1, eps)?;
            let f = l.ffn_in.forward(&x)?;
            let f = match cfg.activation {
                Activation::Gelu => f.gelu_erf()?,
                Activation::GeluTanh => f.gelu()?,
                Activation::Relu => f.relu()?,
            };
            let f = l.ffn_out.forward(&f)?;
            x = candle_nn::ops::layer_norm(&(x + f)?, &l.ln2.0, &l.ln2.1, eps)?;
        }
        let logits = self.cls.forward(&x)?;
        let probs = candle_nn::ops::softmax_last_dim(&logits)?;
        probs.narrow(1, 1, 1)?.flatten_all()?.to_vec1::<f32>()
    }
}

/// Position ids of one sequence: BERT counts from 0; (XLM-)RoBERTa uses
/// `cumsum(id != pad) * (id != pad) + pad`, as HF's `create_position_ids_from_input_ids`.
pub(crate) fn position_ids(arch: Arch, pad: u32, ids: &[u32], out: &mut Vec<u32>) {
    out.clear();
    match arch {
        Arch::Bert => out.extend(0..ids.len() as u32),
        Arch::XlmRoberta => {
            let mut c = 0u32;
            for &id in ids {
                if id != pad {
                    c += 1;
                    out.push(c + pad);
                } else {
                    out.push(pad);
                }
            }
        }
    }
}
