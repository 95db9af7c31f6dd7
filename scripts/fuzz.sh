#!/usr/bin/env bash
# Fuzzes the URL parser, signature verification and the image engine with cargo-fuzz
# (libFuzzer), each target for SECONDS (default 20), after replaying the committed crash
# inputs in fuzz/regressions/<target>/. Crashes land in fuzz/artifacts/<target>/: copy
# them to fuzz/regressions/<target>/ with the fix.
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
#
# cargo-fuzz needs nightly compiler flags; on stable, RUSTC_BOOTSTRAP=1 unlocks them.
# Not part of scripts/test.sh: the first sanitizer build (the pure core plus the C codecs,
# instrumented) takes about 12 minutes on 2 cores. Later runs rebuild only what changed.
# scripts/test.sh builds the same targets without instrumentation and replays
# fuzz/regressions/ through them (fuzz/tests/replay.rs), so they never drift.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
secs=${1:-20}
shift || true
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(parse_options verify_signature transform_run)

command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked --version 0.13.2
export RUSTC_BOOTSTRAP=1

cd fuzz
for t in "${targets[@]}"; do
    cargo fuzz build -O --features libfuzzer "$t"
    mkdir -p "corpus/$t"
    seeds=()
    case $t in
        transform_run) seeds=(../tests/data/images ../tests/data/hostile) ;;
    esac
    if [ -d "regressions/$t" ] && ls "regressions/$t"/* >/dev/null 2>&1; then
        echo "== $t: replaying regressions"
        cargo fuzz run -O --features libfuzzer "$t" "regressions/$t"/* -- -runs=1
    fi
    echo "== $t: fuzzing for ${secs}s"
    # -rss_limit_mb: a transform that allocates past its pixel limits is a finding too
    cargo fuzz run -O --features libfuzzer "$t" "corpus/$t" "${seeds[@]}" -- \
        -max_total_time="$secs" -rss_limit_mb=2048 -max_len=1048576 -timeout=10
done
