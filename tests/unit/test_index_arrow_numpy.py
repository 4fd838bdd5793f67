"""index.arrow_numpy: NumPy views of Arrow arrays, equal to pyarrow's to_numpy."""
import numpy as np
import pyarrow as pa
import pytest

from xtrieve.index.arrow_numpy import as_numpy


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
