"""Images a run writes for people to look at (the alignment of each validation), as PNG
with no imaging library: 8-bit greyscale is all a loss-curve companion needs."""

from __future__ import annotations

import struct
import zlib
from pathlib import Path

import numpy as np

from voxtrain.atomic import write_atomic


def uint8_grey(pixels: np.ndarray) -> np.ndarray:
    """[0, 1] floats as 8-bit grey levels, rounded as TensorBoard rounds them."""
    return (np.clip(pixels, 0, 1) * 255).astype(np.uint8)


def png_bytes(pixels: np.ndarray) -> bytes:
    """An 8-bit greyscale PNG of (H, W) values in [0, 1], first row at the top."""
    grey = uint8_grey(pixels)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", grey.shape[1], grey.shape[0], 8, 0, 0, 0, 0)  # 8-bit, greyscale
    rows = b"".join(b"\x00" + row.tobytes() for row in grey)  # filter type 0 on every row
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def write_png(path: Path, pixels: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(png_bytes(pixels), path)
    return path
