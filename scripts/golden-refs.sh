#!/usr/bin/env bash
# Regenerates the golden inputs (tests/golden/src/) and libvips references
# (tests/golden/ref/) used by crates/imgedge-core/src/transform/golden_tests.rs. Idempotent: running it
# again rewrites every file byte for byte. Needs the libvips 8.14 CLI (`vips`,
# Debian libvips-tools) and exiftool (libimage-exiftool-perl).
#
# Every reference is the imgproxy result computed by hand from imgproxy's geometry
# (processing/prepare.go, calc_position.go: centre = RoundToEven((outer-inner+1)/2))
# and built from plain vips primitives, so the expected crop/offset is explicit here.
set -euo pipefail
cd "$(dirname "$0")/.."

# install the two tools once (Debian packages), like scripts/deps.sh does for the build
need=()
command -v vips >/dev/null 2>&1 || need+=(libvips-tools)
command -v exiftool >/dev/null 2>&1 || need+=(libimage-exiftool-perl)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}" >&2
fi

IMG=tests/data/images
SRC=tests/golden/src
REF=tests/golden/ref
mkdir -p "$SRC" "$REF"
TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT

# PNG without metadata, so the bytes depend on the pixels only.
png() { vips copy "$1" "$2[strip,compression=9]"; }
jpg() { vips copy "$1" "$2[strip,Q=95,optimize_coding]"; }

COFFEE=$IMG/coffee_600x400.jpg      # 600x400
LEAF=$IMG/leaf_alpha_400x250.png    # 400x250 RGBA
BG="40 90 200"                      # background used by extend/padding tests

# ---------------------------------------------------------------- inputs
# tiny.png: lossless 150x100 photo for the tests that must not depend on JPEG decoding.
vips resize "$COFFEE" "$TMP/half.v" 0.5
vips resize "$COFFEE" "$TMP/q.v" 0.25
png "$TMP/q.v" "$SRC/tiny.png"
TINY=$SRC/tiny.png

# trim.png: tiny.png on a flat border (20 left, 15 top, 20 right, 15 bottom).
vips embed "$TINY" "$TMP/trim.v" 20 15 190 130 --extend background --background "200 40 160"
png "$TMP/trim.v" "$SRC/trim.png"

# smart.jpg: 600x200, a smooth featureless left half and the coffee cup on the right,
# so any sensible content-aware crop lands on the right.
vips extract_area "$IMG/autumn_1920x1280_q85.jpg" "$TMP/sky.v" 0 0 900 600
vips resize "$TMP/sky.v" "$TMP/sky2.v" 0.33333334
vips gaussblur "$TMP/sky2.v" "$TMP/sky3.v" 12
vips join "$TMP/sky3.v" "$TMP/half.v" "$TMP/smart.v" horizontal
jpg "$TMP/smart.v" "$SRC/smart.jpg"

# orient_N.jpg (the "F" test): the stored pixels are pre-transformed so that applying
# EXIF orientation N displays every file identically upright (240x160).
vips extract_area "$IMG/astronaut_512.jpg" "$TMP/astro.v" 0 40 480 320
vips resize "$TMP/astro.v" "$TMP/up.v" 0.5
png "$TMP/up.v" "$REF/orient_upright.png"
vips copy "$TMP/up.v" "$TMP/o1.v"
vips flip "$TMP/up.v" "$TMP/o2.v" horizontal
vips rot "$TMP/up.v" "$TMP/o3.v" d180
vips flip "$TMP/up.v" "$TMP/o4.v" vertical
vips rot "$TMP/up.v" "$TMP/r90.v" d90
vips flip "$TMP/r90.v" "$TMP/o5.v" horizontal    # transpose
vips rot "$TMP/up.v" "$TMP/o6.v" d270
vips rot "$TMP/up.v" "$TMP/r270.v" d270
vips flip "$TMP/r270.v" "$TMP/o7.v" horizontal   # transverse
vips rot "$TMP/up.v" "$TMP/o8.v" d90
# The same, as fill 100x100 g:we (gravity and crop act in display space).
vips resize "$TMP/up.v" "$TMP/u2.v" 0.625
vips extract_area "$TMP/u2.v" "$TMP/t.v" 0 0 100 100; png "$TMP/t.v" "$REF/orient_fill_100x100_we.png"
for n in 1 2 3 4 5 6 7 8; do
    jpg "$TMP/o$n.v" "$SRC/orient_$n.jpg"
    exiftool -q -n -overwrite_original -Orientation="$n" "$SRC/orient_$n.jpg"
    # Self-check: libvips' own autorot must give back the upright image.
    vips autorot "$SRC/orient_$n.jpg" "$TMP/check.v"
    vips subtract "$TMP/check.v" "$TMP/up.v" "$TMP/d.v"
    vips abs "$TMP/d.v" "$TMP/ad.v"
    err=$(vips avg "$TMP/ad.v")
    awk -v e="$err" -v n="$n" 'BEGIN { if (e > 3) { print "orient_" n ": autorot differs by " e; exit 1 } }'
