"""FAISS, always imported after torch.

The faiss-cpu and torch wheels each bundle their own libgomp. When FAISS's copy is loaded
first, one scifact query took 4x longer on 2 cores (8.0 vs 2.0 ms p50 for the same index
and the same code): the two OpenMP runtimes' worker threads fight over the cores. With
torch imported first the cost is gone, so every xtrieve module gets FAISS from here.
"""
from __future__ import annotations

import logging
import sys

log = logging.getLogger(__name__)


def load_faiss():
    """The faiss module, with torch imported before it."""
    if "faiss" in sys.modules and "torch" not in sys.modules:
        log.warning("faiss was imported before torch: their two OpenMP runtimes can make searches "
                    "several times slower; import torch (or xtrieve) before faiss")
    import torch  # noqa: F401  (must be loaded before faiss, see the module docstring)
    import faiss

    return faiss
