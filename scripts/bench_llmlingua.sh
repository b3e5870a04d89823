#!/usr/bin/env bash
# LLMLingua (v1) end to end, lingua-proxy (f32, q8 and bf16) side by side with the Python reference
# (llmlingua 0.2.2 on PyTorch, transformers 4.46.3; f32, and also under PyTorch's bf16 autocast
# where the CPU has bf16 instructions) in one run: the same GPT-2-small-shaped
# checkpoint (124M parameters, random weights), the same ~2,000-token English text,
# compress_prompt(context=[text], rate=0.5). Model loading is excluded from the times; peak RSS
# is the whole process's (loading included).
#
# Also prints the share of words on which q8 and bf16 keep or drop the same as f32, and the CPU.
#
#   scripts/bench_llmlingua.sh            (LINGUA_BENCH_RUNS=3, LINGUA_REF_DIR=/tmp/llmlingua-ref,
#                                          LINGUA_BENCH_MODEL=target/bench-llmlingua/gpt2-small,
#                                          LINGUA_BENCH_TEXT=$LINGUA_BENCH_MODEL/input.txt)
#   LINGUA_BENCH_MODEL=target/bench-model/smollm2-135m LINGUA_BENCH_TEXT=benches/data/meeting.txt \
#     scripts/bench_llmlingua.sh          (the real SmolLM2-135M: scripts/bench_smollm2.sh builds it)
#   LINGUA_KERNELS=avx2-fma scripts/bench_llmlingua.sh   (our side at a lower kernel tier)
#   LINGUA_BENCH_GGUF=target/bench-model/SmolLM2-135M-Instruct.Q4_1.gguf ...
#                                         (our side also loads the GGUF the checkpoint came from)
set -euo pipefail
cd "$(dirname "$0")/.."
REF=${LINGUA_REF_DIR:-/tmp/llmlingua-ref}
RUNS=${LINGUA_BENCH_RUNS:-3}
MODEL=${LINGUA_BENCH_MODEL:-target/bench-llmlingua/gpt2-small}
TEXT=${LINGUA_BENCH_TEXT:-$MODEL/input.txt}
[ -x "$REF/venv/bin/python" ] || bash ../shared/tools/reference-env.sh "$REF"
[ -f "$MODEL/model.safetensors" ] || "$REF/venv/bin/python" tools/make_causal_bench_model.py "$MODEL"
cargo build --release --locked --bin lingua-proxy >&2
BIN=${CARGO_TARGET_DIR:-target}/release/lingua-proxy
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
python3 -c 'import json,sys; print(json.dumps({"context": [open(sys.argv[1]).read()], "rate": 0.5}))' \
  "$TEXT" > "$work/params.json"
export TIKTOKEN_CACHE_DIR=$REF/tiktoken NLTK_DATA=$REF/nltk_data HF_HUB_OFFLINE=1

echo "reference: $RUNS runs" >&2
PYTHONPATH=$REF/tf4 "$REF/venv/bin/python" tools/bench_causal_reference.py --model "$MODEL" \
  --text "$TEXT" --repeat "$RUNS" > "$work/ref.txt"
if grep -qwE 'avx512_bf16|amx_bf16' /proc/cpuinfo; then
  echo "reference under bf16 autocast: $RUNS runs" >&2
  PYTHONPATH=$REF/tf4 "$REF/venv/bin/python" tools/bench_causal_reference.py --model "$MODEL" \
    --text "$TEXT" --repeat "$RUNS" --bf16 > "$work/ref-bf16.txt"
fi
SIDES="f32 q8 bf16"
[ -n "${LINGUA_BENCH_GGUF:-}" ] && SIDES="$SIDES f32-gguf q8-gguf bf16-gguf"
for side in $SIDES; do
  prec=${side%-gguf}
  model=$MODEL
  [ "$side" != "$prec" ] && model=$LINGUA_BENCH_GGUF
  for i in $(seq "$RUNS"); do
    echo "lingua-proxy $side: run $i" >&2
    /usr/bin/time -f '%M' -o "$work/$side.$i.rss" "$BIN" compress --method llmlingua \
      --model "$model" --params "$work/params.json" --precision "$prec" --json > "$work/$side.$i.json"
  done
done
python3 - "$work" "$RUNS" "$TEXT" "$SIDES" <<'PY'
import difflib, json, os, statistics, sys
work, runs, text, sides = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4].split()
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
flags = next((l.split(":", 1)[1].split() for l in open("/proc/cpuinfo") if l.startswith("flags")), [])
wanted = ("avx2", "fma", "avx_vnni", "avx512f", "avx512bw", "avx512_vnni", "avx512_bf16", "amx_int8")
print(f"CPU: {cpu}; {os.cpu_count()} cores; {' '.join(f for f in wanted if f in flags)}; "
      f"LINGUA_KERNELS={os.environ.get('LINGUA_KERNELS', '(unset: best tier)')}")
lines = open(f"{work}/ref.txt", encoding="utf-8").read().split("\n", 1)
ref = json.loads(lines[0])
ref_prompt = lines[1].rstrip("\n") if len(lines) > 1 else None
rows = [("reference (PyTorch f32)", ref["median"], ref["peak_rss_mib"], ref["compressed_tokens"], None)]
if os.path.exists(f"{work}/ref-bf16.txt"):
    rb = json.loads(open(f"{work}/ref-bf16.txt", encoding="utf-8").readline())
    rows.append(("reference under PyTorch's bf16 autocast", rb["median"], rb["peak_rss_mib"],
                 rb["compressed_tokens"], None))
else:
    print("(no bf16 instructions on this CPU: PyTorch's bf16 autocast not timed)")
for prec in sides:
    outs = [json.load(open(f"{work}/{prec}.{i}.json")) for i in range(1, runs + 1)]
    rss = max(int(open(f"{work}/{prec}.{i}.rss").read().split()[-1]) for i in range(1, runs + 1)) / 1024
    # (the reference's prompt is read back as a line: compare without the trailing newline)
    same = ref_prompt is not None and outs[0]["compressed_prompt"].rstrip("\n") == ref_prompt
    label = prec.replace("-gguf", ", straight from the GGUF")
    rows.append((f"lingua-proxy {label}", statistics.median(o["elapsed_ms"] for o in outs), rss,
                 outs[0]["compressed_tokens"], same))
print(f"origin tokens (cl100k): {ref['origin_tokens']}; torch {ref.get('torch')}, threads {ref.get('threads')}")
print("| | median ms | vs reference | peak RSS MiB | compressed tokens | same prompt as reference |")
print("|---|---|---|---|---|---|")
for name, ms, rss, tok, same in rows:
    print(f"| {name} | {ms:,.0f} | {rows[0][1] / ms:.2f}x | {rss:,.0f} | {tok} | {'' if same is None else ('yes' if same else 'no')} |")
# Word-level agreement with f32: which words of the text survive whole in each prompt.
words = open(text, encoding="utf-8").read().split()
def kept(prompt):
    m = [False] * len(words)
    for a, _, n in difflib.SequenceMatcher(None, words, prompt.split(), autojunk=False).get_matching_blocks():
        m[a:a + n] = [True] * n
    return m
f32 = kept(json.load(open(f"{work}/f32.1.json"))["compressed_prompt"])
for p in ("q8", "bf16"):
    other = kept(json.load(open(f"{work}/{p}.1.json"))["compressed_prompt"])
    print(f"{p} keeps or drops the same words as f32 on {sum(a == b for a, b in zip(f32, other)) / len(words):.2%} of {len(words)} words")
PY
