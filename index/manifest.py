"""manifest.json: the commit point of an index. Read, validate and write it atomically."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import re
from pathlib import Path
from typing import Any

from xtrieve.config import IndexConfig
from xtrieve.errors import ConfigError, IndexFormatError
from xtrieve.index.fsio import atomic_write_bytes, regular, safe_join

FORMAT = "xtrieve-index"
# 2: a segment built from the IVF template leaves the template's centroids out of its tokens.faiss
# (an xtrieve that reads only version 1 failed on such a file with a raw FAISS error)
# 3: an exact Flat tokens.faiss is written empty, its vectors decoded from vectors.arrow on reading
# (an xtrieve that reads only version 2 would call such a file corrupt)
FORMAT_VERSION = 3
READABLE_VERSIONS = (1, 2, 3)
MANIFEST = "manifest.json"
ENCODER_DIR = "encoder"
# the folders an index keeps its encoder in: encoder/, or encoder-gNNNNNN/ after an overwrite
ENCODER_DIR_NAME = re.compile(rf"{ENCODER_DIR}(-g\d{{6,}})?")


@dataclasses.dataclass(frozen=True)
class SegmentEntry:
    """One committed segment: counts, its immutable files and its current tombstones."""

    name: str
    n_docs: int
    n_tokens: int
    n_vectors: int
    faiss: str
    files: dict[str, str]
    n_deleted: int = 0
    tombstones: dict[str, str] = dataclasses.field(default_factory=dict)

    def all_files(self) -> dict[str, str]:
        return {**self.files, **self.tombstones}

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class Manifest:
    """The whole commit: what a reader needs to open a consistent snapshot."""

    generation: int
    dim: int
    config: IndexConfig
    encoder: dict | None
    pool_factor: int
    segments: tuple[SegmentEntry, ...] = ()
    template: dict | None = None
    next_segment: int = 1
    next_auto_id: int = 0
    xtrieve_version: str = ""
    encoder_dir: str = ENCODER_DIR  # the folder holding the encoder (when there is one)
    # every metadata column documents have brought, with its Arrow type's name (kept when their
    # documents are deleted, so that a filter on one stays valid: it matches nothing)
    columns: dict[str, str] = dataclasses.field(default_factory=dict)

    @property
    def dense_weight(self) -> float:
        """Weight of the dense cosine the index's model adds to MaxSim (0: none, or no model)."""
        return float(((self.encoder or {}).get("config") or {}).get("dense_weight", 0.0) or 0.0)

    def files(self) -> dict[str, str]:
        """Every file (relative name -> sha256) this commit names."""
        out: dict[str, str] = {}
        for s in self.segments:
            out.update(s.all_files())
        if self.template:
            out[self.template["file"]] = self.template["sha256"]
        return out

    def to_json(self) -> bytes:
        body = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "xtrieve_version": self.xtrieve_version,
            "generation": self.generation, "dim": self.dim, "encoder": self.encoder,
            "encoder_dir": self.encoder_dir if self.encoder is not None else None,
            "pool_factor": self.pool_factor, "index_config": self.config.to_dict(),
            "segments": [s.to_dict() for s in self.segments], "faiss_template": self.template,
            "next_segment": self.next_segment, "next_auto_id": self.next_auto_id, "columns": dict(self.columns),
        }
        body["checksum"] = _checksum(body)
        return (json.dumps(body, indent=1, sort_keys=True) + "\n").encode()


