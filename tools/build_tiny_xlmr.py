#!/usr/bin/env python3
"""Builds the tiny XLM-R-style test checkpoint tests/models/xlm-roberta-large-tiny/ (committed).

* Tokenizer: a SentencePiece Unigram model trained on tools/golden_texts.py (nmt_nfkc
  normalisation, so the precompiled charsmap performs the NFKC rewrites XLM-R performs), converted
  to an XLM-R tokenizer.json by transformers (<s>=0, <pad>=1, </s>=2, <unk>=3, …, <mask> last).
* Model: XLMRobertaForTokenClassification, 2 layers, hidden 32, 4 heads, random weights from a
  seeded Mersenne Twister, vocab = len(tokenizer) + 100 (the [NEWi] rows), 2 labels.

The directory name contains `xlm-roberta-large` because the reference picks its code path by
model name. Needs: sentencepiece, transformers (tokenizer conversion only). Not run in CI: the
output is committed.
"""

import json
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import golden_texts  # noqa: E402
import safetensors_io as st  # noqa: E402

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(REPO, "tests", "models", "xlm-roberta-large-tiny")
H, LAYERS, HEADS, FF, MAXPOS = 32, 2, 4, 64, 514


def train_tokenizer(tmp):
    import sentencepiece as spm

    corpus = os.path.join(tmp, "corpus.txt")
    with open(corpus, "w") as f:
        f.write(golden_texts.corpus())
    prefix = os.path.join(tmp, "sentencepiece.bpe")
    spm.SentencePieceTrainer.train(
        input=corpus,
        model_prefix=prefix,
        vocab_size=900,
        model_type="unigram",
        character_coverage=1.0,
        normalization_rule_name="nmt_nfkc",
        num_threads=1,
        hard_vocab_limit=False,
        split_digits=False,
        seed_sentencepiece_size=100000,
        shuffle_input_sentence=False,
    )
    return prefix + ".model"


def main():
    from transformers import XLMRobertaTokenizer

    os.makedirs(OUT, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        model_file = train_tokenizer(tmp)
        from transformers.convert_slow_tokenizer import XLMRobertaConverter
        import sentencepiece as spm

        class Orig:
            vocab_file = model_file
            def convert_tokens_to_ids(self, t):
                return {"<s>": 0, "</s>": 2}[t]

        fast = XLMRobertaConverter(Orig()).converted()
        fast.save(os.path.join(tmp, "tokenizer.json"))
        tok = XLMRobertaTokenizer(tokenizer_file=os.path.join(tmp, "tokenizer.json"))
        tok.save_pretrained(OUT)
    for extra in ["sentencepiece.bpe.model"]:
        p = os.path.join(OUT, extra)
        if os.path.exists(p):
            os.remove(p)
    with open(os.path.join(OUT, "tokenizer.json")) as f:
        tj = json.load(f)
    base_vocab = len(tj["model"]["vocab"])
    vocab = base_vocab + 100

    tensors = {}
    seed = [100]

    def rnd(name, shape, scale, center=0.0):
        n = 1
        for d in shape:
            n *= d
        seed[0] += 1
        vals = [center + v for v in st.Rng(seed[0]).uniform(n, scale)]
        tensors[name] = ("F32", list(shape), st.f32_bytes(vals))

    p = "roberta."
    rnd(p + "embeddings.word_embeddings.weight", [vocab, H], 0.5)
    rnd(p + "embeddings.position_embeddings.weight", [MAXPOS, H], 0.5)
    rnd(p + "embeddings.token_type_embeddings.weight", [1, H], 0.1)
    rnd(p + "embeddings.LayerNorm.weight", [H], 0.1, 1.0)
    rnd(p + "embeddings.LayerNorm.bias", [H], 0.1)
    for i in range(LAYERS):
        q = f"{p}encoder.layer.{i}."
        for m in ["query", "key", "value"]:
            rnd(q + f"attention.self.{m}.weight", [H, H], 0.3)
            rnd(q + f"attention.self.{m}.bias", [H], 0.1)
        rnd(q + "attention.output.dense.weight", [H, H], 0.3)
        rnd(q + "attention.output.dense.bias", [H], 0.1)
        rnd(q + "attention.output.LayerNorm.weight", [H], 0.1, 1.0)
        rnd(q + "attention.output.LayerNorm.bias", [H], 0.1)
        rnd(q + "intermediate.dense.weight", [FF, H], 0.3)
        rnd(q + "intermediate.dense.bias", [FF], 0.1)
        rnd(q + "output.dense.weight", [H, FF], 0.2)
        rnd(q + "output.dense.bias", [H], 0.1)
        rnd(q + "output.LayerNorm.weight", [H], 0.1, 1.0)
        rnd(q + "output.LayerNorm.bias", [H], 0.1)
    rnd("classifier.weight", [2, H], 0.4)
    rnd("classifier.bias", [2], 0.1)
    st.write(os.path.join(OUT, "model.safetensors"), tensors, {"format": "pt"})

    config = {
        "architectures": ["XLMRobertaForTokenClassification"],
        "attention_probs_dropout_prob": 0.1,
        "bos_token_id": 0,
        "classifier_dropout": None,
        "eos_token_id": 2,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": H,
        "id2label": {"0": "LABEL_0", "1": "LABEL_1"},
        "label2id": {"LABEL_0": 0, "LABEL_1": 1},
        "initializer_range": 0.02,
        "intermediate_size": FF,
        "layer_norm_eps": 1e-05,
        "max_position_embeddings": MAXPOS,
        "model_type": "xlm-roberta",
        "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS,
        "pad_token_id": 1,
        "position_embedding_type": "absolute",
        "torch_dtype": "float32",
        "type_vocab_size": 1,
        "vocab_size": vocab,
    }
    with open(os.path.join(OUT, "config.json"), "w") as f:
        json.dump(config, f, indent=2, sort_keys=True)
        f.write("\n")
    print(f"wrote {OUT}: base vocab {base_vocab}, model vocab {vocab}")


if __name__ == "__main__":
    main()
