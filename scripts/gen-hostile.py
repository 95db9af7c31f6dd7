#!/usr/bin/env python3
"""Writes the generated part of tests/data/hostile/: malformed and extreme files for every
format imgedge reads, and generated.tsv, the answer each must get through the server.

Python 3 standard library only, and deterministic (no clocks, no randomness): running it
again rewrites the same bytes. Run from anywhere: scripts/gen-hostile.py

generated.tsv columns: file, expected status, then for a 200 the source width and height
(the result must fit inside them and the requested width), the expected status when the
tenant keeps animations (GIF and WebP take the animation decoder), then why.
"""

import base64
import os
import struct
import sys
import zlib

OUT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "data", "hostile")
PREFIX = "gen_"
CASES = []  # (name, status, width, height, status with animations kept, why, bytes)


def case(name, status, why, dims=(0, 0), animated=None):
    """`animated`: the status when the tenant keeps animations, if it differs (only the
    first frame is decoded otherwise, so a bad later frame goes unseen)."""

    def wrap(fn):
        data = fn()
        CASES.append((name, status, dims[0], dims[1], status if animated is None else animated, why, data))
        return fn

    return wrap


def deflate_zeros(n, level=9):
    """zlib stream of n zero bytes, without holding them all at once."""
    c = zlib.compressobj(level)
    block = bytes(1 << 20)
    out = []
    while n > 0:
        k = min(n, len(block))
        out.append(c.compress(block[:k]))
        n -= k
    out.append(c.flush())
    return b"".join(out)


# ---------------------------------------------------------------- PNG
def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


def ihdr(w, h, depth=8, color=2):
    return chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, depth, color, 0, 0, 0))


PNG_SIG = b"\x89PNG\r\n\x1a\n"


def png(w, h, extra=b"", depth=8, color=2):
    channels = {0: 1, 2: 3, 6: 4}[color]
    row = 1 + (w * channels * depth + 7) // 8
    raw = b"".join(b"\0" + bytes([(y * 40) & 0xFF]) * (row - 1) for y in range(h))
    return PNG_SIG + ihdr(w, h, depth, color) + extra + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


@case("png_valid_2x2.png", 200, "control: a valid PNG", (2, 2))
def _():
    return png(2, 2)


@case("png_no_idat.png", 422, "IHDR then IEND: no pixel data at all")
def _():
    return PNG_SIG + ihdr(16, 16) + chunk(b"IEND", b"")


@case("png_zero_width.png", 422, "IHDR width 0")
def _():
    return PNG_SIG + ihdr(0, 16) + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b"")