def _checksum(body: dict) -> str:
    data = {k: v for k, v in body.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(data, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def write_manifest(root: Path, manifest: Manifest) -> None:
    """Atomically replace ``root/manifest.json`` (temp file + fsync + rename + dir fsync)."""
    atomic_write_bytes(root / MANIFEST, manifest.to_json())


def is_committed(root: Path, manifest: Manifest) -> bool:
    """Whether ``root/manifest.json`` holds ``manifest`` (a write that failed after its rename did commit)."""
    try:
        return (root / MANIFEST).read_bytes() == manifest.to_json()
    except OSError:
        return False


def _need(cond: bool, path: Path, what: str) -> None:
    if not cond:
        raise IndexFormatError(f"corrupt manifest {path}: {what}")


def _count(d: dict, key: str, path: Path, where: str) -> int:
    v = d.get(key)
    _need(isinstance(v, int) and not isinstance(v, bool) and v >= 0, path, f"{where}: '{key}' must be a non-negative int")
    return v


def _files(root: Path, d: Any, path: Path, where: str) -> dict[str, str]:
    _need(isinstance(d, dict), path, f"{where}: file list must be an object")
    for rel, sha in d.items():
        safe_join(root, rel, "file")
        _need(isinstance(sha, str) and len(sha) == 64, path, f"{where}: bad checksum for {rel!r}")
    return dict(d)


def read_manifest(root: Path) -> Manifest:
    """Parse and validate ``root/manifest.json``; IndexFormatError names the problem."""
    path = root / MANIFEST
    if not root.exists():
        raise IndexFormatError(f"not an xtrieve index: {root} does not exist")
    if not root.is_dir():
        raise IndexFormatError(f"not an xtrieve index: {root} is not a folder")
    try:
        raw = regular(path).read_bytes()
    except FileNotFoundError:
        raise IndexFormatError(f"not an xtrieve index: no manifest.json in {root}") from None
    except OSError as exc:
        raise IndexFormatError(f"cannot read manifest {path}: {exc}") from None
    try:
        body = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise IndexFormatError(f"corrupt manifest {path}: not valid JSON ({exc})") from None
    _need(isinstance(body, dict), path, "top level is not an object")
    _need(body.get("format") == FORMAT, path, f"'format' is {body.get('format')!r}, expected {FORMAT!r}")
    version = body.get("format_version")
    if version not in READABLE_VERSIONS or isinstance(version, bool):
        raise IndexFormatError(
            f"unsupported index format_version {version!r} in {path} (this xtrieve reads versions "
            f"{', '.join(map(str, READABLE_VERSIONS))})")
    _need(body.get("checksum") == _checksum(body), path, "checksum mismatch (the file was modified or damaged)")
    try:
        config = IndexConfig.from_dict(body.get("index_config") or {})
    except ConfigError as exc:
        raise IndexFormatError(f"corrupt manifest {path}: {exc}") from None
    encoder = body.get("encoder")
    _need(encoder is None or isinstance(encoder, dict), path, "'encoder' must be an object or null")
    encoder_dir = body.get("encoder_dir") or ENCODER_DIR
    _need(isinstance(encoder_dir, str) and ENCODER_DIR_NAME.fullmatch(encoder_dir) is not None,
          path, f"bad 'encoder_dir' {encoder_dir!r}")
    segs_raw = body.get("segments")
    _need(isinstance(segs_raw, list), path, "'segments' must be a list")
    segments = []
    names = set()
    for i, s in enumerate(segs_raw):
        where = f"segment {i}"
        _need(isinstance(s, dict), path, f"{where} is not an object")
        name = s.get("name")
        _need(isinstance(name, str) and name.startswith("seg-") and name not in names, path, f"{where}: bad name {name!r}")
        safe_join(root, name, "segment")
        names.add(name)
        faiss_name = s.get("faiss")
        _need(isinstance(faiss_name, str), path, f"{where}: 'faiss' must be a string")
        files = _files(root, s.get("files"), path, where)
        for base in ("docs.arrow", "vectors.arrow", "tokens.faiss"):
            _need(f"{name}/{base}" in files, path, f"{where}: missing file {name}/{base}")
        segments.append(SegmentEntry(
            name=name, n_docs=_count(s, "n_docs", path, where), n_tokens=_count(s, "n_tokens", path, where),
            n_vectors=_count(s, "n_vectors", path, where), faiss=faiss_name, files=files,
            n_deleted=_count(s, "n_deleted", path, where), tombstones=_files(root, s.get("tombstones", {}), path, where),
        ))
    template = body.get("faiss_template")
    if template is not None:
        _need(isinstance(template, dict) and isinstance(template.get("factory"), str), path, "bad 'faiss_template'")
        _files(root, {template.get("file"): template.get("sha256")}, path, "faiss_template")
    columns = body.get("columns", {})
    _need(isinstance(columns, dict) and all(isinstance(t, str) for t in columns.values()), path,
          "'columns' must map column names to type names")
    dim = _count(body, "dim", path, "index")
    _need(dim > 0, path, "'dim' must be positive")
    return Manifest(
        generation=_count(body, "generation", path, "index"), dim=dim, config=config, encoder=encoder,
        pool_factor=_count(body, "pool_factor", path, "index") or 1, segments=tuple(segments), template=template,
        next_segment=_count(body, "next_segment", path, "index"), next_auto_id=_count(body, "next_auto_id", path, "index"),
        xtrieve_version=str(body.get("xtrieve_version", "")), encoder_dir=encoder_dir, columns=dict(columns),
    )