done

# ---------------------------------------------------------------- resize family
png "$TMP/half.v" "$REF/resize_300x200.png"                         # fit 300x300, w:300, dpr 2 ...
vips extract_area "$TMP/half.v" "$TMP/t.v" 50 0 200 200; png "$TMP/t.v" "$REF/fill_200x200_ce.png"
vips resize "$COFFEE" "$TMP/t.v" 0.25 --vscale 0.375; png "$TMP/t.v" "$REF/force_150x150.png"
vips extract_area "$TINY" "$TMP/t.v" 0 30 150 40; png "$TMP/t.v" "$REF/filldown_tiny_300x80.png"
png "$TMP/q.v" "$REF/resize_150x100.png"   # auto portrait box, h:100, z
vips extract_area "$TMP/half.v" "$TMP/t.v" 0 26 300 150; png "$TMP/t.v" "$REF/auto_300x150.png"
vips resize "$COFFEE" "$TMP/t.v" 0.4; png "$TMP/t.v" "$REF/w240.png"
# Upscaling: `vips resize` in 8.14 samples upscales with a half-pixel shift (libvips
# issues #943, #4841), so the reference is a bicubic affine on the centre convention.
vips affine "$TINY" "$TMP/t.v" "1.3 0 0 1.3" --interpolate bicubic --idx 0.5 --idy 0.5 --odx -0.5 --ody -0.5 \
    --oarea "0 0 195 130" --extend copy
png "$TMP/t.v" "$REF/enlarge_tiny_195.png"
vips extract_area "$TMP/half.v" "$TMP/t.v" 0 50 300 100; png "$TMP/t.v" "$REF/minwidth_h100_mw300.png"
vips extract_area "$TMP/half.v" "$TMP/t.v" 76 0 150 200; png "$TMP/t.v" "$REF/minheight_w150_mh200.png"
vips resize "$COFFEE" "$TMP/t.v" 0.5 --vscale 0.25; png "$TMP/t.v" "$REF/zoom_0.5x0.25.png"

# ---------------------------------------------------------------- gravity (fill on the 300x200 scale)
vips extract_area "$TMP/half.v" "$TMP/t.v" 0 0 300 100; png "$TMP/t.v" "$REF/grav_no_300x100.png"
vips extract_area "$TMP/half.v" "$TMP/t.v" 0 100 300 100; png "$TMP/t.v" "$REF/grav_so_300x100.png"
vips extract_area "$TMP/half.v" "$TMP/t.v" 0 90 300 100; png "$TMP/t.v" "$REF/grav_so_0_10_300x100.png"
vips extract_area "$TMP/half.v" "$TMP/t.v" 0 20 300 100; png "$TMP/t.v" "$REF/grav_no_0_0.1_300x100.png"
vips extract_area "$TMP/half.v" "$TMP/t.v" 100 0 200 200; png "$TMP/t.v" "$REF/grav_ea_200x200.png"
vips extract_area "$TMP/half.v" "$TMP/t.v" 80 0 200 200; png "$TMP/t.v" "$REF/grav_ea_20_0_200x200.png"
vips extract_area "$TMP/half.v" "$TMP/t.v" 30 0 200 200; png "$TMP/t.v" "$REF/grav_we_0.1_0_200x200.png"
vips extract_area "$TMP/half.v" "$TMP/t.v" 80 0 200 200; png "$TMP/t.v" "$REF/grav_fp_0.6_0.5_200x200.png"

