#!/usr/bin/env bash
# Single-thread CPU per image: imgedge's pipeline against sharp (libvips 8.18), same machine,
# same run, rounds interleaved (order alternates), both pinned to one core. Prints a markdown
# table: median of the round medians (min of all reps), ratio, output bytes and SSIM against
# a full-resolution Lanczos3 reference (benches/peers/imgedge-cpu.rs `ssim`).
# Needs sharp from ../shared/bench/peers-up.sh sharp (under $IMGBENCH_PREFIX/node) and vips
# (Debian libvips-tools: converts AVIF outputs to PNG for the SSIM tool).
# usage: benches/peers/compare.sh [ROUNDS=4] [REPS=7]
# env:   AVIF_Q (imgedge AVIF quality, 63 = imgproxy default), SHARP_AVIF_Q (50 = sharp default),
#        SHARP_AVIF_EFFORT (4 = sharp default), JOBS (space-separated subset of job names),
#        CPU (core to pin to, 1), OUT (directory kept for outputs and raw lines)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROUNDS=${1:-4}
REPS=${2:-7}
CPU=${CPU:-1}
AVIF_Q=${AVIF_Q:-63}
SHARP_AVIF_Q=${SHARP_AVIF_Q:-50}
SHARP_AVIF_EFFORT=${SHARP_AVIF_EFFORT:-4}
IMAGES=$(cd "${BENCH_DIR:-../shared/bench}/images" && pwd)
OUT=${OUT:-$(mktemp -d /tmp/imgedge-peers.XXXX)}
mkdir -p "$OUT"

cargo build --release --example peer-cpu >&2
bin=target/release/examples/peer-cpu

# name  file  width  format  imgedge-quality  sharp-quality[:effort]
all_jobs=(
  "webp400 cups_4000x3000_q90.jpg 400 webp 80 80"
  "jpeg1200 cups_4000x3000_q90.jpg 1200 jpeg 80 80"
  "jpeg800 autumn_1920x1280_q85.jpg 800 jpeg 80 80"
  "avif400 cups_4000x3000_q90.jpg 400 avif $AVIF_Q $SHARP_AVIF_Q:$SHARP_AVIF_EFFORT"
  "webp400path path_4000x3000_q90.jpg 400 webp 80 80"
  "jpeg1200path path_4000x3000_q90.jpg 1200 jpeg 80 80"
  "pngwebp400 leaf_alpha_1600x1000.png 400 webp 80 80"
)
ours=(); theirs=(); declare -A src
for j in "${all_jobs[@]}"; do
  read -r name file w fmt q sq <<<"$j"
  if [ -n "${JOBS:-}" ] && [[ " $JOBS " != *" $name "* ]]; then continue; fi
  ours+=("$name:$file:$w:$fmt:$q"); theirs+=("$name:$file:$w:$fmt:$sq"); src[$name]=$file
done

echo "# $(date -u +%FT%TZ) $(nproc) cores, loadavg at start: $(cut -d' ' -f1-3 /proc/loadavg); rounds=$ROUNDS reps=$REPS cpu=$CPU; out=$OUT" | tee "$OUT/meta.txt"
: > "$OUT/raw.txt"
for r in $(seq 1 "$ROUNDS"); do
  run_ours() { taskset -c "$CPU" "$bin" --reps "$REPS" --out "$OUT" --images "$IMAGES" "${ours[@]}"; }
  run_sharp() {
    VIPS_CONCURRENCY=1 UV_THREADPOOL_SIZE=1 taskset -c "$CPU" \
      node benches/peers/sharp-cpu.mjs --reps "$REPS" --out "$OUT" --images "$IMAGES" "${theirs[@]}"
  }
  if [ $((r % 2)) -eq 1 ]; then { run_ours; run_sharp; } else { run_sharp; run_ours; } fi | sed "s/^RESULT /RESULT round=$r /" | tee -a "$OUT/raw.txt" >&2
done
echo "# loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg)" | tee -a "$OUT/meta.txt"

: > "$OUT/ssim.txt"
for name in "${!src[@]}"; do
  files=()
  for peer in imgedge sharp; do
    f=$(ls "$OUT/$name.$peer".* 2>/dev/null | grep -v '\.png$' | head -1) || true
    [ -n "$f" ] || continue
    case "$f" in
      *.avif) vips copy "$f" "$OUT/$name.$peer.png" && files+=("$OUT/$name.$peer.png");;
      *) files+=("$f");;
    esac
  done
  "$bin" ssim "$IMAGES/${src[$name]}" "${files[@]}" >> "$OUT/ssim.txt"
done

python3 - "$OUT/raw.txt" "$OUT/ssim.txt" <<'PY'
import re, statistics, sys
rows = {}
for line in open(sys.argv[1]):
    kv = dict(re.findall(r"(\w+)=(\S+)", line))
    rows.setdefault((kv["job"], kv["peer"]), []).append(kv)
ssim = {}
for line in open(sys.argv[2]):
    kv = dict(re.findall(r"(\w+)=(\S+)", line))
    m = re.search(r"/([^/]+)\.(imgedge|sharp)\.\w+$", kv["file"])
    if m:
        ssim[(m.group(1), m.group(2))] = float(kv["ssim"])
jobs = list(dict.fromkeys(j for j, _ in rows))
print("| job | imgedge CPU ms | sharp CPU ms | ratio | imgedge bytes | sharp bytes | SSIM imgedge | SSIM sharp |")
print("|---|---|---|---|---|---|---|---|")
for j in jobs:
    cells = []
    med = {}
    for p in ("imgedge", "sharp"):
        rs = rows.get((j, p), [])
        if not rs:
            cells.append("–"); continue
        med[p] = statistics.median(float(r["cpu_ms"]) for r in rs)
        mn = min(float(r["cpu_min_ms"]) for r in rs)
        cells.append(f"{med[p]:.1f} ({mn:.1f})")
    ratio = f"**{med['imgedge'] / med['sharp']:.2f}×**" if len(med) == 2 else "–"
    size = [rows[(j, p)][-1]["bytes"] if (j, p) in rows else "–" for p in ("imgedge", "sharp")]
    dims = rows[(j, "imgedge")][-1] if (j, "imgedge") in rows else None
    ss = [f"{ssim[(j, p)]:.4f}" if (j, p) in ssim else "–" for p in ("imgedge", "sharp")]
    name = f"{j} ({dims['w']}×{dims['h']})" if dims else j
    print(f"| {name} | {cells[0]} | {cells[1]} | {ratio} | {size[0]} | {size[1]} | {ss[0]} | {ss[1]} |")
PY
