"""BEIR datasets: load a local folder robustly, download a standard one, corpus -> docs.

A BEIR folder holds ``corpus.jsonl`` ({"_id", "title", "text", ...}), ``queries.jsonl``
({"_id", "text", ...}) and ``qrels/<split>.tsv`` (query-id, corpus-id, score, with a
header line). Loading goes through beir's ``GenericDataLoader``; this module hardens
the three readers it calls, so that real-world folders load instead of crashing:

* ids of any JSON type become strings (``"_id": 12`` and the qrels' ``12`` agree);
* ``null``/missing titles and texts become ``""``; extra fields are kept in the corpus;
* qrels: blank lines, a missing header and scores like ``1.0`` are accepted; a qrel whose
  query is not in queries.jsonl is dropped with one warning (beir would raise KeyError);
  a qrel naming a document missing from the corpus is kept (it simply cannot be found).
"""
from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
import shutil
import socket
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import urlparse

from xtrieve.errors import InputError, XtrieveError

log = logging.getLogger(__name__)

BEIR_URL = "https://public.ukp.informatik.tu-darmstadt.de/thakur/BEIR/datasets/{name}.zip"
CACHE_ENV = "XTRIEVE_CACHE"


class DatasetUnavailableError(XtrieveError):
    """A named BEIR dataset is neither cached nor downloadable here."""


