//! Checkpoint tensors by name, as f32 vectors. `model.safetensors` is read lean by
//! `lingua-tensors` (positioned reads in 1 MiB pieces straight into each vector, no mapped
//! pages); `pytorch_model.bin` goes through candle's pickle reader.

use std::path::Path;

use candle_core::Tensor;
use candle_nn::VarBuilder;
pub(crate) use lingua_tensors::SafetensorsFile;

use crate::load::LoadError;

/// Where the tensors come from.
pub(crate) enum Tensors<'a> {
    Safetensors(SafetensorsFile),
    Candle(VarBuilder<'a>),
}

impl Tensors<'_> {
    pub(crate) fn contains(&self, name: &str) -> bool {
        match self {
            Tensors::Safetensors(f) => f.contains(name),
            Tensors::Candle(vb) => vb.contains_tensor(name),
        }
    }

    /// The tensor `name`, which must have `shape`, as f32 in row-major order.
    pub(crate) fn get(
        &self,
        file: &Path,
        shape: &[usize],
        name: &str,
    ) -> Result<Vec<f32>, LoadError> {
        if let Tensors::Candle(vb) = self {
            return candle_vec(vb, file, shape, name);
        }
        let mut out = Vec::new();
        self.each_piece(file, shape, name, |total, piece| {
            // (`total` is checked against the file's bytes before the first piece)
            if out.capacity() == 0 {
                out.reserve_exact(total);
            }
            out.extend_from_slice(piece)
        })?;
        Ok(out)
    }

    /// Hands the tensor `name` (of `shape`) to `take(total values, piece)` in row-major pieces of
    /// whole rows (of the last dimension), so a caller that converts it never holds all of it in
    /// f32. Nothing is handed over before the shape and size are checked.
    pub(crate) fn each_piece(
        &self,
        file: &Path,
        shape: &[usize],
        name: &str,
        mut take: impl FnMut(usize, &[f32]),
    ) -> Result<(), LoadError> {
        match self {
            Tensors::Safetensors(f) => f
                .read(shape, name, take)
                .map_err(|e| LoadError::invalid(file, format!("tensor {name}: {e}"))),
            Tensors::Candle(vb) => {
                let v = candle_vec(vb, file, shape, name)?;
                take(v.len(), &v);
                Ok(())
            }
        }
    }
}

/// A tensor through candle's reader, as f32.
fn candle_vec(
    vb: &VarBuilder<'_>,
    file: &Path,
    shape: &[usize],
    name: &str,
) -> Result<Vec<f32>, LoadError> {
    let err = |e: candle_core::Error| LoadError::invalid(file, format!("tensor {name}: {e}"));
    let t: Tensor = vb.get(shape, name).map_err(err)?;
    t.flatten_all()
        .and_then(|t| t.to_vec1::<f32>())
        .map_err(err)
}
