"""`xtrieve train` on a tiny random BERT: loss goes down, output loads, resume continues."""
from __future__ import annotations

import dataclasses
import json
import random

import numpy as np
import pytest
import torch

from xtrieve.config import SHORT_DOCUMENT_VECTORS, EncoderConfig
from xtrieve.encode.encoder import Encoder
from xtrieve.encode.train import TrainConfig, TrainModel, load_checkpoint, make_batch, prepare, step_loss, train
from xtrieve.encode.top_layers import OVERLAY_FILE
from xtrieve.encode.train_data import StateCache, load_beir, load_pairs
from xtrieve.errors import ConfigError, InputError

WORDS = [f"w{i}" for i in range(48)]
SPECIALS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", ".", ","]


def make_model(folder, dim=8):
    """An xtrieve model folder: a 2-layer random BERT (hidden 32) + a random linear head."""
    from safetensors.torch import save_file
    from transformers import AutoTokenizer, BertConfig, BertModel

    bb = folder / "backbone"
    bb.mkdir(parents=True)
    (bb / "vocab.txt").write_text("\n".join(SPECIALS + WORDS) + "\n")
    (bb / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "BertTokenizer", "do_lower_case": True}))
    tok = AutoTokenizer.from_pretrained(str(bb))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(tok), hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=64, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(str(bb), safe_serialization=True)
    tok.save_pretrained(str(bb))
    save_file({"weight": torch.randn(dim, 32)}, str(folder / "head.safetensors"))
    config = EncoderConfig(dim=dim, query_maxlen=16, doc_maxlen=32, keep_special_tokens=False)
    (folder / "xtrieve_model.json").write_text(json.dumps({
        "format": "xtrieve-model", "version": 1, "name": "tiny", "backbone": {"path": "backbone"},
        "encoder_config": config.to_dict()}))
    return folder


def make_triples(path, n_topics=12, seed=0):
    """Topics of 4 words: a query names 2 of them, its positive mixes all 4 with filler."""
    rng = random.Random(seed)
    topics = [WORDS[4 * t:4 * t + 4] for t in range(n_topics)]
    rows = []
    for t, words in enumerate(topics):
        for v in range(3):
            q = " ".join(rng.sample(words, 2))
            filler = rng.sample(WORDS, 6)
            pos = " ".join(rng.sample(words + filler, 10))
            other = topics[(t + 1 + v) % n_topics]
            neg = " ".join(rng.sample(other + filler, 10))
            rows.append({"query": q, "positive": pos, "negative": neg})
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


@pytest.fixture
def setup(tmp_path):
    model = make_model(tmp_path / "model")
    data = make_triples(tmp_path / "triples.jsonl")
    return model, data, tmp_path


def _cfg(setup, out, **kw):
    model, data, tmp = setup
    base = dict(data=[str(data)], out=str(tmp / out), base=str(model), pool_factor=2, batch_size=8, lr=1e-2,
                seed=0, cache_dir=str(tmp / "cache"), n_negatives=2, mine_depth=5, progress=False,
                checkpoint_every=5)
    base.update(kw)
    return TrainConfig(**base)


def _batch_loss(cfg, enc):
    cache = StateCache(cfg.cache_dir, enc)
    from pathlib import Path

    prep = prepare(cfg, enc, cache, TrainModel(enc).eval(), Path(cfg.out))
    losses = []
    with torch.no_grad():
        for step in range(4):
            loss, _ = step_loss(cfg, TrainModel(enc).eval(), enc, cache, make_batch(cfg, prep, step))
            losses.append(float(loss))
    return float(np.mean(losses))


