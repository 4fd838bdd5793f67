"""Index commands: build, add, delete, compact, info."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Callable

import click

from xtrieve.cli.formats import shown
from xtrieve.config import VECTOR_STORAGES
from xtrieve.errors import InputError

CORPUS = click.Path(exists=False, path_type=Path)
# the choices are xtrieve.encode.precision.PRECISIONS, not imported here: it loads torch, and --help should not
PRECISION_OPTION = click.option(
    "--precision", type=click.Choice(["float32", "bfloat16"]), default="float32", show_default=True,
    help="Arithmetic of the model: bfloat16 encodes faster on CPUs with bfloat16 units (AMX, AVX512-BF16), "
         "documents ~2x, BERT queries ~1.7x, vectors within bfloat16 rounding; float32 gives the model's exact vectors.")


DEVICE_OPTION = click.option(
    "--device", default="cpu", show_default=True,
    help="Where the model encodes: cpu, cuda, cuda:1 or mps (an unavailable one is an error before any work).")


WAIT_OPTION = click.option(
    "--wait", type=click.FloatRange(min=0), default=0, show_default=True, metavar="SECONDS",
    help="Wait this long for another writer of INDEX to finish (default: fail at once if one is writing).")


ENCODER_CONFIG_OPTION = click.option(
    "--encoder-config", "encoder_config", multiple=True, metavar="KEY=VALUE",
    help="Change a setting of the model's EncoderConfig for this index, e.g. doc_windows=8 (read long documents "
         "further: up to 8 windows of doc_maxlen tokens) or doc_maxlen=180; VALUE is JSON (8, true, null, [...]) or else text. Repeatable.")


def parse_encoder_config(pairs: tuple[str, ...]) -> dict[str, object] | None:
    """``KEY=VALUE`` options as an Encoder.load config dict (None when there are none)."""
    return parse_key_values(pairs, "--encoder-config")


def parse_key_values(pairs: tuple[str, ...], option: str) -> dict[str, object] | None:
    """``KEY=VALUE`` options (VALUE: JSON, else text) as a dict (None when there are none)."""
    out: dict[str, object] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key.strip():
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint=option)
        if key.strip() in out:
            raise click.BadParameter(f"{key.strip()!r} is given twice", param_hint=option)
        try:
            value = json.loads(raw)
        except ValueError:
            value = raw
        out[key.strip()] = value
    return out or None


def _read_ids(ids: tuple[str, ...], ids_file: Path | None) -> list[str]:
    out = list(ids)
    if ids_file is not None:
        try:
            out += [line.strip() for line in ids_file.read_text(encoding="utf-8-sig").splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise InputError(f"cannot read ids file {ids_file}: {exc}") from None
    if not out:
        raise InputError("no ids given (pass ID... or --ids-file, or --filter EXPR)")
    return out


@click.command("build")
@click.argument("index", type=click.Path(path_type=Path))
@click.option("--corpus", type=CORPUS, required=True, help="JSONL (BEIR), JSON, CSV/TSV, Parquet, a folder of .txt files or a BEIR folder (its corpus.jsonl).")
@click.option("--model", default=None, help="Model name or folder (default: the offline default model).")
@click.option("--pool-factor", type=click.IntRange(min=1), default=None, help="Token pooling factor (default: the model's).")
@click.option("--faiss", "faiss_factory", default=None, help='FAISS factory string, or "auto" (the default: Flat for small segments, IVF fast-scan PQ for large).')
@click.option("--batch-size", type=click.IntRange(min=1), default=None, help="Documents read, checked and encoded per step (default 256; the model's own batches are 32).")
@click.option("--vector-storage", type=click.Choice(list(VECTOR_STORAGES)), default=None,
              help="Rerank vector storage: int8 (default), int4 (4-bit residuals, ~half the bytes) or float16.")
@click.option("--docs-per-segment", type=click.IntRange(min=1), default=None, help="Maximum documents per segment (default 50,000).")
@click.option("--no-store-text", is_flag=True, help="Do not keep title/text in the index.")
@click.option("--overwrite", is_flag=True, help="Replace an existing index at INDEX.")
@ENCODER_CONFIG_OPTION
@PRECISION_OPTION
@DEVICE_OPTION
@WAIT_OPTION
def build_command(index, corpus, model, pool_factor, faiss_factory, batch_size, vector_storage, docs_per_segment,
                  no_store_text, overwrite, encoder_config, precision, device, wait):
    """Build INDEX from a corpus file."""
    from xtrieve.config import IndexConfig
    from xtrieve.encode.encoder import Encoder
    from xtrieve.index.corpus import read_corpus
    from xtrieve.retrieve.api import Index

    changes = {k: v for k, v in (("pool_factor", pool_factor), ("faiss_factory", faiss_factory),
                                 ("batch_size", batch_size), ("vector_storage", vector_storage),
                                 ("docs_per_segment", docs_per_segment)) if v is not None}
    if no_store_text:
        changes["store_text"] = False
    config = IndexConfig().replace(**changes)
    encoder_changes = parse_encoder_config(encoder_config)
    if pool_factor is not None and encoder_changes and "pool_factor" in encoder_changes:
        raise click.UsageError("give the pool factor once: --pool-factor or --encoder-config pool_factor=N")
    docs = read_corpus(corpus)
    docs.first()  # bad or empty corpus: fail before loading the model
    encoder = Encoder.load(model, config=encoder_changes, precision=precision, device=device)
    idx = Index.build(index, docs, encoder=encoder, config=config, overwrite=overwrite, show_progress=True, wait=wait)
    info = idx.info()
    click.echo(f"built {index}: {_count(info.n_docs, 'doc')}, {_count(info.n_vectors, 'vector')} in "
               f"{_count(info.n_segments, 'segment')}", err=True)


@click.command("add")
@click.argument("index", type=click.Path(file_okay=False, path_type=Path))
@click.option("--corpus", type=CORPUS, required=True, help="Documents to add (same formats as build).")
@click.option("--replace", is_flag=True,
              help="A document whose id is already in INDEX replaces it (in the same commit); without it such an id is an error.")
@PRECISION_OPTION
@DEVICE_OPTION
@WAIT_OPTION
def add_command(index, corpus, replace, precision, device, wait):
    """Add the documents of a corpus file to INDEX."""
    from xtrieve.index.corpus import read_corpus
    from xtrieve.retrieve.api import Index

    idx = Index.open(index, verify=False, precision=precision, wait=wait, device=device)
    ids = idx.add(read_corpus(corpus), show_progress=True, replace=replace)
    click.echo(f"added {_count(len(ids), 'doc')} to {index}" + (", replacing those already there" if replace else "")
               + f" ({_count(len(idx), 'doc')} now)", err=True)


def _documents_named(filter_help: str) -> Callable[[Callable], Callable]:
    """INDEX, then the documents a command works on: ID..., --ids-file or --filter."""
    def apply(command: Callable) -> Callable:
        for option in reversed((
                click.argument("index", type=click.Path(file_okay=False, path_type=Path)),
                click.argument("ids", nargs=-1),
                click.option("--ids-file", type=click.Path(dir_okay=False, path_type=Path), default=None,
                             help="File with one id per line."),
                click.option("--filter", "filter_expr", default=None, help=filter_help))):
            command = option(command)
        return command
    return apply


@click.command("delete")
@_documents_named("Delete every document this metadata filter matches, e.g. \"year < 2000\" (instead of ids).")
@click.option("--missing-ok", is_flag=True, help="Skip ids not in the index (by default they are an error and "
                                                 "nothing is deleted).")
@WAIT_OPTION
def delete_command(index, ids, ids_file, filter_expr, missing_ok, wait):
    """Delete documents by id, or by a metadata filter, from INDEX."""
    from xtrieve.retrieve.api import Index

    if filter_expr is not None and (ids or ids_file is not None):
        raise click.UsageError("give ids or --filter, not both")
    idx = Index.open(index, verify=False, wait=wait)
    n = idx.delete(filter=filter_expr) if filter_expr is not None else \
        idx.delete(_read_ids(ids, ids_file), missing_ok=missing_ok)
    click.echo(f"deleted {_count(n, 'doc')} from {index} ({_count(len(idx), 'doc')} left)", err=True)


@click.command("update-metadata")
@_documents_named("Every document this metadata filter matches, e.g. \"year < 2000\" (instead of ids).")
@click.option("--set", "pairs", multiple=True, metavar="KEY=VALUE",
              help="A new value for the documents named: JSON (2024, true, [\"a\"], null clears it) or else text. "
                   "Repeatable.")
@click.option("--file", "updates_file", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="JSON Lines, one {\"id\": ..., COLUMN: VALUE, ...} per document: each its own new values "
                   "(instead of ids, --filter and --set).")
@WAIT_OPTION
def update_metadata_command(index, ids, ids_file, filter_expr, pairs, updates_file, wait):
    """Change the metadata of documents in INDEX without encoding them again (a new title or
    text: add --replace)."""
    from xtrieve.retrieve.api import Index

    named = bool(ids) or ids_file is not None
    if updates_file is not None:
        if named or filter_expr is not None or pairs:
            raise click.UsageError("--file gives each document its own values: no ids, --filter or --set with it")
    elif not pairs:
        raise click.UsageError("give the new values with --set KEY=VALUE (or --file)")
    elif named == (filter_expr is not None):
        raise click.UsageError("give ids or --filter (one of the two) for the documents to change")
    values = parse_key_values(pairs, "--set")
    updates = _read_updates(updates_file) if updates_file is not None else None
    idx = Index.open(index, verify=False, wait=wait)
    if filter_expr is not None:
        n = idx.update_metadata(filter=filter_expr, values=values)
    else:
        n = idx.update_metadata(updates if updates is not None else dict.fromkeys(_read_ids(ids, ids_file), values))
    click.echo(f"updated the metadata of {_count(n, 'doc')} in {index}", err=True)


def _read_updates(path: Path) -> dict[str, dict]:
    """{id: new values} from a JSON Lines file of {"id" (or "_id"): ..., column: value, ...}."""
    from xtrieve.index.docs import ID_KEYS, check_id

    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read updates file {path}: {exc}") from None
    out: dict[str, dict] = {}
    for no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise InputError(f"{path}, line {no}: not JSON ({exc})") from None
        key = next((k for k in ID_KEYS if isinstance(row, dict) and k in row), None)
        if key is None:
            raise InputError(f'{path}, line {no}: expected an object with an "id" and the new values')
        doc_id = check_id(row.pop(key), f"{path}, line {no}")
        if doc_id in out:
            raise InputError(f"{path}, line {no}: id {doc_id!r} is given twice")
        out[doc_id] = row
    return out


@click.command("compact")
@click.argument("index", type=click.Path(file_okay=False, path_type=Path))
@WAIT_OPTION
def compact_command(index, wait):
    """Merge the segments of INDEX and drop deleted documents."""
    from xtrieve.retrieve.api import Index

    idx = Index.open(index, verify=False, wait=wait)
    before = idx.info().n_segments
    idx.compact()
    click.echo(f"compacted {index}: {before} -> {idx.info().n_segments} segment(s)", err=True)


def _human(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{n} B"


@click.command("info")
@click.argument("index", type=click.Path(file_okay=False, path_type=Path))
@click.option("--format", "fmt", type=click.Choice(["table", "json"]), default="table", show_default=True)
@click.option("--no-verify", is_flag=True, help="Skip checksum verification.")
def info_command(index, fmt, no_verify):
    """Show sizes and settings of INDEX (checksums verified)."""
    from xtrieve.retrieve.api import Index

    idx = Index.open(index, verify=not no_verify)
    if not no_verify:
        idx.verify_encoder_files()
    info = idx.info()
    data = info.to_dict()
    if info.n_vectors:
        data["bytes_per_vector"] = round(info.bytes / info.n_vectors, 1)
    if fmt == "json":
        click.echo(json.dumps(data, indent=2))
        return
    data["bytes"] = f"{info.bytes} ({_human(info.bytes)})"
    data["model_bytes"] = f"{info.model_bytes} ({_human(info.model_bytes)})"
    data["faiss"] = ", ".join(sorted(set(info.faiss))) or "-"
    data["metadata_columns"] = ", ".join(f"{k} ({v})" for k, v in info.metadata_columns.items()) or "-"
    width = max(len(k) for k in data)
    for k, v in data.items():
        click.echo(f"{k:<{width}}  {shown(v)}")  # (model and FAISS names come from the index folder)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")
