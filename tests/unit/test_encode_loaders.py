"""Loaders: tiny PyLate / ColBERT / xtrieve checkpoints load and encode as their libraries do."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from xtrieve.config import EncoderConfig
from xtrieve.encode.encoder import Encoder
from xtrieve.errors import ConfigError, InputError, ModelLoadError


def test_pylate_folder_loads_projection_and_markers(pylate_folder):
    folder, weight = pylate_folder
    enc = Encoder.load(folder)
    assert torch.equal(enc.head.weight.detach(), weight)
    c = enc.config
    assert (c.dim, c.query_maxlen, c.doc_maxlen) == (16, 12, 40)
    assert c.query_prefix == "[Q] " and c.document_prefix == "[D] " and c.query_augmentation
    q = enc.encode_queries(["the cat sat"])[0]
    assert q.shape == (12, 16)  # [MASK]-augmented to query_length
    assert np.allclose(np.linalg.norm(q, axis=1), 1, atol=1e-5)
    ids, _ = enc.processor.encode_ids(["the cat sat"], is_query=True)
    assert ids[0][1] == enc.tokenizer.convert_tokens_to_ids("[Q] ")
    d = enc.encode_documents(["the cat sat on the mat ."])[0]
    # [CLS] [D] the cat sat on the mat [SEP]: the '.' is skiplisted
    assert d.shape == (9, 16)


def test_half_precision_checkpoint_encodes_in_float32(pylate_folder, tmp_path):
    """A checkpoint saved in bfloat16 loads upcast (exactly) to float32 and encodes like it."""
    from transformers import AutoModel

    folder, _ = pylate_folder
    model = AutoModel.from_pretrained(str(folder))
    with torch.no_grad():  # weights bf16 can hold exactly, so both folders mean the same model
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    model.to(torch.bfloat16).save_pretrained(str(folder), safe_serialization=True)
    half = Encoder.load(folder)
    assert all(p.dtype is torch.float32 for p in half.backbone.parameters())
    model.float().save_pretrained(str(folder), safe_serialization=True)
    full = Encoder.load(folder)
    texts = ["the cat sat on the mat", "a dog barked"]
    for a, b in zip(half.encode_queries(texts) + half.encode_documents(texts),
                    full.encode_queries(texts) + full.encode_documents(texts)):
        assert np.array_equal(a, b)


def test_colbert_checkpoint_matches_reference_computation(colbert_folder):
    folder, weight, model, tok = colbert_folder
    enc = Encoder.load(folder)
    assert torch.equal(enc.head.weight.detach(), weight)
    assert enc.config.query_prefix == "[unused0]" and enc.config.query_maxlen == 10
    # reference: ColBERT's document path by hand
    text = "a dog barked , the cat sat ."
    ids = tok(text, add_special_tokens=False)["input_ids"]
    full = [tok.cls_token_id, tok.convert_tokens_to_ids("[unused1]")] + ids + [tok.sep_token_id]
    with torch.no_grad():
        h = model(input_ids=torch.tensor([full]), attention_mask=torch.ones(1, len(full), dtype=torch.long)).last_hidden_state[0]
        ref = torch.nn.functional.normalize(h @ weight.T, dim=-1)
    keep = [i for i, t in enumerate(full) if tok.convert_ids_to_tokens(t) not in (",", ".")]
    got = enc.encode_documents([text])[0]
    assert np.allclose(got, ref[keep].numpy(), atol=1e-5)
    # reference: query path with [MASK] augmentation and no attention to masks
    qids = [tok.cls_token_id, tok.convert_tokens_to_ids("[unused0]")] + tok("what is late interaction", add_special_tokens=False)["input_ids"] + [tok.sep_token_id]
    n = len(qids)
    padded = qids + [tok.mask_token_id] * (10 - n)
    att = [1] * n + [0] * (10 - n)
    with torch.no_grad():
        h = model(input_ids=torch.tensor([padded]), attention_mask=torch.tensor([att])).last_hidden_state[0]
        qref = torch.nn.functional.normalize(h @ weight.T, dim=-1)
    assert np.allclose(enc.encode_queries(["what is late interaction"])[0], qref.numpy(), atol=1e-5)


def test_save_and_reload_round_trip(colbert_folder, tmp_path):
    folder = colbert_folder[0]
    enc = Encoder.load(folder, config={"pool_factor": 2})
    out = enc.save(tmp_path / "saved")
    again = Encoder.load(out)
    assert again.config == enc.config and again.identity()["head_sha256"] == enc.identity()["head_sha256"]
    texts = ["the cat sat on the mat", "every query token"]
    for a, b in zip(enc.encode_documents(texts), again.encode_documents(texts)):
        assert np.allclose(a, b, atol=1e-6)


def test_truncation_is_counted(colbert_folder, caplog):
    enc = Encoder.load(colbert_folder[0])
    long = " ".join(["cat"] * 100)
    with caplog.at_level("INFO"):
        d = enc.encode_documents([long, "the dog"])[0]
    assert d.shape[0] == 30  # doc_maxlen
    assert "1 of 2 documents truncated" in caplog.text


def test_no_texts_give_no_vectors(colbert_folder):
    enc = Encoder.load(colbert_folder[0])
    assert enc.encode_documents([]) == [] and enc.encode_queries([]) == [] and enc.token_states([], False) == []
    assert len(enc.encode([], False)) == 0


@pytest.mark.parametrize("bad, message", [
    (None, "None"), (["ok", 3], "item 1 is int"), (["ok", "   "], "empty or whitespace"),
    ("a string", "single string"),
])
def test_bad_texts(colbert_folder, bad, message):
    enc = Encoder.load(colbert_folder[0])
    with pytest.raises(InputError, match=message):
        enc.encode_documents(bad)
    with pytest.raises(InputError, match=message):
        enc.encode_queries(bad)


def test_not_a_model_and_unknown_keys(tmp_path, colbert_folder):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="not a model folder"):
        Encoder.load(tmp_path / "empty")
    with pytest.raises(ModelLoadError, match="does not exist"):
        Encoder.load(tmp_path / "missing")
    with pytest.raises(ConfigError, match="unknown EncoderConfig key"):
        EncoderConfig.from_dict({"dim": 8, "colour": "red"})
    with pytest.raises(ConfigError, match="unknown EncoderConfig key"):
        Encoder.load(colbert_folder[0], config={"poolfactor": 2})
    with pytest.raises(ConfigError, match="pool_factor"):
        EncoderConfig(pool_factor=0)
    with pytest.raises(ConfigError, match="dim is fixed by the model's head: 8"):
        Encoder.load(colbert_folder[0], config={"dim": 16})


def test_xtrieve_folder_with_bad_config(tmp_path, colbert_folder):
    out = Encoder.load(colbert_folder[0]).save(tmp_path / "m")
    meta = json.loads((out / "xtrieve_model.json").read_text())
    meta["encoder_config"]["bogus"] = 1
    (out / "xtrieve_model.json").write_text(json.dumps(meta))
    with pytest.raises(ConfigError, match="bogus"):
        Encoder.load(out)


def test_corrupt_model_files_are_named(tmp_path, colbert_folder):
    out = Encoder.load(colbert_folder[0]).save(tmp_path / "m")
    (out / "xtrieve_model.json").write_text("[]")
    with pytest.raises(ModelLoadError, match="expected an object in JSON"):
        Encoder.load(out)
    out = Encoder.load(colbert_folder[0]).save(tmp_path / "n")
    head = next(p for p in out.glob("*.safetensors"))
    head.write_bytes(head.read_bytes()[:40])  # truncated
    with pytest.raises(ModelLoadError, match=f"cannot read .*{head.name}"):
        Encoder.load(out)


def _add_dense(folder, name: str, weight, bias=None, kind="pylate.models.Dense.Dense",
               act="torch.nn.modules.linear.Identity", residual=None):
    """A Dense module as PyLate (>= 1.3.3) saves one; ``residual``: True (x itself) or a weight."""
    from safetensors.torch import save_file

    (folder / name).mkdir()
    (folder / name / "config.json").write_text(json.dumps({
        "in_features": weight.shape[1], "out_features": weight.shape[0], "bias": bias is not None,
        "activation_function": act, "use_residual": residual is not None}))
    tensors = {"linear.weight": weight, **({"linear.bias": bias} if bias is not None else {})}
    if isinstance(residual, torch.Tensor):
        tensors["residual.weight"] = residual
    save_file(tensors, str(folder / name / "model.safetensors"))
    modules = json.loads((folder / "modules.json").read_text())
    modules.append({"idx": len(modules), "name": str(len(modules)), "path": name, "type": kind})
    (folder / "modules.json").write_text(json.dumps(modules))


def _query_states(enc, text):
    """The backbone's last hidden states of one query, computed by transformers."""
    batch = enc.processor.batch(enc.processor.encode_ids(text, True)[0], True)
    with torch.inference_mode():
        return enc.backbone(input_ids=batch.input_ids, attention_mask=batch.attention_mask).last_hidden_state[0]


