#!/usr/bin/env python3
"""Builds the tiny causal-LM test checkpoints (committed) for the LLMLingua v1 / LongLLMLingua path:

* tests/models/gpt2-tiny/   GPT2LMHeadModel, byte-level BPE tokenizer (GPT2TokenizerFast).
* tests/models/llama-tiny/  LlamaForCausalLM (GQA), SentencePiece-style byte-fallback BPE
                            (LlamaTokenizerFast, BOS added).
* tests/models/gpt2-tiny-bin/  the gpt2-tiny weights as pytorch_model.bin (torch.save of the
                            state dict, HF key layout) + the same config/tokenizer files.

Tokenizers are trained with the HF `tokenizers` package on tools/causal_texts.py's corpus and then
re-numbered:
  GPT-2: ids 0..255 = the 256 byte symbols in GPT-2's bytes_to_unicode order (so id 13 is "."),
         then the merges in training order, `<|endoftext|>` last (bos = eos = unk). No specials
         added by the post-processor.
  Llama: <unk>=0, <s>=1, </s>=2, <0x00>..<0xFF> = 3..258 (id 13 = <0x0A>, the newline), then the
         merged pieces in training order, then the single characters kept by the trainer
         (limit_alphabet: rarer CJK characters fall back to bytes).
Weights: random, f32, drawn from Python's seeded Mersenne Twister (tools/safetensors_io.Rng), written
with the deterministic stdlib safetensors writer. gpt2-tiny ties lm_head to wte and, like
save_pretrained, does NOT store `lm_head.weight`. llama-tiny stores `lm_head.weight`
(tie_word_embeddings false). Init scales are large on purpose (embeddings std ~0.7, logits std
~3-5) so per-token losses are well spread (no near-ties in the compressor's thresholds).

Needs: `tokenizers` + `transformers` 4.46.3 (+ torch for the .bin copy), e.g.
    PYTHONPATH=/work/ref/tf4 /work/ref/venv/bin/python tools/build_tiny_causal.py [--check]
--check additionally loads both models with transformers and prints loss statistics.
Not run in CI: the output is committed. Rebuilding gives byte-identical files (sha256 printed).
"""

import hashlib
import json
import os
import shutil
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import causal_texts  # noqa: E402
import safetensors_io as st  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MODELS = os.path.join(REPO, "tests", "models")
GPT2_DIR = os.path.join(MODELS, "gpt2-tiny")
GPT2_BIN_DIR = os.path.join(MODELS, "gpt2-tiny-bin")
LLAMA_DIR = os.path.join(MODELS, "llama-tiny")
VOCAB = 1000
H, LAYERS, HEADS, MAXPOS = 64, 2, 4, 512
LLAMA_FF, LLAMA_KV = 176, 2
ALPHABET = 220  # llama-tiny: characters kept as pieces; the rest use byte fallback
EOT = "<|endoftext|>"


def bytes_to_unicode_order():
    """GPT-2's byte order: printable 33..126, 161..172, 174..255, then the other bytes."""
    bs = list(range(33, 127)) + list(range(161, 173)) + list(range(174, 256))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]


def merges_as_pairs(merges):
    return [m.split(" ", 1) if isinstance(m, str) else list(m) for m in merges]


def train_gpt2_tokenizer(corpus):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB - 1,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
        min_frequency=2,
    )
    tok.train_from_iterator(corpus.split("\n"), trainer=trainer)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    tj = json.loads(tok.to_str())
    old = tj["model"]["vocab"]
    order = bytes_to_unicode_order()
    assert all(c in old for c in order)
    rest = sorted((i, t) for t, i in old.items() if t not in set(order))
    vocab = {t: i for i, t in enumerate(order)}
    for _, t in rest:
        vocab[t] = len(vocab)
    vocab[EOT] = len(vocab)
    tj["model"]["vocab"] = vocab
    tj["model"]["merges"] = merges_as_pairs(tj["model"]["merges"])
    tj["model"]["dropout"] = None
    tj["model"]["unk_token"] = None
    tj["added_tokens"] = [{"id": vocab[EOT], "content": EOT, "single_word": False, "lstrip": False,
                           "rstrip": False, "normalized": True, "special": True}]
    return tj


