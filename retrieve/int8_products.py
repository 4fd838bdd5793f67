"""Query x int8-code products on the CPU's integer dot-product units (VNNI through oneDNN).

The float32 path widens every gathered int8 code to float32 and multiplies; here the codes stay
int8 and the float32 query is written as two int8 digits instead (:class:`QueryDigits`). One
``torch._int_mm`` of the stacked digits against the codes gives exact int32 products, combined
exactly in int32. The digits hold each query value to within half of 1/32,258 of its token's
largest value (float32: 1/16.7M): a similarity of unit vectors moves by at most ~5e-5 at 128-d
and typically by 3e-6, about a thousandth of what int8 storage itself moves it (measured:
MaxSim scores of scifact's top 100 within 5e-5 of float32's).

Measured on 2 Intel Xeon (Sapphire Rapids) cores, k = 100, one process switching paths per
round: fast-path p50 2.58 -> 2.50 ms (scifact), 2.29 -> 1.97 ms (nfcorpus's short queries);
exhaustive 45 -> 35 ms and 25 -> 19 ms. int4 residuals unpack to their levels 0..15 as int8
(:func:`int4_levels`) and take the same products: scifact p50 3.26 -> 3.03 ms, exhaustive
69 -> 52 ms. Without AVX-512 VNNI torch may run int8 products as a generic loop, so
:func:`available` says no there and the float32 path stays.
"""
from __future__ import annotations

import functools
import logging

import numpy as np
import torch

log = logging.getLogger(__name__)

BASE = 254  # the first digit's unit holds 254 steps of the second's: both span [-127, 127]
# int32 holds products of BASE x digit 0 + digit 1 exactly up to this many dimensions
MAX_DIM = (2**31 - 1) // ((BASE + 1) * 127 * 127)


@functools.lru_cache(maxsize=None)
def _int_mm_works(dim: int) -> bool:
    """Probed once per dimension: ``torch._int_mm`` exists on the CPU, has VNNI under it, and
    multiplies codes of ``dim`` dimensions right (torch 2.13 returns garbage for dim 1)."""
    vnni = getattr(torch.cpu, "_is_vnni_supported", None)
    if vnni is None or not vnni() or not hasattr(torch, "_int_mm"):
        return False
    try:
        a = (torch.arange(3 * dim) % 23 - 11).to(torch.int8).reshape(3, dim)
        b = (torch.arange(5 * dim) % 29 - 13).to(torch.int8).reshape(5, dim)
        out = torch._int_mm(a, b.T)
        return out.dtype is torch.int32 and torch.equal(out, (a.int() @ b.int().T))
    except (RuntimeError, NotImplementedError, TypeError) as exc:
        log.debug("int8 products unavailable (%s): the rerank widens codes to float32", exc)
        return False


def available(dim: int) -> bool:
    """Whether int8 codes of ``dim`` dimensions take this path (oneDNN on, VNNI, dim fits int32)."""
    return dim <= MAX_DIM and bool(torch.backends.mkldnn.enabled) and _int_mm_works(dim)


class QueryDigits:
    """A float32 query [n_q, dim] as two int8 digits per value: q = unit x (d0 + d1 / BASE),
    with unit = max|q| / 127 per query token."""

    def __init__(self, query: torch.Tensor) -> None:
        # numpy: a dozen torch calls on a few KB cost ~0.09 ms, more than the values' arithmetic
        values = query.numpy()
        self.n_q = len(values)
        unit = np.abs(values).max(axis=1) / 127.0
        unit[unit == 0] = 1.0
        x = values / unit[:, None]  # within [-127, 127], so both digits are too
        first = np.rint(x)
        self._digits = np.concatenate([first, np.rint((x - first) * BASE)]).astype(np.int8)
        self.digits = torch.from_numpy(self._digits)  # [2 x n_q, dim]
        # the factor each query token's products take after :meth:`scaled_products`
        self.token_scale = (unit / BASE).astype(np.float32)

    @functools.cached_property
    def digit_sums(self) -> np.ndarray:
        """Each token's BASE x digit 0 + digit 1 summed over dimensions [n_q]: the products of a
        code of ones, consistent with :meth:`products` (int4's level offset needs them)."""
        wide = self._digits.astype(np.int64)
        return (BASE * wide[:self.n_q].sum(axis=1) + wide[self.n_q:].sum(axis=1)).astype(np.float32)

    def products(self, codes: torch.Tensor, rows_first: bool) -> torch.Tensor:
        """int32 products of BASE x digit 0 + digit 1 with int8 codes [rows, dim]: [rows, n_q]
        when ``rows_first``, else [n_q, rows]; times ``token_scale`` they are the query's."""
        n = self.n_q
        if rows_first:
            out = torch._int_mm(codes, self.digits.T)  # [rows, 2 x n_q]
            return torch.add(out[:, n:], out[:, :n], alpha=BASE)  # exact in int32 (MAX_DIM)
        out = torch._int_mm(self.digits, codes.T)  # [2 x n_q, rows]
        return torch.add(out[n:], out[:n], alpha=BASE)

    def scaled_products(self, codes: torch.Tensor, scales: torch.Tensor, rows_first: bool) -> torch.Tensor:
        """float32 :meth:`products` times the codes' per-row ``scales``; each query token's column
        (row) is still to be multiplied by its ``token_scale`` (positive, so it can wait until
        after a max)."""
        return torch.mul(self.products(codes, rows_first), scales[:, None] if rows_first else scales[None, :])


def int4_levels(packed: torch.Tensor) -> torch.Tensor:
    """Packed 4-bit codes [rows, dim/2] (uint8; low nibble: dimension j, high: j + dim/2) ->
    their levels 0..15 as int8 [rows, dim]."""
    half = packed.shape[1]
    levels = torch.empty(packed.shape[0], 2 * half, dtype=torch.uint8)
    torch.bitwise_and(packed, 15, out=levels[:, :half])
    torch.bitwise_right_shift(packed, 4, out=levels[:, half:])
    return levels.view(torch.int8)
