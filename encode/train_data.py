"""Training data for `xtrieve train`: BEIR folders or JSONL pairs/triples, a disk cache of
backbone token states, and hard-negative mining with the base model.

The cache stores, for every text the base encoder saw, the backbone hidden states at the
positions that become output vectors (float16) and the dense sentence embedding of the
same forward pass (mean over all attended tokens, L2-normalised: what sentence-transformers
computes for all-MiniLM-L6-v2), used as a label-free teacher. Texts are keyed by a hash of
(kind, text), so the cache is shared across datasets and runs, and it fills incrementally:
each chunk of encoded texts is committed on its own, so an interrupted run keeps its work.
Nothing here is pickled: chunks are .npy arrays plus a JSON index.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import os
import random
import re
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from xtrieve.errors import InputError

log = logging.getLogger(__name__)

def default_cache() -> Path:
    """Where cached backbone states go: $XTRIEVE_CACHE/train-states (~/.cache/xtrieve by default)."""
    return Path(os.environ.get("XTRIEVE_CACHE", Path.home() / ".cache" / "xtrieve")) / "train-states"


# -- data -----------------------------------------------------------------------------------


@dataclasses.dataclass
class TrainSet:
    """Queries with positives (and optional fixed negatives) over a corpus of texts."""

    name: str
    corpus: dict[str, str]                       # doc id -> text
    queries: dict[str, str]                      # query id -> text
    positives: dict[str, dict[str, int]]         # query id -> {doc id: relevance > 0}
    negatives: dict[str, list[str]] = dataclasses.field(default_factory=dict)  # given negatives

    def query_ids(self) -> list[str]:
        return sorted(q for q in self.positives if q in self.queries and self.positives[q])

    def fingerprint(self) -> str:
        """sha256 of the name, corpus, queries, positives and given negatives."""
        h = hashlib.sha256(json.dumps(self.name).encode())
        for part in (self.corpus, self.queries):
            h.update(b"\0")
            for k in sorted(part):
                h.update(json.dumps([k, part[k]]).encode())
        h.update(json.dumps([self.positives, self.negatives], sort_keys=True).encode())
        return h.hexdigest()


def doc_text(row: dict) -> str:
    title = (row.get("title") or "").strip()
    text = (row.get("text") or "").strip()
    return f"{title} {text}".strip() if title else text


def read_jsonl(path: Path, need: tuple[str, ...] = ()) -> Iterable[dict]:
    """The rows of a JSON Lines file; InputError naming the line when one is not JSON or (an
    object) lacks a key of ``need``."""
    try:
        with open(path, encoding="utf-8-sig") as f:
            for n, line in enumerate(f, 1):
                if line.strip():
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError as exc:
                        raise InputError(f"{path}:{n}: not valid JSON ({exc.msg})") from None
                    missing = [k for k in need if not isinstance(row, dict) or k not in row]
                    if missing:
                        found = ", ".join(map(repr, row)) if isinstance(row, dict) else type(row).__name__
                        raise InputError(f"{path}:{n}: a row needs {' and '.join(map(repr, need))} (BEIR's "
                                         f"layout); it has {found}")
                    yield row
    except FileNotFoundError:
        raise InputError(f"{path} is missing") from None
    except UnicodeDecodeError as exc:
        raise InputError(f"{path}: not UTF-8 text ({exc.reason})") from None


def load_beir(folder: Path, split: str = "train") -> TrainSet:
    """Queries and qrels of one split (only those queries) plus the whole corpus."""
    folder = Path(folder)
    qrels_path = folder / "qrels" / f"{split}.tsv"
    if not qrels_path.exists():
        raise InputError(f"{folder}: no qrels/{split}.tsv")
    positives: dict[str, dict[str, int]] = defaultdict(dict)
    try:
        with open(qrels_path, encoding="utf-8-sig") as f:
            for n, line in enumerate(f):
                parts = line.rstrip("\n").split("\t")
                if len(parts) < 3:
                    continue
                try:
                    score = float(parts[2])  # (graded; 1.0 as some tools write it)
                except ValueError:
                    if n == 0:  # the header
                        continue
                    raise InputError(f"{qrels_path}:{n + 1}: the score {parts[2][:20]!r} is not a number") from None
                if score > 0:
                    positives[parts[0]][parts[1]] = max(1, round(score))  # (pytrec_eval grades are ints)
    except UnicodeDecodeError as exc:
        raise InputError(f"{qrels_path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    wanted = set(positives)
    queries = {}
    for r in read_jsonl(folder / "queries.jsonl", ("_id",)):
        if str(r["_id"]) in wanted:
            if "text" not in r:
                raise InputError(f"{folder / 'queries.jsonl'}: query {r['_id']!r} has no 'text' (BEIR's layout); "
                                 f"it has {', '.join(map(repr, r))}")
            queries[str(r["_id"])] = r["text"]
    corpus = {}
    for r in read_jsonl(folder / "corpus.jsonl", ("_id",)):
        t = doc_text(r)
        if t:
            corpus[str(r["_id"])] = t
    judged = sum(len(docs) for docs in positives.values())
    no_query = sorted(q for q in positives if q not in queries)
    of_no_query = sum(len(positives[q]) for q in no_query)
    positives = {q: {d: s for d, s in docs.items() if d in corpus} for q, docs in positives.items() if q in queries}
    of_no_doc = judged - of_no_query - sum(len(docs) for docs in positives.values())
    if of_no_query or of_no_doc:
        log.warning("%s: %d of %d positive judgments skipped: %d of queries not in queries.jsonl (e.g. %r), %d of "
                    "documents not in corpus.jsonl (or without text)", qrels_path, of_no_query + of_no_doc, judged,
                    of_no_query, no_query[0] if no_query else None, of_no_doc)
    return TrainSet(name=f"{folder.name}:{split}", corpus=corpus, queries=queries,
                    positives={q: d for q, d in positives.items() if d})


# the keys a training row's parts are read from, the first found (sentence-transformers' and PyLate's names too)
QUERY_KEYS = ("query", "anchor", "question")
POSITIVE_KEYS = ("positive", "pos", "document", "passage")
NEGATIVE_KEYS = ("negative", "neg", "negatives", "hard_negative", "hard_negatives")


def _first(row: dict[str, Any], keys: tuple[str, ...]) -> Any:
    return next((row[k] for k in keys if k in row), None)


def load_pairs(path: Path) -> TrainSet:
    """JSONL rows {"query", "positive", "negative"?} (keys also read as QUERY_KEYS, POSITIVE_KEYS,
    NEGATIVE_KEYS; a negative may be a list) or [q, p, n?] lists."""
    corpus: dict[str, str] = {}
    ids: dict[str, str] = {}
    queries: dict[str, str] = {}
    positives: dict[str, dict[str, int]] = defaultdict(dict)
    negatives: dict[str, list[str]] = defaultdict(list)

    def did(text: str) -> str:
        if text not in ids:
            ids[text] = f"d{len(ids)}"
            corpus[ids[text]] = text
        return ids[text]

    qids: dict[str, str] = {}
    ignored: set[str] = set()
    for n, row in enumerate(read_jsonl(Path(path)), 1):
        if isinstance(row, list):
            if not all(isinstance(x, str) for x in row) or not 2 <= len(row) <= 3:
                raise InputError(f"{path}:{n}: a list row is [query, positive] or [query, positive, negative] "
                                 "strings (a JSON array of rows is not JSON Lines: write one row per line)")
            row = dict(zip(("query", "positive", "negative"), row))
        if not isinstance(row, dict):
            raise InputError(f"{path}:{n}: expected a JSON object or list, got {type(row).__name__}")
        q = _first(row, QUERY_KEYS)
        p = _first(row, POSITIVE_KEYS)
        neg = _first(row, NEGATIVE_KEYS)
        ignored.update(k for k in row if k not in QUERY_KEYS + POSITIVE_KEYS + NEGATIVE_KEYS)
        if not isinstance(q, str) or not isinstance(p, str) or not q.strip() or not p.strip():
            raise InputError(f"{path}:{n}: a row needs non-empty 'query' and 'positive' strings (also read as "
                             f"{', '.join(QUERY_KEYS[1:])} / {', '.join(POSITIVE_KEYS[1:])}); it has "
                             f"{', '.join(map(repr, row)) or 'no keys'}")
        if q not in qids:
            qids[q] = f"q{len(qids)}"
            queries[qids[q]] = q
        qid = qids[q]
        positives[qid][did(p)] = 1
        if neg is not None and not isinstance(neg, str) and not (
                isinstance(neg, list) and all(isinstance(t, str) for t in neg)):
            raise InputError(f"{path}:{n}: a row's negative is a string or a list of strings, got "
                             f"{type(neg).__name__} {json.dumps(neg)[:60]}")
        for t in ([neg] if isinstance(neg, str) else (neg or [])):
            if t.strip():
                negatives[qid].append(did(t))
    if not queries:
        raise InputError(f"{path}: no training rows")
    if ignored:
        log.warning("%s: ignoring key(s) %s of the training rows (read: %s)", path, ", ".join(sorted(ignored)),
                    ", ".join(QUERY_KEYS + POSITIVE_KEYS + NEGATIVE_KEYS))
    return TrainSet(name=Path(path).stem, corpus=corpus, queries=queries, positives=dict(positives),
                    negatives=dict(negatives))


def load_train_set(source: str | Path, split: str = "train") -> TrainSet:
    p = Path(source)
    if p.is_dir():
        return load_beir(p, split)
    if p.is_file():
        return load_pairs(p)
    if not p.exists():
        raise InputError(f"training data {source} does not exist")
    raise InputError(f"training data {source} is neither a BEIR folder nor a JSONL file")


def split_queries(qids: list[str], holdout: float, seed: int) -> tuple[list[str], list[str]]:
    """A fixed random split of query ids into (train, held-out)."""
    qids = sorted(qids)
    rng = random.Random(seed)
    rng.shuffle(qids)
    n_hold = int(round(len(qids) * holdout))
    return sorted(qids[n_hold:]), sorted(qids[:n_hold])


# -- the state cache --------------------------------------------------------------------------


# files of a backbone folder that decide its token states: weights, model config, tokenizer
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".model")
_STATE_FILES = {"config.json", "tokenizer.json", "tokenizer_config.json", "vocab.txt", "merges.txt",
                "special_tokens_map.json", "added_tokens.json"}


def file_sha256(path: Path) -> str:
    """sha256 of a file's bytes, remembered while its (path, size, mtime, ctime, inode) stay."""
    st = path.stat()
    return _sha256_of(str(path.resolve()), st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino)


