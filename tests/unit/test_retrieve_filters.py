"""Filter strings parse safely into a pyarrow Expression and into direct compute calls that agree."""
import pyarrow as pa
import pytest

from xtrieve.errors import FilterError
from xtrieve.retrieve.filters import allowed_rows, compile_filter, parse_filter

TABLE = pa.table({"year": [2000, 2020, 2021, None], "lang": ["en", "fr", "en", "en"]})
COLS = set(TABLE.column_names)


@pytest.mark.parametrize("text, want", [
    ("year >= 2020 and lang == 'en'", [False, False, True, False]),
    ("year < 2010 or lang in ('fr')", [True, True, False, False]),
    ("not (year > 2000)", [True, False, False, False]),
    ("year is null", [False, False, False, True]),
    ("year is not null and lang not in (\"en\")", [False, True, False, False]),
    ("year = 2021", [False, False, True, False]),
    ("not (year > 2000 or lang == 'fr')", [True, False, False, False]),
    ("year in (2020, 2021.0)", [False, True, True, False]),
    ("year > 2020.5 or year is null", [False, False, True, True]),
    ("lang != 'en' or not (year < 2021)", [False, True, True, False]),
])
def test_filters_evaluate(text, want):
    assert allowed_rows(TABLE, parse_filter(text, COLS)).to_pylist() == want  # the Expression
    assert allowed_rows(TABLE, compile_filter(text, COLS)).to_pylist() == want  # direct compute calls


def test_a_type_clash_is_a_filter_error_on_both_paths():
    for condition in (parse_filter("lang > 3", COLS), compile_filter("lang > 3", COLS)):
        with pytest.raises(FilterError, match="cannot be applied"):
            allowed_rows(TABLE, condition)


@pytest.mark.parametrize("text, message", [
    ("year == 'x'", "filter \"year == 'x'\": cannot be applied: column 'year' holds int64 values, which '==' cannot compare with 'x'"),
    ("lang > 3", "column 'lang' holds string values, which '>' cannot compare with 3"),
    ("year in ('a', 'b')", "column 'year' holds int64 values, which 'in' cannot compare with \\('a', 'b'\\)"),
])
def test_a_type_clash_names_the_filter_column_type_and_literal(text, message):
    with pytest.raises(FilterError, match=message):
        allowed_rows(TABLE, compile_filter(text, COLS))


def test_a_list_column_only_takes_contains_and_is_null():
    table = pa.table({"tags": [["x", "y"], ["z"], None]})
    for text in ("tags == 'x'", "tags in ('x', 'y')", "tags != 'x'"):
        with pytest.raises(FilterError, match="filter .*column 'tags' holds list<.*> values: a list .*cannot be tested"):
            allowed_rows(table, compile_filter(text, {"tags"}))
    assert allowed_rows(table, compile_filter("tags is not null", {"tags"})).to_pylist() == [True, True, False]


LISTS = pa.table({
    "tags": [["x", "y"], ["z"], None, [], ["x", None], [None]],
    "ids": [[1, 2], [3], [4], None, [], [2, 2]],
    "title": ["Vaccines work", "vaccine", None, "", "measles", "The vaccines"],
    "contains": [1, 2, 3, 4, 5, 6],  # a column may still be named so
})
LIST_COLS = set(LISTS.column_names)


@pytest.mark.parametrize("text, want", [
    ("tags contains 'x'", [True, False, False, False, True, False]),
    ("tags not contains 'x'", [False, True, False, True, False, True]),  # a null list stays null
    ("not tags contains 'x'", [False, True, False, True, False, True]),
    ("tags contains 'x' or tags contains 'z'", [True, True, False, False, True, False]),
    ("tags contains 'x' and tags contains 'y'", [True, False, False, False, False, False]),
    ("ids contains 2", [True, False, False, False, False, True]),
    ("ids contains 2.0", [True, False, False, False, False, True]),
    ("title contains 'accine'", [True, True, False, False, False, True]),
    ("title CONTAINS 'Vacc'", [True, False, False, False, False, False]),  # case-sensitive text
    ("contains contains 3", None),  # an int column takes no 'contains'
    ("contains >= 5 and title contains ''", [False, False, False, False, True, True]),
])
def test_contains_tests_list_elements_and_substrings(text, want):
    if want is None:
        with pytest.raises(FilterError, match="'contains' tests a list column's elements or a text column's substrings"):
            allowed_rows(LISTS, compile_filter(text, LIST_COLS))
        return
    assert allowed_rows(LISTS, compile_filter(text, LIST_COLS)).to_pylist() == want


