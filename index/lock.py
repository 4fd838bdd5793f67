"""The single-writer lock: INDEX/.lock, taken without waiting."""
from __future__ import annotations

from pathlib import Path

from xtrieve.errors import IndexLockedError

LOCK_FILE = ".lock"


class WriterLock:
    """Context manager around a non-blocking file lock; a second writer gets IndexLockedError."""

    def __init__(self, root: Path) -> None:
        from filelock import FileLock

        self.root = root
        self._lock = FileLock(str(root / LOCK_FILE), timeout=0)

    def __enter__(self) -> "WriterLock":
        from filelock import Timeout

        try:
            self._lock.acquire(timeout=0)
        except Timeout:
            raise IndexLockedError(f"index {self.root} is locked by another writer") from None
        return self

    def __exit__(self, *exc: object) -> None:
        self._lock.release()
