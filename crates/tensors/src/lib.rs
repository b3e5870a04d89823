//! Safetensors checkpoints read lean, for both model runtimes: the header once, then each tensor
//! by positioned reads in pieces of about 1 MiB of whole rows, converted to f32 (F32, F16,
//! BF16) straight into the caller's buffer. A loader that converts as it reads never holds a
//! tensor whole in f32, and no memory-mapped file pages count against the process (a mapped
//! file would add its whole size to the peak RSS).

use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use safetensors::tensor::{Dtype, Metadata};

/// Bytes read per positioned read.
const PIECE: usize = 1 << 20;
/// A safetensors header larger than this is refused (the format's own limit is 100 MB).
const MAX_HEADER: u64 = 100 << 20;

/// Why a file cannot be read: the file and what is wrong with it.
#[derive(Debug, thiserror::Error)]
pub enum TensorsError {
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a readable safetensors file: {msg}", path.display())]
    Invalid { path: PathBuf, msg: String },
}

struct Entry {
    dtype: Dtype,
    shape: Vec<usize>,
    start: u64,
    end: u64,
}

/// An open `.safetensors` file and its table of tensors.
pub struct SafetensorsFile {
    file: File,
    path: PathBuf,
    tensors: HashMap<String, Entry>,
}

impl SafetensorsFile {
    pub fn open(path: &Path) -> Result<Self, TensorsError> {
        let bad = |msg: String| TensorsError::Invalid {
            path: path.to_path_buf(),
            msg,
        };
        let io = |source| TensorsError::Io {
            path: path.to_path_buf(),
            source,
        };
        let file = File::open(path).map_err(io)?;
        let size = file.metadata().map_err(io)?.len();
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

    /// Whether the file has a tensor `name`.
    pub fn contains(&self, name: &str) -> bool {
        self.tensors.contains_key(name)
    }

    /// The shape of tensor `name`.
    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.tensors.get(name).map(|e| e.shape.as_slice())
    }

    /// Whether tensor `name` holds floats this crate reads (F32, F16, BF16); integer buffers
    /// (position ids, attention masks) do not.
    pub fn is_float(&self, name: &str) -> bool {
        self.tensors
            .get(name)
            .is_some_and(|e| matches!(e.dtype, Dtype::F32 | Dtype::F16 | Dtype::BF16))
    }

    /// Every tensor name.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.keys().map(String::as_str)
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The tensor `name`, which must have `shape`, as f32 in row-major order.
    pub fn read_vec(&self, shape: &[usize], name: &str) -> Result<Vec<f32>, String> {
        let mut out = Vec::new();
        self.read(shape, name, |total, piece| {
            // (`total` is checked against the file's bytes before the first piece)
            if out.capacity() == 0 {
                out.reserve_exact(total);
            }
            out.extend_from_slice(piece)
        })?;
        Ok(out)
    }

    /// Hands the tensor `name` (of `shape`) to `take(total values, piece)` in row-major pieces
    /// of whole rows (of the last dimension), so a caller that converts it never holds all of
    /// it in f32. Nothing is handed over before the shape and size are checked.
    pub fn read(
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
#[allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
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
        let t = SafetensorsFile::open(&path).unwrap();
        assert!(t.contains("big") && !t.contains("small"));
        assert_eq!(t.shape("h"), Some(&[2, 2][..]));
        assert!(t.is_float("h") && t.is_float("b") && !t.is_float("i") && !t.is_float("nope"));
        let mut pieces = 0;
        let mut got = Vec::new();
        t.read(&[rows, 1000], "big", |total, p| {
            assert_eq!(total, rows * 1000);
            assert_eq!(p.len() % 1000, 0, "pieces are whole rows");
            pieces += 1;
            got.extend_from_slice(p);
        })
        .unwrap();
        assert!(pieces >= 3, "{pieces} pieces");
        assert_eq!(got, big);
        assert_eq!(t.read_vec(&[2, 2], "h").unwrap(), halfs);
        assert_eq!(t.read_vec(&[4], "b").unwrap(), halfs);
        let err = |shape: &[usize], name: &str| t.read_vec(shape, name).unwrap_err();
        assert!(
            err(&[4], "h").contains("shape [2, 2], expected [4]"),
            "{}",
            err(&[4], "h")
        );
        assert!(err(&[1], "i").contains("I64"), "{}", err(&[1], "i"));
        assert!(err(&[1], "nope").contains("missing"));

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
