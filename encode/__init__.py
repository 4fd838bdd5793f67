"""Encoder stage: text to L2-normalised token vectors (transformer + linear head)."""
from __future__ import annotations

from xtrieve.encode.pooling import pool_document, pool_documents

__all__ = ["pool_document", "pool_documents"]