@pytest.mark.parametrize("text, message", [
    ("ids contains 'x'", "column 'ids' holds list<item: int64> values, which 'contains' cannot compare with 'x'"),
    ("title contains 1.5", "column 'title' holds string values: 'contains' looks for a text in it, not 1.5"),
    ("tags contains", "expected more input, got end of filter"),
    ("tags not == 'x'", "'not' after a column name must be followed by 'in' or 'contains'"),
])
def test_contains_errors_name_the_problem(text, message):
    with pytest.raises(FilterError, match=message):
        allowed_rows(LISTS, compile_filter(text, LIST_COLS))


def test_contains_has_no_expression_form():
    with pytest.raises(FilterError, match="'contains' has no pyarrow Expression form"):
        parse_filter("year > 1 and tags contains 'x'", {"year", "tags"})
    assert parse_filter("contains == 1", {"contains"}) is not None  # a column of that name is fine


@pytest.mark.parametrize("text, want", [
    ("lang in ('fr',)", [False, True, False, False]),
    ("year in (2020, 2021,)", [False, True, True, False]),
    ("lang in ()", [False, False, False, False]),
    ("lang not in ()", [True, True, True, True]),
    ("year not in ()", [True, True, True, False]),  # a null value stays null, as with any 'in'
])
def test_in_takes_a_trailing_comma_and_an_empty_list(text, want):
    assert allowed_rows(TABLE, compile_filter(text, COLS)).to_pylist() == want
    assert allowed_rows(TABLE, parse_filter(text, COLS)).to_pylist() == want


@pytest.mark.parametrize("text, want", [
    ("lang in ['fr']", [False, True, False, False]),
    ("year not in [2000, 2021,]", [False, True, False, False]),
    ("lang in []", [False, False, False, False]),
])
def test_in_takes_a_bracketed_list(text, want):
    assert allowed_rows(TABLE, compile_filter(text, COLS)).to_pylist() == want
    assert allowed_rows(TABLE, parse_filter(text, COLS)).to_pylist() == want


FLAGS = pa.table({"draft": [True, False, None, False], "n": [1, 2, 3, 4]})


@pytest.mark.parametrize("text, want", [
    ("draft", [True, False, False, False]),
    ("not draft", [False, True, False, True]),  # a null flag passes neither
    ("(draft) or n == 4", [True, False, False, True]),
    ("draft and n >= 1 or not draft and n == 2", [True, True, False, False]),
])
def test_a_boolean_column_named_alone_tests_true(text, want):
    for condition in (compile_filter(text, set(FLAGS.column_names)), parse_filter(text, set(FLAGS.column_names))):
        assert allowed_rows(FLAGS, condition).to_pylist() == want


def test_a_column_named_alone_must_hold_booleans():
    with pytest.raises(FilterError, match="column 'n' holds int64 values; a column named alone must hold booleans"):
        allowed_rows(FLAGS, compile_filter("n or draft", set(FLAGS.column_names)))
    with pytest.raises(FilterError, match="unknown column 'colour'"):
        compile_filter("colour", set(FLAGS.column_names))


@pytest.mark.parametrize("text", ["lang in (,)", "lang in ('en',,)", "lang in ('en' 'fr')", "lang in ('en'",
                                  "lang in ('en']", "lang in ['en')"])
def test_a_malformed_list_is_a_filter_error(text):
    with pytest.raises(FilterError, match="expected"):
        compile_filter(text, COLS)


