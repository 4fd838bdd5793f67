"""Broken model folders and bad arguments: a clear xtrieve error, never a silently wrong encoder."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from xtrieve.config import EncoderConfig
from xtrieve.encode.encoder import Encoder
from xtrieve.errors import ConfigError, InputError, ModelLoadError

TEXTS = ["the cat sat on the mat", "a dog barked"]


def _edit_json(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


def _saved(pylate_folder, tmp_path, **config):
    """An xtrieve model folder (backbone copied) saved from the PyLate fixture."""
    return Encoder.load(pylate_folder[0], config=config or None).save(tmp_path / "saved")


# -- backbone weights that do not fit config.json ------------------------------------------


@pytest.mark.parametrize("layers, message", [(1, "BertModel weights its config.json does not have.*encoder.layer.1"),
                                             (3, "16 missing .*encoder.layer.2")])
def test_layer_count_that_does_not_fit_the_weights(pylate_folder, layers, message):
    """Fewer layers in config.json than in the weights (lean reader) or more (transformers would
    initialise them at random): both refused, naming the weights."""
    folder = pylate_folder[0]
    _edit_json(folder / "config.json", num_hidden_layers=layers)
    with pytest.raises(ModelLoadError, match=message):
        Encoder.load(folder)


def test_non_bert_backbone_with_extra_layers_in_weights(modernbert_pylate_folder):
    folder = modernbert_pylate_folder[0]
    layer_types = json.loads((folder / "config.json").read_text()).get("layer_types")
    _edit_json(folder / "config.json", num_hidden_layers=1, **({"layer_types": layer_types[:1]} if layer_types else {}))
    with pytest.raises(ModelLoadError, match=r"unexpected .*layers\.1\."):
        Encoder.load(folder).backbone


def test_pooler_less_checkpoint_and_task_head_weights_still_load(pylate_folder):
    """Weights real checkpoints lack (the pooler) or hold beyond a BertModel (a task head such as
    BertForMaskedLM's cls.*) change nothing: the same vectors, with and without transformers."""
    folder = pylate_folder[0]
    reference = Encoder.load(folder).encode_documents(TEXTS, pool_factor=1)
    state = load_file(str(folder / "model.safetensors"))
    state = {k: v for k, v in state.items() if not k.startswith("pooler.")}
    state["cls.predictions.bias"] = torch.zeros(3)
    save_file(state, str(folder / "model.safetensors"))
    light = Encoder.load(folder)
    assert light._backbone is None  # the file reader took it
    heavy = Encoder.load(folder)
    heavy.backbone  # transformers' model, checked the same way
    heavy.lean = None
    for enc in (light, heavy):
        for a, b in zip(enc.encode_documents(TEXTS, pool_factor=1), reference):
            assert np.allclose(a, b, atol=1e-5)


def test_colbert_state_missing_a_layer_weight(colbert_folder):
    folder = colbert_folder[0]
    state = load_file(str(folder / "model.safetensors"))
    del state["bert.encoder.layer.0.output.dense.weight"]
    save_file(state, str(folder / "model.safetensors"))
    with pytest.raises(ModelLoadError, match="missing.*encoder.layer.0.output.dense.weight"):
        Encoder.load(folder)


# -- tokenizers -------------------------------------------------------------------------------


def test_missing_tokenizer_files(pylate_folder):
    """Without tokenizer.json / vocab.txt transformers builds a tokenizer of the special tokens
    alone: every word would be [UNK]."""
    folder = pylate_folder[0]
    (folder / "tokenizer.json").unlink()
    (folder / "vocab.txt").unlink()
    # (transformers < 4.50 fails to build that tokenizer at all: also a ModelLoadError)
    with pytest.raises(ModelLoadError, match="tokenizer has .* tokens but config.json's vocab_size is|cannot load the tok"):
        Encoder.load(folder)


def test_empty_tokenizer_json(pylate_folder):
    (pylate_folder[0] / "tokenizer.json").write_text("{}")
    with pytest.raises(ModelLoadError, match="cannot load the tokenizer"):
        Encoder.load(pylate_folder[0])


# -- unreadable files ----------------------------------------------------------------------


@pytest.mark.parametrize("fixture", ["pylate_folder", "modernbert_pylate_folder"])
def test_truncated_backbone_weights(fixture, request):
    folder = request.getfixturevalue(fixture)[0]
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ModelLoadError, match="model.safetensors|SafetensorError"):
        Encoder.load(folder).backbone


class _Marker:
    """Pickles as a call that would create a file if the pickle were ever run."""

    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (open, (str(self.path), "w"))


