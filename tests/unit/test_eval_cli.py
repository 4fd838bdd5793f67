"""`xtrieve eval` / `xtrieve bench` plumbing with a fake encoder (real index and search)."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import xtrieve
from xtrieve.cli.main import main
from xtrieve.eval import bench, peers
from xtrieve.eval.toy import write_toy_beir
from helpers import WordHashEncoder

DIM = 16


def FakeEncoder():
    return WordHashEncoder(DIM, name="fake-words")


@pytest.fixture
def toy(tmp_path):
    return write_toy_beir(tmp_path / "toy")


@pytest.fixture
def fake_encoder(monkeypatch):
    monkeypatch.setattr(xtrieve.Encoder, "load", classmethod(lambda cls, name=None, **kw: FakeEncoder()))


@pytest.fixture
def fake_eval_index(monkeypatch):
    """run_eval builds with Index.build_from_embeddings through the fake encoder."""
    import xtrieve.eval.evaluate as ev

    def open_or_build(path, docs, model=None, index_config=None, show_progress=None, precision="float32",
                      encoder_config=None, device="cpu"):
        built_with.extend([precision, encoder_config, device])
        enc = FakeEncoder()
        idx = xtrieve.Index.build_from_embeddings(path, [d["id"] for d in docs],
                                                  enc.encode_documents([d["text"] for d in docs]))
        idx._encoder = enc  # lets search() take strings
        return idx, 0.01, False

    built_with: list[str] = []
    monkeypatch.setattr(ev, "open_or_build", open_or_build)
    return built_with


def test_eval_run_file_refuses_ids_trec_cannot_hold(toy, tmp_path, fake_eval_index):
    run_file = tmp_path / "run.trec"
    res = CliRunner().invoke(main, ["eval", "--data-dir", str(toy), "--run-file", str(run_file)])
    assert res.exit_code != 0 and not run_file.exists()
    assert res.output.strip().splitlines()[-1].startswith("error: query id 'q 5' cannot be written in TREC")


def test_eval_json_last_line(toy, tmp_path, fake_eval_index):
    run_file = tmp_path / "run.trec"
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):  # ids with spaces cannot go in a TREC run
        path = toy / name
        path.write_text(path.read_text(encoding="utf-8").replace("q 5", "q5").replace("doc 3", "doc3"),
                        encoding="utf-8")
    res = CliRunner().invoke(main, ["eval", "--data-dir", str(toy), "--format", "json", "--run-file", str(run_file),
                                    "--precision", "bfloat16", "--encoder-config", "doc_windows=3", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert fake_eval_index == ["bfloat16", {"doc_windows": 3}, "cpu"]  # all three reach the build
    out = json.loads(res.output.strip().splitlines()[-1])
    for key in ("ndcg@10", "recall@100", "map@100", "mrr@10", "p50_ms", "p95_ms", "index_bytes", "build_s",
                "n_queries", "dataset"):
        assert key in out, key
    assert out["dataset"] == "toy" and out["n_queries"] == 6 and out["n_skipped_docs"] == 1
    assert out["precision"] == "bfloat16" and out["query_precision"] == "bfloat16" and out["device"] == "cpu"
    assert 0 <= out["ndcg@10"] <= 1 and out["index_bytes"] > 0
    assert out["n_identical_dropped"] == 2
    lines = run_file.read_text().splitlines()
    assert {line.split()[0] for line in lines} == {"q1", "q2", "q3", "14", "q5", "30"}
    assert not any(line.split()[0] == line.split()[2] for line in lines)  # no query's own doc


def test_eval_table_and_exhaustive(toy, fake_eval_index):
    res = CliRunner().invoke(main, ["eval", "--data-dir", str(toy.parent), "--dataset", "toy", "--exhaustive",
                                    "--keep-identical-ids"])
    assert res.exit_code == 0, res.output
    assert "nDCG@10" in res.output and "exhaustive MaxSim" in res.output and "dropped" not in res.output


def test_eval_needs_data(tmp_path):
    res = CliRunner().invoke(main, ["eval"])
    assert res.exit_code == 2 and "--data-dir" in res.output


def test_eval_dataset_download_failure_is_one_line(tmp_path, monkeypatch):
    from xtrieve.eval import beir_data

    monkeypatch.setattr(beir_data, "_can_reach", lambda url, timeout=5.0: "no route to host")
    res = CliRunner().invoke(main, ["eval", "--dataset", "scifact", "--cache-dir", str(tmp_path)])
    assert res.exit_code == 1
    assert res.stderr.count("\n") == 1 and "cannot download" in res.stderr and "--data-dir" in res.stderr


def test_eval_missing_folder_is_clean_error(tmp_path):
    res = CliRunner().invoke(main, ["eval", "--data-dir", str(tmp_path / "nope")])
    assert res.exit_code == 1 and res.stderr.startswith("error:")


def test_bench_writes_outputs(toy, tmp_path, fake_encoder):
    out = tmp_path / "out"
    res = CliRunner().invoke(main, ["bench", "--data-dir", str(toy), "--out", str(out), "--format", "json"])
    assert res.exit_code == 0, res.output
    report = json.loads(res.output.strip().splitlines()[-1])
    systems = [r["system"] for r in report["rows"]]
    assert systems[0] == "xtrieve exhaustive" and systems.count("xtrieve") == len(bench.GRIDS["small"])
    exhaustive = report["rows"][0]
    assert exhaustive["agree@10"] == 1.0 and exhaustive["qps_batch"] > 0
    for row in report["rows"]:
        assert row["p50_ms"] is not None and row["bytes_per_vector"] > 0
    assert set(report["peers_skipped"]) == set(peers.PEERS)  # none installed in the test venv
    assert report["timings"]["encode_s"] >= 0 and report["peak_rss_mb"]["end"] > 0
    assert report["timings"]["query_encode_single_p50_ms"] > 0
    assert json.loads((out / "bench.json").read_text())["dataset"] == "toy"
    md = (out / "bench.md").read_text()
    assert "| system |" in md and "xtrieve exhaustive" in md and "one at a time" in md


def test_bench_table_max_queries(toy, fake_encoder):
    res = CliRunner().invoke(main, ["bench", "--data-dir", str(toy), "--max-queries", "3", "--no-peers"])
    assert res.exit_code == 0, res.output
    assert "3 queries" in res.output and "nDCG@10" in res.output and "skipped" not in res.output


def test_grid_configs():
    cfgs = bench.grid_configs("full", xtrieve.SearchConfig(nprobe=4))
    assert len(cfgs) == len(bench.GRIDS["full"]) == 20 and all(c.nprobe == 4 for c in cfgs)
    assert {(c.k_prime, c.n_rerank) for c in bench.grid_configs([(8, 9)])} == {(8, 9)}
    with pytest.raises(xtrieve.InputError):
        bench.grid_configs("huge")


def test_peers_skip_cleanly_and_normalize(tmp_path):
    avail = peers.available()
    assert set(avail) == set(peers.PEERS)
    with pytest.raises(peers.PeerUnavailable, match="unknown peer"):
        peers.run_peer("nope", tmp_path, [], [], 10)
    assert peers.normalize_hits([(3, 1.5), [4, 0.5]]) == [(3, 1.5), (4, 0.5)]
    assert peers.normalize_hits([{"id": "7", "score": 2}]) == [(7, 2.0)]
    assert peers.normalize_hits(None) == []


def test_markdown_and_plot_without_matplotlib(monkeypatch, tmp_path):
    import builtins

    report = {"dataset": "d", "split": "test", "n_docs": 1, "n_vectors": 2, "dim": 4, "n_queries": 1, "k": 10,
              "model": "m", "timings": {"encode_s": 1, "index_s": 1, "query_encode_ms_per_query": 1},
              "index_bytes": 100, "bytes_per_vector": 50.0, "faiss": ["Flat"], "vector_storage": "float16",
              "peak_rss_mb": {"end": 1, "after_encode": 1, "after_index": 1}, "peers_skipped": {"x": "why"},
              "rows": [{"system": "xtrieve", "k_prime": 8, "n_rerank": 8, "ndcg@10": 0.5, "p50_ms": 1.0}]}
    real_import = builtins.__import__

    def no_mpl(name, *a, **kw):
        if name.startswith("matplotlib"):
            raise ImportError(name)
        return real_import(name, *a, **kw)

    monkeypatch.setattr(builtins, "__import__", no_mpl)
    written = bench.write_outputs(report, tmp_path)
    assert written["png"] is None and "- x: why" in (tmp_path / "bench.md").read_text()


def test_bench_peer_rows_use_the_same_ids(toy, fake_encoder, monkeypatch):
    """A peer that returns exact MaxSim by document position scores like exhaustive xtrieve."""
    def fake_peer(name, workdir, doc_vectors, queries, k, batch_size=32, python=None):
        assert python == "/peers/bin/python"
        if name != "fast-plaid":
            raise peers.PeerUnavailable("not here")
        hits = []
        for q in queries:
            scores = np.array([(q @ d.T).max(axis=1).sum() for d in doc_vectors])
            hits.append([(int(i), float(scores[i])) for i in np.argsort(-scores)[:k]])
        return peers.PeerRun("fast-plaid", "9.9", hits, [0.001] * len(queries), 0.01, 0.1, 999, {}, 12.0)

    monkeypatch.setattr(bench.peers_mod, "run_peer", fake_peer)
    report = bench.run_bench(toy, grid=[(8, 8)], peers_python="/peers/bin/python")
    rows = {r["system"]: r for r in report["rows"]}
    peer, exhaustive = rows["fast-plaid 9.9"], rows["xtrieve exhaustive"]
    assert peer["ndcg@10"] == pytest.approx(exhaustive["ndcg@10"]) and peer["agree@10"] == 1.0
    assert peer["peak_rss_mb"] == 12.0 and peer["index_bytes"] == 999
    assert set(report["peers_skipped"]) == {"xtr-warp", "pylate-plaid"}


def test_eval_refuses_an_index_built_from_another_corpus(toy, tmp_path, fake_encoder):
    """Reuse needs the index's live ids to be the corpus's: another corpus is one clear error."""
    from xtrieve.eval.evaluate import run_eval

    index_dir = tmp_path / "ix"
    first = run_eval(data_dir=toy, index_dir=index_dir)
    assert not first.index_reused and first.pool_factor >= 1 and first.summary()["pool_factor"] == first.pool_factor
    again = run_eval(data_dir=toy, index_dir=index_dir)
    assert again.index_reused and again.n_vectors == first.n_vectors and again.vector_storage == first.vector_storage
    rows = [json.loads(line) for line in (toy / "corpus.jsonl").read_text(encoding="utf-8").splitlines()]
    other = tmp_path / "other"
    other.mkdir()
    (other / "qrels").mkdir()
    (other / "queries.jsonl").write_bytes((toy / "queries.jsonl").read_bytes())
    (other / "qrels" / "test.tsv").write_bytes((toy / "qrels" / "test.tsv").read_bytes())
    (other / "corpus.jsonl").write_text("".join(json.dumps({**r, "_id": f"B{r['_id']}"}) + "\n" for r in rows),
                                        encoding="utf-8")
    res = CliRunner().invoke(main, ["eval", "--data-dir", str(other), "--index", str(index_dir)])
    assert res.exit_code != 0
    assert "was built from another corpus" in res.output and "corpus document id(s) are not in it" in res.output


def test_queries_without_text_fail_before_an_index_is_built(toy, fake_eval_index):
    rows = [json.loads(line) for line in (toy / "queries.jsonl").read_text(encoding="utf-8").splitlines()]
    (toy / "queries.jsonl").write_text("".join(json.dumps({"_id": r["_id"], "query": r.get("text")}) + "\n"
                                               for r in rows), encoding="utf-8")
    res = CliRunner().invoke(main, ["eval", "--data-dir", str(toy)])
    assert res.exit_code != 0 and "has a text" in res.output
    assert fake_eval_index == []  # nothing was built


def test_the_table_says_which_figures_a_short_run_cuts(toy, fake_eval_index):
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):
        path = toy / name
        path.write_text(path.read_text(encoding="utf-8").replace("q 5", "q5").replace("doc 3", "doc3"),
                        encoding="utf-8")
    out = CliRunner().invoke(main, ["eval", "--data-dir", str(toy), "-k", "5"]).output
    assert "the @10 and @100 figures count those only" in out
    out = CliRunner().invoke(main, ["eval", "--data-dir", str(toy), "-k", "20"]).output
    assert "the @100 figures count those only" in out


def test_a_run_file_that_cannot_be_written_fails_before_the_evaluation(tmp_path):
    (tmp_path / "afile").write_text("x")
    r = CliRunner().invoke(main, ["eval", "--data-dir", str(tmp_path / "nowhere"), "--run-file",
                                  str(tmp_path / "afile" / "run.trec")])
    assert r.exit_code == 2 and "--run-file" in r.output and "cannot make its folder" in r.output