def test_chained_dense_modules_compose(pylate_folder):
    """PyLate models with several Dense layers (e.g. 32 -> 16 -> 8 with a bias) encode as the chain."""
    folder, first = pylate_folder
    single = Encoder.load(folder)
    torch.manual_seed(3)
    second, bias = torch.randn(8, 16), torch.randn(8)
    _add_dense(folder, "2_Dense", second, bias)
    enc = Encoder.load(folder)
    assert enc.config.dim == 8 and enc.config.head_bias
    text = ["the cat sat on the mat"]
    hidden = _query_states(single, text)
    expected = torch.nn.functional.normalize((hidden @ first.T) @ second.T + bias, dim=-1)
    assert np.allclose(enc.encode_queries(text)[0], expected.numpy(), atol=1e-5)


@pytest.mark.parametrize("act, fn", [("torch.nn.modules.activation.Tanh", torch.tanh),
                                     ("torch.nn.modules.activation.GELU", torch.nn.functional.gelu)])
def test_dense_activation_is_applied(pylate_folder, act, fn, tmp_path):
    """PyLate (>= 1.3.3) and sentence-transformers apply a Dense module's activation after its
    linear map; the activation survives a save and reload."""
    folder, first = pylate_folder
    hidden = _query_states(Encoder.load(folder), ["a query about cats"])
    torch.manual_seed(4)
    second = torch.randn(8, 16)
    _add_dense(folder, "2_Dense", second, act=act)
    enc = Encoder.load(folder)
    expected = torch.nn.functional.normalize(fn((hidden @ first.T) @ second.T), dim=-1).numpy()
    assert enc.config.head_activation == act.rsplit(".", 1)[-1].lower()
    assert np.allclose(enc.encode_queries(["a query about cats"])[0], expected, atol=1e-5)
    again = Encoder.load(enc.save(tmp_path / "saved"))
    assert np.allclose(again.encode_queries(["a query about cats"])[0], expected, atol=1e-5)


