"""Index stage: documents as pandas and pyarrow give them, missing values, CSV/Parquet quirks,
and a later file's column types read as the index's."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
import torch
from click.testing import CliRunner

import xtrieve
from xtrieve.cli.main import main
from xtrieve.errors import IndexFormatError, InputError
from xtrieve.index.corpus import read_corpus
from helpers import WordHashEncoder

DIM = 8


def _vectors(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((3, DIM)).astype(np.float32) for _ in range(n)]


def test_a_dataframe_and_a_pyarrow_table_are_documents(tmp_path):
    pd = pytest.importorskip("pandas")
    enc = WordHashEncoder(DIM)
    frame = pd.DataFrame({"id": ["x1", "x2"], "text": ["alpha beta", "gamma delta"], "year": [2020, 2021]})
    idx = xtrieve.Index.build(tmp_path / "ix", frame, encoder=enc)
    assert sorted(idx.snapshot.live_ids()) == ["x1", "x2"]  # not its column names
    assert idx.get("x2")["year"] == 2021
    idx.add(pa.table({"id": ["x3"], "text": ["epsilon"], "year": [2022]}))
    assert idx.search("epsilon", k=1, filter="year == 2022")[0].doc_id == "x3"
    class Frame(pd.DataFrame):  # a subclass (geopandas' GeoDataFrame is one) is a DataFrame too
        pass

    idx.add(Frame({"id": ["x4"], "text": ["zeta"], "year": [2023]}))
    idx.add(pd.DataFrame({"id": ["x5"], "text": ["eta"], "year": [2024]}).set_index("id"))  # the id as index
    idx.add(pa.Table.from_pandas(pd.DataFrame({"id": ["x6"], "text": ["theta"]}, index=[7])))  # pandas' index column
    assert sorted(idx.snapshot.live_ids()) == ["x1", "x2", "x3", "x4", "x5", "x6"]
    assert "__index_level_0__" not in idx.get("x6")
    meta = pd.DataFrame({"lang": ["en", "de"]})
    ix2 = xtrieve.Index.build_from_embeddings(tmp_path / "ix2", ["a", "b"], _vectors(2), metadata=meta)
    assert ix2.get("b")["lang"] == "de"


def test_missing_values_of_pandas_and_numpy_are_null(tmp_path):
    pd = pytest.importorskip("pandas")
    enc = WordHashEncoder(DIM)
    docs = [
        {"id": "a", "title": np.nan, "text": "alpha", "x": 1.5, "lang": "en", "when": pd.Timestamp("2021-01-01")},
        {"id": "b", "title": "Beta", "text": "beta", "x": np.nan, "lang": pd.NA, "when": pd.NaT},
        {"id": "c", "text": "gamma", "x": np.float32("nan"), "lang": "de", "when": np.datetime64("NaT")},
    ]
    idx = xtrieve.Index.build(tmp_path / "ix", docs, encoder=enc)
    assert idx.get("a")["title"] is None and idx.get("b")["x"] is None and idx.get("b")["lang"] is None
    assert {h.doc_id for h in idx.search("beta gamma alpha", k=3, filter="x is null")} == {"b", "c"}
    assert {h.doc_id for h in idx.search("beta gamma alpha", k=3, filter="when is null")} == {"b", "c"}
    with pytest.raises(InputError, match="empty text"):
        idx.add([{"id": "d", "text": np.nan}])


def test_a_later_files_columns_take_the_index_types(tmp_path):
    """Each CSV's column types are guessed from that file: an add reads them as the index's."""
    first, second, third = tmp_path / "a.csv", tmp_path / "b.csv", tmp_path / "c.jsonl"
    first.write_text("id,text,zip,day\nd1,alpha beta,02139,2021-01-31\nd2,gamma,02140,2021-02-01\n")
    second.write_text("id,text,zip,day\nd3,delta,10001,2022-03-04\n")  # zip reads as a number here
    third.write_text('{"_id": "d4", "text": "epsilon", "zip": "94103", "day": "2023-05-06"}\n')  # day: text
    ix = tmp_path / "ix"
    idx = xtrieve.Index.build(ix, read_corpus(first), encoder=WordHashEncoder(DIM))
    idx.add(read_corpus(second))
    idx.add(read_corpus(third))
    assert [idx.get(d)["zip"] for d in ("d1", "d3", "d4")] == ["02139", "10001", "94103"]
    assert str(idx.get("d4")["day"]) == "2023-05-06"
    assert {h.doc_id for h in idx.search("delta epsilon", k=4, filter="day >= '2022-01-01'")} == {"d3", "d4"}
    with pytest.raises(InputError, match="metadata column '.+' (holds .+ values in the index, these documents give|: .+ and .+ values do not mix)"):  # a value that does not convert
        idx.add([{"id": "d5", "text": "zeta", "day": "soon"}])


def test_mixed_types_name_a_document_before_the_batch_is_encoded(tmp_path):
    class Counting(WordHashEncoder):
        calls = 0

        def encode(self, *args, **kwargs):
            Counting.calls += 1
            return super().encode(*args, **kwargs)

    docs = [{"id": f"d{i}", "text": f"word{i}", "year": 2000 + i} for i in range(5)]
    docs[3]["year"] = "2003"
    with pytest.raises(InputError, match=r"'year'.*document 'd3' has type str where 'd0' has type int"):
        xtrieve.Index.build(tmp_path / "ix", docs, encoder=Counting(DIM))
    assert Counting.calls == 0
    docs[1]["year"], docs[3]["year"] = 2.5, None  # a float is fine with ints: the text after it is the odd one
    docs[4]["year"] = "zz"
    with pytest.raises(InputError, match=r"document 'd4' has type str where 'd0' has type int"):
        xtrieve.Index.build(tmp_path / "ix", docs, encoder=Counting(DIM))


def test_csv_empty_cells_are_null_and_a_nameless_column_is_dropped(tmp_path, caplog):
    corpus = tmp_path / "c.csv"
    corpus.write_text(",id,text,lang,year\n0,d1,alpha,en,2020\n1,d2,beta,,\n2,d3,gamma,de,2022\n")
    idx = xtrieve.Index.build(tmp_path / "ix", read_corpus(corpus), encoder=WordHashEncoder(DIM))
    assert "no name" in caplog.text
    row = idx.get("d2")
    assert row["lang"] is None and row["year"] is None and "" not in row
    assert [h.doc_id for h in idx.search("alpha beta gamma", k=3, filter="lang is null")] == ["d2"]


def test_parquet_with_a_pandas_index_column(tmp_path):
    import pyarrow.parquet as pq

    table = pa.table({"id": ["p1", "p2"], "text": ["alpha", "beta"], "__index_level_0__": ["p1", "p2"]})
    pq.write_table(table, tmp_path / "c.parquet")
    idx = xtrieve.Index.build(tmp_path / "ix", read_corpus(tmp_path / "c.parquet"),
                              encoder=WordHashEncoder(DIM))
    assert idx.get("p1")["text"] == "alpha" and "__index_level_0__" not in idx.get("p1")


def test_bfloat16_tensors_are_queries_and_embeddings(tmp_path):
    vectors = _vectors(3)
    idx = xtrieve.Index.build_from_embeddings(tmp_path / "ix", ["a", "b", "c"], vectors)
    idx.add_embeddings(["d"], [torch.from_numpy(vectors[0]).bfloat16()])
    query = torch.from_numpy(vectors[1]).bfloat16()
    assert idx.search(query, k=1)[0].doc_id == "b"


def test_exhaustive_must_be_a_bool(tmp_path):
    idx = xtrieve.Index.build_from_embeddings(tmp_path / "ix", ["a"], _vectors(1))
    with pytest.raises(InputError, match="exhaustive must be True or False"):
        idx.search(_vectors(1)[0], k=1, exhaustive="no")


def test_a_missing_segment_is_named_without_verification(tmp_path):
    import shutil

    ix = tmp_path / "ix"
    xtrieve.Index.build_from_embeddings(ix, ["a", "b"], _vectors(2))
    seg = next(p for p in ix.iterdir() if p.name.startswith("seg-"))
    shutil.rmtree(seg)
    with pytest.raises(IndexFormatError, match=rf"file {seg.name}/\S+ named by the manifest is missing"):
        xtrieve.Index.open(ix, verify=False)
    r = CliRunner().invoke(main, ["info", str(ix), "--no-verify"])
    assert r.exit_code != 0 and "None" not in r.output and seg.name in r.output


def test_a_txt_folder_reads_subfolders_and_skips_empty_files(tmp_path, caplog):
    folder = tmp_path / "txt"
    (folder / "sub").mkdir(parents=True)
    (folder / "alpha.txt").write_text("first file")
    (folder / "sub" / "glacier.txt").write_text("ice moves slowly")
    (folder / "empty.txt").write_text("  \n")
    (folder / ".ipynb_checkpoints").mkdir()
    (folder / ".ipynb_checkpoints" / "alpha-checkpoint.txt").write_text("a hidden copy")
    docs = list(read_corpus(folder))
    assert [d["id"] for d in docs] == ["alpha", "sub/glacier"]
    assert "skipped 1 empty .txt file(s): empty.txt" in caplog.text


def test_list_and_zoned_timestamp_types_outlive_their_documents(tmp_path):
    import datetime

    when = datetime.datetime(2021, 5, 1, 12, tzinfo=datetime.timezone.utc)
    idx = xtrieve.Index.build_from_embeddings(tmp_path / "ix", ["a"], _vectors(1), [{"tags": [1, 2], "t": when}])
    idx.add_embeddings(["b"], _vectors(1, seed=1), [{"n": 1}])
    idx.delete(["a"])
    idx.compact()  # a's segment is gone: only the manifest remembers the two columns
    assert "tags" not in idx.get("b")
    with pytest.raises(InputError, match="metadata column '.+' (holds .+ values in the index, these documents give|: .+ and .+ values do not mix)"):
        idx.add_embeddings(["c"], _vectors(1, seed=2), [{"tags": "x"}])
    with pytest.raises(InputError, match="metadata column '.+' (holds .+ values in the index, these documents give|: .+ and .+ values do not mix)"):
        idx.add_embeddings(["c"], _vectors(1, seed=2), [{"t": 5}])
    assert idx.info().metadata_columns == {"n": "int64", "t": "timestamp[us, tz=UTC]", "tags": "list<item: int64>"}
    idx.add_embeddings(["c"], _vectors(1, seed=2), [{"tags": [3], "t": when}])
    assert idx.info().metadata_columns == {"n": "int64", "t": "timestamp[us, tz=UTC]", "tags": "list<item: int64>"}


def test_text_is_read_as_the_index_type_only_when_nothing_is_lost(tmp_path):
    idx = xtrieve.Index.build_from_embeddings(tmp_path / "ix", ["a"], _vectors(1),
                                              [{"zip": 2139, "x": 1.5, "ok": True, "code": "A7"}])
    for bad in ({"zip": "02134"}, {"x": "nan"}, {"ok": "1"}, {"code": True}):
        with pytest.raises(InputError, match="metadata column '.+' (holds .+ values in the index, these documents give|: .+ and .+ values do not mix)"):
            idx.add_embeddings(["b"], _vectors(1, seed=1), [bad])
    idx.add_embeddings(["b"], _vectors(1, seed=1), [{"zip": "2134", "x": "2.50", "ok": "false", "code": 7}])
    assert idx.get("b") == {"doc_id": "b", "zip": 2134, "x": 2.5, "ok": False, "code": "7"}
    # one input is read against the index's types, not against its own earlier rows: the same
    # error whatever its batches
    for size in (1, 64):
        with pytest.raises(InputError, match="'n'|Field n"):
            xtrieve.Index.build_from_embeddings(tmp_path / f"ix{size}", ["c", "d"], _vectors(2), [{"n": 1}, {"n": "7"}],
                                                config={"batch_size": size})


class CountingEncoder(WordHashEncoder):
    """Counts the texts it encodes."""

    def __init__(self):
        super().__init__(DIM)
        self.encoded = 0

    def encode(self, texts, is_query, **kwargs):
        self.encoded += len(texts)
        return super().encode(texts, is_query, **kwargs)


@pytest.mark.parametrize("bad, message", [({"id": "d3", "text": " "}, "empty text"),
                                          ({"id": "d1", "text": "again"}, "duplicate id"),
                                          ({"id": "z", "text": "x", "year": "late"}, "year")])
def test_a_bad_document_late_in_a_long_input_fails_before_any_encoding(tmp_path, bad, message, caplog):
    """A list or a corpus file is checked whole before its first batch is encoded; a stream
    (a generator) batch by batch; either way nothing is committed."""
    import json

    docs = [{"id": f"d{i}", "text": f"word{i} text", "year": 2000 + i} for i in range(9)] + [bad]
    config = {"batch_size": 4}
    enc = CountingEncoder()
    idx = xtrieve.Index.build(tmp_path / "ix", docs[:1], encoder=enc, config=config)
    corpus = tmp_path / "late.jsonl"
    corpus.write_text("".join(json.dumps(d) + "\n" for d in docs[1:]))
    (tmp_path / "late.tsv").write_text("id\ttext\n" + "".join(f"{d['id']}\t{d['text']}\n" for d in docs[1:]))
    enc.encoded = 0
    for given in (docs[1:], read_corpus(corpus)) + ((read_corpus(tmp_path / "late.tsv"),) if "year" not in bad else ()):
        with pytest.raises(InputError, match=message):
            idx.add(given)
        assert enc.encoded == 0 and len(idx) == 1
    with pytest.raises(InputError, match=message):
        idx.add(iter(docs[1:]))
    assert enc.encoded == 8 and len(idx) == 1  # two batches encoded, then the third fails
    idx.add(docs[1:-1])
    assert len(idx) == 9


def test_a_corpus_file_read_twice_logs_once(tmp_path, caplog):
    folder = tmp_path / "txt"
    folder.mkdir()
    for i in range(6):
        (folder / f"t{i}.txt").write_text(f"some text {i}")
    (folder / "empty.txt").write_text("")
    docs = read_corpus(folder)
    assert len(docs) == 6
    with caplog.at_level("INFO"):
        assert docs.first() == {"id": "t0", "text": "some text 0"}  # (the CLI's early look: not a whole reading)
        xtrieve.Index.build(tmp_path / "ix", docs, encoder=WordHashEncoder(DIM), config={"batch_size": 4})
    assert caplog.text.count("skipped 1 empty .txt file") == 1 and "checking 6 documents" in caplog.text
    assert [d["id"] for d in docs] == [f"t{i}" for i in range(6)]


def test_a_null_nested_field_stores_null_children_not_a_column_of_its_own(tmp_path):
    import numpy as np

    import xtrieve

    rng = np.random.default_rng(0)
    vecs = [rng.standard_normal((3, 8)).astype("f4") for _ in range(4)]
    idx = xtrieve.Index.build_from_embeddings(tmp_path / "ix", ["d1", "d2", "d3"], vecs[:3], [
        {"nested": {"a": 1, "b": {"c": "x"}}}, {"nested": None}, {"nested": {"a": 3, "b": None}}])
    idx.add_embeddings(["d4"], vecs[3:], [{"nested": None}])  # a later add of nulls only
    assert idx.info().metadata_columns == {"nested.a": "int64", "nested.b.c": "string"}
    assert sorted(h.doc_id for h in idx.search(vecs[0], k=9, filter="nested.a is null")) == ["d2", "d4"]
    assert idx.get("d2") == {"doc_id": "d2", "nested.a": None, "nested.b.c": None}
