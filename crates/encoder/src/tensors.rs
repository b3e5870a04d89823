//! Checkpoint tensors by name, as f32 vectors. `model.safetensors` is read with positioned reads:
//! the header once, then each tensor in 1 MiB pieces straight into its vector, so loading holds
//! the weights already converted plus one piece, and no mapped file pages count against the
//! process (a memory-mapped file would add its whole size to the peak). `pytorch_model.bin`
//! goes through candle's pickle reader.

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use candle_core::Tensor;
use candle_nn::VarBuilder;
use safetensors::tensor::{Dtype, Metadata};

use crate::load::LoadError;

/// Bytes read per positioned read.
const PIECE: usize = 1 << 20;
/// A safetensors header larger than this is refused (the format's own limit is 100 MB).
const MAX_HEADER: u64 = 100 << 20;

/// Where the tensors come from.
pub(crate) enum Tensors<'a> {
    Safetensors(SafetensorsFile),
    Candle(VarBuilder<'a>),
}

impl Tensors<'_> {
    pub(crate) fn contains(&self, name: &str) -> bool {
        match self {
            Tensors::Safetensors(f) => f.tensors.contains_key(name),
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

struct Entry {
    dtype: Dtype,
    shape: Vec<usize>,
    start: u64,
    end: u64,
}

/// An open `.safetensors` file and its table of tensors.
pub(crate) struct SafetensorsFile {
    file: File,
    path: PathBuf,
    tensors: HashMap<String, Entry>,
}

impl SafetensorsFile {
    pub(crate) fn open(path: &Path) -> Result<Self, LoadError> {
        let bad =
            |e: String| LoadError::invalid(path, format!("not a readable safetensors file: {e}"));
        let file = File::open(path).map_err(|e| LoadError::io(path, e))?;
        let size = file.metadata().map_err(|e| LoadError::io(path, e))?.len();
        let mut len = [0u8; 8];
        file.read_exact_at(&mut len, 0)
            .map_err(|e| bad(format!("no header length ({e})")))?;
        let n = u64::from_le_bytes(len);
        if n > MAX_HEADER || 8 + n > size {
            return Err(bad(format!("a header of {n} bytes in a file of {size}")));
        }
        let mut header = vec![0u8; n as usize];
        file.read_exact_at(&mut header, 8)
            .map_err(|e| bad(e.to_string()))?;
        let meta: Metadata = serde_json::from_slice(&header).map_err(|e| bad(e.to_string()))?;
        let data = 8 + n;
        let mut tensors = HashMap::new();
        for (name, info) in meta.tensors() {
            let (a, b) = info.data_offsets;
            let (start, end) = (data + a as u64, data + b as u64);
            if a > b || end > size {
                return Err(bad(format!("tensor {name} lies outside the file")));
            }
            tensors.insert(
                name,
                Entry {
                    dtype: info.dtype,
                    shape: info.shape.clone(),
                    start,
                    end,
                },
            );
        }
        Ok(Self {
            file,
            path: path.to_path_buf(),
            tensors,
        })
    }

    fn read(
        &self,
        shape: &[usize],
        name: &str,
        mut take: impl FnMut(usize, &[f32]),
    ) -> Result<(), String> {
        let e = self.tensors.get(name).ok_or("missing")?;
        if e.shape != shape {
            return Err(format!("shape {:?}, expected {shape:?}", e.shape));
        }
        let width = match e.dtype {
            Dtype::F32 => 4,
            Dtype::F16 | Dtype::BF16 => 2,
            d => return Err(format!("dtype {d:?} (F32, F16 or BF16 expected)")),
        };
        let count: usize = shape.iter().product();
        if (e.end - e.start) as usize != count * width {
            return Err(format!(
                "{} bytes for {count} values of {:?}",
                e.end - e.start,
                e.dtype
            ));
        }
        // Pieces of whole rows: at least one row, about PIECE bytes.
        let row = shape.last().copied().unwrap_or(1).max(1);
        let rows_per_piece = (PIECE / (row * width)).max(1);
        let mut piece = vec![0u8; (rows_per_piece * row * width).min(count * width)];
        let mut out = Vec::with_capacity(piece.len() / width);
        let (mut done, mut at) = (0, e.start);
        while done < count {
            let bytes = ((count - done) * width).min(piece.len());
            let buf = &mut piece[..bytes];
            self.file
                .read_exact_at(buf, at)
                .map_err(|err| format!("reading {}: {err}", self.path.display()))?;
            at += bytes as u64;
            done += bytes / width;
            out.clear();
            match e.dtype {
                Dtype::F32 => out.extend(
                    buf.chunks_exact(4)
                        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])),
                ),
                Dtype::F16 => out.extend(
                    buf.chunks_exact(2)
                        .map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()),
                ),
                _ => out.extend(
                    buf.chunks_exact(2)
                        .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()),
                ),
            }
            take(count, &out);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use safetensors::tensor::TensorView;

    fn write(dir: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) -> PathBuf {
        let views: Vec<(&str, TensorView<'_>)> = tensors
            .iter()
            .map(|(n, d, s, b)| (*n, TensorView::new(*d, s.clone(), b).unwrap()))
            .collect();
        let path = dir.join("model.safetensors");
        std::fs::write(&path, safetensors::serialize(views, None).unwrap()).unwrap();
        path
    }

    /// Large enough for several pieces: 3 × 1 MiB of f32 rows of 1,000 values.
    #[test]
    fn reads_f32_f16_bf16_in_pieces_and_refuses_bad_shapes_and_files() {
        let dir = tempfile::tempdir().unwrap();
        let rows = 800;
        let big: Vec<f32> = (0..rows * 1000)
            .map(|i| (i % 977) as f32 * 0.5 - 3.0)
            .collect();
        let halfs = [1.5f32, -2.25, 0.0, 1024.0];
        let f16: Vec<u8> = halfs
            .iter()
            .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
            .collect();
        let bf16: Vec<u8> = halfs
            .iter()
            .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
            .collect();
        let path = write(
            dir.path(),
            &[
                (
                    "big",
                    Dtype::F32,
                    vec![rows, 1000],
                    big.iter().flat_map(|x| x.to_le_bytes()).collect(),
                ),
                ("h", Dtype::F16, vec![2, 2], f16),
                ("b", Dtype::BF16, vec![4], bf16),
                ("i", Dtype::I64, vec![1], 7i64.to_le_bytes().to_vec()),
            ],
        );
        let t = Tensors::Safetensors(SafetensorsFile::open(&path).unwrap());
        assert!(t.contains("big") && !t.contains("small"));
        let mut pieces = 0;
        let mut got = Vec::new();
        t.each_piece(&path, &[rows, 1000], "big", |total, p| {
            assert_eq!(total, rows * 1000);
            assert_eq!(p.len() % 1000, 0, "pieces are whole rows");
            pieces += 1;
            got.extend_from_slice(p);
        })
        .unwrap();
        assert!(pieces >= 3, "{pieces} pieces");
        assert_eq!(got, big);
        assert_eq!(t.get(&path, &[2, 2], "h").unwrap(), halfs);
        assert_eq!(t.get(&path, &[4], "b").unwrap(), halfs);
        let err = |shape: &[usize], name: &str| t.get(&path, shape, name).unwrap_err().to_string();
        assert!(
            err(&[4], "h").contains("shape [2, 2], expected [4]"),
            "{}",
            err(&[4], "h")
        );
        assert!(err(&[1], "i").contains("I64"), "{}", err(&[1], "i"));
        assert!(err(&[1], "nope").contains("tensor nope: missing"));

        // a truncated file, a header longer than the file, and no file at all
        let bytes = std::fs::read(&path).unwrap();
        let cut = dir.path().join("cut.safetensors");
        std::fs::write(&cut, &bytes[..bytes.len() - 10]).unwrap();
        let e = SafetensorsFile::open(&cut).err().unwrap().to_string();
        assert!(e.contains("outside the file"), "{e}");
        std::fs::write(&cut, [0xff, 0xff, 0, 0, 0, 0, 0, 0, b'{']).unwrap();
        let e = SafetensorsFile::open(&cut).err().unwrap().to_string();
        assert!(e.contains("header of"), "{e}");
        assert!(SafetensorsFile::open(&dir.path().join("none")).is_err());
    }
}
