#!/usr/bin/env bash
# LLMLingua (v1) end to end, lingua-proxy (f32 and q8) side by side with the Python reference
# (llmlingua 0.2.2 on PyTorch, transformers 4.46.3) in one run: the same GPT-2-small-shaped
# checkpoint (124M parameters, random weights), the same ~2,000-token English text,
# compress_prompt(context=[text], rate=0.5). Model loading is excluded from the times; peak RSS
# is the whole process's (loading included).
#
#   scripts/bench_llmlingua.sh            (LINGUA_BENCH_RUNS=3, LINGUA_REF_DIR=/tmp/llmlingua-ref,
#                                          LINGUA_BENCH_MODEL=target/bench-llmlingua/gpt2-small)
set -euo pipefail
cd "$(dirname "$0")/.."
REF=${LINGUA_REF_DIR:-/tmp/llmlingua-ref}
RUNS=${LINGUA_BENCH_RUNS:-3}
MODEL=${LINGUA_BENCH_MODEL:-target/bench-llmlingua/gpt2-small}
[ -x "$REF/venv/bin/python" ] || bash ../shared/tools/reference-env.sh "$REF"
[ -f "$MODEL/model.safetensors" ] || "$REF/venv/bin/python" tools/make_causal_bench_model.py "$MODEL"
cargo build --release --locked --bin lingua-proxy >&2
BIN=${CARGO_TARGET_DIR:-target}/release/lingua-proxy
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -c 'import json,sys; print(json.dumps({"context": [open(sys.argv[1]).read()], "rate": 0.5}))' \
  "$MODEL/input.txt" > "$work/params.json"
export TIKTOKEN_CACHE_DIR=$REF/tiktoken NLTK_DATA=$REF/nltk_data HF_HUB_OFFLINE=1

echo "reference: $RUNS runs" >&2
PYTHONPATH=$REF/tf4 "$REF/venv/bin/python" tools/bench_causal_reference.py --model "$MODEL" \
  --text "$MODEL/input.txt" --repeat "$RUNS" > "$work/ref.txt"
for prec in f32 q8; do
  for i in $(seq "$RUNS"); do
    echo "lingua-proxy $prec: run $i" >&2
    /usr/bin/time -f '%M' -o "$work/$prec.$i.rss" "$BIN" compress --method llmlingua \
      --model "$MODEL" --params "$work/params.json" --precision "$prec" --json > "$work/$prec.$i.json"
  done
done
python3 - "$work" "$RUNS" <<'PY'
import json, statistics, sys
work, runs = sys.argv[1], int(sys.argv[2])
lines = open(f"{work}/ref.txt", encoding="utf-8").read().split("\n", 1)
ref = json.loads(lines[0])
ref_prompt = lines[1].rstrip("\n") if len(lines) > 1 else None
rows = [("reference (PyTorch f32)", ref["median"], ref["peak_rss_mib"], ref["compressed_tokens"], None)]
for prec in ("f32", "q8"):
    outs = [json.load(open(f"{work}/{prec}.{i}.json")) for i in range(1, runs + 1)]
    rss = max(int(open(f"{work}/{prec}.{i}.rss").read().split()[-1]) for i in range(1, runs + 1)) / 1024
    same = ref_prompt is not None and outs[0]["compressed_prompt"] == ref_prompt
    rows.append((f"lingua-proxy {prec}", statistics.median(o["elapsed_ms"] for o in outs), rss,
                 outs[0]["compressed_tokens"], same))
print(f"origin tokens (cl100k): {ref['origin_tokens']}; torch {ref.get('torch')}, threads {ref.get('threads')}")
print("| | median ms | vs reference | peak RSS MiB | compressed tokens | same prompt as reference |")
print("|---|---|---|---|---|---|")
for name, ms, rss, tok, same in rows:
    print(f"| {name} | {ms:,.0f} | {rows[0][1] / ms:.2f}x | {rss:,.0f} | {tok} | {'' if same is None else ('yes' if same else 'no')} |")
PY
