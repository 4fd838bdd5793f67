"""The Encoder: a transformer backbone plus a linear head, producing token vectors."""
from __future__ import annotations

import hashlib
import json
import logging
import numbers
import re
import shutil
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import torch

from xtrieve.config import EncoderConfig
from xtrieve.encode import loaders
from xtrieve.encode import bert_files, lean_bert, precision as precisions
from xtrieve.encode.heads import STEPS_PREFIX, DenseSteps, ResidualMLP, activate
from xtrieve.encode.pooling import check_pool_factor, pool_documents
from xtrieve.encode.tokenize import TextProcessor, check_texts
from xtrieve.errors import ConfigError, InputError, ModelLoadError
from xtrieve.onednn import pack_linears
from xtrieve.types import Encoded

log = logging.getLogger(__name__)

PROGRESS_MIN_TEXTS = 512
# glibc hands out buffers over 32 MiB as fresh mappings, paged in (and zeroed) on every use:
# 32 windows of 300 tokens took ~6,000 page faults per document and 12% of the CPU time in
# the kernel; batches kept under this size reuse the heap (MiniLM: 4,096 tokens, documents
# encoded ~10% faster)
BATCH_ACTIVATION_BYTES = 24 << 20
# weights a checkpoint may lack, or hold beyond the model, without changing its hidden states:
# the pooler (not read for token vectors) and position / token-type id buffers
TOLERATED_WEIGHTS = re.compile(r"(^|\.)pooler\.|(^|\.)(position_ids|token_type_ids)$")
# no encoder has more: a config.json claiming more is damaged (or hostile)
MAX_LAYERS = 512
# what loading a broken backbone folder raises inside transformers / torch / safetensors
LOAD_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, RuntimeError, KeyError, TypeError,
                                                AttributeError)
try:
    from safetensors import SafetensorError
    LOAD_ERRORS += (SafetensorError,)
except ImportError:  # older safetensors raise built-in errors
    pass
try:  # a config.json that transformers' config classes refuse (huggingface_hub >= 1.0)
    from huggingface_hub.errors import StrictDataclassError
    LOAD_ERRORS += (StrictDataclassError,)
except ImportError:
    pass


def weights_misfit(model: torch.nn.Module, missing: Iterable[str], unexpected: Iterable[str]) -> str | None:
    """Why loaded weights do not make ``model`` (missing weights, or unknown ones under the model's
    own modules), or None. Pooler and id buffers are tolerated either way, and unknown weights of
    a task head (e.g. BertForMaskedLM's ``cls.*``) as transformers and sentence-transformers do."""
    children = {name for name, _ in model.named_children()}
    missing = sorted(k for k in missing if not TOLERATED_WEIGHTS.search(k))
    unexpected = sorted(k for k in unexpected if not TOLERATED_WEIGHTS.search(k) and k.split(".", 1)[0] in children)
    parts = [f"{len(found)} {what} ({', '.join(found[:3])}{', ...' if len(found) > 3 else ''})"
             for what, found in (("missing", missing), ("unexpected", unexpected)) if found]
    return "; ".join(parts) or None


def check_device(device: Any) -> torch.device:
    """``device`` ("cpu", "cuda", "cuda:1", "mps" or a torch.device) if torch can use it here,
    else a ConfigError naming it."""
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise ConfigError(f"device must be a torch device name such as 'cpu' or 'cuda', got {device!r:.40}") from None
    if dev.type == "cpu":
        return dev
    if dev.type == "mps":
        backend = getattr(torch.backends, "mps", None)
        count = 1 if backend is not None and backend.is_available() else 0
    else:  # cuda, and other accelerators torch has a module for (xpu, ...)
        module = getattr(torch, dev.type, None) if dev.type != "meta" else None
        usable = module is not None and callable(getattr(module, "is_available", None)) and module.is_available()
        count = int(module.device_count()) if usable and hasattr(module, "device_count") else int(usable)
    if count == 0:
        raise ConfigError(f"device {device!r}: torch has no {dev.type} device here")
    if dev.index is not None and dev.index >= count:
        raise ConfigError(f"device {device!r}: torch sees {count} {dev.type} device(s) here, numbered from 0")
    return dev