@case("png_truncated_idat.png", 422, "the zlib stream stops half way through the rows")
def _():
    raw = b"".join(b"\0" + bytes([y]) * 192 for y in range(64))
    z = zlib.compress(raw, 0)
    return PNG_SIG + ihdr(64, 64) + chunk(b"IDAT", z[: len(z) // 2])


@case("png_short_idat.png", 422, "a complete zlib stream holding 2 of 64 rows")
def _():
    raw = b"".join(b"\0" + b"\x80" * 192 for _ in range(2))
    return PNG_SIG + ihdr(64, 64) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b"")


@case("png_bad_bit_depth.png", 422, "RGB with 3 bits per sample does not exist")
def _():
    return PNG_SIG + ihdr(4, 4, depth=3) + chunk(b"IDAT", zlib.compress(b"\0" * 20)) + chunk(b"IEND", b"")


@case("png_chunk_len_2g.png", 422, "a chunk after IHDR claims 2 GiB")
def _():
    return PNG_SIG + ihdr(16, 16) + struct.pack(">I", 0x7FFFFFFF) + b"IDAT" + b"\0" * 64


@case("png_ztxt_bomb.png", 200, "valid 2x2 image carrying a zTXt chunk that inflates to 256 MiB", (2, 2))
def _():
    return png(2, 2, extra=chunk(b"zTXt", b"Comment\0\0" + deflate_zeros(256 << 20)))


@case("png_iccp_bomb.png", 200, "an iCCP profile inflating to 256 MiB: dropped at the memory limit", (2, 2))
def _():
    return png(2, 2, extra=chunk(b"iCCP", b"icc\0\0" + deflate_zeros(256 << 20)))


@case("png_1bit_7000x7000.png", 200, "49 MP 1-bit image in 6 KB: within the pixel limit", (7000, 7000))
def _():
    row = 1 + 875
    return PNG_SIG + ihdr(7000, 7000, depth=1, color=0) + chunk(b"IDAT", deflate_zeros(row * 7000)) + chunk(b"IEND", b"")


@case("png_bomb_30000x30000.png", 422, "900 MP declared: refused from the header")
def _():
    return PNG_SIG + ihdr(30000, 30000, depth=1, color=0) + chunk(b"IDAT", deflate_zeros(3751 * 2000)) + chunk(
        b"IEND", b""
    )


# ---------------------------------------------------------------- JPEG
# Grey, DC-only images: one Huffman code per table, so every 8x8 block costs a bit or two.
def seg(marker, data):
    return b"\xff" + bytes([marker]) + struct.pack(">H", len(data) + 2) + data


def bits_to_bytes(bits):
    bits += "1" * (-len(bits) % 8)
    out = bytearray()
    for i in range(0, len(bits), 8):
        b = int(bits[i : i + 8], 2)
        out.append(b)
        if b == 0xFF:
            out.append(0)
    return bytes(out)


def jpeg_tables():
    dqt = seg(0xDB, b"\x00" + b"\x01" * 64)
    # DC: one code, "0" = category 0. AC: "00" = end of block, "01" = a run of 2^14
    # end-of-blocks (14 extra bits follow), which keeps large progressive scans small.
    dc = b"\x00" + b"\x01" + b"\x00" * 15 + b"\x00"
    ac = b"\x10" + b"\x00\x02" + b"\x00" * 14 + b"\x00\xe0"
    dht = seg(0xC4, dc + ac)
    return dqt + dht


def sof(marker, w, h):
    return seg(marker, struct.pack(">BHHB", 8, h, w, 1) + b"\x01\x11\x00")


def sos(ss, se, ah_al=0):
    return seg(0xDA, b"\x01\x01\x00" + bytes([ss, se, ah_al]))


def blocks(w, h):
    return ((w + 7) // 8) * ((h + 7) // 8)


def jpeg_baseline(w, h):
    n = blocks(w, h)
    data = bits_to_bytes("000" * n)
    return b"\xff\xd8" + jpeg_tables() + sof(0xC0, w, h) + sos(0, 63) + data + b"\xff\xd9"


def jpeg_progressive(w, h, ac_scans):
    n = blocks(w, h)
    dc = sos(0, 0) + bits_to_bytes("0" * n)
    runs, rest = divmod(n, 1 << 14)
    ac = (sos(1, 63) + bits_to_bytes(("01" + "0" * 14) * runs + "00" * rest)) * ac_scans
    return b"\xff\xd8" + jpeg_tables() + sof(0xC2, w, h) + dc + ac + b"\xff\xd9"


@case("jpeg_valid_16x16.jpg", 200, "control: baseline grey", (16, 16))
def _():
    return jpeg_baseline(16, 16)


@case("jpeg_prog_valid_16x16.jpg", 200, "control: progressive grey, DC then one AC scan", (16, 16))
def _():
    return jpeg_progressive(16, 16, 1)


@case("jpeg_prog_2000_scans.jpg", 422, "progressive with 2000 scans (the many-scans CPU bomb)")
def _():
    return jpeg_progressive(64, 64, 2000)


@case("jpeg_prog_2000_scans_2048.jpg", 422, "many scans on an image large enough for DCT-domain shrinking")
def _():
    return jpeg_progressive(2048, 2048, 2000)


@case("jpeg_prog_truncated.jpg", 200, "progressive cut inside its AC scan: rendered as browsers do", (64, 64))
def _():
    return jpeg_progressive(64, 64, 1)[:-10]


@case("jpeg_extraneous_bytes.jpg", 200, "garbage between the tables and the frame header (a libjpeg warning)", (16, 16))
def _():
    j = jpeg_baseline(16, 16)
    at = j.index(b"\xff\xc0")
    return j[:at] + b"garbage" + j[at:]


@case("jpeg_12bit.jpg", 422, "12-bit samples (SOF1): neither decoder takes them")
def _():
    j = jpeg_baseline(16, 16)
    at = j.index(b"\xff\xc0")
    return j[:at] + b"\xff\xc1" + j[at + 2 : at + 4] + b"\x0c" + j[at + 5 :]


@case("jpeg_zero_height.jpg", 422, "SOF height 0 (a DNL marker would follow; not supported)")
def _():
    return b"\xff\xd8" + jpeg_tables() + sof(0xC0, 16, 0) + sos(0, 63) + b"\x00" * 4 + b"\xff\xd9"


@case("jpeg_zero_width.jpg", 422, "SOF width 0")
def _():
    return b"\xff\xd8" + jpeg_tables() + sof(0xC0, 0, 16) + sos(0, 63) + b"\x00" * 4 + b"\xff\xd9"


@case("jpeg_prog_bomb_30000x30000.jpg", 422, "900 MP progressive: refused from the header")
def _():
    return b"\xff\xd8" + jpeg_tables() + sof(0xC2, 30000, 30000) + sos(0, 0) + b"\x00" * 64 + b"\xff\xd9"


@case("jpeg_4096x4096_dc.jpg", 200, "16 MP in 64 KB: within the limit, decoded shrunk", (4096, 4096))
def _():
    return jpeg_baseline(4096, 4096)


@case("jpeg_sof_only.jpg", 422, "frame header and nothing after it")
def _():
    return b"\xff\xd8" + jpeg_tables() + sof(0xC0, 16, 16)


# ---------------------------------------------------------------- GIF
def gif(sw, sh, frames, trailer=True):
    """frames: (x, y, w, h, lzw data or None for a generated all-zero frame)."""
    out = b"GIF89a" + struct.pack("<HHBBB", sw, sh, 0x80, 0, 0) + b"\x00\x00\x00\xff\xff\xff"
    for x, y, w, h, lzw in frames:
        out += b"\x2c" + struct.pack("<HHHHB", x, y, w, h, 0)
        if lzw is None:
            lzw = gif_lzw_zeros(w * h)
        out += b"\x02" + sub_blocks(lzw)
    return out + (b"\x3b" if trailer else b"")


def gif_lzw_zeros(n):
    """Minimum code size 2: clear (4), then index 0 n times as literal 3-bit codes, with a
    clear before the table would grow the code size, then end (5)."""
    codes, since_clear = [4], 0
    for _ in range(n):
        if since_clear == 2:  # 6 + 2 entries would need 4 bits
            codes.append(4)
            since_clear = 0
        codes.append(0)
        since_clear += 1
    codes.append(5)
    acc, nbits, out = 0, 0, bytearray()
    for c in codes:
        acc |= c << nbits
        nbits += 3
        while nbits >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            nbits -= 8
    if nbits:
        out.append(acc & 0xFF)
    return bytes(out)


def sub_blocks(data):
    out = b""
    for i in range(0, len(data), 255):
        part = data[i : i + 255]
        out += bytes([len(part)]) + part
    return out + b"\x00"


@case("gif_valid_4x4.gif", 200, "control: a valid GIF", (4, 4))
def _():
    return gif(4, 4, [(0, 0, 4, 4, None)])


@case("gif_screen_8000x8000.gif", 422, "64 MP logical screen around a 1x1 frame")
def _():
    return gif(8000, 8000, [(0, 0, 1, 1, None)])


@case("gif_screen_zero.gif", 422, "0x0 logical screen")
def _():
    return gif(0, 0, [(0, 0, 1, 1, None)])


@case("gif_frame_outside_screen.gif", 200, "a frame placed at 60000,60000 is clipped away: a blank 10x10", (10, 10))
def _():
    return gif(10, 10, [(60000, 60000, 10, 10, None)])


@case("gif_frame_larger_than_screen.gif", 422, "10x10 screen, a 5000x5000 frame")
def _():
    return gif(10, 10, [(0, 0, 5000, 5000, b"\x04\x05")])


@case("gif_truncated.gif", 422, "cut inside the first frame's data")
def _():
    return gif(16, 16, [(0, 0, 16, 16, None)], trailer=False)[:-60]


@case("gif_anim_300_frames.gif", 200, "300 frames of 4x4 (animations keep at most max_frames)", (4, 4))
def _():
    return gif(4, 4, [(0, 0, 4, 4, None)] * 300)


@case("gif_anim_frames_past_screen.gif", 200, "frames overhanging the screen's edge are clipped", (4, 4))
def _():
    return gif(4, 4, [(0, 0, 4, 4, None), (2, 2, 4, 4, None), (3, 0, 8, 1, None)])


@case("gif_no_frames.gif", 422, "header and trailer, no image")
def _():
    return gif(16, 16, [])


# ---------------------------------------------------------------- WebP
# Modernizr's 1x1 lossless WebP (VP8L), the smallest valid WebP there is.
WEBP_1X1 = base64.b64decode("UklGRhoAAABXRUJQVlA4TA0AAAAvAAAAEAcQERGIiP4HAA==")
VP8L = WEBP_1X1[12:]


def riff(*chunks):
    body = b"WEBP" + b"".join(chunks)
    return b"RIFF" + struct.pack("<I", len(body)) + body


def vp8x(w, h, flags=0):
    return b"VP8X" + struct.pack("<I", 10) + bytes([flags, 0, 0, 0]) + (w - 1).to_bytes(3, "little") + (
        h - 1
    ).to_bytes(3, "little")


def vp8l_dims(w, h):
    """The 1x1 VP8L chunk with its header claiming w x h."""
    body = bytearray(VP8L[8:])
    bits = struct.unpack("<I", body[1:5])[0]
    bits = (bits & ~0x0FFFFFFF) | (w - 1) | ((h - 1) << 14)
    body[1:5] = struct.pack("<I", bits)
    return VP8L[:8] + bytes(body)


@case("webp_valid_1x1.webp", 200, "control: lossless 1x1", (1, 1))
def _():
    return WEBP_1X1


@case("webp_canvas_16777216.webp", 422, "VP8X canvas of 2^24 x 2^24 around a 1x1 image")
def _():
    return riff(vp8x(1 << 24, 1 << 24), VP8L)


@case("webp_canvas_7000x7000.webp", 422, "49 MP VP8X canvas (within the limit) around a 1x1 image")
def _():
    return riff(vp8x(7000, 7000), VP8L)


@case("webp_canvas_1x1_vp8l_16383.webp", 422, "1x1 canvas, bitstream claims 16383x16383")
def _():
    return riff(vp8x(1, 1), vp8l_dims(16383, 16383))


@case("webp_vp8l_16383x16383.webp", 422, "268 MP lossless: refused from the header")
def _():
    return riff(vp8l_dims(16383, 16383))


def anmf(w, h, image=VP8L, x=0, y=0):
    head = (x // 2).to_bytes(3, "little") + (y // 2).to_bytes(3, "little")
    head += (w - 1).to_bytes(3, "little") + (h - 1).to_bytes(3, "little") + b"\x64\0\0\0"
    return b"ANMF" + struct.pack("<I", len(head) + len(image)) + head + image


ANIM = b"ANIM" + struct.pack("<I", 6) + b"\0\0\0\0\0\0"


@case("webp_anim_canvas_16777216.webp", 422, "animated, 2^24 x 2^24 canvas")
def _():
    return riff(vp8x(1 << 24, 1 << 24, flags=0x02), ANIM, anmf(1, 1))


@case("webp_anim_valid_3_frames.webp", 200, "control: animated, three 1x1 frames", (1, 1))
def _():
    return riff(vp8x(1, 1, flags=0x02), ANIM, anmf(1, 1), anmf(1, 1), anmf(1, 1))


@case("webp_anim_frame_16383.webp", 200, "1x1 animation, 2nd frame claims 16383x16383", (1, 1), animated=422)
def _():
    return riff(vp8x(1, 1, flags=0x02), ANIM, anmf(1, 1), anmf(16383, 16383, vp8l_dims(16383, 16383)))


@case("webp_anim_frame_outside_canvas.webp", 200, "2x2 animation, 2nd frame at 1000,1000", (2, 2), animated=422)
def _():
    return riff(vp8x(2, 2, flags=0x02), ANIM, anmf(1, 1), anmf(1, 1, x=1000, y=1000))


@case("webp_riff_only.webp", 422, "RIFF/WEBP header and nothing else")
def _():
    return b"RIFF\x04\x00\x00\x00WEBP"


@case("webp_vp8_zero.webp", 422, "lossy frame header with 0x0")
def _():
    frame = b"\x10\x02\x00" + b"\x9d\x01\x2a" + struct.pack("<HH", 0, 0) + b"\0" * 16
    return riff(b"VP8 " + struct.pack("<I", len(frame)) + frame)


@case("webp_truncated.webp", 422, "the 1x1 file without its last bytes")
def _():
    return WEBP_1X1[:-6]


# ---------------------------------------------------------------- BMP
def bmp(w, h, bpp=24, pixels=None, compression=0, clr_used=0, off=None, palette=b""):
    stride = ((w * bpp + 31) // 32) * 4
    if pixels is None:
        pixels = b"\x80" * (stride * abs(h))
    off = 14 + 40 + len(palette) if off is None else off
    info = struct.pack("<IiiHHIIiiII", 40, w, h, 1, bpp, compression, len(pixels), 2835, 2835, clr_used, 0)
    return b"BM" + struct.pack("<IHHI", 14 + 40 + len(palette) + len(pixels), 0, 0, off) + info + palette + pixels


@case("bmp_valid_4x4.bmp", 200, "control: 24-bit", (4, 4))
def _():
    return bmp(4, 4)


@case("bmp_dims_100000x100000.bmp", 422, "10 GP declared, 48 bytes of pixels")
def _():
    return bmp(100000, 100000, pixels=b"\0" * 48)


@case("bmp_zero_width.bmp", 422, "width 0")
def _():
    return bmp(0, 4, pixels=b"\0" * 16)


@case("bmp_height_i32_min.bmp", 422, "top-down height -2^31 (its absolute value overflows i32)")
def _():
    return bmp(4, -(1 << 31), pixels=b"\0" * 48)


@case("bmp_truncated_pixels.bmp", 422, "64x64 24-bit with 100 bytes of pixels")
def _():
    return bmp(64, 64, pixels=b"\x40" * 100)


@case("bmp_offset_beyond_eof.bmp", 422, "pixel data offset past the end of the file")
def _():
    return bmp(4, 4, off=0x7FFFFFF0)


@case("bmp_rle8_bomb_20000x20000.bmp", 422, "400 MP RLE8: refused from the header")
def _():
    palette = b"\0\0\0\0" * 256
    return bmp(20000, 20000, bpp=8, compression=1, pixels=b"\x00\x01" * 32, palette=palette)


@case("bmp_bad_bpp.bmp", 422, "7 bits per pixel")
def _():
    return bmp(4, 4, bpp=7, pixels=b"\0" * 16)


@case("bmp_palette_4g.bmp", 422, "8-bit with a palette of 2^32-1 colours declared")
def _():
    return bmp(4, 4, bpp=8, clr_used=0xFFFFFFFF, pixels=b"\0" * 16)


# ---------------------------------------------------------------- TIFF
def tiff(
    w, h, entries_extra=(), spp=3, bps=8, strip=None, strip_off=None, strip_count=None, compression=1, rows=None, tile=None
):
    """Little-endian, one IFD, one strip (or one tile of `tile` = (width, height))."""
    if strip is None:
        strip = b"\x80" * (w * h * spp * bps // 8)
    n_entries = 9 + len(entries_extra) + (1 if tile else 0)
    ifd_size = 2 + n_entries * 12 + 4
    bps_off = 8 + ifd_size
    data_off = bps_off + 2 * spp
    entries = [
        (256, 4, 1, w),
        (257, 4, 1, h),
        (258, 3, spp, bps if spp == 1 else bps_off),
        (259, 3, 1, compression),
        (262, 3, 1, 2 if spp >= 3 else 1),
        (273, 4, 1, data_off if strip_off is None else strip_off),
        (277, 3, 1, spp),
        (278, 4, 1, h if rows is None else rows),
        (279, 4, 1, len(strip) if strip_count is None else strip_count),
    ] + list(entries_extra)
    if tile:
        # TileWidth, TileLength, TileOffsets, TileByteCounts instead of the strip tags
        strips = {273: 324, 278: None, 279: 325}
        entries = [(strips.get(t, t), *rest) for t, *rest in entries if strips.get(t, t) is not None]
        entries += [(322, 4, 1, tile[0]), (323, 4, 1, tile[1]), (278, 4, 1, 0)]
        entries = [e for e in entries if e[0] != 278]
    entries.sort()
    out = b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", len(entries))
    for tag, typ, count, value in entries:
        packed = struct.pack("<H", value) + b"\0\0" if typ == 3 and count == 1 else struct.pack("<I", value)
        out += struct.pack("<HHI", tag, typ, count) + packed
    out += struct.pack("<I", 0)
    out += struct.pack("<H", bps) * spp
    return out + strip


@case("tiff_valid_4x4.tif", 200, "control: RGB, uncompressed", (4, 4))
def _():
    return tiff(4, 4)


@case("tiff_dims_100000x100000.tif", 422, "10 GP declared")
def _():
    return tiff(100000, 100000, strip=b"\0" * 64)


@case("tiff_zero_width.tif", 422, "width 0")
def _():
    return tiff(0, 4, strip=b"\0" * 48)


@case("tiff_strip_beyond_eof.tif", 422, "the strip starts past the end of the file")
def _():
    return tiff(4, 4, strip_off=0x7FFF0000)


@case("tiff_strip_count_4g.tif", 422, "one strip claiming 4 GiB")
def _():
    return tiff(4, 4, strip_count=0xFFFFFFF0)


@case("tiff_deflate_bomb_30000x30000.tif", 422, "900 MP deflate: refused from the header")
def _():
    return tiff(30000, 30000, spp=1, strip=deflate_zeros(30000 * 100), compression=8)


@case("tiff_deflate_7000x7000.tif", 200, "49 MP grey in 50 KB: within the limit", (7000, 7000))
def _():
    return tiff(7000, 7000, spp=1, strip=deflate_zeros(7000 * 7000), compression=8)


@case("tiff_ifd_beyond_eof.tif", 422, "first IFD offset past the end")
def _():
    return b"II*\x00" + struct.pack("<I", 0x7FFFFFF0) + b"\0" * 32


@case("tiff_ifd_65535_entries.tif", 422, "IFD says 65535 entries, the file holds 2")
def _():
    return b"II*\x00" + struct.pack("<I", 8) + struct.pack("<H", 65535) + b"\0" * 24


@case("tiff_samples_1000.tif", 422, "1000 samples per pixel")
def _():
    return tiff(4, 4, spp=1000, strip=b"\0" * 64)


@case("tiff_tile_65520x65520.tif", 422, "a 4x4 image stored as one 65520x65520 tile (16 GB decoded)")
def _():
    return tiff(4, 4, tile=(65520, 65520))


@case("tiff_rows_per_strip_zero.tif", 422, "RowsPerStrip 0")
def _():
    return tiff(4, 4, rows=0)


@case("tiff_truncated.tif", 422, "the valid 64x64 file without its last half")
def _():
    t = tiff(64, 64)
    return t[: len(t) // 2]


# ---------------------------------------------------------------- ICO
def ico(entries):
    """entries: (dir width, dir height, image bytes, offset override or None)."""
    out = struct.pack("<HHH", 0, 1, len(entries))
    off = 6 + 16 * len(entries)
    body = b""
    for w, h, data, at in entries:
        out += struct.pack("<BBBBHHII", w & 0xFF, h & 0xFF, 0, 0, 1, 32, len(data), off + len(body) if at is None else at)
        body += data
    return out + body


def ico_bmp(w, h):
    """32-bit DIB as ICO stores it: double height (XOR + AND mask), no file header."""
    info = struct.pack("<IiiHHIIiiII", 40, w, 2 * h, 1, 32, 0, 0, 0, 0, 0, 0)
    mask_stride = ((w + 31) // 32) * 4
    return info + b"\x40\x80\xc0\xff" * (w * h) + b"\0" * (mask_stride * h)


@case("ico_valid_bmp_4x4.ico", 200, "control: one 32-bit BMP entry", (4, 4))
def _():
    return ico([(4, 4, ico_bmp(4, 4), None)])


@case("ico_valid_png_2x2.ico", 200, "control: one RGBA PNG entry", (2, 2))
def _():
    return ico([(2, 2, png(2, 2, color=6), None)])


@case("ico_png_rgb.ico", 422, "a PNG entry without alpha (ICO PNGs must be 32-bit RGBA, as Windows requires)")
def _():
    return ico([(2, 2, png(2, 2), None)])


@case("ico_png_100000x100000.ico", 422, "directory says 256x256, the embedded PNG 10 GP")
def _():
    return ico([(0, 0, PNG_SIG + ihdr(100000, 100000) + chunk(b"IDAT", deflate_zeros(4096)), None)])


@case("ico_bmp_30000x30000.ico", 422, "directory says 256x256, the embedded BMP 900 MP")
def _():
    info = struct.pack("<IiiHHIIiiII", 40, 30000, 60000, 1, 32, 0, 0, 0, 0, 0, 0)
    return ico([(0, 0, info + b"\0" * 64, None)])


@case("ico_bmp_zero_width.ico", 422, "the embedded BMP says width 0")
def _():
    info = struct.pack("<IiiHHIIiiII", 40, 0, 8, 1, 32, 0, 0, 0, 0, 0, 0)
    return ico([(4, 4, info + b"\0" * 64, None)])


@case("ico_offset_beyond_eof.ico", 422, "the entry's data starts past the end")
def _():
    return ico([(4, 4, ico_bmp(4, 4), 0x7FFFFFF0)])


@case("ico_65535_entries.ico", 422, "65535 entries declared, one present")
def _():
    data = ico([(4, 4, ico_bmp(4, 4), None)])
    return data[:4] + struct.pack("<H", 65535) + data[6:]


@case("ico_png_size_mismatch.ico", 422, "directory says 1x1, the embedded PNG is 2x2")
def _():
    return ico([(1, 1, png(2, 2), None)])


# ---------------------------------------------------------------- AVIF
def box(kind, payload):
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def full_box(kind, version, flags, payload):
    return box(kind, bytes([version]) + flags.to_bytes(3, "big") + payload)


class Bits:
    def __init__(self):
        self.bits = ""

    def put(self, value, n):
        self.bits += format(value, "0%db" % n) if n else ""

    def bytes(self):
        b = self.bits + "0" * (-len(self.bits) % 8)
        return bytes(int(b[i : i + 8], 2) for i in range(0, len(b), 8))


def av1_sequence_header(w, h):
    """A reduced still-picture sequence header OBU for a w x h, 8-bit 4:2:0 image."""
    b = Bits()
    b.put(0, 3)  # seq_profile
    b.put(1, 1)  # still_picture
    b.put(1, 1)  # reduced_still_picture_header
    b.put(31, 5)  # seq_level_idx[0]: no level limits
    wbits, hbits = max(w - 1, 1).bit_length(), max(h - 1, 1).bit_length()
    b.put(wbits - 1, 4)
    b.put(hbits - 1, 4)
    b.put(w - 1, wbits)
    b.put(h - 1, hbits)
    b.put(0, 1)  # use_128x128_superblock
    b.put(0, 1)  # enable_filter_intra
    b.put(0, 1)  # enable_intra_edge_filter
    b.put(0, 1)  # enable_superres
    b.put(0, 1)  # enable_cdef
    b.put(0, 1)  # enable_restoration
    b.put(0, 1)  # color_config: high_bitdepth
    b.put(0, 1)  # mono_chrome
    b.put(0, 1)  # color_description_present_flag
    b.put(0, 1)  # color_range
    b.put(0, 2)  # chroma_sample_position
    b.put(0, 1)  # separate_uv_delta_q
    b.put(0, 1)  # film_grain_params_present
    b.put(1, 1)  # trailing one bit
    payload = b.bytes()
    return bytes([0x0A, len(payload)]) + payload  # OBU_SEQUENCE_HEADER, has_size_field


def avif(w, h, item_data, ispe=None):
    """ftyp, meta (hdlr, pitm, iloc, iinf, iprp) and mdat with one av01 item."""
    ispe = ispe or (w, h)
    ftyp = box(b"ftyp", b"avif" + b"\0\0\0\0" + b"mif1avifmiaf")
    hdlr = full_box(b"hdlr", 0, 0, b"\0\0\0\0pict" + b"\0" * 12 + b"\0")
    pitm = full_box(b"pitm", 0, 0, struct.pack(">H", 1))
    infe = full_box(b"infe", 2, 0, struct.pack(">HH", 1, 0) + b"av01" + b"\0")
    iinf = full_box(b"iinf", 0, 0, struct.pack(">H", 1) + infe)
    av1c = box(b"av1C", bytes([0x81, 0x1F, 0x0C, 0x00]) + av1_sequence_header(w, h))
    ispe_box = full_box(b"ispe", 0, 0, struct.pack(">II", *ispe))
    pixi = full_box(b"pixi", 0, 0, b"\x03\x08\x08\x08")
    ipco = box(b"ipco", av1c + ispe_box + pixi)
    ipma = full_box(b"ipma", 0, 0, struct.pack(">IHB", 1, 1, 3) + bytes([0x81, 0x02, 0x83]))
    iprp = box(b"iprp", ipco + ipma)

    def meta_with(offset):
        iloc = full_box(
            b"iloc", 0, 0, bytes([0x44, 0x00]) + struct.pack(">HHHHII", 1, 1, 0, 1, offset, len(item_data))
        )
        return full_box(b"meta", 0, 0, hdlr + pitm + iloc + iinf + iprp)

    head_len = len(ftyp) + len(meta_with(0)) + 8
    return ftyp + meta_with(head_len) + box(b"mdat", item_data)


@case("avif_ftyp_only.avif", 422, "ftyp box and nothing else")
def _():
    return box(b"ftyp", b"avif" + b"\0\0\0\0" + b"mif1avif")


@case("avif_truncated_meta.avif", 422, "the meta box claims more bytes than the file has")
def _():
    data = avif(64, 64, av1_sequence_header(64, 64))
    return data[:60]


@case("avif_seq_65536x65536.avif", 422, "AV1 sequence header of 65536x65536 (4.3 GP)")
def _():
    return avif(65536, 65536, av1_sequence_header(65536, 65536))


@case("avif_ispe_zero.avif", 422, "ispe 0x0, sequence header 64x64, no frame data")
def _():
    return avif(64, 64, av1_sequence_header(64, 64), ispe=(0, 0))


@case("avif_no_frame.avif", 422, "64x64 sequence header and no frame OBU")
def _():
    return avif(64, 64, av1_sequence_header(64, 64))


@case("avif_garbage_obus.avif", 422, "64x64 sequence header followed by garbage")
def _():
    return avif(64, 64, av1_sequence_header(64, 64) + bytes((i * 37) & 0xFF for i in range(256)))


# ---------------------------------------------------------------- everything
def main():
    os.makedirs(OUT, exist_ok=True)
    for old in os.listdir(OUT):
        if old.startswith(PREFIX):
            os.remove(os.path.join(OUT, old))
    total = 0
    lines = ["# written by scripts/gen-hostile.py: file, status, source width, source height, animated status, why"]
    for name, status, w, h, anim, why, data in CASES:
        with open(os.path.join(OUT, PREFIX + name), "wb") as f:
            f.write(data)
        total += len(data)
        lines.append("\t".join([PREFIX + name, str(status), str(w), str(h), str(anim), why]))
    with open(os.path.join(OUT, "generated.tsv"), "w") as f:
        f.write("\n".join(lines) + "\n")
    print("%d files, %d bytes" % (len(CASES), total), file=sys.stderr)
    if total >= 2 << 20:
        sys.exit("generated files total %d bytes, over 2 MiB" % total)


if __name__ == "__main__":
    main()
