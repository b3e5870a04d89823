//! Finding a checkpoint: a local directory or a Hugging Face repo id (standard HF cache,
//! `HF_HOME` / `HF_HUB_CACHE`, `HF_HUB_OFFLINE`).

use std::path::{Path, PathBuf};

use thiserror::Error;

/// Why a model could not be found or loaded. Every variant names the file or place at fault.
#[derive(Debug, Error)]
pub enum LoadError {
    #[error("{}: {source}", file.display())]
    Io {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: {problem}", file.display())]
    Invalid { file: PathBuf, problem: String },
    #[error("model directory {}: {problem}", dir.display())]
    Missing { dir: PathBuf, problem: String },
    #[error("model {repo}: {problem}")]
    Hub { repo: String, problem: String },
    #[error("device {device:?}: {problem}")]
    Device { device: String, problem: String },
}

impl LoadError {
    pub(crate) fn io(file: &Path, source: std::io::Error) -> Self {
        LoadError::Io {
            file: file.to_path_buf(),
            source,
        }
    }

    pub(crate) fn invalid(file: &Path, problem: impl Into<String>) -> Self {
        LoadError::Invalid {
            file: file.to_path_buf(),
            problem: problem.into(),
        }
    }
}

impl From<lingua_tensors::TensorsError> for LoadError {
    fn from(e: lingua_tensors::TensorsError) -> Self {
        match e {
            lingua_tensors::TensorsError::Io { path, source } => LoadError::io(&path, source),
            lingua_tensors::TensorsError::Invalid { path, msg } => {
                LoadError::invalid(&path, format!("not a readable safetensors file: {msg}"))
            }
        }
    }
}

/// The files of one checkpoint, all local.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ModelFiles {
    pub dir: PathBuf,
    pub config: PathBuf,
    pub tokenizer_json: PathBuf,
    /// `model.safetensors`, or `pytorch_model.bin` when there is no safetensors file.
    pub weights: PathBuf,
}

const WEIGHT_FILES: [&str; 2] = ["model.safetensors", "pytorch_model.bin"];

impl ModelFiles {
    /// Resolves `model` (a local directory, or a Hugging Face repo id such as
    /// `microsoft/llmlingua-2-bert-base-multilingual-cased-meetingbank`).
    ///
    /// Repo ids are looked up in the standard HF cache first; only when a file is missing and
    /// `HF_HUB_OFFLINE` is not set is it downloaded (into that same cache).
    pub fn resolve(model: &str) -> Result<Self, LoadError> {
        let path = Path::new(model);
        if path.is_dir() {
            return Self::from_dir(path);
        }
        if !looks_like_repo_id(model) {
            return Err(LoadError::Missing {
                dir: path.to_path_buf(),
                problem: "no such directory (and not a Hugging Face repo id of the form org/name)"
                    .into(),
            });
        }
        let cache = hf_cache_dir();
        if let Some(snapshot) = cached_snapshot(&cache, model)
            && let Ok(files) = Self::from_dir(&snapshot)
        {
            return Ok(files);
        }
        if hub_offline() {
            return Err(LoadError::Hub {
                repo: model.to_string(),
                problem: format!(
                    "HF_HUB_OFFLINE is set and the model is not in the Hugging Face cache at {} \
                     (expected {}/snapshots/<revision>/ with config.json, tokenizer.json and \
                     model.safetensors)",
                    cache.display(),
                    cache.join(repo_folder(model)).display()
                ),
            });
        }
        download(&cache, model)
    }

    /// A local checkpoint directory.
    pub fn from_dir(dir: &Path) -> Result<Self, LoadError> {
        let need = |name: &str| -> Result<PathBuf, LoadError> {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(LoadError::Missing {
                    dir: dir.to_path_buf(),
                    problem: format!("{name} is missing"),
                })
            }
        };
        let config = need("config.json")?;
        let tokenizer_json = need("tokenizer.json")?;
        let weights = WEIGHT_FILES
            .iter()
            .map(|f| dir.join(f))
            .find(|p| p.is_file())
            .ok_or_else(|| LoadError::Missing {
                dir: dir.to_path_buf(),
                problem: "neither model.safetensors nor pytorch_model.bin is present".into(),
            })?;
        Ok(Self {
            dir: dir.to_path_buf(),
            config,
            tokenizer_json,
            weights,
        })
    }
}

