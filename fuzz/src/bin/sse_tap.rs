//! afl target: arbitrary bytes, arbitrarily chunked, through the response tap
//! (`lingua_proxy::fuzzing::sse_tap`).

fn main() {
    afl::fuzz!(|data: &[u8]| {
        lingua_proxy::fuzzing::sse_tap(data);
    });
}
