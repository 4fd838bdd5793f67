"""Open a plain BERT backbone folder without transformers: weights via ``loaders.read_weights``
(safetensors, or a weights-only ``torch.load``), the tokenizer via ``tokenizers``.

Importing transformers and building its model costs ~2.8 s per process, more than half of a
one-query CLI search. For the folders whose meaning is settled (a BERT config the lean pass
reproduces, a ``tokenizer.json`` whose WordPiece setup agrees with ``tokenizer_config.json``,
every weight present), the Encoder reads the files itself: the same token ids and the same
weights, so the same vectors. Anything else returns None and goes through transformers; a
weights file that cannot be read, or that does not fit config.json, is a ModelLoadError.
"""
from __future__ import annotations

import dataclasses
import json
import logging
from pathlib import Path
from typing import Any

import torch

from xtrieve.encode.lean_bert import BertShape, plain_bert_config
from xtrieve.encode.loaders import check_overlay_shapes, has_weights, read_weights
from xtrieve.errors import ModelLoadError

log = logging.getLogger(__name__)

NAMED_SPECIALS = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# BertModel weights the forward does not read; any other unknown name means a different model
UNREAD_WEIGHTS = ("pooler.dense.weight", "pooler.dense.bias", "embeddings.position_ids", "embeddings.token_type_ids")
# top-level modules of a BertModel: an unknown weight under one of them means a config that does
# not fit its weights (other names are task heads, e.g. BertForMaskedLM's ``cls.*``)
BERT_MODULES = ("embeddings.", "encoder.", "pooler.")
# tokenizer_config keys whose non-default value changes tokenization in ways this reader does not model
UNMODELLED = {"split_special_tokens": False, "do_basic_tokenize": True, "never_split": None}


class FileTokenizer:
    """The part of a transformers tokenizer xtrieve's TextProcessor uses, over ``tokenizers``."""

    def __init__(self, backend, specials: dict[str, str], extra_specials: list[str]) -> None:
        backend.no_truncation()
        backend.no_padding()
        self.backend = backend
        self.model_max_length = 1 << 30
        self.vocab_size = backend.get_vocab_size(with_added_tokens=True)
        ids = {key: backend.token_to_id(token) for key, token in specials.items()}
        self.unk_token_id = ids.get("unk_token")
        self.pad_token_id = ids.get("pad_token")
        self.mask_token_id = ids.get("mask_token")
        self.all_special_ids = [i for i in ids.values() if i is not None]
        self.all_special_ids += [backend.token_to_id(t) for t in extra_specials]

    def __len__(self) -> int:
        return self.vocab_size

    def convert_tokens_to_ids(self, token: str) -> int | None:
        found = self.backend.token_to_id(token)
        return self.unk_token_id if found is None else found

    def __call__(self, text: str | list[str], add_special_tokens: bool = True, truncation: bool = False) -> dict:
        if truncation:
            raise ValueError("FileTokenizer does not truncate; xtrieve's TextProcessor truncates itself")
        if isinstance(text, str):
            return {"input_ids": self.backend.encode(text, add_special_tokens=add_special_tokens).ids}
        return {"input_ids": [e.ids for e in self.backend.encode_batch(list(text), add_special_tokens=add_special_tokens)]}


@dataclasses.dataclass
class BertFiles:
    """A backbone read without transformers: its config.json, weights and tokenizer."""

    config: dict[str, Any]
    state: dict[str, torch.Tensor]
    tokenizer: FileTokenizer


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def _token_text(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) else None


def _tokenizer(folder: Path, settings: dict[str, Any]) -> FileTokenizer | str:
    """The folder's tokenizer, or why transformers must build it."""
    try:
        text = (folder / "tokenizer.json").read_text(encoding="utf-8")
        spec = json.loads(text)
    except (OSError, ValueError):
        return "no readable tokenizer.json"
    if not isinstance(spec, dict):
        return "tokenizer.json is not a JSON object"
    if settings.get("tokenizer_class") not in ("BertTokenizer", "BertTokenizerFast"):
        return f"tokenizer class {settings.get('tokenizer_class')!r}"
    for key, default in UNMODELLED.items():
        if settings.get(key, default) != default:
            return f"tokenizer_config sets {key}"
    norm, pre, model = spec.get("normalizer") or {}, spec.get("pre_tokenizer") or {}, spec.get("model") or {}
    specials = {key: _token_text(settings.get(key)) for key in NAMED_SPECIALS if settings.get(key) is not None}
    # transformers rebuilds a BERT tokenizer's normaliser from tokenizer_config: the file's must agree
    agrees = (
        norm.get("type") == "BertNormalizer" and norm.get("clean_text") is True
        and norm.get("lowercase") == settings.get("do_lower_case", True)
        and norm.get("strip_accents") == settings.get("strip_accents")
        and norm.get("handle_chinese_chars") == settings.get("tokenize_chinese_chars", True)
        and pre.get("type") == "BertPreTokenizer" and model.get("type") == "WordPiece"
        and model.get("continuing_subword_prefix") == "##" and model.get("max_input_chars_per_word") == 100
        and model.get("unk_token") == specials.get("unk_token", "[UNK]")
        and (spec.get("post_processor") or {}).get("type") == "TemplateProcessing"
    )
    if not agrees:
        return "tokenizer.json and tokenizer_config.json describe different WordPiece setups"
    extra = settings.get("extra_special_tokens", settings.get("additional_special_tokens")) or []
    extra = [_token_text(t) for t in (extra.values() if isinstance(extra, dict) else extra)]
    added = {int(t["id"]): t.get("content") for t in spec.get("added_tokens") or [] if isinstance(t, dict) and "id" in t}
    listed = settings.get("added_tokens_decoder") or {}
    if any(added.get(int(i)) != _token_text(t) for i, t in listed.items() if str(i).isdigit()):
        return "tokenizer_config's added tokens differ from tokenizer.json's"
    from tokenizers import Tokenizer

    try:
        backend = Tokenizer.from_str(text)
    except Exception as exc:  # the Rust parser raises a plain Exception on a malformed file
        return f"tokenizer.json does not load: {exc}"
    if any(t is None or backend.token_to_id(t) is None for t in [*specials.values(), *extra]):
        return "a special token is not in the vocabulary"
    return FileTokenizer(backend, specials, extra)  # type: ignore[arg-type]


