#!/usr/bin/env bash
# Transform path over HTTP, no caching: imgedge against sharp-server (libvips) and thumbor
# (Pillow) in one run on this machine, concurrency 8, every request a full fetch + decode +
# resize + encode. All three fetch the original from the nginx origin on 127.0.0.1:8080.
# Also reports server CPU ms per request (process group CPU / requests; wrk and the origin
# excluded) and imgedge's peak RSS (VmHWM, reset before each job).
# Needs ../shared/bench (peers-up.sh origin sharp thumbor) and wrk. Loopback only.
# usage: benches/load/transform-peers.sh [DURATION_SECONDS=20] [ROUNDS=1]
# env:   IMGEDGE_BIN, CONC (8), PEERS ("imgedge sharp thumbor"), JOBS ("big400jpeg big400webp hd800jpeg")
# imgedge never serves these from cache: the tenant has `cache: {enabled: false}`, so every
# request goes through render (fetch from the nginx origin, decode, resize, encode).
set -euo pipefail
cd "$(dirname "$0")/../.."
D=${1:-20}
ROUNDS=${2:-1}
C=${CONC:-8}
PEERS=${PEERS:-imgedge sharp thumbor}
JOBS=${JOBS:-big400jpeg big400webp hd800jpeg}
BENCH=${BENCH_DIR:-../shared/bench}
LOAD="$BENCH/load.sh"
PREFIX="${IMGBENCH_PREFIX:-$HOME/.imgbench}"
"$BENCH/peers-up.sh" origin sharp thumbor >&2
# IMGEDGE_BIN: an already built binary (skips the release build)
if [ -z "${IMGEDGE_BIN:-}" ]; then cargo build --locked --release --bin imgedge >&2 || exit 1; fi
bin=${IMGEDGE_BIN:-target/release/imgedge}

work=$(mktemp -d /tmp/imgedge-tpeers.XXXX)
trap 'kill $(cat "$work/pid" 2>/dev/null) 2>/dev/null || true; rm -rf "$work"' EXIT
cat > "$work/imgedge.yaml" <<YAML
pingora: {threads: 2, pid_file: $work/imgedge.pid, upgrade_sock: $work/upgrade.sock}
listen: {edge: ["127.0.0.1:${EDGE_PORT:-8110}"], ops: "127.0.0.1:${OPS_PORT:-9210}", render_socket: $work/render.sock}
cache: {memory: 1MiB, max_object: 1MiB}
usage: {spool: $work/usage.db}
tenants:
  - id: bench
    hosts: [127.0.0.1]
    allow_unsigned: true
    cache: {enabled: false}
    origins: {origin: {type: http, base_url: "http://127.0.0.1:8080/images/", allow_private: true}}
YAML
"$bin" -c "$work/imgedge.yaml" 2>"$work/log" & echo $! > "$work/pid"
for _ in $(seq 100); do curl -sf -o /dev/null http://127.0.0.1:${OPS_PORT:-9210}/readyz && break; sleep 0.1; done
pid=$(cat "$work/pid")

declare -A src=([big400jpeg]=cups_4000x3000_q90.jpg [big400webp]=cups_4000x3000_q90.jpg [hd800jpeg]=autumn_1920x1280_q85.jpg)
declare -A width=([big400jpeg]=400 [big400webp]=400 [hd800jpeg]=800)
declare -A fmt=([big400jpeg]=jpeg [big400webp]=webp [hd800jpeg]=jpeg)
url() {  # url <peer> <job>: the one URL every request of this cell uses
  case $1 in
    imgedge) echo "http://127.0.0.1:${EDGE_PORT:-8110}/_/rs:fit:${width[$2]}:0/q:80/plain/${src[$2]}@${fmt[$2]}";;
    sharp) echo "http://127.0.0.1:8090/${src[$2]}?w=${width[$2]}&fmt=${fmt[$2]}&q=80";;
    thumbor) local f=""; [ "${fmt[$2]}" = webp ] && f="format(webp):"
      echo "http://127.0.0.1:8888/unsafe/${width[$2]}x0/filters:${f}quality(80)/127.0.0.1:8080/images/${src[$2]}";;
  esac; }
