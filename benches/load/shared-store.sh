#!/usr/bin/env bash
# Shared derivative store (cache.shared): the time of an answer from the store against a
# render of the same transform (4000×3000 JPEG → 400-wide WebP by default), each on a node
# that has never answered it, plus the node's own cache hit afterwards. Two release-build
# nodes on one in-process S3 server (s3s-fs, as the integration tests use), loopback only.
# Prints one line per round and a RESULT line of medians.
# usage: [ROUNDS=5] [IMGEDGE_BENCH_IMAGE=cups_4000x3000_q90.jpg] benches/load/shared-store.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
export IMGEDGE_BENCH_IMAGES=${IMGEDGE_BENCH_IMAGES:-$(cd ${BENCH_DIR:-../shared/bench}/images && pwd)}
cargo build --locked --release --bin imgedge >&2
export IMGEDGE_BIN=$(pwd)/${CARGO_TARGET_DIR:-target}/release/imgedge
[[ ${CARGO_TARGET_DIR:-} == /* ]] && IMGEDGE_BIN=$CARGO_TARGET_DIR/release/imgedge
cargo test --locked -p imgedge --test integration measure_shared_store_hit_against_render -- \
  --ignored --nocapture 2>&1 | grep -E '^(round|RESULT)'
