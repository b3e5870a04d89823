//! The tokenizer rebuilt from a GGUF file's vocabulary and merges (`CausalTokenizer::from_gguf`)
//! behaves as the byte-level BPE it describes: merges apply, digits split one by one, spaces
//! become `Ġ`, control tokens stay whole, and decoding gives the text back. The file is written
//! byte by byte here (GGUF v3: header, metadata, no tensors).

use lingua_proxy::scorer::causal::CausalTokenizer;

/// GPT-2's printable stand-ins for the 256 byte values.
fn byte_tokens() -> Vec<String> {
    let mut printable: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut chars: Vec<u32> = printable.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !printable.contains(&b) {
            printable.push(b);
            chars.push(256 + n);
            n += 1;
        }
    }
    let mut by_byte = vec![String::new(); 256];
    for (b, c) in printable.iter().zip(&chars) {
        by_byte[*b as usize] = char::from_u32(*c).unwrap().to_string();
    }
    by_byte
}

fn string(out: &mut Vec<u8>, s: &str) {
    out.extend((s.len() as u64).to_le_bytes());
    out.extend(s.as_bytes());
}

enum V<'a> {
    U32(u32),
    F32(f32),
    Str(&'a str),
    Strs(&'a [String]),
    U32s(&'a [u32]),
}

fn gguf(meta: &[(&str, V)]) -> Vec<u8> {
    let mut out = b"GGUF".to_vec();
    out.extend(3u32.to_le_bytes());
    out.extend(0u64.to_le_bytes()); // tensors
    out.extend((meta.len() as u64).to_le_bytes());
    for (k, v) in meta {
        string(&mut out, k);
        match v {
            V::U32(x) => {
                out.extend(4u32.to_le_bytes());
                out.extend(x.to_le_bytes());
            }
            V::F32(x) => {
                out.extend(6u32.to_le_bytes());
                out.extend(x.to_le_bytes());
            }
            V::Str(s) => {
                out.extend(8u32.to_le_bytes());
                string(&mut out, s);
            }
            V::Strs(a) => {
                out.extend(9u32.to_le_bytes());
                out.extend(8u32.to_le_bytes());
                out.extend((a.len() as u64).to_le_bytes());
                for s in *a {
                    string(&mut out, s);
                }
            }
            V::U32s(a) => {
                out.extend(9u32.to_le_bytes());
                out.extend(4u32.to_le_bytes());
                out.extend((a.len() as u64).to_le_bytes());
                for x in *a {
                    out.extend(x.to_le_bytes());
                }
            }
        }
    }
    out
}

#[test]
fn gguf_tokenizer_is_a_working_byte_level_bpe() {
    let mut tokens = byte_tokens();
    for t in ["he", "hel", "hell", "hello", "<|endoftext|>"] {
        tokens.push(t.to_string());
    }
    let merges: Vec<String> = ["h e", "he l", "hel l", "hell o"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let mut types = vec![1u32; tokens.len()];
    *types.last_mut().unwrap() = 3; // control
    let eot = (tokens.len() - 1) as u32;
    let file = gguf(&[
        ("general.architecture", V::Str("llama")),
        ("llama.attention.head_count", V::U32(4)),
        ("llama.attention.head_count_kv", V::U32(2)),
        ("llama.attention.layer_norm_rms_epsilon", V::F32(1e-5)),
        ("tokenizer.ggml.model", V::Str("gpt2")),
        ("tokenizer.ggml.tokens", V::Strs(&tokens)),
        ("tokenizer.ggml.merges", V::Strs(&merges)),
        ("tokenizer.ggml.token_type", V::U32s(&types)),
        ("tokenizer.ggml.bos_token_id", V::U32(eot)),
    ]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    std::fs::write(&path, &file).unwrap();
    let tok = CausalTokenizer::from_gguf(&path).unwrap();
    let id = |t: &str| tokens.iter().position(|x| x == t).unwrap() as u32;
    let text = "hello 42<|endoftext|>";
    let ids = tok.encode(text, false).unwrap();
    assert_eq!(
        ids,
        vec![id("hello"), id("Ġ"), id("4"), id("2"), eot],
        "merges, the space as Ġ, digits one by one, the control token whole"
    );
    assert_eq!(tok.decode(&ids).unwrap(), text);
    assert_eq!(tok.vocab_size(), tokens.len());

    // A SentencePiece ("llama") vocabulary is refused, naming the file.
    let spm = gguf(&[
        ("general.architecture", V::Str("llama")),
        ("llama.attention.head_count", V::U32(4)),
        ("llama.attention.head_count_kv", V::U32(2)),
        ("tokenizer.ggml.model", V::Str("llama")),
        ("tokenizer.ggml.tokens", V::Strs(&tokens)),
    ]);
    std::fs::write(&path, &spm).unwrap();
    let e = CausalTokenizer::from_gguf(&path).unwrap_err();
    assert!(e.contains("tiny.gguf") && e.contains("byte-level"), "{e}");
}