def test_dense_residual_composes(pylate_folder):
    """use_residual adds x itself (equal widths) or the module's residual map of x."""
    folder, first = pylate_folder
    hidden = _query_states(Encoder.load(folder), ["residual check"])
    torch.manual_seed(5)
    square, wide, across = torch.randn(16, 16), torch.randn(8, 16), torch.randn(8, 16)
    _add_dense(folder, "2_Dense", square, residual=True)
    _add_dense(folder, "3_Dense", wide, residual=across)
    x = hidden @ first.T
    x = x @ square.T + x
    expected = torch.nn.functional.normalize(x @ wide.T + x @ across.T, dim=-1).numpy()
    assert np.allclose(Encoder.load(folder).encode_queries(["residual check"])[0], expected, atol=1e-5)


def test_dense_layers_with_activations_between_them_chain_as_pylate_runs_them(pylate_folder, tmp_path):
    """PyLate's modular heads: a Dense with an activation and a residual, one with GELU and a bias,
    then a linear one (act(W x + b) + x, ...); the chain survives a save and reload, and a
    head of that shape is not trained (a clear error)."""
    from xtrieve.encode.train import TrainModel

    folder, first = pylate_folder
    hidden = _query_states(Encoder.load(folder), ["a query about cats"])
    torch.manual_seed(6)
    square, up, up_bias, down = torch.randn(16, 16), torch.randn(12, 16), torch.randn(12), torch.randn(8, 12)
    _add_dense(folder, "2_Dense", square, act="torch.nn.modules.activation.Tanh", residual=True)
    _add_dense(folder, "3_Dense", up, up_bias, act="torch.nn.modules.activation.GELU")
    _add_dense(folder, "4_Dense", down)
    x = hidden @ first.T
    x = torch.tanh(x @ square.T) + x
    x = torch.nn.functional.gelu(x @ up.T + up_bias)
    expected = torch.nn.functional.normalize(x @ down.T, dim=-1).numpy()
    enc = Encoder.load(folder)
    assert enc.config.head_steps == ("tanh", "gelu") and enc.config.head_activation is None and enc.config.dim == 8
    assert np.allclose(enc.encode_queries(["a query about cats"])[0], expected, atol=1e-5)
    again = Encoder.load(enc.save(tmp_path / "saved"))
    assert again.identity()["head_sha256"] == enc.identity()["head_sha256"]
    assert np.allclose(again.encode_queries(["a query about cats"])[0], expected, atol=1e-5)
    with pytest.raises(InputError, match="nonlinear Dense layers"):
        TrainModel(enc)


