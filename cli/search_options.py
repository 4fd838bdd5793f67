"""The fast-path search options that `xtrieve search`, `eval` and `bench` share."""
from __future__ import annotations

from typing import Callable

import click

from xtrieve.config import IMPUTATIONS, SearchConfig

_OPTIONS = (
    click.option("--k-prime", type=click.IntRange(min=1), default=None,
                 help="Tokens retrieved per query token (more on collections past 400K vectors: docs/BENCHMARKS.md)."),
    click.option("--n-rerank", type=click.IntRange(min=1), default=None, help="Candidates reranked with exact MaxSim."),
    click.option("--nprobe", type=click.IntRange(min=1), default=None, help="IVF lists probed per query token."),
    click.option("--imputation", type=click.Choice(IMPUTATIONS), default=None,
                 help="A missing similarity in XTR scoring: the lowest retrieved (floor) or that minus a measured gap."),
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
