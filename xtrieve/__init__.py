"""xtrieve: multi-vector (late-interaction) retrieval.

The public API is re-exported lazily here so that ``import xtrieve`` stays cheap.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from xtrieve.config import EncoderConfig, IndexConfig, SearchConfig
from xtrieve.errors import (
    ConfigError,
    FilterError,
    IndexFormatError,
    IndexLockedError,
    InputError,
    ModelLoadError,
    ModelMismatchError,
    XtrieveError,
)
from xtrieve.types import Encoded, Hit, IndexInfo

__version__ = "0.1.0"

_LAZY = {
    "Encoder": "xtrieve.encode.encoder",
    "Index": "xtrieve.retrieve.api",
    "rerank": "xtrieve.retrieve.rerank",
}

if TYPE_CHECKING:  # pragma: no cover
    from xtrieve.encode.encoder import Encoder
    from xtrieve.retrieve.api import Index
    from xtrieve.retrieve.rerank import rerank


if not TYPE_CHECKING:  # (seen by type checkers, it would let any misspelt name through as Any)
    def __getattr__(name: str) -> Any:
        module = _LAZY.get(name)
        if module is None:
            raise AttributeError(f"module 'xtrieve' has no attribute {name!r}")
        import importlib

        return getattr(importlib.import_module(module), name)


def __dir__() -> list[str]:  # the lazy names too, for completion in editors and shells
    return sorted(set(globals()) | set(_LAZY))


__all__ = [
    "ConfigError", "Encoded", "Encoder", "EncoderConfig", "FilterError", "Hit", "Index", "IndexConfig",
    "IndexFormatError", "IndexInfo", "IndexLockedError", "InputError", "ModelLoadError",
    "ModelMismatchError", "SearchConfig", "XtrieveError", "__version__", "rerank",
]
