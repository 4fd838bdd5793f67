"""``xtrieve bench``: quality vs latency of the fast path, exhaustive MaxSim and peers.

One run encodes the corpus once (timed), indexes those vectors (timed), then searches the
same query vectors with: exhaustive MaxSim (the ground truth), the fast path over a grid
of SearchConfig settings, and each installed peer on the very same vectors. For every
system it reports nDCG@10, Recall@100, MAP@100, MRR@10, agreement with the exhaustive
top-10, p50/p95 latency of single-query calls, queries/s single and batched, index bytes
and bytes/vector. Latencies here exclude query encoding (queries are encoded once, up
front, and every system gets the same arrays); ``xtrieve eval`` measures end to end.
"""
from __future__ import annotations

import dataclasses
import itertools
import json
import logging
import os
import platform
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from xtrieve.config import IndexConfig, SearchConfig
from xtrieve.eval import peers as peers_mod
from xtrieve.eval.beir_data import resolve_dataset, searchable
from xtrieve.eval.metrics import Results, agreement, drop_identical_ids, evaluate, hits_to_results, latency_summary, top_k
from xtrieve.eval.peers import peak_rss_mb

log = logging.getLogger(__name__)

GRIDS: dict[str, list[tuple[int, int]]] = {
    "small": [(16, 32), (32, 32), (64, 64), (96, 64), (128, 128)],
    "full": list(itertools.product((16, 32, 64, 96, 128), (16, 32, 64, 128))),
}
BENCH_INDEX_CONFIG = IndexConfig(store_text=False)
DEFAULT_K = 100
BATCH_QUERIES = 32
# queries encoded one at a time (as a text search does) to time single-query encoding
SINGLE_ENCODE_QUERIES = 100


@dataclasses.dataclass
class Row:
    """One system's figures."""

    system: str
    settings: dict[str, Any]
    metrics: dict[str, float]
    latency: dict[str, float]
    qps_batch: float
    build_s: float | None
    index_bytes: int | None
    n_vectors: int | None
    peak_rss_mb: float | None = None

    def to_dict(self) -> dict[str, Any]:
        m, lat = self.metrics, self.latency
        return {
            "system": self.system, **{f"{k}": v for k, v in self.settings.items()},
            "ndcg@10": m.get("ndcg@10"), "recall@100": m.get("recall@100"), "map@100": m.get("map@100"),
            "mrr@10": m.get("mrr@10"), "agree@10": m.get("agree@10"),
            "p50_ms": _round(lat.get("p50_ms")), "p95_ms": _round(lat.get("p95_ms")),
            "qps_single": _round(lat.get("qps_single")), "qps_batch": _round(self.qps_batch),
            "build_s": _round(self.build_s), "index_bytes": self.index_bytes,
            "bytes_per_vector": _round(self.index_bytes / self.n_vectors) if self.index_bytes and self.n_vectors else None,
            "peak_rss_mb": _round(self.peak_rss_mb, 1),
        }


def _round(x: float | None, nd: int = 3) -> float | None:
    if x is None or not np.isfinite(x):
        return None
    return round(float(x), nd)


def grid_configs(grid: str | Sequence[tuple[int, int]], base: SearchConfig | None = None) -> list[SearchConfig]:
    """SearchConfigs for a named grid ('small'/'full') or explicit (k_prime, n_rerank) pairs."""
    from xtrieve.errors import InputError

    base = base or SearchConfig()
    if isinstance(grid, str):
        if grid not in GRIDS:
            raise InputError(f"unknown grid {grid!r} (known: {', '.join(GRIDS)})")
        grid = GRIDS[grid]
    return [base.replace(k_prime=int(kp), n_rerank=int(nr)) for kp, nr in grid]


def _score(qids: Sequence[str], hits_lists: Sequence[Any], qrels, k: int, ignore_identical: bool,
           reference: Results | None) -> tuple[Results, dict[str, float]]:
    results = hits_to_results(qids, hits_lists)
    if ignore_identical:
        results, _ = drop_identical_ids(results)
    results = top_k(results, k)
    metrics = evaluate(qrels, results, k_values=(10, 100), mrr_k=(10,))
    metrics["agree@10"] = agreement(results, reference, 10) if reference is not None else 1.0
    return results, metrics


