"""Codes for the stored rerank vectors: int8 and 4-bit residual (``int4``) quantization.

int8: symmetric per-vector codes, v ~= codes * scale (128 B + 4 B at 128-d).

int4: each vector minus a base (its IVF list's centroid when the segment's FAISS index is
an IVF, else zero) is quantized to 16 uniform levels per dimension, v ~= base + (n - 7.5) *
scale with n in 0..15 and scale = max|v - base| / 7.5, so the extremes are exact and
decoding then re-encoding against the same base gives the same codes (merges copy stored
codes as they are; one that must re-encode, into other centroids, decodes first). The writer
codes a new vector against whichever of its 3 nearest centroids reconstructs it best. Two
dimensions share a byte: the low nibble of byte j holds dimension j, the high nibble
dimension j + dim/2 (64 B + 4 B scale + 2 B list number at 128-d, against 132 B for int8).
"""
from __future__ import annotations

import numpy as np

INT4_LEVELS = 16
INT4_CENTER = (INT4_LEVELS - 1) / 2  # codes n stand for (n - 7.5) * scale


def quantize_int8(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-row int8 codes and float32 scales: x ~= codes * scale."""
    x = np.asarray(x, dtype=np.float32)
    scale = np.abs(x).max(axis=1) / 127.0
    scale[scale == 0] = 1.0
    codes = np.clip(np.rint(x / scale[:, None]), -127, 127).astype(np.int8)
    return codes, scale.astype(np.float32)


def quantize_int4(x: np.ndarray, base: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Packed 4-bit codes [n, dim/2] (uint8) and float32 scales of x - base (base 0 if None)."""
    r = np.asarray(x, dtype=np.float32)
    if base is not None:
        r = r - base
    half = check_int4_dim(r.shape[1])
    scale = np.abs(r).max(axis=1) / INT4_CENTER
    scale[scale == 0] = 1.0
    n = np.clip(np.rint(r / scale[:, None] + INT4_CENTER), 0, INT4_LEVELS - 1).astype(np.uint8)
    return n[:, :half] | (n[:, half:] << 4), scale.astype(np.float32)


def unpack_int4(packed: np.ndarray) -> np.ndarray:
    """Packed codes [n, dim/2] -> level numbers [n, dim] (uint8, 0..15)."""
    return np.concatenate([packed & 0x0F, packed >> 4], axis=1)


def decode_int4(packed: np.ndarray, scales: np.ndarray, base: np.ndarray | None = None) -> np.ndarray:
    """Float32 vectors [n, dim] from packed codes, their scales and bases (None: zero)."""
    out = (unpack_int4(packed).astype(np.float32) - INT4_CENTER) * scales[:, None]
    if base is not None:
        out += base
    return out


def check_int4_dim(dim: int) -> int:
    """dim / 2; int4 storage packs two dimensions per byte, so dim must be even."""
    if dim % 2:
        raise ValueError(f"int4 vector storage needs an even dimension, got {dim}")
    return dim // 2


def list_dtype(nlist: int) -> np.dtype:
    """The narrowest unsigned type for IVF list numbers below ``nlist``."""
    return np.dtype(np.uint16) if nlist <= 1 << 16 else np.dtype(np.uint32)
