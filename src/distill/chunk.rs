//! What the LLM is asked (spec §1): the paper's compression instruction, byte for byte (id 4 of
//! microsoft/LLMLingua's `experiments/llmlingua2/data_collection/compression_instructions.json`,
//! MIT; its typo "becuase" and the spaces before the line breaks included), and the reference's
//! chunking of an original into pieces of at most `size` cl100k tokens ending at a `.` or a line
//! break (`compress.py::chunk_origin`).

use crate::tokens::TokenizerKind;

/// The instruction's system prompt.
pub const SYSTEM_PROMPT: &str = "You are an excellent linguist and very good at compressing passages into short expressions by removing unimportant words, while retaining as much information as possible.";

/// The instruction's user prompt; `{text_to_compress}` is replaced by the chunk.
pub const USER_TEMPLATE: &str = "Compress some text to short expressions, and such that you (GPT-4) can reconstruct it as close as possible to the original. Unlike the usual text compression, I need you to comply with the 5 conditions below: 1. You can ONLY remove unimportant words. 2. Do not change the order of words. 3. Do not change the original words, e.g. 'asking'->'ask' is NOT OK, 'current'->'now' is NOT OK. 4. Do not use abbreviations or emojis, e.g. 'without'->'w/o' is NOT OK, 'as soon as possible'->'ASAP' is NOT OK. 5. Do not add new words or symbols, this is very important. For example, 'dedicate 3 hours to each chapter'->'3 hours/chapter' is NOT OK because you add new token '/', just compress it into '3 hours each chapter'. '30 eggs plus 20 eggs equals 50 eggs'->'30+20=50' is also NOT OK becuase you add new symbols + and =, just compress it into '30 plus 20 equals 50'. \nCompress the origin aggressively by removing words only. Compress the origin as short as you can, while retaining as much information as possible. \nIf you understand, please compress the following text: \n{text_to_compress}\nThe compressed text is: ";

/// The reference's chunk size (`collect_data.sh`).
pub const DEFAULT_CHUNK_TOKENS: usize = 512;

/// The user message for one chunk.
pub fn user_prompt(chunk: &str) -> String {
    USER_TEMPLATE.replacen("{text_to_compress}", chunk, 1)
}

/// Splits `text` as `chunk_origin` does: from each start, the last `.` or `\n` token within the
/// next `size` tokens ends the chunk (merged tokens such as `.\n` are not boundaries); without
/// one, the chunk is cut at `size` tokens (so a chunk holds at most `size + 1` tokens). Each
/// chunk is decoded on its own, with invalid UTF-8 replaced, as tiktoken does.
pub fn chunk_origin(text: &str, size: usize) -> Vec<String> {
    let bpe = TokenizerKind::Cl100kBase.bpe();
    let ids = bpe.encode_ordinary(text);
    let boundaries: Vec<u32> = [".", "\n"]
        .iter()
        .flat_map(|s| bpe.encode_ordinary(s))
        .collect();
    let decode = |ids: &[u32]| {
        bpe.decode_bytes(ids)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
            .unwrap_or_default()
    };
    let n = ids.len();
    let size = size.max(1);
    let mut out = Vec::new();
    let mut st = 0;
    while st < n {
        if st + size > n - 1 {
            out.push(decode(&ids[st..]));
            break;
        }
        let mut ed = st + size;
        for j in 0..size {
            if boundaries.contains(&ids[ed - j]) {
                ed -= j;
                break;
            }
        }
        out.push(decode(&ids[st..=ed]));
        st = ed + 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use sha2::{Digest, Sha256};

    #[test]
    fn the_instruction_is_the_papers_byte_for_byte() {
        let hex = |s: &str| hex::encode(Sha256::digest(s.as_bytes()));
        assert_eq!(
            hex(SYSTEM_PROMPT),
            "3dfc678889eff60247592dbd76dbb280b082c5acb1ef312319895f3c46562f7f"
        );
        assert_eq!(USER_TEMPLATE.chars().count(), 1108);
        assert_eq!(
            hex(USER_TEMPLATE),
            "149d6f2e53473da3538411dd6894998baa9e9cb0f0ddc3151198913581bbd2f0"
        );
        assert!(user_prompt("a {b} c").contains("\na {b} c\nThe compressed text is: "));
    }

    #[test]
    fn chunks_end_at_a_period_or_line_break_within_the_size() {
        let sentence = "The council met on Monday and approved the budget for the parks department";
        let text = (0..60)
            .map(|i| format!("{sentence} item {i}."))
            .collect::<Vec<_>>()
            .join(" ");
        let chunks = chunk_origin(&text, 64);
        assert!(chunks.len() > 5);
        assert_eq!(
            chunks.concat(),
            text,
            "ASCII text survives chunk-by-chunk decoding"
        );
        let bpe = TokenizerKind::Cl100kBase.bpe();
        for c in &chunks[..chunks.len() - 1] {
            assert!(bpe.encode_ordinary(c).len() <= 65, "{c}");
            assert!(c.ends_with('.'), "{c:?}");
        }
        // No boundary at all: hard cuts of size + 1 tokens.
        let words = "alpha ".repeat(300);
        let hard = chunk_origin(&words, 100);
        assert_eq!(bpe.encode_ordinary(&hard[0]).len(), 101);
        assert_eq!(hard.concat(), words);
        assert!(chunk_origin("", 512).is_empty());
        assert_eq!(chunk_origin("short.", 512), ["short."]);
    }
}