def train_llama_tokenizer(corpus):
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="always",
                                                 split=True)
    # The trainer's own limit_alphabet breaks frequency ties in hash order (not reproducible):
    # choose the alphabet here (most frequent first, ties by code point) and force exactly it.
    freq = {}
    for ch in corpus.replace(" ", "\u2581").replace("\n", ""):
        freq[ch] = freq.get(ch, 0) + 1
    freq["\u2581"] = freq.get("\u2581", 0) + 1
    alphabet = sorted(freq, key=lambda c: (-freq[c], ord(c)))[:ALPHABET]
    trainer = trainers.BpeTrainer(vocab_size=VOCAB - 259, limit_alphabet=len(alphabet),
                                  initial_alphabet=alphabet, show_progress=False,
                                  min_frequency=2)
    tok.train_from_iterator(corpus.split("\n"), trainer=trainer)
    tj = json.loads(tok.to_str())
    old = tj["model"]["vocab"]
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    for b in range(256):
        vocab["<0x%02X>" % b] = 3 + b
    by_id = sorted((i, t) for t, i in old.items())
    for _, t in by_id:
        if len(t) > 1 and t not in vocab:
            vocab[t] = len(vocab)
    for _, t in by_id:
        if len(t) == 1 and t not in vocab:
            vocab[t] = len(vocab)
    tj["model"] = {
        "type": "BPE", "dropout": None, "unk_token": "<unk>", "continuing_subword_prefix": None,
        "end_of_word_suffix": None, "fuse_unk": True, "byte_fallback": True, "ignore_merges": False,
        "vocab": vocab, "merges": merges_as_pairs(tj["model"]["merges"]),
    }
    tj["normalizer"] = {"type": "Sequence", "normalizers": [
        {"type": "Prepend", "prepend": "\u2581"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
    ]}
    tj["pre_tokenizer"] = None
    tj["decoder"] = {"type": "Sequence", "decoders": [
        {"type": "Replace", "pattern": {"String": "\u2581"}, "content": " "},
        {"type": "ByteFallback"},
        {"type": "Fuse"},
        {"type": "Strip", "content": " ", "start": 1, "stop": 0},
    ]}
    tj["post_processor"] = {
        "type": "TemplateProcessing",
        "single": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                   {"Sequence": {"id": "A", "type_id": 0}}],
        "pair": [{"SpecialToken": {"id": "<s>", "type_id": 0}},
                 {"Sequence": {"id": "A", "type_id": 0}},
                 {"SpecialToken": {"id": "<s>", "type_id": 1}},
                 {"Sequence": {"id": "B", "type_id": 1}}],
        "special_tokens": {"<s>": {"id": "<s>", "ids": [1], "tokens": ["<s>"]}},
    }
    tj["added_tokens"] = [{"id": i, "content": t, "single_word": False, "lstrip": False,
                           "rstrip": False, "normalized": False, "special": True}
                          for i, t in enumerate(["<unk>", "<s>", "</s>"])]
    return tj


def save_tokenizer(tj, out, kind):
    import tempfile

    from transformers import GPT2TokenizerFast, LlamaTokenizerFast

    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "tokenizer.json")
        with open(path, "w") as f:
            json.dump(tj, f, ensure_ascii=False)
        if kind == "gpt2":
            t = GPT2TokenizerFast(tokenizer_file=path, bos_token=EOT, eos_token=EOT, unk_token=EOT,
                                  add_prefix_space=False, model_max_length=512,
                                  clean_up_tokenization_spaces=True)
        else:
            t = LlamaTokenizerFast(tokenizer_file=path, bos_token="<s>", eos_token="</s>",
                                   unk_token="<unk>", add_bos_token=True, add_eos_token=False,
                                   clean_up_tokenization_spaces=False, legacy=False,
                                   model_max_length=512)
        t.save_pretrained(out)
    cfg_path = os.path.join(out, "tokenizer_config.json")
    with open(cfg_path) as f:
        cfg = json.load(f)
    cfg["tokenizer_class"] = "GPT2TokenizerFast" if kind == "gpt2" else "LlamaTokenizerFast"
    with open(cfg_path, "w") as f:
        json.dump(cfg, f, indent=2, sort_keys=True, ensure_ascii=False)
        f.write("\n")
    for extra in ["vocab.json", "merges.txt", "tokenizer.model"]:
        p = os.path.join(out, extra)
        if os.path.exists(p):
            os.remove(p)
    return len(tj["model"]["vocab"])


class Weights:
    def __init__(self, seed):
        self.seed = seed
        self.tensors = {}

    def rnd(self, name, shape, scale, center=0.0):
        n = 1
        for d in shape:
            n *= d
        self.seed += 1
        vals = [center + v for v in st.Rng(self.seed).uniform(n, scale)]
        self.tensors[name] = ("F32", list(shape), st.f32_bytes(vals))


