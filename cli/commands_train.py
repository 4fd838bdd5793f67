"""`xtrieve train`: train the projection head (and optionally the backbone) with CRISP pooling."""
from __future__ import annotations

from pathlib import Path

import click

from xtrieve.cli.commands_index import DEVICE_OPTION, PRECISION_OPTION
from xtrieve.config import SHORT_DOCUMENT_VECTORS

POSITIVE = click.FloatRange(min=0.0, min_open=True)  # learning rates, temperatures


@click.command("train")
@click.option("--data-dir", "data_dirs", multiple=True, required=True,
              help="A BEIR folder (queries + qrels/<split>.tsv + corpus) or a JSONL file of "
                   "{query, positive, negative?} rows; repeat for multi-dataset training.")
@click.option("--split", default="train", show_default=True, help="qrels split of BEIR folders.")
@click.option("--base", default=None, help="Model to start from (default: the offline default model).")
@click.option("--out", type=click.Path(path_type=Path), required=True, help="Output model folder.")
@click.option("--pool-factor", type=click.IntRange(min=1), default=4, show_default=True,
              help="Cluster each document's tokens into ceil(n / R) centroids during training; saved in the model.")
@click.option("--pool-min-vectors", type=click.IntRange(min=0), default=SHORT_DOCUMENT_VECTORS, show_default=True,
              help="...but keep at least this many per document (all of a shorter one's); saved in the model.")
@click.option("--max-steps", type=click.IntRange(min=0), default=None, help="Training steps (default: one pass).")
@click.option("--freeze-backbone/--no-freeze-backbone", default=True, show_default=True,
              help="Train only the head on cached backbone states (fast on CPU), or the whole model.")
@click.option("--resume", is_flag=True, help="Continue from OUT/checkpoint (with the settings it was trained with).")
@click.option("--overwrite", is_flag=True, help="Replace a model already in OUT.")
@click.option("--batch-size", type=click.IntRange(min=2), default=32, show_default=True, help="Queries per step.")
@click.option("--lr", type=POSITIVE, default=1e-3, show_default=True, help="Head learning rate.")
@click.option("--backbone-lr", type=POSITIVE, default=2e-5, show_default=True, help="Backbone learning rate (--no-freeze-backbone, --train-layers).")
@click.option("--seed", type=int, default=0, show_default=True, help="Seeds the hold-out split, the batches and each step's choice of positives and negatives.")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None,
              help="Where backbone token states are cached (default $XTRIEVE_CACHE/train-states or "
                   "~/.cache/xtrieve/train-states).")
@click.option("--negatives", "n_negatives", type=click.IntRange(min=0), default=3, show_default=True,
              help="Hard negatives per query and step: a training row's own negatives first, then mined ones.")
@click.option("--mine-depth", type=click.IntRange(min=1), default=30, show_default=True,
              help="Negatives are drawn from the base model's top documents that are not positives.")
@click.option("--mine-with", type=click.Choice(["maxsim", "dense"]), default="maxsim", show_default=True,
              help="Rank documents for mining by the base model's MaxSim (unpooled) or by the dense teacher's cosine.")
@click.option("--cache-corpus", type=click.Choice(["auto", "yes", "no"]), default="auto", show_default=True,
              help="yes: cache every document's states and mine --mine-depth deep over the whole corpus; no: cache "
                   "only what the steps need, mining among a few BM25 candidates per query (--negatives + 1); auto: "
                   "yes when the corpus is at most ~1.25x those candidates.")
@click.option("--temperature", type=POSITIVE, default=0.05, show_default=True,
              help="Softmax temperature on length-normalised MaxSim scores.")
@click.option("--distill", "distill_weight", type=click.FloatRange(min=0.0), default=0.0, show_default=True,
              help="Weight of the KL term to the dense (mean-pooled backbone) teacher scores.")
@click.option("--dense-weight", type=click.FloatRange(min=0.0), default=None,
              help="Score = MaxSim + this x n_q x cosine of the backbone's mean-pooled embeddings (the same ranking as "
                   "MaxSim / n_q + this x cosine), in training and in every index built with the model (default: the "
                   "base model's, 0 for models from elsewhere).")
@click.option("--denoise/--no-denoise", default=True, show_default=True,
              help="Drop mined negatives that the dense teacher scores above the positive (likely unlabelled positives).")
@click.option("--cluster", type=click.Choice(["ward", "kmeans"]), default="ward", show_default=True,
              help="How token clusters are assigned in the forward pass (ward = as the index pools).")
@click.option("--pool-queries", is_flag=True,
              help="Cluster query tokens too, in training only (an experiment: searches never pool queries).")
@click.option("--mlp-dim", type=click.IntRange(min=0), default=0, show_default=True,
              help="Width of a residual MLP before the linear head (0 = linear head only).")
@click.option("--train-layers", type=click.IntRange(min=0), default=0, show_default=True,
              help="With a frozen backbone, also train its top N transformer blocks on cached inputs (lr --backbone-lr).")
@click.option("--weight-decay", type=click.FloatRange(min=0.0), default=0.0, show_default=True, help="AdamW weight decay.")
@click.option("--holdout", type=click.FloatRange(0.0, 0.9), default=0.0, show_default=True,
              help="Fraction of training queries held out; with --eval-every the best step is saved to OUT/best.")
@click.option("--eval-every", type=click.IntRange(min=0), default=0, show_default=True,
              help="Score the held-out queries (nDCG@10) every N steps and keep the best step in OUT/best (0: never).")
@click.option("--checkpoint-every", type=click.IntRange(min=1), default=50, show_default=True,
              help="Save OUT/checkpoint (what --resume continues from) every N steps.")
@click.option("--name", default=None, help="Model name written into the folder.")
@PRECISION_OPTION
@DEVICE_OPTION
def train_command(data_dirs, split, base, out, pool_factor, pool_min_vectors, max_steps, freeze_backbone, resume, overwrite, batch_size, lr,
                  backbone_lr, seed, cache_dir, n_negatives, mine_depth, mine_with, cache_corpus, temperature,
                  distill_weight, dense_weight, denoise, cluster, pool_queries, mlp_dim, train_layers, weight_decay,
                  holdout, eval_every,
                  checkpoint_every, name, precision, device):
    """Train a model: contrastive MaxSim on CRISP-clustered documents, hard negatives, optional distillation."""
    import time

    from xtrieve.encode.train import TrainConfig, train

    cfg = TrainConfig(
        data=[str(d) for d in data_dirs], out=str(out), split=split, base=base, pool_factor=pool_factor,
        pool_min_vectors=pool_min_vectors,
        max_steps=max_steps, freeze_backbone=freeze_backbone, resume=resume, overwrite=overwrite, batch_size=batch_size,
        lr=lr,
        backbone_lr=backbone_lr, seed=seed, cache_dir=str(cache_dir) if cache_dir else None,
        n_negatives=n_negatives, mine_depth=mine_depth, mine_with=mine_with, cache_corpus=cache_corpus,
        temperature=temperature, distill_weight=distill_weight, dense_weight=dense_weight, denoise=denoise,
        cluster=cluster, pool_queries=pool_queries,
        mlp_dim=mlp_dim, train_layers=train_layers, weight_decay=weight_decay, holdout=holdout, eval_every=eval_every,
        checkpoint_every=checkpoint_every, name=name, precision=precision, device=device,
    )
    t0 = time.time()
    folder = train(cfg)
    click.echo(f"model written to {folder} in {time.time() - t0:.0f}s (pool_factor {pool_factor}); "
               f"load it with xtrieve.Encoder.load({str(folder)!r})")
