"""Long documents as windows (EncoderConfig.doc_windows): coverage, order, equality with truncation."""
from __future__ import annotations

import numpy as np
import pytest

from xtrieve.encode.encoder import Encoder, WindowJoin
from xtrieve.errors import ConfigError

WORDS = "the cat sat on the mat a dog barked what is late interaction query document token every search fast".split()
LONG = " ".join(WORDS[i % len(WORDS)] for i in range(50)) + " ."
SHORT = "the cat sat on the mat"


def load(folder, **cfg):
    return Encoder.load(folder, config={"doc_maxlen": 12, "keep_special_tokens": False, **cfg})


def output_ids(enc, text):
    """The token ids behind a document's output vectors, window by window."""
    rows = enc.processor.rows([text], is_query=False)
    batch = enc.processor.batch(rows.ids, False, context=rows.context)
    return [int(t) for r in range(len(rows.ids)) for t in batch.input_ids[r][batch.output_mask[r]]]


def test_windows_cover_every_content_token_once(pylate_folder):
    folder, _ = pylate_folder
    enc = load(folder, doc_windows=10, doc_window_overlap=3)
    rows = enc.processor.rows([LONG, SHORT], is_query=False)
    content = [t for t in enc.tokenizer(LONG, add_special_tokens=False)["input_ids"]
               if t not in enc.processor.skip_ids]
    assert output_ids(enc, LONG) == content
    assert rows.n_truncated == 0
    assert rows.owner.count(1) == 1 and max(rows.window) == rows.owner.count(0) - 1
    assert all(len(ids) <= 12 for ids in rows.ids)
    assert rows.context[:rows.owner.count(0)] == [0] + [3] * (rows.owner.count(0) - 1)


def test_windows_beyond_the_limit_are_truncated_and_counted(pylate_folder):
    folder, _ = pylate_folder
    enc = load(folder, doc_windows=2, doc_window_overlap=3)
    rows = enc.processor.rows([LONG], is_query=False)
    assert rows.owner == [0, 0] and rows.n_truncated == 1
    # budget 9 content tokens per window (12 - [CLS] [D] [SEP]); window 2 adds 9 - 3 new ones
    content = enc.tokenizer(LONG, add_special_tokens=False)["input_ids"]
    assert output_ids(enc, LONG) == [t for t in content[:15] if t not in enc.processor.skip_ids]


def test_first_window_equals_truncation_and_short_docs_are_unchanged(pylate_folder):
    folder, _ = pylate_folder
    one, many = load(folder), load(folder, doc_windows=4)
    t, w = one.encode([LONG, SHORT], False, pool_factor=1), many.encode([LONG, SHORT], False, pool_factor=1)
    assert np.allclose(w.vectors[0][: len(t.vectors[0])], t.vectors[0], atol=1e-5)
    assert len(w.vectors[0]) > len(t.vectors[0]) and w.n_tokens[0] == len(w.vectors[0])
    assert np.allclose(w.vectors[1], t.vectors[1], atol=1e-5)
    # queries never split
    assert [q.shape for q in many.encode_queries([LONG])] == [q.shape for q in one.encode_queries([LONG])]


def test_window_join_orders_windows_and_averages_states():
    import torch

    join = WindowJoin(2, hidden_size=2)
    join.add(0, 1, np.array([[2.0, 0.0]]))
    join.add(1, 0, np.array([[5.0, 5.0]]))
    join.add(0, 0, np.array([[1.0, 0.0]]))
    assert [a.tolist() for a in join.arrays()] == [[[1.0, 0.0], [2.0, 0.0]], [[5.0, 5.0]]]
    hidden = torch.tensor([[[1.0, 0.0], [9.0, 9.0]], [[0.0, 3.0], [0.0, 1.0]]])
    join.add_states([0, 0], hidden, torch.tensor([[1, 0], [1, 1]]))  # 3 attended states of text 0
    dense = join.dense()
    assert np.allclose(dense[0], np.array([1.0, 4.0]) / np.linalg.norm([1.0, 4.0]))


def test_bad_window_settings_are_rejected(pylate_folder):
    folder, _ = pylate_folder
    with pytest.raises(ConfigError, match="doc_windows"):
        load(folder, doc_windows=0)
    with pytest.raises(ConfigError, match="doc_window_overlap"):
        load(folder, doc_window_overlap=-1)


def test_an_overlap_over_half_a_window_is_capped_and_said(pylate_folder, caplog):
    folder, _ = pylate_folder
    enc = load(folder, doc_windows=4, doc_window_overlap=30)
    enc.encode_documents([LONG, LONG])
    assert caplog.text.count("doc_window_overlap 30 is more than half") == 1


