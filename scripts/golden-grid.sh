#!/bin/sh
# Writes tests/golden/ref/grid_2x2_fill.png, the reference of the /grid golden test
# (tests/it/grid.rs): four photos of tests/golden/src, each made to cover a 120x90 cell
# (EXIF orientation applied, scaled by max(120/w, 90/h), cropped around the centre with
# imgproxy's offset RoundToEven((outer - inner + 1) / 2), as tests/golden/README.md
# explains), laid out two across with 4-pixel white gaps, with plain libvips operations,
# independently of imgedge's code. Needs the `vips` CLI (Debian `libvips-tools`).
set -eu
cd "$(dirname "$0")/.."
src=tests/golden/src
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# file, scale, x offset of the 120x90 crop (all four are wider than the cell's ratio)
cell() {
    vips autorot "$src/$2" "$tmp/$1.o.v"
    vips resize "$tmp/$1.o.v" "$tmp/$1.r.v" "$3"
    vips extract_area "$tmp/$1.r.v" "$tmp/$1.v" "$4" 0 120 90
}
cell 1 orient_1.jpg 0.5625 8   # 240x160 -> 135x90
cell 2 smart.jpg 0.45 76       # 600x200 -> 270x90
cell 3 tiny.png 0.9 8          # 150x100 -> 135x90
cell 4 orient_6.jpg 0.5625 8   # 240x160 as displayed -> 135x90
vips arrayjoin "$tmp/1.v $tmp/2.v $tmp/3.v $tmp/4.v" "$tmp/grid.v" --across 2 --shim 4 --background "255 255 255"
vips copy "$tmp/grid.v" "tests/golden/ref/grid_2x2_fill.png[strip,compression=9]"