def _time_index(idx: Any, qs: Sequence[np.ndarray], ask: int, exhaustive: bool, config: SearchConfig | None,
                batch_queries: int, progress: bool | None, label: str) -> tuple[list[Any], list[float], float]:
    from tqdm.auto import tqdm

    idx.search(qs[0], k=ask, exhaustive=exhaustive, config=config)  # warm-up
    hits, latencies = [], []
    for q in tqdm(qs, desc=label, disable=None if progress is None else not progress, leave=False):
        t0 = time.perf_counter()
        hits.append(idx.search(q, k=ask, exhaustive=exhaustive, config=config))
        latencies.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    for start in range(0, len(qs), batch_queries):
        idx.search_batch(list(qs[start:start + batch_queries]), k=ask, exhaustive=exhaustive, config=config)
    return hits, latencies, time.perf_counter() - t0


def run_bench(data_dir: str | Path | None = None, dataset: str | None = None, split: str = "test",
              model: str | None = None, grid: str | Sequence[tuple[int, int]] = "small",
              max_queries: int | None = None, k: int = DEFAULT_K, base_config: SearchConfig | None = None,
              peers: Sequence[str] | None = peers_mod.PEERS, index_config: IndexConfig | None = None,
              batch_queries: int = BATCH_QUERIES, workdir: str | Path | None = None, cache: str | Path | None = None,
              ignore_identical_ids: bool = True, progress: bool | None = None,
              peers_python: str | None = None) -> dict[str, Any]:
    """Run the benchmark; returns the report dict that :func:`write_outputs` saves.

    ``peers_python``: an interpreter whose environment holds the peers (see run_peer).
    """
    import torch

    import xtrieve
    from xtrieve.errors import InputError

    ds = resolve_dataset(data_dir, dataset, split, cache)
    docs, skipped = ds.documents()
    items, blank = searchable(ds.query_items(max_queries))  # (a query with an empty text cannot be timed)
    if blank:
        log.warning("%d query(ies) have an empty text (e.g. %r): left out of the benchmark, where eval scores "
                    "them 0", len(blank), blank[0])
    if not docs or not items:
        raise InputError(f"{ds.path}: nothing to benchmark ({len(docs)} documents, {len(items)} queries)")
    configs = grid_configs(grid, base_config)

    t0 = time.perf_counter()
    enc = xtrieve.Encoder.load(model)
    load_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    doc_vectors = enc.encode_documents([d["text"] for d in docs], show_progress=progress)
    encode_s = time.perf_counter() - t0
    keep = [i for i, v in enumerate(doc_vectors) if v.shape[0] > 0]
    if len(keep) < len(docs):
        log.warning("%d document(s) encode to no token vectors and are left out", len(docs) - len(keep))
        docs, doc_vectors = [docs[i] for i in keep], [doc_vectors[i] for i in keep]
    ids = [d["id"] for d in docs]
    qids = [qid for qid, _ in items]
    t0 = time.perf_counter()
    q_vectors = enc.encode_queries([text for _, text in items])
    query_encode_s = time.perf_counter() - t0
    single_encode_s = []
    for _, text in items[:SINGLE_ENCODE_QUERIES]:
        t0 = time.perf_counter()
        enc.encode_queries([text])
        single_encode_s.append(time.perf_counter() - t0)
    rss_after_encode = peak_rss_mb()

    doc_id_set = set(ids)
    ask = k + 1 if ignore_identical_ids and any(q in doc_id_set for q in qids) else k
    rows: list[Row] = []
    skipped_peers: dict[str, str] = {}
    with ExitStack() as stack:
        work = Path(workdir) if workdir is not None else Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="xtrieve-bench-")))
        t0 = time.perf_counter()
        idx = xtrieve.Index.build_from_embeddings(work / "xtrieve", ids, doc_vectors,
                                                  config=index_config or BENCH_INDEX_CONFIG,
                                                  overwrite=True, show_progress=progress)
        index_s = time.perf_counter() - t0
        info = idx.info()
        rss_after_index = peak_rss_mb()

        hits, lat, batch_s = _time_index(idx, q_vectors, ask, True, None, batch_queries, progress, "exhaustive")
        reference, metrics = _score(qids, hits, ds.qrels, k, ignore_identical_ids, None)
        rows.append(Row("xtrieve exhaustive", {}, metrics, latency_summary(lat), len(q_vectors) / batch_s,
                        index_s, int(info.bytes), int(info.n_vectors), peak_rss_mb()))
        for cfg in configs:
            label = f"k'={cfg.k_prime} rerank={cfg.n_rerank}"
            hits, lat, batch_s = _time_index(idx, q_vectors, ask, False, cfg, batch_queries, progress, label)
            _, metrics = _score(qids, hits, ds.qrels, k, ignore_identical_ids, reference)
            rows.append(Row("xtrieve", {"k_prime": cfg.k_prime, "n_rerank": cfg.n_rerank, "nprobe": cfg.nprobe},
                            metrics, latency_summary(lat), len(q_vectors) / batch_s, index_s, int(info.bytes),
                            int(info.n_vectors), peak_rss_mb()))
            log.info("%s: %s", label, rows[-1].to_dict())
        del idx
        n_vectors = int(info.n_vectors)
        for name in peers or ():
            try:
                run = peers_mod.run_peer(name, work / "peers", doc_vectors, q_vectors, ask, batch_queries,
                                         python=peers_python)
            except peers_mod.PeerUnavailable as exc:
                skipped_peers[name] = str(exc)
                log.info("peer %s skipped: %s", name, exc)
                continue
            named = [[(ids[d], s) for d, s in one if 0 <= d < len(ids)] for one in run.hits]
            _, metrics = _score(qids, named, ds.qrels, k, ignore_identical_ids, reference)
            label = run.name + (f" {run.version}" if run.version else "")
            rows.append(Row(label, run.settings, metrics, latency_summary(run.latencies_s), len(q_vectors) / run.batch_s,
                            run.build_s, run.index_bytes, n_vectors, run.peak_rss_mb))

    return {
        "dataset": ds.name, "split": split, "n_docs": len(docs), "n_skipped_docs": len(skipped),
        "n_queries": len(items), "k": k, "n_vectors": n_vectors, "dim": int(info.dim),
        "model": enc.identity().get("name"), "grid": grid if isinstance(grid, str) else [list(g) for g in grid],
        "timings": {
            "model_load_s": _round(load_s), "encode_s": _round(encode_s), "index_s": _round(index_s),
            "build_s": _round(encode_s + index_s), "query_encode_s": _round(query_encode_s),
            "query_encode_ms_per_query": _round(query_encode_s / len(items) * 1000.0),
            "query_encode_single_p50_ms": _round(float(np.median(single_encode_s)) * 1000.0),
        },
        "index_bytes": int(info.bytes), "bytes_per_vector": _round(info.bytes / n_vectors) if n_vectors else None,
        "faiss": list(info.faiss), "vector_storage": info.vector_storage,
        "peak_rss_mb": {"after_encode": _round(rss_after_encode, 1), "after_index": _round(rss_after_index, 1),
                        "end": _round(peak_rss_mb(), 1)},
        "rows": [r.to_dict() for r in rows],
        "peers_skipped": skipped_peers,
        "environment": {
            "python": platform.python_version(), "platform": platform.platform(), "cpus": os.cpu_count(),
            "torch_threads": torch.get_num_threads(), "xtrieve": xtrieve.__version__,
        },
    }


