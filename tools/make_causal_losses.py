#!/usr/bin/env python3
"""Writes tests/goldens/causal_losses.json: per-token NLL parity data for the tiny causal models
(tests/models/gpt2-tiny, tests/models/llama-tiny), computed with HF transformers 4.46.3, f32, CPU,
legacy tuple KV caches, exactly as llmlingua's get_ppl computes them.

Each case is a list of ops run in order from an empty cache:
  run      feed `ids` after the cached prefix (positions continue from the cache length);
           loss[j] = CE(logits of ids[j] | cache + ids[..=j], ids[j+1]), so len(loss) = len(ids)-1
  truncate keep the first `len` cached positions
  remove   drop cached positions [start, start+count) (llmlingua's sliding window)
Losses are exact float32 values written as repr(float(np.float32)).

    HF_HUB_OFFLINE=1 PYTHONPATH=/work/ref/tf4 /work/ref/venv/bin/python tools/make_causal_losses.py
"""

import hashlib
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import causal_texts as ct  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
import transformers  # noqa: E402
from transformers import AutoModelForCausalLM, AutoTokenizer  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = {"gpt2-tiny": "tests/models/gpt2-tiny", "llama-tiny": "tests/models/llama-tiny"}


def to_legacy(pkv):
    if hasattr(pkv, "to_legacy_cache"):
        pkv = pkv.to_legacy_cache()
    return tuple((k, v) for k, v in pkv)


class Runner:
    def __init__(self, model):
        self.model = model
        self.pkv = None

    def cache_len(self):
        return 0 if self.pkv is None else self.pkv[0][0].shape[2]

    def run(self, ids):
        inp = torch.tensor([ids])
        mask = torch.ones((1, self.cache_len() + len(ids)), dtype=torch.long)
        with torch.no_grad():
            out = self.model(inp, attention_mask=mask, past_key_values=self.pkv, use_cache=True)
        self.pkv = to_legacy(out.past_key_values)
        logits = out.logits[0, :-1, :].contiguous()
        loss = torch.nn.CrossEntropyLoss(reduction="none")(logits, inp[0, 1:])
        assert loss.dtype == torch.float32 and torch.isfinite(loss).all()
        return [repr(float(np.float32(x))) for x in loss.numpy()]

    def truncate(self, n):
        self.pkv = tuple((k[..., :n, :], v[..., :n, :]) for k, v in self.pkv)

    def remove(self, s, e):
        self.pkv = tuple(
            (torch.cat([k[..., :s, :], k[..., s + e:, :]], dim=-2),
             torch.cat([v[..., :s, :], v[..., s + e:, :]], dim=-2))
            for k, v in self.pkv)


def cases(tok):
    def ids_of(text, n):
        ids = tok(text)["input_ids"]
        assert len(ids) >= n, (len(ids), n)
        return ids[:n]

    med = ids_of(ct.MEDIUM_DOC, 120)
    long_ = ids_of(ct.LOSS_LONG, 500)
    sliding = ids_of(ct.SLIDING_DOC, 550)
    zh_text = "\n\n".join(ct.CHINESE_DOCS)
    zh_ids = tok(zh_text)["input_ids"][:300]
    return [
        ("plain_120", ct.MEDIUM_DOC, [("run", med)]),
        ("long_500", ct.LOSS_LONG, [("run", long_)]),
        ("chunked_150_150_100", ct.LOSS_LONG,
         [("run", long_[:150]), ("run", long_[150:300]), ("run", long_[300:400])]),
        ("truncate_300_to_200_run_150", ct.SLIDING_DOC,
         [("run", sliding[:300]), ("truncate", 200), ("run", sliding[300:450])]),
        ("remove_10_60_sliding", ct.SLIDING_DOC,
         [("run", sliding[:400]), ("remove", 10, 60), ("run", sliding[400:550])]),
        ("chinese", zh_text, [("run", zh_ids)]),
    ]


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def main():
    os.chdir(REPO)
    torch.manual_seed(0)
    out = {"generator": "tools/make_causal_losses.py", "torch": torch.__version__,
           "transformers": transformers.__version__, "models": {}}
    for name, path in MODELS.items():
        tok = AutoTokenizer.from_pretrained(path)
        model = AutoModelForCausalLM.from_pretrained(path, torch_dtype=torch.float32).eval()
        rec = {"sha256": {"model.safetensors": sha(os.path.join(path, "model.safetensors"))},
               "attn_implementation": model.config._attn_implementation, "cases": []}
        for cname, text, ops in cases(tok):
            r = Runner(model)
            jops = []
            for op in ops:
                if op[0] == "run":
                    jops.append({"op": "run", "ids": list(op[1]), "loss": r.run(op[1])})
                elif op[0] == "truncate":
                    r.truncate(op[1])
                    jops.append({"op": "truncate", "len": op[1]})
                else:
                    r.remove(op[1], op[2])
                    jops.append({"op": "remove", "start": op[1], "count": op[2]})
            rec["cases"].append({"name": cname, "text": text, "ops": jops})
            print(f"{name}/{cname}: {[len(o.get('ids', [])) for o in jops]} cache {r.cache_len()}")
        out["models"][name] = rec
    with open(os.path.join(REPO, "tests", "goldens", "causal_losses.json"), "w") as f:
        json.dump(out, f, ensure_ascii=False, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