@pytest.mark.parametrize("denses, message", [
    ([dict(act="torch.nn.modules.activation.Softplus")], "Softplus is not supported"),
    ([dict(shape=(8, 12))], "takes 12 features, the previous one gives 16"),
])
def test_dense_chain_checks(pylate_folder, denses, message):
    folder, _ = pylate_folder
    for n, d in enumerate(denses):
        _add_dense(folder, f"{n + 2}_Dense", torch.randn(*d.pop("shape", (8, 16))), **d)
    with pytest.raises(ModelLoadError, match=message):
        Encoder.load(folder)


def test_default_prompt_is_put_before_every_text(pylate_folder, tmp_path):
    """A sentence-transformers default prompt goes before queries and documents alike, as
    PyLate's encode puts it; it survives a save and reload."""
    folder, _ = pylate_folder
    plain = Encoder.load(folder)
    cfg_file = folder / "config_sentence_transformers.json"
    cfg = json.loads(cfg_file.read_text())
    cfg.update(prompts={"search": "search query: ", "other": ""}, default_prompt_name="search")
    cfg_file.write_text(json.dumps(cfg))
    enc = Encoder.load(folder)
    assert enc.config.prompt == "search query: "
    for is_query in (True, False):
        got = enc.encode(["the cat sat"], is_query).vectors[0]
        want = plain.encode(["search query: the cat sat"], is_query).vectors[0]
        assert got.shape == want.shape and np.allclose(got, want, atol=1e-6)
    again = Encoder.load(enc.save(tmp_path / "saved"))
    assert again.config.prompt == "search query: "
    cfg["default_prompt_name"] = "missing"
    cfg_file.write_text(json.dumps(cfg))
    with pytest.raises(ModelLoadError, match="names no prompt"):
        Encoder.load(folder)


def test_pylate_modernbert_folder_matches_reference_computation(modernbert_pylate_folder):
    """A non-BERT backbone (ModernBERT, byte-level BPE) loads through transformers and encodes as
    PyLate does: [CLS] [Q] ids [SEP] then [MASK] up to query_length, unattended; documents with
    [D] and skiplisted punctuation dropped; projection, then L2 normalisation."""
    folder, weight, model, tok = modernbert_pylate_folder
    enc = Encoder.load(folder)
    assert type(enc.backbone).__name__ == "ModernBertModel"

    def reference(ids: list[int], attended: int, keep: list[int]) -> np.ndarray:
        input_ids = torch.tensor([ids])
        mask = torch.zeros_like(input_ids)
        mask[0, :attended] = 1
        with torch.no_grad():
            hidden = model(input_ids=input_ids, attention_mask=mask).last_hidden_state[0]
        out = torch.nn.functional.normalize(hidden[keep] @ weight.T, dim=-1)
        return out.numpy()

    query = "the cat sat"
    words = tok(query, add_special_tokens=False)["input_ids"]
    assert len(words) <= 12 - 3  # room left for [MASK] expansion
    q_ids = [tok.cls_token_id, tok.convert_tokens_to_ids("[Q] ")] + words + [tok.sep_token_id]
    n = len(q_ids)
    q_ids += [tok.mask_token_id] * (12 - n)
    got = enc.encode_queries([query])[0]
    assert got.shape == (12, 16)
    assert np.allclose(got, reference(q_ids, n, list(range(12))), atol=1e-5)

    doc = "the cat sat on the mat, a dog barked."
    words = tok(doc, add_special_tokens=False)["input_ids"]
    d_ids = [tok.cls_token_id, tok.convert_tokens_to_ids("[D] ")] + words + [tok.sep_token_id]
    skip = {tok.convert_tokens_to_ids(p) for p in ".,!?"}
    assert skip & set(words)  # the text has skiplisted tokens to drop
    keep = [i for i, t in enumerate(d_ids) if t not in skip]
    got = enc.encode_documents([doc])[0]
    assert got.shape == (len(keep), 16)
    assert np.allclose(got, reference(d_ids, len(d_ids), keep), atol=1e-5)


