#!/usr/bin/env bash
# Cache-hit benchmark: imgedge hits against nginx proxy_cache hits of the same images, in one
# run on this machine, plus hit latency while renders saturate the CPU.
# Needs ../shared/bench (peers-up.sh origin cache sharp: nginx static origin on 8080, nginx
# proxy_cache on 8082 in front of sharp-server on 8090) and wrk. Loopback only.
# Each pair (imgedge, nginx) runs back to back, in alternating order over ROUNDS rounds: the
# machine's speed drifts (other tenants, CPU steal), so a ratio is taken within a pair and the
# median over rounds is reported (SUMMARY lines, with the smallest and largest pair ratio).
# COMPARE=log pairs imgedge against itself with the request log on (every hit logged to a
# file, or HIT_SAMPLE of them; a second process on 8101) instead of against nginx: the
# request log's cost.
# Two kinds of jobs (JOBS, default "plain keepalive"): plain hits, and `ka_*`, hits on
# keep-alive connections whose first request is handed to pingora (first-handoff.lua: it
# carries `Range`), as a CDN's connections that mix misses and hits (at c=64).
# usage: [COMPARE=log] [JOBS="plain keepalive"] benches/load/cache-hits.sh [DURATION_SECONDS=10] [ROUNDS=5]
set -euo pipefail
cd "$(dirname "$0")/../.."
D=${1:-10}
R=${2:-5}
JOBS=${JOBS:-plain keepalive}
BENCH=${BENCH_DIR:-../shared/bench}
LOAD="$BENCH/load.sh"
other=nginx
[[ ${COMPARE:-} == log ]] && other=logged
if [[ $other == logged ]]; then "$BENCH/peers-up.sh" origin >&2; else "$BENCH/peers-up.sh" origin cache sharp >&2; fi
cargo build --locked --release --bin imgedge >&2 || exit 1
bin=${CARGO_TARGET_DIR:-target}/release/imgedge

work=$(mktemp -d /tmp/imgedge-bench.XXXX)
trap 'kill $(cat "$work/pid" "$work/pid2" 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT
cat > "$work/imgedge.yaml" <<YAML
pingora: {threads: 2, pid_file: $work/imgedge.pid, upgrade_sock: $work/upgrade.sock, grace_period_seconds: 0, graceful_shutdown_timeout_seconds: 1}
listen: {edge: ["127.0.0.1:8100"], ops: "127.0.0.1:9190", render_socket: $work/render.sock}
cache: {memory: 256MiB, max_object: 16MiB, disk: {path: $work/cache, size: 1GiB}}
tenants:
  - id: bench
    hosts: [127.0.0.1]
    keys: [{key: "6b6579", salt: "73616c74"}]
    origins: {origin: {type: http, base_url: "http://127.0.0.1:8080/images/", allow_private: true}}
  - id: misses
    hosts: [localhost]
    allow_unsigned: true
    origins: {origin: {type: http, base_url: "http://127.0.0.1:8080/images/", allow_private: true}}
YAML
# stdout too: a server holding this script's stdout would keep a reading pipe open
"$bin" -c "$work/imgedge.yaml" >"$work/log" 2>&1 </dev/null & echo $! > "$work/pid"
for _ in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:9190/readyz && break; sleep 0.1; done
if [[ $other == logged ]]; then
  mkdir -p "$work/2"
  sed -e "s#$work/#$work/2/#g" -e 's#8100#8101#; s#9190#9191#' "$work/imgedge.yaml" > "$work/2/imgedge.yaml"
  printf 'log:\n  requests: {path: %s}\n' "$work/2/requests.log" >> "$work/2/imgedge.yaml"
  # HIT_SAMPLE=0.1: the share of the bench tenant's hits logged (log.hit_sample; default all)
  [[ -n ${HIT_SAMPLE:-} ]] && sed -i "/- id: bench/a\\    log: {hit_sample: $HIT_SAMPLE}" "$work/2/imgedge.yaml"
  "$bin" -c "$work/2/imgedge.yaml" >"$work/2/log" 2>&1 </dev/null & echo $! > "$work/pid2"
  for _ in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:9191/readyz && break; sleep 0.1; done
fi

sign() { "$bin" sign -c "$work/imgedge.yaml" --tenant bench "$1" | sed 's#http://127.0.0.1:8100##'; }
declare -A ours=(
  [big400jpeg]=$(sign 'rs:fit:400:0/q:80/plain/cups_4000x3000_q90.jpg@jpeg')
  [big400webp]=$(sign 'rs:fit:400:0/q:80/plain/cups_4000x3000_q90.jpg@webp')
  [hd800jpeg]=$(sign 'rs:fit:800:0/q:80/plain/autumn_1920x1280_q85.jpg@jpeg')
)
declare -A theirs=(
  [big400jpeg]='/sharp/cups_4000x3000_q90.jpg?w=400&fmt=jpeg&q=80'
  [big400webp]='/sharp/cups_4000x3000_q90.jpg?w=400&fmt=webp&q=80'
  [hd800jpeg]='/sharp/autumn_1920x1280_q85.jpg?w=800&fmt=jpeg&q=80'
)
if [[ $other == logged ]]; then
  for k in "${!ours[@]}"; do theirs[$k]=${ours[$k]}; done
  their_port=8101
else
  their_port=8082
