"""Query files, corpus text files and the search output formats of the CLI (fake encoder)."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from click.testing import CliRunner

from helpers import WordHashEncoder
from xtrieve.cli.formats import check_trec_id, format_hits, shown, to_json
from xtrieve.cli.main import main
from xtrieve.cli.query_files import read_queries
from xtrieve.errors import InputError
from xtrieve.index.corpus import read_corpus
from xtrieve.types import Hit

BOM = b"\xef\xbb\xbf"


@pytest.fixture(autouse=True)
def fake_model(monkeypatch):
    from xtrieve.encode.encoder import Encoder

    monkeypatch.setattr(Encoder, "load", classmethod(lambda cls, name=None, **kw: WordHashEncoder(8)))


def run(*args):
    result = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in result.output
    return result


def write(path, data: bytes | str):
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def last_line(result) -> str:
    return result.output.strip().splitlines()[-1]


@pytest.fixture
def index(tmp_path):
    """Documents with ids TREC cannot hold, NaN/inf metadata, and plain ones."""
    rows = ['{"_id": "a", "text": "moon tides", "w": NaN, "v": [1.5, Infinity, -Infinity]}',
            '{"_id": "b", "text": "vaccines immunity", "w": 2.5}',
            '{"_id": "doc one", "text": "glaciers valleys"}']
    corpus = write(tmp_path / "corpus.jsonl", "\n".join(rows) + "\n")
    assert run("build", tmp_path / "ix", "--corpus", corpus).exit_code == 0
    return tmp_path / "ix"


# -- 1. TSV: a line is a record, '"' is text ---------------------------------------------------

def test_tsv_queries_have_no_quoting(tmp_path):
    f = write(tmp_path / "q.tsv", '1\t"moon" landing\n2\t"tides\n3\tvaccines\n4\tglaciers\n')
    assert read_queries(f) == [("1", '"moon" landing'), ("2", '"tides'), ("3", "vaccines"), ("4", "glaciers")]


def test_query_files_of_every_kind(tmp_path):
    assert read_queries(write(tmp_path / "q.txt", "moon landing\n\n\tglaciers, ice\n")) == \
        [("1", "moon landing"), ("3", "\tglaciers, ice")]
    assert read_queries(write(tmp_path / "q.csv", 'qid,query\nq1,"moon, landing"\nq2,tides\n')) == \
        [("q1", "moon, landing"), ("q2", "tides")]
    assert read_queries(write(tmp_path / "one.csv", "moon\ntides\n")) == [("1", "moon"), ("2", "tides")]
    assert read_queries(write(tmp_path / "q.json", '{"q1": "moon", "q2": {"text": "tides"}}')) == \
        [("q1", "moon"), ("q2", "tides")]
    assert read_queries(write(tmp_path / "h.csv", "query\nmoon\n")) == [("2", "moon")]  # a one-name header
    assert read_queries(write(tmp_path / "p.csv", ",id,text\n0,q1,moon\n1,q2,tides\n")) == \
        [("q1", "moon"), ("q2", "tides")]  # pandas' to_csv with its index
    assert read_queries(write(tmp_path / "p1.csv", ",query\n0,moon\n")) == [("2", "moon")]
    assert read_queries(write(tmp_path / "one.json", '{"_id": "q1", "query": "what"}')) == [("q1", "what")]  # one query
    assert read_queries(write(tmp_path / "k.jsonl", '{"query_id": "a", "query": "moon"}\n{"qid": "b", "question": "tides"}\n')) == \
        [("a", "moon"), ("b", "tides")]  # the names a TSV header may give
    with pytest.raises(InputError, match="name it .txt"):
        read_queries(write(tmp_path / "q.tsv", "moon landing\n"))
    with pytest.raises(InputError, match=r"q3.csv:1: expected 'id,text', got 3 columns"):
        read_queries(write(tmp_path / "q3.csv", "a,b,c\n"))


def test_queries_from_standard_input(index):
    r = CliRunner().invoke(main, ["search", str(index), "--queries", "-", "--format", "json"],
                           input='{"_id": "Q1", "text": "moon tides"}\n{"text": "vaccines"}\n')
    assert r.exit_code == 0, r.output
    out = [json.loads(line) for line in r.output.splitlines() if line.startswith("{")]
    assert [o["query_id"] for o in out] == ["Q1", "2"] and out[0]["hits"][0]["doc_id"] == "a"
    r = CliRunner().invoke(main, ["search", str(index), "--queries", "-", "--format", "json"],
                           input="T1\tvaccines immunity\nmoon tides\n")
    assert r.exit_code == 0, r.output
    assert [json.loads(line)["query_id"] for line in r.output.splitlines() if line.startswith("{")] == ["T1", "2"]
    for given in ('\ufeff[{"id": "L1", "text": "moon"}, {"text": "tides"}]', '\ufeff{"id": "L1", "text": "moon"}\ntides'):
        r = CliRunner().invoke(main, ["search", str(index), "--queries", "-", "--format", "json"], input=given)
        if given.startswith("\ufeff["):
            assert r.exit_code == 0, r.output
            assert [json.loads(x)["query_id"] for x in r.output.splitlines() if x.startswith("{")] == ["L1", "2"]
        else:  # JSON Lines with a line that is not JSON
            assert r.exit_code != 0 and "<stdin>:2: not valid JSON" in r.output
    for given in ("[citation needed] moon tides\nvaccines\n", "{braces} in a question\n"):  # questions, not JSON
        r = CliRunner().invoke(main, ["search", str(index), "--queries", "-", "--format", "json"], input=given)
        assert r.exit_code == 0, r.output
        assert json.loads(r.output.splitlines()[0])["query"] == given.splitlines()[0]
    r = CliRunner().invoke(main, ["search", str(index), "--queries", "-", "--format", "json"],
                           input='[\n  {"id": "P1", "text": "moon"}\n]\n')  # a JSON list written over lines
    assert r.exit_code == 0 and json.loads(r.output.splitlines()[0])["query_id"] == "P1", r.output


def test_standard_input_and_output_are_utf8_whatever_the_locale(index):
    """A Windows locale (cp1252) read UTF-8 queries as mojibake and could not write most ids."""
    runner = CliRunner(charset="cp1252")
    r = runner.invoke(main, ["search", str(index), "--queries", "-", "-k", "1"],
                      input="Q\u00e9\tmoon \u6771\u4eac tides\n".encode("utf-8"))
    assert r.exit_code == 0, r.output
    out = r.stdout_bytes.decode("utf-8")
    assert "query: moon \u6771\u4eac tides" in out and "a" in out.split()


def test_error_lines_and_info_escape_what_would_drive_the_terminal(index, tmp_path):
    r = run("info", tmp_path / "no\x1b]0;owned\x07\x1b[2Jne")
    assert r.exit_code == 1 and "\x1b" not in r.output and "no\\x1b]0;owned\\x07\\x1b[2Jne" in r.output
    body = json.loads((index / "manifest.json").read_text())
    body["encoder"]["name"] = "model\x1b[2J\x1b[32m all checks passed"  # (a folder from anyone)
    from xtrieve.index.manifest import _checksum

    body["checksum"] = _checksum(body)
    (index / "manifest.json").write_text(json.dumps(body))
    r = run("info", index, "--no-verify")
    assert r.exit_code == 0 and "\x1b" not in r.output and "model\\x1b[2J" in r.output


def test_tsv_corpus_has_no_quoting_csv_keeps_it(tmp_path):
    tsv = write(tmp_path / "c.tsv", 'id\ttext\n1\t"Moon" landing\n2\t"tides\n3\tvaccines\n')
    assert [(d["id"], d["text"]) for d in read_corpus(tsv)] == [("1", '"Moon" landing'), ("2", '"tides'),
                                                                 ("3", "vaccines")]
    csv = write(tmp_path / "c.csv", 'id,text\n1,"a ""quoted"", text\nover two lines"\n')
    assert [d["text"] for d in read_corpus(csv)] == ['a "quoted", text\nover two lines']


# -- 2. and 3. encodings -------------------------------------------------------------------------

def test_non_utf8_tsv_queries_is_a_clean_error(tmp_path, index):
    f = write(tmp_path / "q.tsv", b"1\tcaf\xe9 moon\n")
    r = run("search", index, "--queries", f)
    assert r.exit_code == 1 and last_line(r) == f"error: {f}: not UTF-8 text (invalid continuation byte)"


def test_bom_is_dropped(tmp_path):
    tsv = write(tmp_path / "q.tsv", BOM + b"id\ttext\r\n7\tvaccines\r\n8\tmoon\r\n")
    assert read_queries(tsv) == [("7", "vaccines"), ("8", "moon")]
    jsonl = write(tmp_path / "q.jsonl", BOM + b'{"_id": "A1", "text": "vaccines"}\r\n')
    assert read_queries(jsonl) == [("A1", "vaccines")]
    corpus = write(tmp_path / "c.jsonl", BOM + b'{"_id": "a", "text": "hello"}\r\n{"_id": "b", "text": "moon"}\r\n')
    assert [d["id"] for d in read_corpus(corpus)] == ["a", "b"]
    assert [d["id"] for d in read_corpus(write(tmp_path / "c.json", BOM + b'[{"_id": "j", "text": "x"}]'))] == ["j"]
    assert [d["id"] for d in read_corpus(write(tmp_path / "c.tsv", BOM + b"id\ttext\r\nt\tx\r\n"))] == ["t"]
    (tmp_path / "txt").mkdir()
    write(tmp_path / "txt" / "one.txt", BOM + b"some text")
    assert list(read_corpus(tmp_path / "txt")) == [{"id": "one", "text": "some text"}]


def test_bom_corpus_builds(tmp_path):
    corpus = write(tmp_path / "c.jsonl", BOM + b'{"_id": "a", "text": "hello world"}\n')
    assert run("build", tmp_path / "ix", "--corpus", corpus).exit_code == 0


def test_bom_ids_file(tmp_path, index):
    ids = write(tmp_path / "ids.txt", BOM + b"b\n")
    assert run("delete", index, "--ids-file", ids).exit_code == 0


# -- 4. JSON output ----------------------------------------------------------------------------

def test_json_output_has_null_for_non_finite_floats(index):
    r = run("search", index, "moon tides", "--format", "json", "-k", "3")
    assert r.exit_code == 0, r.output
    hits = json.loads(r.output, parse_constant=lambda c: pytest.fail(f"invalid JSON constant {c}"))["hits"]
    meta = {h["doc_id"]: h["metadata"] for h in hits}
    assert meta["a"] == {"w": None, "v": [1.5, None, None]} and meta["b"]["w"] == 2.5


def test_to_json_nested():
    assert to_json({"a": [float("nan"), (1.0, float("-inf"))], "b": {"c": float("inf")}}) == \
        '{"a": [null, [1.0, null]], "b": {"c": null}}'


# -- 5. TREC runs and query ids ----------------------------------------------------------------

@pytest.mark.parametrize("value", ["", "q 2", "two\nlines", " x", "tab\there"])
def test_trec_id_check(value):
    with pytest.raises(InputError, match="cannot be written in TREC format") as exc:
        check_trec_id("query", value)
    assert repr(value) in str(exc.value)


def test_trec_bad_query_id_is_an_error(tmp_path, index):
    f = write(tmp_path / "q.jsonl", '{"id": "ok", "text": "moon"}\n{"id": "q 2", "text": "vaccines"}\n')
    r = run("search", index, "--queries", f, "--format", "trec")
    assert r.exit_code == 1 and last_line(r) == \
        "error: query id 'q 2' cannot be written in TREC format (it is empty or contains whitespace or control characters)"
    assert "Q0" not in r.output
    f = write(tmp_path / "q.tsv", "\tvaccines\n")
    for fmt in ("trec", "json"):  # an empty id is refused whatever the format
        r = run("search", index, "--queries", f, "--format", fmt)
        assert r.exit_code == 1 and "q.tsv:1: empty query id" in last_line(r)


def test_trec_bad_doc_id_is_an_error_before_any_line(tmp_path, index):
    f = write(tmp_path / "q.tsv", "1\tvaccines\n2\tglaciers\n")
    r = run("search", index, "--queries", f, "--format", "trec", "-k", "3")
    assert r.exit_code == 1 and "doc id 'doc one' cannot be written in TREC format" in last_line(r)
    assert "Q0" not in r.output


def test_trec_no_hits_writes_no_line(index):
    r = run("search", index, "moon", "--format", "trec", "--filter", "doc_id == 'none'")
    assert r.exit_code == 0 and r.output == ""
    r = run("search", index, "moon", "--format", "trec", "--filter", "doc_id == 'a'")
    assert r.output.splitlines() == [r.output.strip()] and r.output.startswith("q1 Q0 a 1 ")
    assert format_hits("q", "", [], "trec") == ""
    assert format_hits("q", "", [Hit("d", 1.0)], "trec") == "q Q0 d 1 1.000000 xtrieve"


def test_null_query_id_is_an_error(tmp_path):
    f = write(tmp_path / "q.jsonl", '{"id": "1", "text": "moon"}\n{"id": null, "text": "glacier"}\n')
    with pytest.raises(InputError, match=r"q\.jsonl:2: query id is null"):
        read_queries(f)
    for name, content in (("e.tsv", "1\tmoon\n\tglacier\n"), ("b.tsv", "1\tmoon\n   \tglacier\n"),
                          ("e.jsonl", '{"id": "1", "text": "moon"}\n{"id": "", "text": "glacier"}\n')):
        with pytest.raises(InputError, match=f"{name}:2: empty query id"):
            read_queries(write(tmp_path / name, content))


def test_automatic_ids_never_collide(tmp_path):
    lines = ['{"text": "moon"}', '{"id": "1", "text": "tides"}', '{"id": "1-1", "text": "x"}', "",
             '{"text": "glacier"}', '{"_id": 5, "text": "y"}', '{"text": "z"}']
    pairs = read_queries(write(tmp_path / "q.jsonl", "\n".join(lines) + "\n"))
    assert [qid for qid, _ in pairs] == ["1-2", "1", "1-1", "5-1", "5", "7"]


def test_duplicate_query_ids_are_an_error(tmp_path):
    f = write(tmp_path / "q.jsonl", '{"_id": "A1", "text": "a"}\n\n{"id": "A1", "text": "b"}\n')
    with pytest.raises(InputError, match=r"q\.jsonl:3: duplicate query id 'A1' \(also on line 1\)"):
        read_queries(f)
    with pytest.raises(InputError, match=r"q\.tsv:2: duplicate query id '7'"):
        read_queries(write(tmp_path / "q.tsv", "7\ta\n7\tb\n"))


# -- 6. errors name the file and line -----------------------------------------------------------

@pytest.mark.parametrize("name, content, message", [
    ("q.jsonl", '{"_id": "A1", "text": "ok"}\n\n{"_id": "A2", "text": null}\n', "q.jsonl:3: query text must be a string, got null"),
    ("q.jsonl", '{"_id": "A1", "text": ""}\n', "q.jsonl:1: empty query text"),
    ("q.jsonl", '{"_id": "A1", "text": 5}\n', "q.jsonl:1: query text must be a string, got int"),
    ("q.jsonl", '{"_id": "A1"}\n', "q.jsonl:1: query has no text (a key named text, query, question, query-text, "
                                   "query_text); it has 'id'"),
    ("q.jsonl", '{"_id": ["x"], "text": "a"}\n', "q.jsonl:1: query id must be a string or an integer, got list"),
    ("q.tsv", "id\ttext\n7\tvaccines\n\n8\t  \n", "q.tsv:4: empty query text"),
    ("q.tsv", "7\tvaccines\n8\n",
     "q.tsv:2: expected 'id<TAB>text', got 1 column(s) (a file of one query per line: name it .txt)"),
    ("q.tsv", "id\ttext\n", "q.tsv: no queries in the file"),
])
def test_query_file_errors_name_the_line(tmp_path, index, name, content, message):
    f = write(tmp_path / name, content)
    r = run("search", index, "--queries", f)
    assert r.exit_code == 1 and last_line(r) == f"error: {tmp_path}/{message}"


# -- 7. a closed pipe ---------------------------------------------------------------------------

def test_broken_pipe_exits_quietly(index):
    code = "import sys; from xtrieve.cli.main import main; sys.argv[0] = 'xtrieve'; main()"
    proc = subprocess.Popen([sys.executable, "-c", code, "info", str(index), "--format", "json"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    proc.stdout.close()  # the reader is gone before the first line is written
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 0 and err == ""


def test_broken_pipe_in_runner(index, monkeypatch):
    import click

    def closed(*args, **kwargs):
        raise BrokenPipeError(32, "Broken pipe")

    monkeypatch.setattr(click, "echo", closed)
    r = CliRunner().invoke(main, ["search", str(index), "moon", "--format", "json"])
    assert r.exit_code == 0 and r.output == ""


# -- input files a user of BEIR tooling brings --------------------------------------------------

def test_beir_folder_reads_its_corpus(tmp_path):
    beir = tmp_path / "scifact"
    beir.mkdir()
    write(beir / "corpus.jsonl", '{"_id": "a", "title": "t", "text": "moon tides"}\n')
    write(beir / "queries.jsonl", '{"_id": "q", "text": "moon"}\n')
    assert [d["id"] for d in read_corpus(beir)] == ["a"]
    assert run("build", tmp_path / "ix", "--corpus", beir).exit_code == 0


def test_folder_without_documents_says_what_it_looked_for(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no .txt files and no corpus.jsonl"):
        read_corpus(tmp_path / "empty")


def test_json_query_list_and_json_lines_under_json(tmp_path):
    listed = write(tmp_path / "q.json", '[{"_id": "q1", "text": "moon"}, {"text": "tides"}]')
    assert read_queries(listed) == [("q1", "moon"), ("2", "tides")]
    lines = write(tmp_path / "l.json", '{"_id": "q1", "text": "moon"}\n{"_id": "q2", "text": "tides"}\n')
    assert read_queries(lines) == [("q1", "moon"), ("q2", "tides")]
    assert [d["id"] for d in read_corpus(lines)] == ["q1", "q2"]
    with pytest.raises(InputError, match=r"q\.json\[0\]: expected a JSON object"):
        read_queries(write(tmp_path / "q.json", '[["moon"]]'))
    with pytest.raises(InputError, match="one JSON object; expected a JSON list"):
        list(read_corpus(write(tmp_path / "one.json", '{\n  "_id": "a",\n  "text": "moon"\n}\n')))


@pytest.mark.parametrize("header", ["qid\tquery", "query_id\ttext", "id\tquestion", "_id\ttext"])
def test_common_tsv_headers_are_skipped(tmp_path, header):
    assert read_queries(write(tmp_path / "q.tsv", f"{header}\n7\tmoon\n")) == [("7", "moon")]


def test_info_verifies_the_encoder_files(tmp_path):
    from xtrieve.index.writer import ENCODER_FILES
    from xtrieve.retrieve.api import Index

    idx = Index.build(tmp_path / "ix", ["moon tides", "vaccines"], encoder=WordHashEncoder(8))
    files = idx.snapshot.encoder_identity[ENCODER_FILES]
    assert files
    victim = tmp_path / "ix" / next(iter(files))
    victim.write_bytes(victim.read_bytes() + b" ")
    r = run("info", tmp_path / "ix")
    assert r.exit_code == 1 and "checksum mismatch" in r.output
    assert run("info", tmp_path / "ix", "--no-verify").exit_code == 0


def test_top_k_is_an_alias_of_k(index):
    r = run("search", index, "moon", "--top-k", "1", "--format", "json")
    assert r.exit_code == 0 and len(json.loads(r.output)["hits"]) == 1


# -- corpus folders, CSV columns, query files with other columns -----------------------------------

def test_a_beir_folder_reads_its_corpus_even_beside_txt_files(tmp_path, caplog):
    folder = tmp_path / "beir"
    folder.mkdir()
    write(folder / "corpus.jsonl", '{"_id": "d1", "title": "t", "text": "moon tides"}\n')
    write(folder / "README.txt", "not a document")
    with caplog.at_level("WARNING", logger="xtrieve.index.corpus"):
        assert [d["id"] for d in read_corpus(folder)] == ["d1"]
    assert "not its 1 .txt file" in caplog.text
    (folder / "corpus.jsonl").unlink()
    assert [d["id"] for d in read_corpus(folder)] == ["README"]


def test_csv_integers_written_with_leading_zeros_stay_text(tmp_path):
    f = write(tmp_path / "c.csv", "id,text,zip,year\n007,cats,01234,2020\n8,dogs,98765,2021\n")
    docs = list(read_corpus(f))
    assert [(d["id"], d["zip"], d["year"]) for d in docs] == [("007", "01234", 2020), ("8", "98765", 2021)]


def test_a_csv_column_named_twice_is_refused(tmp_path):
    f = write(tmp_path / "c.csv", "id,text,year,year\n1,cats,2020,2021\n")
    with pytest.raises(InputError, match="column 'year' appears 2 times"):
        list(read_corpus(f))


def test_tsv_query_rows_of_other_than_two_columns_are_refused(tmp_path):
    f = write(tmp_path / "qrels.tsv", "query-id\tcorpus-id\tscore\n1\t2\t1\n")
    with pytest.raises(InputError, match=r"qrels.tsv:1: expected 'id<TAB>text', got 3 column\(s\) \(a qrels"):
        read_queries(f)


def test_with_text_shows_each_hits_text(tmp_path, index):
    out = json.loads(last_line(run("search", index, "vaccines", "-k", "1", "--format", "json", "--with-text")))
    assert out["hits"][0]["doc_id"] == "b" and out["hits"][0]["text"] == "vaccines immunity"
    plain = json.loads(last_line(run("search", index, "vaccines", "-k", "1", "--format", "json")))
    assert "text" not in plain["hits"][0]
    table = run("search", index, "glaciers", "-k", "1", "--with-text").output.splitlines()
    assert "glaciers valleys" in [line.strip() for line in table]
    assert "no place in TREC" in run("search", index, "moon", "--format", "trec", "--with-text").output
    long = Hit("x", 1.0, {})
    shown = format_hits("q", "q", [long], "table", ["word " * 100]).splitlines()[-1].strip()
    assert shown.endswith("...") and len(shown) == 160
    assert "(no text stored)" in format_hits("q", "q", [long], "table", [None])


def test_corpora_that_can_be_counted_up_front_say_how_many_documents_they_hold(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    lines = write(tmp_path / "c.jsonl", '{"_id": "a", "text": "x"}\n\n{"_id": "b", "text": "y"}\n')
    pq.write_table(pa.table({"id": ["p1", "p2", "p3"], "text": ["a", "b", "c"]}), tmp_path / "c.parquet")
    (tmp_path / "txt").mkdir()
    write(tmp_path / "txt" / "one.txt", "some text")
    write(tmp_path / "txt" / "empty.txt", "")
    for path, n in ((lines, 2), (tmp_path / "c.parquet", 3), (tmp_path / "txt", 1)):
        docs = read_corpus(path)
        assert len(docs) == n and len(list(docs)) == n
    with pytest.raises(TypeError, match="known only once it is read"):  # rows may span lines
        len(read_corpus(write(tmp_path / "c.csv", "id,text\na,x\n")))


def test_a_corpus_line_without_an_id_is_named_by_its_line(tmp_path):
    corpus = write(tmp_path / "c.jsonl", '{"_id": "a", "text": "x"}\n\n{"text": "no id"}\n')
    with pytest.raises(InputError, match=r"c\.jsonl:3: missing 'id' \(or '_id'\) field"):
        list(read_corpus(corpus))


def test_a_collection_without_a_header_reads_as_colberts_collection_tsv(tmp_path):
    tsv = write(tmp_path / "collection.tsv", '0\tThe "cat" sat.\n1\tDogs bark.\n')
    assert list(read_corpus(tsv)) == [{"id": "0", "text": 'The "cat" sat.'}, {"id": "1", "text": "Dogs bark."}]
    titled = write(tmp_path / "c.csv", '7,"A cat, on a mat",Cats\n')
    assert list(read_corpus(titled)) == [{"id": "7", "text": "A cat, on a mat", "title": "Cats"}]
    numbered = write(tmp_path / "n.csv", "0,1\na,x\n")  # pandas' header of unnamed columns
    with pytest.raises(InputError, match="names no id column \\('0', '1'\\)"):
        list(read_corpus(numbered))
    headed = write(tmp_path / "h.tsv", "doc1\tfirst passage\n")  # no whole number first: read as a header
    with pytest.raises(InputError, match=r"h\.tsv: its first line, read as the header, names no id column "
                                         r"\('doc1', 'first passage'\); give it a header line such as 'id<TAB>text'"):
        list(read_corpus(headed))


def test_a_csv_whose_header_is_not_utf8_is_named(tmp_path):
    bad = tmp_path / "bad.tsv"
    bad.write_bytes(b"\xff\xfe0\tabc\n")
    with pytest.raises(InputError, match="bad.tsv: not UTF-8 text"):
        list(read_corpus(bad))


def test_csv_metadata_types_come_from_every_row(tmp_path, monkeypatch):
    """A column empty (or all integers) in the first block of a long CSV takes the type of all
    its rows, not a null (or int) type that a later value fails to convert to; a metadata
    column that is not UTF-8 is named, not stored as bytes."""
    import xtrieve.index.corpus as corpus

    monkeypatch.setattr(corpus, "CSV_BLOCK", 1 << 12)  # many blocks from a small file
    rows = [f"d{i},text {i},,{i},{2000 + i % 20}" for i in range(400)]
    path = write(tmp_path / "c.csv", "id,text,note,code,year\n" + "\n".join(rows) + "\nz,last,a note,X7,NA\n")
    docs = list(read_corpus(path))
    assert docs[0] == {"id": "d0", "text": "text 0", "note": None, "code": "0", "year": 2000}
    assert docs[-1] == {"id": "z", "text": "last", "note": "a note", "code": "X7", "year": None}
    latin1 = tmp_path / "l.csv"
    latin1.write_bytes(b"id,text,city\nd1,hello,Montr\xe9al\nd2,world,Paris\n")
    with pytest.raises(InputError, match="column 'city' holds text that is not UTF-8"):
        list(read_corpus(latin1))


def test_the_table_writes_stored_text_as_one_line_without_terminal_controls():
    from xtrieve.types import make_hits

    hits = make_hits(["\x1b[2J\x1b]0;title\x07id", "line1\nline2"], [2.0, 1.0],
                     [{"title": "T\x1b[31mred"}, {"title": "a\u202eb"}])
    out = format_hits("q", "what\nnow", hits, "table", texts=["x\x1b[5my", "café 🙂 中文"])
    assert "\x1b" not in out and "\x07" not in out and "\u202e" not in out
    assert "\\x1b[2J\\x1b]0;title\\x07id" in out and "line1 line2" in out and "query: what now" in out
    assert "T\\x1b[31mred" in out and "a\\u202eb" in out and "café 🙂 中文" in out
    assert shown("plain text") == "plain text"


def test_python_dash_m_xtrieve_is_the_cli(tmp_path):
    out = subprocess.run([sys.executable, "-m", "xtrieve", "--version"], capture_output=True, text=True, cwd=tmp_path)
    assert out.returncode == 0 and out.stdout.startswith("xtrieve, version"), out.stderr


def test_search_no_verify_skips_the_checksums(index, monkeypatch):
    import xtrieve

    opened = []
    real = xtrieve.Index.open.__func__
    monkeypatch.setattr(xtrieve.Index, "open", classmethod(lambda cls, *a, **kw: opened.append(kw["verify"]) or
                                                           real(cls, *a, **kw)))
    assert run("search", index, "moon", "--no-verify").exit_code == 0
    assert run("search", index, "moon").exit_code == 0
    assert opened == [False, True]


def test_trec_refuses_ids_with_control_characters_or_lone_surrogates():
    from xtrieve.errors import InputError
    from xtrieve.eval.metrics import check_trec_id

    for bad in ("doc\x1b[1mX", "nul\x00Y", "a\ud800"):
        with pytest.raises(InputError):
            check_trec_id("doc", bad)
    check_trec_id("doc", "d-1_é")


def test_json_writes_dates_and_times_in_iso_8601_and_bytes_as_hex():
    import datetime
    import json

    from xtrieve.cli.formats import to_json

    zone = datetime.timezone(datetime.timedelta(hours=5, minutes=30))
    got = json.loads(to_json({"at": datetime.datetime(2021, 1, 2, 3, 4, 5, tzinfo=zone), "day": datetime.date(2020, 1, 1),
                              "t": datetime.time(9, 30), "raw": b"\x00\xff", "x": float("nan")}))
    assert got == {"at": "2021-01-02T03:04:05+05:30", "day": "2020-01-01", "t": "09:30:00", "raw": "00ff", "x": None}


def test_ctrl_c_exits_130(monkeypatch):
    from click.testing import CliRunner

    from xtrieve.cli.main import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr("xtrieve.retrieve.api.Index.__init__", interrupted)
    r = CliRunner().invoke(main, ["info", "somewhere"])
    assert r.exit_code == 130 and "interrupted" in r.output
