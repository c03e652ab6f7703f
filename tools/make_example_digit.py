#!/usr/bin/env python3
"""Writes data/examples/seven.png: MNIST test digit 0 (a 7) as a picture a user might have, dark ink on light
paper at 3x size, for the Rust example `cargo run -p kiln --example classify`. Standard library only.

    python3 tools/make_example_digit.py
"""
import gzip
import pathlib
import struct
import zlib

root = pathlib.Path(__file__).resolve().parent.parent
with gzip.open(root / "data/mnist/t10k-images-idx3-ubyte.gz") as f:
    magic, count, rows, cols = struct.unpack(">IIII", f.read(16))
    assert magic == 2051 and (rows, cols) == (28, 28), "not an MNIST image file"
    pixels = f.read(rows * cols)
with gzip.open(root / "data/mnist/t10k-labels-idx1-ubyte.gz") as f:
    f.read(8)
    label = f.read(1)[0]
assert label == 7, f"test digit 0 is a {label}, not a 7"

scale = 3
side = 28 * scale
# Ink dark on light, like pen on paper: 255 - v, kept off pure white and black.
lines = []
for y in range(side):
    row = bytes(235 - pixels[(y // scale) * 28 + x // scale] * 200 // 255 for x in range(side))
    lines.append(b"\x00" + row)


def chunk(kind, data):
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)


png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0))
png += chunk(b"IDAT", zlib.compress(b"".join(lines), 9)) + chunk(b"IEND", b"")
out = root / "data/examples/seven.png"
out.write_bytes(png)
print(f"wrote {out} ({len(png)} bytes, {side}x{side}, label {label})")
