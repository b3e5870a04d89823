//! The CI smoke run of the fuzz targets (`fuzz/`, cargo-afl): every committed corpus input
//! through `lingua_proxy::fuzzing`, then a few thousand deterministic mutations of them (bit
//! flips, truncations, splices, inserted bytes), each checked by the targets' invariants.
#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]

use std::path::Path;

/// Mutations per corpus file and target (`FUZZ_MUTATIONS` overrides it for longer runs).
const MUTATIONS: usize = 150;

fn mutations() -> usize {
    std::env::var("FUZZ_MUTATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(MUTATIONS)
}

fn corpus(target: &str) -> Vec<(String, Vec<u8>)> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz/corpus")
        .join(target);
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    assert!(!files.is_empty(), "empty corpus {}", dir.display());
    files
        .into_iter()
        .map(|p| (p.display().to_string(), std::fs::read(&p).unwrap()))
        .collect()
}

fn mutate(rng: &mut fastrand::Rng, input: &[u8], other: &[u8]) -> Vec<u8> {
    let mut v = input.to_vec();
    for _ in 0..rng.usize(1..=4) {
        match rng.u8(0..5) {
            0 if !v.is_empty() => {
                let i = rng.usize(..v.len());
                v[i] ^= 1 << rng.u8(0..8);
            }
            1 if !v.is_empty() => v.truncate(rng.usize(..v.len())),
            2 => {
                let i = rng.usize(..=v.len());
                let b = *rng
                    .choice(b"{}[]\",:\\\n\r \x00\xff\xe9)(`<>".iter())
                    .unwrap();
                v.insert(i, b);
            }
            3 if !other.is_empty() => {
                let i = rng.usize(..=v.len());
                let from = rng.usize(..other.len());
                let to = rng.usize(from..=other.len());
                v.splice(i..i, other[from..to].iter().copied());
            }
            _ if v.len() > 2 => {
                let i = rng.usize(1..v.len());
                let n = rng.usize(..=(v.len() - i).min(16));
                v.drain(i..i + n);
            }
            _ => {}
        }
    }
    v
}

fn replay(target: &str, run: fn(&[u8])) {
    let files = corpus(target);
    let mut rng = fastrand::Rng::with_seed(0x5eed);
    let mut runs = 0;
    let per_file = mutations();
    for (name, input) in &files {
        let r = std::panic::catch_unwind(|| run(input));
        assert!(r.is_ok(), "{target}: corpus file {name} broke an invariant");
        runs += 1;
    }
    for (i, (name, input)) in files.iter().enumerate() {
        let other = &files[(i + 1) % files.len()].1;
        for _ in 0..per_file {
            let m = mutate(&mut rng, input, other);
            if std::panic::catch_unwind(|| run(&m)).is_err() {
                panic!("{target}: a mutation of {name} broke an invariant: {m:?}");
            }
            runs += 1;
        }
    }
    eprintln!("{target}: {runs} inputs, 0 broke an invariant");
}

#[test]
fn transform_corpus_and_mutations_keep_the_invariants() {
    replay("transform", lingua_proxy::fuzzing::transform);
}

#[test]
fn sse_tap_corpus_and_mutations_keep_the_invariants() {
    replay("sse_tap", lingua_proxy::fuzzing::sse_tap);
}
