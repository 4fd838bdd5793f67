"""`xtrieve train`: contrastive + distillation training of the head with CRISP clustering.

CPU-first: the backbone stays frozen and its token states come from a disk cache
(:class:`xtrieve.encode.train_data.StateCache`), so a step is a few small matmuls plus the
clustering. Each step takes a batch of queries, one positive and ``n_negatives`` mined hard
negatives per query (mined once with the base model), clusters every document's projected
token vectors into k = ceil(n / pool_factor) centroids (assignment without gradient,
centroids with gradient), and scores all queries against all documents of the batch
(in-batch negatives) by MaxSim on the centroids. Loss: temperature-scaled cross-entropy,
plus optional KL to teacher scores (the dense mean-pooled embedding of the base backbone).

With ``freeze_backbone=False`` the backbone is trained too, states computed live.

Checkpoints are pickle-free: ``checkpoint/`` holds ``trainable.safetensors`` (the trained
parameters), ``optimizer.safetensors`` (AdamW moments) and ``state.json`` (step, optimizer
scalars, config). Batches depend only on (seed, step), so ``resume`` continues exactly.
``mined_negatives.json`` records per data set a key of what its negatives were mined from
(base model, mining options, data): a new run re-mines on a mismatch, ``resume`` refuses it.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
import logging
import math
import os
import random
import shutil
import time
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from xtrieve.config import SHORT_DOCUMENT_VECTORS
from xtrieve.encode.crisp import crisp_pool, maxsim
from xtrieve.encode.encoder import check_device
from xtrieve.encode.heads import ResidualMLP, activate
from xtrieve.encode.loaders import MODEL_FILE, read_json, write_safetensors
from xtrieve.encode.precision import check_precision
from xtrieve.encode.train_data import (
    ATTENDED, BM25, OUTPUT, StateCache, TrainSet, chunked, default_cache, encoder_cache_key, load_train_set, pad_flags,
    pad_states, split_queries,
)
from xtrieve.errors import ConfigError, InputError, ModelLoadError

log = logging.getLogger(__name__)

CHECKPOINT_DIR = "checkpoint"


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    data: list[str]
    out: str
    split: str = "train"
    base: str | None = None
    pool_factor: int = 4
    # documents keep at least this many vectors, in training's clustering and in the model written
    # (EncoderConfig.pool_min_vectors)
    pool_min_vectors: int = SHORT_DOCUMENT_VECTORS
    max_steps: int | None = None       # None: one pass over the training queries
    freeze_backbone: bool = True
    resume: bool = False
    overwrite: bool = False            # replace a model already in ``out`` (without it, that is an error)
    batch_size: int = 32
    lr: float = 1e-3                   # head learning rate
    backbone_lr: float = 2e-5
    weight_decay: float = 0.0
    warmup_steps: int = 0
    seed: int = 0
    cache_dir: str | None = None
    n_negatives: int = 3
    mine_depth: int = 30               # negatives are drawn from the base model's top mine_depth
    mine_skip: int = 0                 # ... skipping the first mine_skip non-positive hits
    mine_with: str = "maxsim"          # maxsim (base head, unpooled) or dense (teacher embedding)
    cache_corpus: str = "auto"         # auto | yes | no: cache every document, or only what the steps need
    temperature: float = 0.05
    distill_weight: float = 0.0
    dense_weight: float | None = None  # score = MaxSim / n_q + w * cos(dense embeddings); None keeps the base model's
    denoise: bool = True               # drop mined negatives the dense teacher scores above the positive
    teacher_temperature: float = 0.05
    cluster: str = "ward"              # ward (as the index pools) or kmeans
    pool_queries: bool = False
    mlp_dim: int = 0                   # > 0: residual MLP of this width before the linear head
    train_layers: int = 0              # frozen backbone: also train its top N blocks (on cached inputs), lr backbone_lr
    holdout: float = 0.0               # fraction of training queries held out for eval / model selection
    eval_every: int = 0
    checkpoint_every: int = 50
    name: str | None = None
    progress: bool = True
    precision: str = "float32"         # the base model's arithmetic while caching the texts' states
    device: str = "cpu"                # where the base model encodes the texts (and a head trains)

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """ConfigError naming the first option with an unusable value."""
        def whole(name: str, low: int | None, allow_none: bool = False) -> None:
            v = getattr(self, name)
            if v is None and allow_none:
                return
            if isinstance(v, bool) or not isinstance(v, int) or (low is not None and v < low):
                raise ConfigError(f"{name} must be a whole number{'' if low is None else f' >= {low}'}, got {v!r}")

        def real(name: str, positive: bool, allow_none: bool = False) -> None:
            v = getattr(self, name)
            if v is None and allow_none:
                return
            number = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            if not number or v < 0 or (positive and v == 0):
                raise ConfigError(f"{name} must be a finite number {'> 0' if positive else '>= 0'}, got {v!r}")

        if not self.data:
            raise ConfigError("no training data given")
        whole("pool_factor", 1)
        whole("pool_min_vectors", 0)
        whole("max_steps", 0, allow_none=True)
        whole("batch_size", 2)
        whole("warmup_steps", 0)
        whole("n_negatives", 0)
        whole("mine_depth", 1)
        whole("mine_skip", 0)
        whole("mlp_dim", 0)
        whole("train_layers", 0)
        whole("eval_every", 0)
        whole("checkpoint_every", 1)
        whole("seed", None)
        if not -2**63 <= self.seed < 2**63:
            raise ConfigError(f"seed must fit in 64 bits, got {self.seed}")
        for name in ("lr", "backbone_lr", "temperature", "teacher_temperature"):
            real(name, positive=True)
        for name in ("weight_decay", "distill_weight"):
            real(name, positive=False)
        real("dense_weight", positive=False, allow_none=True)
        real("holdout", positive=False)
        if self.holdout >= 1:
            raise ConfigError(f"holdout (the fraction of queries held out) must be < 1, got {self.holdout!r}")
        for name, allowed in (("mine_with", ("maxsim", "dense")), ("cache_corpus", ("auto", "yes", "no")),
                              ("cluster", ("ward", "kmeans"))):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        check_precision(self.precision)
        if not isinstance(self.device, str):
            raise ConfigError(f"device must be a device name such as 'cpu' or 'cuda', got {self.device!r:.40}")
        check_device(self.device)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# -- the trainable model ------------------------------------------------------------------------


class TrainModel(torch.nn.Module):
    """(top backbone blocks) + (optional MLP) + linear head; owns the backbone when it is trained.

    With ``top_layers`` > 0 the cache holds the states entering those blocks and the model
    runs them (copies of the backbone's, trained) before the head.
    """

    def __init__(self, enc, mlp_dim: int = 0, train_backbone: bool = False, top_layers: int = 0) -> None:
        super().__init__()
        from xtrieve.encode.top_layers import TopLayers

        if enc.steps is not None:
            raise InputError(f"{enc.name}: training a head with nonlinear Dense layers before its projection "
                             f"({', '.join(enc.config.head_steps)}) is not supported")
        self.top = TopLayers(enc.backbone, top_layers) if top_layers > 0 else None
        hidden = int(enc.backbone.config.hidden_size)
        self.linear = torch.nn.Linear(hidden, enc.config.dim, bias=enc.config.head_bias)
        self.linear.load_state_dict(enc.head.state_dict())
        if enc.mlp is not None:
            self.mlp = ResidualMLP.from_state(enc.mlp.head_state(), hidden)
        elif mlp_dim > 0:
            self.mlp = ResidualMLP(hidden, mlp_dim)
        else:
            self.mlp = None
        self.normalize = enc.config.normalize
        self.activation = enc.config.head_activation
        self.backbone = enc.backbone if train_backbone else None
        self._encoder = enc if train_backbone else None  # (its states change as it trains: none cached)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        x = states if self.mlp is None else self.mlp(states)
        x = activate(self.linear(x), self.activation)
        return F.normalize(x, dim=-1) if self.normalize else x

    def encode_cached(self, cache: StateCache, texts: list[str], is_query: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Padded output vectors [n, L, dim] and their mask [n, L] from cached states (from the
        backbone's live ones while it trains)."""
        if self._encoder is not None:
            states, present, _ = live_states(self._encoder, texts, is_query)
            return self(states), present
        states, present = pad_states([cache.states(t, is_query) for t in texts], cache.hidden)
        if self.top is None:
            return self(states), present
        flags = pad_flags([cache.flags(t, is_query) for t in texts])
        hidden = self.top(states, (flags & ATTENDED) > 0)
        out, mask = pad_rows([hidden[i][(flags[i] & OUTPUT) > 0] for i in range(len(texts))])
        return self(out), mask

    def dense(self, cache: StateCache, texts: list[str], is_query: bool) -> torch.Tensor:
        """[n, hidden] dense embeddings (the backbone's normalised mean states), as the model
        being trained gives them: cached, or live while the backbone trains."""
        if self._encoder is not None:
            return live_states(self._encoder, texts, is_query, with_dense=True)[2]
        return torch.from_numpy(np.stack([cache.dense(t, is_query) for t in texts]))

    def head_params(self) -> list[torch.nn.Parameter]:
        return list(self.linear.parameters()) + (list(self.mlp.parameters()) if self.mlp is not None else [])

    def apply_to(self, enc) -> None:
        """Copy the trained weights into an Encoder (trained top blocks become its backbone overlay)."""
        with torch.no_grad():
            enc.head.load_state_dict(self.linear.state_dict())
        enc.mlp = (None if self.mlp is None else
                   ResidualMLP.from_state(self.mlp.head_state(), self.linear.in_features).eval().to(enc.device))
        if self.top is not None:
            self.top.copy_into(enc.backbone)
            enc.spec.backbone_overlay = {**(enc.spec.backbone_overlay or {}), **self.top.overlay_state()}
            enc.refresh_lean()


def live_states(enc, texts: list[str], is_query: bool,
                with_dense: bool = False) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Backbone states at the output positions, padded [n, L, H], their mask, and (``with_dense``)
    each text's dense embedding [n, H] (normalised mean of its attended states over all its
    windows, as the Encoder gives it), with gradient."""
    rows = enc.processor.rows(texts, is_query)
    batch = enc.processor.batch(rows.ids, is_query, context=rows.context)
    attention = batch.attention_mask.to(enc.device)
    hidden = enc.backbone(input_ids=batch.input_ids.to(enc.device), attention_mask=attention).last_hidden_state
    parts: list[list[torch.Tensor]] = [[] for _ in texts]
    for r, i in enumerate(rows.owner):  # rows come in window order
        parts[i].append(hidden[r][batch.output_mask[r].to(enc.device)])
    states, mask = pad_rows([p[0] if len(p) == 1 else torch.cat(p) for p in parts])
    dense = None
    if with_dense:
        owner = torch.as_tensor(rows.owner, device=hidden.device)
        att = attention.unsqueeze(-1).to(hidden.dtype)
        sums = torch.zeros(len(texts), hidden.shape[-1], dtype=hidden.dtype, device=hidden.device)
        counts = torch.zeros(len(texts), dtype=hidden.dtype, device=hidden.device)
        sums = sums.index_add(0, owner, (hidden * att).sum(1))
        counts = counts.index_add(0, owner, att.sum((1, 2)))
        dense = F.normalize(sums / counts.clamp(min=1.0)[:, None], dim=-1)
    return states, mask, dense


def pad_rows(rows: list[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Ragged [n_i, H] tensors padded to [n, L, H], with the [n, L] mask of real rows."""
    states = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
    mask = torch.zeros(states.shape[:2], dtype=torch.bool, device=states.device)
    for i, r in enumerate(rows):
        mask[i, : len(r)] = True
    return states, mask


