#!/usr/bin/env python3
"""Runs the reference (`llmlingua==0.2.2`, transformers 5, NumPy 2) on the test checkpoints and
writes tests/goldens/lingua2.json (tools/make_numpy_fixture.py writes the arithmetic fixtures).

For every case it records the call, the reference's result dict, and for every chunk the model
scored: the chunk string, the input ids, the token strings the model saw (incl. specials) and
the class-1 probabilities (float32, written as the exact float value). It also records each
`np.percentile` call the reference made (list length, q, result) for tie analysis.

Run with the reference venv (needs torch; not run in CI):

    HF_HUB_OFFLINE=1 TIKTOKEN_CACHE_DIR=<dir with cl100k> /work/ref-venv/bin/python tools/make_goldens.py

Under NumPy 1.x (same torch/transformers, e.g. a venv holding numpy==1.26.4 whose .pth adds the
reference venv's site-packages) it writes tests/goldens/lingua2_numpy1.json instead.
"""

import json
import os
import random
import sys

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import golden_texts as gt  # noqa: E402

import numpy as np  # noqa: E402
import llmlingua  # noqa: E402
import llmlingua.prompt_compressor as pc  # noqa: E402
from llmlingua import PromptCompressor  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {
    "minilm": os.path.join("tests", "models", "bert-base-multilingual-cased-minilm-l6"),
    "xlmr": os.path.join("tests", "models", "xlm-roberta-large-tiny"),
}

# ---- instrumentation ---------------------------------------------------------------------
PASSES = []  # each: {"texts": [...], "ids": [...], "merged": [(tokens, probs)]}
PCT = []


class RecordingDataset(pc.TokenClfDataset):
    def __init__(self, texts, *a, **k):
        super().__init__(texts, *a, **k)
        PASSES.append({"texts": list(texts), "ids": [None] * len(texts), "merged": []})
        self._pass = PASSES[-1]

    def __getitem__(self, index):
        item = super().__getitem__(index)
        ids = item["ids"].tolist()
        mask = item["mask"].tolist()
        self._pass["ids"][index] = [i for i, m in zip(ids, mask) if m == 1]
        return item


pc.TokenClfDataset = RecordingDataset
_orig_merge = PromptCompressor._PromptCompressor__merge_token_to_word


def recording_merge(self, tokens, token_probs, *a, **k):
    for p in token_probs:
        assert isinstance(p, np.float32), type(p)
    PASSES[-1]["merged"].append((list(tokens), [float(p) for p in token_probs]))
    return _orig_merge(self, tokens, token_probs, *a, **k)


PromptCompressor._PromptCompressor__merge_token_to_word = recording_merge
_orig_pct = np.percentile


def recording_percentile(a, q, *args, **kw):
    r = _orig_pct(a, q, *args, **kw)
    arr = np.asarray(a)
    PCT.append({"n": int(arr.size), "q": int(q), "dtype": str(arr.dtype), "result": float(r)})
    return r


pc.np.percentile = recording_percentile  # pc.np is the numpy module itself
np.percentile = recording_percentile

# ---- cases -----------------------------------------------------------------------------
FORCE_PUNCT = ["\n", ".", "!", "?"]
GSM_FORCE = ["+", "-", "*", "×", "/", "÷", "=", "The answer is", "\n", "Question:"]
ZH_FORCE = ["\n", "。", "：", "？", "类别：", "商业", "外贸", "海关", "教育", "天气", "新闻内容"]
LONG = gt.transcript(7, 60)
VERY_LONG = gt.transcript(8, 140)
FOUR = [gt.transcript(11 + i, 4 + 2 * i) for i in range(4)]