def test_training_lowers_the_loss_and_the_output_loads(setup):
    cfg = _cfg(setup, "out", max_steps=60, lr=3e-2)
    seen = []
    out = train(cfg, callback=lambda step, loss, stats: seen.append(step))
    assert seen == list(range(1, 61))
    base = Encoder.load(cfg.base)
    trained = Encoder.load(out)
    assert trained.config.pool_factor == 2
    assert _batch_loss(cfg, trained) < 0.85 * _batch_loss(cfg, base)
    # round trip: the saved head gives the vectors the training model computed
    model = TrainModel(trained).eval()
    texts = ["w1 w2 w3 w9 w10", "w4 w5"]
    states = trained.token_states(texts, is_query=False)
    with torch.no_grad():
        ref = [model(torch.from_numpy(s)).numpy() for s in states]
    got = trained.encode_documents(texts, pool_factor=1)
    for r, g in zip(ref, got):
        assert np.allclose(r, g, atol=1e-5)
    again = Encoder.load(out)
    assert again.identity()["head_sha256"] == trained.identity()["head_sha256"]
    assert np.allclose(again.encode_queries(["w1 w2"])[0], trained.encode_queries(["w1 w2"])[0])
    # the index pools with the model's pool factor and floor: these short texts keep every vector,
    # and without the floor ceil(n / 2) of them
    assert trained.config.pool_min_vectors == SHORT_DOCUMENT_VECTORS == cfg.pool_min_vectors
    pooled, counts = trained.encode_documents_with_counts(texts)
    assert [len(p) for p in pooled] == counts
    no_floor = Encoder.load(out, config={"pool_min_vectors": 0})
    pooled, counts = no_floor.encode_documents_with_counts(texts)
    assert [len(p) for p in pooled] == [-(-c // 2) for c in counts]


def test_resume_continues_the_step_count(setup):
    cfg = _cfg(setup, "res", max_steps=5, checkpoint_every=5)
    train(cfg)
    state = json.loads((setup[2] / "res" / "checkpoint" / "state.json").read_text())
    assert state["step"] == 5
    seen = []
    cfg2 = _cfg(setup, "res", max_steps=8, resume=True, checkpoint_every=5)
    train(cfg2, callback=lambda step, loss, stats: seen.append(step))
    assert seen == [6, 7, 8]
    assert json.loads((setup[2] / "res" / "checkpoint" / "state.json").read_text())["step"] == 8
    # resuming reproduces an uninterrupted run exactly (batches depend on (seed, step) only)
    straight = train(_cfg(setup, "straight", max_steps=8))
    a, b = Encoder.load(setup[2] / "res"), Encoder.load(straight)
    assert torch.allclose(a.head.weight, b.head.weight, atol=1e-5)


def test_checkpoint_is_pickle_free(setup):
    cfg = _cfg(setup, "ck", max_steps=5)
    train(cfg)
    files = sorted(p.name for p in (setup[2] / "ck" / "checkpoint").iterdir())
    assert files == ["optimizer.safetensors", "state.json", "trainable.safetensors"]
    enc = Encoder.load(cfg.base)
    model = TrainModel(enc)
    opt = torch.optim.AdamW(model.head_params(), lr=1.0)
    state = load_checkpoint(setup[2] / "ck" / "checkpoint", model, opt)
    assert state["step"] == 5 and opt.param_groups[0]["lr"] == cfg.lr
    assert len(opt.state) == len(model.head_params())


def test_mlp_head_round_trips_through_the_encoder(setup):
    cfg = _cfg(setup, "mlp", max_steps=6, mlp_dim=16, cluster="kmeans")
    out = train(cfg)
    enc = Encoder.load(out)
    assert enc.mlp is not None and enc.mlp.fc1.weight.shape == (16, 32)
    assert float(enc.mlp.fc2.weight.detach().abs().sum()) > 0
    model = TrainModel(enc).eval()
    s = enc.token_states(["w3 w4 w5"], is_query=True)[0]
    with torch.no_grad():
        assert np.allclose(model(torch.from_numpy(s)).numpy(), enc.encode_queries(["w3 w4 w5"])[0], atol=1e-5)


def test_full_fine_tuning_runs_and_saves_the_backbone(setup):
    cfg = _cfg(setup, "ft", max_steps=2, freeze_backbone=False, backbone_lr=1e-2)
    out = train(cfg)
    base, tuned = Encoder.load(cfg.base), Encoder.load(out)
    assert (out / "backbone").is_dir()
    a = dict(base.backbone.named_parameters())
    changed = [k for k, v in tuned.backbone.named_parameters() if not torch.equal(v, a[k])]
    assert changed
    texts = ["w1 w2 w3"]
    assert not np.allclose(base.token_states(texts, False)[0], tuned.token_states(texts, False)[0])
    # the encoder trained in this process encodes as the saved model does (its lean pass follows the new weights)
    enc = Encoder.load(cfg.base)
    train(dataclasses.replace(cfg, out=str(setup[2] / "ft2")), enc=enc)
    saved = Encoder.load(setup[2] / "ft2")
    assert np.allclose(enc.encode_queries(texts)[0], saved.encode_queries(texts)[0], atol=1e-5)
    assert np.allclose(enc.encode_documents(texts)[0], saved.encode_documents(texts)[0], atol=1e-5)


def test_an_interrupted_run_leaves_the_given_encoder_out_of_training_mode(setup):
    enc = Encoder.load(setup[0])

    def interrupt(step, loss, stats):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):  # (Ctrl-C in a notebook)
        train(_cfg(setup, "ki", max_steps=3, freeze_backbone=False), enc=enc, callback=interrupt)
    assert not enc.backbone.training  # dropout off: the same text encodes the same twice
    assert np.array_equal(enc.encode_documents(["w1 w2 w3"])[0], enc.encode_documents(["w1 w2 w3"])[0])


def test_backbone_training_with_an_encoder_on_a_gpu_is_a_clear_error(setup):
    enc = Encoder.load(setup[0])
    enc.device = torch.device("cuda")  # (as loaded with device="cuda"; nothing runs before the check)
    for options in ({"freeze_backbone": False}, {"train_layers": 1}):
        with pytest.raises(ConfigError, match="runs on the CPU: load the encoder with device='cpu', not 'cuda'"):
            train(_cfg(setup, "gpu", max_steps=1, **options), enc=enc)


def test_a_training_backbone_is_scored_as_it_now_is_not_from_the_cache(setup, tmp_path):
    # held-out scores (and the choice of OUT/best) must follow a backbone that trains
    enc = Encoder.load(setup[0])
    cache = StateCache(tmp_path / "c", enc)
    for is_query in (False, True):
        cache.ensure(TEXTS, is_query, progress=False)  # the base backbone's states
    model = TrainModel(enc, train_backbone=True).eval()
    with torch.no_grad():
        for param in enc.backbone.parameters():
            param.mul_(1.5)
        enc.refresh_lean()
        got, mask = model.encode_cached(cache, TEXTS, False)
        dense = model.dense(cache, TEXTS, False)
    out = enc.encode(TEXTS, False, pool_factor=1)
    for i, ref in enumerate(out.vectors):
        assert np.allclose(got[i][mask[i]].numpy(), ref, atol=1e-4)
    assert np.allclose(dense.numpy(), out.dense if out.dense is not None else enc_dense(enc, TEXTS), atol=1e-4)


def enc_dense(enc, texts):
    """The encoder's dense embeddings of documents (for a model that does not fuse them)."""
    from xtrieve.encode.encoder import WindowJoin

    join = WindowJoin(len(texts), enc.hidden_size)
    with torch.no_grad():
        for owners, _, batch in enc._batches(texts, False, 32, False, "documents"):
            join.add_states(owners, enc._hidden(batch, False), batch.attention_mask)
    return join.dense()


def test_beir_folder_and_holdout(setup, tmp_path):
    model, _, _ = setup
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    rng = random.Random(1)
    docs = [{"_id": f"d{i}", "title": "", "text": " ".join(rng.sample(WORDS, 8))} for i in range(30)]
    (beir / "corpus.jsonl").write_text("\n".join(json.dumps(d) for d in docs))
    qs = [{"_id": f"q{i}", "text": " ".join(docs[i]["text"].split()[:3])} for i in range(20)]
    (beir / "queries.jsonl").write_text("\n".join(json.dumps(q) for q in qs))
    (beir / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(16)))
    (beir / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(16, 20)))
    ts = load_beir(beir, "train")
    assert len(ts.query_ids()) == 16 and "q17" not in ts.queries
    cfg = _cfg(setup, "beir-model", data=[str(beir)], max_steps=4, holdout=0.25, eval_every=2)
    out = train(cfg)
    log = json.loads((out / "train_log.json").read_text())
    assert [h["step"] for h in log["history"]] == [0, 2, 4]
    assert (out / "best" / "xtrieve_model.json").exists()
    assert Encoder.load(out / "best").config.pool_factor == 2


