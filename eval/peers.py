"""Peer engines run on the same token vectors as xtrieve, for ``xtrieve bench``.

Each adapter builds the peer's index from the document vectors xtrieve indexed, then
searches the same query vectors one at a time (latency) and all together (throughput).
Peers are optional (``pip install xtrieve[peers]``); one that is not importable, or
fails, is reported as skipped with the reason, never as a crash of the benchmark.

* fast-plaid (PLAID, Rust): ``search.FastPlaid(index, device).create / .search``
* xtr-warp-rs (WARP, Rust): ``XTRWarp(index).create / .load / .search``
* PyLate's PLAID index (which uses fast-plaid underneath in recent versions)
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

log = logging.getLogger(__name__)

PEERS = ("fast-plaid", "xtr-warp", "pylate-plaid")
_MODULES = {"fast-plaid": "fast_plaid", "xtr-warp": "xtr_warp", "pylate-plaid": "pylate"}


class PeerUnavailable(Exception):
    """The peer cannot run here (not installed, or it failed); the message says why."""


@dataclasses.dataclass
class PeerRun:
    """What one peer produced: per-query (doc number, score) lists and its timings."""

    name: str
    version: str | None
    hits: list[list[tuple[int, float]]]
    latencies_s: list[float]
    batch_s: float
    build_s: float
    index_bytes: int
    settings: dict[str, Any] = dataclasses.field(default_factory=dict)
    peak_rss_mb: float | None = None


def folder_bytes(path: str | Path) -> int:
    """Total size of the files under ``path``."""
    total = 0
    for dirpath, _, files in os.walk(path):
        for f in files:
            try:
                total += (Path(dirpath) / f).stat().st_size
            except OSError:
                pass
    return total


def available() -> dict[str, str | None]:
    """peer name -> None when importable, else why not."""
    out: dict[str, str | None] = {}
    for name, module in _MODULES.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except (ImportError, ValueError):
            found = False
        out[name] = None if found else f"{module} is not installed (pip install 'xtrieve[peers]')"
    return out


def _version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def normalize_hits(raw: Any) -> list[tuple[int, float]]:
    """One query's results in any of the peers' shapes -> [(doc number, score)], best first."""
    if raw is None:
        return []
    if hasattr(raw, "tolist") and not isinstance(raw, (list, tuple)):
        raw = raw.tolist()
    out = []
    for item in raw:
        if isinstance(item, dict):
            doc, score = item.get("id", item.get("doc_id")), item.get("score", 0.0)
        elif isinstance(item, (tuple, list)) and len(item) >= 2:
            doc, score = item[0], item[1]
        elif hasattr(item, "doc_id"):
            doc, score = item.doc_id, getattr(item, "score", 0.0)
        else:
            raise PeerUnavailable(f"unexpected result item {item!r}")
        out.append((int(doc), float(score)))
    return out


def _pad(queries: Sequence[np.ndarray]):
    """[n_q, max_len, dim] float32 tensor; zero rows add nothing to a MaxSim score."""
    import torch

    n = max(q.shape[0] for q in queries)
    out = torch.zeros((len(queries), n, queries[0].shape[1]), dtype=torch.float32)
    for i, q in enumerate(queries):
        out[i, : q.shape[0]] = torch.from_numpy(np.ascontiguousarray(q, dtype=np.float32))
    return out


def _time_searches(search_one: Callable[[np.ndarray], Any], search_many: Callable[[list[np.ndarray]], Any],
                   queries: Sequence[np.ndarray], batch_size: int) -> tuple[list[list[tuple[int, float]]], list[float], float]:
    search_one(queries[0])  # warm-up
    hits, latencies = [], []
    for q in queries:
        t0 = time.perf_counter()
        raw = search_one(q)
        latencies.append(time.perf_counter() - t0)
        hits.append(normalize_hits(raw[0]))
    t0 = time.perf_counter()
    for start in range(0, len(queries), batch_size):
        search_many(list(queries[start:start + batch_size]))
    return hits, latencies, time.perf_counter() - t0


def run_fast_plaid(workdir: Path, doc_vectors: Sequence[np.ndarray], queries: Sequence[np.ndarray], k: int,
                   batch_size: int = 32, n_ivf_probe: int | None = None, n_full_scores: int | None = None) -> PeerRun:
    try:
        import torch
        from fast_plaid import search as fp_search
    except ImportError as exc:
        raise PeerUnavailable(f"fast_plaid not importable ({exc})") from None
    path = workdir / "fast-plaid"
    t0 = time.perf_counter()
    fp = fp_search.FastPlaid(index=str(path), device="cpu")
    fp.create(documents_embeddings=[torch.from_numpy(np.ascontiguousarray(d, dtype=np.float32)) for d in doc_vectors])
    build_s = time.perf_counter() - t0
    kwargs: dict[str, Any] = {"top_k": k}
    if n_ivf_probe is not None:
        kwargs["n_ivf_probe"] = n_ivf_probe
    if n_full_scores is not None:
        kwargs["n_full_scores"] = n_full_scores

    def one(q):
        return fp.search(queries_embeddings=_pad([q]), **kwargs)

    def many(qs):
        return fp.search(queries_embeddings=_pad(qs), **kwargs)

    hits, latencies, batch_s = _time_searches(one, many, queries, batch_size)
    return PeerRun("fast-plaid", _version("fast-plaid"), hits, latencies, batch_s, build_s, folder_bytes(path),
                   {k_: v for k_, v in kwargs.items() if k_ != "top_k"})


def run_xtr_warp(workdir: Path, doc_vectors: Sequence[np.ndarray], queries: Sequence[np.ndarray], k: int,
                 batch_size: int = 32, num_threads: int = 1) -> PeerRun:
    try:
        import torch
        try:
            from xtr_warp.search import XTRWarp
        except ImportError:
            from xtr_warp import XTRWarp
    except ImportError as exc:
        raise PeerUnavailable(f"xtr_warp not importable ({exc})") from None
    path = workdir / "xtr-warp"
    t0 = time.perf_counter()
    xw = XTRWarp(index=str(path))
    xw.create([torch.from_numpy(np.ascontiguousarray(d, dtype=np.float32)) for d in doc_vectors], device="cpu")
    xw.load(device="cpu")
    build_s = time.perf_counter() - t0

    def one(q):
        return xw.search(_pad([q]), top_k=k, num_threads=num_threads)

    def many(qs):
        return xw.search(_pad(qs), top_k=k, num_threads=num_threads)

    hits, latencies, batch_s = _time_searches(one, many, queries, batch_size)
    return PeerRun("xtr-warp", _version("xtr-warp-rs"), hits, latencies, batch_s, build_s, folder_bytes(path),
                   {"num_threads": num_threads})


def run_pylate_plaid(workdir: Path, doc_vectors: Sequence[np.ndarray], queries: Sequence[np.ndarray], k: int,
                     batch_size: int = 32) -> PeerRun:
    try:
        from pylate import indexes, retrieve
    except Exception as exc:  # pylate pulls in many optional dependencies
        raise PeerUnavailable(f"pylate not importable ({type(exc).__name__}: {exc})") from None
    path = workdir / "pylate"
    t0 = time.perf_counter()
    index = indexes.PLAID(index_folder=str(path), index_name="bench", override=True)
    ids = [str(i) for i in range(len(doc_vectors))]
    index.add_documents(documents_ids=ids, documents_embeddings=[np.asarray(d, dtype=np.float32) for d in doc_vectors])
    retriever = retrieve.ColBERT(index=index)
    build_s = time.perf_counter() - t0

    def as_pairs(res):
        return [[(int(h["id"]), float(h["score"])) for h in one] for one in res]

    def one(q):
        return as_pairs(retriever.retrieve(queries_embeddings=[np.asarray(q, dtype=np.float32)], k=k))

    def many(qs):
        return retriever.retrieve(queries_embeddings=[np.asarray(q, dtype=np.float32) for q in qs], k=k)

    hits, latencies, batch_s = _time_searches(one, many, queries, batch_size)
    return PeerRun("pylate-plaid", _version("pylate"), hits, latencies, batch_s, build_s, folder_bytes(path))


RUNNERS: dict[str, Callable[..., PeerRun]] = {
    "fast-plaid": run_fast_plaid,
    "xtr-warp": run_xtr_warp,
    "pylate-plaid": run_pylate_plaid,
}


def run_peer(name: str, workdir: Path, doc_vectors: Sequence[np.ndarray], queries: Sequence[np.ndarray], k: int,
             batch_size: int = 32, isolate: bool = True, timeout_s: float | None = None,
             python: str | None = None) -> PeerRun:
    """Run one peer; :class:`PeerUnavailable` (with the reason) when it cannot run.

    ``isolate`` (default) runs the peer in a child process: the Rust peers ship wheels
    built against one exact torch version, and a mismatch segfaults instead of raising;
    in a child that is a skipped row, not a dead benchmark. The vectors go through .npy
    files in ``workdir``. The child's peak RSS is reported with its figures. ``python``
    runs the child with another interpreter (a venv holding the peers and the torch their
    wheels need); this file runs there as a script and needs only numpy and the peer.
    """
    if name not in RUNNERS:
        raise PeerUnavailable(f"unknown peer {name!r} (known: {', '.join(PEERS)})")
    reason = None if python else available().get(name)
    if reason:
        raise PeerUnavailable(reason)
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    if not isolate and not python:
        return _run_here(name, workdir, doc_vectors, queries, k, batch_size)
    _save_vectors(workdir / "docs", doc_vectors)
    _save_vectors(workdir / "queries", queries)
    out = workdir / f"{name}.result.json"
    out.unlink(missing_ok=True)
    cmd = [python or sys.executable, str(Path(__file__).resolve()), name, str(workdir), str(k), str(batch_size), str(out)]
    try:
        proc = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, timeout=timeout_s)
    except OSError as exc:
        raise PeerUnavailable(f"cannot start {cmd[0]}: {exc}") from None
    except subprocess.TimeoutExpired:
        raise PeerUnavailable(f"{name} did not finish within {timeout_s:.0f} s") from None
    if proc.returncode < 0:
        sig = signal.Signals(-proc.returncode).name if -proc.returncode in signal.Signals._value2member_map_ else proc.returncode
        raise PeerUnavailable(f"{name} crashed ({sig}); is its wheel built for this torch version?")
    if proc.returncode != 0 or not out.is_file():
        tail = [line for line in (proc.stderr or "").strip().splitlines() if line.strip()]
        raise PeerUnavailable(f"{name} failed: {tail[-1] if tail else f'exit status {proc.returncode}'}")
    data = json.loads(out.read_text(encoding="utf-8"))
    if "unavailable" in data:
        raise PeerUnavailable(data["unavailable"])
    data["hits"] = [[(int(d), float(s)) for d, s in one] for one in data["hits"]]
    return PeerRun(**data)


def _run_here(name: str, workdir: Path, doc_vectors, queries, k: int, batch_size: int) -> PeerRun:
    try:
        return RUNNERS[name](workdir, doc_vectors, queries, k, batch_size=batch_size)
    except PeerUnavailable:
        raise
    except Exception as exc:  # a peer's own failure must not end the benchmark
        log.warning("peer %s failed: %s: %s", name, type(exc).__name__, exc, exc_info=log.isEnabledFor(logging.DEBUG))
        raise PeerUnavailable(f"{name} failed: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}") from None


def _save_vectors(stem: Path, arrays: Sequence[np.ndarray]) -> None:
    offsets = np.zeros(len(arrays) + 1, dtype=np.int64)
    np.cumsum([a.shape[0] for a in arrays], out=offsets[1:])
    np.save(f"{stem}.offsets.npy", offsets)
    np.save(f"{stem}.vectors.npy", np.concatenate([np.asarray(a, dtype=np.float32) for a in arrays]))


def _load_vectors(stem: Path) -> list[np.ndarray]:
    offsets = np.load(f"{stem}.offsets.npy")
    flat = np.load(f"{stem}.vectors.npy", mmap_mode="r")
    return [np.asarray(flat[offsets[i]:offsets[i + 1]]) for i in range(len(offsets) - 1)]


def peak_rss_mb() -> float | None:
    """Peak resident set size of this process so far, in MiB (ru_maxrss); None where the
    platform has no ``resource`` module (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / (1024 * 1024) if sys.platform == "darwin" else rss / 1024


def _child(argv: list[str]) -> int:
    """``python peers.py NAME WORKDIR K BATCH OUT``: run one peer, write JSON (no xtrieve import)."""
    name, workdir, k, batch_size, out = argv[0], Path(argv[1]), int(argv[2]), int(argv[3]), Path(argv[4])
    docs, queries = _load_vectors(workdir / "docs"), _load_vectors(workdir / "queries")
    try:
        run = _run_here(name, workdir, docs, queries, k, batch_size)
    except PeerUnavailable as exc:
        out.write_text(json.dumps({"unavailable": str(exc)}), encoding="utf-8")
        return 0
    run.peak_rss_mb = peak_rss_mb()
    out.write_text(json.dumps(dataclasses.asdict(run)), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(_child(sys.argv[1:]))
