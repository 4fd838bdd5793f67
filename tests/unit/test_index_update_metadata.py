"""Index.update_metadata and `xtrieve update-metadata`: new metadata values, the stored vectors and text as they were."""
from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

import xtrieve
from helpers import WordHashEncoder, unit_token_docs
from xtrieve.cli.main import main
from xtrieve.config import IndexConfig
from xtrieve.errors import InputError

DIM = 16


def _stored(idx, doc_id):
    """(raw codes, scales, IVF lists) of a live document's stored vectors."""
    snap = idx.snapshot
    seg_no, local = snap.lookup(doc_id)
    seg = snap.segments[seg_no]
    rows = slice(int(seg.offsets[local]), int(seg.offsets[local + 1]))
    pick = [None if a is None else np.array(a[rows]) for a in (seg.vectors_raw, seg.scales, seg.lists)]
    return pick, seg


@pytest.fixture
def built(tmp_path):
    rng = np.random.default_rng(0)
    docs = unit_token_docs(rng, 30, DIM, 3, 9)
    meta = [{"year": 2000 + i, "lang": "en" if i % 2 else "fr", "author": {"name": f"a{i}", "mail": "m"}}
            for i in range(30)]
    idx = xtrieve.Index.build_from_embeddings(tmp_path / "ix", [f"d{i}" for i in range(30)], docs, meta)
    return idx, docs


def test_new_values_replace_old_ones_and_the_vectors_stay_as_stored(built):
    idx, docs = built
    before = {i: _stored(idx, i)[0] for i in ("d3", "d4", "d5")}
    queries = [docs[3], docs[4][:2], docs[9]]
    exact = [[(h.doc_id, h.score) for h in idx.search(q, k=8, exhaustive=True)] for q in queries]
    fast = [[h.doc_id for h in idx.search(q, k=8)] for q in queries]
    n = idx.update_metadata({"d3": {"year": 2030, "tag": "new"}, "d4": {"author": {"name": "b"}}, "d5": {"lang": None}})
    assert n == 3 and len(idx) == 30
    assert idx.get("d3") == {"doc_id": "d3", "year": 2030, "lang": "en", "author.name": "a3", "author.mail": "m",
                             "tag": "new"}
    assert idx.get("d4")["author.name"] == "b" and idx.get("d4")["author.mail"] is None  # a dict replaces the key's
    assert idx.get("d5")["lang"] is None and idx.get("d5")["year"] == 2005
    assert idx.get("d6")["tag"] is None and idx.get("d6")["year"] == 2006
    for doc_id, (raw, scales, lists) in before.items():
        now = _stored(idx, doc_id)[0]
        np.testing.assert_array_equal(now[0], raw)
        np.testing.assert_array_equal(now[1], scales)
    assert [[(h.doc_id, h.score) for h in idx.search(q, k=8, exhaustive=True)] for q in queries] == exact
    assert [[h.doc_id for h in idx.search(q, k=8)] for q in queries] == fast
    assert [h.doc_id for h in idx.search(docs[3], k=3, filter="year >= 2030")] == ["d3"]
    assert [h.doc_id for h in idx.search(docs[5], k=30, filter="lang == 'fr'")].count("d5") == 0
    reopened = xtrieve.Index.open(idx.path)
    assert reopened.get("d3")["tag"] == "new" and len(reopened) == 30


def test_a_filter_gives_every_match_the_same_values(built):
    idx, docs = built
    assert idx.update_metadata(filter="year < 2004", values={"archived": True}) == 4
    hits = idx.search(docs[0], k=30, filter="archived == true")
    assert sorted(h.doc_id for h in hits) == ["d0", "d1", "d2", "d3"]
    generation = idx.info().generation
    assert idx.update_metadata(filter="year > 3000", values={"archived": False}) == 0
    assert idx.info().generation == generation  # nothing matched: nothing written


