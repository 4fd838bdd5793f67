"""Tiered merge policy (Lucene-like): merge merge_factor segments of one size tier."""
from __future__ import annotations

import math
from collections import defaultdict

from xtrieve.index.manifest import SegmentEntry


def live_docs(s: SegmentEntry) -> int:
    return s.n_docs - s.n_deleted


def live_vectors(s: SegmentEntry) -> float:
    return s.n_vectors * live_docs(s) / max(s.n_docs, 1)


def tier(s: SegmentEntry, merge_factor: int) -> int:
    """Segments whose live vector counts share a power of merge_factor share a tier."""
    return int(math.log(max(live_vectors(s), 1.0)) / math.log(merge_factor))


def plan_merge(segments: list[SegmentEntry], merge_factor: int, docs_per_segment: int) -> list[int] | None:
    """Indices of segments to merge next (the smallest of a full tier), or None."""
    tiers: dict[int, list[int]] = defaultdict(list)
    for i, s in enumerate(segments):
        tiers[tier(s, merge_factor)].append(i)
    for t in sorted(tiers):
        members = sorted(tiers[t], key=lambda i: live_vectors(segments[i]))
        if len(members) < merge_factor:
            continue
        pick = members[:merge_factor]
        if sum(live_docs(segments[i]) for i in pick) <= docs_per_segment:
            return sorted(pick)
    return None
