"""BEIR loading, metric plumbing, the identical-ids rule and TREC runs, with a fake index."""
from __future__ import annotations

import json
import logging

import pytest

from xtrieve.errors import InputError, XtrieveError
from xtrieve.eval import beir_data, metrics
from xtrieve.eval.evaluate import evaluate_index, search_queries
from xtrieve.eval.toy import write_toy_beir
from xtrieve.types import Hit


@pytest.fixture
def toy(tmp_path):
    return write_toy_beir(tmp_path / "toy")


class FakeIndex:
    """Scores documents by word overlap with the query; records what it was asked."""

    def __init__(self, corpus):
        self.docs = {doc_id: set(beir_data.doc_text(d).lower().split()) for doc_id, d in corpus.items()}
        self.asked = []

    def search(self, query, k=10, filter=None, exhaustive=False, config=None):
        self.asked.append(k)
        words = set(query.lower().split())
        scored = sorted(((len(words & w) + 1.0 / (1 + i), d) for i, (d, w) in enumerate(self.docs.items())),
                        reverse=True)
        return [Hit(doc_id=d, score=float(s)) for s, d in scored[:k]]


def test_load_toy_ids_are_strings_and_split_selects_queries(toy):
    ds = beir_data.load_beir(toy, split="test")
    assert all(isinstance(k, str) for k in ds.corpus)
    assert "30" in ds.corpus and "empty-doc" in ds.corpus  # int id in the JSON became "30"
    assert ds.corpus["0001"]["metadata"] == {"source": "toy"}  # extra fields kept
    assert set(ds.queries) == {"q1", "q2", "q3", "14", "q 5", "30"}
    assert ds.qrels["q1"] == {"0001": 1, "missing-doc": 1}
    assert ds.qrels["q 5"]["7-α"] == 0
    train = beir_data.load_beir(toy, split="train")
    assert set(train.queries) == {"t1", "t2"}


def test_documents_fold_title_and_skip_empty(toy, caplog):
    ds = beir_data.load_beir(toy)
    with caplog.at_level(logging.WARNING):
        docs, skipped = ds.documents()
    assert skipped == ["empty-doc"]
    assert "skipped 1 document" in caplog.text
    assert len(docs) == 30
    by_id = {d["id"]: d for d in docs}
    assert by_id["0001"]["text"].startswith("Photosynthesis Plants convert")
    assert by_id["21"]["text"].startswith("Marathon runners")  # empty title: no leading space
    assert set(by_id["0001"]) == {"id", "text"}


def test_find_folder_by_dataset_name_and_clear_errors(toy, tmp_path):
    assert beir_data.find_beir_folder(toy.parent, "toy") == toy
    with pytest.raises(InputError, match="splits here: test, train"):
        beir_data.load_beir(toy, split="dev")
    with pytest.raises(InputError, match="no such folder"):
        beir_data.load_beir(tmp_path / "nope")
    with pytest.raises(InputError, match="not a BEIR folder: no corpus.jsonl; BEIR folders inside it: toy"):
        beir_data.load_beir(tmp_path)  # a parent of dataset folders (CQADupStack's layout) lists them


def test_qrels_for_unknown_queries_dropped_and_float_scores(tmp_path, caplog):
    folder = beir_data.write_beir(tmp_path / "b", {"a": {"title": "t", "text": "x"}, 7: {"text": "y"}},
                                  {"1": "query one"}, {"test": {"1": {"a": 1, "7": 2}, "ghost": {"a": 1}}})
    qrels = folder / "qrels" / "test.tsv"
    qrels.write_text(qrels.read_text().replace("\t2\n", "\t2.0\n") + "\n")
    with caplog.at_level(logging.WARNING):
        ds = beir_data.load_beir(folder)
    assert ds.qrels == {"1": {"a": 1, "7": 2}}
    assert "absent from" in caplog.text and "relevant document" not in caplog.text


def test_qrels_naming_documents_absent_from_the_corpus_are_kept_with_a_warning(tmp_path, caplog):
    folder = beir_data.write_beir(tmp_path / "b", {"a": {"text": "x"}}, {"1": "query one"},
                                  {"test": {"1": {"a": 1, "gone": 1, "zero": 0}}})
    with caplog.at_level(logging.WARNING):
        ds = beir_data.load_beir(folder)
    assert ds.qrels == {"1": {"a": 1, "gone": 1, "zero": 0}}  # as beir reads them
    assert "1 relevant document id(s) absent from" in caplog.text and "'gone'" in caplog.text