fn looks_like_repo_id(s: &str) -> bool {
    let mut parts = s.split('/');
    let (Some(org), Some(name), None) = (parts.next(), parts.next(), parts.next()) else {
        return false;
    };
    let ok = |p: &str| {
        !p.is_empty()
            && !p.starts_with('.')
            && p.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    };
    ok(org) && ok(name)
}

fn truthy(v: &str) -> bool {
    matches!(
        v.trim().to_ascii_lowercase().as_str(),
        "1" | "true" | "yes" | "on"
    )
}

/// `HF_HUB_OFFLINE` as the Python hub library reads it.
pub fn hub_offline() -> bool {
    std::env::var("HF_HUB_OFFLINE").is_ok_and(|v| truthy(&v))
}

/// The hub cache: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
pub fn hf_cache_dir() -> PathBuf {
    if let Ok(p) = std::env::var("HF_HUB_CACHE")
        && !p.is_empty()
    {
        return PathBuf::from(p);
    }
    if let Ok(p) = std::env::var("HF_HOME")
        && !p.is_empty()
    {
        return PathBuf::from(p).join("hub");
    }
    let home = std::env::var("HOME").unwrap_or_else(|_| ".".into());
    PathBuf::from(home).join(".cache/huggingface/hub")
}

fn repo_folder(repo: &str) -> String {
    format!("models--{}", repo.replace('/', "--"))
}

/// The snapshot directory `refs/main` points at, or the most recently modified snapshot.
fn cached_snapshot(cache: &Path, repo: &str) -> Option<PathBuf> {
    let root = cache.join(repo_folder(repo));
    if let Ok(commit) = std::fs::read_to_string(root.join("refs/main")) {
        let snap = root.join("snapshots").join(commit.trim());
        if snap.is_dir() {
            return Some(snap);
        }
    }
    std::fs::read_dir(root.join("snapshots"))
        .ok()?
        .filter_map(Result::ok)
        .filter(|e| e.path().is_dir())
        .max_by_key(|e| e.metadata().and_then(|m| m.modified()).ok())
        .map(|e| e.path())
}

fn download(cache: &Path, repo: &str) -> Result<ModelFiles, LoadError> {
    let hub = |problem: String| LoadError::Hub {
        repo: repo.to_string(),
        problem,
    };
    let mut builder = hf_hub::api::sync::ApiBuilder::from_env()
        .with_cache_dir(cache.to_path_buf())
        .with_progress(false);
    if let Ok(token) = std::env::var("HF_TOKEN")
        && !token.is_empty()
    {
        builder = builder.with_token(Some(token));
    }
    let api = builder
        .build()
        .map_err(|e| hub(format!("cannot start the hub client: {e}")))?;
    let r = api.model(repo.to_string());
    let get = |name: &str| {
        r.get(name)
            .map_err(|e| hub(format!("downloading {name}: {e}")))
    };
    let config = get("config.json")?;
    let tokenizer_json = get("tokenizer.json")?;
    let weights = match get(WEIGHT_FILES[0]) {
        Ok(p) => p,
        Err(first) => get(WEIGHT_FILES[1]).map_err(|_| first)?,
    };
    let dir = config
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| cache.to_path_buf());
    Ok(ModelFiles {
        dir,
        config,
        tokenizer_json,
        weights,
    })
}

#[cfg(test)]
mod tests {
    use super::looks_like_repo_id;

    #[test]
    fn repo_ids() {
        assert!(looks_like_repo_id(
            "microsoft/llmlingua-2-xlm-roberta-large-meetingbank"
        ));
        assert!(!looks_like_repo_id("/abs/path"));
        assert!(!looks_like_repo_id("./rel/x"));
        assert!(!looks_like_repo_id("a/b/c"));
        assert!(!looks_like_repo_id("single"));
    }
}