def fan(n, gain):
    """Uniform half-width giving std gain/sqrt(n)."""
    return gain * (3.0 ** 0.5) / (n ** 0.5)


def build_gpt2(vocab):
    w = Weights(1000)
    p = "transformer."
    w.rnd(p + "wte.weight", [vocab, H], 1.2)
    w.rnd(p + "wpe.weight", [MAXPOS, H], 0.6)
    for i in range(LAYERS):
        q = f"{p}h.{i}."
        w.rnd(q + "ln_1.weight", [H], 0.1, 1.0)
        w.rnd(q + "ln_1.bias", [H], 0.1)
        w.rnd(q + "attn.c_attn.weight", [H, 3 * H], fan(H, 1.5))
        w.rnd(q + "attn.c_attn.bias", [3 * H], 0.1)
        w.rnd(q + "attn.c_proj.weight", [H, H], fan(H, 1.0))
        w.rnd(q + "attn.c_proj.bias", [H], 0.1)
        w.rnd(q + "ln_2.weight", [H], 0.1, 1.0)
        w.rnd(q + "ln_2.bias", [H], 0.1)
        w.rnd(q + "mlp.c_fc.weight", [H, 4 * H], fan(H, 1.5))
        w.rnd(q + "mlp.c_fc.bias", [4 * H], 0.1)
        w.rnd(q + "mlp.c_proj.weight", [4 * H, H], fan(4 * H, 1.0))
        w.rnd(q + "mlp.c_proj.bias", [H], 0.1)
    w.rnd(p + "ln_f.weight", [H], 0.1, 0.6)
    w.rnd(p + "ln_f.bias", [H], 0.1)
    st.write(os.path.join(GPT2_DIR, "model.safetensors"), w.tensors, {"format": "pt"})
    config = {
        "activation_function": "gelu_new",
        "architectures": ["GPT2LMHeadModel"],
        "attn_pdrop": 0.1,
        "bos_token_id": vocab - 1,
        "embd_pdrop": 0.1,
        "eos_token_id": vocab - 1,
        "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05,
        "model_type": "gpt2",
        "n_ctx": MAXPOS,
        "n_embd": H,
        "n_head": HEADS,
        "n_inner": None,
        "n_layer": LAYERS,
        "n_positions": MAXPOS,
        "reorder_and_upcast_attn": False,
        "resid_pdrop": 0.1,
        "scale_attn_by_inverse_layer_idx": False,
        "scale_attn_weights": True,
        "summary_activation": None,
        "summary_first_dropout": 0.1,
        "summary_proj_to_labels": True,
        "summary_type": "cls_index",
        "summary_use_proj": True,
        "tie_word_embeddings": True,
        "torch_dtype": "float32",
        "use_cache": True,
        "vocab_size": vocab,
    }
    write_json(os.path.join(GPT2_DIR, "config.json"), config)
    write_json(os.path.join(GPT2_DIR, "generation_config.json"),
               {"bos_token_id": vocab - 1, "eos_token_id": vocab - 1})
    return w.tensors


def build_llama(vocab):
    w = Weights(2000)
    hd = H // HEADS
    w.rnd("model.embed_tokens.weight", [vocab, H], 1.2)
    for i in range(LAYERS):
        q = f"model.layers.{i}."
        w.rnd(q + "input_layernorm.weight", [H], 0.1, 1.0)
        w.rnd(q + "self_attn.q_proj.weight", [H, H], fan(H, 1.5))
        w.rnd(q + "self_attn.k_proj.weight", [LLAMA_KV * hd, H], fan(H, 1.5))
        w.rnd(q + "self_attn.v_proj.weight", [LLAMA_KV * hd, H], fan(H, 1.0))
        w.rnd(q + "self_attn.o_proj.weight", [H, H], fan(H, 1.0))
        w.rnd(q + "post_attention_layernorm.weight", [H], 0.1, 1.0)
        w.rnd(q + "mlp.gate_proj.weight", [LLAMA_FF, H], fan(H, 1.5))
        w.rnd(q + "mlp.up_proj.weight", [LLAMA_FF, H], fan(H, 1.0))
        w.rnd(q + "mlp.down_proj.weight", [H, LLAMA_FF], fan(LLAMA_FF, 1.0))
    w.rnd("model.norm.weight", [H], 0.1, 1.0)
    w.rnd("lm_head.weight", [vocab, H], fan(H, 3.0))
    st.write(os.path.join(LLAMA_DIR, "model.safetensors"), w.tensors, {"format": "pt"})
    config = {
        "architectures": ["LlamaForCausalLM"],
        "attention_bias": False,
        "attention_dropout": 0.0,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "head_dim": hd,
        "hidden_act": "silu",
        "hidden_size": H,
        "initializer_range": 0.02,
        "intermediate_size": LLAMA_FF,
        "max_position_embeddings": MAXPOS,
        "mlp_bias": False,
        "model_type": "llama",
        "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS,
        "num_key_value_heads": LLAMA_KV,
        "pretraining_tp": 1,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 10000.0,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "use_cache": True,
        "vocab_size": vocab,
    }
    write_json(os.path.join(LLAMA_DIR, "config.json"), config)
    write_json(os.path.join(LLAMA_DIR, "generation_config.json"),
               {"bos_token_id": 1, "eos_token_id": 2})


