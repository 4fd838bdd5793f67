"""`xtrieve eval` and `xtrieve bench` end to end on the real default model and a toy BEIR folder."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from xtrieve.cli.main import main
from xtrieve.eval.metrics import read_trec_run
from xtrieve.eval.toy import write_toy_beir

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def toy(tmp_path_factory):
    folder = write_toy_beir(tmp_path_factory.mktemp("beir") / "toy")
    for name in ("corpus.jsonl", "queries.jsonl", "qrels/test.tsv"):  # ids with spaces cannot go in a TREC run
        path = folder / name
        path.write_text(path.read_text(encoding="utf-8").replace("q 5", "q5").replace("doc 3", "doc3"), encoding="utf-8")
    return folder


def _last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


def test_eval_builds_then_reuses_index(toy, tmp_path):
    index_dir, run_file = tmp_path / "idx", tmp_path / "run.trec"
    args = ["eval", "--data-dir", str(toy), "--format", "json", "--index", str(index_dir)]
    res = CliRunner().invoke(main, args + ["--run-file", str(run_file)])
    assert res.exit_code == 0, res.output
    first = _last_json(res.stdout)
    assert first["build_s"] > 0 and not first["index_reused"] and (index_dir / "manifest.json").is_file()
    assert first["n_queries"] == 6 and first["n_docs"] == 30 and first["n_identical_dropped"] == 2
    assert first["ndcg@10"] >= 0.5 and first["mrr@10"] >= 0.5
    run = read_trec_run(run_file)
    best = {qid: max(docs, key=docs.get) for qid, docs in run.items()}
    assert best["q2"] == "9" and best["q3"] == "14" and best["q1"] == "0001"  # tides, penicillin, photosynthesis
    assert "14" not in run["14"] and "30" not in run["30"]
    assert all(len(docs) <= 100 for docs in run.values())

    res = CliRunner().invoke(main, args + ["--exhaustive"])
    assert res.exit_code == 0, res.output
    again = _last_json(res.stdout)
    assert again["index_reused"] and again["build_s"] is None and again["exhaustive"]
    assert again["index_bytes"] == first["index_bytes"]
    assert again["ndcg@10"] == pytest.approx(first["ndcg@10"], abs=0.05)  # 30 docs: fast path is exact here


def test_bench_small_grid(toy, tmp_path):
    out = tmp_path / "bench"
    res = CliRunner().invoke(main, ["bench", "--data-dir", str(toy), "--out", str(out), "--no-peers",
                                    "--max-queries", "4", "--format", "json"])
    assert res.exit_code == 0, res.output
    report = _last_json(res.stdout)
    assert report["n_queries"] == 4 and report["n_docs"] == 30 and report["n_vectors"] > 30
    assert report["timings"]["encode_s"] > 0 and report["timings"]["index_s"] > 0
    rows = report["rows"]
    assert rows[0]["system"] == "xtrieve exhaustive"
    assert all(r["agree@10"] >= 0.9 for r in rows)
    assert (out / "bench.json").is_file() and (out / "bench.md").is_file()


def test_pooling_table_rows(toy, tmp_path):
    """Pooling-table rows from cached states: pooling x3 stores a third of the vectors, but at least
    the model's floor of each document's, as an index built from text would."""
    import xtrieve
    from xtrieve.encode.pooling import pooled_size
    from xtrieve.eval.beir_data import load_beir
    from xtrieve.eval.pooling_table import main as table_main, table_rows

    rows = table_rows(toy, [("default", None, [1, 3])], cache_dir=str(tmp_path / "cache"))
    by_pf = {r["pool_factor"]: r for r in rows}
    assert by_pf[1]["n_vectors"] == by_pf[1]["n_tokens"] == by_pf[3]["n_tokens"]
    enc = xtrieve.Encoder.load()
    _, counts = enc.encode_documents_with_counts([d["text"] for d in load_beir(toy, "test").documents()[0]], pool_factor=1)
    assert sum(counts) == by_pf[1]["n_vectors"]
    assert by_pf[3]["n_vectors"] == sum(pooled_size(n, 3, enc.config.pool_min_vectors) for n in counts)
    assert all(0 < r["ndcg@10"] <= 1 and r["index_bytes"] > 0 for r in rows)
    out = tmp_path / "rows.json"
    table_main(["--data-dir", str(toy), "--model", "m=default:1", "--cache-dir", str(tmp_path / "cache"),
                "--json", str(out)])
    assert json.loads(out.read_text())[0]["n_vectors"] == by_pf[1]["n_vectors"]
