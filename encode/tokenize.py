"""Turn texts into model inputs the way ColBERT and PyLate do.

Queries and documents get an optional marker token second in the row (right after the first
special token, or the first token where none comes before a text); queries are padded with
[MASK] (else end-of-text, else padding) to ``query_maxlen`` when augmentation is on; documents
drop skiplist (punctuation) tokens from the output. A document longer than ``doc_maxlen`` is
truncated, or with ``doc_windows`` > 1 split into windows (see :meth:`TextProcessor.rows`).
Truncation is counted, not silent.
"""
from __future__ import annotations

import dataclasses
import logging
from typing import Mapping

import torch

from xtrieve.config import EncoderConfig
from xtrieve.errors import InputError, ModelLoadError, check_unicode

log = logging.getLogger(__name__)


def check_texts(texts: object, what: str) -> list[str]:
    """Validate a list (maybe empty) of non-empty strings, naming the first bad item."""
    if texts is None:
        raise InputError(f"{what}: got None, expected a list of strings")
    if isinstance(texts, str):
        raise InputError(f"{what}: expected a list of strings, got a single string (wrap it in a list)")
    if isinstance(texts, Mapping):
        raise InputError(f"{what}: expected a list of strings, got a mapping (its keys would be encoded): pass "
                         "list(texts.values())")
    try:
        items = list(texts)  # type: ignore[call-overload]
    except TypeError:
        raise InputError(f"{what}: expected a list of strings, got {type(texts).__name__}") from None
    for i, t in enumerate(items):
        if not isinstance(t, str):
            raise InputError(f"{what}: item {i} is {type(t).__name__}, not a string")
        if not t.strip():
            raise InputError(f"{what}: item {i} is an empty or whitespace-only text")
        check_unicode(t, f"{what}: item {i}")
    return items


