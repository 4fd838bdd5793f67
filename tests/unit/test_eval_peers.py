"""Peer adapters' plumbing: child-process isolation, result round trip, rows in the bench."""
from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest

from xtrieve.eval import peers


def exact_peer(workdir, doc_vectors, queries, k, batch_size=32):
    """A stand-in peer: exact MaxSim, documents numbered by position."""
    hits = []
    for q in queries:
        scores = np.array([(q @ d.T).max(axis=1).sum() for d in doc_vectors])
        top = np.argsort(-scores)[:k]
        hits.append([(int(i), float(scores[i])) for i in top])
    return peers.PeerRun("fake", "0.0", hits, [0.001] * len(queries), 0.002, 0.5, 1234, {"x": 1})


@pytest.fixture
def vectors():
    rng = np.random.default_rng(0)
    docs = [rng.standard_normal((int(n), 8)).astype(np.float32) for n in rng.integers(1, 6, size=12)]
    queries = [rng.standard_normal((3, 8)).astype(np.float32) for _ in range(4)]
    return docs, queries


@pytest.fixture
def fake_installed(monkeypatch):
    monkeypatch.setattr(peers, "available", lambda: {name: None for name in peers.PEERS})
    monkeypatch.setitem(peers.RUNNERS, "fast-plaid", exact_peer)


def test_child_process_round_trip(tmp_path, vectors, fake_installed, monkeypatch):
    docs, queries = vectors

    def run_in_process(cmd, **kw):  # the child, run here so the fake runner is used
        assert cmd[1] == peers.__file__ or cmd[1].endswith("peers.py")
        peers._child(cmd[2:])
        return subprocess.CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(peers.subprocess, "run", run_in_process)
    run = peers.run_peer("fast-plaid", tmp_path, docs, queries, k=3)
    assert run.hits == exact_peer(tmp_path, docs, queries, 3).hits
    assert run.index_bytes == 1234 and run.peak_rss_mb > 0 and run.settings == {"x": 1}
    loaded = peers._load_vectors(tmp_path / "docs")
    assert all(np.array_equal(a, b) for a, b in zip(loaded, docs))


def test_crash_in_child_is_a_skip(tmp_path, vectors, fake_installed, monkeypatch):
    monkeypatch.setattr(peers.subprocess, "run", lambda cmd, **kw: subprocess.CompletedProcess(cmd, -11, "", ""))
    with pytest.raises(peers.PeerUnavailable, match=r"crashed \(SIGSEGV\)"):
        peers.run_peer("fast-plaid", tmp_path, *vectors, k=3)
    monkeypatch.setattr(peers.subprocess, "run",
                        lambda cmd, **kw: subprocess.CompletedProcess(cmd, 1, "", "Traceback\nImportError: libtorch"))
    with pytest.raises(peers.PeerUnavailable, match="ImportError: libtorch"):
        peers.run_peer("fast-plaid", tmp_path, *vectors, k=3)


def test_in_process_failure_is_a_skip(tmp_path, vectors, fake_installed, monkeypatch):
    def broken(*a, **kw):
        raise RuntimeError("bad shapes\nmore")

    monkeypatch.setitem(peers.RUNNERS, "xtr-warp", broken)
    with pytest.raises(peers.PeerUnavailable, match="xtr-warp failed: RuntimeError: bad shapes$"):
        peers.run_peer("xtr-warp", tmp_path, *vectors, k=3, isolate=False)


def test_real_child_reports_missing_peer(tmp_path, vectors):
    """The real child, run as a script with xtrieve made unimportable (as in a peers-only venv)."""
    import sys

    docs, queries = vectors
    peers._save_vectors(tmp_path / "docs", docs)
    peers._save_vectors(tmp_path / "queries", queries)
    out = tmp_path / "r.json"
    script = ("import runpy, sys; sys.modules['xtrieve'] = None; sys.argv = sys.argv[1:]; "
              "runpy.run_path(sys.argv[0], run_name='__main__')")
    proc = subprocess.run([sys.executable, "-c", script, peers.__file__, "pylate-plaid", str(tmp_path), "3", "2",
                           str(out)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "unavailable" in json.loads(out.read_text())


def test_other_interpreter_skips_local_check(tmp_path, vectors, monkeypatch):
    monkeypatch.setattr(peers, "available", lambda: {name: "not here" for name in peers.PEERS})
    seen = []

    def fake_run(cmd, **kw):
        seen.append(cmd[0])
        return subprocess.CompletedProcess(cmd, 1, "", "ModuleNotFoundError: No module named 'fast_plaid'")

    monkeypatch.setattr(peers.subprocess, "run", fake_run)
    with pytest.raises(peers.PeerUnavailable, match="not here"):
        peers.run_peer("fast-plaid", tmp_path, *vectors, k=3)
    with pytest.raises(peers.PeerUnavailable, match="No module named 'fast_plaid'"):
        peers.run_peer("fast-plaid", tmp_path, *vectors, k=3, python="/opt/peers/bin/python")
    assert seen == ["/opt/peers/bin/python"]
    with pytest.raises(peers.PeerUnavailable, match="cannot start"):
        monkeypatch.undo()
        peers.run_peer("fast-plaid", tmp_path, *vectors, k=3, python=str(tmp_path / "no-such-python"))
