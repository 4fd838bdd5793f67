"""Post-hoc hierarchical pooling."""
import math

import numpy as np
import pytest

from xtrieve.encode.pooling import pool_document


@pytest.mark.parametrize("n, factor", [(10, 2), (11, 3), (7, 4), (1, 3), (50, 1)])
def test_pool_sizes_and_norms(n, factor):
    rng = np.random.default_rng(n)
    x = rng.standard_normal((n, 16)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    out = pool_document(x, factor)
    assert out.shape == (max(1, math.ceil(n / factor)) if factor > 1 else n, 16)
    assert np.allclose(np.linalg.norm(out, axis=1), 1, atol=1e-5)


def test_duplicates_merge_first():
    base = np.eye(4, dtype=np.float32)
    x = np.concatenate([base, base + 1e-3])
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    out = pool_document(x, 2)
    assert out.shape == (4, 4)
    assert np.allclose(np.sort(np.abs(out).max(axis=1)), 1, atol=1e-2)
