"""`xtrieve eval` / `bench` on the real BEIR sets in ../shared/data (skipped when absent)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from xtrieve.cli.main import main

pytestmark = pytest.mark.slow

BEIR = Path(__file__).resolve().parents[2].parent / "shared" / "data" / "beir"

# Floors well under the measured figures (see the README / bench outputs), so a
# regression in encode, index or search shows up without flaking on noise.
FLOORS = {"scifact": 0.55, "nfcorpus": 0.25}


def _need(name: str) -> Path:
    folder = BEIR / name
    if not (folder / "corpus.jsonl").is_file():
        pytest.skip(f"{folder} is absent")
    return folder


def _last_json(output: str) -> dict:
    return json.loads(output.strip().splitlines()[-1])


@pytest.mark.parametrize("name", sorted(FLOORS))
def test_eval_real_dataset(name, tmp_path):
    folder = _need(name)
    res = CliRunner().invoke(main, ["eval", "--data-dir", str(folder), "--format", "json",
                                    "--run-file", str(tmp_path / "run.trec")])
    assert res.exit_code == 0, res.output
    out = _last_json(res.stdout)
    n_judged = len({line.split("\t")[0] for line in (folder / "qrels" / "test.tsv").read_text().splitlines()[1:]
                    if line.strip()})
    assert out["n_queries"] == n_judged
    assert out["ndcg@10"] >= FLOORS[name], out
    assert out["recall@100"] >= out["ndcg@10"] - 0.2
    assert out["p50_ms"] > 0 and out["index_bytes"] > 0 and out["build_s"] > 0


def test_bench_real_scifact_small(tmp_path):
    folder = _need("scifact")
    res = CliRunner().invoke(main, ["bench", "--data-dir", str(folder), "--grid", "small", "--max-queries", "100",
                                    "--out", str(tmp_path), "--format", "json"])
    assert res.exit_code == 0, res.output
    report = _last_json(res.stdout)
    exhaustive, *fast = [r for r in report["rows"] if r["system"].startswith("xtrieve")]
    assert exhaustive["ndcg@10"] >= FLOORS["scifact"] - 0.05
    best = max(fast, key=lambda r: r["ndcg@10"])
    assert best["ndcg@10"] >= exhaustive["ndcg@10"] - 0.02, "the fast path should come close to exhaustive MaxSim"
    assert best["agree@10"] >= 0.8
    assert (tmp_path / "bench.md").is_file()
