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
    ("colour == 'red'", "unknown column 'colour'"),
    ("year >", "expected"),
    ("year >= 2020 and", "expected"),
    ("__import__('os').system('x')", "cannot parse|unknown column"),
    ("year >= 2020 lang", "unexpected"),
    ("", "empty filter"),
    ("year ~ 3", "cannot parse"),
    ("year in (2020, 'x')", "share one type"),
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
                       ("at < '2021-06-01T12:00:00' and at >= '2020-01-01'", [True, False, False])]:
        assert allowed_rows(table, compile_filter(text, cols)).to_pylist() == want, text
    with pytest.raises(FilterError, match="'soon': not all date32"):
        allowed_rows(table, compile_filter("day > 'soon'", cols))


def test_a_bad_date_in_a_list_is_a_filter_error():
    import datetime as dt

    table = pa.table({"day": pa.array([dt.date(2020, 1, 1)])})
    with pytest.raises(FilterError, match="not all date32"):
        allowed_rows(table, compile_filter("day in ('2021-06-01', 'nope')", {"day"}))