def test_pickled_backbone_weights_are_refused_clearly(pylate_folder, tmp_path):
    saved = _saved(pylate_folder, tmp_path)
    (saved / "backbone" / "model.safetensors").unlink()
    marker = tmp_path / "ran"
    torch.save({"embeddings.word_embeddings.weight": torch.zeros(2, 2), "x": _Marker(marker)},
               str(saved / "backbone" / "pytorch_model.bin"))
    with pytest.raises(ModelLoadError, match="pytorch_model.bin"):
        Encoder.load(saved)
    assert not marker.exists()


# -- xtrieve model folders -----------------------------------------------------------------


def test_head_bias_of_the_wrong_length(pylate_folder, tmp_path):
    saved = _saved(pylate_folder, tmp_path)
    _edit_json(saved / "xtrieve_model.json", encoder_config={**Encoder.load(saved).config.to_dict(), "head_bias": True})
    save_file({"weight": pylate_folder[1], "bias": torch.zeros(7)}, str(saved / "head.safetensors"))
    with pytest.raises(ModelLoadError, match=r"head bias has shape \(7,\), expected \(16,\)"):
        Encoder.load(saved)


def test_overlay_of_the_wrong_shape(pylate_folder, tmp_path):
    saved = _saved(pylate_folder, tmp_path)
    save_file({"encoder.layer.1.output.dense.weight": torch.zeros(3, 3)}, str(saved / "backbone_overlay.safetensors"))
    with pytest.raises(ModelLoadError, match=r"overlay's encoder.layer.1.output.dense.weight has shape \(3, 3\)"):
        Encoder.load(saved)


@pytest.mark.parametrize("backbone, message", [({"package": 5}, "'package' must be a non-empty string"),
                                               ({"path": 5}, "'path' must be a non-empty string"),
                                               ("backbone", "'backbone' must be an object")])
def test_bad_backbone_reference(pylate_folder, tmp_path, backbone, message):
    saved = _saved(pylate_folder, tmp_path)
    _edit_json(saved / "xtrieve_model.json", backbone=backbone)
    with pytest.raises(ModelLoadError, match=message):
        Encoder.load(saved)


@pytest.mark.parametrize("value", [5, 3.5, ["x"], ""])
def test_load_takes_a_path_or_name(value):
    with pytest.raises(InputError, match="folder path or hub name"):
        Encoder.load(value)


# -- sentence-transformers / PyLate folders ------------------------------------------------


TRANSFORMER = {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}


@pytest.mark.parametrize("modules, message", [
    (["Transformer"], "entry 0 is str"),
    ([TRANSFORMER, {"idx": 1, "type": "sentence_transformers.models.Dense"}], r"entry 1 .*Dense.* needs a 'path'"),
    ([{**TRANSFORMER, "path": 3}], "needs a 'path' string, got 3"),
    ([TRANSFORMER, {"idx": 1, "path": "x", "type": "sentence_transformers.models.WeightedLayerPooling"}],
     "module type sentence_transformers.models.WeightedLayerPooling is not supported"),
    ([TRANSFORMER, {"idx": 1, "path": "x", "type": "mypackage.TokenMixer"}], "mypackage.TokenMixer is not supported"),
])
def test_bad_modules_json(pylate_folder, modules, message):
    (pylate_folder[0] / "modules.json").write_text(json.dumps(modules))
    with pytest.raises(ModelLoadError, match=message):
        Encoder.load(pylate_folder[0])


def test_modules_that_leave_token_embeddings_alone_are_allowed(pylate_folder):
    folder = pylate_folder[0]
    reference = Encoder.load(folder).encode_documents(TEXTS)
    modules = json.loads((folder / "modules.json").read_text())
    (folder / "2_Pooling").mkdir()
    (folder / "2_Pooling" / "config.json").write_text(json.dumps({"word_embedding_dimension": 16}))
    modules += [{"idx": 2, "name": "2", "path": "2_Pooling", "type": "sentence_transformers.models.Pooling"},
                {"idx": 3, "name": "3", "path": "3_Normalize", "type": "sentence_transformers.base.modules.normalize.Normalize"},
                {"idx": 4, "name": "4", "path": "", "type": "sentence_transformers.models.Dropout"}]
    (folder / "modules.json").write_text(json.dumps(modules))
    for a, b in zip(Encoder.load(folder).encode_documents(TEXTS), reference):
        assert np.array_equal(a, b)
    (folder / "3_Normalize").mkdir()
    (folder / "3_Normalize" / "config.json").write_text(json.dumps({"module_input_name": "token_embeddings"}))
    with pytest.raises(ModelLoadError, match="Normalize is not supported"):
        Encoder.load(folder)


