"""Frozen configuration dataclasses that reject unknown keys."""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import numbers
from pathlib import Path
from typing import Any, Mapping, TypeVar

from xtrieve.errors import ConfigError, UnknownConfigKeyError

C = TypeVar("C", bound="ConfigBase")


@dataclasses.dataclass(frozen=True)
class ConfigBase:
    """Base for configs: construction from a mapping checks keys and types."""

    def __new__(cls, *args: Any, **kwargs: Any) -> "ConfigBase":
        # runs before the generated __init__, so ``SearchConfig(foo=1)`` names the key as
        # from_dict does instead of Python's "unexpected keyword argument"
        unknown = sorted(set(kwargs) - cls.field_names())
        if unknown:
            raise UnknownConfigKeyError(_unknown_keys_message(cls, unknown))
        if len(args) > len(dataclasses.fields(cls)):
            raise UnknownConfigKeyError(
                f"{cls.__name__} takes at most {len(dataclasses.fields(cls))} values, got {len(args)}; "
                "give its fields by name"
            )
        return super().__new__(cls)

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # numpy scalars (an np.arange sweep) as Python numbers, lists as tuples
            value = getattr(self, f.name)
            if (isinstance(value, numbers.Number) and type(value) not in (int, float, bool)) or _is_numpy_bool(value):
                object.__setattr__(self, f.name, _plain_number(value))
            elif isinstance(value, (list, set, frozenset)):  # (hashable, equal to the tuple, saved as JSON)
                object.__setattr__(self, f.name, tuple(value) if isinstance(value, list) else tuple(sorted(value, key=str)))
        try:
            self.validate()
        except ConfigError as exc:  # a message that starts with a field's name gets its value
            message, name = str(exc), str(exc).split(" ", 1)[0]
            if name in self.field_names() and ", got " not in message:
                shown = repr(getattr(self, name))
                raise ConfigError(f"{message}, got {shown if len(shown) <= 60 else shown[:57] + '...'}") from None
            raise

    def validate(self) -> None:  # overridden where values need checks
        """Raise :class:`ConfigError` for invalid values."""

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in dataclasses.fields(cls)}

    @classmethod
    def from_dict(cls: type[C], data: Mapping[str, Any]) -> C:
        """Build from a mapping; an unknown key is a :class:`ConfigError` naming it."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"{cls.__name__} expects a mapping, got {type(data).__name__}")
        unknown = sorted(set(data) - cls.field_names())
        if unknown:
            raise ConfigError(_unknown_keys_message(cls, unknown))
        values = {}
        for f in dataclasses.fields(cls):
            if f.name in data:
                value = data[f.name]
                if isinstance(value, list):
                    value = tuple(value)
                values[f.name] = value
        try:
            return cls(**values)
        except TypeError as exc:
            raise ConfigError(f"invalid {cls.__name__}: {exc}") from None

    @classmethod
    def of(cls: type[C], value: "C | Mapping[str, Any] | None") -> C:
        """``value`` as this config: None gives the defaults, a mapping goes through
        :meth:`from_dict`; anything else is a :class:`ConfigError`."""
        if value is None:
            return _defaults(cls)
        if isinstance(value, cls):
            return value
        if isinstance(value, Mapping):
            return cls.from_dict(value)
        raise ConfigError(f"config must be a {cls.__name__} or a dict of its fields, got {type(value).__name__}")

    def to_dict(self) -> dict[str, Any]:
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    def replace(self: C, **changes: Any) -> C:
        """A copy with some fields changed; an unknown key is a ConfigError (from ``__new__``)."""
        return dataclasses.replace(self, **changes)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")

    @classmethod
    def load(cls: type[C], path: str | Path) -> C:
        try:
            data = json.loads(Path(path).read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ConfigError(f"cannot read {cls.__name__} from {path}: {exc}") from None
        return cls.from_dict(data)


@functools.lru_cache(maxsize=None)
def _defaults(cls: type[C]) -> C:
    """One shared default instance per config class (frozen, so safe to share)."""
    return cls()


def _unknown_keys_message(cls: type, unknown: list[str]) -> str:
    return f"unknown {cls.__name__} key(s): {', '.join(unknown)}; known keys: {', '.join(sorted(cls.field_names()))}"


def _check(cond: bool, message: str) -> None:
    if not cond:
        raise ConfigError(message)


def _is_numpy_bool(value: Any) -> bool:
    return type(value).__module__ == "numpy" and type(value).__name__ in ("bool_", "bool")


def _plain_number(value: Any) -> Any:
    """A numpy bool as bool, an integral number as int, a real one as float; others (complex)
    as they are."""
    if _is_numpy_bool(value):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return value


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


# how a document's token vectors are pooled (xtrieve.encode.pooling)
POOL_METHODS = ("ward", "pylate")

# the floor on pooled vectors per document that trained models (the default one included) keep
# (EncoderConfig.pool_min_vectors): measured on short texts, docs/BENCHMARKS.md
SHORT_DOCUMENT_VECTORS = 8

# element-wise functions a head may apply after its linear map (xtrieve.encode.heads.activate)
HEAD_ACTIVATIONS = ("tanh", "relu", "gelu", "sigmoid", "silu")


@dataclasses.dataclass(frozen=True)
class EncoderConfig(ConfigBase):
    """How text becomes token vectors; saved with every model and index.

    ``query_prefix``/``document_prefix`` are marker tokens inserted second in a row, right after
    the first special token (ColBERT's ``[unused0]``/``[unused1]``, PyLate's ``[Q] ``/``[D] ``;
    a tokenizer with no special token before a text: after its first token); None means no
    marker. ``query_augmentation`` pads queries to ``query_maxlen`` with [MASK] (a tokenizer
    without one: its end-of-text, else its padding token, as PyLate does).
    ``doc_windows``: a document longer than ``doc_maxlen`` tokens is encoded as up to this many
    windows of ``doc_maxlen`` (1 = truncate, as ColBERT and PyLate do), window k > 0 seeing the
    last ``doc_window_overlap`` tokens of window k - 1 as context; the windows' vectors (and,
    for dense fusion, their mean) make the document's. ``lowercase``: texts are lowercased
    before tokenising (sentence-transformers' ``do_lower_case``), markers are not.
    """

    dim: int = 128
    query_maxlen: int = 32
    doc_maxlen: int = 300
    doc_windows: int = 1
    doc_window_overlap: int = 32
    query_prefix: str | None = None
    document_prefix: str | None = None
    query_augmentation: bool = False
    attend_to_expansion_tokens: bool = False
    skiplist_words: tuple[str, ...] = tuple("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~")
    keep_special_tokens: bool = True
    normalize: bool = True
    pool_factor: int = 1
    # how documents pool (pool_factor > 1): "ward" (Ward linkage over the vectors, centroids
    # renormalised) or "pylate" (PyLate's: the first vector kept, Ward over cosine distances, plain means)
    pool_method: str = "ward"
    # pooling keeps at least this many vectors per document (all of a shorter one's): x4 pooling
    # left a 20-token title 5 vectors and cost 1.4-3.4 nDCG@10 against none on short texts, where
    # a floor of 8 recovered it (docs/BENCHMARKS.md: short documents); 0 = no floor (PyLate's rule)
    pool_min_vectors: int = 0
    head_bias: bool = False
    lowercase: bool = False
    dense_weight: float = 0.0
    # applied to the head's output before normalising (a PyLate or sentence-transformers Dense
    # with that activation); None = linear
    head_activation: str | None = None
    # activations of nonlinear Dense layers before the head (a PyLate chain such as Dense+GELU then
    # Dense), one per step; their weights are head.safetensors' ``steps.*`` keys
    head_steps: tuple[str, ...] = ()
    # text put before every query and document before tokenising (a sentence-transformers
    # folder's default prompt, which PyLate prepends to both); None = none
    prompt: str | None = None
    # what joins a document's title and text (Stanford ColBERT's collections: " | ")
    title_separator: str = " "

    def validate(self) -> None:
        _check(_is_int(self.dim) and self.dim > 0, f"dim must be a positive int, got {self.dim!r}")
        _check(_is_int(self.query_maxlen) and self.query_maxlen >= 4, "query_maxlen must be an int >= 4")
        _check(_is_int(self.doc_maxlen) and self.doc_maxlen >= 4, "doc_maxlen must be an int >= 4")
        _check(_is_int(self.doc_windows) and self.doc_windows >= 1, "doc_windows must be an int >= 1")
        _check(_is_int(self.doc_window_overlap) and self.doc_window_overlap >= 0,
               "doc_window_overlap must be an int >= 0")
        _check(_is_int(self.pool_factor) and self.pool_factor >= 1, "pool_factor must be an int >= 1")
        _check(self.pool_method in POOL_METHODS, f"pool_method must be one of {', '.join(POOL_METHODS)}")
        _check(_is_int(self.pool_min_vectors) and self.pool_min_vectors >= 0,
               f"pool_min_vectors must be an int >= 0 (0 = no floor), got {self.pool_min_vectors!r}")
        _check(_is_number(self.dense_weight) and self.dense_weight >= 0,
               f"dense_weight must be a finite number >= 0, got {self.dense_weight!r}")
        _check(isinstance(self.title_separator, str), f"title_separator must be a string, got {self.title_separator!r}")
        _check(not isinstance(self.skiplist_words, str) and all(isinstance(w, str) for w in self.skiplist_words),
               "skiplist_words must be a list of strings")
        _check(self.head_activation is None or self.head_activation in HEAD_ACTIVATIONS,
               f"head_activation must be None or one of {', '.join(HEAD_ACTIVATIONS)}, got {self.head_activation!r}")
        _check(isinstance(self.head_steps, tuple) and all(a in HEAD_ACTIVATIONS for a in self.head_steps),
               f"head_steps must be a list of {', '.join(HEAD_ACTIVATIONS)}, got {self.head_steps!r}")
        for name in ("query_prefix", "document_prefix", "prompt"):
            value = getattr(self, name)
            _check(value is None or isinstance(value, str), f"{name} must be a string or None, got {value!r}")
        for name in ("query_augmentation", "attend_to_expansion_tokens", "keep_special_tokens", "normalize",
                     "head_bias", "lowercase"):
            _check(isinstance(getattr(self, name), bool), f"{name} must be true or false, got {getattr(self, name)!r}")


# rerank vector codes (xtrieve.index.codecs): int8 per-vector scalar; int4 4-bit residuals
# against the IVF centroids (about half of int8's bytes); float16 as given
VECTOR_STORAGES = ("int8", "int4", "float16")


@dataclasses.dataclass(frozen=True)
class IndexConfig(ConfigBase):
    """How an index stores vectors.

    ``faiss_factory``: "auto" (Flat when a segment is small, IVF fast-scan PQ when large) or
    any FAISS factory string. ``pool_factor``: None uses the encoder's own.
    """

    faiss_factory: str = "auto"
    flat_max_vectors: int = 60_000
    nlist: int | None = None
    pq_bytes: int | None = None
    vector_storage: str = "int8"
    pool_factor: int | None = None
    batch_size: int = 256  # documents read, checked and encoded per step of an add (the model's own batches are 32)
    docs_per_segment: int = 50_000
    merge_factor: int = 8
    store_text: bool = True

    def validate(self) -> None:
        _check(isinstance(self.faiss_factory, str) and self.faiss_factory.strip() != "", "faiss_factory must be a non-empty string")
        _check(self.vector_storage in VECTOR_STORAGES, f"vector_storage must be one of {', '.join(VECTOR_STORAGES)}, got {self.vector_storage!r}")
        _check(self.pool_factor is None or (_is_int(self.pool_factor) and self.pool_factor >= 1), "pool_factor must be None or an int >= 1")
        _check(_is_int(self.batch_size) and self.batch_size >= 1, "batch_size must be an int >= 1")
        _check(_is_int(self.docs_per_segment) and self.docs_per_segment >= 1, "docs_per_segment must be an int >= 1")
        _check(_is_int(self.merge_factor) and self.merge_factor >= 2, "merge_factor must be an int >= 2")
        _check(self.nlist is None or (_is_int(self.nlist) and self.nlist >= 1), "nlist must be None or an int >= 1")
        _check(_is_int(self.flat_max_vectors) and self.flat_max_vectors >= 0, "flat_max_vectors must be an int >= 0")
        _check(self.pq_bytes is None or (_is_int(self.pq_bytes) and self.pq_bytes >= 1), "pq_bytes must be None or an int >= 1")
        _check(isinstance(self.store_text, bool), f"store_text must be true or false, got {self.store_text!r}")


IMPUTATIONS = ("floor", "measured")


# rerank_reference_vectors deepens the rerank for short documents by at most this factor
MAX_RERANK_SCALE = 8


@dataclasses.dataclass(frozen=True)
class SearchConfig(ConfigBase):
    """Fast-path search settings (token retrieval, XTR scoring, MaxSim rerank)."""

    # 96 tokens per query token: top-10 agreement with exhaustive MaxSim 92.0 -> 93.8% (scifact)
    # and 95.0 -> 96.0% (nfcorpus) over 64, for ~3% more search time
    k_prime: int = 96
    # past this many stored vectors k' grows in proportion to the collection, so each query token
    # keeps retrieving the same share of it (0: a fixed k'). k' = 96 keeps exhaustive MaxSim's
    # nDCG@10 on scifact (373K vectors) and nfcorpus (271K); on their union (643K) it kept 99.6%
    # for scifact's queries and 99.0% for nfcorpus's, the k' = 155 this gives there 99.9% and 99.2%
    # (docs/BENCHMARKS.md: collection size)
    k_prime_reference_vectors: int = 400_000
    n_rerank: int = 64
    # n_rerank is for documents of about this many stored vectors on average: a collection of
    # shorter ones reranks proportionally more candidates, up to MAX_RERANK_SCALE times (0: n_rerank
    # as given). Short documents share the top tokens among more candidates: scifact cut into
    # 8-vector chunks kept 66% of exhaustive MaxSim's top 10 with 64 (512: 91%, as whole documents)
    rerank_reference_vectors: int = 64
    nprobe: int = 8
    # a filter allowing at most this many stored vectors is scored exactly, every allowed document
    # (exact scoring runs ~0.1 us per vector for a 20-token query: 65,536 cost ~6 ms, about twice
    # token retrieval, which loses more of the top 10 the narrower the filter)
    exact_filter_vectors: int = 65_536
    # also scored exactly: a filter allowing at most this fraction of the documents, whatever it
    # costs (0: by exact_filter_vectors alone; a fraction made a 1M-document index pay ~200 ms at 5%)
    selective_filter_fraction: float = 0.0
    # a query with n_q < this many vectors scales nprobe and k_prime by (this / n_q) ** 2: with
    # few tokens, one token's best match outside its probed lists decides the ranking
    short_query_tokens: int = 8
    # a missing similarity in XTR scoring: "floor" imputes the query token's lowest retrieved
    # similarity (the XTR paper); "measured" imputes that minus the gap measured on the first
    # quarter of the candidates the rerank scores exactly. On scifact (k = 10) measured keeps
    # 95.2% of exhaustive MaxSim's top 10 against 90.5%, at 13% more search time (nfcorpus: 96.9
    # against 95.8% at 16% more); the gain grows with the collection (docs/BENCHMARKS.md: imputation)
    imputation: str = "floor"

    def validate(self) -> None:
        _check(_is_int(self.k_prime) and self.k_prime >= 1, "k_prime must be an int >= 1")
        _check(self.imputation in IMPUTATIONS, f"imputation must be one of {', '.join(IMPUTATIONS)}")
        _check(_is_int(self.k_prime_reference_vectors) and self.k_prime_reference_vectors >= 0,
               "k_prime_reference_vectors must be an int >= 0 (0 = a fixed k')")
        _check(_is_int(self.n_rerank) and self.n_rerank >= 1, "n_rerank must be an int >= 1")
        _check(_is_int(self.rerank_reference_vectors) and self.rerank_reference_vectors >= 0,
               "rerank_reference_vectors must be an int >= 0 (0 = n_rerank as given)")
        _check(_is_int(self.nprobe) and self.nprobe >= 1, "nprobe must be an int >= 1")
        _check(_is_int(self.exact_filter_vectors) and self.exact_filter_vectors >= 0,
               "exact_filter_vectors must be an int >= 0")
        _check(_is_number(self.selective_filter_fraction) and 0.0 <= self.selective_filter_fraction <= 1.0,
               "selective_filter_fraction must be a number in [0, 1]")
        _check(_is_int(self.short_query_tokens) and self.short_query_tokens >= 0,
               "short_query_tokens must be an int >= 0 (0 = no widening)")

    def scaled_k_prime(self, n_vectors: int) -> int:
        """k' for a collection of ``n_vectors`` stored vectors."""
        if self.k_prime_reference_vectors <= 0 or n_vectors <= self.k_prime_reference_vectors:
            return self.k_prime
        return -(-self.k_prime * n_vectors // self.k_prime_reference_vectors)

    def rerank_depth(self, k: int, mean_doc_vectors: float) -> int:
        """Candidates to rerank exactly for the top ``k`` of documents holding ``mean_doc_vectors``
        stored vectors on average."""
        depth = self.n_rerank
        if self.rerank_reference_vectors > 0 and mean_doc_vectors > 0:
            wanted = math.ceil(self.n_rerank * self.rerank_reference_vectors / mean_doc_vectors)
            depth = max(depth, min(MAX_RERANK_SCALE * self.n_rerank, wanted))
        return max(depth, k)

    def widened(self, n_tokens: int, n_vectors: int = 0) -> tuple[int, int]:
        """(k', nprobe) for a query of ``n_tokens`` vectors over ``n_vectors`` stored ones: k'
        larger for large collections, both larger for short queries."""
        k_prime = self.scaled_k_prime(n_vectors)
        if n_tokens >= self.short_query_tokens:
            return k_prime, self.nprobe
        factor = (self.short_query_tokens / max(n_tokens, 1)) ** 2
        return int(k_prime * factor), int(self.nprobe * factor)
