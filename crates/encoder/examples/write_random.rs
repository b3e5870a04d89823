//! Writes a random-weight checkpoint of a released model's sizes, for memory and speed
//! measurements (`scripts/bench_memory.sh`); never committed.
//!
//!     cargo run --release -p lingua-encoder --features test-support --example write_random -- \
//!         bert-base|xlm-roberta-large OUT_DIR
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a one-shot tool fails loudly"
)]

use std::process::ExitCode;

use lingua_encoder::random::RandomSpec;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    let (Some(kind), Some(out)) = (args.get(1), args.get(2)) else {
        eprintln!("usage: write_random bert-base|xlm-roberta-large OUT_DIR");
        return ExitCode::from(2);
    };
    let spec = match kind.as_str() {
        "bert-base" => RandomSpec::bert_base(0),
        "xlm-roberta-large" => RandomSpec::xlm_roberta_large(0),
        other => {
            eprintln!("unknown size {other:?} (bert-base or xlm-roberta-large)");
            return ExitCode::from(2);
        }
    };
    spec.write(std::path::Path::new(out), None)
        .expect("writing the checkpoint");
    ExitCode::SUCCESS
}
