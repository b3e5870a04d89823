//! Words whose meaning a compressor must never drop, in one place. A leaf module: the selection
//! (`compress/units.rs`) and the embedded scorer (`scorer/heuristic.rs`) both read it, and it
//! imports neither, so the two cannot drift apart again.
//!
//! Keys are lower-cased with the typographic apostrophe (U+2019) written as `'`.

/// Negations proper. Every contraction ending in `n't` is one too ([`is_negation`]).
pub const NEGATIONS: &[&str] = &[
    "not", "no", "never", "none", "nor", "neither", "nobody", "nothing", "nowhere", "cannot",
    "without", "except", "unless",
];

/// Words that limit or condition what follows them: the selection keeps them with what they
/// govern, like negations.
pub const LIMITS: &[&str] = &[
    "excluding",
    "only",
    "must",
    "maximum",
    "minimum",
    "max",
    "min",
    "forbidden",
    "prohibited",
    "always",
    "if",
    "before",
    "after",
    "until",
    "till",
    "avoid",
];

/// Whether `key` (lower-cased, `'` apostrophes) negates: a word of [`NEGATIONS`] or any `n't`
/// contraction (`can't`, `couldn't`, `mustn't`, …).
pub fn is_negation(key: &str) -> bool {
    NEGATIONS.contains(&key) || key.ends_with("n't")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contractions_and_plain_negations() {
        for w in [
            "not", "cannot", "can't", "couldn't", "mustn't", "without", "unless",
        ] {
            assert!(is_negation(w), "{w}");
        }
        for w in ["note", "know", "only", "nt", "isn"] {
            assert!(!is_negation(w), "{w}");
        }
    }

    #[test]
    fn limits_are_not_negations() {
        assert!(LIMITS.iter().all(|w| !is_negation(w)));
    }
}
