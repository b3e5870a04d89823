#!/usr/bin/env python3
"""Builds a GPT-2-small-sized random causal checkpoint for benchmarks (never committed, ~500 MB).

  make_causal_bench_model.py OUT_DIR [--seed S]

Writes OUT_DIR/ with a GPT2LMHeadModel checkpoint (n_embd 768, 12 layers, 12 heads, 1024
positions, vocab_size 50257, gelu_new, tied lm_head not stored; model.safetensors), the gpt2-tiny
byte-level BPE tokenizer files (1000 real tokens; config.vocab_size is padded to 50257 so the
embedding and lm_head matmul have GPT-2 small's real cost) and OUT_DIR/input.txt, an English text of
about 2,000 small-model tokens (so a 1024-position model exercises the sliding KV window).
Weights come from NumPy's seeded PCG64 (fast; not bit-stable across NumPy versions, and the
benchmark does not need that). Scales match tools/build_tiny_causal.py (wide, well-spread losses).

Needs: numpy (+ the `tokenizers` package, optional, to print the text's token count).
"""
import json
import os
import shutil
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import causal_texts  # noqa: E402
import safetensors_io as st  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOK_DIR = os.path.join(REPO, "tests", "models", "gpt2-tiny")
H, LAYERS, HEADS, MAXPOS, VOCAB = 768, 12, 12, 1024, 50257
BENCH_SENTENCES = 165  # ~2,000 gpt2-tiny tokens


def bench_text():
    return causal_texts.gt.transcript(77, BENCH_SENTENCES)


def main():
    if len(sys.argv) < 2 or sys.argv[1].startswith("-"):
        sys.exit(__doc__)
    out = sys.argv[1]
    seed = int(sys.argv[sys.argv.index("--seed") + 1]) if "--seed" in sys.argv else 0
    rng = np.random.default_rng(seed)
    os.makedirs(out, exist_ok=True)
    tensors = {}

    def rnd(name, shape, std, center=0.0):
        a = rng.standard_normal(shape, dtype=np.float32) * np.float32(std) + np.float32(center)
        tensors[name] = ("F32", list(shape), a.astype("<f4").tobytes())

    p = "transformer."
    rnd(p + "wte.weight", (VOCAB, H), 0.7)
    rnd(p + "wpe.weight", (MAXPOS, H), 0.35)
    for i in range(LAYERS):
        q = f"{p}h.{i}."
        rnd(q + "ln_1.weight", (H,), 0.06, 1.0)
        rnd(q + "ln_1.bias", (H,), 0.06)
        rnd(q + "attn.c_attn.weight", (H, 3 * H), 1.5 / H ** 0.5)
        rnd(q + "attn.c_attn.bias", (3 * H,), 0.06)
        rnd(q + "attn.c_proj.weight", (H, H), 1.0 / H ** 0.5)
        rnd(q + "attn.c_proj.bias", (H,), 0.06)
        rnd(q + "ln_2.weight", (H,), 0.06, 1.0)
        rnd(q + "ln_2.bias", (H,), 0.06)
        rnd(q + "mlp.c_fc.weight", (H, 4 * H), 1.5 / H ** 0.5)
        rnd(q + "mlp.c_fc.bias", (4 * H,), 0.06)
        rnd(q + "mlp.c_proj.weight", (4 * H, H), 1.0 / (4 * H) ** 0.5)
        rnd(q + "mlp.c_proj.bias", (H,), 0.06)
    rnd(p + "ln_f.weight", (H,), 0.06, 0.2)
    rnd(p + "ln_f.bias", (H,), 0.06)
    st.write(os.path.join(out, "model.safetensors"), tensors, {"format": "pt"})
    del tensors

    with open(os.path.join(TOK_DIR, "config.json")) as f:
        config = json.load(f)
    config.update({"n_embd": H, "n_layer": LAYERS, "n_head": HEADS, "n_positions": MAXPOS,
                   "n_ctx": MAXPOS, "vocab_size": VOCAB})
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    for name in ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                 "generation_config.json"]:
        shutil.copy(os.path.join(TOK_DIR, name), os.path.join(out, name))
    with open(os.path.join(out, "tokenizer_config.json")) as f:
        tc = json.load(f)
    tc["model_max_length"] = MAXPOS
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump(tc, f, indent=2, sort_keys=True, ensure_ascii=False)
        f.write("\n")
    text = bench_text()
    with open(os.path.join(out, "input.txt"), "w") as f:
        f.write(text)
    n = "?"
    try:
        from tokenizers import Tokenizer

        n = len(Tokenizer.from_file(os.path.join(out, "tokenizer.json")).encode(text).ids)
    except ImportError:
        pass
    print(f"wrote {out}: GPT-2 small shape, vocab {VOCAB}; input.txt {len(text)} chars, {n} tokens")


if __name__ == "__main__":
    main()
