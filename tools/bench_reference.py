#!/usr/bin/env python3
"""Times the Python reference (PyTorch + llmlingua 0.2.2) on the same model and text as
benches/encoder.rs, and prints one JSON object.

  bench_reference.py --model DIR --text FILE [--runs N] [--threads T] [--no-compress]

DIR is a BertForTokenClassification checkpoint whose name contains
"bert-base-multilingual-cased" (llmlingua picks its code path by name), e.g. from
tools/make_bench_model.py bench. Two timings:
  forward:  the model call llmlingua makes (windows of <=510 tokens + [CLS]/[SEP], padded to
            512, one batch), tokens = real window tokens;
  compress: PromptCompressor(...).compress_prompt(text, rate=0.5), end to end;
  compress_bf16: the same under torch.autocast("cpu", torch.bfloat16), PyTorch's own bf16 path,
            only where the CPU has bf16 instructions (avx512_bf16 or amx_bf16), for honesty.
"""
import argparse
import glob
import hashlib
import json
import os
import shutil
import statistics
import sys
import tempfile
import time


def tiktoken_cache():
    """llmlingua needs cl100k_base; copy it from the tiktoken-rs crate (no network here)."""
    url = "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken"
    d = os.environ.get("TIKTOKEN_CACHE_DIR") or os.path.join(tempfile.gettempdir(), "tiktoken-cache")
    os.makedirs(d, exist_ok=True)
    dst = os.path.join(d, hashlib.sha1(url.encode()).hexdigest())
    if not os.path.exists(dst):
        src = glob.glob(os.path.expanduser(
            "~/.cargo/registry/src/*/tiktoken-rs-*/assets/cl100k_base.tiktoken"))
        if not src:
            sys.exit("cl100k_base.tiktoken not found in the cargo registry")
        shutil.copy(src[0], dst)
    os.environ["TIKTOKEN_CACHE_DIR"] = d


def bf16_autocast(model):
    """Runs `model` under torch.autocast("cpu", bfloat16), PyTorch's own bf16 path; its logits
    go back to f32, because llmlingua hands them to numpy, which has no bfloat16. Returns the
    original forward, to put back."""
    import torch

    forward = model.forward

    def bf16_forward(*args, **kwargs):
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = forward(*args, **kwargs)
        out.logits = out.logits.float()
        return out

    model.forward = bf16_forward
    return forward


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--text", required=True)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--no-compress", action="store_true")
    a = ap.parse_args()
    tiktoken_cache()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForTokenClassification, AutoTokenizer
    if a.threads:
        torch.set_num_threads(a.threads)
    text = open(a.text).read()
    out = {"torch": torch.__version__, "threads": torch.get_num_threads()}

    tok = AutoTokenizer.from_pretrained(a.model)
    model = AutoModelForTokenClassification.from_pretrained(a.model, dtype=torch.float32).eval()
    ids = tok(text, add_special_tokens=False)["input_ids"]
    windows = [ids[i:i + 510] for i in range(0, len(ids), 510)]
    cls, sep, pad = tok.cls_token_id, tok.sep_token_id, tok.pad_token_id or 0
    batch = [[cls] + w + [sep] for w in windows]
    real = sum(len(b) for b in batch)
    inp = torch.tensor([b + [pad] * (512 - len(b)) for b in batch])
    mask = torch.tensor([[1] * len(b) + [0] * (512 - len(b)) for b in batch])
    with torch.no_grad():
        model(input_ids=inp, attention_mask=mask)  # warm-up
        times, cpu = [], []
        for _ in range(a.runs):
            t, c = time.perf_counter(), time.process_time()
            model(input_ids=inp, attention_mask=mask)
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
    med = statistics.median(times)
    out["forward"] = {"windows": len(batch), "tokens": real, "seconds": times,
                      "median_s": med, "tokens_per_s": real / med,
                      "cpu_seconds": cpu, "tokens_per_cpu_s": real / statistics.median(cpu)}

    if not a.no_compress:
        from llmlingua import PromptCompressor
        pc = PromptCompressor(model_name=a.model, use_llmlingua2=True, device_map="cpu")
        pc.compress_prompt(text, rate=0.5)  # warm-up
        times = []
        for _ in range(a.runs):
            t = time.perf_counter()
            r = pc.compress_prompt(text, rate=0.5)
            times.append(time.perf_counter() - t)
        med = statistics.median(times)
        out["compress"] = {"origin_tokens_cl100k": r["origin_tokens"], "model_tokens": real,
                           "seconds": times, "median_s": med,
                           "model_tokens_per_s": real / med}
        flags = next((l.split(":", 1)[1].split() for l in open("/proc/cpuinfo")
                      if l.startswith("flags")), [])
        if "avx512_bf16" in flags or "amx_bf16" in flags:
            forward = bf16_autocast(pc.model)
            pc.compress_prompt(text, rate=0.5)  # warm-up
            times = []
            for _ in range(a.runs):
                t = time.perf_counter()
                pc.compress_prompt(text, rate=0.5)
                times.append(time.perf_counter() - t)
            pc.model.forward = forward
            med = statistics.median(times)
            out["compress_bf16"] = {"seconds": times, "median_s": med,
                                    "model_tokens_per_s": real / med}
    print(json.dumps(out))


if __name__ == "__main__":
    main()