@dataclasses.dataclass
class Batch:
    """Padded model inputs plus which positions become output vectors."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    output_mask: torch.Tensor
    n_truncated: int


@dataclasses.dataclass
class Rows:
    """Model input rows of a list of texts: one per text, or one per window of a long document.

    ``owner[r]``/``window[r]``: the text and window number of row r; ``context[r]``: how many
    leading content tokens of row r only give context (they are the previous window's outputs).
    """

    ids: list[list[int]]
    owner: list[int]
    window: list[int]
    context: list[int]
    n_truncated: int


class TextProcessor:
    """Builds input ids for queries and documents from an HF tokenizer and a config."""

    def __init__(self, tokenizer, config: EncoderConfig) -> None:
        self.tok = tokenizer
        self.tok.model_max_length = 1 << 30  # we truncate ourselves; silence the length warning
        self.config = config
        self.query_marker = self._marker_id(config.query_prefix)
        self.document_marker = self._marker_id(config.document_prefix)
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        # the query expansion token, as PyLate picks it: [MASK], else (a decoder) the end-of-text token
        self.mask_id = next((t for t in (getattr(tokenizer, f"{kind}_token_id", None) for kind in ("mask", "eos", "pad"))
                             if t is not None), None)
        if config.query_augmentation and self.mask_id is None:
            raise ModelLoadError("query_augmentation needs a tokenizer with a [MASK], end-of-text or padding token")
        if getattr(tokenizer, "padding_side", "right") == "left":
            log.warning("the tokenizer pads on the left: xtrieve pads on the right, as a text's vectors then do not "
                        "depend on the other texts of its batch (PyLate's do, with such a tokenizer)")
        self.keep_end = getattr(tokenizer, "truncation_side", "right") == "left"  # a long text keeps its end
        self.special_ids = set(tokenizer.all_special_ids)
        self.skip_ids = self._skiplist_ids(config.skiplist_words)
        self._told_overlap = False  # a capped doc_window_overlap is logged once
        self.prefix_ids, self.suffix_ids = self._special_template()

    def _marker_id(self, prefix: str | None) -> int | None:
        """The marker's token id. One the vocabulary lacks is its unknown token, as PyLate and
        Stanford ColBERT insert it (logged: such a model was probably saved with a tokenizer
        other than the one in its folder)."""
        if not prefix:
            return None
        for candidate in (prefix, prefix.strip()):
            tid = self.tok.convert_tokens_to_ids(candidate)
            if tid is not None and tid != self.tok.unk_token_id:
                return int(tid)
        if self.tok.unk_token_id is None:
            raise ModelLoadError(f"marker token {prefix!r} is not in the tokenizer's vocabulary")
        log.warning("marker token %r is not in the tokenizer's vocabulary: it is encoded as the unknown token "
                    "(id %d), as PyLate and ColBERT do", prefix, self.tok.unk_token_id)
        return int(self.tok.unk_token_id)

    def _skiplist_ids(self, words: tuple[str, ...]) -> set[int]:
        """Token ids of the skiplist words, each looked up as one token as PyLate does: a word
        the vocabulary lacks skips the unknown token."""
        ids: set[int] = set()
        for w in words:
            tid = self.tok.convert_tokens_to_ids(w)
            if tid is not None:
                ids.add(int(tid))
        return ids

    def _special_template(self) -> tuple[list[int], list[int]]:
        """The special tokens the tokenizer puts before and after a single text."""
        probe = "hello"
        bare = list(self.tok(probe, add_special_tokens=False)["input_ids"])
        full = list(self.tok(probe, add_special_tokens=True)["input_ids"])
        for start in range(len(full) - len(bare) + 1):
            if full[start:start + len(bare)] == bare:
                return full[:start], full[start + len(bare):]
        raise ModelLoadError("cannot tell where the tokenizer puts its special tokens")

    def _with_specials(self, ids: list[int], marker: int | None) -> list[int]:
        """Specials around ``ids``; the marker goes second, where ColBERT and PyLate insert it:
        right after the first special token (a tokenizer with none before a text: after its
        first token)."""
        row = list(self.prefix_ids) + list(ids) + list(self.suffix_ids)
        if marker is not None:
            row.insert(1, marker)
        return row

    def _content_positions(self, n: int, marker: int | None) -> torch.Tensor:
        """Where a row from :meth:`_with_specials` holds its first ``n`` text tokens."""
        positions = torch.arange(len(self.prefix_ids), len(self.prefix_ids) + n)
        return positions + (positions >= 1).long() if marker is not None else positions

    def encode_ids(self, texts: list[str], is_query: bool) -> tuple[list[list[int]], int]:
        """Token ids per text with specials and marker, truncated to the max length."""
        rows = self._rows(texts, is_query, max_windows=1)
        return rows.ids, rows.n_truncated

    def rows(self, texts: list[str], is_query: bool) -> Rows:
        """Input rows for ``texts``: queries and (with ``doc_windows`` = 1) documents are truncated
        to their max length; otherwise a long document becomes up to ``doc_windows`` windows of
        ``doc_maxlen`` tokens, each with its own special tokens, where window k > 0 repeats the
        last ``doc_window_overlap`` tokens of window k - 1 as context and outputs only what follows."""
        return self._rows(texts, is_query, max_windows=1 if is_query else self.config.doc_windows)

    def _rows(self, texts: list[str], is_query: bool, max_windows: int) -> Rows:
        c = self.config
        marker = self.query_marker if is_query else self.document_marker
        maxlen = c.query_maxlen if is_query else c.doc_maxlen
        budget = max(1, maxlen - len(self._with_specials([], marker)))
        overlap = min(c.doc_window_overlap, budget // 2)
        if overlap < c.doc_window_overlap and max_windows > 1 and not self._told_overlap:
            self._told_overlap = True
            log.warning("doc_window_overlap %d is more than half of a window's %d text tokens: windows overlap "
                        "by %d", c.doc_window_overlap, budget, overlap)
        stride = budget - overlap
        out = Rows([], [], [], [], 0)
        # a sentence-transformers default prompt is part of the text, so of the budget; the text is
        # stripped as sentence-transformers (and so PyLate) strip it, which only matters to
        # tokenizers that see spaces: byte-level BPE, and added tokens such as PyLate's "[Q] "
        texts = [(c.prompt + t if c.prompt else t).strip() for t in texts]
        if c.lowercase:  # sentence-transformers' do_lower_case: after the strip, markers unchanged
            texts = [t.lower() for t in texts]
        for i, ids in enumerate(self.tok(texts, add_special_tokens=False, truncation=False)["input_ids"]):
            n_windows = 1 + -(-max(0, len(ids) - budget) // stride)
            if n_windows > max_windows:
                out.n_truncated += 1
                n_windows = max_windows
            if self.keep_end and max_windows == 1 and len(ids) > budget:  # the tokenizer truncates on the left
                ids = ids[len(ids) - budget:]
            for k in range(n_windows):
                start = 0 if k == 0 else budget + (k - 1) * stride - overlap
                out.ids.append(self._with_specials(ids[start:start + budget], marker))
                out.owner.append(i)
                out.window.append(k)
                out.context.append(0 if k == 0 else overlap)
        return out

    def batch(self, ids: list[list[int]], is_query: bool, n_truncated: int = 0,
              context: list[int] | None = None) -> Batch:
        """Pad a list of id lists into tensors and compute the output mask (``context``: leading
        content tokens per row that are not outputs, see :meth:`rows`)."""
        c = self.config
        augment = is_query and c.query_augmentation
        width = c.query_maxlen if augment else max(len(x) for x in ids)
        n = len(ids)
        input_ids = torch.full((n, width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((n, width), dtype=torch.long)
        for i, row in enumerate(ids):
            input_ids[i, : len(row)] = torch.tensor(row, dtype=torch.long)
            attention[i, : len(row)] = 1
        output = attention.clone().bool()
        if augment:
            expansion = attention == 0
            input_ids[expansion] = self.mask_id
            output |= expansion
            if c.attend_to_expansion_tokens:
                attention[expansion] = 1
        if not is_query and self.skip_ids:
            skip = torch.tensor(sorted(self.skip_ids), dtype=torch.long)
            output &= ~torch.isin(input_ids, skip)
        if not c.keep_special_tokens:
            specials = torch.tensor(sorted(self.special_ids - ({self.mask_id} if augment else set())), dtype=torch.long)
            output &= ~torch.isin(input_ids, specials)
            for marker in (self.query_marker, self.document_marker):
                if marker is not None:
                    output &= input_ids != marker
        if context is not None:
            marker = self.query_marker if is_query else self.document_marker
            for i, n_context in enumerate(context):
                output[i, self._content_positions(n_context, marker)] = False
        # never return an empty bag: fall back to every attended position
        empty = output.sum(dim=1) == 0
        if context is not None:  # a later window may legitimately output nothing
            empty &= torch.tensor(context) == 0
        if bool(empty.any()):
            output[empty] = attention[empty].bool()
        return Batch(input_ids, attention, output, n_truncated)