def test_a_nested_field_path_finds_the_flattened_column():
    import pyarrow.compute as pc

    table = pa.table({"meta.author": ["ann", "bob", None], "meta.info.n": [1, 2, 3], "lang": ["en", "fr", "en"]})
    for expr, want in [(pc.field("meta", "author") == "bob", [False, True, False]),
                       (pc.field("meta.author") == "bob", [False, True, False]),
                       (pc.field("meta", "info", "n") >= 2, [False, True, True]),
                       ((pc.field("meta", "author") == "ann") | (pc.field("lang") == "fr"), [True, True, False])]:
        assert allowed_rows(table, expr).to_pylist() == want, expr
    with pytest.raises(FilterError, match="no column FieldRef.Nested.*metadata columns: lang, meta.author.*stored flattened"):
        allowed_rows(table, pc.field("meta", "title") == "x")
    with pytest.raises(FilterError, match="no column FieldRef.Name\\(colour\\)"):
        allowed_rows(table, pc.field("colour") == "x")


@pytest.mark.parametrize("text, message", [
    ("colour == 'red'", "unknown column 'colour'"),
    ("year >", "expected"),
    ("year >= 2020 and", "expected"),
    ("__import__('os').system('x')", "cannot parse|unknown column"),
    ("year >= 2020 lang", "unexpected"),
    ("", "empty filter"),
    ("year ~ 3", "cannot parse"),
    ("year in (2020, true)", "share one type"),
    ("year > \u0663", "cannot parse"),  # digits of other scripts are not numbers
])
def test_bad_filters(text, message):
    with pytest.raises(FilterError, match=message):
        parse_filter(text, COLS)


def test_names_any_script_backticks_and_backslashes():
    table = pa.table({"année": [2020, 2010], "my-col": [1, 2], "in": [5, 6], "path": ["C:\\data\\5", "it's"]})
    cols = set(table.column_names)
    for text, want in [("année >= 2015", [True, False]), ("`my-col` == 2", [False, True]),
                       ("`in` == 5 or `in` > 5", [True, True]),
                       ("path == 'C:\\data\\5'", [True, False]),  # a lone backslash stays as written
                       ("path == 'C:\\\\data\\\\5'", [True, False]),  # an escaped one is one backslash
                       ("path == 'it\\'s'", [False, True])]:
        assert allowed_rows(table, compile_filter(text, cols)).to_pylist() == want, text
        assert allowed_rows(table, parse_filter(text, cols)).to_pylist() == want, text


def test_long_chains_and_deep_nesting():
    ids = [str(i) for i in range(3000)]
    table = pa.table({"doc_id": ids})
    cols = {"doc_id"}
    chain = " or ".join(f"doc_id == '{i}'" for i in range(0, 3000, 2))  # 1,500 terms: no recursion per term
    assert sum(allowed_rows(table, compile_filter(chain, cols)).to_pylist()) == 1500
    assert allowed_rows(TABLE, compile_filter("not " * 1001 + "year > 2000", COLS)).to_pylist() == \
        [True, False, False, False]  # null stays null, and fails
    with pytest.raises(FilterError, match="nest deeper"):
        compile_filter("(" * 200 + "year > 1" + ")" * 200, COLS)
    assert allowed_rows(TABLE, compile_filter("(" * 20 + "year > 2020" + ")" * 20, COLS)).to_pylist() == \
        [False, False, True, False]


def test_an_expression_that_is_not_a_test_is_a_filter_error():
    import pyarrow.compute as pc

    with pytest.raises(FilterError, match="true/false"):
        allowed_rows(TABLE, pc.field("year"))