def _check_size_claim(config: Any, spec: Any) -> None:
    """ModelLoadError when config.json describes a model far larger than the weights given (a
    damaged or hostile folder would otherwise allocate it all before any check)."""
    from transformers import AutoModel

    layers = max((getattr(config, name, 0) for name in ("num_hidden_layers", "n_layers", "num_layers")
                  if isinstance(getattr(config, name, 0), int)), default=0)
    if layers > MAX_LAYERS:  # (even an empty shell of that many would take long to build)
        raise ModelLoadError(f"{spec.backbone_dir}/config.json describes {layers:,} layers (at most {MAX_LAYERS})")
    with torch.device("meta"):  # (shapes only: nothing is allocated)
        shell = AutoModel.from_config(config, trust_remote_code=False)
    claimed = 2 * sum(p.numel() for p in shell.parameters())  # bytes, at 16 bits a weight
    if spec.backbone_state is not None:
        stored = sum(t.numel() * t.element_size() for t in spec.backbone_state.values())
    else:
        stored = sum(p.stat().st_size for p in spec.backbone_dir.iterdir()
                     if p.suffix in (".safetensors", ".bin") and p.is_file())
    if claimed > 2 * stored + (64 << 20):
        raise ModelLoadError(f"{spec.backbone_dir}/config.json describes a model of {claimed // 2:,} weights, but its "
                             f"weight files hold {stored:,} bytes")


def check_batch_size(batch_size: Any) -> int:
    """``batch_size`` if it is an int >= 1 (not a bool), else InputError."""
    if isinstance(batch_size, bool) or not isinstance(batch_size, numbers.Integral) or batch_size < 1:
        raise InputError(f"batch_size must be an int >= 1, got {batch_size!r}")
    return int(batch_size)


class WindowJoin:
    """Joins per-row outputs into one array per text (a long document's windows in order) and,
    when asked, gives each text's mean embedding over the attended states of all its rows."""

    def __init__(self, n_texts: int, hidden_size: int = 0) -> None:
        self._parts: list[list[tuple[int, np.ndarray]]] = [[] for _ in range(n_texts)]
        self._sums = np.zeros((n_texts, hidden_size), dtype=np.float64)
        self._counts = np.zeros(n_texts, dtype=np.float64)

    def add(self, text: int, window: int, array: np.ndarray) -> None:
        self._parts[text].append((window, array))

    def add_states(self, texts: list[int], hidden: torch.Tensor, attention_mask: torch.Tensor) -> None:
        """Accumulate the rows' attended hidden states for :meth:`dense`."""
        att = attention_mask.unsqueeze(-1).to(hidden.dtype)
        sums = (hidden * att).sum(1).float().cpu().numpy()
        counts = attention_mask.sum(1).float().cpu().numpy()
        for row, i in enumerate(texts):
            self._sums[i] += sums[row]
            self._counts[i] += counts[row]

    def arrays(self) -> list[np.ndarray]:
        out = []
        for parts in self._parts:
            parts.sort(key=lambda p: p[0])
            out.append(parts[0][1] if len(parts) == 1 else np.concatenate([a for _, a in parts]))
        return out

    def dense(self) -> np.ndarray:
        """L2-normalised mean of each text's attended states, float32 (sentence-transformers' mean
        pooling when a text is one row)."""
        mean = self._sums / np.maximum(self._counts, 1.0)[:, None]
        return (mean / np.maximum(np.linalg.norm(mean, axis=1, keepdims=True), 1e-12)).astype(np.float32)


