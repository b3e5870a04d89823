#![allow(clippy::unwrap_used, clippy::expect_used, reason = "tests fail loudly")]
//! The reference's arithmetic against NumPy itself: `np.percentile` (linear) on lists of float32
//! scalars mixed with Python floats, and Python `sum(list) / len(list)`, 400 random cases each
//! (ties and extremes included) recorded by tools/make_numpy_fixture.py under NumPy 2.4.6
//! (NEP 50 promotion, the default arithmetic) and NumPy 1.26.4 (`numpy1_percentile`).

use lingua_proxy::compress::llmlingua2::numeric::{Prob, percentile, python_mean};

fn check(file: &str, numpy1: bool) {
    let path = format!("{}/tests/goldens/{file}", env!("CARGO_MANIFEST_DIR"));
    let g: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap();
    let cases = g["cases"].as_array().unwrap();
    assert!(cases.len() >= 400);
    let mut bad = Vec::new();
    for (i, c) in cases.iter().enumerate() {
        let vals: Vec<Prob> = c["values"]
            .as_array()
            .unwrap()
            .iter()
            .zip(c["kinds"].as_array().unwrap())
            .map(|(v, k)| {
                let v = v.as_f64().unwrap();
                if k == "f32" {
                    Prob::F32(v as f32)
                } else {
                    Prob::F64(v)
                }
            })
            .collect();
        let q = c["q"].as_u64().unwrap() as u32;
        let p = percentile(&vals, q, numpy1).unwrap();
        if p != c["percentile"].as_f64().unwrap() {
            bad.push(format!("case {i}: percentile {p} != {}", c["percentile"]));
        }
        let m = python_mean(&vals, numpy1).unwrap();
        if m.value() != c["mean"].as_f64().unwrap()
            || m.is_f32() != c["mean_is_f32"].as_bool().unwrap()
        {
            bad.push(format!(
                "case {i}: mean {m:?} != {} ({})",
                c["mean"], c["mean_is_f32"]
            ));
        }
    }
    assert!(bad.is_empty(), "{file}:\n{}", bad.join("\n"));
}

#[test]
fn percentile_and_mean_match_numpy2_bit_for_bit() {
    check("numpy2.json", false);
}

#[test]
fn percentile_and_mean_match_numpy1_bit_for_bit() {
    check("numpy1.json", true);
}
