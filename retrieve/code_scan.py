"""Token retrieval over a Flat segment from its stored rerank codes.

A segment small enough for an exact FAISS ``IndexFlatIP`` (``IndexConfig.flat_max_vectors``)
is scanned whole by every query token. FAISS reads float32 vectors (512 B per 128-d vector,
decoded from the stored codes when the segment is read), and that read is what a scan costs:
a 41,588-vector segment took ~5 ms per 21-token query. The segment's int8 (or base-free int4)
rerank codes hold the same vectors in a quarter (an eighth) of the bytes, and the CPU's integer
units multiply them (``int8_products``): the same top k' per query token, to int8's rounding,
in a fraction of the time. int4 codes rank by their 4-bit similarities, as the rerank scores them (a top 50 shares
~87% with FAISS's float32 one, against ~99% for int8). Where the codes do not take integer
products (float16 storage, no VNNI, int4 residuals against IVF centroids), or a filter lets
through less than SCAN_MIN_ALLOWED of the vectors, FAISS scans as before.
"""
from __future__ import annotations

import numpy as np
import torch

from xtrieve.retrieve import int8_products
from xtrieve.retrieve.maxsim import SegmentVectors, int4_level_products, takes_integer_products

# similarities per block of the scan (query tokens x rows): 16 MiB of float32
BLOCK_SIMILARITIES = 1 << 22
MIN_BLOCK_ROWS = 4096
# the scan scores every row and masks the rest; FAISS's selector visits only the allowed ones, and
# takes less time below about this share of them (measured: 2.4x the scan's time for all rows)
SCAN_MIN_ALLOWED = 0.4


def scans_codes(vectors: SegmentVectors, allowed_share: float = 1.0) -> bool:
    """Whether :func:`top_rows` serves this segment (codes on the integer units, no IVF bases),
    a filter or deletes letting through ``allowed_share`` of its vectors."""
    return (allowed_share >= SCAN_MIN_ALLOWED and vectors.lists is None and vectors.scales is not None
            and takes_integer_products(vectors.codes, vectors.int4))


def top_rows(vectors: SegmentVectors, queries: np.ndarray, k: int,
             allowed_rows: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Each query vector's ``k`` most similar stored vectors [n, k], best first, as FAISS's
    search returns them: (similarities, vector rows), -inf and -1 past the rows there are (or
    that ``allowed_rows``, a bool mask over the rows, lets through)."""
    n, total = len(queries), int(vectors.codes.shape[0])
    dist = np.full((n, k), -np.inf, dtype=np.float32)
    ids = np.full((n, k), -1, dtype=np.int64)
    if n == 0 or total == 0 or k <= 0:
        return dist, ids
    digits = int8_products.QueryDigits(torch.from_numpy(queries))
    mask = None if allowed_rows is None else torch.from_numpy(~np.asarray(allowed_rows, dtype=bool))
    step = max(MIN_BLOCK_ROWS, BLOCK_SIMILARITIES // n)
    best_values, best_rows = [], []
    for start in range(0, total, step):
        stop = min(total, start + step)
        codes = vectors.codes[start:stop]
        if vectors.int4:
            sims = int4_level_products(digits, codes, False)
            sims *= vectors.scales[None, start:stop]
        else:
            sims = digits.scaled_products(codes, vectors.scales[start:stop], False)  # [n, rows]
        if mask is not None:
            sims.masked_fill_(mask[None, start:stop], -torch.inf)
        top = torch.topk(sims, min(k, stop - start), dim=1)
        best_values.append(top.values)
        best_rows.append(top.indices + start)
    values, rows = torch.cat(best_values, dim=1), torch.cat(best_rows, dim=1)
    if len(best_values) > 1:
        top = torch.topk(values, min(k, values.shape[1]), dim=1)
        values, rows = top.values, torch.gather(rows, 1, top.indices)
    width = values.shape[1]
    # the products are in units of each query token's digits: its scale (positive) restores them
    dist[:, :width] = values.numpy() * digits.token_scale[:, None]
    ids[:, :width] = np.where(np.isneginf(dist[:, :width]), -1, rows.numpy())
    return dist, ids