def test_texts_are_stripped_as_sentence_transformers_strips_them(modernbert_pylate_folder, pylate_folder):
    """Byte-level BPE sees spaces and PyLate's markers are added tokens with a trailing space:
    " the cat\n" must encode as "the cat", and a text ending in "[D] " must not gain a marker."""
    bpe = Encoder.load(modernbert_pylate_folder[0])
    assert np.array_equal(bpe.encode_documents([" the cat sat\n"])[0], bpe.encode_documents(["the cat sat"])[0])
    wordpiece = Encoder.load(pylate_folder[0]).processor
    assert wordpiece.encode_ids(["the cat [D] "], False) == wordpiece.encode_ids(["the cat [D]"], False)


def test_skiplist_words_outside_the_vocabulary_skip_the_unknown_token(pylate_folder):
    plain = Encoder.load(pylate_folder[0]).processor
    assert plain.tok.unk_token_id not in plain.skip_ids
    enc = Encoder.load(pylate_folder[0], config={"skiplist_words": [".", "xyzzy-not-a-token"]})
    assert enc.processor.tok.unk_token_id in enc.processor.skip_ids  # PyLate looks each word up as one token


def test_a_marker_outside_the_vocabulary_is_the_unknown_token(pylate_folder, caplog):
    with caplog.at_level("WARNING", logger="xtrieve.encode.tokenize"):
        enc = Encoder.load(pylate_folder[0], config={"query_prefix": "[NOT-A-TOKEN]"})
    assert enc.processor.query_marker == enc.processor.tok.unk_token_id and "not in the tokenizer's" in caplog.text


def test_plain_sentence_transformers_folder_keeps_every_token(pylate_folder):
    folder = pylate_folder[0]
    (folder / "config_sentence_transformers.json").unlink()
    enc = Encoder.load(folder)
    assert enc.config.skiplist_words == () and enc.config.keep_special_tokens
    assert enc.config.query_maxlen == enc.config.doc_maxlen == 40
    assert enc.encode_documents(["the cat, sat."])[0].shape[0] == len(enc.processor.encode_ids(["the cat, sat."], False)[0][0])


def test_a_transformers_backbone_folder_reads_as_sentence_transformers_reads_it(tmp_path):
    from transformers import DistilBertConfig, DistilBertModel

    from conftest import make_tiny_bert

    bert, tok = make_tiny_bert(tmp_path / "bert")
    bert.save_pretrained(str(tmp_path / "bert"))
    torch.manual_seed(0)  # DistilBERT states its width as "dim", not "hidden_size"
    distil = DistilBertModel(DistilBertConfig(vocab_size=len(tok), dim=24, n_layers=1, n_heads=2, hidden_dim=48)).eval()
    distil.save_pretrained(str(tmp_path / "distil"))
    tok.save_pretrained(str(tmp_path / "distil"))
    for name, model, width in (("bert", bert, 32), ("distil", distil, 24)):
        enc = Encoder.load(tmp_path / name)
        assert enc.config.dim == width and enc.config.query_prefix is None and enc.config.skiplist_words == ()
        ids = tok(["the cat sat"], return_tensors="pt")
        with torch.no_grad():  # (DistilBERT takes no token_type_ids)
            hidden = model(input_ids=ids["input_ids"], attention_mask=ids["attention_mask"]).last_hidden_state[0]
            states = torch.nn.functional.normalize(hidden, dim=-1).numpy()
        np.testing.assert_allclose(enc.encode_documents(["the cat sat"])[0], states, atol=1e-5)
    bert.save_pretrained(str(tmp_path / "shards"), max_shard_size="20KB")  # transformers reads the shards
    tok.save_pretrained(str(tmp_path / "shards"))
    assert len(list((tmp_path / "shards").glob("model-*.safetensors"))) > 1
    np.testing.assert_allclose(Encoder.load(tmp_path / "shards").encode_documents(["the cat sat"])[0],
                               Encoder.load(tmp_path / "bert").encode_documents(["the cat sat"])[0], atol=1e-6)
    (tmp_path / "bert" / "model.safetensors").unlink()  # no weights: not a model folder
    with pytest.raises(ModelLoadError, match="not a model folder"):
        Encoder.load(tmp_path / "bert")