def test_pairs_without_negatives_load(tmp_path):
    p = tmp_path / "pairs.jsonl"
    p.write_text(json.dumps({"query": "a b", "positive": "c d"}) + "\n" + json.dumps(["e", "f", "g"]) + "\n")
    ts = load_pairs(p)
    assert len(ts.queries) == 2 and len(ts.corpus) == 3 and sum(len(v) for v in ts.negatives.values()) == 1


# -- training the top backbone blocks on cached inputs (--train-layers) ----------------------------

TEXTS = ["w1 w2 w3 w9 w10 . w11", "w4 w5", "w6 , w7 w8 w12 w13 w14 w15 w16 w17 w18 w19 w20"]


def test_cached_layer_inputs_plus_top_blocks_equal_the_full_backbone(setup, tmp_path):
    enc = Encoder.load(setup[0])
    model = TrainModel(enc, top_layers=1).eval()
    cache = StateCache(tmp_path / "c", enc, layer=model.top.first)
    for is_query in (False, True):
        cache.ensure(TEXTS, is_query, progress=False)
        with torch.no_grad():
            got, mask = model.encode_cached(cache, TEXTS, is_query)
        ref = enc.encode_queries(TEXTS) if is_query else enc.encode_documents(TEXTS, pool_factor=1)
        for i, r in enumerate(ref):
            assert int(mask[i].sum()) == len(r)
            assert np.allclose(got[i][mask[i]].numpy(), r, atol=1e-3)  # float16 cache


