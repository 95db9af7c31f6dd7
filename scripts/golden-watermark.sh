#!/usr/bin/env bash
# Regenerates the watermark references (tests/golden/ref/wm_*.png) used by
# crates/imgedge-core/src/transform/watermark_golden_tests.rs, byte for byte. Needs the
# libvips 8.14 CLI (`vips`, Debian libvips-tools) and Pillow (Debian python3-pil).
#
# The base is tests/golden/src/tiny.png (150x100, lossless, so imgedge's decoded pixels are
# the same); the watermark is tests/golden/src/watermark_80x24.png, the demo's
# conf/demo-images/watermark.png at half size (`vips resize … 0.5 --kernel lanczos3`).
# Positions are imgproxy's calcPosition written out here in awk (centre =
# RoundToEven((outer-inner+1)/2), east/south offsets inwards); sizes are imgproxy's fit
# into RoundToEven(scale x result), resampled with Pillow's Lanczos; tiles are libvips' centred replicate of the watermark
# padded by the gaps; opacity multiplies the alpha band; `vips composite2 … over` draws.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v vips >/dev/null || { echo "needs vips (Debian libvips-tools)" >&2; exit 1; }
# Debian's python3 with Pillow (python3-pil) for the scaled watermarks
PY=${PY:-/usr/bin/python3}
"$PY" -c 'import PIL' 2>/dev/null || { echo "needs $PY with Pillow (Debian python3-pil)" >&2; exit 1; }

BASE=tests/golden/src/tiny.png
WM=tests/golden/src/watermark_80x24.png
REF=tests/golden/ref
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
W=150; H=100; WW=80; WH=24

save() { vips copy "$1" "$2[strip,compression=9]"; }

# the input: the demo watermark at half size
vips resize conf/demo-images/watermark.png "$TMP/half.v" 0.5 --kernel lanczos3
save "$TMP/half.v" "$WM"

# rte A B: Go's math.RoundToEven(A / B)
rte() { awk -v a="$1" -v b="$2" 'BEGIN { v = a / b; f = int(v); if (v < 0 && f != v) f -= 1; d = v - f;
  if (d > 0.5 || (d == 0.5 && f % 2 != 0)) f += 1; print f }'; }

# watermark scaled to WxH at the given opacity → $TMP/wm.v
prepare() { # opacity width height
  local op=$1 w=$2 h=$3
  if [ "$w" != "$WW" ] || [ "$h" != "$WH" ]; then
    # Lanczos3 on premultiplied alpha, as imgproxy; with Pillow, whose pixel-centre
    # convention is imgproxy's also when enlarging (vips 8.14's `resize` upsizes by an
    # affine transform that lands half a pixel off)
    "$PY" -c 'import sys; from PIL import Image
Image.open(sys.argv[1]).convert("RGBa").resize((int(sys.argv[3]), int(sys.argv[4])), Image.LANCZOS).convert("RGBA").save(sys.argv[2])' \
      "$WM" "$TMP/s.png" "$w" "$h"
    vips copy "$TMP/s.png" "$TMP/s.v"
  else
    vips copy "$WM" "$TMP/s.v"
  fi
  vips linear "$TMP/s.v" "$TMP/wm.v" "1 1 1 $op" "0 0 0 0" --uchar
}

# one watermark by gravity: name gravity x_offset y_offset opacity [width height]
place() {
  local name=$1 g=$2 ox=$3 oy=$4 op=$5 w=${6:-$WW} h=${7:-$WH}
  prepare "$op" "$w" "$h"
  local left top
  left=$(( $(rte $(( W - w + 1 )) 2) + ox ))
  top=$(( $(rte $(( H - h + 1 )) 2) + oy ))
  case $g in no|noea|nowe) top=$oy ;; esac
  case $g in ea|noea|soea) left=$(( W - w - ox )) ;; esac
  case $g in so|soea|sowe) top=$(( H - h - oy )) ;; esac
  case $g in we|nowe|sowe) left=$ox ;; esac
  vips composite2 "$BASE" "$TMP/wm.v" "$TMP/out.v" over --x "$left" --y "$top"
  save "$TMP/out.v" "$REF/wm_$name.png"
}

for g in ce no so ea we noea nowe soea sowe; do
  place "$g" "$g" 10 5 0.8
done
# scale 0.6: box RoundToEven(90) x 60, fit 80x24 → ratio 90/80 → 90x27 (enlarged)
place scale_0.6_soea soea 0 0 1 90 27
# scale 0.4: box 60 x 40 → ratio 60/80 → 60x18
place scale_0.4_ce ce 0 0 1 60 18

# re with gaps 20 (x) and 10 (y) px: padded tile 100x34 (10 left, 5 top), ceil(150/100)=2
# → 3 across (odd), ceil(100/34)=3 down; centred: left (300-150)/2=75, top (102-100)/2=1
prepare 0.5 "$WW" "$WH"
vips embed "$TMP/wm.v" "$TMP/tile.v" 10 5 100 34
vips replicate "$TMP/tile.v" "$TMP/rep.v" 3 3
vips extract_area "$TMP/rep.v" "$TMP/tiles.v" 75 1 "$W" "$H"
vips composite2 "$BASE" "$TMP/tiles.v" "$TMP/out.v" over
save "$TMP/out.v" "$REF/wm_re_20_10.png"
