"""A lean inference forward pass for plain BERT backbones.

transformers' ``BertModel`` spends ~3 ms of a ~9.5 ms MiniLM query forward in module and
mask plumbing around its 37 matrix products (2 AMD EPYC cores, scifact queries of ~23
tokens). This pass runs the same arithmetic with the query, key and value projections fused
into one product per layer and no pooler; on at most ``LEAN_MAX_ROWS`` rows (one query's
tokens) the products use weights packed once for oneDNN: 9.5 -> 6.3 ms p50; fusing the GELU into
the up-projection's product then saved ~0.3 ms of ~7.7 (Intel Xeon). Hidden states equal
transformers' up to float32 rounding (~3e-6).

Two ways in: :meth:`LeanBert.of_model` serves a transformers ``BertModel`` on few rows and
hands everything else (gradients, hooks, big batches) back to the model's own forward;
:meth:`LeanBert.from_state` runs a checkpoint's weights with no transformers model at all
(see ``xtrieve.encode.bert_files``), for any number of rows.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Any, Callable

import torch
import torch.nn.functional as F

from xtrieve import onednn

log = logging.getLogger(__name__)

LEAN_MAX_ROWS = onednn.PACKED_MAX_ROWS


def plain_bert_config(get: Callable[[str, Any], Any]) -> bool:
    """Whether a BERT config, read through ``get(key, default)``, is one this pass reproduces:
    exact GELU, absolute positions, an encoder without cross-attention."""
    try:
        heads_divide = int(get("hidden_size", 0)) % int(get("num_attention_heads", 0)) == 0
    except (TypeError, ValueError, ZeroDivisionError):
        return False
    return (
        get("model_type", None) == "bert" and get("hidden_act", None) == "gelu"
        and get("position_embedding_type", "absolute") == "absolute"
        and not get("is_decoder", False) and not get("add_cross_attention", False) and heads_divide
    )


def supports(model: torch.nn.Module) -> bool:
    """Whether ``model`` is a plain transformers BertModel this pass reproduces."""
    config = getattr(model, "config", None)
    return (
        type(model).__name__ == "BertModel" and config is not None
        and plain_bert_config(lambda key, default: getattr(config, key, default)) and onednn.available()
    )


@dataclasses.dataclass(frozen=True)
class BertShape:
    """The sizes the forward pass needs from a BERT config."""

    hidden: int
    heads: int
    layers: int
    eps: float

    @classmethod
    def read(cls, get: Callable[[str, Any], Any]) -> "BertShape":
        return cls(int(get("hidden_size", 0)), int(get("num_attention_heads", 0)),
                   int(get("num_hidden_layers", 0)), float(get("layer_norm_eps", 1e-12)))

    def parameter_shapes(self, config: dict[str, Any]) -> dict[str, tuple[int, ...]]:
        """Every weight the forward reads, under transformers' BertModel state-dict names."""
        width, inner = self.hidden, int(config.get("intermediate_size", 4 * self.hidden))
        shapes: dict[str, tuple[int, ...]] = {
            "embeddings.word_embeddings.weight": (int(config.get("vocab_size", 0)), width),
            "embeddings.position_embeddings.weight": (int(config.get("max_position_embeddings", 512)), width),
            "embeddings.token_type_embeddings.weight": (int(config.get("type_vocab_size", 2)), width),
            "embeddings.LayerNorm.weight": (width,), "embeddings.LayerNorm.bias": (width,),
        }
        for i in range(self.layers):
            p = f"encoder.layer.{i}."
            for name in ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense"):
                shapes[p + name + ".weight"], shapes[p + name + ".bias"] = (width, width), (width,)
            shapes[p + "intermediate.dense.weight"], shapes[p + "intermediate.dense.bias"] = (inner, width), (inner,)
            shapes[p + "output.dense.weight"], shapes[p + "output.dense.bias"] = (width, inner), (width,)
            for norm in ("attention.output.LayerNorm", "output.LayerNorm"):
                shapes[p + norm + ".weight"], shapes[p + norm + ".bias"] = (width,), (width,)
        return shapes

    def wrong_weight(self, state: dict[str, torch.Tensor], config: dict[str, Any]) -> str | None:
        """Why ``state`` cannot run under ``config`` (a weight missing or of another shape), or None."""
        for name, expected in self.parameter_shapes(config).items():
            tensor = state.get(name)
            if tensor is None or tuple(tensor.shape) != expected:
                found = "missing" if tensor is None else f"shape {tuple(tensor.shape)}"
                return f"weight {name} is {found}, the config needs {expected}"
        return None


