"""The fast-path search options that `xtrieve search`, `eval` and `bench` share."""
from __future__ import annotations

from typing import Callable

import click

from xtrieve.config import IMPUTATIONS, SearchConfig

_DEFAULTS = SearchConfig()
_OPTIONS = (
    click.option("--k-prime", type=click.IntRange(min=1), default=None,
                 help=f"Tokens retrieved per query token (default {_DEFAULTS.k_prime}; more on collections past "
                      f"{_DEFAULTS.k_prime_reference_vectors:,} vectors and for short queries: docs/BENCHMARKS.md)."),
    click.option("--n-rerank", type=click.IntRange(min=1), default=None,
                 help=f"Candidates reranked with exact MaxSim (default {_DEFAULTS.n_rerank}; at least k; up to 8x more "
                      "for documents of fewer than 64 stored vectors on average)."),
    click.option("--nprobe", type=click.IntRange(min=1), default=None,
                 help=f"IVF lists probed per query token, at least (default {_DEFAULTS.nprobe}; raised for short "
                      "queries, a large k' and broad filters)."),
    click.option("--imputation", type=click.Choice(IMPUTATIONS), default=None,
                 help="A missing similarity in XTR scoring: the lowest retrieved (floor) or that minus a measured gap "
                      f"(default {_DEFAULTS.imputation})."),
)


def search_config_options(command: Callable) -> Callable:
    """Add --k-prime, --n-rerank, --nprobe and --imputation to a click command."""
    for option in reversed(_OPTIONS):
        command = option(command)
    return command


def search_config(k_prime: int | None, n_rerank: int | None, nprobe: int | None,
                  imputation: str | None) -> SearchConfig:
    """The default SearchConfig with the options the user gave."""
    changes = {"k_prime": k_prime, "n_rerank": n_rerank, "nprobe": nprobe, "imputation": imputation}
    return SearchConfig().replace(**{k: v for k, v in changes.items() if v is not None})
