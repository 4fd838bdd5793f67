"""encode.lean_bert: the same hidden states as transformers' BertModel, and its forward wherever it must be."""
import pytest
import torch

from xtrieve import onednn
from xtrieve.encode import lean_bert

pytestmark = pytest.mark.skipif(not onednn.available(), reason="torch without oneDNN linear ops")


def _bert(**changes):
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=50, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, **changes)
    return BertModel(cfg).eval()


def _inputs(lengths, width=None):
    width = width or max(lengths)
    ids = torch.randint(1, 50, (len(lengths), width))
    mask = torch.zeros(len(lengths), width, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
        ids[i, n:] = 0
    return ids, mask


@pytest.mark.parametrize("lengths", [[7], [1], [9, 4, 6], [5, 5]])
def test_same_hidden_states_as_transformers(lengths):
    model = _bert()
    lean = lean_bert.LeanBert.of_model(model)
    ids, mask = _inputs(lengths)
    with torch.inference_mode():
        assert lean.handles(ids)
        ref = model(input_ids=ids, attention_mask=mask).last_hidden_state
        out = lean(ids, mask)
    assert out.shape == ref.shape
    for i, n in enumerate(lengths):  # padded positions are not outputs
        assert torch.allclose(out[i, :n], ref[i, :n], atol=1e-5)


@pytest.mark.parametrize("lengths", [[7], [9, 4, 6], [40, 40, 40, 40]])  # few rows (packed) and many
def test_bfloat16_products_stay_close_to_float32(lengths):
    model = _bert()
    lean = lean_bert.LeanBert.of_model(model)
    ids, mask = _inputs(lengths)
    with torch.inference_mode():
        ref, out = lean(ids, mask), lean(ids, mask, bfloat16=True)
    assert out.dtype is torch.float32 and out.shape == ref.shape
    for i, n in enumerate(lengths):
        cos = torch.nn.functional.cosine_similarity(out[i, :n], ref[i, :n], dim=-1)
        assert cos.min() > 0.999
    assert not torch.equal(out, ref)  # the products did run in bfloat16


def test_a_text_alone_and_in_a_big_batch_gets_the_same_bfloat16_states():
    """Alone, a text's few rows take the packed products; in a batch over LEAN_MAX_ROWS, plain
    bfloat16 ones: the same arithmetic up to the order of the sums."""
    model = _bert()
    lean = lean_bert.LeanBert.of_model(model)
    ids, mask = _inputs([12] * (lean_bert.LEAN_MAX_ROWS // 12 + 1))
    with torch.inference_mode():
        batch = lean(ids, mask, bfloat16=True)
        alone = lean(ids[:1], mask[:1], bfloat16=True)
    assert torch.allclose(alone[0], batch[0], atol=2e-2)
    cos = torch.nn.functional.cosine_similarity(alone[0], batch[0], dim=-1)
    assert cos.min() > 0.9999


def test_rebuilds_after_weight_changes():
    model = _bert()
    lean = lean_bert.LeanBert.of_model(model)
    ids, mask = _inputs([6])
    with torch.inference_mode():
        lean(ids, mask)
    with torch.no_grad():
        model.encoder.layer[1].attention.self.key.weight.mul_(1.5)  # an optimizer step, in place
        model.encoder.layer[0].output.LayerNorm.bias.add_(0.1)
    with torch.inference_mode():
        assert torch.allclose(lean(ids, mask), model(input_ids=ids, attention_mask=mask).last_hidden_state, atol=1e-5)


def test_hands_back_what_it_must_not_take():
    model = _bert()
    lean = lean_bert.LeanBert.of_model(model)
    few, _ = _inputs([8])
    many, _ = _inputs([lean_bert.LEAN_MAX_ROWS // 2 + 1] * 2)
    with torch.inference_mode():
        assert lean.handles(few) and not lean.handles(many)
        assert lean.handles(many, bfloat16=True)  # bfloat16 products: alone and in a batch alike
    assert not lean.handles(few)  # gradients on
    model.train()
    with torch.inference_mode():
        assert not lean.handles(few)
    model.eval()
    handle = model.encoder.layer[1].register_forward_pre_hook(lambda *a: None)
    with torch.inference_mode():
        assert not lean.handles(few)  # hooks must see the model's own forward
    handle.remove()
    with torch.inference_mode():
        assert lean.handles(few)
    torch.backends.mkldnn.enabled = False
    try:
        with torch.inference_mode():
            assert not lean.handles(few)
    finally:
        torch.backends.mkldnn.enabled = True
    model.to(torch.bfloat16)  # oneDNN's packed bf16 products need CPU support it may lack
    with torch.inference_mode():
        assert not lean.handles(few)


def test_supports_only_plain_bert():
    assert lean_bert.supports(_bert())
    assert not lean_bert.supports(_bert(hidden_act="relu"))
    assert not lean_bert.supports(_bert(is_decoder=True))
    assert not lean_bert.supports(torch.nn.Linear(4, 4))
    with pytest.raises(ValueError, match="not a BertModel"):
        lean_bert.LeanBert.of_model(torch.nn.Linear(4, 4))


def test_encoder_vectors_unchanged_by_the_lean_pass(pylate_folder):
    from xtrieve.encode.encoder import Encoder

    enc = Encoder.load(pylate_folder[0])  # [Q] marker and [MASK] padding to 12 tokens
    assert enc.lean is not None
    queries = ["what is late interaction", "the cat sat on the mat", "dog"]
    lean_single = [enc.encode_queries([q])[0] for q in queries]
    lean_batch = enc.encode_queries(queries)
    enc.backbone  # transformers' model, then its own forward only
    enc.lean = None
    plain = enc.encode_queries(queries)
    for a, b, c in zip(lean_single, lean_batch, plain):
        assert a.shape == c.shape and torch.allclose(torch.from_numpy(a), torch.from_numpy(c), atol=1e-5)
        assert torch.allclose(torch.from_numpy(b), torch.from_numpy(c), atol=1e-5)


def test_threads_share_one_lean_pass():
    from concurrent.futures import ThreadPoolExecutor

    model = _bert()
    lean = lean_bert.LeanBert.of_model(model)
    inputs = [_inputs([n]) for n in range(1, 13)]

    def run(pair):
        with torch.inference_mode():
            return lean(*pair)

    alone = [run(p) for p in inputs]
    with ThreadPoolExecutor(4) as pool:
        together = list(pool.map(run, inputs * 4))
    for i, out in enumerate(together):
        assert torch.equal(out, alone[i % len(inputs)])


def test_bfloat16_without_onednn_bfloat16_packing(monkeypatch):
    """CPUs whose oneDNN cannot pack bfloat16 weights run the products through torch's kernels."""
    model = _bert()
    ids, mask = _inputs([7])
    with torch.inference_mode():
        packed = lean_bert.LeanBert.of_model(model)(ids, mask, bfloat16=True)
        monkeypatch.setattr(onednn, "packs_bfloat16", lambda: False)
        lean = lean_bert.LeanBert.of_model(model)
        plain = lean(ids, mask, bfloat16=True)
    assert not lean._layers()[0].products(torch.bfloat16, True).packed
    assert torch.allclose(plain, packed, atol=2e-2)
