"""Perceptual hashes for near-duplicate detection: imagehash's pHash (DCT of a 32x32 grey image,
the top-left 8x8 block against its median) as 16 hex digits, and the uint64 / Hamming helpers that
`sdgen dedup` uses. Computed on the host copy in the PNG encode threads, never on the GPU path.
"""

from __future__ import annotations

import io

import numpy as np

HASH_BITS = 64


def phash_image(img) -> str:
    """64-bit pHash of a PIL image as 16 lowercase hex digits (imagehash's own string form)."""
    import imagehash

    return str(imagehash.phash(img, hash_size=8))


def phash_png(png: bytes) -> str:
    from PIL import Image

    return phash_image(Image.open(io.BytesIO(png)).convert("RGB"))


def to_uint64(hexes) -> np.ndarray:
    """Hex strings -> uint64 array (the bit order of the hex string: first digit = high bits)."""
    return np.array([int(h, 16) for h in hexes], dtype=np.uint64)


def hamming(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Bitwise Hamming distance of two broadcastable uint64 arrays."""
    return np.bitwise_count(np.bitwise_xor(np.asarray(a, np.uint64), np.asarray(b, np.uint64))).astype(
        np.int32
    )