def test_training_top_layers_lowers_the_loss(setup):
    cfg = _cfg(setup, "top", max_steps=40, lr=3e-2, train_layers=1, backbone_lr=1e-3)
    out = train(cfg)
    base, trained = Encoder.load(cfg.base), Encoder.load(out)
    top = lambda e, i: e.backbone.encoder.layer[i].output.dense.weight  # noqa: E731
    assert not torch.allclose(top(trained, 1), top(base, 1))
    assert torch.equal(top(trained, 0), top(base, 0))  # only the top block trained
    cfg_eval = _cfg(setup, "top", train_layers=0, cache_dir=str(setup[2] / "cache-eval"))
    assert _batch_loss(cfg_eval, trained) < 0.85 * _batch_loss(cfg_eval, base)
    # a packaged backbone is not copied: the trained blocks ship as an overlay over it
    base.spec.backbone_ref = {"path": str(base.spec.backbone_dir)}
    base.head.load_state_dict(trained.head.state_dict())
    base.spec.backbone_overlay = {f"encoder.layer.1.{k}": v for k, v in trained.backbone.encoder.layer[1].state_dict().items()}
    folder = base.save(setup[2] / "overlay", copy_backbone=False)
    assert (folder / OVERLAY_FILE).exists() and not (folder / "backbone").exists()
    again = Encoder.load(folder)
    assert torch.equal(top(again, 1), top(trained, 1))
    assert np.allclose(again.encode_queries(["w1 w2"])[0], trained.encode_queries(["w1 w2"])[0], atol=1e-5)
    assert again.identity()["head_sha256"] != Encoder.load(cfg.base).identity()["head_sha256"]


def test_train_layers_needs_a_frozen_backbone_and_fits_the_depth(setup):
    with pytest.raises(InputError, match="frozen"):
        train(_cfg(setup, "bad", max_steps=1, train_layers=1, freeze_backbone=False))
    with pytest.raises(InputError, match="top layers"):
        train(_cfg(setup, "bad2", max_steps=1, train_layers=5))


def test_dense_weight_enters_the_loss_and_the_saved_model(setup):
    cfg = _cfg(setup, "dw", max_steps=3, n_negatives=0)
    enc = Encoder.load(cfg.base)
    cache = StateCache(cfg.cache_dir, enc)
    from pathlib import Path

    prep = prepare(cfg, enc, cache, TrainModel(enc).eval(), Path(cfg.out))
    batch = make_batch(cfg, prep, 0)
    model = TrainModel(enc).eval()
    with torch.no_grad():
        plain, _ = step_loss(cfg, model, enc, cache, batch)
        fused, _ = step_loss(dataclasses.replace(cfg, dense_weight=0.5), model, enc, cache, batch)
    assert float(plain) != pytest.approx(float(fused))
    out = train(dataclasses.replace(cfg, dense_weight=0.5))
    trained = Encoder.load(out)
    assert trained.config.dense_weight == 0.5 and trained.fuses_dense
    got = trained.encode(["w1 w2 w3"], is_query=True)
    assert got.dense.shape == (1, 32) and np.allclose(np.linalg.norm(got.dense, axis=1), 1, atol=1e-5)
    # the base model's weight is kept when none is given
    assert Encoder.load(train(_cfg(setup, "dw0", max_steps=1, n_negatives=0))).config.dense_weight == 0.0


# -- multi-epoch runs, cache keys, reused negatives, bad inputs -------------------------------------


def make_beir(folder, n_queries=5, n_docs=8, seed=2):
    """A tiny BEIR folder: query i names three words of document i, its only positive."""
    (folder / "qrels").mkdir(parents=True)
    rng = random.Random(seed)
    docs = {f"d{i}": " ".join(rng.sample(WORDS, 8)) for i in range(n_docs)}
    (folder / "corpus.jsonl").write_text("".join(json.dumps({"_id": k, "text": v}) + "\n" for k, v in docs.items()))
    (folder / "queries.jsonl").write_text("".join(
        json.dumps({"_id": f"q{i}", "text": " ".join(docs[f"d{i}"].split()[:3])}) + "\n" for i in range(n_queries)))
    (folder / "qrels" / "train.tsv").write_text(
        "query-id\tcorpus-id\tscore\n" + "".join(f"q{i}\td{i}\t1\n" for i in range(n_queries)))
    return folder


