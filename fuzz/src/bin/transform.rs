//! afl target: arbitrary bytes as a chat-completion body through the request transformer
//! (`lingua_proxy::fuzzing::transform`).

fn main() {
    afl::fuzz!(|data: &[u8]| {
        lingua_proxy::fuzzing::transform(data);
    });
}