def write_json(path, obj):
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")


def build_bin(tensors):
    import torch

    os.makedirs(GPT2_BIN_DIR, exist_ok=True)
    for name in os.listdir(GPT2_DIR):
        if name != "model.safetensors":
            shutil.copy(os.path.join(GPT2_DIR, name), os.path.join(GPT2_BIN_DIR, name))
    sd = {}
    for name in sorted(tensors):
        _, shape, raw = tensors[name]
        sd[name] = torch.frombuffer(bytearray(raw), dtype=torch.float32).reshape(shape).clone()
    torch.save(sd, os.path.join(GPT2_BIN_DIR, "pytorch_model.bin"))


def sha(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def check():
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    text = causal_texts.MEDIUM_DOC
    for d in [GPT2_DIR, GPT2_BIN_DIR, LLAMA_DIR]:
        tok = AutoTokenizer.from_pretrained(d)
        model, info = AutoModelForCausalLM.from_pretrained(d, torch_dtype=torch.float32,
                                                           output_loading_info=True)
        bad = {k: v for k, v in info.items() if v}
        assert not bad, (d, bad)
        ids = tok(text, return_tensors="pt")["input_ids"]
        with torch.no_grad():
            logits = model(ids).logits[0, :-1]
        nll = torch.nn.functional.cross_entropy(logits, ids[0, 1:], reduction="none")
        assert torch.isfinite(nll).all()
        print(f"{os.path.basename(d)}: {type(tok).__name__} {len(tok)} tokens, text {ids.shape[1]} "
              f"ids, nll mean {nll.mean():.3f} std {nll.std():.3f} min {nll.min():.3f} "
              f"max {nll.max():.3f}; first ids {ids[0, :6].tolist()}")
        for t in ["a b", "Hello world.\nNew line", causal_texts.CHINESE_DOCS[3],
                  "罕见字：龘靐齉", causal_texts.GSM_DEMOS[2]]:
            enc = tok(t)["input_ids"]
            dec = tok.decode(enc, skip_special_tokens=True)
            assert dec == t, (d, t, dec)
        print("   'a b' ->", tok("a b")["input_ids"], tok.convert_ids_to_tokens(tok("a b")["input_ids"]),
              "id13 =", tok.convert_ids_to_tokens(13), "rare CJK ->",
              tok.convert_ids_to_tokens(tok("龘")["input_ids"]))


def main():
    corpus = causal_texts.corpus()
    for d in [GPT2_DIR, LLAMA_DIR]:
        if os.path.isdir(d):
            shutil.rmtree(d)
        os.makedirs(d)
    gv = save_tokenizer(train_gpt2_tokenizer(corpus), GPT2_DIR, "gpt2")
    lv = save_tokenizer(train_llama_tokenizer(corpus), LLAMA_DIR, "llama")
    tensors = build_gpt2(gv)
    build_llama(lv)
    if "--no-bin" not in sys.argv:
        if os.path.isdir(GPT2_BIN_DIR):
            shutil.rmtree(GPT2_BIN_DIR)
        build_bin(tensors)
    for d in [GPT2_DIR, LLAMA_DIR, GPT2_BIN_DIR]:
        if not os.path.isdir(d):
            continue
        for name in sorted(os.listdir(d)):
            print(f"{sha(os.path.join(d, name))}  {os.path.relpath(os.path.join(d, name), REPO)}")
    if "--check" in sys.argv:
        check()


if __name__ == "__main__":
    main()
