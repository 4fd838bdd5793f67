"""xtrieve.onednn: same results as torch's own kernels, and the plain path wherever it must be."""
import copy

import pytest
import torch

from xtrieve import onednn


def _model():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 32), torch.nn.GELU(), torch.nn.Sequential(torch.nn.Linear(32, 8, bias=False)))


def test_pack_linears_same_outputs_and_state_dict():
    ref = _model().eval()
    packed = copy.deepcopy(ref)
    n = onednn.pack_linears(packed)
    assert n == (2 if onednn.available() else 0)
    assert list(packed.state_dict()) == list(ref.state_dict())
    with torch.inference_mode():
        for shape in [(3, 16), (2, 7, 16), (onednn.PACKED_MAX_ROWS + 1, 16)]:
            x = torch.randn(*shape)
            assert torch.allclose(packed(x), ref(x), atol=1e-5)


@pytest.mark.skipif(not onednn.available(), reason="torch without oneDNN linear ops")
def test_packed_linear_follows_weight_changes_and_copies():
    model = _model().eval()
    onednn.pack_linears(model)
    layer = model[0]
    assert isinstance(layer, onednn.PackedLinear)
    x = torch.randn(5, 16)
    with torch.no_grad():
        layer(x)  # packs
        layer.weight.mul_(2.0)  # an in-place update (as an optimizer step makes)
        assert torch.allclose(layer(x), torch.nn.functional.linear(x, layer.weight, layer.bias), atol=1e-5)
    twin = copy.deepcopy(model)  # the packed copy is not copied, it is rebuilt
    with torch.no_grad():
        assert torch.allclose(twin(x), model(x), atol=1e-5)


def test_packed_linear_trains():
    model = _model()
    onednn.pack_linears(model)
    model.train()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    x = torch.randn(6, 16)
    before = model[0].weight.detach().clone()
    model(x).pow(2).sum().backward()
    opt.step()
    assert model[0].weight.grad is not None and not torch.equal(model[0].weight, before)
    model.eval()
    with torch.no_grad():  # inference after training sees the new weights
        want = torch.nn.functional.linear(x, model[0].weight, model[0].bias)
        assert torch.allclose(model[0](x), want, atol=1e-5)


def test_mkldnn_switched_off_takes_the_plain_path(monkeypatch):
    model = _model().eval()
    onednn.pack_linears(model)
    x = torch.randn(3, 16)
    monkeypatch.setattr(torch.backends.mkldnn, "enabled", False)
    with torch.inference_mode():
        assert not onednn.available()
        want = torch.nn.functional.linear(x, model[0].weight, model[0].bias)
        assert torch.equal(model[0](x), want)


@pytest.mark.skipif(not onednn.available(), reason="torch without oneDNN linear ops")
@pytest.mark.parametrize("fuses", [True, False])
def test_packed_linear_gelu_equals_gelu_of_linear(monkeypatch, fuses):
    if fuses and not onednn._gelu_fuses():
        pytest.skip("this torch's oneDNN does not fuse GELU")
    monkeypatch.setattr(onednn, "_gelu_fuses", lambda: fuses)
    torch.manual_seed(0)
    weight, bias = torch.randn(48, 16), torch.randn(48)
    x = torch.randn(21, 16) * 3
    with torch.inference_mode():
        got = onednn.packed_linear_gelu(x, onednn.pack_weight(weight), bias)
    assert torch.allclose(got, torch.nn.functional.gelu(torch.nn.functional.linear(x, weight, bias)), atol=1e-5)
