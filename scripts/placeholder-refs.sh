#!/usr/bin/env bash
# Regenerates tests/golden/placeholders.json: the BlurHash and ThumbHash strings of the
# reference implementations for the images in tests/golden/src/ (plus one with alpha,
# tests/data/images/leaf_alpha_400x250.png). The golden test
# `placeholder_hashes_match_the_reference_implementations` (imgedge-core) checks that
# imgedge computes exactly these strings.
#
# The references are fed the very pixels imgedge hashes (`imgedge placeholder-sample`:
# the image oriented, in sRGB, fitted into 100x100 for ThumbHash and further into 32x32
# for BlurHash), so the comparison is of the hash algorithms, not of decoders or
# resizers:
# * BlurHash: woltapp's C encoder through the PyPI package blurhash-python (1.2.2),
#   given the 32x32 sample composited over white, as imgedge does (BlurHash has no alpha).
# * ThumbHash: evanw's npm package thumbhash (0.1.1), given the 100x100 RGBA sample.
# Needs python3 (with venv) and node/npm, and network access to PyPI and npm once.
set -euo pipefail
cd "$(dirname "$0")/.."

TMP=$(mktemp -d)
trap 'rm -rf "$TMP"' EXIT
: "${CARGO_TARGET_DIR:=target}"
cargo build -q --bin imgedge
IMGEDGE=$CARGO_TARGET_DIR/debug/imgedge

python3 -m venv "$TMP/venv"
"$TMP/venv/bin/pip" install -q blurhash-python==1.2.2
(cd "$TMP" && npm init -y >/dev/null && npm install -q --no-audit --no-fund thumbhash@0.1.1 >/dev/null)

IMAGES=(tests/golden/src/* tests/data/images/leaf_alpha_400x250.png)
for f in "${IMAGES[@]}"; do
  name=$(basename "$f")
  "$IMGEDGE" placeholder-sample "$f" >"$TMP/$name.th"
  "$IMGEDGE" placeholder-sample --side 32 "$f" >"$TMP/$name.bh"
done

cat >"$TMP/th.mjs" <<'EOF'
import { rgbaToThumbHash } from 'thumbhash'
import { readFileSync } from 'node:fs'
for (const path of process.argv.slice(2)) {
  const data = readFileSync(path)
  const nl = data.indexOf(10)
  const [w, h] = data.subarray(0, nl).toString().split(' ').map(Number)
  const hash = rgbaToThumbHash(w, h, data.subarray(nl + 1))
  console.log(Buffer.from(hash).toString('base64'))
}
EOF
paths=()
for f in "${IMAGES[@]}"; do paths+=("$TMP/$(basename "$f").th"); done
(cd "$TMP" && node th.mjs "${paths[@]}") >"$TMP/thumbhashes"

"$TMP/venv/bin/python" - "$TMP" "${IMAGES[@]}" <<'EOF' >tests/golden/placeholders.json
import json, sys
from PIL import Image
import blurhash

tmp, images = sys.argv[1], sys.argv[2:]
thumbhashes = open(f"{tmp}/thumbhashes").read().split()
COMPONENTS = ["1:1", "4:3", "3:4", "9:9"]
out = {}
for path, th in zip(images, thumbhashes):
    name = path.rsplit("/", 1)[1]
    data = open(f"{tmp}/{name}.bh", "rb").read()
    head, rgba = data.split(b"\n", 1)
    w, h = map(int, head.split())
    # over white, with imgedge's integer rounding (colors.rs, rgb_over_white)
    rgb = bytearray()
    for i in range(0, len(rgba), 4):
        a = rgba[i + 3]
        rgb += bytes((c * a + 255 * (255 - a) + 127) // 255 for c in rgba[i:i + 3])
    # encode() closes the image it is given: one per call
    img = lambda: Image.frombytes("RGB", (w, h), bytes(rgb))
    out[name] = {
        "blurhash_size": [w, h],
        "blurhash": {c: blurhash.encode(img(), *map(int, c.split(":"))) for c in COMPONENTS},
        "thumbhash": th,
    }
json.dump(out, sys.stdout, indent=2, sort_keys=True)
print()
EOF
echo "wrote tests/golden/placeholders.json (${#IMAGES[@]} images)" >&2
