//! afl target: arbitrary bytes as a chat-completion body through the request transformer
//! (`lingua_proxy::fuzzing::transform`).

fn main() {
    // Build the policy (tokenizer tables, regexes) before afl's fork server starts, so that
    // every forked child inherits it instead of building it again.
    lingua_proxy::fuzzing::transform(b"\x01Warm up the fuzzing policy before forking.");
    afl::fuzz!(|data: &[u8]| {
        lingua_proxy::fuzzing::transform(data);
    });
}
