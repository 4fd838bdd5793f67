"""int8 code products through query digits (retrieve/int8_products.py) against float32."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from xtrieve.retrieve import int8_products
from xtrieve.retrieve.int8_products import BASE, MAX_DIM, QueryDigits
from xtrieve.retrieve.maxsim import WIDE_QUERY_TOKENS, Gathered, chunk_maxsim

needs_int8 = pytest.mark.skipif(not int8_products.available(128), reason="no VNNI int8 products on this CPU/torch")


def test_digits_hold_the_query_to_a_64516th_of_each_tokens_largest_value():
    rng = np.random.default_rng(0)
    q = rng.standard_normal((9, 96)).astype(np.float32)
    q[3] = 0.0  # a zero token must not divide by zero
    q[5] *= 1e-6
    d = QueryDigits(torch.from_numpy(q))
    assert d.digits.dtype is torch.int8 and d.digits.shape == (18, 96)
    unit = d.token_scale * BASE
    rebuilt = unit[:, None] * (d.digits[:9].numpy() + d.digits[9:].numpy() / BASE)
    largest = np.abs(q).max(axis=1, keepdims=True)
    assert np.all(np.abs(rebuilt - q) <= largest / (2 * 127 * BASE) * 1.001 + 1e-30)
    assert np.all(rebuilt[3] == 0.0)


@needs_int8
def test_a_dimension_whose_products_come_out_wrong_takes_the_float32_path():
    # torch 2.13's int8 products return garbage when the inner dimension is 1
    a = torch.tensor([[3], [-2]], dtype=torch.int8)
    assert int8_products.available(1) == bool(torch.equal(torch._int_mm(a, a.T), a.int() @ a.int().T))


def test_dimensions_past_the_int32_bound_take_the_float32_path():
    assert MAX_DIM * (BASE + 1) * 127 * 127 <= 2**31 - 1
    assert not int8_products.available(MAX_DIM + 1)


@needs_int8
@pytest.mark.parametrize("rows_first", [True, False])
def test_products_equal_float32_ones_in_both_layouts(rows_first):
    rng = np.random.default_rng(1)
    codes = torch.from_numpy(rng.integers(-127, 128, (301, 100)).astype(np.int8))
    scales = torch.from_numpy(rng.uniform(0.001, 0.01, 301).astype(np.float32))
    q = torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal((7, 100)).astype(np.float32)), dim=1)
    d = QueryDigits(q)
    got = d.scaled_products(codes, scales, rows_first).numpy()
    got = got * (d.token_scale[None, :] if rows_first else d.token_scale[:, None])
    vectors = codes.float() * scales[:, None]
    want = (q @ vectors.T).numpy()
    # each value within half a second-digit step: |error| <= |step / 2| x sqrt(dim) x |v|, + rounding
    step = q.abs().amax(dim=1).numpy() / (127 * BASE)
    bound = (step[:, None] / 2) * np.sqrt(100) * vectors.norm(dim=1).numpy()[None, :] + 1e-6
    assert np.all(np.abs((got.T if rows_first else got) - want) <= bound)


@needs_int8
def test_int8_maxsim_matches_the_widened_codes_for_short_and_long_queries(monkeypatch):
    rng = np.random.default_rng(2)
    lengths = np.array([3, 0, 7, 1, 12, 40])
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    codes = torch.from_numpy(rng.integers(-127, 128, (int(bounds[-1]), 128)).astype(np.int8))
    scales = torch.from_numpy(rng.uniform(0.001, 0.01, int(bounds[-1])).astype(np.float32))
    stored = Gathered(codes, scales, None, bounds)
    for n_q in (WIDE_QUERY_TOKENS - 1, WIDE_QUERY_TOKENS + 11):
        q = torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal((n_q, 128)).astype(np.float32)), dim=1)
        got = chunk_maxsim(q, stored, per_token=True)
        want = chunk_maxsim(q, stored.widened(), per_token=True)  # float32 codes: the widening path
        assert np.all(np.isneginf(got[:, 1])) and np.all(np.isneginf(want[:, 1]))
        keep = np.isfinite(want)
        assert np.allclose(got[keep], want[keep], rtol=0, atol=5e-5)
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)
    assert not int8_products.available(128)


@needs_int8
@pytest.mark.parametrize("with_bases", [True, False])
def test_int4_maxsim_on_the_integer_units_matches_the_widened_residuals(with_bases):
    from xtrieve.index.codecs import quantize_int4

    rng = np.random.default_rng(3)
    lengths = np.array([5, 0, 9, 1, 30])
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    rows = int(bounds[-1])
    vectors = rng.standard_normal((rows, 64)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    centroids = rng.standard_normal((6, 64)).astype(np.float32) * 0.3
    lists = rng.integers(0, 6, rows)
    packed, scales = quantize_int4(vectors, centroids[lists] if with_bases else None)
    stored = Gathered(torch.from_numpy(packed), torch.from_numpy(scales),
                      torch.from_numpy(lists.astype(np.int64)) if with_bases else None, bounds, int4=True)
    for n_q in (WIDE_QUERY_TOKENS - 1, WIDE_QUERY_TOKENS + 5):
        q = torch.nn.functional.normalize(torch.from_numpy(rng.standard_normal((n_q, 64)).astype(np.float32)), dim=1)
        base_sims = torch.from_numpy(centroids) @ q.T if with_bases else None
        got = chunk_maxsim(q, stored, base_sims, per_token=True)
        want = chunk_maxsim(q, stored.widened(), base_sims, per_token=True)  # float32 codes: the widening path
        assert np.all(np.isneginf(got[:, 1]))
        keep = np.isfinite(want)
        assert np.allclose(got[keep], want[keep], rtol=0, atol=5e-5)