@functools.lru_cache(maxsize=256)
def _sha256_of(path: str, size: int, mtime_ns: int, ctime_ns: int, inode: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def encoder_cache_key(enc, layer: int | None = None) -> str:
    """Identifies the backbone by content (weight, config and tokenizer files, weight overrides),
    the cached layer and every setting that changes the cached states."""
    c = enc.config.to_dict()
    keep = {k: c[k] for k in ("query_maxlen", "doc_maxlen", "query_prefix", "document_prefix", "query_augmentation",
                              "attend_to_expansion_tokens", "skiplist_words", "keep_special_tokens", "lowercase")}
    if c.get("prompt"):  # (likewise absent without one)
        keep["prompt"] = c["prompt"]
    if c["doc_windows"] > 1:
        keep.update(doc_windows=c["doc_windows"], doc_window_overlap=c["doc_window_overlap"])
    if getattr(enc, "precision", "float32") != "float32":  # (float32 keys stay as they were)
        # (since the lean pass took bfloat16, queries run in it too: caches of before are not reused)
        keep["precision"] = f"{enc.precision} queries and documents"
    h = hashlib.sha256(json.dumps({"format": 2, "cfg": keep}, sort_keys=True, default=str).encode())
    folder = Path(enc.spec.backbone_dir)
    for f in sorted(folder.iterdir()):
        if f.is_file() and (f.name in _STATE_FILES or f.suffix in _WEIGHT_SUFFIXES):
            h.update(f"{f.name}:{file_sha256(f)}\n".encode())
    for label, state in (("state", enc.spec.backbone_state), ("overlay", enc.spec.backbone_overlay)):
        for k in sorted(state or {}):
            h.update(f"{label}.{k}".encode())
            h.update(state[k].detach().cpu().float().contiguous().numpy().tobytes())
    key = h.hexdigest()[:16]
    return key if layer is None else f"{key}-layer{layer}"


def text_key(text: str, is_query: bool) -> str:
    return hashlib.sha1((("q\0" if is_query else "d\0") + text).encode()).hexdigest()


ATTENDED, OUTPUT = 1, 2  # position flags of a layer-input cache


class StateCache:
    """Backbone token states + dense embeddings per text, in committed .npy chunks.

    By default the states are the backbone's output at the positions that become vectors.
    With ``layer`` set they are the hidden states entering that block, at every position
    (with flags: attended, output), so the blocks from ``layer`` on can be trained.
    """

    def __init__(self, root: str | Path, enc, layer: int | None = None) -> None:
        self.enc = enc
        self.layer = layer
        self.dir = Path(root).expanduser() / encoder_cache_key(enc, layer)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.hidden = int(enc.backbone.config.hidden_size)
        self._where: dict[str, tuple[int, int, int, int]] = {}  # key -> chunk no, start, end, row
        self._states: list[np.ndarray] = []
        self._flags: list[np.ndarray | None] = []
        self._dense: list[np.ndarray] = []
        self._load()

    def _load(self) -> None:
        for meta_path in sorted(self.dir.glob("*.json")):
            try:
                meta = json.loads(meta_path.read_text(encoding="utf-8"))
                stem = meta_path.with_suffix("")
                states = np.load(f"{stem}.states.npy", mmap_mode="r", allow_pickle=False)
                dense = np.load(f"{stem}.dense.npy", mmap_mode="r", allow_pickle=False)
                flags = np.load(f"{stem}.flags.npy", allow_pickle=False) if self.layer is not None else None
            except (OSError, ValueError, json.JSONDecodeError) as exc:
                log.warning("skipping broken cache chunk %s: %s", meta_path, exc)
                continue
            no = len(self._states)
            self._states.append(states)
            self._flags.append(flags)
            self._dense.append(dense)
            off = meta["offsets"]
            for row, key in enumerate(meta["keys"]):
                self._where[key] = (no, off[row], off[row + 1], row)

    def __contains__(self, key: str) -> bool:
        return key in self._where

    def __len__(self) -> int:
        return len(self._where)

    def missing(self, texts: Iterable[str], is_query: bool) -> list[str]:
        seen, out = set(), []
        for t in texts:
            k = text_key(t, is_query)
            if k not in self._where and k not in seen:
                seen.add(k)
                out.append(t)
        return out

    def ensure(self, texts: Iterable[str], is_query: bool, batch_size: int = 32, chunk: int = 512,
               progress: bool = True) -> int:
        """Encode and commit the texts not cached yet; returns how many were encoded."""
        todo = self.missing(texts, is_query)
        if not todo:
            return 0
        # long texts first inside each chunk keeps padding low; chunks keep memory bounded
        todo.sort(key=len, reverse=True)
        from tqdm.auto import tqdm

        t0 = time.time()
        with tqdm(total=len(todo), desc=f"caching {'query' if is_query else 'document'} states", unit="text",
                  disable=not progress) as bar:
            for start in range(0, len(todo), chunk):
                part = todo[start:start + chunk]
                states, flags, dense = self._encode(part, is_query, batch_size)
                self._commit(part, is_query, states, flags, dense)
                bar.update(len(part))
        log.info("cached %d %s in %.0fs", len(todo), "queries" if is_query else "documents", time.time() - t0)
        return len(todo)

    def _encode(self, texts: list[str], is_query: bool,
                batch_size: int) -> tuple[list[np.ndarray], list[np.ndarray] | None, np.ndarray]:
        from xtrieve.encode.encoder import WindowJoin
        from xtrieve.encode.top_layers import capture_layer_input

        enc = self.enc
        join = WindowJoin(len(texts), self.hidden)
        flags: list[np.ndarray | None] | None = None if self.layer is None else [None] * len(texts)
        sink: list[torch.Tensor] = []
        handle = None if self.layer is None else capture_layer_input(enc.backbone, self.layer, sink)
        try:
            with torch.inference_mode():
                for owners, windows, batch in enc._batches(texts, is_query, batch_size, False, "texts"):
                    sink.clear()
                    hidden = enc._hidden(batch, is_query)
                    join.add_states(owners, hidden, batch.attention_mask.to(hidden.device))
                    for row, (i, k) in enumerate(zip(owners, windows)):
                        out = batch.output_mask[row]
                        if flags is None:
                            join.add(i, k, hidden[row][out].cpu().numpy().astype(np.float16))
                            continue
                        if k > 0:
                            raise InputError("training top backbone blocks needs doc_windows = 1 (one input row per document)")
                        f = batch.attention_mask[row].bool().to(torch.uint8) * ATTENDED + out.to(torch.uint8) * OUTPUT
                        n = int(torch.nonzero(f).max()) + 1
                        join.add(i, k, sink[0][row, :n].float().cpu().numpy().astype(np.float16))
                        flags[i] = f[:n].numpy()
        finally:
            if handle is not None:
                handle.remove()
        return join.arrays(), flags, join.dense()  # type: ignore[return-value]

    def _commit(self, texts: list[str], is_query: bool, states: list[np.ndarray], flags: list[np.ndarray] | None,
                dense: np.ndarray) -> None:
        stem = self.dir / f"c-{int(time.time())}-{uuid.uuid4().hex[:8]}"
        offsets = np.zeros(len(states) + 1, dtype=np.int64)
        offsets[1:] = np.cumsum([len(s) for s in states])
        flat = np.concatenate(states, axis=0) if states else np.zeros((0, self.hidden), np.float16)
        np.save(f"{stem}.states.npy", flat)
        np.save(f"{stem}.dense.npy", dense)
        if flags is not None:
            np.save(f"{stem}.flags.npy", np.concatenate(flags) if flags else np.zeros(0, np.uint8))
        keys = [text_key(t, is_query) for t in texts]
        tmp = Path(f"{stem}.json.tmp")
        tmp.write_text(json.dumps({"keys": keys, "offsets": offsets.tolist(), "is_query": is_query}), encoding="utf-8")
        os.replace(tmp, f"{stem}.json")  # the JSON is the commit marker
        no = len(self._states)
        self._states.append(np.load(f"{stem}.states.npy", mmap_mode="r"))
        self._flags.append(None if flags is None else np.load(f"{stem}.flags.npy"))
        self._dense.append(np.load(f"{stem}.dense.npy", mmap_mode="r"))
        for row, key in enumerate(keys):
            self._where[key] = (no, int(offsets[row]), int(offsets[row + 1]), row)

    def states(self, text: str, is_query: bool) -> np.ndarray:
        no, a, b, _ = self._where[text_key(text, is_query)]
        return self._states[no][a:b]

    def flags(self, text: str, is_query: bool) -> np.ndarray:
        """Per-position ATTENDED | OUTPUT flags of a layer-input cache."""
        no, a, b, _ = self._where[text_key(text, is_query)]
        flags = self._flags[no]
        if flags is None:
            raise ValueError("this cache holds output states, which have no position flags")
        return flags[a:b]

    def dense(self, text: str, is_query: bool) -> np.ndarray:
        no, _, _, row = self._where[text_key(text, is_query)]
        return self._dense[no][row]


# -- batching cached states ---------------------------------------------------------------


def pad_states(arrays: list[np.ndarray], hidden: int) -> tuple[torch.Tensor, torch.Tensor]:
    """[n, L, H] float32 states and a [n, L] bool mask from ragged arrays."""
    width = max(1, max((len(a) for a in arrays), default=1))
    out = torch.zeros((len(arrays), width, hidden), dtype=torch.float32)
    mask = torch.zeros((len(arrays), width), dtype=torch.bool)
    for i, a in enumerate(arrays):
        if len(a):
            out[i, : len(a)] = torch.from_numpy(np.asarray(a, dtype=np.float32))
            mask[i, : len(a)] = True
    return out, mask


def pad_flags(arrays: list[np.ndarray]) -> torch.Tensor:
    """[n, L] uint8 position flags from ragged arrays (0 = padding)."""
    width = max(1, max((len(a) for a in arrays), default=1))
    out = torch.zeros((len(arrays), width), dtype=torch.uint8)
    for i, a in enumerate(arrays):
        out[i, : len(a)] = torch.from_numpy(np.asarray(a, dtype=np.uint8))
    return out


# -- BM25 (cheap candidate generation when the corpus is not cached yet) ------------------------

_WORD = re.compile(r"\w+", re.UNICODE)


class BM25:
    def __init__(self, texts: list[str], k1: float = 0.9, b: float = 0.4) -> None:
        from scipy import sparse

        self.vocab: dict[str, int] = {}
        rows, cols, vals = [], [], []
        lengths = np.zeros(len(texts), dtype=np.float32)
        for i, t in enumerate(texts):
            counts = Counter(_WORD.findall(t.lower()))
            lengths[i] = sum(counts.values())
            for w, c in counts.items():
                rows.append(i)
                cols.append(self.vocab.setdefault(w, len(self.vocab)))
                vals.append(c)
        tf = sparse.csr_matrix((np.array(vals, np.float32), (rows, cols)), shape=(len(texts), len(self.vocab)))
        df = np.bincount(np.array(cols, dtype=np.int64), minlength=len(self.vocab)).astype(np.float32)
        n = len(texts)
        self.idf = np.log(1 + (n - df + 0.5) / (df + 0.5)).astype(np.float32)
        avg = max(float(lengths.mean()), 1.0)
        tf = tf.tocoo()
        denom = tf.data + k1 * (1 - b + b * lengths[tf.row] / avg)
        w = tf.data * (k1 + 1) / denom
        self.matrix = sparse.csc_matrix((w.astype(np.float32), (tf.row, tf.col)), shape=tf.shape)

    def top(self, query: str, k: int) -> np.ndarray:
        cols = [self.vocab[w] for w in set(_WORD.findall(query.lower())) if w in self.vocab]
        if not cols:
            return np.zeros(0, dtype=np.int64)
        scores = np.asarray(self.matrix[:, cols] @ self.idf[cols]).ravel()
        k = min(k, len(scores))
        idx = np.argpartition(-scores, k - 1)[:k]
        return idx[np.argsort(-scores[idx])]


def chunked(seq: list, n: int) -> Iterable[list]:
    for i in range(0, len(seq), n):
        yield seq[i:i + n]

