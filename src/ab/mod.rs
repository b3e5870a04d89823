//! A/B arms: which requests are compressed and which are forwarded raw, so that a team can prove
//! the saving on its own traffic.

use serde::{Deserialize, Serialize};

/// Which body an upstream call carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Arm {
    /// The client's request, as sent.
    Raw,
    /// The request after the compression policy.
    Compressed,
}

impl Arm {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Raw => "raw",
            Self::Compressed => "compressed",
        }
    }

    pub fn other(self) -> Self {
        match self {
            Self::Raw => Self::Compressed,
            Self::Compressed => Self::Raw,
        }
    }

    /// `raw` / `compressed` (case-insensitive).
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "raw" => Some(Self::Raw),
            "compressed" => Some(Self::Compressed),
            _ => None,
        }
    }
}

/// How the arms are used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Each request is forwarded in its assigned arm.
    #[default]
    Normal,
    /// Compression is computed and recorded, but every request is forwarded raw.
    Shadow,
    /// A share of requests is sent upstream in both arms; the client gets its arm's answer.
    Mirror,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Normal => "normal",
            Self::Shadow => "shadow",
            Self::Mirror => "mirror",
        }
    }
}