@pytest.mark.parametrize("call, message", [
    (dict(updates={"d1": {"year": 1}, "zz": {"year": 2}}), "1 id\\(s\\) not in the index: 'zz'"),
    (dict(updates={"d1": {"text": "new"}}), "'text' is not metadata an update can change"),
    (dict(updates={"d1": {"title": "new"}}), "'title' is not metadata an update can change"),
    (dict(updates={"d1": {"id": "d9"}}), "'id' names the document; an update cannot change it"),
    (dict(updates={"d1": {}}), "document 'd1': no new values"),
    (dict(filter="year > 2010", values={}), "values: no new values"),
    (dict(updates={"d1": 2021}), "document 'd1': new metadata must be a dict"),
    (dict(updates={"d1": {"__x": 1}}), "metadata key '__x' is reserved"),
    (dict(updates={"d1": {"a": {"b": 1}, "a.b": 2}}), "metadata field 'a.b' is given twice"),
    (dict(updates={"d1": {"year": "soon"}}), "metadata column 'year' holds int64 values"),
    (dict(updates={1: {"x": 1}, "1": {"x": 2}}), "id '1' is given twice"),
    (dict(updates={}), "no documents to update"),
    (dict(updates=["d1"]), "updates must be a dict"),
    (dict(), "takes updates .* or filter= with values="),
    (dict(filter="year > 2010"), "values: new metadata must be a dict"),
    (dict(updates={"d1": {"x": 1}}, values={"x": 1}), "values= goes with filter="),
])
def test_bad_updates_are_input_errors_and_change_nothing(built, call, message):
    idx, _ = built
    generation, files = idx.info().generation, sorted(p.name for p in idx.path.iterdir())
    with pytest.raises(InputError, match=message):
        idx.update_metadata(**call)
    assert idx.info().generation == generation and idx.get("d1")["year"] == 2001
    assert sorted(p.name for p in idx.path.iterdir()) == files


@pytest.mark.parametrize("storage", ["int4", "float16"])
def test_other_storages_keep_their_codes(tmp_path, storage):
    rng = np.random.default_rng(2)
    docs = unit_token_docs(rng, 120, DIM, 6, 10)
    cfg = IndexConfig(flat_max_vectors=400, nlist=8, docs_per_segment=60, vector_storage=storage)
    idx = xtrieve.Index.build_from_embeddings(tmp_path / "ix", [f"d{i}" for i in range(120)], docs, config=cfg)
    assert idx.info().faiss[0].startswith("IVF8")
    before, seg = _stored(idx, "d70")
    exact = [(h.doc_id, h.score) for h in idx.search(docs[70], k=5, exhaustive=True)]
    idx.update_metadata({"d70": {"checked": True}})
    after, _ = _stored(idx, "d70")
    for old, new in zip(before, after):
        if old is not None:
            np.testing.assert_array_equal(new, old)
    assert [(h.doc_id, h.score) for h in idx.search(docs[70], k=5, exhaustive=True)] == exact


def test_text_indexes_keep_title_and_text(tmp_path):
    docs = [{"id": f"t{i}", "title": f"title {i}", "text": f"late interaction number {i} token search",
             "year": 2000 + i} for i in range(12)]
    idx = xtrieve.Index.build(tmp_path / "ix", docs, encoder=WordHashEncoder(DIM))
    hits = [(h.doc_id, h.score) for h in idx.search("number 4 token", k=5)]
    idx.update_metadata({"t4": {"year": 1999}})
    assert idx.get("t4") == {"doc_id": "t4", "title": "title 4", "text": "late interaction number 4 token search",
                             "year": 1999}
    assert [(h.doc_id, h.score) for h in idx.search("number 4 token", k=5)] == hits