COLUMNS = [("system", "system"), ("k_prime", "k'"), ("n_rerank", "rerank"), ("ndcg@10", "nDCG@10"),
           ("recall@100", "R@100"), ("agree@10", "agree@10"), ("p50_ms", "p50 ms"), ("p95_ms", "p95 ms"),
           ("qps_single", "q/s single"), ("qps_batch", "q/s batch"), ("index_bytes", "index bytes"),
           ("bytes_per_vector", "B/vector"), ("build_s", "build s"),
           ("peak_rss_mb", "peak RSS MiB")]


def _cell(key: str, value: Any) -> str:
    if value is None:
        return "-"
    if key in ("ndcg@10", "recall@100", "agree@10", "map@100", "mrr@10"):
        return f"{100 * value:.1f}"
    if key == "index_bytes":
        return f"{value / 1e6:.1f} MB"
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"
    return str(value)


SCORES_NOTE = ("Every row scores the same token vectors by MaxSim alone; `xtrieve eval` also adds the model's dense "
               "score where it has one (dense_weight > 0), so its figures can differ.")


def table_lines(report: dict[str, Any], markdown: bool = True) -> list[str]:
    """The rows as a markdown (or plain aligned) table; quality figures x100."""
    header = [label for _, label in COLUMNS]
    body = [[_cell(key, row.get(key)) for key, _ in COLUMNS] for row in report["rows"]]
    if markdown:
        lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
        lines += ["| " + " | ".join(r) + " |" for r in body]
        return lines
    widths = [max(len(c) for c in col) for col in zip(header, *body)]
    fmt = lambda cells: "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))  # noqa: E731
    return [fmt(header)] + [fmt(r) for r in body]


