"""Search with the real default model over the sample corpus: fast path vs exhaustive,
filters, deletes, threads and bad queries through the public API."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

import xtrieve
from xtrieve.config import IndexConfig, SearchConfig

pytestmark = pytest.mark.integration
SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sample_corpus.jsonl"
QUERIES = ["how do vaccines protect us?", "why do bacteria resist antibiotics", "stars and planets",
           "how is bread made", "crash safe databases", "earthquakes and volcanoes"]


@pytest.fixture(scope="module")
def index(tmp_path_factory):
    docs = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    # IVF with a handful of lists so the fast path exercises FAISS token retrieval for real
    config = IndexConfig(faiss_factory="IVF8,Flat")
    return xtrieve.Index.build(tmp_path_factory.mktemp("idx") / "sample", docs, config=config)


def test_fast_path_matches_exhaustive_on_real_text(index):
    cfg = SearchConfig(k_prime=32, n_rerank=8, nprobe=4)
    for q in QUERIES:
        fast = index.search(q, k=5, config=cfg)
        exact = index.search(q, k=5, exhaustive=True)
        assert fast[0].doc_id == exact[0].doc_id
        assert fast[0].score == pytest.approx(exact[0].score, abs=1e-4)


def test_obvious_queries_find_their_document(index):
    cold = index.search("how do vaccines protect us?", k=3)
    warm = index.warm_up().search("how do vaccines protect us?", k=3)  # (thread counts follow the machine's
    assert [h.doc_id for h in warm] == [h.doc_id for h in cold]       # load: scores agree to float rounding)
    assert [h.score for h in warm] == pytest.approx([h.score for h in cold], abs=1e-4)
    assert cold[0].doc_id == "bio-3"
    assert index.search("the first person on the Moon", k=3)[0].doc_id == "hist-4"


def test_filter_and_delete(index, tmp_path):
    hits = index.search("space and astronomy", k=10, filter="year >= 2019 and topic == 'astronomy'")
    assert hits and all(h.metadata["year"] >= 2019 and h.metadata["topic"] == "astronomy" for h in hits)
    assert "astro-4" not in [h.doc_id for h in hits]  # 2015
    with pytest.raises(xtrieve.FilterError, match="unknown column"):
        index.search("space", filter="colour == 'red'")


def test_deleted_document_never_returned(tmp_path):
    docs = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    idx = xtrieve.Index.build(tmp_path / "d", docs)
    assert idx.search("how do vaccines protect us?", k=1)[0].doc_id == "bio-3"
    idx.delete(["bio-3"])
    for exhaustive in (False, True):
        assert "bio-3" not in [h.doc_id for h in idx.search("how do vaccines protect us?", k=32, exhaustive=exhaustive)]


def test_batch_and_threads_agree_with_single(index):
    single = [[h.doc_id for h in index.search(q, k=5)] for q in QUERIES]
    assert [[h.doc_id for h in hits] for hits in index.search_batch(QUERIES, k=5)] == single
    results: dict[int, list] = {}

    def work(i):
        results[i] = [[h.doc_id for h in index.search(q, k=5)] for q in QUERIES]

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r == single for r in results.values()) and len(results) == 4


def test_bad_queries(index):
    with pytest.raises(xtrieve.InputError, match="empty"):
        index.search("   ")
    with pytest.raises(xtrieve.InputError, match="dimension"):
        index.search(np.ones((4, 64), dtype=np.float32))
    with pytest.raises(xtrieve.InputError, match="k must be"):
        index.search("vaccines", k=0)
    with pytest.raises(xtrieve.InputError, match="k must be"):
        index.search("vaccines", k=-3)


def test_search_cli_formats_and_query_files(index, tmp_path):
    from click.testing import CliRunner

    from xtrieve.cli.main import main

    runner = CliRunner()
    out = runner.invoke(main, ["search", str(index.path), "how do vaccines protect us?", "-k", "2", "--format", "json"])
    assert out.exit_code == 0, out.output
    assert json.loads(out.stdout.splitlines()[0])["hits"][0]["doc_id"] == "bio-3"
    queries = tmp_path / "q.tsv"
    queries.write_text("id\ttext\nqa\thow do vaccines protect us?\nqb\tthe first person on the Moon\n")
    out = runner.invoke(main, ["search", str(index.path), "--queries", str(queries), "-k", "1", "--format", "trec"])
    assert out.exit_code == 0, out.output
    assert out.stdout.split() == ["qa", "Q0", "bio-3", "1", out.stdout.split()[4], "xtrieve",
                                  "qb", "Q0", "hist-4", "1", out.stdout.split()[10], "xtrieve"]
    measured = runner.invoke(main, ["search", str(index.path), "how do vaccines protect us?", "-k", "2",
                                    "--format", "json", "--imputation", "measured", "--n-rerank", "4"])
    assert measured.exit_code == 0, measured.output
    assert json.loads(measured.stdout.splitlines()[0])["hits"][0]["doc_id"] == "bio-3"
    assert runner.invoke(main, ["search", str(index.path), "vaccines", "--imputation", "zero"]).exit_code == 2
    bad = runner.invoke(main, ["search", str(index.path), "vaccines", "--filter", "colour == 1"])
    assert bad.exit_code == 1 and "unknown column" in bad.output and "Traceback" not in bad.output


def test_rerank_orders_candidates_as_exhaustive_search_does(index):
    docs = [json.loads(line) for line in SAMPLE.read_text().splitlines()]
    for q in QUERIES[:3]:
        exact = index.search(q, k=len(docs), exhaustive=True)
        reranked = xtrieve.rerank(q, docs, encoder=index.encoder)
        scores = {h.doc_id: h.score for h in reranked}
        assert reranked[0].doc_id == exact[0].doc_id
        assert all(scores[h.doc_id] == pytest.approx(h.score, abs=0.02) for h in exact)  # int8 stored vectors
