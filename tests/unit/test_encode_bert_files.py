"""encode.bert_files: plain BERT folders read without transformers give the same ids and vectors."""
import json
import subprocess
import sys

import numpy as np
import pytest
import torch

from xtrieve.encode import bert_files, lean_bert
from xtrieve.encode.encoder import Encoder

TEXTS = [
    "What is late interaction?", "the cat sat on the mat.", "Ünïcödé façade naïve café", "中文字符 and 日本語",
    "emoji 🙂 and a zero\u200bwidth space", "tabs\tand\nnewlines  and   spaces", "x" * 150 + " long word",
    "[Q] a marker in the text", "a [MASK] and [SEP] inside", "dog-barked!?", "\x00control\x07chars",
]


def _same_tokenizer(folder):
    from transformers import AutoTokenizer

    files = bert_files.read(folder)
    assert files is not None
    ours, theirs = files.tokenizer, AutoTokenizer.from_pretrained(str(folder))
    for special in (True, False):
        assert ours(TEXTS, add_special_tokens=special)["input_ids"] == theirs(TEXTS, add_special_tokens=special)["input_ids"]
        assert ours(TEXTS[0], add_special_tokens=special)["input_ids"] == theirs(TEXTS[0], add_special_tokens=special)["input_ids"]
    assert sorted(ours.all_special_ids) == sorted(theirs.all_special_ids)
    assert (ours.unk_token_id, ours.pad_token_id, ours.mask_token_id) == (theirs.unk_token_id, theirs.pad_token_id, theirs.mask_token_id)
    for token in ("[Q] ", "[unused0]", "the", "not-a-token", "."):
        assert ours.convert_tokens_to_ids(token) == theirs.convert_tokens_to_ids(token)


def test_tokenizer_matches_transformers(pylate_folder, colbert_folder):
    _same_tokenizer(pylate_folder[0])  # [Q] / [D] markers as added tokens
    _same_tokenizer(colbert_folder[0])


def test_default_backbone_tokenizer_matches_transformers():
    from xtrieve.encode import loaders

    _same_tokenizer(loaders.load_spec(None).backbone_dir)


def _transformers_vectors(enc, queries, docs):
    enc.backbone  # load transformers' model; its own forward only, no lean pass
    enc.lean = None
    return enc.encode_queries(queries), enc.encode_documents(docs, pool_factor=1)


@pytest.mark.parametrize("fixture", ["pylate_folder", "colbert_folder"])
def test_encoder_vectors_equal_transformers(fixture, request):
    folder = request.getfixturevalue(fixture)[0]
    queries = ["what is late interaction", "dog", "the cat sat on the mat"]
    docs = ["every token compares with every query token.", "the dog barked!", " ".join(["the cat"] * 40)]
    enc = Encoder.load(folder)
    assert enc._backbone is None  # read without transformers
    light = enc.encode_queries(queries), enc.encode_documents(docs, pool_factor=1)
    reference = _transformers_vectors(Encoder.load(folder), queries, docs)
    for ours, theirs in zip(light, reference):
        for a, b in zip(ours, theirs):
            assert a.shape == b.shape and np.allclose(a, b, atol=1e-5)


def test_falls_back_to_transformers_when_files_disagree(pylate_folder):
    folder = pylate_folder[0]
    assert bert_files.read(folder) is not None
    settings = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**settings, "do_lower_case": False}))
    assert bert_files.read(folder) is None  # transformers would rebuild the normaliser from the config
    (folder / "tokenizer_config.json").write_text(json.dumps(settings))
    config = json.loads((folder / "config.json").read_text())
    (folder / "config.json").write_text(json.dumps({**config, "hidden_act": "relu"}))
    assert bert_files.read(folder) is None
    (folder / "config.json").write_text(json.dumps(config))
    assert bert_files.read(folder, overlay={"encoder.layer.9.output.dense.weight": torch.zeros(1)}) is None
    assert bert_files.read(folder, state={"cls.predictions.bias": torch.zeros(1)}) is None
    (folder / "model.safetensors").unlink()
    assert bert_files.read(folder) is None  # no single weights file: transformers may read others


def test_unreadable_weights_file_is_an_error_not_a_fallback(pylate_folder):
    from xtrieve.errors import ModelLoadError

    folder = pylate_folder[0]
    (folder / "model.safetensors").write_bytes(b"not safetensors")
    with pytest.raises(ModelLoadError, match="cannot read .*model.safetensors"):
        bert_files.read(folder)


def test_layernorm_gamma_beta_names_are_read(pylate_folder):
    """Weights saved with LayerNorm gamma/beta names (as some transformers versions write them)
    still take the file reader, with the same values as weight/bias."""
    from safetensors.torch import load_file, save_file

    folder = pylate_folder[0]
    before = bert_files.read(folder).state
    state = load_file(str(folder / "model.safetensors"))
    renamed = {k.replace("LayerNorm.weight", "LayerNorm.gamma").replace("LayerNorm.bias", "LayerNorm.beta"): v
               for k, v in state.items()}
    assert renamed.keys() != state.keys()
    save_file(renamed, str(folder / "model.safetensors"))
    after = bert_files.read(folder)
    assert after is not None and after.state.keys() == before.keys()
    assert all(torch.equal(after.state[k], before[k]) for k in before)


def test_unknown_overlay_weights_still_a_clear_error(pylate_folder):
    from xtrieve.encode import loaders
    from xtrieve.errors import ModelLoadError

    spec = loaders.load_spec(pylate_folder[0])
    spec.backbone_overlay = {"encoder.layer.7.output.dense.weight": torch.zeros(32, 64)}
    with pytest.raises(ModelLoadError, match="overlay names weights"):
        Encoder(spec)


def test_lean_pass_from_a_state_dict_equals_transformers():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
                     max_position_embeddings=128)
    model = BertModel(cfg).eval()
    lean = lean_bert.LeanBert.from_state(model.state_dict(), cfg.to_dict())
    for lengths in ([7], [40, 33, 12, 40]):  # one query's rows (packed products), a batch above LEAN_MAX_ROWS
        ids = torch.randint(1, 50, (len(lengths), max(lengths)))
        mask = (torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]).long()
        with torch.inference_mode():
            assert lean.handles(ids)
            out, ref = lean(ids, mask), model(input_ids=ids, attention_mask=mask).last_hidden_state
        for i, n in enumerate(lengths):
            assert torch.allclose(out[i, :n], ref[i, :n], atol=1e-5)
    state = model.state_dict()
    state["encoder.layer.1.output.dense.weight"] = torch.zeros(32, 65)
    with pytest.raises(ValueError, match="encoder.layer.1.output.dense.weight"):
        lean_bert.LeanBert.from_state(state, cfg.to_dict())


def test_default_model_searches_without_importing_transformers():
    code = ("import sys; from xtrieve.encode.encoder import Encoder; e = Encoder.load(); "
            "v = e.encode_queries(['does it load quickly'])[0]; d = e.encode_documents(['a short document.'])[0]; "
            "assert v.shape[1] == d.shape[1] == 128; print('transformers' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