def test_batches_of_later_epochs_use_only_prepared_queries():
    from xtrieve.encode.train import batches_for, visited

    n_per_set = [5, 3, 1]  # tails are dropped, and every epoch reshuffles
    steps = 25
    got = [set() for _ in n_per_set]
    for step in range(steps):
        si, pos = batches_for(step, n_per_set, 2, 0)
        got[si].update(pos)
    assert visited(n_per_set, 2, 0, steps) == got
    assert got[0] == set(range(5)) and got[2] == set()  # a one-query set forms no batch


def test_training_runs_over_several_epochs(setup, tmp_path):
    beir = make_beir(tmp_path / "beir")  # 5 queries, batch 2: 2 batches an epoch, one query left over
    cfg = _cfg(setup, "epochs", data=[str(beir)], batch_size=2, max_steps=9, n_negatives=1, checkpoint_every=4)
    seen = []
    out = train(cfg, callback=lambda step, loss, stats: seen.append(step))
    assert seen == list(range(1, 10))
    mined = json.loads((out / "mined_negatives.json").read_text())["sets"]["beir:train"]["negatives"]
    assert sorted(mined) == [f"q{i}" for i in range(5)]
    assert Encoder.load(out).config.pool_factor == 2


def _perturbed_copy(src, dst, scale=0.5):
    """A copy of model folder ``src`` whose backbone weights differ only in value (same file size)."""
    import shutil

    from safetensors.torch import load_file, save_file

    shutil.copytree(src, dst)
    weights = dst / "backbone" / "model.safetensors"
    state = load_file(str(weights))
    name = sorted(k for k in state if k.endswith("output.dense.weight"))[-1]
    state[name] = state[name] * scale
    size = weights.stat().st_size
    save_file(state, str(weights), metadata={"format": "pt"})
    assert weights.stat().st_size == size
    return dst


def test_state_cache_key_follows_the_weight_values(setup, tmp_path):
    import shutil

    from xtrieve.encode.train_data import encoder_cache_key

    model = setup[0]
    same = shutil.copytree(model, tmp_path / "elsewhere" / "model")
    other = _perturbed_copy(model, tmp_path / "other" / "model")
    a, b, c = Encoder.load(model), Encoder.load(same), Encoder.load(other)
    assert encoder_cache_key(a) == encoder_cache_key(b)  # content, not location
    assert encoder_cache_key(a) != encoder_cache_key(c)
    StateCache(tmp_path / "c", a).ensure(["w1 w2 w3"], False, progress=False)
    assert not StateCache(tmp_path / "c", b).missing(["w1 w2 w3"], False)
    assert StateCache(tmp_path / "c", c).missing(["w1 w2 w3"], False) == ["w1 w2 w3"]


