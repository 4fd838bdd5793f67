"""Thread counts for small searches.

One query's FAISS probe, MaxSim rerank and query encoding are millisecond kernels. On idle
cores a second thread still pays (measured on 2 cores: -0.45 ms of 2.8 ms per scifact query),
but when other processes keep the cores busy, OpenMP threads that wait for a descheduled
partner make the same kernels 10x slower. So a small search uses as many threads as the
load average says are idle, and one when the machine is busy; the process-wide settings of
FAISS and torch come back when the last small search finishes.
"""
from __future__ import annotations

import contextlib
import os
import threading

import torch


def available_cores() -> int:
    """Cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def idle_cores() -> int:
    """Cores not taken by other work, from the 1-minute load average (at least 1).

    The caller's own running thread counts in the load, hence the +1.
    """
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):
        return 1
    n = available_cores()
    return max(1, min(n, int(n - load + 1)))


class _ThreadLimit:
    """A reference-counted limit on the process-wide thread settings of FAISS and torch."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depth = 0
        self._saved: tuple[int, int] | None = None

    @contextlib.contextmanager
    def limit(self, n: int):
        import faiss

        with self._lock:
            if self._depth == 0:
                self._saved = (faiss.omp_get_max_threads(), torch.get_num_threads())
                n = max(1, min(n, self._saved[1]))
                faiss.omp_set_num_threads(n)
                torch.set_num_threads(n)
            self._depth += 1
        try:
            yield
        finally:
            with self._lock:
                self._depth -= 1
                if self._depth == 0 and self._saved is not None:
                    faiss.omp_set_num_threads(self._saved[0])
                    torch.set_num_threads(self._saved[1])
                    self._saved = None


# the settings it guards are process-wide, so is the guard
_LIMIT = _ThreadLimit()


def small_work_threads(small: bool):
    """Context: for small work, FAISS and torch on the idle cores only (one when busy)."""
    return _LIMIT.limit(idle_cores()) if small else contextlib.nullcontext()