def test_folders_that_are_more_than_a_backbone_do_not_load_as_one(colbert_folder, pylate_folder):
    from xtrieve.encode.loaders import load_spec, read_weights

    folder, weight, _, _ = colbert_folder  # a ColBERT checkpoint in pytorch_model.bin without its metadata
    state = read_weights(folder)
    (folder / "model.safetensors").unlink()
    (folder / "artifact.metadata").unlink()
    torch.save(state, str(folder / "pytorch_model.bin"))
    spec = load_spec(folder)
    assert torch.equal(spec.head_weight, weight) and spec.config.query_prefix == "[unused0]"
    (pylate_folder[0] / "modules.json").unlink()  # its Dense head would be dropped
    with pytest.raises(ModelLoadError, match="no modules.json"):
        Encoder.load(pylate_folder[0])


def test_save_writes_weights_with_the_umask(colbert_folder, tmp_path):
    import os
    import stat

    enc = Encoder.load(colbert_folder[0])
    old = os.umask(0o022)
    try:
        copied = enc.save(tmp_path / "copied")  # backbone copied into the folder
        enc.spec.backbone_overlay = {"encoder.layer.0.output.dense.bias": torch.zeros(4)}
        ref = enc.save(tmp_path / "ref", copy_backbone=False)  # head + overlay over a referenced backbone
    finally:
        os.umask(old)
    files = [p for p in list(copied.rglob("*")) + list(ref.rglob("*")) if p.is_file()]
    assert {"head.safetensors", "backbone_overlay.safetensors", "model.safetensors"} <= {p.name for p in files}
    assert {p.name: oct(stat.S_IMODE(p.stat().st_mode)) for p in files if stat.S_IMODE(p.stat().st_mode) != 0o644} == {}


def _edit(path, **changes):
    cfg = json.loads(path.read_text()) if path.exists() else {}
    cfg.update(changes)
    path.write_text(json.dumps(cfg))


def test_do_lower_case_lowercases_texts_as_sentence_transformers_does(pylate_folder):
    """sentence_bert_config's do_lower_case lowercases the text (after the prompt and strip) before a
    cased tokenizer sees it; the marker is an id and stays as it is."""
    folder = pylate_folder[0]
    _edit(folder / "tokenizer_config.json", do_lower_case=False)  # a cased vocabulary: "The" is unknown
    cased = Encoder.load(folder)
    _edit(folder / "sentence_bert_config.json", do_lower_case=True)
    lower = Encoder.load(folder)
    assert lower.config.lowercase and not cased.config.lowercase
    for is_query in (True, False):
        got = lower.encode([" The Cat SAT "], is_query).vectors[0]
        want = cased.encode(["the cat sat"], is_query).vectors[0]
        assert np.array_equal(got, want)
    unk = cased.tokenizer.unk_token_id
    assert unk in cased.processor.encode_ids(["The Cat"], True)[0][0]
    assert unk not in lower.processor.encode_ids(["The Cat"], True)[0][0]
    _edit(folder / "sentence_bert_config.json", do_lower_case="yes")
    with pytest.raises(ConfigError, match="do_lower_case must be true or false"):
        Encoder.load(folder)