def markdown_report(report: dict[str, Any]) -> str:
    t = report["timings"]
    rss = report["peak_rss_mb"]
    lines = [
        f"# xtrieve bench: {report['dataset']} ({report['split']})",
        "",
        f"{report['n_docs']} documents, {report['n_vectors']} vectors (dim {report['dim']}), "
        f"{report['n_queries']} queries, k={report['k']}, model `{report['model']}`.",
        f"Build: encode {t['encode_s']} s + index {t['index_s']} s; query encoding "
        f"{t['query_encode_ms_per_query']} ms/query in batches, p50 {t.get('query_encode_single_p50_ms')} ms "
        "one at a time (not in the latencies below).",
        f"Index: {report['index_bytes'] / 1e6:.1f} MB, {report['bytes_per_vector']} B/vector, "
        f"FAISS {', '.join(report['faiss'])}, vectors {report['vector_storage']}. "
        f"Peak RSS {rss['end']} MiB (after encode {rss['after_encode']}, after index {rss['after_index']}).",
        "",
        "Quality x100; agree@10 = share of the exhaustive MaxSim top-10 found in the top-10. Peak RSS: this",
        "process so far for xtrieve rows (it includes the encoder), the peer's own child process for peers.",
        SCORES_NOTE,
        "",
        *table_lines(report, markdown=True),
    ]
    if report.get("peers_skipped"):
        lines += ["", "Peers skipped:", *[f"- {n}: {why}" for n, why in report["peers_skipped"].items()]]
    env = report.get("environment", {})
    lines += ["", f"Machine: {env.get('platform')}, {env.get('cpus')} CPUs, torch threads {env.get('torch_threads')}."]
    return "\n".join(lines) + "\n"


def plot(report: dict[str, Any], path: str | Path) -> Path | None:
    """Quality (nDCG@10) vs p50 latency scatter; None when matplotlib is not importable."""
    try:  # a Figure of its own: pyplot's process-wide backend and figure list stay untouched
        from matplotlib.figure import Figure
    except ImportError:
        return None
    fig = Figure(figsize=(7, 4.5))
    ax = fig.subplots()
    groups: dict[str, list[dict]] = {}
    for row in report["rows"]:
        groups.setdefault(row["system"], []).append(row)
    for system, rows in groups.items():
        xs = [r["p50_ms"] for r in rows if r["p50_ms"] is not None and r["ndcg@10"] is not None]
        ys = [100 * r["ndcg@10"] for r in rows if r["p50_ms"] is not None and r["ndcg@10"] is not None]
        ax.plot(xs, ys, "o-" if len(xs) > 1 else "s", label=system)
        for r, x, y in zip(rows, xs, ys):
            if r.get("k_prime") is not None:
                ax.annotate(f"{r['k_prime']}/{r['n_rerank']}", (x, y), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
    ax.set_xscale("log")
    ax.set_xlabel("p50 latency per query (ms, log)")
    ax.set_ylabel("nDCG@10 x100")
    ax.set_title(f"{report['dataset']}: quality vs latency (labels k'/n_rerank)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return Path(path)


def write_outputs(report: dict[str, Any], out: str | Path) -> dict[str, str | None]:
    """bench.json, bench.md and (with matplotlib) bench.png in ``out``; paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "bench.md").write_text(markdown_report(report), encoding="utf-8")
    png = plot(report, out / "bench.png")
    if png is None:
        log.info("matplotlib is not importable: no bench.png (pip install 'xtrieve[plot]')")
    return {"json": str(out / "bench.json"), "md": str(out / "bench.md"), "png": str(png) if png else None}
