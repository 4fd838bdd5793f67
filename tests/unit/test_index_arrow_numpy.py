"""index.arrow_numpy: NumPy views of Arrow arrays, equal to pyarrow's to_numpy; row numbers
for take; filter literals; a search, filtered too, that never imports pandas."""
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from xtrieve.index.arrow_numpy import arrow_indices, arrow_literals, as_numpy


@pytest.mark.parametrize("array", [
    pa.array(np.arange(10, dtype=np.int32)).slice(3, 5),
    pa.array(np.linspace(0, 1, 7).astype(np.float16)),
    pa.array(np.arange(9, dtype=np.uint8)).slice(1),
    pa.array([True, False, True, True, False] * 3).slice(2, 11),
    pa.array([], type=pa.int64()),
    pa.array([], type=pa.bool_()),
])
def test_same_values_as_to_numpy(array):
    ours = as_numpy(array)
    assert ours.dtype == array.to_numpy(zero_copy_only=False).dtype
    assert np.array_equal(ours, array.to_numpy(zero_copy_only=False))


def test_views_without_copying_and_combines_chunks():
    array = pa.array(np.arange(6, dtype=np.int64))
    assert np.shares_memory(as_numpy(array), np.frombuffer(array.buffers()[1], dtype=np.int64))
    chunked = pa.chunked_array([pa.array([1, 2]), pa.array([3])])
    assert as_numpy(chunked).tolist() == [1, 2, 3]


def test_refuses_nulls_and_other_types():
    with pytest.raises(ValueError, match="nulls"):
        as_numpy(pa.array([1, None, 3]))
    with pytest.raises(TypeError, match="string"):
        as_numpy(pa.array(["a", "b"]))


@pytest.mark.parametrize("values", [[True, False, True], [3, -2**63, 2**63 - 1], [1.5, -0.0], [2020, 2021.5],
                                    ["en", "", "ünï"]])
def test_arrow_literals_equal_pa_array(values):
    built = arrow_literals(values)
    assert built.to_pylist() == values and built.equals(pa.array(values, type=built.type))


@pytest.mark.parametrize("values", [["a", 1], [True, 1], [2**64], [None], []])
def test_arrow_literals_refuse_a_mix_or_the_unrepresentable(values):
    with pytest.raises(TypeError):
        arrow_literals(values)


def test_arrow_indices_take_like_numpy():
    table = pa.table({"n": np.arange(10) * 3, "s": [f"r{i}" for i in range(10)]})
    rows = np.array([7, 0, 7, 2], dtype=np.int32)[::2]  # strided, another dtype
    assert table.take(arrow_indices(rows)).to_pylist() == table.take(pa.array(rows)).to_pylist()
    assert len(arrow_indices(np.zeros(0, dtype=np.int64))) == 0


def test_open_and_search_with_a_filter_without_importing_pandas(tmp_path):
    import xtrieve

    rng = np.random.default_rng(0)
    vecs = [rng.standard_normal((5, 16)).astype(np.float32) for _ in range(30)]
    xtrieve.Index.build_from_embeddings(tmp_path / "idx", [f"d{i}" for i in range(30)], vecs,
                                        metadata=[{"year": 2000 + i} for i in range(30)])
    code = ("import sys, numpy as np, xtrieve; idx = xtrieve.Index.open(sys.argv[1]); "
            "hits = idx.search(np.ones((3, 16), dtype=np.float32), k=5); "
            "assert len(hits) == 5 and 'year' in hits[0].metadata; "
            "assert idx.search(np.ones((3, 16), dtype=np.float32), k=50, exhaustive=True)[0] == hits[0]; "
            "kept = idx.search(np.ones((3, 16), dtype=np.float32), k=50, filter=\"year >= 2020 or year in (2001, 2002)\"); "
            "assert sorted(h.metadata['year'] for h in kept) == [2001, 2002] + list(range(2020, 2030)); "
            "print('pandas' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, str(tmp_path / "idx")], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