def test_pylate_null_settings_take_pylates_defaults(pylate_folder):
    """PyLate reads a null (or absent) setting as its default, document_length included (180,
    whatever the Transformer's max_seq_length)."""
    from xtrieve.encode.loaders import PUNCTUATION, load_spec

    folder = pylate_folder[0]
    _edit(folder / "config_sentence_transformers.json", query_prefix=None, document_prefix=None,
          do_query_expansion=None, attend_to_expansion_tokens=None, skiplist_words=None, document_length=None,
          query_length=None)
    c = load_spec(folder).config
    assert (c.query_prefix, c.document_prefix, c.query_maxlen, c.doc_maxlen) == ("[Q] ", "[D] ", 32, 180)
    assert c.query_augmentation and not c.attend_to_expansion_tokens and c.skiplist_words == PUNCTUATION


def test_default_prompt_name_of_sentence_transformers_default_prompts(pylate_folder):
    """sentence-transformers starts from prompts {"query": "", "document": ""}: naming one of them
    without a prompts key is valid and puts nothing before the text."""
    folder = pylate_folder[0]
    _edit(folder / "config_sentence_transformers.json", default_prompt_name="query")
    assert Encoder.load(folder).config.prompt is None


def test_colbert_metadata_nested_under_config_and_colbert_defaults(colbert_folder):
    """artifact.metadata may nest its settings under "config" (ColBERTConfig reads both); a
    setting it lacks takes ColBERTConfig's default (doc_maxlen 220, query_maxlen 32)."""
    from xtrieve.encode.loaders import load_spec

    folder = colbert_folder[0]
    meta = json.loads((folder / "artifact.metadata").read_text())
    (folder / "artifact.metadata").write_text(json.dumps({"config": meta, "meta": {"version": "x"}}))
    c = load_spec(folder).config
    assert (c.query_maxlen, c.doc_maxlen) == (10, 30)
    (folder / "artifact.metadata").write_text(json.dumps({"dim": 8}))
    c = load_spec(folder).config
    assert (c.query_maxlen, c.doc_maxlen, c.query_prefix, c.document_prefix) == (32, 220, "[unused0]", "[unused1]")


def test_colbert_checkpoint_under_another_base_model_prefix(colbert_folder, tmp_path):
    """HF_ColBERT stores the language model under its base_model_prefix (roberta., electra., ...):
    the same weights under another prefix encode as the bert. checkpoint does."""
    import shutil

    from safetensors.torch import load_file, save_file

    folder = colbert_folder[0]
    other = tmp_path / "electra-named"
    shutil.copytree(folder, other)
    state = load_file(str(folder / "model.safetensors"))
    save_file({(k.replace("bert.", "electra.", 1) if k.startswith("bert.") else k): v for k, v in state.items()},
              str(other / "model.safetensors"))
    texts = ["the cat sat on the mat", "a dog barked ."]
    for a, b in zip(Encoder.load(other).encode_documents(texts), Encoder.load(folder).encode_documents(texts)):
        assert np.array_equal(a, b)


def test_the_default_model_loads_by_its_name():
    from xtrieve.encode.loaders import DEFAULT_MODEL_DIR, load_spec

    name = json.loads((DEFAULT_MODEL_DIR / "xtrieve_model.json").read_text())["name"]
    assert load_spec(name).backbone_dir == load_spec(None).backbone_dir
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_spec(name + "-nope")


def test_a_last_dense_with_activation_and_residual_outputs_its_vectors(pylate_folder):
    folder, first = pylate_folder
    hidden = _query_states(Encoder.load(folder), ["cats"])
    torch.manual_seed(7)
    square = torch.randn(16, 16)
    _add_dense(folder, "2_Dense", square, act="torch.nn.modules.activation.SiLU", residual=True)
    x = hidden @ first.T
    expected = torch.nn.functional.normalize(torch.nn.functional.silu(x @ square.T) + x, dim=-1).numpy()
    enc = Encoder.load(folder)
    assert enc.config.head_steps == ("silu",) and enc.config.dim == 16
    assert np.allclose(enc.encode_queries(["cats"])[0], expected, atol=1e-5)


