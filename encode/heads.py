"""Optional head parts beyond the linear projection (loaded from head.safetensors keys), and
the activation a head may apply after it (``EncoderConfig.head_activation``)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

_ACTIVATIONS = {"tanh": torch.tanh, "relu": F.relu, "gelu": F.gelu, "sigmoid": torch.sigmoid, "silu": F.silu}

MLP_PREFIX = "mlp."
STEPS_PREFIX = "steps."


class ResidualMLP(torch.nn.Module):
    """x + fc2(gelu(fc1(x))) on the backbone state, before the linear projection.

    fc2 starts at zero, so a fresh MLP leaves the head it wraps unchanged.
    """

    def __init__(self, hidden: int, width: int) -> None:
        super().__init__()
        self.fc1 = torch.nn.Linear(hidden, width)
        self.fc2 = torch.nn.Linear(width, hidden)
        torch.nn.init.zeros_(self.fc2.weight)
        torch.nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(x)))

    @classmethod
    def from_state(cls, state: dict[str, torch.Tensor], hidden: int) -> "ResidualMLP":
        """Build from ``mlp.*`` keys of a head file; raises ValueError when they do not fit."""
        w1 = state.get(MLP_PREFIX + "fc1.weight")
        if w1 is None or w1.ndim != 2 or w1.shape[1] != hidden:
            raise ValueError(f"mlp.fc1.weight must have shape [width, {hidden}]")
        mlp = cls(hidden, int(w1.shape[0]))
        own = {k[len(MLP_PREFIX):]: v.float() for k, v in state.items() if k.startswith(MLP_PREFIX)}
        mlp.load_state_dict(own, strict=True)
        return mlp

    def head_state(self) -> dict[str, torch.Tensor]:
        return {MLP_PREFIX + k: v.detach().cpu().float().contiguous() for k, v in self.state_dict().items()}


def activate(x: torch.Tensor, name: str | None) -> torch.Tensor:
    """``x`` through the named head activation (exact GELU, as torch.nn.GELU()); None: unchanged."""
    return x if name is None else _ACTIVATIONS[name](x)


class DenseSteps(torch.nn.Module):
    """Nonlinear Dense layers before the final projection, as PyLate chains them: step i maps
    x to act_i(W_i x + b_i) + R_i x + r_i (R_i, r_i: its residual, folded with any linear layers
    before it; absent when it has none). Keys ``steps.{i}.weight|bias|residual|residual_bias``;
    the activations are ``EncoderConfig.head_steps``."""

    def __init__(self, state: dict[str, torch.Tensor], activations: tuple[str, ...], hidden: int) -> None:
        super().__init__()
        self.activations = tuple(activations)
        self.params = torch.nn.ParameterDict()
        width = hidden
        for i in range(len(self.activations)):
            w = state.get(f"{STEPS_PREFIX}{i}.weight")
            if w is None or w.ndim != 2 or w.shape[1] != width:
                raise ValueError(f"{STEPS_PREFIX}{i}.weight must have shape [out, {width}]")
            shapes = {"weight": tuple(w.shape), "bias": (w.shape[0],), "residual": tuple(w.shape),
                      "residual_bias": (w.shape[0],)}
            for part, shape in shapes.items():
                value = state.get(f"{STEPS_PREFIX}{i}.{part}")
                if value is not None:
                    if tuple(value.shape) != shape:
                        raise ValueError(f"{STEPS_PREFIX}{i}.{part} must have shape {list(shape)}")
                    self.params[f"{i}_{part}"] = torch.nn.Parameter(value.float(), requires_grad=False)
            width = int(w.shape[0])
        unknown = sorted(set(state) - {f"{STEPS_PREFIX}{k.replace('_', '.', 1)}" for k in self.params})
        if unknown:
            raise ValueError(f"unknown keys {', '.join(unknown[:3])} for {len(self.activations)} step(s)")
        self.out_features = width

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.params
        for i, name in enumerate(self.activations):
            y = activate(F.linear(x, p[f"{i}_weight"], p.get(f"{i}_bias")), name)
            if f"{i}_residual" in p:
                y = y + F.linear(x, p[f"{i}_residual"], p.get(f"{i}_residual_bias"))
            x = y
        return x

    def head_state(self) -> dict[str, torch.Tensor]:
        return {f"{STEPS_PREFIX}{k.replace('_', '.', 1)}": v.detach().cpu().float().contiguous()
                for k, v in self.params.items()}
