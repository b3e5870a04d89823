//! Checkpoint files of a model directory: which weight files to read (single or sharded
//! safetensors, `pytorch_model.bin`, or one GGUF file), reading them into f32 tensors by name,
//! and the sha256 digest of config + weights. Safetensors and GGUF tensors are read one at a
//! time when the model takes them (`lingua-tensors`' positioned reads; no mapped pages), so a
//! q8 model never holds an f32 copy of its weights; pickles go through candle whole.

use std::collections::{BTreeSet, HashMap};
use std::io::Read;
use std::path::{Path, PathBuf};

use candle_core::{DType, Device, Tensor};
use sha2::{Digest, Sha256};

use crate::LmError;
use crate::gguf::Gguf;
use lingua_tensors::SafetensorsFile;

/// An f32 tensor read from a checkpoint.
pub(crate) struct Raw {
    pub(crate) shape: Vec<usize>,
    pub(crate) data: Vec<f32>,
}

/// All tensors of a checkpoint, by name, plus where they came from (for errors).
pub(crate) struct Weights {
    pub(crate) source: PathBuf,
    /// Safetensors files, read tensor by tensor when taken.
    files: Vec<SafetensorsFile>,
    /// Tensors of `pytorch_model.bin` pickles, read whole.
    tensors: HashMap<String, Tensor>,
    /// A GGUF file: tensors are read and dequantised one at a time, when taken.
    gguf: Option<Gguf>,
}

fn weights_err(path: &Path, msg: impl std::fmt::Display) -> LmError {
    LmError::Weights {
        path: path.to_path_buf(),
        msg: msg.to_string(),
    }
}

/// The weight files of `dir`, in reading order.
pub(crate) fn weight_files(dir: &Path) -> Result<Vec<PathBuf>, LmError> {
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    for index in [
        "model.safetensors.index.json",
        "pytorch_model.bin.index.json",
    ] {
        let index = dir.join(index);
        if !index.is_file() {
            continue;
        }
        let bytes = std::fs::read(&index).map_err(|source| LmError::Io {
            path: index.clone(),
            source,
        })?;
        let v: serde_json::Value =
            serde_json::from_slice(&bytes).map_err(|e| weights_err(&index, e))?;
        let map = v
            .get("weight_map")
            .and_then(serde_json::Value::as_object)
            .ok_or_else(|| weights_err(&index, "no `weight_map` object"))?;
        let mut files = BTreeSet::new();
        for f in map.values() {
            let f = f
                .as_str()
                .ok_or_else(|| weights_err(&index, "a `weight_map` entry is not a file name"))?;
            if f.contains('/') || f.contains('\\') || f.starts_with('.') {
                return Err(weights_err(&index, format!("bad shard name {f:?}")));
            }
            files.insert(f.to_string());
        }
        if files.is_empty() {
            return Err(weights_err(&index, "empty `weight_map`"));
        }
        return Ok(files.into_iter().map(|f| dir.join(f)).collect());
    }
    let bin = dir.join("pytorch_model.bin");
    if bin.is_file() {
        return Ok(vec![bin]);
    }
    Err(LmError::NoWeights {
        dir: dir.to_path_buf(),
    })
}

/// sha256 over the config bytes and every weight file (name and contents), hex, 16 digits.
pub(crate) fn digest(config: &[u8], files: &[PathBuf]) -> Result<String, LmError> {
    let mut h = Sha256::new();
    h.update(b"lingua-causal v1\0config\0");
    h.update((config.len() as u64).to_le_bytes());
    h.update(config);
    let mut buf = vec![0u8; 1 << 20];
    for f in files {
        let name = f
            .file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default();
        h.update(b"\0file\0");
        h.update(name.as_bytes());
        h.update(b"\0");
        let mut file = std::fs::File::open(f).map_err(|source| LmError::Io {
            path: f.clone(),
            source,
        })?;
        loop {
            let n = file.read(&mut buf).map_err(|source| LmError::Io {
                path: f.clone(),
                source,
            })?;
            if n == 0 {
                break;
            }
            h.update(&buf[..n]);
        }
    }
    let out = h.finalize();
    Ok(hex::encode(&out[..8]))
}

