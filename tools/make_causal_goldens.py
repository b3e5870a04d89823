#!/usr/bin/env python3
"""Runs the reference LLMLingua v1 / LongLLMLingua path (`llmlingua==0.2.2`, transformers 4.46.3,
torch f32 CPU) on the tiny causal checkpoints and writes tests/goldens/llmlingua_gpt2.json and
tests/goldens/llmlingua_llama.json.

For every case: the compress_prompt kwargs exactly as passed (deep-copied before the call: the
reference appends to a passed force_context_ids list), the returned dict, and a trace captured by
wrapping (not changing) PromptCompressor methods:
  ranking       get_rank_results output of the context-level filter ([[idx, score], ...]) or null
  selected      the context indexes control_context_budget kept, in output order, or null
  dynamic_ratio control_context_budget's per-context dynamic ratios, or null
  ids           iterative_compress_prompt's compressed small-model ids (before decode), or null
  sentence_ranking  get_rank_results outputs of the sentence-level filter (only when it calls
                get_rank_results, i.e. rank_method != "longllmlingua")
  sentence_contexts the contexts control_sentence_budget returned (kept sentences joined), if run
Also `recover` cases and nltk.sent_tokenize outputs. Cases the reference crashes on are listed under
"reference_errors" (name + last traceback line).

    export TIKTOKEN_CACHE_DIR=/work/ref/tiktoken NLTK_DATA=/work/ref/nltk_data HF_HUB_OFFLINE=1
    PYTHONPATH=/work/ref/tf4 /work/ref/venv/bin/python tools/make_causal_goldens.py
"""

import copy
import hashlib
import json
import os
import sys
import traceback

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import causal_texts as ct  # noqa: E402

import nltk  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
import llmlingua.prompt_compressor as pcm  # noqa: E402
from llmlingua import PromptCompressor  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {"gpt2": "tests/models/gpt2-tiny", "llama": "tests/models/llama-tiny"}

TRACE = {}


def score(x):
    if isinstance(x, torch.Tensor):
        return float(x.item())
    return float(x)


_orig_ccb = PromptCompressor.control_context_budget
_orig_rank = PromptCompressor.get_rank_results
_orig_icp = PromptCompressor.iterative_compress_prompt
_orig_csb = PromptCompressor.control_sentence_budget


def wrap_ccb(self, *a, **k):
    TRACE["_in_ccb"] = True
    try:
        res, dyn, used = _orig_ccb(self, *a, **k)
    finally:
        TRACE["_in_ccb"] = False
    TRACE["selected"] = [int(i) for i in used]
    TRACE["dynamic_ratio"] = [float(x) for x in dyn]
    return res, dyn, used


def wrap_rank(self, *a, **k):
    out = _orig_rank(self, *a, **k)
    rec = [[int(i), score(s)] for i, s in out]
    if TRACE.get("_in_ccb"):
        TRACE["ranking"] = rec
    else:
        TRACE.setdefault("sentence_ranking", []).append(rec)
    return out


def wrap_icp(self, *a, **k):
    ids, mask = _orig_icp(self, *a, **k)
    TRACE["ids"] = [int(i) for i in ids[0].tolist()]
    return ids, mask


def wrap_csb(self, *a, **k):
    res, seg = _orig_csb(self, *a, **k)
    TRACE["sentence_contexts"] = list(res)
    return res, seg


PromptCompressor.control_context_budget = wrap_ccb
PromptCompressor.control_sentence_budget = wrap_csb
PromptCompressor.get_rank_results = wrap_rank
PromptCompressor.iterative_compress_prompt = wrap_icp

Q = ct.RAG_QUESTION
RAG = ct.RAG_DOCS
GSM = ct.GSM_DEMOS
LLL = dict(question=Q, condition_in_question="after_condition", reorder_context="sort",
           dynamic_context_compression_ratio=0.3, condition_compare=True, context_budget="+100",
           rank_method="longllmlingua", rate=0.55)


