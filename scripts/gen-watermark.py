#!/usr/bin/env python3
"""Writes conf/demo-images/watermark.png, the demo tenant's watermark: 160x48 RGBA, a
half-transparent dark badge with "imgedge" in white and a fully transparent margin, so
both alpha and colour show in tests and examples. Deterministic (Pillow's built-in font).
Usage: scripts/gen-watermark.py [OUT]"""
import sys

from PIL import Image, ImageDraw, ImageFont

out = sys.argv[1] if len(sys.argv) > 1 else "conf/demo-images/watermark.png"
img = Image.new("RGBA", (160, 48), (0, 0, 0, 0))
d = ImageDraw.Draw(img)
d.rounded_rectangle((4, 4, 155, 43), radius=10, fill=(20, 24, 32, 170), outline=(255, 255, 255, 230), width=2)
font = ImageFont.load_default()
d.text((80, 24), "imgedge", fill=(255, 255, 255, 255), font=font, anchor="mm")
# a coloured bar keeps channel swaps visible
d.rectangle((14, 34, 146, 37), fill=(240, 120, 30, 255))
img.save(out, optimize=True)