def test_dates_and_times_compare_with_text_literals():
    import datetime as dt

    table = pa.table({"day": pa.array([dt.date(2020, 1, 1), dt.date(2021, 6, 1), None]),
                      "at": pa.array([dt.datetime(2020, 1, 1, 5), dt.datetime(2021, 6, 1, 13), dt.datetime(2019, 1, 1)])})
    cols = set(table.column_names)
    for text, want in [("day >= '2021-01-01'", [False, True, False]),
                       ("day in ('2020-01-01', '2022-01-01')", [True, False, False]),
                       ("at < '2021-06-01T12:00:00' and at >= '2020-01-01'", [True, False, False]),
                       ("at > '2021-06-01 12:30'", [False, True, False])]:
        assert allowed_rows(table, compile_filter(text, cols)).to_pylist() == want, text
    with pytest.raises(FilterError, match="filter \"day > 'soon'\": column 'day' holds date32\\[day\\] values; 'soon' is not one"):
        allowed_rows(table, compile_filter("day > 'soon'", cols))
    with pytest.raises(FilterError, match="column 'day' holds date32.* cannot compare with 2021"):
        allowed_rows(table, compile_filter("day >= 2021", cols))


def test_a_bad_date_in_a_list_is_a_filter_error_naming_it():
    import datetime as dt

    table = pa.table({"day": pa.array([dt.date(2020, 1, 1)])})
    with pytest.raises(FilterError, match="column 'day' holds date32\\[day\\] values; 'nope' is not one"):
        allowed_rows(table, compile_filter("day in ('2021-06-01', 'nope')", {"day"}))


def test_times_of_day_compare_with_text_literals():
    import datetime as dt

    table = pa.table({"t": pa.array([dt.time(9, 30), dt.time(14, 0), None]),
                      "s": pa.array([9 * 3600 + 1800, 14 * 3600, None], pa.int32()).cast(pa.time32("s")),
                      "ns": pa.array([dt.time(9, 30), dt.time(14, 0), None]).cast(pa.time64("ns"))})
    cols = set(table.column_names)
    for column in ("t", "s", "ns"):
        for text, want in [(f"{column} >= '10:00:00'", [False, True, False]),
                           (f"{column} >= '10:00'", [False, True, False]),
                           (f"{column} < '09:30:00.000001'", [True, False, False]),
                           (f"{column} in ('09:30', '15:00')", [True, False, False]),
                           (f"{column} == '14:00:00'", [False, True, False])]:
            assert allowed_rows(table, compile_filter(text, cols)).to_pylist() == want, text
    for text, reason in [("t > '25:00'", "hour must be in"), ("t > 'noon'", "Invalid isoformat"),
                         ("t > '10:00+01:00'", "no zone offset")]:
        with pytest.raises(FilterError, match=f"filter .*column 't' holds time64\\[us\\] values; .* is not one .*{reason}"):
            allowed_rows(table, compile_filter(text, cols))


def test_zoned_timestamps_compare_with_text_literals():
    import datetime as dt

    utc = dt.timezone.utc
    instants = [dt.datetime(2021, 1, 1, 12, tzinfo=utc), dt.datetime(2021, 5, 31, 22, tzinfo=utc), None]
    table = pa.table({"z": pa.array(instants),  # timestamp[us, tz=UTC]
                      "paris": pa.array(instants).cast(pa.timestamp("s", tz="Europe/Paris")),
                      "nz": pa.array(instants).cast(pa.timestamp("ns", tz="+05:00"))})
    cols = set(table.column_names)
    for text, want in [("z >= '2021-06-01'", [False, False, False]),  # read in UTC, the column's zone
                       ("z >= '2021-05-31T22:00:00'", [False, True, False]),
                       ("z >= '2021-06-01T00:00:00+02:00'", [False, True, False]),  # an offset is kept
                       ("z >= '2021-05-31T22:00:00Z'", [False, True, False]),
                       ("z in ('2021-01-01 12:00', '2021-06-01T00:00+02:00')", [True, True, False]),
                       ("paris >= '2021-06-01'", [False, True, False]),  # midnight in Paris: 22:00 UTC
                       ("paris < '2021-06-01T00:00:00.000001'", [True, True, False]),
                       ("nz == '2021-06-01T03:00'", [False, True, False])]:  # 22:00 UTC is 03:00 at +05:00
        assert allowed_rows(table, compile_filter(text, cols)).to_pylist() == want, text
    with pytest.raises(FilterError, match="column 'z' holds timestamp\\[us, tz=UTC\\] values; 'soon' is not one"):
        allowed_rows(table, compile_filter("z > 'soon'", cols))
    with pytest.raises(FilterError, match="'2021-03-28T02:30' is not one .*Europe/Paris.*give the time an offset"):
        allowed_rows(table, compile_filter("paris == '2021-03-28T02:30'", cols))  # skipped by the spring change