# ---------------------------------------------------------------- crop before resize
vips extract_area "$COFFEE" "$TMP/c.v" 150 50 300 300
vips resize "$TMP/c.v" "$TMP/t.v" 0.5; png "$TMP/t.v" "$REF/crop_300x300_w150.png"
vips extract_area "$COFFEE" "$TMP/t.v" 0 0 300 200; png "$TMP/t.v" "$REF/crop_300x200_nowe.png"
vips extract_area "$COFFEE" "$TMP/t.v" 300 200 300 200; png "$TMP/t.v" "$REF/crop_300x200_soea.png"
vips extract_area "$COFFEE" "$TMP/t.v" 150 100 300 200; png "$TMP/t.v" "$REF/crop_0.5x0.5.png"

# ---------------------------------------------------------------- extend, extend_aspect_ratio, padding
ext() { vips embed "$1" "$TMP/t.v" "$3" "$4" "$5" "$6" --extend background --background "$BG"; png "$TMP/t.v" "$2"; }
ext "$TINY" "$REF/extend_150x200_ce.png" 0 50 150 200
ext "$TINY" "$REF/extend_150x200_no.png" 0 0 150 200
ext "$TINY" "$REF/extend_150x200_so.png" 0 100 150 200
ext "$TINY" "$REF/extend_250x140_ea.png" 100 20 250 140
ext "$TINY" "$REF/exar_210x100_ce.png" 30 0 210 100
ext "$TINY" "$REF/exar_210x100_we.png" 0 0 210 100
ext "$TINY" "$REF/padding_10_20_30_40.png" 40 10 210 140

# ---------------------------------------------------------------- rotate, flip
for d in 90 180 270; do vips rot "$TINY" "$TMP/t.v" "d$d"; png "$TMP/t.v" "$REF/rot_$d.png"; done
vips flip "$TINY" "$TMP/t.v" horizontal; png "$TMP/t.v" "$REF/flip_h.png"
vips flip "$TINY" "$TMP/t.v" vertical; png "$TMP/t.v" "$REF/flip_v.png"

# ---------------------------------------------------------------- effects (on tiny.png, no resize)
vips gaussblur "$TINY" "$TMP/t.v" 2; png "$TMP/t.v" "$REF/blur_2.png"
vips sharpen "$TINY" "$TMP/t.v" --sigma 1; png "$TMP/t.v" "$REF/sharpen_1.png"
vips shrink "$TINY" "$TMP/s.v" 10 10
vips zoom "$TMP/s.v" "$TMP/t.v" 10 10; png "$TMP/t.v" "$REF/pixelate_10.png"
vips smartcrop "$SRC/smart.jpg" "$TMP/t.v" 200 200 --interesting attention; png "$TMP/t.v" "$REF/smart_200x200.png"

# ---------------------------------------------------------------- alpha, background, CMYK
# At 200x125: flatten first, then resize (the same as a premultiplied resize).
leaf() { vips flatten "$LEAF" "$TMP/f.v" --background "$1"; vips resize "$TMP/f.v" "$TMP/t.v" 0.5; png "$TMP/t.v" "$2"; }
leaf "255 255 255" "$REF/leaf_200_on_white.png"
leaf "0 64 128" "$REF/leaf_200_on_0_64_128.png"
vips extract_band "$LEAF" "$TMP/a.v" 3
vips resize "$TMP/a.v" "$TMP/t.v" 0.5; png "$TMP/t.v" "$REF/leaf_200_alpha.png"
# The CMYK file is the RGB original converted naively; its 480x320 rendering must look
# like the RGB original at the same size.
vips resize "$IMG/autumn_1920x1280_q85.jpg" "$TMP/t.v" 0.125; png "$TMP/t.v" "$REF/autumn_240x160.png"

echo "golden references written to $REF"
