#!/usr/bin/env bash
# The request log's CPU cost per logged cache hit, in instructions: callgrind counts are
# repeatable on a shared, noisy machine where throughput runs are not. Serves HITS hits of
# one image on one keep-alive connection (curl) with the log off, then with every hit
# logged to a file, and counts the instructions of all threads (edge and writer) during the
# hits only (callgrind_control zeroes the counters after warm-up and dumps them after).
# Needs valgrind and curl; loopback only.
# usage: benches/load/log-cost.sh [HITS=3000] [BINARY=target/release/imgedge, built if absent]
set -euo pipefail
cd "$(dirname "$0")/../.."
n=${1:-3000}
bin=${2:-${CARGO_TARGET_DIR:-target}/release/imgedge}
[[ -n ${2:-} ]] || cargo build --locked --release --bin imgedge >&2
images=$(realpath "${BENCH_DIR:-../shared/bench}/images")

run() { # off|on -> instructions during the hits
  local w vpid url x
  w=$(mktemp -d /tmp/imgedge-logcost.XXXX)
  cat > "$w/c.yaml" <<YAML
pingora: {threads: 2, pid_file: $w/imgedge.pid, upgrade_sock: $w/upgrade.sock, grace_period_seconds: 0, graceful_shutdown_timeout_seconds: 1}
listen: {edge: ["127.0.0.1:8177"], ops: "127.0.0.1:9177", render_socket: $w/render.sock}
cache: {memory: 64MiB, max_object: 16MiB}
tenants:
  - id: bench
    hosts: [127.0.0.1]
    allow_unsigned: true
    origins: {local: {type: local, root: "$images"}}
YAML
  [[ $1 == on ]] && printf 'log:\n  requests: {path: %s}\n' "$w/requests.log" >> "$w/c.yaml"
  url="http://127.0.0.1:8177/_/rs:fit:100:0/plain/coffee_600x400.jpg@jpeg"
  (cd "$w" && exec valgrind --tool=callgrind --callgrind-out-file="$w/cg.out" "$bin" -c "$w/c.yaml" >"$w/log" 2>&1 </dev/null) &
  vpid=$!
  for _ in $(seq 600); do curl -sf -o /dev/null http://127.0.0.1:9177/readyz && break; sleep 0.2; done
  for _ in $(seq 60); do
    x=$(curl -s -o /dev/null -D - "$url" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-cache"{print $2}')
    [[ $x == HIT ]] && break
    sleep 0.5
  done
  [[ $x == HIT ]] || { echo "never a hit" >&2; kill "$vpid"; exit 1; }
  yes "url = \"$url\"
output = \"/dev/null\"" | head -n 400 > "$w/warm.k"
  yes "url = \"$url\"
output = \"/dev/null\"" | head -n $((2 * n)) > "$w/hits.k"
  curl -s -K "$w/warm.k"
  sleep 1
  callgrind_control -z "$vpid" >/dev/null 2>&1
  local ok
  ok=$(curl -s -w '%{http_code}\n' -K "$w/hits.k" | grep -c '^200$' || true)
  sleep 2   # the writer's last batch
  callgrind_control -d "$vpid" >/dev/null 2>&1
  kill "$vpid"; wait "$vpid" || true
  [[ $ok == "$n" ]] || { echo "$ok of $n hits answered 200" >&2; exit 1; }
  if [[ $1 == on ]]; then
    echo "# log lines: $(wc -l < "$w/requests.log") (warm-up and priming included)" >&2
  fi
  grep -h '^summary:' "$w"/cg.out.*1 | awk '{print $2}'
  rm -rf "$w"
}
off=$(run off)
on=$(run on)
echo "RESULT hits=$n off_instructions=$off on_instructions=$on off_per_hit=$((off / n)) on_per_hit=$((on / n)) log_per_hit=$(((on - off) / n))"
