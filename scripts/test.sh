#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, property and integration tests of every
# crate in the workspace (the server, imgedge-core, and the fuzz targets built without
# instrumentation, replaying fuzz/regressions/). Integration tests start the real binary
# and real origins (HTTP, S3) on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo fmt --all -- --check
# the pure core stays pure (README § Invariants): the compiler keeps it so only while the
# crate does not depend on the server's runtime
if cargo tree --locked -p imgedge-core -e normal --prefix none | grep -Eq '^(pingora|tokio)'; then
    echo "imgedge-core must not depend on pingora or tokio" >&2
    exit 1
fi
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo test --locked --workspace
