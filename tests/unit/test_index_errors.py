"""Index stage: bad input gives one clear error and loses nothing committed."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

import xtrieve
from xtrieve.config import IndexConfig
from xtrieve.errors import ConfigError, FilterError, IndexFormatError, InputError, ModelMismatchError
from helpers import WordHashEncoder

DIM = 8


def FakeEncoder(dim=DIM, name="fake", head="0" * 64):
    return WordHashEncoder(dim, name, head)


def rand(n, rows=3, dim=DIM, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((rows, dim)).astype(np.float32) for _ in range(n)]


@pytest.fixture
def idx(tmp_path):
    return xtrieve.Index.build(tmp_path / "ix", [{"id": "a", "text": "alpha beta"}, {"id": "b", "text": "gamma"}],
                               encoder=FakeEncoder())


def generation(path):
    return json.loads((path / "manifest.json").read_text())["generation"]


@pytest.mark.parametrize("docs, message", [
    ([{"id": "x", "text": "one"}, {"id": "x", "text": "two"}], "duplicate id.*in the input: 'x'"),
    ([{"id": "a", "text": "one"}], "duplicate id.*already in the index: 'a'"),
    ([{"id": "x", "text": "   "}], "document 'x': empty text"),
    (["ok", ""], "document 1: empty text"),
    ([{"text": "no id"}], "missing 'id'"),
    ([{"id": "x", "body": "no text"}], "missing 'text'"),
    ([], "no documents"),
    ([{"id": "x", "text": "t", "doc_id": 3}], "reserved"),
    ([42], "expected a string or a dict"),
    ("a single string", "not a single str"),
])
def test_bad_documents_commit_nothing(idx, tmp_path, docs, message):
    with pytest.raises(InputError, match=message):
        idx.add(docs)
    assert generation(tmp_path / "ix") == 1 and len(xtrieve.Index.open(tmp_path / "ix", encoder=FakeEncoder())) == 2
    assert sorted(p.name for p in (tmp_path / "ix").iterdir() if p.name.startswith("seg-")) == ["seg-000001"]


def test_failure_in_a_later_batch_removes_new_segments(tmp_path, idx):
    docs = [{"id": f"n{i}", "text": f"word{i}"} for i in range(30)] + [{"id": "n0", "text": "dup"}]
    idx2 = xtrieve.Index.build(tmp_path / "ix2", docs[:1], encoder=FakeEncoder(), config={"batch_size": 4, "docs_per_segment": 8})
    with pytest.raises(InputError, match="duplicate"):
        idx2.add(docs[1:] + [{"id": "n5", "text": "again"}])
    assert len(list((tmp_path / "ix2").glob("seg-*"))) == 1 and generation(tmp_path / "ix2") == 1


@pytest.mark.parametrize("docs, message", [
    ([{"id": "x", "text": "one"}, {"id": "x", "text": "two"}], "in the input"),
    ([{"id": "a", "text": "one"}], "already in the index"),
    ([{"id": "y", "text": "one", "year": "twenty"}], "'year' holds int64 values"),
])
def test_ids_and_metadata_types_are_refused_before_any_document_is_encoded(idx, docs, message, monkeypatch):
    idx.add([{"id": "m1", "text": "x", "year": 2020}])
    encoded = []
    enc = idx.encoder
    monkeypatch.setattr(enc, "encode", lambda texts, *a, **k: encoded.append(texts))
    with pytest.raises(InputError, match=message):
        idx.add(docs)
    assert encoded == []


def test_a_type_clash_within_one_input_does_not_blame_the_index(tmp_path):
    idx = xtrieve.Index.build_from_embeddings(tmp_path / "ix", ["a"], rand(1), config={"batch_size": 2})
    with pytest.raises(InputError, match="metadata column 'tag': string and int64 values do not mix$"):
        idx.add_embeddings(["b", "c", "d"], rand(3, seed=1), metadata=[{"tag": "x"}, {"tag": "y"}, {"tag": 5}])


def test_metadata_type_clash(idx):
    idx.add([{"id": "m1", "text": "x", "year": 2020}])
    with pytest.raises(InputError, match="year"):
        idx.add([{"id": "m2", "text": "y", "year": "twenty"}])
    with pytest.raises(InputError, match="year"):
        idx.add([{"id": "m3", "text": "y", "year": 1}, {"id": "m4", "text": "z", "year": "x"}])


@pytest.mark.parametrize("emb, message", [
    (np.zeros((3, 5), np.float32), "dim 5, the index has dim 8"),
    (np.zeros(8, np.float32), "must be 2-D"),
    (np.zeros((0, 8), np.float32), "0 rows"),
    (np.full((2, 8), np.nan, np.float32), "NaN or infinite"),
    (np.full((2, 8), np.inf), "NaN or infinite"),
    (np.full((2, 8), 1e39), "too large to store"),  # (beyond float32: the cast made it inf)
    ("text", "not an array of numbers"),
    (np.ones((2, 8)) * 1j, "complex numbers"),
])
def test_bad_embeddings(tmp_path, emb, message):
    ix = xtrieve.Index.build_from_embeddings(tmp_path / "e", ["a"], rand(1))
    with pytest.raises(InputError, match=message):
        ix.add_embeddings(["b"], [emb])
    assert generation(tmp_path / "e") == 1


def test_bad_embedding_builds(tmp_path):
    with pytest.raises(InputError, match="empty ids"):
        xtrieve.Index.build_from_embeddings(tmp_path / "e", [], [])
    with pytest.raises(InputError, match="2 ids but 1 embeddings$"):
        xtrieve.Index.build_from_embeddings(tmp_path / "e", ["a", "b"], rand(1))
    with pytest.raises(InputError, match="1 ids but 3 embeddings: embeddings is one 2-D array"):
        xtrieve.Index.build_from_embeddings(tmp_path / "e", ["a"], rand(1)[0])
    with pytest.raises(InputError, match="dim 4, the index has dim 8"):
        xtrieve.Index.build_from_embeddings(tmp_path / "e", ["a", "b"], rand(1) + rand(1, dim=4))
    for ids, embeddings, metadata, what in ((7, rand(1), None, "ids"), ("ab", rand(2), None, "ids"),
                                            (["a"], 5, None, "embeddings"), (["a"], rand(1), 5, "metadata")):
        with pytest.raises(InputError, match=f"{what} must be a list with one item per document"):
            xtrieve.Index.build_from_embeddings(tmp_path / "e", ids, embeddings, metadata)
    assert not (tmp_path / "e").exists()  # a failed build leaves nothing behind
    with pytest.raises(ConfigError, match="FAISS factory"):
        xtrieve.Index.build_from_embeddings(tmp_path / "e", ["a"], rand(1), config={"faiss_factory": "Nonsense12"})


def test_build_over_existing_index(tmp_path, idx):
    with pytest.raises(InputError, match="already exists"):
        xtrieve.Index.build(tmp_path / "ix", ["new"], encoder=FakeEncoder())
    assert len(idx.refresh()) == 2
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        xtrieve.Index.build(tmp_path / "other", ["new"], encoder=FakeEncoder(), overwrite=True)
    assert (tmp_path / "other" / "notes.txt").exists()
    again = xtrieve.Index.build(tmp_path / "ix", ["new"], encoder=FakeEncoder(), overwrite=True)
    assert len(again) == 1


def test_failed_overwrite_keeps_the_old_index(tmp_path, idx):
    with pytest.raises(InputError, match="empty"):
        xtrieve.Index.build(tmp_path / "ix", ["fine", "   "], encoder=FakeEncoder(), overwrite=True)
    assert len(xtrieve.Index.open(tmp_path / "ix", encoder=FakeEncoder())) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ix"]  # no staging folder left behind


def test_overwrite_commits_in_place_as_a_later_generation(tmp_path, idx):
    ix = tmp_path / "ix"
    before = generation(ix)
    reader = xtrieve.Index.open(ix, encoder=FakeEncoder())
    other = FakeEncoder(name="other", head="1" * 64)
    xtrieve.Index.build(ix, [{"id": "n1", "text": "new words"}], encoder=other, overwrite=True)
    assert generation(ix) == before + 1  # one commit swapped the whole index
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ix"]  # nothing built beside it
    names = sorted(p.name for p in ix.iterdir())
    assert [n for n in names if n.startswith("encoder")] == ["encoder-g000002"]  # the old encoder/ is gone
    assert len([n for n in names if n.startswith("seg-")]) == 1
    assert reader.refresh().get("a") is None and reader.get("n1") is not None
    assert reader.snapshot.encoder_identity["name"] == "other"
    assert [h.doc_id for h in reader.search(other.encode(["new"], True).vectors[0], k=1)] == ["n1"]
    reader.add(["more text"], encoder=other)  # a write through the refreshed reader lands on the new index
    assert len(xtrieve.Index.open(ix)) == 2


def test_a_stale_reader_whose_encoder_folder_is_gone_is_told_to_refresh(tmp_path, idx):
    ix = tmp_path / "ix"
    stale = xtrieve.Index.open(ix)  # no encoder loaded yet
    xtrieve.Index.build(ix, ["new words"], encoder=FakeEncoder(name="other", head="1" * 64), overwrite=True)
    with pytest.raises(IndexFormatError, match=r"rebuilt since .* call refresh\(\)"):
        stale.encoder
    assert stale.refresh().snapshot.encoder_identity["name"] == "other"


def test_refresh_sees_an_index_replaced_at_the_same_generation(tmp_path):
    ix = tmp_path / "ix"
    xtrieve.Index.build_from_embeddings(ix, ["old1", "old2"], rand(2))
    stale = xtrieve.Index.open(ix)
    stale.add_embeddings(["old3"], rand(1, seed=1))  # generation 2
    (ix / "manifest.json").unlink()  # replaced by other means: generations start again
    for p in ix.iterdir():
        if p.is_dir():
            shutil.rmtree(p)
    xtrieve.Index.build_from_embeddings(ix, ["new1"], rand(1, seed=2))
    xtrieve.Index.open(ix).add_embeddings(["new2"], rand(1, seed=3))  # generation 2 again
    assert stale.refresh().get("old1") is None and stale.get("new2") is not None


def test_a_crash_before_the_overwrite_commits_keeps_the_old_index(tmp_path, idx, monkeypatch):
    import xtrieve.index.writer as writer

    def crash(root, manifest):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer, "write_manifest", crash)
    with pytest.raises(OSError):
        xtrieve.Index.build(tmp_path / "ix", ["new"], encoder=FakeEncoder(name="other", head="1" * 64), overwrite=True)
    monkeypatch.undo()
    again = xtrieve.Index.open(tmp_path / "ix")
    assert all(again.get(i) is not None for i in ("a", "b")) and len(again) == 2
    assert again.snapshot.encoder_identity["name"] == "fake"
    assert sorted(p.name for p in (tmp_path / "ix").iterdir() if p.name.startswith(("seg-", "encoder"))) == \
        ["encoder", "seg-000001"]  # the unfinished new segment and encoder were removed


def test_auto_ids_are_never_handed_out_twice(tmp_path):
    idx = xtrieve.Index.build(tmp_path / "ix", ["one", "two"], encoder=FakeEncoder())
    assert idx.get("0") is not None and idx.get("1") is not None
    idx.delete(["0", "1"])
    assert idx.add(["three"]) == ["2"]


def test_a_failed_merge_does_not_undo_a_committed_add(tmp_path, idx, monkeypatch, caplog):
    import xtrieve.index.writer as writer

    def full_disk(self):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writer.WriteSession, "maybe_merge", full_disk)
    assert idx.add([{"id": "c", "text": "delta"}]) == ["c"]
    assert len(xtrieve.Index.open(tmp_path / "ix")) == 3 and "merging segments" in caplog.text


@pytest.mark.parametrize("first, second", [(5, __import__("decimal").Decimal("1.25")), (2**60 + 1, 0.5)])
def test_metadata_types_that_unify_but_do_not_convert(tmp_path, first, second):
    ix = tmp_path / "ix"
    idx = xtrieve.Index.build_from_embeddings(ix, ["a"], rand(1), metadata=[{"n": first}])
    with pytest.raises(InputError, match="metadata column 'n'"):
        idx.add_embeddings(["b"], rand(1, seed=1), metadata=[{"n": second}])
    again = xtrieve.Index.open(ix)  # nothing committed: it opens, searches and takes writes
    assert len(again) == 1 and generation(ix) == 1
    again.add_embeddings(["c"], rand(1, seed=2), metadata=[{"n": first}])
    assert sorted(h.doc_id for h in again.search(rand(1)[0], k=5, filter=f"n == {first}")) == ["a", "c"]


def test_nested_metadata_is_flattened_on_every_add_path(tmp_path):
    idx = xtrieve.Index.build_from_embeddings(tmp_path / "ix", ["a", "b"], rand(2),
                                              metadata=[{"meta": {"x": 1}}, {"meta": {"x": 2}}])
    assert [h.doc_id for h in idx.search(rand(1)[0], k=5, filter="meta.x == 2")] == ["b"]


def test_model_mismatch(tmp_path, idx):
    other = FakeEncoder(name="other", head="1" * 64)
    with pytest.raises(ModelMismatchError, match="differs"):
        xtrieve.Index.open(tmp_path / "ix", encoder=other)
    with pytest.raises(ModelMismatchError):
        idx.add([{"id": "z", "text": "zz"}], encoder=other)
    assert generation(tmp_path / "ix") == 1
    emb = xtrieve.Index.build_from_embeddings(tmp_path / "e", ["a"], rand(1))
    with pytest.raises(ModelMismatchError, match="dim"):
        xtrieve.Index.open(tmp_path / "e", encoder=FakeEncoder(dim=4))
    with pytest.raises(InputError, match="no encoder"):
        emb.add(["text"])
    with pytest.raises(InputError, match="no encoder"):
        emb.search("a string query")


def test_model_mismatch_in_a_document_side_setting(tmp_path, idx):
    fused = WordHashEncoder(DIM, "fake", "0" * 64, dense_weight=0.5)  # same name and head, other scores
    with pytest.raises(ModelMismatchError, match="dense_weight"):
        xtrieve.Index.open(tmp_path / "ix", encoder=fused)
    with pytest.raises(ModelMismatchError, match="dense_weight"):
        idx.add(["more"], encoder=fused)
    assert generation(tmp_path / "ix") == 1


def test_wrong_types_of_encoder_config_and_queries(tmp_path, idx):
    with pytest.raises(InputError, match="encoder must be"):
        xtrieve.Index.open(tmp_path / "ix", encoder=42)
    with pytest.raises(InputError, match="encoder must be"):
        xtrieve.Index.build(tmp_path / "new", ["a"], encoder=object())
    with pytest.raises(ConfigError, match="IndexConfig or a dict"):
        xtrieve.Index.build(tmp_path / "new", ["a"], encoder=FakeEncoder(), config="fast")
    with pytest.raises(ConfigError, match="SearchConfig or a dict"):
        idx.search("a", config=IndexConfig())
    with pytest.raises(InputError, match="list of queries"):
        idx.search_batch(None)
    assert not (tmp_path / "new").exists()


def test_not_an_index(tmp_path):
    with pytest.raises(IndexFormatError, match="not an xtrieve index: no manifest.json in"):
        xtrieve.Index.open(tmp_path)
    with pytest.raises(IndexFormatError, match="does not exist"):
        xtrieve.Index.open(tmp_path / "missing")


def test_search_input_checks(idx):
    with pytest.raises(InputError, match="search_batch"):
        idx.search(["q1", "q2"])
    with pytest.raises(InputError, match="list of queries"):
        idx.search_batch("one string")
    assert idx.search_batch([]) == []
    with pytest.raises(InputError, match="not a mapping .* list\\(queries.values\\(\\)\\)"):  # it would search the ids
        idx.search_batch({"q1": "alpha", "q2": "gamma"})
    with pytest.raises(InputError, match="query 0: a tuple holding texts"):
        idx.search_batch([("q1", "alpha")])


def test_docs_and_ids_of_the_wrong_type(tmp_path, idx):
    with pytest.raises(InputError, match="iterable of documents"):
        xtrieve.Index.build(tmp_path / "new", None, encoder=FakeEncoder())
    with pytest.raises(InputError, match="iterable of documents"):
        idx.add(42)
    with pytest.raises(InputError, match="iterable of ids"):
        idx.delete(None)
    with pytest.raises(InputError, match="not in the index"):
        idx.delete(12345)  # an int is one id, as auto ids are
    assert generation(tmp_path / "ix") == 1 and not (tmp_path / "new").exists()


def test_auto_ids_skip_ids_given_earlier_in_the_input(tmp_path):
    built = xtrieve.Index.build(tmp_path / "auto", [{"id": "0", "text": "given"}, "auto"], encoder=FakeEncoder())
    assert sorted(built.snapshot.segments[0].doc_ids) == ["0", "1"]


def test_auto_ids_skip_ids_given_later_in_a_list(tmp_path):
    built = xtrieve.Index.build(tmp_path / "auto", ["auto", {"id": "0", "text": "given"}], encoder=FakeEncoder())
    assert sorted(built.snapshot.segments[0].doc_ids) == ["0", "1"]
    assert built.get("0")["text"] == "given"


def test_a_stream_whose_later_id_was_handed_out_says_so(tmp_path):
    docs = iter(["auto", {"id": "0", "text": "given"}])
    with pytest.raises(InputError, match="already given automatically"):
        xtrieve.Index.build(tmp_path / "auto", docs, encoder=FakeEncoder())
    assert not (tmp_path / "auto" / "manifest.json").exists()


@pytest.mark.parametrize("doc, message", [
    ({"id": "a", "text": "x", "m.k": 1, "m": {"k": 2}}, "'m.k' is given twice"),
    ({"id": "a", "_id": "b", "text": "x"}, "both 'id'"),
])
def test_documents_that_name_one_field_twice(tmp_path, doc, message):
    with pytest.raises(InputError, match=message):
        xtrieve.Index.build(tmp_path / "ix", [doc], encoder=FakeEncoder())
    same = xtrieve.Index.build(tmp_path / "ok", [{"id": "a", "_id": "a", "text": "x"}], encoder=FakeEncoder())
    assert same.snapshot.segments[0].doc_ids == ["a"]


def test_search_batch_takes_arrays_of_queries(tmp_path):
    idx = xtrieve.Index.build(tmp_path / "ix", ["alpha beta", "gamma delta"], encoder=FakeEncoder())
    texts = np.array(["alpha", "gamma"])
    assert idx.search_batch(texts, k=1) == idx.search_batch(list(texts), k=1)
    stacked = np.stack(rand(2, rows=3))  # [n_queries, n_tokens, dim]
    assert idx.search_batch(stacked, k=1) == idx.search_batch(list(stacked), k=1)
    with pytest.raises(InputError, match="use search"):
        idx.search_batch(stacked[0])


def test_a_builder_that_does_not_get_the_lock_leaves_the_folder_alone(tmp_path, monkeypatch):
    import contextlib

    import xtrieve.index.writer as writer
    from xtrieve.errors import IndexLockedError

    ix = tmp_path / "ix"

    @contextlib.contextmanager
    def taken(root, wait=0.0):  # another builder created the folder first and holds its lock
        (root / "seg-000001").mkdir()
        raise IndexLockedError(f"{root} is locked")
        yield

    monkeypatch.setattr(writer, "WriterLock", taken)
    with pytest.raises(IndexLockedError):
        xtrieve.Index.build_from_embeddings(ix, ["a"], rand(1))
    assert (ix / "seg-000001").is_dir()  # the other builder's work is still there


def test_metadata_of_an_older_index_that_does_not_convert_still_opens_and_filters(tmp_path, monkeypatch):
    import xtrieve.index.segment as segment
    import xtrieve.index.writer as writer

    ix = tmp_path / "ix"
    for module in (writer, segment):  # as an index written before adds checked this
        monkeypatch.setattr(module, "check_one_type_per_column", lambda *a, **k: None)
    idx = xtrieve.Index.build_from_embeddings(ix, ["a"], rand(1), metadata=[{"n": 2**60 + 1, "m": 1}])
    idx.add_embeddings(["b"], rand(1, seed=1), metadata=[{"n": 0.5}])
    monkeypatch.undo()
    again = xtrieve.Index.open(ix)
    q = rand(1)[0]
    assert [h.doc_id for h in again.search(q, k=5, filter="m == 1")] == ["a"]
    assert sorted(h.doc_id for h in again.search(q, k=5, filter="n is not null")) == ["a", "b"]
    with pytest.raises(FilterError, match="cannot be applied"):  # 2**60 + 1 has no float64 to compare
        again.search(q, k=5, filter="n == 0.5")
    again.add_embeddings(["c"], rand(1, seed=2), metadata=[{"m": 2}])  # columns it does not hold are not re-checked
    assert len(again) == 3


def test_refresh_keeps_a_given_encoder_when_the_model_stays(tmp_path, idx):
    enc = FakeEncoder()
    reader = xtrieve.Index.open(tmp_path / "ix", encoder=enc)
    xtrieve.Index.build(tmp_path / "ix", ["new words"], encoder=FakeEncoder(), overwrite=True)
    assert reader.refresh().encoder is enc and len(reader) == 1


def test_values_that_clash_within_one_segment_are_an_input_error(tmp_path):
    with pytest.raises(InputError, match="metadata column 'n'"):
        xtrieve.Index.build_from_embeddings(tmp_path / "ix", ["a", "b"], rand(2), config={"batch_size": 1},
                                            metadata=[{"n": 2**60 + 1}, {"n": 0.5}])
    assert not (tmp_path / "ix").exists()


def test_only_the_index_own_encoder_folders_are_its_files(tmp_path, idx):
    ix = tmp_path / "ix"
    (ix / "encoder.bak").mkdir()
    (ix / "encoders-notes").mkdir()
    idx.delete(["b"])  # a writer collects garbage: names it did not make stay
    assert (ix / "encoder.bak").is_dir() and (ix / "encoders-notes").is_dir()
    (tmp_path / "new").mkdir()
    (tmp_path / "new" / "encoder.pt").write_text("mine")
    with pytest.raises(InputError, match="not empty.*encoder.pt"):
        xtrieve.Index.build(tmp_path / "new", ["text"], encoder=FakeEncoder())
    assert (tmp_path / "new" / "encoder.pt").exists()


def test_a_filter_on_a_column_whose_documents_are_all_deleted_matches_nothing(tmp_path):
    ix = tmp_path / "ix"
    idx = xtrieve.Index.build_from_embeddings(ix, ["a", "b"], rand(2), metadata=[{"year": 2001}, {"year": 2002}])
    idx.add_embeddings(["t1", "t2"], rand(2, seed=1), metadata=[{"tag": "x"}, {"tag": "y"}])
    q = rand(1)[0]
    assert [h.doc_id for h in idx.search(q, k=5, filter="tag == 'x'")] == ["t1"]
    idx.delete(["t1", "t2"])  # their segment goes, and with it the column
    for f in ("tag == 'x'", "tag in ('x', 'y')", "not tag in ('x')"):
        assert idx.search(q, k=5, filter=f) == [], f
    assert len(idx.search(q, k=5, filter="tag is null")) == 2
    with pytest.raises(FilterError, match="unknown column 'colour'"):
        idx.search(q, k=5, filter="colour == 'red'")
    idx.delete(["a", "b"])
    assert xtrieve.Index.open(ix).search(q, k=5, filter="year > 2000") == []


def test_a_column_keeps_its_type_after_its_documents_are_deleted(tmp_path):
    ix = tmp_path / "ix"
    idx = xtrieve.Index.build_from_embeddings(ix, ["a"], rand(1), metadata=[{"year": 2000}])
    idx.add_embeddings(["b"], rand(1, seed=1), metadata=[{"lang": "en"}])
    idx.delete(["a"])  # the only segment with 'year' goes
    with pytest.raises(InputError, match="metadata column '.+' (holds .+ values in the index, these documents give|: .+ and .+ values do not mix)"):
        idx.add_embeddings(["c"], rand(1, seed=2), metadata=[{"year": "abc"}])
    assert generation(ix) == 3
    idx.add_embeddings(["d"], rand(1, seed=3), metadata=[{"year": 2.5}])  # int and float unify, as with live ones
    assert [h.doc_id for h in idx.search(rand(1)[0], k=5, filter="year == 2.5")] == ["d"]


def test_an_all_null_batch_does_not_forget_a_column_type(tmp_path):
    ix = tmp_path / "ix"
    idx = xtrieve.Index.build_from_embeddings(ix, ["a"], rand(1), metadata=[{"year": 2000}])
    idx.add_embeddings(["b"], rand(1, seed=1), metadata=[{"year": None}])
    assert json.loads((ix / "manifest.json").read_text())["columns"]["year"] == "int64"
    idx.delete(["a"])
    with pytest.raises(InputError, match="metadata column '.+' (holds .+ values in the index, these documents give|: .+ and .+ values do not mix)"):
        idx.add_embeddings(["c"], rand(1, seed=2), metadata=[{"year": "abc"}])


def test_opening_retries_while_writers_replace_the_commit(tmp_path, monkeypatch):
    import dataclasses

    import xtrieve.index.store as store
    from xtrieve.errors import IndexLockedError

    xtrieve.Index.build_from_embeddings(tmp_path / "ix", ["a"], rand(1))
    s = store.IndexStore.open(tmp_path / "ix")
    real_open, real_read = s._open, store.read_manifest
    calls = {"open": 0, "read": 0}

    def busy_open(manifest):  # a writer commits during each of the first 8 tries
        calls["open"] += 1
        if calls["open"] <= 8:
            raise FileNotFoundError(2, "gone", "seg-000001/docs.arrow")
        return real_open(manifest)

    def moving_read(root):
        calls["read"] += 1
        return dataclasses.replace(real_read(root), generation=calls["read"])

    monkeypatch.setattr(s, "_open", busy_open)
    monkeypatch.setattr(store, "read_manifest", moving_read)
    assert len(s.snapshot().segments) == 1 and calls["open"] == 9
    calls["open"] = -10**6  # never settles
    monkeypatch.setattr(store, "OPEN_PATIENCE_S", 0.05)
    with pytest.raises(IndexLockedError, match="try again"):
        s.snapshot()


def test_a_bad_faiss_factory_fails_before_any_document_is_encoded(tmp_path):
    class Counting(type(FakeEncoder())):
        calls = 0

        def encode(self, *a, **k):
            Counting.calls += 1
            return super().encode(*a, **k)

    with pytest.raises(ConfigError, match="FAISS factory 'garbage'"):
        xtrieve.Index.build(tmp_path / "ix", ["text"], encoder=Counting(DIM, "fake", "0" * 64),
                            config={"faiss_factory": "garbage"})
    assert Counting.calls == 0 and not (tmp_path / "ix").exists()


def test_an_expression_on_a_column_whose_documents_are_all_deleted_agrees_with_the_string(tmp_path):
    import pyarrow.compute as pc

    from xtrieve.index.manifest import ENCODER_DIR_NAME

    idx = xtrieve.Index.build_from_embeddings(tmp_path / "ix", ["a"], rand(1), metadata=[{"year": 2001}])
    idx.add_embeddings(["t1"], rand(1, seed=1), metadata=[{"tag": "x"}])
    idx.delete(["t1"])
    assert json.loads((tmp_path / "ix" / "manifest.json").read_text())["columns"]["tag"] == "string"
    q = rand(1)[0]
    assert idx.search(q, k=5, filter=pc.field("tag").isin(["x"])) == idx.search(q, k=5, filter="tag in ('x')") == []
    assert ENCODER_DIR_NAME.fullmatch("encoder-g1000000")  # past generation 999,999 too


def test_get_takes_one_id(idx):
    assert idx.get("a")["doc_id"] == "a" and idx.get("zzz") is None
    with pytest.raises(InputError, match="get takes one document id"):
        idx.get(["a"])


def test_the_pool_method_tells_models_apart_only_where_documents_are_pooled():
    from xtrieve.index.writer import model_difference

    def ident(**config):
        return {"name": "m", "head_sha256": "0" * 64, "dim": 8, "config": config}

    old = ident(doc_maxlen=180)  # an identity from before pool_method: pooled as "ward"
    assert model_difference(ident(doc_maxlen=180, pool_method="ward"), old) is None
    assert "pool_method ('pylate' vs 'ward')" in model_difference(ident(doc_maxlen=180, pool_method="pylate"), old)
    assert model_difference(ident(doc_maxlen=180, pool_method="pylate"), old, pooled=False) is None


def test_flags_paths_and_ids_of_the_wrong_type_are_named_before_anything_changes(tmp_path, idx):
    path = tmp_path / "ix"
    with pytest.raises(InputError, match="overwrite must be True or False, got 'false'"):  # a true string
        xtrieve.Index.build_from_embeddings(path, ["new"], rand(1), overwrite="false")
    assert len(xtrieve.Index.open(path, encoder=FakeEncoder())) == 2
    with pytest.raises(InputError, match="verify must be True or False"):
        xtrieve.Index.open(path, verify="no")
    with pytest.raises(InputError, match="show_progress must be True or False or None"):
        idx.add([{"id": "z", "text": "zeta"}], show_progress="no")
    for bad in (None, 3, b"/x"):
        with pytest.raises(InputError, match="path must be a folder path"):
            xtrieve.Index.open(bad)
    with pytest.raises(InputError, match="delete: id 0: id must be a string or an int, got NoneType"):
        idx.delete([None])
    with pytest.raises(InputError, match="k must be a positive integer"):
        idx.search_batch([], k=0)


def test_results_and_configs_behave_as_values():
    from xtrieve.config import EncoderConfig

    assert hash(xtrieve.Hit("a", 1.0, {"x": [1]})) == hash(xtrieve.Hit("a", 1.0, {"x": [1]}))
    cfg = EncoderConfig(skiplist_words=["b", "a"], head_steps=["tanh"])
    assert cfg == EncoderConfig(skiplist_words=("b", "a"), head_steps=("tanh",)) and hash(cfg) == hash(EncoderConfig(
        skiplist_words=("b", "a"), head_steps=("tanh",)))
    encoded = xtrieve.Encoded([np.zeros((3, 8), np.float32)] * 20, [3] * 20)
    assert len(repr(encoded)) < 120 and encoded == encoded


def test_text_that_is_not_valid_unicode_is_named(tmp_path, colbert_folder):
    """A lone surrogate (a JSON "\\ud83d" escape of a cut emoji, argv or file names read with
    surrogateescape) is an InputError naming where it is, not an encoder or Arrow traceback."""
    from xtrieve.encode.encoder import Encoder

    cut = json.loads('"caf\\u00e9 \\ud83d"')
    enc = FakeEncoder()
    idx = xtrieve.Index.build(tmp_path / "ix", [{"id": "a", "text": "cafe", "city": "x"}], encoder=enc)
    for doc, where in (({"id": "b", "text": cut}, "document 'b': its title or text"),
                       ({"id": "b", "text": "t", "title": cut}, "document 'b': its title or text"),
                       ({"id": cut, "text": "t"}, "document 0: id"),
                       ({"id": "b", "text": "t", "city": cut}, "document 'b': metadata column 'city'"),
                       ({"id": "b", "text": "t", "tags": ["ok", cut]}, "document 'b': metadata column 'tags'"),
                       ({"id": "b", "text": "t", cut: 1}, "metadata column")):
        with pytest.raises(InputError, match=f"{where}.*lone surrogate '\\\\ud83d' at character"):
            idx.add([doc])
    assert len(idx) == 1
    with pytest.raises(FilterError, match="filter: not valid Unicode"):
        idx.search("cafe", filter=f"city == '{cut}'")
    real = Encoder.load(colbert_folder[0])
    for call in (lambda: real.encode_queries([cut]), lambda: real.encode_documents(["fine", cut]),
                 lambda: xtrieve.rerank(cut, ["cafe"], encoder=real)):
        with pytest.raises(InputError, match="item [01]: not valid Unicode"):
            call()


def test_a_folder_of_index_like_names_that_held_no_index_is_not_emptied(tmp_path):
    mine = tmp_path / "mine"
    (mine / "encoder").mkdir(parents=True)
    (mine / "encoder" / "model.bin").write_text("mine")
    (mine / "seg-001.txt").write_text("a document")
    with pytest.raises(InputError, match="not empty.*seg-001.txt"):
        xtrieve.Index.build(mine, ["text"], encoder=FakeEncoder())
    (mine / "seg-001.txt").unlink()
    with pytest.raises(InputError, match="not empty.*encoder"):  # no index nor build was ever here
        xtrieve.Index.build(mine, ["text"], encoder=FakeEncoder())
    assert (mine / "encoder" / "model.bin").read_text() == "mine"


def test_garbage_collection_leaves_other_tools_files_in_segments_and_says_what_it_could_not_remove(
        tmp_path, idx, caplog, monkeypatch):
    import shutil

    ix = tmp_path / "ix"
    seg = next(p for p in ix.iterdir() if p.name.startswith("seg-"))
    (seg / ".stversions").mkdir()  # a sync tool's
    (seg / "notes.txt").write_text("mine")
    stale = ix / "seg-999999"
    stale.mkdir()

    def refuse(path, *a, **k):
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(shutil, "rmtree", refuse)
    with caplog.at_level("WARNING"):
        idx.delete(["b"])
    assert (seg / ".stversions").is_dir() and (seg / "notes.txt").exists() and stale.is_dir()
    assert "could not remove 1 unreferenced file(s)" in caplog.text and "Permission denied" in caplog.text


def test_a_write_where_the_lock_cannot_be_made_is_a_clear_error(tmp_path, idx, monkeypatch):
    import errno

    import filelock

    def refuse(self, *args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system", self.lock_file)

    monkeypatch.setattr(filelock.FileLock, "acquire", refuse)
    with pytest.raises(InputError, match="cannot be written here: .*Read-only file system.*can still be opened"):
        idx.delete(["a"])
    monkeypatch.undo()
    assert idx.refresh().get("a") is not None


def test_a_lock_file_that_is_a_link_is_a_clear_error(tmp_path, idx):
    """A folder from elsewhere may hold .lock as a link: the lock library refuses to follow it."""
    import os

    lock = idx.path / ".lock"
    if lock.exists():
        lock.unlink()
    os.symlink(tmp_path / "elsewhere", lock)
    with pytest.raises(InputError, match="writer lock .*cannot be made .*can still be opened"):
        idx.delete(["a"])
    assert not (tmp_path / "elsewhere").exists() and idx.refresh().get("a") is not None
