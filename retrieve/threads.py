"""Run small searches single-threaded.

One query's FAISS probe and MaxSim rerank are sub-millisecond kernels; with FAISS's and
torch's OpenMP pools both spinning on a few cores, a second thread costs far more than it
saves (10x slower under load, measured on 2 cores). While any small search runs, both
libraries use one thread; the previous settings come back when the last one finishes.
"""
from __future__ import annotations

import contextlib
import threading

import torch


class _SingleThreaded:
    """A reference-counted guard over the process-wide thread settings of FAISS and torch."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._saved: tuple[int, int] | None = None

    def __enter__(self) -> None:
        import faiss

        with self._lock:
            if self._depth == 0:
                self._saved = (faiss.omp_get_max_threads(), torch.get_num_threads())
                faiss.omp_set_num_threads(1)
                torch.set_num_threads(1)
            self._depth += 1

    def __exit__(self, *exc) -> None:
        import faiss

        with self._lock:
            self._depth -= 1
            if self._depth == 0 and self._saved is not None:
                faiss.omp_set_num_threads(self._saved[0])
                torch.set_num_threads(self._saved[1])
                self._saved = None


_GUARD = _SingleThreaded()


def single_threaded(enabled: bool):
    """Context: FAISS and torch on one thread inside the block when ``enabled``."""
    return _GUARD if enabled else contextlib.nullcontext()
