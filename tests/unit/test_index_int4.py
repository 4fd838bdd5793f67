"""int4 rerank vectors: 4-bit residual codes against the IVF centroids (or zero for Flat)."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pyarrow as pa
import pytest

import xtrieve
from helpers import unit_token_docs
from xtrieve.config import IndexConfig
from xtrieve.errors import ConfigError, IndexFormatError
from xtrieve.index.codecs import decode_int4, quantize_int4, unpack_int4
from xtrieve.index.segment import VECTORS

DIM = 16


def brute(query, vectors_by_doc):
    return np.array([(query @ d.T).max(axis=1).sum() for d in vectors_by_doc])


def test_codes_pack_two_dimensions_per_byte_and_reencode_to_themselves():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 8)).astype(np.float32)
    base = rng.standard_normal((50, 8)).astype(np.float32) * 0.5
    packed, scales = quantize_int4(x, base)
    assert packed.dtype == np.uint8 and packed.shape == (50, 4)
    levels = unpack_int4(packed)
    assert levels.max() <= 15 and ((levels == 0) | (levels == 15)).any(axis=1).all()  # extremes are used
    np.testing.assert_array_equal(levels[:, :4], packed & 0x0F)
    np.testing.assert_array_equal(levels[:, 4:], packed >> 4)
    y = decode_int4(packed, scales, base)
    # uniform 16 levels over [-max|r|, max|r|]: error at most half a step
    assert np.all(np.abs(y - x) <= scales[:, None] / 2 + 1e-6)
    again, scales2 = quantize_int4(y, base)
    np.testing.assert_array_equal(again, packed)
    np.testing.assert_allclose(scales2, scales, rtol=1e-6)
    with pytest.raises(ValueError, match="even"):
        quantize_int4(np.ones((2, 3), dtype=np.float32))


def test_flat_index_stores_int4_against_zero_and_searches_exactly(tmp_path):
    rng = np.random.default_rng(1)
    docs = unit_token_docs(rng, 40, DIM, 3, 10)
    idx = xtrieve.Index.build_from_embeddings(tmp_path / "ix", [f"d{i}" for i in range(40)], docs,
                                              config={"vector_storage": "int4"})
    assert idx.info().vector_storage == "int4" and idx.info().faiss == ["Flat"]
    seg = idx.snapshot.segments[0]
    assert seg.codec == "int4" and seg.vectors_raw.dtype == np.uint8 and seg.vectors_raw.shape[1] == DIM // 2
    assert seg.lists is None
    stored = [seg.doc_vectors(i) for i in range(40)]
    for d, s in zip(docs, stored):
        np.testing.assert_allclose(s, d, atol=0.08)
    q = docs[7][:4] + 0.1
    truth = brute(q, stored)
    hits = idx.search(q, k=5, exhaustive=True)
    assert [h.doc_id for h in hits] == [f"d{i}" for i in np.argsort(-truth, kind="stable")[:5]]
    np.testing.assert_allclose([h.score for h in hits], np.sort(truth)[::-1][:5], rtol=1e-4)


@pytest.fixture
def ivf_index(tmp_path):
    rng = np.random.default_rng(2)
    docs = unit_token_docs(rng, 300, DIM, 8, 12)
    cfg = IndexConfig(flat_max_vectors=800, nlist=16, docs_per_segment=100, merge_factor=10, vector_storage="int4")
    idx = xtrieve.Index.build_from_embeddings(tmp_path / "ix", [f"d{i}" for i in range(300)], docs, config=cfg)
    return idx, docs


def test_ivf_segments_store_residuals_against_their_centroids(ivf_index):
    idx, docs = ivf_index
    assert idx.info().faiss == ["IVF16,PQ8x4fs"] * 3
    seg = idx.snapshot.segments[0]
    assert seg.lists is not None and seg.lists.dtype == np.uint16 and seg.bases.shape == (16, DIM)
    # a vector is coded against one of its 3 nearest centroids, within half a step of it
    for i in range(100):
        rows = slice(int(seg.offsets[i]), int(seg.offsets[i + 1]))
        near = np.argsort(-(docs[i] @ seg.bases.T), axis=1)[:, :3]
        assert all(l in n for l, n in zip(seg.lists[rows], near))
        assert np.all(np.abs(seg.doc_vectors(i) - docs[i]).max(axis=1) <= seg.scales[rows] / 2 + 1e-3)  # + float16 input
    # exhaustive (centroid scores computed here) and fast path (centroid scores from the probe) agree
    q = docs[42][:5]
    stored = [s.doc_vectors(i) for s in idx.snapshot.segments for i in range(s.n_docs)]
    truth = brute(q, stored)
    exact = idx.search(q, k=10, exhaustive=True)
    assert [h.doc_id for h in exact] == [f"d{i}" for i in np.argsort(-truth, kind="stable")[:10]]
    fast = idx.search(q, k=10, config={"k_prime": 200, "n_rerank": 100, "nprobe": 16})
    assert fast[0].doc_id == "d42"
    got = {h.doc_id: h.score for h in fast}
    for h in exact:
        if h.doc_id in got:
            assert got[h.doc_id] == pytest.approx(h.score, rel=1e-5)


def test_compact_keeps_int4_codes_and_scales(ivf_index, tmp_path):
    """A rewrite copies the stored codes, scales and lists as they are, however many compactions
    (re-encoding decoded vectors moved a scale by a float32 step; through float16 they crept up)."""
    idx, _ = ivf_index

    def stored(index):
        out = {}
        for s in index.snapshot.segments:
            for i in range(s.n_docs):
                rows = slice(int(s.offsets[i]), int(s.offsets[i + 1]))
                out[s.doc_ids[i]] = (np.asarray(s.vectors_raw[rows]).copy(), s.scales[rows].copy(), s.doc_vectors(i))
        return out

    before = stored(idx)
    for _ in range(5):
        idx.compact()
    idx = xtrieve.Index.open(tmp_path / "ix")
    assert idx.info().generation == 6 and all(seg.codec == "int4" for seg in idx.snapshot.segments)
    for doc_id, (codes, scales, vectors) in stored(idx).items():
        assert np.array_equal(codes, before[doc_id][0])
        assert np.array_equal(scales, before[doc_id][1]) and np.array_equal(vectors, before[doc_id][2])


def test_odd_dimension_and_bad_files_are_clear_errors(ivf_index, tmp_path):
    rng = np.random.default_rng(3)
    with pytest.raises(ConfigError, match="even"):
        xtrieve.Index.build_from_embeddings(tmp_path / "odd", ["a"], [rng.standard_normal((3, 7)).astype(np.float32)],
                                            config={"vector_storage": "int4"})
    assert not (tmp_path / "odd").exists()
    with pytest.raises(ConfigError, match="vector_storage"):
        IndexConfig(vector_storage="int3")
    # a vectors.arrow whose list column is signed is a format error, not a wrong answer
    root = tmp_path / "ix"
    seg_dir = root / "seg-000001"
    table = pa.ipc.open_file(pa.memory_map(str(seg_dir / VECTORS))).read_all()
    broken = table.set_column(2, "list", table.column("list").cast(pa.int32()))
    copy = tmp_path / "copy"
    shutil.copytree(root, copy)
    with pa.OSFile(str(copy / "seg-000001" / VECTORS), "wb") as sink, pa.ipc.new_file(sink, broken.schema) as w:
        w.write_table(broken)
    manifest = json.loads((copy / "manifest.json").read_text())
    assert manifest["segments"][0]["name"] == "seg-000001"
    with pytest.raises(IndexFormatError):
        xtrieve.Index.open(copy).search(np.ones((2, DIM), dtype=np.float32), k=1, exhaustive=True)


@pytest.mark.parametrize("factory", ["PCA8,IVF2,Flat", "PCA8,IVF2,Flat,RFlat"])
def test_int4_refuses_a_transform_before_ivf_before_committing(tmp_path, factory):
    rng = np.random.default_rng(3)
    docs = unit_token_docs(rng, 20, DIM, 3, 6)
    with pytest.raises(ConfigError, match=rf"{factory!r}.*int4"):
        xtrieve.Index.build_from_embeddings(tmp_path / "ix", [f"d{i}" for i in range(20)], docs,
                                            config={"vector_storage": "int4", "faiss_factory": factory})
    assert not (tmp_path / "ix" / "manifest.json").exists()


@pytest.mark.parametrize("factory", ["PCA8,Flat", "IVF2,Flat", "RR16,IVF2,Flat"])
def test_int4_with_a_transform_and_no_ivf_or_plain_ivf_builds(tmp_path, factory):
    """(a rotation keeps the dimension: residuals against its IVF centroids still decode)"""
    rng = np.random.default_rng(4)
    docs = unit_token_docs(rng, 20, DIM, 3, 6)
    idx = xtrieve.Index.build_from_embeddings(tmp_path / "ix", [f"d{i}" for i in range(20)], docs,
                                              config={"vector_storage": "int4", "faiss_factory": factory})
    assert idx.info().faiss == [factory] and len(idx.search(docs[0], k=3)) == 3
    best = idx.search(docs[0], k=1, exhaustive=True)[0]  # unit vectors: MaxSim with itself is n_q
    assert best.doc_id == "d0" and best.score == pytest.approx(len(docs[0]), rel=0.05)