impl Weights {
    /// Reads every tensor of `files` (safetensors or PyTorch pickles) onto the CPU.
    pub(crate) fn read(files: &[PathBuf]) -> Result<Self, LmError> {
        let mut tensors = HashMap::new();
        let mut lazy = Vec::new();
        for f in files {
            let is_safetensors = f
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("safetensors"));
            if is_safetensors {
                lazy.push(SafetensorsFile::open(f).map_err(|e| match e {
                    lingua_tensors::TensorsError::Io { path, source } => {
                        LmError::Io { path, source }
                    }
                    e @ lingua_tensors::TensorsError::Invalid { .. } => weights_err(f, e),
                })?);
            } else {
                let t = candle_core::pickle::read_all(f).map_err(|e| weights_err(f, e))?;
                tensors.extend(t);
            }
        }
        let source = match files {
            [one] => one.clone(),
            _ => files
                .first()
                .and_then(|f| f.parent())
                .map(Path::to_path_buf)
                .unwrap_or_default(),
        };
        Ok(Self {
            source,
            files: lazy,
            tensors,
            gguf: None,
        })
    }

    /// A GGUF file, read lazily.
    pub(crate) fn gguf(g: Gguf) -> Self {
        Self {
            source: g.path.clone(),
            files: Vec::new(),
            tensors: HashMap::new(),
            gguf: Some(g),
        }
    }

    /// Every tensor by its checkpoint name (a GGUF file's dequantised under their Hugging Face
    /// names).
    pub(crate) fn into_tensors(self) -> Result<HashMap<String, Tensor>, LmError> {
        let mut out = self.tensors;
        for f in &self.files {
            // (integer buffers such as GPT-2's causal masks are not weights)
            for name in f.names().filter(|n| f.is_float(n)) {
                let shape = f.shape(name).unwrap_or_default().to_vec();
                let data = f
                    .read_vec(&shape, name)
                    .map_err(|e| weights_err(f.path(), format!("tensor {name}: {e}")))?;
                let t = Tensor::from_vec(data, shape, &Device::Cpu)
                    .map_err(|e| weights_err(f.path(), format!("tensor {name}: {e}")))?;
                out.insert(name.to_string(), t);
            }
        }
        let Some(g) = self.gguf else {
            return Ok(out);
        };
        for name in g.hf_names() {
            if let Some(Raw { shape, data }) = g.read(name)? {
                let t = Tensor::from_vec(data, shape, &Device::Cpu)
                    .map_err(|e| weights_err(&g.path, format!("tensor {name}: {e}")))?;
                out.insert(name.to_string(), t);
            }
        }
        Ok(out)
    }

    /// The shape of tensor `key`, from whichever source holds it.
    fn shape_of(&self, key: &str) -> Option<Vec<usize>> {
        if let Some(g) = &self.gguf {
            return g.shape(key).map(<[usize]>::to_vec);
        }
        self.files
            .iter()
            .find_map(|f| f.shape(key))
            .or_else(|| self.tensors.get(key).map(Tensor::dims))
            .map(<[usize]>::to_vec)
    }

    /// The values of tensor `key` (of `shape`, already checked) as f32.
    fn values(&self, key: &str, shape: &[usize]) -> Result<Vec<f32>, LmError> {
        if let Some(g) = &self.gguf {
            return g
                .read(key)?
                .map(|r| r.data)
                .ok_or_else(|| LmError::MissingTensor {
                    path: self.source.clone(),
                    name: key.to_string(),
                });
        }
        if let Some(f) = self.files.iter().find(|f| f.contains(key)) {
            return f
                .read_vec(shape, key)
                .map_err(|e| weights_err(f.path(), format!("tensor {key}: {e}")));
        }
        let t = self
            .tensors
            .get(key)
            .ok_or_else(|| LmError::MissingTensor {
                path: self.source.clone(),
                name: key.to_string(),
            })?;
        t.to_dtype(DType::F32)
            .and_then(|t| t.flatten_all())
            .and_then(|t| t.to_vec1::<f32>())
            .map_err(|e| weights_err(&self.source, format!("tensor {key}: {e}")))
    }

    /// Whether one of the spellings of `name` (with any of `prefixes`) is present.
    pub(crate) fn has(&self, prefixes: &[&str], name: &str) -> bool {
        spellings(prefixes, name)
            .iter()
            .any(|k| self.shape_of(k).is_some())
    }

    /// The tensor `name` (tried with each of `prefixes`) as f32, checked against `shape`
    /// before it is read.
    pub(crate) fn take(
        &self,
        prefixes: &[&str],
        name: &str,
        shape: &[usize],
    ) -> Result<Raw, LmError> {
        let (key, got) = spellings(prefixes, name)
            .into_iter()
            .find_map(|k| self.shape_of(&k).map(|s| (k, s)))
            .ok_or_else(|| LmError::MissingTensor {
                path: self.source.clone(),
                name: name.to_string(),
            })?;
        if got != shape {
            return Err(LmError::Shape {
                path: self.source.clone(),
                name: key,
                expected: shape.to_vec(),
                got,
            });
        }
        Ok(Raw {
            shape: shape.to_vec(),
            data: self.values(&key, shape)?,
        })
    }

    /// Like [`Weights::take`] for an optional tensor.
    pub(crate) fn take_opt(
        &self,
        prefixes: &[&str],
        name: &str,
        shape: &[usize],
    ) -> Result<Option<Raw>, LmError> {
        if self.has(prefixes, name) {
            self.take(prefixes, name, shape).map(Some)
        } else {
            Ok(None)
        }
    }
}

fn spellings(prefixes: &[&str], name: &str) -> Vec<String> {
    prefixes.iter().map(|p| format!("{p}{name}")).collect()
}
