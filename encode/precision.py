"""The arithmetic an Encoder's backbone runs in: float32 (exact), or bfloat16.

float32, the default, gives the vectors the model's own library gives. ``"bfloat16"`` runs
the backbone's matrix products in bfloat16 with float32 sums; on CPUs with bfloat16 units
(AMX, AVX512-BF16) that halves the encoding time of a build and takes ~40% off a query's:

- A BERT backbone (``xtrieve.encode.lean_bert``) runs every batch, queries and documents,
  with a bfloat16 copy of its weights made once (packed for oneDNN on a query's few rows);
  attention, residuals and norms stay float32.
- Other backbones on the CPU run document batches of more than ``BFLOAT16_MIN_TOKENS`` tokens
  under torch autocast, and queries in float32 (autocast, which casts the weights on every
  call, measured slower on a query's few rows: 12.9 against 10.1 ms); on a GPU every batch
  runs under autocast.

The head, pooling and normalisation stay float32. Vectors keep a cosine of ~0.99998 with
float32's on average (scifact documents, default model).
Measured on the Intel Xeon 2-core VM (AMX), `xtrieve eval` with the default model, bfloat16
then float32, one run after the other (2026-11-30): scifact built in 142 s instead of 244 s,
nDCG@10 72.57 against 72.38, search p50 from text 8.6 against 11.9 ms (p95 16.4 / 20.1);
nfcorpus 103 s instead of 178 s, 35.94 against 35.99, p50 6.3 against 8.0 ms; peak RSS
1.8-1.9 GB against 1.5-1.6 GB. Training (``TrainConfig.precision``) caches states this way
(measured when only documents took bfloat16: scifact, 100 steps, states cached in 47 s
instead of 105 s, and the two heads scored 76.85 and 76.83 nDCG@10, indexes built alike).

Whatever the caller's own ``torch.autocast`` says, the encoder computes in its precision, so
one model always gives one index's vectors the same way.
"""
from __future__ import annotations

import contextlib
import functools
import logging
from typing import Iterator

import torch

from xtrieve.encode.lean_bert import LEAN_MAX_ROWS
from xtrieve.errors import ConfigError

log = logging.getLogger(__name__)

PRECISIONS = ("float32", "bfloat16")
# through transformers' forward, document batches with at most this many tokens (padded) keep float32
BFLOAT16_MIN_TOKENS = LEAN_MAX_ROWS


def check_precision(precision: object) -> str:
    """``precision`` if it is one of PRECISIONS, else a ConfigError naming them."""
    if not isinstance(precision, str) or precision not in PRECISIONS:
        raise ConfigError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


@functools.lru_cache(maxsize=None)
def cpu_has_bfloat16() -> bool:
    """Probed once: whether this CPU runs bfloat16 products natively (oneDNN says so)."""
    try:
        return bool(torch.backends.mkldnn.is_available() and torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError) as exc:
        log.debug("cannot tell whether the CPU has bfloat16 units (%s)", exc)
        return False


def check_precision_for(precision: str, device: torch.device) -> None:
    """ConfigError when bfloat16 is asked of a GPU without it (T4, V100: every batch would fail);
    a warning when asked of a CPU without bfloat16 units (it would be slower)."""
    if precision == "bfloat16" and device.type == "cuda" and torch.cuda.get_device_capability(device) < (8, 0):
        raise ConfigError(f"precision 'bfloat16': the GPU {device} has no bfloat16 support; use 'float32'")
    if precision == "bfloat16" and device.type == "cpu" and not cpu_has_bfloat16():
        log.warning("this CPU has no bfloat16 units: precision='bfloat16' will encode slower than float32")


@contextlib.contextmanager
def exact(device: torch.device) -> Iterator[None]:
    """A context in which torch autocast is off on the CPU and on ``device``."""
    with contextlib.ExitStack() as stack:
        for device_type in dict.fromkeys(("cpu", device.type)):
            try:
                off = torch.autocast(device_type, enabled=False)
            except RuntimeError:  # no autocast for this device in this torch (mps before 2.5): none to turn off
                continue
            stack.enter_context(off)
        yield


def backbone_context(precision: str, device: torch.device, is_query: bool,
                     n_tokens: int) -> contextlib.AbstractContextManager:
    """The autocast a backbone run by transformers' forward (not the lean pass) runs under for a
    batch of ``n_tokens`` (padded) tokens: every batch on a GPU; on the CPU, document batches
    of more than BFLOAT16_MIN_TOKENS."""
    if precision == "bfloat16" and (device.type != "cpu" or not is_query and n_tokens > BFLOAT16_MIN_TOKENS):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()
