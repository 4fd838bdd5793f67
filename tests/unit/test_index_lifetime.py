"""An Index in a long-lived process: closed objects write nothing, and a search racing a
refresh leaves no searcher of the older snapshot behind (it would keep unlinked files open)."""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import xtrieve
from helpers import unit_token_docs

DIM = 8


@pytest.fixture
def built(tmp_path):
    rng = np.random.default_rng(0)
    docs = unit_token_docs(rng, 30, DIM, 2, 5)
    idx = xtrieve.Index.build_from_embeddings(tmp_path / "ix", [f"d{i}" for i in range(30)], docs,
                                              config={"docs_per_segment": 10})
    return idx, docs, rng


def test_writes_through_a_closed_index_are_refused_before_anything_is_written(built, tmp_path):
    idx, docs, _ = built
    idx.close()
    for write in (lambda: idx.add_embeddings(["new"], [docs[0]]), lambda: idx.delete(["d1"]),
                  lambda: idx.delete(filter="doc_id == 'd2'"), lambda: idx.compact()):
        with pytest.raises(xtrieve.InputError, match="is closed"):
            write()
    with xtrieve.Index.open(tmp_path / "ix") as fresh:
        assert fresh.snapshot.generation == 1 and len(fresh) == 30 and fresh.get("new") is None


def test_a_write_whose_index_is_closed_meanwhile_reports_its_commit(built, tmp_path):
    idx, docs, _ = built

    def embeddings():  # read inside the write, under the writer lock
        yield docs[0]
        idx.close()  # (as another thread of a service that shuts down would)

    assert idx.add_embeddings(["late"], embeddings()) == ["late"]
    with xtrieve.Index.open(tmp_path / "ix") as fresh:
        assert fresh.get("late") is not None


def test_a_search_racing_a_refresh_keeps_no_searcher_of_the_older_snapshot(built, tmp_path, monkeypatch):
    from xtrieve.retrieve import searcher as searcher_mod

    idx, docs, rng = built
    writer = xtrieve.Index.open(tmp_path / "ix")
    writer.add_embeddings(["x"], [docs[0]])
    idx.refresh()  # no searcher built for this snapshot yet
    writer.compact()  # a newer commit; the files idx's snapshot reads are unlinked
    slow = searcher_mod.Searcher.__init__

    def slow_init(self, *a, **kw):
        slow(self, *a, **kw)
        time.sleep(0.3)

    monkeypatch.setattr(searcher_mod.Searcher, "__init__", slow_init)
    t = threading.Thread(target=lambda: idx.search(docs[1], k=3))
    t.start()
    time.sleep(0.1)
    idx.refresh()
    t.join()
    assert idx._searcher is None or idx._searcher.snapshot is idx.snapshot
    assert idx.search(docs[1], k=1)[0].doc_id == "d1"


def test_a_write_racing_close_leaves_no_files_open_in_the_closed_index(built, tmp_path, monkeypatch):
    """The writer shares the Index's store: a write that the Index's close() overtakes must not
    open segments (and the IVF template) into the closed store, which nothing closes again."""
    import os

    from xtrieve.index import writer as writer_module

    idx, docs, _ = built
    started, go_on = threading.Event(), threading.Event()
    real = writer_module.WriteSession.add_embeddings

    def slow(self, *args, **kwargs):
        started.set()
        go_on.wait(10)
        return real(self, *args, **kwargs)

    monkeypatch.setattr(writer_module.WriteSession, "add_embeddings", slow)
    failed = []
    t = threading.Thread(target=lambda: failed.append(idx.add_embeddings(["new"], [docs[0]])))
    t.start()
    assert started.wait(10)
    idx.close()
    go_on.set()
    t.join()
    assert failed == [["new"]]  # the write committed
    assert not idx._store._cores
    root = str(tmp_path / "ix")
    held = [p for p in (os.path.realpath(f"/proc/self/fd/{f}") for f in os.listdir("/proc/self/fd")) if p.startswith(root)]
    assert [p for p in held if not p.endswith(".lock")] == []
    with xtrieve.Index.open(tmp_path / "ix") as fresh:
        assert fresh.get("new") is not None
