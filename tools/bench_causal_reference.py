#!/usr/bin/env python3
"""Times the Python reference (llmlingua 0.2.2 LLMLingua v1 path, PyTorch f32 CPU) on a causal
checkpoint and prints one JSON line, then the compressed prompt.

  bench_causal_reference.py --model DIR --text FILE [--repeat N] [--threads T] [--warmup W]
                            [--bf16]

DIR: e.g. from tools/make_causal_bench_model.py (GPT-2 small shape) or tests/models/gpt2-tiny.
Loading PromptCompressor(model_name=DIR, device_map="cpu") is not timed; then W untimed warm-up
calls (default 0) and N timed calls of compress_prompt(context=[text], rate=0.5). With --bf16
the model runs under torch.autocast("cpu", torch.bfloat16), PyTorch's own bf16 path (its logits
are cast back to f32 for llmlingua, which hands them to numpy); only meaningful where the CPU
has bf16 instructions.
JSON: {"elapsed_ms": [...], "median": ms, "peak_rss_mib": ru_maxrss of this process (whole run),
"compressed_tokens": ..., "origin_tokens": ..., "torch", "threads"}.

Run with the reference env (transformers 4.46.3 for the v1 path):
    HF_HUB_OFFLINE=1 PYTHONPATH=/work/ref/tf4 /work/ref/venv/bin/python tools/bench_causal_reference.py ...
(cl100k_base for tiktoken: TIKTOKEN_CACHE_DIR, else copied from the tiktoken-rs crate.)
"""
import argparse
import json
import os
import resource
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_reference import bf16_autocast, tiktoken_cache  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--text", required=True)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--warmup", type=int, default=0)
    ap.add_argument("--bf16", action="store_true")
    a = ap.parse_args()
    if not os.environ.get("TIKTOKEN_CACHE_DIR"):
        tiktoken_cache()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from llmlingua import PromptCompressor

    if a.threads:
        torch.set_num_threads(a.threads)
    with open(a.text) as f:
        text = f.read()
    comp = PromptCompressor(model_name=a.model, device_map="cpu")
    if a.bf16:
        bf16_autocast(comp.model)
    for _ in range(a.warmup):
        comp.compress_prompt(context=[text], rate=0.5)
    times, res = [], None
    for _ in range(a.repeat):
        t = time.perf_counter()
        res = comp.compress_prompt(context=[text], rate=0.5)
        times.append((time.perf_counter() - t) * 1000.0)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    out = {"elapsed_ms": times, "median": statistics.median(times) if times else None,
           "peak_rss_mib": rss,
           "compressed_tokens": res["compressed_tokens"] if res else None,
           "origin_tokens": res["origin_tokens"] if res else None,
           "torch": torch.__version__, "threads": torch.get_num_threads(), "bf16": a.bf16}
    print(json.dumps(out))
    if res:
        print(res["compressed_prompt"])


if __name__ == "__main__":
    main()