def _linear_gelu(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    # in place: this [tokens, 4 x hidden] product is a document batch's widest activation, and a
    # second copy doubled the memory freed (and faulted in again) per layer
    return torch.ops.aten.gelu_(F.linear(x, weight, bias))


class _Products:
    """One layer's four weights in one form: float32 or bfloat16, packed for oneDNN or plain.

    bfloat16 products take bfloat16 inputs and accumulate in float32 (oneDNN), and their
    outputs return to float32 for the attention, residuals and norms; the GELU output stays
    bfloat16, since only the down-projection reads it.
    """

    def __init__(self, layer: "_Layer", dtype: torch.dtype, packed: bool) -> None:
        self.dtype, self.packed = dtype, packed
        weights = [w.to(dtype) for w in (layer.qkv, layer.out, layer.up, layer.down)]
        self.weights = [onednn.pack_weight(w) for w in weights] if packed else weights
        self.biases = [b.to(dtype) for b in (layer.qkv_bias, layer.out_bias, layer.up_bias, layer.down_bias)]

    def linear(self, x: torch.Tensor, i: int) -> torch.Tensor:
        x = x.to(self.dtype)
        if self.packed:
            y = onednn.packed_linear(x, self.weights[i], self.biases[i])
        else:
            y = F.linear(x, self.weights[i], self.biases[i])
        return y.float()

    def linear_gelu(self, x: torch.Tensor, i: int) -> torch.Tensor:
        x = x.to(self.dtype)
        if self.packed:
            return onednn.packed_linear_gelu(x, self.weights[i], self.biases[i])
        return _linear_gelu(x, self.weights[i], self.biases[i])


QKV, OUT, UP, DOWN = range(4)


class _Layer:
    """One encoder layer's weights: fused QKV, products (packed when oneDNN is there), norms."""

    def __init__(self, params: dict[str, torch.Tensor], i: int, pack: bool) -> None:
        p = {name[len(f"encoder.layer.{i}."):]: t.detach() for name, t in params.items()
             if name.startswith(f"encoder.layer.{i}.")}
        qkv = ("attention.self.query", "attention.self.key", "attention.self.value")
        self.qkv = torch.cat([p[n + ".weight"] for n in qkv])
        self.qkv_bias = torch.cat([p[n + ".bias"] for n in qkv])
        self.out, self.out_bias = p["attention.output.dense.weight"], p["attention.output.dense.bias"]
        self.norm1 = (p["attention.output.LayerNorm.weight"], p["attention.output.LayerNorm.bias"])
        self.up, self.up_bias = p["intermediate.dense.weight"], p["intermediate.dense.bias"]
        self.down, self.down_bias = p["output.dense.weight"], p["output.dense.bias"]
        self.norm2 = (p["output.LayerNorm.weight"], p["output.LayerNorm.bias"])
        self.pack = pack
        self._forms: dict[tuple[torch.dtype, bool], _Products] = {}  # made on first use

    def products(self, dtype: torch.dtype, few_rows: bool) -> _Products:
        """The products in ``dtype``, packed for few rows when oneDNN is there (and packs bfloat16,
        for bfloat16: some CPUs lack the instructions)."""
        key = (dtype, few_rows and self.pack and (dtype is torch.float32 or onednn.packs_bfloat16()))
        form = self._forms.get(key)
        if form is None:  # two threads may both make it: the same values, one kept
            form = self._forms[key] = _Products(self, *key)
        return form


class LeanBert:
    """Inference-only BERT forward over a set of weights named as in transformers' state dict.

    The fused and packed copies are rebuilt when a weight changes in place or moves (a
    training step, ``load_state_dict``, ``to``), checked on every call. Bound to a model
    (:meth:`of_model`), a model with forward hooks on any module takes its own forward, so
    the hooks run.
    """

    def __init__(self, params: dict[str, torch.Tensor], shape: BertShape, model: torch.nn.Module | None = None) -> None:
        self.shape = shape
        self.model = model
        self._params = params
        self._modules = list(model.modules()) if model is not None else []
        self._built: tuple[tuple, list[_Layer]] | None = None  # (weights key, layers), swapped as one

    @classmethod
    def of_model(cls, model: torch.nn.Module) -> "LeanBert":
        """Serve a transformers BertModel's few-row inference; it keeps its own weights."""
        if not supports(model):
            raise ValueError(f"{type(model).__name__} is not a BertModel the lean pass reproduces")
        config = model.config
        return cls(dict(model.named_parameters()), BertShape.read(lambda k, d: getattr(config, k, d)), model)

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], config: dict[str, Any]) -> "LeanBert":
        """Run a checkpoint's state dict (BertModel names) under a config.json dict, on the CPU."""
        if not plain_bert_config(config.get):
            raise ValueError("the config is not a plain BERT encoder the lean pass reproduces")
        shape = BertShape.read(config.get)
        wrong = shape.wrong_weight(state, config)
        if wrong is not None:
            raise ValueError(wrong)
        return cls({name: state[name].detach().float() for name in shape.parameter_shapes(config)}, shape)

    def handles(self, input_ids: torch.Tensor, bfloat16: bool = False) -> bool:
        """Whether this input goes through the lean pass. Bound to a model: few rows (any number
        for ``bfloat16`` products, so that a text gets them alone and in a batch), float32
        weights on the CPU, no gradients, eval mode, no hooks, oneDNN switched on. From a state
        dict: any CPU input without gradients."""
        if input_ids.device.type != "cpu" or torch.is_grad_enabled():
            return False
        if self.model is None:
            return True
        weight = next(iter(self._params.values()))
        return ((bfloat16 or input_ids.numel() <= LEAN_MAX_ROWS) and weight.dtype is torch.float32
                and weight.device.type == "cpu" and not self.model.training and torch.backends.mkldnn.enabled
                and not any(m._forward_hooks or m._forward_pre_hooks for m in self._modules))

    def _layers(self) -> list[_Layer]:
        key = tuple((p.data_ptr(), p._version) for p in self._params.values())
        built = self._built
        if built is None or built[0] != key:
            pack = onednn.available()
            built = (key, [_Layer(self._params, i, pack) for i in range(self.shape.layers)])
            self._built = built
        return built[1]

    def __call__(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, bfloat16: bool = False) -> torch.Tensor:
        """Last hidden states [batch, length, hidden], as ``model(...).last_hidden_state``.
        ``bfloat16``: the matrix products in bfloat16 (a copy of the weights made on first use),
        everything else in float32."""
        layers = self._layers()
        p, (width, heads, eps) = self._params, (self.shape.hidden, self.shape.heads, self.shape.eps)
        batch, length = input_ids.shape
        x = (p["embeddings.word_embeddings.weight"][input_ids] + p["embeddings.position_embeddings.weight"][:length]
             + p["embeddings.token_type_embeddings.weight"][0])
        x = F.layer_norm(x, (width,), p["embeddings.LayerNorm.weight"], p["embeddings.LayerNorm.bias"], eps)
        x = x.reshape(batch * length, width)
        # padded keys are masked out; an unpadded batch needs no mask
        mask = None if bool(attention_mask.all()) else attention_mask.bool()[:, None, None, :]
        few_rows = input_ids.numel() <= LEAN_MAX_ROWS and torch.backends.mkldnn.enabled
        dtype = torch.bfloat16 if bfloat16 else torch.float32
        for layer in layers:
            products = layer.products(dtype, few_rows)
            qkv = products.linear(x, QKV)
            q, k, v = qkv.view(batch, length, 3, heads, width // heads).permute(2, 0, 3, 1, 4)
            att = F.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2).reshape(batch * length, width)
            x = F.layer_norm(products.linear(att, OUT) + x, (width,), *layer.norm1, eps)
            up = products.linear_gelu(x, UP)
            x = F.layer_norm(products.linear(up, DOWN) + x, (width,), *layer.norm2, eps)
        return x.view(batch, length, width)
