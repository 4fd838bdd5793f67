"""CLI index commands (build, add, delete, compact, info) through click's CliRunner."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

import xtrieve
from xtrieve.cli.main import main
from helpers import WordHashEncoder

DIM = 8


def FakeEncoder():
    return WordHashEncoder(DIM)


@pytest.fixture(autouse=True)
def fake_model(monkeypatch):
    from xtrieve.encode.encoder import Encoder

    monkeypatch.setattr(Encoder, "load", classmethod(lambda cls, name=None, **kw: FakeEncoder()))


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


@pytest.fixture
def corpus(tmp_path):
    f = tmp_path / "corpus.jsonl"
    rows = [{"_id": f"doc{i}", "title": f"title {i}", "text": f"text number {i} words", "year": 2000 + i,
             "metadata": {}} for i in range(12)]
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return f


def test_version_and_help():
    assert run("--version").output.strip().endswith(xtrieve.__version__)
    out = run("--help").output
    for cmd in ("build", "add", "delete", "compact", "info"):
        assert cmd in out


def test_build_info_add_delete_compact(tmp_path, corpus):
    ix = tmp_path / "ix"
    r = run("build", ix, "--corpus", corpus, "--batch-size", "5", "--faiss", "Flat")
    assert r.exit_code == 0, r.output
    info = json.loads(run("info", ix, "--format", "json").output)
    assert {"n_docs", "n_tokens", "n_vectors", "dim", "n_segments", "bytes", "model"} <= set(info)
    assert (info["n_docs"], info["dim"], info["model"], info["faiss"]) == (12, DIM, "fake", ["Flat"])
    assert info["metadata_columns"] == {"year": "int64"}
    assert "metadata_columns  year (int64)" in run("info", ix).output
    model_dir = next(p for p in ix.iterdir() if p.name.startswith("encoder"))
    assert info["model_bytes"] == sum(p.stat().st_size for p in model_dir.rglob("*") if p.is_file()) > 0
    idx = xtrieve.Index.open(ix, encoder=FakeEncoder())
    assert idx.get("doc3")["year"] == 2003 and idx.get("doc3")["title"] == "title 3"

    more = tmp_path / "more.csv"
    more.write_text('id,title,text,year\nc1,t,"csv text, with comma",2020\nc2,,plain,2021\n')
    assert run("add", ix, "--corpus", more).exit_code == 0
    ids = tmp_path / "ids.txt"
    ids.write_text("doc1\n\ndoc2\n")
    r = run("delete", ix, "doc0", "--ids-file", ids)
    assert r.exit_code == 0, r.output
    assert run("compact", ix).exit_code == 0
    table = run("info", ix).output
    assert "n_docs" in table and " 11" in table
    info = json.loads(run("info", ix, "--format", "json").output)
    assert (info["n_docs"], info["n_deleted"], info["n_segments"]) == (11, 0, 1)


def test_add_replace(tmp_path, corpus):
    ix = tmp_path / "ix"
    assert run("build", ix, "--corpus", corpus, "--faiss", "Flat").exit_code == 0
    update = tmp_path / "update.jsonl"
    update.write_text(json.dumps({"_id": "doc3", "title": "new title", "text": "rewritten", "year": 2024}) + "\n"
                      + json.dumps({"_id": "doc99", "text": "brand new", "year": 2025}) + "\n")
    refused = run("add", ix, "--corpus", update)
    assert refused.exit_code != 0 and "already in the index: 'doc3'" in refused.output and "--replace" in refused.output
    r = run("add", ix, "--corpus", update, "--replace")
    assert r.exit_code == 0 and "added 2 docs" in r.output and "replacing those already there" in r.output
    assert "(13 docs now)" in r.output
    idx = xtrieve.Index.open(ix, encoder=FakeEncoder())
    assert idx.get("doc3")["title"] == "new title" and idx.get("doc3")["year"] == 2024 and len(idx) == 13


def test_delete_by_filter(tmp_path, corpus):
    ix = tmp_path / "ix"
    assert run("build", ix, "--corpus", corpus, "--faiss", "Flat").exit_code == 0
    r = run("delete", ix, "--filter", "year >= 2008")
    assert r.exit_code == 0 and "deleted 4 docs" in r.output and "(8 docs left)" in r.output
    both = run("delete", ix, "doc1", "--filter", "year == 2001")
    assert both.exit_code != 0 and "not both" in both.output
    unknown = run("delete", ix, "--filter", "yeer == 2001")
    assert unknown.exit_code != 0 and "yeer" in unknown.output
    assert run("delete", ix, "--filter", "year > 3000").output.startswith("deleted 0 docs")
    assert run("delete", ix, "doc1", "gone").exit_code != 0
    r = run("delete", ix, "doc1", "gone", "--missing-ok")
    assert r.exit_code == 0 and r.output.startswith("deleted 1 doc from") and "(7 docs left)" in r.output


def test_parquet_and_txt_folder(tmp_path):
    pq.write_table(pa.table({"id": ["p1", "p2"], "text": ["parquet one", "parquet two"], "score": [1.5, 2.5]}),
                   tmp_path / "c.parquet")
    assert run("build", tmp_path / "a", "--corpus", tmp_path / "c.parquet").exit_code == 0
    folder = tmp_path / "txt"
    folder.mkdir()
    (folder / "alpha.txt").write_text("first file")
    (folder / "beta.txt").write_text("second file")
    r = run("build", tmp_path / "b", "--corpus", folder, "--vector-storage", "int8")
    assert r.exit_code == 0, r.output
    idx = xtrieve.Index.open(tmp_path / "b", encoder=FakeEncoder())
    assert sorted(idx.snapshot.segments[0].doc_ids) == ["alpha", "beta"]
    assert xtrieve.Index.open(tmp_path / "a", encoder=FakeEncoder()).get("p2")["score"] == 2.5


@pytest.mark.parametrize("content, name, message", [
    ("", "empty.jsonl", "is empty"),
    ('{"_id": "a", "text": "x"}\n{"_id": "a", "text": "y"}\n', "dup.jsonl", "duplicate id"),
    ('{"_id": "a", "text": "  "}\n', "blank.jsonl", "empty text"),
    ('{"_id": "a"}\n', "notext.jsonl", "missing 'text'"),
    ('{"_id": "a", "text": \n', "broken.jsonl", "not valid JSON"),
    ("x", "corpus.xml", "unknown corpus format"),
    ("not gzip data", "corpus.jsonl.gz", "cannot read"),
])
def test_bad_corpus(tmp_path, content, name, message):
    f = tmp_path / name
    f.write_text(content)
    r = run("build", tmp_path / "ix", "--corpus", f)
    assert r.exit_code == 1
    last = r.output.strip().splitlines()[-1]
    assert last.startswith("error:") and message in last
    assert not (tmp_path / "ix").exists()


def test_errors_are_one_line(tmp_path, corpus):
    ix = tmp_path / "ix"
    r = run("build", ix, "--corpus", tmp_path / "missing.jsonl")
    assert r.exit_code == 1 and "corpus not found" in r.output
    r = run("info", tmp_path)
    assert r.exit_code == 1 and "not an xtrieve index" in r.output
    assert run("build", ix, "--corpus", corpus).exit_code == 0
    r = run("build", ix, "--corpus", corpus)
    assert r.exit_code == 1 and "already exists" in r.output
    r = run("delete", ix, "nope1", "nope2")
    assert r.exit_code == 1 and "not in the index" in r.output and "nope2" in r.output
    r = run("delete", ix)
    assert r.exit_code == 1 and "no ids" in r.output
    r = run("add", ix, "--corpus", corpus)
    assert r.exit_code == 1 and "duplicate id" in r.output
    r = run("build", tmp_path / "ix3", "--corpus", corpus, "--faiss", "Bogus99")
    assert r.exit_code == 1 and "FAISS factory" in r.output
    (ix / "manifest.json").write_text("{")
    r = run("info", ix)
    assert r.exit_code == 1 and "corrupt manifest" in r.output