@pytest.mark.parametrize("value", ["abc", 2.5, True, [12]])
def test_pylate_length_that_is_not_an_integer(pylate_folder, value):
    cfg = pylate_folder[0] / "config_sentence_transformers.json"
    _edit_json(cfg, query_length=value)
    with pytest.raises(ConfigError, match="config_sentence_transformers.json: query_length must be an integer"):
        Encoder.load(pylate_folder[0])


def test_pylate_length_out_of_range_names_the_file(pylate_folder):
    _edit_json(pylate_folder[0] / "config_sentence_transformers.json", query_length=2)
    with pytest.raises(ConfigError, match="config_sentence_transformers.json: query_maxlen must be an int >= 4"):
        Encoder.load(pylate_folder[0])


def _write_dense_bias(folder, config_bias: bool, bias):
    dense = folder / "1_Dense"
    _edit_json(dense / "config.json", bias=config_bias)
    state = load_file(str(dense / "model.safetensors"))
    if bias is not None:
        state["linear.bias"] = bias
    save_file(state, str(dense / "model.safetensors"))


@pytest.mark.parametrize("bias, message", [(None, "bias: true but the weights have no 'linear.bias'"),
                                           (torch.zeros(5), r"'linear.bias' has shape \(5,\), expected \(16,\)")])
def test_dense_bias_that_does_not_fit(pylate_folder, bias, message):
    _write_dense_bias(pylate_folder[0], True, bias)
    with pytest.raises(ModelLoadError, match=message):
        Encoder.load(pylate_folder[0])


def test_dense_config_without_a_bias_key_uses_the_stored_bias(pylate_folder):
    """sentence-transformers' Dense defaults to bias=True, so a stored linear.bias counts."""
    folder = pylate_folder[0]
    _write_dense_bias(folder, True, torch.arange(16.0))
    cfg = json.loads((folder / "1_Dense" / "config.json").read_text())
    del cfg["bias"]
    (folder / "1_Dense" / "config.json").write_text(json.dumps(cfg))
    enc = Encoder.load(folder)
    assert enc.config.head_bias and torch.equal(enc.head.bias.detach(), torch.arange(16.0))


# -- lengths beyond the backbone's positions ------------------------------------------------


@pytest.mark.parametrize("fixture", ["pylate_folder", "modernbert_pylate_folder"])
@pytest.mark.parametrize("field", ["doc_maxlen", "query_maxlen"])
def test_lengths_beyond_the_positions_are_refused_at_load(fixture, field, request):
    folder = request.getfixturevalue(fixture)[0]  # max_position_embeddings 128
    with pytest.raises(ConfigError, match=f"{field} 129 is longer than the 128 positions"):
        Encoder.load(folder, config={field: 129})
    enc = Encoder.load(folder, config={field: 128, "query_augmentation": True})
    assert enc.encode_queries(["the cat"])[0].shape[0] == enc.config.query_maxlen
    assert enc.encode_documents([" ".join(["cat"] * 300)], pool_factor=1)[0].shape[0] <= enc.config.doc_maxlen


def test_sentence_transformers_length_defaults_to_the_positions(pylate_folder):
    """Without max_seq_length sentence-transformers uses min(max_position_embeddings,
    tokenizer model_max_length); so does the loader (it used 512, beyond this model's 128)."""
    folder = pylate_folder[0]
    (folder / "config_sentence_transformers.json").unlink()
    (folder / "sentence_bert_config.json").unlink()
    assert Encoder.load(folder).config.doc_maxlen == 128
    _edit_json(folder / "tokenizer_config.json", model_max_length=64)
    assert Encoder.load(folder).config.doc_maxlen == 64


def test_a_sentence_embedding_model_without_a_head_is_logged(pylate_folder, caplog):
    folder = pylate_folder[0]
    (folder / "config_sentence_transformers.json").unlink()
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"}]))
    with caplog.at_level("INFO", logger="xtrieve.encode.loaders"):
        enc = Encoder.load(folder)
    assert enc.config.dim == 32 and "no Dense head" in caplog.text


# -- Encoder.load(config=...) and encode arguments -----------------------------------------


def test_config_dict_changes_only_its_fields(pylate_folder):
    own = Encoder.load(pylate_folder[0]).config
    enc = Encoder.load(pylate_folder[0], config={"pool_factor": 2})
    assert enc.config == own.replace(pool_factor=2)


@pytest.mark.parametrize("config, message", [(EncoderConfig(pool_factor=2), "takes a dict of the fields to change"),
                                             ("pool_factor=2", "takes a dict of EncoderConfig fields"),
                                             ([("pool_factor", 2)], "takes a dict of EncoderConfig fields")])
def test_config_that_is_not_a_dict(pylate_folder, config, message):
    with pytest.raises(ConfigError, match=message):
        Encoder.load(pylate_folder[0], config=config)


