#!/usr/bin/env bash
# CPU per request of /info against a transform, in one run: the imgedge server's own CPU
# time (utime + stime from /proc/PID/stat) over N sequential cache misses of each kind
# (a fresh `cb:` per request, so every one is fetched and rendered), on the 4000x3000
# photo of ../shared/bench/images:
#   header   /info/_/cb:i/plain/path_4000x3000_q90.jpg            (size, format, dimensions)
#   colours  /info/_/cb:i/bh:4:3/dc:1/plain/path_4000x3000_q90.jpg (BlurHash 4x3 + dominant colours)
#   webp400  /_/cb:i/rs:fit:400:0/plain/path_4000x3000_q90.jpg@webp
# The kinds take turns in ROUNDS rounds (the machine's speed drifts); the median of the
# per-round CPU per request is reported, and its ratio to the transform.
# usage: [PROFILE=release] benches/load/info-cost.sh [N=40] [ROUNDS=3]
set -euo pipefail
cd "$(dirname "$0")/../.."
N=${1:-40}
R=${2:-3}
PROFILE=${PROFILE:-release}
IMAGES=${BENCH_DIR:-../shared/bench}/images
if [[ $PROFILE == release ]]; then cargo build --locked --release --bin imgedge >&2; else cargo build --locked --bin imgedge >&2; fi
dir=$PROFILE; [[ $PROFILE == dev ]] && dir=debug
bin=${CARGO_TARGET_DIR:-target}/$dir/imgedge

work=$(mktemp -d /tmp/imgedge-info-cost.XXXX)
trap 'kill $(cat "$work/pid" 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT
cat > "$work/imgedge.yaml" <<YAML
pingora: {threads: 2, pid_file: $work/imgedge.pid, upgrade_sock: $work/upgrade.sock, grace_period_seconds: 0, graceful_shutdown_timeout_seconds: 1}
listen: {edge: ["127.0.0.1:8110"], ops: "127.0.0.1:9195", render_socket: $work/render.sock}
cache: {memory: 256MiB, max_object: 16MiB, disk: {path: $work/cache, size: 1GiB}}
tenants:
  - id: cost
    hosts: [localhost]
    allow_unsigned: true
    origins: {files: {type: local, root: "$(realpath "$IMAGES")"}}
YAML
"$bin" -c "$work/imgedge.yaml" >"$work/log" 2>&1 </dev/null & echo $! > "$work/pid"
pid=$(cat "$work/pid")
for _ in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:9195/readyz && break; sleep 0.1; done

src=plain/path_4000x3000_q90.jpg
declare -A url=(
  [header]="/info/_/cb:%s/$src"
  [colours]="/info/_/cb:%s/bh:4:3/dc:1/$src"
  [webp400]="/_/cb:%s/rs:fit:400:0/$src@webp"
)
kinds=(header colours webp400)
ticks=$(getconf CLK_TCK)
cpu() { awk '{print $14 + $15}' "/proc/$pid/stat"; }
# warm up: the origin file in the page cache, the worker pool started
for k in "${kinds[@]}"; do
  # shellcheck disable=SC2059
  curl -sf -o /dev/null "http://localhost:8110$(printf "${url[$k]}" warm)"
done
declare -A per
for r in $(seq "$R"); do
  for k in "${kinds[@]}"; do
    before=$(cpu)
    for i in $(seq "$N"); do
      # shellcheck disable=SC2059
      code=$(curl -s -o /dev/null -w '%{http_code}' "http://localhost:8110$(printf "${url[$k]}" "r$r-$i")")
      [[ $code == 200 ]] || { echo "$k: HTTP $code" >&2; exit 1; }
    done
    after=$(cpu)
    ms=$(awk -v a="$after" -v b="$before" -v n="$N" -v t="$ticks" 'BEGIN{printf "%.2f", (a-b)*1000/t/n}')
    per[$k]="${per[$k]:-} $ms"
    echo "round $r $k: $ms ms CPU/request" >&2
  done
done
median() { tr ' ' '\n' | grep -v '^$' | sort -g | awk '{v[NR]=$1} END{print v[int((NR+1)/2)]}'; }
t=$(echo "${per[webp400]}" | median)
for k in "${kinds[@]}"; do
  m=$(echo "${per[$k]}" | median)
  echo "SUMMARY $k: $m ms CPU/request (median of $R rounds of $N), $(awk -v m="$m" -v t="$t" 'BEGIN{printf "%.3f", m/t}') x the 400w WebP transform"
done
