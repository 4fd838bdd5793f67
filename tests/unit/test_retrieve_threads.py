"""Thread policy for searches (the cores other processes leave idle), and FAISS imported after torch."""
from __future__ import annotations

import subprocess
import sys

import torch

from xtrieve.retrieve import threads


def test_idle_cores_is_within_bounds(monkeypatch):
    idle = threads.IdleCores(sample_s=0.0)
    for _ in range(3):
        assert 1 <= idle() <= threads.available_cores()
    monkeypatch.setattr(threads, "_system_busy_s", lambda: None)  # no /proc/stat: load average
    assert 1 <= threads.IdleCores()() <= threads.available_cores()


def test_other_processes_busy_time_lowers_the_count(monkeypatch):
    clock = iter([0.0, 1.0])
    busy = iter([100.0, 102.0])  # two cores busy for the whole second...
    own = iter([5.0, 5.0])  # ...none of it ours
    monkeypatch.setattr(threads.time, "monotonic", lambda: next(clock))
    monkeypatch.setattr(threads, "_system_busy_s", lambda: next(busy))
    monkeypatch.setattr(threads, "_self_busy_s", lambda: next(own))
    monkeypatch.setattr(threads, "available_cores", lambda: 4)
    idle = threads.IdleCores(sample_s=0.5)
    idle()
    assert idle() == 2


def test_without_any_load_figure_every_core_is_used(monkeypatch):
    """Windows has neither /proc/stat nor a load average: searches ran on one thread there."""
    monkeypatch.setattr(threads, "_system_busy_s", lambda: None)
    monkeypatch.delattr(threads.os, "getloadavg", raising=False)
    monkeypatch.setattr(threads, "available_cores", lambda: 4)
    assert threads.IdleCores(sample_s=0.0)() == 4


def test_limit_restores_settings():
    before = torch.get_num_threads()
    with threads.idle_core_threads():
        assert torch.get_num_threads() <= before
        with threads.idle_core_threads():
            pass
    assert torch.get_num_threads() == before


def test_faiss_before_torch_is_warned():
    code = "import faiss\nfrom xtrieve.faiss_loader import load_faiss\nload_faiss()\n"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "faiss was imported before torch" in proc.stderr
    proc = subprocess.run([sys.executable, "-c", "from xtrieve.faiss_loader import load_faiss\nload_faiss()\n"],
                          capture_output=True, text=True, timeout=120)
    assert "imported before torch" not in proc.stderr


def test_each_thread_gets_the_normal_counts_back_whatever_the_order():
    import threading

    from xtrieve.faiss_loader import load_faiss

    faiss, limit = load_faiss(), threads._ThreadLimit()
    entered, left = threading.Event(), threading.Event()
    after = {}

    def counts():
        return faiss.omp_get_max_threads(), torch.get_num_threads()

    normal = counts()  # what no search holds (a thread started while one does starts from its count)

    def first():  # enters first, leaves first
        with limit.limit(1):
            entered.set()
            left.wait(30)
        after["first"] = counts()
        with limit.limit(99):
            after["first again"] = counts()

    def second():  # enters while the first holds 1, leaves last
        entered.wait(30)
        with limit.limit(1):
            left.set()
            worker.join(30)
        after["second"] = counts()

    worker = threading.Thread(target=first)
    other = threading.Thread(target=second)
    worker.start(), other.start()
    other.join(30)
    assert after == {"first": normal, "first again": normal, "second": normal}  # nobody is left at one thread
