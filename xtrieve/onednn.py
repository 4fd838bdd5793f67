"""Linear layers on few rows through torch's oneDNN (mkldnn) kernels with packed weights.

One query is ~20 rows through each of a transformer's linear layers, a shape where MKL's
fp32 kernel reads its weights poorly; oneDNN with the weight packed once into its blocked
layout does better. Measured on 2 AMD EPYC cores (torch 2.13 with MKL), one scifact query
through the default MiniLM encoder, separate processes taking turns: 11.5 -> 11.0 ms p50
(six layers alone, weights in a loop: 6.9 -> 5.5 ms). From ~256 rows on MKL is as fast or
faster, so larger inputs (documents, query batches) keep ``torch.nn.functional.linear``.
Results equal it up to float32 rounding (the summation order differs). The oneDNN ops have
no autograd kernels: training and anything needing gradients take the plain path, as does a
torch build without them or with ``torch.backends.mkldnn.enabled`` off.

BERT backbones go further through ``xtrieve.encode.lean_bert``, which uses these packed
products (:func:`pack_weight`, :func:`packed_linear`) with the attention projections fused.

(A plain ``x @ w.T`` through oneDNN for the search's matmuls measured no faster than torch's
own at the process level, so the search stage does not use this module.)
"""
from __future__ import annotations

import functools
import logging

import torch

log = logging.getLogger(__name__)

# inputs with more rows than this use torch's default kernels (see the module docstring)
PACKED_MAX_ROWS = 128


def available() -> bool:
    """Whether oneDNN linear ops work in this torch and ``torch.backends.mkldnn.enabled`` is on."""
    return bool(torch.backends.mkldnn.enabled) and _ops_work()


@functools.lru_cache(maxsize=None)
def _ops_work() -> bool:
    """Probed once: the oneDNN linear ops exist and give the right answer."""
    if not torch.backends.mkldnn.is_available():
        return False
    try:
        ops = torch.ops.mkldnn
        packed = ops._reorder_linear_weight(torch.ones(2, 3), 1)
        out = ops._linear_pointwise(torch.ones(1, 3), packed, None, "none", [], "")
        return out.shape == (1, 2) and float(out[0, 0]) == 3.0
    except (AttributeError, RuntimeError, NotImplementedError, TypeError) as exc:
        log.debug("oneDNN linear ops unavailable (%s): linear layers use torch's default kernels", exc)
        return False


@functools.lru_cache(maxsize=None)
def packs_bfloat16() -> bool:
    """Probed once: oneDNN packs and multiplies bfloat16 weights on this CPU (it needs AVX512-BW/
    VL/DQ or AVX-NE-CONVERT); without that, bfloat16 products run through torch's own kernels."""
    if not available():
        return False
    try:
        w = torch.ones(2, 3, dtype=torch.bfloat16)
        out = packed_linear(torch.ones(1, 3, dtype=torch.bfloat16), pack_weight(w), None)
        return out.shape == (1, 2) and float(out[0, 0]) == 3.0
    except (AttributeError, RuntimeError, NotImplementedError, TypeError) as exc:
        log.debug("oneDNN cannot pack bfloat16 weights here (%s)", exc)
        return False


def pack_weight(weight: torch.Tensor) -> torch.Tensor:
    """``weight`` [out, in] reordered once into oneDNN's blocked layout for :func:`packed_linear`."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), PACKED_MAX_ROWS // 4)


def packed_linear(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``x @ weight.T + bias`` through oneDNN, with the weight from :func:`pack_weight`."""
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")


def packed_linear_gelu(x: torch.Tensor, packed: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``gelu(x @ weight.T + bias)`` (exact, erf GELU) with the GELU fused into oneDNN's product
    when this torch does that right (one pass less: ~45 us of a ~200 us MiniLM up-projection on
    one query), else as two steps."""
    if _gelu_fuses():
        return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "gelu", [], "none")
    return torch.nn.functional.gelu(packed_linear(x, packed, bias))


@functools.lru_cache(maxsize=None)
def _gelu_fuses() -> bool:
    """Probed once: oneDNN's fused erf GELU gives torch's GELU up to float32 rounding."""
    try:
        x = torch.linspace(-6.0, 6.0, 97)[:, None]
        packed = pack_weight(torch.ones(1, 1))
        fused = torch.ops.mkldnn._linear_pointwise(x, packed, None, "gelu", [], "none")
        return bool(torch.allclose(fused, torch.nn.functional.gelu(x), rtol=1e-6, atol=1e-6))
    except (AttributeError, RuntimeError, NotImplementedError, TypeError) as exc:
        log.debug("oneDNN cannot fuse GELU (%s): it runs as a separate step", exc)
        return False


class PackedLinear(torch.nn.Linear):
    """An ``nn.Linear`` that, for inference on few rows, runs oneDNN with its weight packed once.

    Same parameters and state_dict as the Linear it replaces; the packed copy is rebuilt when
    the weight changes (training steps, ``load_state_dict``) and never saved or deep-copied.
    Training, gradients, other devices and dtypes, and inputs over PACKED_MAX_ROWS rows use
    ``torch.nn.functional.linear``.
    """

    @classmethod
    def replacing(cls, linear: torch.nn.Linear) -> "PackedLinear":
        new = cls(linear.in_features, linear.out_features, bias=linear.bias is not None, device="meta")
        new.weight = linear.weight
        new.bias = linear.bias
        new.train(linear.training)
        return new

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._pack = _PackCache()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # the checks are kept cheap: this runs ~40 times per query
        few_rows = (not self.training and not torch.is_grad_enabled() and x.dtype is torch.float32
                    and x.device.type == "cpu" and 0 < x.numel() <= PACKED_MAX_ROWS * self.in_features)
        packed = self._pack.get(self.weight) if few_rows and torch.backends.mkldnn.enabled else None
        if packed is None:
            return torch.nn.functional.linear(x, self.weight, self.bias)
        return packed_linear(x, packed, self.bias)


class _PackCache:
    """The packed weight, keyed by the weight's storage and version counter."""

    def __init__(self) -> None:
        self._entry: tuple[tuple, torch.Tensor] | None = None  # (key, packed), swapped as one

    def get(self, weight: torch.Tensor) -> torch.Tensor | None:
        """The packed weight (None when it cannot be packed: no oneDNN, not a float32 CPU tensor)."""
        key = (weight.data_ptr(), weight._version)
        entry = self._entry
        if entry is None or entry[0] != key:
            if not (available() and weight.dtype is torch.float32 and weight.device.type == "cpu"):
                return None  # not remembered: oneDNN may be switched back on
            entry = (key, pack_weight(weight))
            self._entry = entry
        return entry[1]

    def __deepcopy__(self, memo) -> "_PackCache":  # oneDNN's opaque tensors cannot be copied
        return _PackCache()


def pack_linears(module: torch.nn.Module) -> int:
    """Replace every plain ``nn.Linear`` inside ``module`` by a PackedLinear sharing its
    parameters; returns how many were replaced (0 when oneDNN is unavailable)."""
    if not available():
        return 0
    n = 0
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Linear:
                setattr(parent, name, PackedLinear.replacing(child))
                n += 1
    return n