def _weights(folder: Path, config: dict[str, Any], state: dict[str, torch.Tensor] | None,
             overlay: dict[str, torch.Tensor] | None) -> dict[str, torch.Tensor] | str:
    """The weights the lean pass reads (overlay applied), or why transformers must load them.

    A weights file that cannot be read, or one holding BertModel weights the config does not
    have (e.g. more layers than num_hidden_layers), is a ModelLoadError."""
    try:
        shape = BertShape.read(config.get)
        needed = shape.parameter_shapes(config)
    except (TypeError, ValueError) as exc:
        return f"config.json has a value that is not a number: {exc}"
    if state is None:
        if not has_weights(folder):
            return "no single weights file"  # e.g. sharded: transformers reads those
        state = _legacy_names_renamed(read_weights(folder))
        if "bert." + next(iter(needed)) in state:  # a checkpoint of a model built around a BertModel
            state = {k[len("bert."):]: v for k, v in state.items() if k.startswith("bert.")}
        extra = sorted(k for k in state if k.startswith(BERT_MODULES) and k not in needed and k not in UNREAD_WEIGHTS)
        if extra:
            raise ModelLoadError(f"{folder}: the weights hold {len(extra)} BertModel weights its config.json does not "
                                 f"have (num_hidden_layers {shape.layers}): {', '.join(extra[:3])}")
    else:
        state = _legacy_names_renamed(state)
        if any(k not in needed and k not in UNREAD_WEIGHTS for k in state):
            return "the checkpoint names weights a BertModel does not have"
    if overlay:
        if any(k not in needed for k in overlay):
            return "the overlay names weights a BertModel does not have"
        check_overlay_shapes(overlay, needed)
        state = {**state, **overlay}
    return shape.wrong_weight(state, config) or {name: state[name] for name in needed}


def _legacy_names_renamed(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """LayerNorm ``gamma``/``beta`` as ``weight``/``bias``, as transformers reads them (folders
    saved by some transformers versions, e.g. through PyLate 1.6, name them the old way)."""
    if not any(k.endswith(("LayerNorm.gamma", "LayerNorm.beta")) for k in state):
        return state
    return {k[:-len("gamma")] + "weight" if k.endswith("LayerNorm.gamma") else
            k[:-len("beta")] + "bias" if k.endswith("LayerNorm.beta") else k: v for k, v in state.items()}


def read(folder: Path, state: dict[str, torch.Tensor] | None = None,
         overlay: dict[str, torch.Tensor] | None = None) -> BertFiles | None:
    """The backbone in ``folder`` (``state``: weights that replace the folder's; ``overlay``:
    weights over them), or None when transformers must load it."""
    found = _read(folder, state, overlay)
    if isinstance(found, str):
        log.debug("loading %s through transformers: %s", folder, found)
        return None
    return found


def _read(folder: Path, state: dict[str, torch.Tensor] | None,
          overlay: dict[str, torch.Tensor] | None) -> BertFiles | str:
    config = _json(folder / "config.json")
    settings = _json(folder / "tokenizer_config.json")
    if config is None or settings is None:
        return "no readable config.json and tokenizer_config.json"
    if not plain_bert_config(config.get):
        return f"model type {config.get('model_type')!r} / activation {config.get('hidden_act')!r} is not a plain BERT"
    tokenizer = _tokenizer(folder, {**(_json(folder / "special_tokens_map.json") or {}), **settings})
    if isinstance(tokenizer, str):
        return tokenizer
    weights = _weights(folder, config, state, overlay)
    if isinstance(weights, str):
        return weights
    return BertFiles(config, weights, tokenizer)
