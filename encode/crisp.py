"""CRISP-style clustering inside the forward pass, and batched MaxSim.

Each document's token vectors are clustered into k = ceil(n / pool_factor) groups (at least
``min_vectors``, as the index keeps: :func:`xtrieve.encode.pooling.pooled_size`). The
assignment is computed without gradient (Ward, exactly as the index pools with
:func:`xtrieve.encode.pooling.pool_document`, or a few batched k-means iterations), and the
centroids are the means of their member vectors computed WITH gradient and renormalised,
so training teaches the head representations that survive the clustering the index applies.
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from xtrieve.encode.pooling import pooled_size, ward_labels


@torch.no_grad()
def ward_labels_batch(x: torch.Tensor, lengths: list[int], ks: list[int]) -> list[np.ndarray]:
    """Ward labels for each row of a padded batch x [N, L, d]; distances by one batched matmul."""
    xd = x.detach().double()
    sq = (xd * xd).sum(-1)
    dist = (sq[:, :, None] + sq[:, None, :] - 2 * torch.bmm(xd, xd.transpose(1, 2))).clamp_min(0).sqrt()
    out = []
    for i, (n, k) in enumerate(zip(lengths, ks)):
        if k >= n or n <= 1:
            out.append(np.arange(n))
            continue
        iu = torch.triu_indices(n, n, 1)
        out.append(ward_labels(dist[i, iu[0], iu[1]].numpy(), k))
    return out


@torch.no_grad()
def kmeans_labels(x: torch.Tensor, mask: torch.Tensor, ks: torch.Tensor, iters: int = 4) -> torch.Tensor:
    """Batched spherical k-means: x [N, L, d] (unit rows), mask [N, L], ks [N] -> labels [N, L].

    Centroids start at evenly spaced tokens; padded positions get label -1.
    """
    n, L, _ = x.shape
    kmax = int(ks.max().item()) if n else 1
    lengths = mask.sum(1)
    # init: token floor(j * len / k) for j < k
    j = torch.arange(kmax, device=x.device).unsqueeze(0).float()
    pos = torch.floor(j * lengths.unsqueeze(1).float() / ks.clamp_min(1).unsqueeze(1).float()).long().clamp(max=L - 1)
    cent = torch.gather(x, 1, pos.unsqueeze(-1).expand(-1, -1, x.shape[-1]))
    valid_c = j < ks.unsqueeze(1)
    labels = torch.zeros((n, L), dtype=torch.long, device=x.device)
    for _ in range(iters + 1):
        sim = torch.einsum("nld,nkd->nlk", x, cent)
        sim = sim.masked_fill(~valid_c.unsqueeze(1), float("-inf"))
        labels = sim.argmax(-1)
        onehot = F.one_hot(labels, kmax).float() * mask.unsqueeze(-1).float()
        sums = torch.einsum("nlk,nld->nkd", onehot, x)
        counts = onehot.sum(1)
        new = F.normalize(sums, dim=-1)
        cent = torch.where((counts > 0).unsqueeze(-1), new, cent)
    return labels.masked_fill(~mask, -1)


def cluster_labels(x: torch.Tensor, mask: torch.Tensor, pool_factor: int, method: str = "ward",
                   iters: int = 4, min_vectors: int = 0) -> torch.Tensor:
    """Assignments [N, L] (no gradient): -1 on padding, clusters numbered from 0 per row, as
    many per row as the index's pooling keeps (:func:`pooled_size`)."""
    lengths = mask.sum(1)
    ks = torch.tensor([max(1, pooled_size(int(n), pool_factor, min_vectors)) for n in lengths.tolist()],
                      dtype=torch.long, device=lengths.device)
    xd = x.detach()
    if method == "kmeans":
        return kmeans_labels(xd, mask, ks, iters)
    if method != "ward":
        raise ValueError(f"unknown clustering method {method!r} (ward or kmeans)")
    labels = torch.full(mask.shape, -1, dtype=torch.long)
    lens = [int(n) for n in lengths]
    for i, lab in enumerate(ward_labels_batch(xd.cpu(), lens, [int(k) for k in ks])):
        if lens[i]:
            labels[i, : lens[i]] = torch.from_numpy(np.asarray(lab, dtype=np.int64))
    return labels.to(x.device)


def pool_by_labels(x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Renormalised centroids [N, K, d] and their mask [N, K]; differentiable w.r.t. x.

    Requires valid tokens to occupy a prefix of each row (as padded batches do).
    """
    kmax = max(1, int(labels.max().item()) + 1) if labels.numel() else 1
    valid = labels >= 0
    onehot = F.one_hot(labels.clamp_min(0), kmax).to(x.dtype) * valid.unsqueeze(-1).to(x.dtype)
    sums = torch.einsum("nlk,nld->nkd", onehot, x)
    cmask = onehot.sum(1) > 0
    return F.normalize(sums, dim=-1), cmask


def crisp_pool(x: torch.Tensor, mask: torch.Tensor, pool_factor: int, method: str = "ward",
               iters: int = 4, min_vectors: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Cluster (no grad) then average (with grad): the CRISP forward step."""
    if pool_factor <= 1:
        return x, mask
    return pool_by_labels(x, cluster_labels(x, mask, pool_factor, method, iters, min_vectors))


def maxsim(q: torch.Tensor, qmask: torch.Tensor, d: torch.Tensor, dmask: torch.Tensor,
           normalize_by_length: bool = True, doc_chunk: int = 256) -> torch.Tensor:
    """All-pairs MaxSim scores [B, M] for queries q [B, Lq, dim] and documents d [M, Ld, dim].

    Padded document positions get an extra coordinate of -1e4 (the queries' extra coordinate
    is 1), so one matmul and one max give the exact masked MaxSim without masking passes.
    """
    out = []
    B, Lq, dim = q.shape
    qm = qmask.to(q.dtype)
    qx = torch.cat([q, torch.ones(B, Lq, 1, dtype=q.dtype, device=q.device)], -1).reshape(B * Lq, dim + 1)
    for s in range(0, d.shape[0], doc_chunk):
        dc, mc = d[s:s + doc_chunk], dmask[s:s + doc_chunk]
        if mc.any():  # trim trailing padding shared by the whole chunk
            width = int((mc * torch.arange(1, mc.shape[1] + 1, device=mc.device)).amax())
            dc, mc = dc[:, :width], mc[:, :width]
        m, Ld = mc.shape
        pad = (~mc).to(d.dtype).unsqueeze(-1) * -1e4
        dx = torch.cat([dc * mc.unsqueeze(-1).to(d.dtype), pad], -1).reshape(m * Ld, dim + 1)
        best = (qx @ dx.T).view(B, Lq, m, Ld).amax(-1)  # [B, Lq, m]
        best = torch.where(best < -1e3, torch.zeros_like(best), best)  # documents with no vectors
        out.append((best * qm.unsqueeze(-1)).sum(1))
    scores = torch.cat(out, dim=1)
    if normalize_by_length:
        scores = scores / qm.sum(1, keepdim=True).clamp_min(1.0)
    return scores

