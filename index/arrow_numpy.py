"""NumPy <-> Arrow without ``to_numpy`` or ``pa.array``.

pyarrow's ``to_numpy``, and ``pa.array`` / ``take`` on a NumPy array, import pandas the
first time they run (~0.15-0.25 s, a tenth of a one-query CLI search); reading or wrapping
the buffers directly costs nothing and copies nothing.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa


def as_numpy(values: pa.Array | pa.ChunkedArray) -> np.ndarray:
    """A primitive array without nulls as NumPy: a zero-copy view of its data (a chunked
    array with several chunks is combined first), booleans unpacked into a new bool array."""
    if isinstance(values, pa.ChunkedArray):
        values = values.chunk(0) if values.num_chunks == 1 else values.combine_chunks()
    if values.null_count:
        raise ValueError(f"expected an Arrow array without nulls, got {values.null_count} nulls")
    buffer = values.buffers()[1]
    n, offset = len(values), values.offset
    if pa.types.is_boolean(values.type):
        bits = np.unpackbits(np.frombuffer(buffer, dtype=np.uint8) if n else np.zeros(0, np.uint8), bitorder="little")
        return bits[offset:offset + n].astype(bool)
    if not (pa.types.is_integer(values.type) or pa.types.is_floating(values.type)):
        raise TypeError(f"expected a numeric or boolean Arrow array, got {values.type}")
    dtype = np.dtype(values.type.to_pandas_dtype())
    if n == 0:
        return np.zeros(0, dtype=dtype)
    return np.frombuffer(buffer, dtype=dtype, count=n, offset=offset * dtype.itemsize)


def arrow_indices(indices: np.ndarray) -> pa.Array:
    """Row numbers as an Arrow int64 array for ``take``, wrapping (not copying) their buffer."""
    values = np.ascontiguousarray(indices, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(values), [None, pa.py_buffer(values)])