def _str_id(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    out = str(value)
    return out if out.strip() else None


def _as_text(value: Any) -> str:
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _loader_class():
    from beir.datasets.data_loader import GenericDataLoader
    from tqdm.auto import tqdm

    class RobustLoader(GenericDataLoader):
        """GenericDataLoader with readers that accept the quirks listed in the module doc."""

        def _load_corpus(self) -> None:
            with open(self.corpus_file, "rb") as f:
                total = sum(1 for _ in f)
            no_id, repeated = 0, []
            with open(self.corpus_file, encoding="utf-8-sig") as f:
                for n, line in enumerate(tqdm(f, total=total, desc="corpus", disable=None, leave=False), 1):
                    if not line.strip():
                        continue
                    row = _json_line(line, self.corpus_file, n)
                    doc_id = _str_id(row.get("_id", row.get("id")))
                    if doc_id is None:
                        no_id += 1
                        continue
                    doc = {k: v for k, v in row.items() if k not in ("_id", "id")}
                    doc["title"] = _as_text(row.get("title"))
                    doc["text"] = _as_text(row.get("text"))
                    if doc_id in self.corpus:
                        repeated.append(doc_id)
                    self.corpus[doc_id] = doc
            if no_id:
                log.warning("%s: skipped %d corpus line(s) without an _id", self.corpus_file, no_id)
            if repeated:  # beir keeps the last one too
                log.warning("%s: %d repeated _id(s), the last line of each kept (e.g. %r)", self.corpus_file,
                            len(repeated), repeated[0])

        def _load_queries(self) -> None:
            with open(self.query_file, encoding="utf-8-sig") as f:
                for n, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    row = _json_line(line, self.query_file, n)
                    qid = _str_id(row.get("_id", row.get("id")))
                    if qid is not None:
                        self.queries[qid] = _as_text(row.get("text"))

        def _load_qrels(self) -> None:
            missing: set[str] = set()
            unknown_docs: set[str] = set()
            conflicts: list[tuple[str, str]] = []
            with open(self.qrels_file, encoding="utf-8-sig", newline="") as f:
                for n, row in enumerate(csv.reader(f, delimiter="\t", quoting=csv.QUOTE_MINIMAL), 1):
                    if not row or not "".join(row).strip():
                        continue
                    if len(row) < 3:
                        if n == 1:
                            continue
                        raise InputError(f"{self.qrels_file}:{n}: expected 'query-id<TAB>corpus-id<TAB>score'")
                    qid, did = row[0], row[1]  # as beir reads them: ids as written
                    try:
                        score = int(float(row[2]))
                    except ValueError:
                        if n == 1:  # the header line
                            continue
                        raise InputError(f"{self.qrels_file}:{n}: score {row[2]!r} is not a number") from None
                    if qid not in self.queries:
                        missing.add(qid)
                        continue
                    if self.corpus and did not in self.corpus and score > 0:
                        unknown_docs.add(did)
                    judged = self.qrels.setdefault(qid, {})
                    if judged.get(did, score) != score:
                        conflicts.append((qid, did))
                    judged[did] = score  # (the last line wins, as in beir)
            if conflicts:
                log.warning("%s: %d (query, document) pair(s) judged twice with different scores, the last line "
                            "kept (e.g. %r)", self.qrels_file, len(conflicts), conflicts[0])
            if unknown_docs:  # kept, as beir keeps them: relevant documents no run can return
                log.warning("%s: %d relevant document id(s) absent from %s (e.g. %r) stay in the qrels, so no run "
                            "reaches full recall", self.qrels_file, len(unknown_docs), self.corpus_file,
                            sorted(unknown_docs)[0])
            if missing:
                log.warning("%s: dropped qrels of %d query id(s) absent from %s (e.g. %r)", self.qrels_file,
                            len(missing), self.query_file, sorted(missing)[0])

    return RobustLoader


def _json_line(line: str, path: str, n: int) -> dict:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
    if not isinstance(row, dict):
        raise InputError(f"{path}:{n}: expected a JSON object")
    return row


@dataclasses.dataclass
class BeirDataset:
    """One split of a BEIR dataset, all ids as strings."""

    name: str
    path: Path
    split: str
    corpus: dict[str, dict[str, Any]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]

    def documents(self) -> tuple[list[dict[str, Any]], list[str]]:
        """(docs for ``Index.build``, ids of skipped documents); see :func:`corpus_to_docs`."""
        return corpus_to_docs(self.corpus)

    def query_items(self, max_queries: int | None = None) -> list[tuple[str, str]]:
        """(query id, text) of the split's judged queries in qrels order (beir's loader keeps
        them so), the first ``max_queries`` of them; a query with an empty text is included and
        cannot be searched (:func:`searchable` splits those off)."""
        items = list(self.queries.items())
        return items if max_queries is None else items[: max(0, int(max_queries))]


def searchable(items: list[tuple[str, str]]) -> tuple[list[tuple[str, str]], list[str]]:
    """(the items with a text, the ids of those whose text is empty)."""
    return [(q, t) for q, t in items if t.strip()], [q for q, t in items if not t.strip()]


def doc_text(doc: Mapping[str, Any]) -> str:
    """BEIR's document text: ``title + " " + text``, stripped."""
    return (_as_text(doc.get("title")) + " " + _as_text(doc.get("text"))).strip()


def corpus_to_docs(corpus: Mapping[str, Mapping[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Docs ``{"id", "text"}`` (title folded into the text) and the ids skipped as empty.

    Only id and text are passed on: BEIR's extra fields vary between datasets (nested
    dicts, mixed types) and retrieval quality does not depend on them.
    """
    docs: list[dict[str, Any]] = []
    skipped: list[str] = []
    for doc_id, doc in corpus.items():
        text = doc_text(doc)
        if not text:
            skipped.append(str(doc_id))
            continue
        docs.append({"id": str(doc_id), "text": text})
    if skipped:
        log.warning("skipped %d document(s) with empty title and text (e.g. %r)", len(skipped), skipped[0])
    return docs, skipped


def find_beir_folder(data_dir: str | Path, dataset: str | None = None) -> Path:
    """The folder holding corpus.jsonl: ``data_dir`` itself, or with ``dataset`` the folder of that name.

    With a dataset name, ``data_dir/dataset`` (or ``data_dir/dataset/dataset``, how BEIR zips
    unpack) comes first, and ``data_dir`` itself counts only when it is named ``dataset``: a
    report labelled with the name must come from that dataset's folder.
    """
    root = Path(data_dir).expanduser()
    if dataset:
        candidates = [root / dataset, root / dataset / dataset] + ([root] if root.name == dataset else [])
    else:
        candidates = [root]
    for c in candidates:
        if (c / "corpus.jsonl").is_file():
            return c
    if not root.exists():
        raise InputError(f"--data-dir {root}: no such folder")
    if dataset and (root / "corpus.jsonl").is_file():
        raise InputError(f"--dataset {dataset}: no BEIR folder {root / dataset} (with corpus.jsonl); {root} "
                         "itself is a BEIR folder: drop --dataset to evaluate it")
    inside = sorted(c.name for c in root.iterdir() if (c / "corpus.jsonl").is_file()) if root.is_dir() else []
    hint = (f"; BEIR folders inside it: {', '.join(inside[:20])}{' ...' if len(inside) > 20 else ''} "
            "(evaluate one with --dataset NAME)") if inside and not dataset else ""
    raise InputError(f"{root} is not a BEIR folder: no corpus.jsonl"
                     + (f" (nor in {root / dataset})" if dataset else "") + hint)


def load_beir(data_dir: str | Path, split: str = "test", dataset: str | None = None) -> BeirDataset:
    """Load one split of a local BEIR folder with beir's GenericDataLoader (hardened)."""
    folder = find_beir_folder(data_dir, dataset)
    for name in ("queries.jsonl", f"qrels/{split}.tsv"):
        if not (folder / name).is_file():
            splits = sorted(p.stem for p in (folder / "qrels").glob("*.tsv")) if (folder / "qrels").is_dir() else []
            raise InputError(f"{folder}: missing {name}" + (f" (splits here: {', '.join(splits)})" if splits else ""))
    loader = _loader_class()(data_folder=str(folder))
    try:
        corpus, queries, qrels = loader.load(split=split)
    except ValueError as exc:  # beir's own file checks
        raise InputError(f"{folder}: {exc}") from None
    except IndexError:  # beir logs an example of an empty corpus / query set
        corpus, queries, qrels = loader.corpus, loader.queries, loader.qrels
    if not corpus:
        raise InputError(f"{folder}/corpus.jsonl: no documents")
    if not qrels:
        raise InputError(f"{folder}/qrels/{split}.tsv: no judgements for queries in queries.jsonl")
    name = dataset or folder.name
    log.info("loaded %s/%s: %d documents, %d queries", name, split, len(corpus), len(queries))
    return BeirDataset(name=name, path=folder, split=split, corpus=corpus, queries=queries, qrels=qrels)


def cache_dir(explicit: str | Path | None = None) -> Path:
    """Where downloaded datasets live: explicit, $XTRIEVE_CACHE/beir, or ~/.cache/xtrieve/beir."""
    if explicit is not None:
        return Path(explicit).expanduser()
    base = os.environ.get(CACHE_ENV)
    return (Path(base).expanduser() if base else Path.home() / ".cache" / "xtrieve") / "beir"


def _can_reach(url: str, timeout: float = 5.0) -> str | None:
    """None when a TCP connection to the URL's host opens, else the reason it did not."""
    parsed = urlparse(url)
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    try:
        with socket.create_connection((parsed.hostname, port), timeout=timeout):
            return None
    except OSError as exc:
        return str(exc) or type(exc).__name__


def download_dataset(name: str, cache: str | Path | None = None, url: str | None = None) -> Path:
    """A standard BEIR dataset by name: from the cache, else downloaded and unzipped there.

    Raises :class:`DatasetUnavailableError` (one line) when it cannot be downloaded.
    """
    if not name or "/" in name or name.startswith("."):
        raise InputError(f"invalid dataset name {name!r}")
    root = cache_dir(cache)
    for folder in (root / name, root / name / name):
        if (folder / "corpus.jsonl").is_file():
            return folder
    url = url or BEIR_URL.format(name=name)
    hint = "pass --data-dir with a local BEIR folder"
    reason = _can_reach(url)
    if reason is not None:
        raise DatasetUnavailableError(f"cannot download BEIR dataset {name!r} from {url} ({reason}); {hint}")
    from beir import util

    log.info("downloading %s into %s", url, root)
    try:
        folder = Path(util.download_and_unzip(url, str(root)))
    except Exception as exc:  # requests / zipfile errors of every kind
        for leftover in (root / f"{name}.zip", root / name):
            if leftover.is_dir():
                shutil.rmtree(leftover, ignore_errors=True)
            elif leftover.exists():
                leftover.unlink()
        msg = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise DatasetUnavailableError(f"cannot download BEIR dataset {name!r} from {url} ({msg}); {hint}") from None
    return find_beir_folder(folder.parent, name) if not (folder / "corpus.jsonl").is_file() else folder


def resolve_dataset(data_dir: str | Path | None, dataset: str | None, split: str = "test",
                    cache: str | Path | None = None) -> BeirDataset:
    """``--data-dir`` (with an optional ``--dataset`` sub-folder/name) or a download by name."""
    if data_dir is None:
        if not dataset:
            raise InputError("give --data-dir (a local BEIR folder) or --dataset NAME (downloaded)")
        return load_beir(download_dataset(dataset, cache), split=split, dataset=dataset)
    return load_beir(data_dir, split=split, dataset=dataset)


def write_beir(folder: str | Path, corpus: Mapping[str, Mapping[str, Any]], queries: Mapping[str, Any],
               qrels: Mapping[str, Mapping[str, Mapping[str, int]]]) -> Path:
    """Write a BEIR-layout folder: corpus/queries rows (dicts; ``_id`` added) and qrels per split.

    ``queries`` values may be a text or a dict with "text" and extra fields.
    """
    folder = Path(folder)
    (folder / "qrels").mkdir(parents=True, exist_ok=True)
    with open(folder / "corpus.jsonl", "w", encoding="utf-8") as f:
        for doc_id, doc in corpus.items():
            f.write(json.dumps({"_id": doc_id, **doc}, ensure_ascii=False) + "\n")
    with open(folder / "queries.jsonl", "w", encoding="utf-8") as f:
        for qid, q in queries.items():
            row = {"_id": qid, **(q if isinstance(q, Mapping) else {"text": q})}
            f.write(json.dumps(row, ensure_ascii=False) + "\n")
    for split, judged in qrels.items():
        with open(folder / "qrels" / f"{split}.tsv", "w", encoding="utf-8", newline="") as f:
            w = csv.writer(f, delimiter="\t", lineterminator="\n")
            w.writerow(["query-id", "corpus-id", "score"])
            for qid, docs in judged.items():
                for did, score in docs.items():
                    w.writerow([qid, did, score])
    return folder
