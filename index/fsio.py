"""Small filesystem helpers: fsync, atomic replace, checksums, safe relative paths, Arrow files."""
from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
import time
from pathlib import Path

from xtrieve.errors import IndexFormatError

log = logging.getLogger(__name__)

HASH_CHUNK = 1 << 22
# Windows refuses to replace a file another process holds open (a reader reading manifest.json
# for a moment): the replace is tried again for up to about this many seconds
REPLACE_RETRY_S = 2.0 if os.name == "nt" else 0.0


def fsync_file(path: Path) -> None:
    """Flush one file's data to disk."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: Path) -> None:
    """Flush a folder's entries (new names, renames) to disk."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # platforms without directory fds
        return
    try:
        os.fsync(fd)
    except OSError as exc:  # some file systems cannot fsync a folder (EINVAL); others failed to write
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            log.warning("fsync of folder %s failed (%s): its latest changes may not survive a crash", path, exc)
    finally:
        os.close(fd)


def make_room(path: Path) -> Path:
    """``path``, with whatever was there removed: a new file is written where a leftover or a
    link (planted in a folder from elsewhere) was, never through the link."""
    if path.is_symlink() or path.is_file():
        path.unlink()
    return path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to a temp file, fsync it, then rename it over ``path``."""
    tmp = make_room(path.with_name(f"{path.name}.tmp-{os.getpid()}"))
    with open(tmp, "xb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    _replace(tmp, path)
    fsync_dir(path.parent)


def _replace(src: Path, dst: Path) -> None:
    """``os.replace``, tried again for a while when refused (see REPLACE_RETRY_S)."""
    delay, waited = 0.005, 0.0
    while True:
        try:
            os.replace(src, dst)
            return
        except PermissionError:
            if waited >= REPLACE_RETRY_S:
                raise
            time.sleep(delay)
            waited += delay
            delay = min(2 * delay, 0.25)


def regular(path: Path) -> Path:
    """``path``, or IndexFormatError when it is there but no regular file: reading a FIFO (a
    tarball can carry one) would wait forever, a device would never end."""
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return path  # (missing or unreadable: the caller's own open says so)
    if not stat.S_ISREG(mode):
        raise IndexFormatError(f"{path} is not a regular file")
    return path


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's content."""
    h = hashlib.sha256()
    with open(regular(path), "rb") as f:
        while chunk := f.read(HASH_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def safe_join(root: Path, rel: str, what: str = "path") -> Path:
    """``root / rel`` for a relative path that names no place outside ``root`` (no absolute path,
    drive or ".."), else IndexFormatError."""
    if not isinstance(rel, str) or not rel or "\x00" in rel:
        raise IndexFormatError(f"invalid {what} {rel!r} in the manifest of {root}")
    p = Path(rel)
    if p.is_absolute() or rel.startswith(("/", "\\")) or ".." in p.parts or (p.drive if hasattr(p, "drive") else ""):
        raise IndexFormatError(f"manifest of {root} names a {what} outside the index folder: {rel!r}")
    # (not resolved: links the operator put inside the folder, such as a segment kept on another
    # disk or a tree of links to a cache, are followed as the folder's own files)
    return root / p


def read_arrow_file(path: Path, what: str):
    """An Arrow IPC file's table, memory-mapped and fully validated (offsets that point past the
    data would be read out of bounds: a crash); IndexFormatError naming the ``what`` and path
    when it does not parse. A missing or unreadable file raises as the OS says (a missing one
    lets a reader whose snapshot a writer replaced retry)."""
    import pyarrow as pa

    source = pa.memory_map(str(regular(path)), "r")
    try:
        table = pa.ipc.open_file(source).read_all()
        table.validate(full=True)  # (~1 ms per MB of text; checksums do not show a crafted file consistent)
        return table
    except (pa.ArrowInvalid, OSError) as exc:  # a truncated footer reads out of bounds (OSError)
        raise IndexFormatError(f"corrupt {what} {path}: {exc}") from None
