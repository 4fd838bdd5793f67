"""Optional head parts beyond the linear projection (loaded from head.safetensors keys), and
the activation a head may apply after it (``EncoderConfig.head_activation``)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

_ACTIVATIONS = {"tanh": torch.tanh, "relu": F.relu, "gelu": F.gelu, "sigmoid": torch.sigmoid, "silu": F.silu}

MLP_PREFIX = "mlp."


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