class Encoder:
    """Encodes queries and documents into L2-normalised token vectors [n_tokens, dim]."""

    def __init__(self, spec: loaders.ModelSpec, device: str = "cpu", precision: str = "float32") -> None:
        self.spec = spec
        self.config: EncoderConfig = spec.config
        self.name = spec.name
        self.device = torch.device(device)
        self.precision = precision
        self._backbone: torch.nn.Module | None = None  # transformers' model, loaded when first needed
        self._state_sha256: str | None = None
        self._tokenizer = None
        # one query's few rows: a lean BERT pass or oneDNN-packed linears (xtrieve.onednn); on a
        # CPU, a plain BERT folder runs every batch through the lean pass without transformers
        self.lean: lean_bert.LeanBert | None = None
        files = bert_files.read(Path(spec.backbone_dir), spec.backbone_state, spec.backbone_overlay) \
            if self.device.type == "cpu" else None
        if files is not None:
            self.lean = lean_bert.LeanBert.from_state(files.state, files.config)
            self.hidden_size = self.lean.shape.hidden
            tokenizer = files.tokenizer
        else:
            self._load_transformers()
            self.hidden_size = int(self.backbone.config.hidden_size)
            tokenizer = self.tokenizer
        self._check_fit(files.config if files is not None else self.backbone.config, tokenizer)
        self.steps = None  # optional nonlinear Dense steps before the head (head.safetensors ``steps.*`` keys)
        extra = dict(spec.head_extra or {})
        step_state = {k: extra.pop(k) for k in list(extra) if k.startswith(STEPS_PREFIX)}
        if step_state or self.config.head_steps:
            try:
                self.steps = DenseSteps(step_state, self.config.head_steps, self.hidden_size).eval().to(self.device)
            except ValueError as exc:
                raise ModelLoadError(f"{spec.name}: the head's Dense steps do not fit: {exc}") from None
        hidden = self.hidden_size if self.steps is None else self.steps.out_features
        self.head = torch.nn.Linear(hidden, self.config.dim, bias=self.config.head_bias)
        with torch.no_grad():
            if spec.head_weight is None:
                if self.config.dim != hidden:
                    raise ModelLoadError(f"{spec.name}: the model has no projection head ({loaders.HEAD_FILE} or a "
                                         f"Dense module), and its dim {self.config.dim} is not the backbone's hidden "
                                         f"size {hidden}")
                self.head.weight.copy_(torch.eye(hidden))
            else:
                if tuple(spec.head_weight.shape) != (self.config.dim, hidden):
                    raise ModelLoadError(
                        f"{spec.name}: head weight has shape {tuple(spec.head_weight.shape)}, expected ({self.config.dim}, {hidden})"
                    )
                self.head.weight.copy_(spec.head_weight.float())
            if self.head.bias is not None:
                if spec.head_bias is not None and tuple(spec.head_bias.shape) != (self.config.dim,):
                    raise ModelLoadError(
                        f"{spec.name}: head bias has shape {tuple(spec.head_bias.shape)}, expected ({self.config.dim},)")
                self.head.bias.copy_(spec.head_bias.float() if spec.head_bias is not None else torch.zeros(self.config.dim))
        self.head.eval().to(self.device)
        self.mlp = None  # optional residual MLP before the head (head.safetensors ``mlp.*`` keys)
        if extra:
            if self.steps is not None:
                raise ModelLoadError(f"{spec.name}: head.safetensors has both Dense steps and other extra keys")
            try:
                self.mlp = ResidualMLP.from_state(extra, hidden).eval().to(self.device)
            except (ValueError, RuntimeError) as exc:
                raise ModelLoadError(f"{spec.name}: head.safetensors has extra keys that are not a valid MLP: {exc}") from None
        self.processor = TextProcessor(tokenizer, self.config)

    def _check_fit(self, config: Any, tokenizer: Any) -> None:
        """ModelLoadError for a tokenizer far smaller than the model's vocabulary (missing or foreign
        tokenizer files: most words would be [UNK]); ConfigError for a query_maxlen or doc_maxlen
        longer than the backbone's positions (it would fail on the first long text)."""
        get = config.get if isinstance(config, dict) else (lambda key, default=None: getattr(config, key, default))
        vocab, n_tokens = get("vocab_size", None), len(tokenizer)
        if isinstance(vocab, int) and n_tokens < vocab // 2:
            raise ModelLoadError(
                f"{self.spec.backbone_dir}: the tokenizer has {n_tokens} tokens but config.json's vocab_size is {vocab}: "
                "the tokenizer files (tokenizer.json, vocab.txt) are missing or belong to another model")
        limit = loaders.max_positions(config)
        for field in ("query_maxlen", "doc_maxlen"):
            value = getattr(self.config, field)
            if limit is not None and value > limit:
                raise ConfigError(f"{self.spec.name}: {field} {value} is longer than the {limit} positions the backbone "
                                  f"has (max_position_embeddings in {self.spec.backbone_dir / 'config.json'}); "
                                  f"use {field} <= {limit}")

    def _load_transformers(self) -> None:
        """Build the backbone as a transformers model (training, hooks, GPUs, other architectures).

        Missing weights (left randomly initialised by transformers), weights the config has no
        place for, and an overlay that does not fit are ModelLoadErrors."""
        from transformers import AutoModel

        spec = self.spec
        try:
            from transformers import AutoConfig

            # trust_remote_code=False: a folder's own Python code never runs (nor is asked about on stdin)
            config = AutoConfig.from_pretrained(str(spec.backbone_dir), trust_remote_code=False)
            _check_size_claim(config, spec)
            if spec.backbone_state is not None:
                backbone = AutoModel.from_config(config, trust_remote_code=False)
                missing, unexpected = backbone.load_state_dict(spec.backbone_state, strict=False)
            else:
                if not (spec.backbone_dir / "model.safetensors").exists() and loaders.has_weights(spec.backbone_dir):
                    loaders.read_weights(spec.backbone_dir)  # a .bin: refused by name unless it loads weights-only
                backbone, info = AutoModel.from_pretrained(str(spec.backbone_dir), config=config, output_loading_info=True,
                                                           trust_remote_code=False)
                missing, unexpected = info.get("missing_keys", ()), info.get("unexpected_keys", ())
            misfit = weights_misfit(backbone, missing, unexpected)
            if misfit:
                raise ModelLoadError(f"the backbone weights in {spec.backbone_dir} do not fit its config.json: {misfit}")
            if spec.backbone_overlay is not None:
                own = backbone.state_dict()
                unknown = [k for k in spec.backbone_overlay if k not in own]
                if unknown:
                    raise ModelLoadError(f"{spec.name}: backbone overlay names weights {spec.backbone_dir} does not have: {unknown[:3]}")
                loaders.check_overlay_shapes(spec.backbone_overlay, {k: own[k].shape for k in spec.backbone_overlay},
                                             f"{spec.name}: ")
                backbone.load_state_dict(spec.backbone_overlay, strict=False)
        except LOAD_ERRORS as exc:
            message = str(exc).strip().splitlines()
            raise ModelLoadError(f"cannot load the backbone from {spec.backbone_dir}: {type(exc).__name__}: "
                                 f"{message[0] if message else ''}") from None
        # float32 whatever the checkpoint's dtype (transformers loads a bf16/fp16 one as such):
        # the upcast is exact, and CPUs without bf16/fp16 units run float32 faster and closer
        backbone.float().eval().to(self.device)
        self.lean = None
        if self.device.type == "cpu":
            if lean_bert.supports(backbone):
                self.lean = lean_bert.LeanBert.of_model(backbone)
            else:
                pack_linears(backbone)
        self._backbone = backbone

    @property
    def precision(self) -> str:
        """The backbone's arithmetic, "float32" or "bfloat16" (``xtrieve.encode.precision``); a
        setting of this encoder, not of the model: the same model may build and search in either."""
        return self._precision

    @precision.setter
    def precision(self, value: str) -> None:
        self._precision = precisions.check_precision(value)
        precisions.check_precision_for(self._precision, self.device)

    @property
    def backbone(self) -> torch.nn.Module:
        """The backbone as a transformers model, loaded on first use (encoding may not need it)."""
        if self._backbone is None:
            self._load_transformers()
        return self._backbone

    @property
    def tokenizer(self):
        """The backbone's transformers tokenizer, loaded on first use."""
        if self._tokenizer is None:
            from transformers import AutoTokenizer

            try:
                self._tokenizer = AutoTokenizer.from_pretrained(str(self.spec.backbone_dir), trust_remote_code=False)
            except Exception as exc:  # (tokenizers raises a bare Exception for a broken tokenizer.json)
                raise ModelLoadError(f"cannot load the tokenizer from {self.spec.backbone_dir}: "
                                     f"{type(exc).__name__}: {exc}") from None
        return self._tokenizer

    # -- loading and saving -------------------------------------------------------------

    @classmethod
    def load(cls, name_or_path: str | Path | None = None, *, device: str | torch.device = "cpu",
             config: Mapping[str, Any] | None = None, precision: str = "float32") -> "Encoder":
        """Load the default offline model (None), a model folder, or a hub id.

        ``precision="bfloat16"`` runs the backbone's products in bfloat16: on CPUs with bfloat16
        units about half the encoding time of a build, and of a BERT backbone's queries ~40% less,
        vectors within bfloat16's rounding of float32's (see ``xtrieve.encode.precision``); the
        default float32 gives exactly the vectors of the model's own library.

        ``config``: a dict of EncoderConfig fields to change in the model's own config, e.g.
        ``{"pool_factor": 2}``; the other fields keep the model's values (its markers and lengths).
        An EncoderConfig object is refused: it sets every field, so it cannot say which ones to
        change; pass ``cfg.to_dict()`` to replace them all.
        """
        if isinstance(config, EncoderConfig):
            raise ConfigError("Encoder.load(config=...) takes a dict of the fields to change, e.g. "
                              "config={'pool_factor': 2}; an EncoderConfig object would reset every other field "
                              "of the model's own config (pass cfg.to_dict() to replace them all)")
        if config is not None and not isinstance(config, Mapping):
            raise ConfigError(f"Encoder.load(config=...) takes a dict of EncoderConfig fields, e.g. "
                              f"config={{'pool_factor': 2}}, got {type(config).__name__} {config!r:.60}")
        precisions.check_precision(precision)
        check_device(device)  # (before any weights load)
        spec = loaders.load_spec(name_or_path)
        if config:
            dim = config.get("dim", spec.config.dim)
            if spec.head_weight is not None and isinstance(dim, int) and not isinstance(dim, bool) and dim != spec.config.dim:
                raise ConfigError(f"dim is fixed by the model's head: {spec.config.dim} for {spec.name}")
            spec.config = EncoderConfig.from_dict({**spec.config.to_dict(), **config})
        return cls(spec, device=device, precision=precision)

    def head_state(self) -> dict[str, torch.Tensor]:
        state = {"weight": self.head.weight.detach().cpu().float().contiguous()}
        if self.head.bias is not None:
            state["bias"] = self.head.bias.detach().cpu().float().contiguous()
        for part in (self.mlp, self.steps):
            if part is not None:
                state.update(part.head_state())
        return state

    def head_sha256(self) -> str:
        """Checksum of the head, of any backbone overlay and of any fine-tuned backbone weights
        (the parts a trained model changes)."""
        h = hashlib.sha256()
        overlay = {f"overlay.{k}": v.float() for k, v in (self.spec.backbone_overlay or {}).items()}
        for key, tensor in sorted({**self.head_state(), **overlay}.items()):
            h.update(key.encode())
            h.update(tensor.numpy().tobytes())
        if self._tuned_package_backbone():  # (absent: checksums as before it counted)
            h.update(self._backbone_state_sha256().encode())
        return h.hexdigest()

    def refresh_lean(self) -> None:
        """Run the transformers backbone's current weights (retrained ones too) through the lean
        pass from now on: a lean pass built from the folder's files would keep the old ones."""
        backbone = self.backbone
        self.lean = (lean_bert.LeanBert.of_model(backbone)
                     if self.device.type == "cpu" and lean_bert.supports(backbone) else None)

    def adopt_backbone_weights(self) -> None:
        """Take the transformers backbone's current (fine-tuned) weights as the model's own:
        over a packaged backbone they are saved beside the head and counted in the identity
        (a copied backbone holds them itself), and the lean pass runs them."""
        if "package" in self.spec.backbone_ref:
            self.spec.backbone_state = {k: v.detach().clone().contiguous() for k, v in self.backbone.state_dict().items()}
            self._state_sha256 = None
        self.refresh_lean()

    def _tuned_package_backbone(self) -> bool:
        """Whether the model's backbone is a package's with fine-tuned weights over it (a
        ``BACKBONE_STATE_FILE`` beside the head; a Stanford ColBERT checkpoint's own weights are not that)."""
        return self.spec.backbone_state is not None and "package" in self.spec.backbone_ref

    def _backbone_state_sha256(self) -> str:
        """Checksum of the fine-tuned backbone weights the model folder brought (made once)."""
        if self._state_sha256 is None:
            h = hashlib.sha256()
            for key, tensor in sorted(self.spec.backbone_state.items()):
                h.update(key.encode())
                h.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
            self._state_sha256 = h.hexdigest()
        return self._state_sha256

    def identity(self) -> dict[str, Any]:
        """A JSON-able fingerprint: same name and head checksum = same model."""
        return {
            "name": self.name, "backbone": self.spec.backbone_ref, "head_sha256": self.head_sha256(),
            "dim": self.config.dim, "config": self.config.to_dict(),
        }

    def save(self, folder: str | Path, *, name: str | None = None, copy_backbone: bool | None = None,
             extra: dict[str, Any] | None = None) -> Path:
        """Write a model folder ``Encoder.load`` reads back (head + config + backbone ref).

        A backbone shipped by a package stays a reference; any other is copied into
        ``folder/backbone`` unless copy_backbone is False.
        """
        folder = Path(folder)
        if folder.exists() and not folder.is_dir():
            raise InputError(f"cannot save a model to {folder}: it is a file")
        if (folder / "manifest.json").exists():
            raise InputError(f"cannot save a model into {folder}: it is an index folder")
        folder.mkdir(parents=True, exist_ok=True)
        ref = dict(self.spec.backbone_ref)
        if copy_backbone is None:
            copy_backbone = "package" not in ref
        if copy_backbone:
            target = folder / "backbone"
            if target.resolve() != Path(self.spec.backbone_dir).resolve():
                if target.exists():
                    shutil.rmtree(target)
                self.tokenizer.save_pretrained(str(target))
                self.backbone.save_pretrained(str(target), safe_serialization=True)
                _umask_modes(target)
            ref = {"path": "backbone"}
        elif (folder / "backbone").is_dir() and (folder / "backbone").resolve() != Path(self.spec.backbone_dir).resolve():
            shutil.rmtree(folder / "backbone")  # an earlier model's copy, which this one does not use
        loaders.write_safetensors(self.head_state(), folder / loaders.HEAD_FILE)
        state_path = folder / loaders.BACKBONE_STATE_FILE  # (a copied backbone holds these weights already)
        if self._tuned_package_backbone() and not copy_backbone:
            loaders.write_safetensors({k: v.contiguous() for k, v in self.spec.backbone_state.items()}, state_path)
        elif state_path.exists():
            state_path.unlink()
        overlay_path = folder / loaders.OVERLAY_FILE
        if self.spec.backbone_overlay is not None and not copy_backbone:
            loaders.write_safetensors({k: v.contiguous() for k, v in self.spec.backbone_overlay.items()}, overlay_path)
        elif overlay_path.exists():
            overlay_path.unlink()
        meta = {
            "format": "xtrieve-model", "version": 1, "name": name or self.name, "backbone": ref,
            "encoder_config": self.config.to_dict(), **(extra or {}),
        }
        (folder / loaders.MODEL_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        return folder

    # -- encoding -----------------------------------------------------------------------

    def _batches(self, texts: list[str], is_query: bool, batch_size: int, show_progress: bool | None,
                 desc: str, truncated: list[int] | None = None) -> Iterable[tuple[list[int], list[int], object]]:
        """Yield (text index, window number) of each row and the rows' Batch, in length-sorted
        order; ``truncated`` gets the number of texts longer than the model reads."""
        rows = self.processor.rows(texts, is_query)
        if truncated is not None:
            truncated.append(rows.n_truncated)
        if rows.n_truncated:
            maxlen = self.config.query_maxlen if is_query else self.config.doc_maxlen * self.config.doc_windows
            # (a search encodes its queries: a log line per long one would be noise at INFO)
            log.log(logging.DEBUG if is_query else logging.INFO, "%d of %d %s truncated to about %d tokens",
                    rows.n_truncated, len(texts), desc, maxlen)
        order = sorted(range(len(rows.ids)), key=lambda r: len(rows.ids[r]), reverse=True)
        # None: a bar for many texts when stderr is a terminal (tqdm's disable=None)
        hidden = (None if len(texts) >= PROGRESS_MIN_TEXTS else True) if show_progress is None else not show_progress
        from tqdm.auto import tqdm

        unit = "text" if len(rows.ids) == len(texts) else "window"
        with tqdm(total=len(rows.ids), desc=f"encoding {desc}", unit=unit, disable=hidden) as bar:
            max_tokens = self._batch_tokens()
            start = 0
            while start < len(order):  # longest rows first: a batch is as wide as its first row
                size = batch_size if max_tokens is None else min(batch_size, max(1, max_tokens // len(rows.ids[order[start]])))
                chunk = order[start:start + size]
                start += size
                batch = self.processor.batch([rows.ids[r] for r in chunk], is_query,
                                             context=[rows.context[r] for r in chunk])
                yield [rows.owner[r] for r in chunk], [rows.window[r] for r in chunk], batch
                bar.update(len(chunk))

    def _batch_tokens(self) -> int | None:
        """On the CPU, the most tokens (padded) one batch may hold: its widest activation, the
        feed-forward layer's ~4 x hidden floats per token, stays under BATCH_ACTIVATION_BYTES."""
        if self.device.type != "cpu":
            return None
        return BATCH_ACTIVATION_BYTES // (4 * 4 * self.hidden_size)

    def _hidden(self, batch, is_query: bool) -> torch.Tensor:
        """The backbone's last hidden states, float32, in this encoder's precision whatever
        autocast the caller runs under."""
        input_ids, attention_mask = batch.input_ids.to(self.device), batch.attention_mask.to(self.device)
        bfloat16 = self.precision == "bfloat16"
        with precisions.exact(self.device):
            if self.lean is not None and (self._backbone is None or self.lean.handles(input_ids, bfloat16)):
                hidden = self.lean(input_ids, attention_mask, bfloat16=bfloat16)
            else:
                with precisions.backbone_context(self.precision, self.device, is_query, input_ids.numel()):
                    hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        return hidden.float()

    def token_states(self, texts: list[str], is_query: bool, batch_size: int = 32,
                     show_progress: bool | None = None) -> list[np.ndarray]:
        """Backbone hidden states at the output positions (before the head), float32."""
        texts = check_texts(texts, "queries" if is_query else "documents")
        batch_size = check_batch_size(batch_size)
        if not texts:
            return []
        join = WindowJoin(len(texts))
        with torch.inference_mode():
            for owners, windows, batch in self._batches(texts, is_query, batch_size, show_progress,
                                                        "queries" if is_query else "documents"):
                hidden = self._hidden(batch, is_query)
                for row, (i, k) in enumerate(zip(owners, windows)):
                    join.add(i, k, hidden[row][batch.output_mask[row]].cpu().numpy())
        return join.arrays()

    def project(self, states: torch.Tensor) -> torch.Tensor:
        """Apply the head and (optionally) L2-normalise."""
        x = states if self.steps is None else self.steps(states)
        x = activate(self.head(x if self.mlp is None else self.mlp(x)), self.config.head_activation)
        return torch.nn.functional.normalize(x, dim=-1) if self.config.normalize else x

    @property
    def fuses_dense(self) -> bool:
        """Whether scores add ``dense_weight`` x the cosine of mean-pooled backbone embeddings."""
        return self.config.dense_weight > 0

    def _encode(self, texts: list[str], is_query: bool, batch_size: int, show_progress: bool | None,
                with_dense: bool) -> tuple[list[np.ndarray], np.ndarray | None, int]:
        join = WindowJoin(len(texts), self.hidden_size if with_dense else 0)
        truncated: list[int] = []
        with torch.inference_mode():
            for owners, windows, batch in self._batches(texts, is_query, batch_size, show_progress,
                                                        "queries" if is_query else "documents", truncated):
                hidden = self._hidden(batch, is_query)
                with precisions.exact(self.device):
                    vectors = self.project(hidden).float()
                for row, (i, k) in enumerate(zip(owners, windows)):
                    join.add(i, k, vectors[row][batch.output_mask[row]].cpu().numpy())
                if with_dense:
                    join.add_states(owners, hidden, batch.attention_mask.to(hidden.device))
        return join.arrays(), (join.dense() if with_dense else None), sum(truncated)

    def encode(self, texts: Iterable[str], is_query: bool, batch_size: int = 32, pool_factor: int | None = None,
               show_progress: bool | None = None) -> Encoded:
        """Token vectors (documents pooled by ``pool_factor``, default the model's), token counts
        and, when the model fuses one, each text's dense embedding.

        ``is_query``: encode as queries (the model's query marker and [MASK] padding) or as
        documents; ``batch_size``: texts per forward pass; ``show_progress``: a progress bar
        (None: on a terminal only)."""
        if not isinstance(is_query, (bool, np.bool_)):
            raise InputError(f"is_query must be True or False, got {is_query!r:.40}")
        texts = check_texts(texts, "queries" if is_query else "documents")
        batch_size = check_batch_size(batch_size)
        pool_factor = self.config.pool_factor if pool_factor is None else check_pool_factor(pool_factor)
        if not texts:  # nothing in, nothing out, as in PyLate and sentence-transformers
            return Encoded([], [], np.zeros((0, self.hidden_size), np.float32) if self.fuses_dense else None)
        vectors, dense, n_truncated = self._encode(texts, is_query, batch_size, show_progress, self.fuses_dense)
        counts = [int(v.shape[0]) for v in vectors]
        if not is_query:
            vectors = pool_documents(vectors, pool_factor, self.config.pool_method, self.config.pool_min_vectors)
        return Encoded(vectors=vectors, n_tokens=counts, dense=dense, n_truncated=n_truncated)

    def encode_queries(self, texts: Iterable[str], batch_size: int = 32, show_progress: bool | None = None) -> list[np.ndarray]:
        """One float32 array [n_q, dim] per query."""
        return self.encode(texts, True, batch_size, show_progress=show_progress).vectors

    def encode_documents_with_counts(self, texts: Iterable[str], batch_size: int = 32, pool_factor: int | None = None,
                                     show_progress: bool | None = None) -> tuple[list[np.ndarray], list[int]]:
        """Document vectors (pooled by pool_factor) and each document's token count before pooling."""
        out = self.encode(texts, False, batch_size, pool_factor, show_progress)
        return out.vectors, out.n_tokens

    def encode_documents(self, texts: Iterable[str], batch_size: int = 32, pool_factor: int | None = None,
                         show_progress: bool | None = None) -> list[np.ndarray]:
        """One float32 array [n_vectors, dim] per document (pooled when pool_factor > 1)."""
        return self.encode_documents_with_counts(texts, batch_size, pool_factor, show_progress)[0]

    def __repr__(self) -> str:
        extra = "" if self.precision == "float32" else f", precision={self.precision!r}"
        return f"Encoder(name={self.name!r}, dim={self.config.dim}, pool_factor={self.config.pool_factor}{extra})"


def _umask_modes(folder: Path) -> None:
    """Give the safetensors files ``save_pretrained`` wrote in ``folder`` the mode its other files
    got from the umask (its weights go through safetensors' ``save_file``, which creates 0600)."""
    reference = folder / "config.json"
    if not reference.is_file():
        return
    mode = stat.S_IMODE(reference.stat().st_mode)
    for path in folder.glob("*.safetensors"):
        if stat.S_IMODE(path.stat().st_mode) != mode:
            path.chmod(mode)
