"""Configs reject values of the wrong type or range with a ConfigError naming the field."""
from __future__ import annotations

import pytest

from xtrieve.config import EncoderConfig, IndexConfig, SearchConfig
from xtrieve.errors import ConfigError


@pytest.mark.parametrize("cls, values, field", [
    (IndexConfig, {"flat_max_vectors": -5}, "flat_max_vectors"),
    (IndexConfig, {"pq_bytes": "x"}, "pq_bytes"),
    (IndexConfig, {"store_text": "no"}, "store_text"),
    (IndexConfig, {"batch_size": True}, "batch_size"),
    (SearchConfig, {"selective_filter_fraction": "x"}, "selective_filter_fraction"),
    (SearchConfig, {"selective_filter_fraction": 1.5}, "selective_filter_fraction"),
    (SearchConfig, {"n_rerank": 64.0}, "n_rerank"),
    (EncoderConfig, {"query_prefix": 5}, "query_prefix"),
    (EncoderConfig, {"query_augmentation": "no"}, "query_augmentation"),
    (EncoderConfig, {"dim": True}, "dim"),
    (EncoderConfig, {"dense_weight": float("inf")}, "dense_weight"),
    (EncoderConfig, {"skiplist_words": "abc"}, "skiplist_words"),
])
def test_wrong_values_name_their_field(cls, values, field):
    with pytest.raises(ConfigError, match=field):
        cls.from_dict(values)


def test_good_values_still_load():
    assert IndexConfig.from_dict({"pq_bytes": 32, "store_text": False, "flat_max_vectors": 0}).pq_bytes == 32
    assert SearchConfig.from_dict({"selective_filter_fraction": 0}).selective_filter_fraction == 0
    cfg = EncoderConfig.from_dict({"query_prefix": "[Q] ", "skiplist_words": [".", ","], "dense_weight": 1})
    assert cfg.skiplist_words == (".", ",")


def test_numpy_numbers_are_stored_as_python_ones():
    np = pytest.importorskip("numpy")
    cfg = SearchConfig(k_prime=np.int64(32), selective_filter_fraction=np.float32(0.25))
    assert type(cfg.k_prime) is int and cfg.k_prime == 32
    assert type(cfg.selective_filter_fraction) is float and cfg.selective_filter_fraction == 0.25
    assert SearchConfig.from_dict({"n_rerank": np.arange(8, 9)[0]}) == SearchConfig(n_rerank=8)
    with pytest.raises(ConfigError, match="k_prime"):
        SearchConfig(k_prime=np.float64(3.5))
    assert IndexConfig(store_text=np.False_).store_text is False
    assert EncoderConfig(query_augmentation=np.bool_(True)).query_augmentation is True


def test_a_bad_value_is_shown_in_the_error():
    with pytest.raises(ConfigError, match="doc_windows must be an int >= 1, got 'abc'$"):
        EncoderConfig(doc_windows="abc")
    with pytest.raises(ConfigError, match=r"got 'xxxx+\.\.\.$"):  # a long one shortened
        IndexConfig(batch_size="x" * 100)


@pytest.mark.parametrize("cls", [EncoderConfig, IndexConfig, SearchConfig])
def test_an_unknown_keyword_is_a_config_error_naming_it(cls):
    with pytest.raises(ConfigError, match=r"unknown \w+Config key\(s\): frobnicate; known keys: ") as err:
        cls(frobnicate=1)
    assert isinstance(err.value, TypeError)  # what Python raises for an unexpected keyword
    with pytest.raises(ConfigError, match="frobnicate"):
        cls().replace(frobnicate=1)
    with pytest.raises(ConfigError, match="give its fields by name"):
        cls(*range(len(cls.field_names()) + 1))


def test_configs_still_copy_and_compare():
    import copy
    import dataclasses

    cfg = SearchConfig(k_prime=64)
    assert copy.deepcopy(cfg) == cfg == dataclasses.replace(SearchConfig(), k_prime=64)
    assert SearchConfig(**cfg.to_dict()) == cfg
