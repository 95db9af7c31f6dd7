#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, property and integration tests.
# Integration tests start the real binary and real origins (HTTP, S3) on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings
cargo test --locked
