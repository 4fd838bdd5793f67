"""NumPy and Python values <-> Arrow without ``to_numpy``, ``pa.array`` or ``pa.scalar``.

pyarrow's ``to_numpy``, ``pa.array`` and ``pa.scalar`` (from NumPy or Python values) import
pandas the first time they run (~0.15-0.25 s, a tenth of a one-query CLI search); reading or
wrapping the buffers directly costs nothing and copies nothing.
"""
from __future__ import annotations

import numpy as np
import pyarrow as pa

_NUMPY_TYPES = {getattr(pa, name)(): np.dtype(name) for name in (
    "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64", "float16", "float32", "float64")}


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
    dtype = np.dtype(_NUMPY_TYPES[values.type])  # (not to_pandas_dtype: pyarrow < 26 imports pandas for it)
    if n == 0:
        return np.zeros(0, dtype=dtype)
    return np.frombuffer(buffer, dtype=dtype, count=n, offset=offset * dtype.itemsize)


def arrow_indices(indices: np.ndarray) -> pa.Array:
    """Row numbers as an Arrow int64 array for ``take``, wrapping (not copying) their buffer."""
    values = np.ascontiguousarray(indices, dtype=np.int64)
    return pa.Array.from_buffers(pa.int64(), len(values), [None, pa.py_buffer(values)])


def arrow_literals(values: list) -> pa.Array:
    """Python literals of one kind (bools, numbers, or strings) as an Arrow array built from
    buffers: bool, int64, float64 (ints mixed with floats become floats) or string; TypeError
    for a mix of kinds or an int beyond int64."""
    kinds = {_literal_kind(v) for v in values}
    if not kinds:
        raise TypeError("no values")
    if kinds == {bool}:
        bits = np.packbits(np.array(values, dtype=bool), bitorder="little")
        return pa.Array.from_buffers(pa.bool_(), len(values), [None, pa.py_buffer(bits)])
    if kinds == {int}:
        try:
            data = np.array(values, dtype=np.int64)
        except OverflowError:
            raise TypeError("an integer beyond 64 bits") from None
        return pa.Array.from_buffers(pa.int64(), len(values), [None, pa.py_buffer(data)])
    if kinds in ({float}, {int, float}):
        data = np.array(values, dtype=np.float64)
        return pa.Array.from_buffers(pa.float64(), len(values), [None, pa.py_buffer(data)])
    if kinds == {str}:
        encoded = [v.encode("utf-8") for v in values]
        offsets = np.zeros(len(encoded) + 1, dtype=np.int32)
        np.cumsum([len(b) for b in encoded], out=offsets[1:])
        return pa.Array.from_buffers(pa.string(), len(values),
                                     [None, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))])
    raise TypeError(f"values of different kinds: {', '.join(sorted(k.__name__ for k in kinds))}")


def _literal_kind(value: object) -> type:
    """bool, int, float or str for a literal of that kind (subclasses included); else its type."""
    if isinstance(value, bool):
        return bool
    return next((kind for kind in (int, float, str) if isinstance(value, kind)), type(value))