def cases():
    c = []
    add = lambda name, **kw: c.append((name, kw))  # noqa: E731
    add("01_plain_3ctx_rate05", context=GSM[:3], rate=0.5)
    add("02_target150_3ctx", context=GSM[:3], target_token=150)
    add("03_long_single_rate04", context=[ct.LONG_DOC], rate=0.4)
    add("04_sliding_kv_900", context=[ct.SLIDING_DOC], rate=0.5, use_context_level_filter=False)
    add("05_longllmlingua_recipe", context=RAG, **LLL)
    add("06_condition_compare_only", context=RAG, question=Q, rate=0.5, condition_compare=True)
    for order in ["original", "sort", "two_stage"]:
        add(f"07_reorder_{order}", context=RAG, question=Q, rate=0.5,
            rank_method="longllmlingua", reorder_context=order)
    c[-2] = ("08_reorder_sort", c[-2][1])
    c[-1] = ("09_reorder_two_stage", c[-1][1])
    add("10_dynamic_ratio_04", context=RAG, question=Q, rate=0.5, rank_method="longllmlingua",
        reorder_context="sort", dynamic_context_compression_ratio=0.4)
    add("11_force_context_ids_0_2", context=GSM, rate=0.3, force_context_ids=[0, 2])
    add("12_rank_bm25", context=RAG, question=Q, rate=0.5, rank_method="bm25")
    add("13_rank_gzip", context=RAG, question=Q, rate=0.5, rank_method="gzip")
    add("14_keep_split_blank_lines", context=[ct.SPLIT_DOC], rate=0.4, keep_split=True)
    add("14b_keep_split_double_dots", context=[ct.DOTS_DOC], rate=0.4, keep_split=True)
    add("15_sentence_filter_longllmlingua", context=ct.SENTENCE_DOCS, question=Q, rate=0.4,
        use_sentence_level_filter=True, keep_first_sentence=1, keep_last_sentence=1,
        keep_sentence_number=1, rank_method="longllmlingua")
    add("16_sentence_filter_llmlingua", context=ct.SENTENCE_DOCS, question=Q, rate=0.4,
        use_sentence_level_filter=True, keep_first_sentence=1, keep_last_sentence=1,
        keep_sentence_number=1, rank_method="llmlingua")
    add("17_chinese_contexts", context=ct.CHINESE_DOCS, rate=0.5)
    add("18_instruction_question_add_instruction_before", context=RAG,
        instruction=ct.INSTRUCTION, question=Q, rate=0.5, add_instruction=True,
        condition_in_question="before", condition_compare=True, rank_method="longllmlingua")
    add("19_context_budget_mul_1_5", context=RAG, question=Q, rate=0.4,
        rank_method="longllmlingua", context_budget="*1.5")
    add("20_no_token_level_filter", context=RAG, question=Q, rate=0.5,
        rank_method="longllmlingua", use_token_level_filter=False)
    add("21_no_concate_question", context=GSM[:4], question=ct.MATH_QUESTION, rate=0.5,
        concate_question=False)
    add("22_short_prompt", context=[ct.gt.MATH], rate=0.5)
    add("23_target_token_iterative_100", context=[ct.LONG_DOC], target_token=250,
        iterative_size=100)
    add("24_condition_after_rank_llmlingua", context=RAG, question=Q, rate=0.5,
        condition_in_question="after", rank_method="llmlingua")
    return c


def method_of(kw):
    long_keys = ["question", "condition_compare", "dynamic_context_compression_ratio"]
    if kw.get("rank_method") == "longllmlingua" or any(kw.get(k) for k in long_keys):
        return "longllmlingua"
    return "llmlingua"


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main():
    os.chdir(REPO)
    import llmlingua
    versions = {"llmlingua": getattr(llmlingua, "__version__", "0.2.2"),
                "transformers": transformers.__version__, "torch": torch.__version__,
                "tokenizers": __import__("tokenizers").__version__, "numpy": np.__version__,
                "nltk": nltk.__version__}
    for key, path in MODELS.items():
        torch.manual_seed(0)
        comp = PromptCompressor(model_name=path, device_map="cpu")
        out = {"model": path,
               "sha256": {f: sha(os.path.join(path, f))
                          for f in ["model.safetensors", "tokenizer.json"]},
               "versions": versions, "cases": [], "reference_errors": [], "recover": [],
               "sentences": []}
        results = {}
        for name, kw in cases():
            TRACE.clear()
            params = copy.deepcopy(kw)
            try:
                res = comp.compress_prompt(**copy.deepcopy(kw))
            except Exception as e:  # noqa: BLE001 - recorded, not hidden
                tb = traceback.format_exc().strip().splitlines()
                out["reference_errors"].append({"name": name, "params": params,
                                                "error": f"{type(e).__name__}: {e}",
                                                "traceback_tail": tb[-6:]})
                print(f"{key}/{name}: ERROR {type(e).__name__}: {e}", flush=True)
                continue
            trace = {"ranking": TRACE.get("ranking"), "selected": TRACE.get("selected"),
                     "dynamic_ratio": TRACE.get("dynamic_ratio"), "ids": TRACE.get("ids")}
            for extra in ["sentence_ranking", "sentence_contexts"]:
                if extra in TRACE:
                    trace[extra] = TRACE[extra]
            out["cases"].append({"name": name, "method": method_of(kw), "params": params,
                                 "result": res, "trace": trace})
            results[name] = (kw, res)
            print(f"{key}/{name}: {res['origin_tokens']} -> {res['compressed_tokens']} "
                  f"ids={len(trace['ids']) if trace['ids'] else None} sel={trace['selected']}",
                  flush=True)
        rec_src = [("01_plain_3ctx_rate05", 0), ("05_longllmlingua_recipe", 1),
                   ("01_plain_3ctx_rate05", 2), ("03_long_single_rate04", 3)]
        for i, (cname, ri) in enumerate(rec_src):
            if cname not in results:
                continue
            kw, res = results[cname]
            original = "\n\n".join(kw["context"])
            response = ct.RECOVER_RESPONSES[ri]
            r = comp.recover(original, res["compressed_prompt"], response)
            out["recover"].append({"name": f"recover_{i}_{cname}", "original_prompt": original,
                                   "compressed_prompt": res["compressed_prompt"],
                                   "response": response, "result": r})
        for t in ct.SENTENCE_TEXTS:
            out["sentences"].append({"text": t, "nltk": nltk.sent_tokenize(t)})
        fname = os.path.join(REPO, "tests", "goldens", f"llmlingua_{key}.json")
        with open(fname, "w") as f:
            json.dump(out, f, ensure_ascii=False, indent=1)
            f.write("\n")
        print("wrote", fname, len(out["cases"]), "cases,", len(out["reference_errors"]), "errors")


if __name__ == "__main__":
    main()