def test_cli_update_metadata(built, tmp_path):
    idx, docs = built
    runner = CliRunner()
    r = runner.invoke(main, ["update-metadata", str(idx.path), "d1", "d2", "--set", "stars=5", "--set", "note=good"])
    assert r.exit_code == 0 and "updated the metadata of 2 docs" in r.output, r.output
    r = runner.invoke(main, ["update-metadata", str(idx.path), "--filter", "year >= 2028", "--set", "stars=null"])
    assert r.exit_code == 0 and "of 2 docs" in r.output, r.output
    updates = tmp_path / "u.jsonl"
    updates.write_text(json.dumps({"id": "d7", "stars": 3}) + "\n\n" + json.dumps({"_id": "d8", "tags": ["x"]}) + "\n",
                       encoding="utf-8")
    r = runner.invoke(main, ["update-metadata", str(idx.path), "--file", str(updates)])
    assert r.exit_code == 0, r.output
    idx.refresh()
    assert idx.get("d1")["stars"] == 5 and idx.get("d2")["note"] == "good" and idx.get("d29")["stars"] is None
    assert idx.get("d7")["stars"] == 3 and idx.get("d8")["tags"] == ["x"]
    for args, message in [
        (["d1"], "give the new values with --set"),
        (["--set", "a=1"], "give ids or --filter"),
        (["d1", "--filter", "year > 1", "--set", "a=1"], "give ids or --filter"),
        (["d1", "--file", str(updates)], "--file gives each document its own values"),
        (["zz", "--set", "a=1"], "error: 1 id(s) not in the index: 'zz'"),
        (["d1", "--set", "a"], "expected KEY=VALUE"),
        (["d1", "--set", "a=1", "--set", "a=2"], "'a' is given twice"),
    ]:
        r = runner.invoke(main, ["update-metadata", str(idx.path), *args])
        assert r.exit_code != 0 and message in r.output, (args, r.output)
    updates.write_text('{"stars": 1}\n', encoding="utf-8")
    r = runner.invoke(main, ["update-metadata", str(idx.path), "--file", str(updates)])
    assert r.exit_code == 1 and 'line 1: expected an object with an "id"' in r.output, r.output


def test_untouched_columns_keep_their_stored_values_and_types(tmp_path):
    rng = np.random.default_rng(4)
    docs = unit_token_docs(rng, 3, DIM, 3, 5)
    meta = [{"ts": np.datetime64("2020-01-01T00:00:00.123456789"), "f": np.float32(0.1), "small": np.int8(i),
             "big": np.uint64(2**63 + i)} for i in range(3)]
    idx = xtrieve.Index.build_from_embeddings(tmp_path / "ix", ["a", "b", "c"], docs, meta)
    before = idx.get("b")
    columns = dict(idx.snapshot.manifest.columns)
    idx.update_metadata({"b": {"note": "x"}, "c": {"ts": None}})
    assert idx.get("b") == {**before, "note": "x"}  # nanoseconds, uint64 over 2**63 as stored
    assert {k: v for k, v in idx.snapshot.manifest.columns.items() if k != "note"} == columns


def test_a_nested_key_does_not_clear_a_value_the_same_update_gives(built):
    idx, _ = built
    idx.update_metadata({"d1": {"author.mail": "new", "author": {"name": "b"}}})
    assert idx.get("d1")["author.name"] == "b" and idx.get("d1")["author.mail"] == "new"


def test_new_values_of_another_width_or_type(tmp_path):
    rng = np.random.default_rng(8)
    meta = [{"small": np.int8(i), "big": np.uint64(2**63 + i), "n": i} for i in range(3)]
    idx = xtrieve.Index.build_from_embeddings(tmp_path / "ix", ["a", "b", "c"], unit_token_docs(rng, 3, DIM, 3, 5),
                                              meta)
    idx.update_metadata({"a": {"big": 5}, "b": {"small": 7}})  # (c keeps its uint64 past 2**63)
    assert [idx.get(i)["big"] for i in "abc"] == [5, 2**63 + 1, 2**63 + 2]
    assert idx.get("b")["small"] == 7 and idx.snapshot.manifest.columns["small"] == "int8"
    idx.update_metadata({"c": {"small": 1000}})  # past int8: the column widens, as an add's would
    assert [idx.get(i)["small"] for i in "abc"] == [0, 7, 1000]
    with pytest.raises(InputError, match="metadata column 'n' holds int64 values"):
        idx.update_metadata({"a": {"n": "many"}})