def test_encoded_is_the_sequence_of_its_vectors(pylate_folder, tmp_path):
    enc = Encoder.load(pylate_folder[0])
    out = enc.encode(["what is late interaction", "the cat"], is_query=True)
    assert len(out) == 2 and out[1] is out.vectors[1] and all(a is b for a, b in zip(out, out.vectors))
    assert [v.shape[1] for v in out] == [enc.config.dim] * 2 and isinstance(out[0], np.ndarray)
    from collections.abc import Sequence

    assert isinstance(out, Sequence) and out[0:1] == out.vectors[0:1]
    import xtrieve

    info = xtrieve.Index.build_from_embeddings(tmp_path / "info", ["a"], [out[1]]).info()
    with pytest.raises(TypeError, match="unhashable"):  # (frozen, but it holds a list and a dict)
        hash(info)

    idx = xtrieve.Index.build(tmp_path / "ix", ["late interaction models", "a cat"], encoder=enc)
    with pytest.raises(InputError, match="not an Encoded batch"):  # the texts may carry a dense score it lacks
        idx.search_batch(out, k=1)
    assert len(idx.search_batch(out.vectors, k=1)) == 2


def test_bad_devices_and_arguments_are_config_and_input_errors(colbert_folder):
    enc = Encoder.load(colbert_folder[0])
    for device in ("tpu", None):
        with pytest.raises(ConfigError, match="device must be a torch device name"):
            Encoder.load(colbert_folder[0], device=device)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no cuda device here"):
            Encoder.load(colbert_folder[0], device="cuda")
    with pytest.raises(ConfigError, match="no meta device here"):  # tensors without data
        Encoder.load(colbert_folder[0], device="meta")
    for device in ("xpu", "hpu", "ipu"):  # types torch knows, without a usable device here
        with pytest.raises(ConfigError, match=f"no {device} device here"):
            Encoder.load(colbert_folder[0], device=device)
    with pytest.raises(InputError, match="got a mapping"):  # it would encode the keys
        enc.encode({"q1": "the cat"}, True)
    with pytest.raises(InputError, match="is_query must be True or False"):
        enc.encode(["the cat"], "no")


def test_a_device_number_or_precision_the_gpus_lack_is_a_config_error(monkeypatch):
    from xtrieve.encode.encoder import check_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert check_device("cuda:1") == torch.device("cuda:1")
    with pytest.raises(ConfigError, match="'cuda:7': torch sees 2 cuda device\\(s\\) here, numbered from 0"):
        check_device("cuda:7")
    from xtrieve.encode.precision import check_precision_for

    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda *a, **k: (7, 5))  # a T4 (bfloat16 from 8.0)
    with pytest.raises(ConfigError, match="the GPU cuda:1 has no bfloat16 support"):
        check_precision_for("bfloat16", torch.device("cuda:1"))
    check_precision_for("float32", torch.device("cuda:1"))


def test_colbert_models_join_a_title_as_colbert_reads_collections(colbert_folder, tmp_path):
    """ColBERT encodes a collection.tsv row with a title as 'title | passage'; other models as
    'title passage' (BEIR's join)."""
    import xtrieve

    enc = Encoder.load(colbert_folder[0])
    assert enc.config.title_separator == " | " and EncoderConfig().title_separator == " "
    doc = {"id": "d", "title": "Cats", "text": "the cat sat on the mat"}
    q = enc.encode_queries(["where did the cat sit"])[0]
    joined, plain = enc.encode_documents(["Cats | the cat sat on the mat", "Cats the cat sat on the mat"])
    want, other = (float((q @ d.T).max(1).sum()) for d in (joined, plain))
    assert abs(want - other) > 5e-2
    assert xtrieve.rerank(q, [doc], k=1, encoder=enc)[0].score == pytest.approx(want, abs=1e-5)
    idx = xtrieve.Index.build(tmp_path / "ix", [doc], encoder=enc, config={"vector_storage": "float16"})
    assert idx.search(q, k=1, exhaustive=True)[0].score == pytest.approx(want, abs=1e-2)
    assert idx.get("d")["title"] == "Cats" and idx.get("d")["text"] == "the cat sat on the mat"


def test_saving_over_a_model_with_a_copied_backbone_drops_that_copy(tmp_path):
    enc = Encoder.load()  # the packaged backbone: nothing copied
    stale = tmp_path / "m" / "backbone"
    stale.mkdir(parents=True)
    (stale / "model.safetensors").write_text("an earlier model's copy")
    enc.save(tmp_path / "m")
    assert not stale.exists()
    assert np.allclose(Encoder.load(tmp_path / "m").encode_queries(["tides"])[0], enc.encode_queries(["tides"])[0])