@pytest.mark.parametrize("pool_factor", [0, -3, True, 2.7, "3", math.nan])
def test_bad_pool_factor(colbert_folder, pool_factor):
    enc = Encoder.load(colbert_folder[0])
    with pytest.raises(InputError, match="pool_factor must be an int >= 1"):
        enc.encode_documents(TEXTS, pool_factor=pool_factor)
    with pytest.raises(InputError, match="pool_factor must be an int >= 1"):
        enc.encode(TEXTS, False, pool_factor=pool_factor)


@pytest.mark.parametrize("batch_size", [0, -1, True, 1.5, "8"])
def test_bad_batch_size(colbert_folder, batch_size):
    enc = Encoder.load(colbert_folder[0])
    for call in (lambda: enc.encode_documents(TEXTS, batch_size=batch_size),
                 lambda: enc.encode_queries(TEXTS, batch_size=batch_size),
                 lambda: enc.token_states(TEXTS, False, batch_size=batch_size)):
        with pytest.raises(InputError, match="batch_size must be an int >= 1"):
            call()


def test_numpy_integers_are_fine(colbert_folder):
    enc = Encoder.load(colbert_folder[0])
    a = enc.encode_documents(TEXTS, batch_size=np.int64(1), pool_factor=np.int64(2))
    b = enc.encode_documents(TEXTS, batch_size=2, pool_factor=2)
    assert all(np.allclose(x, y, atol=1e-6) for x, y in zip(a, b))


def test_an_index_folder_is_not_a_model_and_a_model_is_not_saved_into_one(tmp_path, pylate_folder):
    import numpy as np

    import xtrieve
    from xtrieve.encode.encoder import Encoder
    from xtrieve.errors import InputError, ModelLoadError

    enc = Encoder.load(pylate_folder[0])
    xtrieve.Index.build(tmp_path / "ix", ["some text", "more text"], encoder=enc)
    with pytest.raises(ModelLoadError, match=r"is an index folder, not a model: its model is .*encoder"):
        Encoder.load(tmp_path / "ix")
    with pytest.raises(InputError, match="it is an index folder"):
        enc.save(tmp_path / "ix")
    (tmp_path / "f").write_text("x")
    with pytest.raises(InputError, match="it is a file"):
        enc.save(tmp_path / "f")
    assert np.allclose(Encoder.load(tmp_path / "ix" / xtrieve.Index.open(tmp_path / "ix").snapshot.manifest.encoder_dir)
                       .encode_queries(["text"])[0], enc.encode_queries(["text"])[0], atol=1e-6)


# -- folders from anyone: nothing in them runs, nothing huge is allocated on their word -------


def test_a_model_file_naming_a_package_imports_nothing(pylate_folder, tmp_path):
    import sys

    folder = _saved(pylate_folder, tmp_path)
    meta = json.loads((folder / "xtrieve_model.json").read_text())
    for package, message in (("this", "has no model folder"), (".x", "not the name of a top-level package"),
                             ("os.path", "not the name of a top-level package"),
                             ("__main__", "is not installed|has no model folder")):
        meta["backbone"] = {"package": package}
        (folder / "xtrieve_model.json").write_text(json.dumps(meta))
        sys.modules.pop("this", None)
        with pytest.raises(ModelLoadError, match=message):
            Encoder.load(folder)
        assert "this" not in sys.modules  # (importing it runs its code: it prints a poem)


def test_a_backbone_asking_to_run_its_own_code_is_refused_without_asking(pylate_folder, tmp_path):
    folder = pylate_folder[0]
    marker = tmp_path / "ran"
    _edit_json(folder / "config.json", model_type="customized",
               auto_map={"AutoConfig": "custom.CustomConfig", "AutoModel": "custom.CustomModel"})
    (folder / "custom.py").write_text(f"import pathlib\npathlib.Path({str(marker)!r}).write_text('ran')\n")
    with pytest.raises(ModelLoadError, match="custom code"):
        Encoder.load(folder).backbone
    assert not marker.exists()


def test_a_config_claiming_a_huge_model_is_refused_before_allocating_it(pylate_folder):
    folder = pylate_folder[0]
    save_file({"foo": torch.zeros(1)}, str(folder / "model.safetensors"))  # every weight missing: all initialised
    _edit_json(folder / "config.json", hidden_size=8192, intermediate_size=32768, num_attention_heads=64,
               num_hidden_layers=48)  # ~40 G weights, in a folder of a few kB
    with pytest.raises(ModelLoadError, match="config.json describes a model of .* weights, but its weight files hold"):
        Encoder.load(folder).backbone
    _edit_json(folder / "config.json", num_hidden_layers=10**6)
    with pytest.raises(ModelLoadError, match="describes 1,000,000 layers"):
        Encoder.load(folder).backbone