def test_index_built_with_windows_counts_every_window_and_reopens(pylate_folder, tmp_path):
    import xtrieve

    folder, _ = pylate_folder
    docs = [{"id": "long", "text": LONG}, {"id": "short", "text": SHORT}]
    one = xtrieve.Index.build(tmp_path / "one", docs, encoder=load(folder))
    many = xtrieve.Index.build(tmp_path / "many", docs, encoder=load(folder, doc_windows=10))
    assert many.info().n_tokens > one.info().n_tokens
    reopened = xtrieve.Index.open(tmp_path / "many")
    assert reopened.info().n_tokens == many.info().n_tokens
    assert {h.doc_id for h in reopened.search("the cat sat", k=2, exhaustive=True)} == {"long", "short"}
    # the stored encoder keeps its windows: a document added later is windowed too
    n_long = load(folder, doc_windows=10).encode([LONG], False).n_tokens[0]
    reopened.add([{"id": "long2", "text": LONG}])
    assert reopened.info().n_tokens == many.info().n_tokens + n_long


def test_batches_stay_under_the_activation_budget_and_encode_the_same(pylate_folder, monkeypatch):
    from xtrieve.encode import encoder as encoder_module

    folder, _ = pylate_folder
    enc = load(folder, doc_windows=4)
    texts = [LONG, SHORT, LONG[:80], SHORT + " again", LONG[:40]] * 3
    whole = enc.encode(texts, False, pool_factor=1)
    # room for 24 padded tokens per batch: two 12-token windows, or more of the shorter rows
    monkeypatch.setattr(encoder_module, "BATCH_ACTIVATION_BYTES", 24 * 4 * 4 * enc.hidden_size)
    sizes = [(len(windows), batch.input_ids.shape[1]) for _, windows, batch in enc._batches(texts, False, 32, False, "t")]
    assert sum(n for n, _ in sizes) == len(enc.processor.rows(texts, False).ids)
    assert all(n * width <= 24 for n, width in sizes) and max(n for n, _ in sizes) > 2
    split = enc.encode(texts, False, pool_factor=1)
    assert all(np.allclose(a, b, atol=1e-5) for a, b in zip(whole.vectors, split.vectors))


def test_truncated_documents_are_counted_and_an_add_warns_once(pylate_folder, tmp_path, caplog):
    import logging

    import xtrieve

    folder, _ = pylate_folder
    enc = load(folder, doc_windows=2)
    assert enc.encode([LONG, SHORT], is_query=False).n_truncated == 1
    assert load(folder, doc_windows=10).encode([LONG, SHORT], is_query=False).n_truncated == 0
    docs = [{"id": f"d{i}", "text": LONG if i % 2 else SHORT} for i in range(6)]
    with caplog.at_level(logging.WARNING, logger="xtrieve.index.writer"):
        xtrieve.Index.build(tmp_path / "ix", docs, encoder=enc, config={"batch_size": 2})
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.name.endswith("writer")]
    assert len(warnings) == 1  # one for the whole add, not one per batch
    assert "3 of 6 documents are longer than the model reads (2 window(s) of 12 tokens)" in warnings[0]
    assert "doc_windows=4" in warnings[0]


def test_cli_encoder_config_changes_the_index_model(pylate_folder, tmp_path):
    import json

    from click.testing import CliRunner

    import xtrieve
    from xtrieve.cli.main import main

    folder, _ = pylate_folder
    corpus = tmp_path / "c.jsonl"
    corpus.write_text(json.dumps({"_id": "long", "text": LONG}) + "\n" + json.dumps({"_id": "short", "text": SHORT}) + "\n")
    runner = CliRunner()
    r = runner.invoke(main, ["build", str(tmp_path / "ix"), "--corpus", str(corpus), "--model", str(folder),
                             "--encoder-config", "doc_maxlen=12", "--encoder-config", "doc_windows=8"])
    assert r.exit_code == 0, r.output
    idx = xtrieve.Index.open(tmp_path / "ix")
    assert (idx.encoder.config.doc_windows, idx.encoder.config.doc_maxlen) == (8, 12)
    info = json.loads(runner.invoke(main, ["info", str(tmp_path / "ix"), "--format", "json"]).output)
    assert (info["doc_windows"], info["doc_maxlen"], info["query_maxlen"]) == (8, 12, 12)
    bad = runner.invoke(main, ["build", str(tmp_path / "b"), "--corpus", str(corpus), "--model", str(folder),
                               "--encoder-config", "doc_windowz=8"])
    assert bad.exit_code != 0 and "unknown EncoderConfig key(s): doc_windowz" in bad.output
    bad = runner.invoke(main, ["build", str(tmp_path / "b"), "--corpus", str(corpus), "--encoder-config", "doc_windows"])
    assert bad.exit_code != 0 and "KEY=VALUE" in bad.output
    both = runner.invoke(main, ["build", str(tmp_path / "b"), "--corpus", str(corpus), "--model", str(folder),
                                "--pool-factor", "2", "--encoder-config", "pool_factor=3"])
    assert both.exit_code != 0 and "give the pool factor once" in both.output