def cases():
    m = gt.MEETING
    two = m.split("\n\n")
    c = []
    add = lambda name, ctx, **kw: c.append((name, ctx, kw))  # noqa: E731
    add("meeting_rate033_force", m, rate=0.33, force_tokens=FORCE_PUNCT)
    add("meeting_two_ctx_target40", two, target_token=40, use_context_level_filter=True,
        force_tokens=FORCE_PUNCT)
    add("math_target60_gsm_force_digits", gt.MATH, target_token=60, force_tokens=GSM_FORCE,
        force_reserve_digit=True)
    add("long_target150_drop_consecutive", LONG, target_token=150, force_tokens=FORCE_PUNCT,
        drop_consecutive=True)
    add("two_math_ctx_target80_digits", [gt.MATH, gt.MATH2], target_token=80,
        use_context_level_filter=True, force_tokens=GSM_FORCE[:-1], force_reserve_digit=True)
    add("chinese_ctx_target100_drop", gt.CHINESE, target_token=100, force_tokens=ZH_FORCE,
        drop_consecutive=True)
    add("meeting_defaults", m)
    add("meeting_rate07_first", m, rate=0.7, token_to_word="first")
    add("mixed_rate05", gt.MIXED, rate=0.5)
    add("mixed_rate033_force_labels", gt.MIXED, rate=0.33, force_tokens=["\n", "$", "%", "example.com"],
        return_word_label=True)
    add("meeting_rate1_passthrough_labels", m, rate=1.0, return_word_label=True,
        force_tokens=["\n"])
    add("long_rate05", LONG, rate=0.5)
    add("very_long_rate04_force_nl", VERY_LONG, rate=0.4, force_tokens=["\n"])
    add("four_ctx_rate05_default_filter", FOUR, rate=0.5)
    add("four_ctx_no_filter", FOUR, rate=0.5, use_context_level_filter=False)
    add("four_ctx_target_context2_force3", FOUR, rate=0.6, target_context=2, force_context_ids=[3])
    add("four_ctx_ctx_target_token100_labels", FOUR, rate=0.5, context_level_target_token=100,
        return_word_label=True)
    add("three_ctx_no_token_filter", FOUR[:3], rate=0.5, use_token_level_filter=False)
    add("meeting_rate08_drop_consecutive", m, rate=0.8, drop_consecutive=True,
        force_tokens=["\n", "."])
    add("meeting_rate09", m, rate=0.9)
    add("chinese_single_rate05_nl", gt.CHINESE[0], rate=0.5, force_tokens=["\n"])
    add("literal_specials", "[CLS] hello <s> world </s> [SEP] the <unk> end [NEW3] ok.", rate=0.5)
    add("long_chunk_end_comma", LONG.replace(".", ","), rate=0.5, chunk_end_tokens=[","])
    add("empty_and_meeting_no_filter", ["", m], rate=0.5, use_context_level_filter=False)
    add("math_rate055_first_digits", gt.MATH2, rate=0.55, token_to_word="first",
        force_reserve_digit=True)
    add("meeting_force_corrupts_placeholder", m, rate=0.5, force_tokens=["\n", "NEW", "I"])
    add("long_no_end_tokens_511", LONG.replace(".", ""), rate=0.5, force_tokens=["\n"])
    add("more_literal_specials", "[PAD] a [MASK] b <pad> c <mask> d [UNK] e. <s></s> f", rate=0.4)
    add("four_ctx_explicit_ctx_rate05_target60", FOUR, target_token=60, context_level_rate=0.5)
    add("four_ctx_target_token_no_token_filter", FOUR, target_token=120,
        use_token_level_filter=False)
    add("chinese_multi_piece_force_rate03", gt.CHINESE[1], rate=0.3,
        force_tokens=["新闻内容", "教育", "小学", "\n", "。"], drop_consecutive=True)
    add("math_rate033_spec_q68_first_digits", gt.MATH, rate=0.33, token_to_word="first",
        force_tokens=["The answer is", "\n", "="], force_reserve_digit=True)
    add("meeting_repeated_force_token_dict_order", m, rate=0.45,
        force_tokens=["Sarah:", "\n", "Sarah:", "John:"], return_word_label=True)
    return c


def main():
    out = {"reference": {"llmlingua": "0.2.2", "numpy": np.__version__,
                         "transformers": __import__("transformers").__version__,
                         "tokenizers": __import__("tokenizers").__version__,
                         "torch": __import__("torch").__version__},
           "cases": []}
    os.chdir(REPO)
    for model_key, path in MODELS.items():
        comp = PromptCompressor(path, device_map="cpu", use_llmlingua2=True)
        for name, ctx, kw in cases():
            PASSES.clear()
            PCT.clear()
            res = comp.compress_prompt(ctx, **kw)
            chunks = {}
            conflicts = 0
            for p in PASSES:
                assert len(p["merged"]) == len(p["texts"])
                for text, ids, (toks, probs) in zip(p["texts"], p["ids"], p["merged"]):
                    rec = {"text": text, "input_ids": ids, "tokens": toks, "probs": probs}
                    if text in chunks and chunks[text]["probs"] != probs:
                        conflicts += 1
                        chunks[text].setdefault("probs_second_pass", probs)
                    else:
                        chunks.setdefault(text, rec)
            contexts = [ctx] if isinstance(ctx, str) else list(ctx)
            out["cases"].append({
                "name": f"{model_key}/{name}",
                "model": model_key,
                "contexts": contexts,
                "options": kw,
                "expected": res,
                "chunks": list(chunks.values()),
                "second_pass_conflicts": conflicts,
                "percentiles": list(PCT),
            })
            print(f"{model_key}/{name}: {res['origin_tokens']} -> {res['compressed_tokens']} "
                  f"chunks={len(chunks)} conflicts={conflicts}", flush=True)
    os.makedirs(os.path.join(REPO, "tests", "goldens"), exist_ok=True)
    # NumPy 2 (today's install) → lingua2.json; NumPy 1.x → lingua2_numpy1.json.
    fname = "lingua2.json" if np.__version__.startswith("2.") else "lingua2_numpy1.json"
    if fname == "lingua2_numpy1.json":
        # Only the results: the per-chunk records equal lingua2.json's (same torch).
        fname = "lingua2_numpy1_expected.json"
        out = {"reference": out["reference"],
               "cases": [{"name": c["name"], "expected": c["expected"]} for c in out["cases"]]}
    with open(os.path.join(REPO, "tests", "goldens", fname), "w") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
