"""The single-writer lock: INDEX/.lock, taken at once or within a wait."""
from __future__ import annotations

import errno
import math
import numbers
import os
import threading
from pathlib import Path
from typing import Any

from xtrieve.errors import IndexLockedError, InputError

LOCK_FILE = ".lock"


# the index folders whose writer lock each thread holds: a second writer of the same index in
# the thread that holds it (a documents generator that writes to it) could only wait for itself
_held = threading.local()


def check_wait(wait: Any) -> float:
    """``wait`` as seconds to wait for the lock: a number >= 0 (``math.inf``: as long as it takes)."""
    if isinstance(wait, bool) or not isinstance(wait, numbers.Real) or math.isnan(wait) or wait < 0:
        raise InputError(f"wait must be a number of seconds >= 0, got {wait!r:.40}")
    return float(wait)


class WriterLock:
    """Context manager around a file lock; a second writer waits up to ``wait`` seconds (0: not
    at all), then gets IndexLockedError."""

    def __init__(self, root: Path, wait: float = 0.0) -> None:
        from filelock import FileLock

        self.root = root
        self.wait = check_wait(wait)
        self._lock = FileLock(str(root / LOCK_FILE), timeout=0)

    def __enter__(self) -> "WriterLock":
        from filelock import Timeout

        held = _held.__dict__.setdefault("roots", set())
        key = os.path.realpath(self.root)
        if key in held:
            raise IndexLockedError(f"index {self.root} is being written by this same thread (a write inside another "
                                   "write of the same index, e.g. from the documents it is adding)")
        try:
            self._lock.acquire(timeout=-1 if math.isinf(self.wait) else self.wait)
        except Timeout:
            advice = f" (waited {self.wait:g} s)" if self.wait else "; give wait= (--wait SECONDS) to wait for it"
            raise IndexLockedError(f"index {self.root} is locked by another writer{advice}") from None
        except OSError as exc:
            if exc.errno not in (errno.EACCES, errno.EPERM, errno.EROFS, getattr(errno, "ELOOP", errno.EACCES)):
                raise
            raise InputError(f"index {self.root} cannot be written here: its writer lock {self.root / LOCK_FILE} "
                             f"cannot be made ({exc.strerror}); it can still be opened and searched") from None
        held.add(key)
        self._key = key
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._lock.release()  # first: an interrupt between the two must not leave the file lock held
        finally:
            _held.__dict__.setdefault("roots", set()).discard(self._key)
