"""Small files made to hurt a decoder: written byte by byte, because Pillow would need the
memory they cost to write them itself."""

from __future__ import annotations

import struct
import zlib

# A minimal Encapsulated PostScript file: Pillow's EPS plugin would hand it to Ghostscript.
EPS = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 32\nshowpage\n%%EOF\n"


def png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def png(width: int, height: int, bit_depth: int, row: bytes) -> bytes:
    """A valid greyscale PNG whose every row is `row` (filter byte included)."""
    compressor = zlib.compressobj(9)
    pixels = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, bit_depth, 0, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + png_chunk(b"IHDR", header)
        + png_chunk(b"IDAT", pixels)
        + png_chunk(b"IEND", b"")
    )


def bomb_png(width: int, height: int) -> bytes:
    """A 1-bit PNG of all-black pixels: tiny on disk, huge once decoded."""
    return png(width, height, 1, b"\x00" * (1 + (width + 7) // 8))


def stripe_png(width: int, height: int = 1) -> bytes:
    """An 8-bit PNG strip: a few hundred bytes for any width, enormous once its short side is
    scaled up to a model's input size (the probe's 300000x1 file was 370 bytes)."""
    return png(width, height, 8, b"\x00" * (width + 1))