# -- pickle-free checkpoints ----------------------------------------------------------------------


def save_checkpoint(folder: Path, model: TrainModel, opt: torch.optim.Optimizer, step: int, extra: dict) -> None:
    tmp = folder.with_name(folder.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    write_safetensors({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}, tmp / "trainable.safetensors")
    sd = opt.state_dict()
    tensors, scalars = {}, {}
    for pid, st in sd["state"].items():
        for name, value in st.items():
            if torch.is_tensor(value):
                tensors[f"{pid}.{name}"] = value.detach().cpu().contiguous()
            else:
                scalars[f"{pid}.{name}"] = value
    write_safetensors(tensors, tmp / "optimizer.safetensors")
    groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in sd["param_groups"]]
    (tmp / "state.json").write_text(json.dumps({"step": step, "param_groups": groups, "scalars": scalars, **extra},
                                               indent=1, default=str), encoding="utf-8")
    old = folder.with_name(folder.name + ".old")  # a kill at any point leaves a whole checkpoint under one name
    if old.exists():
        shutil.rmtree(old)
    if folder.exists():
        os.replace(folder, old)
    os.replace(tmp, folder)
    shutil.rmtree(old, ignore_errors=True)


def load_checkpoint(folder: Path, model: TrainModel, opt: torch.optim.Optimizer) -> dict:
    """Restore a training checkpoint into ``model`` and ``opt``; ModelLoadError when it is
    unreadable or was saved by a run with other trainable parts (--mlp-dim, --train-layers)."""
    from xtrieve.encode.loaders import read_safetensors

    state = read_json(folder / "state.json")
    try:
        model.load_state_dict(read_safetensors(folder / "trainable.safetensors"))
    except RuntimeError as exc:
        raise ModelLoadError(f"checkpoint {folder} does not fit this run's trainable parts: {exc}") from None
    tensors = read_safetensors(folder / "optimizer.safetensors")
    per: dict[int, dict] = {}
    for key, value in tensors.items():
        pid, name = key.split(".", 1)
        per.setdefault(int(pid), {})[name] = value
    for key, value in state.get("scalars", {}).items():
        pid, name = key.split(".", 1)
        per.setdefault(int(pid), {})[name] = value
    groups = []
    for g in state["param_groups"]:
        g = dict(g)
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
        groups.append(g)
    opt.load_state_dict({"state": per, "param_groups": groups})
    return state


