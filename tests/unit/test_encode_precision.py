"""encode.precision: float32 whatever the caller's autocast, bfloat16 documents on request."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import xtrieve
from xtrieve.cli.main import main
from xtrieve.encode.encoder import Encoder
from xtrieve.errors import ConfigError

WORDS = "the cat sat on a mat with every dog barked what is late interaction query document token search fast".split()


def _docs(n: int = 12, length: int = 30) -> list[str]:
    rng = np.random.default_rng(0)
    return [" ".join(rng.choice(WORDS, size=length)) for _ in range(n)]


def test_float32_ignores_the_callers_autocast(pylate_folder):
    """A caller's torch.autocast neither breaks encoding (one query's packed float32 pass took
    bfloat16 inputs) nor changes a vector."""
    enc = Encoder.load(pylate_folder[0])
    docs, queries = _docs(), ["what is late interaction", "the cat sat"]
    ref_d, ref_q = enc.encode_documents(docs), enc.encode_queries(queries)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out_d, out_q = enc.encode_documents(docs), enc.encode_queries(queries)
        one = enc.encode_queries(queries[:1])
    assert all(np.array_equal(a, b) for a, b in zip(ref_d, out_d))
    assert all(np.array_equal(a, b) for a, b in zip(ref_q, out_q))
    assert np.array_equal(one[0], ref_q[0])


def test_bfloat16_rounds_documents_and_queries(pylate_folder):
    exact = Encoder.load(pylate_folder[0])
    fast = Encoder.load(pylate_folder[0], precision="bfloat16")
    assert fast.precision == "bfloat16" and "bfloat16" in repr(fast)
    docs = _docs()
    queries = ["what is late interaction"] + docs[:8]  # alone and in a batch over the packed pass's rows
    for ref, out in ((exact.encode_documents(docs, pool_factor=1), fast.encode_documents(docs, pool_factor=1)),
                     (exact.encode_queries(queries), fast.encode_queries(queries))):
        assert [a.shape for a in ref] == [b.shape for b in out]
        cos = np.concatenate([(a * b).sum(axis=1) for a, b in zip(ref, out)])
        assert max(float(np.abs(a - b).max()) for a, b in zip(ref, out)) > 0  # they did run in bfloat16
        assert cos.min() > 0.99
    alone, batch = fast.encode_queries(queries[:1])[0], fast.encode_queries(queries)[0]
    assert ((alone * batch).sum(axis=1)).min() > 0.999
    fast.backbone  # noqa: B018 (transformers' model loaded, as training does: the lean pass serves it)
    alone, batch = fast.encode_queries(queries[:1])[0], fast.encode_queries(queries)[0]
    ref = exact.encode_queries(queries[:1])[0]
    assert ((alone * batch).sum(axis=1)).min() > 0.999
    assert np.abs(batch - ref).max() > 0 and np.abs(alone - ref).max() > 0  # both in bfloat16


def test_unknown_precision_is_refused(pylate_folder):
    with pytest.raises(ConfigError, match="precision must be one of float32, bfloat16"):
        Encoder.load(pylate_folder[0], precision="fp16")
    enc = Encoder.load(pylate_folder[0])
    with pytest.raises(ConfigError, match="precision"):
        enc.precision = "half"
    assert enc.precision == "float32"


def _spy_on_batches(monkeypatch, is_query: bool) -> list[str]:
    """The precision of the encoder of every query (or document) batch, from now on."""
    seen: list[str] = []
    real = Encoder._hidden

    def spy(self, batch, query):
        if query == is_query:
            seen.append(self.precision)
        return real(self, batch, query)

    monkeypatch.setattr(Encoder, "_hidden", spy)
    return seen


def test_cli_build_and_add_in_bfloat16(tmp_path, pylate_folder, monkeypatch):
    seen = _spy_on_batches(monkeypatch, is_query=False)
    docs = _docs(14)
    first, second = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    first.write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(docs[:10])))
    second.write_text("".join(json.dumps({"_id": f"d{i}", "text": t}) + "\n" for i, t in enumerate(docs) if i >= 10))
    ix = tmp_path / "ix"
    runner = CliRunner()
    r = runner.invoke(main, ["build", str(ix), "--corpus", str(first), "--model", str(pylate_folder[0]),
                             "--precision", "bfloat16"])
    assert r.exit_code == 0, r.output
    assert seen and set(seen) == {"bfloat16"}
    seen.clear()
    r = runner.invoke(main, ["add", str(ix), "--corpus", str(second), "--precision", "bfloat16"])
    assert r.exit_code == 0, r.output
    assert seen and set(seen) == {"bfloat16"}
    bad = runner.invoke(main, ["add", str(ix), "--corpus", str(second), "--precision", "half"])
    assert bad.exit_code != 0 and "half" in bad.output
    idx = xtrieve.Index.open(ix)
    assert len(idx) == 14 and idx.encoder.precision == "float32"  # a setting of the run, not of the index
    hits = idx.search(docs[12], k=3)
    assert hits[0].doc_id == "d12"
    queried = _spy_on_batches(monkeypatch, is_query=True)
    r = runner.invoke(main, ["search", str(ix), docs[12], "--precision", "bfloat16", "--format", "json"])
    assert r.exit_code == 0, r.output
    assert json.loads(r.output.splitlines()[0])["hits"][0]["doc_id"] == "d12"
    assert queried and set(queried) == {"bfloat16"}


def test_index_open_sets_its_own_encoders_precision(tmp_path, pylate_folder):
    docs = _docs(6)
    xtrieve.Index.build(tmp_path / "ix", docs, encoder=Encoder.load(pylate_folder[0]))
    fast = xtrieve.Index.open(tmp_path / "ix", precision="bfloat16")
    assert fast.encoder.precision == "bfloat16"
    assert fast.search(docs[2], k=1)[0].doc_id == xtrieve.Index.open(tmp_path / "ix").search(docs[2], k=1)[0].doc_id
    with pytest.raises(ConfigError, match="precision must be one of"):
        xtrieve.Index.open(tmp_path / "ix", precision="fp16")
    with pytest.raises(ConfigError, match="give precision= to Encoder.load"):
        xtrieve.Index.open(tmp_path / "ix", encoder=Encoder.load(pylate_folder[0]), precision="bfloat16")


def test_bfloat16_through_transformers_backbones(modernbert_pylate_folder):
    """A non-BERT backbone (transformers' forward with packed linears) runs its document
    batches in bfloat16 too, and its queries exactly as in float32."""
    folder = modernbert_pylate_folder[0]
    exact, fast = Encoder.load(folder), Encoder.load(folder, precision="bfloat16")
    docs = _docs()
    ref, out = exact.encode_documents(docs, pool_factor=1), fast.encode_documents(docs, pool_factor=1)
    cos = np.concatenate([(a * b).sum(axis=1) for a, b in zip(ref, out)])
    assert cos.min() > 0.99 and max(float(np.abs(a - b).max()) for a, b in zip(ref, out)) > 0
    with torch.autocast("cpu", dtype=torch.bfloat16):
        queries = exact.encode_queries(docs[:3])
    assert all(np.array_equal(a, b) for a, b in zip(queries, fast.encode_queries(docs[:3])))


def test_cli_choices_are_the_precisions():
    from xtrieve.cli.commands_index import PRECISION_OPTION
    from xtrieve.encode.precision import PRECISIONS

    @PRECISION_OPTION
    def command(precision):
        return precision

    assert tuple(command.__click_params__[0].type.choices) == PRECISIONS