pids_of() { case $1 in
  imgedge) echo "$pid";;
  sharp) cat "$PREFIX/run/sharp.pid";;
  thumbor) ps -o pid= -g "$(cat "$PREFIX/run/thumbor.pid")" | tr '\n' ' ';;
  esac; }
ticks() { local t=0 p; for p in $(pids_of "$1"); do
  [ -r "/proc/$p/stat" ] && t=$((t + $(awk '{print $14+$15}' "/proc/$p/stat" 2>/dev/null || echo 0))); done; echo $t; }
HZ=$(getconf CLK_TCK)

out="$work/results.txt"; : > "$out"
for k in $JOBS; do
  for p in $PEERS; do   # check every peer answers this job with an image of the right width
    u=$(url "$p" "$k"); ct=$(curl -s -o "$work/check" -w '%{http_code} %{content_type}' "$u")
    echo "# $k $p: $ct $(stat -c %s "$work/check") bytes, $(file -b "$work/check" | grep -oE "[0-9]+ ?x ?[0-9]+" | tail -1)" >&2
  done
done
echo "# $(date -u +%FT%TZ) $(nproc) cores; c=$C, ${D}s per cell, rounds=$ROUNDS" >&2
for r in $(seq 1 "$ROUNDS"); do
  order=($PEERS); [ $((r % 2)) -eq 0 ] && order=($(printf '%s\n' $PEERS | tac))
  for k in $JOBS; do
    for p in "${order[@]}"; do
      [ "$p" = imgedge ] && echo 5 > "/proc/$pid/clear_refs"   # reset VmHWM: peak of this job only
      load=$(cut -d' ' -f1 /proc/loadavg)
      t0=$(ticks "$p")
      line=$("$LOAD" -c "$C" -d "$D" -w 2 -l "$p|$k" "$(url "$p" "$k")")
      t1=$(ticks "$p")
      req=$(sed -E 's/.* requests=([0-9]+).*/\1/' <<<"$line")
      cpu=$(awk -v t=$((t1 - t0)) -v hz="$HZ" -v n="$req" 'BEGIN{printf "%.2f", n ? t * 1000 / hz / n : 0}')
      hwm=$(awk '/VmHWM/{printf "%.0f", $2/1024}' "/proc/$(pids_of "$p" | cut -d' ' -f1)/status")
      echo "$line round=$r cpu_ms_per_req=$cpu hwm_mb=$hwm loadavg_before=$load" | tee -a "$out"
    done
  done
done

python3 - "$out" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    kv = dict(re.findall(r"(\w+)=(\S+)", line))
    peer, job = kv["label"].split("|")
    rows.setdefault(job, {}).setdefault(peer, []).append(kv)
def med(rs, key):
    # req/s counts only successful answers: a fast 503 must not look like throughput
    if key == "rps":
        return statistics.median((int(r["requests"]) - int(r["errors"])) / float(r["duration_s"]) for r in rs)
    return statistics.median(float(r[key]) for r in rs)
print("| job | imgedge req/s (2xx) | sharp req/s | thumbor req/s | imgedge ÷ sharp | imgedge ÷ thumbor | CPU ms/req (imgedge / sharp / thumbor) | p99 ms (imgedge / sharp / thumbor) | imgedge peak RSS MB | errors |")
print("|---|---|---|---|---|---|---|---|---|---|")
for job, peers in rows.items():
    g = lambda p, key, fmt="{:.1f}": fmt.format(med(peers[p], key)) if p in peers else "–"
    ratio = lambda p: f"**{med(peers['imgedge'], 'rps') / med(peers[p], 'rps'):.2f}×**" if "imgedge" in peers and p in peers else "–"
    errs = sum(int(r["errors"]) for rs in peers.values() for r in rs)
    hwm = max(int(r["hwm_mb"]) for r in peers["imgedge"]) if "imgedge" in peers else "–"
    print(f"| {job} | {g('imgedge','rps')} | {g('sharp','rps')} | {g('thumbor','rps')} | {ratio('sharp')} | {ratio('thumbor')} | "
          f"{g('imgedge','cpu_ms_per_req')} / {g('sharp','cpu_ms_per_req')} / {g('thumbor','cpu_ms_per_req')} | "
          f"{g('imgedge','p99_ms','{:.0f}')} / {g('sharp','p99_ms','{:.0f}')} / {g('thumbor','p99_ms','{:.0f}')} | {hwm} | {errs} |")
PY