def test_iso_texts_read_alike_on_every_python():
    from xtrieve.retrieve.filters import _iso_for_python

    assert _iso_for_python("2021-05-31T22:00:00Z") == "2021-05-31T22:00:00+00:00"
    assert _iso_for_python("09:30:00.5") == "09:30:00.500000"
    assert _iso_for_python("2021-01-01 10:00:00.1234567+01:00") == "2021-01-01 10:00:00.123456+01:00"


def test_in_refuses_literals_of_another_type_as_equality_does():
    table = pa.table({"n": [1, 2, None], "b": [True, False, True]})
    for text in ("n in ('1',)", "b in ('true')", "n == '1'"):
        with pytest.raises(FilterError, match="cannot compare"):
            allowed_rows(table, compile_filter(text, {"n", "b"}))


def test_an_expression_that_cannot_be_applied_names_itself():
    import pyarrow.compute as pc

    with pytest.raises(FilterError, match=r"filter \(lang > 3\) cannot be applied"):
        allowed_rows(pa.table({"lang": ["en"]}), pc.field("lang") > 3)


def test_a_type_clash_is_named_on_an_index_without_documents(tmp_path):
    import numpy as np

    import xtrieve

    vectors = [np.eye(2, 8, dtype=np.float32), np.eye(2, 8, k=2, dtype=np.float32)]
    idx = xtrieve.Index.build_from_embeddings(tmp_path / "ix", ["a", "b"], vectors, [{"year": 2000}, {"year": 2001}])
    idx.delete(["a", "b"])
    assert not idx.snapshot.segments
    with pytest.raises(FilterError, match="holds int64 values"):
        idx.delete(filter="year == 'abc'")
    with pytest.raises(FilterError, match="holds int64 values"):
        idx.search(vectors[0], k=1, filter="year == 'abc'")
    assert idx.delete(filter="year == 2000") == 0 and idx.search(vectors[0], k=1, filter="year >= 0") == []


def test_integers_compared_for_equality_with_a_text_column_read_as_their_digits(tmp_path):
    import numpy as np

    import xtrieve

    rng = np.random.default_rng(0)
    idx = xtrieve.Index.build_from_embeddings(tmp_path / "ix", [5, 17, 300], [rng.standard_normal((3, 8)).astype("f4") for _ in range(3)],
                                              metadata=[{"zip": "10001"}, {"zip": "007"}, {"zip": "3"}])
    q = rng.standard_normal((2, 8)).astype("f4")

    def ids(f):
        return sorted(h.doc_id for h in idx.search(q, k=5, filter=f))

    assert ids("doc_id == 17") == ["17"] and ids("doc_id in (5, 300)") == ["300", "5"]
    assert ids("doc_id not in (5, 300)") == ["17"] and ids("zip != 10001") == ["17", "300"]
    assert ids("zip == 7") == []  # '007' is not 7's digits
    assert ids("zip == 007") == ids("zip = 007") == ids("zip in (007,)") == ["17"]  # the digits as written
    assert ids("doc_id = 17") == ["17"] and ids("doc_id in ('5', 300)") == ["300", "5"]
    with pytest.raises(FilterError, match="'>' cannot compare"):  # an order of text and number stays an error
        idx.search(q, k=5, filter="doc_id > 5")