# -- data preparation -----------------------------------------------------------------------------


@dataclasses.dataclass
class Prepared:
    sets: list[TrainSet]
    train_qids: list[list[str]]
    held_qids: list[list[str]]
    negatives: list[dict[str, list[str]]]   # per set: qid -> ranked hard negative doc ids


def batch_plan(n_per_set: list[int], batch_size: int, seed: int, epoch: int) -> list[tuple[int, list[int]]]:
    """One epoch of batches: (set index, query positions); each batch from one set."""
    rng = random.Random(seed * 1_000_003 + epoch)
    plan = []
    for si, n in enumerate(n_per_set):
        order = list(range(n))
        rng.shuffle(order)
        for part in chunked(order, batch_size):
            if len(part) >= max(2, min(batch_size, n) // 2):  # drop tiny tail batches
                plan.append((si, part))
    rng.shuffle(plan)
    return plan


def batches_for(step: int, n_per_set: list[int], batch_size: int, seed: int) -> tuple[int, list[int]]:
    """The batch of a global step (0-based), independent of how training got there."""
    per_epoch = len(_epoch_plan(tuple(n_per_set), batch_size, seed, 0))
    if per_epoch == 0:
        raise InputError(f"no training batch can be formed from {sum(n_per_set)} queries: a batch needs at least "
                         "2 queries of one data set")
    epoch, pos = divmod(step, per_epoch)
    return _epoch_plan(tuple(n_per_set), batch_size, seed, epoch)[pos]


def visited(n_per_set: list[int], batch_size: int, seed: int, steps: int) -> list[set[int]]:
    """Per set, the query positions that steps 0 .. steps - 1 use (every epoch reshuffles)."""
    used: list[set[int]] = [set() for _ in n_per_set]
    per_epoch = len(_epoch_plan(tuple(n_per_set), batch_size, seed, 0))  # the same for every epoch
    if per_epoch == 0:
        return used
    usable = [n if n >= 2 else 0 for n in n_per_set]  # a set of one query forms no batch
    for epoch in range(math.ceil(steps / per_epoch)):
        plan = _epoch_plan(tuple(n_per_set), batch_size, seed, epoch)
        for si, pos in plan[: steps - epoch * per_epoch]:
            used[si].update(pos)
        if all(len(u) == n for u, n in zip(used, usable)):
            break
    return used


@functools.lru_cache(maxsize=2)  # the current epoch's plan (and epoch 0's, which sizes an epoch)
def _epoch_plan(n_per_set: tuple[int, ...], batch_size: int, seed: int, epoch: int) -> list[tuple[int, list[int]]]:
    return batch_plan(list(n_per_set), batch_size, seed, epoch)


@torch.no_grad()
def base_scores(base_head, cache: StateCache, queries: list[str], docs: list[str], qbatch: int = 64,
                dbatch: int = 512) -> np.ndarray:
    """Unpooled MaxSim scores [n_q, n_d] with the base head, over cached states."""
    out = np.zeros((len(queries), len(docs)), dtype=np.float32)
    dvec = []
    for part in chunked(list(range(len(docs))), dbatch):
        dvec.append(base_head.encode_cached(cache, [docs[i] for i in part], False))
    for qs in chunked(list(range(len(queries))), qbatch):
        q, m = base_head.encode_cached(cache, [queries[i] for i in qs], True)
        col = 0
        for d, dm in dvec:
            sc = maxsim(q, m, d, dm, normalize_by_length=False, doc_chunk=128)
            out[qs[0]:qs[-1] + 1, col:col + d.shape[0]] = sc.numpy()
            col += d.shape[0]
    return out


def distinct_names(sets: list[TrainSet], sources: Sequence[str]) -> list[TrainSet]:
    """``sets`` with a name each (negatives are stored by it): two of one name (nq/train.jsonl,
    msmarco/train.jsonl) are named by the path they were given as instead."""
    names = [s.name for s in sets]
    return [dataclasses.replace(s, name=str(src)) if names.count(s.name) > 1 else s for s, src in zip(sets, sources)]


def mine(cfg: TrainConfig, enc, cache: StateCache, data: TrainSet, qids: list[str], base_head,
         n_train_queries: int) -> dict[str, list[str]]:
    """Hard negatives per query: the base model's top documents that are not positives. How they
    are mined depends on the data and the options alone (not on what the cache holds, nor on how
    many queries this call mines), so a resumed or repeated run mines the same ones."""
    depth = cfg.mine_depth
    doc_ids = list(data.corpus)
    # partial mode: BM25 proposes a few candidates per query, the base model ranks them
    per_query = cfg.n_negatives + cfg.mine_skip + 1
    if cfg.cache_corpus == "auto":  # the whole corpus is worth caching when it is little more than the candidates
        full = len(doc_ids) <= 1.25 * n_train_queries * per_query
    else:
        full = cfg.cache_corpus == "yes"
    pos_docs = {d for q in qids for d in data.positives[q]} | {d for q in qids for d in data.negatives.get(q, [])}
    candidates: dict[str, list[str]] = {}
    if full:
        cache.ensure([data.corpus[d] for d in doc_ids], False, progress=cfg.progress)
    else:
        log.info("%s: mining among %d BM25 candidates per query, not the whole corpus of %d (cache_corpus=yes "
                 "mines the whole corpus, --mine-depth deep)", data.name, per_query, len(doc_ids))
        bm = BM25([data.corpus[d] for d in doc_ids])
        candidates = {}
        for q in qids:
            cand = [doc_ids[i] for i in bm.top(data.queries[q], per_query + len(data.positives[q]))]
            candidates[q] = [d for d in cand if d not in data.positives[q]][:per_query]
        needed = sorted(pos_docs | {d for c in candidates.values() for d in c})
        cache.ensure([data.corpus[d] for d in needed], False, progress=cfg.progress)
    out: dict[str, list[str]] = {}
    if full:
        # the dense embedding (cached with the states) proposes, the base MaxSim model ranks
        qd = np.stack([cache.dense(data.queries[q], True) for q in qids])
        dd = np.stack([cache.dense(data.corpus[d], False) for d in doc_ids])
        scores = qd @ dd.T
        n_cand = min(len(doc_ids), max(100, 3 * (depth + cfg.mine_skip)))
        for qi, q in enumerate(qids):
            top = np.argpartition(-scores[qi], min(n_cand + len(data.positives[q]), len(doc_ids)) - 1)
            top = top[: n_cand + len(data.positives[q])]
            top = top[np.argsort(-scores[qi][top])]
            candidates[q] = [doc_ids[j] for j in top if doc_ids[j] not in data.positives[q]][:n_cand]
        if cfg.mine_with == "dense":
            return {q: candidates[q][cfg.mine_skip:cfg.mine_skip + depth] for q in qids}
    for q in qids:
        cand = candidates[q]
        if not cand:
            out[q] = []
            continue
        sc = base_scores(base_head, cache, [data.queries[q]], [data.corpus[d] for d in cand])[0]
        ranked = [cand[j] for j in np.argsort(-sc)]
        out[q] = ranked[cfg.mine_skip:cfg.mine_skip + depth] or ranked
    return out


MINED_FILE = "mined_negatives.json"
MINED_FORMAT = "xtrieve-mined-negatives"


def mining_key(cfg: TrainConfig, enc, data: TrainSet) -> str:
    """What a set's mined negatives depend on: base model, mining options and the data. (Not the
    pooling floor: mining ranks with the unpooled head, and files mined before it existed still match.)"""
    config = enc.config.to_dict()
    config.pop("pool_min_vectors", None)
    h = hashlib.sha256(json.dumps({
        "states": encoder_cache_key(enc), "head": enc.head_sha256(), "config": config,
        "mining": [cfg.n_negatives, cfg.mine_depth, cfg.mine_skip, cfg.mine_with, cfg.cache_corpus],
    }, sort_keys=True, default=str).encode())
    h.update(data.fingerprint().encode())
    return h.hexdigest()


def read_mined(path: Path, resume: bool) -> dict[str, dict]:
    """The per-set entries {"key", "negatives"} of a mined-negatives file ({} when there is none).

    A file that cannot be read or that an older version wrote (no keys) is dropped, or is an
    InputError when resuming: the checkpoint was trained on negatives that can't be checked.
    """
    if not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        ok = isinstance(raw, dict) and raw.get("format") == MINED_FORMAT and isinstance(raw.get("sets"), dict)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        ok = False
    if ok and all(isinstance(e, dict) and isinstance(e.get("key"), str) and isinstance(e.get("negatives"), dict)
                  for e in raw["sets"].values()):
        return raw["sets"]
    if resume:
        raise InputError(f"{path} is unreadable or was written by an older xtrieve (it does not record what its "
                         "negatives were mined from): train into a new --out, or without --resume")
    log.info("ignoring %s: unreadable or from an older xtrieve; mining afresh", path)
    return {}


def prepare(cfg: TrainConfig, enc, cache: StateCache, base_head, out: Path) -> Prepared:
    """Load the data, cache the states and mine the negatives of every query a step will use."""
    sets = distinct_names([load_train_set(d, cfg.split) for d in cfg.data], cfg.data)
    train_qids, held_qids = [], []
    for s in sets:
        qids = s.query_ids()
        if not qids:
            raise InputError(f"{s.name}: no queries with positives")
        tr, ho = split_queries(qids, cfg.holdout, cfg.seed) if cfg.holdout > 0 else (qids, [])
        train_qids.append(tr)
        held_qids.append(ho)
    n_per_set = [len(t) for t in train_qids]
    per_epoch = len(batch_plan(n_per_set, cfg.batch_size, cfg.seed, 0))
    if per_epoch == 0:
        counts = ", ".join(f"{s.name} {n}" for s, n in zip(sets, n_per_set))
        held = f" after --holdout {cfg.holdout}" if cfg.holdout > 0 else ""
        raise InputError(f"too few training queries to form a batch: usable queries (with a positive document in "
                         f"the corpus){held}: {counts}; a batch needs at least 2 queries of one data set")
    for s, n in zip(sets, n_per_set):
        if n < 2:
            log.warning("%s: only %d usable training query; it joins no batch (a batch needs 2 of one set)", s.name, n)
    # only the queries the steps will visit need states and negatives
    steps = cfg.max_steps if cfg.max_steps is not None else per_epoch
    used = visited(n_per_set, cfg.batch_size, cfg.seed, steps)
    mined_path = out / MINED_FILE
    stored = read_mined(mined_path, cfg.resume) if cfg.n_negatives > 0 else {}
    mined_all: dict[str, dict] = {}
    negatives = []
    for si, s in enumerate(sets):
        qids = [train_qids[si][i] for i in sorted(used[si])]
        cache.ensure([s.queries[q] for q in qids], True, progress=cfg.progress)
        have: dict[str, list[str]] = {}
        key = mining_key(cfg, enc, s) if cfg.n_negatives > 0 else ""
        if cfg.n_negatives > 0:
            entry = stored.get(s.name)
            if entry is not None and entry["key"] != key:
                if cfg.resume:
                    raise InputError(f"{mined_path}: the negatives of {s.name} were mined from other data, another "
                                     "base model or other mining options than this run's; resume with the data and "
                                     "options of the run that wrote it, or train into a new --out")
                log.info("%s: %s was mined from other data, model or options; mining afresh", s.name, mined_path)
                entry = None
            have = dict(entry["negatives"]) if entry is not None else {}
        need = [q for q in qids if q not in have]
        if need and cfg.n_negatives == 0:  # in-batch negatives only: nothing to mine
            have.update({q: [] for q in need})
        elif need:
            t0 = time.time()
            have.update(mine(cfg, enc, cache, s, need, base_head, len(train_qids[si])))
            log.info("%s: mined negatives for %d queries in %.0fs", s.name, len(need), time.time() - t0)
        for q in qids:  # given negatives (triples) come first
            given = [d for d in s.negatives.get(q, []) if d not in have.get(q, [])]
            have[q] = given + have.get(q, [])
        docs_needed = {d for q in qids for d in list(s.positives[q]) + have[q][: cfg.mine_depth] + s.negatives.get(q, [])}
        cache.ensure([s.corpus[d] for d in docs_needed], False, progress=cfg.progress)
        if cfg.n_negatives > 0:
            mined_all[s.name] = {"key": key, "negatives": have}
        negatives.append(have)
    out.mkdir(parents=True, exist_ok=True)
    if cfg.n_negatives > 0:  # a run without negatives mined nothing worth keeping for a later one
        tmp = mined_path.with_name(mined_path.name + ".tmp")
        tmp.write_text(json.dumps({"format": MINED_FORMAT, "version": 2, "sets": mined_all}), encoding="utf-8")
        os.replace(tmp, mined_path)
    return Prepared(sets, train_qids, held_qids, negatives)


# -- one step -------------------------------------------------------------------------------------


def make_batch(cfg: TrainConfig, prep: Prepared, step: int, cache: StateCache | None = None) -> dict:
    n_per_set = [len(t) for t in prep.train_qids]
    si, pos = batches_for(step, n_per_set, cfg.batch_size, cfg.seed)
    data = prep.sets[si]
    rng = random.Random(cfg.seed * 7_919 + step)
    qids = [prep.train_qids[si][i] for i in pos]
    docs: list[str] = []
    targets = []
    for q in qids:
        positives = sorted(data.positives[q])
        targets.append(len(docs))
        docs.append(rng.choice(positives))
        # a training row's own negatives take the first of the n_negatives places at every step;
        # mined ones fill the others
        given = [d for d in data.negatives.get(q, []) if d not in data.positives[q]]
        if len(given) > cfg.n_negatives:
            given = rng.sample(given, cfg.n_negatives)
        negs = [d for d in prep.negatives[si].get(q, []) if d not in data.positives[q] and d not in given]
        if cfg.denoise and cache is not None and negs:
            # likely false negatives (unlabelled relevant documents): the teacher prefers them to the positive
            qv = cache.dense(data.queries[q], True)
            bar = float(qv @ cache.dense(data.corpus[docs[-1]], False))
            negs = [d for d in negs if float(qv @ cache.dense(data.corpus[d], False)) < bar]
        room = max(0, cfg.n_negatives - len(given))
        if len(negs) > room:
            negs = rng.sample(negs, room)
        docs.extend(given + negs)
    # mask documents of the batch that are positives of a query but not its target
    allowed = torch.ones((len(qids), len(docs)), dtype=torch.bool)
    for i, q in enumerate(qids):
        for j, d in enumerate(docs):
            if j != targets[i] and d in data.positives[q]:
                allowed[i, j] = False
    return {"set": si, "qids": qids, "queries": [data.queries[q] for q in qids],
            "docs": [data.corpus[d] for d in docs], "targets": torch.tensor(targets), "allowed": allowed}


def dense_weight_of(cfg: TrainConfig, enc) -> float:
    return float(enc.config.dense_weight if cfg.dense_weight is None else cfg.dense_weight)


def dense_cosines(cache: StateCache, queries: list[str], docs: list[str]) -> torch.Tensor:
    """[n_queries, n_docs] cosines of the backbone's cached mean-pooled (dense) embeddings."""
    tq = torch.from_numpy(np.stack([cache.dense(t, True) for t in queries]))
    td = torch.from_numpy(np.stack([cache.dense(t, False) for t in docs]))
    return tq @ td.T


def step_loss(cfg: TrainConfig, model: TrainModel, enc, cache: StateCache, batch: dict) -> tuple[torch.Tensor, dict]:
    if model.backbone is None:
        q, qm = model.encode_cached(cache, batch["queries"], True)
        d, dm = model.encode_cached(cache, batch["docs"], False)
    else:
        qs, qm, qdense = live_states(enc, batch["queries"], True, with_dense=True)
        ds, dm, ddense = live_states(enc, batch["docs"], False, with_dense=True)
        q, d = model(qs), model(ds)
    if cfg.pool_factor > 1:
        d, dm = crisp_pool(d, dm, cfg.pool_factor, cfg.cluster, min_vectors=cfg.pool_min_vectors)
        if cfg.pool_queries:
            q, qm = crisp_pool(q, qm, cfg.pool_factor, cfg.cluster)
    scores = maxsim(q, qm, d, dm)
    w = dense_weight_of(cfg, enc)
    if w > 0:  # the dense term of the model being trained (a trained backbone's own; the teacher below stays the base's)
        cosines = dense_cosines(cache, batch["queries"], batch["docs"]) if model.backbone is None else qdense @ ddense.T
        scores = scores + w * cosines
    allowed = batch["allowed"]
    logits = (scores / cfg.temperature).masked_fill(~allowed, float("-inf"))
    loss_ce = F.cross_entropy(logits, batch["targets"])
    stats = {"ce": float(loss_ce.detach())}
    loss = loss_ce
    if cfg.distill_weight > 0:
        teacher = dense_cosines(cache, batch["queries"], batch["docs"]) / cfg.teacher_temperature
        teacher = teacher.masked_fill(~allowed, float("-inf"))
        p_t = teacher.softmax(-1)
        log_s = logits.log_softmax(-1)
        kl = (p_t * (teacher.log_softmax(-1) - log_s)).masked_fill(~allowed, 0.0).sum(-1).mean()
        loss = loss + cfg.distill_weight * kl
        stats["kl"] = float(kl.detach())
    stats["acc"] = float((logits.argmax(-1) == batch["targets"]).float().mean())
    return loss, stats


# -- the loop -------------------------------------------------------------------------------------


def train(cfg: TrainConfig, enc=None, callback=None) -> Path:
    """Train and write the model folder ``cfg.out`` (Encoder.load reads it); returns its path."""
    cfg.validate()
    torch.manual_seed(cfg.seed)
    out = Path(cfg.out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {out} is a file; a model is written into a folder")
    if (out / "manifest.json").exists():
        raise InputError(f"--out {out} is an index folder; write the model into a folder of its own")
    ckpt = out / CHECKPOINT_DIR
    previous = ckpt.with_name(ckpt.name + ".old")
    if cfg.resume and not ckpt.exists() and (previous / "state.json").exists():
        os.replace(previous, ckpt)  # killed while replacing it: the one before stands
    resuming = cfg.resume and (ckpt / "state.json").exists()
    if (out / MODEL_FILE).exists() and not (resuming or cfg.overwrite):
        raise InputError(f"--out {out} holds a model already" + (
            f" and no checkpoint to resume ({ckpt} is gone)" if cfg.resume else ": --resume continues its training")
            + ", --overwrite replaces it")
    if out.is_dir() and not (out / MODEL_FILE).exists() and not resuming:
        theirs = sorted(e.name for e in out.iterdir() if e.name not in _RUN_FILES)
        if theirs:
            raise InputError(f"--out {out} holds files that are not a model's ({', '.join(theirs[:3])}"
                             f"{', ...' if len(theirs) > 3 else ''}): give a new or empty folder")
    if resuming:
        check_resume(read_json(ckpt / "state.json"), cfg, ckpt)
    elif cfg.resume:
        log.warning("no checkpoint in %s: starting from step 0", ckpt)
    if cfg.overwrite and not resuming:
        shutil.rmtree(out / "best", ignore_errors=True)  # (a new run writes its own best model)
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _train(cfg, enc, callback, out, ckpt)
    except BaseException:
        if created and not any(out.iterdir()):
            out.rmdir()  # a run that failed before writing anything leaves no folder behind
        raise


# what a run writes into --out before its model (a folder holding only these may be trained into)
_RUN_FILES = frozenset({CHECKPOINT_DIR, CHECKPOINT_DIR + ".tmp", CHECKPOINT_DIR + ".old", "best", "train_log.json",
                        MINED_FILE, MINED_FILE + ".tmp"})

# settings a resumed run may change: how long and how visibly it runs, and where states are cached
# (not precision: the states a step reads, and so its negatives and gradients, follow it)
RESUME_FREE = frozenset({"out", "max_steps", "resume", "overwrite", "progress", "checkpoint_every", "eval_every",
                         "cache_dir", "name", "device"})
# settings added since checkpoints were first written, as a checkpoint without them trained
ADDED_SETTINGS = {"pool_min_vectors": 0}


def _resolved(config: dict) -> dict:
    """``config`` with its data paths and base model folder as absolute paths (one file may be
    given as t.jsonl, ./t.jsonl or /data/t.jsonl)."""
    out = dict(config)
    if isinstance(out.get("data"), list):
        out["data"] = [str(Path(d).resolve()) for d in out["data"]]
    base = out.get("base")
    if isinstance(base, str) and Path(base).expanduser().exists():
        out["base"] = str(Path(base).expanduser().resolve())
    return out


def check_resume(state: dict, cfg: TrainConfig, ckpt: Path) -> None:
    """InputError when ``cfg`` changes a setting the checkpoint was trained with (its optimizer
    state would keep the old learning rate, its batches the old data, ...); a warning when
    ``max_steps`` is already reached."""
    config = state.get("config") or {}
    saved = _resolved({**ADDED_SETTINGS, **config} if config else config)
    now = _resolved(json.loads(json.dumps(cfg.to_json(), default=str)))  # (as saved)
    changed = [k for k in now if k not in RESUME_FREE and k in saved and saved[k] != now[k]]
    if changed:
        raise InputError(f"--resume continues {ckpt} with the settings it was trained with; this run changes "
                         + ", ".join(f"{k} to {now[k]!r} (was {saved[k]!r})" for k in changed[:6])
                         + ": give the same settings, or train into a new --out")
    step = state.get("step")
    if cfg.max_steps is not None and isinstance(step, int) and step >= cfg.max_steps:
        log.warning("%s is at step %d already: --max-steps %d trains no further", ckpt, step, cfg.max_steps)


def _train(cfg: TrainConfig, enc, callback, out: Path, ckpt: Path) -> Path:
    from xtrieve.encode.encoder import Encoder

    if cfg.train_layers and not cfg.freeze_backbone:
        raise InputError("train_layers trains the top blocks of a frozen backbone; with --no-freeze-backbone all of it trains")
    enc = enc if enc is not None else Encoder.load(cfg.base, precision=cfg.precision, device=cfg.device)  # a given one keeps its own
    if enc.device.type != "cpu" and (cfg.train_layers or not cfg.freeze_backbone):
        raise ConfigError(f"training backbone layers (train_layers, --no-freeze-backbone) runs on the CPU: load the "
                          f"encoder with device='cpu', not {str(enc.device)!r} (a head alone trains from any device)")
    if cfg.train_layers and enc.config.doc_windows > 1:
        raise InputError(f"train_layers caches one input row per document: it needs doc_windows = 1, "
                         f"the base model has {enc.config.doc_windows}")
    try:
        base_model = TrainModel(enc, top_layers=cfg.train_layers).eval()
    except ValueError as exc:
        raise InputError(str(exc)) from None
    first = base_model.top.first if base_model.top is not None else None
    cache = StateCache(cfg.cache_dir or default_cache(), enc, layer=first)
    t0 = time.time()
    prep = prepare(cfg, enc, cache, base_model, out)
    log.info("data ready in %.0fs: %s", time.time() - t0,
             ", ".join(f"{s.name} {len(t)} train / {len(h)} held-out queries" for s, t, h in
                       zip(prep.sets, prep.train_qids, prep.held_qids)))
    data_key = hashlib.sha256("|".join(s.fingerprint() for s in prep.sets).encode()).hexdigest()
    if cfg.max_steps == 0:
        log.warning("--max-steps 0: the model is written untrained (the base model with this run's settings)")
    if cfg.pool_queries:
        log.warning("--pool-queries clusters query tokens in training only: searches never pool queries, so the "
                    "head learns for query vectors it will not be given")
    n_per_set = [len(t) for t in prep.train_qids]
    max_steps = cfg.max_steps if cfg.max_steps is not None else len(batch_plan(n_per_set, cfg.batch_size, cfg.seed, 0))

    model = TrainModel(enc, cfg.mlp_dim, train_backbone=not cfg.freeze_backbone, top_layers=cfg.train_layers)
    try:
        if cfg.freeze_backbone:
            enc.backbone.requires_grad_(False)
            groups = [{"params": model.head_params(), "lr": cfg.lr}]
            if model.top is not None:
                groups.append({"params": list(model.top.parameters()), "lr": cfg.backbone_lr})
        else:
            enc.backbone.train()
            groups = [{"params": model.head_params(), "lr": cfg.lr},
                      {"params": list(enc.backbone.parameters()), "lr": cfg.backbone_lr}]
        opt = torch.optim.AdamW(groups, weight_decay=cfg.weight_decay)
        base_lrs = [g["lr"] for g in opt.param_groups]
        step = 0
        history: list[dict] = []
        best: dict | None = None
        if cfg.resume and (ckpt / "state.json").exists():
            state = load_checkpoint(ckpt, model, opt)
            if state.get("data", data_key) != data_key:
                raise InputError(f"--resume continues {ckpt}, trained on other data than {', '.join(cfg.data)} holds now "
                                 "(rows, queries, judgments or documents changed): train into a new --out")
            step = int(state["step"])
            history = state.get("history", [])
            best = state.get("best")
            log.info("resumed from %s at step %d", ckpt, step)

        held_candidates: dict[int, dict[str, list[str]]] = {}

        def evaluate_held() -> dict:
            """nDCG@10 on held-out queries: MaxSim (Ward-pooled docs) reranking the dense top 100."""
            from xtrieve.encode.train_eval import dense_candidates, evaluate_rerank

            res = {}
            model.eval()
            for si, (s, ho) in enumerate(zip(prep.sets, prep.held_qids)):
                if ho:
                    if si not in held_candidates:
                        cache.ensure([s.queries[q] for q in ho], True, progress=False)
                        cache.ensure(list(s.corpus.values()), False, progress=cfg.progress)
                        held_candidates[si] = dense_candidates(cache, s, ho, 100)
                    r = evaluate_rerank(model, cache, s, held_candidates[si], cfg.pool_factor,
                                        dense_weight=dense_weight_of(cfg, enc), min_vectors=cfg.pool_min_vectors)
                    res[s.name] = round(r["ndcg_cut_10"], 2)
            model.train()
            if res:
                res["mean"] = round(float(np.mean(list(res.values()))), 2)
            return res

        def write_model(folder: Path, info: dict) -> None:
            model.apply_to(enc)
            # the pooling training clustered with (a PyLate base's too)
            enc.config = enc.config.replace(pool_factor=cfg.pool_factor, dense_weight=dense_weight_of(cfg, enc),
                                            pool_method="ward", pool_min_vectors=cfg.pool_min_vectors)
            enc.spec.config = enc.config
            name = cfg.name or f"{enc.name}-crisp-x{cfg.pool_factor}"
            if not cfg.freeze_backbone:
                enc.adopt_backbone_weights()  # (saved beside the head over a packaged backbone)
            enc.save(folder, name=name, extra={"training": info})

        if cfg.holdout > 0 and cfg.eval_every and step == 0 and best is None:
            res = evaluate_held()
            log.info("step 0 held-out nDCG@10 %s", res)
            history.append({"step": 0, "heldout": res})
            best = {"step": 0, "score": res.get("mean", 0.0)}
            write_model(out / "best", {"step": 0, "heldout": res})

        model.train()
        from tqdm.auto import tqdm

        bar = tqdm(total=max_steps, initial=step, desc="training", unit="step", disable=not cfg.progress)
        running: dict[str, float] = {}
        while step < max_steps:
            if cfg.warmup_steps and step < cfg.warmup_steps:
                for g, lr in zip(opt.param_groups, base_lrs):
                    g["lr"] = lr * (step + 1) / cfg.warmup_steps
            batch = make_batch(cfg, prep, step, cache)
            loss, stats = step_loss(cfg, model, enc, cache, batch)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
            for k, v in stats.items():
                running[k] = 0.9 * running.get(k, v) + 0.1 * v
            bar.update(1)
            bar.set_postfix({k: f"{v:.3f}" for k, v in running.items()})
            if callback is not None:
                callback(step, float(loss.detach()), stats)
            if cfg.holdout > 0 and cfg.eval_every and step % cfg.eval_every == 0:
                res = evaluate_held()
                log.info("step %d held-out nDCG@10 %s (train %s)", step, res, {k: round(v, 3) for k, v in running.items()})
                history.append({"step": step, "heldout": res, "train": dict(running)})
                if best is None or res.get("mean", 0.0) > best["score"]:
                    best = {"step": step, "score": res.get("mean", 0.0)}
                    write_model(out / "best", {"step": step, "heldout": res})
            if step % max(cfg.checkpoint_every, 1) == 0 or step == max_steps:
                save_checkpoint(ckpt, model, opt, step, {"config": cfg.to_json(), "history": history, "best": best,
                                                         "data": data_key})
        bar.close()
    finally:  # (a failed or interrupted run too) the encoder given, its backbone too when trained, encodes
        model.eval()  # without dropout from now on
    info = {"step": step, "config": {k: v for k, v in cfg.to_json().items() if k not in ("progress",)},
            "history": history, "best": best, "seconds": round(time.time() - t0, 1)}
    write_model(out, info)
    (out / "train_log.json").write_text(json.dumps(info, indent=1, default=str), encoding="utf-8")
    return out
