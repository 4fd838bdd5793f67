"""Index stage with the real default encoder on the sample corpus (~30 texts)."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

import xtrieve
from xtrieve.errors import ModelMismatchError
from xtrieve.index.corpus import read_corpus

pytestmark = pytest.mark.integration

SAMPLE = Path(__file__).resolve().parents[2] / "examples" / "sample_corpus.jsonl"


@pytest.fixture(scope="module")
def encoder():
    return xtrieve.Encoder.load()


@pytest.fixture(scope="module")
def built(tmp_path_factory, encoder):
    path = tmp_path_factory.mktemp("real") / "ix"
    idx = xtrieve.Index.build(path, read_corpus(SAMPLE), encoder=encoder)
    return path, idx


def test_build_and_search(built):
    path, idx = built
    info = idx.info()
    docs = list(read_corpus(SAMPLE))
    assert info.n_docs == len(docs) and info.dim == 128 and info.model
    assert info.pool_min_vectors == idx.encoder.config.pool_min_vectors
    hits = idx.search("how do vaccines protect us?", k=3)
    assert len(hits) == 3 and "accin" in (hits[0].metadata.get("title") or "") + (idx.get(hits[0].doc_id)["text"])
    exact = idx.search("how do vaccines protect us?", k=3, exhaustive=True)
    assert [h.doc_id for h in hits] == [h.doc_id for h in exact]


def test_open_loads_the_stored_encoder(built, encoder):
    path, idx = built
    reopened = xtrieve.Index.open(path)
    assert reopened.encoder.identity()["head_sha256"] == encoder.identity()["head_sha256"]
    q = "planets around other stars"
    assert [h.doc_id for h in reopened.search(q, k=5)] == [h.doc_id for h in idx.search(q, k=5)]


def test_add_delete_with_real_encoder(tmp_path, encoder):
    docs = list(read_corpus(SAMPLE))
    idx = xtrieve.Index.build(tmp_path / "ix", docs[:20], encoder=encoder, config={"pool_factor": 2})
    idx.add(docs[20:])
    assert len(idx) == len(docs) and idx.info().n_segments == 2
    assert idx.info().n_vectors < idx.info().n_tokens  # pooled
    target = docs[25]
    assert idx.search(target["title"] + " " + target["text"], k=1)[0].doc_id == target["id"]
    idx.delete([target["id"]])
    assert target["id"] not in {h.doc_id for h in idx.search(target["text"], k=len(docs))}


def test_other_model_is_a_mismatch(built, pylate_folder):
    path, _ = built
    other = xtrieve.Encoder.load(pylate_folder[0])
    with pytest.raises(ModelMismatchError):
        xtrieve.Index.open(path, encoder=other)


def test_cli_build_then_search(tmp_path):
    from xtrieve.cli.main import main

    runner = CliRunner()
    r = runner.invoke(main, ["build", str(tmp_path / "ix"), "--corpus", str(SAMPLE), "--pool-factor", "2"])
    assert r.exit_code == 0, r.output
    info = json.loads(runner.invoke(main, ["info", str(tmp_path / "ix"), "--format", "json"]).output)
    assert info["pool_factor"] == 2 and info["n_docs"] > 20
    r = runner.invoke(main, ["search", str(tmp_path / "ix"), "vaccines", "-k", "2", "--format", "json"])
    assert r.exit_code == 0 and "Traceback" not in r.output


def test_a_fine_tuned_backbone_travels_with_the_model_and_the_index(tmp_path, encoder):
    """A model trained with --no-freeze-backbone keeps its backbone weights beside the head
    (over the packaged backbone): saving it again and building an index keep them too."""
    import numpy as np

    from xtrieve.encode.loaders import BACKBONE_STATE_FILE, write_safetensors

    tuned_dir = tmp_path / "tuned"
    encoder.save(tuned_dir)
    state = {k: v.detach().clone().contiguous() for k, v in encoder.backbone.state_dict().items()}
    state["encoder.layer.5.output.dense.weight"] *= 1.2  # a training step's worth of change
    write_safetensors(state, tuned_dir / BACKBONE_STATE_FILE)
    tuned = xtrieve.Encoder.load(tuned_dir)
    q = "planets around other stars"
    ref = tuned.encode_queries([q])[0]
    assert not np.allclose(ref, encoder.encode_queries([q])[0], atol=1e-3)
    assert tuned.identity() != encoder.identity()
    again = xtrieve.Encoder.load(tuned.save(tmp_path / "again"))
    assert np.allclose(again.encode_queries([q])[0], ref, atol=1e-6) and again.identity() == tuned.identity()
    docs = list(read_corpus(SAMPLE))[:6]
    xtrieve.Index.build(tmp_path / "ix", docs, encoder=tuned)
    reopened = xtrieve.Index.open(tmp_path / "ix")
    assert np.allclose(reopened.encoder.encode_queries([q])[0], ref, atol=1e-6)
    with pytest.raises(ModelMismatchError):
        xtrieve.Index.open(tmp_path / "ix", encoder=encoder)


def test_cli_build_encodes_on_the_device_asked_for(tmp_path):
    import torch

    from xtrieve.cli.main import main

    r = CliRunner().invoke(main, ["build", str(tmp_path / "cpu"), "--corpus", str(SAMPLE), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    if not torch.cuda.is_available():
        r = CliRunner().invoke(main, ["build", str(tmp_path / "gpu"), "--corpus", str(SAMPLE), "--device", "cuda"])
        assert r.exit_code == 1 and "error: device 'cuda': torch has no cuda device here" in r.output
        assert not (tmp_path / "gpu").exists()
