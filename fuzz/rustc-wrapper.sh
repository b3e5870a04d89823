#!/bin/sh
# RUSTC_WRAPPER for a fast fuzz build (see docs/reliability.md, "Fuzzing"): afl's coverage instrumentation
# (the flags `cargo afl build` sets) for the crate under test and the two targets only. Every
# dependency is compiled as the main crate's dev profile compiles it, so a copy of the main
# crate's `target/debug` is reused instead of rebuilding the whole tree instrumented.
RT=${AFL_COMPILER_RT:-$(ls "${XDG_DATA_HOME:-$HOME/.local/share}"/afl.rs/rustc-*/afl.rs-*/afl-llvm/afl-compiler-rt.o | head -n 1)}
case " $* " in
*" --crate-name lingua_proxy "* | *" --crate-name transform "* | *" --crate-name sse_tap "*)
    exec "$@" -C passes=sancov-module \
        -C llvm-args=-sanitizer-coverage-level=3 \
        -C llvm-args=-sanitizer-coverage-trace-pc-guard \
        -C llvm-args=-sanitizer-coverage-prune-blocks=0 \
        -C llvm-args=-sanitizer-coverage-trace-compares \
        --cfg fuzzing "-Clink-arg=$RT"
    ;;
*) exec "$@" ;;
esac
