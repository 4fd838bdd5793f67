"""Where the model runs: Index.open(device=), and --device on add, search, eval and train."""
from __future__ import annotations

import json
import pickle

import numpy as np
import pytest
import torch
from click.testing import CliRunner

import xtrieve
from xtrieve.cli.main import main
from xtrieve.encode.encoder import Encoder
from xtrieve.encode.train import RESUME_FREE, TrainConfig
from xtrieve.errors import ConfigError

WORDS = "late interaction token search query document cat mat dog fast index vector".split()
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error for a missing CUDA device")


def _docs(n: int = 8) -> list[dict]:
    rng = np.random.default_rng(3)
    return [{"id": f"d{i}", "text": " ".join(rng.choice(WORDS, size=12))} for i in range(n)]


@pytest.fixture
def index(tmp_path, pylate_folder):
    path = tmp_path / "ix"
    xtrieve.Index.build(path, _docs(), encoder=Encoder.load(pylate_folder[0]))
    return path


def test_index_open_runs_its_own_encoder_on_the_device_given(index, pylate_folder):
    docs = _docs()
    idx = xtrieve.Index.open(index, device="cpu")
    assert idx.encoder.device == torch.device("cpu")
    assert idx.search(docs[4]["text"], k=1)[0].doc_id == "d4"
    copy = pickle.loads(pickle.dumps(idx))  # (a worker process opens it the same way)
    assert copy.encoder.device == torch.device("cpu")
    with pytest.raises(ConfigError, match="give device= to Encoder.load"):
        xtrieve.Index.open(index, encoder=Encoder.load(pylate_folder[0]), device="cpu")
    with pytest.raises(ConfigError, match="device must be a torch device name"):
        xtrieve.Index.open(index, device="tpu")


@NO_CUDA
def test_a_device_torch_lacks_fails_before_any_work(index, tmp_path):
    with pytest.raises(ConfigError, match="no cuda device here"):
        xtrieve.Index.open(index, device="cuda")
    corpus = tmp_path / "more.jsonl"
    corpus.write_text(json.dumps({"_id": "new", "text": "late interaction"}) + "\n", encoding="utf-8")
    before = (index / "manifest.json").read_bytes()
    runner = CliRunner()
    for args in (["add", str(index), "--corpus", str(corpus)], ["search", str(index), "token search"]):
        r = runner.invoke(main, args + ["--device", "cuda"])
        assert r.exit_code == 1 and "error: device 'cuda': torch has no cuda device here" in r.output, r.output
    assert (index / "manifest.json").read_bytes() == before
    r = runner.invoke(main, ["add", str(index), "--corpus", str(corpus), "--device", "cpu"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(main, ["search", str(index), "late interaction", "--device", "cpu", "--format", "json"])
    assert r.exit_code == 0 and json.loads(r.output.splitlines()[0])["hits"], r.output


@NO_CUDA
def test_training_on_a_missing_device_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="no cuda device here"):
        TrainConfig(data=["t.jsonl"], out=str(tmp_path / "m"), device="cuda")
    with pytest.raises(ConfigError, match="device must be a device name"):
        TrainConfig(data=["t.jsonl"], out=str(tmp_path / "m"), device=0)
    assert TrainConfig(data=["t.jsonl"], out=str(tmp_path / "m")).device == "cpu"
    assert "device" in RESUME_FREE  # (a run checkpointed on a GPU may go on on a CPU, and back)
    r = CliRunner().invoke(main, ["train", "--data-dir", str(tmp_path), "--out", str(tmp_path / "m"), "--device", "cuda"])
    assert r.exit_code != 0 and "no cuda device here" in r.output, r.output
