#!/usr/bin/env bash
# Peak memory (RSS, /usr/bin/time) of `lingua-proxy compress` loading a model and compressing
# benches/data/meeting.txt at rate 0.5, f32, q8 and bf16, against the goals of issue 22:
#   LLMLingua-2 bert-base-multilingual-cased-sized (709 MB of f32 weights): q8 < 400 MB, f32 < 1 GB
#   LLMLingua-2 xlm-roberta-large-sized (2.24 GB of f32 weights):            q8 < 1.5 GB
#   LLMLingua v1 SmolLM2-135M (if scripts/bench_smollm2.sh has built it):     reported only,
#     from the Hugging Face checkpoint and straight from the Q4_1 GGUF
# The random-weight checkpoints are written under target/bench-model/ (never committed); their
# tokenizers come from the test checkpoints (scripts/setup.sh builds the BERT one).
#
#   scripts/bench_memory.sh
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=target/bench-model
cargo build --release --locked --bin lingua-proxy >&2
cargo build --release --locked -p lingua-encoder --features test-support --example write_random >&2
T=${CARGO_TARGET_DIR:-target}/release
for kind in bert-base-multilingual-cased xlm-roberta-large; do
  dir=$OUT/$kind-random
  if [ ! -f "$dir/model.safetensors" ]; then
    case $kind in
      bert-base-multilingual-cased) size=bert-base; tok=tests/models/bert-base-multilingual-cased-minilm-l6 ;;
      xlm-roberta-large) size=xlm-roberta-large; tok=tests/models/xlm-roberta-large-tiny ;;
    esac
    "$T/examples/write_random" "$size" "$dir"
    cp "$tok"/tokenizer*.json "$dir/"
  fi
done
rss() { # label, args...
  local label=$1; shift
  /usr/bin/time -f '%M %e' -o /tmp/bench_memory.$$ "$T/lingua-proxy" compress "$@" > /dev/null
  read -r kb secs < /tmp/bench_memory.$$
  local weights=$model/model.safetensors
  [ -f "$model" ] && weights=$model
  printf '| %s | %s | %.0f | %s |\n' "$label" "$(du -m "$weights" | cut -f1)" "$((kb / 1024))" "$secs"
}
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'); $(nproc) cores"
echo "| model, precision | weights file MB | peak RSS MiB | seconds |"
echo "|---|---|---|---|"
for kind in bert-base-multilingual-cased xlm-roberta-large; do
  model=$OUT/$kind-random
  for p in f32 q8 bf16; do
    rss "$kind, $p" --scorer llmlingua2 --model "$model" --precision "$p" --rate 0.5 \
      --file benches/data/meeting.txt
  done
done
model=$OUT/smollm2-135m
if [ -f "$model/model.safetensors" ]; then
  python3 -c 'import json,sys; print(json.dumps({"context": [open(sys.argv[1]).read()], "rate": 0.5}))' \
    benches/data/meeting.txt > /tmp/bench_memory_params.$$
  for p in f32 q8 bf16; do
    rss "SmolLM2-135M (v1), $p" --method llmlingua --model "$model" --precision "$p" \
      --params /tmp/bench_memory_params.$$
  done
  gguf=$OUT/SmolLM2-135M-Instruct.Q4_1.gguf
  if [ -f "$gguf" ]; then
    model=$gguf
    for p in f32 q8 bf16; do
      rss "SmolLM2-135M (v1) from its Q4_1 GGUF, $p" --method llmlingua \
        --model "$gguf" --precision "$p" --params /tmp/bench_memory_params.$$
    done
  fi
  rm -f /tmp/bench_memory_params.$$
fi
rm -f /tmp/bench_memory.$$
