"""The top transformer layers of a backbone, run on cached inputs (CPU-friendly fine-tuning).

Training only the last few layers lets ``xtrieve train`` cache, once, the hidden states
that enter them (all positions, not only the output ones) and run just those layers per
step. The trained layers ship as a small *backbone overlay*: their weights under the
backbone's own state-dict names, loaded on top of the unchanged backbone.
"""
from __future__ import annotations

import copy

import torch

OVERLAY_FILE = "backbone_overlay.safetensors"


def encoder_layers(backbone) -> torch.nn.ModuleList:
    """The transformer blocks of a BERT-like backbone (``encoder.layer``)."""
    layers = getattr(getattr(backbone, "encoder", None), "layer", None)
    if not isinstance(layers, torch.nn.ModuleList):
        raise ValueError(f"{type(backbone).__name__} has no encoder.layer blocks: cannot train its top layers")
    return layers


def attention_mask_4d(config, hidden: torch.Tensor, attended: torch.Tensor):
    """The mask a layer expects for a [B, T] attended-positions mask, as the backbone builds it."""
    try:
        from transformers.masking_utils import create_bidirectional_mask
    except ImportError:  # transformers < 4.56: additive extended mask
        return (1.0 - attended[:, None, None, :].to(hidden.dtype)) * torch.finfo(hidden.dtype).min
    return create_bidirectional_mask(config=config, inputs_embeds=hidden, attention_mask=attended.long())


class TopLayers(torch.nn.Module):
    """Copies of the last ``n`` blocks of a backbone; forward(hidden, attended) -> hidden."""

    def __init__(self, backbone, n: int) -> None:
        super().__init__()
        blocks = encoder_layers(backbone)
        if not 1 <= n <= len(blocks):
            raise ValueError(f"can train 1 to {len(blocks)} top layers of this backbone, not {n}")
        self.config = backbone.config
        self.first = len(blocks) - n
        self.layers = torch.nn.ModuleList(copy.deepcopy(b) for b in blocks[self.first:])
        self.layers.requires_grad_(True)

    def forward(self, hidden: torch.Tensor, attended: torch.Tensor) -> torch.Tensor:
        mask = attention_mask_4d(self.config, hidden, attended)
        for block in self.layers:
            out = block(hidden, mask)
            hidden = out[0] if isinstance(out, tuple) else out
        return hidden

    def overlay_state(self) -> dict[str, torch.Tensor]:
        """The trained blocks under the backbone's state-dict names."""
        return {f"encoder.layer.{self.first + i}.{k}": v.detach().cpu().float().contiguous()
                for i, block in enumerate(self.layers) for k, v in block.state_dict().items()}

    def copy_into(self, backbone) -> None:
        blocks = encoder_layers(backbone)
        with torch.no_grad():
            for i, block in enumerate(self.layers):
                blocks[self.first + i].load_state_dict(block.state_dict())


def capture_layer_input(backbone, layer_no: int, sink: list):
    """A hook handle that appends the hidden states entering block ``layer_no`` to ``sink``."""
    def hook(_module, args, kwargs):
        sink.append(args[0] if args else kwargs["hidden_states"])

    return encoder_layers(backbone)[layer_no].register_forward_pre_hook(hook, with_kwargs=True)
