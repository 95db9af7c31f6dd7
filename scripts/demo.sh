#!/usr/bin/env bash
# Builds imgedge, starts it on the bundled demo config (conf/imgedge.yaml: local-directory
# origin conf/demo-images/, memory and disk cache and usage ledger under .demo/) and prints
# signed URLs to try. Ctrl-C stops it.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh
cargo build --locked --bin imgedge
bin="${CARGO_TARGET_DIR:-target}/debug/imgedge"
conf=conf/imgedge.yaml
# runtime files (sockets, PID file, cache, usage spool) in the repository, private to this
# user: a shared /tmp directory could be pre-created by another user
mkdir -p -m 0700 .demo
if [ ! -O .demo ]; then
    echo "demo: .demo/ belongs to another user; refusing to use it" >&2
    exit 1
fi
chmod 0700 .demo
"$bin" check-config -c "$conf"
sign() { "$bin" sign -c "$conf" --tenant demo "$1"; }
cat <<MSG

imgedge demo: edge on http://localhost:8480, metrics on http://127.0.0.1:9180/metrics
Try (each URL is signed with the demo tenant's key):

  curl -sv -o /tmp/coffee.webp '$(sign 'rs:fit:400:300/plain/coffee_600x400.jpg@webp')'
  curl -sv -o /tmp/thumb.jpg   '$(sign 'pr:thumb/plain/astronaut_512.jpg')'
  curl -sv -o /tmp/cat.png     '$(sign 'rs:fill:300:300/g:we/plain/chelsea_451x300.png')'

Sign your own: $bin sign -c $conf --tenant demo 'rs:fill:200:200/plain/rocket_427x640.jpg@webp'
Usage so far (flushed every 10 s): $bin usage -c $conf

MSG
exec "$bin" -c "$conf"