def test_a_new_run_into_the_same_folder_mines_afresh(setup, tmp_path):
    beir = make_beir(tmp_path / "beir", n_queries=4, n_docs=8)
    cfg = _cfg(setup, "again", data=[str(beir)], batch_size=2, max_steps=2, n_negatives=2)
    mined_path = train(cfg) / "mined_negatives.json"
    first = json.loads(mined_path.read_text())["sets"]["beir:train"]
    # the corpus loses every mined negative: a second run (no --resume) must not reuse them
    gone = {d for negs in first["negatives"].values() for d in negs}
    rows = [json.loads(line) for line in (beir / "corpus.jsonl").read_text().splitlines()]
    keep = {f"d{i}" for i in range(4)} | set(sorted({f"d{i}" for i in range(4, 8)} - gone)[:1])
    (beir / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows if r["_id"] in keep))
    with pytest.raises(InputError, match="holds a model already"):
        train(cfg)
    cfg = dataclasses.replace(cfg, overwrite=True)
    train(cfg)
    second = json.loads(mined_path.read_text())["sets"]["beir:train"]
    assert second["key"] != first["key"]
    assert {d for negs in second["negatives"].values() for d in negs} <= keep
    # resuming over negatives mined from other data is refused
    (beir / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(InputError, match="mined from other data"):
        train(dataclasses.replace(cfg, max_steps=3, resume=True))
    # another base model gets its own negatives
    from xtrieve.encode.train import mining_key

    other = _perturbed_copy(setup[0], tmp_path / "other")
    data = load_beir(beir)
    assert mining_key(cfg, Encoder.load(cfg.base), data) != mining_key(cfg, Encoder.load(other), data)
    # a file from an older xtrieve (no record of what it was mined from) is dropped, or refused on resume
    mined_path.write_text(json.dumps({"beir:train": {"q0": ["d9"]}}))
    with pytest.raises(InputError, match="older xtrieve"):
        train(dataclasses.replace(cfg, max_steps=3, resume=True))
    train(cfg)
    assert json.loads(mined_path.read_text())["format"] == "xtrieve-mined-negatives"


def test_one_usable_query_is_a_clear_error(setup, tmp_path):
    beir = make_beir(tmp_path / "beir", n_queries=2, n_docs=3)
    (beir / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq0\td0\t1\nq1\tdX\t1\n")
    with pytest.raises(InputError, match=r"beir:train 1; a batch needs at least 2"):
        train(_cfg(setup, "one", data=[str(beir)], max_steps=2))


@pytest.mark.parametrize("option, value", [
    ("temperature", 0.0), ("temperature", -0.05), ("temperature", float("nan")), ("teacher_temperature", 0.0),
    ("lr", 0.0), ("lr", float("inf")), ("backbone_lr", -1e-5), ("batch_size", 1), ("max_steps", -1),
    ("n_negatives", -1), ("mine_depth", 0), ("weight_decay", -0.1), ("distill_weight", -1.0), ("holdout", 1.0),
    ("pool_factor", 0), ("checkpoint_every", 0), ("batch_size", 2.5), ("cluster", "single"), ("precision", "half"),
])
def test_bad_training_options_are_config_errors(setup, option, value):
    from xtrieve.errors import ConfigError

    with pytest.raises(ConfigError, match=option):
        _cfg(setup, "bad", **{option: value})


def test_cli_rejects_a_non_positive_temperature(setup, tmp_path):
    from click.testing import CliRunner

    from xtrieve.cli.main import main

    args = ["train", "--data-dir", str(setup[1]), "--out", str(tmp_path / "o"), "--base", str(setup[0])]
    res = CliRunner().invoke(main, args + ["--temperature", "0"])
    assert res.exit_code == 2 and "--temperature" in res.output
    res = CliRunner().invoke(main, args + ["--lr", "nan"])
    assert res.exit_code == 1 and res.output.strip().splitlines() == ["error: lr must be a finite number > 0, got nan"]


def test_out_must_be_a_folder_other_than_an_index(setup):
    tmp = setup[2]
    (tmp / "afile").write_text("x")
    with pytest.raises(InputError, match="is a file"):
        train(_cfg(setup, "afile", max_steps=1))
    (tmp / "ix").mkdir()
    (tmp / "ix" / "manifest.json").write_text("{}")
    with pytest.raises(InputError, match="is an index folder"):
        train(_cfg(setup, "ix", max_steps=1))
    assert sorted(p.name for p in (tmp / "ix").iterdir()) == ["manifest.json"]


def test_bfloat16_caches_states_apart_and_trains(setup, tmp_path):
    """precision='bfloat16' encodes the cached document states in bfloat16: a cache of its own
    (float32 keys unchanged), and a model that trains and loads as usual."""
    from xtrieve.encode.train_data import encoder_cache_key

    model = setup[0]
    exact, fast = Encoder.load(model), Encoder.load(model, precision="bfloat16")
    assert encoder_cache_key(exact) != encoder_cache_key(fast)
    assert "precision" not in json.dumps(exact.config.to_dict())  # nothing about precision enters the model
    cfg = _cfg(setup, "bf16", max_steps=5, precision="bfloat16")
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.lr = 1.0
    out = train(cfg)
    trained = Encoder.load(out)
    assert trained.precision == "float32" and trained.encode_queries(["w1 w2"])[0].shape[1] == 8
    assert [p.name for p in (tmp_path / "cache").iterdir()] and (tmp_path / "cache" / encoder_cache_key(fast)).is_dir()


def test_resume_refuses_changed_settings_and_out_keeps_its_model(setup, caplog):
    cfg = _cfg(setup, "keep", max_steps=5, checkpoint_every=5)
    train(cfg)
    with pytest.raises(InputError, match=r"changes lr to 0.1 \(was 0.01\)"):
        train(dataclasses.replace(cfg, max_steps=8, resume=True, lr=0.1))
    with pytest.raises(InputError, match="pool_factor to 3"):
        train(dataclasses.replace(cfg, max_steps=8, resume=True, pool_factor=3))
    train(dataclasses.replace(cfg, max_steps=4, resume=True))  # already further: said, nothing more trained
    assert "at step 5 already" in caplog.text
    with pytest.raises(InputError, match="--overwrite replaces it"):
        train(cfg)


def test_a_checkpoint_from_before_the_pooling_floor_resumes_as_it_trained(setup):
    """A checkpoint written before ``pool_min_vectors`` existed trained without a floor: resuming it
    with one is a changed setting, with 0 it continues; its mined negatives still match."""
    from xtrieve.encode.train import mining_key

    cfg = _cfg(setup, "old", max_steps=5, checkpoint_every=5)
    assert cfg.n_negatives > 0
    train(cfg)
    state_file = setup[2] / "old" / "checkpoint" / "state.json"
    state = json.loads(state_file.read_text())
    del state["config"]["pool_min_vectors"]
    state_file.write_text(json.dumps(state))
    with pytest.raises(InputError, match=r"changes pool_min_vectors to 8 \(was 0\)"):
        train(dataclasses.replace(cfg, max_steps=8, resume=True))
    seen = []
    train(dataclasses.replace(cfg, max_steps=8, resume=True, pool_min_vectors=0),
          callback=lambda step, loss, stats: seen.append(step))
    assert seen == [6, 7, 8] and Encoder.load(cfg.out).config.pool_min_vectors == 0
    enc = Encoder.load(cfg.base)
    data = prepare(cfg, enc, StateCache(cfg.cache_dir, enc), TrainModel(enc).eval(), setup[2] / "x").sets[0]
    floored = Encoder.load(cfg.base, config={"pool_min_vectors": 8})
    assert mining_key(cfg, enc, data) == mining_key(cfg, floored, data)


def test_a_run_that_fails_early_leaves_no_folder(setup, tmp_path):
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(InputError):
        train(_cfg(setup, "never", data=[str(empty)], max_steps=2))
    assert not (setup[2] / "never").exists()


def test_given_negatives_are_used_at_every_step(setup):
    cfg = _cfg(setup, "neg", n_negatives=1, mine_depth=1, max_steps=4)
    enc = Encoder.load(cfg.base)
    from pathlib import Path

    prep = prepare(cfg, enc, StateCache(cfg.cache_dir, enc), TrainModel(enc).eval(), Path(cfg.out))
    data = prep.sets[0]
    for step in range(4):
        batch = make_batch(cfg, prep, step)
        for q in batch["qids"]:
            assert any(data.corpus[d] in batch["docs"] for d in data.negatives[q])  # before any mined one


def test_training_rows_read_common_key_names_and_say_what_they_ignore(tmp_path, caplog):
    from xtrieve.encode.train_data import load_pairs

    f = tmp_path / "rows.jsonl"
    f.write_text(json.dumps({"anchor": "a query", "positive": "a doc", "negatives": ["n1", "n2"], "score": 1}) + "\n"
                 + json.dumps({"question": "another", "document": "doc two", "hard_negative": "n3"}) + "\n")
    data = load_pairs(f)
    assert len(data.queries) == 2 and sum(len(v) for v in data.negatives.values()) == 3
    assert "ignoring key(s) score" in caplog.text
    f.write_text(json.dumps({"question": "q", "answer": "a"}) + "\n")
    with pytest.raises(InputError, match=r"rows.jsonl:1: a row needs .* it has 'question', 'answer'"):
        load_pairs(f)
    f.write_text(json.dumps([{"query": "q", "positive": "p"}]) + "\n")
    with pytest.raises(InputError, match="JSON array of rows is not JSON Lines"):
        load_pairs(f)


def test_two_sets_of_one_name_train_and_resume(setup, tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    make_triples(tmp_path / "a" / "t.jsonl", seed=1)
    make_triples(tmp_path / "b" / "t.jsonl", seed=2)
    data = [str(tmp_path / "a" / "t.jsonl"), str(tmp_path / "b" / "t.jsonl")]
    cfg = _cfg(setup, "two", data=data, max_steps=4, checkpoint_every=2)
    out = train(cfg)
    assert set(json.loads((out / "mined_negatives.json").read_text())["sets"]) == set(data)
    train(dataclasses.replace(cfg, max_steps=6, resume=True))


def test_a_beir_folder_with_other_keys_is_a_clear_error(setup, tmp_path):
    beir = make_beir(tmp_path / "beir", n_queries=4, n_docs=8)
    rows = [json.loads(line) for line in (beir / "queries.jsonl").read_text().splitlines()]
    (beir / "queries.jsonl").write_text("".join(json.dumps({"_id": r["_id"], "query": r["text"]}) + "\n" for r in rows))
    with pytest.raises(InputError, match=r"queries.jsonl: query 'q0' has no 'text'"):
        train(_cfg(setup, "keys", data=[str(beir)], max_steps=2))
    (beir / "queries.jsonl").unlink()
    with pytest.raises(InputError, match="queries.jsonl is missing"):
        train(_cfg(setup, "keys", data=[str(beir)], max_steps=2))


def test_many_given_negatives_past_the_mining_depth_are_cached(setup, tmp_path):
    rows = [{"query": f"w{i} w{i + 1}", "positive": f"w{i} w{i + 1} w{i + 2}",
             "negatives": [f"w{i + 3} w{i + 4}", f"w{i + 5} w{i + 6}", f"w{i + 7} w{i + 8}", f"w{i + 9} w{i + 10}"]}
            for i in range(0, 40, 4)]
    f = tmp_path / "many.jsonl"
    f.write_text("".join(json.dumps(r) + "\n" for r in rows))
    train(_cfg(setup, "many", data=[str(f)], n_negatives=3, mine_depth=1, max_steps=3))


def test_resume_takes_one_file_however_its_path_is_written(setup, monkeypatch):
    model, data, tmp = setup
    monkeypatch.chdir(tmp)
    cfg = _cfg(setup, "paths", data=[data.name], base=model.name, max_steps=3, checkpoint_every=3)
    train(cfg)
    train(dataclasses.replace(cfg, data=[str(data)], base=str(model), max_steps=4, resume=True))
    train(dataclasses.replace(cfg, data=["./" + data.name], max_steps=5, resume=True))


def test_resume_without_a_checkpoint_does_not_replace_a_model(setup):
    cfg = _cfg(setup, "nock", max_steps=2, checkpoint_every=50)
    out = train(cfg)
    import shutil

    shutil.rmtree(out / "checkpoint", ignore_errors=True)
    with pytest.raises(InputError, match="no checkpoint to resume"):
        train(dataclasses.replace(cfg, resume=True, max_steps=3))


def test_mined_negatives_do_not_depend_on_what_the_cache_holds(setup, tmp_path):
    enc = Encoder.load(setup[0])
    warm = StateCache(tmp_path / "warm", enc)
    warm.ensure(list(load_pairs(setup[1]).corpus.values()), False, progress=False)  # every document cached
    mined = []
    for name, cache in (("cold", tmp_path / "cold"), ("warm", tmp_path / "warm")):
        out = train(_cfg(setup, f"from-{name}", max_steps=2, cache_dir=str(cache)))
        mined.append(json.loads((out / "mined_negatives.json").read_text())["sets"])
    assert mined[0] == mined[1]


def test_bad_rows_qrels_and_folders_are_clear_errors(setup, tmp_path):
    from xtrieve.encode.train_data import load_beir

    bad = tmp_path / "neg.jsonl"
    for neg in (5, {"text": "n"}, ["ok", 3]):
        bad.write_text(json.dumps({"query": "q", "positive": "p", "negative": neg}) + "\n")
        with pytest.raises(InputError, match="neg.jsonl:1: a row's negative is a string or a list of strings"):
            load_pairs(bad)
    beir = tmp_path / "beir"
    (beir / "qrels").mkdir(parents=True)
    (beir / "queries.jsonl").write_text(json.dumps({"_id": "q1", "text": "w1 w2"}) + "\n")
    (beir / "corpus.jsonl").write_text(json.dumps({"_id": "d1", "text": "w1 w3"}) + "\n")
    (beir / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1.0\nq1\tgone\t1\nq9\td1\t2\n")
    data = load_beir(beir)
    assert data.positives == {"q1": {"d1": 1}}
    (beir / "qrels" / "train.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\tyes\n")
    with pytest.raises(InputError, match="train.tsv:2: the score 'yes' is not a number"):
        load_beir(beir)
    (beir / "qrels" / "train.tsv").write_bytes(b"q1\td1\t1\nq\xe9\td1\t1\n")
    with pytest.raises(InputError, match="not UTF-8"):
        load_beir(beir)
    foreign = tmp_path / "notes"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not a model's \\(notes.txt\\)"):
        train(_cfg(setup, "notes", max_steps=1))
    with pytest.raises(Exception, match="seed must fit in 64 bits"):
        _cfg(setup, "x", seed=2**70).validate()


def test_resume_refuses_changed_data_without_negatives_and_a_kill_while_saving_keeps_a_checkpoint(setup):
    import os

    cfg = _cfg(setup, "chg", max_steps=2, n_negatives=0, checkpoint_every=1)
    out = train(cfg)
    ckpt = out / "checkpoint"
    os.replace(ckpt, ckpt.with_name("checkpoint.old"))  # killed between moving the old one aside and the new one in
    rows = setup[1].read_text().splitlines()
    setup[1].write_text("\n".join(rows[1:]) + "\n")
    with pytest.raises(InputError, match="trained on other data"):
        train(dataclasses.replace(cfg, max_steps=3, resume=True))
    assert (ckpt / "state.json").exists()
