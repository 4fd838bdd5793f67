"""Thread counts for searches and query encoding.

On idle cores a second thread pays (measured on 2 cores: -0.45 ms of 2.8 ms per scifact
query), but when other processes keep the cores busy, OpenMP threads that wait for a
descheduled partner make the same kernels 4-10x slower, small and large alike (exhaustive
MaxSim over scifact with one core busy elsewhere: 207 ms on 2 threads, 51 ms on 1). So search
work uses the cores that other processes left idle over the last fraction of a second (one
when the machine is busy); each thread's settings of FAISS and torch come back after its search.
"""
from __future__ import annotations

import contextlib
import os
import threading
import time

import torch

from xtrieve.faiss_loader import load_faiss

SAMPLE_S = 0.2


def available_cores() -> int:
    """Cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _system_busy_s() -> float | None:
    """CPU-seconds all processes have run since boot (Linux /proc/stat), None elsewhere."""
    try:
        with open("/proc/stat", "rb") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


def _self_busy_s() -> float:
    t = os.times()
    return t.user + t.system


class IdleCores:
    """Cores other processes left idle, sampled at most every ``sample_s`` seconds.

    Busy time of this process's own threads does not count against it. Without
    /proc/stat (or before the first full sample) it falls back to the load average.
    """

    def __init__(self, sample_s: float = SAMPLE_S) -> None:
        self.sample_s = sample_s
        self._lock = threading.Lock()
        self._last: tuple[float, float, float] | None = None
        self._value: int | None = None

    def __call__(self) -> int:
        now = time.monotonic()
        with self._lock:
            last = self._last
            if last is not None and self._value is not None and now - last[0] < self.sample_s:
                return self._value
            n = available_cores()
            busy = _system_busy_s()
            if busy is None:
                return _from_load_average(n)
            sample = (now, busy, _self_busy_s())
            if last is None:
                value = _from_load_average(n)
            else:
                others = max(0.0, (sample[1] - last[1]) - (sample[2] - last[2])) / (now - last[0])
                value = max(1, min(n, int(n - others + 0.5)))
            self._last, self._value = sample, value
            return value


def _from_load_average(n: int) -> int:
    try:
        load = os.getloadavg()[0]
    except (AttributeError, OSError):  # no load to read (Windows): every core, as torch would use
        return n
    return max(1, min(n, int(n - load + 1)))  # our own running thread counts in the load


class _ThreadLimit:
    """FAISS's and torch's thread counts lowered for a search and put back after it.

    OpenMP keeps the count per thread (and torch one that new threads start from), so each thread
    sets its own; every thread puts back the counts found when no search was running (the
    process's own setting, which caps the limit), not what it saw on entering: a thread that
    entered while another held the count at 1 would otherwise keep 1 for good."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._running = 0
        self._normal = (1, 1)
        self._local = threading.local()

    @contextlib.contextmanager
    def limit(self, n: int):
        faiss = load_faiss()
        local = self._local
        if getattr(local, "inside", False):  # nested in this thread: the outer limit holds
            yield
            return
        with self._lock:
            if self._running == 0:
                self._normal = (faiss.omp_get_max_threads(), torch.get_num_threads())
            self._running += 1
            normal = self._normal
        n = max(1, min(n, normal[1]))
        # setting what is already set still costs (~0.05 ms a search, torch re-applies it)
        if (faiss.omp_get_max_threads(), torch.get_num_threads()) != (n, n):
            faiss.omp_set_num_threads(n)
            torch.set_num_threads(n)
        local.inside = True
        try:
            yield
        finally:
            local.inside = False
            if (n, n) != normal:
                faiss.omp_set_num_threads(normal[0])
                torch.set_num_threads(normal[1])
            with self._lock:
                self._running -= 1


# what they watch and guard is process-wide, so are they
_IDLE = IdleCores()
_LIMIT = _ThreadLimit()


def idle_core_threads():
    """Context: FAISS and torch on the cores other processes leave idle (one when busy)."""
    return _LIMIT.limit(_IDLE())