def test_in_finds_negative_zero_as_equality_does():
    table = pa.table({"x": [-0.0, 0.0, 1.0, None]})
    for text, want in [("x in (0,)", [True, True, False, False]), ("x == 0", [True, True, False, False]),
                       ("x in (-0.0, 1)", [True, True, True, False]), ("x not in (0,)", [False, False, True, False])]:
        assert allowed_rows(table, compile_filter(text, {"x"})).to_pylist() == want, text


def test_a_very_long_chain_parses_prints_and_frees_without_deep_recursion():
    terms = 60_000  # a left-deep Expression this long crashed pyarrow when printed or freed
    cond = compile_filter(" or ".join(f"n == {i}" for i in range(terms)), {"n"})
    assert str(cond.expression).count("==") == terms
    assert allowed_rows(pa.table({"n": [5, terms, None]}), cond).to_pylist() == [True, False, False]
    with pytest.raises(FilterError) as err:
        compile_filter(" or ".join(["n == 1"] * terms) + " )", {"n"})
    assert len(str(err.value)) < 500  # the filter's text is cut in the message


def test_a_column_left_with_only_nulls_keeps_its_type_for_filters(tmp_path):
    import numpy as np

    import xtrieve

    rng = np.random.default_rng(1)
    vecs = [rng.standard_normal((3, 8)).astype("f4") for _ in range(4)]
    idx = xtrieve.Index.build_from_embeddings(tmp_path / "ix", ["a", "b"], vecs[:2], [{"x": 1}, {"x": 2}])
    idx.add_embeddings(["c", "d"], vecs[2:], [{"x": None}, {"x": None}])
    idx.delete(["a", "b"])
    for step in ("deleted", "compacted"):
        with pytest.raises(FilterError, match="holds int64 values"):
            idx.search(vecs[0], k=5, filter="x == 'abc'")
        assert sorted(h.doc_id for h in idx.search(vecs[0], k=5, filter="x is null")) == ["c", "d"], step
        idx.compact()


def test_a_number_of_thousands_of_digits_and_names_nested_thousands_deep_are_filter_errors():
    with pytest.raises(FilterError, match="the number 99999999999999999999... is too long"):
        compile_filter("year == " + "9" * 5000, COLS)
    import pyarrow.compute as pc

    deep = "a." * 3000 + "b"
    table = pa.table({deep: [1, 2], "year": [1, 2]})
    with pytest.raises(FilterError, match="nested too deep"):
        allowed_rows(table, pc.field("year") == 1)
    assert allowed_rows(table, compile_filter("year == 1", {deep, "year"})).to_pylist() == [True, False]


def test_contains_reads_lists_as_arrow_lays_them_out():
    """A null list may still span values (Arrow allows it; other tools write it); a slice starts
    inside the values; a large_string column reads an integer as its digits too."""
    values = pa.array(["x", "a", "x", "c"])
    spanning = pa.ListArray.from_arrays(pa.array([0, 2, 3, 4], pa.int32()), values,
                                        mask=pa.array([False, True, False]))  # row 1 is null but spans "x"
    table = pa.table({"tags": spanning})
    assert allowed_rows(table, compile_filter("tags contains 'x'", {"tags"})).to_pylist() == [True, False, False]
    assert allowed_rows(table, compile_filter("tags not contains 'x'", {"tags"})).to_pylist() == [False, False, True]
    sliced = pa.table({"tags": pa.array([["q"], ["x"], ["b"], ["x", "y"]]).slice(1)})
    assert allowed_rows(sliced, compile_filter("tags contains 'x'", {"tags"})).to_pylist() == [True, False, True]
    fixed = pa.table({"v": pa.array([[1, 2], [3, 4], [5, 6]], pa.list_(pa.int64(), 2)).slice(1)})
    assert allowed_rows(fixed, compile_filter("v contains 5", {"v"})).to_pylist() == [False, True]
    large = pa.table({"zip": pa.array(["02134", "9999"], pa.large_string())})
    assert allowed_rows(large, compile_filter("zip contains 213", {"zip"})).to_pylist() == [True, False]