def test_download_without_network_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setattr(beir_data, "_can_reach", lambda url, timeout=5.0: "Network is unreachable")
    with pytest.raises(beir_data.DatasetUnavailableError) as err:
        beir_data.resolve_dataset(None, "scifact", cache=tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and "cannot download" in msg and "--data-dir" in msg
    assert isinstance(err.value, XtrieveError)


def test_download_uses_cache_when_present(tmp_path):
    write_toy_beir(tmp_path / "cache" / "toyset")
    ds = beir_data.resolve_dataset(None, "toyset", cache=tmp_path / "cache")
    assert ds.name == "toyset" and len(ds.queries) == 6


def test_evaluate_perfect_and_partial_runs():
    qrels = {"a": {"d1": 1, "d2": 1}, "b": {"d3": 2}}
    perfect = {"a": {"d1": 2.0, "d2": 1.0, "x": 0.5}, "b": {"d3": 1.0}}
    m = metrics.evaluate(qrels, perfect)
    assert m["ndcg@10"] == 1.0 and m["recall@100"] == 1.0 and m["map@100"] == 1.0 and m["mrr@10"] == 1.0
    assert m["n_scored"] == 2
    partial = {"a": {"x": 3.0, "d1": 2.0}, "b": {"y": 1.0}}
    m = metrics.evaluate(qrels, partial)
    assert m["mrr@10"] == pytest.approx(0.25)  # (1/2 + 0) / 2
    assert m["recall@100"] == pytest.approx(0.25)
    assert 0 < m["ndcg@10"] < 1
    # a run for a query without judgements is ignored, not a crash (beir's MRR would KeyError)
    assert metrics.evaluate(qrels, {**partial, "zzz": {"d1": 1.0}})["mrr@10"] == pytest.approx(0.25)


def test_drop_identical_ids():
    run = {"7": {"7": 9.0, "8": 1.0}, "q": {"q2": 1.0}}
    out, n = metrics.drop_identical_ids(run)
    assert n == 1 and out == {"7": {"8": 1.0}, "q": {"q2": 1.0}}
    assert run["7"] == {"7": 9.0, "8": 1.0}  # input untouched


def test_evaluate_index_applies_the_identical_ids_rule(toy):
    ds = beir_data.load_beir(toy)
    index = FakeIndex(ds.corpus)
    results, m, latency, dropped = evaluate_index(index, ds, k=5)
    # queries "14" (same text as doc 14) and "30" are doc ids: asked k+1, own doc dropped
    assert set(index.asked) == {6}
    assert dropped == 2
    assert "14" not in results["14"] and "30" not in results["30"]
    assert all(len(r) == 5 for r in results.values())
    assert set(results) == set(ds.queries)
    assert latency["p50_ms"] > 0 and latency["p95_ms"] >= latency["p50_ms"]
    for key in ("ndcg@10", "recall@100", "map@100", "mrr@10"):
        assert 0.0 <= m[key] <= 1.0
    kept, m_kept, _, dropped_kept = evaluate_index(index, ds, k=5, ignore_identical_ids=False)
    assert dropped_kept == 0 and next(iter(sorted(kept["14"].items(), key=lambda kv: -kv[1])))[0] == "14"
    assert m_kept["ndcg@10"] > m["ndcg@10"]


def test_search_queries_times_each_call():
    calls = []

    def search(q, k):
        calls.append(q)
        return [("d1", 1.0), ("d2", 0.5)]

    results, lat, dropped = search_queries(search, [("a", "x"), ("b", "y")], k=1)
    assert calls == ["x", "x", "y"]  # one warm-up
    assert len(lat) == 2 and results == {"a": {"d1": 1.0}, "b": {"d1": 1.0}} and dropped == 0


def test_trec_run_round_trip(tmp_path):
    run = {"q1": {"d/1": 0.5, "d2": 2.0}, "q2": {"x": 1.0}}
    path = metrics.write_trec_run(tmp_path / "sub" / "run.trec", run, tag="my tag")
    lines = path.read_text().splitlines()
    assert lines[0] == "q1 Q0 d2 1 2.000000 my_tag"
    assert lines[1] == "q1 Q0 d/1 2 0.500000 my_tag"
    assert all(len(line.split()) == 6 for line in lines)
    assert metrics.read_trec_run(path) == {"q1": {"d2": 2.0, "d/1": 0.5}, "q2": {"x": 1.0}}


@pytest.mark.parametrize("run, bad", [({"q 1": {"d": 1.0}}, "query id 'q 1'"),
                                      ({"q": {"a b": 1.0, "a_b": 0.5}}, "doc id 'a b'"),
                                      ({"q": {"": 1.0}}, "doc id ''")])
def test_trec_run_refuses_ids_it_cannot_hold(tmp_path, run, bad):
    path = tmp_path / "run.trec"
    with pytest.raises(InputError, match=bad):
        metrics.write_trec_run(path, run)
    assert not path.exists()


def test_latency_summary_and_agreement():
    s = metrics.latency_summary([0.001, 0.002, 0.003, 0.010])
    assert s["p50_ms"] == pytest.approx(2.5) and s["p95_ms"] > 8 and s["qps_single"] == pytest.approx(250.0)
    ref = {"a": {"1": 3.0, "2": 2.0}}
    assert metrics.agreement({"a": {"2": 1.0, "9": 0.5}}, ref, k=2) == 0.5


def test_write_beir_round_trip_is_json_lines(tmp_path):
    folder = write_toy_beir(tmp_path / "t")
    for line in (folder / "corpus.jsonl").read_text().splitlines():
        json.loads(line)
    assert (folder / "qrels" / "test.tsv").read_text().startswith("query-id\tcorpus-id\tscore\n")


def test_dataset_name_prefers_its_subfolder_over_the_root(toy):
    sub = beir_data.write_beir(toy / "sub", {"d1": {"title": "", "text": "x"}}, {"q1": "x"},
                               {"test": {"q1": {"d1": 1}}})
    assert beir_data.find_beir_folder(toy, "sub") == sub
    ds = beir_data.load_beir(toy, dataset="sub")
    assert (ds.name, ds.path, list(ds.corpus)) == ("sub", sub, ["d1"])
    assert beir_data.find_beir_folder(toy) == toy  # no name: the root itself
    assert beir_data.find_beir_folder(toy, "toy") == toy  # the root is the named folder


def test_dataset_name_absent_under_a_beir_root_is_an_error(toy):
    with pytest.raises(InputError, match=r"--dataset nfcorpus: no BEIR folder .*drop --dataset"):
        beir_data.find_beir_folder(toy, "nfcorpus")


def test_byte_order_marks_and_ids_as_written(tmp_path):
    folder = beir_data.write_beir(tmp_path / "b", {"a": {"text": "x"}, " b": {"text": "y"}}, {"1": "query one"},
                                  {"test": {"1": {"a": 1, " b": 1}}})
    qrels = folder / "qrels" / "test.tsv"
    qrels.write_text("\n".join(qrels.read_text().splitlines()[1:]) + "\n")  # no header: the BOM sits on an id
    for f in (folder / "corpus.jsonl", folder / "queries.jsonl", qrels):
        f.write_bytes(b"\xef\xbb\xbf" + f.read_bytes())
    ds = beir_data.load_beir(folder)
    assert set(ds.corpus) == {"a", " b"} and ds.qrels == {"1": {"a": 1, " b": 1}}  # ids as beir reads them


def test_judged_queries_that_retrieve_nothing_score_zero():
    from beir.retrieval.evaluation import EvaluateRetrieval

    qrels, results = {"a": {"d": 1}, "b": {"d": 1}, "c": {}}, {"a": {"d": 1.0}, "b": {}, 7: {"d": 1.0}}
    m = metrics.evaluate(qrels | {"7": {"d": 1}}, results)
    ndcg = EvaluateRetrieval.evaluate({"a": {"d": 1}, "b": {"d": 1}, "7": {"d": 1}},
                                      {"a": {"d": 1.0}, "b": {}, "7": {"d": 1.0}}, [10])[0]["NDCG@10"]
    assert m["n_scored"] == 3 and m["ndcg@10"] == pytest.approx(ndcg) and ndcg == pytest.approx(2 / 3, abs=1e-4)


def test_a_judged_query_without_text_scores_zero(tmp_path, caplog):
    folder = beir_data.write_beir(tmp_path / "b", {"a": {"text": "moon tides"}, "b": {"text": "glaciers"}},
                                  {"1": "moon", "2": "   "}, {"test": {"1": {"a": 1}, "2": {"b": 1}}})
    ds = beir_data.load_beir(folder)
    with caplog.at_level(logging.WARNING):
        results, m, _, _ = evaluate_index(FakeIndex(ds.corpus), ds, k=2)
    assert results["2"] == {} and m["n_scored"] == 2 and m["ndcg@10"] == pytest.approx(0.5)
    assert caplog.text.count("empty text") == 1


def test_repeated_corpus_ids_keep_the_last_line_and_warn(tmp_path, caplog):
    folder = beir_data.write_beir(tmp_path / "b", {"a": {"text": "first"}}, {"1": "query"}, {"test": {"1": {"a": 1}}})
    with open(folder / "corpus.jsonl", "a") as f:
        f.write('{"_id": "a", "text": "second"}\n')
    with caplog.at_level(logging.WARNING):
        ds = beir_data.load_beir(folder)
    assert ds.corpus["a"]["text"] == "second" and "1 repeated _id(s)" in caplog.text


def test_tied_documents_rank_alike_for_every_metric():
    from xtrieve.eval.metrics import evaluate

    qrels = {"q": {"a": 2, "b": 0}}
    for run in ({"q": {"a": 1.0, "b": 1.0}}, {"q": {"b": 1.0, "a": 1.0}}):  # trec_eval's order: b, then a
        scores = evaluate(qrels, run)
        assert scores["mrr@10"] == 0.5 and scores["ndcg@10"] < 1.0 and scores["map@100"] == 0.5


def test_a_pair_judged_twice_differently_is_warned_and_the_last_kept(tmp_path, caplog):
    folder = beir_data.write_beir(tmp_path / "b", {"a": {"text": "x"}}, {"1": "query one"}, {"test": {"1": {"a": 2}}})
    qrels = folder / "qrels" / "test.tsv"
    qrels.write_text(qrels.read_text() + "1\ta\t0\n")
    with caplog.at_level(logging.WARNING):
        ds = beir_data.load_beir(folder)
    assert ds.qrels == {"1": {"a": 0}} and "judged twice with different scores" in caplog.text