fi
for k in "${!ours[@]}"; do   # prime both caches, check they hit
  curl -s -o /dev/null "http://127.0.0.1:8100${ours[$k]}"; curl -s -o /dev/null "http://127.0.0.1:$their_port${theirs[$k]}"
  a=$(curl -s -o /dev/null -D - "http://127.0.0.1:8100${ours[$k]}" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-cache"{print $2}')
  b=$(curl -s -o /dev/null -D - "http://127.0.0.1:$their_port${theirs[$k]}" | tr -d '\r' | awk -F': ' 'tolower($1)=="x-cache-status" || tolower($1)=="x-cache"{print $2}')
  echo "# $k: imgedge $a, $other $b" >&2
done

# like load.sh (warm-up, then one RESULT line), with first-handoff.lua
handoff() { # label concurrency base path
  wrk -t 1 -c "$2" -d 1s -s benches/load/first-handoff.lua "$3" -- "$4" "$2" >/dev/null 2>&1 || true
  local line
  line=$(wrk -t 1 -c "$2" -d "${D}s" --timeout 30s -s benches/load/first-handoff.lua "$3" -- "$4" "$2" | grep '^RESULT ')
  echo "RESULT label=$1 ${line#RESULT } conc=$2"
}
for r in $(seq "$R"); do
  if [[ $JOBS == *plain* ]]; then
    for c in 8 64; do
      for k in big400jpeg big400webp hd800jpeg; do
        ours_run() { "$LOAD" -c "$c" -d "$D" -w 1 -l "imgedge-hit-$k-c$c-r$r" "http://127.0.0.1:8100${ours[$k]}"; }
        nginx_run() { "$LOAD" -c "$c" -d "$D" -w 1 -l "$other-hit-$k-c$c-r$r" "http://127.0.0.1:$their_port${theirs[$k]}"; }
        if ((r % 2)); then ours_run; nginx_run; else nginx_run; ours_run; fi
      done
    done
  fi
  if [[ $JOBS == *keepalive* ]]; then
    for k in big400jpeg big400webp hd800jpeg; do
      ours_run() { handoff "imgedge-hit-ka_$k-c64-r$r" 64 http://127.0.0.1:8100 "${ours[$k]}"; }
      nginx_run() { handoff "$other-hit-ka_$k-c64-r$r" 64 "http://127.0.0.1:$their_port" "${theirs[$k]}"; }
      if ((r % 2)); then ours_run; nginx_run; else nginx_run; ours_run; fi
    done
  fi
done | tee "$work/hits.result"
python3 - "$work/hits.result" "$other" <<'PY'
import re, statistics, sys
runs = {}
for line in open(sys.argv[1]):
    m = re.match(r"RESULT label=(imgedge|nginx|logged)-hit-(\w+)-c(\d+)-r(\d+) (.*)", line)
    if m:
        kv = dict(x.split("=", 1) for x in m.group(5).split())
        who = "nginx" if m.group(1) != "imgedge" else "imgedge"   # the reference side
        runs[(m.group(2), int(m.group(3)), int(m.group(4)), who)] = (float(kv["rps"]), float(kv["p99_ms"]))
jobs = sorted({(j, c) for j, c, _, _ in runs}, key=lambda x: (x[1], x[0]))
for job, c in jobs:
    pairs = [(runs[(job, c, r, "imgedge")], runs[(job, c, r, "nginx")]) for (j, cc, r, who) in runs
             if j == job and cc == c and who == "imgedge" and (job, c, r, "nginx") in runs]
    ratios = [a[0] / b[0] for a, b in pairs]
    med = lambda xs: statistics.median(xs)
    print(f"SUMMARY job={job} conc={c} rounds={len(pairs)} imgedge_rps={med([a[0] for a, _ in pairs]):.0f} "
          f"{sys.argv[2]}_rps={med([b[0] for _, b in pairs]):.0f} ratio_median={med(ratios):.3f} "
          f"ratio_min={min(ratios):.3f} ratio_max={max(ratios):.3f} imgedge_p99_ms={med([a[1] for a, _ in pairs]):.2f} "
          f"{sys.argv[2]}_p99_ms={med([b[1] for _, b in pairs]):.2f} p99_ratio={med([a[1] / b[1] for a, b in pairs]):.2f}")
PY

[[ $other == logged ]] && { echo "log lines: $(wc -l < "$work/2/requests.log")"; exit 0; }
# hits while renders saturate the CPU: 8 concurrent misses (unique cache busters) in the
# background, hit latency measured at concurrency 8 against the idle figure
"$LOAD" -c 8 -d "$D" -w 2 -l "imgedge-hit-idle" "http://127.0.0.1:8100${ours[big400webp]}"
seq 1 100000 | sed 's#^#http://localhost:8100/_/cb:#; s#$#/rs:fit:400:0/plain/cups_4000x3000_q90.jpg@webp#' > "$work/misses.txt"
"$LOAD" -c 8 -d $((D + 6)) -l "imgedge-misses-background" -f "$work/misses.txt" > "$work/misses.result" &
misses=$!
sleep 3
"$LOAD" -c 8 -d "$D" -l "imgedge-hit-under-render-load" "http://127.0.0.1:8100${ours[big400webp]}"
wait "$misses"   # not a bare `wait`: that would wait for the server too
cat "$work/misses.result"
